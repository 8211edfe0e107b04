"""PyTorch state dicts (``.pth``/``.pt``) read as numpy arrays, without importing torch.

``torch.save`` writes one of two formats:

* the zip format (torch >= 1.6): a zip archive holding ``<name>/data.pkl``, the
  pickled object whose tensors refer to storages by key through pickle's
  persistent ids, and each storage's raw bytes as ``<name>/data/<key>``
  (little-endian unless ``<name>/byteorder`` says ``big``);
* the legacy format (``_use_new_zipfile_serialization=False``, and every file
  written before torch 1.6): a stream of pickles, the magic number, the
  protocol version and a ``sys_info`` dict, then the object, then the sorted
  list of storage keys, then each storage as an 8-byte little-endian element
  count followed by its raw bytes.

Only what a state dict needs is unpickled: :class:`collections.OrderedDict`,
``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter``, the typed
storage classes (``torch.FloatStorage``, ...) and the dtypes. Any other global
a pickle names (``os.system``, a module class) is refused before anything of it
runs, so an untrusted file cannot execute code. A tensor is rebuilt from its
storage, offset, size and stride (views and transposes included) and copied
into an array of its own.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, BinaryIO, Callable, Mapping, NamedTuple

import ml_dtypes
import numpy as np

from jvae.base import JvaeError

__all__ = ["TorchFileError", "STORAGE_DTYPES", "read_torch_file"]

# torch's legacy-format magic number and protocol version.
_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001

# The typed storage classes a state dict's pickle names, and the numpy dtype of their elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32), "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}
# torch dtypes by the name they pickle as (``torch.float32``), for the pickles that name one.
_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32), "float64": np.dtype(np.float64),
    "double": np.dtype(np.float64), "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16), "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32), "int16": np.dtype(np.int16),
    "short": np.dtype(np.int16), "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}


class TorchFileError(JvaeError, ValueError):
    """A file that is not a PyTorch state dict this reader can use; the message names the file."""


class _StorageType(NamedTuple):
    """What ``torch.FloatStorage`` (or another storage class) unpickles to."""

    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    """A storage a tensor lives in: its key, element dtype and element count, and for the
    legacy format's storage views, the element offset and count of the view."""

    key: str
    dtype: np.dtype
    numel: int
    view: tuple[int, int] | None


class _TensorRef(NamedTuple):
    """A tensor as its pickle describes it, rebuilt once the storages are read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2`` (extra arguments: requires_grad,
    backward hooks, metadata)."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor's storage is not a storage reference")
    try:
        return _TensorRef(storage, int(storage_offset), tuple(int(d) for d in size),
                          tuple(int(s) for s in stride))
    except (TypeError, ValueError):
        raise pickle.UnpicklingError("a tensor's offset, size or stride is not made of integers") from None


def _rebuild_parameter(data, *_ignored) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("a parameter does not hold a tensor")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{("torch", name): dtype for name, dtype in _DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Unpickles only the globals of :data:`_ALLOWED`; storages become :class:`_StorageRef`."""

    def __init__(self, file: BinaryIO, on_storage: Callable[[_StorageRef], None] | None = None):
        super().__init__(file)
        self._on_storage = on_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a state dict of tensors "
                                         "never holds (refused: unpickling it could run code)") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # zip: ("storage", type, key, location, numel); legacy adds view metadata.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        view = None
        if len(pid) == 6 and pid[5] is not None:
            _, offset, count = pid[5]
            view = (int(offset), int(count))
        ref = _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]), view)
        if self._on_storage is not None:
            self._on_storage(ref)
        return ref


def _unpickle(file: BinaryIO, on_storage: Callable[[_StorageRef], None] | None = None) -> Any:
    return _Unpickler(file, on_storage).load()


def _materialize(tensor: _TensorRef, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    """The tensor's elements as a new contiguous array; ValueError if they fall outside its storage."""
    ref = tensor.storage
    data = storages[ref.key]
    if ref.view is not None:
        start, count = ref.view
        if start < 0 or count < 0 or start + count > data.size:
            raise ValueError(f"storage view {ref.view} lies outside storage {ref.key}")
        data = data[start:start + count]
    if len(tensor.size) != len(tensor.stride) or any(d < 0 for d in tensor.size) or tensor.offset < 0:
        raise ValueError(f"a tensor of size {tensor.size} and stride {tensor.stride} is malformed")
    if 0 in tensor.size:
        return np.zeros(tensor.size, data.dtype)
    if any(s < 0 for s in tensor.stride):
        raise ValueError(f"negative stride {tensor.stride}")
    last = tensor.offset + sum((d - 1) * s for d, s in zip(tensor.size, tensor.stride))
    if last >= data.size:
        raise ValueError(f"a tensor of size {tensor.size}, stride {tensor.stride} at offset "
                         f"{tensor.offset} reaches past its storage of {data.size} elements")
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(data[tensor.offset:], shape=tensor.size,
                                           strides=tuple(s * item for s in tensor.stride), writeable=False)
    return np.array(view, order="C", copy=True)


def _as_state_dict(obj: Any, storages: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"it holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    out = {}
    for key, value in obj.items():
        if not (isinstance(key, str) and isinstance(value, _TensorRef)):
            raise ValueError(f"entry {str(key)[:60]!r} is a {type(value).__name__}, not a tensor; pass a "
                             "state dict (model.state_dict()), not a checkpoint holding one")
        out[key] = _materialize(value, storages)
    return out


def _storage_array(raw: bytes, dtype: np.dtype, big_endian: bool) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise ValueError(f"a storage of {len(raw)} bytes does not hold whole {dtype} elements")
    return np.frombuffer(raw, dtype.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype)


def _read_zip(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("it is a zip archive without a single <name>/data.pkl (not written by torch.save)")
    prefix = pickles[0][:-len("data.pkl")]
    names = set(archive.namelist())
    big = prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big"
    refs: dict[str, _StorageRef] = {}
    obj = _unpickle(io.BytesIO(archive.read(pickles[0])), lambda ref: refs.setdefault(ref.key, ref))
    storages = {}
    for key, ref in refs.items():
        member = f"{prefix}data/{key}"
        if member not in names:
            raise ValueError(f"storage {member} is missing")
        storages[key] = _storage_array(archive.read(member), ref.dtype, big)
    return _as_state_dict(obj, storages)


def _read_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
    try:
        magic = _unpickle(f)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError):
        magic = None
    if magic != _MAGIC:
        raise ValueError("it is neither a zip archive nor a legacy torch.save file (no magic number)")
    protocol = _unpickle(f)
    if protocol != _PROTOCOL:
        raise ValueError(f"legacy serialization protocol {protocol!r} is not {_PROTOCOL}")
    sys_info = _unpickle(f)
    big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    refs: dict[str, _StorageRef] = {}
    obj = _unpickle(f, lambda ref: refs.setdefault(ref.key, ref))
    keys = _unpickle(f)
    if not isinstance(keys, list):
        raise ValueError("the list of storage keys is missing")
    storages = {}
    for key in keys:
        if key not in refs:
            raise ValueError(f"storage {key!r} is stored but no tensor uses it")
        dtype = refs[key].dtype
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"the file ends before storage {key!r}")
        count = int.from_bytes(header, "big" if big else "little", signed=True)
        nbytes = count * dtype.itemsize
        if count < 0 or nbytes > 1 << 40:
            raise ValueError(f"storage {key!r} claims {count} elements")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"the file ends inside storage {key!r}")
        storages[key] = _storage_array(raw, dtype, big)
    missing = sorted(set(refs) - set(storages))
    if missing:
        raise ValueError(f"storage {missing[0]!r} is used but not stored")
    return _as_state_dict(obj, storages)


def read_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict saved by ``torch.save`` as numpy arrays, without torch.

    Both the zip format and the legacy format are read; tensors saved on a GPU
    load all the same (the device is ignored). Element types: float32,
    float64, float16, bfloat16 (``ml_dtypes.bfloat16``), int64, int32, int16,
    int8, uint8 and bool.

    Args:
      path: a ``.pth``/``.pt`` file holding a mapping of names to tensors
        (``model.state_dict()``).

    Returns:
      ``{name: array}`` in the file's order; each array owns its memory and is
      C-contiguous, whatever the tensor's strides and storage sharing were.

    Raises:
      TorchFileError: the file is missing, unreadable, not written by
        ``torch.save``, holds something other than a state dict of tensors, or
        names a global a state dict does not need (refused unexecuted).
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip(archive)
        with open(path, "rb") as f:
            return _read_legacy(f)
    except FileNotFoundError:
        raise TorchFileError(f"{path} not found; pass the path of a .pth file written by torch.save") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise TorchFileError(f"cannot read {path}: {e}") from None
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError) as e:
        raise TorchFileError(f"{path} is not a PyTorch state dict this reader accepts: {e}; save "
                             "model.state_dict() with torch.save") from None
