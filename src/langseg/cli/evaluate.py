"""``langseg eval`` (fixed labels: ADE20K, generic, toy) and ``langseg eval-zeroshot`` (PASCAL-5i, COCO-20i, FSS-1000)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .segment import add_numerics_argument, numerics_precision

ORDER = 30  # eval at 30, eval-zeroshot right after it

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

ZS_EPILOG = """examples:
  langseg eval-zeroshot --dataset pascal --fold 0 --data-root Datasets_HSN/                 # lseg-pascal-fold0-rn101
  langseg eval-zeroshot --dataset pascal --fold all --data-root Datasets_HSN/ --out pascal.json
  langseg eval-zeroshot --dataset coco --fold all --data-root Datasets_HSN/ --weights ckpts/coco_fold{fold}.ckpt
  langseg eval-zeroshot --dataset fss --data-root Datasets_HSN/ --weights lseg-fss-vitl16

HSNet layout under --data-root (VOC2012/, COCO2014/, FSS-1000/); split files under --splits-dir
(default DATA_ROOT/splits, copied from HSNet's data/splits). 1000 episodes (PASCAL: split entries in
order, repeated; COCO: numpy seed 0), FSS-1000: all 2400 test images. mIoU and FB-IoU in percent.
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
    p.add_argument(
        "--scales",
        default=None,
        metavar="S1,S2,...",
        help="scales for --multi-scale (default: the official 0.5,0.75,1,1.25,1.5,1.75)",
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the horizontally flipped run (default: on with --multi-scale, off without)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    _common(p)
    p.add_argument(
        "--batch-size", type=int, default=1, help="images per network call at single scale (same size)"
    )
    p.add_argument("--window-batch", type=int, default=8, help="multi-scale windows per network call")
    p.add_argument(
        "--compile",
        choices=["off", "exact"],
        default="off",
        help="torch.compile the image network, one graph per input shape (at most 8, then eager); "
        "outputs equal the eager ones. Pays off on a GPU with --multi-scale, whose windows "
        "all have one shape (default: off)",
    )
    p.add_argument("--resume", action="store_true", help="continue the unfinished run saved in --out")
    p.add_argument(
        "--save-every", type=int, default=50, help="save progress to --out every N images (default 50)"
    )
    p.set_defaults(func=run_eval)

    z = sub.add_parser(
        "eval-zeroshot",
        help="zero-shot benchmarks (PASCAL-5i, COCO-20i, FSS-1000): mIoU and FB-IoU",
        description="Evaluate zero-shot segmentation with the official few-shot benchmark protocol (HSNet data "
        "layout and metrics): each episode is segmented with the prompts ['others', class].",
        epilog=ZS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    z.add_argument("--dataset", required=True, choices=["pascal", "coco", "fss"], help="benchmark")
    z.add_argument(
        "--fold",
        "--folds",
        dest="fold",
        default="0",
        choices=["0", "1", "2", "3", "all"],
        help="test fold, or 'all' for the four-fold table (PASCAL-5i, COCO-20i; FSS-1000 has one)",
    )
    z.add_argument(
        "--data-root", required=True, type=Path, help="HSNet data folder (VOC2012/, COCO2014/, FSS-1000/)"
    )
    z.add_argument(
        "--splits-dir", type=Path, default=None, help="HSNet split files (default: DATA_ROOT/splits)"
    )
    z.add_argument(
        "--weights",
        default=None,
        help="weights; '{fold}' is replaced by the fold (default: lseg-pascal-fold{fold}-rn101, "
        "lseg-coco-fold{fold}-rn101, lseg-fss-rn101)",
    )
    z.add_argument(
        "--episodes", type=int, default=1000, help="PASCAL/COCO episodes per fold (official: 1000)"
    )
    z.add_argument("--seed", type=int, default=0, help="COCO-20i episode sampling seed (official: 0)")
    z.add_argument("--limit", type=int, default=None, help="evaluate the first N episodes only")
    z.add_argument("--batch-size", type=int, default=8, help="episodes per network call")
    _common(z)
    z.set_defaults(func=run_zeroshot)


def _common(p: argparse.ArgumentParser) -> None:
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


# ------------------------------------------------------------------------------------------ helpers
def _positive(name: str, value: int | None) -> None:
    from ..errors import LangsegError

    if value is not None and value < 1:
        raise LangsegError(f"{name} must be at least 1, got {value}")


def _check_out(path: Path, overwrite: bool, resume: bool = False, resumable: bool = False) -> None:
    from ..errors import LangsegError

    if path.is_dir():
        raise LangsegError(f"{path} is a folder; --out must be a .json file path")
    if path.exists() and not (overwrite or resume):
        hint = " or --resume to continue it" if resumable else ""
        raise LangsegError(f"{path} exists; pass --overwrite to replace it{hint} (or choose another --out)")


def _setup_distributed(args: argparse.Namespace):
    """Join the launcher's process group when --distributed is given; returns (device, rank)."""
    if not args.distributed:
        return args.device, 0
    from ..distributed import init_distributed

    place = init_distributed(args.device)
    return place.device, place.rank


def _load(weights: str, device: str | None):
    import langseg

    path = langseg.resolve_weights(weights)
    model = langseg.load_model(path, device=langseg.resolve_device(device))
    return model, path


def _templates(templates: list[str] | None) -> list[str] | None:
    from ..errors import LangsegError

    for t in templates or []:
        if t.count("{}") != 1:
            raise LangsegError(
                f"prompt template {t!r} must contain '{{}}' exactly once, e.g. 'a photo of a {{}}.'"
            )
    return list(templates) if templates else None


def _scales(text: str | None) -> tuple[float, ...] | None:
    from ..errors import LangsegError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise LangsegError(
            f"--scales: expected positive comma-separated numbers like 0.75,1,1.25, got {text!r}"
        )
    return values


def _format_iou(v: float | None, scale: float = 1.0) -> str:
    return "   -  " if v is None else f"{v * scale:6.2f}"


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


def _run_signature(record: dict[str, Any]) -> dict[str, Any]:
    """The fields a resumed run must share with the saved one (as JSON values: tuples become lists)."""
    import json

    keys = ("dataset", "protocol", "weights_sha256")  # --limit may grow: the run continues to the new limit
    return json.loads(json.dumps({k: record.get(k) for k in keys}))


def _print_fixed(metrics: dict[str, Any], header: str) -> None:
    print(header)
    print(f"  pixAcc        {metrics['pixAcc'] * 100:6.2f}")
    print(
        f"  mIoU          {metrics['mIoU'] * 100:6.2f}   (official: mean over all classes, absent ones count 0)"
    )
    present = metrics["mIoU_present"]
    print(f"  mIoU present  {_format_iou(present, 100)}   (mean over classes in prediction or ground truth)")
    rows = sorted(metrics["per_class_iou"].items(), key=lambda kv: (kv[1] is None, -(kv[1] or 0.0)))
    width = max([len(k) for k, _ in rows] + [5])
    print(f"  {'class':<{width}}  IoU(%)")
    for name, v in rows:
        print(f"  {name:<{width}}  {_format_iou(v, 100)}")


def run_eval(args: argparse.Namespace) -> int:
    try:
        return _run_eval(args)
    finally:
        _teardown(args)


def _teardown(args: argparse.Namespace) -> None:
    """Close the process group that --distributed opened."""
    if args.distributed:
        from ..distributed import close_distributed

        close_distributed()


def _run_eval(args: argparse.Namespace) -> int:
    import time

    import torch

    from .. import MultiScaleConfig, resolve_device
    from ..errors import LangsegError
    from ..eval.evaluate import EvalResult, evaluate
    from ..eval.provenance import environment, read_json, weights_record, write_json
    from ..inference import OFFICIAL_SCALES
    from ..labels import read_labels_file
    from ..predictor import LSegPredictor

    for name in ("limit", "batch_size", "window_batch", "save_every"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    numerics_precision(args.numerics, args.precision)  # refuses a mix before any work
    dataset = _fixed_dataset(args)
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
    weights = args.weights or ("lseg-toy" if args.dataset == "toy" else None)
    if weights is None:
        raise LangsegError(
            f"--weights is required for --dataset {args.dataset} (a folder, .ckpt or weights name)"
        )
    mode = "multi-scale" if args.multi_scale else "single-scale"
    out = args.out or Path(f"eval-{args.dataset}-{args.split}-{mode}.json")
    _check_out(out, args.overwrite, args.resume, resumable=True)
    device, rank = _setup_distributed(args)

    templates = _templates(args.template)
    ms = None
    if args.multi_scale:
        ms = MultiScaleConfig(
            scales=_scales(args.scales) or OFFICIAL_SCALES,
            flip=args.flip is not False,
            batch_size=args.window_batch,
        )
    elif args.scales:
        raise LangsegError("--scales needs --multi-scale")
    model, path = _load(weights, device)
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
    ms_record = (
        None
        if ms is None
        else {k: getattr(ms, k) for k in ("scales", "flip", "base_size", "crop_size", "stride")}
    )
    record: dict[str, Any] = {
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
            "mode": mode,
            "multi_scale": ms_record,
            "flip": ms.flip if ms else bool(args.flip),
            "templates": templates,
            "precision": args.precision,
            "numerics": args.numerics,
            "input": "full image, padded to a multiple of 32 (no resize)"
            if ms is None
            else "full image into the official multi-scale evaluator",
            "ignore_index": dataset.ignore_index,
        },
        **weights_record(weights, path),
        "limit": args.limit,
        "batching": {"images_per_call": args.batch_size, "windows_per_call": args.window_batch},
    }
    start, confusion, seconds_before = 0, None, 0.0
    if args.resume and out.exists():
        old = read_json(out)
        if _run_signature(old) != _run_signature(record):
            raise LangsegError(
                f"{out} was written by a different run (dataset, labels, protocol or weights differ); "
                "use another --out or --overwrite"
            )
        start, seconds_before = int(old.get("images", 0)), float(old.get("seconds", 0.0))
        confusion = torch.tensor(old["confusion_matrix"], dtype=torch.long)

    def save(result: EvalResult, complete: bool) -> None:
        seconds = seconds_before + result.seconds
        data = {
            **record,
            **result.metrics(),
            "complete": complete,
            "images": result.images,
            "seconds": round(seconds, 3),
            "images_per_second": round((result.images - start) / max(result.seconds, 1e-9), 4),
            "environment": environment(predictor.device, args.precision),
            "confusion_matrix": result.confusion.tolist(),
        }
        write_json(out, data)

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
    _print_fixed(result.metrics(), header)
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------- eval-zeroshot
def _default_weights(dataset: str) -> str:
    return "lseg-fss-rn101" if dataset == "fss" else f"lseg-{dataset}-fold{{fold}}-rn101"


def run_zeroshot(args: argparse.Namespace) -> int:
    try:
        return _run_zeroshot(args)
    finally:
        _teardown(args)


def _run_zeroshot(args: argparse.Namespace) -> int:
    from .. import resolve_device
    from ..errors import LangsegError
    from ..eval.fewshot import load_benchmark
    from ..eval.provenance import environment, weights_record, write_json
    from ..eval.zeroshot import evaluate_zeroshot

    for name in ("limit", "batch_size", "episodes"):
        _positive("--" + name, getattr(args, name))
    numerics_precision(args.numerics, args.precision)  # refuses a mix before any work
    if args.dataset == "fss" and args.fold not in ("0",):
        raise LangsegError("FSS-1000 has a single test split; drop --fold (or use --fold 0)")
    folds = [0, 1, 2, 3] if args.fold == "all" else [int(args.fold)]
    template = args.weights or _default_weights(args.dataset)
    out = args.out or Path(f"eval-zeroshot-{args.dataset}-fold{args.fold}.json")
    _check_out(out, args.overwrite)
    benches = {
        f: load_benchmark(
            args.dataset,
            args.data_root,
            f,
            splits_dir=args.splits_dir,
            episodes=args.episodes,
            seed=args.seed,
        )
        for f in folds
    }  # fail early on data
    device, rank = _setup_distributed(args)
    dev = resolve_device(device)
    results: dict[str, Any] = {}
    for fold, bench in benches.items():
        weights = template.replace("{fold}", str(fold))
        model, path = _load(weights, str(dev))
        model.set_numerics(args.numerics)
        res = evaluate_zeroshot(
            model,
            bench,
            precision=args.precision,
            batch_size=args.batch_size,
            num_workers=args.workers,
            limit=args.limit,
            progress=not args.no_progress,
        )
        results[str(fold)] = {
            **res.metrics(),
            **weights_record(weights, path),
            "seconds": round(res.seconds, 3),
            "test_classes": [bench.class_names[c] for c in bench.class_ids],
        }
        if rank == 0:
            print(
                f"{args.dataset} fold {fold}, 0-shot ==> mIoU: {res.metrics()['mIoU']:5.2f}   "
                f"FB-IoU: {res.metrics()['FB-IoU']:5.2f}   ({res.meter.episodes} episodes, {weights})"
            )
        del model
    if rank != 0:
        return 0
    record: dict[str, Any] = {
        "task": "zero-shot",
        "dataset": {
            "name": args.dataset,
            "root": str(args.data_root.resolve()),
            "splits_dir": str((args.splits_dir or args.data_root / "splits").resolve()),
            "episodes": args.episodes if args.dataset != "fss" else None,
            "seed": args.seed if args.dataset == "coco" else None,
        },
        "protocol": {
            "prompts": ["others", "<class name>"],
            "input": "PIL bilinear resize to 480x480",
            "ground_truth": "nearest resize to 480x480",
            "metrics": "HSNet mIoU / FB-IoU (percent)",
            "precision": args.precision,
        },
        "limit": args.limit,
        "environment": environment(dev, args.precision),
    }
    if len(folds) == 1:
        record.update({"fold": folds[0], **results[str(folds[0])]})
    else:
        mean = {k: sum(results[str(f)][k] for f in folds) / len(folds) for k in ("mIoU", "FB-IoU")}
        record.update({"folds": results, "mean": mean})
        print(f"\n{'fold':>6}  {'mIoU':>6}  {'FB-IoU':>6}  episodes  weights")
        for f in folds:
            r = results[str(f)]
            print(f"{f:>6}  {r['mIoU']:6.2f}  {r['FB-IoU']:6.2f}  {r['episodes']:>8}  {r['weights']}")
        print(f"{'mean':>6}  {mean['mIoU']:6.2f}  {mean['FB-IoU']:6.2f}")
    write_json(out, record)
    print(f"wrote {out}")
    return 0
