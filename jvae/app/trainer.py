"""A training run in a working directory: :func:`train_and_evaluate`.

The ``jvae train`` command (:mod:`jvae.app.modes.train`) parses flags into a
:class:`~jvae.app.config.Config` and calls :func:`train_and_evaluate`; what
the working directory holds and the exit statuses are listed in :mod:`jvae.train`.
The run is a sequence of named steps: take the workdir (:func:`_guarded`),
restore the newest checkpoint that reads back (:func:`_restore`), compile the
train program (:func:`_compile`), then per epoch train, evaluate, write the
row (:func:`_epoch_row`), the checkpoint and the outputs (:class:`_EpochOutputs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jvae.app.checkpoint import Checkpointer, truncate_metrics
from jvae.app.config import Config, config_to_dict
from jvae.app.hooks import call_hooks
from jvae.app.lock import LockError, WorkdirLock
from jvae.app.outputs import AUDIO_CLIPS, sample_condition, save_epoch_audio, save_epoch_images
from jvae.app.run_guard import CheckpointSchedule, Divergence, RunFailed, SaveFailed, StopSignals
from jvae.app.runs import (
    check_data_info,
    check_num_devices,
    check_resumable,
    check_state_fits,
    hook_info,
    load_data_with_info,
    write_data_info,
)
from jvae.base import ConfigError
from jvae.devices import distributed
from jvae.devices.parallel import data_mesh, replicate
from jvae.inference import make_reconstructor, make_sampler
from jvae.metrics.quality import quality_evaluator
from jvae.training.defaults import model_defaults, run_defaults, with_defaults
from jvae.training.ema import averaged_params
from jvae.training.experiment import DataSpec, build, init_state
from jvae.training.optim import skip_counts
from jvae.training.program import accumulate, compile_program, evaluate_split, resolve_placement, run_epoch
from jvae.training.state import make_eval_step

__all__ = ["Stopped", "train_and_evaluate", "CHUNKS_PER_EPOCH"]


class Stopped(RunFailed):
    """SIGINT or SIGTERM: a checkpoint of the current step was saved; exit 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# Chunks per epoch: the granularity of progress, mid-epoch checkpoints and signal handling.
CHUNKS_PER_EPOCH = 20


def _check_position(meta: dict) -> str | None:
    """Why a checkpoint's metadata is unusable (None when it is fine)."""
    epoch, batch = meta.get("epoch"), meta.get("batch", 0)
    if not (isinstance(epoch, int) and isinstance(batch, int) and epoch >= 0 and batch >= 0):
        return f"its position (epoch {epoch!r}, batch {batch!r}) is malformed"
    return None


def _stream_position(meta: dict, epoch: int, batch: int, step: int, workdir: Path
                     ) -> dict | None:
    """A checkpoint's input-iterator position (saved when streaming), checked against the model's.

    Raises:
      ConfigError: the iterator was saved at another epoch, batch or step.
    """
    stream = meta.get("stream")
    if not stream:
        return None
    saved = (stream.get("epoch"), stream.get("batch"), stream.get("step"))
    if saved != (epoch, batch, step):
        def where(e, b, s):
            return f"step {s!r} (epoch {e + 1 if isinstance(e, int) else repr(e)}, batch {b!r})"
        raise ConfigError(
            f"the checkpoint in {workdir} holds the input iterator at {where(*saved)} but the "
            f"model at {where(epoch, batch, step)}; resume from an earlier checkpoint (move the "
            "newest aside) or use a new --workdir")
    return stream


def _prepare_workdir(workdir: Path, cfg: Config, data_info: dict) -> None:
    """Writes ``config.json`` and ``images/`` (process 0); an unwritable workdir is bad input."""
    try:
        (workdir / "images").mkdir(exist_ok=True)
        text = json.dumps(config_to_dict(cfg), indent=2) + "\n"
        path = workdir / "config.json"
        if not path.exists() or path.read_text(errors="replace") != text:
            tmp = workdir / "config.json.tmp"
            tmp.write_text(text)
            tmp.replace(path)
        write_data_info(workdir, data_info)
    except OSError as e:
        raise LockError(f"cannot write to workdir {workdir} ({e.strerror or e}); free some "
                        "space or choose a writable --workdir") from None


def train_and_evaluate(cfg: Config, workdir: str | Path, *, quiet: bool = False,
                       hooks: Sequence[Any] = ()) -> dict[str, Any]:
    """Trains, evaluates after every epoch, writes metrics, images and checkpoints.

    A checkpoint is written at every epoch's end and within epochs as
    ``cfg.checkpoint_every`` says; resuming from one continues at the next
    batch of the same epoch, so an interrupted run ends as an uninterrupted
    one would. A damaged newest checkpoint is moved aside and the next
    newest used (:meth:`~jvae.app.checkpoint.Checkpointer.restore_newest_valid`).
    SIGINT and SIGTERM save a checkpoint of the current step and raise
    :class:`Stopped`. One process at a time may train in a workdir
    (:class:`~jvae.app.lock.WorkdirLock`).

    Args:
      cfg: the run's settings.
      workdir: output directory; an existing run there is resumed.
      quiet: no progress bar or per-epoch lines.
      hooks: objects observing the run (see :class:`Hook`).

    Returns:
      The last evaluation row (as written to ``metrics.jsonl``).

    Raises:
      ConfigError, DataError, LockError, CheckpointError: settings, data or a
        workdir that cannot be used (exit status 2); raised before anything
        in ``workdir`` is written.
      Divergence: ``cfg.max_consecutive_skips`` non-finite steps in a row, or
        a non-finite test loss; no checkpoint is written for that epoch (exit 3).
      SaveFailed: a checkpoint or metrics write failed (exit 3).
      Stopped: a signal arrived; a checkpoint of the current step was saved.
    """
    with StopSignals() as signals, _ending(hooks):
        return _guarded(cfg, Path(workdir), quiet, hooks, signals)


@contextlib.contextmanager
def _ending(hooks: Sequence[Any]):
    """Calls the hooks' ``on_end`` however training stops (an error and Ctrl-C included)."""
    try:
        yield
    finally:
        if distributed.is_primary():
            call_hooks(hooks, "on_end")


def _stop_early(signals: StopSignals) -> None:
    """A signal before training began: nothing new to save, stop now."""
    if signals.received:
        raise Stopped(f"stopped by {signals.name} before training began; nothing new to "
                      "save; run the same command to resume", signals.exit_code)


def _guarded(cfg, workdir, quiet, hooks, signals) -> dict[str, Any]:
    """Checks settings and data, takes the workdir, then trains (see :func:`_train`)."""
    primary = distributed.is_primary()
    quiet = quiet or not primary
    hooks = hooks if primary else ()
    check_num_devices(cfg.num_devices)
    if cfg.data_source is None and os.environ.get("DATA_SOURCE"):
        # Saved in config.json, so other modes and a resumed run find the folder.
        cfg = dataclasses.replace(cfg, data_source=os.environ["DATA_SOURCE"])
    # A folder's training images stay on disk until the placement is known.
    train, test, data_info = load_data_with_info(cfg)
    check_data_info(workdir, data_info)
    mesh = data_mesh(cfg.num_devices or None)
    spec = DataSpec.of(train, data_info.get("sample_rate"))
    cfg = _follow_data(cfg, spec, data_info, len(train["image"]), mesh.size, quiet)
    for name, size in (("batch_size", cfg.batch_size), ("eval_batch_size", cfg.eval_batch_size)):
        if size % mesh.size:
            raise ConfigError(f"{name}={size} is not divisible by the {mesh.size} devices; "
                              f"use a multiple of {mesh.size} or --num-devices")
    # Built before anything is written, so settings that do not fit the data
    # fail without leaving a workdir behind.
    experiment = build(cfg, spec)
    check_state_fits(experiment, cfg.batch_size)
    check_resumable(workdir, cfg)
    _stop_early(signals)

    with contextlib.ExitStack() as stack:
        if primary:
            stack.enter_context(WorkdirLock(workdir))
        distributed.barrier("jvae_workdir_ready")

        def prepare():
            # Once the resume is accepted (_train): a checkpoint that cannot be used
            # leaves the run's config.json and data.json as they were.
            if primary:
                _prepare_workdir(workdir, cfg, data_info)
        return _train(cfg, workdir, experiment, train, test, data_info, mesh, quiet, hooks,
                      stack, signals, prepare)


def _follow_data(cfg: Config, spec: DataSpec, data_info: dict, num_train: int, devices: int,
                 quiet: bool) -> Config:
    """``cfg`` with its unset settings chosen from the data (:mod:`jvae.training.defaults`),
    each printed once; they are saved in ``config.json`` with the rest.

    Raises:
      ConfigError: fewer training examples than devices.
    """
    chosen = {**data_info.get("chosen", {}), **model_defaults(cfg, spec.shape, spec.sample_rate)}
    batch, notice = run_defaults(cfg, spec.shape, num_train, devices)
    if batch.get("batch_size", 1) < 1:
        raise ConfigError(f"the training split holds {num_train} examples, fewer than the "
                          f"{devices} devices; add data or use --num-devices {max(num_train, 1)}")
    chosen.update(batch)
    if not quiet:
        if notice:
            print(f"note: {notice}", flush=True)
        shown = {k: v for k, v in chosen.items() if not (notice and k == "batch_size")}
        if shown:
            def text(v):
                return ",".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(
                    v, float) else str(v)
            print("settings chosen for the data: "
                  + ", ".join(f"{k}={text(v)}" for k, v in shown.items()), flush=True)
    return with_defaults(cfg, chosen)


class _Resumed(NamedTuple):
    """Where a run starts: a fresh state, or a checkpoint's state and position."""

    state: Any
    meta: dict
    epoch: int = 0
    batch: int = 0
    wall_s: float = 0.0
    last_row: dict | None = None
    sums: dict | None = None


def _restore(workdir: Path, ckpt: Checkpointer, state, mesh, quiet: bool) -> _Resumed:
    """The newest checkpoint that reads back, else ``state``; ``metrics.jsonl`` is trimmed
    to the epochs the start covers (none for a fresh start)."""
    restored = ckpt.restore_newest_valid(state, mesh=mesh, validate=_check_position)
    if restored is None:
        # Rows without a checkpoint (its write failed after the row was appended) are
        # trained again from scratch: kept, they would appear twice.
        truncate_metrics(workdir / "metrics.jsonl", 0)
        return _Resumed(state, {})
    state, meta = restored
    start_epoch, start_batch = int(meta["epoch"]), int(meta.get("batch", 0))
    sums = {k: np.float32(v) for k, v in meta["sums"].items()} if meta.get("sums") else None
    truncate_metrics(workdir / "metrics.jsonl", start_epoch)
    if not quiet:
        where = f", batch {start_batch}" if start_batch else ""
        print(f"resumed from epoch {start_epoch}{where} (step {int(state.step)}) in "
              f"{workdir}", flush=True)
    return _Resumed(state, meta, start_epoch, start_batch, float(meta.get("wall_s", 0.0)),
                    meta.get("last_row", {}), sums)


def _compile(cfg, workdir: Path, experiment, mesh, start: _Resumed, train, example, stack):
    """The placement, the compiled train program and, when streaming, the reader's position."""
    state = start.state
    placement = resolve_placement(cfg.data_placement, experiment, state, example, train)
    resume = _stream_position(start.meta, start.epoch, start.batch, int(state.step), workdir)
    program = compile_program(experiment, mesh, state, train, placement=placement,
                              batch_size=cfg.batch_size, seed=cfg.seed,
                              dynamic_binarize=cfg.binarize == "dynamic",
                              chunks_per_epoch=CHUNKS_PER_EPOCH, workers=cfg.loader_workers,
                              prefetch=cfg.loader_prefetch)
    if program.feed is not None:  # stops its worker processes however the run ends
        stack.callback(program.feed.close)
    if start.batch > program.steps_per_epoch or (placement == "device"
                                                 and start.batch % program.chunk):
        raise ConfigError(
            f"the checkpoint in {workdir} stopped at batch {start.batch} of epoch "
            f"{start.epoch + 1}, which this run (an epoch of {program.steps_per_epoch} steps "
            f"in chunks of {program.chunk}) cannot continue; resume with the data and "
            "--data-placement it was saved with")
    return placement, program, resume


class _EpochOutputs:
    """What each epoch writes besides its metrics: sample and reconstruction images, or audio."""

    def __init__(self, cfg, workdir: Path, experiment, test, data_info: dict, key):
        self.cfg, self.workdir, self.experiment, self.test, self.key = (
            cfg, workdir, experiment, test, key)
        self.sample_rate = data_info.get("sample_rate")
        sample_cond = sample_condition(test, experiment.cond_key)
        self.audio = data_info["modality"] == "audio"
        if self.audio:  # a few clips; with labels, one per class
            sample_cond = None if sample_cond is None else sample_cond[::8][:AUDIO_CLIPS]
            self.sampler = make_sampler(experiment.vae,
                                        AUDIO_CLIPS if sample_cond is None else len(sample_cond))
        else:
            self.sampler = (make_sampler(experiment.vae, cfg.num_images) if sample_cond is None
                            else make_sampler(experiment.vae, len(sample_cond),
                                              repeats=sample_cond.shape[-1]))
        self.sample_cond = sample_cond
        self.reconstruct = make_reconstructor(experiment.vae)

    def write(self, epoch: int, params) -> None:
        cond_key = self.experiment.cond_key
        if self.audio:
            save_epoch_audio(self.workdir, epoch, self.sampler, self.reconstruct, params,
                             self.test, self.key, self.sample_rate, cond_key, self.sample_cond)
        else:
            save_epoch_images(self.workdir / "images", epoch, self.sampler, self.reconstruct,
                              params, self.test, self.key, self.cfg.num_images, cond_key,
                              self.sample_cond)


def _epoch_row(cfg, program, placement: str, epoch: int, step: int, scores: dict,
               train_sums: dict, steps_run: int, train_s: float, wall_s: float
               ) -> tuple[dict, int]:
    """The ``metrics.jsonl`` row of an epoch and its count of skipped steps."""
    skipped = int(round(float(train_sums.pop("skipped_steps", 0.0))))
    applied = max(program.steps_per_epoch - skipped, 1)
    train_means = {f"train_{k}": float(v) / applied for k, v in train_sums.items()}
    # An autoencoder has no KL, hence no neg_elbo: those fields are null.
    row = {"epoch": epoch + 1, "step": step, "split": "test",
           "neg_elbo": scores.get("neg_elbo"), "recon": scores["recon"],
           "kl": scores.get("kl"),
           "images_per_sec": steps_run * cfg.batch_size / train_s,
           "wall_s": wall_s, "epoch_s": train_s, "compile_s": program.compile_s,
           "data_placement": placement, "skipped_steps": skipped,
           **{k: v for k, v in scores.items() if k not in ("neg_elbo", "recon", "kl")},
           **train_means}
    return row, skipped


def _eval_batch(cfg: Config, test: dict, mesh) -> int:
    """The evaluation batch: at most the split, a multiple of the device count."""
    n = min(cfg.eval_batch_size, len(test["image"]))
    return max(mesh.size, -(-n // mesh.size) * mesh.size)


def _print_epoch(cfg, epoch: int, row: dict, skipped: int) -> None:
    bound = f"-ELBO {row['neg_elbo']:.2f} nats  " if row["neg_elbo"] is not None else ""
    kl = f"KL {row['kl']:.2f}  " if row["kl"] is not None else ""
    skips = f"  {skipped} steps skipped" if skipped else ""
    print(f"epoch {epoch + 1}/{cfg.epochs}  test {bound}recon {row['recon']:.2f}  "
          f"{kl}{row['images_per_sec']:,.0f} img/s{skips}", flush=True)


def _train(cfg, workdir, experiment, train, test, data_info, mesh, quiet, hooks, stack,
           signals, prepare) -> dict[str, Any]:
    """The loop of :func:`train_and_evaluate`, inside the workdir lock; ``prepare()`` writes
    the run's settings once its start (a fresh state or a usable checkpoint) is known."""
    primary = distributed.is_primary()
    init_key, eval_key, sample_key = jax.random.split(jax.random.key(cfg.seed), 3)
    example = {k: v[:cfg.batch_size] for k, v in train.items() if k != "label"}
    state = replicate(init_state(experiment, init_key, example, images=train["image"]), mesh)
    ckpt = stack.enter_context(Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints))
    start = _restore(workdir, ckpt, state, mesh, quiet)
    state, start_batch, sums, wall_total = start.state, start.batch, start.sums, start.wall_s
    last_row = start.last_row or {}
    if start.epoch >= cfg.epochs:
        if not quiet:
            print(f"already trained for {start.epoch} epochs (--epochs {cfg.epochs}); "
                  "nothing to do", flush=True)
        return last_row

    placement, program, resume = _compile(cfg, workdir, experiment, mesh, start, train, example,
                                          stack)
    prepare()
    eval_step = make_eval_step(experiment.objective, mesh=mesh)
    quality = quality_evaluator(experiment.vae, test, batch_size=_eval_batch(cfg, test, mesh),
                                mesh=mesh, cond_key=experiment.cond_key, images=cfg.quality_images,
                                fid_images=cfg.fid_images, key=jax.random.fold_in(eval_key, 1),
                                stats_dir=workdir / "fid")
    outputs = _EpochOutputs(cfg, workdir, experiment, test, data_info, sample_key)
    if hooks:
        call_hooks(hooks, "on_start", hook_info(
            cfg, workdir, experiment, test, devices=mesh.size, placement=placement,
            start_epoch=start.epoch, step=int(state.step),
            params=jax.tree.map(jnp.copy, distributed.local_copy(averaged_params(state))),
            steps_per_epoch=program.steps_per_epoch))
    saver = _Saver(ckpt, cfg, workdir)
    _stop_early(signals)
    schedule = CheckpointSchedule(cfg.checkpoint_every)
    schedule.saved(int(state.step))

    for epoch in range(start.epoch, cfg.epochs):
        t0 = time.perf_counter()
        bar = tqdm(total=program.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="step", disable=quiet or None, leave=False, file=sys.stderr,
                   initial=start_batch)
        guard = _Guard(cfg, program, saver, schedule, signals, epoch, start_batch, sums,
                       wall_total, t0,
                       _Progress(bar, hooks, cfg.batch_size, program.steps_per_epoch * epoch,
                                 t0, start_batch))
        state, _ = run_epoch(program, state, epoch, start=start_batch, on_chunk=guard,
                             resume=resume if epoch == start.epoch else None)
        jax.block_until_ready(state)
        train_s = time.perf_counter() - t0
        bar.close()
        wall_total += train_s
        steps_run = program.steps_per_epoch - start_batch
        train_sums = distributed.to_host(guard.total) if guard.total is not None else {}
        start_batch, sums = 0, None

        scores = evaluate_split(eval_step, averaged_params(state), test, cfg.eval_batch_size,
                                eval_key, mesh, state.loss_state)
        if quality is not None:
            scores.update(quality(averaged_params(state)))
        row, skipped = _epoch_row(cfg, program, placement, epoch, int(state.step), scores,
                                  train_sums, steps_run, train_s, wall_total)
        if not math.isfinite(scores["loss"]):
            raise Divergence(
                f"test loss is {scores['loss']} at epoch {epoch + 1}; no checkpoint was "
                f"written for it ({saver.last_good()}); lower --lr (now {cfg.lr:g}) or check "
                "the data range")
        saver.save(state, {"epoch": epoch + 1, "batch": 0, "wall_s": wall_total,
                           "last_row": row})
        schedule.saved(int(state.step))
        if primary:
            saver.append_row(workdir / "metrics.jsonl", row)
            params = distributed.local_copy(averaged_params(state))
            saver.write_outputs(outputs, epoch + 1, params)
            if hooks:
                call_hooks(hooks, "on_epoch", row, jax.tree.map(jnp.copy, params))
        last_row = row
        if not quiet:
            _print_epoch(cfg, epoch, row, skipped)
    saver.wait()
    return last_row


class _Saver:
    """Checkpoint and metrics writes; a failure is one line and exit 3, the last good kept."""

    def __init__(self, ckpt: Checkpointer, cfg: Config, workdir: Path):
        self.ckpt, self.cfg, self.workdir = ckpt, cfg, workdir

    def last_good(self) -> str:
        try:
            self.ckpt.wait()
            step = self.ckpt.latest_step()
        except Exception:  # the pending save failed: older ones stand
            steps = self.ckpt.all_steps()
            step = steps[-1] if steps else None
        if step is None:
            return "there is no earlier checkpoint"
        return f"the last good checkpoint is step {step} in {self.ckpt.directory}"

    def _failed(self, what: str, e: BaseException) -> SaveFailed:
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:160] or type(e).__name__
        return SaveFailed(f"{what} failed ({reason}); {self.last_good()}; free disk space or "
                          "fix the workdir, then run the same command to resume")

    def save(self, state, meta: dict) -> None:
        step = int(state.step)
        try:
            self.ckpt.save(step, state, {**meta, "config": config_to_dict(self.cfg)})
        except Exception as e:  # orbax raises many types for a failed write
            raise self._failed(f"saving checkpoint {step} to {self.ckpt.directory}", e) from None

    def wait(self) -> None:
        try:
            self.ckpt.wait()
        except Exception as e:
            raise self._failed(f"writing checkpoints to {self.ckpt.directory}", e) from None

    def write_outputs(self, outputs: "_EpochOutputs", epoch: int, params) -> None:
        """The epoch's images or audio; a failed write (a full disk, a deleted workdir) is exit 3."""
        try:
            outputs.write(epoch, params)
        except OSError as e:
            raise self._failed(f"writing epoch {epoch}'s samples to {self.workdir}", e) from None

    def append_row(self, path: Path, row: dict) -> None:
        try:
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise self._failed(f"appending to {path}", e) from None


class _Guard:
    """After every chunk: sums, progress, the skip limit, mid-epoch checkpoints, signals.

    The epoch's metric sums are accumulated here, chunk by chunk, starting
    from a resumed checkpoint's partial sums: a resumed epoch adds the same
    numbers in the same order as an uninterrupted one.
    """

    def __init__(self, cfg, program, saver, schedule, signals, epoch, start, sums, wall0, t0,
                 progress):
        self.cfg, self.program, self.saver = cfg, program, saver
        self.schedule, self.signals, self.epoch = schedule, signals, epoch
        self.total, self.wall0, self.t0, self.progress = sums, wall0, t0, progress

    def __call__(self, done: int, chunk_sums: dict, state) -> None:
        self.total = accumulate(self.total, chunk_sums)
        self.progress(done, chunk_sums, state)
        counts = skip_counts(state.opt_state)
        if counts is not None:
            consecutive = int(counts[1])
            if consecutive >= self.cfg.max_consecutive_skips:
                raise Divergence(
                    f"training diverged: {consecutive} steps in a row had a non-finite loss or "
                    f"gradient norm (up to step {int(state.step)}); no checkpoint was written "
                    f"for epoch {self.epoch + 1} ({self.saver.last_good()}); lower --lr "
                    f"(now {self.cfg.lr:g}) or check the data range")
        step = int(state.step)
        stop = self.signals.received
        if done < self.program.steps_per_epoch and (stop or self.schedule.due(step)):
            meta = {"epoch": self.epoch, "batch": done,
                    "wall_s": self.wall0 + time.perf_counter() - self.t0,
                    "sums": {k: float(v) for k, v in distributed.to_host(self.total).items()}}
            if self.program.feed is not None:  # the input iterator, beside the model
                meta["stream"] = {**self.program.feed.position(), "step": step}
            self.saver.save(state, meta)
            self.schedule.saved(step)
        if stop:
            self.saver.wait()
            raise Stopped(f"stopped by {self.signals.name} at step {step} (epoch {self.epoch + 1}, batch "
                          f"{done}); checkpoint saved in {self.saver.ckpt.directory}; run the "
                          "same command to resume", self.signals.exit_code)


class _Progress:
    """The per-chunk callback: moves the progress bar and informs the hooks."""

    def __init__(self, bar, hooks, batch_size: int, step0: int, t0: float, start: int = 0):
        self.bar, self.hooks, self.batch_size = bar, hooks, batch_size
        self.step0, self.t0, self.start, self.done, self.skipped = step0, t0, start, start, 0

    def __call__(self, done: int, sums: dict, state) -> None:
        steps = done - self.done
        self.done = done
        if self.bar.disable and not self.hooks:
            return
        # Reading the loss waits for the chunk: the bar tells the truth.
        sums = distributed.to_host(sums)
        skipped = int(round(float(sums.pop("skipped_steps", 0.0))))
        self.skipped += skipped
        means = {k: float(v) / max(steps - skipped, 1) for k, v in sums.items()}
        rate = (done - self.start) * self.batch_size / (time.perf_counter() - self.t0)
        self.bar.update(steps)
        postfix = {"loss": f"{means['loss']:.2f}", "img_s": f"{rate:,.0f}"}
        if self.skipped:
            postfix["skipped"] = self.skipped
        self.bar.set_postfix(postfix)
        means["skipped_steps"] = skipped
        call_hooks(self.hooks, "on_chunk", self.step0 + done, {**means, "images_per_sec": rate})
