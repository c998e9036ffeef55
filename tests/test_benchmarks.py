"""The benchmark scripts run at CI size (tiny model, small inputs) and write what they claim.

Timings are not checked (they belong to the printed tables, never to assertions); what is checked is
that every row ran, the same-run baselines and ratios are present, and the outputs the benchmarks
compare agree where they must.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SUBPROCESS_ENV

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: object) -> str:
    """``python benchmarks/<script> ARGS`` in a subprocess, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture()
def bench(monkeypatch, capsys):
    """Run a benchmark script's ``main(argv)`` in this process (no interpreter start-up and imports to
    pay again; ``run`` keeps real subprocesses for the scripts whose process is part of what they do),
    on one thread as ``run``'s subprocesses (tiny models: more threads only wait on each other); the
    processes a benchmark starts itself get ``run``'s environment."""
    monkeypatch.syspath_prepend(str(BENCH))
    for key, value in SUBPROCESS_ENV.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()

    def call(script: str, *args: object) -> str:
        module = importlib.import_module(script.removesuffix(".py"))
        torch.set_num_threads(1)
        try:
            assert module.main([str(a) for a in args]) in (0, None)
        finally:
            torch.set_num_threads(threads)
        return capsys.readouterr().out

    return call


def test_bench_inference(tmp_path, bench):
    out = tmp_path / "inference.json"
    bench(
        "bench_inference.py",
        "--size",
        64,
        "--batch",
        1,
        2,
        "--iters",
        1,
        "--target-iters",
        1,
        "--matmul-size",
        256,
        "--dtype",
        "fp32",
        "bf16",
        "--json",
        out,
    )
    result = json.loads(out.read_text())
    names = {(r["name"], r.get("batch")) for r in result["rows"]}
    assert {"official", "reference"} <= {n for n, _ in names}
    fast = [r for r in result["rows"] if r["name"] not in ("official", "reference")]
    assert len(fast) == 4  # fp32 and bf16, batch 1 and 2
    for r in fast:
        assert r["images_per_s"] > 0 and r["speedup_vs_reference"] > 0
        bound = 1e-4 if r.get("dtype", "fp32") == "fp32" else 0.5
        assert r["max_abs_diff_vs_reference"] < bound
    target = result["target"]
    assert target["official_gflop"] > target["our_gflop"] > 0  # we skip what the official code wastes
    assert target["max_abs_diff_vs_official"] < 1e-4 and target["ratio"] > 0


def test_bench_inference_ablation(tmp_path, monkeypatch, capsys):
    """Every fast path gets a row with its on/off ratios and its output difference (both scopes)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_inference

    from langseg.models import FastPaths

    flags = [f.name for f in dataclasses.fields(FastPaths)]
    for scope, extra in (("forward", ["--flops"]), ("parts", [])):
        out = tmp_path / f"ablation-{scope}.json"
        args = ["--ablation", "--ablation-scope", scope, "--size", "64", "--batch", "1", "--iters", "1"]
        assert bench_inference.main([*args, *extra, "--json", str(out)]) == 0
        ablation = json.loads(out.read_text())["ablation"]
        assert [r["path"] for r in ablation["rows"]] == flags and ablation["scope"] == scope
        for r in ablation["rows"]:
            assert len(r["speedup_rounds"]) == len(r["pairs_seconds"]) == 1
            assert r["max_abs_diff_vs_baseline"] < 1e-4  # each path computes the same function
            assert (r["gflop"] > 0) if scope == "forward" else r["gflop"] is None
    assert "ablation (leave-one-out, forward = sum of its parts)" in capsys.readouterr().out


def test_bench_eval(tmp_path, bench):
    out = tmp_path / "eval.json"
    bench("bench_eval.py", "--images", 1, "--size", "96x128", "--classes", 3, "--out", out)
    record = json.loads(out.read_text())
    assert len(record["results"]) == 5  # 2 single-scale rows, batched, 1 window/call, official-like
    assert record["speedup_vs_official_like"] > 0 and record["batched_window_speedup"] > 0
    assert record["miou_abs_diff_official_like"] <= 1e-4  # the same arithmetic as the official evaluator


def test_bench_train(tmp_path, bench):
    out = tmp_path / "train.json"
    bench(
        "bench_train.py",
        *("--configs", "toy", "--steps", 1, "--warmup", 0, "--batch-size", 2, "--crop", 64, "--in-process"),
        *("--json", out),
    )
    rows = json.loads(out.read_text())
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert rows[0]["vs_fp32"] == 1.0 and rows[1]["vs_fp32"] > 0
    assert all(r["images_per_s"] > 0 for r in rows)


def test_bench_memory_estimate_matches_real_accounting(tmp_path):
    """Fake CUDA tensors give the same fp32 peak as the real CPU run (the estimator's own check)."""
    out = tmp_path / "memory.json"
    run(
        "bench_memory.py",
        "--variant",
        "lseg_tiny",
        "--device",
        "cpu",
        "--size",
        128,
        "--labels",
        4,
        "--check",
        "--json",
        out,
    )
    result = json.loads(out.read_text())
    for row in result["check"]:
        if row["dtype"] == "fp32":  # the same ops on the same shapes: the same bytes
            assert row["fake_cuda_gib"] == row["real_cpu_gib"], row
        else:  # CPU and CUDA autocast cast slightly different op lists; small maps make that count more
            assert row["fake_cuda_gib"] == pytest.approx(row["real_cpu_gib"], rel=0.15), row
    peaks = {r["case"]: r["peak_gib"] for r in result["rows"]}
    assert set(peaks) == {"single", "features", "sliding", "multiscale"}
    assert all(p > result["weights_gib"] for p in peaks.values())


def test_bench_cli(tmp_path, bench):
    out = tmp_path / "cli.json"
    bench("bench_cli.py", "--images", 2, "--size", "64x48", "--out", out)
    payload = json.loads(out.read_text())
    assert payload["results"] and all(r["images_per_s_wall"] > 0 for r in payload["results"])


def test_bench_startup(tmp_path):
    out = tmp_path / "startup.json"
    text = run("bench_startup.py", "--repeat", 1, "--only", "weights list", "bad option", "--out", out)
    rows = {r["command"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"python -c pass", "langseg weights list", "langseg bad option"}
    assert rows["langseg weights list"]["exit_code"] == 0 and rows["langseg bad option"]["exit_code"] == 2
    assert all(r["ratio"] > 0 and r["imports_torch"] is False for r in rows.values())
    assert "x baseline" in text


def test_bench_scene(tmp_path, bench):
    out = tmp_path / "scene.json"
    bench(
        "bench_scene.py",
        *("--variant", "lseg_tiny", "--size", "64x48", "--points", 20000, "--frames", 1, "--warmup", 0),
        *("--device", "cpu", "--json", out),
    )
    result = json.loads(out.read_text())
    assert result["network_ms_per_frame"] > 0 and result["fusion_ms_per_frame"] > 0
    assert result["fusion_over_network"] > 0 and result["frames_per_s"] > 0
    # the camera at the room's centre sees a share of the walls, never all of them nor none
    assert 0 < result["visible_per_frame"] < result["points"]
