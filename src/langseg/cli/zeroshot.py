"""``langseg eval-zeroshot``: the zero-shot benchmarks (PASCAL-5i, COCO-20i, FSS-1000), mIoU and FB-IoU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .arguments import positive_int
from .eval_results import check_out
from .evaluate import add_eval_options, load_weights, setup_distributed, teardown
from .session import numerics_precision

ORDER = 31  # right after eval

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
        "--episodes", type=positive_int, default=1000, help="PASCAL/COCO episodes per fold (official: 1000)"
    )
    z.add_argument("--seed", type=int, default=0, help="COCO-20i episode sampling seed (official: 0)")
    z.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N episodes only")
    z.add_argument("--batch-size", type=positive_int, default=8, help="episodes per network call")
    add_eval_options(z)
    z.set_defaults(func=run_zeroshot)


def _default_weights(dataset: str) -> str:
    return "lseg-fss-rn101" if dataset == "fss" else f"lseg-{dataset}-fold{{fold}}-rn101"


def run_zeroshot(args: argparse.Namespace) -> int:
    try:
        return _run_zeroshot(args)
    finally:
        teardown(args)


def _run_zeroshot(args: argparse.Namespace) -> int:
    from .. import resolve_device
    from ..errors import LangsegError
    from ..files import write_json

    numerics_precision(args.numerics, args.precision)  # refuses a mix before any work
    if args.dataset == "fss" and args.fold not in ("0",):
        raise LangsegError("FSS-1000 has a single test split; drop --fold (or use --fold 0)")
    folds = [0, 1, 2, 3] if args.fold == "all" else [int(args.fold)]
    template = args.weights or _default_weights(args.dataset)
    out = args.out or Path(f"eval-zeroshot-{args.dataset}-fold{args.fold}.json")
    check_out(out, args.overwrite)
    benches = _benchmarks(args, folds)  # fail early on data
    device, rank = setup_distributed(args)
    dev = resolve_device(device)
    results = {
        str(fold): _run_fold(args, bench, template.replace("{fold}", str(fold)), dev, rank)
        for fold, bench in benches.items()
    }
    if rank != 0:
        return 0
    record = _record(args, dev)
    if len(folds) == 1:
        record.update({"fold": folds[0], **results[str(folds[0])]})
    else:
        mean = {k: sum(results[str(f)][k] for f in folds) / len(folds) for k in ("mIoU", "FB-IoU")}
        record.update({"folds": results, "mean": mean})
        _print_table(results, mean)
    write_json(out, record, overwrite=True)  # --overwrite was checked before the run
    print(f"wrote {out}")
    return 0


def _benchmarks(args: argparse.Namespace, folds: list[int]) -> dict[int, Any]:
    from ..eval.fewshot import load_benchmark

    return {
        f: load_benchmark(
            args.dataset,
            args.data_root,
            f,
            splits_dir=args.splits_dir,
            episodes=args.episodes,
            seed=args.seed,
        )
        for f in folds
    }


def _run_fold(args: argparse.Namespace, bench, weights: str, dev, rank: int) -> dict[str, Any]:
    """One fold's metrics, weights record and timing (printed on rank 0)."""
    from ..eval.zeroshot import evaluate_zeroshot
    from ..provenance import weights_record

    model, path = load_weights(weights, str(dev))
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
    metrics = res.metrics()
    if rank == 0:
        print(
            f"{args.dataset} fold {bench.fold}, 0-shot ==> mIoU: {metrics['mIoU']:5.2f}   "
            f"FB-IoU: {metrics['FB-IoU']:5.2f}   ({res.meter.episodes} episodes, {weights})"
        )
    return {
        **metrics,
        "weights": weights_record(weights, path, model.config.name),
        "seconds": round(res.seconds, 3),
        "test_classes": [bench.class_names[c] for c in bench.class_ids],
    }


def _record(args: argparse.Namespace, dev) -> dict[str, Any]:
    from ..provenance import environment

    return {
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


def _print_table(results: dict[str, dict[str, Any]], mean: dict[str, float]) -> None:
    print(f"\n{'fold':>6}  {'mIoU':>6}  {'FB-IoU':>6}  episodes  weights")
    for f, r in results.items():
        print(f"{f:>6}  {r['mIoU']:6.2f}  {r['FB-IoU']:6.2f}  {r['episodes']:>8}  {r['weights']['weights']}")
    print(f"{'mean':>6}  {mean['mIoU']:6.2f}  {mean['FB-IoU']:6.2f}")
