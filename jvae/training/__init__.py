"""Training: the builder, the train state and steps, the optimizer, on-device epochs, the train program.

:mod:`jvae.train_state` is the area's front door.

* :mod:`~jvae.training.experiment`: ``build(cfg, data_spec) -> Experiment``,
  one registry per choice (family, posterior, likelihood, net, placement).
* :mod:`~jvae.training.defaults`: what unset settings become for the data
  (audio nets and objectives for audio, a batch cut to a small split).
* :mod:`~jvae.training.state`: :class:`TrainState`, the jitted,
  data-parallel train and eval steps.
* :mod:`~jvae.training.optim`: ``clipped_adam`` (NaN zeroing, non-finite
  skips, clipping and Adam, fused).
* :mod:`~jvae.training.ema`: an exponential moving average of the parameters,
  kept in the optimizer's state; what evaluation and export use.
* :mod:`~jvae.training.epoch`: whole epochs on device (``lax.scan``).
* :mod:`~jvae.training.noise`: the device loop's binarization noise,
  ``jax.random.uniform``'s bits from one fused kernel.
* :mod:`~jvae.training.program`: where the data lives, one AOT compile, the
  epoch driver, split evaluation.
* :mod:`~jvae.training.samplers`: densities fitted to a trained model's codes
  (a Gaussian mixture, a second-stage VAE, a masked autoregressive flow),
  drawn in place of the prior.
"""

from jvae.training.defaults import (
    AUDIO_BATCH_SIZE,
    AUDIO_GAUSSIAN_SCALE,
    AUDIO_STFT_WEIGHT,
    AUTO,
    BATCH_SIZE,
    DATA_CHOSEN,
    EPOCHS,
    MAX_AUTO_EPOCHS,
    MIN_STEPS,
    STFT_WINDOWS_MS,
    default_epochs,
    default_fft_sizes,
    is_audio_shape,
    model_defaults,
    run_defaults,
    with_defaults,
)
from jvae.training.ema import (
    EmaState,
    averaged_params,
    ema_decay_at,
    find_ema,
    parameter_ema,
)
from jvae.training.epoch import (
    binarize_key,
    chunk_length,
    device_loop_is_fast,
    epoch_order,
    has_convolutions,
    make_train_epoch,
    put_dataset,
)
from jvae.training.experiment import (
    ACTIVATIONS,
    COMPUTE_DTYPES,
    COND_KEY,
    DECODER_MODES,
    DIRICHLET_REPARAMS,
    FLOW_COUPLINGS,
    LIKELIHOODS,
    MODELS,
    NETS,
    PLACEMENTS,
    POSTERIORS,
    RNN_CELLS,
    DataSpec,
    Experiment,
    Family,
    build,
    example_batch,
    init_state,
)
from jvae.training.noise import uniform_noise
from jvae.training.optim import (
    ClippedAdamState,
    SkipState,
    clipped_adam,
    finite_global_norm,
    is_finite_step,
    skip_counts,
    skip_if_not_finite,
    zero_nans,
)
from jvae.training.program import (
    TrainProgram,
    accumulate,
    compile_program,
    data_budget,
    evaluate_split,
    lower_program,
    resolve_placement,
    run_epoch,
    split_bytes,
)
from jvae.training.state import (
    TrainState,
    create_train_state,
    make_eval_step,
    make_optimizer,
    make_train_step,
    make_update_fn,
)

__all__ = [
    "ACTIVATIONS",
    "AUDIO_BATCH_SIZE",
    "AUDIO_GAUSSIAN_SCALE",
    "AUDIO_STFT_WEIGHT",
    "AUTO",
    "BATCH_SIZE",
    "COMPUTE_DTYPES",
    "COND_KEY",
    "ClippedAdamState",
    "DATA_CHOSEN",
    "DECODER_MODES",
    "DIRICHLET_REPARAMS",
    "DataSpec",
    "EPOCHS",
    "EmaState",
    "Experiment",
    "FLOW_COUPLINGS",
    "Family",
    "LIKELIHOODS",
    "MAX_AUTO_EPOCHS",
    "MIN_STEPS",
    "MODELS",
    "NETS",
    "PLACEMENTS",
    "POSTERIORS",
    "RNN_CELLS",
    "STFT_WINDOWS_MS",
    "SkipState",
    "TrainProgram",
    "TrainState",
    "accumulate",
    "averaged_params",
    "binarize_key",
    "build",
    "chunk_length",
    "clipped_adam",
    "compile_program",
    "create_train_state",
    "data_budget",
    "default_epochs",
    "default_fft_sizes",
    "device_loop_is_fast",
    "ema_decay_at",
    "epoch_order",
    "evaluate_split",
    "example_batch",
    "find_ema",
    "finite_global_norm",
    "has_convolutions",
    "init_state",
    "is_audio_shape",
    "is_finite_step",
    "lower_program",
    "make_eval_step",
    "make_optimizer",
    "make_train_epoch",
    "make_train_step",
    "make_update_fn",
    "model_defaults",
    "parameter_ema",
    "put_dataset",
    "resolve_placement",
    "run_defaults",
    "run_epoch",
    "skip_counts",
    "skip_if_not_finite",
    "split_bytes",
    "uniform_noise",
    "with_defaults",
    "zero_nans",
]
