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
  run: exit 2, one line on stderr, no traceback, the workdir byte-identical.

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
DRILLS = ("kill9", "sigterm", "corrupt", "nan", "malformed")


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
        ref = tmp / "reference"
        rc, err, train_s = _interrupted(ctx["data"], ref, None, 0)
        if rc != 0:
            print(err, file=sys.stderr)
            return 1
        # Seconds from taking the workdir to the end: where a signal can land.
        ctx.update(ref_dir=ref, ref_rows=_rows(ref), ref_s=train_s)
        print(json.dumps({"drill": "reference", "seconds": round(ctx["ref_s"], 1),
                          "rows": len(ctx["ref_rows"])}), flush=True)
        run = {"kill9": lambda: drill_kill(ctx, args.trials),
               "sigterm": lambda: drill_kill(ctx, args.trials, signal.SIGTERM, "sigterm",
                                             ("--checkpoint-every", "epoch")),
               "corrupt": lambda: drill_corrupt(ctx, args.trials),
               "nan": lambda: drill_nan(ctx, max(1, args.trials // 2)),
               "malformed": lambda: drill_malformed(ctx, args.trials)}
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
