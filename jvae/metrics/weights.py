"""The local store of pretrained metric networks: download once, verify, convert, load.

Two named weight sets, each kept as one ``.npz`` file of float32 arrays in
:func:`weights_dir` (``$JVAE_WEIGHTS_DIR``, default ``<data home>/weights``, the
data home being ``$JVAE_DATA_DIR`` or ``~/.cache/jvae``):

* ``lpips`` (``lpips_vgg.npz``): the LPIPS VGG16 network of
  :mod:`jvae.metrics.lpips` (Zhang et al., 2018, arXiv:1801.03924), from
  torchvision's ImageNet VGG16 (``vgg16-397923af.pth``) and the lin heads of
  the lpips 0.1.4 package (``weights/v0.1/vgg.pth``; taken from the installed
  ``lpips`` package when there is one, else downloaded);
* ``inception`` (``fid_inception.npz``): the FID Inception v3 of
  :mod:`jvae.metrics.inception`, from pytorch-fid's
  ``pt_inception-2015-12-05-6726825d.pth``.

:func:`fetch` downloads the PyTorch files with pooch, checks each one's full
SHA-256 (:data:`WEIGHT_SETS`; those of the two files named as ``torch.hub``
names them, ``<name>-<8 hex digits>.pth``, begin with those digits), converts them without torch
(:func:`~jvae.metrics.torch_files.read_torch_file`) and writes the ``.npz``
atomically (a temporary file, then ``os.replace``). Offline, download the files
by hand and :func:`convert` them (``jvae weights convert``). :func:`load` reads
a set back as a nested params dict (the file stores ``'/'``-joined paths).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from jvae.base import JvaeError
from jvae.datasets.download import data_home
from jvae.metrics.torch_files import read_torch_file

__all__ = ["WEIGHTS_DIR_ENV", "Source", "WeightSet", "WEIGHT_SETS", "WeightStoreError", "weights_dir",
           "weights_path", "is_available", "status", "manual_steps", "convert", "fetch", "load", "save_params",
           "file_sha256"]

WEIGHTS_DIR_ENV = "JVAE_WEIGHTS_DIR"
# The .npz entry recording where a set's arrays came from (not a parameter).
_META_KEY = "__sources__"


class Source(NamedTuple):
    """One PyTorch file a weight set is converted from.

    Attributes:
      role: its argument of :func:`convert` ("backbone" or "heads").
      file: its file name.
      url: where it is published.
      sha256: its full SHA-256 hex digest.
      size: its size in bytes (for the messages; None if unknown).
      package_file: ``(package, path inside it)`` of a copy an installed
        Python package ships, used instead of downloading; None if none does.
    """

    role: str
    file: str
    url: str
    sha256: str
    size: int | None = None
    package_file: tuple[str, str] | None = None


class WeightSet(NamedTuple):
    """A named set of pretrained weights and the files it is made from.

    Attributes:
      name: its name (``jvae weights fetch <name>``).
      file: the ``.npz`` it is stored as in :func:`weights_dir`.
      summary: what it is, for ``jvae weights list``.
      sources: the PyTorch files it is converted from.
    """

    name: str
    file: str
    summary: str
    sources: tuple[Source, ...]


# The full SHA-256 of each file as published: the lpips heads' computed from the lpips 0.1.4
# wheel's copy; the VGG16 and Inception files' as projects that pin these downloads record them,
# each beginning with the 8 hex digits in its torch.hub-style name.
WEIGHT_SETS: dict[str, WeightSet] = {
    "lpips": WeightSet("lpips", "lpips_vgg.npz", "LPIPS v0.1 with a VGG16 backbone (jvae.metrics.lpips)", (
        Source("backbone", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
               "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553_433_881),
        Source("heads", "vgg.pth",
               "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
               "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", 7_289,
               ("lpips", "weights/v0.1/vgg.pth")))),
    "inception": WeightSet("inception", "fid_inception.npz", "FID Inception v3 of pytorch-fid "
                           "(jvae.metrics.inception)", (
        Source("backbone", "pt_inception-2015-12-05-6726825d.pth",
               "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth",
               "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", 95_628_359),)),
}


class WeightStoreError(JvaeError):
    """Weights that are missing, cannot be downloaded or cannot be converted; the message says
    which file is expected where and how to make it."""


def weights_dir() -> Path:
    """``$JVAE_WEIGHTS_DIR``, or ``<data home>/weights``: where the converted sets live."""
    override = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(override).expanduser() if override else data_home() / "weights"


def _weight_set(name: str) -> WeightSet:
    if name not in WEIGHT_SETS:
        raise WeightStoreError(f"unknown weight set {name!r}; choose one of {', '.join(WEIGHT_SETS)}")
    return WEIGHT_SETS[name]


def weights_path(name: str) -> Path:
    """The ``.npz`` file of weight set ``name`` (whether or not it exists)."""
    return weights_dir() / _weight_set(name).file


def is_available(name: str) -> bool:
    """Whether weight set ``name`` has been fetched or converted."""
    return weights_path(name).is_file()


def _by_hand(name: str) -> str:
    ws = _weight_set(name)
    files = " and ".join(s.url for s in ws.sources)
    flags = " ".join(f"--{s.role} {s.file}" for s in ws.sources)
    return (f"download {files}, then run `jvae weights convert {name} {flags}` (which writes "
            f"{weights_path(name)}; set {WEIGHTS_DIR_ENV} to keep weights elsewhere)")


def manual_steps(name: str) -> str:
    """How to make weight set ``name``: the fetch command, or the files to download by hand and the
    command converting them."""
    return f"run `jvae weights fetch {name}`, or offline {_by_hand(name)}"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if "/" in key:
            raise ValueError(f"parameter name {key!r} contains '/'")
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out


def _unflatten(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in arrays.items():
        *parents, leaf = path.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_params(params: Mapping[str, Any], path: str | os.PathLike, sources: Mapping[str, Any] | None = None) -> Path:
    """Writes a params pytree as an ``.npz`` of ``'/'``-joined paths, atomically.

    Args:
      params: nested dicts of arrays.
      path: the file to write (replaced only once the new one is complete).
      sources: a JSON-able record of what the arrays were converted from.

    Returns:
      ``path``.
    """
    path = Path(path)
    arrays = _flatten(params)
    arrays[_META_KEY] = np.array(json.dumps(sources or {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _convert_arrays(name: str, tensors: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """The params of weight set ``name`` from its sources' state dicts (by role)."""
    if name == "lpips":
        from jvae.metrics.lpips import params_from_state_dicts

        return params_from_state_dicts(tensors["backbone"], tensors["heads"], net="vgg")
    try:
        from jvae.metrics.inception import params_from_state_dict
    except ImportError as e:
        raise WeightStoreError(f"this jvae cannot convert the {name!r} weights: {e}") from None
    return params_from_state_dict(tensors["backbone"])


def _package_copy(source: Source) -> Path | None:
    """The copy of ``source`` an installed package ships (unimported, digest checked), or None."""
    if source.package_file is None:
        return None
    package, inner = source.package_file
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / inner
        if candidate.is_file() and file_sha256(candidate) == source.sha256:
            return candidate
    return None


def _source_files(name: str, files: Mapping[str, str | os.PathLike | None]) -> dict[str, Path]:
    ws = _weight_set(name)
    roles = {s.role for s in ws.sources}
    unknown = sorted(set(k for k, v in files.items() if v is not None) - roles)
    if unknown:
        raise WeightStoreError(f"the {name!r} weights take no --{unknown[0]} file; give "
                               f"{' and '.join('--' + s.role for s in ws.sources)}")
    out = {}
    for s in ws.sources:
        given = files.get(s.role)
        path = Path(given).expanduser() if given is not None else _package_copy(s)
        if path is None:
            raise WeightStoreError(f"no --{s.role} file given for the {name!r} weights: download {s.url} and "
                                   f"pass it as --{s.role} {s.file}")
        if not path.is_file():
            raise WeightStoreError(f"{path} not found: pass the downloaded {s.file} ({s.url}) as --{s.role}")
        out[s.role] = path
    return out


def convert(name: str, *, backbone: str | os.PathLike | None = None, heads: str | os.PathLike | None = None,
            check_digest: bool = False) -> Path:
    """Converts local PyTorch files into weight set ``name`` (the offline route).

    Args:
      name: a key of :data:`WEIGHT_SETS`.
      backbone: the backbone's ``.pth`` (``vgg16-397923af.pth``; for
        "inception", ``pt_inception-2015-12-05-6726825d.pth``).
      heads: lpips' ``vgg.pth`` (lpips only); default: the installed lpips
        package's copy.
      check_digest: require each file's SHA-256 to be the published one
        (otherwise any file with the right tensors is converted, and
        ``jvae weights list`` reports the set as converted from other files).

    Returns:
      The ``.npz`` written.

    Raises:
      WeightStoreError: a missing file, a digest that differs (``check_digest``),
        or a file without the network's tensors.
    """
    ws = _weight_set(name)
    paths = _source_files(name, {"backbone": backbone, "heads": heads})
    record, tensors = {}, {}
    for s in ws.sources:
        path = paths[s.role]
        digest = file_sha256(path)
        if check_digest and digest != s.sha256:
            raise WeightStoreError(f"{path} has SHA-256 {digest}, not that of the published {s.file} "
                                   f"({s.sha256}); download it again from {s.url}")
        record[s.role] = {"file": str(path), "sha256": digest, "published": digest == s.sha256}
        tensors[s.role] = read_torch_file(path)
    try:
        params = _convert_arrays(name, tensors)
    except JvaeError as e:
        raise WeightStoreError(f"cannot convert {', '.join(map(str, paths.values()))} into the {name!r} "
                               f"weights: {e}") from None
    return save_params(params, weights_path(name), record)


def _download(name: str, source: Source, folder: Path) -> Path:
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # its "Downloading ..." line; the caller reports progress
    try:
        return Path(pooch.retrieve(source.url, known_hash=f"sha256:{source.sha256}", fname=source.file,
                                   path=folder, progressbar=False))
    except Exception as e:  # any failure to download (offline, HTTP, digest) becomes one line
        lines = str(e).strip().splitlines()
        cause = lines[0] if lines else type(e).__name__
        cause = cause if len(cause) <= 160 else cause[:160] + "..."
        raise WeightStoreError(f"cannot download {source.url} ({type(e).__name__}: {cause}); to install the "
                               f"{name!r} weights offline, {_by_hand(name)}") from None
    finally:
        logger.setLevel(level)


def fetch(name: str, *, force: bool = False, keep_downloads: bool = False,
          report: Callable[[str], None] | None = None) -> Path:
    """Downloads, verifies and converts weight set ``name`` into :func:`weights_dir`.

    Nothing is done when the set is already there, unless ``force``. Files an
    installed package ships (lpips' heads) are used from there. Each
    downloaded file's full SHA-256 must equal the published one (a file that
    differs is deleted); downloads go to ``<weights_dir>/downloads`` and are
    deleted after the conversion unless ``keep_downloads``.

    Args:
      name: a key of :data:`WEIGHT_SETS`.
      force: download and convert again even if the set is there.
      keep_downloads: keep the PyTorch files after converting them.
      report: called with a line before each download and before converting
        (the command line prints them); None: silent.

    Returns:
      The ``.npz`` written.

    Raises:
      WeightStoreError: a failed download (offline, a digest that differs),
        naming the URLs to fetch by hand and the ``jvae weights convert``
        command to run on them.
    """
    ws = _weight_set(name)
    if is_available(name) and not force:
        return weights_path(name)
    folder = weights_dir() / "downloads"
    files, downloaded = {}, []
    try:
        for s in ws.sources:
            local = _package_copy(s)
            if local is None:
                if report is not None:
                    size = f" ({s.size / 1e6:.0f} MB)" if s.size else ""
                    report(f"downloading {s.url}{size} into {folder}")
                local = _download(name, s, folder)
                downloaded.append(local)
            files[s.role] = local
        if report is not None:
            report(f"converting {', '.join(p.name for p in files.values())} into {weights_path(name)}")
        return convert(name, check_digest=True, **files)
    finally:
        if not keep_downloads:
            for path in downloaded:
                path.unlink(missing_ok=True)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _read(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = weights_path(name)
    if not path.is_file():
        raise WeightStoreError(f"{path} not found: the {name!r} weights are not installed; {manual_steps(name)}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        record = json.loads(str(arrays.pop(_META_KEY, "{}")))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightStoreError(f"{path} is unreadable ({e}); delete it and {manual_steps(name)}") from None
    return arrays, record if isinstance(record, dict) else {}


def status(name: str) -> str:
    """Weight set ``name``'s state: "missing", "installed" (from the published files) or
    "installed from other files" (converted from files whose digests differ)."""
    if not is_available(name):
        return "missing"
    try:
        _, record = _read(name)
    except WeightStoreError:
        return "unreadable"
    published = all(r.get("published") for r in record.values() if isinstance(r, dict))
    return "installed" if record and published else "installed from other files"


def load(name: str) -> dict[str, Any]:
    """Reads weight set ``name`` as a nested params dict of float32 numpy arrays.

    Returns:
      For "lpips", :func:`jvae.metrics.lpips.params_from_state_dicts`' pytree;
      for "inception", :func:`jvae.metrics.inception.params_from_state_dict`'s.

    Raises:
      WeightStoreError: the file is missing (the message names it, the command
        that creates it, and the files to download by hand), or unreadable.
    """
    return _unflatten(_read(name)[0])
