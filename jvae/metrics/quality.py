"""How good a model's reconstructions and samples look: every image metric over a split.

:func:`image_quality` reconstructs a split through the posterior mean (the
reconstruction a user gets from ``jvae reconstruct``) and reports, as means
over the split's images:

* ``psnr`` (dB), ``ssim`` and ``ms_ssim`` (:mod:`jvae.metrics.image`);
* ``hf_ratio``: the reconstructions' spectral power above half Nyquist over
  the originals' (1.0: as sharp as the input, lower: blurred);
* ``lpips`` when LPIPS parameters are given (:mod:`jvae.metrics.lpips`; the
  VGG16 weights of ``jvae weights fetch lpips``);
* ``fid_recon`` (rFID: reconstructions against the originals) and
  ``fid_samples`` (as many prior samples against the originals) when Inception
  parameters are given and ``fid_images > 0``: the originals' statistics are
  computed once per split and cached (:func:`jvae.metrics.fid.cached_stats`).

Everything runs batched on the devices; only per-batch sums come back.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jvae.base import VAE, Array, PyTree
from jvae.datasets.batching import batches
from jvae.devices.parallel import batch_sharding, data_mesh, replicated_sharding
from jvae.distributions.priors import draw_prior
from jvae.metrics.fid import activation_statistics, cached_stats, fid_score, split_fingerprint
from jvae.metrics.image import high_frequency_energy, ms_ssim, ms_ssim_scales, psnr
from jvae.metrics.inception import inception_features
from jvae.metrics.lpips import lpips_distance
from jvae.model import decode_samples
from jvae.terms.similarity import ssim

__all__ = ["QUALITY_METRICS", "reconstruct_mean", "image_quality", "as_rgb", "installed_weights",
           "quality_evaluator"]

# The per-image means image_quality reports (lpips and the FIDs when their weights are given).
QUALITY_METRICS = ("psnr", "ssim", "ms_ssim", "hf_ratio", "lpips", "fid_recon", "fid_samples")


def as_rgb(images: Array) -> Array:
    """Grey images repeated to three channels (RGB ones unchanged)."""
    return jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def reconstruct_mean(vae: VAE, params: PyTree, x: Array, cond: Array | None = None) -> Array:
    """``E[x|z]`` at the posterior mean ``z``, clipped to [0, 1]."""
    post = vae.encode(params, x, cond)
    z = vae.posterior.mean(post)[None]
    recon = vae.likelihood.mean(decode_samples(vae, params, z, cond))[0]
    return jnp.clip(recon.astype(jnp.float32), 0.0, 1.0)


def _sums(vae, cond_key, use_ms_ssim, params, lpips_params, batch):
    x = batch["image"].astype(jnp.float32)
    mask = batch["mask"]
    recon = reconstruct_mean(vae, params, x, None if cond_key is None else batch[cond_key])
    values = {"psnr": psnr(recon, x), "ssim": ssim(recon, x),
              "hf_recon": high_frequency_energy(recon), "hf_original": high_frequency_energy(x)}
    if use_ms_ssim:
        values["ms_ssim"] = ms_ssim(recon, x)
    if lpips_params is not None:
        values["lpips"] = lpips_distance(lpips_params, as_rgb(recon), as_rgb(x), normalize=True)
    out = {k: jnp.sum(v * mask) for k, v in values.items()}
    out["count"] = jnp.sum(mask)
    return out, recon


@functools.lru_cache(maxsize=16)
def _sums_step(vae: VAE, cond_key: str | None, use_ms_ssim: bool, mesh: Mesh):
    """The jitted per-batch sums, built once per model and mesh (each epoch reuses it)."""
    rep, shard = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(functools.partial(_sums, vae, cond_key, use_ms_ssim),
                   in_shardings=(rep, rep, shard), out_shardings=(rep, shard))


def image_quality(vae: VAE, params: PyTree, split: dict[str, np.ndarray], *, batch_size: int = 256,
                  mesh: Mesh | None = None, cond_key: str | None = None,
                  lpips_params: PyTree | None = None, inception_params: PyTree | None = None,
                  fid_images: int = 0, key: Array | None = None,
                  stats_dir: str | Path | None = None) -> dict[str, float]:
    """Reconstruction (and sample) quality of a model over an image split.

    Args:
      vae: the model (images ``(H, W, C)`` in [0, 1]).
      params: its parameters (the EMA's where the run keeps one).
      split: ``{"image": (N, H, W, C), ...}`` (and ``cond_key``'s labels).
      batch_size: images per batch (a multiple of the mesh size; the last batch
        is padded and masked).
      mesh: device mesh (all local devices when None).
      cond_key: the batch entry a conditional model reads.
      lpips_params: LPIPS weights (:func:`jvae.metrics.weights.load`), or None.
      inception_params: FID Inception weights, or None.
      fid_images: images (the split's first) scored by FID, and samples drawn; 0: no FID.
      key: PRNG key of the FID samples (and their labels).
      stats_dir: folder caching the originals' Inception statistics (None: no cache).

    Returns:
      ``{name: mean}`` for the names of :data:`QUALITY_METRICS` computed.
    """
    mesh = mesh or data_mesh()
    h, w = split["image"].shape[1:3]
    try:
        use_ms_ssim = ms_ssim_scales(h, w) >= 2
    except ValueError:
        use_ms_ssim = False
    step = _sums_step(vae, cond_key, use_ms_ssim, mesh)
    data = {k: v for k, v in split.items() if k != "label"}
    total = None
    for batch in batches(data, batch_size, shuffle=False, drop_remainder=False, mesh=mesh):
        sums, _ = step(params, lpips_params, batch)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = {k: float(v) for k, v in jax.device_get(total).items()}
    count = total.pop("count")
    hf_recon, hf_original = total.pop("hf_recon"), total.pop("hf_original")
    report = {k: v / count for k, v in total.items()}
    report["hf_ratio"] = hf_recon / max(hf_original, 1e-30)
    if inception_params is not None and fid_images > 0:
        report.update(_fids(vae, params, data, min(fid_images, len(data["image"])), batch_size, mesh,
                            cond_key, inception_params, key if key is not None else jax.random.key(0),
                            stats_dir))
    return report


def _fids(vae, params, data, n, batch_size, mesh, cond_key, inception_params, key, stats_dir):
    """rFID and sample FID of ``n`` images against the split's first ``n``."""
    subset = {k: v[:n] for k, v in data.items()}
    feats = jax.jit(inception_features)

    def originals():
        for b in batches(subset, batch_size, shuffle=False, drop_remainder=False, mesh=mesh):
            yield b["image"], b["mask"] > 0

    def compute():
        return activation_statistics(lambda x: feats(inception_params, x), originals())

    fingerprint = f"{split_fingerprint(subset['image'])}-{n}"
    if stats_dir is not None:
        Path(stats_dir).mkdir(parents=True, exist_ok=True)
        real = cached_stats(Path(stats_dir) / f"fid_stats_{fingerprint}.npz", fingerprint, compute)
    else:
        real = compute()
    rep, shard = replicated_sharding(mesh), batch_sharding(mesh)
    recon_fn = jax.jit(lambda p, x, c: reconstruct_mean(vae, p, x, c),
                       in_shardings=(rep, shard, shard), out_shardings=shard)

    def reconstructions():
        for b in batches(subset, batch_size, shuffle=False, drop_remainder=False, mesh=mesh):
            cond = None if cond_key is None else b[cond_key]
            yield recon_fn(params, b["image"], cond), b["mask"] > 0

    recon_stats = activation_statistics(lambda x: feats(inception_params, x), reconstructions())
    sample_fn = jax.jit(lambda p, z, c: jnp.clip(
        vae.likelihood.mean(decode_samples(vae, p, z[None], c))[0].astype(jnp.float32), 0.0, 1.0),
        in_shardings=(rep, shard, shard), out_shardings=shard)

    # Jitted: a learned prior runs networks (the VampPrior encodes its pseudo-inputs).
    draw = jax.jit(lambda p, k: draw_prior(vae, k, batch_size, p))

    def samples():
        for i in range(0, n, batch_size):
            count = min(batch_size, n - i)
            k_z = jax.random.fold_in(key, i)
            z = draw(params, k_z)
            cond = None
            if cond_key is not None:
                # The split's own labels, in order: samples of the same classes as the originals.
                labels = subset[cond_key][i:i + batch_size]
                cond = np.zeros((batch_size, labels.shape[-1]), np.float32)
                cond[:len(labels)] = labels
            yield sample_fn(params, z, cond), np.arange(batch_size) < count

    sample_stats = activation_statistics(lambda x: feats(inception_params, x), samples())
    return {"fid_recon": fid_score(recon_stats, real), "fid_samples": fid_score(sample_stats, real)}


def installed_weights(name: str) -> PyTree | None:
    """The weight set ``name`` of the local store (:mod:`jvae.metrics.weights`), or None
    when it is not installed (the metrics that need it are then left out)."""
    from jvae.metrics.weights import is_available, load
    return load(name) if is_available(name) else None


def quality_evaluator(vae: VAE, split: dict[str, np.ndarray], *, batch_size: int,
                      mesh: Mesh | None = None, cond_key: str | None = None, images: int = 0,
                      fid_images: int = 0, key: Array | None = None,
                      stats_dir: str | Path | None = None) -> Any:
    """``params -> {metric: mean}``: :func:`image_quality` of ``split`` with the installed weights.

    LPIPS is reported when its weights are installed; the FIDs when the
    Inception weights are and ``fid_images > 0``. Returns None for data that
    are not images ``(H, W, C)`` (audio has its own metrics).

    Args:
      vae, split, batch_size, mesh, cond_key, fid_images, key, stats_dir: as :func:`image_quality`.
      images: score the split's first ``images`` images (0: all).
    """
    if split["image"].ndim != 4:
        return None
    if images:
        split = {k: v[:images] for k, v in split.items()}
    lpips_params = installed_weights("lpips")
    inception_params = installed_weights("inception") if fid_images else None
    return functools.partial(image_quality, vae, split=split, batch_size=batch_size, mesh=mesh,
                             cond_key=cond_key, lpips_params=lpips_params,
                             inception_params=inception_params, fid_images=fid_images, key=key,
                             stats_dir=stats_dir)
