"""Encoders and decoders: every way jvae builds the networks of a VAE.

The front door of the nets; the layers themselves live in :mod:`jvae.layers`
(one module per idea, all re-exported there). Behind this module:

* the built-in MLP and convolutional nets (:mod:`jvae.layers.builtin`), picked
  by name with :func:`make_nets` (``--net mlp|conv``);
* nets from layer specs and the packaged architectures
  (:mod:`jvae.layers.spec_nets`, ``--net spec``);
* recurrent sequence nets (:mod:`jvae.layers.sequence`, ``--net rnn``);
* the audio nets: residual dilated 1-D convolutions with a latent sequence
  (:mod:`jvae.layers.audio`, ``--net audio``);
* :class:`ParamHead`, the head that turns features into a distribution's
  parameters, for your own Flax modules (:mod:`jvae.layers.heads`).

Every encoder maps ``x`` (and a condition) to the posterior's parameters and
every decoder ``z`` to the likelihood's, the contract of :func:`jvae.make_vae`.
"""

from jvae.layers.audio import AudioDecoder, AudioEncoder, audio_architecture, make_audio_nets
from jvae.layers.builtin import (
    ACTIVATIONS,
    Conv1DDecoder,
    Conv1DEncoder,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    ParamHead,
    activation_by_name,
    make_nets,
)
from jvae.layers.sequence import RNNDecoder, RNNEncoder, make_rnn_nets
from jvae.layers.spec_nets import (
    SpecDecoder,
    SpecEncoder,
    available_architectures,
    load_architecture,
    make_spec_nets,
)

__all__ = [
    "ACTIVATIONS",
    "AudioDecoder",
    "AudioEncoder",
    "Conv1DDecoder",
    "Conv1DEncoder",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "ParamHead",
    "RNNDecoder",
    "RNNEncoder",
    "SpecDecoder",
    "SpecEncoder",
    "activation_by_name",
    "audio_architecture",
    "available_architectures",
    "load_architecture",
    "make_audio_nets",
    "make_nets",
    "make_rnn_nets",
    "make_spec_nets",
]
