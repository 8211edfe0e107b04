"""A trained run's code as a function of a dataset's ground-truth factors.

For a dataset with known factors (``dsprites``), the disentanglement metrics
(:mod:`jvae.metrics.disentanglement`) sample factor combinations, draw their
images and read the run's encoder mean: :func:`factor_representation` builds
that map and :func:`disentanglement_report` scores it (``jvae evaluate``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jvae.datasets.images import parse_image_size
from jvae.datasets.pixels import to_float
from jvae.datasets.sources import fit_images
from jvae.metrics.disentanglement import disentanglement_metrics

__all__ = ["GroundTruth", "ground_truth", "factor_representation", "disentanglement_report"]


class GroundTruth(NamedTuple):
    """A dataset whose images are a function of known factors.

    Attributes:
      names: the factors' names.
      sizes: each factor's number of values.
      images: factors int ``(N, F)`` -> uint8 images ``(N, H, W, C)``.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    images: Callable[[np.ndarray], np.ndarray]


def ground_truth(cfg: Any) -> GroundTruth | None:
    """The factors of a run's dataset, or None when it has none (every dataset but dsprites)."""
    if getattr(cfg, "dataset", None) != "dsprites" or getattr(cfg, "data_source", None):
        return None
    from jvae.datasets.dsprites import DSPRITES_FACTORS, DSPRITES_SIZES, dsprites_images
    return GroundTruth(DSPRITES_FACTORS, DSPRITES_SIZES, dsprites_images)


def factor_representation(vae, params, truth: GroundTruth, *, image_size=None,
                          channels: int | None = None, num_classes: int | None = None,
                          batch_size: int = 512) -> Callable[[np.ndarray], np.ndarray]:
    """factors int ``(N, F)`` -> the encoder's posterior mean of their images, ``(N, D)``.

    Images are fitted to the run's ``image_size`` and ``channels`` as its
    training data were; a conditional model (``num_classes``) is given the
    first factor (dsprites' shape, its label) one-hot. Batches are padded to
    ``batch_size``, so one program serves every call.
    """
    size = parse_image_size(image_size)

    @jax.jit
    def encode(p, x, c):
        return vae.posterior.mean(vae.encode(p, x, c)).reshape(x.shape[0], -1)

    def represent(factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors)
        # One call for all the images: the dataset's cache reads and writes them together.
        images = fit_images(truth.images(factors), size, channels)
        out = []
        for i in range(0, len(factors), batch_size):
            f = factors[i:i + batch_size]
            x = to_float(images[i:i + batch_size])
            cond = (None if num_classes is None
                    else np.eye(num_classes, dtype=np.float32)[f[:, 0]])
            pad = batch_size - len(f)
            if pad:
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                cond = None if cond is None else np.concatenate(
                    [cond, np.zeros((pad, num_classes), cond.dtype)])
            z = encode(params, jnp.asarray(x), None if cond is None else jnp.asarray(cond))
            out.append(np.asarray(z, np.float64)[:len(f)])
        return np.concatenate(out)

    return represent


def disentanglement_report(vae, params, truth: GroundTruth, *, seed: int = 0,
                           factor_points: int = 10_000, dci_points: int = 1_000,
                           score_points: int = 1_000, score_batch: int = 64, image_size=None,
                           channels: int | None = None, num_classes: int | None = None
                           ) -> dict[str, Any]:
    """The five disentanglement metrics of a model's encoder mean
    (:func:`jvae.metrics.disentanglement.disentanglement_metrics`), with ``wall_s``."""
    t0 = time.perf_counter()
    represent = factor_representation(vae, params, truth, image_size=image_size,
                                      channels=channels, num_classes=num_classes)
    report = disentanglement_metrics(represent, truth.sizes, seed=seed,
                                     factor_points=factor_points, dci_points=dci_points,
                                     score_points=score_points, score_batch=score_batch)
    return {**report, "factors": list(truth.names), "wall_s": time.perf_counter() - t0}
