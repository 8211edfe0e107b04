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

import jax
import jax.numpy as jnp

from jvae.base import Array, Objective, PyTree, Term
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


def _stop(params: PyTree, keys, inside: bool) -> PyTree:
    """``params`` with ``stop_gradient`` on the subtrees named in ``keys`` (``inside``) or on
    all the others (not ``inside``)."""
    return {k: jax.lax.stop_gradient(v) if (k in keys) == inside else v
            for k, v in params.items()}


def split_gradient(generative: Objective, inference: Objective, *,
                   inference_params: tuple[str, ...] = INFERENCE_PARAMS) -> Objective:
    """One objective whose gradient is ``generative``'s for the generative network and
    ``inference``'s for the inference network (PIWAE's update, Rainforth et al., 2018).

    The two objectives run on the same batch and key (so on the same posterior
    draws), each with ``stop_gradient`` on the other network's parameters:

        loss = L_gen(theta, sg(phi)) + L_inf(sg(theta), phi) - sg(L_inf),

    whose value is ``L_gen`` and whose gradient is ``(dL_gen/dtheta, dL_inf/dphi)``,
    so the train step stays one pure function of all the parameters and one
    optimizer updates both. The two passes compute the same forward values,
    which XLA evaluates once (common subexpressions); what is added is a second
    backward pass through the decoder's activations, for the second bound's
    weights (for PIWAE's MLP on MNIST, two more matrix products of the step's 22).

    Args:
      generative: gives the loss, the reported terms and the objective state.
      inference: gives the inference network's gradient (its other outputs
        and state are dropped; it must keep the same state as ``generative``).
      inference_params: top-level keys of the parameters that are the inference
        network's (:data:`INFERENCE_PARAMS`); all others are the generative network's.

    Returns:
      The combined :class:`~jvae.base.Objective`.
    """

    def terms(params, batch, key, loss_state):
        out, new_state = generative.terms(_stop(params, inference_params, True), batch, key,
                                          loss_state)
        inf_out, _ = inference.terms(_stop(params, inference_params, False), batch, key,
                                     loss_state)
        inf_loss = inf_out["loss"]
        return {**out, "loss": out["loss"] + inf_loss - jax.lax.stop_gradient(inf_loss)}, new_state

    return Objective(generative.init, terms)
