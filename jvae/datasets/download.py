"""MNIST, Fashion-MNIST and KMNIST without TensorFlow: download once, verify, cache.

The four IDX files of a dataset are fetched with ``pooch`` into
``$JVAE_DATA_DIR/<name>/`` (default ``~/.cache/jvae``), checked against the
SHA-256 constants below (the digests of the files as their authors publish
them), and read with :func:`jvae.data.load_mnist_idx`. A file whose digest
differs is deleted and reported; a later run never trusts it. Mirrors are
tried in order; ``JVAE_MNIST_MIRROR`` (comma-separated base URLs) replaces
the list.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, NamedTuple

__all__ = ["Remote", "REMOTES", "data_home", "mirrors_for", "fetch_idx", "offline_message"]

MIRROR_ENV = "JVAE_MNIST_MIRROR"
DATA_DIR_ENV = "JVAE_DATA_DIR"


class Remote(NamedTuple):
    """Where a dataset's IDX files live and what they must hash to.

    Attributes:
      mirrors: base URLs, tried in order; a file's URL is base + file name.
      sha256: ``{file name: hex digest}`` of the four ``.gz`` files.
    """

    mirrors: tuple[str, ...]
    sha256: Mapping[str, str]


def _files(train_images: str, train_labels: str, test_images: str, test_labels: str):
    return {"train-images-idx3-ubyte.gz": train_images, "train-labels-idx1-ubyte.gz": train_labels,
            "t10k-images-idx3-ubyte.gz": test_images, "t10k-labels-idx1-ubyte.gz": test_labels}


REMOTES: dict[str, Remote] = {
    "mnist": Remote(
        ("https://storage.googleapis.com/cvdf-datasets/mnist/",
         "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        _files("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    "fashion_mnist": Remote(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        _files("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
               "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")),
    "kmnist": Remote(
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        _files("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
               "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
               "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
               "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c")),
}

_SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def data_home() -> Path:
    """``$JVAE_DATA_DIR``, or ``~/.cache/jvae``: where downloads and caches go."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "jvae").expanduser()


def mirrors_for(name: str, mirror: str | None = None) -> tuple[str, ...]:
    """The base URLs to try: ``mirror`` (comma-separated), else ``$JVAE_MNIST_MIRROR``,
    else the dataset's own list."""
    override = mirror or os.environ.get(MIRROR_ENV)
    if override:
        return tuple(m.strip().rstrip("/") + "/" for m in override.split(",") if m.strip())
    return REMOTES[name].mirrors


def offline_message(name: str, folder: Path, reason: str) -> str:
    """The one-line error for a download that could not happen, naming the three ways out."""
    return (f"cannot download {name} ({reason}). Either pass --data-dir with a folder holding "
            f"its four IDX files, or copy those files into {folder} (the download cache, "
            f"${DATA_DIR_ENV}), or train offline on --dataset digits")


def fetch_idx(name: str, split: str, *, mirror: str | None = None,
              sha256: Mapping[str, str] | None = None) -> Path:
    """Makes sure ``split``'s two IDX files of ``name`` are in the cache; returns the folder.

    Files already in the cache with the right digest are used as they are.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"kmnist"``.
      split: ``"train"`` or ``"test"``.
      mirror: base URL(s) overriding the mirrors (see :func:`mirrors_for`).
      sha256: digests overriding :data:`REMOTES` (for a mirror of modified files).

    Returns:
      The cache folder, ready for :func:`jvae.data.load_mnist_idx`.

    Raises:
      DataError: no mirror reachable (the offline message), or a digest mismatch
        (the downloaded file is deleted).
    """
    from jvae.datasets.errors import DataError
    try:
        import pooch
        import requests
    except ImportError:
        raise DataError("downloading needs pooch: pip install pooch") from None
    # pooch logs every download at INFO on its own (unregistered) logger.
    pooch.get_logger().setLevel(logging.WARNING)
    folder = data_home() / name
    digests = {**REMOTES[name].sha256, **(sha256 or {})}
    for fname in _SPLIT_FILES[split]:
        failures: list[str] = []
        for base in mirrors_for(name, mirror):
            url = base + fname
            try:
                pooch.retrieve(url, known_hash=f"sha256:{digests[fname]}", fname=fname,
                               path=folder, progressbar=False)
                break
            except ValueError as e:  # pooch's hash mismatch; the temporary file is gone
                if "hash" not in str(e).lower():
                    raise
                failures.append(f"{url}: SHA-256 differs from the expected {digests[fname]}")
            except (requests.exceptions.RequestException, OSError) as e:
                failures.append(f"{url}: {type(e).__name__}")
        else:
            mismatches = [f for f in failures if "SHA-256" in f]
            if mismatches:
                raise DataError(f"downloaded {name} file is not the published one and was "
                                f"deleted ({mismatches[0]}); use another mirror "
                                f"(${MIRROR_ENV}) or --data-dir with verified files")
            raise DataError(offline_message(name, folder, "; ".join(failures) or "no mirror"))
    return folder
