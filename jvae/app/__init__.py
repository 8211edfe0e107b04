"""The application: the ``jvae`` command, its settings, run directories and what watches a run.

The library below never imports it.

* :mod:`~jvae.app.cli`: ``jvae <mode>`` (:func:`main`); :mod:`~jvae.app.flags`: flags generated
  from :class:`Config`, one-line errors; :mod:`~jvae.app.modes`: the modes.
* :mod:`~jvae.app.config`: the frozen :class:`Config`; :mod:`~jvae.app.recipes`: packaged
  layers of settings (``--recipe``).
* :mod:`~jvae.app.trainer`: :func:`train_and_evaluate`, a run in a workdir.
* :mod:`~jvae.app.runs`: run directories (data, saved settings, restore).
* :mod:`~jvae.app.checkpoint`, :mod:`~jvae.app.lock`, :mod:`~jvae.app.run_guard`:
  orbax save/resume, one writer per workdir, signals, schedules and exits;
  :mod:`~jvae.app.write_guard`: no output over a run's files, nothing written when refused.
* :mod:`~jvae.app.hooks`: what observes a run; :mod:`~jvae.app.dashboard`
  (the live page) and :mod:`~jvae.app.tensorboard` are hooks.
* :mod:`~jvae.app.outputs`: image grids and each epoch's samples.
* :mod:`~jvae.app.native`: a fully convolutional run at each image's own size, whole or
  in tiles; :mod:`~jvae.app.latents`: the latent files ``encode`` writes and ``decode``
  reads; :mod:`~jvae.app.samplers`: samplers fitted to a run's codes, kept beside its
  checkpoints.
"""

from jvae.app.checkpoint import (
    Checkpointer,
    CheckpointError,
    read_metrics,
    truncate_metrics,
)
from jvae.app.cli import (
    MODES,
    main,
)
from jvae.app.config import (
    ALIASES,
    GROUPS,
    MAX_INT,
    RESUMABLE_CHANGES,
    Config,
    ConfigError,
    choices_of,
    config_to_dict,
    load_config_file,
    make_config,
)
from jvae.app.factors import (
    GroundTruth,
    disentanglement_report,
    factor_representation,
    ground_truth,
)
from jvae.app.flags import (
    ArgumentParser,
    Mode,
    add_config_flags,
    add_host_memory_flag,
    add_workdir_flag,
    config_from_args,
    describe,
    finite_float,
    int_range,
    make_parser,
    recipe_of,
    run_mode,
    seed_int,
)
from jvae.app.hooks import (
    Hook,
    call_hooks,
    watch_hooks,
)
from jvae.app.latents import (
    DIFFUSERS_RECORD,
    DiffusionScale,
    Latents,
    check_stackable,
    diffusion_scale,
    imported_record,
    load_latents,
    save_latents,
)
from jvae.app.lock import (
    LockError,
    WorkdirLock,
)
from jvae.app.native import (
    AUTO_TILES,
    NativeNet,
    Tiling,
    reflect_pad,
    total_stride,
)
from jvae.app.outputs import (
    AUDIO_CLIPS,
    COLORMAP,
    TOP_DB,
    crop_to_length,
    grid_png,
    image_grid,
    log_mel_spectrogram,
    run_sample_rate,
    sample_condition,
    save_epoch_audio,
    save_epoch_images,
    save_image_grid,
    save_spectrograms,
    spectrogram_image,
    spectrogram_png,
    stft_sizes,
)
from jvae.app.recipes import (
    recipe,
    recipe_names,
    recipe_settings,
)
from jvae.app.run_guard import (
    EXIT_BAD_INPUT,
    EXIT_RUN_FAILED,
    CheckpointSchedule,
    Divergence,
    RunFailed,
    SaveFailed,
    StopSignals,
    parse_interval,
)
from jvae.app.runs import (
    Run,
    check_data_info,
    check_example_fits,
    check_num_devices,
    check_resized_fits,
    check_resumable,
    check_state_fits,
    data_options,
    hook_info,
    load_data,
    load_data_with_info,
    restore_run,
    saved_config,
    write_data_info,
)
from jvae.app.samplers import (
    SAMPLER_CHOICES,
    SAMPLERS_DIR,
    RunSampler,
    check_sampler_family,
    params_digest,
    run_sampler,
    sampler_path,
    saved_sampler,
)
from jvae.app.tensorboard import (
    AUDIO_IMAGE_TAGS,
    AUDIO_TAGS,
    EMBEDDING_TAG,
    TensorBoardLogger,
)
from jvae.app.trainer import (
    CHUNKS_PER_EPOCH,
    Stopped,
    train_and_evaluate,
)
from jvae.app.write_guard import (
    RUN_ENTRIES,
    OutputError,
    WriteFailed,
    check_output_file,
    check_output_folder,
    check_workdir,
    is_run_dir,
    make_parents,
    run_containing,
    writing,
)

__all__ = [
    "ALIASES",
    "AUDIO_CLIPS",
    "AUDIO_IMAGE_TAGS",
    "AUDIO_TAGS",
    "AUTO_TILES",
    "ArgumentParser",
    "CHUNKS_PER_EPOCH",
    "COLORMAP",
    "CheckpointError",
    "CheckpointSchedule",
    "Checkpointer",
    "Config",
    "ConfigError",
    "DIFFUSERS_RECORD",
    "DiffusionScale",
    "Divergence",
    "EMBEDDING_TAG",
    "EXIT_BAD_INPUT",
    "EXIT_RUN_FAILED",
    "GROUPS",
    "GroundTruth",
    "Hook",
    "Latents",
    "LockError",
    "MAX_INT",
    "MODES",
    "Mode",
    "NativeNet",
    "OutputError",
    "RESUMABLE_CHANGES",
    "RUN_ENTRIES",
    "Run",
    "RunFailed",
    "RunSampler",
    "SAMPLERS_DIR",
    "SAMPLER_CHOICES",
    "SaveFailed",
    "StopSignals",
    "Stopped",
    "TOP_DB",
    "TensorBoardLogger",
    "Tiling",
    "WorkdirLock",
    "WriteFailed",
    "add_config_flags",
    "add_host_memory_flag",
    "add_workdir_flag",
    "call_hooks",
    "check_data_info",
    "check_example_fits",
    "check_num_devices",
    "check_output_file",
    "check_output_folder",
    "check_resized_fits",
    "check_resumable",
    "check_sampler_family",
    "check_stackable",
    "check_state_fits",
    "check_workdir",
    "choices_of",
    "config_from_args",
    "config_to_dict",
    "crop_to_length",
    "data_options",
    "describe",
    "diffusion_scale",
    "disentanglement_report",
    "factor_representation",
    "finite_float",
    "grid_png",
    "ground_truth",
    "hook_info",
    "image_grid",
    "imported_record",
    "int_range",
    "is_run_dir",
    "load_config_file",
    "load_data",
    "load_data_with_info",
    "load_latents",
    "log_mel_spectrogram",
    "main",
    "make_config",
    "make_parents",
    "make_parser",
    "params_digest",
    "parse_interval",
    "read_metrics",
    "recipe",
    "recipe_names",
    "recipe_of",
    "recipe_settings",
    "reflect_pad",
    "restore_run",
    "run_containing",
    "run_mode",
    "run_sample_rate",
    "run_sampler",
    "sample_condition",
    "sampler_path",
    "save_epoch_audio",
    "save_epoch_images",
    "save_image_grid",
    "save_latents",
    "save_spectrograms",
    "saved_config",
    "saved_sampler",
    "seed_int",
    "spectrogram_image",
    "spectrogram_png",
    "stft_sizes",
    "total_stride",
    "train_and_evaluate",
    "truncate_metrics",
    "watch_hooks",
    "write_data_info",
    "writing",
]
