"""``langseg segment``: label every pixel of images with words of your choice.

Per image: ``NAME.mask.png`` (indexed PNG, pixel value = label index, the input's upright size),
``NAME.overlay.png`` (colours blended over the image, legend beside it) and ``NAME.json`` (labels,
pixel shares, size, weights, protocol, timing). The options shared with ``langseg features`` (weights,
device, inputs, outputs, test-time augmentation) are in :mod:`langseg.cli.arguments`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from .arguments import add_common_arguments, add_numerics_argument, exit_status
from .batches import guarded_results
from .plan import plan_inputs, refuse_existing
from .report import Report, progress
from .session import Session, joined_ranks, open_session

ORDER = 10

EPILOG = """examples:
  langseg segment examples/garden.jpg --labels "sky,tree,grass,house,other"
  langseg segment photos/ --labels "cat;kitten,grass;lawn,other" --out masks/
  langseg segment "frames/*.png" --labels-file labels.txt --template "a photo of a {}." --batch-size 8
  langseg segment big.jpg --labels "road,car,building,sky" --multi-scale --weights lseg-demo-vitl16

labels:
  commas separate classes, ';' separates synonyms of one class (their embeddings are averaged):
  "cat;kitten,grass" has two classes. Without --labels the checkpoint's own labels are used.

""" + exit_status("options/labels/weights")


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
    from ..errors import LangsegError
    from ..labels import parse_labels, parse_templates, read_labels_file

    # cheap checks first: a bad option or label file never waits for torch or the other ranks
    if not 0.0 <= args.alpha <= 1.0:
        raise LangsegError(f"--alpha must be between 0 and 1, got {args.alpha}")
    classes = (
        read_labels_file(args.labels_file)
        if args.labels_file
        else (parse_labels(args.labels) if args.labels is not None else None)
    )
    templates = parse_templates(args.template)
    with joined_ranks(args) as place:  # under torchrun / srun: this process's rank and device
        return _run(args, place, classes, templates)


def _run(args: argparse.Namespace, place, classes, templates) -> int:
    from ..errors import LangsegError
    from ..labels import check_prompt_lengths
    from ..outputs import output_path

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
    refuse_existing(args, [p for f in files.values() for p in f.all()])
    todo = [item for item in items if not (args.skip_existing and all(p.exists() for p in files[item].all()))]
    report.kept = len(items) - len(todo)

    session = open_session(args, templates)
    if classes is None:  # the checkpoint's own labels (may repeat a name, as ADE20K's "screen")
        own = session.predictor.model.config.labels
        if len(own) < 2:
            raise LangsegError(
                f"the weights {session.weights.get('weights') or args.weights} hold no label list of their own "
                f"(only {list(own)}), so every pixel would get the same label; pass --labels"
            )
        classes = [tuple(n.strip() for n in lab.split(";")) for lab in own]
    session.predictor.text_features(classes)  # the model's own tokenizer check, before any image work
    return _segment(args, session, classes, todo, files, report)


def _segment(args, session: Session, classes, todo, files, report: Report) -> int:
    predictor = session.predictor
    start = time.perf_counter()
    with progress(len(todo)) as bar:
        for d, pred, per_image in guarded_results(
            args,
            predictor,
            todo,
            report,
            bar,
            lambda images: predictor.predict(
                images, classes, batch_size=len(images), return_logits=args.save_logits
            ),
            lambda image: predictor.predict(image, classes, return_logits=args.save_logits),
            need=lambda d: predictor.memory_estimate(*d.image.shape[:2], len(classes)),
            describe=lambda d: "{}x{} with {} labels".format(*d.image.shape[1::-1], len(classes)),
            hint="try a smaller --max-side, fewer labels"
            + (", without --multi-scale" if args.multi_scale else ""),
        ):
            with report.guard(d.item.path):
                _write(args, session, classes, d, pred, files[d.item], per_image)
                report.done += 1
    return report.summary("segmented", time.perf_counter() - start, args.out)


def _logit_chunks(pred):
    """The full-size logits of ``pred`` as float16 arrays in the file's (K, H, W) order: for each
    label, bands of rows upsampled from the network's logits."""
    import numpy as np

    from ..predictor import row_bands, upsample_rows

    source, size = pred.processed_logits, pred.labels.shape
    for k in range(source.shape[0]):
        for y0, y1 in row_bands(size, 1):
            yield upsample_rows(source[k : k + 1], size, y0, y1)[0].numpy().astype(np.float16)


def _write(args, session: Session, classes, d, pred, files: _Files, infer_s: float) -> None:
    import numpy as np

    from ..files import write_image, write_json, write_npy_stream
    from ..visualize import mask_image, overlay

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
    if needed(files.logits):  # streamed label by label, band by band: never K x H x W in memory
        write_npy_stream(
            files.logits,
            (len(names), *pred.labels.shape),
            np.float16,
            _logit_chunks(pred),
            overwrite=args.overwrite,
        )
    if needed(files.record):
        timing = {"decode_s": round(d.seconds, 4), "inference_s": round(infer_s, 4)}
        timing["write_s"] = round(time.perf_counter() - t0, 4)
        write_json(files.record, _record(session, classes, d, pred, files, timing), overwrite=args.overwrite)


def _record(session: Session, classes, d, pred, files: _Files, timing: dict[str, float]) -> dict:
    """``NAME.json``: labels with their pixel shares and colours, sizes, outputs, weights, protocol."""
    import numpy as np

    from .. import __version__
    from ..visualize import palette

    names = pred.label_names
    counts = np.bincount(pred.labels.ravel(), minlength=len(names))
    shares = counts / max(int(counts.sum()), 1)
    colors = palette(len(names))
    H, W = pred.labels.shape
    return {
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
        "timing": timing,
        "langseg_version": __version__,
    }
