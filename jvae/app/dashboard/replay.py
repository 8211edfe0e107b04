"""The live page for a finished or running run, from its checkpoints and
``metrics.jsonl`` (the ``jvae serve`` mode)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from jvae.app.checkpoint import Checkpointer
from jvae.app.dashboard.hook import Dashboard
from jvae.app.runs import hook_info, restore_run
from jvae.base import ConfigError
from jvae.datasets.order import num_batches
from jvae.training.ema import averaged_params

__all__ = ["serve"]


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return rows


def _newest_checkpoint(ckpt: Checkpointer, template, seen: int | None):
    """The newest checkpoint, when it is not step ``seen``.

    Returns:
      None, or ``(step, state, meta)``; ``state`` and ``meta`` are None when it
      cannot be read (one warning; the caller moves on to the next one).
    """
    # orbax lists the steps once, when the manager opens: a running run's new
    # checkpoints appear only after a fresh look (one directory listing).
    ckpt.reload()
    newest = ckpt.latest_step()
    if newest is None or newest == seen:
        return None
    try:
        state, meta = ckpt.restore(template, newest)
    except Exception as e:  # gone in between (the run keeps only the newest few) or damaged
        print(f"warning: serve skips checkpoint {newest}: it cannot be read "
              f"({type(e).__name__})", file=sys.stderr, flush=True)
        return newest, None, None
    return newest, state, meta


def serve(workdir: str | Path, host: str = "127.0.0.1", port: int = 2998, *,
          poll_s: float = 5.0, data_dir: str | None = None,
          stop: threading.Event | None = None,
          ready: Callable[[Dashboard], None] | None = None) -> Dashboard:
    """Serves a run's page from its newest checkpoint, following new ones.

    Blocks until Ctrl-C (or ``stop`` is set), then stops the server.

    Args:
      workdir: a training run directory (``config.json``, ``checkpoints/``).
      host: address to bind.
      port: port to bind (0: any free one).
      poll_s: seconds between looks for new checkpoints and metric rows.
      data_dir: overrides the run's saved data directory.
      stop: set it to return.
      ready: called with the running :class:`~jvae.app.dashboard.Dashboard` once
        it serves the newest checkpoint.

    Returns:
      The (stopped) :class:`~jvae.app.dashboard.Dashboard`.

    Raises:
      ConfigError: not a run directory, no checkpoint, or the port is unusable.
    """
    workdir = Path(workdir)
    run = restore_run(workdir, data_dir=data_dir)
    dash = Dashboard(host, port)
    if dash.server is None:
        raise ConfigError(f"cannot serve on {host}:{port}; pick another --port (0 for any)")
    template = state = run.state
    dash.on_start(hook_info(run.cfg, workdir, run.experiment, run.test, devices=1,
                            placement=None, start_epoch=int(run.meta.get("epoch", 0)),
                            step=int(state.step), params=averaged_params(state),
                            steps_per_epoch=num_batches(len(run.train["image"]),
                                                        run.cfg.batch_size, True)))
    dash.wait_for_snapshot(int(run.meta.get("epoch", 0)))
    seen = 0
    try:
        with Checkpointer(workdir / "checkpoints", keep=run.cfg.keep_checkpoints) as ckpt:
            latest = ckpt.latest_step()
            while True:
                rows = _rows(workdir / "metrics.jsonl")
                for row in rows[seen:]:
                    # The epoch's training means stand in for the per-chunk curve.
                    dash.on_chunk(int(row.get("step", 0)), {
                        k[len("train_"):]: v for k, v in row.items()
                        if k.startswith("train_") and isinstance(v, (int, float))})
                    dash.state.add_row(row)
                if ready is not None and not seen:
                    ready(dash)
                seen = len(rows)
                found = _newest_checkpoint(ckpt, template, latest)
                if found is not None:
                    latest, state, meta = found
                    if state is not None:
                        dash.publish_params(int(meta.get("epoch", latest)), int(state.step),
                                            averaged_params(state))
                if stop is not None and stop.wait(poll_s):
                    break
                if stop is None:
                    time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    finally:
        dash.on_end()
    return dash
