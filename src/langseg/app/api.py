"""HTTP API: ``GET /api/info``, ``POST /api/segment``, ``POST /api/features`` (multipart forms in, JSON out).

Errors answer JSON ``{"error": message, "kind": ...}`` with 400 (bad image or form), 413 (too large),
422 (bad labels or options), 502 (remote backend down) or 503 (queue full).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import LabelError, LangsegError
from ..images import ImageError
from .backend import Backend, BackendError, BusyError
from .codec import ImageTooLargeError, b64encode, encode_array, encode_image_png, encode_mask_png
from .config import AppConfig

log = logging.getLogger(__name__)

FORM_OVERHEAD = 64 * 1024  # bytes a multipart body may carry beyond the image itself
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class RequestError(LangsegError):
    """A malformed request (HTTP 400, or ``status``)."""

    def __init__(self, message: str, status: int = 400, kind: str = "request") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def error_response(exc: Exception) -> JSONResponse:
    """An exception -> JSON error with the matching HTTP status."""
    if isinstance(exc, RequestError):
        status, kind = exc.status, exc.kind
    elif isinstance(exc, ImageTooLargeError):
        status, kind = 413, "too_large"
    elif isinstance(exc, ImageError):
        status, kind = 400, "image"
    elif isinstance(exc, LabelError):
        status, kind = 422, "labels"
    elif isinstance(exc, BusyError):
        status, kind = 503, "busy"
    elif isinstance(exc, BackendError):
        status, kind = 502, "backend"
    elif isinstance(exc, LangsegError):
        status, kind = 400, "request"
    else:
        log.exception("internal error while answering an API request")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}", "kind": "internal"}, 500)
    return JSONResponse({"error": str(exc), "kind": kind}, status)


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


def build_router(backend: Backend, config: AppConfig) -> APIRouter:
    """The API routes, answering from ``backend`` (local model or remote service)."""
    router = APIRouter(prefix="/api")

    @router.get("/info")
    def info() -> JSONResponse:
        try:
            return JSONResponse(backend.info().to_dict())
        except Exception as e:
            return error_response(e)

    @router.post("/segment")
    async def segment(request: Request) -> JSONResponse:
        try:
            data, name, labels, multi = await read_form(request, config)
            multi_scale = parse_bool(multi, "multi_scale")
            result = await run_in_threadpool(lambda: backend.segment(data, labels, multi_scale, name=name))
            H, W = result.mask.shape
            return JSONResponse(
                {
                    "labels": result.names,
                    "shares": result.shares,
                    "width": W,
                    "height": H,
                    "mask_png": b64encode(encode_mask_png(result.mask, len(result.names))),
                    "seconds": round(result.seconds, 4),
                    "multi_scale": result.multi_scale,
                }
            )
        except Exception as e:
            return error_response(e)

    @router.post("/features")
    async def features(request: Request) -> JSONResponse:
        try:
            data, name, labels, _ = await read_form(request, config)
            result = await run_in_threadpool(lambda: backend.features(data, labels, name=name))
            K, h, w = result.similarity.shape
            return JSONResponse(
                {
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
            )
        except Exception as e:
            return error_response(e)

    return router
