"""Web demo and HTTP API: ``langseg app`` (Gradio page + ``POST /api/segment`` on one server).

>>> from langseg.app import AppConfig, create_app
>>> app = create_app(AppConfig(weights="lseg-demo-vitl16"))   # a FastAPI app; serve with uvicorn

The package stays importable without gradio; the page itself needs the ``app`` extra.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, whoever imports gradio first

from .backend import (  # noqa: E402
    Backend,
    BackendError,
    BackendInfo,
    BusyError,
    FeatureResult,
    LocalBackend,
    SegmentResult,
)
from .config import AppConfig  # noqa: E402
from .server import create_app, make_backend, serve, serve_in_thread  # noqa: E402

__all__ = [
    "AppConfig",
    "Backend",
    "BackendError",
    "BackendInfo",
    "BusyError",
    "FeatureResult",
    "LocalBackend",
    "SegmentResult",
    "create_app",
    "make_backend",
    "serve",
    "serve_in_thread",
]
