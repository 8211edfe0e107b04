"""Binds an encoder and a decoder into pure functions over one parameter pytree.

Linen modules are used through ``init``/``apply``; NNX modules through
``nnx.split``/``nnx.merge``, so both run inside ``jax.jit`` as pure functions
of an explicit parameter pytree ``{"encoder": ..., "decoder": ...}``.

Mixed precision (:func:`mixed_precision`): networks compute in bfloat16,
everything else stays float32. The policy of Micikevicius et al. (2018,
arXiv:1710.03740) without loss scaling (bfloat16 has float32's exponent range,
so gradients do not underflow): parameters, optimizer state and the loss
(log-likelihoods, KL, their sums over 784 pixels) stay float32; only the
encoder and decoder run in the compute dtype. ``encode``/``decode`` cast the
float32 parameters and inputs down on entry and the distribution parameters
they emit back up to float32, so gradients reach the float32 master parameters
through the casts. It pays off on GPUs and TPUs, whose matrix units are
bfloat16-native; on most CPUs it is slower than float32.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jvae._compile import fast_compile_options
from jvae.base import VAE, Array, Likelihood, Posterior, Prior, PyTree

__all__ = ["VAE", "make_vae", "decode_samples", "COMPUTE_DTYPES", "INFERENCE_DTYPES",
           "inference_dtype", "mixed_precision"]


def _call_args(x, cond):
    return (x,) if cond is None else (x, cond)


def _bind(module) -> tuple[Callable, Callable]:
    """Returns ``(init(key, x, cond), apply(params, x, cond))`` for one module."""
    if isinstance(module, nn.Module):
        # One compiled program instead of one eager dispatch (and compile) per
        # initializer and layer: seconds saved on every run's start. It runs
        # once, so on CPU its LLVM optimisation is cut (fast_compile_options): the
        # random draws are the same bits, and sd_vae's init took 15 s instead of 23 s.
        def init_fn(key, *args):
            return module.init(key, *args)["params"]
        init_nested = jax.jit(init_fn)  # inside a caller's trace: options are the caller's

        @functools.cache
        def init_top():
            # Built at the first call: building the model touches no backend
            # (multi-host runs initialize jax.distributed first).
            return jax.jit(init_fn, compiler_options=fast_compile_options())

        def init(key, x, cond=None):
            args = (key, *_call_args(x, cond))
            traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))
            return (init_nested if traced else init_top())(*args)

        def apply(params, x, cond=None):
            return module.apply({"params": params}, *_call_args(x, cond))
        return init, apply
    if isinstance(module, nnx.Module):
        # NNX modules are initialized at construction: only Param leaves are
        # trained; any other state (e.g. RNG counters) is carried as a constant.
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)

        def init(key, x, cond=None):
            del key, x, cond
            return params

        def apply(p, x, cond=None):
            return nnx.merge(graphdef, p, rest)(*_call_args(x, cond))
        return init, apply
    raise TypeError(f"expected a flax.linen.Module or flax.nnx.Module, got {type(module).__name__}")


def make_vae(encoder, decoder, posterior: Posterior, likelihood: Likelihood,
             latent_shape: tuple[int, ...], prior: Prior | None = None) -> VAE:
    """Wraps an encoder and decoder that follow jvae's call contract.

    Args:
      encoder: Linen or NNX module, ``encoder(x[, cond]) -> posterior params``.
      decoder: Linen or NNX module, ``decoder(z[, cond]) -> likelihood params``.
      posterior: posterior family matching the encoder's output.
      likelihood: observation model matching the decoder's output.
      latent_shape: per-example latent shape, e.g. ``(20,)``.
      prior: a learned :class:`~jvae.base.Prior` (its parameters are stored under
        ``params["prior"]``), or None for the posterior family's fixed prior.

    Returns:
      A :class:`VAE` of pure functions.
    """
    latent_shape = tuple(int(d) for d in latent_shape)
    enc_init, enc_apply = _bind(encoder)
    dec_init, dec_apply = _bind(decoder)

    def init(key, x, cond=None):
        k_enc, k_dec = jax.random.split(key)
        enc = enc_init(k_enc, x, cond)
        # Only shapes are checked and needed here: nothing is computed eagerly.
        post = jax.eval_shape(enc_apply, enc, x, cond)
        missing = set(posterior.param_shapes(latent_shape)) - set(post)
        if missing:
            raise ValueError(f"encoder output {sorted(post)} lacks the {posterior.name} "
                             f"posterior's parameters {sorted(missing)}")
        shared = None
        if posterior.init_shared is not None:
            shared = posterior.init_shared(jax.random.fold_in(key, 1), latent_shape)
            post = {**post, "shared": shared}
        z = jax.eval_shape(posterior.mean, post)
        if z.shape[1:] != latent_shape:
            raise ValueError(f"encoder emits latents of shape {z.shape[1:]}, "
                             f"expected latent_shape {latent_shape}")
        # The decoder's initial parameters depend on its input's shape only.
        params = {"encoder": enc, "decoder": dec_init(k_dec, jnp.zeros(z.shape, z.dtype), cond)}
        if shared is not None:
            params["posterior"] = shared
        if prior is not None:
            params["prior"] = prior.init(jax.random.fold_in(key, 2), x, latent_shape)
        return params

    def encode(params, x, cond=None):
        post = enc_apply(params["encoder"], x, cond)
        if posterior.init_shared is not None:
            # The family's shared parameters (flow weights, a codebook) travel
            # with the per-example ones so its pure functions see both.
            post = {**post, "shared": params["posterior"]}
        return post

    def decode(params, z, cond=None):
        return dec_apply(params["decoder"], z, cond)

    return VAE(init, encode, decode, posterior, likelihood, latent_shape, prior)


def decode_samples(vae: VAE, params: PyTree, z: Array, cond: Array | None = None) -> dict:
    """Decodes ``z`` of shape ``(S, B, *latent)`` to likelihood params ``(S, B, ...)``.

    Samples are folded into the batch axis so the decoder runs once.
    """
    s, b = z.shape[:2]
    flat_cond = None if cond is None else jnp.broadcast_to(
        cond[None], (s, *cond.shape)).reshape(s * b, *cond.shape[1:])
    out = vae.decode(params, z.reshape(s * b, *z.shape[2:]), flat_cond)
    return jax.tree.map(lambda a: a.reshape(s, b, *a.shape[1:]), out)


COMPUTE_DTYPES = ("float32", "bfloat16")
# Inference may also run in float16, the dtype diffusers pipelines use on GPUs.
INFERENCE_DTYPES = ("float32", "bfloat16", "float16")


def inference_dtype(requested: str, force_upcast: bool = False) -> str:
    """The dtype a model runs inference in, given the one asked for.

    diffusers' ``force_upcast`` (set by SDXL, SD3 and Flux's autoencoders)
    runs the autoencoder in float32 when a pipeline asks for float16, whose
    largest value, 65504, their decoders' activations exceed (black or NaN
    images). bfloat16 has float32's exponent range, so it is kept: only its
    precision is lower, and the blocks upcast where that matters (GroupNorm
    statistics, attention softmax).

    Args:
      requested: one of :data:`INFERENCE_DTYPES`.
      force_upcast: the weights' ``force_upcast`` flag.

    Returns:
      The dtype name to pass to :func:`mixed_precision`.
    """
    if requested not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {requested!r}")
    return "float32" if requested == "float16" and force_upcast else requested


def _cast(tree: PyTree, dtype) -> PyTree:
    """Casts floating leaves only (integer labels, keys and masks pass through)."""
    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


def mixed_precision(vae: VAE, compute_dtype: str | jnp.dtype = "bfloat16") -> VAE:
    """The same model with encoder and decoder computing in ``compute_dtype``.

    Args:
      vae: a model with float32 parameters.
      compute_dtype: ``"bfloat16"`` (or any float dtype); ``"float32"`` returns
        ``vae`` unchanged.

    Returns:
      A :class:`~jvae.model.VAE` with the same ``init`` (float32 parameters)
      whose ``encode`` and ``decode`` return float32 distribution parameters.
    """
    dtype = jnp.dtype(compute_dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute dtype must be a float type, got {compute_dtype!r}")
    if dtype == jnp.float32:
        return vae

    def nets_down(params):
        # Only the networks: a posterior family's shared parameters (a flow)
        # keep float32, like the rest of the loss.
        return {k: _cast(v, dtype) if k in ("encoder", "decoder") else v
                for k, v in params.items()}

    def encode(params, x, cond=None):
        out = vae.encode(nets_down(params), _cast(x, dtype), _cast(cond, dtype))
        return _cast(out, jnp.float32)

    def decode(params, z, cond=None):
        out = vae.decode(nets_down(params), _cast(z, dtype), _cast(cond, dtype))
        return _cast(out, jnp.float32)

    return vae._replace(encode=encode, decode=decode)
