"""One ASGI app per process: the HTTP API under ``/api`` and the Gradio page at ``/``."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from .api import build_router
from .backend import Backend, LocalBackend
from .config import AppConfig

log = logging.getLogger(__name__)


def make_backend(config: AppConfig) -> Backend:
    """A remote client when ``config.backend_url`` is set, else the model loaded once in this process."""
    if config.backend_url:
        from .remote import RemoteBackend

        return RemoteBackend(config.backend_url, timeout=config.remote_timeout)
    return LocalBackend.from_config(config)


def create_app(config: AppConfig, backend: Backend | None = None, *, ui: bool = True) -> FastAPI:
    """The FastAPI app serving ``backend`` (built from ``config`` when not given).

    The API routes are registered before the Gradio page is mounted at ``/``, so they take precedence.
    No route fetches anything from outside (the interactive API docs, which load from a CDN, are off).
    """
    from .. import __version__

    backend = backend if backend is not None else make_backend(config)
    app = FastAPI(title="langseg", version=__version__, docs_url=None, redoc_url=None)
    app.state.backend = backend
    router = build_router(backend, config)
    app.include_router(router)
    app.state.uploads = router.uploads  # the upload admission counter, for monitoring
    if not ui:
        return app
    import gradio as gr

    from .ui import CSS, build_blocks

    blocks = build_blocks(backend, config)
    return gr.mount_gradio_app(
        app,
        blocks,
        path="",
        footer_links=["api"],
        max_file_size=config.max_upload_bytes,
        ssr_mode=False,
        mcp_server=False,
        show_error=True,
        css=CSS,
        allowed_paths=[str(p) for p in config.examples],
    )


def serve(config: AppConfig, backend: Backend | None = None) -> None:
    """Run the app with uvicorn until Ctrl+C (``KeyboardInterrupt``) or SIGTERM (``SystemExit(143)``).

    Either way the process unwinds normally after uvicorn's graceful shutdown, so temporary files
    are removed.
    """
    import uvicorn

    app = create_app(config, backend)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=3
        )
    )
    # uvicorn re-raises the signal after shutting down; with the default SIGTERM action that kills
    # the process before cleanup, so turn it into an exception first (main thread only).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_signal) if main else None
    try:
        server.run()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 60.0
) -> Iterator[str]:
    """Serve ``app`` from a background thread (``port=0``: a free one); yields the base URL.

    For notebooks and tests; the server stops when the ``with`` block ends.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="langseg-app", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start on {host}:{port}")
            time.sleep(0.02)
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
