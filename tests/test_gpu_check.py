"""benchmarks/gpu_check.sh --dry-run: every section of the prepared GPU check runs (CPU, tiny model)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import SUBPROCESS_ENV

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"autocast", "official_numerics", "throughput", "memory", "multiscale", "training", "compile"}


def test_gpu_check_dry_run_writes_json_and_table(tmp_path):
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and set(result["sections"]) == SECTIONS
    s = result["sections"]
    assert not [n for n in SECTIONS if "error" in s[n] or "skipped" in s[n]]
    # what the checks compare must agree where it must, also on the CPU
    assert s["official_numerics"]["device_vs_cpu"]["bit_identical"] == 1.0  # the same device here
    assert s["multiscale"]["max_abs_diff"] < 1e-4  # batched windows = one window per call
    assert s["compile"]["max_abs_diff"] < 1e-4
    assert s["autocast"]["bf16"]["argmax_agreement"] > 0.9
    assert {(r["precision"], r["batch"]) for r in s["throughput"]["rows"]} == {
        (p, b) for p in ("bf16", "fp32") for b in (1, 2)
    }
    assert s["training"]["bf16_vs_fp32"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.startswith("# GPU check (dry run") and table.count("\n| ") >= 15
    assert "| compile | compiled (eager) vs eager" in table
