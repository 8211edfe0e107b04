"""A real (tiny) training run with the live page and TensorBoard logs: a
headless Chromium watches it, clicks the latent map and drags a slider; the
event files are read back with TensorBoard's own reader."""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import pytest

from jvae.app.config import make_config
from jvae.app.dashboard import Dashboard
from jvae.app.tensorboard import EMBEDDING_TAG, TensorBoardLogger
from jvae.train import train_and_evaluate

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("dashboard_live")

BROWSERS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = os.environ.get("JVAE_SCREENSHOT_DIR")


class Gate:
    """A hook that holds the run at the end of each epoch until the test lets it go,
    so the page is looked at while training is under way."""

    def __init__(self):
        self.arrived = threading.Semaphore(0)
        self.go = threading.Semaphore(0)

    def on_epoch(self, row, params):
        self.arrived.release()
        self.go.acquire(timeout=120)

    def wait(self):
        assert self.arrived.acquire(timeout=120), "training did not reach the end of an epoch"


class LiveRun:
    def __init__(self, data_dir, workdir):
        cfg = make_config({"data_dir": str(data_dir), "batch_size": 32, "eval_batch_size": 128,
                           "hidden": (32,), "latent_dim": 4, "num_images": 16, "epochs": 2,
                           "num_devices": 1})
        self.workdir = workdir
        self.dash = Dashboard("127.0.0.1", 0, quiet=True)
        self.gate = Gate()
        self.error = None
        hooks = [self.dash, TensorBoardLogger(), self.gate]

        def run():
            try:
                train_and_evaluate(cfg, workdir, quiet=True, hooks=hooks)
            except BaseException as e:  # reported by finish()
                self.error = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self):
        self.gate.go.release(10)
        self.thread.join(timeout=120)
        assert not self.thread.is_alive() and self.error is None, self.error


@pytest.fixture(scope="module")
def live_run(tiny_mnist_dir, tmp_path_factory):
    run = LiveRun(tiny_mnist_dir, tmp_path_factory.mktemp("live"))
    yield run
    run.finish()


def _browser_path():
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    path = next((p for p in BROWSERS if Path(p).is_file()), shutil.which("chromium"))
    if path is None:
        pytest.skip("no Chromium to drive: apt-get install chromium")
    return path


def test_the_page_follows_training_and_decodes_clicks_and_slider_drags(live_run, tmp_path):
    from playwright.sync_api import sync_playwright
    executable = _browser_path()
    live_run.gate.wait()  # epoch 1 done, epoch 2 waits
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live_run.dash.url)
            page.wait_for_function("window.jvae.train.length > 0 && window.jvae.map !== null")
            seen = page.evaluate("window.jvae.train.length")
            live_run.gate.go.release()  # epoch 2 trains; its chunks arrive without a reload
            live_run.gate.wait()
            page.wait_for_function(f"window.jvae.train.length > {seen} && "
                                   "window.jvae.test.length === 2", timeout=60_000)
            assert page.locator("#chart-loss").is_visible()

            before = page.evaluate("window.jvae.decodes")
            page.click("#map", position={"x": 300, "y": 120})
            page.wait_for_function(f"window.jvae.decodes > {before}")
            page.wait_for_function("document.getElementById('decoded').naturalWidth === 112")
            z_click = page.evaluate("window.jvae.z")

            box = page.locator("#z0").bounding_box()
            before = page.evaluate("window.jvae.decodes")
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + 4, y)
            page.mouse.down()
            for frac in (0.3, 0.6, 0.95):
                page.mouse.move(box["x"] + frac * box["width"], y, steps=3)
            page.mouse.up()
            page.wait_for_function(f"window.jvae.decodes > {before}")
            z_drag = page.evaluate("window.jvae.z")
            assert z_drag[0] != z_click[0] and z_drag[1:] == z_click[1:]

            page.click("#interp-random")
            page.wait_for_function("document.getElementById('interp-strip').naturalWidth > 0")
            shot = Path(SCREENSHOT_DIR or tmp_path) / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


def test_tensorboard_logs_read_back_with_tensorboards_reader(live_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    live_run.finish()
    logdir = live_run.workdir / "tb"
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/kl", "test/neg_elbo", "test/recon", "epoch/train_loss"} <= set(
        tags["scalars"])
    test_steps = [e.step for e in acc.Scalars("test/neg_elbo")]
    assert test_steps == [16, 32]  # 512 images / 32 per step, two epochs
    assert len(acc.Scalars("train/loss")) == 32  # one point per one-step chunk
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert acc.Images("samples")[-1].encoded_image_string[:4] == b"\x89PNG"
    config = (logdir / "projector_config.pbtxt").read_text()
    assert config.count(f"tensor_name: \"{EMBEDDING_TAG}:") == 2  # one per epoch
    for epoch in ("00001", "00002"):
        folder = logdir / epoch / EMBEDDING_TAG
        assert len((folder / "metadata.tsv").read_text().split()) == 256  # the test split
        assert (folder / "sprite.png").is_file()
        assert len((folder / "tensors.tsv").read_text().splitlines()) == 256


def test_serve_opens_the_page_of_a_finished_run(live_run):
    from jvae.app.dashboard import serve
    live_run.finish()
    stop, pages = threading.Event(), []

    def ready(dash):
        pages.append(json.loads(urlopen(dash.url + "api/state", timeout=30).read()))
        stop.set()
    serve(live_run.workdir, "127.0.0.1", 0, poll_s=0.05, stop=stop, ready=ready)
    state = pages[0]
    assert [row["epoch"] for row in state["test"]] == [1, 2]
    assert state["latents"]["epoch"] == 2 and state["image_epochs"] == [1, 2]
    assert state["info"]["config"]["hidden"] == [32]


def test_serve_follows_a_checkpoint_written_after_it_started(live_run, tmp_path):
    from jvae.app.checkpoint import Checkpointer
    from jvae.app.dashboard import serve
    from jvae.app.runs import restore_run
    live_run.finish()
    workdir = tmp_path / "run"
    shutil.copytree(live_run.workdir, workdir)
    stop, pages = threading.Event(), []
    server = threading.Thread(target=serve, args=(workdir, "127.0.0.1", 0), daemon=True,
                              kwargs={"poll_s": 0.05, "stop": stop, "ready": pages.append})
    server.start()
    try:
        deadline = time.monotonic() + 60
        while not pages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pages, "serve did not start"
        state = restore_run(workdir).state  # the run goes on: one more epoch's checkpoint
        with Checkpointer(workdir / "checkpoints") as ckpt:
            ckpt.save(48, state.replace(step=state.step + 16), {"epoch": 3})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            latents = json.loads(urlopen(pages[0].url + "api/state", timeout=30).read())["latents"]
            if latents["epoch"] == 3:
                break
            time.sleep(0.1)
        assert (latents["epoch"], latents["step"]) == (3, 48)
    finally:
        stop.set()
        server.join(timeout=30)


def test_train_flags_attach_the_page_and_tensorboard(tmp_path, capsys, cli_watchers):
    from jvae.app.flags import config_from_args, make_parser
    from jvae.train import MODE, watch_hooks

    def hooks(*argv):
        cfg, _ = config_from_args(make_parser(MODE, "jvae train").parse_args(list(argv)))
        return watch_hooks(cfg)

    assert hooks("--no-dashboard", "--no-tensorboard") == []
    config = tmp_path / "run.toml"
    config.write_text("dashboard = false\n")
    assert [type(h).__name__ for h in hooks("--config", str(config))] == ["TensorBoardLogger"]
    page, tb = hooks("--dashboard-port", "0")
    assert isinstance(page, Dashboard) and isinstance(tb, TensorBoardLogger)
    assert capsys.readouterr().out == f"live training page: {page.url}\n"
    with socket.socket() as busy:  # a port in use: one warning, a hook that does nothing
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        (quiet_page,) = hooks("--dashboard-port", str(busy.getsockname()[1]), "--no-tensorboard")
    out, err = capsys.readouterr()
    assert quiet_page.server is None and out == "" and len(err.splitlines()) == 1
    for hook in (page, quiet_page):
        hook.on_end()
