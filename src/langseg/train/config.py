"""Training configuration: dataclasses, YAML loading (unknown keys are errors) and ``key=value`` overrides.

A YAML file mirrors :class:`TrainConfig`::

    model: {name: lseg_vitl16_384, vit_weights: weights/vit_large_patch16_384.npz.safetensors, ...}
    data: {datasets: [{name: ade20k, kind: ade20k, root: ADEChallengeData2016}], batch_size: 4, ...}
    optim: {base_lr: 0.004, ...}
    trainer: {max_epochs: 240, precision: 32-true, ...}

Overrides use dotted keys, values parsed as YAML: ``optim.base_lr=0.01``, ``trainer.devices=8``,
``data.datasets.0.root=/data/ade``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..typecheck import ConfigError, from_dict


@dataclass
class ModelSpec:
    """Which network to train and where its initial weights come from."""

    name: str = "lseg_vitl16_384"  # a variant of langseg.models.list_models()
    overrides: dict[str, Any] = field(default_factory=dict)  # LSegConfig fields, e.g. {features: 64}
    init: str | None = None  # fine-tune from anything load_model accepts (replaces name/overrides)
    vit_weights: str | None = None  # a timm ViT checkpoint for the image trunk
    clip_weights: str | None = None  # an OpenAI CLIP file for the text tower
    templates: list[str] | None = None  # prompt templates with {} (none = the bare label, as official)
    # fp32: text tower and pixel-text similarity in float32 (default). official: as the official code,
    # the CLIP text tower in float16 and the similarity in float16 in the forward and hence the
    # backward pass, with no loss scaling (needs trainer.precision 32-true); see docs/training.md
    numerics: Literal["fp32", "official"] = "fp32"


@dataclass
class ToySpec:
    """Size of an in-memory toy dataset (kind: toy)."""

    n_train: int = 2000  # training scenes
    n_val: int = 100  # validation scenes (never used for training)
    size: int = 96  # image side
    seed: int = 0  # scene seed (independent of the run seed)


@dataclass
class DatasetSpec:
    """One dataset of the run."""

    name: str = "ade20k"  # short name, used in logs
    kind: Literal["ade20k", "generic", "toy"] = "ade20k"
    root: str = "ADEChallengeData2016"  # relative paths are resolved against data.root / --data-root
    train_split: str | None = "train"  # generic: sub-folder name, or null for images/ directly
    val_split: str | None = "val"  # null: this dataset has no validation part
    full_names: bool = False  # ADE20K: whole class names instead of the official first words
    mapping: str | None = None  # mapping file to a shared taxonomy (see langseg.data.multi)
    toy: ToySpec = field(default_factory=ToySpec)  # kind: toy only


@dataclass
class DataConfig:
    """Datasets, augmentation and loading."""

    root: str | None = None  # base folder of relative dataset roots (the --data-root flag)
    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    label_space: Literal["dataset", "union"] = "dataset"  # batch label set: its dataset's, or the union
    base_size: int = 520  # random long side drawn from scale_range x base_size
    crop_size: int = 480  # square crops; a multiple of 32
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    batch_size: int = 4  # per GPU (per process)
    val_batch_size: int | None = None  # default: batch_size
    drop_last: bool = False  # official: keep the last partial batch
    num_workers: int = 4  # DataLoader workers per process
    max_val_samples: int | None = None  # validate on the first N samples of each dataset only


@dataclass
class OptimConfig:
    """The official recipe: SGD, lr = base_lr / 16 x per-GPU batch, decoder at 10x, poly 0.9."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    base_lr: float = 0.004  # for a batch of `lr_reference_batch` images per GPU
    lr_reference_batch: int = 16  # lr = base_lr / lr_reference_batch * data.batch_size
    decoder_lr_mult: float = 10.0  # neck, pixel_embed and spatial_block (official `scratch`)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    poly_power: float = 0.9  # lr factor (1 - t / T) ** power
    schedule: Literal["epoch", "step"] = "epoch"  # official: the factor changes once per epoch
    warmup_steps: int = 0  # linear warm-up (not in the official recipe)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings, checkpoints and logs."""

    max_epochs: int = 240  # official train.sh; -1: unlimited (stop at max_steps)
    max_steps: int = -1  # -1: train for max_epochs
    accelerator: str = "auto"  # cpu, gpu, auto
    devices: Any = "auto"  # number of devices per node, a list of ids, or auto
    num_nodes: int = 1
    strategy: str = "auto"  # auto, ddp, ddp_spawn, ...
    sync_batchnorm: bool = True  # decoder BatchNorm synchronized across processes (official)
    precision: str = "32-true"  # 32-true (official), bf16-mixed, 16-mixed
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    check_val_every_n_epoch: int | None = 1  # null: validate only every val_check_interval batches
    val_check_interval: Any = None  # validate every N training batches (int) or fraction of an epoch
    num_sanity_val_steps: int = 2
    limit_val_batches: Any = 1.0
    checkpoint_every_n_steps: int = 0  # 0: checkpoint at the end of every epoch only
    log_every_n_steps: int = 50
    seed: int = 0
    deterministic: bool = False
    benchmark: bool = True  # cudnn autotune (official)
    progress_bar: bool = True
    wandb_project: str | None = None  # log to Weights & Biases too (needs `pip install wandb`)


@dataclass
class TrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: str = "val/miou"  # the metric that picks best/ and top/ (higher is better); official: val/pixacc
    top_k: int = 1  # keep the k best validations by monitor: best/, and top/ when k > 1; official: 3

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


# ------------------------------------------------------------------------------ dicts and overrides
def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict/list tree in place."""
    import yaml

    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value (e.g. optim.base_lr=0.01)")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {assignment!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML: {e}") from None
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value  # unknown keys are caught when the dataclasses are built
    else:
        raise ConfigError(f"override {assignment!r}: {'.'.join(parts[:-1])} is not a section")


def _list_index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override key {where}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _child(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where)]
    if isinstance(node, dict):
        if node.get(part) is None:
            node[part] = {}
        return node[part]
    raise ConfigError(f"override key {where}: not a section")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A YAML file (or the defaults) plus ``key=value`` overrides -> a validated TrainConfig."""
    import yaml

    tree: dict[str, Any] = TrainConfig().to_dict()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config: {e.strerror or e}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        try:
            from_dict(TrainConfig, loaded)  # report unknown keys with the file's own structure
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        tree = merge_tree(tree, loaded)
    for ov in overrides:
        apply_override(tree, ov)
    cfg = from_dict(TrainConfig, tree)
    validate(cfg)
    return cfg


def merge_tree(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Sections merge key by key; lists and scalars replace."""
    out = dict(base)
    for k, v in new.items():
        out[k] = merge_tree(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks the dataclass types cannot express."""
    d, o, t = cfg.data, cfg.optim, cfg.trainer
    if not d.datasets:
        raise ConfigError("data.datasets: at least one dataset is needed")
    names = [s.name for s in d.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.datasets: names must differ, got {names}")
    if d.crop_size % 32:
        raise ConfigError(f"data.crop_size {d.crop_size} must be a multiple of 32")
    if d.batch_size < 1 or (d.val_batch_size is not None and d.val_batch_size < 1):
        raise ConfigError("data.batch_size and data.val_batch_size must be positive")
    if t.max_epochs < 1 and t.max_steps < 1:
        raise ConfigError("set trainer.max_epochs or trainer.max_steps")
    if o.schedule == "epoch" and t.max_steps > 0:
        raise ConfigError(
            "optim.schedule=epoch needs trainer.max_steps=-1 (the poly factor runs over epochs); "
            "use optim.schedule=step with max_steps"
        )
    if o.base_lr <= 0 or o.lr_reference_batch < 1:
        raise ConfigError("optim.base_lr must be positive and optim.lr_reference_batch >= 1")
    if t.accumulate_grad_batches < 1:
        raise ConfigError("trainer.accumulate_grad_batches must be >= 1")
    if cfg.top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {cfg.top_k}")
    if cfg.model.numerics == "official" and t.precision != "32-true":
        raise ConfigError(
            f"model.numerics=official runs the similarity in float16 without loss scaling, as the official "
            f"code does; it needs trainer.precision=32-true, not {t.precision}"
        )
    if cfg.model.init and (cfg.model.vit_weights or cfg.model.clip_weights):
        raise ConfigError("model.init loads a whole network; do not combine it with vit_weights/clip_weights")


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    import yaml

    from ..files import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False), overwrite=True)
