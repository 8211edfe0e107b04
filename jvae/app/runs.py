"""Run directories: a run's data, its saved settings, and its newest checkpoint.

A run directory (``--workdir``) holds ``config.json``, ``data.json``,
``metrics.jsonl``, ``images/`` and ``checkpoints/``. Everything that reads one
goes through here: training resumes with :func:`check_resumable` and
:func:`check_data_info`, and every other mode (evaluate, encode, sample, ...)
starts from :func:`restore_run`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jvae.app.checkpoint import Checkpointer
from jvae.app.config import RESUMABLE_CHANGES, Config, config_to_dict, make_config
from jvae.base import LENGTH_KEY, ConfigError
from jvae.datasets.batching import add_condition
from jvae.datasets.errors import DataError
from jvae.datasets.images import parse_image_size
from jvae.datasets.pixels import static_binarize, to_float
from jvae.datasets.sources import fit_images, load_splits
from jvae.datasets.stream import SplitView
from jvae.training.defaults import DATA_CHOSEN
from jvae.training.experiment import DataSpec, Experiment, build, example_batch, init_state
from jvae.training.state import TrainState

__all__ = ["data_options", "check_data_info", "write_data_info", "check_num_devices",
           "check_example_fits", "check_resized_fits", "check_state_fits", "load_data", "load_data_with_info",
           "saved_config", "check_resumable", "Run", "restore_run", "hook_info"]


# Data settings of a run and their defaults; read with getattr so any config
# object (or one without these fields) works.
DATA_OPTIONS = {"data_source": None, "image_size": None, "channels": None, "modality": "auto",
                "sample_rate": None, "chunk_size": None, "chunk_hop": None, "test_fraction": 0.1,
                "strict": False, "cache": True, "mirror": None, "train_examples": 0,
                "test_examples": 0}


def data_options(cfg: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`load_splits` a run's config sets.

    ``data_source`` falls back to the ``DATA_SOURCE`` environment variable.
    """
    opts = {k: getattr(cfg, k, v) for k, v in DATA_OPTIONS.items()}
    for k in ("channels", "sample_rate", "chunk_size", "chunk_hop"):  # 0: the data's own
        opts[k] = opts[k] or None
    opts["data_source"] = opts["data_source"] or os.environ.get("DATA_SOURCE") or None
    if not opts["data_source"]:
        opts = {k: opts[k] for k in ("image_size", "channels", "mirror", "train_examples",
                                     "test_examples")}
    return opts


# The data settings a resumed run must share with the run it continues.
_IDENTITY = ("data_source", "modality", "image_size", "channels", "sample_rate", "chunk_size",
             "chunk_hop")


def check_data_info(workdir: str | os.PathLike, info: dict[str, Any]) -> None:
    """Refuses to resume a run in ``workdir`` that was trained on other data.

    Compares ``info`` with the ``data.json`` a previous run wrote there
    (:func:`write_data_info`); nothing is written here.

    Raises:
      DataError: the folder, modality, image size, channels, sample rate or
        chunk size differ.
    """
    import json
    path = Path(workdir) / "data.json"
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path} is corrupt; move it away to resume with the current data") from None
    diffs = [f"{k}: saved {saved.get(k)!r}, now {info.get(k)!r}" for k in _IDENTITY
             if saved.get(k) != info.get(k)]
    if diffs:
        raise DataError(f"workdir {workdir} holds a run trained on other data "
                        f"({'; '.join(diffs)}); use a new --workdir or the saved data settings")


def write_data_info(workdir: str | os.PathLike, info: dict[str, Any]) -> None:
    """Writes ``data.json`` (what the run trained on) and ``classes.json`` (label names)."""
    import json
    workdir = Path(workdir)
    (workdir / "data.json").write_text(
        json.dumps({k: v for k, v in info.items() if k not in ("classes", "chosen")}, indent=2)
        + "\n")
    if info.get("classes"):
        (workdir / "classes.json").write_text(json.dumps(info["classes"], indent=2) + "\n")


def check_num_devices(num_devices: int) -> None:
    """Refuses ``--num-devices`` beyond the devices there are (0, all of them, always fits).

    Raises:
      ConfigError: more devices asked for than :func:`jax.device_count` (every
        process's, once a multi-process job has joined).
    """
    available = jax.device_count()
    if num_devices > available:
        raise ConfigError(f"num_devices={num_devices} asks for more devices than the "
                          f"{available} available; use --num-devices {available} or fewer "
                          "(0: all of them)")


# What a train step holds of one example at the least: the input, the
# reconstruction's parameters and the gradients of both.
_EXAMPLE_COPIES = 4


def _size(nbytes: float) -> str:
    """``nbytes`` in the largest binary unit that keeps it above 1."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while nbytes >= 1024 and i < len(units) - 1:
        nbytes, i = nbytes / 1024, i + 1
    return f"{nbytes:.1f} {units[i]}"


def _example_elements(cfg: Config) -> tuple[str, int] | None:
    """The setting that sizes one example and the example's values (None: the data's own size)."""
    size = parse_image_size(getattr(cfg, "image_size", None))
    if size is not None:  # at least one channel; colour only adds
        return "image_size", size[0] * size[1] * max(getattr(cfg, "channels", 0) or 1, 1)
    if getattr(cfg, "chunk_size", 0):
        return "chunk_size", int(cfg.chunk_size)
    return None


def check_example_fits(cfg: Config) -> None:
    """Refuses an ``--image-size`` (or audio ``--chunk-size``) whose one example cannot fit a
    device, before any data is read or resized.

    One example as float32, times what a train step holds of it at the least
    (input, reconstruction, their gradients), is compared with
    :func:`~jvae.devices.budget.device_memory_budget`: such settings would
    otherwise resize every image and then run out of memory without a message.

    Raises:
      ConfigError: naming the setting, the sizes and the fix.
    """
    from jvae.devices.budget import device_memory_budget
    found = _example_elements(cfg)
    if found is None:
        return
    name, elements = found
    need = elements * 4 * _EXAMPLE_COPIES
    budget = device_memory_budget()
    if need > budget:
        value = getattr(cfg, name)
        raise ConfigError(f"{name}={value} makes one example {_size(elements * 4)} as float32 "
                          f"and a train step at batch 1 at least {_size(need)}, over the "
                          f"{_size(budget)} one device may use; use a smaller "
                          f"--{name.replace('_', '-')}")


def _host_memory() -> int:
    """Bytes the host has available (its CPU devices' budgets together, without headroom)."""
    from jvae.devices.budget import device_memory_budget
    cpus = jax.local_devices(backend="cpu")
    return device_memory_budget(cpus[0], fraction=1.0) * len(cpus)


def check_resized_fits(cfg: Config, count: int, channels: int) -> None:
    """Refuses an ``--image-size`` that would resize a named dataset past the host's memory.

    The ``count`` images are held resized as uint8 and then as float32 (5 bytes
    per value): compared with the memory available before any is resized.

    Raises:
      ConfigError: naming the setting, the sizes and the fix.
    """
    height, width = parse_image_size(cfg.image_size)
    need = count * height * width * channels * 5
    available = _host_memory()
    if need > available:
        raise ConfigError(f"image_size={cfg.image_size} makes the {count:,} images of "
                          f"{cfg.dataset} {_size(need)} in memory (as uint8, then float32), over "
                          f"the {_size(available)} available; use a smaller --image-size")


def check_state_fits(experiment: Experiment, batch_size: int) -> None:
    """Refuses a model whose train state alone cannot fit a device (nothing is allocated).

    The state's shapes (parameters, optimizer moments, averages) come from
    ``jax.eval_shape`` of its initialization (``batch_size`` shapes the example
    it is traced with, not the state); with the gradients and one example they
    are a lower bound of what training holds.

    Raises:
      ConfigError: naming the sizes and the settings that set them.
    """
    from jvae.devices.budget import device_memory_budget
    abstract = jax.eval_shape(lambda key: init_state(
        experiment, key, example_batch(experiment, batch_size)), jax.random.key(0))
    state = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract))
    params = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract.params))
    example = int(np.prod(experiment.data_spec.shape)) * 4 * _EXAMPLE_COPIES
    need, budget = state + params + example, device_memory_budget()
    if need > budget:
        raise ConfigError(f"the model's train state takes {_size(state)} ({_size(params)} of "
                          f"parameters) and a train step at batch 1 at least {_size(need)}, over "
                          f"the {_size(budget)} one device may use; use smaller --hidden, "
                          "--latent-dim or layer specs, or a smaller --image-size")


def load_data(cfg: Config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Loads train and test splits as float32 images in [0, 1] plus labels.

    Static binarization is applied here, once, with seeds derived from
    ``cfg.seed``; under dynamic binarization the test split is binarized once
    (a fixed evaluation set) and training batches are resampled every batch.
    A conditional model's splits get one-hot labels under its ``cond_key``.
    Audio stays float32 in [-1, 1] (:mod:`jvae.datasets.audio`).
    """
    return load_data_with_info(cfg, lazy=False)[:2]


def load_data_with_info(cfg: Config, lazy: bool = True):
    """:func:`load_data` plus what identifies the data (``modality``, ``classes``, a
    folder's settings; see :func:`jvae.data.load_splits`).

    With ``lazy`` (the train loop's choice), a folder's training images stay
    on disk: ``train["image"]`` is a :class:`~jvae.datasets.stream.SplitView`
    presenting float32 pixels, read into memory only if the run does not
    stream (and at once under static binarization, whose noise is drawn over
    the whole split).

    Raises:
      ConfigError: an ``--image-size`` whose example or resized named dataset
        cannot fit (:func:`check_example_fits`, :func:`check_resized_fits`),
        checked before any image is resized.
    """
    check_example_fits(cfg)
    options = data_options(cfg)
    # A named dataset is resized here, once its size says what the resized copy would hold.
    size = None if options.get("data_source") else parse_image_size(options.pop("image_size"))
    raw_train, raw_test, info = load_splits(cfg.dataset, data_dir=cfg.data_dir,
                                            tfds_data_dir=cfg.tfds_data_dir, lazy=lazy,
                                            **options)
    if size is not None:
        check_resized_fits(cfg, len(raw_train["image"]) + len(raw_test["image"]),
                           raw_train["image"].shape[-1])
        raw_train, raw_test = ({**raw, "image": fit_images(raw["image"], size)}
                               for raw in (raw_train, raw_test))
    if info["modality"] == "audio" and cfg.likelihood in ("bernoulli", "logistic_mixture"):
        raise ConfigError(f"audio samples lie in [-1, 1]; likelihood={cfg.likelihood} needs "
                          "[0, 1] data: use --likelihood gaussian or gaussian_learned")
    splits = []
    for i, raw in enumerate((raw_train, raw_test)):
        if isinstance(raw["image"], SplitView):
            if cfg.binarize != "static":
                splits.append({"image": raw["image"].floats(), "label": raw["label"]})
                continue
            raw = {**raw, "image": raw["image"].read()}
        if raw["image"].dtype != np.uint8:  # audio
            splits.append({"image": raw["image"], "label": raw["label"]})
            continue
        images = to_float(raw["image"])
        if cfg.binarize == "static" or (cfg.binarize == "dynamic" and i == 1):
            images = static_binarize(images, seed=cfg.seed * 2 + i)
        splits.append({"image": images, "label": raw["label"]})
    if info["modality"] == "audio":  # real samples per (padded) clip
        splits = [{**s, LENGTH_KEY: raw[LENGTH_KEY]} for s, raw in zip(splits, (raw_train, raw_test))]
    spec = DataSpec.of(splits[0])
    if spec.num_classes and cfg.model == "cvae":
        splits = [add_condition(s, spec.num_classes) for s in splits]
    return splits[0], splits[1], info


def saved_config(workdir: str | Path, **overrides: Any) -> Config:
    """The settings a run directory was trained with (``config.json``), with overrides.

    Raises:
      ConfigError: no ``config.json`` there, or one that cannot be read.
    """
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: --workdir must be a run directory written by "
                          "jvae train")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is corrupt; restore it or train into a new --workdir") from None
    return make_config(saved, {k: v for k, v in overrides.items() if v is not None})


def check_resumable(workdir: Path, cfg: Config) -> None:
    """Refuses to resume a run whose saved settings differ in a way that matters."""
    path = workdir / "config.json"
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is corrupt; move it away to resume with the current "
                          "flags") from None
    current = config_to_dict(cfg)
    # A setting added after the run was saved took its default in that run.
    defaults = config_to_dict(Config())
    saved = {**defaults, **saved}
    # A setting saved unset (import-weights writes a run before seeing its data)
    # is whatever the data chooses, which is what the current value holds.
    diffs = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in current.items()
             if k not in RESUMABLE_CHANGES and saved.get(k) != v
             and not (k in DATA_CHOSEN and saved.get(k) == defaults[k])]
    if diffs:
        raise ConfigError(f"workdir {workdir} holds a run with other settings "
                          f"({'; '.join(diffs)}); use a new --workdir or the saved settings")


class Run(NamedTuple):
    """A restored run.

    Attributes:
      cfg: its settings.
      experiment: the model, objective and optimizer built from them.
      state: the newest checkpoint's train state (on the default device).
      meta: the checkpoint's metadata (``epoch``, ``wall_s``, ...).
      train: the training split.
      test: the test split.
      info: what identifies the data (``modality``, ``classes``, a folder's
        ``sample_rate`` and ``chunk_size``; see :func:`load_data_with_info`).
    """

    cfg: Config
    experiment: Experiment
    state: TrainState
    meta: dict
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    info: dict = {}


def restore_run(workdir: str | Path, *, data_shape: tuple[int, ...] | None = None,
                **overrides: Any) -> Run:
    """Rebuilds a run's model and data and restores its newest checkpoint.

    Args:
      workdir: a run directory written by ``jvae train``.
      data_shape: build the model for unlabelled images of this per-example
        shape and load no data (the splits are empty): for modes that read
        their inputs from files. None loads the run's data.
      **overrides: settings to change (e.g. ``data_dir`` when the data moved);
        None values are ignored.

    Returns:
      A :class:`Run`.

    Raises:
      ConfigError: no run or no checkpoint in ``workdir``.
    """
    workdir = Path(workdir)
    cfg = saved_config(workdir, **overrides)
    if data_shape is None:
        train, test, info = load_data_with_info(cfg, lazy=False)
        spec = DataSpec.of(train, info.get("sample_rate"))
    else:
        shape = tuple(int(d) for d in data_shape)
        train = test = {"image": np.zeros((0, *shape), np.float32),
                        "label": np.zeros(0, np.int64)}
        info, spec = {"modality": "image"}, DataSpec(shape)
    experiment = build(cfg, spec)
    # Shapes only: the checkpoint supplies every value, so the init is never run.
    template = jax.eval_shape(lambda key: init_state(
        experiment, key, example_batch(experiment, cfg.batch_size)), jax.random.key(cfg.seed))
    with Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints) as ckpt:
        # A damaged newest checkpoint is skipped (with a warning), left where it is.
        restored = ckpt.restore_newest_valid(template, move_aside=False)
        if restored is None:
            raise ConfigError(f"no checkpoint in {workdir / 'checkpoints'}; train first")
        state, meta = restored
    return Run(cfg, experiment, state, meta, train, test, info)


def hook_info(cfg: Config, workdir: str | Path, experiment: Experiment,
              test: dict[str, np.ndarray], *, devices: int, placement: str | None,
              start_epoch: int, step: int, params: Any, steps_per_epoch: int) -> dict[str, Any]:
    """What a training hook's ``on_start`` receives (see :class:`jvae.train.Hook`).

    Args:
      cfg: the run's settings (passed on as a dict).
      workdir: the run directory.
      experiment: the model, objective and optimizer.
      test: the test split.
      devices: devices the run trains on.
      placement: ``"device"``, ``"host"`` or ``"stream"`` (None: not training, e.g. a page
        served from checkpoints).
      start_epoch: epochs already done.
      step: the optimizer step.
      params: a private copy of the parameters (no later step may donate it).
      steps_per_epoch: training steps per epoch.
    """
    return {"config": config_to_dict(cfg), "workdir": str(workdir), "devices": devices,
            "placement": placement, "start_epoch": start_epoch, "step": step,
            "experiment": experiment, "test": test, "params": params,
            "steps_per_epoch": steps_per_epoch}
