"""One process of the two-process test in test_distributed.py (not a test module).

``python tests/distributed_worker.py PROCESS_ID PORT WORKDIR PHASE``: joins a
two-process job on 127.0.0.1 with 4 simulated CPU devices per process, and
trains the tiny model of :func:`setup` on :func:`batch` ``i`` for steps
``0..3`` (``PHASE=first``: saves a checkpoint collectively, writes the
parameters, then kills itself) or restores that checkpoint and trains steps
``3..6`` (``PHASE=resume``).
"""

import os
import signal
import sys
from pathlib import Path

STEPS = 3


def setup(mesh):
    """The model, a fresh replicated state and the jitted step (same on every process)."""
    import jax
    from jvae.config import make_config
    from jvae.experiment import DataSpec, build, init_state
    from jvae.parallel import replicate
    from jvae.train_state import make_train_step
    experiment = build(make_config({"hidden": (16,), "latent_dim": 2, "lr": 1e-2}),
                       DataSpec((4, 4, 1)))
    state = init_state(experiment, jax.random.key(0), {"image": batch(0)["image"]})
    return replicate(state, mesh), make_train_step(experiment.objective, experiment.optimizer,
                                                   mesh=mesh, donate=False)


def batch(i):
    """Global batch ``i`` (16 examples), identical on every process."""
    import numpy as np
    x = np.random.default_rng(i).random((16, 4, 4, 1), dtype=np.float32)
    return {"image": x, "mask": np.ones(16, np.float32)}


def train(state, step, mesh, start, stop):
    from jvae.parallel import shard_batch
    for i in range(start, stop):
        state, _ = step(state, shard_batch(batch(i), mesh))
    return state


def main(process_id: int, port: str, workdir: Path, phase: str) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import numpy as np
    from jvae import distributed
    assert distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
    import jax
    from jvae.checkpoint import Checkpointer
    from jvae.parallel import data_mesh
    mesh = data_mesh()
    assert mesh.size == 8 and jax.local_device_count() == 4
    state, step = setup(mesh)
    with Checkpointer(workdir / "checkpoints") as ckpt:
        if phase == "resume":
            state, meta = ckpt.restore_newest_valid(state, mesh=mesh)
            assert meta == {"phase": "first"}, meta
        start = int(state.step)
        state = train(state, step, mesh, start, start + STEPS)
        if phase == "first":
            ckpt.save(int(state.step), state, {"phase": "first"})
            ckpt.wait()
    params = distributed.to_host(state.params)
    if distributed.is_primary():
        np.savez(workdir / f"{phase}.npz", *jax.tree.leaves(params))
    distributed.barrier("written")
    if phase == "first":  # a crash, not a clean shutdown
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4])
