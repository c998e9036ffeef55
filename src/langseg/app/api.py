"""HTTP API: ``GET /api/info``, ``POST /api/segment``, ``POST /api/features`` (multipart forms in, JSON out).

Errors answer JSON ``{"error": message, "kind": ...}`` with 400 (bad image or form), 404 (no such
route), 405 (wrong method), 413 (too large, or over the memory budget whatever the labels), 422 (bad
labels or options, or over the memory budget with these labels or this protocol), 502 (remote
backend down) or 503 (queue full). Messages quote at most :data:`MAX_MESSAGE` characters.

At most ``concurrency + queue_size`` uploads are received at once; a request beyond that is answered
503 before its body is read, so the memory held by uploads is bounded by the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import LabelError, LangsegError
from ..images import ImageError
from .backend import Backend, BackendError, BudgetError, BusyError, FeatureResult, SegmentResult
from .codec import ImageTooLargeError, b64encode, encode_array, encode_image_png, encode_mask_png
from .config import AppConfig

log = logging.getLogger(__name__)

FORM_OVERHEAD = 64 * 1024  # bytes a multipart body may carry beyond the image itself
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
MAX_MESSAGE = 500  # characters of an error message sent back (user text is never echoed in full)
ROUTES = {"/api/info": "GET", "/api/segment": "POST", "/api/features": "POST"}


def short_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying so when it was cut."""
    return text if len(text) <= limit else text[: limit - 20] + " ... (message cut)"


class RequestError(LangsegError):
    """A malformed request (HTTP 400, or ``status``)."""

    def __init__(self, message: str, status: int = 400, kind: str = "request") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


# the other errors a request may meet -> (HTTP status, kind); the first match wins (subclasses first)
ERROR_STATUS = (
    (ImageTooLargeError, 413, "too_large"),
    (ImageError, 400, "image"),
    (LabelError, 422, "labels"),
    (BusyError, 503, "busy"),
    (BackendError, 502, "backend"),
    (LangsegError, 400, "request"),
)


def error_response(exc: Exception) -> JSONResponse:
    """An exception -> JSON error with the matching HTTP status."""
    if isinstance(exc, RequestError):
        status, kind = exc.status, exc.kind
    elif isinstance(exc, BudgetError):
        status, kind = (413 if exc.image_alone else 422), "budget"
    else:
        known = [(status, kind) for cls, status, kind in ERROR_STATUS if isinstance(exc, cls)]
        if not known:
            log.exception("internal error while answering an API request")
            return JSONResponse({"error": f"internal error: {type(exc).__name__}", "kind": "internal"}, 500)
        status, kind = known[0]
    return JSONResponse({"error": short_message(str(exc)), "kind": kind}, status)


async def read_form(request: Request, config: AppConfig) -> tuple[bytes, str, str | None, str | None]:
    """Multipart request -> (image bytes, file name, labels or None, multi_scale text or None), size-checked."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise RequestError("send multipart/form-data with an 'image' file and a 'labels' field", 400)
    limit = config.max_upload_bytes + FORM_OVERHEAD
    length = request.headers.get("content-length")
    too_large = f"the request is above the upload limit of {config.max_upload_bytes:,} bytes"
    if length and length.isdigit() and int(length) > limit:
        raise ImageTooLargeError(too_large)
    if not length:  # a chunked body: count while receiving, so nothing unbounded reaches memory or disk
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ImageTooLargeError(too_large)
            chunks.append(chunk)
        request._body = b"".join(chunks)  # starlette's form parser reads a received body from here
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as e:  # starlette raises several kinds for malformed bodies
        raise RequestError(f"malformed multipart form: {getattr(e, 'detail', None) or e}") from None
    try:
        upload = form.get("image")
        if upload is None:
            raise RequestError("the form has no 'image' file field")
        if not isinstance(upload, UploadFile):
            raise RequestError("'image' must be a file upload, not a text field")
        data = await upload.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise ImageTooLargeError(
                f"{upload.filename or 'image'}: the upload is above the limit of {config.max_upload_bytes:,} bytes"
            )
        labels, multi = form.get("labels"), form.get("multi_scale")
        if isinstance(labels, UploadFile) or isinstance(multi, UploadFile):
            raise RequestError("'labels' and 'multi_scale' must be text fields")
        name = Path(upload.filename or "image").name[:200] or "image"
        return data, name, labels, multi
    finally:
        await form.close()


def parse_bool(text: str | None, name: str) -> bool:
    if text is None:
        return False
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RequestError(f"{name} must be true or false, got {text!r}", 422, "options")


def segment_json(result: SegmentResult) -> dict:
    """The answer of ``POST /api/segment``: the label names, their pixel shares and the mask as PNG."""
    H, W = result.mask.shape
    return {
        "labels": result.names,
        "shares": result.shares,
        "width": W,
        "height": H,
        "mask_png": b64encode(encode_mask_png(result.mask, len(result.names))),
        "seconds": round(result.seconds, 4),
        "multi_scale": result.multi_scale,
    }


def features_json(result: FeatureResult) -> dict:
    """The answer of ``POST /api/features``: the PCA picture and each grid cell's similarity to each label."""
    K, h, w = result.similarity.shape
    return {
        "labels": result.names,
        "width": result.size[1],
        "height": result.size[0],
        "grid_width": w,
        "grid_height": h,
        "pca_png": b64encode(encode_image_png(Image.fromarray(result.pca))),
        "similarity": encode_array(result.similarity),
        "logit_scale": result.logit_scale,
        "seconds": round(result.seconds, 4),
    }


def route_error(method: str, path: str) -> JSONResponse:
    """405 for an API route asked with the wrong method, else 404 naming the routes."""
    route = f"/api/{path}".rstrip("/")
    if route in ROUTES:
        return JSONResponse(
            {"error": f"{method} {route} is not served; use {ROUTES[route]}", "kind": "method"},
            405,
            headers={"Allow": ROUTES[route]},
        )
    known = ", ".join(f"{m} {r}" for r, m in ROUTES.items())
    message = f"no API route {short_message(route, 100)}; the routes are {known}"
    return JSONResponse({"error": message, "kind": "not_found"}, 404)


def build_router(backend: Backend, config: AppConfig) -> APIRouter:
    """The API routes, answering from ``backend`` (local model or remote service)."""
    router = APIRouter(prefix="/api")
    uploads = router.uploads = Admission(config.concurrency + config.queue_size)

    async def answer(
        request: Request, run: Callable[..., Any], to_json: Callable[[Any], dict]
    ) -> JSONResponse:
        """Admit the request and read its form, then ``run(image bytes, file name, labels, multi_scale
        text)`` off the event loop; its result as ``to_json`` says, or the error as JSON."""
        try:
            with uploads:
                form = await read_form(request, config)
                result = await run_in_threadpool(run, *form)
            return JSONResponse(to_json(result))
        except Exception as e:
            return error_response(e)

    @router.get("/info")
    def info() -> JSONResponse:
        try:
            return JSONResponse(backend.info().to_dict())
        except Exception as e:
            return error_response(e)

    @router.post("/segment")
    async def segment(request: Request) -> JSONResponse:
        def run(data: bytes, name: str, labels: str | None, multi: str | None) -> SegmentResult:
            return backend.segment(data, labels, parse_bool(multi, "multi_scale"), name=name)

        return await answer(request, run, segment_json)

    @router.post("/features")
    async def features(request: Request) -> JSONResponse:
        def run(data: bytes, name: str, labels: str | None, _multi: str | None) -> FeatureResult:
            return backend.features(data, labels, name=name)

        return await answer(request, run, features_json)

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    def unknown(request: Request, path: str) -> JSONResponse:
        return route_error(request.method, path)

    return router


class Admission:
    """Counts requests being received or answered (one event loop, so no lock); past ``limit``,
    :class:`BusyError` before the request's body is read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def __enter__(self) -> Admission:
        if self.current >= self.limit:
            raise BusyError(f"the server is busy ({self.current} requests in progress); try again shortly")
        self.current += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.current -= 1
