"""Bad input is one line and exit 2 and writes nothing; a run's files are never an output.

Each command here is refused: it must exit 2 with exactly one line on stderr
and leave every file of the runs involved byte for byte as it was (and create
no output folder). The last tests keep the library noise of a failed save or
a skipped checkpoint to the one line jvae prints.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from jvae.app import runs
from jvae.app.config import ConfigError, make_config
from jvae.app.write_guard import OutputError, check_output_file, check_output_folder, is_run_dir
from jvae.train import train_and_evaluate

from helpers import run_cli

# Its module-scoped fixtures train once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("guard")

TINY = {"dataset": "digits", "epochs": 1, "batch_size": 64, "eval_batch_size": 64,
        "hidden": [16], "latent_dim": 2, "num_images": 8, "quality_images": 64,
        "data_placement": "host", "dashboard": False, "tensorboard": False}


def _snapshot(folder):
    """Every file's bytes (hashed) but the lock's, which only marks a run's presence."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _refused(argv, capsys, *folders, message=""):
    """Runs ``jvae argv``: exit 2, one stderr line holding ``message``, ``folders`` unchanged."""
    before = [_snapshot(f) for f in folders]
    code, out = run_cli(argv, capsys)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, out.err[-2000:])
    assert message in lines[0], lines[0]
    assert [_snapshot(f) for f in folders] == before
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run of one epoch on the bundled digits."""
    workdir = tmp_path_factory.mktemp("guard") / "run"
    train_and_evaluate(make_config(TINY), workdir, quiet=True)
    return workdir


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A run imported from a small AutoencoderKL whose weights are written here (no torch)."""
    from jvae.app.modes.weights import import_diffusers, write_random_weights

    root = tmp_path_factory.mktemp("imported")
    config = {"_class_name": "AutoencoderKL", "in_channels": 1, "out_channels": 1,
              "latent_channels": 2, "block_out_channels": [8], "layers_per_block": 1,
              "norm_num_groups": 4, "sample_size": 8, "scaling_factor": 0.5}
    src = write_random_weights(root / "src", config)
    return import_diffusers(src, root / "run", data_shape=(8, 8, 1))


# --- the write guard --------------------------------------------------------------------

def test_export_into_its_own_or_another_run_is_refused(imported, run, capsys):
    """The red-team case: export-weights --output WORKDIR replaced the run's config.json."""
    for target in (imported, run):
        _refused(["export-weights", "--workdir", str(imported), "--output", str(target)],
                 capsys, imported, run, message="is a run directory")
    _refused(["export-weights", "--workdir", str(imported), "--output",
              str(run / "checkpoints" / "exported")], capsys, imported, run,
             message="lies in checkpoints/ of the run")


def test_export_still_writes_a_new_folder(imported, tmp_path, capsys):
    code, out = run_cli(["export-weights", "--workdir", str(imported), "--output",
                         str(tmp_path / "out")], capsys)
    assert code == 0, out.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors"]
    assert not is_run_dir(tmp_path / "out")  # diffusers' config.json is no run's


def test_export_of_a_missing_step_or_to_an_impossible_path_is_one_line(imported, tmp_path,
                                                                      capsys):
    (tmp_path / "afile").write_text("x")
    _refused(["export-weights", "--workdir", str(imported), "--output", str(tmp_path / "o"),
              "--step", "999"], capsys, imported, message="no checkpoint of step 999")
    _refused(["export-weights", "--workdir", str(imported), "--output",
              str(tmp_path / "afile" / "o")], capsys, imported, message="is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_mode_outputs_never_land_in_a_run(run, tmp_path, capsys):
    """sample, evaluate, reconstruct and decode against the run's own files: refused before
    the run is read, every byte of it kept."""
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.png")
    np.save(tmp_path / "codes.npy", np.zeros((1, 2), np.float32))
    w = ["--workdir", str(run)]
    grid = sorted((run / "images").iterdir())[0]
    for argv in (["sample", *w, "--output", str(grid)],
                 ["evaluate", *w, "--output", str(run / "metrics.jsonl")],
                 ["reconstruct", *w, "--input", str(images), "--output", str(run)],
                 ["decode", *w, "--input", str(tmp_path / "codes.npy"), "--output", str(run)]):
        _refused(argv, capsys, run, message=str(run))


def test_outputs_under_a_file_are_one_line_and_create_nothing(run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "sub"
    w = ["--workdir", str(run)]
    for argv in (["sample", *w, "--output", str(bad / "s.png")],
                 ["encode", *w, "--dataset", "digits", "--output", str(bad / "c.npz")],
                 ["evaluate", *w, "--output", str(bad / "e.json")],
                 ["reconstruct", *w, "--input", str(tmp_path), "--output", str(bad)]):
        _refused(argv, capsys, run, message="is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_outputs_and_workdir_are_one_line(run, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    copy = shutil.copytree(run, tmp_path / "copy")
    for folder in (ro, copy):
        folder.chmod(0o555)
    try:
        _refused(["sample", "--workdir", str(run), "--output", str(ro / "s.png")], capsys,
                 message="read-only")
        _refused(["evaluate", "--workdir", str(copy)], capsys, copy, message="read-only")
    finally:
        for folder in (ro, copy):
            folder.chmod(0o755)


def test_a_file_beside_the_runs_files_is_allowed(run, tmp_path):
    assert check_output_file(run / "samples.png") == run / "samples.png"
    assert check_output_folder(run / "exports" / "one")  # a new folder inside the run
    for path in (run / "config.json", run / "images" / "x.png", run / "checkpoints" / "1"):
        with pytest.raises(OutputError, match="of the run in"):
            check_output_file(path)
    assert not list(run.glob("exports"))  # checking creates nothing


def test_train_inside_another_runs_entries_is_refused(run, capsys):
    _refused(["train", "--workdir", str(run / "images" / "new"), "--dataset", "digits"],
             capsys, run, message="lies in images/ of the run")


# --- settings and flags ---------------------------------------------------------------

@pytest.mark.parametrize("flags,message", [
    (["--lr", "inf"], "lr=inf is not a finite number"),
    (["--beta", "nan"], "beta=nan is not a finite number"),
    (["--seed", "99999999999999999999999"], "seed=99999999999999999999999 is too large"),
    (["--num-devices", "64"], "num_devices=64 asks for more devices than the 8 available"),
])
def test_settings_are_refused_before_the_workdir_is_written(tmp_path, capsys, flags, message):
    _refused(["train", "--dataset", "digits", "--workdir", str(tmp_path / "w"), *flags], capsys,
             message=message)
    assert not (tmp_path / "w").exists()


def test_every_float_setting_must_be_finite():
    import dataclasses
    import typing

    from jvae.app.config import Config
    hints = typing.get_type_hints(Config)
    floats = [f.name for f in dataclasses.fields(Config)
              if float in (hints[f.name], *typing.get_args(hints[f.name]))]
    assert len(floats) > 10
    for name in floats:
        for bad in (float("inf"), float("-inf"), float("nan")):
            with pytest.raises(ConfigError, match=f"{name}=.* is not a finite number"):
                make_config({name: bad})


def test_a_deeply_nested_or_huge_config_file_is_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    huge = tmp_path / "huge.json"
    huge.write_text('{"lr": 1' + "0" * 400 + "}")
    for path, message in ((deep, "nests its values too deeply"), (huge, "is not a valid float")):
        _refused(["train", "--config", str(path), "--workdir", str(tmp_path / "w")], capsys,
                 message=message)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flags,message", [
    (["--sizes", "0"], "--sizes '0' must be 2 comma-separated positive integers"),
    (["--sizes", "64,64"], "two different batch sizes"),
    (["--fraction", "2"], "--fraction must be in (0, 1]"),
    (["--data-shape", "0,0,0"], "--data-shape '0,0,0' must be comma-separated positive"),
    (["--budget-mb", "-1"], "--budget-mb must be positive"),
    (["--budget-mb", "inf"], "inf is not a finite number"),
])
def test_memory_flags_are_checked(capsys, flags, message):
    _refused(["memory", "--hidden", "16", *flags], capsys, message=message)


def test_mode_float_and_seed_flags_are_checked(run, tmp_path, capsys):
    w = ["--workdir", str(run), "--output", str(tmp_path / "o.png")]
    for argv, message in ((["traverse", *w, "--range", "inf"], "inf is not a finite number"),
                          (["sample", *w, "--temperature", "nan"], "nan is not a finite number"),
                          (["sample", *w, "--seed", "99999999999999999999999"],
                           "outside 0..2**63 - 1")):
        _refused(argv, capsys, run, message=message)
    assert not (tmp_path / "o.png").exists()


def test_codes_beyond_float32_are_refused(run, tmp_path, capsys):
    np.save(tmp_path / "codes.npy", np.full((1, 2), 1e39))  # float64: inf as float32
    _refused(["decode", "--workdir", str(run), "--input", str(tmp_path / "codes.npy"),
              "--output", str(tmp_path / "out")], capsys, run, message="not finite as float32")
    assert not (tmp_path / "out").exists()


# --- sizes within memory ------------------------------------------------------------------

def _small_budget(monkeypatch, nbytes):
    import jvae.devices.budget as budget
    monkeypatch.setattr(budget, "device_memory_budget", lambda *a, **k: nbytes)


def test_an_image_size_past_the_device_is_refused_before_the_data_is_read(
        tmp_path, capsys, monkeypatch):
    """--image-size 100000 was resized and then killed by the OOM killer; the same check at a
    budget of 512 KiB refuses 256x256 (1 MiB at batch 1) without reading the data."""
    _small_budget(monkeypatch, 2**19)
    monkeypatch.setattr(runs, "load_splits", lambda *a, **k: pytest.fail("data was read"))
    _refused(["train", "--dataset", "digits", "--image-size", "256", "--workdir",
              str(tmp_path / "w")], capsys, message="image_size=256 makes one example 256.0 KiB")
    assert not (tmp_path / "w").exists()


def test_a_resized_dataset_past_the_host_is_refused_before_it_is_resized(
        tmp_path, capsys, monkeypatch):
    _small_budget(monkeypatch, 2**30 // len(jax.local_devices(backend="cpu")))
    monkeypatch.setattr(runs, "fit_images", lambda *a, **k: pytest.fail("resized"))
    _refused(["train", "--dataset", "digits", "--image-size", "512", "--workdir",
              str(tmp_path / "w")], capsys, message="the 1,797 images of digits 2.2 GiB")
    assert not (tmp_path / "w").exists()


def test_a_model_past_the_device_is_refused(tmp_path, capsys, monkeypatch):
    _small_budget(monkeypatch, 2**20)
    _refused(["train", "--dataset", "digits", "--hidden", "4096", "--workdir",
              str(tmp_path / "w")], capsys, message="the model's train state takes")
    assert not (tmp_path / "w").exists()


# --- refused resumes, failed writes ---------------------------------------------------------

def test_a_refused_resume_leaves_the_runs_settings(run, tmp_path, capsys):
    """No checkpoint reads back: exit 2, and config.json keeps the saved --epochs."""
    work = shutil.copytree(run, tmp_path / "damaged")
    for p in (work / "checkpoints").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(p.read_bytes()[:10])
    _refused(["train", "--workdir", str(work), "--epochs", "3"], capsys, work,
             message="no usable checkpoint")


def test_a_workdir_deleted_mid_run_is_exit_3_in_one_line(tmp_path, monkeypatch):
    """The epoch's images cannot be written (the workdir went away): one line, exit 3."""
    from jvae.app import trainer
    from jvae.app.run_guard import SaveFailed

    def gone(folder, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(folder))
    monkeypatch.setattr(trainer, "save_epoch_images", gone)
    with pytest.raises(SaveFailed, match=r"writing epoch 1's samples .* failed \(No such file"
                       ) as e:
        train_and_evaluate(make_config(TINY), tmp_path / "w", quiet=True)
    assert e.value.exit_code == 3 and len(str(e.value).splitlines()) == 1


def test_abandoned_tensorstore_futures_are_not_logged(tmp_path, caplog):
    """A restore abandoned at its first unreadable file leaves the other reads' futures failed
    and never awaited; asyncio logs each with a traceback when it is collected."""
    import asyncio
    import gc
    import logging

    from jvae.app.checkpoint import Checkpointer
    Checkpointer(tmp_path / "c").close()  # a Checkpointer quiets what it reports itself

    def abandon(message):
        loop = asyncio.new_event_loop()
        future = loop.create_future()
        future.set_exception(ValueError(message))
        loop.close()
        del future
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        abandon('OUT_OF_RANGE: Error reading "step/0" in OCDBT database')
        abandon("a failure of someone else's")
    logged = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert len(logged) == 1 and "someone else's" in logged[0], logged


_NOISE = textwrap.dedent("""
    import gc, pathlib, resource, signal, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from jvae.app.checkpoint import Checkpointer
    from jvae.training.state import TrainState

    def state(step):
        rng = np.random.default_rng(step)
        params = {f"w{i}": jnp.asarray(rng.standard_normal(20_000), jnp.float32)
                  for i in range(8)}
        return TrainState(step=jnp.int32(step), params=params, opt_state=(),
                          key=jax.random.key(step))

    def damaged(folder, damage):  # two checkpoints, the newest damaged: one warning
        with Checkpointer(folder) as ckpt:
            ckpt.save(1, state(1), {"epoch": 1})
            ckpt.save(2, state(2), {"epoch": 2})
        for p in pathlib.Path(folder, "2").rglob("*"):
            if p.is_file() and (damage == "empty" or p.parent.name == "d"):
                p.write_bytes(b"" if damage == "empty" else p.read_bytes()[:10])
        with Checkpointer(folder) as ckpt:
            ckpt.restore_newest_valid(state(0), move_aside=False)

    root = sys.argv[1]
    damaged(root + "/truncated", "truncate")  # reads abandoned mid-way
    damaged(root + "/emptied", "empty")  # unreadable metadata
    time.sleep(1.0)  # the abandoned reads finish and are collected
    gc.collect()
    # A full disk: writes past 50 kB fail (the limit's signal ignored, so they raise EFBIG).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    try:
        with Checkpointer(root + "/full") as ckpt:
            ckpt.save(1, state(1), {"epoch": 1})
            ckpt.wait()
    except Exception as e:
        print("save failed:", type(e).__name__, file=sys.stderr)
    time.sleep(1.0)
    gc.collect()
""")


def test_failed_saves_and_skipped_checkpoints_print_only_jvaes_line(tmp_path):
    """orbax's threads log each failure with a traceback and tensorstore's late callbacks
    print more; what reaches stderr is the warning and the caller's line."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    r = subprocess.run([sys.executable, "-c", _NOISE, str(tmp_path)], capture_output=True,
                       text=True, timeout=300, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 3, r.stderr[-3000:]
    assert all(line.startswith("warning: skipping checkpoint 2: it cannot be read")
               for line in lines[:2])
    assert lines[2].startswith("save failed:")
