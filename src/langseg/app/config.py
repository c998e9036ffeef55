"""AppConfig: everything ``langseg app`` can be told, in one dataclass filled by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..inference import MultiScaleConfig

MIB = 1024 * 1024


@dataclass
class AppConfig:
    """Settings of the web demo and its HTTP API (model, limits, network)."""

    weights: str = "lseg-toy"  # path, bundled name or registry name of the model to serve
    device: str = "auto"  # "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:1", "mps"
    precision: str = "fp32"  # autocast precision: fp32, fp16 or bf16
    backend_url: str | None = None  # serve the page only and run inference on this remote langseg app
    host: str = "127.0.0.1"  # interface to bind; "0.0.0.0" exposes the demo to the network
    port: int = 7860  # TCP port
    concurrency: int = 1  # inferences run at the same time (UI and API together)
    queue_size: int = 16  # requests allowed to wait for a slot; more are refused (HTTP 503 / UI error)
    max_pixels: int = 25_000_000  # refuse images with more pixels than this
    max_upload_bytes: int = 20 * MIB  # refuse uploads larger than this
    max_side: int | None = 1024  # long side the model sees (shorter images untouched); None = full size
    max_labels: int = 64  # refuse longer label lists
    multi_scale: MultiScaleConfig | None = None  # multi-scale settings when asked for; None = official
    default_labels: str | None = None  # labels pre-filled in the UI; None = the checkpoint's own labels
    examples: list[Path] = field(default_factory=list)  # example images offered in the UI
    remote_timeout: float = 300.0  # seconds to wait for a remote backend's answer

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.concurrency > 8:  # the model's text-embedding cache (32 label sets) must outlive a batch
            raise ValueError(f"concurrency must be at most 8, got {self.concurrency}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be 0 or more, got {self.queue_size}")
        if self.max_pixels < 32 * 32:
            raise ValueError(f"max_pixels must be at least {32 * 32}, got {self.max_pixels}")
        if self.max_upload_bytes < 1024:
            raise ValueError(f"max_upload_bytes must be at least 1024, got {self.max_upload_bytes}")
        if self.max_side is not None and self.max_side < 32:
            raise ValueError(f"max_side must be at least 32 (or None), got {self.max_side}")
        if not 1 <= self.max_labels <= 256:
            raise ValueError(f"max_labels must be between 1 and 256, got {self.max_labels}")
        if self.backend_url is not None and not self.backend_url.startswith(("http://", "https://")):
            raise ValueError(f"backend URL must start with http:// or https://, got {self.backend_url!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {self.port}")


def default_examples() -> list[Path]:
    """Example images: the package's ``assets/examples``, else a source checkout's ``examples/`` folder."""
    from .. import ASSETS
    from ..images import IMAGE_SUFFIXES

    checkout = Path(__file__).resolve().parents[3] / "examples"  # <repo>/src/langseg/app/config.py
    for folder in (ASSETS / "examples", checkout):
        if folder.is_dir():
            found = sorted(
                p
                for p in folder.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")  # not ground truth
            )
            if found:
                return found
    return []
