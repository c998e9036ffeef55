"""The results file of ``langseg eval``: refusing to replace one, resuming the run saved in it,
saving the counts as the run goes, and the table printed at the end. ``check_out`` serves
``langseg eval-zeroshot`` too."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def check_out(path: Path, overwrite: bool, resume: bool = False, resumable: bool = False) -> None:
    from ..errors import LangsegError

    if path.is_dir():
        raise LangsegError(f"{path} is a folder; --out must be a .json file path")
    if path.exists() and not (overwrite or resume):
        hint = " or --resume to continue it" if resumable else ""
        raise LangsegError(f"{path} exists; pass --overwrite to replace it{hint} (or choose another --out)")


def _run_signature(record: dict[str, Any]) -> dict[str, Any]:
    """The fields a resumed run must share with the saved one (as JSON values: tuples become lists)."""
    import json

    weights = record.get("weights")
    signature = {  # --limit may grow: the run continues to the new limit
        "dataset": record.get("dataset"),
        "protocol": record.get("protocol"),
        "weights_sha256": weights.get("sha256") if isinstance(weights, dict) else None,
    }
    return json.loads(json.dumps(signature))


def resume_point(args: argparse.Namespace, out: Path, record: dict[str, Any]):
    """``(images done, confusion so far, seconds so far, skipped so far)`` of the run saved in ``out`` with --resume."""
    import torch

    from ..errors import LangsegError
    from ..files import read_json

    if not (args.resume and out.exists()):
        return 0, None, 0.0, []
    old = read_json(out)
    if _run_signature(old) != _run_signature(record):
        raise LangsegError(
            f"{out} was written by a different run (dataset, labels, protocol or weights differ); "
            "use another --out or --overwrite"
        )
    confusion = torch.tensor(old["confusion_matrix"], dtype=torch.long)
    return int(old.get("images", 0)), confusion, float(old.get("seconds", 0.0)), list(old.get("skipped", []))


def saver(
    args,
    out: Path,
    record: dict[str, Any],
    predictor,
    start: int,
    seconds_before: float,
    skipped_before: list,
):
    """``save(result, complete)``: the record with the counts so far, written to ``out``."""
    from ..files import write_json
    from ..provenance import environment

    def save(result, complete: bool) -> None:
        seconds = seconds_before + result.seconds
        data = {
            **record,
            **result.metrics(),
            "complete": complete,
            "images": result.images,
            "skipped": skipped_before + result.skipped,  # unreadable images, left out of the scores
            "seconds": round(seconds, 3),
            "images_per_second": round((result.images - start) / max(result.seconds, 1e-9), 4),
            "environment": environment(predictor.device, args.precision),
            "confusion_matrix": result.confusion.tolist(),
        }
        write_json(out, data, overwrite=True)  # --overwrite/--resume were checked before the run

    return save


def print_fixed(metrics: dict[str, Any], header: str) -> None:
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


def _format_iou(v: float | None, scale: float = 1.0) -> str:
    return "   -  " if v is None else f"{v * scale:6.2f}"
