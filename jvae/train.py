"""Train a VAE from the command line: ``python -m jvae.train --dataset=mnist``.

The CLI parses flags into a :class:`~jvae.config.Config` and calls
:func:`train_and_evaluate`; everything it does is importable. A run's working
directory holds::

    config.json        the settings the run was started with
    metrics.jsonl      one JSON object per evaluation
    images/            samples_epochNNN.png and reconstructions_epochNNN.png
    checkpoints/       orbax checkpoints of the last few epochs

Running again with the same ``--workdir`` resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jvae.checkpoint import Checkpointer
from jvae.config import (ALIASES, RESUMABLE_CHANGES, Config, ConfigError, config_to_dict,
                         load_config_file, make_config)
from jvae.data import (DataError, batches, check_data_info, data_options, load_splits, num_batches,
                       static_binarize, to_float, write_data_info)
from jvae.generate import make_reconstructor, make_sampler
from jvae.images import save_image_grid
from jvae.likelihoods import likelihood_by_name
from jvae.model import VAE, make_vae
from jvae.nets import make_nets
from jvae.sequence import make_rnn_nets
from jvae.spec_nets import make_spec_nets
from jvae import zoo
from jvae.objectives import Objective
from jvae.epoch import (binarize_key, chunk_length, device_loop_is_fast, epoch_order,
                        make_train_epoch, put_dataset)
from jvae.parallel import batch_sharding, data_mesh, replicate, replicated_sharding
from jvae.precision import mixed_precision
from jvae.train_state import create_train_state, make_eval_step, make_optimizer, make_train_step

__all__ = ["build_vae", "build_objective", "load_data", "evaluate", "train_and_evaluate",
           "parse_args", "main"]


def build_vae(cfg: Config, data_shape: tuple[int, ...]) -> VAE:
    """The model a config describes, for data of per-example shape ``data_shape``."""
    posterior = zoo.posterior_from_config(cfg)
    likelihood = likelihood_by_name(cfg.likelihood, **_likelihood_kwargs(cfg))
    latent_shape = zoo.latent_shape_from_config(cfg)
    if cfg.net in ("spec", "rnn"):
        encoder, decoder, latent_shape = _config_nets(cfg, posterior, likelihood, latent_shape,
                                                      tuple(data_shape))
    else:
        encoder, decoder = make_nets(cfg.net, posterior=posterior, likelihood=likelihood,
                                     latent_shape=latent_shape, data_shape=data_shape,
                                     activation=cfg.activation, hidden=cfg.hidden)
    return mixed_precision(make_vae(encoder, decoder, posterior, likelihood, latent_shape),
                           cfg.compute_dtype)


def _config_nets(cfg: Config, posterior, likelihood, latent_shape, data_shape):
    """Spec or recurrent nets; a spec's latent shape may come from its encoder."""
    try:
        if cfg.net == "spec":
            return make_spec_nets(cfg.encoder_spec, cfg.decoder_spec, posterior=posterior,
                                  likelihood=likelihood, data_shape=data_shape,
                                  latent_shape=latent_shape)
        encoder, decoder = make_rnn_nets(posterior=posterior, likelihood=likelihood,
                                         latent_shape=latent_shape, data_shape=data_shape,
                                         cell=cfg.rnn_cell, hidden=cfg.rnn_hidden,
                                         mode=cfg.decoder_mode)
        return encoder, decoder, latent_shape
    except ValueError as e:  # SpecError included: bad shapes are config mistakes.
        raise ConfigError(str(e)) from None


def _likelihood_kwargs(cfg: Config) -> dict[str, Any]:
    if cfg.likelihood == "gaussian":
        return {"scale": cfg.gaussian_scale}
    if cfg.likelihood == "logistic_mixture":
        return {"num_components": cfg.logistic_components}
    return {}


def build_objective(cfg: Config, vae: VAE) -> Objective:
    """The training objective a config describes (its ``model`` family, see :mod:`jvae.zoo`)."""
    return zoo.objective_from_config(cfg, vae)


def load_data(cfg: Config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Loads train and test splits as float32 images in [0, 1] plus labels.

    Static binarization is applied here, once, with seeds derived from
    ``cfg.seed``; under dynamic binarization the test split is binarized once
    (a fixed evaluation set) and training batches are resampled every batch.
    Audio stays float32 in [-1, 1] (:mod:`jvae.datasets.audio`).
    """
    return load_data_with_info(cfg)[:2]


def load_data_with_info(cfg: Config):
    """:func:`load_data` plus the data's identity (``modality``, ``classes``, folder settings)."""
    raw_train, raw_test, info = load_splits(cfg.dataset, data_dir=cfg.data_dir,
                                            tfds_data_dir=cfg.tfds_data_dir, **data_options(cfg))
    if info["modality"] == "audio" and cfg.likelihood in ("bernoulli", "logistic_mixture"):
        raise ConfigError(f"audio samples lie in [-1, 1]; likelihood={cfg.likelihood} needs "
                          "[0, 1] data: use --likelihood gaussian or gaussian_learned")
    splits = []
    for i, raw in enumerate((raw_train, raw_test)):
        if raw["image"].dtype != np.uint8:  # audio
            splits.append({"image": raw["image"], "label": raw["label"]})
            continue
        images = to_float(raw["image"])
        if cfg.binarize == "static" or (cfg.binarize == "dynamic" and i == 1):
            images = static_binarize(images, seed=cfg.seed * 2 + i)
        splits.append({"image": images, "label": raw["label"]})
    if cfg.model == "cvae":  # conditioned on one-hot labels, batch entry zoo.COND_KEY
        num_classes = int(max(s["label"].max() for s in splits)) + 1
        splits = [zoo.add_condition(s, num_classes) for s in splits]
    return splits[0], splits[1], info


def _accumulate(total, new):
    """Adds a dict of device scalars to a running total (None at the start), on device."""
    return new if total is None else jax.tree.map(jnp.add, total, new)


def evaluate(eval_step, params, data: dict[str, np.ndarray], batch_size: int, key: jax.Array,
             mesh, loss_state: Any = ()) -> dict[str, float]:
    """Means of the objective's terms over a whole split (every example once).

    Args:
      eval_step: from :func:`~jvae.train_state.make_eval_step`.
      params: model parameters.
      data: the split, float images.
      batch_size: evaluation batch size; the last batch is padded and masked.
      key: PRNG key; batch ``i`` uses ``fold_in(key, i)``.
      mesh: device mesh.
      loss_state: the objective's state.

    Returns:
      ``{term: mean}`` in nats per example.
    """
    totals: dict[str, jax.Array] | None = None
    for i, batch in enumerate(batches(data, batch_size, shuffle=False, drop_remainder=False,
                                      mesh=mesh)):
        sums = eval_step(params, batch, jax.random.fold_in(key, i), loss_state)
        totals = _accumulate(totals, sums)
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {k: float(v) / count for k, v in totals.items()}


def _check_resumable(workdir: Path, cfg: Config) -> None:
    """Refuses to resume a run whose saved settings differ in a way that matters."""
    path = workdir / "config.json"
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{path} is corrupt; move it away to resume with the current flags") from None
    current = config_to_dict(cfg)
    # A setting added after the run was saved took its default in that run.
    saved = {**config_to_dict(Config()), **saved}
    diffs = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in current.items()
             if k not in RESUMABLE_CHANGES and saved.get(k) != v]
    if diffs:
        raise ConfigError(f"workdir {workdir} holds a run with other settings ({'; '.join(diffs)}); "
                          "use a new --workdir or the saved settings")


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drops rows written after the checkpoint we resume from (a crash between the two)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [r for r in rows if json.loads(r).get("epoch", 0) <= last_epoch]
    if len(keep) != len(rows):
        path.write_text("".join(r + "\n" for r in keep))


def train_and_evaluate(cfg: Config, workdir: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Trains, evaluates after every epoch, writes metrics, images and checkpoints.

    Args:
      cfg: the run's settings.
      workdir: output directory; an existing run there is resumed.
      quiet: no progress bar or per-epoch lines.

    Returns:
      The last evaluation row (as written to ``metrics.jsonl``).
    """
    workdir = Path(workdir)
    train, test, data_info = load_data_with_info(cfg)
    check_data_info(workdir, data_info)
    mesh = data_mesh(cfg.num_devices or None)
    for name, size in (("batch_size", cfg.batch_size), ("eval_batch_size", cfg.eval_batch_size)):
        if size % mesh.size:
            raise ConfigError(f"{name}={size} is not divisible by the {mesh.size} devices; "
                              f"use a multiple of {mesh.size} or --num-devices")
    if cfg.batch_size > len(train["image"]):
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(train['image'])} "
                          "training examples")
    # Built before anything is written, so a spec that does not fit the data
    # fails without leaving a workdir behind.
    data_shape = train["image"].shape[1:]
    vae = build_vae(cfg, data_shape)
    _check_resumable(workdir, cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "images").mkdir(exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    write_data_info(workdir, data_info)

    objective = build_objective(cfg, vae)
    optimizer = make_optimizer(cfg.lr)
    init_key, eval_key, sample_key = jax.random.split(jax.random.key(cfg.seed), 3)
    example = {k: v[:cfg.batch_size] for k, v in train.items()}
    cond_key = zoo.cond_key_from_config(cfg)
    state = replicate(create_train_state(vae, objective, optimizer, init_key, example,
                                         cond_key=cond_key), mesh)

    metrics_path = workdir / "metrics.jsonl"
    start_epoch, wall_total, last_row = 0, 0.0, {}
    with Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints) as ckpt:
        if ckpt.latest_step() is not None:
            state, meta = ckpt.restore(state, mesh=mesh)
            start_epoch, wall_total = int(meta["epoch"]), float(meta.get("wall_s", 0.0))
            last_row = meta.get("last_row", {})
            _truncate_metrics(metrics_path, start_epoch)
            if not quiet:
                print(f"resumed from epoch {start_epoch} (step {int(state.step)}) in {workdir}",
                      flush=True)
        if start_epoch >= cfg.epochs:
            if not quiet:
                print(f"already trained for {start_epoch} epochs (--epochs {cfg.epochs}); "
                      "nothing to do", flush=True)
            return last_row

        steps_per_epoch = num_batches(len(train["image"]), cfg.batch_size, True)
        on_device = cfg.data_placement == "device" or (
            cfg.data_placement == "auto" and device_loop_is_fast(
                objective, optimizer, state, example))
        # Chunks of an epoch let a progress bar move; without one, one call per epoch.
        chunk = (chunk_length(steps_per_epoch) if not quiet and sys.stderr.isatty()
                 else steps_per_epoch)
        train_data = put_dataset(train, mesh) if on_device else None
        t0 = time.perf_counter()
        # Compiled ahead of time: one compile per run, and a shape change
        # would raise instead of silently recompiling.
        if on_device:
            train_step = _compile_device_epoch(cfg, objective, optimizer, mesh, state,
                                               train_data, chunk)
        else:
            batch_spec = {k: jax.ShapeDtypeStruct((cfg.batch_size, *v.shape[1:]), v.dtype,
                                                  sharding=batch_sharding(mesh))
                          for k, v in {**example, "mask": np.ones(1, np.float32)}.items()}
            train_step = make_train_step(objective, optimizer, mesh=mesh).lower(
                state, batch_spec).compile()
        compile_s = time.perf_counter() - t0
        eval_step = make_eval_step(objective, mesh=mesh)
        sample_cond = _sample_condition(test, cond_key)
        audio = data_info["modality"] == "audio"
        if audio and sample_cond is not None:  # one clip per class, at most four
            sample_cond = sample_cond[::8][:_AUDIO_CLIPS]
        num_samples = _AUDIO_CLIPS if audio else cfg.num_images
        sampler = make_sampler(vae, num_samples if sample_cond is None else len(sample_cond))
        reconstruct = make_reconstructor(vae)

        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", disable=quiet or None, leave=False, file=sys.stderr)
            if on_device:
                state, train_sums = _device_epoch(cfg, train_step, state, train_data, mesh,
                                                  epoch, steps_per_epoch, chunk, bar, t0)
            else:
                state, train_sums = _host_epoch(cfg, train_step, state, train, mesh, epoch,
                                                steps_per_epoch, bar, t0)
            jax.block_until_ready(state)
            train_s = time.perf_counter() - t0
            bar.close()
            wall_total += train_s

            scores = evaluate(eval_step, state.params, test, cfg.eval_batch_size, eval_key, mesh,
                              state.loss_state)
            train_means = {f"train_{k}": float(v) / steps_per_epoch
                           for k, v in jax.device_get(train_sums).items()}
            # An autoencoder has no KL, hence no neg_elbo: those fields are null.
            row = {"epoch": epoch + 1, "step": int(state.step), "split": "test",
                   "neg_elbo": scores.get("neg_elbo"), "recon": scores["recon"],
                   "kl": scores.get("kl"),
                   "images_per_sec": steps_per_epoch * cfg.batch_size / train_s,
                   "wall_s": wall_total, "epoch_s": train_s, "compile_s": compile_s,
                   "data_placement": "device" if on_device else "host",
                   **{k: v for k, v in scores.items() if k not in ("neg_elbo", "recon", "kl")},
                   **train_means}
            if not math.isfinite(scores["loss"]):
                raise FloatingPointError(f"test loss is {scores['loss']} at epoch {epoch + 1}; "
                                         "lower --lr or check the data range")
            ckpt.save(epoch + 1, state, {"epoch": epoch + 1, "wall_s": wall_total,
                                         "last_row": row, "config": config_to_dict(cfg)})
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if audio:
                _save_audio(workdir, epoch + 1, sampler, reconstruct, state.params, test,
                            sample_key, data_info["sample_rate"], cond_key, sample_cond)
            else:
                _save_images(workdir / "images", epoch + 1, sampler, reconstruct, state.params,
                             test, sample_key, cfg.num_images, cond_key, sample_cond)
            last_row = row
            if not quiet:
                bound = (f"-ELBO {row['neg_elbo']:.2f} nats  " if row["neg_elbo"] is not None
                         else "")
                kl = f"KL {row['kl']:.2f}  " if row["kl"] is not None else ""
                print(f"epoch {epoch + 1}/{cfg.epochs}  test {bound}recon {row['recon']:.2f}  "
                      f"{kl}{row['images_per_sec']:,.0f} img/s", flush=True)
    return last_row


def _compile_device_epoch(cfg: Config, objective, optimizer, mesh, state, train_data,
                          chunk: int):
    """AOT-compiles :func:`~jvae.epoch.make_train_epoch` for chunks of ``chunk`` steps."""
    rep = replicated_sharding(mesh)
    order = jax.ShapeDtypeStruct((chunk, cfg.batch_size), jnp.int32, sharding=rep)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    start = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    run = make_train_epoch(objective, optimizer, mesh=mesh,
                           dynamic_binarize=cfg.binarize == "dynamic")
    return run.lower(state, train_data, order, key, start).compile()


def _device_epoch(cfg: Config, run, state, train_data, mesh, epoch: int, steps: int,
                  chunk: int, bar, t0):
    """One epoch on device: ``steps / chunk`` dispatches (one without a progress bar)."""
    rep = replicated_sharding(mesh)
    order = epoch_order(len(train_data["image"]), cfg.batch_size, seed=cfg.seed, epoch=epoch)
    key = jax.device_put(binarize_key(cfg.seed, epoch), rep)
    total = None
    for start in range(0, steps, chunk):
        stop = start + chunk
        state, sums = run(state, train_data, jax.device_put(order[start:stop], rep), key,
                          np.int32(start))
        total = _accumulate(total, sums)
        if not bar.disable:  # reading the loss waits for the chunk: the bar tells the truth
            loss = float(sums["loss"]) / (stop - start)
            bar.update(stop - start)
            rate = stop * cfg.batch_size / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss:.2f}", img_s=f"{rate:,.0f}")
    return state, total


def _host_epoch(cfg: Config, train_step, state, train, mesh, epoch: int, steps: int, bar, t0):
    """One epoch of host batches, one dispatch per step."""
    total = None
    for i, batch in enumerate(batches(train, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                      dynamic_binarize=cfg.binarize == "dynamic", mesh=mesh)):
        state, metrics = train_step(state, batch)
        total = _accumulate(total, metrics)
        bar.update(1)
        if not bar.disable and (i % 20 == 19 or i == steps - 1):
            rate = (i + 1) * cfg.batch_size / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{float(metrics['loss']):.2f}", img_s=f"{rate:,.0f}")
    return state, total


def _sample_condition(test, cond_key: str | None) -> np.ndarray | None:
    """For a conditional model: one row of 8 samples per class (one-hot rows)."""
    if cond_key is None:
        return None
    num_classes = test[cond_key].shape[-1]
    return np.repeat(np.eye(num_classes, dtype=np.float32), 8, axis=0)


def _save_images(folder: Path, epoch: int, sampler, reconstruct, params, test, key, n,
                 cond_key: str | None = None, sample_cond: np.ndarray | None = None) -> None:
    samples = np.asarray(sampler(params, key, sample_cond))
    x = test["image"][: n // 2]
    cond = None if cond_key is None else jnp.asarray(test[cond_key][: n // 2])
    recon = np.asarray(reconstruct(params, jnp.asarray(x), cond))
    # Originals and reconstructions in alternating rows of 8.
    pairs = np.concatenate([np.stack([x[i:i + 8], recon[i:i + 8]]) for i in range(0, len(x), 8)
                            ]).reshape(-1, *x.shape[1:]) if len(x) % 8 == 0 else np.concatenate(
        [x, recon])
    save_image_grid(samples, folder / f"samples_epoch{epoch:03d}.png", ncol=8)
    save_image_grid(pairs, folder / f"reconstructions_epoch{epoch:03d}.png", ncol=8)


# Clips in each epoch's audio files.
_AUDIO_CLIPS = 4


def _save_audio(workdir: Path, epoch: int, sampler, reconstruct, params, test, key, rate: int,
                cond_key: str | None = None, sample_cond: np.ndarray | None = None) -> None:
    """``audio/samples_epochNNN.wav``, ``reconstructions_epochNNN.wav`` (originals and
    reconstructions alternating) and a PNG of their waveforms; clips joined by short silences."""
    from jvae.datasets.audio import join_clips, save_waveforms, write_wav
    folder = workdir / "audio"
    n = _AUDIO_CLIPS
    samples = np.asarray(sampler(params, key, sample_cond))[..., 0]
    x = test["image"][:n]
    cond = None if cond_key is None else jnp.asarray(test[cond_key][:n])
    recon = np.asarray(reconstruct(params, jnp.asarray(x), cond))[..., 0]
    pairs = [c for pair in zip(x[..., 0], recon) for c in pair]
    write_wav(folder / f"samples_epoch{epoch:03d}.wav", join_clips(samples, rate), rate)
    write_wav(folder / f"reconstructions_epoch{epoch:03d}.wav", join_clips(pairs, rate), rate)
    save_waveforms(folder / f"waveforms_epoch{epoch:03d}.png", [*samples, *pairs])


class _ArgumentParser(argparse.ArgumentParser):
    """Reports errors as one line and exit code 2, with no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="python -m jvae.train", description=__doc__.split("\n\n")[0],
                        argument_default=argparse.SUPPRESS, allow_abbrev=False)
    p.add_argument("--config", help="JSON or TOML file of settings; flags override it")
    p.add_argument("--workdir",
                   help="output directory; an existing run there is resumed (default runs/DATASET)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if f.type in (bool, "bool"):  # --strict, --strict false
            p.add_argument(flag, dest=f.name, metavar="BOOL", nargs="?", const="true",
                           help=f"(default {str(default).lower()})")
            continue
        p.add_argument(flag, dest=f.name, metavar=f.name.upper(),
                       help=f"(default {shown})")
    p.add_argument("--no-cache", dest="cache", action="store_const", const="false",
                   help="decode a folder's images every run instead of caching them")
    for alias, name in ALIASES.items():
        p.add_argument("--" + alias.replace("_", "-"), dest=name, metavar=name.upper(),
                       help=f"same as --{name.replace('_', '-')}")
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, str]:
    """Parses flags into ``(config, workdir)``; raises ConfigError on bad values."""
    args = vars(_parser().parse_args(argv))
    flag_workdir = args.pop("workdir", None)
    file_values = load_config_file(args.pop("config")) if "config" in args else {}
    file_workdir = file_values.pop("workdir", None)
    cfg = make_config(file_values, args)
    return cfg, flag_workdir or file_workdir or default_workdir(cfg)


def default_workdir(cfg: Config) -> str:
    """``runs/<dataset>``, or ``runs/<folder name>`` for a ``--data-source`` folder."""
    source = data_options(cfg).get("data_source")
    return f"runs/{Path(source).resolve().name if source else cfg.dataset}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    import warnings
    from jvae.datasets.images import DataWarning

    def one_line(message, category, *args, **kwargs):
        print(f"python -m jvae.train: warning: {message}", file=sys.stderr)

    try:
        cfg, workdir = parse_args(argv)
        with warnings.catch_warnings():
            # Skipped files: one line, not a source excerpt.
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = one_line
            train_and_evaluate(cfg, workdir)
    except (ConfigError, DataError) as e:
        print(f"python -m jvae.train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the newest finished checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
