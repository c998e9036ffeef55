"""``langseg segment``: label every pixel of images with words of your choice.

Per image: ``NAME.mask.png`` (indexed PNG, pixel value = label index, the input's upright size),
``NAME.overlay.png`` (colours blended over the image, legend beside it) and ``NAME.json`` (labels,
pixel shares, size, weights, protocol, timing). The options shared with ``langseg features`` (weights,
device, inputs, outputs, test-time augmentation) are in :mod:`langseg.cli.common`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from .common import (
    Report,
    Session,
    add_common_arguments,
    add_numerics_argument,
    decoded_batches,
    images_per_call,
    join_ranks,
    open_session,
    plan_inputs,
    progress,
    run_batch,
)

ORDER = 10

EPILOG = """examples:
  langseg segment examples/garden.jpg --labels "sky,tree,grass,house,other"
  langseg segment photos/ --labels "cat;kitten,grass;lawn,other" --out masks/
  langseg segment "frames/*.png" --labels-file labels.txt --template "a photo of a {}." --batch-size 8
  langseg segment big.jpg --labels "road,car,building,sky" --multi-scale --weights lseg-demo-vitl16

labels:
  commas separate classes, ';' separates synonyms of one class (their embeddings are averaged):
  "cat;kitten,grass" has two classes. Without --labels the checkpoint's own labels are used.

exit status: 0 all images done, 1 some inputs skipped (reported by name), 2 bad options/labels/weights.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images into the labels you give (masks, overlays, JSON records)",
        description="Label every pixel of each image with one of the given labels. Writes, per image and "
        "named after it: NAME.mask.png (indexed PNG: pixel value = label index, same size as the upright "
        "input; 16-bit grayscale above 256 labels), NAME.overlay.png (colours over the image with a "
        "legend of the labels present) and NAME.json (labels, pixel shares, size, weights, timing). "
        "Existing files are never replaced without --overwrite.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(p, default_out="langseg-out")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--labels",
        "-l",
        metavar="LABELS",
        help='comma-separated labels, ";" between synonyms: "cat;kitten,grass,other"',
    )
    group.add_argument(
        "--labels-file",
        type=Path,
        metavar="FILE",
        help="labels one per line (';' between synonyms, '#' comments)",
    )
    p.add_argument(
        "--template",
        action="append",
        default=None,
        metavar="TEXT",
        help='prompt template with {} for the label, e.g. "a photo of a {}."; repeat to '
        "ensemble several (default: the bare label, as the official demo)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default: 0.5)")
    p.add_argument("--no-overlay", action="store_true", help="do not write NAME.overlay.png")
    p.add_argument(
        "--save-logits",
        action="store_true",
        help="also write NAME.logits.npy: (K, H, W) float16 scores before softmax",
    )
    add_numerics_argument(p)
    p.set_defaults(func=run)


@dataclass
class _Files:
    mask: Path
    overlay: Path | None
    logits: Path | None
    record: Path

    def all(self) -> list[Path]:
        return [p for p in (self.mask, self.overlay, self.logits, self.record) if p is not None]


def run(args: argparse.Namespace) -> int:
    from ..distributed import close_distributed

    place = join_ranks(args)  # under torchrun / srun: this process's rank and device
    try:
        return _run(args, place)
    finally:
        close_distributed()


def _run(args: argparse.Namespace, place) -> int:
    from ..errors import LangsegError
    from ..labels import check_prompt_lengths, parse_labels, parse_templates, read_labels_file
    from ..outputs import existing, output_path

    if not 0.0 <= args.alpha <= 1.0:
        raise LangsegError(f"--alpha must be between 0 and 1, got {args.alpha}")
    classes = (
        read_labels_file(args.labels_file)
        if args.labels_file
        else (parse_labels(args.labels) if args.labels is not None else None)
    )
    templates = parse_templates(args.template)
    if classes is not None:
        check_prompt_lengths(classes, templates)
    items, stems, notes = plan_inputs(args, place)
    files = {
        item: _Files(
            mask=output_path(args.out, stem, ".mask.png"),
            overlay=None if args.no_overlay else output_path(args.out, stem, ".overlay.png"),
            logits=output_path(args.out, stem, ".logits.npy") if args.save_logits else None,
            record=output_path(args.out, stem, ".json"),
        )
        for item, stem in zip(items, stems)
    }
    report = Report(notes)
    if not (args.overwrite or args.skip_existing):
        clash = existing([p for f in files.values() for p in f.all()])
        if clash:
            raise LangsegError(
                f"output files exist: {clash}; pass --overwrite to replace them or "
                "--skip-existing to keep them and do the rest"
            )
    todo = [item for item in items if not (args.skip_existing and all(p.exists() for p in files[item].all()))]
    report.kept = len(items) - len(todo)

    session = open_session(args, templates)
    if classes is None:  # the checkpoint's own labels (may repeat a name, as ADE20K's "screen")
        classes = [tuple(n.strip() for n in lab.split(";")) for lab in session.predictor.model.config.labels]
    session.predictor.text_features(classes)  # the model's own tokenizer check, before any image work
    return _segment(args, session, classes, todo, files, report)


def _segment(args, session: Session, classes, todo, files, report: Report) -> int:
    predictor = session.predictor
    batch_size = images_per_call(args, predictor)
    start = time.perf_counter()
    with progress(len(todo)) as bar:
        for ok in decoded_batches(args, todo, batch_size, report, bar):
            t0 = time.perf_counter()
            preds = run_batch(
                predictor,
                ok,
                lambda images: predictor.predict(
                    images, classes, batch_size=batch_size, return_logits=args.save_logits
                ),
                lambda image: predictor.predict(image, classes, return_logits=args.save_logits),
                report,
            )
            per_image = (time.perf_counter() - t0) / len(ok)
            for d, pred in zip(ok, preds):
                if pred is not None:
                    _write(args, session, classes, d, pred, files[d.item], per_image)
                    report.done += 1
                bar.update(1)
    return report.summary("segmented", time.perf_counter() - start, args.out)


def _write(args, session: Session, classes, d, pred, files: _Files, infer_s: float) -> None:
    import numpy as np

    from .. import __version__
    from ..files import write_array, write_image, write_json
    from ..visualize import mask_image, overlay, palette

    t0 = time.perf_counter()
    names = pred.label_names
    keep = args.skip_existing

    def needed(path: Path | None) -> bool:
        return path is not None and not (keep and path.exists())

    if needed(files.mask):
        write_image(files.mask, mask_image(pred.labels, len(names)), overwrite=args.overwrite)
    if needed(files.overlay):
        picture = overlay(d.image, pred.labels, names, alpha=args.alpha)
        write_image(
            files.overlay, picture, overwrite=args.overwrite, compress_level=1
        )  # fast; photos barely shrink
    if needed(files.logits):
        write_array(files.logits, pred.logits.numpy().astype(np.float16), "npy", overwrite=args.overwrite)
    counts = np.bincount(pred.labels.ravel(), minlength=len(names))
    shares = counts / max(int(counts.sum()), 1)
    colors = palette(len(names))
    H, W = pred.labels.shape
    record = {
        "input": str(d.item.path),
        "image_size": {"width": W, "height": H},
        "processed_size": dict(zip(("height", "width"), session.predictor.processed_size(H, W))),
        "labels": [
            {
                "index": i,
                "name": names[i],
                "synonyms": list(classes[i]),
                "share": float(shares[i]),
                "color": [int(c) for c in colors[i]],
            }
            for i in range(len(names))
        ],
        "present": [int(i) for i in np.flatnonzero(counts)],
        "templates": session.predictor.templates,
        "outputs": {
            k: p.name
            for k, p in (("mask", files.mask), ("overlay", files.overlay), ("logits", files.logits))
            if p is not None
        },
        "weights": session.weights,
        "preprocessing": session.protocol,
        "timing": {
            "decode_s": round(d.seconds, 4),
            "inference_s": round(infer_s, 4),
            "write_s": round(time.perf_counter() - t0, 4),
        },
        "langseg_version": __version__,
    }
    if needed(files.record):
        write_json(files.record, record, overwrite=args.overwrite)
