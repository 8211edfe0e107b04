"""The live training page: curves, images and a latent-space explorer that
decodes on request, served while a run trains (see :class:`Dashboard`) or
afterwards from its checkpoints (:func:`serve`)."""

from jvae.dashboard.hook import Dashboard
from jvae.dashboard.replay import serve

__all__ = ["Dashboard", "serve"]
