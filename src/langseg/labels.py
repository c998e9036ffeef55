"""Label lists as users type them: ``"cat;kitten, grass, other"`` -> classes with synonyms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import LabelError

Label = tuple[str, ...]  # one class: its names (synonyms), the first is the display name


def parse_labels(text: str | Sequence[str]) -> list[Label]:
    """Split ``"a;b, c"`` on commas into classes and on ``;`` into synonyms; validate the result.

    A list of strings is taken as one class per item (each may still hold ``;`` synonyms).
    Raises :class:`LabelError` for an empty list, an empty label or a duplicate name.
    """
    if isinstance(text, str) and not text.strip(" ,;\t\n"):
        raise LabelError("the label list is empty; give at least one label, e.g. --labels 'cat,grass,other'")
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
                raise LabelError(
                    f"label {n!r} appears twice (classes {seen[key] + 1} and {i + 1}); labels must differ"
                )
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


def parse_templates(templates: Sequence[str] | None) -> list[str] | None:
    """Check prompt templates: each holds exactly one ``{}`` where the label goes and no other field."""
    if not templates:
        return None
    out = []
    for t in templates:
        if not isinstance(t, str):
            raise LabelError(f"prompt template {t!r} is not text; give e.g. 'a photo of a {{}}.'")
        try:
            ok = t.count("{}") == 1 and t.format("x") == t.replace("{}", "x", 1)
        except (IndexError, KeyError, ValueError):
            ok = False
        if not ok:
            raise LabelError(
                f"prompt template {t!r} must contain '{{}}' exactly once (where the label goes) "
                "and no other braces, e.g. 'a photo of a {}.'"
            )
        out.append(t)
    return out


def check_prompt_lengths(
    labels: Sequence[Label], templates: Sequence[str] | None = None, context_length: int = 77
) -> None:
    """Raise :class:`LabelError` naming the first prompt too long for a CLIP tokenizer of ``context_length``.

    Runs the CLIP BPE tokenizer only (no model), so bad labels are caught before weights are loaded;
    the model checks again with its own context length when it encodes them.
    """
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=context_length)
    limit = context_length - 2  # start and end tokens
    for label in labels:
        for name in label:
            for t in templates or ["{}"]:
                prompt = t.format(name)
                n = len(tokenizer.encode(prompt))
                if n > limit:
                    short = name if len(name) <= 60 else name[:57] + "..."
                    as_prompt = f" in the prompt {t!r}" if t != "{}" else ""
                    raise LabelError(
                        f"label {short!r} is {n} tokens long{as_prompt}; "
                        f"the text encoder takes at most {limit}"
                    )


def display_names(labels: Sequence[str | Sequence[str]]) -> list[str]:
    """The first name of each class."""
    return [lab if isinstance(lab, str) else lab[0] for lab in labels]
