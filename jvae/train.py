"""Train a VAE: ``jvae train --dataset=mnist`` (also ``python -m jvae.train``).

The command parses flags into a :class:`~jvae.config.Config` and calls
:func:`train_and_evaluate`; everything it does is importable. A run's working
directory holds::

    config.json        the settings the run was started with
    metrics.jsonl      one JSON object per evaluation
    images/            samples_epochNNN.png and reconstructions_epochNNN.png
    checkpoints/       orbax checkpoints of the last few epochs

Running again with the same ``--workdir`` resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jvae import flags
from jvae.base import ConfigError, JvaeError
from jvae.checkpoint import Checkpointer
from jvae.config import Config, config_to_dict
from jvae.experiment import DataSpec, build, init_state
from jvae.generate import make_reconstructor, make_sampler
from jvae.images import save_image_grid
from jvae.parallel import data_mesh, replicate
from jvae.program import compile_program, evaluate_split, resolve_placement, run_epoch
from jvae.runs import check_resumable, load_data
from jvae.train_state import make_eval_step

__all__ = ["Hook", "train_and_evaluate", "MODE", "main"]


class Hook(Protocol):
    """Observes a training run; every method is optional.

    ``on_start(info)`` once, with the run's settings and devices;
    ``on_chunk(step, metrics)`` after each chunk of steps with the chunk's
    metric means (host floats); ``on_epoch(row, params)`` after each
    evaluation, with the ``metrics.jsonl`` row and a copy of the parameters
    (never a buffer a later donated step frees); ``on_end()`` once.
    """


class Divergence(JvaeError):
    """The test loss is not finite: the run stops without a checkpoint of that epoch."""

    exit_code = 3


def _call(hooks: Sequence[Any], name: str, *args) -> None:
    for hook in hooks:
        method = getattr(hook, name, None)
        if method is not None:
            method(*args)


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drops rows written after the checkpoint we resume from (a crash between the two)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [r for r in rows if json.loads(r).get("epoch", 0) <= last_epoch]
    if len(keep) != len(rows):
        path.write_text("".join(r + "\n" for r in keep))


def train_and_evaluate(cfg: Config, workdir: str | Path, *, quiet: bool = False,
                       hooks: Sequence[Any] = ()) -> dict[str, Any]:
    """Trains, evaluates after every epoch, writes metrics, images and checkpoints.

    Args:
      cfg: the run's settings.
      workdir: output directory; an existing run there is resumed.
      quiet: no progress bar or per-epoch lines.
      hooks: objects observing the run (see :class:`Hook`).

    Returns:
      The last evaluation row (as written to ``metrics.jsonl``).

    Raises:
      ConfigError, DataError: settings or data that cannot be used; raised
        before anything in ``workdir`` is written.
    """
    workdir = Path(workdir)
    train, test = load_data(cfg)
    mesh = data_mesh(cfg.num_devices or None)
    for name, size in (("batch_size", cfg.batch_size), ("eval_batch_size", cfg.eval_batch_size)):
        if size % mesh.size:
            raise ConfigError(f"{name}={size} is not divisible by the {mesh.size} devices; "
                              f"use a multiple of {mesh.size} or --num-devices")
    if cfg.batch_size > len(train["image"]):
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(train['image'])} "
                          "training examples")
    # Built before anything is written, so settings that do not fit the data
    # fail without leaving a workdir behind.
    experiment = build(cfg, DataSpec.of(train))
    check_resumable(workdir, cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "images").mkdir(exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")

    init_key, eval_key, sample_key = jax.random.split(jax.random.key(cfg.seed), 3)
    example = {k: v[:cfg.batch_size] for k, v in train.items() if k != "label"}
    state = replicate(init_state(experiment, init_key, example), mesh)

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

        placement = resolve_placement(cfg.data_placement, experiment, state, example)
        # Chunks of an epoch let a progress bar (or a hook) move; else one call per epoch.
        live = bool(hooks) or (not quiet and sys.stderr.isatty())
        program = compile_program(experiment, mesh, state, train, placement=placement,
                                  batch_size=cfg.batch_size, seed=cfg.seed,
                                  dynamic_binarize=cfg.binarize == "dynamic",
                                  chunks_per_epoch=20 if live else None)
        eval_step = make_eval_step(experiment.objective, mesh=mesh)
        sample_cond = _sample_condition(test, experiment.cond_key)
        sampler = make_sampler(experiment.vae,
                               cfg.num_images if sample_cond is None else len(sample_cond))
        reconstruct = make_reconstructor(experiment.vae)
        _call(hooks, "on_start", {"config": config_to_dict(cfg), "workdir": str(workdir),
                                  "devices": mesh.size, "placement": placement,
                                  "start_epoch": start_epoch, "step": int(state.step)})

        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            bar = tqdm(total=program.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", disable=quiet or None, leave=False, file=sys.stderr)
            progress = _Progress(bar, hooks, cfg.batch_size, program.steps_per_epoch * epoch,
                                 t0)
            state, train_sums = run_epoch(program, state, epoch,
                                          on_chunk=progress if live else None)
            jax.block_until_ready(state)
            train_s = time.perf_counter() - t0
            bar.close()
            wall_total += train_s

            scores = evaluate_split(eval_step, state.params, test, cfg.eval_batch_size,
                                    eval_key, mesh, state.loss_state)
            train_means = {f"train_{k}": float(v) / program.steps_per_epoch
                           for k, v in jax.device_get(train_sums).items()}
            # An autoencoder has no KL, hence no neg_elbo: those fields are null.
            row = {"epoch": epoch + 1, "step": int(state.step), "split": "test",
                   "neg_elbo": scores.get("neg_elbo"), "recon": scores["recon"],
                   "kl": scores.get("kl"),
                   "images_per_sec": program.steps_per_epoch * cfg.batch_size / train_s,
                   "wall_s": wall_total, "epoch_s": train_s, "compile_s": program.compile_s,
                   "data_placement": placement,
                   **{k: v for k, v in scores.items() if k not in ("neg_elbo", "recon", "kl")},
                   **train_means}
            if not math.isfinite(scores["loss"]):
                last = ckpt.latest_step()
                raise Divergence(
                    f"test loss is {scores['loss']} at epoch {epoch + 1}; no checkpoint was "
                    f"written for it (last good: {'none' if last is None else f'epoch {last}'}"
                    f" in {workdir / 'checkpoints'}); lower --lr or check the data range")
            ckpt.save(epoch + 1, state, {"epoch": epoch + 1, "wall_s": wall_total,
                                         "last_row": row, "config": config_to_dict(cfg)})
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            _save_images(workdir / "images", epoch + 1, sampler, reconstruct, state.params,
                         test, sample_key, cfg.num_images, experiment.cond_key, sample_cond)
            last_row = row
            if hooks:
                _call(hooks, "on_epoch", row, jax.tree.map(jnp.copy, state.params))
            if not quiet:
                bound = (f"-ELBO {row['neg_elbo']:.2f} nats  " if row["neg_elbo"] is not None
                         else "")
                kl = f"KL {row['kl']:.2f}  " if row["kl"] is not None else ""
                print(f"epoch {epoch + 1}/{cfg.epochs}  test {bound}recon {row['recon']:.2f}  "
                      f"{kl}{row['images_per_sec']:,.0f} img/s", flush=True)
    _call(hooks, "on_end")
    return last_row


class _Progress:
    """The per-chunk callback: moves the progress bar and informs the hooks."""

    def __init__(self, bar, hooks, batch_size: int, step0: int, t0: float):
        self.bar, self.hooks, self.batch_size = bar, hooks, batch_size
        self.step0, self.t0, self.done = step0, t0, 0

    def __call__(self, done: int, sums: dict, state) -> None:
        steps = done - self.done
        self.done = done
        if self.bar.disable and not self.hooks:
            return
        # Reading the loss waits for the chunk: the bar tells the truth.
        means = {k: float(v) / steps for k, v in jax.device_get(sums).items()}
        rate = done * self.batch_size / (time.perf_counter() - self.t0)
        self.bar.update(steps)
        self.bar.set_postfix(loss=f"{means['loss']:.2f}", img_s=f"{rate:,.0f}")
        _call(self.hooks, "on_chunk", self.step0 + done, {**means, "images_per_sec": rate})


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


def _add_arguments(parser) -> None:
    flags.add_workdir_flag(parser, required=False,
                           help="output directory; an existing run there is resumed "
                                "(default: runs/DATASET)")
    flags.add_config_flags(parser)


def _run(args) -> int:
    cfg, workdir = flags.config_from_args(args)
    train_and_evaluate(cfg, workdir or f"runs/{cfg.dataset}")
    return 0


MODE = flags.Mode("train", "Train a VAE, evaluating after every epoch; resumes a run "
                  "found in --workdir.", _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jvae.train``: the train mode; returns the exit status."""
    return flags.run_mode(MODE, argv, prog="python -m jvae.train")


if __name__ == "__main__":
    sys.exit(main())
