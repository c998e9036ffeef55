"""Label lists as users type them: ``"cat;kitten, grass, other"`` -> classes with synonyms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .models.text import LabelError

Label = tuple[str, ...]  # one class: its names (synonyms), the first is the display name


def parse_labels(text: str | Sequence[str]) -> list[Label]:
    """Split ``"a;b, c"`` on commas into classes and on ``;`` into synonyms; validate the result.

    A list of strings is taken as one class per item (each may still hold ``;`` synonyms).
    Raises :class:`LabelError` for an empty list, an empty label or a duplicate name.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    classes: list[Label] = []
    for item in items:
        names = tuple(n.strip() for n in str(item).split(";"))
        if not any(names):
            raise LabelError(f"empty label in {text!r} (two commas in a row, or a trailing comma?)")
        if not all(names):
            raise LabelError(f"empty synonym in label {item.strip()!r}")
        classes.append(names)
    if not classes:
        raise LabelError("the label list is empty; give at least one label, e.g. --labels 'cat,grass,other'")
    seen: dict[str, int] = {}
    for i, names in enumerate(classes):
        for n in names:
            key = " ".join(n.lower().split())
            if key in seen:
                raise LabelError(f"label {n!r} appears twice (classes {seen[key] + 1} and {i + 1}); labels must differ")
            seen[key] = i
    return classes


def read_labels_file(path: str | Path) -> list[Label]:
    """One class per line (``;`` for synonyms); blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise LabelError(f"{path}: cannot read the labels file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LabelError(f"{path}: the labels file is not UTF-8 text") from None
    items = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not items:
        raise LabelError(f"{path}: the labels file has no labels")
    return parse_labels(items)


def display_names(labels: Sequence[str | Sequence[str]]) -> list[str]:
    """The first name of each class."""
    return [lab if isinstance(lab, str) else lab[0] for lab in labels]
