"""Run configuration: a frozen dataclass that a JSON/TOML file and flags override.

Precedence, lowest first: the dataclass defaults, a ``--config`` file, then
command-line flags. Unknown keys and ill-typed or out-of-range values raise
:class:`ConfigError` with a message naming the key and the accepted values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "load_config_file", "make_config", "config_to_dict",
           "RESUMABLE_CHANGES"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run.

    Attributes:
      dataset: dataset name (``mnist``; any tfds image dataset with ``--data-dir`` unset).
      data_dir: folder with MNIST IDX files; None reads the dataset from tfds.
      tfds_data_dir: tfds data directory (tfds' default when None).
      epochs: total epochs; a resumed run continues up to this number.
      batch_size: global training batch size (divisible by the device count).
      eval_batch_size: evaluation batch size (the last batch is padded and masked).
      latent_dim: number of latent dimensions.
      posterior: ``normal`` or ``dirichlet``.
      dirichlet_prior: concentration of the symmetric Dirichlet prior.
      net: ``mlp`` or ``conv``.
      hidden: hidden layer widths of the MLP (first entry: Dense width of conv nets).
      activation: activation function name.
      likelihood: ``bernoulli`` or ``gaussian``.
      lr: Adam learning rate.
      beta: KL weight in the loss.
      num_samples: posterior samples per example in the training ELBO.
      binarize: ``none`` (grey levels in [0, 1]), ``dynamic`` or ``static``.
      seed: seed of initialization, shuffling, sampling and binarization.
      keep_checkpoints: number of most recent checkpoints kept.
      num_devices: devices to train on; 0 means all local devices.
      num_images: images in each saved PNG grid.
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    tfds_data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    latent_dim: int = 20
    posterior: str = "normal"
    dirichlet_prior: float = 0.98
    net: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    lr: float = 1e-3
    beta: float = 1.0
    num_samples: int = 1
    binarize: str = "none"
    seed: int = 0
    keep_checkpoints: int = 3
    num_devices: int = 0
    num_images: int = 64

    def __post_init__(self):
        _validate(self)


# Fields that may differ between a checkpointed run and its resumption: they
# change neither the state's structure nor the optimization trajectory.
RESUMABLE_CHANGES = frozenset({"epochs", "data_dir", "tfds_data_dir", "eval_batch_size",
                               "keep_checkpoints", "num_images"})

_CHOICES = {
    "posterior": ("normal", "dirichlet"),
    "net": ("mlp", "conv"),
    "likelihood": ("bernoulli", "gaussian"),
    "binarize": ("none", "dynamic", "static"),
}
_POSITIVE = ("epochs", "batch_size", "eval_batch_size", "latent_dim", "num_samples",
             "keep_checkpoints", "num_images", "lr", "dirichlet_prior")
_NON_NEGATIVE = ("beta", "num_devices", "seed")


def _validate(cfg: Config) -> None:
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not one of {', '.join(choices)}")
    for name in _POSITIVE:
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.hidden or any(h <= 0 for h in cfg.hidden):
        raise ConfigError(f"hidden must be a non-empty list of positive widths, got {cfg.hidden}")
    if cfg.posterior == "dirichlet" and cfg.latent_dim < 2:
        raise ConfigError("a Dirichlet posterior needs latent_dim >= 2")
    from jvae.nets import ACTIVATIONS
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(f"activation={cfg.activation!r} is not one of {', '.join(ACTIVATIONS)}")


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TYPES = typing.get_type_hints(Config)


def _coerce(name: str, value: Any) -> Any:
    """Converts a file or flag value to the field's type, or raises ConfigError."""
    kind = _TYPES[name]
    optional = type(None) in typing.get_args(kind)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} cannot be null")
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if optional else kind
    try:
        if typing.get_origin(base) is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_scalar(int, v) for v in value)
        return _scalar(base, value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a valid {getattr(base, '__name__', base)}") from None


def _scalar(t: type, v: Any) -> Any:
    if t is bool or isinstance(v, bool):
        raise TypeError
    if t is int:
        if isinstance(v, float) and not v.is_integer():
            raise TypeError
        return int(v)
    if t is float:
        return float(v)
    if t is str:
        if not isinstance(v, str):
            raise TypeError
        return v
    raise TypeError


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a ``.json`` or ``.toml`` config file into a dict of raw values.

    Raises:
      ConfigError: missing file, unsupported suffix or a parse error.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path} is malformed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of settings")
    return data


def make_config(*layers: dict[str, Any]) -> Config:
    """Builds a :class:`Config` from dicts of overrides, later ones winning.

    Keys may use dashes or underscores (``batch-size`` or ``batch_size``).

    Raises:
      ConfigError: an unknown key or an invalid value.
    """
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r}; known settings: "
                                  f"{', '.join(sorted(_FIELDS))}")
            values[name] = _coerce(name, value)
    return Config(**values)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A JSON-serializable dict of the config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
