"""``langseg scene query``: label the points of a map written by ``scene fuse`` with words (points
coloured by label, heat maps, shares, a top-down picture)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def run_query(args: argparse.Namespace) -> int:
    from ..files import write_json
    from ..labels import check_prompt_lengths, parse_labels, parse_templates, read_labels_file
    from ..scenes import Scene

    classes = read_labels_file(args.labels_file) if args.labels_file else parse_labels(args.labels)
    templates = parse_templates(args.template)
    check_prompt_lengths(classes, templates)
    scene = Scene.load(args.map)
    out = args.out or args.map / "query"
    heat_names = {
        h: "heat_" + "".join(c if c.isalnum() else "_" for c in h.strip()) + ".ply" for h in args.heatmap
    }
    _refuse_existing(args, out, heat_names)
    result = scene.query(classes, model=_text_model(args, scene), templates=templates)
    heats = {h: result.heat(h) for h in args.heatmap}  # unknown labels fail before any file is written
    _write_points(args, out, scene, result, heats, heat_names)
    up = args.up or scene.up_axis()
    _write_topdown(args, out, scene, result, up)
    record = _record(args, scene, result, classes, templates, up, heat_names)
    write_json(out / "query.json", record, overwrite=args.overwrite)
    shares = result.shares()
    top = sorted(((s, n) for n, s in shares.items()), reverse=True)[:5]
    print(
        f"labelled {record['seen']} of {record['points']} points of {args.map}: "
        + ", ".join(f"{n} {s:.0%}" for s, n in top)
        + f" -> {out}"
    )
    return 0


def _refuse_existing(args: argparse.Namespace, out: Path, heat_names: dict[str, str]) -> None:
    from ..errors import LangsegError
    from ..outputs import existing

    files = [out / n for n in ("labels.ply", "labels.npy", "query.json", "topdown.png", *heat_names.values())]
    clash = existing(files)
    if clash and not args.overwrite:
        raise LangsegError(f"output files exist: {clash}; pass --overwrite to replace them")


def _text_model(args: argparse.Namespace, scene):
    """The model whose text tower embeds the labels: ``--weights``, or the map's own weights."""
    from ..errors import LangsegError
    from ..predictor import resolve_device
    from ..weights import load_model, resolve_weights

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise LangsegError(str(e)) from None
    return load_model(resolve_weights(args.weights or scene.weights()), device=device)


def _write_points(args, out: Path, scene, result, heats: dict[str, Any], heat_names: dict[str, str]) -> None:
    """labels.ply, labels.npy and a heat_<label>.ply per ``--heatmap``."""
    import numpy as np

    from ..files import write_array
    from ..scenes import write_ply
    from ..scenes.maps import heat_colors, label_colors

    labels = result.labels.astype(np.int32)
    write_ply(
        out / "labels.ply",
        scene.xyz,
        label_colors(result.labels, len(result.label_names)),
        scalars={"label": labels},
        overwrite=args.overwrite,
    )
    write_array(out / "labels.npy", labels, "npy", overwrite=args.overwrite)
    for h, values in heats.items():
        write_ply(
            out / heat_names[h],
            scene.xyz,
            heat_colors(values, scene.seen),
            scalars={"score": values.astype(np.float32)},
            overwrite=args.overwrite,
        )


def _write_topdown(args, out: Path, scene, result, up: str) -> None:
    from ..files import write_image
    from ..scenes.maps import topdown

    cell = (scene.record.get("points") or {}).get("voxel_size")  # None for a given point cloud
    picture = topdown(scene.xyz, result.labels, result.label_names, up=up, size=args.topdown_size, cell=cell)
    write_image(out / "topdown.png", picture, overwrite=args.overwrite)


def _record(args, scene, result, classes, templates, up: str, heat_names: dict[str, str]) -> dict[str, Any]:
    """query.json: the labels with their synonyms, point counts, shares and colours."""
    import numpy as np

    from ..visualize import palette

    names = result.label_names
    shares = result.shares()
    colors = palette(len(names))
    counts = np.bincount(result.labels[result.labels >= 0], minlength=len(names))
    return {
        "map": str(args.map),
        "points": int(len(scene.xyz)),
        "seen": int(scene.seen.sum()),
        "labels": [
            {
                "index": i,
                "name": names[i],
                "synonyms": list(classes[i]),
                "points": int(counts[i]),
                "share": shares[names[i]],
                "color": [int(c) for c in colors[i]],
            }
            for i in range(len(names))
        ],
        "templates": templates,
        "up": up,
        "weights": args.weights or scene.weights(),
        "outputs": {
            "labels_ply": "labels.ply",
            "labels": "labels.npy",
            "topdown": "topdown.png",
            "heatmaps": heat_names,
        },
    }
