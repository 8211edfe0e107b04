"""``jvae import-weights`` / ``jvae export-weights``: diffusers autoencoders <-> jvae runs.

Both diffusers classes of the Stable Diffusion family are read and written:
``AutoencoderKL`` (SD 1.x/2.x, SDXL, SD3, Flux) as a ``vae`` run and
``AutoencoderTiny`` (TAESD) as an ``ae`` run.

:func:`import_diffusers` turns a folder saved by diffusers' ``save_pretrained``
(``config.json`` + ``diffusion_pytorch_model.safetensors``) into a run
directory: ``config.json`` (``net=spec`` with the packaged ``sd_vae`` or the
generated architecture, ``posterior_scale=logvar``), ``diffusers.json`` (the
diffusers config and class, its latent ``scaling_factor`` and ``shift_factor``,
``force_upcast``, the data shape) and an orbax
checkpoint at epoch 0 of the train state ``jvae train`` builds, holding the
weights. Every mode then works on it: ``evaluate``, ``train`` (fine-tuning
resumes from epoch 0) and the rest. :func:`export_diffusers` writes a run's
checkpoint back in diffusers' format. The tensor mapping is
:mod:`jvae.layers.diffusers`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from jvae.app import flags
from jvae.app.checkpoint import Checkpointer
from jvae.app.config import Config, ConfigError, config_to_dict, load_config_file, make_config
from jvae.app.latents import DIFFUSERS_RECORD
from jvae.app.runs import saved_config
from jvae.app.write_guard import check_output_file, check_output_folder, writing
from jvae.layers.diffusers import (
    CONFIG_FILE,
    KL,
    SD_CONFIG,
    TINY,
    WEIGHTS_FILE,
    Layout,
    WeightsError,
    diffusers_layout,
    leaf_paths,
    packaged_name,
    params_to_tensors,
    read_tensors,
    spec_layers,
    tensors_to_params,
)
from jvae.layers.spec_nets import resolve_spec_pair
from jvae.training.ema import averaged_params
from jvae.training.experiment import DataSpec, build
from jvae.training.state import TrainState, create_train_state

__all__ = ["SIDECAR_FILE", "IMPORT_DEFAULTS", "import_diffusers", "restore_params",
           "export_diffusers", "write_random_weights", "IMPORT_MODE", "EXPORT_MODE"]

# The run directory's record of where its weights came from and how to go back.
SIDECAR_FILE = DIFFUSERS_RECORD
# Settings an imported run starts with; the user's settings override them.
IMPORT_DEFAULTS = {"likelihood": "gaussian", "gaussian_scale": 0.1}
# Settings the imported weights fix, per diffusers class: an AutoencoderKL's
# encoder emits a Normal's mean and log-variance; an AutoencoderTiny's, the code.
_FIXED = {KL: {"net": "spec", "posterior": "normal", "posterior_scale": "logvar",
               "decoder_spec": None, "flow_layers": 0, "stochastic_layers": 1},
          TINY: {"net": "spec", "model": "ae", "posterior": "normal", "decoder_spec": None,
                 "flow_layers": 0}}
# The models each class's weights fit.
_MODELS = {KL: ("vae", "iwae"), TINY: ("ae",)}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise WeightsError(f"{path} not found: {what}")
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise WeightsError(f"{path} must hold a JSON object")
    return value


def _data_shape(layout: Layout, data_shape: Sequence[int] | None) -> tuple[int, int, int]:
    factor, channels = layout.factor, layout.in_channels
    if data_shape is None:
        # AutoencoderTiny's config has no sample_size; it runs at any multiple of 8.
        size = int(layout.config.get("sample_size", 512))
        data_shape = (size, size, channels)
    shape = tuple(int(d) for d in data_shape)
    if len(shape) != 3 or shape[2] != channels or any(d < 1 or d % factor for d in shape[:2]):
        raise WeightsError(f"data shape {shape} does not fit the weights: need (H, W, "
                           f"{channels}) with H and W divisible by {factor}")
    return shape  # type: ignore[return-value]


def _model(cfg: Config, data_shape: tuple[int, ...]):
    """The run's experiment and its parameters' shapes (nothing is initialised)."""
    experiment = build(cfg, DataSpec(tuple(data_shape)))
    x = jax.ShapeDtypeStruct((1, *data_shape), np.float32)
    return experiment, jax.eval_shape(experiment.vae.init, jax.random.key(0), x)


def _train_state(cfg: Config, experiment, params: Any) -> TrainState:
    """A train state holding ``params``, with the key and optimizer ``jvae train`` uses."""
    # train.py's init key: the first of three split from the seed.
    init_key = jax.random.split(jax.random.key(cfg.seed), 3)[0]
    example = {"image": np.zeros((1, *experiment.data_spec.shape), np.float32)}
    return create_train_state(experiment.vae, experiment.objective, experiment.optimizer,
                              init_key, example, cond_key=experiment.cond_key,
                              params=jax.tree.map(jax.numpy.asarray, params))


def _import_config(layout: Layout, settings: Mapping[str, Any] | None) -> Config:
    settings = {k.replace("-", "_"): v for k, v in (settings or {}).items()}
    if "encoder_spec" in settings:
        raise ConfigError("encoder_spec is set by the imported weights; leave it out")
    fixed = _FIXED[layout.kind]
    for key, value in fixed.items():
        if key in settings and settings[key] != value:
            raise ConfigError(f"{key}={settings[key]!r} does not fit imported {layout.kind} "
                              f"weights, which need {key}={value!r}")
    spec = packaged_name(layout.architecture) or json.dumps(layout.architecture)
    cfg = make_config(IMPORT_DEFAULTS, settings, {**fixed, "encoder_spec": spec})
    if cfg.model not in _MODELS[layout.kind]:
        raise ConfigError(f"model={cfg.model} does not fit imported {layout.kind} weights; use "
                          f"{' or '.join(_MODELS[layout.kind])}")
    return cfg


def import_diffusers(src_dir: str | os.PathLike, workdir: str | os.PathLike, *,
                     settings: Mapping[str, Any] | None = None,
                     data_shape: Sequence[int] | None = None) -> Path:
    """Converts a diffusers AutoencoderKL or AutoencoderTiny folder into a jvae run directory.

    Everything is checked before anything is written: the config's layout, every
    tensor's name and shape, the settings, and that ``workdir`` holds no run.

    Args:
      src_dir: folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``.
      workdir: the run directory to create.
      settings: :class:`~jvae.app.config.Config` settings of the run (dataset,
        data_dir, batch_size, lr, gaussian_scale, beta, ...) over
        :data:`IMPORT_DEFAULTS`; those the weights fix (net, encoder_spec,
        posterior, posterior_scale) may not differ.
      data_shape: per-example ``(H, W, C)`` of the run's data; default the
        config's ``sample_size`` square.

    Returns:
      The run directory.

    Raises:
      WeightsError: unreadable files, an unsupported config, or tensors that do
        not match it (the first missing or extra tensor is named).
      ConfigError: settings that do not fit the weights.
    """
    src, workdir = Path(src_dir), Path(workdir)
    if (workdir / "config.json").exists() or (workdir / "checkpoints").exists():
        raise WeightsError(f"{workdir} already holds a run; import into a new --workdir")
    check_output_folder(workdir, "--workdir")
    layout = diffusers_layout(_read_json(
        src / CONFIG_FILE, f"--from must be a folder saved by diffusers' save_pretrained, "
        f"holding {CONFIG_FILE} and {WEIGHTS_FILE}"))
    tensors = read_tensors(src / WEIGHTS_FILE)
    cfg = _import_config(layout, settings)
    shape = _data_shape(layout, data_shape)
    experiment, abstract = _model(cfg, shape)
    params = tensors_to_params(layout, tensors, abstract, source=str(src / WEIGHTS_FILE))
    extra = sorted(set(leaf_paths(abstract)) - {t.path for t in layout.tensors})
    if extra:
        raise ConfigError(f"the run's settings add parameters the weights lack "
                          f"({'/'.join(extra[0])}); use a likelihood with one parameter per "
                          "pixel (gaussian or bernoulli)")
    state = _train_state(cfg, experiment, params)

    with writing(workdir, "--workdir"):
        workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    record = {"source": str(src.resolve()), "class": layout.kind,
              "scaling_factor": layout.config["scaling_factor"],
              "shift_factor": layout.config.get("shift_factor") or 0.0,
              "force_upcast": bool(layout.config.get("force_upcast", False)),
              "data_shape": list(shape), "diffusers_config": layout.config}
    (workdir / SIDECAR_FILE).write_text(json.dumps(record, indent=2) + "\n")
    with Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints, async_save=False) as ck:
        ck.save(0, state, {"epoch": 0, "wall_s": 0.0, "last_row": {},
                           "config": config_to_dict(cfg), "imported_from": record["source"]})
    return workdir


def write_random_weights(folder: str | os.PathLike, config: Mapping[str, Any], *,
                         seed: int = 0) -> Path:
    """Writes a diffusers folder of random weights for ``config``: what ``import-weights``
    reads, without PyTorch or a download (for trying pipelines and drills).

    Every tensor is standard normal (seeded): not a trained model, nor PyTorch's
    initialisation.

    Args:
      folder: the folder to create (``config.json`` and the safetensors file).
      config: a diffusers ``AutoencoderKL`` or ``AutoencoderTiny`` config.
      seed: seed of the draws.

    Returns:
      ``folder``.
    """
    from safetensors.numpy import save_file

    layout = diffusers_layout(config)
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({t.name: rng.standard_normal(t.shape).astype(np.float32) for t in layout.tensors},
              str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2) + "\n")
    return folder


def _run_layout(workdir: Path) -> tuple[Config, Layout, tuple[int, int, int]]:
    """The run's settings, its diffusers layout and data shape; WeightsError if it has none."""
    cfg = saved_config(workdir)
    sidecar = workdir / SIDECAR_FILE
    record = _read_json(sidecar, "") if sidecar.is_file() else {}
    layout = diffusers_layout(record.get("diffusers_config", SD_CONFIG))
    pair = resolve_spec_pair(cfg.encoder_spec, cfg.decoder_spec) if cfg.net == "spec" else None
    data_range = layout.architecture.get("data_range")
    data_range = None if data_range is None else tuple(float(v) for v in data_range)
    if pair is None or any(spec_layers(getattr(pair, part)) != layout.architecture[part]
                           for part in ("encoder", "decoder")) or (
            pair.encoder_range, pair.decoder_range) != (data_range, data_range):
        raise WeightsError(f"the run in {workdir} is not an {layout.kind}: it needs net=spec "
                           "with the architecture its weights were imported with (or sd_vae)")
    if layout.kind == TINY:
        if cfg.model != "ae":
            raise WeightsError(f"the run in {workdir} has model={cfg.model}; AutoencoderTiny "
                               "weights need model=ae")
    elif cfg.posterior != "normal" or cfg.posterior_scale != "logvar" or cfg.flow_layers:
        raise WeightsError(f"the run in {workdir} has posterior {cfg.posterior} with "
                           f"posterior_scale={cfg.posterior_scale}; AutoencoderKL needs a "
                           "normal posterior with posterior_scale=logvar and no flow")
    if cfg.stochastic_layers != 1:
        raise WeightsError(f"the run in {workdir} has a second stochastic layer (its prior "
                           "p(h1|h2)); AutoencoderKL has an N(0, I) prior only")
    return cfg, layout, _data_shape(layout, record.get("data_shape"))


def restore_params(workdir: str | os.PathLike, step: int | None = None) -> tuple[Any, Layout]:
    """The parameters of a run's newest (or given) checkpoint and its diffusers layout.

    Needs no data: the state template is built from the run's settings.

    Raises:
      WeightsError: not an imported (or sd_vae) run, or no checkpoint.
    """
    workdir = Path(workdir)
    cfg, layout, shape = _run_layout(workdir)
    experiment, abstract = _model(cfg, shape)
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        raise WeightsError(f"no checkpoint in {folder}")
    with Checkpointer(folder, keep=cfg.keep_checkpoints) as ckpt:
        steps = ckpt.all_steps()
        if not steps:
            raise WeightsError(f"no checkpoint in {folder}")
        if step is not None and step not in steps:
            raise WeightsError(f"no checkpoint of step {step} in {folder}; it holds steps "
                               f"{', '.join(map(str, steps))} (--step, default: the newest)")
        state, _ = ckpt.restore(_train_state(cfg, experiment, zeros), step=step)
    return averaged_params(state), layout


def export_diffusers(workdir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     step: int | None = None) -> Path:
    """Writes a run's checkpoint as a diffusers AutoencoderKL (or AutoencoderTiny) folder.

    ``AutoencoderKL.from_pretrained(out_dir)`` (``AutoencoderTiny`` for a
    TAESD run) loads the result. Tensors are
    float32; a run imported from float32 weights and not trained exports
    bit-identical tensors.

    Args:
      workdir: a run made by :func:`import_diffusers` (or trained with
        ``sd_vae`` and ``posterior_scale=logvar``).
      out_dir: folder to write ``config.json`` and the safetensors file into.
      step: checkpoint step; the newest when None.

    Returns:
      ``out_dir``.

    Raises:
      WeightsError: the run is no diffusers layout, has no checkpoint (of
        ``step``), or ``out_dir`` already holds weights.
      OutputError: ``out_dir`` is a run directory, lies in a run's files or
        cannot be written (checked before anything is read or written).
    """
    from safetensors.numpy import save_file

    out = check_output_folder(out_dir)
    for name in (WEIGHTS_FILE, CONFIG_FILE):  # a folder may hold a run further down
        check_output_file(out / name)
    if (out / WEIGHTS_FILE).exists():
        raise WeightsError(f"{out / WEIGHTS_FILE} exists; export into a new --output folder")
    params, layout = restore_params(workdir, step)
    tensors = params_to_tensors(layout, params)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
        (out / CONFIG_FILE).write_text(json.dumps(layout.config, indent=2) + "\n")
    return out


# --- modes -----------------------------------------------------------------------


def _add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="DIR",
                        help=f"Folder saved by diffusers' save_pretrained (holding "
                             f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    flags.add_workdir_flag(parser, required=True, help="The run directory to create.")
    parser.add_argument("--data-shape", default=None, metavar="H,W,C",
                        help="Per-example shape of the run's data (default: the config's "
                             "sample_size square)")
    flags.add_config_flags(parser)


def _run_import(args: argparse.Namespace) -> int:
    settings = {**flags.recipe_of(args),
                **(load_config_file(args.config) if hasattr(args, "config") else {})}
    settings.pop("workdir", None)
    settings.update({f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                     if hasattr(args, f.name)})
    shape = None
    if args.data_shape is not None:
        try:
            shape = tuple(int(d) for d in args.data_shape.replace(",", " ").split())
        except ValueError:
            raise WeightsError(f"--data-shape {args.data_shape!r} is not H,W,C") from None
    import_diffusers(args.source, args.workdir, settings=settings, data_shape=shape)
    print(f"imported {args.source} into {args.workdir}")
    return 0


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_workdir_flag(parser, required=True)
    parser.add_argument("--format", choices=("diffusers",), default="diffusers",
                        help="Format of the written weights (diffusers: config.json and "
                             f"{WEIGHTS_FILE})")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="Folder to write the weights into (must not hold weights yet).")
    parser.add_argument("--step", type=int, default=None,
                        help="Checkpoint step to export (default: the newest)")


def _run_export(args: argparse.Namespace) -> int:
    export_diffusers(args.workdir, args.output, step=args.step)
    print(f"exported {args.workdir} to {args.output}")
    return 0


IMPORT_MODE = flags.Mode("import-weights", "Turn diffusers AutoencoderKL or AutoencoderTiny weights (Stable "
                         "Diffusion's VAE) into a run directory.", _add_import_arguments,
                         _run_import)
EXPORT_MODE = flags.Mode("export-weights", "Write a run's checkpoint as diffusers "
                         "AutoencoderKL or AutoencoderTiny weights.", _add_export_arguments, _run_export)
