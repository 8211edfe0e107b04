"""Train a VAE: ``jvae train --dataset=mnist`` (also ``python -m jvae.train``).

The command parses flags into a :class:`~jvae.config.Config` and calls
:func:`train_and_evaluate`; everything it does is importable. A run's working
directory holds::

    config.json        the settings the run was started with
    metrics.jsonl      one JSON object per evaluation
    images/            samples_epochNNN.png and reconstructions_epochNNN.png
    audio/             (audio data) samples_/reconstructions_epochNNN.wav, waveforms PNG
    data.json          what the run trained on (a folder's settings); classes.json: labels
    checkpoints/       orbax checkpoints: each epoch's end, and within epochs
                       (``--checkpoint-every``); the newest few are kept
    .lock              held while a run trains here (one writer per workdir)

Running again with the same ``--workdir`` resumes from the newest checkpoint
that reads back, at the batch after it. Exit status: 0 done, 2 bad input
(nothing written), 3 failed mid-run (divergence, a failed save: the last
good checkpoint is kept), 130/143 stopped by SIGINT/SIGTERM after saving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jvae import distributed, flags
from jvae.base import ConfigError
from jvae.checkpoint import Checkpointer, truncate_metrics
from jvae.config import Config, config_to_dict, make_config
from jvae.data import check_data_info, data_options, write_data_info
from jvae.datasets.images import DataWarning
from jvae.experiment import DataSpec, build, init_state
from jvae.generate import make_reconstructor, make_sampler
from jvae.images import save_image_grid
from jvae.lock import LockError, WorkdirLock
from jvae.optim import skip_counts
from jvae.parallel import data_mesh, replicate
from jvae.program import accumulate, compile_program, evaluate_split, resolve_placement, run_epoch
from jvae.run_guard import CheckpointSchedule, Divergence, RunFailed, SaveFailed, StopSignals
from jvae.runs import check_resumable, hook_info, load_data_with_info, saved_config
from jvae.train_state import make_eval_step

__all__ = ["Hook", "Divergence", "Stopped", "train_and_evaluate", "watch_hooks", "default_workdir",
           "MODE", "main"]


class Hook(Protocol):
    """Observes a training run; every method is optional.

    ``on_start(info)`` once, with the run's settings, devices, model, test
    split and a copy of the starting parameters (:func:`~jvae.runs.hook_info`);
    ``on_chunk(step, metrics)`` after each chunk of steps with the chunk's
    metric means (host floats); ``on_epoch(row, params)`` after each
    evaluation, with the ``metrics.jsonl`` row and a copy of the parameters
    (never a buffer a later donated step frees); ``on_end()`` once, however
    training stops. In a multi-process run only process 0 calls its hooks.
    """


class Stopped(RunFailed):
    """SIGINT or SIGTERM: a checkpoint of the current step was saved; exit 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _call(hooks: Sequence[Any], name: str, *args) -> None:
    for hook in hooks:
        method = getattr(hook, name, None)
        if method is not None:
            method(*args)


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
    newest used (:meth:`~jvae.checkpoint.Checkpointer.restore_newest_valid`).
    SIGINT and SIGTERM save a checkpoint of the current step and raise
    :class:`Stopped`. One process at a time may train in a workdir
    (:class:`~jvae.lock.WorkdirLock`).

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
            _call(hooks, "on_end")


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
    if cfg.data_source is None and os.environ.get("DATA_SOURCE"):
        # Saved in config.json, so other modes and a resumed run find the folder.
        cfg = dataclasses.replace(cfg, data_source=os.environ["DATA_SOURCE"])
    # A folder's training images stay on disk until the placement is known.
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
    # Built before anything is written, so settings that do not fit the data
    # fail without leaving a workdir behind.
    experiment = build(cfg, DataSpec.of(train))
    check_resumable(workdir, cfg)
    _stop_early(signals)

    with contextlib.ExitStack() as stack:
        if primary:
            stack.enter_context(WorkdirLock(workdir))
            _prepare_workdir(workdir, cfg, data_info)
        distributed.barrier("jvae_workdir_ready")
        return _train(cfg, workdir, experiment, train, test, data_info, mesh, quiet, hooks,
                      stack, signals)


def _train(cfg, workdir, experiment, train, test, data_info, mesh, quiet, hooks, stack,
           signals) -> dict[str, Any]:
    """The loop of :func:`train_and_evaluate`, inside the workdir lock."""
    primary = distributed.is_primary()
    init_key, eval_key, sample_key = jax.random.split(jax.random.key(cfg.seed), 3)
    example = {k: v[:cfg.batch_size] for k, v in train.items() if k != "label"}
    state = replicate(init_state(experiment, init_key, example), mesh)

    metrics_path = workdir / "metrics.jsonl"
    start_epoch, start_batch, wall_total, last_row, sums = 0, 0, 0.0, {}, None
    ckpt = stack.enter_context(Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints))
    restored = ckpt.restore_newest_valid(state, mesh=mesh, validate=_check_position)
    if restored is not None:
        state, meta = restored
        start_epoch, start_batch = int(meta["epoch"]), int(meta.get("batch", 0))
        wall_total, last_row = float(meta.get("wall_s", 0.0)), meta.get("last_row", {})
        if meta.get("sums"):
            sums = {k: np.float32(v) for k, v in meta["sums"].items()}
        truncate_metrics(metrics_path, start_epoch)
        if not quiet:
            where = f", batch {start_batch}" if start_batch else ""
            print(f"resumed from epoch {start_epoch}{where} (step {int(state.step)}) in "
                  f"{workdir}", flush=True)
    if start_epoch >= cfg.epochs:
        if not quiet:
            print(f"already trained for {start_epoch} epochs (--epochs {cfg.epochs}); "
                  "nothing to do", flush=True)
        return last_row

    placement = resolve_placement(cfg.data_placement, experiment, state, example, train)
    resume = _stream_position(meta if restored is not None else {}, start_epoch, start_batch,
                              int(state.step), workdir)
    program = compile_program(experiment, mesh, state, train, placement=placement,
                              batch_size=cfg.batch_size, seed=cfg.seed,
                              dynamic_binarize=cfg.binarize == "dynamic",
                              chunks_per_epoch=CHUNKS_PER_EPOCH, workers=cfg.loader_workers,
                              prefetch=cfg.loader_prefetch)
    if program.feed is not None:  # stops its worker processes however the run ends
        stack.callback(program.feed.close)
    if start_batch > program.steps_per_epoch or (placement == "device"
                                                 and start_batch % program.chunk):
        raise ConfigError(
            f"the checkpoint in {workdir} stopped at batch {start_batch} of epoch "
            f"{start_epoch + 1}, which this run (an epoch of {program.steps_per_epoch} steps "
            f"in chunks of {program.chunk}) cannot continue; resume with the data and "
            "--data-placement it was saved with")
    eval_step = make_eval_step(experiment.objective, mesh=mesh)
    sample_cond = _sample_condition(test, experiment.cond_key)
    audio = data_info["modality"] == "audio"
    if audio:  # a few clips; with labels, one per class
        sample_cond = None if sample_cond is None else sample_cond[::8][:_AUDIO_CLIPS]
        sampler = make_sampler(experiment.vae,
                               _AUDIO_CLIPS if sample_cond is None else len(sample_cond))
    else:
        sampler = (make_sampler(experiment.vae, cfg.num_images) if sample_cond is None else
                   make_sampler(experiment.vae, len(sample_cond),
                                repeats=sample_cond.shape[-1]))
    reconstruct = make_reconstructor(experiment.vae)
    if hooks:
        _call(hooks, "on_start", hook_info(
            cfg, workdir, experiment, test, devices=mesh.size, placement=placement,
            start_epoch=start_epoch, step=int(state.step),
            params=jax.tree.map(jnp.copy, distributed.local_copy(state.params)),
            steps_per_epoch=program.steps_per_epoch))
    saver = _Saver(ckpt, cfg, workdir)
    _stop_early(signals)
    schedule = CheckpointSchedule(cfg.checkpoint_every)
    schedule.saved(int(state.step))

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        bar = tqdm(total=program.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="step", disable=quiet or None, leave=False, file=sys.stderr,
                   initial=start_batch)
        guard = _Guard(cfg, program, saver, schedule, signals, epoch, start_batch, sums,
                       wall_total, t0,
                       _Progress(bar, hooks, cfg.batch_size, program.steps_per_epoch * epoch,
                                 t0, start_batch))
        state, _ = run_epoch(program, state, epoch, start=start_batch, on_chunk=guard,
                             resume=resume if epoch == start_epoch else None)
        jax.block_until_ready(state)
        train_s = time.perf_counter() - t0
        bar.close()
        wall_total += train_s
        steps_run = program.steps_per_epoch - start_batch
        train_sums = distributed.to_host(guard.total) if guard.total is not None else {}
        start_batch, sums = 0, None

        scores = evaluate_split(eval_step, state.params, test, cfg.eval_batch_size,
                                eval_key, mesh, state.loss_state)
        skipped = int(round(float(train_sums.pop("skipped_steps", 0.0))))
        applied = max(program.steps_per_epoch - skipped, 1)
        train_means = {f"train_{k}": float(v) / applied for k, v in train_sums.items()}
        # An autoencoder has no KL, hence no neg_elbo: those fields are null.
        row = {"epoch": epoch + 1, "step": int(state.step), "split": "test",
               "neg_elbo": scores.get("neg_elbo"), "recon": scores["recon"],
               "kl": scores.get("kl"),
               "images_per_sec": steps_run * cfg.batch_size / train_s,
               "wall_s": wall_total, "epoch_s": train_s, "compile_s": program.compile_s,
               "data_placement": placement, "skipped_steps": skipped,
               **{k: v for k, v in scores.items() if k not in ("neg_elbo", "recon", "kl")},
               **train_means}
        if not math.isfinite(scores["loss"]):
            raise Divergence(
                f"test loss is {scores['loss']} at epoch {epoch + 1}; no checkpoint was "
                f"written for it ({saver.last_good()}); lower --lr (now {cfg.lr:g}) or check "
                "the data range")
        saver.save(state, {"epoch": epoch + 1, "batch": 0, "wall_s": wall_total,
                           "last_row": row})
        schedule.saved(int(state.step))
        if primary:
            saver.append_row(metrics_path, row)
            params = distributed.local_copy(state.params)
            if audio:
                _save_audio(workdir, epoch + 1, sampler, reconstruct, params, test,
                            sample_key, data_info["sample_rate"], experiment.cond_key,
                            sample_cond)
            else:
                _save_images(workdir / "images", epoch + 1, sampler, reconstruct, params,
                             test, sample_key, cfg.num_images, experiment.cond_key, sample_cond)
            if hooks:
                _call(hooks, "on_epoch", row, jax.tree.map(jnp.copy, params))
        last_row = row
        if not quiet:
            bound = (f"-ELBO {row['neg_elbo']:.2f} nats  " if row["neg_elbo"] is not None
                     else "")
            kl = f"KL {row['kl']:.2f}  " if row["kl"] is not None else ""
            skips = f"  {skipped} steps skipped" if skipped else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}  test {bound}recon {row['recon']:.2f}  "
                  f"{kl}{row['images_per_sec']:,.0f} img/s{skips}", flush=True)
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
        _call(self.hooks, "on_chunk", self.step0 + done, {**means, "images_per_sec": rate})


def _sample_condition(test, cond_key: str | None) -> np.ndarray | None:
    """For a conditional model: one row of 8 samples per class (one-hot rows), each
    row decoded from the same 8 codes."""
    if cond_key is None:
        return None
    num_classes = test[cond_key].shape[-1]
    return np.repeat(np.eye(num_classes, dtype=np.float32), 8, axis=0)


def _decode_epoch(sampler, reconstruct, params, test, key, n: int, cond_key: str | None,
                  sample_cond: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prior samples, the first n test examples, their reconstructions)`` on the host."""
    samples = np.asarray(sampler(params, key, sample_cond))
    x = test["image"][:n]
    cond = None if cond_key is None else jnp.asarray(test[cond_key][:n])
    return samples, x, np.asarray(reconstruct(params, jnp.asarray(x), cond))


def _save_images(folder: Path, epoch: int, sampler, reconstruct, params, test, key, n,
                 cond_key: str | None = None, sample_cond: np.ndarray | None = None) -> None:
    samples, x, recon = _decode_epoch(sampler, reconstruct, params, test, key, n // 2,
                                      cond_key, sample_cond)
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
    samples, x, recon = _decode_epoch(sampler, reconstruct, params, test, key, _AUDIO_CLIPS,
                                      cond_key, sample_cond)
    samples, recon = samples[..., 0], recon[..., 0]
    pairs = [c for pair in zip(x[..., 0], recon) for c in pair]
    write_wav(folder / f"samples_epoch{epoch:03d}.wav", join_clips(samples, rate), rate)
    write_wav(folder / f"reconstructions_epoch{epoch:03d}.wav", join_clips(pairs, rate), rate)
    save_waveforms(folder / f"waveforms_epoch{epoch:03d}.png", [*samples, *pairs])


def default_workdir(cfg: Config) -> str:
    """``runs/<dataset>``, or ``runs/<folder name>`` for a ``--data-source`` folder."""
    source = data_options(cfg).get("data_source")
    return f"runs/{Path(source).resolve().name if source else cfg.dataset}"


def _one_line(message, category, *args, **kwargs) -> None:
    print(f"jvae train: warning: {message}", file=sys.stderr)


def _add_arguments(parser) -> None:
    flags.add_workdir_flag(parser, required=False,
                           help="output directory; an existing run there is resumed "
                                "(default: runs/DATASET)")
    flags.add_config_flags(parser)


def watch_hooks(cfg: Config) -> list[Any]:
    """The hooks the train mode attaches: the live page (``--dashboard``) and
    TensorBoard event files (``--tensorboard``)."""
    hooks: list[Any] = []
    if cfg.dashboard:
        from jvae.dashboard import Dashboard
        hooks.append(Dashboard(cfg.dashboard_host, cfg.dashboard_port))
    if cfg.tensorboard:
        from jvae.tensorboard import TensorBoardLogger
        hooks.append(TensorBoardLogger())
    return hooks


# How one process joins a multi-process job: each launch names its own.
_LAUNCH_SETTINGS = ("coordinator_address", "num_processes", "process_id")


def _run(args) -> int:
    cfg, workdir = flags.config_from_args(args)
    workdir = workdir or default_workdir(cfg)
    if not hasattr(args, "config") and (Path(workdir) / "config.json").is_file():
        # Resuming: the run's own settings are the base and flags change only what
        # they name, so `--workdir W` alone continues W where it stopped; a flag
        # that changes the model is still refused by check_resumable.
        saved = config_to_dict(saved_config(workdir))
        for name in _LAUNCH_SETTINGS:
            saved.pop(name, None)
        cfg = make_config(saved, flags.given_settings(args))
    distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    with warnings.catch_warnings():
        # Skipped data files: one line, not a source excerpt.
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = _one_line
        train_and_evaluate(cfg, workdir, hooks=watch_hooks(cfg))
    return 0


MODE = flags.Mode("train", "Train a VAE, evaluating after every epoch; resumes a run "
                  "found in --workdir.", _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jvae.train``: the train mode; returns the exit status."""
    return flags.run_mode(MODE, argv, prog="python -m jvae.train")


if __name__ == "__main__":
    sys.exit(main())
