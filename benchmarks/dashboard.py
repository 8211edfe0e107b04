"""What the live page costs: training speed with and without it, decode
latency over HTTP, and the memory its server adds. Prints JSON rows.

    python benchmarks/dashboard.py --data-dir ../shared/data/mnist

Training rows: one process trains the same model for ``--epochs`` epochs
(fresh workdirs) four ways, interleaved over ``--rounds``: without hooks (one
dispatch per epoch), with a hook that does nothing (20 chunks per epoch, a
host sync after each: the loop's share of the cost), with the page and nobody
watching, and with the page watched (an event stream open and a decode every
100 ms, as a user dragging a slider).
``images_per_sec`` is the median over the epochs after each run's first; the
step's compile time is not in it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from jvae.app.config import make_config
from jvae.app.dashboard import Dashboard
from jvae.train import train_and_evaluate

MODES = ("no_hooks", "null_hook", "page", "page_watched")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(port: int, latent: int, z: np.ndarray) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/decode", json.dumps({"z": z.tolist()}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


class _NullHook:
    """Does nothing: what per-chunk hook calls cost (a host sync per chunk) alone."""

    def on_chunk(self, step, metrics):
        pass


class _Watcher:
    """An open event stream plus a decode every ``period`` seconds."""

    def __init__(self, dash: Dashboard, latent: int, period: float = 0.1):
        self.dash, self.latent, self.period = dash, latent, period
        self.port = dash.server.port
        self.stop = threading.Event()
        self.decodes = 0

    def start(self):
        threading.Thread(target=self._events, daemon=True).start()
        threading.Thread(target=self._decodes, daemon=True).start()

    def _events(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        conn.request("GET", "/events")
        r = conn.getresponse()
        try:
            while not self.stop.is_set() and r.readline():
                pass
        except OSError:  # the server stopped with the run
            pass

    def _decodes(self):
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            if self.dash.state.snapshot is not None:
                try:
                    if _post(self.port, self.latent, rng.normal(size=self.latent)) == 200:
                        self.decodes += 1
                except OSError:  # the server stopped with the run
                    return
            time.sleep(self.period)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve-only", metavar="WORKDIR", default=None,
                   help="skip training: measure decoding and memory on this finished run in a "
                        "fresh process (memory freed by earlier training hides what the page "
                        "adds)")
    args = p.parse_args()
    cfg = make_config({"data_dir": args.data_dir, "epochs": args.epochs,
                       "latent_dim": args.latent_dim, "num_devices": 1})
    tmp = Path(tempfile.mkdtemp(prefix="jvae-dash-bench-"))
    if args.serve_only:
        _decode_and_memory(Path(args.serve_only), args)
        return

    rates: dict[str, list[float]] = {m: [] for m in MODES}
    decodes = 0
    for r in range(args.rounds):  # modes interleaved: a shared machine's load drifts
        for mode in MODES:
            dash = Dashboard("127.0.0.1", 0, quiet=True) if mode.startswith("page") else None
            watcher = None
            if mode == "page_watched":
                watcher = _Watcher(dash, args.latent_dim)
                watcher.start()
            work = tmp / f"{mode}{r}"
            hooks = {"no_hooks": [], "null_hook": [_NullHook()]}.get(mode, [dash])
            train_and_evaluate(cfg, work, quiet=True, hooks=hooks)
            if watcher:
                watcher.stop.set()
                decodes += watcher.decodes
            rows = [json.loads(line) for line in (work / "metrics.jsonl").open()]
            rates[mode] += [row["images_per_sec"] for row in rows[1:]]
    for mode in MODES:
        print(json.dumps({"bench": "dashboard_train", "mode": mode, "epochs": args.epochs,
                          "rounds": args.rounds,
                          "images_per_sec": round(statistics.median(rates[mode])),
                          "images_per_sec_all": [round(v) for v in rates[mode]],
                          "decodes_during_training": decodes if mode == "page_watched" else 0}),
              flush=True)

    _decode_and_memory(tmp / "no_hooks0", args)


def _decode_and_memory(workdir: Path, args) -> None:
    """Decode latency and memory: a page over a trained run, as `serve` makes it."""
    from jvae.app.runs import hook_info, restore_run
    run = restore_run(workdir)
    jax_rss = _rss_mib()
    dash = Dashboard("127.0.0.1", 0, quiet=True)
    epoch = int(run.meta["epoch"])
    dash.on_start(hook_info(run.cfg, workdir, run.experiment, run.test, devices=1,
                            placement=None, start_epoch=epoch, step=int(run.state.step),
                            params=run.state.params, steps_per_epoch=1))
    dash.wait_for_snapshot(epoch)
    rng = np.random.default_rng(0)
    _post(dash.server.port, args.latent_dim, rng.normal(size=args.latent_dim))  # warm
    rss = _rss_mib()
    times = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        assert _post(dash.server.port, args.latent_dim, rng.normal(size=args.latent_dim)) == 200
        times.append((time.perf_counter() - t0) * 1e3)
    dash.on_end()
    print(json.dumps({"bench": "dashboard_decode", "requests": args.requests,
                      "latent_dim": args.latent_dim,
                      "median_ms": round(statistics.median(times), 2),
                      "p99_ms": round(float(np.percentile(times, 99)), 2),
                      "server_rss_mib": round(rss - jax_rss, 1),
                      "rss_after_200_decodes_mib": round(_rss_mib() - jax_rss, 1)}), flush=True)


if __name__ == "__main__":
    main()
