"""Distributed evaluation: 2 CPU processes (gloo) give exactly the single-process counts."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from conftest import run_ranks

import langseg
from langseg.data import GenericSegmentation
from langseg.distributed import all_reduce
from langseg.eval.evaluate import evaluate
from langseg.eval.fewshot import fss1000
from langseg.eval.zeroshot import evaluate_zeroshot
from langseg.predictor import LSegPredictor

WORLD = 2


def _run_both(weights: Path, generic_root: Path, fss_root: Path) -> dict[str, torch.Tensor]:
    model = langseg.load_model(weights, device="cpu")
    fixed = evaluate(LSegPredictor(model, device="cpu"), GenericSegmentation(generic_root), progress=False)
    zs = evaluate_zeroshot(model, fss1000(fss_root), batch_size=2, image_size=64, progress=False)
    return {
        "confusion": fixed.confusion,
        "images": torch.tensor(fixed.images),
        "inter": zs.meter.inter,
        "union": zs.meter.union,
        "episodes": torch.tensor(zs.meter.episodes),
    }


def _worker(rank: int, init_file: str, weights: Path, generic_root: Path, fss_root: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        result = _run_both(weights, generic_root, fss_root)
        result["sum_of_ranks"] = all_reduce(torch.tensor([rank + 1]))
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_reduction_equals_single_process(tiny_weights, tmp_path):
    from test_eval import make_generic
    from test_fewshot import make_fss

    generic_root = make_generic(tmp_path / "generic")
    fss_root = make_fss(tmp_path / "fss")
    single = _run_both(tiny_weights, generic_root, fss_root)
    run_ranks(_worker, (str(tmp_path / "rendezvous"), tiny_weights, generic_root, fss_root, tmp_path), WORLD)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["sum_of_ranks"].item() == 3
        # each rank scored only its share; the reduced counts equal one process doing everything
        for key in ("confusion", "images", "inter", "union", "episodes"):
            assert torch.equal(got[key], single[key]), (rank, key)
    assert single["confusion"].sum() > 0 and single["episodes"].item() == 9
