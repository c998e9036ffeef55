"""RemoteBackend: the UI's model calls sent to another ``langseg app`` over its HTTP API.

This is the backend/frontend split: run ``langseg app`` with the model on a GPU machine, and
``langseg app --backend http://gpu-host:7860`` wherever the page should be served.
"""

from __future__ import annotations

import io
import logging

import httpx
import numpy as np
from PIL import Image

from ..errors import LabelError
from ..images import ImageError
from .backend import BackendError, BackendInfo, BusyError, FeatureResult, ImageInput, SegmentResult
from .codec import ImageTooLargeError, b64decode, decode_array, decode_mask_png, encode_image_png

log = logging.getLogger(__name__)

_ERRORS = {"image": ImageError, "too_large": ImageTooLargeError, "labels": LabelError, "busy": BusyError}


class RemoteBackend:
    """Talks to ``POST /api/segment`` and ``POST /api/features`` of a remote langseg app."""

    def __init__(
        self, url: str, *, timeout: float = 300.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"backend URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport, trust_env=False)
        self._info: BackendInfo | None = None

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kw) -> dict:
        try:
            resp = self._client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise BackendError(f"cannot reach the langseg backend at {self.url}: {e}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            if not message:
                raise BackendError(f"backend {self.url}{path} answered HTTP {resp.status_code}")
            kind = body.get("kind") if isinstance(body, dict) else None
            raise _ERRORS.get(kind, BackendError)(message)
        if not isinstance(body, dict):
            raise BackendError(f"backend {self.url}{path} did not answer JSON")
        return body

    def info(self) -> BackendInfo:
        if self._info is None:
            body = self._request("GET", "/api/info")
            try:
                self._info = BackendInfo(**{k: body[k] for k in BackendInfo.__dataclass_fields__})
            except KeyError as e:
                raise BackendError(f"backend {self.url}/api/info lacks the field {e}") from None
        return self._info

    @staticmethod
    def _files(image: ImageInput, name: str) -> dict:
        if isinstance(image, Image.Image):
            return {"image": (f"{name}.png", encode_image_png(image.convert("RGB")), "image/png")}
        return {"image": (name, bytes(image), "application/octet-stream")}

    def segment(
        self, image: ImageInput, labels: str | None = None, multi_scale: bool = False, *, name: str = "image"
    ) -> SegmentResult:
        data = {"multi_scale": "true" if multi_scale else "false"}
        if labels is not None:
            data["labels"] = labels
        body = self._request("POST", "/api/segment", files=self._files(image, name), data=data)
        try:
            mask = decode_mask_png(b64decode(body["mask_png"]))
            shares = {str(k): float(v) for k, v in body["shares"].items()}
            result = SegmentResult(
                list(body["labels"]),
                mask,
                shares,
                float(body.get("seconds", 0.0)),
                bool(body.get("multi_scale", multi_scale)),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise BackendError(f"backend {self.url} sent an unusable segmentation: {e}") from None
        if mask.shape != (int(body["height"]), int(body["width"])):
            raise BackendError(
                f"backend {self.url} sent a mask of shape {mask.shape}, expected "
                f"({body['height']}, {body['width']})"
            )
        return result

    def features(self, image: ImageInput, labels: str | None = None, *, name: str = "image") -> FeatureResult:
        data = {} if labels is None else {"labels": labels}
        body = self._request("POST", "/api/features", files=self._files(image, name), data=data)
        try:
            with Image.open(io.BytesIO(b64decode(body["pca_png"]))) as pca_img:
                pca = np.asarray(pca_img.convert("RGB"))
            return FeatureResult(
                names=list(body["labels"]),
                pca=pca,
                similarity=decode_array(body["similarity"]),
                logit_scale=float(body["logit_scale"]),
                size=(int(body["height"]), int(body["width"])),
                seconds=float(body.get("seconds", 0.0)),
            )
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise BackendError(f"backend {self.url} sent unusable features: {e}") from None
