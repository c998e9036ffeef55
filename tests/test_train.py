"""Training: config loading, recipe pieces (lr rule, groups, schedule, loss), the toy run that must
learn, exact resume after an interruption, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import langseg
from langseg.cli import main
from langseg.data.base import IGNORE_INDEX
from langseg.eval.evaluate import evaluate
from langseg.models import create_model
from langseg.train import ConfigError, load_config, poly_factor, train
from langseg.train.config import OptimConfig
from langseg.train.module import segmentation_loss
from langseg.train.params import build_optimizer, effective_lr, freeze_unused, param_groups

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOY = CONFIGS / "toy.yaml"


def small_toy(*overrides: str):
    """configs/toy.yaml shrunk to seconds: 64 px scenes, a few steps, no sanity validation."""
    base = [
        "data.datasets.0.toy.size=64",
        "data.base_size=64",
        "data.crop_size=64",
        "data.batch_size=4",
        "data.datasets.0.toy.n_train=24",
        "data.datasets.0.toy.n_val=4",
        "trainer.num_sanity_val_steps=0",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
    ]
    return load_config(TOY, base + list(overrides))


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", ["ade20k_vitl16.yaml", "ade20k_vitb32.yaml", "toy.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.datasets and cfg.optim.base_lr > 0


def test_official_config_holds_the_official_recipe():
    cfg = load_config(CONFIGS / "ade20k_vitl16.yaml")
    o, d, t = cfg.optim, cfg.data, cfg.trainer
    assert (o.optimizer, o.base_lr, o.momentum, o.weight_decay, o.poly_power) == (
        "sgd",
        0.004,
        0.9,
        1e-4,
        0.9,
    )
    assert (o.decoder_lr_mult, o.lr_reference_batch, o.schedule) == (10.0, 16, "epoch")
    assert (d.base_size, d.crop_size, d.scale_range, d.flip) == (520, 480, (0.5, 2.0), True)
    assert (d.batch_size, t.accumulate_grad_batches, t.max_epochs) == (1, 2, 240)  # train.sh
    assert t.sync_batchnorm and t.precision == "32-true"
    assert effective_lr(o, d.batch_size) == pytest.approx(0.00025)  # 0.004 / 16 x 1
    assert (cfg.monitor, cfg.top_k) == ("val/pixacc", 3)  # official: top 3 by pixel accuracy + last


def test_vitb32_config_is_the_official_recipe_with_the_vitb32_encoder():
    official, b32 = load_config(CONFIGS / "ade20k_vitl16.yaml"), load_config(CONFIGS / "ade20k_vitb32.yaml")
    assert b32.model.name == "lseg_vitb32_384"
    for section in ("optim", "trainer"):
        assert getattr(b32, section) == getattr(official, section), section
    assert (b32.data.batch_size, b32.data.base_size, b32.data.crop_size) == (1, 520, 480)
    assert (b32.monitor, b32.top_k, b32.model.numerics) == (official.monitor, official.top_k, "fp32")


def test_checkpoint_selection_defaults_and_official_numerics_need_fp32():
    cfg = load_config(None)
    assert (cfg.monitor, cfg.top_k, cfg.model.numerics) == ("val/miou", 1, "fp32")  # the documented defaults
    with pytest.raises(ConfigError, match="top_k"):
        load_config(TOY, ["top_k=0"])
    with pytest.raises(ConfigError, match="32-true"):
        load_config(TOY, ["model.numerics=official", "trainer.precision=bf16-mixed"])


def test_top_k_keeps_the_k_best_validations_by_the_monitor(tmp_path, tiny_model):
    """The official selection: the 3 best by pixel accuracy (top/), best/ the best, worse ones removed."""
    from types import SimpleNamespace

    from langseg.train.callbacks import RunCheckpoints

    ckpt = RunCheckpoints(tmp_path, monitor="val/pixacc", top_k=3)
    module = SimpleNamespace(model=tiny_model)
    values = {10: 0.5, 20: 0.7, 30: 0.6, 40: 0.4, 50: 0.8, 60: 0.65}
    for step, acc in values.items():
        metrics = {"val/pixacc": torch.tensor(acc), "val/miou": torch.tensor(1 - acc)}
        trainer = SimpleNamespace(
            sanity_checking=False,
            callback_metrics=metrics,
            global_step=step,
            is_global_zero=True,
            current_epoch=0,
        )
        ckpt.on_validation_end(trainer, module)
    kept = sorted(p.name for p in (tmp_path / "top").iterdir())
    assert kept == ["step=20", "step=50", "step=60"]  # 0.7, 0.8, 0.65
    assert ckpt.best_step == 50 and [step for _, step in ckpt.top] == [50, 20, 60]
    meta = langseg.models.checkpoint.read_config(tmp_path / "best" / "config.json")
    assert meta["train"]["global_step"] == 50
    langseg.load_model(tmp_path / "top" / "step=60")  # each is a loadable folder of ours
    again = RunCheckpoints(tmp_path, monitor="val/pixacc", top_k=3)
    again.load_state_dict(ckpt.state_dict())  # --resume keeps the ranking
    assert again.top == ckpt.top


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  base_lr: 0.01\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim: unknown key\(s\) \['momentun'\]"):
        load_config(bad)
    with pytest.raises(ConfigError, match="optim.base_lr: expected float"):
        load_config(TOY, ["optim.base_lr=fast"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\]"):
        load_config(TOY, ["trainer.bogus=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TOY, ["optim.base_lr"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(TOY, ["optim.schedule=cosine"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_are_typed_and_reach_nested_lists():
    cfg = load_config(
        TOY,
        [
            "optim.base_lr=0.5",
            "data.datasets.0.name=shapes",
            "data.scale_range=[1, 2]",
            "model.overrides={features: 48}",
        ],
    )
    assert cfg.optim.base_lr == 0.5 and isinstance(cfg.optim.base_lr, float)
    assert cfg.data.datasets[0].name == "shapes" and cfg.data.scale_range == (1.0, 2.0)
    assert cfg.model.overrides == {"features": 48}
    with pytest.raises(ConfigError, match="index"):
        load_config(TOY, ["data.datasets.3.name=x"])


# ---------------------------------------------------------------------------------------- recipe
def test_poly_schedule_by_hand():
    assert poly_factor(0, 10) == 1.0
    assert poly_factor(5, 10) == pytest.approx(0.5**0.9)
    assert poly_factor(10, 10) == 0.0 and poly_factor(12, 10) == 0.0
    assert poly_factor(0, 10, warmup=4) == pytest.approx(0.25)
    assert poly_factor(3, 10, warmup=4) == pytest.approx(0.7**0.9)


def test_param_groups_and_frozen_parts():
    torch.manual_seed(0)
    model = create_model("lseg_tiny")
    frozen = freeze_unused(model)
    assert "image_encoder.vit.head.weight" not in frozen  # lseg_tiny has no classifier head
    assert any(n.startswith("image_encoder.vit.norm.") for n in frozen)  # timm's final norm is never run
    cfg = OptimConfig(base_lr=0.008, lr_reference_batch=16, decoder_lr_mult=10)
    opt = build_optimizer(model, cfg, batch_size=4)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"encoder": pytest.approx(0.002), "decoder": pytest.approx(0.02)}
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in in_groups) == p.requires_grad, name
        if name.startswith("text_encoder."):
            assert not p.requires_grad
    # a training step: every trainable parameter gets a gradient, no frozen one does
    model.train()
    x = torch.randn(2, 3, 64, 64)
    loss = segmentation_loss(model(x, ["a", "b", "c"]), torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    with pytest.raises(ValueError, match="outside the encoder/decoder"):
        param_groups(torch.nn.ModuleDict({"head": torch.nn.Linear(2, 2)}), 0.1, 10)


def test_loss_honours_the_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0] = IGNORE_INDEX
    loss = segmentation_loss(logits, target)
    keep = target[0] != IGNORE_INDEX
    by_hand = -torch.log_softmax(logits[0], 0).gather(0, target[0].clamp(max=2)[None])[0][keep].mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    changed = logits.detach().clone()
    changed[0, :, 0] += 100  # ignored pixels do not matter
    assert segmentation_loss(changed, target).item() == pytest.approx(loss.item(), rel=1e-6)
    empty = segmentation_loss(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    assert empty.item() == 0.0 and empty.requires_grad


def test_initial_weights_from_pretrained_parts_or_a_checkpoint(tmp_path, tiny_weights):
    from safetensors.torch import save_file

    from langseg.train.config import ModelSpec
    from langseg.train.run import build_model

    torch.manual_seed(1)
    donor = create_model("lseg_tiny")
    save_file(
        {k: v.contiguous() for k, v in donor.image_encoder.vit.state_dict().items()},
        str(tmp_path / "vit.safetensors"),
    )
    torch.save(donor.text_encoder.state_dict(), tmp_path / "clip.pt")
    model = build_model(
        ModelSpec(
            name="lseg_tiny",
            vit_weights=str(tmp_path / "vit.safetensors"),
            clip_weights=str(tmp_path / "clip.pt"),
        )
    )
    for part in ("image_encoder.vit", "text_encoder"):
        mine, theirs = model.get_submodule(part).state_dict(), donor.get_submodule(part).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), part
    assert not torch.equal(model.pixel_embed.weight, donor.pixel_embed.weight)  # the decoder starts fresh
    with pytest.raises(ConfigError, match="model.vit_weights: .*nope.safetensors not found"):
        build_model(ModelSpec(name="lseg_tiny", vit_weights=str(tmp_path / "nope.safetensors")))
    finetune = build_model(ModelSpec(init=str(tiny_weights)))
    reference = langseg.load_model(tiny_weights)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in finetune.state_dict().items())


# ------------------------------------------------------------------------------- the toy must learn
def test_toy_training_learns_to_segment_unseen_scenes(tmp_path):
    """configs/toy.yaml (shortened to 350 steps) on CPU: mIoU >= 0.85 on toy scenes never used in
    training (0.899 measured; chance is below 0.2)."""
    from langseg.data.toy import TOY_LABELS, ToyConfig, ToySegmentation

    cfg = load_config(
        TOY,
        [
            "trainer.max_steps=350",
            "trainer.val_check_interval=350",
            "trainer.progress_bar=false",
            "data.datasets.0.toy.n_val=8",
            "trainer.num_sanity_val_steps=0",
        ],
    )
    result = train(cfg, tmp_path / "run")
    assert result.global_step == 350 and result.best is not None and result.last is not None
    model = langseg.load_model(result.last)  # our format, as `langseg segment --weights` reads it
    assert list(model.config.labels) == list(TOY_LABELS)
    test = ToySegmentation(
        32, "test", ToyConfig(size=cfg.data.datasets[0].toy.size)
    )  # a split never trained on
    predictor = langseg.LSegPredictor(model)
    metrics = evaluate(predictor, test, progress=False).metrics()
    score = metrics["mIoU"]
    print(f"toy test mIoU {score:.4f} per class {metrics['per_class_iou']}")
    assert score >= 0.85


# ---------------------------------------------------------------------------------------- resume
class Interrupt(Exception):
    pass


def _recorder(stop_at: int | None = None):
    import lightning as L

    class Record(L.Callback):
        """Per-step learning rate and batch fingerprint; raises at `stop_at` to simulate a kill."""

        def __init__(self):
            self.lr, self.batch = {}, {}
            self.final = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.lr[trainer.global_step] = [g["lr"] for g in trainer.optimizers[0].param_groups]
            self.batch[trainer.global_step] = float(batch["image"].double().sum())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if stop_at is not None and trainer.global_step == stop_at:
                raise Interrupt(f"simulated kill at step {stop_at}")

        def on_train_end(self, trainer, pl_module):
            self.final = {
                "step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "params": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
                "optimizer": trainer.optimizers[0].state_dict(),
                "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            }

    return Record()


def test_resume_continues_exactly_where_a_killed_run_stopped(tmp_path):
    # 24 scenes / batch 4 = 6 steps per epoch, 2 epochs, official per-epoch poly schedule, SGD
    cfg = small_toy(
        "optim.optimizer=sgd",
        "optim.schedule=epoch",
        "trainer.max_steps=-1",
        "trainer.max_epochs=2",
        "trainer.checkpoint_every_n_steps=4",
        "optim.base_lr=0.05",
    )
    whole = _recorder()
    train(cfg, tmp_path / "whole", callbacks=[whole])
    killed = _recorder(stop_at=9)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "parts", callbacks=[killed])  # checkpoints at steps 4, 6 (epoch end) and 8
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tmp_path / "parts")  # a fresh run never clobbers an old one
    resumed = _recorder()
    train(cfg, tmp_path / "parts", resume=True, callbacks=[resumed])

    a, b = whole.final, resumed.final
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"]
    assert min(resumed.lr) == 8  # it continued from the step-8 checkpoint, mid-epoch
    for step in range(8, 12):  # same learning rates and same batches as the uninterrupted run
        assert resumed.lr[step] == pytest.approx(whole.lr[step], rel=0, abs=0)
        assert resumed.batch[step] == whole.batch[step]
    assert whole.lr[5][0] == pytest.approx(0.05 / 16 * 4)  # epoch 0: base lr
    assert whole.lr[6][0] == pytest.approx(0.05 / 16 * 4 * 0.5**0.9)  # epoch 1: poly factor
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 2
    assert a["scheduler"]["_last_lr"] == b["scheduler"]["_last_lr"]
    for k, v in a["params"].items():
        assert torch.allclose(v.float(), b["params"][k].float(), rtol=0, atol=1e-6), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"], rtol=0, atol=1e-6)
    logs = tmp_path / "parts" / "logs"
    assert (logs / "csv" / "metrics.csv").is_file() and (logs / "csv_resume1" / "metrics.csv").is_file()
    loaded = langseg.load_model(tmp_path / "parts" / "last")
    for k, v in loaded.state_dict().items():
        assert torch.allclose(v.float(), b["params"][k].float(), atol=1e-6), k


# -------------------------------------------------------------------------------------------- CLI
def test_cli_train_help_and_print_config(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert "--resume" in capsys.readouterr().out
    assert (
        main(["train", "--config", str(TOY), "--print-config", "optim.base_lr=0.123", "--data-root", "/x"])
        == 0
    )
    out = capsys.readouterr().out
    assert "base_lr: 0.123" in out and "root: /x" in out


def test_cli_train_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--config", str(TOY), "--print-config", "optim.nope=1"]) == 2
    assert "unknown key(s) ['nope']" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "config.yaml" in capsys.readouterr().err
    missing = ["data.datasets.0.kind=generic", f"data.datasets.0.root={tmp_path / 'nodata'}"]
    assert main(["train", "--config", str(TOY), "--out", str(tmp_path / "r"), *missing]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and "not found" in err


def test_a_flat_dataset_cannot_validate_on_its_training_images(tmp_path):
    from langseg.data import DatasetError
    from langseg.train.data import SegDataModule

    (tmp_path / "labels.txt").write_text("sky\nsea\n")
    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "masks" / "a.png")
    cfg = load_config(TOY, ["data.datasets.0.kind=generic", f"data.datasets.0.root={tmp_path}"])
    with pytest.raises(DatasetError, match="same files"):
        SegDataModule(cfg.data, (0.5,) * 3, (0.5,) * 3)
    cfg = load_config(
        TOY,
        [
            "data.datasets.0.kind=generic",
            f"data.datasets.0.root={tmp_path}",
            "data.datasets.0.val_split=null",
            "data.datasets.0.train_split=null",
        ],
    )
    assert SegDataModule(cfg.data, (0.5,) * 3, (0.5,) * 3).label_sets == [["sky", "sea"]]


def test_cli_trains_a_few_steps_on_a_generic_dataset(tmp_path, capsys):
    from langseg.data.toy import ToyConfig, write_toy_dataset

    write_toy_dataset(tmp_path / "d", 8, 4, ToyConfig(size=64))
    args = [
        "train",
        "--config",
        str(TOY),
        "--out",
        str(tmp_path / "run"),
        "--data-root",
        str(tmp_path),
        "data.datasets.0.kind=generic",
        "data.datasets.0.root=d",
        "data.base_size=64",
        "data.crop_size=64",
        "trainer.max_steps=2",
        "trainer.val_check_interval=null",
        "trainer.num_sanity_val_steps=0",
        "trainer.progress_bar=false",
        "data.batch_size=4",
    ]
    assert main(args) == 0
    assert "steps: 2" in capsys.readouterr().out
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "logs" / "csv" / "metrics.csv").is_file()
    model = langseg.load_model(run / "last")
    assert model.config.labels[1] == "red circle"
    assert main(args) == 2  # the run exists: no silent overwrite
    assert "--resume" in capsys.readouterr().err


def test_two_datasets_with_their_own_label_sets_train_together(tmp_path):
    """An in-memory toy dataset plus a generic one relabelled by a mapping file, in one run."""
    import lightning as L

    from langseg.data.toy import ToyConfig, write_toy_dataset

    write_toy_dataset(tmp_path / "shapes", 8, 4, ToyConfig(size=64, seed=1))
    (tmp_path / "map.txt").write_text("red circle -> disc\nblue square -> disc\n* -> -\n")

    class Seen(L.Callback):
        def __init__(self):
            self.label_sets = set()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            src = int(batch["source"][0])
            self.label_sets.add(tuple(pl_module.label_sets[src]))
            assert (batch["source"] == src).all()  # a batch stays within one dataset
            assert batch["mask"][batch["mask"] != IGNORE_INDEX].max() < len(pl_module.label_sets[src])

    cfg = small_toy(
        "trainer.max_steps=-1",
        "trainer.max_epochs=1",
        "optim.schedule=epoch",
        "data.datasets.0.toy.n_train=8",
        "data.datasets=[{name: toy, kind: toy, toy: {n_train: 8, n_val: 4, size: 64}}, "
        f"{{name: discs, kind: generic, root: {tmp_path / 'shapes'}, mapping: {tmp_path / 'map.txt'}}}]",
    )
    seen = Seen()
    result = train(cfg, tmp_path / "run", callbacks=[seen])
    assert seen.label_sets == {
        ("background", "red circle", "blue square", "green triangle", "yellow diamond"),
        ("disc",),
    }
    assert result.global_step == 4  # 8 / 4 + 8 / 4 batches
    assert {"val/toy/miou", "val/discs/miou", "val/miou"} <= set(result.metrics)
    mean = (result.metrics["val/toy/miou"] + result.metrics["val/discs/miou"]) / 2
    assert result.metrics["val/miou"] == pytest.approx(mean)
