"""``langseg eval``: fixed-label evaluation (ADE20K, generic, toy).

Also the options and helpers that ``langseg eval-zeroshot`` (:mod:`langseg.cli.zeroshot`) shares.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .arguments import add_flip_argument, add_numerics_argument, positive_int, scales_arg
from .eval_results import check_out, print_fixed, resume_point, saver
from .session import multi_scale_record, numerics_precision

ORDER = 30  # eval-zeroshot (cli/zeroshot.py) right after it

EVAL_EPILOG = """examples:
  langseg eval --dataset ade20k --data-root datasets/ --weights lseg-ade20k.ckpt --multi-scale --out ade.json
  langseg eval --dataset generic --data-root my_data/ --weights my_model/ --split val --limit 50
  langseg eval --dataset toy --data-root toy/ --out toy.json --overwrite
  langseg eval --dataset ade20k --data-root datasets/ --weights W --out ade.json --resume   # continue a run

Single scale scores exactly what 'langseg segment --max-side 0 --precision fp32' predicts for each full
image (padded to a multiple of 32, no resize; segment's defaults shrink images above 1024 pixels and use
bf16 on CUDA); --multi-scale exactly 'langseg segment --multi-scale --max-side 0 --precision fp32'
(official evaluator: scales 0.5-1.75 of a 520 base, 480 crops, stride 320, flip). JSON: pixAcc, mIoU (official: mean over all
classes, absent ones count 0), mIoU_present, per_class_iou (null = class absent from prediction and
ground truth), the confusion matrix, and what produced it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="fixed-label evaluation (pixAcc, mIoU, per-class IoU) on ADE20K or a generic dataset",
        description="Evaluate a model on a labeled dataset with a fixed label set: a confusion matrix summed "
        "over the whole split, pixel accuracy, mIoU and per-class IoU. Prints a table and writes JSON.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset", required=True, choices=["ade20k", "generic", "toy"], help="reader / data layout"
    )
    p.add_argument("--data-root", required=True, type=Path, help="dataset folder")
    p.add_argument(
        "--weights",
        default=None,
        help="weights folder, .ckpt or name (default for --dataset toy: lseg-toy; otherwise required)",
    )
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument(
        "--multi-scale", action="store_true", help="official multi-scale, flipped, sliding-window protocol"
    )
    _add_prompt_options(p)
    p.add_argument(
        "--scales",
        type=scales_arg,
        default=None,
        metavar="S1,S2,...",
        help="scales for --multi-scale (default: the official 0.5,0.75,1,1.25,1.5,1.75)",
    )
    add_flip_argument(p)
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N images only")
    add_eval_options(p)
    _add_speed_options(p)
    p.add_argument("--resume", action="store_true", help="continue the unfinished run saved in --out")
    p.add_argument(
        "--save-every",
        type=positive_int,
        default=50,
        help="save progress to --out every N images (default 50)",
    )
    p.set_defaults(func=run_eval)


def _add_prompt_options(p: argparse.ArgumentParser) -> None:
    """``--labels-file``, ``--full-names``, ``--template``: what the classes are called."""
    p.add_argument(
        "--labels-file",
        type=Path,
        default=None,
        help="prompts, one per class in class order (';' for synonyms); default: the dataset's own",
    )
    p.add_argument(
        "--full-names",
        action="store_true",
        help="ADE20K: whole class names instead of the official first-word prompts",
    )
    p.add_argument(
        "--template",
        action="append",
        default=None,
        metavar="TEXT",
        help="prompt template with {} for the label (repeat to ensemble), as in 'langseg segment'",
    )


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    """``--batch-size``, ``--window-batch``, ``--compile``: how fast, never what is scored."""
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="images per network call at single scale (same size)",
    )
    p.add_argument(
        "--window-batch", type=positive_int, default=8, help="multi-scale windows per network call"
    )
    p.add_argument(
        "--compile",
        choices=["off", "exact"],
        default="off",
        help="torch.compile the image network, one graph per input shape (at most 8, then eager); "
        "outputs equal the eager ones. Pays off on a GPU with --multi-scale, whose windows "
        "all have one shape (default: off)",
    )


def add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: eval-<dataset>-....json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="autocast precision")
    add_numerics_argument(p)
    p.add_argument("--workers", type=int, default=2, help="image-loading worker processes (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="run under torchrun: each rank takes a share of the images, counts are summed",
    )


# --------------------------------------------------------------------- shared with eval-zeroshot
def setup_distributed(args: argparse.Namespace):
    """Join the launcher's process group when --distributed is given; returns (device, rank)."""
    if not args.distributed:
        return args.device, 0
    from ..distributed import init_distributed

    place = init_distributed(args.device)
    return place.device, place.rank


def load_weights(weights: str, device: str | None):
    from ..predictor import resolve_device
    from ..weights import load_model, resolve_weights

    path = resolve_weights(weights)
    model = load_model(path, device=resolve_device(device))
    return model, path


# --------------------------------------------------------------------------------------------- eval
def _fixed_dataset(args: argparse.Namespace):
    from ..data import ADE20K, DatasetError, GenericSegmentation

    if not args.data_root.is_dir():
        raise DatasetError(f"{args.data_root}: data root not found")
    if args.dataset == "ade20k":
        return ADE20K(args.data_root, args.split, full_names=args.full_names)
    if args.full_names:
        raise DatasetError("--full-names applies to --dataset ade20k only")
    return GenericSegmentation(args.data_root, args.split)


def run_eval(args: argparse.Namespace) -> int:
    try:
        return _run_eval(args)
    finally:
        teardown(args)


def teardown(args: argparse.Namespace) -> None:
    """Close the process group that --distributed opened."""
    if args.distributed:
        from ..distributed import close_distributed

        close_distributed()


def _run_eval(args: argparse.Namespace) -> int:
    import time

    from ..eval.evaluate import evaluate
    from ..labels import parse_templates

    numerics_precision(args.numerics, args.precision)  # refuses a mix before any work
    templates = parse_templates(args.template)
    dataset = _fixed_dataset(args)
    labels = _eval_labels(args, dataset)
    weights = _eval_weights(args)
    mode = "multi-scale" if args.multi_scale else "single-scale"
    out = args.out or Path(f"eval-{args.dataset}-{args.split}-{mode}.json")
    check_out(out, args.overwrite, args.resume, resumable=True)
    device, rank = setup_distributed(args)
    predictor, record = _eval_setup(args, dataset, labels, templates, weights, device)
    start, confusion, seconds_before, skipped_before = resume_point(args, out, record)
    save = saver(args, out, record, predictor, start, seconds_before, skipped_before)

    t0 = time.perf_counter()
    result = evaluate(
        predictor,
        dataset,
        labels,
        start=start,
        limit=args.limit,
        confusion=confusion,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.no_progress,
        checkpoint=lambda r: save(r, False),
        checkpoint_every=args.save_every,
    )
    if rank != 0:
        return 0
    save(result, True)
    header = (
        f"{args.dataset} {args.split}: {result.images} images, {mode}, weights {weights} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    print_fixed(result.metrics(), header)
    print(f"wrote {out}")
    skipped = skipped_before + result.skipped
    if skipped:  # scored without them; the count and the messages are in the record too
        print(f"skipped {len(skipped)} unreadable image{'s' if len(skipped) != 1 else ''}:", file=sys.stderr)
        for message in skipped[:20]:
            print(f"  {message}", file=sys.stderr)
        return 1
    return 0


def _eval_labels(args: argparse.Namespace, dataset) -> list:
    """The prompts, one per class: ``--labels-file`` or the dataset's own (with synonyms)."""
    from ..errors import LangsegError
    from ..labels import read_labels_file

    labels = (
        read_labels_file(args.labels_file)
        if args.labels_file
        else list(getattr(dataset, "label_synonyms", dataset.labels))
    )
    if len(labels) != len(dataset.labels):
        raise LangsegError(
            f"{args.labels_file}: {len(labels)} labels, but the dataset has {len(dataset.labels)} "
            "classes (one prompt per class, in class order)"
        )
    return labels


def _eval_weights(args: argparse.Namespace) -> str:
    from ..errors import LangsegError

    weights = args.weights or ("lseg-toy" if args.dataset == "toy" else None)
    if weights is None:
        raise LangsegError(
            f"--weights is required for --dataset {args.dataset} (a folder, .ckpt or weights name)"
        )
    return weights


def _eval_setup(args, dataset, labels, templates, weights: str, device) -> tuple[Any, dict[str, Any]]:
    """Load the weights into a predictor for the chosen protocol; the run's record (without results)."""
    from .. import resolve_device
    from ..predictor import LSegPredictor
    from ..provenance import weights_record

    ms = _multi_scale(args)
    model, path = load_weights(weights, device)
    model.set_numerics(args.numerics)
    if args.compile == "exact":
        from ..accel import CompiledLSeg

        model = CompiledLSeg(model, mode="exact")
    predictor = LSegPredictor(
        model,
        device=resolve_device(device),
        precision=args.precision,
        multi_scale=ms,
        templates=templates,
        max_pixels=None,
        flip=bool(args.flip) and ms is None,
    )
    record = _record(args, dataset, labels, templates, ms)
    record["weights"] = weights_record(weights, path, model.config.name)
    record["limit"] = args.limit
    record["batching"] = {"images_per_call": args.batch_size, "windows_per_call": args.window_batch}
    return predictor, record


def _multi_scale(args: argparse.Namespace):
    """The official multi-scale protocol with ``--multi-scale`` (None without it)."""
    from .. import MultiScaleConfig
    from ..errors import LangsegError
    from ..inference import OFFICIAL_SCALES

    if args.multi_scale:
        return MultiScaleConfig(
            scales=args.scales or OFFICIAL_SCALES, flip=args.flip is not False, batch_size=args.window_batch
        )
    if args.scales:
        raise LangsegError("--scales needs --multi-scale")
    return None


def _record(args: argparse.Namespace, dataset, labels, templates, ms) -> dict[str, Any]:
    """The dataset and the protocol, as the results file records them."""
    return {
        "task": "fixed-label",
        "dataset": {
            "name": args.dataset,
            "root": str(args.data_root.resolve()),
            "split": args.split,
            "num_classes": len(labels),
            "images_total": len(dataset),
            "labels": [lab if isinstance(lab, str) else ";".join(lab) for lab in labels],
            "labels_file": None if args.labels_file is None else str(args.labels_file.resolve()),
        },
        "protocol": {
            "mode": "multi-scale" if ms else "single-scale",
            "multi_scale": multi_scale_record(ms),
            "flip": ms.flip if ms else bool(args.flip),
            "templates": templates,
            "precision": args.precision,
            "numerics": args.numerics,
            "input": "full image, padded to a multiple of 32 (no resize)"
            if ms is None
            else "full image into the official multi-scale evaluator",
            "ignore_index": dataset.ignore_index,
        },
    }
