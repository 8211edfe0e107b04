"""Importance-weighted bounds beyond IWAE: MIWAE's groups and PIWAE's split gradient.

Rainforth et al. (2018, "Tighter Variational Bounds are Not Necessarily Better",
arXiv:1802.04537) show that a tighter importance-weighted bound gives the
generative network better gradients and the inference network worse ones
(the signal-to-noise ratio of its gradient estimate falls as ``1/sqrt(K)``).
Their remedies are built here from the shared forward pass's ``S = M * K``
draws ``w_s = p(x, z_s) / q(z_s|x)``:

* :func:`miwae_bound`: ``MIWAE(M, K) = (1/M) sum_m log (1/K) sum_k w_mk``,
  ``M`` independent ``K``-sample IWAE estimates averaged;
* :func:`split_gradient`: one objective whose gradient is one loss's for the
  generative network's parameters and another's for the inference network's
  (PIWAE: IWAE for the decoder, MIWAE for the encoder).

The IWAE bound itself and the stable ``log_mean_exp`` are
:mod:`jvae.terms.standard`'s.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jvae.base import Array, Objective, Term
from jvae.terms.composition import stateless
from jvae.terms.standard import log_mean_exp

__all__ = ["miwae_bound", "group_log_weights", "split_gradient", "INFERENCE_PARAMS"]

# The subtrees of a model's parameters that belong to the inference network: the
# encoder and a posterior family's shared parameters (a flow's conditioners).
# Every other subtree (the decoder, a learned prior) is the generative network's.
INFERENCE_PARAMS = ("encoder", "posterior")


def group_log_weights(log_w: Array, groups: int) -> Array:
    """``(M*K, B)`` log-weights as ``(M, K, B)``: draw ``s = m K + k`` is group ``m``'s ``k``-th.

    Raises:
      ValueError: ``S`` is not a multiple of ``groups``.
    """
    s = log_w.shape[0]
    if groups < 1 or s % groups:
        raise ValueError(f"{s} samples per example do not split into {groups} groups; draw "
                         "groups * num_samples samples")
    return log_w.reshape(groups, s // groups, *log_w.shape[1:])


def miwae_bound(groups: int) -> Term:
    """The negative multiply importance-weighted bound (Rainforth et al., 2018):

    ``-MIWAE(M, K) = -(1/M) sum_m log (1/K) sum_k p(x|z_mk) p(z_mk) / q(z_mk|x)``

    over the forward pass's ``S = M * K`` draws (``M = groups``). ``M = 1`` is
    the ``K``-sample IWAE bound (:func:`~jvae.terms.standard.iwae_bound`);
    ``K = 1`` is the ``M``-sample Monte Carlo ELBO
    ``-(1/M) sum_m log w_m``. For fixed ``M * K`` it lies between the two.
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")

    def value(fwd):
        log_w = group_log_weights(fwd.log_px + fwd.log_pz - fwd.log_q, groups)
        return -jnp.mean(log_mean_exp(log_w, axis=1), axis=0)
    return stateless(value)


def split_gradient(objective: Objective, inference_loss: Callable[[dict], Array], *,
                   inference_params: tuple[str, ...] = INFERENCE_PARAMS) -> Objective:
    """One objective whose gradient is its own loss's for the generative network and
    ``inference_loss``'s for the inference network (PIWAE's update, Rainforth et al., 2018).

    Both losses come from one evaluation of ``objective`` (one forward pass, one set of
    posterior draws). Its value is ``objective``'s; its gradient is
    ``(dL_gen/dtheta, dL_inf/dphi)``, so the train step stays one pure function of all
    the parameters and one optimizer updates both. The gradient is two
    vector-Jacobian products of that one forward pass, with cotangent ``(1, 0)`` and
    ``(0, 1)`` on ``(L_gen, L_inf)``, each kept only for its own network's parameters;
    XLA drops what neither keeps. Against one loss's gradient, what is added is the
    second bound's backward pass through the decoder's activations (for PIWAE's MLP on
    MNIST, one more matrix product of the decoder's width per step).

    Writing it as ``L_gen(theta, sg(phi)) + L_inf(sg(theta), phi)`` instead would
    trace the forward pass twice, and XLA need not merge the two: for PIWAE's MLP on
    MNIST the compiled step computed the posterior draw with different fused
    operations in each (the one with tangents on the encoder's parameters, the
    other without), and so ran the decoder's forward products twice.

    Args:
      objective: gives the generative network's loss, the reported terms and the
        objective state.
      inference_loss: the inference network's loss, from ``objective``'s outputs
        (the same shape as ``out["loss"]``).
      inference_params: top-level keys of the parameters that are the inference
        network's (:data:`INFERENCE_PARAMS`); all others are the generative network's.

    Returns:
      The combined :class:`~jvae.base.Objective`.
    """

    def terms(params, batch, key, loss_state):
        def forward(p):
            out, new_state = objective.terms(p, batch, key, loss_state)
            return (out["loss"], inference_loss(out)), (out, new_state)

        @jax.custom_vjp
        def routed(p):
            (loss, _), aux = forward(p)
            return loss, aux

        def routed_fwd(p):
            (loss, inf), vjp, aux = jax.vjp(forward, p, has_aux=True)
            return (loss, aux), (vjp, jnp.zeros_like(loss), jnp.zeros_like(inf))

        def routed_bwd(res, cotangents):
            vjp, zero_loss, zero_inf = res
            ct = cotangents[0]
            (generative,) = vjp((ct, zero_inf))
            (inference,) = vjp((zero_loss, ct))
            return ({k: inference[k] if k in inference_params else v
                     for k, v in generative.items()},)

        routed.defvjp(routed_fwd, routed_bwd)
        loss, (out, new_state) = routed(params)
        return {**out, "loss": loss}, new_state

    return Objective(objective.init, terms)
