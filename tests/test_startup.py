"""Commands that need no model start without importing torch (checked in a fresh interpreter).

``benchmarks/bench_startup.py`` measures how long they take; this test checks the cause of slowness
that matters (``import torch`` costs seconds): after each command, ``torch`` must not be loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SUBPROCESS_ENV

COMMANDS = [
    ["--help"],
    ["--version"],
    ["segment", "--help"],
    ["features", "--help"],
    ["eval", "--help"],
    ["train", "--help"],
    ["app", "--help"],
    ["weights", "--help"],
    ["weights", "list"],
    ["weights", "path", "lseg-demo-vitl16"],
    ["weights", "path", "lseg-toy"],
    ["segment", "--no-such-option"],
    ["segment", "x.png", "--max-side", "5"],
    ["segment", "x.png", "--labels", "sky\nblue,other"],
    ["data", "toy", "--out", "{tmp}/toy", "--n-train", "2", "--n-val", "1", "--size", "32"],
]

# Runs each command through langseg.cli.main in one interpreter and records, after each, whether
# torch has been imported; exits and argparse's SystemExit are caught so that all commands run.
PROBE = r"""
import contextlib, io, json, sys
from langseg.cli import main
result = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    result.append({"argv": argv, "code": code, "torch": "torch" in sys.modules, "out": out.getvalue()})
print(json.dumps(result))
"""


def test_commands_without_a_model_do_not_import_torch(tmp_path):
    commands = [[a.replace("{tmp}", str(tmp_path)) for a in argv] for argv in COMMANDS]
    env = {**SUBPROCESS_ENV, "LANGSEG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["argv"] for r in results] == commands
    for r in results:
        assert not r["torch"], f"langseg {' '.join(r['argv'])} imported torch"
        assert "Traceback" not in r["out"], r["out"]
    codes = {" ".join(r["argv"][:3]): r["code"] for r in results}
    assert codes["--help"] == 0 and codes["weights list"] == 0 and codes["segment --no-such-option"] == 2
    assert codes["weights path lseg-demo-vitl16"] == 1  # not downloaded, and not fetched either
    assert codes["segment x.png --labels"] == 2  # a bad label is refused before torch or other ranks
    assert (tmp_path / "toy" / "labels.txt").is_file()  # data toy did its work without torch
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.ckpt*"))


def test_hub_names_the_files_of_our_format_as_the_checkpoint_module_does():
    """hub.py keeps its own copy of the file names so that 'weights list/path' need not import torch."""
    from langseg import hub
    from langseg.models import checkpoint

    assert (hub.WEIGHTS_NAME, hub.CONFIG_NAME) == (checkpoint.WEIGHTS_NAME, checkpoint.CONFIG_NAME)
