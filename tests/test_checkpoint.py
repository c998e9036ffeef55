"""Weights in and out: official layout, our format, conversion, strictness, safety, components."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import langseg
from langseg.cli import main
from langseg.models import CheckpointError, create_model, load_clip_text_weights, load_timm_vit_weights
from langseg.models.checkpoint import (
    convert_official,
    langseg_to_official,
    load_checkpoint,
    official_to_langseg,
    save_pretrained,
)


def write_official(model, path: Path, *, extra: dict | None = None) -> Path:
    """Save a model as the official lang-seg Lightning checkpoint layout (keys 'net.*' under state_dict)."""
    ckpt = {
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "1.4.9",
        "state_dict": langseg_to_official(model.state_dict()),
    }
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


def test_key_mapping_is_a_bijection(tiny_model):
    sd = tiny_model.state_dict()
    official = langseg_to_official(sd)
    assert all(k.startswith("net.") for k in official)
    assert "net.scratch.refinenet4.resConfUnit1.conv1.weight" in official
    assert "net.pretrained.act_postprocess1.0.project.0.weight" in official
    assert "net.scratch.head1.weight" in official
    assert list(official_to_langseg(official)) == list(sd)


def test_official_round_trip_gives_identical_logits(tiny_model, tmp_path):
    src = write_official(tiny_model, tmp_path / "tiny.ckpt")
    loaded = langseg.load_model(src)
    out_dir = convert_official(src, tmp_path / "converted")
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "config.json").is_file()
    reloaded = langseg.load_model(out_dir)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b, c = tiny_model(x, ["cat", "dog"]), loaded(x, ["cat", "dog"]), reloaded(x, ["cat", "dog"])
    assert torch.equal(a, b) and torch.equal(a, c)


def test_convert_can_drop_unused_parts_with_unchanged_outputs(tmp_path):
    torch.manual_seed(1)
    model = create_model(
        "lseg_tiny",
        vit=langseg.models.ViTConfig(
            patch_size=16, embed_dim=64, depth=4, num_heads=1, img_size=64, hooks=(0, 1, 2, 3), num_classes=10
        ),
    ).eval()
    src = write_official(model, tmp_path / "with_head.ckpt")
    slim = convert_official(src, tmp_path / "slim", drop_unused=True, dtype=torch.float16)
    meta = json.loads((slim / "config.json").read_text())
    assert meta["dropped"] and meta["model"]["vit"]["num_classes"] == 0
    reloaded = langseg.load_model(slim)
    assert not any(k.startswith("image_encoder.vit.head.") for k in reloaded.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.half().float()(x, ["a", "b"])  # the same fp16-rounded weights
        out = reloaded(x, ["a", "b"])
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_convert_keeps_each_tensors_dtype_by_default(tiny_model, tmp_path, capsys):
    """Like the official files (CLIP tensors in float16, the rest float32): the default keeps both."""
    sd = langseg_to_official(tiny_model.state_dict())
    half = {k for k in sd if k.startswith("net.clip_pretrained.") and sd[k].is_floating_point()}
    assert half and len(half) < sum(v.is_floating_point() for v in sd.values())
    sd = OrderedDict((k, v.half() if k in half else v) for k, v in sd.items())
    src = tmp_path / "mixed.ckpt"
    torch.save({"state_dict": sd}, src)
    assert main(["convert", str(src), str(tmp_path / "out")]) == 0
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    expected = {k: v.dtype for k, v in official_to_langseg(sd).items()}
    assert {k: v.dtype for k, v in stored.items()} == expected
    assert sum(v.dtype == torch.float16 for v in stored.values()) == len(half)
    direct, converted = langseg.load_model(src), langseg.load_model(tmp_path / "out")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(direct(x, ["a", "b"]), converted(x, ["a", "b"]))  # the same network


def test_cli_convert(tiny_model, tmp_path, capsys):
    src = write_official(tiny_model, tmp_path / "t.ckpt")
    out = tmp_path / "out"
    assert main(["convert", str(src), str(out)]) == 0
    assert (out / "model.safetensors").is_file()
    assert main(["convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err


def test_strict_loading_names_missing_and_unexpected_keys(tiny_model, tmp_path):
    sd = langseg_to_official(tiny_model.state_dict())
    sd.pop("net.scratch.head1.bias")
    sd["net.scratch.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as e:
        langseg.load_model(tmp_path / "bad.ckpt")
    assert "pixel_embed.bias" in str(e.value) and "missing keys" in str(e.value)
    assert "unexpected keys" in str(e.value)


def test_wrong_variant_file_names_the_shape_mismatch(tiny_model, tmp_path):
    folder = save_pretrained(tiny_model, tmp_path / "tiny")
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["features"] = 48  # config of another variant than the weights
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape mismatches: .*neck.proj.0.weight"):
        langseg.load_model(folder)


def test_save_pretrained_is_whole_or_nothing_and_never_clobbers(tiny_model, tmp_path, monkeypatch):
    import langseg.models.checkpoint as checkpoint
    from langseg.files import OutputExistsError

    real_save = checkpoint.save_file

    def dies_after_writing(sd, path, metadata=None):
        real_save(sd, path, metadata=metadata)
        raise KeyboardInterrupt  # after the weights, before config.json

    monkeypatch.setattr(checkpoint, "save_file", dies_after_writing)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(tiny_model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    folder = save_pretrained(tiny_model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    with pytest.raises(OutputExistsError):
        save_pretrained(tiny_model, folder)
    save_pretrained(tiny_model, folder, overwrite=True)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="other files"):
        save_pretrained(tiny_model, tmp_path / "project", overwrite=True)
    assert (tmp_path / "project" / "notes.txt").read_text() == "mine"
    assert isinstance(langseg.load_model(folder), nn.Module)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_files_give_a_clear_error(tiny_model, tmp_path, damage):
    src = write_official(tiny_model, tmp_path / "t.ckpt")
    data = src.read_bytes()
    if damage == "truncate":
        src.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        src.write_bytes(b"")
    else:
        src.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=str(src.name)):
        langseg.load_model(src)


def test_truncated_safetensors_is_a_clear_error(tiny_weights, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_weights / "config.json").read_bytes())
    data = (tiny_weights / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        langseg.load_model(folder)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"net.x": _Evil()}}, f)
    torch.save({"state_dict": OrderedDict(), "payload": _Evil()}, tmp_path / "evil2.ckpt")
    for p in (path, tmp_path / "evil2.ckpt"):
        with pytest.raises(CheckpointError, match="not loaded|not a PyTorch checkpoint|not a readable"):
            load_checkpoint(p)


def test_lightning_1x_class_keyed_callbacks_are_allowed(reference, tiny_model, tmp_path):
    synth, _ = reference
    ckpt = synth.make_lightning_checkpoint(
        langseg_to_official(tiny_model.state_dict()), class_keyed_callbacks=True
    )
    synth.save_checkpoint(ckpt, tmp_path / "pl14.ckpt")
    loaded = langseg.load_model(tmp_path / "pl14.ckpt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, ["a"]), tiny_model(x, ["a"]))


def test_spatial_block_kind_must_be_given(tmp_path):
    model = create_model("lseg_tiny", arch_option=2, block_depth=2).eval()
    src = write_official(model, tmp_path / "block.ckpt")
    with pytest.raises(CheckpointError, match="arch_option"):
        langseg.load_model(src)
    loaded = langseg.load_model(src, arch_option=2, block_depth=2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, ["a", "b"]), model(x, ["a", "b"]))


def test_load_model_device_and_dtype(tiny_weights):
    model = langseg.load_model(tiny_weights, device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), ["a", "b"])
    assert out.dtype == torch.float32 and out.shape == (1, 2, 64, 64)


def test_unknown_name_lists_known_weights():
    with pytest.raises(CheckpointError, match="lseg-demo-vitl16"):
        langseg.load_model("no-such-weights")


class _ScriptedClip(nn.Module):
    """Stands in for OpenAI's TorchScript release: a scripted module holding CLIP's parameter names."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.holder = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.clone()) for k, v in sd.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_clip_text_weights_from_state_dict_and_torchscript(tmp_path):
    torch.manual_seed(0)
    source = create_model("lseg_tiny").text_encoder.state_dict()
    torch.save(source, tmp_path / "clip.pt")
    target = create_model("lseg_tiny")
    load_clip_text_weights(target, tmp_path / "clip.pt")
    assert all(torch.equal(target.text_encoder.state_dict()[k], v) for k, v in source.items())

    # a TorchScript archive whose state dict has OpenAI's key names
    class Clip(nn.Module):
        def __init__(self):
            super().__init__()
            enc = create_model("lseg_tiny").text_encoder
            enc.load_state_dict(source)
            self.positional_embedding = enc.positional_embedding
            self.text_projection = enc.text_projection
            self.logit_scale = enc.logit_scale
            self.transformer = enc.transformer
            self.token_embedding = enc.token_embedding
            self.ln_final = enc.ln_final

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    torch.jit.save(torch.jit.script(Clip()), str(tmp_path / "clip_jit.pt"))
    other = create_model("lseg_tiny")
    load_clip_text_weights(other, tmp_path / "clip_jit.pt")
    assert all(torch.equal(other.text_encoder.state_dict()[k], v) for k, v in source.items())
    with pytest.raises(CheckpointError, match="missing keys"):
        torch.save({"foo": torch.zeros(1)}, tmp_path / "notclip.pt")
        load_clip_text_weights(other, tmp_path / "notclip.pt")


def test_timm_vit_weights_with_a_different_grid(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=4, num_heads=2, num_classes=1000)
    torch.save({"model": vit.state_dict()}, tmp_path / "vit.pth")
    model = create_model("lseg_tiny")
    load_timm_vit_weights(model, tmp_path / "vit.pth")
    got = model.image_encoder.vit.state_dict()
    assert torch.equal(got["blocks.3.mlp.fc2.weight"], vit.state_dict()["blocks.3.mlp.fc2.weight"])
    assert got["pos_embed"].shape == (1, 1 + 16, 64)  # 2x2 grid resized to the model's 4x4
    with pytest.raises(CheckpointError, match="ViT shapes do not fit"):
        wide = VisionTransformer(img_size=64, patch_size=16, embed_dim=96, depth=4, num_heads=2)
        torch.save(wide.state_dict(), tmp_path / "wide.pth")
        load_timm_vit_weights(model, tmp_path / "wide.pth")
