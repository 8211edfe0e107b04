"""scikit-learn's bundled 8x8 handwritten digits: a dataset that needs no network.

1,797 images of 8x8 pixels with 17 grey levels (0..16), from the UCI "Optical
Recognition of Handwritten Digits" set; the file ships inside the
scikit-learn wheel. The train/test split is fixed (a permutation from a
constant seed, independent of the run's ``--seed``), so test scores of
different runs are comparable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits", "NUM_TEST"]

# 1,797 = 1,497 train + 300 test (about one sixth held out).
NUM_TEST = 300
_SPLIT_SEED = 20_260_105


def load_digits(split: str) -> dict[str, np.ndarray]:
    """Loads a split of the digits as uint8 images.

    Grey levels ``g`` in 0..16 become ``round(255 g / 16)``, so ``to_float``
    maps them to [0, 1] like any other 8-bit image.

    Args:
      split: ``"train"`` or ``"test"``.

    Returns:
      ``{"image": uint8 (N, 8, 8, 1), "label": int32 (N,)}``.
    """
    from jvae.datasets.errors import DataError
    if split not in ("train", "test"):
        raise DataError(f"unknown digits split {split!r}; use 'train' or 'test'")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise DataError("--dataset digits needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    idx = order[:NUM_TEST] if split == "test" else order[NUM_TEST:]
    idx = np.sort(idx)
    return {"image": images[idx], "label": labels[idx]}
