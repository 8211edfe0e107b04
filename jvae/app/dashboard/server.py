"""The live page's HTTP server: standard library ``ThreadingHTTPServer`` with
Server-Sent Events, in a background daemon thread of the training process.

Endpoints (all read-only; none changes training or writes a file):

* ``GET /`` (also ``/frontend.html``) and ``/static/NAME``: the page, from
  this package's ``static`` folder only;
* ``GET /events``: Server-Sent Events, one JSON message per change of the run;
* ``GET /api/state``: the same JSON in full; ``GET /api/latents``: the map;
* ``GET /api/image?kind=samples|reconstructions&epoch=N``: the run's saved grids
  (``kind=waveforms|spectrograms``: an audio run's saved waveform and log-mel plots);
* ``GET /api/audio?kind=samples|reconstructions&epoch=N``: an audio run's saved
  epoch clips (WAV; reconstructions alternate with the test clips they rebuild);
* ``POST /api/decode`` ``{"z": [D numbers], "label": k}``: the decoded latent;
* ``GET /api/interpolate?a=I&b=J&mode=linear|slerp``: a strip between test images;
* ``GET /api/samples?seed=S&label=k&sampler=NAME``: fresh samples of the prior
  (``sampler=prior``, the default) or of a fitted sampler (``gmm``, ``two-stage``,
  ``maf``; :mod:`~jvae.app.dashboard.samplers`), which says in its
  ``X-Jvae-Sampler`` header what it was fitted on.

The three decoding endpoints answer a PNG (an image, or a strip of them) for
image runs. For audio runs (the card has a ``sample_rate``) they answer a
16-bit WAV, the decoded clips joined by ``VIEW_GAP_S`` of silence, and with
``view=spectrogram`` (a query parameter, or a ``"view"`` key in the decode's
body) the log-mel spectrogram of that same audio as a PNG
(:func:`~jvae.app.outputs.spectrogram_png`): decoding is deterministic for a
given latent, seed or pair, so the page asks twice and shows the player, the
waveform (drawn from the WAV) and the spectrogram of one decode.

Requests whose ``Host`` header names neither the bound address nor
``localhost`` are refused (DNS rebinding). Decodes run from a fixed-batch
jitted function on a private copy of the parameters; at most
``MAX_IN_FLIGHT`` at once, others are answered 503.

The server shares the training process's file handles, so it is bounded
(:mod:`~jvae.app.dashboard.limits`): at most ``connection_cap()`` connections,
each request ``READ_TIMEOUT_S`` to arrive, a listen backlog of
``LISTEN_BACKLOG``, and an immediate 503 (with ``Retry-After``) beyond the cap.
Every failure of a request is answered with one line of JSON, ``{"error": ...}``;
nothing reaches the run's terminal.
"""

from __future__ import annotations

import errno
import http.server
import io
import ipaddress
import json
import math
import socket
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jax
import numpy as np

from jvae.app.dashboard.explorer import DECODE_BATCH, decode_latents, interpolate, sample_images
from jvae.app.dashboard.limits import (
    LISTEN_BACKLOG,
    READ_TIMEOUT_S,
    RETRY_AFTER_S,
    DeadlineReader,
    Refuser,
    connection_cap,
)
from jvae.app.dashboard.samplers import SAMPLER_HEADER, PageSamplers
from jvae.app.dashboard.state import RunState
from jvae.app.outputs import grid_png, spectrogram_png
from jvae.app.samplers import SAMPLER_CHOICES
from jvae.training.samplers import SamplerError

__all__ = ["DashboardServer", "start_server", "MAX_BODY", "MAX_IN_FLIGHT", "STATIC_DIR",
           "VIEWS", "VIEW_GAP_S", "wav_bytes", "render", "check_view"]

MAX_BODY = 64 * 1024
MAX_IN_FLIGHT = 2
STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
_SSE_MIN_INTERVAL_S = 0.25   # coalesces bursts of chunk updates
_SSE_KEEPALIVE_S = 15.0
# What a decode answers for an audio run: the clips (WAV) or their log-mel spectrogram.
VIEWS = ("audio", "spectrogram")
# Silence between the decoded clips of a strip: each step of an interpolation
# (or each sample) is heard on its own, yet ten of them stay one short clip.
VIEW_GAP_S = 0.1
_F32_MAX = float(np.finfo(np.float32).max)
# Characters of an integer in a query string: no epoch, seed or label needs more.
_INT_DIGITS = 20


class BadRequest(Exception):
    """Answered with HTTP 400 and ``{"error": message}``."""


def wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of a waveform ``(T,)`` or ``(T, channels)`` in [-1, 1]."""
    x = np.asarray(x, np.float32)
    x = x[:, None] if x.ndim == 1 else x
    pcm = (np.clip(x, -1.0, 1.0) * 32767).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def check_view(view, sample_rate: int | None) -> None:
    """Refuses (``BadRequest``) a view that is not one of ``VIEWS``, or any view of images."""
    if view is None:
        return
    if view not in VIEWS:
        raise BadRequest(f"view must be one of {', '.join(VIEWS)}")
    if not sample_rate:
        raise BadRequest("view applies to audio runs only")


def render(x: np.ndarray, sample_rate: int | None, scale: int = 4,
           view: str | None = None) -> tuple[bytes, str]:
    """Decoded examples ``(n, ...)`` as the response body and its content type.

    Args:
      x: the decoded examples.
      sample_rate: an audio run's rate, or None (images).
      scale: enlargement of an image strip.
      view: for audio, ``"audio"`` (the default: a WAV of the clips joined by
        ``VIEW_GAP_S`` of silence) or ``"spectrogram"`` (a PNG of that WAV's
        log-mel spectrogram); images have one view.

    Raises:
      BadRequest: a view that is not one of ``VIEWS``, or any view of images.
    """
    check_view(view, sample_rate)
    if not sample_rate:
        pad = 0 if len(x) == 1 else 2
        return grid_png(x, ncol=len(x), scale=scale, pad=pad), "image/png"
    from jvae.datasets.audio import join_clips
    clip = join_clips([c.reshape(len(c), -1)[:, 0] for c in x], sample_rate, VIEW_GAP_S)
    if view == "spectrogram":
        return spectrogram_png([clip], sample_rate), "image/png"
    return wav_bytes(clip, sample_rate), "audio/wav"


def _host_allowed(header: str | None, bound: str) -> bool:
    """Whether a ``Host`` header names the bound address, ``localhost`` or (bound
    to every interface) an IP literal: only a domain name can be rebound."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host in ("localhost", bound.lower().strip("[]")):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return bound in ("0.0.0.0", "::", "")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "DashboardServer"
    server_version = "jvae-dashboard"

    def log_message(self, format, *args):  # no access log on the training terminal
        pass

    # -- connection --------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        # Reads bounded by one deadline per request (an idle or trickling client is
        # dropped); the file setup opened is closed, else it keeps the socket open.
        self.rfile.close()
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)
        self._replied = False

    def handle_one_request(self) -> None:
        self._reader.start(self.server.read_timeout)
        super().handle_one_request()

    # -- responses ---------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, cache: bool = False,
              headers: dict[str, str] | None = None) -> None:
        self._replied = True
        try:
            # A client that stops reading is dropped like one that stops sending.
            self.connection.settimeout(self.server.read_timeout)
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client went away or stopped reading: no one to tell
            self.close_connection = True

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _error(self, code: int, message: str) -> None:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if code == 503 else None
        self._send(code, json.dumps({"error": message}).encode(), "application/json",
                   headers=headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """Malformed requests the base class refuses (request line, headers) get JSON too."""
        self.close_connection = True
        # An unparsed request line counts as HTTP/0.9, which has no status line.
        self.request_version = "HTTP/1.0"
        self._error(code, message or http.HTTPStatus(code).phrase)

    def _checked(self) -> bool:
        if not _host_allowed(self.headers.get("Host"), self.server.bound_host):
            self._error(403, "Host header not allowed: open the page at the address the "
                             "training run printed")
            return False
        return True

    def _respond(self, route) -> None:
        """Runs ``route()`` and answers its failure: 400 for a bad request, 408 for
        one that did not arrive in time, 500 for anything else (one JSON line each)."""
        if not self._checked():
            return
        try:
            route()
        except BadRequest as e:
            self._error(400, str(e))
        except TimeoutError:
            self._error(408, "the request did not arrive in time")
        except Exception as e:  # a bug of the page: the client hears of it, training does not
            if not self._replied:
                self._error(500, f"internal error ({type(e).__name__})")
            self.close_connection = True

    # -- methods -----------------------------------------------------------
    def do_GET(self):
        self._respond(self._get)

    do_HEAD = do_GET

    def do_POST(self):
        self._respond(self._post)

    def _read_only(self):
        self._respond(lambda: self._error(405, "the page is read-only"))

    do_PUT = do_DELETE = do_PATCH = _read_only

    def _get(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = url.path
        if route in ("/", "/index.html", "/frontend.html"):
            self._static("index.html")
        elif route.startswith("/static/"):
            self._static(route[len("/static/"):])
        elif route == "/events":
            self._events()
        elif route == "/api/state":
            self._json(200, self.server.state.summary())
        elif route == "/api/latents":
            lat = self.server.state.latents()
            self._json(200, lat) if lat else self._error(404, "no latent map yet")
        elif route == "/api/image":
            self._image(query)
        elif route == "/api/audio":
            self._audio(query)
        elif route == "/api/interpolate":
            self._decoding(self._interpolate, query)
        elif route == "/api/samples":
            self._decoding(self._samples, query)
        else:
            self._error(404, f"no such page {route}")

    def _post(self) -> None:
        if urlsplit(self.path).path != "/api/decode":
            self._error(404 if self.path.startswith("/api/") else 405,
                        "only /api/decode takes a POST")
            return
        self._decoding(self._decode, self._body())

    # -- static files ------------------------------------------------------
    def _static(self, name: str) -> None:
        try:
            path = (STATIC_DIR / name).resolve()
            # Only files directly inside the package's static folder: no "..", no
            # absolute paths, no links out of it.
            found = (path.parent == STATIC_DIR and path.is_file()
                     and path.suffix in _CONTENT_TYPES)
        except (OSError, ValueError):  # a NUL byte, a name too long: no such file either
            found = False
        if not found:
            self._error(404, "not found")
            return
        self._send(200, path.read_bytes(), _CONTENT_TYPES[path.suffix], cache=False)

    def _image(self, query) -> None:
        self._epoch_file(query, self.server.state.image_path, "image", "image/png")

    def _audio(self, query) -> None:
        self._epoch_file(query, self.server.state.audio_path, "audio", "audio/wav")

    def _epoch_file(self, query, find, what: str, ctype: str) -> None:
        """An epoch's output file of ``?kind=...&epoch=N``, found by ``find(kind, epoch)``."""
        kind = query.get("kind", "")
        epoch = _int(query.get("epoch"), "epoch")
        path = find(kind, epoch)
        if path is None:
            self._error(404, f"no {kind} {what} for epoch {epoch}")
            return
        self._send(200, path.read_bytes(), ctype, cache=True)

    # -- Server-Sent Events --------------------------------------------------
    def _events(self) -> None:
        self._replied = True
        try:
            self.connection.settimeout(self.server.read_timeout)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self._stream()
        except OSError:  # the page was closed (or stopped reading)
            self.close_connection = True

    def _stream(self) -> None:
        state = self.server.state
        sent_train = sent_test = 0
        version = -1
        while not state.closed and not self.server.stopping:
            newer = state.wait_newer(version, _SSE_KEEPALIVE_S)
            if state.closed or self.server.stopping:
                break
            if newer is None:
                self.wfile.write(b": keep-alive\n\n")
            else:
                msg = state.summary(sent_train, sent_test)
                version = msg["version"]
                sent_train, sent_test = msg["train_total"], msg["test_total"]
                self.wfile.write(b"data: " + json.dumps(msg).encode() + b"\n\n")
            self.wfile.flush()
            time.sleep(_SSE_MIN_INTERVAL_S)

    # -- decoding ------------------------------------------------------------
    def _body(self) -> dict:
        length = self.headers.get("Content-Length")
        try:
            n = int(length)
        except (TypeError, ValueError):
            raise BadRequest("a JSON body with a Content-Length is required") from None
        if n < 0 or n > MAX_BODY:
            raise BadRequest(f"body of {n} bytes; at most {MAX_BODY}")
        try:
            body = json.loads(self.rfile.read(n))
        except RecursionError:
            raise BadRequest("body is nested too deeply") from None
        except ValueError:  # not JSON, not UTF-8, or an integer of over 4,300 digits
            raise BadRequest("body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest('body must be a JSON object like {"z": [...]}')
        return body

    def _decoding(self, fn, args) -> None:
        state = self.server.state
        snap, ex = state.snapshot, state.explorer
        view = args.get("view")
        check_view(view, state.sample_rate)  # before a decode slot is taken
        if snap is None or ex is None:
            self._error(503, "no model yet: the run is still starting")
            return
        if not self.server.slots.acquire(blocking=False):
            self._error(503, "busy: too many decodes in flight, try again")
            return
        try:
            x = fn(ex, snap, args)
        finally:
            self.server.slots.release()
        headers = None
        if isinstance(x, tuple):  # (decoded, response headers)
            x, headers = x
        body, ctype = render(x, state.sample_rate, view=view)
        self._send(200, body, ctype, headers=headers)

    def _label(self, ex, value) -> int:
        if ex.num_classes is None:
            if value not in (None, "", 0, "0"):
                raise BadRequest("label applies to a conditional model only")
            return 0
        label = _int(value if value is not None else 0, "label")
        if not 0 <= label < ex.num_classes:
            raise BadRequest(f"label must be in [0, {ex.num_classes})")
        return label

    def _decode(self, ex, snap, body) -> np.ndarray:
        z = _latent(body.get("z"), ex.latent_size)
        return decode_latents(ex, snap.params, z[None], self._label(ex, body.get("label")))

    def _interpolate(self, ex, snap, query) -> np.ndarray:
        codes = snap.latents.codes
        a, b = _int(query.get("a"), "a"), _int(query.get("b"), "b")
        if not (0 <= a < len(codes) and 0 <= b < len(codes)):
            raise BadRequest(f"a and b must be test image indices in [0, {len(codes)})")
        mode = query.get("mode", "linear")
        if mode not in ("linear", "slerp"):
            raise BadRequest("mode must be linear or slerp")
        label = self._label(ex, query.get("label"))
        return decode_latents(ex, snap.params, interpolate(codes[a], codes[b], mode,
                                                           DECODE_BATCH), label)

    def _samples(self, ex, snap, query) -> np.ndarray:
        seed = _int(query.get("seed", 0), "seed")
        if not 0 <= seed < 2 ** 31:
            raise BadRequest("seed must be in [0, 2**31)")
        label = self._label(ex, query.get("label"))
        name = query.get("sampler", "prior")
        if name == "prior":
            return sample_images(ex, snap.params, seed, label)
        if name not in SAMPLER_CHOICES:
            raise BadRequest(f"sampler must be one of {', '.join(SAMPLER_CHOICES)}")
        state = self.server.state
        try:
            fitted, note = self.server.samplers.get(name, snap, state.vae, state.map_images,
                                                    state.workdir)
        except SamplerError as e:
            raise BadRequest(str(e)) from None
        z = np.asarray(fitted.sample(jax.random.key(seed), DECODE_BATCH), np.float32)
        return decode_latents(ex, snap.params, z, label), {SAMPLER_HEADER: note}


def _int(value, name: str) -> int:
    """An integer from a query string or a JSON number (an integral one: 3.0 is 3)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():  # not NaN, not infinite
        return int(value)
    if isinstance(value, str) and len(value) <= _INT_DIGITS:
        try:
            return int(value)
        except ValueError:
            pass
    raise BadRequest(f"{name} must be an integer")


def _latent(z, size: int) -> np.ndarray:
    """``z`` as float32: a list of ``size`` numbers, each finite in float32."""
    if not isinstance(z, list) or len(z) != size:
        raise BadRequest(f"z must be a list of {size} numbers")
    out = np.empty(size, np.float32)
    for i, v in enumerate(z):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadRequest("z must hold numbers only")
        try:
            v = float(v)
        except OverflowError:  # an integer beyond any float
            v = math.inf
        if not math.isfinite(v) or abs(v) > _F32_MAX:
            raise BadRequest(f"z must hold finite float32 numbers (|z| <= {_F32_MAX:.4g})")
        out[i] = v
    return out


class DashboardServer(http.server.ThreadingHTTPServer):
    """The page's server; ``serve_in_background`` runs it in a daemon thread.

    Args:
      state: what the page shows.
      host: address to bind.
      port: port to bind (0: any free one).
      max_connections: connections held at once, more are answered 503 at
        once (default: :func:`~jvae.app.dashboard.limits.connection_cap`).
      read_timeout: seconds each request has to arrive whole, and each reply
        to be taken; a client slower than that is dropped.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, state: RunState, host: str, port: int, *,
                 max_connections: int | None = None, read_timeout: float = READ_TIMEOUT_S):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.state = state
        self.bound_host = host
        self.stopping = False
        self.slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self.samplers = PageSamplers()
        self.max_connections = connection_cap() if max_connections is None else max_connections
        self.read_timeout = read_timeout
        self._connections = threading.BoundedSemaphore(self.max_connections)
        self.refuse = Refuser()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    # -- the cap -------------------------------------------------------------
    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            # Out of handles (the cap keeps this from the page's own connections):
            # a short pause instead of spinning on a listen socket still readable.
            if e.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(0.05)
            raise

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            self.refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is free again
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def server_close(self) -> None:
        super().server_close()
        self.refuse.close()

    def handle_error(self, request, client_address) -> None:
        """Nothing on the run's terminal: handlers answer their own failures, and a
        client that vanishes mid-request is no news."""

    # -- lifetime ------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.bound_host}]" if ":" in self.bound_host else self.bound_host
        return f"http://{host}:{self.port}/"

    def serve_in_background(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="jvae-dashboard",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops serving and ends open event streams."""
        self.stopping = True
        self.state.close()
        self.shutdown()
        self.server_close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_server(state: RunState, host: str = "127.0.0.1", port: int = 2998, *,
                 quiet: bool = False) -> DashboardServer | None:
    """Binds and starts the server; prints its address once.

    A port in use (or any other bind failure) prints one warning and returns
    None: training goes on without the page.
    """
    try:
        server = DashboardServer(state, host, port)
    except (OSError, OverflowError) as e:  # in use, no such address, not a port number
        print(f"warning: live page not started ({host}:{port}: "
              f"{getattr(e, 'strerror', None) or e}); "
              "training goes on without it (pick another with --dashboard-port, 0 for any)",
              file=sys.stderr, flush=True)
        return None
    server.serve_in_background()
    if not _is_loopback(host):
        print(f"warning: the live page listens on {host}: anyone who can reach port "
              f"{server.port} can watch this run", file=sys.stderr, flush=True)
    if not quiet:
        print(f"live training page: {server.url}", flush=True)
    return server
