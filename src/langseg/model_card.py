"""The model card (``README.md``) written next to saved weights and uploaded with them to the Hub.

It is generated from what the weights folder knows: ``config.json`` (variant, preprocessing, default
labels, where the weights came from, training progress), optionally the training config of the run
and an evaluation record written by ``langseg eval``. Nothing here touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

LICENSE_NOTE = (
    "The LSeg method and the official lang-seg code and checkpoints are released under the MIT license; "
    "the CLIP text tower comes from OpenAI's CLIP (MIT) and ViT trunks from timm (Apache-2.0). Weights "
    "trained on a dataset are also subject to that dataset's terms (ADE20K, PASCAL, COCO, FSS-1000 have "
    "their own licenses)."
)
_EVAL_KEYS = ("pixAcc", "mIoU", "mIoU_present", "FB-IoU")


def model_card(
    meta: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    train_config: str | None = None,
    eval_record: Mapping[str, Any] | None = None,
    license: str = "mit",
) -> str:
    """Markdown with Hub metadata (YAML front matter) for a folder whose ``config.json`` is ``meta``.

    ``repo_id`` appears in the usage snippet (a local folder is shown otherwise); ``train_config`` is
    the run's resolved YAML; ``eval_record`` a JSON record of ``langseg eval`` / ``eval-zeroshot``.
    """
    model = meta.get("model", {})
    lines = [
        *_front_matter(license),
        f"# {repo_id.split('/')[-1] if repo_id else model.get('name', 'lseg')}",
        "",
        "An LSeg network (Language-driven Semantic Segmentation, Li et al., ICLR 2022) in the langseg "
        "format (`model.safetensors` + `config.json`): it segments an image with any list of words and "
        "gives dense CLIP-aligned per-pixel features.",
        "",
        *_usage(f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"),
        *_model(model),
        *_preprocessing(model),
        "## Provenance",
        "",
        *_provenance(meta),
    ]
    if train_config:
        lines += ["", "## Training configuration", "", "```yaml", train_config.rstrip(), "```"]
    if eval_record:
        lines += ["", "## Evaluation", "", *_evaluation(eval_record)]
    lines += ["", "## License", "", f"`{license}`. {LICENSE_NOTE}", ""]
    return "\n".join(lines)


def _front_matter(license: str) -> list[str]:
    tags = ("lseg", "open-vocabulary-segmentation", "clip", "semantic-segmentation")
    return [
        "---",
        f"license: {license}",
        "library_name: langseg",
        "pipeline_tag: image-segmentation",
        "tags:",
        *(f"- {t}" for t in tags),
        "---",
        "",
    ]


def _usage(load_name: str) -> list[str]:
    return [
        "## Usage",
        "",
        "```python",
        "import langseg",
        "",
        f'model = langseg.load_model("{load_name}", device="cpu")',
        "predictor = langseg.LSegPredictor(model)",
        'result = predictor.predict("photo.jpg", ["cat", "grass", "other"])',
        "```",
        "",
        f'or `langseg segment photo.jpg --labels "cat,grass,other" --weights {load_name}`.',
        "",
    ]


def _model(model: Mapping[str, Any]) -> list[str]:
    text = model.get("text") or {}
    labels = [str(x) for x in model.get("labels", ())]
    return [
        "## Model",
        "",
        f"- variant: `{model.get('name', 'lseg')}`"
        + (" (zero-shot protocol)" if model.get("zero_shot") else ""),
        f"- image trunk: {_trunk(model)}",
        f"- decoder width {model.get('features', '?')}, joint embedding dimension {text.get('embed_dim', '?')}",
        f"- text tower: CLIP transformer, width {text.get('width', '?')}, {text.get('layers', '?')} layers "
        "(frozen)",
        f"- logit scale: {model.get('logit_scale', '?')} (constant)",
        f"- default labels: {', '.join(labels) if labels else '(none)'}",
        "",
    ]


def _preprocessing(model: Mapping[str, Any]) -> list[str]:
    return [
        "## Preprocessing",
        "",
        "- RGB images scaled to [0, 1], then normalized with mean "
        f"{_floats(model.get('mean'))} and std {_floats(model.get('std'))}",
        "- height and width multiples of 32 (`LSegPredictor` pads and crops back); native training size "
        f"{_native(model)}",
        "- outputs: logits `(B, K, H, W)` for K labels; pixel embeddings `(B, D, H/2, W/2)`",
        "",
    ]


def _trunk(model: Mapping[str, Any]) -> str:
    vit, resnet = model.get("vit"), model.get("resnet")
    if vit:
        return (
            f"ViT, patch {vit.get('patch_size')}, width {vit.get('embed_dim')}, depth {vit.get('depth')}, "
            f"{vit.get('num_heads')} heads, read at blocks {list(vit.get('hooks', ()))}"
        )
    if resnet:
        return f"ResNet, blocks per stage {list(resnet.get('layers', ()))}"
    return "unknown"


def _native(model: Mapping[str, Any]) -> str:
    vit = model.get("vit")
    return f"{vit['img_size']}x{vit['img_size']}" if vit and "img_size" in vit else "480x480 crops"


def _floats(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")" if values else "?"


def _provenance(meta: Mapping[str, Any]) -> list[str]:
    out = [f"- source: {meta.get('source', 'built with langseg (no source recorded)')}"]
    if meta.get("source_sha256"):
        out.append(f"- source SHA-256: `{meta['source_sha256']}`")
    if meta.get("dropped"):
        out.append(f"- removed parts that never run: {', '.join(meta['dropped'])}")
    train = meta.get("train")
    if isinstance(train, Mapping):
        out.append(
            f"- trained with `langseg train`: epoch {train.get('epoch')}, step {train.get('global_step')}"
        )
        for key, value in sorted((train.get("metrics") or {}).items()):
            out.append(f"  - {key}: {value:.4f}" if isinstance(value, float) else f"  - {key}: {value}")
    return out


def _evaluation(record: Mapping[str, Any]) -> list[str]:
    dataset = record.get("dataset") or {}
    where = dataset.get("name", "?") if isinstance(dataset, Mapping) else str(dataset)
    if isinstance(dataset, Mapping) and dataset.get("split"):
        where += f" ({dataset['split']})"
    rows = []
    if "fold" in record:
        where += f", fold {record['fold']}"
    metrics = record.get("mean") if isinstance(record.get("mean"), Mapping) else record
    for key in _EVAL_KEYS:
        if isinstance(metrics.get(key), int | float):
            rows.append(f"| {key} | {metrics[key]:.4f} |")
    if not rows:
        return ["(the record holds none of " + ", ".join(_EVAL_KEYS) + ")"]
    protocol = record.get("protocol")
    lines = [f"{record.get('task', 'evaluation')} on {where}:", "", "| metric | value |", "|---|---|", *rows]
    if isinstance(protocol, Mapping):
        lines += ["", "protocol: `" + json.dumps(protocol, sort_keys=True) + "`"]
    return lines
