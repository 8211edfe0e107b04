"""Building blocks of jvae's networks, grouped as ``equinox.nn`` groups its layers.

* :mod:`jvae.layers.heads`: :class:`~jvae.layers.heads.ParamHead`, activations.
* :mod:`jvae.layers.upsample`: ``ConvTranspose`` by polyphase decomposition.
* :mod:`jvae.layers.spec`: the layer-spec language and :class:`~jvae.layers.spec.SpecNet`.
* :mod:`jvae.layers.spec_nets`: encoders/decoders from specs, packaged architectures.
* :mod:`jvae.layers.sequence`: LSTM/GRU sequence encoders and decoders.

:mod:`jvae.nets` is the entry point of the area: the built-in MLP and conv nets.
"""
