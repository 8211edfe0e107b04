"""PyTorch reference implementations of jvae's VAEs, for speed comparisons.

The models, loss and optimizer mirror the JAX library's so that the two can be
timed side by side on the same data. The MLP VAE (``model="mlp"``):

* encoder ``Linear(784, hidden) -> ReLU -> Linear(hidden, 2 * latent)`` giving
  ``loc`` and ``scale = softplus(raw)``;
* reparameterized sample ``z = loc + scale * eps``;
* decoder ``Linear(latent, hidden) -> ReLU -> Linear(hidden, 784)`` logits;
* per-example loss ``sum(BCE-with-logits) + KL(N(loc, scale) || N(0, I))``,
  averaged over the batch;
* update: zero NaN gradients -> clip global norm to 1.0 -> Adam(1e-3, 0.9, 0.99),
  the counterpart of ``zero_nans -> clip_by_global_norm(1.0) -> adam``.

``model="conv"`` is jvae's ``--net conv`` (two stride-2 3x3 convolutions to 32
and 64 channels, Dense 256, head; Dense 256, Dense 7x7x64, two stride-2
transposed convolutions, 3x3 convolution head), ``model="sd_vae"`` the
Stable Diffusion autoencoder of ``diffusers`` (``AutoencoderKL``, the layout
of jvae's packaged ``sd_vae``); loss, optimizer and clipping as above, only
the initialisation schemes differ.

Standalone use (from the repository root)::

    python benchmarks/torch_reference.py --epochs 3 --batch-size 128
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import struct
import time
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    torch = None

INPUT_DIM = 784
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def available() -> bool:
    """Tells whether PyTorch can be imported.

    Returns:
        True if ``torch`` imported successfully, False otherwise.
    """
    return torch is not None


def flops_per_example(latent_dim: int = 20, hidden: int = 400, input_dim: int = INPUT_DIM) -> int:
    """Training FLOPs for one example of the MLP VAE.

    Counts only the four matmuls: a dense layer mapping ``m`` inputs to ``n``
    outputs costs ``2 * m * n`` FLOPs forward (one multiply and one add per
    weight). The backward pass is counted as twice the forward pass (gradients
    with respect to both inputs and weights), so a training step is 3x forward.
    Activations, the loss and the optimizer update are ignored.

    Args:
        latent_dim: Size of the latent space.
        hidden: Width of the hidden layer of encoder and decoder.
        input_dim: Number of pixels per example.

    Returns:
        The number of FLOPs per training example.
    """
    layers = [(input_dim, hidden), (hidden, 2 * latent_dim), (latent_dim, hidden), (hidden, input_dim)]
    forward = sum(2 * m * n for m, n in layers)
    return 3 * forward


def _gaussian_kl(loc: "torch.Tensor", scale: "torch.Tensor") -> "torch.Tensor":
    """``KL(N(loc, scale) || N(0, I))`` summed over all but the batch axis."""
    kl = 0.5 * (loc.square() + scale.square() - 1.0 - 2.0 * scale.log())
    return kl.flatten(1).sum(-1)


def _bernoulli_nll(logits: "torch.Tensor", x: "torch.Tensor") -> "torch.Tensor":
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)


class TorchVAERunner:
    """Trains a PyTorch VAE one epoch at a time; build it with `make_runner`.

    The model is given by ``encode(x) -> (loc, raw_scale)`` and ``decode(z) ->
    logits``; the loss is the negative ELBO with ``scale = softplus(raw)``, a
    Bernoulli likelihood and a standard Normal prior, averaged over the batch.
    """

    def __init__(self, batch_size: int, encode, decode, modules, example_shape, seed: int = 0,
                 device: str = "cpu"):
        self.batch_size = batch_size
        self.device = torch.device(device)
        for m in modules:
            m.to(self.device)
        self.encode, self.decode = encode, decode
        self.example_shape = tuple(example_shape)
        self.params = [p for m in modules for p in m.parameters()]
        # fused=True: one kernel for the whole update, ~20% faster on CPU at batch 128.
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3, betas=(0.9, 0.99), fused=True)
        self.shuffle_gen = torch.Generator(self.device).manual_seed(seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(seed + 1)
        self._source = None  # the numpy array whose tensor is cached
        self._data = None

    def loss(self, x: "torch.Tensor") -> "torch.Tensor":
        """Negative ELBO of a batch ``x``, averaged over the batch."""
        loc, raw = self.encode(x)
        scale = F.softplus(raw)
        eps = torch.randn(loc.shape, generator=self.noise_gen, device=self.device)
        logits = self.decode(loc + scale * eps)
        return (_bernoulli_nll(logits, x) + _gaussian_kl(loc, scale)).mean()

    def _step(self, x: "torch.Tensor") -> "torch.Tensor":
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        for p in self.params:  # NaN -> 0 only; infinities are left to the clipping
            torch.nan_to_num(p.grad, nan=0.0, posinf=float("inf"), neginf=float("-inf"), out=p.grad)
        nn.utils.clip_grad_norm_(self.params, max_norm=1.0)
        self.optimizer.step()
        return loss.detach()

    def run_epoch(self, images: np.ndarray) -> dict:
        """Trains one epoch over ``images``, shuffled, dropping the last partial batch.

        Args:
            images: float32 array of N examples in [0, 1]: images ``(N, H, W,
                C)`` (transposed to NCHW for the conv nets) or flat ``(N, 784)``
                for the MLP. The
                tensor made from it is cached, so passing the same array again
                costs no conversion.

        Returns:
            A dict with ``images`` (number of images trained on), ``seconds``
            (wall time of the epoch) and ``loss`` (mean batch loss).
        """
        if self._source is not images:
            self._source = images
            if images.ndim == 4 and len(self.example_shape) == 3:  # NHWC -> PyTorch's NCHW
                images = images.transpose(0, 3, 1, 2)
            data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
            self._data = data.reshape(len(images), *self.example_shape).contiguous().to(
                self.device)
        num_batches = self._data.shape[0] // self.batch_size
        n = num_batches * self.batch_size
        if num_batches == 0:
            raise ValueError(f"need at least {self.batch_size} images, got {self._data.shape[0]}")
        start = time.perf_counter()
        perm = torch.randperm(self._data.shape[0], generator=self.shuffle_gen,
                              device=self.device)[:n]
        batches = self._data[perm].view(num_batches, self.batch_size, *self.example_shape)
        total = torch.zeros((), device=self.device)
        for x in batches:
            total += self._step(x)
        mean_loss = total.item() / num_batches  # waits for the device
        return {"images": n, "seconds": time.perf_counter() - start, "loss": mean_loss}


def _mlp_vae(latent_dim: int, hidden: int):
    encoder = nn.Sequential(nn.Linear(INPUT_DIM, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
    decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, INPUT_DIM))
    return (lambda x: encoder(x).chunk(2, dim=-1)), decoder, (encoder, decoder), (INPUT_DIM,)


def _conv_vae(latent_dim: int, hidden: int, channels: tuple[int, int] = (32, 64)):
    """jvae's ``--net conv`` (``jvae.nets.ConvEncoder`` / ``ConvDecoder``) on 28x28x1, NCHW.

    Flax's ``SAME`` padding of a stride-2 3x3 convolution pads (0, 1); PyTorch's
    ``padding=1`` pads (1, 1) and drops the last row: same shapes, same work.
    """
    c1, c2 = channels
    encoder = nn.Sequential(
        nn.Conv2d(1, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(7 * 7 * c2, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
    decoder = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 7 * 7 * c2), nn.ReLU(),
        nn.Unflatten(1, (c2, 7, 7)),
        nn.ConvTranspose2d(c2, c2, 3, 2, 1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=1), nn.ReLU(),
        nn.Conv2d(c1, 1, 3, 1, 1))
    return (lambda x: encoder(x).chunk(2, dim=-1)), decoder, (encoder, decoder), (1, 28, 28)


def sd_autoencoder(latent_channels: int = 4):
    """``diffusers.AutoencoderKL`` in the Stable Diffusion layout (83,653,863 parameters).

    Block channels 128/256/512/512, two ResNet layers per block, GroupNorm 32,
    attention in the middle block, ``quant_conv`` and ``post_quant_conv``: the
    layout of jvae's packaged ``sd_vae`` architecture, parameter for parameter.
    """
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                         latent_channels=latent_channels, norm_num_groups=32)


def _sd_vae(image_shape: tuple[int, int, int]):
    vae = sd_autoencoder()
    # The encoder's moments split into loc and a raw scale (softplus), like
    # jvae's spec nets; diffusers' own exp(logvar / 2) costs the same.
    encode = lambda x: vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)  # noqa: E731
    decode = lambda z: vae.decoder(vae.post_quant_conv(z))  # noqa: E731
    h, w, c = image_shape
    return encode, decode, (vae,), (c, h, w)


MODELS = ("mlp", "conv", "sd_vae")


def make_runner(batch_size: int, latent_dim: int = 20, hidden: int = 400, seed: int = 0,
                num_threads: int | None = None, model: str = "mlp",
                image_shape: tuple[int, int, int] = (64, 64, 3), device: str | None = None):
    """Builds a PyTorch VAE trainer for epoch-level timing.

    Args:
        batch_size: Examples per optimizer step.
        latent_dim: Size of the latent space (``mlp`` and ``conv``).
        hidden: Width of the hidden layers (``mlp``; ``conv`` uses its Dense width 256).
        seed: Seed for initialization, shuffling and reparameterization noise.
        num_threads: Intra-op CPU threads; defaults to ``os.cpu_count()``.
        model: ``mlp`` (784-hidden-latent), ``conv`` (jvae's ``--net conv``) or
            ``sd_vae`` (:func:`sd_autoencoder`, needs ``diffusers``).
        image_shape: ``(H, W, C)`` of the ``sd_vae`` inputs.
        device: ``"cpu"`` or ``"cuda"``; None picks CUDA when PyTorch sees a GPU.

    Returns:
        A `TorchVAERunner`, whose ``run_epoch(images)`` trains one epoch.

    Raises:
        RuntimeError: If PyTorch (or, for ``sd_vae``, diffusers) is not installed.
    """
    if not available():
        raise RuntimeError("PyTorch is not installed")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    if model == "mlp":
        parts = _mlp_vae(latent_dim, hidden)
    elif model == "conv":
        parts = _conv_vae(latent_dim, 256)
    else:
        if not diffusers_available():
            raise RuntimeError("the sd_vae reference needs diffusers: pip install diffusers")
        parts = _sd_vae(tuple(image_shape))
    device = device or default_device()
    return TorchVAERunner(batch_size, *parts, seed=seed, device=device)


def default_device() -> str:
    """``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``."""
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def diffusers_available() -> bool:
    """Tells whether ``diffusers`` (the SD-style reference) can be imported."""
    if torch is None:
        return False
    try:
        import diffusers  # noqa: F401
    except (ImportError, OSError):  # pragma: no cover - depends on the environment
        return False
    return True


def load_mnist_images(data_dir: str | os.PathLike, split: str = "train") -> np.ndarray:
    """Reads gzipped IDX images as float32 of shape (N, 784) scaled to [0, 1]."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"not an IDX image file (magic {magic})")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16, count=count * rows * cols)
    return pixels.reshape(count, rows * cols).astype(np.float32) / 255.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="mlp", choices=MODELS[:2])
    args = parser.parse_args(argv)

    images = load_mnist_images(args.data_dir)
    runner = make_runner(args.batch_size, seed=args.seed, num_threads=args.threads,
                         model=args.model)
    rates = []
    for epoch in range(1, args.epochs + 1):
        stats = runner.run_epoch(images)
        rates.append(stats["images"] / stats["seconds"])
        row = {"impl": "pytorch", "epoch": epoch, "batch_size": args.batch_size,
               "images_per_sec": round(rates[-1], 1), "loss": round(stats["loss"], 3)}
        print(json.dumps(row), flush=True)
    if len(rates) > 1:
        print(json.dumps({"impl": "pytorch", "batch_size": args.batch_size,
                          "median_images_per_sec_after_first": round(statistics.median(rates[1:]), 1)}))


if __name__ == "__main__":
    main()
