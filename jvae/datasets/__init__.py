"""Data sources behind :func:`jvae.data.load_dataset`.

* :mod:`~jvae.datasets.digits`: scikit-learn's bundled 8x8 digits (offline).
* :mod:`~jvae.datasets.download`: MNIST, Fashion-MNIST and KMNIST IDX files,
  downloaded once and verified against SHA-256 constants.
* :mod:`~jvae.datasets.folders`: ``--data-source DIR``, images or audio, loaded as splits.
* :mod:`~jvae.datasets.images`: a folder of images (splits, class labels).
* :mod:`~jvae.datasets.cache`: decode-once memory-mapped caches of folders.
* :mod:`~jvae.datasets.audio`: a folder of ``.wav`` files cut into chunks.
* :mod:`~jvae.datasets.order`: each epoch's batches, shared by every training path.
* :mod:`~jvae.datasets.pixels`: uint8 to floats; stochastic binarization.
* :mod:`~jvae.datasets.stream`: streaming with grain in jvae's epoch order (on-disk
  splits and the feed of ``--data-placement stream``).
"""
