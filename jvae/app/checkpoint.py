"""Save and resume a :class:`~jvae.train_state.TrainState` with orbax-checkpoint.

Saves are asynchronous: training continues while the previous checkpoint is
written. Each save is atomic (orbax writes to a temporary directory and
renames it), so a crash mid-save leaves the previous checkpoints intact.

A checkpoint can still be damaged after it was written (a partial copy, a
full disk, bit rot). :meth:`Checkpointer.restore_newest_valid` tries the
newest first and falls back to older ones, moving each unreadable one aside
(``checkpoints.unreadable/<step>``, never deleted) with one warning line.
Every save records a signature of the state's structure, so a checkpoint of a
*different* model is reported as such instead of being mistaken for damage.

With several processes (:mod:`jvae.devices.distributed`) every process calls
:meth:`Checkpointer.save` and :meth:`Checkpointer.restore`: orbax writes the
checkpoint collectively; only process 0 moves damaged checkpoints aside.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jvae.base import JvaeError, PyTree
from jvae.devices.distributed import local_copy
from jvae.devices.parallel import replicated_sharding
from jvae.training.state import TrainState

__all__ = ["Checkpointer", "CheckpointError", "read_metrics", "truncate_metrics"]


class CheckpointError(JvaeError):
    """No checkpoint of the run can be used; the message names the workdir and the fix."""


def _to_saveable(state: TrainState) -> TrainState:
    # Typed PRNG keys are not a storable dtype; their raw uint32 data is.
    return state.replace(key=jax.random.key_data(state.key))


def structure_signature(state: TrainState) -> str:
    """A short hash of the state's tree structure, shapes and dtypes."""
    saveable = jax.eval_shape(_to_saveable, state)
    leaves = [(a.shape, str(a.dtype)) for a in jax.tree.leaves(saveable)]
    text = repr((jax.tree.structure(saveable), leaves))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _all_finite(tree: PyTree) -> bool:
    """Whether every float of this process's copy of ``tree`` is finite.

    Checked on the host, where the restore has just read the arrays from: a
    jitted check compiles one reduction per leaf, 1.5 s for the state of a
    small Stable Diffusion VAE with its critic and Adam's moments.
    """
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(local_copy(tree))
               if jnp.issubdtype(x.dtype, jnp.inexact))


def _ignore_late_read_callbacks() -> None:
    """Drops the ``Event loop is closed`` errors of an aborted restore's or save's other I/O.

    When one file of a checkpoint cannot be read (or written: a full disk),
    orbax abandons the operation and closes its event loop while tensorstore
    still completes the other reads and writes; their callbacks then fail
    harmlessly, each printing a traceback through ``sys.unraisablehook``. This
    filter (installed once, delegating everything else) keeps a skipped
    checkpoint to its one warning line and a failed save to its one error line.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_jvae_filter", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)
    hook._jvae_filter = True
    sys.unraisablehook = hook


class _OrbaxFailureFilter(logging.Filter):
    """Drops orbax's error records about failures a :class:`Checkpointer` reports itself.

    orbax logs an exception of its background save and restore threads with
    ``logging.exception``, then re-raises it to the caller
    (:meth:`Checkpointer.save`, :meth:`~Checkpointer.wait`), where jvae reports
    it as one line; and while a checkpoint is read (the manager listing its
    steps, a restore) it logs each unreadable file that the restore then fails
    on, which :meth:`~Checkpointer.restore_newest_valid` reports as one warning.
    Those copies would only add tracebacks and repeats around that line.
    Records of other libraries, and orbax's other records, pass.
    """

    reading = 0  # > 0 while a Checkpointer reads checkpoints (one count per reader)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.pathname.startswith(_ORBAX_DIR):
            return True
        return not (record.exc_info or _OrbaxFailureFilter.reading)


_ORBAX_DIR = os.path.dirname(ocp.__file__)
# How tensorstore's errors begin: an absl status code ("OUT_OF_RANGE: Error opening ...").
_STATUS_CODES = ("CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


class _AbandonedIOFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of tensorstore's reads and writes.

    When orbax abandons a restore or save at its first failed file, the other
    files' futures still fail on their own (the same damaged checkpoint, the
    same full disk) and nobody awaits them any more: each is logged with its
    traceback whenever it is garbage collected, sometimes long after the
    caller reported the failure in one line. Only such futures, failed with a
    tensorstore status error, are dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        # asyncio's first line: "<Future class> exception was never retrieved".
        abandoned = str(record.msg).split("\n", 1)[0].endswith("exception was never retrieved")
        return not (abandoned and isinstance(exc, ValueError)
                    and str(exc).startswith(tuple(f"{c}: " for c in _STATUS_CODES)))


@contextlib.contextmanager
def _reading():
    """Marks a read of checkpoints whose failures the caller reports (see the filter)."""
    _OrbaxFailureFilter.reading += 1
    try:
        yield
    finally:
        _OrbaxFailureFilter.reading -= 1


def _quiet_orbax_failures() -> None:
    """Keeps a failed save or restore to the one line its caller prints (installed once).

    The channels through which orbax and tensorstore repeat a failure are
    narrowed to what they repeat: :class:`_OrbaxFailureFilter` on absl's
    logger, which orbax logs on, :class:`_AbandonedIOFilter` on asyncio's and
    :func:`_ignore_late_read_callbacks`.
    """
    _ignore_late_read_callbacks()
    for name, kind in (("absl", _OrbaxFailureFilter), ("asyncio", _AbandonedIOFilter)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` for train states.

    Args:
      directory: where checkpoints live (created if missing).
      keep: number of most recent checkpoints to keep.
      async_save: write in the background (call :meth:`wait` or :meth:`close`
        before reading them or exiting).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(os.path.abspath(directory))
        # Before orbax starts a thread: a failed write reports itself at once.
        _quiet_orbax_failures()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save, create=True)
        with _reading():  # it reads every step's metadata
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: TrainState, meta: dict | None = None) -> None:
        """Starts saving ``state`` (and JSON-serializable ``meta``) as ``step``.

        A step that already exists is left as it is (it holds the same state:
        the run is deterministic), so saving twice at one step is harmless.
        """
        if step in self._manager.all_steps():
            return
        meta = {**(meta or {}), "structure": structure_signature(state)}
        # Host copies: orbax would cut each replicated jax.Array into per-device
        # slices (one small compile per shape, seconds on a first save over 8
        # devices); a replicated state is whole on every device, and process 0
        # writes numpy arrays. Restoring places them by the template's sharding.
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.device_get(_to_saveable(state))),
            meta=ocp.args.JsonSave(meta)))

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None (as of opening or :meth:`reload`)."""
        return self._manager.latest_step()

    def reload(self) -> None:
        """Lists the checkpoints on disk again.

        The manager lists them once, when it opens: another process's later
        saves (a run that ``jvae serve`` follows) appear only after this.
        """
        self._manager.reload()

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, template: TrainState, step: int | None = None,
                mesh: Mesh | None = None) -> tuple[TrainState, dict]:
        """Restores a state shaped like ``template``.

        Args:
          template: a state with the right structure, shapes and dtypes (a
            freshly created one, or its ``jax.eval_shape``; values are not used).
          step: checkpoint to restore; the latest when None.
          mesh: restore replicated over this mesh (default: single device).

        Returns:
          ``(state, meta)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError("no checkpoint to restore")
        sharding = replicated_sharding(mesh) if mesh is not None else None
        default = jax.sharding.make_single_device_sharding(jax.devices()[0])

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or getattr(
                x, "sharding", None) or default)
        # A template of ShapeDtypeStructs (jax.eval_shape of the init) restores as well
        # as a built state, without running the init.
        saveable = (jax.eval_shape(_to_saveable, template)
                    if isinstance(template.key, jax.ShapeDtypeStruct) else _to_saveable(template))
        target = jax.tree.map(abstract, saveable)
        with _reading():
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        state = restored["state"]
        meta = dict(restored["meta"] or {})
        meta.pop("structure", None)
        return state.replace(key=jax.random.wrap_key_data(state.key)), meta

    def read_meta(self, step: int) -> dict:
        """The JSON metadata saved with ``step`` (raises if unreadable)."""
        with _reading():
            return dict(self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"] or {})

    def restore_newest_valid(self, template: TrainState, mesh: Mesh | None = None,
                             validate=None, move_aside: bool = True
                             ) -> tuple[TrainState, dict] | None:
        """Restores the newest checkpoint that reads back and passes validation.

        A checkpoint that cannot be read (a truncated or missing file), whose
        state is not finite, or that ``validate(meta)`` rejects (returns a
        reason string) is skipped for the next newest; once a usable one is
        found, each skipped one is moved to ``<directory>.unreadable/<step>``
        (so new saves cannot collide with it) with one warning line on stderr.
        When none is usable nothing is moved.

        Args:
          template: as for :meth:`restore`.
          mesh: as for :meth:`restore`.
          validate: optional ``meta -> str | None``; a string is the reason to skip.
          move_aside: move skipped checkpoints aside (training, which writes
            new ones); False leaves them in place (read-only uses).

        Returns:
          ``(state, meta)``, or None when there is no checkpoint at all.

        Raises:
          CheckpointError: checkpoints exist but none can be used, or one holds
            a model of another structure (nothing is moved then).
        """
        steps = self.all_steps()
        if not steps:
            return None
        # Before the first read: an aborted read's callbacks can fire at once.
        _ignore_late_read_callbacks()
        signature = structure_signature(template)
        skipped = []
        for step in reversed(steps):
            try:
                meta = self.read_meta(step)
                saved = meta.get("structure")
                if saved is not None and saved != signature:
                    raise CheckpointError(
                        f"checkpoint {step} in {self.directory} holds a model of another "
                        "structure than these settings build; use a new --workdir or the "
                        "settings the run was started with")
                state, meta = self.restore(template, step, mesh=mesh)
                reason = None if _all_finite(state) else "its state is not finite"
                reason = reason or (validate(meta) if validate else None)
            except CheckpointError:
                raise
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                reason = f"it cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
            if reason is None:
                for bad, why in skipped:
                    if move_aside:
                        why += f"; moved to {self._move_aside(bad)}"
                    _say(f"warning: skipping checkpoint {bad}: {why}")
                return state, meta
            skipped.append((step, reason))
        # Nothing usable: nothing is moved, so the workdir stays as it was.
        raise CheckpointError(
            f"no usable checkpoint in {self.directory} (steps "
            f"{', '.join(str(s) for s, _ in skipped)}: {skipped[0][1]}); to start over use a new "
            f"--workdir or move {self.directory} away")

    def _move_aside(self, step: int) -> Path:
        aside = self.directory.with_name(self.directory.name + ".unreadable")
        target = aside / str(step)
        if jax.process_index() == 0:
            aside.mkdir(exist_ok=True)
            n = 1
            while target.exists():
                n += 1
                target = aside / f"{step}.{n}"
            shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jvae_checkpoint_aside_{step}")
        with _reading():
            self._manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file; lines that are not JSON objects are skipped.

    A crash while appending leaves a torn last line; such lines are dropped
    with one warning naming the line number, instead of failing the resume.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            _say(f"warning: {path} line {i} is not a JSON object; dropped")
            continue
        rows.append(row)
    return rows


def truncate_metrics(path: str | os.PathLike, last_epoch: int) -> None:
    """Keeps the rows of epochs up to ``last_epoch`` (a checkpoint we resume from).

    Rows written after that checkpoint (a crash between the two) and malformed
    lines are dropped; the file is rewritten atomically, by process 0 only.
    """
    path = Path(path)
    if not path.exists() or jax.process_index() != 0:
        return
    keep = [r for r in read_metrics(path)
            if isinstance(r.get("epoch"), (int, float)) and r["epoch"] <= last_epoch]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    if text != path.read_text(errors="replace"):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
