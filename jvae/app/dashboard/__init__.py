"""The live training page: curves, images and a latent-space explorer that
decodes on request, served while a run trains (see :class:`Dashboard`) or
afterwards from its checkpoints (:func:`serve`).

* :mod:`~jvae.app.dashboard.hook`: :class:`Dashboard`, the page as a training hook.
* :mod:`~jvae.app.dashboard.replay`: :func:`serve`, the page of a finished or running run.
* :mod:`~jvae.app.dashboard.explorer`: fixed-shape jitted encode and decode, the latent map.
* :mod:`~jvae.app.dashboard.state`: what the page shows, shared between threads.
* :mod:`~jvae.app.dashboard.server`: the HTTP/SSE server and its static files.
* :mod:`~jvae.app.dashboard.limits`: the server's bounds (connections, timeouts, backlog).
* :mod:`~jvae.app.dashboard.samplers`: fitted samplers as an alternative to prior samples.
"""

from jvae.app.dashboard.explorer import (
    DECODE_BATCH,
    ENCODE_BATCH,
    MAP_POINTS,
    Explorer,
    LatentMap,
    interpolate,
    latent_map,
    make_explorer,
    project_2d,
)
from jvae.app.dashboard.hook import (
    Dashboard,
)
from jvae.app.dashboard.limits import (
    LISTEN_BACKLOG,
    MAX_CONNECTIONS,
    READ_TIMEOUT_S,
    RETRY_AFTER_S,
    DeadlineReader,
    Refuser,
    connection_cap,
)
from jvae.app.dashboard.replay import (
    serve,
)
from jvae.app.dashboard.samplers import (
    SAMPLER_HEADER,
    PageSamplers,
)
from jvae.app.dashboard.server import (
    MAX_BODY,
    MAX_IN_FLIGHT,
    STATIC_DIR,
    VIEW_GAP_S,
    VIEWS,
    DashboardServer,
    check_view,
    render,
    start_server,
    wav_bytes,
)
from jvae.app.dashboard.state import (
    AUDIO_KINDS,
    AUDIO_PLOT_KINDS,
    IMAGE_KINDS,
    RunState,
    Snapshot,
)

__all__ = [
    "AUDIO_KINDS",
    "AUDIO_PLOT_KINDS",
    "DECODE_BATCH",
    "Dashboard",
    "DashboardServer",
    "DeadlineReader",
    "ENCODE_BATCH",
    "Explorer",
    "IMAGE_KINDS",
    "LISTEN_BACKLOG",
    "LatentMap",
    "MAP_POINTS",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_IN_FLIGHT",
    "PageSamplers",
    "READ_TIMEOUT_S",
    "RETRY_AFTER_S",
    "Refuser",
    "RunState",
    "SAMPLER_HEADER",
    "STATIC_DIR",
    "Snapshot",
    "VIEWS",
    "VIEW_GAP_S",
    "check_view",
    "connection_cap",
    "interpolate",
    "latent_map",
    "make_explorer",
    "project_2d",
    "render",
    "serve",
    "start_server",
    "wav_bytes",
]
