"""The live page's server with a plain HTTP client: pages, safety, decoding."""

import http.client
import io
import json
import math
import select
import socket
import time
import wave
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from PIL import Image

from jvae.app.config import make_config
from jvae.app.dashboard import Dashboard
from jvae.app.dashboard.explorer import DECODE_BATCH, interpolate, project_2d
from jvae.app.dashboard.limits import connection_cap
from jvae.app.dashboard.server import MAX_BODY, MAX_IN_FLIGHT, VIEW_GAP_S, DashboardServer
from jvae.app.outputs import save_epoch_audio, save_image_grid
from jvae.app.runs import hook_info
from jvae.inference import make_reconstructor, make_sampler
from jvae.training.experiment import DataSpec, build

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("dashboard")

LATENT = 4


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A dashboard on port 0 serving a small untrained model and one saved epoch."""
    workdir = tmp_path_factory.mktemp("run")
    (workdir / "images").mkdir()
    rng = np.random.default_rng(0)
    save_image_grid(rng.random((4, 28, 28, 1)), workdir / "images" / "samples_epoch001.png")
    cfg = make_config({"hidden": (16,), "latent_dim": LATENT, "epochs": 3})
    experiment = build(cfg, DataSpec((28, 28, 1)))
    vae = experiment.vae
    test = {"image": rng.random((40, 28, 28, 1), dtype=np.float32),
            "label": rng.integers(0, 10, 40)}
    params = vae.init(jax.random.key(0), test["image"][:2])
    dash = Dashboard("127.0.0.1", 0, quiet=True)
    dash.on_start(hook_info(cfg, workdir, experiment, test, devices=1, placement="device",
                            start_epoch=0, step=0, params=params, steps_per_epoch=10))
    dash.on_chunk(5, {"loss": 200.0, "recon": 190.0, "kl": 10.0})
    dash.on_epoch({"epoch": 1, "step": 10, "neg_elbo": 180.0, "recon": 170.0, "kl": 10.0,
                   "loss": 180.0}, params)
    assert dash.wait_for_snapshot(1)
    dash.model = (vae, params)  # for tests of the model side
    yield dash
    dash.on_end()


def _request(dash, method, path, body=None, host=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", dash.server.port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if host is not False:
        conn.putheader("Host", host or f"127.0.0.1:{dash.server.port}")
    data = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if data is not None and "Content-Length" not in (headers or {}):
        conn.putheader("Content-Length", str(len(data)))
    conn.endheaders(data)
    r = conn.getresponse()
    out = r.status, r.getheader("Content-Type"), r.read()
    conn.close()
    return out


def test_page_is_served_at_root_and_frontend_html(page):
    for path in ("/", "/frontend.html"):
        status, ctype, body = _request(page, "GET", path)
        assert status == 200 and ctype.startswith("text/html")
        assert b"/static/app.js" in body
    status, ctype, body = _request(page, "GET", "/static/app.js")
    assert status == 200 and "javascript" in ctype and b"EventSource" in body


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/../../config.py",
                                  "/static/..%2fserver.py", "/static//etc/passwd",
                                  "/static/%2e%2e/hook.py", "/../jvae/config.py",
                                  "/static/", "/static/nope.js"])
def test_static_files_come_only_from_the_package_folder(page, path):
    status, _, body = _request(page, "GET", path)
    assert status == 404
    assert b"import" not in body and b"root:" not in body


@pytest.mark.parametrize("host,ok", [(None, True), ("localhost:{port}", True),
                                     ("localhost", True), ("evil.example:{port}", False),
                                     ("127.0.0.1.evil.example", False), ("10.0.0.1", False),
                                     (False, False)])
def test_host_header_must_name_the_bound_address_or_localhost(page, host, ok):
    if isinstance(host, str):
        host = host.format(port=page.server.port)
    status, _, body = _request(page, "GET", "/api/state", host=host)
    assert status == (200 if ok else 403)
    if not ok:
        assert "Host" in json.loads(body)["error"]


def test_state_carries_curves_run_card_and_latent_summary(page):
    status, _, body = _request(page, "GET", "/api/state")
    state = json.loads(body)
    assert state["train"][0] == {"step": 5, "loss": 200.0, "recon": 190.0, "kl": 10.0}
    assert state["test"][0]["neg_elbo"] == 180.0
    assert state["info"]["latent_size"] == LATENT and state["info"]["config"]["epochs"] == 3
    assert state["image_epochs"] == [1]
    assert len(state["latents"]["kl"]) == LATENT
    status, _, body = _request(page, "GET", "/api/latents")
    lat = json.loads(body)
    assert len(lat["xy"]) == len(lat["labels"]) == 40
    assert np.asarray(lat["components"]).shape == (2, LATENT)


def test_saved_images_are_served_by_kind_and_epoch(page):
    status, ctype, body = _request(page, "GET", "/api/image?kind=samples&epoch=1")
    assert status == 200 and ctype == "image/png" and body[:4] == b"\x89PNG"
    assert _request(page, "GET", "/api/image?kind=samples&epoch=2")[0] == 404
    assert _request(page, "GET", "/api/image?kind=../config&epoch=1")[0] == 404
    assert _request(page, "GET", "/api/image?kind=samples&epoch=x")[0] == 400


def _png_size(body):
    import io
    with Image.open(io.BytesIO(body)) as img:
        return img.size


def test_decode_returns_a_png_of_the_data_shape(page):
    status, ctype, body = _request(page, "POST", "/api/decode", {"z": [0.5, -1, 2, 0]})
    assert status == 200 and ctype == "image/png"
    assert _png_size(body) == (28 * 4, 28 * 4)


def test_interpolation_and_samples_are_strips_of_the_fixed_batch(page):
    for query in ("/api/interpolate?a=0&b=7&mode=slerp", "/api/interpolate?a=3&b=3",
                  "/api/samples?seed=3"):
        status, ctype, body = _request(page, "GET", query)
        assert status == 200 and ctype == "image/png", body
        width, height = _png_size(body)
        assert width == 4 * (DECODE_BATCH * 30 + 2) and height == 4 * 32
    assert _request(page, "GET", "/api/interpolate?a=0&b=40")[0] == 400
    assert _request(page, "GET", "/api/interpolate?a=0&b=1&mode=cubic")[0] == 400


@pytest.mark.parametrize("body,headers", [
    (b"not json", None), (b"[1, 2, 3, 4]", None), ({"z": [0, 0, 0]}, None),
    ({"z": [0, 0, 0, 0, 0]}, None), ({"z": [0, 0, "1", 0]}, None), ({"z": [0, 0, True, 0]}, None),
    (b'{"z": [0, NaN, 0, 0]}', None), (b'{"z": [0, Infinity, 0, 0]}', None),
    ({"z": [0, 0, 1e400, 0]}, None), ({"x": [0, 0, 0, 0]}, None),
    ({"z": [0, 0, 0, 0], "label": 3}, None),
    (b"{" + b" " * MAX_BODY + b"}", None),
    (b'{"z": [0, 0, 0, 0]}', {"Content-Length": "nope"})])
def test_bad_decode_bodies_get_400_with_a_json_error(page, body, headers):
    status, ctype, out = _request(page, "POST", "/api/decode", body, headers=headers)
    assert status == 400 and ctype == "application/json"
    assert json.loads(out)["error"]


def test_decodes_beyond_the_limit_get_503_and_never_recompile(page):
    decode = page.state.explorer.decode
    for _ in range(MAX_IN_FLIGHT):  # requests still running hold every slot
        assert page.server.slots.acquire(blocking=False)
    try:
        status, _, body = _request(page, "POST", "/api/decode", {"z": [0, 0, 0, 0]})
        assert status == 503 and "busy" in json.loads(body)["error"]
    finally:
        for _ in range(MAX_IN_FLIGHT):
            page.server.slots.release()
    for i in range(5):
        assert _request(page, "POST", "/api/decode", {"z": [i, 0, -i, 1]})[0] == 200
    assert _request(page, "GET", "/api/interpolate?a=1&b=2")[0] == 200
    assert decode._cache_size() == 1


def test_the_page_is_read_only(page):
    for method in ("PUT", "DELETE", "PATCH"):
        assert _request(page, method, "/api/state", b"{}")[0] == 405
    assert _request(page, "POST", "/api/state", b"{}")[0] in (404, 405)


def test_events_stream_pushes_new_chunks(page):
    sock = socket.create_connection(("127.0.0.1", page.server.port), timeout=20)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: localhost:{page.server.port}\r\n\r\n".encode())
    reader = sock.makefile("rb")

    def next_message():
        for line in reader:
            if line.startswith(b"data: "):
                return json.loads(line[6:])
        raise AssertionError("stream ended")

    first = next_message()
    assert first["train_from"] == 0 and len(first["train"]) == first["train_total"] >= 1
    page.on_chunk(10_000, {"loss": 123.0})
    while True:  # later messages carry only what is new
        msg = next_message()
        if msg["train"]:
            break
    assert msg["train_from"] == first["train_total"] and msg["train"][-1]["step"] == 10_000
    sock.close()


def test_busy_port_warns_once_and_the_hook_does_nothing(page, capsys):
    dash = Dashboard("127.0.0.1", page.server.port)
    err = capsys.readouterr().err.strip().splitlines()
    assert dash.server is None and len(err) == 1 and "warning" in err[0]
    dash.on_chunk(1, {"loss": 1.0})
    dash.on_end()
    assert dash.state.train == []


def test_a_non_loopback_address_warns_that_anyone_can_see_the_run(capsys):
    dash = Dashboard("0.0.0.0", 0)
    out = capsys.readouterr()
    assert dash.server is not None
    assert "anyone who can reach" in out.err and out.out.count("http://") == 1
    dash.on_end()


def test_kl_per_dimension_adds_up_to_the_posterior_kl(page):
    vae, params = page.model
    x = np.random.default_rng(1).random((40, 28, 28, 1), dtype=np.float32)
    means, kl = page.state.explorer.encode(params, x, None)  # compiled by the map already
    total = jax.jit(lambda p, x: vae.posterior.kl(vae.encode(p, x)))(params, x)
    np.testing.assert_allclose(np.asarray(kl).sum(1), total, rtol=1e-5)
    assert (np.asarray(kl) >= 0).all()


def test_projection_keeps_two_dims_and_finds_the_principal_plane():
    rng = np.random.default_rng(0)
    two = rng.normal(size=(20, 2))
    xy, center, comps, _ = project_2d(two)
    np.testing.assert_allclose(xy, two, atol=1e-6)
    plane = rng.normal(size=(2, 6))
    codes = rng.normal(size=(20, 2)) * [5.0, 2.0] @ plane + 3.0
    xy, center, comps, explained = project_2d(codes)
    np.testing.assert_allclose(center + xy @ comps, codes, atol=1e-3)
    assert explained.sum() == pytest.approx(1.0, abs=1e-5)


def test_slerp_keeps_the_norm_between_unit_vectors_and_hits_the_ends():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.6, 0.8])
    path = interpolate(a, b, "slerp", 7)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(path[[0, -1]], [a, b], atol=1e-6)
    assert math.isclose(float(np.dot(path[3], a)), float(np.dot(path[3], b)), abs_tol=1e-6)


def test_audio_runs_get_a_wav_of_the_decoded_waveform():
    import io
    import wave

    from jvae.app.dashboard.server import render
    x = np.sin(np.linspace(0, 40, 800, dtype=np.float32))[None, :, None]
    body, ctype = render(x, sample_rate=8000)
    assert ctype == "audio/wav"
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getframerate(), w.getnframes(), w.getnchannels()) == (8000, 800, 1)
        pcm = np.frombuffer(w.readframes(800), "<i2") / 32767
    np.testing.assert_allclose(pcm, x[0, :, 0], atol=1e-4)


def test_a_conditional_model_decodes_the_picked_class():
    from jvae.app.dashboard.explorer import decode_latents, make_explorer
    cfg = make_config({"model": "cvae", "hidden": (8,), "latent_dim": 2})
    experiment = build(cfg, DataSpec((28, 28, 1), 3))
    vae = experiment.vae
    x = np.zeros((2, 28, 28, 1), np.float32)
    params = vae.init(jax.random.key(0), x, np.eye(3, dtype=np.float32)[:2])
    ex = make_explorer(vae, 3)
    z = np.array([[0.3, -0.2]], np.float32)
    a, b = (decode_latents(ex, params, z, label) for label in (0, 2))
    assert a.shape == (1, 28, 28, 1) and not np.allclose(a, b)


# -- audio runs ---------------------------------------------------------------
RATE, CLIP = 8000, 256


@pytest.fixture(scope="module")
def audio_page(tmp_path_factory):
    """A dashboard serving a small untrained model of 8 kHz clips, with one epoch's
    saved clips and plots; the rate reaches the page through the model's data spec."""
    workdir = tmp_path_factory.mktemp("audio_run")
    cfg = make_config({"hidden": (16,), "latent_dim": LATENT, "epochs": 2, "net": "mlp",
                       "likelihood": "gaussian"})
    experiment = build(cfg, DataSpec((CLIP, 1), None, RATE))
    vae = experiment.vae
    rng = np.random.default_rng(0)
    freqs = rng.uniform(200, 2000, (20, 1, 1))
    test = {"image": (0.5 * np.sin(2 * np.pi * freqs * np.arange(CLIP)[:, None] / RATE)
                      ).astype(np.float32),
            "label": np.zeros(20, np.int32), "length": np.full(20, CLIP, np.int32)}
    params = vae.init(jax.random.key(0), test["image"][:2])
    save_epoch_audio(workdir, 1, make_sampler(vae, 4), make_reconstructor(vae), params, test,
                     jax.random.key(1), RATE)
    info = hook_info(cfg, workdir, experiment, test, devices=1, placement="device",
                     start_epoch=0, step=0, params=params, steps_per_epoch=10)
    dash = Dashboard("127.0.0.1", 0, quiet=True)
    dash.on_start(info)
    dash.on_epoch({"epoch": 1, "step": 10, "neg_elbo": 180.0, "recon": 170.0, "kl": 10.0,
                   "loss": 180.0}, params)
    assert dash.wait_for_snapshot(1)
    dash.run = SimpleNamespace(info=info, params=params, workdir=workdir)
    yield dash
    dash.on_end()


def _wav(body):
    with wave.open(io.BytesIO(body)) as w:
        return w.getframerate(), w.getnchannels(), w.getnframes()


def _png_size(body):
    assert body[:4] == b"\x89PNG"
    return Image.open(io.BytesIO(body)).size


def test_audio_decodes_play_as_wav_and_draw_as_a_log_mel_spectrogram(audio_page):
    status, _, body = _request(audio_page, "GET", "/api/state")
    state = json.loads(body)
    assert state["info"]["sample_rate"] == RATE and state["image_epochs"] == [1]
    z = {"z": [0.1] * LATENT}
    status, ctype, body = _request(audio_page, "POST", "/api/decode", z)
    assert (status, ctype) == (200, "audio/wav") and _wav(body) == (RATE, 1, CLIP)
    status, ctype, body = _request(audio_page, "POST", "/api/decode", {**z, "view": "spectrogram"})
    assert (status, ctype) == (200, "image/png") and _png_size(body) == (800, 64)
    # Ten samples (or interpolation steps) play in turn, parted by short silences.
    strip = DECODE_BATCH * CLIP + (DECODE_BATCH - 1) * int(VIEW_GAP_S * RATE)
    for path in ("/api/samples?seed=3", "/api/interpolate?a=0&b=5&mode=slerp"):
        status, ctype, body = _request(audio_page, "GET", path)
        assert (status, ctype) == (200, "audio/wav") and _wav(body) == (RATE, 1, strip)
        status, ctype, body = _request(audio_page, "GET", path + "&view=spectrogram")
        assert (status, ctype) == (200, "image/png") and _png_size(body) == (800, 64)
    assert _request(audio_page, "GET", "/api/samples?seed=3&view=bogus")[0] == 400


def test_spectrogram_views_are_for_audio_runs_only(page):
    status, _, body = _request(page, "GET", "/api/samples?seed=0&view=spectrogram")
    assert status == 400 and "audio" in json.loads(body)["error"]


def test_an_audio_runs_epoch_clips_and_plots_are_served(audio_page):
    status, ctype, body = _request(audio_page, "GET", "/api/audio?kind=reconstructions&epoch=1")
    # Four test clips, each then its reconstruction, 0.25 s apart.
    assert (status, ctype) == (200, "audio/wav") and _wav(body) == (RATE, 1, 8 * CLIP + 7 * 2000)
    assert _request(audio_page, "GET", "/api/audio?kind=samples&epoch=1")[0] == 200
    status, ctype, body = _request(audio_page, "GET", "/api/image?kind=spectrograms&epoch=1")
    assert (status, ctype) == (200, "image/png") and _png_size(body) == (800, 12 * 65 - 1)
    assert _request(audio_page, "GET", "/api/image?kind=waveforms&epoch=1")[0] == 200
    assert _request(audio_page, "GET", "/api/audio?kind=waveforms&epoch=1")[0] == 404
    assert _request(audio_page, "GET", "/api/audio?kind=samples&epoch=2")[0] == 404


def test_tensorboard_holds_an_audio_runs_clips_and_spectrograms(audio_page, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jvae.app.tensorboard import TensorBoardLogger
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.on_start(audio_page.run.info)
    logger.on_epoch({"epoch": 1, "step": 10, "neg_elbo": 180.0}, audio_page.run.params)
    logger.on_end()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"audio": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"samples", "reconstructions"} <= set(tags["audio"])
    (recon,) = acc.Audio("reconstructions")
    assert (recon.step, recon.sample_rate, recon.length_frames) == (10, RATE, 8 * CLIP + 7 * 2000)
    assert recon.encoded_audio_string[:4] == b"RIFF"
    assert {"waveforms", "spectrograms"} <= set(tags["images"])
    (spec,) = acc.Images("spectrograms")
    assert (spec.width, spec.height) == (800, 12 * 65 - 1)


def test_an_audio_runs_page_plays_and_draws_every_view(audio_page, tmp_path):
    from playwright.sync_api import sync_playwright
    from test_dashboard_live import CHROMIUM_FLAGS, _browser_path
    executable = _browser_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(audio_page.url)
            page.wait_for_function("window.jvae.decodes > 0")
            assert not page.locator("#decoded").is_visible()
            drawn = "document.getElementById('{}').naturalWidth === 800"
            for view in ("decoded", "samples"):
                assert page.locator(f"#{view}-player").is_visible()
                page.wait_for_function(f"document.getElementById('{view}-player').duration > 0")
                page.wait_for_function(drawn.format(f"{view}-spec"))
            page.click("#interp-random")
            page.wait_for_function(drawn.format("interp-spec"))
            page.wait_for_function(drawn.format("spectrograms-img"))
            page.wait_for_function("document.getElementById('recons-audio').duration > 0")
            assert errors == []
        finally:
            browser.close()


# -- a page that cannot be used to stop the run ------------------------------------
@pytest.fixture
def extra_server(page):
    """Makes more servers of the page's state (with their own limits); stops them after."""
    servers = []

    def make(serve=True, **limits):
        server = DashboardServer(page.state, "127.0.0.1", 0, **limits)
        if serve:
            server.serve_in_background()
        servers.append(server)
        return server
    yield make
    for server in servers:
        if server._thread is not None:
            server.shutdown()
        server.server_close()


def _exchange(port, raw: bytes, timeout=10):
    """Sends ``raw`` and reads to the end: ``(status, headers, body)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_connections_beyond_the_cap_get_a_prompt_503_and_the_page_recovers(extra_server):
    server = extra_server(max_connections=3, read_timeout=30)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    request = b"GET /api/state HTTP/1.0\r\nHost: localhost\r\n\r\n"
    t0 = time.monotonic()
    for _ in range(5):  # accepted after the idle three, which hold every connection
        status, headers, body = _exchange(server.port, request)
        assert status == 503 and headers["Retry-After"] == "1"
        assert "busy" in json.loads(body)["error"]
    assert time.monotonic() - t0 < 2
    for sock in idle:
        sock.close()
    deadline = time.monotonic() + 5
    while (status := _exchange(server.port, request)[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # the idle connections' threads see them close
    assert status == 200


def test_the_cap_leaves_three_quarters_of_the_file_handles_to_training():
    assert connection_cap(1024) == 256 and connection_cap(256) == 64
    assert connection_cap(1 << 20) == 256 and connection_cap(8) == 4


def _closed_by_peer(sock) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_trickling_clients_are_dropped_after_the_read_timeout(extra_server):
    server = extra_server(read_timeout=0.3)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    t0 = time.monotonic()
    assert idle.recv(1024) == b"" and time.monotonic() - t0 < 2
    idle.close()
    # A byte every 50 ms: never idle for the timeout, yet the request takes 1.4 s.
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        for byte in b"GET /api/state HTTP/1.0\r\nHost: localhost":
            slow.send(bytes([byte]))
            time.sleep(0.05)
    except OSError:  # dropped already
        pass
    assert _closed_by_peer(slow)
    slow.close()


def test_a_burst_of_connections_waits_in_the_listen_backlog(extra_server):
    server = extra_server(serve=False)  # nothing accepts: every connection waits in the backlog
    socks = []
    try:
        for _ in range(100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.port))
            socks.append(sock)
        pending, deadline = set(socks), time.monotonic() + 2
        while pending and time.monotonic() < deadline:
            _, done, _ = select.select([], list(pending), [], 0.1)
            pending -= {s for s in done if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0}
        assert not pending
    finally:
        for sock in socks:
            sock.close()


def _post(body: bytes) -> bytes:
    return (b"POST /api/decode HTTP/1.0\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % len(body) + body)


def _get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.0\r\nHost: localhost\r\n\r\n"


MALFORMED = {
    "JSON nested 10,000 deep": _post(b'{"z": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    "a 400-digit integer in z": _post(b'{"z": [' + b"9" * 400 + b", 0, 0, 0]}"),
    "an integer longer than Python parses": _post(b'{"z": [' + b"9" * 5000 + b", 0, 0, 0]}"),
    "z beyond float32": _post(b'{"z": [0, 1e39, 0, 0]}'),
    "a NUL byte in a static path": _get(b"/static/app\x00.js"),
    "a static name too long for a file": _get(b"/static/" + b"a" * 5000 + b".js"),
    "an epoch too long for a file name": _get(b"/api/image?kind=samples&epoch=" + b"1" * 300),
    "a malformed request line": b"GARBAGE\r\n\r\n",
    "too many headers": b"GET / HTTP/1.0\r\n" + b"X: y\r\n" * 200 + b"\r\n",
}


def _assert_one_json_error(status, headers, body):
    assert 400 <= status < 500 and headers["Content-Type"] == "application/json"
    assert body.count(b"\n") == 0 and json.loads(body)["error"]


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_a_4xx_json_error_and_nothing_on_stderr(page, raw, capfd):
    _assert_one_json_error(*_exchange(page.server.port, raw))
    assert _request(page, "GET", "/api/state")[0] == 200  # the server is still there
    assert capfd.readouterr().err == ""


@pytest.fixture(scope="module")
def cond_page():
    """A dashboard of a small conditional model (3 classes)."""
    cfg = make_config({"model": "cvae", "hidden": (8,), "latent_dim": 2})
    experiment = build(cfg, DataSpec((28, 28, 1), 3))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 12)
    test = {"image": rng.random((12, 28, 28, 1), dtype=np.float32), "label": labels,
            experiment.cond_key: np.eye(3, dtype=np.float32)[labels]}
    params = experiment.vae.init(jax.random.key(0), test["image"][:2],
                                 test[experiment.cond_key][:2])
    dash = Dashboard("127.0.0.1", 0, quiet=True)
    dash.on_start(hook_info(cfg, None, experiment, test, devices=1, placement="device",
                            start_epoch=1, step=0, params=params, steps_per_epoch=1))
    assert dash.wait_for_snapshot(1)
    yield dash
    dash.on_end()


@pytest.mark.parametrize("label", [b"1e999", b"-1e999", b"1.5", b"3", b"-1", b"9" * 400,
                                   b"true", b'"x"', b"[0]"])
def test_labels_must_be_integers_of_a_class(cond_page, label, capfd):
    raw = _post(b'{"z": [0.5, -0.5], "label": ' + label + b"}")
    _assert_one_json_error(*_exchange(cond_page.server.port, raw))
    assert capfd.readouterr().err == ""


def test_a_label_picks_the_class_as_a_number_or_a_query_string(cond_page):
    for body in ({"z": [0.5, -0.5], "label": 2}, {"z": [0.5, -0.5], "label": 2.0}):
        assert _request(cond_page, "POST", "/api/decode", body)[0] == 200
    assert _request(cond_page, "GET", "/api/samples?seed=1&label=2")[0] == 200
    assert _request(cond_page, "GET", "/api/samples?seed=1&label=1e999")[0] == 400


def test_a_client_gone_before_the_error_reply_prints_nothing(page, capfd):
    from jvae.app.dashboard.server import _Handler
    ours, theirs = socket.socketpair()
    theirs.sendall(_post(b"not json"))
    theirs.close()  # before the reply: writing it breaks the pipe
    _Handler(ours, ("127.0.0.1", 0), page.server)
    ours.close()
    assert capfd.readouterr().err == ""


# -- fitted samplers beside the prior -----------------------------------------------
def _get(dash, path):
    conn = http.client.HTTPConnection("127.0.0.1", dash.server.port, timeout=120)
    conn.request("GET", path)
    r = conn.getresponse()
    out = r.status, r.getheader("X-Jvae-Sampler"), r.read()
    conn.close()
    return out


def test_fitted_sampler_samples_come_from_a_preview_or_the_saved_fit(page):
    from jvae.app.dashboard.samplers import PageSamplers
    from jvae.app.samplers import run_sampler

    status, note, prior = _get(page, "/api/samples?seed=3")
    assert status == 200 and note is None
    status, note, body = _get(page, "/api/samples?seed=3&sampler=gmm")
    assert status == 200 and _png_size(body) == _png_size(prior) and body != prior
    assert note.startswith("gmm fitted here on 40 test codes, a preview")
    assert _get(page, "/api/samples?seed=3&sampler=gmm")[2] == body  # the same fit, kept
    status, _, error = _get(page, "/api/samples?seed=3&sampler=kde")
    assert status == 400 and b"sampler must be one of prior, gmm" in error
    # A fit jvae sample saved for the snapshot's checkpoint is the one used.
    state = page.state
    snap = state.snapshot
    images, cond = state.map_images
    saved = run_sampler(state.workdir, "gmm", step=snap.step, vae=state.vae, params=snap.params,
                        images=images[:30], cond=cond, source="train")
    fitted, note = PageSamplers().get("gmm", snap, state.vae, state.map_images, state.workdir)
    assert note == f"gmm fitted on 30 training codes at step {snap.step} ({saved.path.name})"
    np.testing.assert_array_equal(fitted.state["means"], saved.fitted.state["means"])


def test_the_page_switches_samples_to_a_fitted_sampler(page):
    from playwright.sync_api import sync_playwright
    from test_dashboard_live import CHROMIUM_FLAGS, _browser_path
    executable = _browser_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                     headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1500})
            errors = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(page.url)
            tab.wait_for_function("window.jvae.samples > 0")  # prior samples on load
            assert tab.locator("#sampler-note").inner_text() == ""
            tab.select_option("#sampler-select", "gmm")
            tab.wait_for_function("window.jvae.samples > 1", timeout=120_000)
            assert "gmm fitted" in tab.locator("#sampler-note").inner_text()
            assert tab.evaluate("document.getElementById('fresh-samples').naturalWidth") > 0
            assert errors == []
        finally:
            browser.close()
