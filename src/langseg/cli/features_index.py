"""``index.json`` of ``langseg features``: its name (per ``--shard``), the per-rank parts of a
multi-process run and their merge, and the entries of an earlier run that ``--skip-existing`` extends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INDEX_NAME = "index.json"


def index_name(shard: tuple[int, int] | None) -> str:
    """``index.json``; ``index.shard{I}of{N}.json`` for ``--shard I/N``, so the tasks of a job array
    can share one output folder without communicating (their indexes together list every input)."""
    return INDEX_NAME if shard is None else f"index.shard{shard[0]}of{shard[1]}.json"


def part_path(index_path: Path, rank: int) -> Path:
    """Where rank ``rank`` of a multi-process run keeps its share of the index until rank 0 merges."""
    return index_path.with_name(f"{index_path.stem}.rank{rank}.json")


def parts(index_path: Path) -> list[Path]:
    """Index parts of ``index_path`` left in its folder (by this run, or a killed one)."""
    return sorted(index_path.parent.glob(f"{index_path.stem}.rank*.json"))


def write_index(
    path: Path, settings: dict[str, Any], entries: dict[str, dict], order: dict[str, int]
) -> None:
    """The index (or this rank's part of it): the run's settings and the entries in input order."""
    from .. import __version__
    from ..files import write_json

    images = sorted(entries.values(), key=lambda e: order.get(e["file"], len(order)))
    write_json(path, {"langseg_version": __version__, **settings, "images": images}, overwrite=True)


def finish_index(index_path: Path, rank: int, size: int) -> None:
    """After each process has written its part: one index.json, and no parts left (a killed
    multi-process run's are in it now)."""
    if size > 1:
        _merge_parts(index_path, rank, size)
    else:
        for part in parts(index_path):
            part.unlink()


def _merge_parts(index_path: Path, rank: int, size: int) -> None:
    """After every rank has written its part: rank 0 joins them, in rank order (ranks hold contiguous
    slices of the inputs, so this is the order of a single run), into index.json; parts are removed."""
    from ..distributed import barrier
    from ..files import write_json

    barrier()
    if rank == 0:
        mine = [part_path(index_path, r) for r in range(size)]
        index = json.loads(mine[0].read_text(encoding="utf-8"))
        seen = {e["file"] for e in index["images"]}
        for part in mine[1:]:
            for entry in json.loads(part.read_text(encoding="utf-8"))["images"]:
                if entry["file"] not in seen:
                    index["images"].append(entry)
                    seen.add(entry["file"])
        write_json(index_path, index, overwrite=True)
        for part in mine:
            part.unlink()
        for part in parts(index_path):  # left by an earlier run with more processes
            part.unlink()
    barrier()


def previous_entries(index_path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries of an earlier run's index (for --skip-existing), including the per-rank parts a killed
    multi-process run left; their settings must match this run's."""
    entries: dict[str, dict[str, Any]] = {}
    for path in [index_path, *parts(index_path)]:
        entries.update(_index_entries(path, settings))
    return entries


def _index_entries(index_path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from ..errors import LangsegError

    if not index_path.exists():
        return {}
    try:
        old = json.loads(index_path.read_text(encoding="utf-8"))
        old_settings = {k: old[k] for k in settings}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LangsegError(
            f"{index_path}: not a features index this version can extend ({e}); "
            "use another --out or --overwrite"
        ) from None
    changed = sorted(k for k in settings if comparable(old_settings[k]) != comparable(settings[k]))
    if changed:
        raise LangsegError(
            f"{index_path} was written with different {', '.join(changed)}; "
            "use another --out, the same options, or --overwrite"
        )
    return {e["file"]: e for e in old.get("images", []) if isinstance(e, dict) and "file" in e}


def comparable(value: Any) -> Any:
    """Settings as JSON sees them (tuples become lists; the device may differ between runs)."""
    value = json.loads(json.dumps(value))
    if isinstance(value, dict):
        value.pop("device", None)
        value.pop("path", None)
    return value
