"""Datasets as in-memory NumPy arrays, preprocessing, and a seeded batch iterator.

The front door of the data; the sources live in :mod:`jvae.datasets` (one
module per idea, all re-exported there). A split is a dict of arrays with a
shared leading axis: ``image`` (uint8, ``(N, H, W, C)``; float32 ``(N, L, 1)``
in [-1, 1] for audio) and ``label`` (int32, ``(N,)``). Behind this module:

* :func:`load_dataset` and :func:`load_splits` (:mod:`jvae.datasets.sources`):
  scikit-learn's bundled digits, MNIST-format IDX files, verified downloads of
  the MNIST family, prepared tfds datasets, and folders of images or ``.wav``
  files;
* :func:`read_clips`, :func:`read_wav` and :func:`write_wav`
  (:mod:`jvae.datasets.audio`): ``.wav`` files as padded chunks, each with its
  number of real samples (the batch's ``"length"``, which masks the padding);
* :func:`read_idx` and :func:`write_idx` (:mod:`jvae.datasets.idx`);
* :func:`to_float` and binarization (:mod:`jvae.datasets.pixels`);
* :func:`batches`, one epoch's seeded batches (:mod:`jvae.datasets.batching`),
  in the order every training path shares (:mod:`jvae.datasets.order`).
"""

from jvae.datasets.audio import Clips, read_clips, read_wav, write_wav
from jvae.datasets.batching import add_condition, batches
from jvae.datasets.errors import DataError
from jvae.datasets.idx import load_mnist_idx, read_idx, write_idx
from jvae.datasets.order import num_batches
from jvae.datasets.pixels import BINARIZE_MODES, binarize, static_binarize, to_float
from jvae.datasets.sources import fit_images, load_dataset, load_splits, load_tfds

__all__ = [
    "BINARIZE_MODES",
    "Clips",
    "DataError",
    "add_condition",
    "batches",
    "binarize",
    "fit_images",
    "load_dataset",
    "load_mnist_idx",
    "load_splits",
    "load_tfds",
    "num_batches",
    "read_clips",
    "read_idx",
    "read_wav",
    "static_binarize",
    "to_float",
    "write_idx",
    "write_wav",
]
