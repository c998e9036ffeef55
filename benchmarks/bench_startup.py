"""Start-up time of ``langseg`` commands that need no model, and whether they import torch.

Each command runs as a fresh ``python -m langseg ...`` process ``--repeat`` times (interleaved with
the baseline ``python -c pass``, so a load change on the machine affects both alike). Reported per
command: the median wall-clock seconds, the ratio to the baseline's median in the same run, the exit
code, and whether ``torch`` was in ``sys.modules`` when the process ended (checked in one extra run
through ``python -c``; commands that need a model are expected to import it, the others are not).

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --repeat 7 --out startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (name, argv after "langseg") for commands that must start without torch
COMMANDS = [
    ("--help", ["--help"]),
    ("--version", ["--version"]),
    ("segment --help", ["segment", "--help"]),
    ("weights list", ["weights", "list"]),
    ("weights path lseg-demo-vitl16", ["weights", "path", "lseg-demo-vitl16"]),
    ("bad option", ["segment", "--no-such-option"]),
    ("segment without labels file", ["segment", "x.png", "--labels-file", "missing-labels.txt"]),
]

# Runs ``langseg.cli.main`` and reports whether torch got imported (exit code kept).
PROBE = (
    "import sys, json\n"
    "from langseg.cli import main\n"
    "try:\n"
    "    rc = main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    rc = e.code if isinstance(e.code, int) else 1\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write('\\nSTARTUP-PROBE ' + json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))\n"
)


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - start, proc.returncode


def imports_torch(args: list[str], env: dict[str, str], cwd: str) -> tuple[bool, int]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=cwd
    )
    line = proc.stderr.rsplit("STARTUP-PROBE ", 1)
    if len(line) != 2:
        raise SystemExit(f"probe of {args} failed:\n{proc.stdout}{proc.stderr}")
    info = json.loads(line[1])
    return bool(info["torch"]), int(info["rc"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per command (default: 5)")
    ap.add_argument("--only", nargs="*", default=None, help="names of the commands to run (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)

    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    with tempfile.TemporaryDirectory() as tmp:
        env["LANGSEG_CACHE"] = str(Path(tmp) / "cache")  # an empty cache: nothing is found or fetched
        commands = [c for c in COMMANDS if args.only is None or c[0] in args.only]
        base: list[float] = []
        times: dict[str, list[float]] = {name: [] for name, _ in commands}
        codes: dict[str, int] = {}
        for _ in range(args.repeat):
            base.append(timed([sys.executable, "-c", "pass"], env, tmp)[0])
            for name, cmd in commands:
                seconds, codes[name] = timed([sys.executable, "-m", "langseg", *cmd], env, tmp)
                times[name].append(seconds)
        torch_loaded = {name: imports_torch(cmd, env, tmp)[0] for name, cmd in commands}

    base_med = statistics.median(base)
    rows = [
        {
            "command": "python -c pass",
            "median_s": round(base_med, 4),
            "ratio": 1.0,
            "exit_code": 0,
            "imports_torch": False,
        }
    ]
    for name, _ in commands:
        med = statistics.median(times[name])
        rows.append(
            {
                "command": f"langseg {name}",
                "median_s": round(med, 4),
                "ratio": round(med / base_med, 2),
                "exit_code": codes[name],
                "imports_torch": torch_loaded[name],
            }
        )
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':<{width}}  median s  x baseline  exit  imports torch")
    for r in rows:
        print(
            f"{r['command']:<{width}}  {r['median_s']:8.3f}  {r['ratio']:10.1f}  {r['exit_code']:4d}  "
            f"{'yes' if r['imports_torch'] else 'no'}"
        )
    print(f"({args.repeat} runs each, median; {platform.platform()}, {os.cpu_count()} CPUs)")
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {
                    "repeat": args.repeat,
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
