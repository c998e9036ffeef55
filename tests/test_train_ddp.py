"""Data-parallel training on CPU: 2 processes (gloo) finish with identical weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file

from langseg.train import load_config, train

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


class DumpRankState(L.Callback):
    """Each rank writes its final weights, its validation mIoU and fingerprints of its batches."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.batches: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(float(batch["image"].double().sum()))

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(
            {
                "state": state,
                "batches": self.batches,
                "step": trainer.global_step,
                "world": trainer.world_size,
                "miou": float(trainer.callback_metrics["val/miou"]),
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def test_two_process_ddp_ranks_agree(tmp_path):
    # toy.yaml keeps sync_batchnorm on: on CPUs the run must switch it off (torch's SyncBatchNorm is GPU-only)
    cfg = load_config(
        TOY,
        [
            "trainer.strategy=ddp_spawn",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_steps=4",
            "data.datasets.0.toy.size=64",
            "data.base_size=64",
            "data.crop_size=64",
            "data.batch_size=2",
            "data.datasets.0.toy.n_train=16",
            "data.datasets.0.toy.n_val=4",
            "trainer.val_check_interval=null",
            "trainer.num_sanity_val_steps=0",
            "trainer.progress_bar=false",
            "trainer.checkpoint_every_n_steps=2",
        ],
    )
    result = train(cfg, tmp_path / "run", callbacks=[DumpRankState(tmp_path)])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 4
    assert len(r0["batches"]) == len(r1["batches"]) == 4
    assert r0["batches"] != r1["batches"]  # each rank trained on its own shard
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), f"ranks disagree on {k}"
    saved = load_file(str(result.last / "model.safetensors"))  # rank 0 wrote last/ at the end
    for k, v in saved.items():
        assert torch.equal(v, r0["state"][k]), k
    assert result.global_step == 4
    assert r0["miou"] == r1["miou"]  # validation counts are summed over both ranks' shares
