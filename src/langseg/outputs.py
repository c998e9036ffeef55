"""Output names derived from input names: one distinct, stable stem per input image."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePath

from .inputs import InputImage


def output_stems(items: Sequence[InputImage]) -> list[PurePath]:
    """A distinct relative stem per input (``sub/photo``) to which each output adds its suffix.

    The stem is the input's relative path without its suffix. Inputs that would share a stem (case
    insensitively, for macOS and Windows) are told apart by the first of these that works for the
    group: their suffix (``photo_jpg``, ``photo_png``), their folder's name (``a/photo``,
    ``b/photo``), both; what still clashes gets a counter (``photo-2``). The result depends only
    on the list, so reruns name files the same way.
    """
    stems = [item.rel.with_suffix("") if item.rel.suffix else item.rel for item in items]
    groups: defaultdict[str, list[int]] = defaultdict(list)
    for i, stem in enumerate(stems):
        groups[_key(stem)].append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for rename in (
            _with_suffix,
            _with_root,
            lambda item, stem: _with_root(item, _with_suffix(item, stem)),
        ):
            tried = [rename(items[i], stems[i]) for i in members]
            if len({_key(t) for t in tried}) == len(tried):
                break
        for i, new in zip(members, tried):
            stems[i] = new
    return _number_duplicates(stems)


def _number_duplicates(stems: list[PurePath]) -> list[PurePath]:
    """Keep the first of equal stems; later ones get ``-2``, ``-3``... (never a name already in use)."""
    taken = Counter(_key(s) for s in stems)
    used: set[str] = set()
    out: list[PurePath] = []
    for stem in stems:
        new, k = stem, 1
        while _key(new) in used or (new != stem and taken[_key(new)]):
            k += 1
            new = stem.with_name(f"{stem.name}-{k}")
        used.add(_key(new))
        out.append(new)
    return out


def _key(stem: PurePath) -> str:
    return str(stem).casefold()


def _with_suffix(item: InputImage, stem: PurePath) -> PurePath:
    suffix = item.rel.suffix.lstrip(".")
    return stem.with_name(f"{stem.name}_{suffix}") if suffix else stem


def _with_root(item: InputImage, stem: PurePath) -> PurePath:
    return PurePath(item.root or "_") / stem


def output_path(out_dir: str | Path, stem: PurePath, suffix: str) -> Path:
    """``out_dir/stem`` + ``suffix`` (e.g. ``.mask.png``), keeping the stem's sub-folders."""
    return Path(out_dir) / stem.parent / f"{stem.name}{suffix}"


def existing(paths: Sequence[Path], limit: int = 5) -> str:
    """A short list of the given paths that exist ('' if none), for an error message."""
    found = [str(p) for p in paths if p.exists()]
    if not found:
        return ""
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return ", ".join(found[:limit]) + more
