"""IDX files, the format of the original MNIST distribution: read, write, load a split.

The header is two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension; the data follow row-major. MNIST, Fashion-MNIST
and KMNIST ship as four such files (:mod:`jvae.datasets.download` fetches them).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from jvae.datasets.errors import DataError

__all__ = ["read_idx", "write_idx", "load_mnist_idx"]


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
