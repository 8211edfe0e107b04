"""Command-line modes that use a trained run: encode, decode, reconstruct, sample,
interpolate and traverse.

Each mode is a pair: ``add_<mode>_arguments(parser)`` declares its flags and
``<mode>(args)`` runs it on a parsed namespace. Every mode restores the run's
``config.json`` and newest checkpoint and works through the jitted functions
of :mod:`jvae.inference`. A fully convolutional net runs image files at their
own sizes, whole or in tiles (:mod:`jvae.app.native`); other nets see them
resized to the training size. Latent files follow :mod:`jvae.app.latents`.
Bad input raises :class:`~jvae.inference.InferenceError`,
:class:`~jvae.app.config.ConfigError` or :class:`~jvae.data.DataError`, which the
command line prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from PIL import Image

from jvae.app import flags
from jvae.app.config import Config
from jvae.app.latents import (
    Latents,
    check_stackable,
    diffusion_scale,
    imported_record,
    load_latents,
    save_latents,
)
from jvae.app.native import NativeNet, Tiling, total_stride
from jvae.app.outputs import save_image_grid
from jvae.app.runs import restore_run
from jvae.app.samplers import SAMPLER_CHOICES, run_sampler
from jvae.app.write_guard import check_output_file, check_output_folder, make_parents, writing
from jvae.datasets.audio import (
    AUDIO_SUFFIXES,
    Clips,
    join_chunks,
    join_clips,
    read_clips,
    resample,
    wav_info,
    write_wav,
)
from jvae.datasets.images import IMAGE_SUFFIXES, parse_image_size, walk_files
from jvae.datasets.pixels import to_float
from jvae.datasets.sources import load_dataset
from jvae.distributions.posteriors import sample_prior
from jvae.inference import (
    Inference,
    InferenceError,
    decode_all,
    encode_all,
    interpolate_latents,
    list_images,
    load_images,
    make_inference,
    read_images,
    reconstruct_all,
    sample_all,
    scales_prior,
    traverse_latents,
)
from jvae.model import INFERENCE_DTYPES, inference_dtype, mixed_precision
from jvae.training.ema import averaged_params
from jvae.training.experiment import build

__all__ = ["Loaded", "load_run", "native_net", "ENCODE", "DECODE", "RECONSTRUCT", "SAMPLE",
           "INTERPOLATE", "TRAVERSE", "MODES"]


class Loaded(NamedTuple):
    """A restored run, ready for inference.

    Attributes:
      cfg: its settings.
      params: the newest checkpoint's parameters.
      inference: jitted functions of its model (:func:`~jvae.inference.make_inference`).
      train: its training split (float images, labels, one-hot labels for a cvae).
      test: its test split.
      cond_key: the batch entry a conditional model reads, else None.
      num_classes: classes of a conditional model (0 otherwise).
      info: what identifies its data (``modality``; for audio ``sample_rate``
        and ``chunk_size``).
      dtype: the compute dtype inference runs in, when ``--dtype`` chose one.
      step: the checkpoint's optimizer step.
    """

    cfg: Config
    params: Any
    inference: Inference
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    cond_key: str | None
    num_classes: int
    info: dict = {}
    dtype: str | None = None
    step: int = 0

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.test["image"].shape[1:])

    @property
    def audio(self) -> bool:
        """Whether the run was trained on audio clips."""
        return self.info.get("modality") == "audio"

    @property
    def sample_rate(self) -> int:
        return int(self.info["sample_rate"])


def load_run(workdir: str | Path, *, data_dir: str | None = None, batch_size: int = 256,
             dtype: str | None = None, need_data: bool = True) -> Loaded:
    """Restores a run's config and newest checkpoint (:func:`~jvae.app.runs.restore_run`).

    Args:
      workdir: the run directory.
      data_dir: overrides the run's saved data directory.
      batch_size: the batch shape of the inference helpers.
      dtype: the compute dtype of the nets (:data:`~jvae.model.INFERENCE_DTYPES`;
        float16 runs in float32 for weights whose ``force_upcast`` is set);
        None: the run's own ``compute_dtype``.
      need_data: False when the mode reads its inputs from files only: a run
        imported with ``jvae import-weights`` then loads no data (its splits
        are empty).
    """
    record = imported_record(workdir)
    shape = record.get("data_shape") if not need_data else None
    run = restore_run(workdir, data_dir=data_dir,
                      data_shape=tuple(shape) if isinstance(shape, list) else None)
    exp = run.experiment
    num_classes = 0 if exp.cond_key is None else int(exp.data_spec.num_classes)
    compute = None
    vae = exp.vae
    if dtype is not None:
        compute = inference_dtype(dtype, bool(record.get("force_upcast")))
        vae = mixed_precision(build(dataclasses.replace(run.cfg, compute_dtype="float32"),
                                    exp.data_spec).vae, compute)
    return Loaded(run.cfg, averaged_params(run.state), make_inference(vae, batch_size), run.train,
                  run.test, exp.cond_key, num_classes, run.info, compute, int(run.state.step))


def _load(args: argparse.Namespace, need_data: bool) -> Loaded:
    """:func:`load_run` with a mode's ``--workdir``, ``--data-dir``, ``--batch-size``, ``--dtype``."""
    return load_run(args.workdir, data_dir=args.data_dir, batch_size=args.batch_size,
                    dtype=args.dtype, need_data=need_data)


def native_net(run: Loaded, tiling: Tiling | None = None) -> NativeNet | None:
    """The run's model at any image size if its net is fully convolutional, else None
    (:func:`~jvae.app.native.total_stride`)."""
    if run.audio:
        return None
    classes = run.num_classes or None
    stride = total_stride(run.cfg, run.inference.vae, run.data_shape, classes, run.params)
    if stride is None:
        return None
    return NativeNet(run.cfg, run.params, run.inference.vae, run.data_shape, stride,
                     num_classes=classes, tiling=tiling or Tiling(), dtype=run.dtype)


# --- conditioning and inputs -------------------------------------------------------------------

def _one_hot(run: Loaded, labels: np.ndarray | None) -> np.ndarray | None:
    if run.cond_key is None:
        return None
    return np.eye(run.num_classes, dtype=np.float32)[np.asarray(labels)]


def _check_label(run: Loaded, label: int | None, *, needed: bool, why: str = "") -> None:
    """Validates ``--label`` against the run: only for a conditional model, in range."""
    if label is None:
        if needed and run.cond_key is not None:
            raise InferenceError(f"this run is a conditional model (model={run.cfg.model}); "
                                 f"add --label K (0-{run.num_classes - 1}){why}")
        return
    if run.cond_key is None:
        raise InferenceError(f"--label applies to a conditional model (model cvae); this run "
                             f"is model={run.cfg.model}")
    if not 0 <= label < run.num_classes:
        raise InferenceError(f"--label {label} is out of range: this run has "
                             f"{run.num_classes} classes (0-{run.num_classes - 1})")


def _dataset_split(run: Loaded, name: str, split: str,
                   data_dir: str | None) -> dict[str, np.ndarray]:
    """The run's own split (as it trained on it), or another dataset of the same shape."""
    if name == run.cfg.dataset and data_dir is None:
        return run.train if split == "train" else run.test
    raw = load_dataset(name, split, data_dir=data_dir, tfds_data_dir=run.cfg.tfds_data_dir)
    out = {"image": to_float(raw["image"]), "label": np.asarray(raw["label"])}
    if out["image"].shape[1:] != run.data_shape:
        raise InferenceError(f"dataset {name} has images of shape {out['image'].shape[1:]}, the "
                             f"run was trained on {run.data_shape}")
    if run.cond_key is not None:
        if out["label"].max() >= run.num_classes:
            raise InferenceError(f"dataset {name} has labels up to {out['label'].max()}, the "
                                 f"run knows {run.num_classes} classes")
        out[run.cond_key] = _one_hot(run, out["label"])
    return out


def _is_index(spec: str | None) -> bool:
    """Whether ``--from``/``--to`` names a test-set index (which needs the run's data)."""
    return spec is not None and not Path(spec).is_file() and re.fullmatch(r"-?\d+", spec) is not None


def _point(run: Loaded, spec: str, label: int | None, flag: str,
           read: Callable[[Path], np.ndarray] | None = None) -> tuple[np.ndarray, int | None]:
    """An image given as a file path (read by ``read``; default: at the training size) or a
    test-set index, with its class."""
    path = Path(spec)
    if _is_index(spec):
        index, n = int(spec), len(run.test["image"])
        if not 0 <= index < n:
            raise InferenceError(f"{flag} {spec}: test index out of range (0-{n - 1})")
        found = int(run.test["label"][index])
        return run.test["image"][index], found if label is None else label
    what = "a .wav file" if run.audio else "an image file"
    if not path.is_file():
        raise InferenceError(f"{flag} {spec} is neither {what} nor a test-set index")
    _check_label(run, label, needed=True, why=f" for {spec}")
    if run.audio:  # the clip's first chunk
        return _read_clips(run, [path], flag).chunks[0], label
    if read is not None:
        return read(path), label
    return load_images([path], run.data_shape)[0], label


def _folder(run: Loaded, folder: str, label: int | None, *, native: bool = False,
            size: tuple[int, int] | None = None
            ) -> tuple[list[Path], np.ndarray | list[np.ndarray], np.ndarray | None]:
    """The images of ``--input`` with the one-hot ``--label`` a conditional model needs:
    stacked at the training size, or with ``native`` a list, each at its own size (or
    ``size``)."""
    if run.audio:
        raise InferenceError("this run was trained on audio; --input takes a folder of .wav "
                             "files")  # callers route audio runs to _clip_folder
    files = list_images(folder)
    _check_label(run, label, needed=True, why=" for the --input images")
    images = (read_images(files, run.data_shape, size) if native
              else load_images(files, run.data_shape))
    return files, images, _one_hot(run, np.full(len(files), label or 0))


def _list_wavs(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise InferenceError(f"--input {folder} is not a folder of .wav files")
    files = walk_files(path, AUDIO_SUFFIXES)
    if not files:
        found = "images" if walk_files(path, IMAGE_SUFFIXES) else "no .wav files"
        raise InferenceError(f"--input {folder} holds {found}; this run was trained on audio "
                             "and takes a folder of .wav files")
    return files


def _read_clips(run: Loaded, files: list[Path], flag: str = "--input") -> Clips:
    """The files cut into the run's chunks at its sample rate; an unreadable file is an error."""
    clips = read_clips(files, run.sample_rate, run.data_shape[0])
    if clips.unreadable:
        bad = files[clips.unreadable[0]]
        raise InferenceError(f"{flag}: cannot read {bad} as a .wav file (or it holds no "
                             f"samples){f' and {len(clips.unreadable) - 1} more' if len(clips.unreadable) > 1 else ''}")
    return clips


def _clip_folder(run: Loaded, folder: str, label: int | None
                 ) -> tuple[list[Path], Clips, np.ndarray | None]:
    """The ``.wav`` files of ``--input`` in the run's chunks, with the one-hot ``--label``."""
    files = _list_wavs(folder)
    _check_label(run, label, needed=True, why=" for the --input clips")
    clips = _read_clips(run, files)
    return files, clips, _one_hot(run, np.full(len(clips.chunks), label or 0))


def _write_clips(out: Path, clips: np.ndarray, run: Loaded) -> None:
    """Decoded clips ``(n, T, 1)`` joined by short silences into one ``.wav`` file."""
    write_wav(out, join_clips([c[:, 0] for c in np.asarray(clips)], run.sample_rate),
              run.sample_rate)


def _check_output(run: Loaded, out: Path, flag: str = "--output") -> None:
    """An audio run writes ``.wav`` where an image run writes ``.png``."""
    want = ".wav" if run.audio else ".png"
    if out.suffix.lower() != want:
        what = "audio" if run.audio else "images"
        raise InferenceError(f"this run was trained on {what}; {flag} {out} must end in {want}")


def _output(path: str, suffixes: tuple[str, ...], flag: str = "--output", *,
            npy: bool = False) -> Path:
    """``--output``, checked before the run is read (:mod:`jvae.app.write_guard`): its suffix,
    a run's files, a path that cannot be written; with ``npy`` its ``.npy`` siblings too.
    Nothing is created here: the mode writes once it has its outputs."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InferenceError(f"{flag} {path} must end in {' or '.join(suffixes)}")
    for target in (out, *(_npy_paths(out) if npy else ())):
        check_output_file(target, flag)
    return out


def _npy_paths(out: Path) -> tuple[Path, Path]:
    """Where ``--npy`` writes the images and the codes beside ``out``."""
    return out.with_suffix(".npy"), out.with_name(out.stem + "_z.npy")


def _save_npy(out: Path, images: np.ndarray, z: np.ndarray) -> None:
    """``--npy``: the images and their codes beside ``out``."""
    for target, array in zip(_npy_paths(out), (images, z)):
        with writing(target):
            np.save(target, array)


def _targets(out_dir: Path, root: str, files: list[Path], suffix: str) -> list[Path]:
    """The outputs mirroring ``files`` under ``root`` into ``out_dir``, each checked (a
    folder of outputs may hold a run further down)."""
    targets = [(out_dir / path.relative_to(root)).with_suffix(suffix) for path in files]
    for target in targets:
        check_output_file(target)
    return targets


class _Groups(NamedTuple):
    data: Any   # what goes in: images, test indices, labels
    mode: Any   # the mode's own knobs
    run: Any    # the run directory, outputs, batching


def _common(p: argparse.ArgumentParser, name: str) -> _Groups:
    """The flag groups of an inference mode, with the flags every mode has."""
    g = _Groups(p.add_argument_group("data settings"), p.add_argument_group(f"{name} settings"),
                p.add_argument_group("run settings"))
    flags.add_workdir_flag(g.run, required=True)
    g.data.add_argument("--data-dir", default=None, metavar="DIR",
                        help="overrides the run's saved data directory (str; default: the "
                             "saved one)")
    g.run.add_argument("--dtype", choices=INFERENCE_DTYPES, default=None,
                       help="compute dtype of the nets: bfloat16 keeps float32's range at "
                            "half the bytes; float16 runs in float32 for weights marked "
                            "force_upcast (SDXL, SD3, Flux), whose activations exceed float16's; "
                            "GroupNorm statistics and attention softmax stay float32 (choice; "
                            "default: the run's compute_dtype)")
    g.run.add_argument("--batch-size", type=_positive, default=256, metavar="N",
                       help="images per jitted call, the last batch padded; a fully "
                            "convolutional net runs image files one at a time, at their own "
                            "sizes (int; default: 256)")
    return g


def _integer_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is {what}")
        return value
    return parse


_positive = _integer_at_least(1, "not positive")
_non_negative = _integer_at_least(0, "negative")


def _label_flag(p, what: str) -> None:
    p.add_argument("--label", type=int, default=None, metavar="K",
                   help=f"class to condition a cvae on{what} (int; default: none)")


def _tile_flags(g: _Groups) -> None:
    g.mode.add_argument("--tile", type=_non_negative, default=None, metavar="N",
                        help="run a fully convolutional net in overlapping tiles of N image "
                             "pixels, a multiple of its total stride, blended linearly across "
                             "the overlaps; 0 never tiles (int; default: tile an image only when "
                             "its whole-image program would not fit the device's memory)")
    g.mode.add_argument("--tile-overlap", type=flags.finite_float, default=0.25, metavar="F",
                        help="overlap of neighbouring tiles as a fraction of the tile, in [0, 1) "
                             "(float; default: 0.25)")


def _size_flags(g: _Groups, help: str | None = None) -> None:
    g.data.add_argument("--image-size", default=None, metavar="N|HxW|train",
                        help=help or "resize every image file to N x N, H x W or the training "
                             "size; other nets than fully convolutional ones always run at the "
                             "training size (str; default: a fully convolutional net runs each "
                             "image at its own size, reflect-padded to a multiple of its stride)")
    _tile_flags(g)


def _sizing(run: Loaded, args: argparse.Namespace
            ) -> tuple[NativeNet | None, tuple[int, int] | None]:
    """How image files run: ``(native, size)``. A fully convolutional net gives its
    :class:`~jvae.app.native.NativeNet` and the ``--image-size`` to resize to (None: each
    image's own size); any other net gives None and the training size."""
    text = getattr(args, "image_size", None)
    train = tuple(int(d) for d in run.data_shape[:2])
    size = train if text == "train" else parse_image_size(text)
    native = native_net(run, Tiling(args.tile, args.tile_overlap))
    if native is not None:
        return native, size
    why = f"this run's net (net={run.cfg.net}) is not fully convolutional"
    if args.tile:
        raise InferenceError(f"--tile applies to fully convolutional nets; {why} (drop --tile)")
    if size is not None and size != train:
        raise InferenceError(f"--image-size {text}: {why} and runs only at its training size "
                             f"{train[0]}x{train[1]}")
    return None, train


def _tiling(native: NativeNet | None) -> dict[str, Any]:
    """What a mode's JSON line reports of the sizes and tiles it ran at."""
    if native is None:
        return {"native": False, "tiled": False, "tile": None}
    return {"native": True, "tiled": native.tiled, "tile": max(native.tiles, default=0) or None}


def _map_codes(fn: Callable[[np.ndarray], np.ndarray], codes: np.ndarray | list[np.ndarray]):
    """``fn`` of stacked codes, or of each code of a list."""
    return fn(codes) if isinstance(codes, np.ndarray) else [fn(c) for c in codes]


def _row(cond: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if cond is None else cond[i]


# --- modes -------------------------------------------------------------------------------------

def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    g = _common(p, "encode")
    src = g.data.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="DIR",
                     help="folder of images (of .wav files for an audio run) to encode, "
                          "searched recursively (str)")
    src.add_argument("--dataset", metavar="NAME",
                     help="dataset to encode instead, e.g. the run's own mnist (str)")
    g.data.add_argument("--split", choices=("train", "test"), default="test",
                        help="split of --dataset (choice; default: test)")
    g.run.add_argument("--output", required=True, metavar="PATH",
                       help="file to write: .npz with mean, scale and files or labels, the "
                            "codes of images of different sizes one entry per image as "
                            "mean/00000, scale/00000, ... with each image's own size in sizes; "
                            "or .npy, one array (2, N, *latent) of means then scales (str; "
                            "required)")
    g.mode.add_argument("--for-diffusion", action="store_true",
                        help="write (mean - shift_factor) * scaling_factor, the latents a "
                             "latent diffusion model takes, as latent, with the factors of an "
                             "imported VAE's WORKDIR/diffusers.json recorded for decode (flag; "
                             "default: off)")
    _size_flags(g)
    _label_flag(g.data, " for every --input image (a conditional encoder needs it)")


def encode(args: argparse.Namespace) -> dict[str, Any]:
    """Posterior means and scales of a folder of images or a dataset split, to a file
    (:mod:`jvae.app.latents`)."""
    out = _output(args.output, (".npz", ".npy"))
    diffusion = diffusion_scale(args.workdir) if args.for_diffusion else None
    run = _load(args, need_data=args.input is None)
    extra: dict[str, np.ndarray] = {}
    native = None
    if args.input is not None and run.audio:
        # One code sequence per chunk, with the file and sample it starts at.
        files, clips, cond = _clip_folder(run, args.input, args.label)
        images = clips.chunks
        names = np.array([f.relative_to(args.input).as_posix() for f in files])
        extra.update(files=names[clips.file_index], offsets=clips.offsets, lengths=clips.lengths)
    elif args.input is not None:
        native, size = _sizing(run, args)
        files, images, cond = _folder(run, args.input, args.label, native=native is not None,
                                      size=size)
        if native is not None:  # before encoding: an .npy holds codes of one shape only
            check_stackable(out, [tuple(-(-d // native.stride) for d in x.shape[:2])
                                  for x in images])
        extra["files"] = np.array([f.relative_to(args.input).as_posix() for f in files])
    else:
        if args.label is not None:
            raise InferenceError("--label applies to --input images; a --dataset brings its labels")
        data = _dataset_split(run, args.dataset, args.split, args.data_dir)
        images, cond = data["image"], None if run.cond_key is None else data[run.cond_key]
        extra["labels"] = np.asarray(data["label"])
    if native is not None:
        rows = [native.encode(x, _row(cond, i)) for i, x in enumerate(images)]
        codes = {k: [r[k] for r in rows] for k in ("mean", "scale")}
        extra["sizes"] = np.array([x.shape[:2] for x in images], np.int64).reshape(-1, 2)
    else:
        codes = encode_all(run.inference, run.params, images, cond)
    if diffusion is not None:
        codes = {"latent": _map_codes(diffusion.to_diffusion, codes["mean"])}
    make_parents(out)
    with writing(out):
        save_latents(out, codes, extra, diffusion)
    shapes = {tuple(np.shape(c)) for c in codes[next(iter(codes))]}
    latent_shape = (list(run.inference.vae.latent_shape) if native is None
                    else list(shapes.pop()) if len(shapes) == 1 else None)
    return {"output": str(out), "count": len(images), "latent_shape": latent_shape,
            "for_diffusion": diffusion is not None, **_tiling(native)}


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    g = _common(p, "decode")
    g.data.add_argument("--input", required=True, metavar="PATH",
                        help="codes to decode: an .npz written by jvae encode, or any with mean "
                             "or latent entries, or an .npy of codes (N, *latent) (str; required)")
    g.run.add_argument("--output", required=True, metavar="DIR",
                       help="folder for one PNG per code at its own size, named after the "
                            ".npz's files entry, else 00000.png, 00001.png, ... (str; required)")
    g.mode.add_argument("--for-diffusion", action="store_true",
                        help="the codes are latent diffusion latents: decode latent / "
                             "scaling_factor + shift_factor with the factors of "
                             "WORKDIR/diffusers.json (flag; default: as the .npz records)")
    _tile_flags(g)
    _label_flag(g.data, " for every code (default: the .npz's labels)")


def _check_codes(path: str, codes: list[np.ndarray], latents: Latents) -> None:
    """Refuses codes that are not finite float32 (values above float32's 3.4e38 become inf,
    and a decoder would paint them as noise) and crop sizes that are not positive."""
    for i, c in enumerate(codes):
        if not np.all(np.isfinite(c)):
            raise InferenceError(f"--input {path}: code {i} holds values that are not finite "
                                 "as float32 (inf, nan, or beyond +-3.4e38); decode takes "
                                 "finite codes")
    for i, size in enumerate(latents.sizes or ()):
        if len(size) != 2 or min(size) < 1:
            raise InferenceError(f"--input {path}: sizes entry {i} is {tuple(size)}; each must "
                                 "be a positive (height, width)")


def decode(args: argparse.Namespace) -> dict[str, Any]:
    """One PNG per code of a latent file, each at its own size (a fully convolutional net)."""
    out_dir = check_output_folder(args.output)
    forced = diffusion_scale(args.workdir) if args.for_diffusion else None
    run = _load(args, need_data=False)
    if run.audio:
        raise InferenceError("decode writes images; this run was trained on audio (sample and "
                             "interpolate write its .wav clips)")
    native, _ = _sizing(run, args)
    latent_shape = tuple(run.inference.vae.latent_shape)
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, one line
        latents = load_latents(args.input, len(latent_shape))
        diffusion = latents.diffusion or forced  # what made the codes, if the file says
        codes = latents.codes if diffusion is None else [diffusion.from_diffusion(c)
                                                         for c in latents.codes]
    _check_codes(args.input, codes, latents)
    for i, c in enumerate(codes):
        fits = (c.ndim == 3 and c.shape[-1] == latent_shape[-1] if native is not None
                else c.shape == latent_shape)
        if not fits:
            want = (f"(h, w, {latent_shape[-1]})" if native is not None
                    else str(latent_shape))
            raise InferenceError(f"--input {args.input}: code {i} has shape {c.shape}; this "
                                 f"run decodes codes of shape {want}")
    labels = latents.labels
    if args.label is not None or labels is None:
        _check_label(run, args.label, needed=True, why=" for the codes")
        labels = np.full(len(codes), args.label or 0)
    elif run.cond_key is not None and not np.all((labels >= 0) & (labels < run.num_classes)):
        raise InferenceError(f"--input {args.input} has labels outside 0-{run.num_classes - 1}, "
                             f"the classes of this run; give --label K")
    cond = _one_hot(run, labels)
    names = latents.names or [f"{i:05d}.png" for i in range(len(codes))]
    targets = [(out_dir / name).with_suffix(".png") for name in names]
    for name, target in zip(names, targets):
        # Names come from the file: one naming a path outside --output is not followed.
        if not target.resolve().is_relative_to(out_dir.resolve()):
            raise InferenceError(f"--input {args.input} names an output outside --output: "
                                 f"{name!r}; rename its files entry")
        check_output_file(target)
    if native is None:
        images = decode_all(run.inference, run.params, np.stack(codes), cond)
    else:
        sizes = latents.sizes or [None] * len(codes)
        images = [native.decode(c, _row(cond, i), size=sizes[i]) for i, c in enumerate(codes)]
    for image, target in zip(images, targets):
        _save_png(image, target)
    return {"output": str(out_dir), "count": len(codes), "for_diffusion": diffusion is not None,
            **_tiling(native)}


def add_reconstruct_arguments(p: argparse.ArgumentParser) -> None:
    g = _common(p, "reconstruct")
    g.data.add_argument("--input", required=True, metavar="DIR",
                        help="folder of images (of .wav files for an audio run), searched "
                             "recursively (str; required)")
    g.run.add_argument("--output", required=True, metavar="PATH",
                       help="folder for one PNG per input, original left, reconstruction right "
                            "(an audio run: one .wav per input at its rate and length), "
                            "mirroring the input's subfolders (str; required)")
    _size_flags(g)
    _label_flag(g.data, " for every input image (a conditional model needs it)")


def reconstruct(args: argparse.Namespace) -> dict[str, Any]:
    """One PNG per input image: the image beside its reconstruction; for an audio run,
    one ``.wav`` per input ``.wav``, at its own rate and length."""
    out_dir = check_output_folder(args.output)
    run = _load(args, need_data=False)
    if run.audio:
        return _reconstruct_audio(run, args)
    native, size = _sizing(run, args)
    files, images, cond = _folder(run, args.input, args.label, native=native is not None,
                                  size=size)
    targets = _targets(out_dir, args.input, files, ".png")
    if native is None:
        recon = reconstruct_all(run.inference, run.params, images, cond)
    else:
        recon = [native.reconstruct(x, _row(cond, i)) for i, x in enumerate(images)]
    for target, x, r in zip(targets, images, recon):
        _save_png(np.concatenate([x, r], axis=1), target)
    return {"output": str(out_dir), "count": len(files), **_tiling(native)}


def _reconstruct_audio(run: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    files, clips, cond = _clip_folder(run, args.input, args.label)
    out_dir = Path(args.output)
    targets = _targets(out_dir, args.input, files, ".wav")
    recon = reconstruct_all(run.inference, run.params, clips.chunks, cond)
    for i, path in enumerate(files):
        rows = clips.file_index == i
        x = join_chunks(recon[rows], clips.offsets[rows], int(clips.samples[i]))
        rate, frames = wav_info(path)
        if rate != run.sample_rate:  # back to the input's own rate and length
            x = resample(x, run.sample_rate, rate)[:frames]
            x = np.pad(x, (0, frames - len(x)))
        with writing(targets[i]):
            write_wav(targets[i], x, rate)
    return {"output": str(out_dir), "count": len(files), "sample_rate": run.sample_rate}


def _save_png(image: np.ndarray, path: Path) -> None:
    """Writes one ``(H, W, C)`` image in [0, 1] at its own resolution."""
    arr = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    make_parents(path)
    with writing(path):
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    g = _common(p, "sample")
    g.mode.add_argument("--num", type=_positive, default=64, metavar="N",
                        help="number of samples (int; default: 64)")
    _label_flag(g.data, " (a cvae without it draws one row per class)")
    g.mode.add_argument("--temperature", type=flags.finite_float, default=1.0, metavar="T",
                        help="scale of the Normal prior's draws, z ~ N(0, T^2 I) (float; "
                             "default: 1.0)")
    g.mode.add_argument("--sampler", choices=SAMPLER_CHOICES, default="prior",
                        help="where the codes come from: the prior, or a density fitted to the "
                             "training set's codes (one posterior draw per image), saved as "
                             "WORKDIR/samplers/NAME-STEP.msgpack for the checkpoint and reused "
                             "while it matches: gmm, a full-covariance Gaussian mixture (EM); "
                             "two-stage, a second-stage VAE (Dai & Wipf 2019); maf, a masked "
                             "autoregressive flow (choice; default: prior)")
    g.mode.add_argument("--components", type=_positive, default=None, metavar="K",
                        help="components of --sampler gmm (int; default: 10)")
    g.mode.add_argument("--refit", action="store_true",
                        help="fit --sampler again even when a fit of this checkpoint is saved "
                             "(flag; default: off)")
    g.run.add_argument("--seed", type=flags.seed_int, default=0, metavar="N",
                       help="seed of the draws of the prior or the fitted sampler (int; "
                            "default: 0)")
    g.run.add_argument("--output", required=True, metavar="PATH",
                       help="PNG grid to write (str; required)")
    g.run.add_argument("--npy", action="store_true",
                       help="also write the images to OUTPUT.npy and the codes to OUTPUT_z.npy "
                            "(flag; default: off)")
    _size_flags(g, "size of the samples, N x N, H x W (multiples of the stride) or train; "
                   "a fully convolutional net only (str; default: the training size)")


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """A grid of decoded samples (of the prior or a fitted sampler), optionally of one class."""
    out = _output(args.output, (".png", ".wav"), npy=args.npy)
    if not args.temperature > 0:
        raise InferenceError(f"--temperature must be positive, got {args.temperature}")
    _check_sampler_flags(args)
    run = _load(args, need_data=False)
    _check_output(run, out)
    _check_label(run, args.label, needed=False)
    vae = run.inference.vae
    if args.temperature != 1.0 and not scales_prior(vae):
        name = vae.posterior.name if vae.prior is None else f"learned {vae.prior.name}"
        raise InferenceError(f"--temperature scales a Normal prior; the {name} "
                             "prior has none (leave it at 1)")
    ncol = 8
    if run.cond_key is None:
        labels = None
    elif args.label is not None:
        labels = np.full(args.num, args.label)
    else:  # one row per class
        ncol = -(-args.num // run.num_classes)
        labels = np.repeat(np.arange(run.num_classes), ncol)[:args.num]
    cond = _one_hot(run, labels)
    native, size = _sizing(run, args)
    fitted: dict[str, Any] = {}
    if native is None or size is None or size == run.data_shape[:2]:
        native = None  # the training size: the batched programs
        if args.sampler == "prior":
            z, images = sample_all(run.inference, run.params, jax.random.key(args.seed),
                                   args.num, cond, args.temperature)
        else:
            z, images, fitted = _sample_fitted(run, args, cond)
    elif args.sampler != "prior":
        raise InferenceError(f"--sampler {args.sampler} draws codes of the training size; "
                             "drop --image-size")
    else:
        z, images = _sample_native(run, native, size, args, cond)
    _save_strip(run, images, out, ncol)
    result = {"output": str(out), "count": args.num, "sampler": args.sampler, **fitted,
              **_tiling(native)}
    if args.npy:
        _save_npy(out, images, z)
        result["npy"] = str(out.with_suffix(".npy"))
    if labels is not None:
        result["labels"] = labels.tolist()
    return result


def _check_sampler_flags(args: argparse.Namespace) -> None:
    """Refuses flags that do not apply to ``--sampler`` (before the run is read)."""
    if args.sampler == "prior":
        for flag, value in (("--components", args.components), ("--refit", args.refit or None)):
            if value is not None:
                raise InferenceError(f"{flag} applies to a fitted --sampler (gmm, two-stage, "
                                     "maf); the prior is not fitted")
        return
    if args.temperature != 1.0:
        raise InferenceError(f"--temperature scales the prior's draws; --sampler {args.sampler} "
                             "draws codes as fitted (leave it at 1)")
    if args.components is not None and args.sampler != "gmm":
        raise InferenceError(f"--components applies to --sampler gmm, not {args.sampler}")


def _sample_fitted(run: Loaded, args: argparse.Namespace, cond: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Codes of ``--sampler`` (:func:`~jvae.app.samplers.run_sampler`: read back or fitted to
    the training split and saved), decoded; with what the JSON line reports of the fit."""
    vae = run.inference.vae
    options = {} if args.components is None else {"num_components": args.components}
    train_cond = None if run.cond_key is None else run.train[run.cond_key]
    fit = run_sampler(args.workdir, args.sampler, step=run.step, vae=vae, params=run.params,
                      images=run.train["image"], cond=train_cond, options=options,
                      refit=args.refit, batch_size=args.batch_size)
    z = np.asarray(fit.fitted.sample(jax.random.key(args.seed), args.num))
    z = z.reshape(args.num, *vae.latent_shape)
    images = decode_all(run.inference, run.params, z, cond)
    return z, images, {"sampler_file": None if fit.path is None else str(fit.path),
                       "refitted": fit.refitted, "fitted_on": fit.meta.get("codes"),
                       "step": run.step}


def _sample_native(run: Loaded, native: NativeNet, size: tuple[int, int],
                   args: argparse.Namespace, cond: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Prior samples of a fully convolutional net at ``size``: codes of ``size / stride``
    positions drawn as at the training size (scaled by the temperature), decoded one at a
    time, whole or in tiles."""
    if size[0] % native.stride or size[1] % native.stride:
        raise InferenceError(f"--image-size {size[0]}x{size[1]}: sample draws whole codes, so "
                             f"both sides must be multiples of the net's stride {native.stride}")
    vae = run.inference.vae
    if vae.prior is not None:
        raise InferenceError(f"the learned {vae.prior.name} prior draws codes of the training "
                             "size only; sample without --image-size")
    latent = (size[0] // native.stride, size[1] // native.stride, vae.latent_shape[-1])
    z = np.asarray(sample_prior(vae.posterior, jax.random.key(args.seed), latent, args.num,
                                run.params))
    if scales_prior(vae):
        z = z * args.temperature
    images = np.stack([native.decode(code, _row(cond, i)) for i, code in enumerate(z)])
    return z, images


def add_interpolate_arguments(p: argparse.ArgumentParser) -> None:
    g = _common(p, "interpolate")
    g.data.add_argument("--from", dest="start", required=True, metavar="IMAGE",
                        help="first image: a file path or a test-set index (str; required)")
    g.data.add_argument("--to", dest="end", required=True, metavar="IMAGE",
                        help="last image: a file path or a test-set index (str; required)")
    g.mode.add_argument("--steps", type=int, default=10, metavar="N",
                        help="images in the strip, both ends included (int; default: 10)")
    g.mode.add_argument("--slerp", action="store_true",
                        help="spherical instead of linear interpolation of the codes (flag; "
                             "default: off)")
    _label_flag(g.data, " for image files (a test index brings its own)")
    g.run.add_argument("--output", required=True, metavar="PATH",
                       help="PNG strip to write (str; required)")
    g.run.add_argument("--npy", action="store_true",
                       help="also write the images to OUTPUT.npy and the codes to OUTPUT_z.npy "
                            "(flag; default: off)")
    _size_flags(g)


def interpolate(args: argparse.Namespace) -> dict[str, Any]:
    """A strip of decodes along the path between two images' posterior means.

    The ends are the two reconstructions (decodes of the posterior means); a
    conditional model's one-hot label is interpolated linearly alongside.
    """
    out = _output(args.output, (".png", ".wav"), npy=args.npy)
    if args.steps < 2:
        raise InferenceError(f"--steps must be at least 2, got {args.steps}")
    run = _load(args, need_data=_is_index(args.start) or _is_index(args.end))
    _check_output(run, out)
    _check_label(run, args.label, needed=False)
    native, size, read = None, None, None
    if not run.audio:
        native, size = _sizing(run, args)
    if native is not None:
        def read(path: Path) -> np.ndarray:
            return read_images([path], run.data_shape, size)[0]
    (xa, ya), (xb, yb) = (_point(run, args.start, args.label, "--from", read),
                          _point(run, args.end, args.label, "--to", read))
    ends_cond = _one_hot(run, np.array([ya or 0, yb or 0]))
    cond = None
    if ends_cond is not None:
        cond = np.asarray(interpolate_latents(ends_cond[0], ends_cond[1], args.steps))
    if native is None:
        codes = encode_all(run.inference, run.params, np.stack([xa, xb]), ends_cond)["mean"]
    else:
        if xa.shape != xb.shape:
            raise InferenceError(f"--from is {xa.shape[0]}x{xa.shape[1]} and --to "
                                 f"{xb.shape[0]}x{xb.shape[1]}: interpolating needs images of "
                                 "one size; add --image-size N")
        codes = [native.encode(x, _row(ends_cond, i))["mean"] for i, x in enumerate((xa, xb))]
    z = np.asarray(interpolate_latents(codes[0], codes[1], args.steps, slerp=args.slerp))
    if native is None:
        images = decode_all(run.inference, run.params, z, cond)
    else:
        images = np.stack([native.decode(code, _row(cond, i), size=xa.shape[:2])
                           for i, code in enumerate(z)])
    _save_strip(run, images, out, args.steps)
    if args.npy:
        _save_npy(out, images, z)
    return {"output": str(out), "steps": args.steps, "slerp": args.slerp, **_tiling(native)}


def add_traverse_arguments(p: argparse.ArgumentParser) -> None:
    g = _common(p, "traverse")
    g.mode.add_argument("--dims", default=None,
                        help="flattened latent dimensions, one row each: ranges or lists such as "
                             "0-9 or 0,3,5 (str; default: 0-9, or every dimension of a "
                             "smaller code)")
    g.mode.add_argument("--range", dest="radius", type=flags.finite_float, default=3.0,
                        metavar="R",
                        help="each row moves its dimension from -RANGE to +RANGE around the centre "
                             "(float; default: 3.0)")
    g.mode.add_argument("--steps", type=int, default=9, metavar="N",
                        help="images per row (int; default: 9)")
    g.data.add_argument("--from", dest="start", default=None, metavar="IMAGE",
                        help="centre on this image's posterior mean: a file path or a test-set "
                             "index (str; default: the zero code)")
    _label_flag(g.data, " (a test index brings its own)")
    g.run.add_argument("--output", required=True, metavar="PATH",
                       help="PNG grid to write (str; required)")
    _size_flags(g)


def traverse(args: argparse.Namespace) -> dict[str, Any]:
    """A grid of decodes, one row per latent dimension moved around a centre code."""
    out = _output(args.output, (".png", ".wav"))
    if args.steps < 2:
        raise InferenceError(f"--steps must be at least 2, got {args.steps}")
    if not args.radius > 0:
        raise InferenceError(f"--range must be positive, got {args.radius}")
    dims = None if args.dims is None else list(flags.int_range(args.dims))
    run = _load(args, need_data=_is_index(args.start))
    _check_output(run, out)
    _check_label(run, args.label, needed=args.start is None,
                 why=" to decode the zero code as that class")
    vae = run.inference.vae
    label = args.label
    if dims is None:
        dims = list(range(min(10, int(np.prod(vae.latent_shape)))))
    native, size = _sizing(run, args)
    image_file = args.start is not None and not _is_index(args.start)
    if native is not None and not image_file and size is None:
        native = None  # no image to size the code: the training size
    if args.start is None:
        centre = np.zeros(vae.latent_shape, np.float32)
    elif native is None:
        x, label = _point(run, args.start, args.label, "--from")
        centre = encode_all(run.inference, run.params, x[None],
                            _one_hot(run, np.array([label or 0])))["mean"][0]
    else:  # the image at its own size (or --image-size): a code of its own shape
        x, label = _point(run, args.start, args.label, "--from",
                          read=lambda p: read_images([p], run.data_shape, size)[0])
        centre = native.encode(x, _row(_one_hot(run, np.array([label or 0])), 0))["mean"]
    z = np.asarray(traverse_latents(centre, dims, args.radius, args.steps))
    z = z.reshape(-1, *centre.shape)
    cond = _one_hot(run, np.full(len(z), label or 0))
    if native is None:
        images = decode_all(run.inference, run.params, z, cond)
    else:
        images = np.stack([native.decode(code, _row(cond, i), size=x.shape[:2])
                           for i, code in enumerate(z)])
    _save_strip(run, images, out, args.steps)
    return {"output": str(out), "dims": dims, "steps": args.steps, **_tiling(native)}


def _save_strip(run: Loaded, decoded: np.ndarray, out: Path, ncol: int) -> None:
    """A PNG grid of ``ncol`` columns, or for an audio run one ``.wav`` of the clips in
    order (row by row), joined by short silences."""
    make_parents(out)
    with writing(out):
        if run.audio:
            _write_clips(out, decoded, run)
        else:
            save_image_grid(decoded, out, ncol=ncol)


def _printing(fn: Callable[[argparse.Namespace], dict[str, Any]]
              ) -> Callable[[argparse.Namespace], int]:
    """A mode function that prints its result as one JSON line."""

    def run(args: argparse.Namespace) -> int:
        print(json.dumps(fn(args)), flush=True)
        return 0
    return run


ENCODE = flags.Mode("encode", "Posterior means and scales of a folder of images or a dataset "
                    "split, to .npz or .npy.", add_encode_arguments, _printing(encode))
DECODE = flags.Mode("decode", "One PNG per code of an .npz or .npy of latents (encode's, or "
                    "a diffusion model's).", add_decode_arguments, _printing(decode))
RECONSTRUCT = flags.Mode("reconstruct", "One PNG per input image: the original beside its "
                         "reconstruction.", add_reconstruct_arguments, _printing(reconstruct))
SAMPLE = flags.Mode("sample", "A PNG grid of samples of the prior or of a sampler fitted to the "
                    "training codes; with --label, of one class (conditional models).",
                    add_sample_arguments, _printing(sample))
INTERPOLATE = flags.Mode("interpolate", "A PNG strip decoding the path between two images' "
                         "codes (linear or --slerp).", add_interpolate_arguments,
                         _printing(interpolate))
TRAVERSE = flags.Mode("traverse", "A PNG grid, one row per latent dimension moved from -range "
                      "to +range around a code.", add_traverse_arguments, _printing(traverse))
MODES = (ENCODE, DECODE, RECONSTRUCT, SAMPLE, INTERPOLATE, TRAVERSE)
