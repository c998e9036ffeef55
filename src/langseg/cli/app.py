"""``langseg app``: the web demo and HTTP API (Gradio page + ``POST /api/segment``) on one server."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 70

EPILOG = """examples:
  langseg app                                          # bundled toy model, http://127.0.0.1:7860
  langseg app --weights lseg-demo-vitl16 --device cuda --precision fp16
  langseg app --weights lseg-demo/ --host 0.0.0.0 --port 8080 --concurrency 2
  langseg app --backend http://gpu-box:7860            # page here, model on a remote langseg app

API (same server):
  curl -F image=@photo.jpg -F "labels=dog, grass, other" http://127.0.0.1:7860/api/segment
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ..app.config import AppConfig

    d = AppConfig()
    p = sub.add_parser(
        "app",
        help="start the web demo and HTTP API",
        description="Start a Gradio web demo (segment with any labels, overlay + legend + mask PNG; dense "
        "feature PCA with per-pixel label similarity) and, on the same server, the HTTP API "
        "POST /api/segment and POST /api/features. The model is loaded once; inference runs through a "
        "bounded queue. Binds to 127.0.0.1 unless --host says otherwise; no telemetry.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(p, d)
    _add_limit_options(p, d)
    p.add_argument(
        "--examples",
        type=Path,
        nargs="*",
        default=None,
        help="example images (files, folders, globs) offered in the page",
    )
    p.set_defaults(func=run)


def _add_model_options(p: argparse.ArgumentParser, d) -> None:
    """Where the model runs and where the server listens; ``d``: the defaults (an ``AppConfig``)."""
    p.add_argument(
        "--weights",
        default=d.weights,
        help=f"weights: a folder of ours, an official .ckpt, or a name (default: {d.weights})",
    )
    p.add_argument(
        "--backend",
        metavar="URL",
        default=None,
        help="serve the page only and send inference to the langseg app at URL (no local model)",
    )
    p.add_argument("--host", default=d.host, help=f"interface to bind (default: {d.host}; 0.0.0.0 = all)")
    p.add_argument("--port", type=int, default=d.port, help=f"TCP port (default: {d.port})")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        default=d.precision,
        help="autocast precision (default: fp32)",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="labels pre-filled in the page (default: the checkpoint's own, e.g. 'dog, grass, other')",
    )


def _add_limit_options(p: argparse.ArgumentParser, d) -> None:
    """How much work the server accepts; ``d``: the defaults (an ``AppConfig``)."""
    p.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help=f"inferences run at the same time, 1-8 (default: {d.concurrency})",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=d.queue_size,
        help=f"requests that may wait; more are refused with HTTP 503 (default: {d.queue_size})",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help=f"refuse larger images (default: {d.max_pixels:,})",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_upload_bytes / 2**20,
        help=f"refuse larger uploads, in MiB (default: {d.max_upload_bytes / 2**20:.0f})",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=d.max_side,
        help=f"long side the model sees, larger images are shrunk and the mask scaled back; "
        f"0 = full size (default: {d.max_side})",
    )
    p.add_argument(
        "--max-memory-mb",
        type=int,
        default=d.max_memory_mb,
        metavar="MB",
        help="memory one request may need (estimated from its image size, label count and protocol "
        "before it runs); larger work is refused with HTTP 413/422 (default: half of the RAM)",
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import LangsegError

    config = _config(args)
    _check_port(config.host, config.port)  # the cheap checks run before anything heavy loads
    try:
        import fastapi  # noqa: F401
        import gradio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise LangsegError(f"the web demo needs the 'app' extra: pip install 'langseg[app]' ({e})") from None
    from ..app.server import make_backend, serve

    where = f"the backend at {config.backend_url}" if config.backend_url else f"model {config.weights}"
    print(f"langseg app: loading {where} ...", flush=True)
    try:
        backend = make_backend(config)
        info = backend.info()  # for a remote backend: fails now if it cannot be reached
    except ValueError as e:  # e.g. an unknown device
        raise LangsegError(str(e)) from None
    url = f"http://{'[' + config.host + ']' if ':' in config.host else config.host}:{config.port}"
    print(f"langseg app: {info.model} on {info.device}; open {url}/", flush=True)
    print(f"langseg app: API: POST {url}/api/segment (Ctrl+C stops)", flush=True)
    serve(config, backend)
    return 0


def _config(args: argparse.Namespace):
    """The server's :class:`~langseg.app.config.AppConfig`, after the checks of the examples and labels."""
    from ..app.config import AppConfig, default_examples
    from ..errors import LangsegError
    from ..inputs import list_images

    examples = list_images(args.examples) if args.examples else default_examples()
    missing = [str(p) for p in examples if not p.is_file()]
    if missing:
        raise LangsegError(f"example image not found: {', '.join(missing)}")
    try:
        config = AppConfig(
            weights=args.weights,
            device=args.device,
            precision=args.precision,
            backend_url=args.backend,
            host=args.host,
            port=args.port,
            concurrency=args.concurrency,
            queue_size=args.queue_size,
            max_pixels=args.max_pixels,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_side=args.max_side or None,
            max_memory_mb=args.max_memory_mb,
            default_labels=args.labels,
            examples=examples,
        )
    except ValueError as e:
        raise LangsegError(str(e)) from None
    if args.labels is not None:
        from ..labels import parse_labels

        parse_labels(args.labels)  # fail now, not in the page
    return config


def _check_port(host: str, port: int) -> None:
    import socket

    from ..errors import LangsegError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise LangsegError(
                f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port"
            ) from None
