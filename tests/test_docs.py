"""The documentation site with the API reference builds without a warning (mkdocs --strict)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, SUBPROCESS_ENV


def test_mkdocs_build_strict(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(tmp_path),
        ],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr[-3000:]
    api = (tmp_path / "api" / "index.html").read_text()
    for name in ("load_model", "push_to_hub", "LSegPredictor", "export_onnx", "model_card"):
        assert name in api, name
