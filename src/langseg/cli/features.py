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

from .arguments import add_common_arguments, exit_status, positive_int, resolution_arg
from .batches import guarded_results
from .features_index import comparable, finish_index, index_name, part_path, previous_entries, write_index
from .plan import all_inputs, refuse_existing, this_slice
from .report import Report, progress
from .session import joined_ranks, open_session

ORDER = 20

SUFFIXES = {"npy": ".npy", "safetensors": ".safetensors", "pt": ".pt"}
INDEX_EVERY = 25  # rewrite index.json after this many new images, so an interrupted run keeps one
PCA_SAMPLE_IMAGES = 32  # the dataset-wide PCA basis is fitted on this many inputs, evenly spread
PCA_SAMPLE_VECTORS = 262_144  # ... and on at most this many pixel vectors of them in all
LAYOUTS = {"chw": "(D, h, w)", "hwc": "(h, w, D)"}

EPILOG = """examples:
  langseg features frames/ --out feats/ --weights lseg-demo-vitl16
  langseg features "scans/*.jpg" --out feats/ --resolution full --dtype float32 --format safetensors
  langseg features frames/ --out feats/ --batch-size 8 --device cuda
  langseg features photo.jpg --out feats/ --resolution 640x480 --pca-preview --multi-scale
  langseg features scan/color/ --out feats/ --preset openscene --weights lseg-demo-vitl16
  langseg features frames/ --out feats/ --layout hwc --pca-dim 64 --pca-preview
  torchrun --nproc-per-node 8 -m langseg features --inputs-from frames.txt --out feats/

reading the output (numpy):
  import json, numpy as np
  index = json.load(open("feats/index.json"))
  f = np.load("feats/" + index["images"][0]["file"])   # (D, h, w), unit norm over D (--layout chw)

""" + exit_status("options/weights")


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
        default=None,
        metavar="half|full|WxH",
        help="feature map size (default: half, or the --preset's)",
    )
    p.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        default="chw",
        help="array layout: chw = (D, h, w), hwc = (h, w, D) as ConceptFusion reads (default: chw)",
    )
    p.add_argument(
        "--pca-dim",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"store K principal components instead of the D channels: one basis for the whole run, "
        f"fitted on {PCA_SAMPLE_IMAGES} inputs spread over the list (at most {PCA_SAMPLE_VECTORS} pixel "
        "vectors), saved as pca.safetensors (mean, components, explained variance)",
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
        help="also write NAME.pca.png: the top 3 principal components of the features as RGB, "
        "one basis and colour scale for the whole run (pca.safetensors)",
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
        "layout": f"{LAYOUTS[args.layout]}; "
        + (
            f"D = {args.pca_dim} PCA coordinates (see pca)"
            if args.pca_dim
            else "unit L2 norm over D at every pixel"
        ),
        "embed_dim": session.predictor.model.config.embed_dim,
        "pca": None,  # filled in by _pca_basis when --pca-dim or --pca-preview
    }


def run(args: argparse.Namespace) -> int:
    with joined_ranks(args) as place:  # under torchrun / srun: this process's rank and device
        return _run(args, place)


def _run(args: argparse.Namespace, place) -> int:
    from ..outputs import output_path

    every_item, every_stem, notes = all_inputs(args)
    items, stems = this_slice(args, place, every_item, every_stem)
    notes = notes if place.is_main else []
    index_path = args.out / index_name(args.shard)
    files = {
        item: (
            output_path(args.out, stem, SUFFIXES[args.format]),
            output_path(args.out, stem, ".pca.png") if args.pca_preview else None,
        )
        for item, stem in zip(items, stems)
    }
    refuse_existing(args, [index_path] + [p for pair in files.values() for p in pair if p is not None])
    session = open_session(args, templates=None)
    settings = _settings(args, session)
    basis = _pca_basis(args, session, settings, every_item) if (args.pca_dim or args.pca_preview) else None
    previous = previous_entries(index_path, settings) if args.skip_existing else {}
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
    return _export(args, session, settings, todo, files, entries, order, report, index_path, basis)


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _pca_basis(args, session, settings: dict[str, Any], every_item: list):
    """The run's one PCA basis: loaded from ``--out``/pca.safetensors when it was fitted with these
    settings, else fitted on a deterministic sample of the whole input list and saved there.

    A file lock makes one process fit while the others (ranks, array tasks, a second shell) wait and
    then load the same file, so every frame of every process is projected on one basis. A basis made
    with other settings is refused unless ``--overwrite``. Sets ``settings["pca"]``.
    """
    from filelock import FileLock

    from ..errors import LangsegError
    from ..files import write_bytes
    from ..pca import PCA_NAME, fit_basis, load_basis

    embed_dim = session.predictor.model.config.embed_dim
    if args.pca_dim and args.pca_dim > embed_dim:
        raise LangsegError(
            f"--pca-dim {args.pca_dim} exceeds the feature dimension {embed_dim} of these weights"
        )
    sample = _pca_sample(every_item)
    dim = min(max(args.pca_dim or 0, 3), embed_dim)  # the preview takes the first three
    info = _pca_info(settings, sample, dim)
    path = args.out / PCA_NAME
    args.out.mkdir(parents=True, exist_ok=True)
    with FileLock(args.out / f".{PCA_NAME}.lock"):
        basis = load_basis(path) if path.exists() else None
        if basis is not None and basis.info != info:
            if not args.overwrite:
                raise LangsegError(
                    f"{path} was fitted with other settings or inputs; use another --out or --overwrite"
                )
            basis = None
        if basis is None:
            maps = _sample_features(args, session.predictor, sample)
            basis = fit_basis(maps, dim, per_map=max(1, PCA_SAMPLE_VECTORS // len(sample)), info=info)
            write_bytes(path, basis.to_bytes(), overwrite=True)
    settings["pca"] = {
        **basis.record(),
        "applied": bool(args.pca_dim),
        "stored": f"(x - mean) @ components[:{args.pca_dim}].T" if args.pca_dim else None,
    }
    return basis


def _pca_sample(every_item: list) -> list:
    """:data:`PCA_SAMPLE_IMAGES` inputs spread evenly over the whole list (the same in every process)."""
    count = min(len(every_item), PCA_SAMPLE_IMAGES)
    picks = sorted({round(i * (len(every_item) - 1) / max(count - 1, 1)) for i in range(count)})
    return [every_item[i] for i in picks]


def _pca_info(settings: dict[str, Any], sample: list, dim: int) -> dict[str, Any]:
    """What a saved basis must have been fitted with to serve this run."""
    import hashlib

    names = "\n".join(f"{item.path}#{item.frame}" for item in sample)
    return {
        "dim": dim,
        "weights_sha256": str(settings["weights"]["sha256"]),
        "preprocessing": comparable(settings["preprocessing"]),
        "resolution": settings["resolution"],
        "sample_images": len(sample),
        "sample_sha256": hashlib.sha256(names.encode()).hexdigest(),
        "max_vectors": PCA_SAMPLE_VECTORS,
        "seed": 0,
    }


def _sample_features(args, predictor, sample: list):
    """The feature maps of the sample, one at a time (unreadable inputs left out)."""
    from ..inputs import iter_decoded

    decoded = iter_decoded(sample, max_pixels=args.max_pixels, background=args.background)
    with progress(len(sample)) as bar:
        bar.set_description("PCA basis")
        for d in decoded:
            bar.update(1)
            if d.error is None:
                yield predictor.features(d.image, resolution=args.resolution, keep_on_device=False)


def _export(
    args, session, settings, todo, files, entries, order, report: Report, index_path: Path, basis=None
) -> int:
    from ..distributed import world

    rank, size = world()
    target = index_path if size == 1 else part_path(index_path, rank)  # rank 0 merges the parts at the end
    start = time.perf_counter()
    since_index = 0
    predictor = session.predictor
    with progress(len(todo)) as bar:
        for d, feats, per_image in guarded_results(
            args,
            predictor,
            todo,
            report,
            bar,
            lambda images: predictor.features(
                images, resolution=args.resolution, batch_size=len(images), keep_on_device=False
            ),
            lambda image: predictor.features(image, resolution=args.resolution, keep_on_device=False),
            need=lambda d: feature_bytes(predictor, d.image.shape[:2], args.resolution),
            describe=lambda d: "{}x{} with --resolution {}".format(
                *d.image.shape[1::-1], settings["resolution"]
            ),
            hint="try a smaller --resolution or --max-side",
        ):
            with report.guard(d.item.path):
                entry = _write(args, predictor, settings, d, feats, files[d.item], per_image, basis)
                entries[entry["file"]] = entry
                report.done += 1
                since_index += 1
            if since_index >= INDEX_EVERY:
                write_index(target, settings, entries, order)
                since_index = 0
    if entries or not target.exists():
        write_index(target, settings, entries, order)
    finish_index(index_path, rank, size)
    return report.summary("exported features of", time.perf_counter() - start, args.out)


def feature_bytes(predictor, size: tuple[int, int], resolution) -> int:
    """Memory one image's features take: the network's share, and the ``D x h x w`` float32 output
    at ``resolution`` (twice: interpolated and normalized)."""
    from ..predictor import _feature_size

    h, w = _feature_size(resolution, predictor.processed_size(*size), size)
    return predictor.memory_estimate(*size, 0) + 2 * 4 * predictor.model.config.text.embed_dim * h * w


def _write(args, predictor, settings, d, feats, files, infer_s: float, basis=None) -> dict[str, Any]:
    """Write one image's features (and preview) unless kept; return its index entry."""
    import numpy as np
    from PIL import Image

    from ..files import write_array, write_image

    feat_path, preview_path = files
    keep = args.skip_existing
    H, W = d.image.shape[:2]
    values = basis.project(feats)[: args.pca_dim] if args.pca_dim else feats.numpy()
    if args.layout == "hwc":
        values = values.transpose(1, 2, 0)
    array = np.ascontiguousarray(values.astype(np.dtype(args.dtype)))
    meta = {
        "input": str(d.item.path),
        "original_size": f"{W}x{H}",
        "layout": LAYOUTS[args.layout],
        "weights_sha256": str(settings["weights"]["sha256"]),
    }
    if not (keep and feat_path.exists()):
        write_array(feat_path, array, args.format, overwrite=args.overwrite, metadata=meta)
    if preview_path is not None and not (keep and preview_path.exists()):
        write_image(preview_path, Image.fromarray(basis.preview(feats)), overwrite=args.overwrite)
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
