"""Web demo and HTTP API: ``langseg app`` (Gradio page + ``POST /api/segment`` on one server).

>>> from langseg.app import AppConfig, create_app
>>> app = create_app(AppConfig(weights="lseg-demo-vitl16"))   # a FastAPI app; serve with uvicorn

Names are imported on first use, so ``langseg --help`` does not load torch, FastAPI or Gradio.
"""

from __future__ import annotations

import os

from ..lazy import lazy_attributes

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, whoever imports gradio first

_LAZY = {
    "AppConfig": "config",
    "Backend": "backend",
    "BackendError": "backend",
    "BackendInfo": "backend",
    "BusyError": "backend",
    "FeatureResult": "backend",
    "LocalBackend": "backend",
    "SegmentResult": "backend",
    "create_app": "server",
    "make_backend": "server",
    "serve": "server",
    "serve_in_thread": "server",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = sorted(_LAZY)
