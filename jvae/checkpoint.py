"""Save and resume a :class:`~jvae.train_state.TrainState` with orbax-checkpoint.

Saves are asynchronous: training continues while the previous checkpoint is
written. Each save is atomic (orbax writes to a temporary directory and
renames it), so a crash mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from jvae.parallel import replicated_sharding
from jvae.train_state import TrainState

__all__ = ["Checkpointer"]


def _to_saveable(state: TrainState) -> TrainState:
    # Typed PRNG keys are not a storable dtype; their raw uint32 data is.
    return state.replace(key=jax.random.key_data(state.key))


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
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, state: TrainState, meta: dict | None = None) -> None:
        """Starts saving ``state`` (and JSON-serializable ``meta``) as ``step``."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state)),
            meta=ocp.args.JsonSave(meta or {})))

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, template: TrainState, step: int | None = None,
                mesh: Mesh | None = None) -> tuple[TrainState, dict]:
        """Restores a state shaped like ``template``.

        Args:
          template: a state with the right structure, shapes and dtypes (e.g. a
            freshly created one; its values are not used).
          step: checkpoint to restore; the latest when None.
          mesh: restore replicated over this mesh (default: single device).

        Returns:
          ``(state, meta)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError("no checkpoint to restore")
        sharding = replicated_sharding(mesh) if mesh is not None else None

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding)
        target = jax.tree.map(abstract, _to_saveable(template))
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        state = restored["state"]
        return state.replace(key=jax.random.wrap_key_data(state.key)), dict(restored["meta"] or {})

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
