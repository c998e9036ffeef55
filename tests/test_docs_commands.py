"""Every ``langseg ...`` command written in README.md and docs/*.md parses with the real CLI.

A renamed or removed option, a misspelt sub-command or a wrong choice in the documentation fails here
(argparse exits with status 2), without running anything.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from langseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SEPARATORS = {"&&", "||", ";", "|"}
SHELL_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
SAMPLE_VALUES = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}  # others: "1"


def _shell_lines(path: Path):
    """Yield (line number, text) of each logical line (backslash continuations joined) in the file's
    ``bash`` and unnamed code fences."""
    lang, pending, start = None, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line.strip())
        if fence:
            lang = (fence.group(1) or "sh") if lang is None else None
            continue
        if lang not in ("bash", "sh"):
            continue
        if not pending:
            start = number
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        yield start, pending
        pending = ""


def _langseg_commands(text: str) -> list[list[str]]:
    """The argument lists given to ``langseg`` in one shell line (``.venv/bin/langseg``, ``-m langseg``)."""
    try:
        text = SHELL_VARIABLE.sub(lambda m: SAMPLE_VALUES.get(m.group(1), "1"), text)
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return []
    commands, current = [], None
    for i, tok in enumerate(tokens):
        if tok in SEPARATORS:
            current = None
            continue
        if current is not None:
            current.append(tok)
        elif (
            tok.endswith("/langseg")
            or tok == "langseg"
            or (tok == "-m" and tokens[i + 1 : i + 2] == ["langseg"])
        ):
            if tok == "-m":
                continue
            if i > 0 and tokens[i - 1] in ("install", "pip"):
                continue
            current = []
            commands.append(current)
    return [c for c in commands if c and not c[0].startswith("[")]


def _documented():
    for path in DOCS:
        for number, line in _shell_lines(path):
            for argv in _langseg_commands(line):
                yield pytest.param(argv, id=f"{path.name}:{number}:{' '.join(argv[:2])}")


CASES = list(_documented())


def test_the_docs_hold_commands_of_every_kind():
    # guards the extraction itself: a broken fence parser would otherwise check nothing
    commands = {argv[0] for argv in (c.values[0] for c in CASES)}
    assert len(CASES) >= 40
    assert {
        "segment",
        "features",
        "eval",
        "eval-zeroshot",
        "train",
        "scene",
        "app",
        "convert",
        "weights",
    } <= commands


def _subparser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the deepest sub-command named at the start of ``argv``."""
    for word in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


@pytest.mark.parametrize("argv", CASES)
def test_documented_command_parses(argv, capsys):
    parser = build_parser()
    if any(tok.startswith("[--") for tok in argv):
        # a usage synopsis (``[--flag VALUE]`` groups): every option it names must exist
        known = {s for a in _subparser(parser, argv)._actions for s in a.option_strings}
        named = {m for tok in argv for m in re.findall(r"(?<![\w-])--[a-z][\w-]*", tok)}
        assert named - known == set(), f"`langseg {' '.join(argv)}` names options the command lacks"
        return
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"`langseg {' '.join(argv)}` does not parse (exit {e.code}): {err[-1] if err else ''}")
    assert getattr(args, "func", None) is not None or argv[0] in ("--help", "--version")


def test_options_in_the_readme_command_table_exist():
    """Each row of README's command table names options of the commands in that row only."""
    parser = build_parser()
    rows = [
        line
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `langseg ")
    ]
    assert len(rows) >= 8
    for row in rows:
        commands = [c.split()[1:] for c in re.findall(r"`(langseg [^`]*)`", row.split("|")[1])]
        known = {s for argv in commands for a in _subparser(parser, argv)._actions for s in a.option_strings}
        named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", row))
        assert named - known == set(), (
            f"README command table: {row.split('|')[1].strip()} lacks {named - known}"
        )


def test_files_named_in_the_docs_exist():
    """Paths of this repository named in README.md and docs/*.md exist (a ``*`` in a name is a glob)."""
    pattern = re.compile(r"\b(?:configs|scripts|benchmarks|src/langseg|notebooks|examples|tests)/[\w./*-]+")
    named = {m.rstrip(".,") for path in DOCS for m in pattern.findall(path.read_text(encoding="utf-8"))}
    assert len(named) >= 30
    missing = sorted(n for n in named if not (any(ROOT.glob(n)) if "*" in n else (ROOT / n).exists()))
    assert missing == [], f"named in the docs but not in the repository: {missing}"


def test_tests_named_in_the_docs_exist():
    """``tests/test_x.py::test_name`` references in the docs point to a test that exists."""
    refs = {
        m for path in DOCS for m in re.findall(r"tests/test_\w+\.py::\w+", path.read_text(encoding="utf-8"))
    }
    assert refs
    missing = [
        r for r in sorted(refs) if f"def {r.split('::')[1]}(" not in (ROOT / r.split("::")[0]).read_text()
    ]
    assert missing == [], f"tests named in the docs that do not exist: {missing}"
