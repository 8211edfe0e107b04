"""Datasets as in-memory NumPy arrays, preprocessing, and a seeded batch iterator.

A split is a dict of arrays with a shared leading axis: ``image`` (uint8,
``(N, H, W, C)``; float32 ``(N, L, 1)`` in [-1, 1] for audio) and ``label``
(int32, ``(N,)``). Sources (:func:`load_dataset`; details in :mod:`jvae.datasets`):

* ``digits``: scikit-learn's bundled 8x8 digits, no network needed;
* a folder of images or ``.wav`` files (``data_source``), with a decode-once cache;
* local MNIST-format IDX files, when a data directory is given;
* ``mnist``, ``fashion_mnist``, ``kmnist``: a tfds copy if one is prepared,
  else the IDX files downloaded once and verified by SHA-256;
* any other prepared tensorflow-datasets image dataset, read with
  ``tfds.data_source`` (preparing one needs the ``tfds`` extra).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from jvae.datasets.errors import DataError
from jvae.datasets.order import epoch_permutation, num_batches
from jvae.datasets.pixels import binarize, to_float
from jvae.parallel import shard_batch

__all__ = ["DataError", "read_idx", "write_idx", "load_mnist_idx", "load_tfds", "load_dataset",
           "load_splits", "fit_images", "to_float", "binarize", "BINARIZE_MODES", "num_batches",
           "batches", "add_condition", "data_options", "check_data_info", "write_data_info"]

BINARIZE_MODES = ("none", "dynamic", "static")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}




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


def _close_matches(name: str) -> str:
    """", did you mean a, b?" for an unknown tfds name (empty when nothing is close)."""
    import difflib

    import tensorflow_datasets as tfds
    try:
        known = tfds.list_builders(with_community_datasets=False)
    except Exception:  # the registry itself failed: no suggestions, the error stands
        return ""
    known = list(known) + list(_BUILTIN)
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def load_tfds(name: str, split: str, data_dir: str | None = None, *,
              download: bool = True) -> dict[str, np.ndarray]:
    """Loads a tfds image dataset split into memory via ``tfds.data_source``.

    A prepared dataset is read without TensorFlow. If it is not prepared, it is
    downloaded and prepared when ``download`` and TensorFlow is installed
    (``pip install 'jvae[tfds]'``); otherwise a :class:`DataError` explains the fixes.

    Args:
      name: tfds dataset name, e.g. ``"cifar10"``.
      split: split name, e.g. ``"train"``.
      data_dir: tfds data directory (tfds' default when None).
      download: prepare an unprepared dataset (needs TensorFlow).

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
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"unknown dataset {name!r}{_close_matches(name)} (--dataset takes "
                        f"{', '.join(_BUILTIN)} or a tfds image dataset name; "
                        "--data-source takes a folder)") from None
    except Exception as e:  # tfds raises several types for an unprepared dataset.
        if not download or not _tensorflow_installed():
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
    if "image" not in examples[0]:
        raise DataError(f"tfds dataset {name!r} has no 'image' feature (it has "
                        f"{', '.join(examples[0])}); jvae trains on image datasets")
    images = [np.asarray(ex["image"]) for ex in examples]
    if len({im.shape for im in images}) > 1:
        raise DataError(f"tfds dataset {name!r} holds images of several sizes; pass "
                        "--image-size N to resize them to one")
    images = np.stack(images).astype(np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([int(ex.get("label", 0)) for ex in examples], np.int32)
    return {"image": images, "label": labels}


# Names load_dataset serves without tfds.
_BUILTIN = ("digits", "mnist", "fashion_mnist", "kmnist")


def load_dataset(name: str, split: str, *, data_dir: str | None = None,
                 tfds_data_dir: str | None = None, mirror: str | None = None
                 ) -> dict[str, np.ndarray]:
    """Loads ``split`` of a named dataset.

    * ``digits``: scikit-learn's bundled digits (:mod:`jvae.datasets.digits`).
    * with ``data_dir``: MNIST-format IDX files there (MNIST, Fashion-MNIST, KMNIST).
    * ``mnist``, ``fashion_mnist``, ``kmnist``: tfds' copy when one is prepared,
      else the IDX files downloaded into ``$JVAE_DATA_DIR`` and verified
      (:mod:`jvae.datasets.download`).
    * any other name: a prepared tfds dataset.

    Args:
      name: dataset name.
      split: ``"train"`` or ``"test"``.
      data_dir: local folder of IDX files, or None.
      tfds_data_dir: tfds data directory.
      mirror: base URL(s) overriding the download mirrors.

    Returns:
      ``{"image": uint8 (N, H, W, C), "label": int32 (N,)}``.
    """
    from jvae.datasets.download import REMOTES, fetch_idx
    if name == "digits":
        from jvae.datasets.digits import load_digits
        return load_digits(split)
    if data_dir is not None:
        if name not in REMOTES:
            raise DataError(f"--data-dir reads MNIST-format IDX files; dataset {name!r} is read "
                            "from tfds (omit --data-dir) or a folder (--data-source)")
        return load_mnist_idx(data_dir, split)
    if name in REMOTES:
        try:
            return load_tfds(name, split, tfds_data_dir, download=False)
        except DataError:
            return load_mnist_idx(fetch_idx(name, split, mirror=mirror), split)
    return load_tfds(name, split, tfds_data_dir)


def fit_images(images: np.ndarray, size: tuple[int, int] | None = None,
               channels: int | None = None) -> np.ndarray:
    """Resizes (short side, then center crop) and converts uint8 images to ``channels``.

    Grey -> RGB repeats the channel; RGB -> grey uses ITU-R 601 luma (Pillow's
    ``convert("L")``); an alpha channel is dropped.
    """
    from jvae.datasets.images import fit_array
    if images.shape[-1] in (2, 4):  # grey+alpha, RGBA
        images = images[..., :-1]
    if channels == 1 and images.shape[-1] == 3:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        images = np.round(luma)[..., None].astype(np.uint8)
    elif channels == 3 and images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        images = np.stack([fit_array(im, size) for im in images])
    return images


def load_splits(name: str, *, data_source: str | None = None, data_dir: str | None = None,
                tfds_data_dir: str | None = None, image_size=None, channels: int | None = None,
                lazy: bool = False, **folder_options) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                           dict[str, Any]]:
    """Train and test splits of a named dataset or of a folder, plus what identifies them.

    Args:
      name: dataset name (ignored when ``data_source`` is set).
      data_source: a folder of images or ``.wav`` files
        (:func:`jvae.datasets.folders.load_folder`, which takes ``folder_options``).
      data_dir, tfds_data_dir: see :func:`load_dataset`.
      image_size: ``N``, ``"HxW"`` or None (unchanged; a folder's default size).
      channels: 1, 3 or None (unchanged).
      lazy: a folder's training images stay on disk (a
        :class:`~jvae.datasets.stream.SplitView`, for ``--data-placement stream``).
      **folder_options: ``modality``, ``sample_rate``, ``chunk_size``,
        ``test_fraction``, ``strict``, ``cache``, ``cache_dir``, ``progress``; the
        download ``mirror`` for named datasets.

    Returns:
      ``(train, test, info)``; ``info`` has ``modality``, ``classes`` and, for
      folders, the settings a resumed run must match.
    """
    from jvae.datasets.images import parse_image_size
    if data_source:
        from jvae.datasets.folders import load_folder
        folder_options.pop("mirror", None)
        folder = load_folder(data_source, image_size=image_size, channels=channels, lazy=lazy,
                             **folder_options)
        info = {**folder.info, "classes": list(folder.classes)}
        return folder.split("train", lazy), folder.split("test"), info
    mirror = folder_options.get("mirror")
    size = parse_image_size(image_size)
    splits = []
    for split in ("train", "test"):
        raw = load_dataset(name, split, data_dir=data_dir, tfds_data_dir=tfds_data_dir,
                           mirror=mirror)
        raw["image"] = fit_images(raw["image"], size, channels)
        splits.append(raw)
    return splits[0], splits[1], {"modality": "image", "classes": []}


def static_binarize(images: np.ndarray, seed: int) -> np.ndarray:
    """Binarizes float images once with a fixed seed (statically binarized data)."""
    u = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return binarize(images, u)


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
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
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


# Data settings of a run and their defaults; read with getattr so any config
# object (or one without these fields) works.
DATA_OPTIONS = {"data_source": None, "image_size": None, "channels": None, "modality": "auto",
                "sample_rate": None, "chunk_size": 65_536, "test_fraction": 0.1,
                "strict": False, "cache": True, "mirror": None}


def data_options(cfg: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`load_splits` a run's config sets.

    ``data_source`` falls back to the ``DATA_SOURCE`` environment variable.
    """
    opts = {k: getattr(cfg, k, v) for k, v in DATA_OPTIONS.items()}
    for k in ("channels", "sample_rate"):  # 0: the data's own
        opts[k] = opts[k] or None
    opts["data_source"] = opts["data_source"] or os.environ.get("DATA_SOURCE") or None
    if not opts["data_source"]:
        opts = {k: opts[k] for k in ("image_size", "channels", "mirror")}
    return opts


# The data settings a resumed run must share with the run it continues.
_IDENTITY = ("data_source", "modality", "image_size", "channels", "sample_rate", "chunk_size")


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
        json.dumps({k: v for k, v in info.items() if k != "classes"}, indent=2) + "\n")
    if info.get("classes"):
        (workdir / "classes.json").write_text(json.dumps(info["classes"], indent=2) + "\n")


def add_condition(split: dict[str, np.ndarray], num_classes: int,
                  key: str = "cond") -> dict[str, np.ndarray]:
    """Adds one-hot labels ``(N, num_classes)`` float32 under ``key``."""
    labels = np.asarray(split["label"])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, "
                         f"{labels.max()}]")
    return {**split, key: np.eye(num_classes, dtype=np.float32)[labels]}
