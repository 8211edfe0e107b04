"""Datasets as in-memory NumPy arrays, preprocessing, and a seeded batch iterator.

A split is a dict of arrays with a shared leading axis: ``image`` (uint8,
``(N, H, W, C)``) and ``label`` (int32, ``(N,)``). Sources:

* local MNIST IDX files (``.gz`` or raw), when a data directory is given;
* tensorflow-datasets otherwise, read with ``tfds.data_source`` (no TensorFlow
  needed once a dataset is prepared; preparing/downloading one needs the
  ``tfds`` extra, which installs TensorFlow).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from jvae.base import JvaeError
from jvae.parallel import shard_batch

__all__ = ["DataError", "read_idx", "write_idx", "load_mnist_idx", "load_tfds", "load_dataset",
           "to_float", "binarize", "BINARIZE_MODES", "num_batches", "batches", "add_condition"]

BINARIZE_MODES = ("none", "dynamic", "static")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DataError(JvaeError, RuntimeError):
    """Data that cannot be found, read or prepared; the message says how to fix it."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the format of the original MNIST distribution).

    The header is two zero bytes, a type code, the number of dimensions, then
    one big-endian uint32 per dimension; the data follow row-major.

    Args:
      path: file path; a ``.gz`` suffix is decompressed transparently.

    Returns:
      The array with the header's shape.

    Raises:
      DataError: if the file is missing, truncated or not IDX.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated or corrupt: header says shape {shape} "
                        f"({expected} bytes), file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    The inverse of :func:`read_idx`, for exporting subsets in the MNIST format.
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    big = array.astype(np.dtype(_IDX_DTYPES[code]).newbyteorder(">"))
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + big.tobytes())


def _find(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (data_dir / name).exists():
            return data_dir / name
    return None


def load_mnist_idx(data_dir: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """Loads an MNIST split from IDX files in ``data_dir``.

    Args:
      data_dir: folder with ``train-images-idx3-ubyte[.gz]``,
        ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
        ``t10k-labels-idx1-ubyte[.gz]``.
      split: ``"train"`` or ``"test"``.

    Returns:
      ``{"image": uint8 (N, 28, 28, 1), "label": int32 (N,)}``.
    """
    if split not in _MNIST_FILES:
        raise DataError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; pass --data-dir pointing "
                        "at the folder with the MNIST IDX files, or omit it to use tfds")
    img_stem, lbl_stem = _MNIST_FILES[split]
    img_path, lbl_path = _find(data_dir, img_stem), _find(data_dir, lbl_stem)
    if img_path is None or lbl_path is None:
        raise DataError(f"no MNIST {split} IDX files in {data_dir}: expected {img_stem}[.gz] and "
                        f"{lbl_stem}[.gz]; point --data-dir at the folder holding them")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{img_path} / {lbl_path}: expected (N, H, W) images and N labels, got "
                        f"{images.shape} and {labels.shape}")
    return {"image": images[..., None].astype(np.uint8), "label": labels.astype(np.int32)}


def _tensorflow_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorflow") is not None


def load_tfds(name: str, split: str, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """Loads a tfds image dataset split into memory via ``tfds.data_source``.

    A prepared dataset is read without TensorFlow. If it is not prepared, it is
    downloaded and prepared when TensorFlow is installed (``pip install
    'jvae[tfds]'``); otherwise a :class:`DataError` explains both fixes.

    Args:
      name: tfds dataset name, e.g. ``"mnist"``.
      split: split name, e.g. ``"train"``.
      data_dir: tfds data directory (tfds' default when None).

    Returns:
      ``{"image": uint8 (N, H, W, C), "label": int32 (N,)}``.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("tensorflow-datasets is not installed; pip install jvae "
                        "(it is a dependency) or pass --data-dir") from None
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for an unprepared dataset.
        if not _tensorflow_installed():
            raise DataError(
                f"tfds dataset {name!r} is not prepared in {data_dir or 'the default tfds dir'} "
                "and TensorFlow is not installed to download it. Either pass --data-dir with "
                "local MNIST IDX files (e.g. --data-dir ../shared/data/mnist), or install "
                "the tfds extra (pip install -e '.[tfds]') and run online once to prepare it"
            ) from None
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=True)
        except Exception as e2:
            raise DataError(f"could not download/prepare tfds dataset {name!r} ({e2}); "
                            "offline, pass --data-dir with local IDX files instead") from None
        del e
    n = len(source)
    if n == 0:
        raise DataError(f"tfds dataset {name!r} split {split!r} is empty")
    # Element-wise access: batched __getitems__ is not supported by every
    # backing source (mock sources included), and MNIST-sized data is cheap.
    examples = [source[i] for i in range(n)]
    images = np.stack([np.asarray(ex["image"]) for ex in examples]).astype(np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([int(ex["label"]) for ex in examples], np.int32)
    return {"image": images, "label": labels}


def load_dataset(name: str, split: str, *, data_dir: str | None = None,
                 tfds_data_dir: str | None = None) -> dict[str, np.ndarray]:
    """Loads ``split`` of dataset ``name`` from local files or tfds.

    Args:
      name: dataset name; ``"mnist"`` reads IDX files when ``data_dir`` is set.
      split: ``"train"`` or ``"test"``.
      data_dir: local folder of IDX files (MNIST), or None to use tfds.
      tfds_data_dir: tfds data directory.

    Returns:
      ``{"image": uint8 (N, H, W, C), "label": int32 (N,)}``.
    """
    if data_dir is not None:
        if name != "mnist":
            raise DataError(f"--data-dir reads MNIST IDX files; dataset {name!r} is read from tfds "
                            "(omit --data-dir)")
        return load_mnist_idx(data_dir, split)
    return load_tfds(name, split, tfds_data_dir)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0


def binarize(x, u):
    """Stochastic binarization ``1[u < x]``: pixel ``x`` becomes 1 with probability x.

    Works on NumPy or JAX arrays; ``u`` holds uniform [0, 1) draws of ``x``'s shape.
    """
    return (u < x).astype(x.dtype)


def static_binarize(images: np.ndarray, seed: int) -> np.ndarray:
    """Binarizes float images once with a fixed seed (statically binarized data)."""
    u = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return binarize(images, u)


def num_batches(n: int, batch_size: int, drop_remainder: bool) -> int:
    """Number of batches an epoch of ``n`` examples yields."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batches(data: dict[str, np.ndarray], batch_size: int, *, seed: int = 0, epoch: int = 0,
            shuffle: bool = True, drop_remainder: bool = True, dynamic_binarize: bool = False,
            mesh: Mesh | None = None, start: int = 0) -> Iterator[dict[str, jax.Array]]:
    """Yields batches of one epoch, placed on the mesh.

    The order is a permutation drawn from ``(seed, epoch)``, so an epoch's
    batches are the same whether the run was resumed or not.

    The last partial batch: with ``drop_remainder=True`` (training) it is
    dropped, so every step has the same shape (no recompilation) and equal
    weight; each epoch reshuffles, so no example is permanently left out. With
    ``drop_remainder=False`` (evaluation) it is padded to ``batch_size`` with
    zeros and every batch carries a ``"mask"`` (1 real, 0 padding), so
    masked sums count every example exactly once.

    Args:
      data: arrays with a shared leading axis; ``"image"`` must be float.
      batch_size: global batch size (divisible by the mesh size).
      seed: base seed of the shuffling and binarization.
      epoch: epoch index, folded into the seed.
      shuffle: permute the examples.
      drop_remainder: see above.
      dynamic_binarize: resample binary pixels ``1[u < x]`` for every batch.
      mesh: device mesh to shard the batch over; host NumPy arrays if None.
      start: index of the first batch to yield (a run resumed mid-epoch
        continues with the batch it would have seen next).

    Yields:
      Dicts with the arrays of ``data`` plus ``"mask"`` (float32, ``(batch,)``).
    """
    n = len(next(iter(data.values())))
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if drop_remainder and n < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {n} examples available; "
                         "use a smaller --batch-size")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    for i in range(start, num_batches(n, batch_size, drop_remainder)):
        idx = order[i * batch_size:(i + 1) * batch_size]
        batch = {k: v[idx] for k, v in data.items()}
        mask = np.ones(len(idx), np.float32)
        if len(idx) < batch_size:
            pad = batch_size - len(idx)
            batch = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                     for k, v in batch.items()}
            mask = np.concatenate([mask, np.zeros(pad, np.float32)])
        if dynamic_binarize:
            x = batch["image"]
            # A stream per batch: batch i's noise does not depend on where the epoch began.
            u = np.random.default_rng([seed, epoch, i]).random(x.shape, dtype=np.float32)
            batch["image"] = binarize(x, u)
        batch["mask"] = mask
        yield batch if mesh is None else shard_batch(batch, mesh)


def add_condition(split: dict[str, np.ndarray], num_classes: int,
                  key: str = "cond") -> dict[str, np.ndarray]:
    """Adds one-hot labels ``(N, num_classes)`` float32 under ``key``."""
    labels = np.asarray(split["label"])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, "
                         f"{labels.max()}]")
    return {**split, key: np.eye(num_classes, dtype=np.float32)[labels]}
