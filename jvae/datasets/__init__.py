"""Datasets: named datasets, folders of images or audio, and the order training reads them in.

:mod:`jvae.data` is the area's front door. A split is a dict of arrays with a
shared leading axis (``image``, ``label``).

* :mod:`~jvae.datasets.sources`: :func:`load_dataset` and :func:`load_splits`
  (named datasets, tfds, folders).
* :mod:`~jvae.datasets.idx`: MNIST-format IDX files.
* :mod:`~jvae.datasets.digits`: scikit-learn's bundled 8x8 digits (offline).
* :mod:`~jvae.datasets.dsprites`: 2-D shapes with five known factors, drawn on
  demand into a memory-mapped cache (offline).
* :mod:`~jvae.datasets.download`: MNIST, Fashion-MNIST and KMNIST IDX files,
  downloaded once and verified against SHA-256 constants.
* :mod:`~jvae.datasets.folders`: ``--data-source DIR``, images or audio, loaded as splits.
* :mod:`~jvae.datasets.images`: a folder of images (splits, class labels).
* :mod:`~jvae.datasets.reader`: one image file to pixels, the reader of training
  and every mode (EXIF orientation, bit depth, resize and center crop).
* :mod:`~jvae.datasets.cache`: decode-once memory-mapped caches of folders.
* :mod:`~jvae.datasets.audio`: a folder of ``.wav`` files cut into chunks.
* :mod:`~jvae.datasets.pixels`: uint8 to floats; stochastic binarization.
* :mod:`~jvae.datasets.order`: each epoch's batches, shared by every training path.
* :mod:`~jvae.datasets.batching`: the seeded host batch iterator.
* :mod:`~jvae.datasets.stream`: streaming with grain in jvae's epoch order (on-disk
  splits and the feed of ``--data-placement stream``).
"""

from jvae.datasets.audio import (
    AUDIO_SUFFIXES,
    CHUNK_BOUNDS,
    CHUNK_PERCENTILE,
    Clips,
    chunk,
    clip_lengths,
    default_chunk_size,
    default_sample_rate,
    join_chunks,
    join_clips,
    read_clips,
    read_wav,
    resample,
    save_waveforms,
    snr_db,
    wav_info,
    write_wav,
)
from jvae.datasets.batching import (
    add_condition,
    batches,
)
from jvae.datasets.cache import (
    cache_key,
    cached_decode,
    decode_all,
)
from jvae.datasets.digits import (
    NUM_TEST,
    load_digits,
)
from jvae.datasets.download import (
    REMOTES,
    Remote,
    data_home,
    fetch_idx,
    mirrors_for,
    offline_message,
)
from jvae.datasets.dsprites import (
    DSPRITES_FACTORS,
    DSPRITES_SHAPES,
    DSPRITES_SIZES,
    DSPRITES_TEST,
    DSpritesCache,
    dsprites_factor_values,
    dsprites_images,
    factors_to_index,
    index_to_factors,
    load_dsprites,
    render_dsprites,
)
from jvae.datasets.errors import (
    DataError,
)
from jvae.datasets.folders import (
    MODALITIES,
    FolderData,
    detect_modality,
    load_folder,
)
from jvae.datasets.idx import (
    load_mnist_idx,
    read_idx,
    write_idx,
)
from jvae.datasets.images import (
    IMAGE_SUFFIXES,
    DataWarning,
    FolderIndex,
    decode_image,
    holdout_is_test,
    holdout_score,
    index_folder,
    parse_image_size,
    probe_images,
    report_skipped,
    walk_files,
)
from jvae.datasets.order import (
    epoch_order,
    epoch_permutation,
    num_batches,
)
from jvae.datasets.pixels import (
    BINARIZE_MODES,
    binarize,
    static_binarize,
    to_float,
)
from jvae.datasets.reader import (
    DECODE_ERRORS,
    ImageReadError,
    fit_array,
    open_image,
    read_image,
)
from jvae.datasets.sources import (
    fit_images,
    load_dataset,
    load_splits,
    load_tfds,
)
from jvae.datasets.stream import (
    Feed,
    GatherSteps,
    ImageFiles,
    MemmapArray,
    SplitView,
    epoch_rows,
    is_lazy,
    make_loader,
    split_loader,
)

__all__ = [
    "AUDIO_SUFFIXES",
    "BINARIZE_MODES",
    "CHUNK_BOUNDS",
    "CHUNK_PERCENTILE",
    "Clips",
    "DECODE_ERRORS",
    "DSPRITES_FACTORS",
    "DSPRITES_SHAPES",
    "DSPRITES_SIZES",
    "DSPRITES_TEST",
    "DSpritesCache",
    "DataError",
    "DataWarning",
    "Feed",
    "FolderData",
    "FolderIndex",
    "GatherSteps",
    "IMAGE_SUFFIXES",
    "ImageFiles",
    "ImageReadError",
    "MODALITIES",
    "MemmapArray",
    "NUM_TEST",
    "REMOTES",
    "Remote",
    "SplitView",
    "add_condition",
    "batches",
    "binarize",
    "cache_key",
    "cached_decode",
    "chunk",
    "clip_lengths",
    "data_home",
    "decode_all",
    "decode_image",
    "default_chunk_size",
    "default_sample_rate",
    "detect_modality",
    "dsprites_factor_values",
    "dsprites_images",
    "epoch_order",
    "epoch_permutation",
    "epoch_rows",
    "factors_to_index",
    "fetch_idx",
    "fit_array",
    "fit_images",
    "holdout_is_test",
    "holdout_score",
    "index_folder",
    "index_to_factors",
    "is_lazy",
    "join_chunks",
    "join_clips",
    "load_dataset",
    "load_digits",
    "load_dsprites",
    "load_folder",
    "load_mnist_idx",
    "load_splits",
    "load_tfds",
    "make_loader",
    "mirrors_for",
    "num_batches",
    "offline_message",
    "open_image",
    "parse_image_size",
    "probe_images",
    "read_clips",
    "read_idx",
    "read_image",
    "read_wav",
    "render_dsprites",
    "report_skipped",
    "resample",
    "save_waveforms",
    "snr_db",
    "split_loader",
    "static_binarize",
    "to_float",
    "walk_files",
    "wav_info",
    "write_idx",
    "write_wav",
]
