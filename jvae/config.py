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
      net: ``mlp``, ``conv``, ``spec`` (layer specs, see ``encoder_spec``) or
        ``rnn`` (recurrent sequence nets over the data's first axis, see
        :mod:`jvae.sequence`).
      encoder_spec: for ``net=spec``: a packaged architecture name
        (``mnist_mlp``, ``mnist_conv``, ``sd_vae``, ``sd_vae_mnist``), a path to a
        JSON file, or an inline JSON list of layer specs (:mod:`jvae.spec_nets`);
        its ``encoder`` part is used. A config file may give the list itself.
        A spatial architecture (``sd_vae``) takes its latent shape from the
        encoder's output, and ``latent_dim`` is then unused.
      decoder_spec: likewise for the decoder; None takes ``encoder_spec``'s.
      rnn_cell: ``lstm`` or ``gru`` (``net=rnn``).
      rnn_hidden: recurrent state size (``net=rnn``).
      decoder_mode: ``repeat_latent``, ``concat_output_latent`` or
        ``output_as_input``: what the recurrent decoder reads at each step.
      hidden: hidden layer widths of the MLP (first entry: Dense width of conv nets).
      activation: activation function name.
      likelihood: ``bernoulli`` or ``gaussian``.
      lr: Adam learning rate.
      beta: KL weight in the loss.
      num_samples: posterior samples per example in the training ELBO (the k of
        ``model=iwae``).
      binarize: ``none`` (grey levels in [0, 1]), ``dynamic`` or ``static``.
      seed: seed of initialization, shuffling, sampling and binarization.
      keep_checkpoints: number of most recent checkpoints kept.
      num_devices: devices to train on; 0 means all local devices.
      num_images: images in each saved PNG grid.
      model: model family (:mod:`jvae.zoo`): ``vae`` (beta-VAE with ``beta``),
        ``ae`` (deterministic autoencoder), ``cvae`` (encoder and decoder
        conditioned on one-hot labels), ``iwae`` (importance-weighted bound
        with ``num_samples`` = k) or ``vq`` (vector-quantized latents).
      alpha: weight of the reconstruction term in the loss.
      kl_warmup_steps: the KL weight ramps linearly from 0 to ``beta`` over this
        many steps (0: no warm-up).
      ssim_weight: weight of the ``1 - SSIM`` term (0: off).
      sparsity_weight: weight of the scale-free L1 penalty on the latent code (0: off).
      decoder_l2: weight of the L2 penalty on the decoder's weights (0: off).
      flow_layers: coupling layers on the posterior (0: no flow).
      flow_coupling: ``spline`` (rational-quadratic) or ``affine`` couplings.
      flow_hidden: hidden widths of each coupling layer's conditioner.
      flow_bins: spline bins per coupling.
      flow_context: size of the per-example context the encoder feeds the flow.
      vq_codes: codebook size of a ``vq`` model.
      vq_code_dim: dimension of one code vector (``latent_dim`` must be a multiple).
      vq_commitment: weight of the VQ commitment loss.
      logistic_components: mixture components of the ``logistic_mixture`` likelihood.
      gaussian_scale: standard deviation of the fixed-scale ``gaussian`` likelihood.
      dirichlet_reparam: ``exact`` (``jax.random.dirichlet``) or ``approx`` (the
        DirVAE inverse-CDF reparameterization and Gamma KL, several times faster;
        see :func:`~jvae.posteriors.dirichlet_posterior`).
      compute_dtype: ``float32`` or ``bfloat16``: the dtype encoder and decoder
        compute in; parameters, optimizer state and the loss stay float32
        (:mod:`jvae.precision`; for GPU and TPU).
      data_placement: ``device`` keeps the training split on the devices and
        runs each epoch as one on-device loop (:mod:`jvae.epoch`); ``host``
        feeds one host batch per step (for data larger than device memory);
        ``auto`` is ``device`` except for models with convolutions on CPU,
        which XLA:CPU runs faster one step per dispatch
        (:func:`~jvae.epoch.device_loop_is_fast`).
      data_source: a folder of images or ``.wav`` files to train on instead of
        ``dataset`` (also the ``DATA_SOURCE`` environment variable); see
        :func:`jvae.datasets.folders.load_folder`.
      modality: ``auto``, ``image`` or ``audio`` (what ``data_source`` holds).
      image_size: ``N`` or ``HxW``; images are resized (short side) and
        center-cropped. None: a folder's median short side, at most 64; a
        named dataset's own size.
      channels: 1 or 3; 0 keeps a dataset's channels (a folder: 3 if any image
        has colour).
      test_fraction: a folder's hashed holdout share (without ``train/`` and
        ``test/`` sub-folders).
      strict: unreadable files in a folder are an error instead of a warning.
      cache: decode a folder's images once into a memory-mapped cache
        (``$JVAE_DATA_DIR/cache``); false decodes them every run.
      sample_rate: audio rate in Hz; 0: the folder's most common rate.
      chunk_size: audio samples per example (the remainder of a file is dropped).
      mirror: base URL(s) of MNIST-format downloads, comma-separated (default:
        ``$JVAE_MNIST_MIRROR``, then the datasets' own mirrors).
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
    encoder_spec: str | None = None
    decoder_spec: str | None = None
    rnn_cell: str = "lstm"
    rnn_hidden: int = 256
    decoder_mode: str = "repeat_latent"
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
    model: str = "vae"
    alpha: float = 1.0
    kl_warmup_steps: int = 0
    ssim_weight: float = 0.0
    sparsity_weight: float = 0.0
    decoder_l2: float = 0.0
    flow_layers: int = 0
    flow_coupling: str = "spline"
    flow_hidden: tuple[int, ...] = (64, 64)
    flow_bins: int = 8
    flow_context: int = 16
    vq_codes: int = 128
    vq_code_dim: int = 4
    vq_commitment: float = 0.25
    logistic_components: int = 5
    gaussian_scale: float = 1.0
    dirichlet_reparam: str = "exact"
    compute_dtype: str = "float32"
    data_placement: str = "auto"
    # Data sources beyond named datasets (jvae.datasets).
    data_source: str | None = None
    modality: str = "auto"
    image_size: str | None = None
    channels: int = 0
    test_fraction: float = 0.1
    strict: bool = False
    cache: bool = True
    sample_rate: int = 0
    chunk_size: int = 65_536
    mirror: str | None = None

    def __post_init__(self):
        _validate(self)


# Fields that may differ between a checkpointed run and its resumption: they
# change neither the state's structure nor the optimization trajectory.
RESUMABLE_CHANGES = frozenset({"epochs", "data_dir", "tfds_data_dir", "eval_batch_size",
                               "keep_checkpoints", "num_images",
                               # Same batches in the same order either way (only
                               # dynamic binarization's noise stream differs).
                               "data_placement",
                               # How data is read, not what it is.
                               "strict", "cache", "mirror"})

_CHOICES = {
    "posterior": ("normal", "dirichlet"),
    "net": ("mlp", "conv", "spec", "rnn"),
    "rnn_cell": ("lstm", "gru"),
    "decoder_mode": ("repeat_latent", "concat_output_latent", "output_as_input"),
    "likelihood": ("bernoulli", "gaussian", "gaussian_learned", "logistic_mixture"),
    "model": ("vae", "ae", "cvae", "iwae", "vq"),
    "flow_coupling": ("spline", "affine"),
    "binarize": ("none", "dynamic", "static"),
    "dirichlet_reparam": ("exact", "approx"),
    "compute_dtype": ("float32", "bfloat16"),
    "data_placement": ("auto", "device", "host"),
    "modality": ("auto", "image", "audio"),
    "channels": (0, 1, 3),
}
_POSITIVE = ("epochs", "batch_size", "eval_batch_size", "latent_dim", "rnn_hidden", "num_samples",
             "keep_checkpoints", "num_images", "lr", "dirichlet_prior", "flow_bins",
             "vq_codes", "vq_code_dim", "logistic_components", "gaussian_scale", "chunk_size")
_NON_NEGATIVE = ("beta", "num_devices", "seed", "alpha", "kl_warmup_steps", "ssim_weight",
                 "sparsity_weight", "decoder_l2", "flow_layers", "flow_context", "vq_commitment",
                 "sample_rate")


def _validate(cfg: Config) -> None:
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not one of "
                              f"{', '.join(map(str, choices))}")
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
    if cfg.dirichlet_reparam != "exact" and cfg.posterior != "dirichlet":
        raise ConfigError(f"dirichlet_reparam={cfg.dirichlet_reparam} applies to "
                          "--posterior dirichlet only")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {cfg.test_fraction}")
    _validate_model(cfg)
    _validate_net(cfg)
    from jvae.nets import ACTIVATIONS
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(f"activation={cfg.activation!r} is not one of {', '.join(ACTIVATIONS)}")


def _validate_model(cfg: Config) -> None:
    """Combinations of model family, posterior and loss terms that mean nothing."""
    if cfg.model in ("ae", "vq") and cfg.posterior != "normal":
        raise ConfigError(f"model={cfg.model} has a deterministic code, not a "
                          f"{cfg.posterior} posterior; use --posterior normal (the default)")
    if cfg.flow_layers:
        if cfg.model in ("ae", "vq"):
            raise ConfigError(f"flow_layers applies to a posterior distribution; model={cfg.model} "
                              "has none (use vae, cvae or iwae, or --flow-layers 0)")
        if cfg.posterior != "normal":
            raise ConfigError("a flow acts on R^d and needs --posterior normal; a Dirichlet "
                              "posterior lives on the simplex (use --flow-layers 0)")
        if cfg.latent_dim < 2:
            raise ConfigError("a coupling flow needs latent_dim >= 2")
        if not cfg.flow_hidden or any(h <= 0 for h in cfg.flow_hidden):
            raise ConfigError(f"flow_hidden must be positive widths, got {cfg.flow_hidden}")
    if cfg.model in ("ae", "iwae", "vq") and (cfg.beta != 1.0 or cfg.kl_warmup_steps):
        raise ConfigError(f"beta and kl_warmup_steps weight the ELBO's KL term; model={cfg.model} "
                          "has no weighted KL term (use model vae or cvae)")
    if cfg.model == "iwae" and cfg.alpha != 1.0:
        raise ConfigError("alpha weights the ELBO's reconstruction term; model=iwae optimizes "
                          "the importance-weighted bound as a whole")
    if cfg.model in ("ae", "vq") and cfg.num_samples != 1:
        raise ConfigError(f"model={cfg.model} is deterministic; num_samples must be 1")
    if cfg.model == "vq" and cfg.latent_dim % cfg.vq_code_dim:
        raise ConfigError(f"latent_dim={cfg.latent_dim} must be a multiple of "
                          f"vq_code_dim={cfg.vq_code_dim} (latent_dim / vq_code_dim code vectors)")


def _validate_net(cfg: Config) -> None:
    """Spec settings belong to ``net=spec`` and must load and parse (shapes are
    checked against the data when the model is built, still before training)."""
    if cfg.net != "spec":
        for name in ("encoder_spec", "decoder_spec"):
            if getattr(cfg, name) is not None:
                raise ConfigError(f"{name} is set but net={cfg.net!r}; add --net spec to build "
                                  "the networks from layer specs")
        return
    if cfg.encoder_spec is None:
        raise ConfigError("net=spec needs encoder_spec (--encoder-spec): a packaged "
                          "architecture such as mnist_conv, a .json path or a JSON list")
    from jvae.spec import SpecError
    from jvae.spec_nets import resolve_spec_pair
    try:
        resolve_spec_pair(cfg.encoder_spec, cfg.decoder_spec)
    except SpecError as e:
        raise ConfigError(str(e)) from None


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
    if name in ("encoder_spec", "decoder_spec") and isinstance(value, (list, dict)):
        # A config file may hold the spec itself; kept as JSON text.
        value = json.dumps(value)
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
    if t is bool:
        if isinstance(v, str) and v.lower() in ("true", "1", "yes", "false", "0", "no"):
            return v.lower() in ("true", "1", "yes")
        if not isinstance(v, bool):
            raise TypeError
        return v
    if isinstance(v, bool):
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


# Other names users know settings by (the KL weight is "kld_weight" in many
# PyTorch VAE code bases).
ALIASES = {"kld_weight": "beta"}


def make_config(*layers: dict[str, Any]) -> Config:
    """Builds a :class:`Config` from dicts of overrides, later ones winning.

    Keys may use dashes or underscores (``batch-size`` or ``batch_size``), and
    the names in :data:`ALIASES` (``kld_weight`` is ``beta``).

    Raises:
      ConfigError: an unknown key or an invalid value.
    """
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            name = ALIASES.get(name, name)
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r}; known settings: "
                                  f"{', '.join(sorted(_FIELDS))}")
            values[name] = _coerce(name, value)
    return Config(**values)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A JSON-serializable dict of the config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
