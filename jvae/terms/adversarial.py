"""An adversarial term: a discriminator trained inside the objective, as its state.

The autoencoders of latent diffusion (Rombach et al., 2022, arXiv:2112.10752;
``LPIPSWithDiscriminator``) add to their reconstruction loss a GAN term against a
PatchGAN discriminator (:mod:`jvae.layers.patchgan`):

* the generator's term is ``-mean D(x_hat)`` (hinge) or ``mean softplus(-D(x_hat))``
  (non-saturating), weighted by ``weight * lambda`` with latent diffusion's
  adaptive weight (after Esser et al., 2021, arXiv:2012.09841)

      lambda = clip(||grad_W L_rec|| / (||grad_W L_adv|| + 1e-4), 0, 1e4)

  at the decoder's last layer ``W``, held constant in the gradient;
* the discriminator minimizes ``(mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) / 2``
  (hinge) or ``(mean softplus(-D(x)) + mean softplus(D(x_hat))) / 2``;
* both switch on at train step ``start``.

Here the discriminator's parameters, its optimizer state and the step count are
the term's state (:class:`AdversarialState`): :func:`~jvae.terms.composition.compose`
keeps them in the objective's ``loss_state``, so they are part of
:class:`~jvae.train_state.TrainState`, checkpointed, restored and replicated with
the rest, and the whole update, generator and discriminator, is one jitted pure
function. The discriminator steps on the same batch, against the
reconstructions of the generator's forward pass (latent diffusion recomputes
them after the generator's step; one forward pass fewer here). Evaluation calls
the objective too, but discards its state, so evaluating never trains the
discriminator.

``W`` is found from the decoder's computation (:func:`last_layer_index`): the
weight of the last matrix product or convolution on the way to its output.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jvae.base import Array, Discriminator, Forward, PyTree, Term
from jvae.distributions.likelihoods import masked_log_prob
from jvae.model import decode_samples
from jvae.terms.masked import masked_mean

__all__ = ["AdversarialState", "GAN_LOSSES", "adversarial_loss", "discriminator_optimizer",
           "last_layer_index", "adaptive_weight", "redecode"]

# (logits_real, logits_fake) -> discriminator loss per element; logits_fake -> generator's.
GAN_LOSSES: dict[str, tuple[Callable[[Array, Array], Array], Callable[[Array], Array]]] = {
    "hinge": (lambda real, fake: 0.5 * (jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)),
              lambda fake: -fake),
    "non_saturating": (lambda real, fake: 0.5 * (jax.nn.softplus(-real) + jax.nn.softplus(fake)),
                       lambda fake: jax.nn.softplus(-fake)),
}

# The products whose weight can be "the last layer".
_PRODUCTS = ("dot_general", "conv_general_dilated")
# Ops a weight passes through unchanged in value on its way to a product.
_PASS = ("convert_element_type", "reshape", "transpose", "broadcast_in_dim", "squeeze",
         "expand_dims", "copy", "copy_p")


class AdversarialState(NamedTuple):
    """The discriminator's parameters, its optimizer state and the train steps seen."""

    params: PyTree
    opt_state: PyTree
    step: Array


def discriminator_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """Adam with betas (0.5, 0.9), latent diffusion's discriminator optimizer."""
    return optax.adam(learning_rate, b1=0.5, b2=0.9)


def _sub_jaxprs(eqn):
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if sub is not None:
            return getattr(sub, "jaxpr", sub)
    return None


def _search(jaxpr, live: set, targets: dict) -> Any:
    """The target index of the last product's weight feeding ``live`` vars, else None.

    ``targets`` maps vars of ``jaxpr`` to the flat parameter index they carry.
    """
    producers = {v: e for e in jaxpr.eqns for v in e.outvars}

    def resolve(v):
        while True:
            if v in targets:
                return targets[v]
            eqn = producers.get(v)
            if eqn is None or eqn.primitive.name not in _PASS:
                return None
            v = eqn.invars[0]

    live = set(live)
    for eqn in reversed(jaxpr.eqns):
        if not any(v in live for v in eqn.outvars):
            continue
        inputs = [v for v in eqn.invars if hasattr(v, "aval") and not hasattr(v, "val")]
        if eqn.primitive.name in _PRODUCTS:
            for v in (eqn.invars[1], eqn.invars[0]):
                found = resolve(v)
                if found is not None:
                    return found
        sub = _sub_jaxprs(eqn)
        if sub is not None and len(sub.invars) == len(eqn.invars):
            inner = {iv: r for iv, ov in zip(sub.invars, eqn.invars)
                     if (r := resolve(ov)) is not None}
            inner_live = {iv for iv, ov in zip(sub.outvars, eqn.outvars) if ov in live}
            found = _search(sub, inner_live, inner)
            if found is not None:
                return found
        live.update(inputs)
    return None


def last_layer_index(decode: Callable[..., Any], params: PyTree, *args: Any) -> int:
    """The flat index (``jax.tree.leaves`` order) of the decoder's last layer weight.

    Traces ``decode(params)`` and walks back from its outputs to the first
    matrix product or convolution met whose weight is one of ``params``' leaves:
    the layer whose output is the decoder's (a final convolution such as
    latent diffusion's ``conv_out``, or the likelihood head).

    Args:
      decode: ``(params, *args) -> outputs``, e.g. the decoder of latents.
      params: the parameters (arrays or shapes).
      *args: the other inputs (arrays or shapes).

    Raises:
      ValueError: no product reaches the output through a parameter.
    """
    leaves, tree = jax.tree.flatten(params)

    def shape_of(a):
        return None if a is None else jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))

    shapes = [shape_of(a) for a in leaves]
    closed = jax.make_jaxpr(lambda flat, rest: decode(jax.tree.unflatten(tree, flat), *rest))(
        shapes, jax.tree.map(shape_of, args))
    jaxpr = closed.jaxpr
    targets = {v: i for i, v in enumerate(jaxpr.invars[:len(leaves)])}
    found = _search(jaxpr, set(jaxpr.outvars), targets)
    if found is None:
        raise ValueError("the decoder's output does not come from a matrix product or convolution "
                         "of its parameters, so the adaptive weight has no last layer; turn it off "
                         "(--no-adv-adaptive)")
    return found


def redecode(fwd: Forward, params: PyTree) -> Forward:
    """``fwd`` with its likelihood parameters and ``log p(x|z)`` recomputed for ``params``
    from the same latent samples (nothing upstream of the decoder changes)."""
    lik = decode_samples(fwd.vae, params, fwd.z, fwd.cond)
    return fwd._replace(params=params, lik=lik,
                        log_px=masked_log_prob(fwd.vae.likelihood, lik, fwd.x, fwd.valid))


def _last_layer_grad_norm(fwd: Forward, index: int, value: Callable[[Forward], Array]) -> Array:
    """``||d mean(value) / d W||`` for the parameter leaf ``index``, everything else fixed."""
    params = jax.lax.stop_gradient(fwd.params)
    fwd = fwd._replace(z=jax.lax.stop_gradient(fwd.z))
    leaves, tree = jax.tree.flatten(params)

    def of_w(w):
        swapped = list(leaves)
        swapped[index] = w
        return masked_mean(value(redecode(fwd, jax.tree.unflatten(tree, swapped))), fwd.mask)

    return jnp.linalg.norm(jax.grad(of_w)(leaves[index]))


def adaptive_weight(fwd: Forward, reference: Callable[[Forward], Array],
                    generator: Callable[[Forward], Array], *, index: int | None = None,
                    eps: float = 1e-4, max_weight: float = 1e4) -> Array:
    """Latent diffusion's ``clip(||grad_W reference|| / (||grad_W generator|| + eps), 0, max)``.

    Args:
      fwd: the shared forward pass.
      reference: ``forward -> (B,)``, the reconstruction loss the GAN term is balanced against.
      generator: ``forward -> (B,)``, the generator's GAN loss.
      index: the last layer's flat parameter index (None: :func:`last_layer_index`).
      eps: keeps the ratio finite when the GAN gradient vanishes.
      max_weight: the clip.

    Returns:
      The weight, a scalar with no gradient.
    """
    if index is None:
        vae = fwd.vae
        index = last_layer_index(lambda p, z, cond: decode_samples(vae, p, z, cond), fwd.params,
                                 fwd.z, fwd.cond)
    ref = _last_layer_grad_norm(fwd, index, reference)
    gen = _last_layer_grad_norm(fwd, index, generator)
    return jax.lax.stop_gradient(jnp.clip(ref / (gen + eps), 0.0, max_weight))


def adversarial_loss(discriminator: Discriminator, example: Array, *, reference: Callable[[Forward], Array],
                start: int = 0, loss: str = "hinge", adaptive: bool = True,
                optimizer: optax.GradientTransformation | None = None, seed: int = 0) -> Term:
    """The GAN term of latent diffusion's autoencoder loss; see the module docstring.

    Weigh it with ``compose``'s weight (latent diffusion: 0.5): the term's value
    is ``lambda * on * L_gen`` per example, ``lambda`` the adaptive weight (1
    when ``adaptive`` is False) and ``on`` 1 from train step ``start``.

    Args:
      discriminator: e.g. :func:`~jvae.layers.patchgan.patchgan_discriminator`.
      example: images ``(B, H, W, C)`` of the data's shape (for initialization).
      reference: ``forward -> (B,)``, the reconstruction loss the adaptive weight
        balances the GAN term against (e.g. ``recon`` plus the LPIPS term).
      start: train step from which the generator's term and the discriminator's
        updates are on.
      loss: ``"hinge"`` or ``"non_saturating"``.
      adaptive: scale by the adaptive weight.
      optimizer: the discriminator's (default :func:`discriminator_optimizer` at 1e-4).
      seed: seed of the discriminator's initialization.

    Returns:
      A :class:`~jvae.base.Term` with state :class:`AdversarialState`. Its
      metrics: ``adv_d_loss``, ``adv_logits_real``, ``adv_logits_fake`` and
      ``adv_weight`` (the adaptive weight).
    """
    if loss not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {loss!r}; choose one of {sorted(GAN_LOSSES)}")
    if example.ndim != 4:
        raise ValueError(f"the adversarial term needs images (B, H, W, C), got shape {example.shape}")
    if start < 0:
        raise ValueError(f"start must be a train step >= 0, got {start}")
    d_loss_fn, g_loss_fn = GAN_LOSSES[loss]
    optimizer = optimizer or discriminator_optimizer(1e-4)
    example = jnp.zeros((min(2, example.shape[0]), *example.shape[1:]), jnp.float32)

    def init(vae):
        params = discriminator.init(jax.random.key(seed), example)
        return AdversarialState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def per_example(logits):
        return jnp.mean(logits.reshape(logits.shape[0], -1), axis=-1)

    def reconstruction(fwd):
        return fwd.vae.likelihood.mean(fwd.lik)[0].astype(jnp.float32)

    def apply(fwd: Forward, state: AdversarialState):
        on = (state.step >= start).astype(jnp.float32)
        d_params = jax.lax.stop_gradient(state.params)

        def generator(f):
            return per_example(g_loss_fn(discriminator.apply(d_params, reconstruction(f))))

        x_hat = reconstruction(fwd)
        g_value = generator(fwd)
        weight = adaptive_weight(fwd, reference, generator) if adaptive else jnp.float32(1.0)

        fake = jax.lax.stop_gradient(x_hat)

        def d_loss(params):
            # Two calls, as latent diffusion's: each normalizes over its own batch.
            real = discriminator.apply(params, fwd.x.astype(jnp.float32))
            fake_logits = discriminator.apply(params, fake)
            value = masked_mean(per_example(d_loss_fn(real, fake_logits)), fwd.mask)
            return value, (per_example(real), per_example(fake_logits))

        (d_value, (real, fake_logits)), grads = jax.value_and_grad(d_loss, has_aux=True)(d_params)
        updates, opt_state = optimizer.update(grads, state.opt_state, d_params)
        stepped = optax.apply_updates(d_params, updates)
        keep = on > 0
        new = AdversarialState(
            jax.tree.map(lambda a, b: jnp.where(keep, a, b), stepped, d_params),
            jax.tree.map(lambda a, b: jnp.where(keep, a, b), opt_state, state.opt_state),
            state.step + 1)
        batch = g_value.shape[0]
        metrics = {"adv_d_loss": jnp.broadcast_to(d_value, (batch,)),
                   "adv_logits_real": real, "adv_logits_fake": fake_logits,
                   "adv_weight": jnp.broadcast_to(weight * on, (batch,))}
        return on * weight * g_value, metrics, new

    return Term(init, apply)
