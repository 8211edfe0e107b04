"""Networks: layers, the built-in nets, the layer-spec language and packaged architectures.

Grouped as ``equinox.nn`` groups its layers; :mod:`jvae.nets` is the area's
front door.

* :mod:`~jvae.layers.heads`: :class:`ParamHead` (distribution parameters), activations.
* :mod:`~jvae.layers.convolution`: ``Conv`` as im2col + one GEMM on CPU (``nn.Conv``'s parameters).
* :mod:`~jvae.layers.upsample`: ``ConvTranspose`` by polyphase decomposition.
* :mod:`~jvae.layers.builtin`: the built-in MLP and convolutional encoders/decoders.
* :mod:`~jvae.layers.spec`, :mod:`~jvae.layers.spec_shapes`,
  :mod:`~jvae.layers.spec_blocks`: the layer-spec grammar, its shape inference,
  and the modules a spec builds (:class:`SpecNet`, :func:`build`).
* :mod:`~jvae.layers.spec_nets`: encoders/decoders from specs, packaged
  architectures in ``jvae/configs/``.
* :mod:`~jvae.layers.sequence`: LSTM/GRU sequence encoders and decoders.
* :mod:`~jvae.layers.audio`: the audio nets (residual dilated 1-D
  convolutions, a latent sequence) and their blocks.
* :mod:`~jvae.layers.pqmf`: the PQMF filter bank (a signal as decimated sub-bands).
* :mod:`~jvae.layers.diffusers`: diffusers ``AutoencoderKL`` layouts and tensor maps.
* :mod:`~jvae.layers.patchgan`: the PatchGAN discriminator of pix2pix and latent diffusion.
* :mod:`~jvae.layers.latent_discriminator`: an MLP critic of latent codes (FactorVAE's).
* :mod:`~jvae.layers.tiling`: a function of one tile shape over larger images, blended
  across overlapping tiles.
"""

from jvae.layers.audio import (
    MAX_GEMM_PATCH,
    AudioArchitecture,
    AudioDecoder,
    AudioEncoder,
    Conv1d,
    ConvTranspose1d,
    DownConv1d,
    Head1d,
    PQMFAnalysis,
    PQMFSynthesis,
    ResidualUnit1d,
    SignalHead,
    UpConv1d,
    audio_architecture,
    audio_specs,
    conv1d,
    make_audio_nets,
)
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
from jvae.layers.convolution import (
    MAX_GEMM_TAPS,
    MIN_GEMM_FEATURES,
    Conv,
    conv,
    conv_patches,
    kernel_param,
    native_convolutions,
    use_gemm_convolutions,
)
from jvae.layers.diffusers import (
    CONFIG_FILE,
    KINDS,
    KL,
    KNOWN_LAYOUTS,
    SCALING_FACTOR,
    SD_CONFIG,
    TINY,
    TINY_CONFIG,
    WEIGHTS_FILE,
    Layout,
    Tensor,
    WeightsError,
    diffusers_layout,
    leaf_paths,
    matching_layouts,
    packaged_name,
    params_to_tensors,
    read_tensors,
    spec_layers,
    tensors_to_params,
)
from jvae.layers.heads import (
    with_cond,
)
from jvae.layers.latent_discriminator import (
    PAPER_HIDDEN,
    LatentMLP,
    mlp_discriminator,
)
from jvae.layers.patchgan import (
    PatchGAN,
    output_size,
    patchgan_discriminator,
    receptive_field,
)
from jvae.layers.pqmf import (
    PQMF,
    design_prototype,
    pqmf_filters,
    reconstruction_error_db,
)
from jvae.layers.sequence import (
    DECODER_MODES,
    RNN_CELLS,
    RNNDecoder,
    RNNEncoder,
    make_rnn_nets,
    sequence_layout,
)
from jvae.layers.spec import (
    KNOWN_TOKENS,
    MAX_REPEAT,
    LayerSpec,
    Shape,
    SpecError,
    SpecSource,
    load_spec,
    parse_spec,
)
from jvae.layers.spec_blocks import (
    SpecNet,
    TinyBlock,
    VAEAttentionBlock,
    VAEResBlock,
    VAEResBlock1d,
    build,
)
from jvae.layers.spec_nets import (
    LATENT_LAYOUTS,
    Architecture,
    SpecDecoder,
    SpecEncoder,
    SpecPair,
    available_architectures,
    decoder_input_shape,
    load_architecture,
    make_spec_nets,
    resolve_spec_pair,
)
from jvae.layers.spec_shapes import (
    MAX_ELEMENTS,
    default_num_groups,
    infer_shapes,
    output_shape,
    receptive_radius,
)
from jvae.layers.tiling import (
    AxisPlan,
    axis_weights,
    fit_tile,
    plan_axis,
    tile_starts,
    tiled_apply,
)
from jvae.layers.upsample import (
    ConvTranspose,
    transposed_conv,
    transposed_conv_gemm,
)

__all__ = [
    "ACTIVATIONS",
    "Architecture",
    "AudioArchitecture",
    "AudioDecoder",
    "AudioEncoder",
    "AxisPlan",
    "CONFIG_FILE",
    "Conv",
    "Conv1DDecoder",
    "Conv1DEncoder",
    "Conv1d",
    "ConvDecoder",
    "ConvEncoder",
    "ConvTranspose",
    "ConvTranspose1d",
    "DECODER_MODES",
    "DownConv1d",
    "Head1d",
    "KINDS",
    "KL",
    "KNOWN_LAYOUTS",
    "KNOWN_TOKENS",
    "LATENT_LAYOUTS",
    "LatentMLP",
    "LayerSpec",
    "Layout",
    "MAX_ELEMENTS",
    "MAX_GEMM_PATCH",
    "MAX_GEMM_TAPS",
    "MAX_REPEAT",
    "MIN_GEMM_FEATURES",
    "MLPDecoder",
    "MLPEncoder",
    "PAPER_HIDDEN",
    "PQMF",
    "PQMFAnalysis",
    "PQMFSynthesis",
    "ParamHead",
    "PatchGAN",
    "RNNDecoder",
    "RNNEncoder",
    "RNN_CELLS",
    "ResidualUnit1d",
    "SCALING_FACTOR",
    "SD_CONFIG",
    "Shape",
    "SignalHead",
    "SpecDecoder",
    "SpecEncoder",
    "SpecError",
    "SpecNet",
    "SpecPair",
    "SpecSource",
    "TINY",
    "TINY_CONFIG",
    "Tensor",
    "TinyBlock",
    "UpConv1d",
    "VAEAttentionBlock",
    "VAEResBlock",
    "VAEResBlock1d",
    "WEIGHTS_FILE",
    "WeightsError",
    "activation_by_name",
    "audio_architecture",
    "audio_specs",
    "available_architectures",
    "axis_weights",
    "build",
    "conv",
    "conv1d",
    "conv_patches",
    "decoder_input_shape",
    "default_num_groups",
    "design_prototype",
    "diffusers_layout",
    "fit_tile",
    "infer_shapes",
    "kernel_param",
    "leaf_paths",
    "load_architecture",
    "load_spec",
    "make_audio_nets",
    "make_nets",
    "make_rnn_nets",
    "make_spec_nets",
    "matching_layouts",
    "mlp_discriminator",
    "native_convolutions",
    "output_shape",
    "output_size",
    "packaged_name",
    "params_to_tensors",
    "parse_spec",
    "patchgan_discriminator",
    "plan_axis",
    "pqmf_filters",
    "read_tensors",
    "receptive_field",
    "receptive_radius",
    "reconstruction_error_db",
    "resolve_spec_pair",
    "sequence_layout",
    "spec_layers",
    "tensors_to_params",
    "tile_starts",
    "tiled_apply",
    "transposed_conv",
    "transposed_conv_gemm",
    "use_gemm_convolutions",
    "with_cond",
]
