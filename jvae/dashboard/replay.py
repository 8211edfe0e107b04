"""The live page for a finished or running run, from its checkpoints and
``metrics.jsonl``: ``python -m jvae.dashboard --workdir DIR``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from jvae import zoo
from jvae.checkpoint import Checkpointer
from jvae.config import ConfigError
from jvae.dashboard.hook import Dashboard
from jvae.data import DataError
from jvae.evaluate import restore_run
from jvae.hooks import RunInfo

__all__ = ["serve", "main"]


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


def serve(workdir: str | Path, host: str = "127.0.0.1", port: int = 2998, *,
          poll_s: float = 5.0, data_dir: str | None = None,
          stop_after_s: float | None = None) -> Dashboard:
    """Serves a run's page from its newest checkpoint, following new ones.

    Blocks until Ctrl-C (or ``stop_after_s``), then stops the server.

    Args:
      workdir: a training run directory (``config.json``, ``checkpoints/``).
      host: address to bind.
      port: port to bind (0: any free one).
      poll_s: seconds between looks for new checkpoints and metric rows.
      data_dir: overrides the run's saved data directory.
      stop_after_s: return after this long (None: serve until interrupted).

    Returns:
      The (stopped) :class:`~jvae.dashboard.Dashboard`.

    Raises:
      ConfigError: not a run directory, no checkpoint, or the port is unusable.
    """
    workdir = Path(workdir)
    cfg, vae, _, state, meta, train, test = restore_run(workdir, data_dir=data_dir)
    dash = Dashboard(host, port)
    if dash.server is None:
        raise ConfigError(f"cannot serve on {host}:{port}; pick another --port (0 for any)")
    steps = max(len(train["image"]) // cfg.batch_size, 1)
    epoch = int(meta.get("epoch", 0))
    dash.on_start(RunInfo(cfg=cfg, workdir=workdir, vae=vae, test=test,
                          cond_key=zoo.cond_key_from_config(cfg), num_devices=1,
                          steps_per_epoch=steps, start_epoch=epoch, step=int(state.step),
                          params=state.params))
    seen = 0
    start = time.monotonic()
    try:
        with Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints) as ckpt:
            latest = ckpt.latest_step()
            while True:
                rows = _rows(workdir / "metrics.jsonl")
                for row in rows[seen:]:
                    # Per-epoch training means stand in for the per-chunk curve.
                    train_means = {k[len("train_"):]: v for k, v in row.items()
                                   if k.startswith("train_") and isinstance(v, (int, float))}
                    dash.on_chunk(int(row.get("step", 0)), train_means)
                    dash.state.add_row(row)
                seen = len(rows)
                newest = ckpt.latest_step()
                if newest is not None and newest != latest:
                    latest = newest
                    state, meta = ckpt.restore(state)
                    dash.publish_params(int(meta.get("epoch", newest)), int(state.step), state.params)
                if stop_after_s is not None and time.monotonic() - start >= stop_after_s:
                    break
                time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    finally:
        dash.on_end()
    return dash


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jvae.dashboard --workdir DIR [--host H] [--port P]``."""
    p = argparse.ArgumentParser(prog="python -m jvae.dashboard", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--workdir", required=True, help="a training run directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=2998, help="port to bind; 0 picks a free one (2998)")
    p.add_argument("--data-dir", default=None, help="override the run's saved data directory")
    args = p.parse_args(argv)
    try:
        serve(args.workdir, args.host, args.port, data_dir=args.data_dir)
    except (ConfigError, DataError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
