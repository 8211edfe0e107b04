"""Run configuration: a frozen dataclass that a JSON/TOML file and flags override.

Precedence, lowest first: the dataclass defaults, a ``--config`` file (or,
for ``train`` without one, the ``config.json`` of the run being resumed), then
command-line flags. Every field carries its own description, group and
accepted values in ``dataclasses.field`` metadata: the command line's flags and
``--help`` are generated from it, and validation reads the same metadata, so a
setting is described once. Named choices come from the registries of
:mod:`jvae.training.experiment` (and the modules that define them). Unknown keys and
ill-typed or out-of-range values raise :class:`ConfigError` with a message
naming the key and the accepted values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

from jvae.app.run_guard import parse_interval
from jvae.base import ConfigError
from jvae.datasets.pixels import BINARIZE_MODES
from jvae.distributions.posteriors import NORMAL_SCALES
from jvae.distributions.priors import VAMP_INITS
from jvae.layers.spec import SpecError
from jvae.layers.spec_nets import resolve_spec_pair
from jvae.objectives import CIWAE_BETA, CVAE_PRIOR_WEIGHT
from jvae.terms.mmd import MMD_KERNELS
from jvae.terms.regularized import RAE_REGULARIZERS
from jvae.terms.total_correlation import FACTORVAE_LR, TC_ESTIMATORS
from jvae.training import experiment as ex

__all__ = ["Config", "ConfigError", "GROUPS", "load_config_file", "make_config",
           "config_to_dict", "choices_of", "RESUMABLE_CHANGES", "ALIASES", "MAX_INT"]

# Groups of settings, in the order ``--help`` lists them.
GROUPS = ("data", "model", "objective", "optimisation", "run")


def _setting(default: Any, help: str, group: str, *, choices: Any = None,
             check: str | None = None) -> Any:
    """A :class:`Config` field with its description.

    Args:
      default: the default value.
      help: one sentence for ``--help`` (type, choices and default are appended).
      group: one of :data:`GROUPS`.
      choices: a registry (dict or tuple) whose keys are the accepted values.
      check: ``"positive"`` or ``"non_negative"`` for numbers.
    """
    assert group in GROUPS, group
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "choices": choices, "check": check})


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run; see each field's ``help`` metadata
    (``python -m jvae train --help`` prints them, grouped)."""

    # data
    dataset: str = _setting(
        "mnist", "Dataset name: digits (scikit-learn's bundled 8x8 digits, offline), dsprites "
        "(64x64 shapes with five known factors, drawn offline), mnist, "
        "fashion_mnist or kmnist (--data-dir IDX files, a prepared tfds copy, or a verified "
        "download), or any prepared tfds image dataset.", "data")
    data_source: str | None = _setting(
        None, "A folder of images or .wav files to train on instead of --dataset (also the "
        "DATA_SOURCE environment variable): train/ + test/ (or val/) sub-folders are the "
        "splits, class sub-folders the labels.", "data")
    modality: str = _setting(
        "auto", "What --data-source holds: auto (audio when it has .wav files and no images), "
        "image or audio.", "data", choices=("auto", "image", "audio"))
    image_size: str | None = _setting(
        None, "N or HxW: resize the short side, then center-crop (unset: a folder's median "
        "short side, at most 64; a named dataset's own size).", "data")
    channels: int = _setting(
        0, "1 (grey) or 3 (RGB); 0 keeps the data's (a folder: 3 if any image has colour).",
        "data", choices=(0, 1, 3))
    train_examples: int = _setting(
        0, "Train on the training split's first N examples (dsprites: of its fixed shuffle, "
        "drawing only those); 0: all of them.", "data", check="non_negative")
    test_examples: int = _setting(
        0, "Evaluate on the test split's first N examples (dsprites: of its fixed shuffle); "
        "0: all of them.", "data", check="non_negative")
    test_fraction: float = _setting(
        0.1, "A folder's test share without split sub-folders, chosen by a hash of each "
        "file's path (adding files never moves old ones).", "data", check="non_negative")
    strict: bool = _setting(
        False, "Unreadable or truncated files in a folder are an error instead of a "
        "warning.", "data")
    cache: bool = _setting(
        True, "Decode a folder's images once into a memory-mapped cache in "
        "$JVAE_DATA_DIR/cache (--no-cache: decode every run).", "data")
    sample_rate: int = _setting(
        0, "Audio sample rate in Hz (0: the folder's most common rate).", "data",
        check="non_negative")
    chunk_size: int = _setting(
        0, "Audio samples per example: shorter clips are padded with silence (masked out of "
        "the loss and metrics), longer ones cut into chunks (0: the power of two covering 90% "
        "of the clips, 1024-65536).", "data", check="non_negative")
    chunk_hop: int = _setting(
        0, "Samples between the starts of a long clip's chunks (0: the chunk size, chunks "
        "that do not overlap).", "data", check="non_negative")
    mirror: str | None = _setting(
        None, "Base URL(s), comma-separated, of MNIST-format downloads (default: "
        "$JVAE_MNIST_MIRROR, then the datasets' own mirrors).", "data")
    data_dir: str | None = _setting(
        None, "Folder with the MNIST IDX files (train-images-idx3-ubyte[.gz], ...); unset "
        "reads the dataset from tensorflow-datasets.", "data")
    tfds_data_dir: str | None = _setting(
        None, "tensorflow-datasets data directory (tfds' own default when unset).", "data")
    binarize: str = _setting(
        "none", "Pixel binarization: none keeps grey levels in [0, 1], dynamic resamples "
        "binary pixels every batch, static binarizes once with a fixed seed.", "data",
        choices=BINARIZE_MODES)
    # model
    model: str = _setting(
        "vae", "Model family: vae (beta-VAE), cvae (encoder and decoder conditioned on the "
        "one-hot label), iwae (importance-weighted bound with --num-samples k), vamp (VampPrior: "
        "the prior a mixture of the posterior at --vamp-components learned inputs), ae "
        "(deterministic autoencoder), vq (vector-quantized latents), btcvae (beta-TCVAE: the "
        "KL split into mutual information, total correlation and dimension-wise KL), "
        "factorvae (ELBO plus a critic's total correlation), infovae (ELBO plus MMD), wae "
        "(WAE-MMD, deterministic code), rae (regularized deterministic autoencoder), miwae "
        "(--iw-groups M averaged --num-samples K IWAE bounds), piwae (IWAE gradient for the "
        "decoder, MIWAE for the encoder), ciwae (--ciwae-beta mix of ELBO and IWAE) or svae "
        "(von Mises-Fisher codes on the sphere S^(d-1), uniform prior; d = --latent-dim).",
        "model",
        choices=ex.MODELS)
    latent_dim: int = _setting(
        20, "Number of latent dimensions (a spatial spec architecture takes its latent "
        "shape from the encoder instead).", "model", check="positive")
    posterior: str = _setting(
        "normal", "Posterior family of vae, cvae, iwae and the families built on them (miwae, "
        "piwae, ciwae, ...): normal (diagonal Gaussian, N(0, I) prior) or dirichlet (symmetric "
        "Dirichlet prior).", "model",
        choices=ex.POSTERIORS)
    posterior_scale: str = _setting(
        "softplus", "How the normal posterior reads the encoder's raw scale: softplus "
        "(softplus(raw) + 1e-6) or logvar (a log-variance, exp(clip(raw, -30, 20) / 2), as "
        "Stable Diffusion's VAE).", "model", choices=NORMAL_SCALES)
    dirichlet_prior: float = _setting(
        0.98, "Concentration of the symmetric Dirichlet prior.", "model", check="positive")
    dirichlet_reparam: str = _setting(
        "exact", "Dirichlet sampler: exact (implicit reparameterization) or approx (the "
        "inverse-CDF Gamma approximation with its Gamma KL; faster, biased).", "model",
        choices=ex.DIRICHLET_REPARAMS)
    net: str = _setting(
        "auto", "Encoder/decoder: mlp, conv (strided convolutions), audio (residual dilated "
        "1-D convolutions with a latent sequence), spec (built from layer specs, see "
        "--encoder-spec), rnn (LSTM/GRU over the data's first axis) or auto (audio for "
        "audio, else mlp).", "model", choices=(ex.AUTO, *ex.NETS))
    encoder_spec: str | None = _setting(
        None, "With --net spec: a packaged architecture (mnist_mlp, mnist_conv, sd_vae, "
        "sd_vae_mnist), a .json path or an inline JSON list of layer specs.", "model")
    decoder_spec: str | None = _setting(
        None, "With --net spec: the decoder's specs, in the forms --encoder-spec takes; "
        "unset uses the encoder spec's architecture.", "model")
    hidden: tuple[int, ...] = _setting(
        (400,), "Hidden layer widths of the MLP, comma-separated (conv nets: the first is "
        "their Dense width).", "model")
    activation: str = _setting(
        "relu", "Activation function of the built-in nets.", "model", choices=ex.ACTIVATIONS)
    rnn_cell: str = _setting(
        "lstm", "Recurrent cell of --net rnn.", "model", choices=ex.RNN_CELLS)
    rnn_hidden: int = _setting(
        256, "Recurrent state size of --net rnn.", "model", check="positive")
    decoder_mode: str = _setting(
        "repeat_latent", "What the recurrent decoder reads at each step: z (repeat_latent), "
        "z and its previous output (concat_output_latent) or its previous output only "
        "(output_as_input).", "model", choices=ex.DECODER_MODES)
    likelihood: str = _setting(
        "auto", "Observation model p(x|z): bernoulli (logits), gaussian (fixed "
        "--gaussian-scale), gaussian_learned (per-pixel scale), laplace (L1, fixed "
        "--laplace-scale), logistic_mixture "
        "(discretized, 256 levels; reported in bits/dim) or auto (gaussian for audio in "
        "[-1, 1], else bernoulli).", "model", choices=(ex.AUTO, *ex.LIKELIHOODS))
    gaussian_scale: float = _setting(
        0.0, "Standard deviation of the fixed-scale gaussian likelihood (0: 1, or for audio "
        "a scale chosen for waveforms in [-1, 1]).", "model", check="non_negative")
    laplace_scale: float = _setting(
        0.5, "Scale b of the laplace likelihood, the L1 reconstruction in nats: -log p = "
        "|x - mu| / b + log 2b per pixel in [0, 1] (0.5 is latent diffusion's start on [-1, 1] "
        "images).", "model", check="positive")
    logistic_components: int = _setting(
        5, "Mixture components of the logistic_mixture likelihood.", "model",
        check="positive")
    flow_layers: int = _setting(
        0, "Coupling layers of a normalizing flow on the posterior (0: no flow).", "model",
        check="non_negative")
    flow_coupling: str = _setting(
        "spline", "Flow coupling: spline (rational-quadratic) or affine.", "model",
        choices=ex.FLOW_COUPLINGS)
    flow_hidden: tuple[int, ...] = _setting(
        (64, 64), "Hidden widths of each coupling layer's conditioner.", "model")
    flow_bins: int = _setting(8, "Spline bins per coupling.", "model", check="positive")
    flow_context: int = _setting(
        16, "Size of the per-example context the encoder feeds the flow.", "model",
        check="non_negative")
    vq_codes: int = _setting(128, "Codebook size of --model vq.", "model", check="positive")
    vq_code_dim: int = _setting(
        4, "Dimension of one code vector of --model vq (--latent-dim must be a multiple).",
        "model", check="positive")
    vamp_components: int = _setting(
        500, "Pseudo-inputs K of --model vamp, whose prior is the mixture p(z) = (1/K) sum_k "
        "q(z|u_k) of the encoder's posterior at K learned inputs (Tomczak & Welling 2018).",
        "model", check="positive")
    vamp_init: str = _setting(
        "random", "Initial pseudo-inputs of --model vamp: random (N(0.05, 0.01), clipped to "
        "the data's range) or data (K training examples chosen by --seed).", "model",
        choices=VAMP_INITS)
    stochastic_layers: int = _setting(
        1, "Stochastic layers of --model vae or iwae: 2 adds a Gaussian layer h2 above z = h1 "
        "(Burda et al. 2015's second architecture: p(h2) = N(0, I), p(h1|h2) and q(h2|h1) "
        "MLPs of --top-hidden with --activation; theirs: --hidden 100,100 --latent-dim 100 "
        "--activation tanh).", "model", choices=(1, 2))
    top_latent_dim: int = _setting(
        50, "Dimension of the second stochastic layer h2 of --stochastic-layers 2.", "model",
        check="positive")
    top_hidden: tuple[int, ...] = _setting(
        (50, 50), "Hidden widths of q(h2|h1) under --stochastic-layers 2; p(h1|h2) mirrors "
        "them.", "model")
    compute_dtype: str = _setting(
        "float32", "Dtype the networks compute in; parameters, optimizer state and the "
        "loss stay float32 (bfloat16 is for GPU and TPU).", "model",
        choices=ex.COMPUTE_DTYPES)
    # objective
    beta: float = _setting(
        1.0, "Weight of the KL term (beta-VAE); alias --kld-weight.", "objective",
        check="non_negative")
    alpha: float = _setting(
        1.0, "Weight of the reconstruction term.", "objective", check="non_negative")
    num_samples: int = _setting(
        1, "Posterior samples per example in the training objective (the k of --model "
        "iwae and ciwae, the K of miwae and piwae, which draw --iw-groups times as many).",
        "objective", check="positive")
    iw_groups: int = _setting(
        1, "M of --model miwae and piwae (Rainforth et al. 2018): M independent K-sample "
        "importance-weighted bounds (K = --num-samples) averaged, M * K posterior draws per "
        "example (1: the IWAE bound).", "objective", check="positive")
    ciwae_beta: float = _setting(
        CIWAE_BETA, "beta of --model ciwae's objective beta * ELBO + (1 - beta) * IWAE with "
        "K = --num-samples draws (Rainforth et al. 2018; 1: the ELBO, 0: IWAE).", "objective",
        check="non_negative")
    kl_warmup_steps: int = _setting(
        0, "Steps over which the KL weight ramps linearly from 0 to --beta (0: none).",
        "objective", check="non_negative")
    cvae_prior_weight: float = _setting(
        CVAE_PRIOR_WEIGHT, "Weight of a cvae's prior-reconstruction term -log p(x | z ~ p(z), y), which "
        "makes decodes of prior draws follow the label (Sohn et al.'s hybrid objective; "
        "0: the plain ELBO).", "objective", check="non_negative")
    stft_weight: float | None = _setting(
        None, "Weight of the multi-resolution STFT distance (spectral convergence plus "
        "log-magnitude L1, averaged over --stft-fft-sizes) for 1-D data; a distortion added "
        "to the ELBO, which stays a bound in nats (unset: a weight for audio, 0 otherwise).",
        "objective")
    mel_weight: float = _setting(
        0.0, "Weight of the same distance on mel-scaled magnitudes (0: off).", "objective",
        check="non_negative")
    stft_fft_sizes: tuple[int, ...] = _setting(
        (), "FFT sizes of the spectral terms, comma-separated, each with hop FFT/4 and a "
        "Hann window of FFT samples (unset: 16, 32, 64 and 128 ms at the sample rate, as "
        "powers of two).", "objective")
    ssim_weight: float = _setting(
        0.0, "Weight of the 1 - SSIM term (0: off).", "objective", check="non_negative")
    lpips_weight: float = _setting(
        0.0, "Weight of the LPIPS perceptual distance between each reconstruction and its "
        "image, counted once per pixel as latent diffusion adds it to the L1 (0: off; needs "
        "the VGG16 LPIPS weights: jvae weights fetch lpips).", "objective",
        check="non_negative")
    adv_weight: float = _setting(
        0.0, "Weight of the PatchGAN adversarial term (latent diffusion: 0.5), scaled by the "
        "adaptive weight unless --no-adv-adaptive (0: no discriminator).", "objective",
        check="non_negative")
    adv_start: int = _setting(
        0, "Train step at which the discriminator and its term switch on (latent diffusion: "
        "50001).", "objective", check="non_negative")
    adv_loss: str = _setting(
        "hinge", "Discriminator loss: hinge or non_saturating (the logistic GAN loss).",
        "objective", choices=("hinge", "non_saturating"))
    adv_adaptive: bool = _setting(
        True, "Scale the adversarial term by the ratio of the reconstruction's and its "
        "gradient norms at the decoder's last layer (latent diffusion's adaptive weight).",
        "objective")
    adv_layers: int = _setting(
        3, "Strided convolutions of the PatchGAN discriminator (3: 70x70 patches).",
        "objective", check="positive")
    adv_channels: int = _setting(
        64, "Channels of the discriminator's first layer (doubled per layer, at most 8x).",
        "objective", check="positive")
    adv_lr: float = _setting(
        0.0, "The discriminator's Adam learning rate (betas 0.5, 0.9; 0: --lr).",
        "objective", check="non_negative")
    sparsity_weight: float = _setting(
        0.0, "Weight of the scale-free L1 penalty on the latent code (0: off).", "objective",
        check="non_negative")
    decoder_l2: float = _setting(
        0.0, "Weight of the L2 penalty on the decoder's weights (0: off).", "objective",
        check="non_negative")
    vq_commitment: float = _setting(
        0.25, "Weight of the VQ commitment loss.", "objective", check="non_negative")
    tcvae_alpha: float = _setting(
        1.0, "Weight of --model btcvae's index-code mutual information (Chen et al. 2018's "
        "alpha).", "objective", check="non_negative")
    tcvae_beta: float = _setting(
        6.0, "Weight of --model btcvae's total correlation (Chen et al.'s beta; 1, with alpha "
        "and gamma 1, is the ELBO).", "objective", check="non_negative")
    tcvae_gamma: float = _setting(
        1.0, "Weight of --model btcvae's dimension-wise KL (Chen et al.'s gamma).", "objective",
        check="non_negative")
    tcvae_estimator: str = _setting(
        "mws", "How --model btcvae estimates log q(z) from a batch of posteriors over the "
        "training split: mws (minibatch-weighted sampling) or mss (minibatch-stratified "
        "sampling).", "objective", choices=TC_ESTIMATORS)
    factorvae_gamma: float = _setting(
        10.0, "Weight of --model factorvae's total correlation, a critic's mean logit "
        "(Kim & Mnih 2018's gamma).", "objective", check="non_negative")
    factorvae_hidden: tuple[int, ...] = _setting(
        (256, 256, 256), "Hidden widths of --model factorvae's MLP critic of the codes "
        "(leaky ReLU 0.2). The paper's, 1000,1000,1000,1000,1000,1000, costs about 37 times "
        "the multiply-adds of the default on a 10-d code.", "objective")
    factorvae_lr: float = _setting(
        FACTORVAE_LR, "Adam learning rate of --model factorvae's critic (betas 0.5, 0.9; "
        "the paper's).", "objective", check="positive")
    mmd_kernel: str = _setting(
        "imq", "Kernel of the MMD of --model infovae and wae: imq (C / (C + |x - y|^2)) or rbf "
        "(exp(-|x - y|^2 / C)), with C = 2 d --mmd-scale for d latent dimensions.",
        "objective", choices=MMD_KERNELS)
    mmd_scale: float = _setting(
        1.0, "sigma^2 in the MMD kernel's C = 2 d sigma^2 (1: WAE's choice for a N(0, I) "
        "prior).", "objective", check="positive")
    infovae_alpha: float = _setting(
        0.0, "InfoVAE's alpha (Zhao et al. 2017): --model infovae weighs the KL 1 - alpha and "
        "the MMD alpha + lambda - 1 (alpha <= 1).", "objective")
    infovae_lambda: float = _setting(
        1000.0, "InfoVAE's lambda: the MMD's weight is alpha + lambda - 1 (alpha + lambda >= "
        "1).", "objective", check="non_negative")
    wae_lambda: float = _setting(
        10.0, "Weight of --model wae's MMD between codes and prior draws (Tolstikhin et al. "
        "2018: 10 on MNIST).", "objective", check="non_negative")
    rae_beta: float = _setting(
        1.0, "Weight of --model rae's code norm |z|^2 / 2 (1: the MAP objective under a "
        "N(0, I) prior).", "objective", check="non_negative")
    rae_lambda: float = _setting(
        1e-3, "Weight of --model rae's decoder regularizer.", "objective",
        check="non_negative")
    rae_regularizer: str = _setting(
        "l2", "--model rae's decoder regularizer (Ghosh et al. 2020): l2 (weight decay on the "
        "decoder) or gp (the squared Frobenius norm of the decoder's Jacobian at the code, "
        "see --rae-gp-probes).", "objective", choices=RAE_REGULARIZERS)
    rae_gp_probes: int = _setting(
        1, "Random probes per code of Hutchinson's unbiased estimate of --rae-regularizer gp "
        "(one Jacobian-vector product each); 0 computes the norm exactly, one product per "
        "latent dimension.", "objective", check="non_negative")
    # optimisation
    epochs: int = _setting(
        0, "Total epochs; a resumed run continues up to this number (0: 10, or more for a "
        "small training split, enough for about 1,500 steps, at most 300 epochs).",
        "optimisation", check="non_negative")
    batch_size: int = _setting(
        0, "Global training batch size (divisible by the device count; one larger than the "
        "training split is cut to it; 0: 128, or 32 clips for audio).", "optimisation",
        check="non_negative")
    lr: float = _setting(1e-3, "Adam learning rate.", "optimisation", check="positive")
    ema_decay: float = _setting(
        0.0, "Decay of an exponential moving average of the parameters, warmed up as "
        "min(decay, (1 + t) / (10 + t)); evaluation, the page, the modes and export use the "
        "average (0: none).", "optimisation", check="non_negative")
    seed: int = _setting(
        0, "Seed of initialization, shuffling, sampling and binarization.", "optimisation",
        check="non_negative")
    # run
    eval_batch_size: int = _setting(
        1000, "Evaluation batch size (the last batch is padded and masked).", "run",
        check="positive")
    quality_images: int = _setting(
        1000, "Test images whose reconstructions are scored after each epoch by PSNR, SSIM, "
        "MS-SSIM, the high-frequency energy ratio and, with its weights installed, LPIPS (0: "
        "the whole split).", "run", check="non_negative")
    fid_images: int = _setting(
        0, "Images of the test split whose reconstructions and as many samples are scored "
        "by FID after each epoch (0: none; needs the Inception weights: jvae weights fetch "
        "inception).", "run", check="non_negative")
    keep_checkpoints: int = _setting(
        3, "Number of most recent checkpoints kept.", "run", check="positive")
    num_devices: int = _setting(
        0, "Devices to train on (0: all local devices).", "run", check="non_negative")
    num_images: int = _setting(
        64, "Images in each saved sample and reconstruction grid.", "run", check="positive")
    data_placement: str = _setting(
        "auto", "Where the training split lives: device (each epoch one on-device loop), "
        "host (one host batch per step from memory), stream (a folder's batches read from "
        "its cache or files while the devices train; needs the stream extra) or auto "
        "(device, except convolutional nets on CPU: host; a split over half of a device's "
        "memory, or on CPU of the available RAM per device: stream for a folder, else host).",
        "run", choices=ex.PLACEMENTS)
    loader_workers: int = _setting(
        0, "Worker processes reading batches under --data-placement stream (0: reader "
        "threads in the training process); the batch order does not depend on it, so a "
        "resumed run may change it.", "run", check="non_negative")
    loader_prefetch: int = _setting(
        4, "Batches read ahead (per worker) under --data-placement stream.", "run",
        check="positive")
    dashboard: bool = _setting(
        True, "Serve the live training page (curves, images, a latent-space explorer) while "
        "training; --no-dashboard turns it off.", "run")
    dashboard_port: int = _setting(
        2998, "Port of the live page; 0 picks a free one. A port in use prints one warning "
        "and training goes on without the page.", "run", check="non_negative")
    dashboard_host: str = _setting(
        "127.0.0.1", "Address the live page binds: loopback (this machine only) unless set "
        "otherwise, which prints a warning that anyone who can reach the port can watch.",
        "run")
    tensorboard: bool = _setting(
        True, "Write TensorBoard event files (scalars, image grids, latent embeddings) to "
        "WORKDIR/tb; --no-tensorboard turns it off.", "run")
    checkpoint_every: str = _setting(
        "30m", "Checkpoints within an epoch, on top of the one at each epoch's end: every N "
        "steps (500), every duration (90s, 10m, 2h), or epoch for epoch ends only. A run "
        "resumed from one continues at the next batch of the same epoch.", "run")
    max_consecutive_skips: int = _setting(
        50, "Steps in a row whose loss or gradient norm is not finite (each one skipped) "
        "before the run stops with exit status 3 as diverged.", "run", check="positive")
    coordinator_address: str | None = _setting(
        None, "HOST:PORT of process 0 in a multi-process run (jax.distributed); unset under "
        "SLURM and other launchers JAX detects.", "run")
    num_processes: int | None = _setting(
        None, "Number of processes of a multi-process run.", "run")
    process_id: int | None = _setting(
        None, "This process's index in a multi-process run (0 writes the files).", "run")

    def __post_init__(self):
        _validate(self)


# Fields that may differ between a checkpointed run and its resumption: they
# change neither the state's structure nor the optimization trajectory.
RESUMABLE_CHANGES = frozenset({"epochs", "data_dir", "tfds_data_dir", "eval_batch_size",
                               "fid_images", "quality_images",
                               "keep_checkpoints", "num_images",
                               # Same batches in the same order either way (only
                               # dynamic binarization's noise stream differs).
                               "data_placement",
                               # The input pipeline's processes and read-ahead: the
                               # streamed order is jvae's own, whatever they are.
                               "loader_workers", "loader_prefetch",
                               # How data is read, not what it is.
                               "strict", "cache", "mirror",
                               # How the run is watched, not what it computes.
                               "dashboard", "dashboard_port", "dashboard_host",
                               "tensorboard",
                               # How the run is guarded and launched, not what it computes.
                               "checkpoint_every", "max_consecutive_skips",
                               "coordinator_address", "num_processes", "process_id"})


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    """The accepted values of a field with named choices, else None."""
    choices = field.metadata.get("choices")
    return None if choices is None else tuple(choices)


# The largest integer setting: seeds become 64-bit PRNG keys, counts index int64 arrays.
MAX_INT = 2**63 - 1


def _validate_numbers(cfg: Config) -> None:
    """Every float setting is finite and every integer fits 64 bits (inf, nan and a seed
    of 24 digits would otherwise fail only once training runs)."""
    for name, kind in _TYPES.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        if base is float and not math.isfinite(value):
            raise ConfigError(f"{name}={value} is not a finite number; give a finite value")
        values = value if typing.get_origin(base) is tuple else (value,)
        if base is not bool and any(isinstance(v, int) and abs(v) > MAX_INT for v in values):
            raise ConfigError(f"{name}={value} is too large; integer settings go up to "
                              f"2**63 - 1 ({MAX_INT})")


def _validate(cfg: Config) -> None:
    _validate_numbers(cfg)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        choices = choices_of(f)
        if choices is not None and value not in choices:
            raise ConfigError(f"{f.name}={value!r} is not one of "
                              f"{', '.join(map(str, choices))}")
        check = f.metadata.get("check")
        if check == "positive" and not value > 0:
            raise ConfigError(f"{f.name} must be positive, got {value}")
        if check == "non_negative" and value < 0:
            raise ConfigError(f"{f.name} must be >= 0, got {value}")
    if cfg.stft_weight is not None and not cfg.stft_weight >= 0:
        raise ConfigError(f"stft_weight must be >= 0 (or unset: chosen for the data), got "
                          f"{cfg.stft_weight}")
    if any(n < 4 for n in cfg.stft_fft_sizes):
        raise ConfigError(f"stft_fft_sizes must be FFT lengths of at least 4 samples, got "
                          f"{', '.join(map(str, cfg.stft_fft_sizes))}")
    if not cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    if not cfg.hidden or any(h <= 0 for h in cfg.hidden):
        raise ConfigError(f"hidden must be a non-empty list of positive widths, got {cfg.hidden}")
    try:
        parse_interval(cfg.checkpoint_every)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.num_processes is not None and cfg.num_processes < 1:
        raise ConfigError(f"num_processes must be positive, got {cfg.num_processes}")
    if cfg.process_id is not None and cfg.process_id < 0:
        raise ConfigError(f"process_id must be >= 0, got {cfg.process_id}")
    if cfg.posterior == "dirichlet" and cfg.latent_dim < 2:
        raise ConfigError("a Dirichlet posterior needs latent_dim >= 2")
    if cfg.posterior_scale != "softplus" and (cfg.posterior != "normal"
                                              or cfg.model not in _SCALED_NORMAL):
        raise ConfigError(f"posterior_scale={cfg.posterior_scale} applies to a normal "
                          f"posterior (--posterior normal, --model {', '.join(_SCALED_NORMAL)})")
    if cfg.dirichlet_reparam != "exact" and cfg.posterior != "dirichlet":
        raise ConfigError(f"dirichlet_reparam={cfg.dirichlet_reparam} applies to "
                          "--posterior dirichlet only")
    if not cfg.test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {cfg.test_fraction}")
    if cfg.dashboard_port > 65535:
        raise ConfigError(f"dashboard_port must be a port number in 0..65535, got "
                          f"{cfg.dashboard_port}")
    _validate_model(cfg)
    _validate_priors(cfg)
    _validate_regularized(cfg)
    _validate_importance(cfg)
    _validate_net(cfg)


# The families whose normal posterior reads --posterior-scale.
_SCALED_NORMAL = ("vae", "cvae", "iwae", "btcvae", "factorvae", "infovae", "miwae", "piwae",
                  "ciwae")


def _validate_model(cfg: Config) -> None:
    """Combinations of model family, posterior and loss terms that mean nothing."""
    if cfg.model in ("ae", "vq") and cfg.posterior != "normal":
        raise ConfigError(f"model={cfg.model} has a deterministic code, not a "
                          f"{cfg.posterior} posterior; use --posterior normal (the default)")
    if cfg.flow_layers:
        if cfg.model in ("ae", "vq"):
            raise ConfigError(f"flow_layers applies to a posterior distribution; model={cfg.model} "
                              "has none (use vae, cvae or iwae, or --flow-layers 0)")
        if cfg.posterior != "normal":
            raise ConfigError("a flow acts on R^d and needs --posterior normal; a Dirichlet "
                              "posterior lives on the simplex (use --flow-layers 0)")
        if cfg.latent_dim < 2:
            raise ConfigError("a coupling flow needs latent_dim >= 2")
        if not cfg.flow_hidden or any(h <= 0 for h in cfg.flow_hidden):
            raise ConfigError(f"flow_hidden must be positive widths, got {cfg.flow_hidden}")
    if cfg.model in ("ae", "iwae", "vq") and (cfg.beta != 1.0 or cfg.kl_warmup_steps):
        raise ConfigError(f"beta and kl_warmup_steps weight the ELBO's KL term; model={cfg.model} "
                          "has no weighted KL term (use model vae or cvae)")
    if cfg.model == "iwae" and cfg.alpha != 1.0:
        raise ConfigError("alpha weights the ELBO's reconstruction term; model=iwae optimizes "
                          "the importance-weighted bound as a whole")
    if cfg.model in ("ae", "vq") and cfg.num_samples != 1:
        raise ConfigError(f"model={cfg.model} is deterministic; num_samples must be 1")
    if cfg.model == "vq" and cfg.latent_dim % cfg.vq_code_dim:
        raise ConfigError(f"latent_dim={cfg.latent_dim} must be a multiple of "
                          f"vq_code_dim={cfg.vq_code_dim} (latent_dim / vq_code_dim code vectors)")


def _validate_priors(cfg: Config) -> None:
    """The learned priors' settings belong to their families and need a density on R^d."""
    if cfg.model != "vamp" and (cfg.vamp_components != 500 or cfg.vamp_init != "random"):
        raise ConfigError(f"vamp_components and vamp_init configure --model vamp; "
                          f"model={cfg.model} has no VampPrior (use --model vamp)")
    if cfg.stochastic_layers == 1:
        if cfg.top_latent_dim != 50 or cfg.top_hidden != (50, 50):
            raise ConfigError("top_latent_dim and top_hidden shape the second stochastic "
                              "layer; add --stochastic-layers 2")
        return
    if cfg.model not in ("vae", "iwae"):
        raise ConfigError(f"stochastic_layers=2 applies to --model vae or iwae, not "
                          f"{cfg.model} (use --stochastic-layers 1)")
    if cfg.posterior != "normal":
        raise ConfigError("stochastic_layers=2 puts a Gaussian p(h1|h2) over h1 in R^d; a "
                          "Dirichlet h1 lives on the simplex (use --posterior normal)")
    if not cfg.top_hidden or any(h <= 0 for h in cfg.top_hidden):
        raise ConfigError(f"top_hidden must be positive widths, got {cfg.top_hidden}")


# The settings each of these families alone reads.
_FAMILY_SETTINGS = {
    "btcvae": ("tcvae_alpha", "tcvae_beta", "tcvae_gamma", "tcvae_estimator"),
    "factorvae": ("factorvae_gamma", "factorvae_hidden", "factorvae_lr"),
    "infovae": ("infovae_alpha", "infovae_lambda"),
    "wae": ("wae_lambda",),
    "rae": ("rae_beta", "rae_lambda", "rae_regularizer", "rae_gp_probes"),
}


def _validate_regularized(cfg: Config) -> None:
    """beta-TCVAE, FactorVAE, InfoVAE, WAE and RAE: settings of theirs belong to them,
    and each needs a posterior its terms are defined for."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for model, names in (*_FAMILY_SETTINGS.items(),
                         ("infovae or wae", ("mmd_kernel", "mmd_scale"))):
        changed = [n for n in names if getattr(cfg, n) != defaults[n]]
        if changed and cfg.model not in model.split(" or "):
            verb = "configures" if len(changed) == 1 else "configure"
            raise ConfigError(f"{', '.join(changed)} {verb} --model {model}; "
                              f"model={cfg.model} does not read them (drop them)")
    if cfg.model in ("btcvae", "factorvae") and cfg.posterior != "normal":
        raise ConfigError(f"model={cfg.model} measures the total correlation of codes in R^d; a "
                          f"{cfg.posterior} code lives on the simplex (use --posterior normal)")
    if cfg.model == "btcvae" and cfg.flow_layers:
        raise ConfigError("model=btcvae estimates q(z) from diagonal normal posteriors; a flow "
                          "posterior has no per-dimension density (use --flow-layers 0)")
    if cfg.model in ("wae", "rae"):
        if cfg.posterior != "normal" or cfg.flow_layers:
            raise ConfigError(f"model={cfg.model} has a deterministic code, not a posterior "
                              "distribution; drop --posterior and --flow-layers")
        if cfg.num_samples != 1:
            raise ConfigError(f"model={cfg.model} is deterministic; num_samples must be 1")
    if cfg.model in ("btcvae", "infovae", "wae", "rae") and (cfg.beta != 1.0
                                                             or cfg.kl_warmup_steps):
        own = {"btcvae": "--tcvae-alpha/beta/gamma", "infovae": "--infovae-alpha",
               "wae": "--wae-lambda", "rae": "--rae-beta"}[cfg.model]
        raise ConfigError(f"beta and kl_warmup_steps weight the ELBO's KL term; model="
                          f"{cfg.model} weighs its regularizers with {own}")
    if cfg.model == "factorvae" and (not cfg.factorvae_hidden
                                     or any(h <= 0 for h in cfg.factorvae_hidden)):
        raise ConfigError(f"factorvae_hidden must be positive widths, got {cfg.factorvae_hidden}")
    if cfg.model == "infovae" and not (cfg.infovae_alpha <= 1.0
                                       and cfg.infovae_alpha + cfg.infovae_lambda >= 1.0):
        raise ConfigError(f"InfoVAE weighs the KL 1 - alpha and the MMD alpha + lambda - 1, so "
                          f"it needs alpha <= 1 and alpha + lambda >= 1; got infovae_alpha="
                          f"{cfg.infovae_alpha}, infovae_lambda={cfg.infovae_lambda}")


# The importance-weighted families of Rainforth et al. (2018).
_IW_FAMILIES = ("miwae", "piwae", "ciwae")


def _validate_importance(cfg: Config) -> None:
    """MIWAE/PIWAE/CIWAE's settings belong to them and weigh no ELBO terms; svae has its own
    posterior on the sphere."""
    if cfg.iw_groups != 1 and cfg.model not in ("miwae", "piwae"):
        raise ConfigError(f"iw_groups configures --model miwae and piwae; model={cfg.model} "
                          "does not read it (drop it)")
    if cfg.ciwae_beta != CIWAE_BETA and cfg.model != "ciwae":
        raise ConfigError(f"ciwae_beta configures --model ciwae; model={cfg.model} does not "
                          "read it (drop it)")
    if cfg.ciwae_beta > 1.0:
        raise ConfigError(f"ciwae_beta must be in [0, 1] (beta * ELBO + (1 - beta) * IWAE), "
                          f"got {cfg.ciwae_beta}")
    if cfg.model in _IW_FAMILIES and (cfg.beta != 1.0 or cfg.kl_warmup_steps or cfg.alpha != 1.0):
        own = " (its ELBO's weight is --ciwae-beta)" if cfg.model == "ciwae" else ""
        raise ConfigError(f"alpha, beta and kl_warmup_steps weight the ELBO's terms; "
                          f"model={cfg.model} optimizes importance-weighted bounds as a whole"
                          f"{own}; drop them")
    if cfg.model == "svae":
        if cfg.posterior != "normal":
            raise ConfigError("model=svae has its own von Mises-Fisher posterior on the sphere; "
                              "drop --posterior")
        if cfg.flow_layers:
            raise ConfigError("a flow acts on R^d; model=svae's codes live on the sphere "
                              "S^(d-1) (use --flow-layers 0)")
        if cfg.latent_dim < 2:
            raise ConfigError("model=svae needs latent_dim >= 2: its codes lie on the sphere "
                              "S^(d-1) in R^d, d = latent_dim")


def _validate_net(cfg: Config) -> None:
    """Spec settings belong to ``net=spec`` and must load and parse (shapes are
    checked against the data when the model is built, still before training)."""
    if cfg.net != "spec":
        for name in ("encoder_spec", "decoder_spec"):
            if getattr(cfg, name) is not None:
                raise ConfigError(f"{name} is set but net={cfg.net!r}; add --net spec to build "
                                  "the networks from layer specs")
        return
    if cfg.encoder_spec is None:
        raise ConfigError("net=spec needs encoder_spec (--encoder-spec): a packaged "
                          "architecture such as mnist_conv, a .json path or a JSON list")
    try:
        resolve_spec_pair(cfg.encoder_spec, cfg.decoder_spec)
    except SpecError as e:
        raise ConfigError(str(e)) from None


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TYPES = typing.get_type_hints(Config)


def _coerce(name: str, value: Any) -> Any:
    """Converts a file or flag value to the field's type, or raises ConfigError."""
    kind = _TYPES[name]
    optional = type(None) in typing.get_args(kind)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} cannot be null")
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if optional else kind
    if name in ("encoder_spec", "decoder_spec") and isinstance(value, (list, dict)):
        # A config file may hold the spec itself; kept as JSON text.
        value = json.dumps(value)
    try:
        if typing.get_origin(base) is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_scalar(int, v) for v in value)
        return _scalar(base, value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise ConfigError(f"{name}={_shown(value)} is not a valid "
                          f"{getattr(base, '__name__', base)}") from None


def _shown(value: Any, limit: int = 80) -> str:
    """A value for a message, cut to ``limit`` characters (a config file may hold anything)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


_BOOLS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}


def _scalar(t: type, v: Any) -> Any:
    if t is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in _BOOLS:
            return _BOOLS[v.lower()]
        raise TypeError
    if isinstance(v, bool):
        raise TypeError
    if t is int:
        if isinstance(v, float) and not v.is_integer():
            raise TypeError
        return int(v)
    if t is float:
        return float(v)
    if t is str:
        if not isinstance(v, str):
            raise TypeError
        return v
    raise TypeError


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a ``.json`` or ``.toml`` config file into a dict of raw values.

    Raises:
      ConfigError: missing file, unsupported suffix or a parse error.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"config file {path} cannot be read as UTF-8 text "
                          f"({getattr(e, 'reason', None) or e}); pass a JSON or TOML file") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path} is malformed: {e}") from None
    except RecursionError:  # both parsers recurse once per level of nesting
        raise ConfigError(f"config file {path} nests its values too deeply to be settings; "
                          "pass a flat table of settings") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of settings")
    return data


# Other names users know settings by (the KL weight is "kld_weight" in many
# PyTorch VAE code bases).
ALIASES = {"kld_weight": "beta"}


def make_config(*layers: dict[str, Any]) -> Config:
    """Builds a :class:`Config` from dicts of overrides, later ones winning.

    Keys may use dashes or underscores (``batch-size`` or ``batch_size``), and
    the names in :data:`ALIASES` (``kld_weight`` is ``beta``).

    Raises:
      ConfigError: an unknown key or an invalid value.
    """
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            name = ALIASES.get(name, name)
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r}; known settings: "
                                  f"{', '.join(sorted(_FIELDS))}")
            values[name] = _coerce(name, value)
    return Config(**values)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A JSON-serializable dict of the config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
