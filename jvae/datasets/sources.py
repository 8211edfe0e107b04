"""Named datasets and folders as in-memory splits: :func:`load_dataset`, :func:`load_splits`.

A split is a dict of arrays with a shared leading axis: ``image`` (uint8,
``(N, H, W, C)``; float32 ``(N, L, 1)`` in [-1, 1] for audio) and ``label``
(int32, ``(N,)``). Sources:

* ``digits``: scikit-learn's bundled 8x8 digits, no network needed;
* ``dsprites``: 2-D shapes with five known factors, drawn by jvae
  (:mod:`jvae.datasets.dsprites`), no network needed;
* a folder of images or ``.wav`` files (``data_source``), with a decode-once cache;
* local MNIST-format IDX files, when a data directory is given;
* ``mnist``, ``fashion_mnist``, ``kmnist``: a tfds copy if one is prepared,
  else the IDX files downloaded once and verified by SHA-256;
* any other prepared tensorflow-datasets image dataset, read with
  ``tfds.data_source`` (preparing one needs the ``tfds`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jvae.datasets.errors import DataError
from jvae.datasets.idx import load_mnist_idx

__all__ = ["load_tfds", "load_dataset", "load_splits", "fit_images"]


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
_BUILTIN = ("digits", "dsprites", "mnist", "fashion_mnist", "kmnist")


def load_dataset(name: str, split: str, *, data_dir: str | None = None,
                 tfds_data_dir: str | None = None, mirror: str | None = None,
                 examples: int | None = None) -> dict[str, np.ndarray]:
    """Loads ``split`` of a named dataset.

    * ``digits``: scikit-learn's bundled digits (:mod:`jvae.datasets.digits`).
    * ``dsprites``: shapes with known factors, drawn on demand and cached
      (:mod:`jvae.datasets.dsprites`); its splits also hold ``factors``.
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
      examples: the split's first this-many examples (None or 0: all).

    Returns:
      ``{"image": uint8 (N, H, W, C), "label": int32 (N,)}``.
    """
    if name == "dsprites":
        from jvae.datasets.dsprites import load_dsprites
        return load_dsprites(split, examples=examples or None)
    return _first(_load_named(name, split, data_dir=data_dir, tfds_data_dir=tfds_data_dir,
                              mirror=mirror), examples)


def _first(split: dict[str, Any], n: int | None) -> dict[str, Any]:
    """A split's first ``n`` examples (all of them when ``n`` is None or 0)."""
    from jvae.datasets.stream import SplitView
    if not n:
        return split
    return {k: SplitView(v.source, v.rows[:n], as_float=v.as_float)
            if isinstance(v, SplitView) else v[:n] for k, v in split.items()}


def _load_named(name: str, split: str, *, data_dir: str | None, tfds_data_dir: str | None,
                mirror: str | None) -> dict[str, np.ndarray]:
    """:func:`load_dataset` of every name but dsprites, whole."""
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
    from jvae.datasets.reader import fit_array
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
                lazy: bool = False, train_examples: int | None = None,
                test_examples: int | None = None, **folder_options
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
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
      train_examples, test_examples: keep each split's first this-many
        examples (None or 0: all); dsprites draws only those.
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
        return (_first(folder.split("train", lazy), train_examples),
                _first(folder.split("test"), test_examples), info)
    mirror = folder_options.get("mirror")
    size = parse_image_size(image_size)
    splits = []
    for split in ("train", "test"):
        raw = load_dataset(name, split, data_dir=data_dir, tfds_data_dir=tfds_data_dir,
                           mirror=mirror,
                           examples=train_examples if split == "train" else test_examples)
        raw["image"] = fit_images(raw["image"], size, channels)
        splits.append(raw)
    if name == "dsprites":
        from jvae.datasets.dsprites import DSPRITES_FACTORS, DSPRITES_SHAPES
        return splits[0], splits[1], {"modality": "image", "classes": list(DSPRITES_SHAPES),
                                      "factors": list(DSPRITES_FACTORS)}
    return splits[0], splits[1], {"modality": "image", "classes": []}
