"""Failure drills: the long versions of the reliability tests, one JSON row per drill.

Run from the repository root (the shared MNIST beside it)::

    python -m benchmarks.drills                    # every drill, 5 trials each
    python -m benchmarks.drills --drills kill9,sigterm --trials 10
    python -m benchmarks.drills --drills kill9 --run-flags "--net conv --recipe ldm_no_lpips \\
        --adv-start 20 --adv-layers 2 --adv-channels 16 --ema-decay 0.99"   # the GAN recipe

Each drill trains small MLP VAEs on a 2048-example MNIST subset with
``python -m jvae.train`` in subprocesses (checkpoints every 4 steps, 3
epochs of 32 steps) and compares against one uninterrupted reference run:

* ``kill9``: ``kill -9`` at a random moment, rerun to the end; survived when
  every metrics row (step, test -ELBO, recon, KL, train loss) equals the
  reference's exactly;
* ``sigterm``: SIGTERM at a random moment (checkpoints at epoch ends only):
  exit 143 with a checkpoint of the current step, then rerun as above;
* ``corrupt``: the newest checkpoint damaged four ways (truncated data,
  a missing file, torn metadata, emptied), rerun: one warning, the damaged
  checkpoint moved aside, the result equal to the reference;
* ``nan``: NaN images in 10% of the batches of a run (the library's train
  loop): it completes, parameters stay finite, every bad batch counted as
  a skipped step;
* ``malformed``: 30+ bad inputs (configs, layer specs, data files, flags,
  workdir states; hypothesis-generated ones among them) against an existing
  run: exit 2, one line on stderr, no traceback, the workdir byte-identical;
* ``page_flood``: a 60-epoch run (long enough to outlast the flood on a quiet
  machine; its usual limit of 1,024 open files) while
  1,100 idle connections and 200 concurrent decodes hit its live page;
  survived when the run exits 0 and the page answers ``GET /api/state`` after
  the flood; the row counts 503s, drops, resets and timeouts.
* ``image_folder``: one short epoch on a folder of photos (a 16-bit PNG, a
  phone JPEG stored sideways, a wide image), then ``jvae reconstruct`` on it;
  survived when the originals in its PNGs equal the training arrays, the photo
  trained upright and the 16-bit image reads as its 8-bit twin;
* ``failed_first_checkpoint``: the first checkpoint's write fails in the
  background (a file-size limit: EFBIG, as a full disk fails it) after epoch
  1's row; rerun without the limit: survived when the failing run exits 3 with
  one line and the rerun's rows equal the reference's, no epoch twice.
* ``export_into_run``: ``jvae export-weights`` of an imported run into itself,
  into another run and into a run's ``checkpoints/``: survived when each exits 2
  with one line, both runs stay byte-identical, and ``sample`` still works on
  the run afterwards.

A row: ``{"drill", "trials", "survived", "data_lost", ...details}``. ``data_lost``
counts trials that lost a finished epoch's results or a checkpoint (deleted,
not moved aside) or ended with a different result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/drills.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
RUN = ["--dataset", "mnist", "--epochs", "3", "--batch-size", "64", "--eval-batch-size", "256",
       "--hidden", "64", "--latent-dim", "8", "--num-images", "16", "--checkpoint-every", "4"]
COMPARED = ("epoch", "step", "neg_elbo", "recon", "kl", "train_loss")
DRILLS = ("kill9", "sigterm", "corrupt", "nan", "malformed", "page_flood", "image_folder",
          "failed_first_checkpoint", "export_into_run")
# Drills that compare against no reference run: choosing only these skips it.
STANDALONE = ("page_flood", "image_folder", "export_into_run")


def _env() -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    return env


def _cmd(data_dir: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jvae.train", "--data-dir", str(data_dir), "--workdir",
            str(workdir), *RUN, *extra]


def _train(data_dir, workdir, *extra, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(data_dir, workdir, *extra), env=_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _rows(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # An adversarial run's discriminator is compared through its training metrics too.
    return [{k: r.get(k) for k in (*COMPARED, *sorted(k for k in r if k.startswith("train_adv")))}
            for r in rows]


def _tiny_mnist(out: Path) -> Path:
    from jvae.data import load_mnist_idx, write_idx
    for split, stem, n in (("train", "train", 2048), ("test", "t10k", 512)):
        d = load_mnist_idx(MNIST, split)
        write_idx(out / f"{stem}-images-idx3-ubyte", d["image"][:n, :, :, 0])
        write_idx(out / f"{stem}-labels-idx1-ubyte", d["label"][:n].astype("uint8"))
    return out


def _started(workdir: Path) -> bool:
    """Whether a run holds the workdir: its lock is written just before training starts."""
    lock = workdir / ".lock"
    return lock.exists() and lock.stat().st_size > 0


def _interrupted(data_dir, workdir, sig, seconds, extra=()) -> tuple[int, str, float]:
    """Starts a run, sends ``sig`` ``seconds`` after it took the workdir.

    Returns the exit status, stderr, and the seconds from taking the workdir to the end.

    With ``sig=None`` the run goes to the end; ``seconds`` is then ignored.
    """
    p = subprocess.Popen(_cmd(data_dir, workdir, *extra), env=_env(), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not _started(workdir) and p.poll() is None:
        time.sleep(0.01)
    t0 = time.perf_counter()
    if sig is not None:
        try:
            p.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
    _, err = p.communicate(timeout=900)
    return p.returncode, err, time.perf_counter() - t0


def _snapshot(workdir: Path) -> dict:
    """Every file's hash but the lock file's (a run's presence, not its data)."""
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(workdir.rglob("*")) if p.is_file() and p.name != ".lock"}


def _newest_step(workdir: Path) -> int | None:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=None)


def drill_kill(ctx, trials, sig=signal.SIGKILL, name="kill9", extra=()) -> dict:
    survived = lost = landed = mid_epoch = 0
    codes = []
    rng = random.Random(0)
    for t in range(trials):
        work = ctx["tmp"] / f"{name}{t}"
        at = rng.uniform(0.02, 0.95) * ctx["ref_s"]
        rc, err, _ = _interrupted(ctx["data"], work, sig, at, extra)
        ran_through = rc == 0
        landed += not ran_through
        codes.append(rc)
        if sig == signal.SIGTERM and rc == 143:
            newest = _newest_step(work)
            mid_epoch += newest is not None and newest % ctx["steps_per_epoch"] != 0
        # SIGTERM exits 143 after saving; one that lands while Python is still
        # starting (no handler yet) ends the process like SIGKILL: nothing trained yet.
        if sig == signal.SIGTERM and rc not in (0, 143, -signal.SIGTERM) or "Traceback" in err:
            lost += 1
            continue
        before = _rows(work)
        r = _train(ctx["data"], work, *extra)
        rows = _rows(work)
        ok = r.returncode == 0 and rows == ctx["ref_rows"]
        survived += ok
        lost += (not ok) or rows[:len(before)] != before
    row = {"drill": name, "trials": trials, "survived": survived, "data_lost": lost,
           "landed_mid_run": landed, "exit_codes": codes}
    if sig == signal.SIGTERM:
        row["saved_mid_epoch"] = mid_epoch
    return row


def drill_corrupt(ctx, trials) -> dict:
    base = ctx["tmp"] / "corrupt_base"
    r = _train(ctx["data"], base, "--epochs", "2")
    assert r.returncode == 0, r.stderr

    def truncate(d):
        for p in d.rglob("*"):
            if p.is_file() and p.parent.name == "d":
                p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def drop(d):
        (d / "state" / "_METADATA").unlink()

    def tear(d):
        (d / "meta" / "metadata").write_text('{"epoch": 2, "ba')

    def empty(d):
        for p in d.rglob("*"):
            if p.is_file():
                p.write_bytes(b"")

    kinds = [truncate, drop, tear, empty]
    survived = lost = 0
    for t in range(trials):
        work = ctx["tmp"] / f"corrupt{t}"
        shutil.copytree(base, work)
        steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
        kinds[t % len(kinds)](work / "checkpoints" / str(steps[-1]))
        r = _train(ctx["data"], work)
        warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: skipping")]
        aside = work / "checkpoints.unreadable" / str(steps[-1])
        ok = (r.returncode == 0 and len(warnings) == 1 and aside.is_dir()
              and _rows(work) == ctx["ref_rows"])
        survived += ok
        lost += not aside.is_dir() or _rows(work)[:2] != ctx["ref_rows"][:2]
    return {"drill": "corrupt", "trials": trials, "survived": survived, "data_lost": lost,
            "kinds": [k.__name__ for k in kinds]}


def drill_nan(ctx, trials) -> dict:
    """NaN images in 10% of the batches, through the library's epoch driver."""
    import jax
    import numpy as np
    survived = lost = 0
    details = []
    for t in range(trials):
        rng = np.random.default_rng(t)
        seen = {"bad": 0, "skipped": 0, "steps": 0}
        result = _nan_run(ctx, t, rng, seen)
        finite = all(bool(np.all(np.isfinite(np.asarray(x))))
                     for x in jax.tree.leaves(result))
        ok = finite and seen["bad"] > 0 and seen["skipped"] == seen["bad"]
        survived += ok
        lost += not finite
        details.append({k: seen[k] for k in ("bad", "skipped", "steps")})
    return {"drill": "nan", "trials": trials, "survived": survived, "data_lost": lost,
            "runs": details}


def _nan_run(ctx, t, rng, seen):
    """Trains 3 epochs with NaN pixels in a random 10% of the batches; returns the parameters."""
    import jax
    import numpy as np

    from jvae.app.config import make_config
    from jvae.app.runs import load_data
    from jvae.devices.parallel import data_mesh, replicate, shard_batch
    from jvae.train_state import make_train_step
    from jvae.training.experiment import DataSpec, build, init_state
    from jvae.training.optim import skip_counts
    cfg = make_config({"data_dir": str(ctx["data"]), "batch_size": 64, "hidden": (64,),
                       "latent_dim": 8})
    train, _ = load_data(cfg)
    train = {k: v for k, v in train.items() if k != "label"}
    experiment = build(cfg, DataSpec.of(train))
    mesh = data_mesh(1)
    example = {k: v[:64] for k, v in train.items()}
    state = replicate(init_state(experiment, jax.random.key(t), example), mesh)
    step = make_train_step(experiment.objective, experiment.optimizer, mesh=mesh)
    n = len(train["image"]) // 64
    steps = 3 * n
    bad = set(rng.choice(steps, size=steps // 10, replace=False).tolist())
    for i in range(steps):
        idx = rng.permutation(len(train["image"]))[:64]
        batch = {"image": train["image"][idx].copy(), "mask": np.ones(64, np.float32)}
        if i in bad:
            batch["image"][rng.integers(64)] = np.nan
        state, _ = step(state, shard_batch(batch, mesh))
    seen.update(bad=len(bad), skipped=int(skip_counts(state.opt_state)[0]), steps=steps)
    return state.params


def _malformed_cases(ctx) -> list[tuple[str, list[str], callable]]:
    """(name, extra argv, setup(tmp) -> more argv) for every hand-written case."""
    tmp = ctx["tmp"] / "bad"
    tmp.mkdir(exist_ok=True)

    def file(name, text):
        p = tmp / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(p)

    def data_dir(name, mutate):
        d = tmp / name
        shutil.copytree(ctx["data"], d, dirs_exist_ok=True)
        mutate(d)
        return str(d)

    def trunc(d):
        p = d / "train-images-idx3-ubyte"
        p.write_bytes(p.read_bytes()[:1000])

    def magic(d):
        p = d / "t10k-images-idx3-ubyte"
        p.write_bytes(b"\x01\x02" + p.read_bytes()[2:])

    def labels(d):
        import numpy as np

        from jvae.data import write_idx
        write_idx(d / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))

    def missing(d):
        (d / "t10k-labels-idx1-ubyte").unlink()

    spec_dir = tmp / "spec"
    spec_dir.mkdir(exist_ok=True)
    cases = [
        ("unknown flag", ["--no-such-flag", "1"]),
        ("non-integer batch", ["--batch-size", "abc"]),
        ("negative epochs", ["--epochs", "-1"]),
        ("zero lr", ["--lr", "0"]),
        ("unknown posterior", ["--posterior", "gamma"]),
        ("unknown likelihood", ["--likelihood", "poisson"]),
        ("unknown net", ["--net", "transformer"]),
        ("bad hidden", ["--hidden", "64,x"]),
        ("bad checkpoint interval", ["--checkpoint-every", "10x"]),
        ("zero checkpoint interval", ["--checkpoint-every", "0"]),
        ("negative skip limit", ["--max-consecutive-skips", "-3"]),
        ("batch over data", ["--batch-size", "4096"]),
        ("half distributed flags", ["--coordinator-address", "127.0.0.1:1"]),
        ("bad coordinator", ["--coordinator-address", "nohostport", "--num-processes", "2",
                             "--process-id", "0"]),
        ("settings differ from the run", ["--latent-dim", "4"]),
        ("missing config file", ["--config", str(tmp / "nope.toml")]),
        ("malformed json config", ["--config", file("a.json", "{not json")]),
        ("malformed toml config", ["--config", file("a.toml", "batch_size = = 3")]),
        ("config not a table", ["--config", file("b.json", "[1, 2]")]),
        ("config unknown key", ["--config", file("c.toml", "batchsize = 3\n")]),
        ("config wrong type", ["--config", file("d.json", '{"epochs": "many"}')]),
        ("config bool for int", ["--config", file("e.json", '{"latent_dim": true}')]),
        ("config bad suffix", ["--config", file("f.yaml", "epochs: 3")]),
        ("binary config", ["--config", file("g.json", bytes(range(256)))]),
        ("spec without net=spec", ["--encoder-spec", "mnist_conv"]),
        ("unknown spec", ["--net", "spec", "--encoder-spec", "no_such_arch"]),
        ("malformed spec json", ["--net", "spec", "--encoder-spec", "[{\"type\": "]),
        ("unknown spec layer", ["--net", "spec", "--encoder-spec",
                                '{"encoder": [{"type": "warp"}], "decoder": []}']),
        ("missing spec file", ["--net", "spec", "--encoder-spec", str(spec_dir / "x.json")]),
        ("missing data dir", ["--data-dir", str(tmp / "nodata")]),
        ("truncated IDX", ["--data-dir", data_dir("trunc", trunc)]),
        ("bad IDX magic", ["--data-dir", data_dir("magic", magic)]),
        ("labels do not match images", ["--data-dir", data_dir("labels", labels)]),
        ("missing IDX file", ["--data-dir", data_dir("missing", missing)]),
        ("workdir is a file", ["--workdir", file("afile", "x")]),
        ("workdir under a file", ["--workdir", str(tmp / "afile" / "run")]),
    ]
    return cases


def drill_malformed(ctx, trials) -> dict:
    """Every case in-process through ``main`` (the CLI entry point), plus generated ones."""
    import contextlib
    import io

    from jvae.train import main

    ref = ctx["ref_dir"]
    before = _snapshot(ref)
    results = []

    def check(name, argv, workdir=ref):
        snap = before if workdir == ref else _snapshot(workdir)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # a traceback would have reached the user
            code, err = -1, io.StringIO(f"{type(e).__name__}: {e}\nTraceback")
        text = err.getvalue().strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        ok = (code == 2 and len(lines) == 1 and "Traceback" not in text
              and _snapshot(workdir) == snap)
        results.append({"case": name, "ok": ok, "exit": code,
                        **({} if ok else {"stderr": text[-300:]})})

    base = ["--data-dir", str(ctx["data"]), "--workdir", str(ref), *RUN]
    for name, extra in _malformed_cases(ctx):
        check(name, base + extra)
    # Damaged run directories: exit 2 and left exactly as they were.
    for name, damage in (("corrupt config.json", _corrupt_config),
                         ("no readable checkpoint", _corrupt_all_checkpoints)):
        work = ctx["tmp"] / "bad" / name.replace(" ", "_")
        shutil.copytree(ref, work)
        damage(work)
        check(name, ["--data-dir", str(ctx["data"]), "--workdir", str(work), *RUN], work)
    # A workdir locked by a live run.
    from jvae.app.lock import WorkdirLock
    with WorkdirLock(ref):
        check("workdir in use", base + ["--epochs", "4"])
    # Generated: random config files and flag values (hypothesis).
    _generated(ctx, base, check, trials)
    bad = [r for r in results if not r["ok"]]
    return {"drill": "malformed", "trials": len(results), "survived": len(results) - len(bad),
            "data_lost": int(_snapshot(ref) != before), "failures": bad[:10]}


def _corrupt_config(work: Path) -> None:
    (work / "config.json").write_text('{"epochs": 3, "lr"')


def _corrupt_all_checkpoints(work: Path) -> None:
    for p in (work / "checkpoints").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _generated(ctx, base, check, trials) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    numeric = ["--epochs", "--batch-size", "--latent-dim", "--lr", "--seed", "--beta"]
    not_a_number = st.text(min_size=1, max_size=12).filter(
        lambda s: not _parses_as_number(s) and not s.startswith("-"))

    examples = settings(max_examples=trials * 3, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck))

    @examples
    @given(flag=st.sampled_from(numeric), value=not_a_number)
    def bad_flag(flag, value):
        check(f"generated {flag}={value!r}", base + [flag, value])

    @examples
    @given(text=st.text(max_size=40).filter(lambda s: not _json_object(s)))
    def bad_config(text):
        path = ctx["tmp"] / "bad" / "generated.json"
        path.write_text(text)
        check(f"generated config {text[:20]!r}", base + ["--config", str(path)])

    bad_flag()
    bad_config()


def _parses_as_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def _json_object(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except ValueError:
        return False


# -- page_flood: the live page under a flood of connections ---------------------
FLOOD_IDLE = 1100
FLOOD_DECODES = 200
# Long enough to train through the flood, the server's read timeout and the check after.
FLOOD_EPOCHS = "60"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_nofile() -> None:
    """The training process gets the usual soft limit of 1,024 open files (the flood's target)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


def _raise_nofile(need: int) -> None:
    """Lets this process open the flood's sockets (its soft limit up to ``need``)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY
                                                    else min(need, hard), hard))


def _page_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _wait_for_page(port: int, proc, timeout: float = 300) -> bool:
    """Waits until the page serves a decodable model (its latent map is published)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            status, body = _page_get(port, "/api/state", 2)
            if status == 200 and "latents" in json.loads(body):
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def _count_fds(pid: int, peak: dict, stop) -> None:
    """The training process's open files, sampled until ``stop`` is set (Linux)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    while not stop.is_set():
        try:
            peak["fds"] = max(peak.get("fds", 0), len(os.listdir(fd_dir)))
        except OSError:
            return
        stop.wait(0.1)


def _open_idle(port: int, n: int) -> list:
    """``n`` connections that send nothing, opened one after another (as a client
    would, each handshake done before the next) and then left non-blocking."""
    import socket
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            s = socket.socket()  # counted as never connected
        s.setblocking(False)
        socks.append(s)
    return socks


def _listen_overflows() -> int | None:
    """Connections the kernel dropped at a full listen backlog so far (Linux's TcpExt)."""
    try:
        names, values = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines()
                         if ln.startswith("TcpExt:")]
    except (OSError, ValueError):
        return None
    return int(values[names.index("ListenOverflows")])


def _idle_outcomes(socks: list) -> dict:
    """What became of each idle connection: answered 503, dropped by the server's read
    timeout, reset, never connected, or unanswered (open as far as this side knows:
    held by the server within its read timeout, or never accepted, its handshake's
    last packet dropped at a full backlog)."""
    import errno
    import select
    import socket
    counts = {"refused_503": 0, "dropped": 0, "reset": 0, "unanswered": 0, "not_connected": 0}
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLOUT)
    writable = {fd for fd, ev in poller.poll(0) if ev & (select.POLLOUT | select.POLLIN)}
    for s in socks:
        if s.fileno() not in writable or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            counts["not_connected"] += 1
            continue
        try:
            data = s.recv(64)
        except BlockingIOError:
            counts["unanswered"] += 1
        except OSError as e:
            counts["reset" if e.errno == errno.ECONNRESET else "not_connected"] += 1
        else:
            counts["refused_503" if data.startswith(b"HTTP/1.0 503") else "dropped"] += 1
    return counts


def _decode_once(port: int, latent: int) -> str:
    """One decode request: its status, or how it failed (reset, timeout, error)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/api/decode", json.dumps({"z": [0.0] * latent}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return str(r.status)
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return "reset"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return type(e).__name__
    finally:
        conn.close()


def _flood(port: int, latent: int, hold_s: float) -> dict:
    """1,100 idle connections and 200 concurrent decodes; the idle ones are held
    ``hold_s`` (past the server's read timeout), then closed."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor
    t0, overflows = time.monotonic(), _listen_overflows()
    idle = _open_idle(port, FLOOD_IDLE)
    with ThreadPoolExecutor(FLOOD_DECODES) as pool:
        decodes = Counter(pool.map(lambda _: _decode_once(port, latent), range(FLOOD_DECODES)))
    time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
    outcomes = _idle_outcomes(idle)
    for s in idle:
        s.close()
    after = _listen_overflows()
    return {"idle": outcomes, "decodes": dict(sorted(decodes.items())),
            "listen_overflows": None if after is None else after - overflows}


def _page_answers(port: int, proc, timeout: float = 10) -> int | None:
    """The status of a plain ``GET /api/state`` once the page takes requests again."""
    deadline, status = time.monotonic() + timeout, None
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            status = _page_get(port, "/api/state")[0]
        except OSError:
            status = None
        if status == 200:
            break
        time.sleep(0.2)
    return status


def drill_page_flood(ctx, trials) -> dict:
    """A run with its page under a flood; survived when the run exits 0 and the page
    answers again after the flood."""
    import threading

    from jvae.app.dashboard.limits import READ_TIMEOUT_S
    _raise_nofile(FLOOD_IDLE + FLOOD_DECODES + 512)
    survived = lost = 0
    runs = []
    for t in range(trials):
        port, work = _free_port(), ctx["tmp"] / f"page_flood{t}"
        argv = _cmd(ctx["data"], work, "--epochs", FLOOD_EPOCHS, "--dashboard-port", str(port))
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(argv, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=err, text=True, preexec_fn=_default_nofile)
            peak, stop = {}, threading.Event()
            threading.Thread(target=_count_fds, args=(proc.pid, peak, stop), daemon=True).start()
            run = {"page_up": _wait_for_page(port, proc)}
            if run["page_up"]:
                run.update(_flood(port, int(RUN[RUN.index("--latent-dim") + 1]),
                                  READ_TIMEOUT_S + 2))
                run["after"] = _page_answers(port, proc)
                run["trained_through_flood"] = proc.poll() is None
            rc = proc.wait(timeout=900)
            stop.set()
            err.seek(0)
            text = err.read()
        run.update(exit=rc, train_fds_peak=peak.get("fds"), stderr_lines=len(text.splitlines()),
                   traceback="Traceback" in text, epochs=len(_rows(work)))
        ok = rc == 0 and run.get("after") == 200 and not run["traceback"]
        survived += ok
        lost += rc != 0 or run["epochs"] != int(FLOOD_EPOCHS)
        runs.append(run)
    return {"drill": "page_flood", "trials": trials, "survived": survived, "data_lost": lost,
            "runs": runs}


# -- image_folder: training and jvae reconstruct read a folder's files alike ----------------

def _photo_folder(root: Path, seed: int) -> None:
    """A 16-bit PNG with its 8-bit twin, a phone JPEG stored sideways (EXIF orientation 6),
    a wide image and a dozen squares."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    grey = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "deep.png")
    Image.fromarray(grey).save(root / "deep8.png")
    upright = np.zeros((64, 32, 3), np.uint8)
    upright[:20], upright[20:] = (230, 20, 20), (20, 200, 40)
    phone = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))
    exif = phone.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    phone.save(root / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(rng.integers(0, 256, (24, 72, 3), dtype=np.uint8)).save(root / "wide.png")
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"x{i}.png")


def _image_folder_trial(work: Path, size: int, env: dict) -> dict:
    """Trains one short epoch on a photo folder, reconstructs it, compares the originals."""
    import numpy as np
    from PIL import Image

    from jvae.datasets.folders import load_folder
    folder, run, out = work / "photos", work / "run", work / "recon"
    _photo_folder(folder, size)
    train = [sys.executable, "-m", "jvae.train", "--data-source", str(folder), "--workdir",
             str(run), "--epochs", "1", "--image-size", str(size), "--channels", "3",
             "--batch-size", "8", "--hidden", "32", "--latent-dim", "4", "--num-images", "8",
             "--no-dashboard", "--no-tensorboard"]
    recon = [sys.executable, "-m", "jvae", "reconstruct", "--workdir", str(run), "--input",
             str(folder), "--output", str(out)]
    codes = [subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=900).returncode for argv in (train, recon)]
    data = load_folder(folder, image_size=size, channels=3, cache=False)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.iterdir())
    mismatched = []
    for rel, pixels in zip(files, data.data):
        png = (out / rel).with_suffix(".png")
        if not png.is_file():
            mismatched.append(rel)
            continue
        with Image.open(png) as im:  # the original, then its reconstruction
            if not np.array_equal(np.asarray(im)[:, :size], pixels):
                mismatched.append(rel)
    phone, deep, deep8 = (data.data[files.index(f)] for f in ("phone.jpg", "deep.png",
                                                              "deep8.png"))
    return {"size": size, "exit": codes, "images": len(files), "mismatched": mismatched,
            "upright": bool(phone[0, :, 0].mean() > 150 and phone[-1, :, 1].mean() > 150),
            "deep_mean_diff": round(abs(float(deep.mean()) - float(deep8.mean())) / 255, 5)}


def drill_image_folder(ctx, trials) -> dict:
    """Survived when both commands exit 0, every original in the reconstruct PNGs equals the
    training array, the sideways photo trains upright and the 16-bit image's mean is its
    8-bit twin's (within 1/255)."""
    survived = lost = 0
    runs = []
    for t in range(trials):
        work = ctx["tmp"] / f"image_folder{t}"
        env = {**_env(), "JVAE_DATA_DIR": str(work / "data_home")}  # its cache, not the user's
        run = _image_folder_trial(work, 16 + 8 * t, env)
        ok = (run["exit"] == [0, 0] and not run["mismatched"] and run["upright"]
              and run["deep_mean_diff"] <= 1 / 255)
        survived += ok
        lost += bool(run["mismatched"])  # the modes saw other pixels than training
        runs.append(run)
    return {"drill": "image_folder", "trials": trials, "survived": survived, "data_lost": lost,
            "runs": runs}


# -- failed_first_checkpoint: the first checkpoint's write fails, the run is rerun ----------

# A file-size limit the run's small files fit under and a checkpoint's data does not: the
# write fails in orbax's background thread, as on a full disk, after epoch 1's row.
FIRST_SAVE_LIMIT = 256 * 1024


def _small_files_only() -> None:
    """In the child: writes past FIRST_SAVE_LIMIT fail with EFBIG (no SIGXFSZ kill)."""
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FIRST_SAVE_LIMIT, FIRST_SAVE_LIMIT))


def drill_failed_first_checkpoint(ctx, trials) -> dict:
    """Survived when the failing run exits 3 with one line and no checkpoint, and the rerun
    (no limit: a bigger disk) ends with the reference's rows, no epoch twice."""
    survived = lost = 0
    runs = []
    extra = ("--checkpoint-every", "epoch", "--no-dashboard", "--no-tensorboard")
    for t in range(trials):
        work = ctx["tmp"] / f"failed_first{t}"
        first = subprocess.run(_cmd(ctx["data"], work, *extra), env=_env(), cwd=REPO,
                               capture_output=True, text=True, timeout=900,
                               preexec_fn=_small_files_only)
        # Landed: epoch 1's row written, no checkpoint finished.
        landed = [r["epoch"] for r in _rows(work)] == [1] and _newest_step(work) is None
        rerun = _train(ctx["data"], work, *extra)
        rows = _rows(work)
        run = {"exit": [first.returncode, rerun.returncode], "landed": landed,
               "stderr_lines": len(first.stderr.strip().splitlines()),
               "traceback": "Traceback" in first.stderr + rerun.stderr,
               "epochs_after_rerun": [r["epoch"] for r in rows]}
        ok = (run["exit"] == [3, 0] and landed and run["stderr_lines"] == 1
              and not run["traceback"] and rows == ctx["ref_rows"])
        survived += ok
        lost += rows != ctx["ref_rows"]
        runs.append(run)
    return {"drill": "failed_first_checkpoint", "trials": trials, "survived": survived,
            "data_lost": lost, "runs": runs}


# -- export_into_run: the write guard against a run's own files ---------------------

def _imported_run(folder: Path, seed: int) -> Path:
    """A run imported from a small AutoencoderKL of random weights written here."""
    from jvae.app.modes.weights import import_diffusers, write_random_weights

    src = write_random_weights(folder / "src", TINY_KL, seed=seed)
    return import_diffusers(src, folder / "run", data_shape=(8, 8, 1))


# A one-level AutoencoderKL for 8x8 grey images: imports in a second.
TINY_KL = {"_class_name": "AutoencoderKL", "in_channels": 1, "out_channels": 1,
           "latent_channels": 2, "block_out_channels": [8], "layers_per_block": 1,
           "norm_num_groups": 4, "sample_size": 8, "scaling_factor": 0.5}


def _jvae(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jvae", *argv], env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def drill_export_into_run(ctx, trials) -> dict:
    """Survived when every export into a run's files exits 2 with one line and changes no
    byte of either run, and the run still samples afterwards."""
    survived = lost = 0
    failures = []
    for t in range(trials):
        root = ctx["tmp"] / f"export{t}"
        run, other = _imported_run(root / "a", t), _imported_run(root / "b", t + 1000)
        before = [_snapshot(run), _snapshot(other)]
        cases = {"itself": run, "another run": other,
                 "its checkpoints": run / "checkpoints" / "exported"}
        ok = True
        for name, output in cases.items():
            r = _jvae("export-weights", "--workdir", str(run), "--output", str(output))
            lines = r.stderr.strip().splitlines()
            if r.returncode != 2 or len(lines) != 1 or "Traceback" in r.stderr:
                ok = False
                failures.append({"trial": t, "case": name, "exit": r.returncode,
                                 "stderr": r.stderr[-300:]})
        intact = [_snapshot(run), _snapshot(other)] == before
        sample = _jvae("sample", "--workdir", str(run), "--output", str(root / "s.png"))
        ok = ok and intact and sample.returncode == 0
        if sample.returncode != 0:
            failures.append({"trial": t, "case": "sample after", "exit": sample.returncode,
                             "stderr": sample.stderr[-300:]})
        survived += ok
        lost += not intact
    return {"drill": "export_into_run", "trials": trials, "survived": survived,
            "data_lost": lost, "cases_per_trial": 3, "failures": failures[:10]}


def _reference(ctx) -> int:
    """Trains the uninterrupted reference run the comparing drills need; its exit status."""
    ref = ctx["tmp"] / "reference"
    rc, err, train_s = _interrupted(ctx["data"], ref, None, 0)
    if rc != 0:
        print(err, file=sys.stderr)
        return rc
    # Seconds from taking the workdir to the end: where a signal can land.
    ctx.update(ref_dir=ref, ref_rows=_rows(ref), ref_s=train_s)
    print(json.dumps({"drill": "reference", "seconds": round(ctx["ref_s"], 1),
                      "rows": len(ctx["ref_rows"])}), flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drills", default=",".join(DRILLS))
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--out", help="append the rows to this file")
    p.add_argument("--run-flags", default="",
                   help="more jvae train flags for every run, e.g. \"--net conv --recipe ldm_no_lpips "
                        "--adv-start 20 --ema-decay 0.99\"")
    args = p.parse_args(argv)
    RUN.extend(args.run_flags.split())
    chosen = [d for d in args.drills.split(",") if d]
    unknown = set(chosen) - set(DRILLS)
    if unknown:
        p.error(f"unknown drills {sorted(unknown)}; choose from {', '.join(DRILLS)}")
    with tempfile.TemporaryDirectory(prefix="jvae-drills-") as tmp:
        tmp = Path(tmp)
        (tmp / "mnist").mkdir()
        ctx = {"tmp": tmp, "data": _tiny_mnist(tmp / "mnist"), "steps_per_epoch": 2048 // 64}
        if set(chosen) - set(STANDALONE) and _reference(ctx) != 0:
            return 1
        run = {"kill9": lambda: drill_kill(ctx, args.trials),
               "sigterm": lambda: drill_kill(ctx, args.trials, signal.SIGTERM, "sigterm",
                                             ("--checkpoint-every", "epoch")),
               "corrupt": lambda: drill_corrupt(ctx, args.trials),
               "nan": lambda: drill_nan(ctx, max(1, args.trials // 2)),
               "malformed": lambda: drill_malformed(ctx, args.trials),
               "page_flood": lambda: drill_page_flood(ctx, args.trials),
               "image_folder": lambda: drill_image_folder(ctx, args.trials),
               "failed_first_checkpoint": lambda: drill_failed_first_checkpoint(ctx, args.trials),
               "export_into_run": lambda: drill_export_into_run(ctx, args.trials)}
        for name in chosen:
            t0 = time.perf_counter()
            row = {**run[name](), "seconds": round(time.perf_counter() - t0, 1)}
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
