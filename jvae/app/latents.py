"""The latent files ``jvae encode`` writes and ``jvae decode`` reads.

An ``.npz`` holds, for ``N`` examples:

* ``mean`` and ``scale``: the posterior means and standard deviations,
  ``(N, *latent)``, when every code has one shape; codes of different
  shapes (images encoded at their own sizes) are stored one entry per
  example instead, ``mean/00000``, ``scale/00000``, ... (the index into
  ``files``, zero-padded to five digits).
* ``latent`` (or ``latent/00000``, ...) instead of both, for
  ``--for-diffusion``: ``(mean - shift_factor) * scaling_factor``, what a
  latent diffusion model is trained on, with ``for_diffusion`` (True),
  ``scaling_factor`` and ``shift_factor`` recorded so ``decode`` undoes it.
* ``files``: each image's path under ``--input``; ``sizes``: each image's
  own ``(H, W)`` where codes were computed at the images' own sizes
  (``decode`` crops to it); ``labels`` for a dataset split. Others as
  ``jvae encode`` adds them.

Every entry is a plain array: ``np.load`` reads the file without
``allow_pickle``. An ``.npy`` holds ``(2, N, *latent)`` (means, then scales),
or with ``--for-diffusion`` the latents ``(N, *latent)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from jvae.inference import InferenceError

__all__ = ["DIFFUSERS_RECORD", "DiffusionScale", "Latents", "diffusion_scale", "imported_record",
           "check_stackable",
           "save_latents", "load_latents"]

# The record ``jvae import-weights`` writes beside an imported run's config.
DIFFUSERS_RECORD = "diffusers.json"


class DiffusionScale(NamedTuple):
    """The affine map between a VAE's codes and a latent diffusion model's latents.

    Attributes:
      scaling_factor: multiplies the shifted code (0.18215 for SD 1.x/2.x).
      shift_factor: subtracted first (0 where the VAE's config has none).
    """

    scaling_factor: float
    shift_factor: float = 0.0

    def to_diffusion(self, z: np.ndarray) -> np.ndarray:
        """``(z - shift_factor) * scaling_factor``."""
        return ((np.asarray(z) - self.shift_factor) * self.scaling_factor).astype(np.float32)

    def from_diffusion(self, latent: np.ndarray) -> np.ndarray:
        """``latent / scaling_factor + shift_factor``, the VAE's code."""
        return (np.asarray(latent) / self.scaling_factor + self.shift_factor).astype(np.float32)


def diffusion_scale(workdir: str | Path) -> DiffusionScale:
    """The latent scaling of an imported Stable Diffusion VAE run, from its record.

    Raises:
      InferenceError: the run has no (readable) ``diffusers.json``.
    """
    path = Path(workdir) / DIFFUSERS_RECORD
    if not path.is_file():
        raise InferenceError(f"--for-diffusion needs {path}, the latent scaling of a VAE "
                             "imported with jvae import-weights; this run has none (drop "
                             "--for-diffusion, or import the weights with jvae import-weights)")
    try:
        record = json.loads(path.read_text())
        scale = float(record["scaling_factor"])
        shift = float(record.get("shift_factor") or 0.0)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise InferenceError(f"{path} holds no usable scaling_factor ({e}); import the "
                             "weights again with jvae import-weights") from None
    if not scale > 0:
        raise InferenceError(f"{path} has scaling_factor {scale}; it must be positive")
    return DiffusionScale(scale, shift)


def imported_record(workdir: str | Path) -> dict:
    """The ``diffusers.json`` of a run made by ``jvae import-weights``; {} for any other run
    (or an unreadable record: the modes that need it say so themselves)."""
    path = Path(workdir) / DIFFUSERS_RECORD
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _one_shape(arrays: Sequence[np.ndarray]) -> bool:
    return len({np.shape(a) for a in arrays}) <= 1


def check_stackable(path: str | Path, shapes: Sequence[tuple[int, ...]]) -> None:
    """Refuses codes of several ``shapes`` for an ``.npy`` file, which holds one array.

    Raises:
      InferenceError: ``path`` ends in ``.npy`` and the shapes differ.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy" and len(set(shapes)) > 1:
        raise InferenceError(f"the images have different sizes, so their codes cannot "
                             f"stack into {path.name}; write an .npz instead (one entry "
                             "per image), or add --image-size N")


def save_latents(path: str | Path, codes: Mapping[str, Sequence[np.ndarray] | np.ndarray],
                 extra: Mapping[str, np.ndarray] | None = None,
                 diffusion: DiffusionScale | None = None) -> None:
    """Writes codes in the format of this module's docstring.

    Args:
      path: ``.npz`` or ``.npy`` file.
      codes: ``{"mean": ..., "scale": ...}`` or ``{"latent": ...}``, each a
        stacked array or one array per example.
      extra: more ``.npz`` entries, one row per example (``files``, ``sizes``, ...).
      diffusion: the scaling ``latent`` was made with, recorded in the ``.npz``.

    Raises:
      InferenceError: codes of different shapes for an ``.npy`` file.
    """
    path = Path(path)
    stacked = all(isinstance(v, np.ndarray) or _one_shape(v) for v in codes.values())
    if path.suffix.lower() == ".npy":
        for value in codes.values():
            check_stackable(path, [np.shape(v) for v in value])
        arrays = [np.asarray(v, np.float32) for v in codes.values()]
        np.save(path, arrays[0] if len(arrays) == 1 else np.stack(arrays))
        return
    entries: dict[str, np.ndarray] = dict(extra or {})
    for name, value in codes.items():
        if stacked:
            entries[name] = np.asarray(value, np.float32)
        else:
            entries.update({f"{name}/{i:05d}": np.asarray(v, np.float32)
                            for i, v in enumerate(value)})
    if diffusion is not None:
        entries.update(for_diffusion=np.array(True),
                       scaling_factor=np.array(diffusion.scaling_factor, np.float64),
                       shift_factor=np.array(diffusion.shift_factor, np.float64))
    np.savez(path, **entries)


class Latents(NamedTuple):
    """Codes read from a latent file.

    Attributes:
      codes: one array per example, as stored (diffusion latents not undone).
      names: each example's file path, or None.
      sizes: each image's own ``(H, W)``, or None.
      labels: each example's class, or None.
      diffusion: the scaling the file records its codes were made with, or None.
    """

    codes: list[np.ndarray]
    names: list[str] | None = None
    sizes: list[tuple[int, int]] | None = None
    labels: np.ndarray | None = None
    diffusion: DiffusionScale | None = None


def _entry(npz, name: str) -> list[np.ndarray] | None:
    """A stacked entry as rows, or the per-example entries ``name/00000``, ... in order."""
    if name in npz.files:
        return list(np.asarray(npz[name], np.float32))
    keys = sorted((k for k in npz.files if k.startswith(name + "/")),
                  key=lambda k: int(k.rsplit("/", 1)[1]))
    return [np.asarray(npz[k], np.float32) for k in keys] or None


def load_latents(path: str | Path, latent_rank: int) -> Latents:
    """Reads an ``.npz`` or ``.npy`` of codes (this module's format).

    An ``.npz`` gives its ``latent`` entries if present, else its ``mean``
    ones; an ``.npy`` of ``latent_rank + 1`` dimensions holds codes
    ``(N, *latent)``, one of ``latent_rank + 2`` with 2 rows ``jvae encode``'s
    means and scales (the means are used).

    Args:
      path: the file.
      latent_rank: dimensions of one code (3 for a spatial ``(h, w, c)`` latent).

    Raises:
      InferenceError: a missing or unreadable file, or one without codes.
    """
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".npy") or not path.is_file():
        raise InferenceError(f"--input {path} must be an existing .npz or .npy file of codes")
    try:
        data = np.load(path)
    except (OSError, ValueError) as e:
        raise InferenceError(f"cannot read {path}: {e}") from None
    if isinstance(data, np.ndarray):
        if data.ndim == latent_rank + 2 and data.shape[0] == 2:
            data = data[0]  # encode's means and scales: the means
        if data.ndim != latent_rank + 1:
            raise InferenceError(f"--input {path} holds an array of shape {data.shape}; decode "
                                 f"takes codes (N, *latent) with {latent_rank} latent "
                                 "dimensions, or encode's (2, N, *latent)")
        return Latents(list(np.asarray(data, np.float32)))
    with data:
        codes = _entry(data, "latent") or _entry(data, "mean")
        if codes is None:
            raise InferenceError(f"--input {path} holds no codes (no mean or latent entries); "
                                 "write it with jvae encode")
        names = [str(n) for n in data["files"]] if "files" in data.files else None
        sizes = ([tuple(int(d) for d in s) for s in data["sizes"]] if "sizes" in data.files
                 else None)
        labels = np.asarray(data["labels"]) if "labels" in data.files else None
        diffusion = None
        if "for_diffusion" in data.files and bool(data["for_diffusion"]):
            diffusion = DiffusionScale(float(data["scaling_factor"]), float(data["shift_factor"]))
    for what, rows in (("files", names), ("sizes", sizes), ("labels", labels)):
        if rows is not None and len(rows) != len(codes):
            raise InferenceError(f"--input {path} has {len(codes)} codes but {len(rows)} {what}")
    return Latents(codes, names, sizes, labels, diffusion)
