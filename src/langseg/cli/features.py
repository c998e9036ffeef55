"""``langseg features``: dense, unit-norm, CLIP-aligned per-pixel embeddings, one file per image.

Each image gives a ``(D, h, w)`` array (``NAME.npy``, ``.safetensors`` or ``.pt``); ``index.json``
records the weights (with SHA-256), preprocessing, resolution, dtype and every file with its
image's size, so downstream code can reproduce the numbers. Files are written as they are made, so
memory does not grow with the number of images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import (
    Report,
    add_common_arguments,
    decoded_batches,
    images_per_call,
    open_session,
    plan_inputs,
    progress,
    run_batch,
)

ORDER = 20

INDEX_NAME = "index.json"
SUFFIXES = {"npy": ".npy", "safetensors": ".safetensors", "pt": ".pt"}
INDEX_EVERY = 25  # rewrite index.json after this many new images, so an interrupted run keeps one

EPILOG = """examples:
  langseg features frames/ --out feats/ --weights lseg-demo-vitl16
  langseg features "scans/*.jpg" --out feats/ --resolution full --dtype float32 --format safetensors
  langseg features frames/ --out feats/ --batch-size 8 --device cuda
  langseg features photo.jpg --out feats/ --resolution 640x480 --pca-preview --multi-scale

reading the output (numpy):
  import json, numpy as np
  index = json.load(open("feats/index.json"))
  f = np.load("feats/" + index["images"][0]["file"])   # (D, h, w), unit norm over D

exit status: 0 all images done, 1 some inputs skipped (reported by name), 2 bad options/weights.
"""


def resolution_arg(text: str) -> str | tuple[int, int]:
    if text in ("half", "full"):
        return text
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected half, full or WIDTHxHEIGHT like 640x480, got {text!r}"
        ) from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return (w, h)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="export per-pixel CLIP-aligned embeddings (one file per image + index.json)",
        description="Write the unit-normalized per-pixel embeddings (D x h x w) of each image, one file per "
        "image named after it, and index.json describing weights, preprocessing, resolution, dtype and "
        "files. 'half' resolution is the network's own output: ceil(h/2) x ceil(w/2) of the image it "
        "sees (after --max-side); 'full' is the input's size; WxH any size (bilinear, re-normalized).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(p, default_out=None)
    p.add_argument(
        "--resolution",
        type=resolution_arg,
        default="half",
        metavar="half|full|WxH",
        help="feature map size (default: half)",
    )
    p.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default="float16",
        help="stored precision (default: float16)",
    )
    p.add_argument("--format", choices=sorted(SUFFIXES), default="npy", help="file format (default: npy)")
    p.add_argument(
        "--pca-preview",
        action="store_true",
        help="also write NAME.pca.png: the top 3 principal components of the features as RGB",
    )
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace, session) -> dict[str, Any]:
    res = (
        args.resolution if isinstance(args.resolution, str) else f"{args.resolution[0]}x{args.resolution[1]}"
    )
    return {
        "weights": session.weights,
        "preprocessing": session.protocol,
        "resolution": res,
        "dtype": args.dtype,
        "format": args.format,
        "layout": "(D, h, w) channels first; unit L2 norm over D at every pixel",
        "embed_dim": session.predictor.model.config.embed_dim,
    }


def run(args: argparse.Namespace) -> int:
    from ..errors import LangsegError
    from ..outputs import existing, output_path

    items, stems, notes = plan_inputs(args)
    index_path = args.out / INDEX_NAME
    files = {
        item: (
            output_path(args.out, stem, SUFFIXES[args.format]),
            output_path(args.out, stem, ".pca.png") if args.pca_preview else None,
        )
        for item, stem in zip(items, stems)
    }
    if not (args.overwrite or args.skip_existing):
        clash = existing([index_path] + [p for pair in files.values() for p in pair if p is not None])
        if clash:
            raise LangsegError(
                f"output files exist: {clash}; pass --overwrite to replace them or "
                "--skip-existing to keep them and do the rest"
            )
    session = open_session(args, templates=None)
    settings = _settings(args, session)
    previous = _previous_entries(index_path, settings) if args.skip_existing else {}
    report = Report(notes)
    entries: dict[str, dict[str, Any]] = {}
    todo = []
    for item in items:
        feat, preview = files[item]
        old = previous.get(_rel(feat, args.out))
        if old is not None and feat.exists() and (preview is None or preview.exists()):
            entries[old["file"]] = old
            report.kept += 1
        else:
            todo.append(item)
    order = {_rel(files[item][0], args.out): i for i, item in enumerate(items)}
    return _export(args, session, settings, todo, files, entries, order, report, index_path)


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _previous_entries(index_path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries of an earlier run's index (for --skip-existing); its settings must match this run's."""
    import json

    from ..errors import LangsegError

    if not index_path.exists():
        return {}
    try:
        old = json.loads(index_path.read_text(encoding="utf-8"))
        old_settings = {k: old[k] for k in settings}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LangsegError(
            f"{index_path}: not a features index this version can extend ({e}); "
            "use another --out or --overwrite"
        ) from None
    changed = sorted(k for k in settings if _comparable(old_settings[k]) != _comparable(settings[k]))
    if changed:
        raise LangsegError(
            f"{index_path} was written with different {', '.join(changed)}; "
            "use another --out, the same options, or --overwrite"
        )
    return {e["file"]: e for e in old.get("images", []) if isinstance(e, dict) and "file" in e}


def _comparable(value: Any) -> Any:
    """Settings as JSON sees them (tuples become lists; the device may differ between runs)."""
    import json

    value = json.loads(json.dumps(value))
    if isinstance(value, dict):
        value.pop("device", None)
        value.pop("path", None)
    return value


def _export(args, session, settings, todo, files, entries, order, report: Report, index_path: Path) -> int:
    from .. import __version__
    from ..files import write_json

    batch_size = images_per_call(args, session.predictor)

    def save_index() -> None:
        images = sorted(entries.values(), key=lambda e: order.get(e["file"], len(order)))
        index = {"langseg_version": __version__, **settings, "images": images}
        write_json(index_path, index, overwrite=True)

    start = time.perf_counter()
    since_index = 0
    predictor = session.predictor
    with progress(len(todo)) as bar:
        for ok in decoded_batches(args, todo, batch_size, report, bar):
            t0 = time.perf_counter()
            maps = run_batch(
                predictor,
                ok,
                lambda images: predictor.features(
                    images, resolution=args.resolution, batch_size=batch_size, keep_on_device=False
                ),
                lambda image: predictor.features(image, resolution=args.resolution, keep_on_device=False),
                report,
            )
            per_image = (time.perf_counter() - t0) / len(ok)
            for d, feats in zip(ok, maps):
                if feats is not None:
                    entry = _write(args, predictor, settings, d, feats, files[d.item], per_image)
                    entries[entry["file"]] = entry
                    report.done += 1
                    since_index += 1
                bar.update(1)
            if since_index >= INDEX_EVERY:
                save_index()
                since_index = 0
    if entries or not index_path.exists():
        save_index()
    return report.summary("exported features of", time.perf_counter() - start, args.out)


def _write(args, predictor, settings, d, feats, files, infer_s: float) -> dict[str, Any]:
    """Write one image's features (and preview) unless kept; return its index entry."""
    import numpy as np
    from PIL import Image

    from ..files import write_array, write_image
    from ..visualize import pca_rgb

    feat_path, preview_path = files
    keep = args.skip_existing
    H, W = d.image.shape[:2]
    array = feats.numpy().astype(np.dtype(args.dtype))
    meta = {
        "input": str(d.item.path),
        "original_size": f"{W}x{H}",
        "layout": "(D, h, w)",
        "weights_sha256": str(settings["weights"]["sha256"]),
    }
    if not (keep and feat_path.exists()):
        write_array(feat_path, array, args.format, overwrite=args.overwrite, metadata=meta)
    if preview_path is not None and not (keep and preview_path.exists()):
        write_image(preview_path, Image.fromarray(pca_rgb(feats)), overwrite=args.overwrite)
    h, w = predictor.processed_size(H, W)
    name = _rel(feat_path, args.out)
    return {
        "input": str(d.item.path),
        "file": name,
        "preview": _rel(preview_path, args.out) if preview_path is not None else None,
        "original_size": [W, H],
        "processed_size": [w, h],
        "shape": list(array.shape),
        "timing": {"decode_s": round(d.seconds, 4), "inference_s": round(infer_s, 4)},
    }
