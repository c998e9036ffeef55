"""The toy room's 3D map: point mIoU with and without the depth test, and the sanity check's numbers
for a right and a wrong ``--pose`` (the figures of docs/scenes.md).

Renders the toy room (generic layout, 160x120) with 24 and with 12 frames, runs ``langseg scene fuse``
with the bundled ``lseg-toy`` (points from the depth frames, defaults), and prints:

* point mIoU of ``Scene.query`` with the toy labels against the renderer's per-point ground truth
  (points no frame saw count as wrong), with the depth test and with ``--no-occlusion``;
* ``seen_fraction`` of the ground-truth points (``--points points.ply``) with the wrong pose flag
  (``w2c`` for camera-to-world files) and the right one;
* ``depth_agreement`` with points from depth, for the wrong and the right flag.

    python benchmarks/bench_toy_map.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from langseg.cli import main
from langseg.data.toy_scene import ToyScene, render_toy_scene
from langseg.metrics import confusion_matrix, miou
from langseg.scenes import Scene


def fuse(scene: Path, out: Path, *extra: str) -> dict:
    """``langseg scene fuse`` in-process -> the sanity check it recorded in scene.json."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = main(["scene", "fuse", str(scene), "--out", str(out), "--device", "cpu", *extra])
    if code not in (0, 1):
        sys.exit(f"scene fuse {scene} {' '.join(extra)} exited with {code}")
    return json.loads((out / "scene.json").read_text(encoding="utf-8"))["sanity"]


def point_miou(scene_root: Path, map_root: Path) -> float:
    truth = ToyScene.load(scene_root)
    fused = Scene.load(map_root)
    pred = fused.query(list(truth.labels)).labels
    target = truth.labels_at(fused.xyz)
    K = len(truth.labels)
    pred = np.where(pred < 0, (target + 1) % K, pred)  # never seen: wrong
    conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), K, ignore_index=-1)
    return float(miou(conf)[0])


def measure(frames: int, seed: int, tmp: Path) -> dict:
    scene = render_toy_scene(tmp / f"scene{frames}", frames=frames, seed=seed).root
    start = time.perf_counter()
    fuse(scene, tmp / "map")
    fuse_s = time.perf_counter() - start
    fuse(scene, tmp / "no_test", "--no-occlusion")
    return {
        "frames": frames,
        "seed": seed,
        "point_miou_depth_test": round(point_miou(scene, tmp / "map"), 4),
        "point_miou_no_depth_test": round(point_miou(scene, tmp / "no_test"), 4),
        "fuse_s": round(fuse_s, 2),
        "seen_fraction_gt_points_right_pose": fuse(scene, tmp / "gt_right", "--points", "points.ply")[
            "seen_fraction"
        ],
        "seen_fraction_gt_points_wrong_pose": fuse(
            scene, tmp / "gt_wrong", "--points", "points.ply", "--pose", "w2c"
        )["seen_fraction"],
        "depth_agreement_right_pose": fuse(scene, tmp / "d_right")["depth_agreement"],
        "depth_agreement_wrong_pose": fuse(scene, tmp / "d_wrong", "--pose", "w2c")["depth_agreement"],
    }


def main_bench() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[24, 12])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    rows = []
    for frames in args.frames:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(frames, args.seed, Path(tmp)))
        print(json.dumps(rows[-1]))
    if args.json:
        record = {
            "benchmark": "toy_map",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "runs": rows,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main_bench()
