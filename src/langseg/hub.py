"""Named official weights: where they live, downloading once into a cache, converting to our format.

The cache directory is ``$LANGSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/langseg`` (``~/.cache/langseg``).
A named model is downloaded to ``<cache>/downloads/<file>`` (resumable ``.part`` file, progress bar),
converted to ``<cache>/<name>/`` (``model.safetensors`` + ``config.json``) and the original is removed
unless ``keep_original``.

Checksums: the official files have no published hash, so the entries carry none. Trust on first use
instead: the SHA-256 of the downloaded file is logged and recorded in ``<cache>/<name>.sha256.json``
together with the SHA-256 of the converted files, and every later use of the cache entry (or of a
kept or re-downloaded original) is checked against that record. The record also holds the size and
modification time (``mtime_ns``) of each converted file as it was hashed; a later use hashes the files
again only when one of them changed (or with ``verify=True``), so loading a cached name does not read
the whole weights file twice.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import MappingProxyType
from typing import Any

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from .errors import LangsegError
from .files import write_json
from .model_format import CONFIG_NAME, WEIGHTS_NAME
from .provenance import sha256_file
from .registry import REGISTRY, WeightsEntry

__all__ = [
    "REGISTRY",
    "DownloadError",
    "WeightsEntry",
    "cache_dir",
    "cached_path",
    "download",
    "fetch",
    "is_cached",
    "read_record",
    "record_path",
]

log = logging.getLogger(__name__)


class DownloadError(LangsegError, RuntimeError):
    """A named checkpoint could not be fetched; the message says how to get it by hand."""


def cache_dir() -> Path:
    """``$LANGSEG_CACHE``, else ``$XDG_CACHE_HOME/langseg``, else ``~/.cache/langseg``."""
    if os.environ.get("LANGSEG_CACHE"):
        return Path(os.environ["LANGSEG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "langseg"


def cached_path(name: str, cache: str | Path | None = None) -> Path:
    """Where the named weights live once downloaded and converted (``<cache>/<name>``); nothing is fetched."""
    return (Path(cache) if cache is not None else cache_dir()) / name


def is_cached(name: str, cache: str | Path | None = None) -> bool:
    out = cached_path(name, cache)
    return (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file()


def _one_fetch_at_a_time(fetch_fn):
    """Run ``fetch`` for one cache entry in one process at a time (a lock file beside the entry).

    Ranks of one job, SLURM array tasks and two shells that fetch the same name share the cache's
    ``.part`` file and conversion folder; the second waits for the first and then finds the entry
    ready. An entry already in the cache is returned without the lock (a read-only cache works).
    """

    @functools.wraps(fetch_fn)
    def locked(name: str, *args: Any, cache: str | Path | None = None, **kwargs: Any) -> Path:
        root = Path(cache) if cache is not None else cache_dir()
        if is_cached(name, root) or name not in kwargs.get(
            "registry", REGISTRY
        ):  # unknown names fail in fetch
            return fetch_fn(name, *args, cache=cache, **kwargs)
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / f".{name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("another process is fetching %s; waiting for it (%s)", name, lock.lock_file)
            lock.acquire()
        try:
            return fetch_fn(name, *args, cache=cache, **kwargs)
        finally:
            lock.release()

    return locked


def _manual_hint(entry: WeightsEntry, target: Path) -> str:
    return (
        f"Download {entry.filename} by hand from {entry.page} and either put it at {target} "
        f"(then run the same command again) or pass the file's path instead of the name {entry.name!r}."
    )


def _open(entry: WeightsEntry, target: Path, have: int, timeout: float) -> Any:
    """The HTTP response for ``entry`` from byte ``have`` on, or None when the partial file is complete."""
    request = urllib.request.Request(entry.url, headers={"User-Agent": "langseg"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete
            return None
        raise DownloadError(f"{entry.url}: HTTP {e.code} {e.reason}. {_manual_hint(entry, target)}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {entry.url} ({reason}); are you offline? {_manual_hint(entry, target)}"
        ) from None
    if "text/html" in response.headers.get("Content-Type", ""):
        response.close()
        raise DownloadError(
            f"{entry.url} answered with a web page, not the file. {_manual_hint(entry, target)}"
        )
    return response


def _receive(response: Any, entry: WeightsEntry, part: Path, have: int, progress: bool) -> None:
    """Append the response to ``part`` (or write it afresh when the server did not resume)."""
    resumed = have and response.status == 206
    have = have if resumed else 0
    length = response.headers.get("Content-Length")
    total = have + int(length) if length is not None else None
    bar = tqdm(
        total=total,
        initial=have,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=entry.filename,
        disable=not progress,
    )
    with response, open(part, "ab" if resumed else "wb") as f, bar:
        try:
            while block := response.read(1 << 20):
                f.write(block)
                bar.update(len(block))
        except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
            raise DownloadError(
                f"download of {entry.url} broke off ({e}); run again to resume from {part}"
            ) from None
    if total is not None and part.stat().st_size != total:
        raise DownloadError(
            f"download of {entry.url} is incomplete ({part.stat().st_size} of {total} bytes); "
            f"run again to resume from {part}"
        )


def download(entry: WeightsEntry, target: Path, *, progress: bool = True, timeout: float = 15.0) -> Path:
    """Download ``entry`` to ``target``, resuming a partial ``.part`` file; verify a published checksum."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    response = _open(entry, target, have, timeout)
    if response is not None:
        _receive(response, entry, part, have, progress)
    if entry.sha256:
        digest = sha256_file(part)
        if digest != entry.sha256:
            part.unlink()
            raise DownloadError(
                f"{entry.filename}: checksum mismatch (got {digest}, expected {entry.sha256}); the partial "
                "file was removed, run again to download afresh"
            )
    os.replace(part, target)
    return target


def record_path(name: str, cache: str | Path | None = None) -> Path:
    """Where the SHA-256 record of a named download lives: ``<cache>/<name>.sha256.json``."""
    root = Path(cache) if cache is not None else cache_dir()
    return root / f"{name}.sha256.json"


def read_record(path: Path) -> dict[str, Any]:
    """The SHA-256 record at ``path`` (empty if there is none yet)."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DownloadError(f"{path}: unreadable checksum record ({e}); remove it to record afresh") from None
    if not isinstance(record, dict):
        raise DownloadError(f"{path}: not a checksum record; remove it to record afresh")
    return record


# A file modified less than this before it was hashed may be modified again without a new
# modification time (timestamps advance in coarse steps); its size and time are not trusted then.
_SETTLED_NS = 2 * 10**9


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _hash_converted(out: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """SHA-256 of each converted file, and the size and time it had when hashed (settled files only)."""
    # size and time taken before hashing: a change while the file is hashed shows at the next use
    stats = {f: _stat(out / f) for f in (WEIGHTS_NAME, CONFIG_NAME)}
    hashed_at = time.time_ns()
    digests = {f: sha256_file(out / f) for f in stats}
    return digests, {f: st for f, st in stats.items() if st["mtime_ns"] < hashed_at - _SETTLED_NS}


def _verify_converted(out: Path, record: dict[str, Any], record_file: Path, *, verify: bool = False) -> None:
    """Check the converted files against the record made when they were written (trust on first use).

    Files whose size and modification time equal those recorded when they were last hashed are not
    hashed again, unless ``verify``.
    """
    known, stats = record.get("converted"), record.get("stat") or {}
    if known and not verify and all(stats.get(f) == _stat(out / f) for f in (WEIGHTS_NAME, CONFIG_NAME)):
        return
    digests, now = _hash_converted(out)
    for f, digest in digests.items():
        if known and known.get(f) != digest:
            raise DownloadError(
                f"{out / f}: SHA-256 {digest} differs from {known.get(f)} recorded in {record_file} when it "
                f"was written; the cached file changed or is corrupt: remove {out} and run again"
            )
    if not known:
        log.warning("%s: no checksum record yet; recorded the SHA-256 of its files in %s", out, record_file)
    elif now == stats:
        return
    record.update(converted=digests, stat=now)
    try:
        write_json(record_file, record, overwrite=True)
    except OSError as e:  # a read-only cache: the files were checked; the next use hashes them again
        if not known:
            raise
        log.debug("%s: cannot update the checksum record: %s", record_file, e)


def recorded_sha256(file: str | Path) -> str | None:
    """The recorded SHA-256 of a cached name's ``model.safetensors``, while the file still has the size
    and modification time it had when hashed; None for any other file (the caller hashes it)."""
    file = Path(file)
    record_file = file.parent.parent / f"{file.parent.name}.sha256.json"
    if file.name != WEIGHTS_NAME or not record_file.is_file():
        return None
    try:
        record = read_record(record_file)
        settled = (record.get("stat") or {}).get(WEIGHTS_NAME) == _stat(file)
    except (DownloadError, OSError):
        return None
    return (record.get("converted") or {}).get(WEIGHTS_NAME) if settled else None


def _check_source(entry: WeightsEntry, raw: Path, record: dict[str, Any], record_file: Path) -> str:
    """SHA-256 of the downloaded (or hand-placed) official file, checked against what is known."""
    digest = sha256_file(raw)
    if entry.sha256 and digest != entry.sha256:
        raise DownloadError(
            f"{raw}: SHA-256 {digest} differs from the published {entry.sha256}; remove it and run again"
        )
    first = record.get("sha256")
    if first and digest != first:
        raise DownloadError(
            f"{raw}: SHA-256 {digest} differs from {first}, recorded in {record_file} when {entry.filename} "
            f"was first downloaded; the file is damaged or the official one changed. Remove {raw} and run "
            f"again, or, if you trust the new file, also remove {record_file}"
        )
    if not first and not entry.sha256:
        log.warning(
            "%s: SHA-256 %s (the official files have no published hash; recorded in %s and checked on every "
            "later use; compare it with a copy you trust)",
            entry.filename,
            digest,
            record_file,
        )
    return digest


def fetch(
    name: str,
    *,
    registry: MappingProxyType[str, WeightsEntry] | dict[str, WeightsEntry] = REGISTRY,
    cache: str | Path | None = None,
    progress: bool = True,
    keep_original: bool = False,
    verify: bool = False,
) -> Path:
    """Make sure the named weights are in the cache in our format and return their directory.

    The converted files are checked against the SHA-256 record made when they were written, on every
    call: hashed again when their size or modification time differs from the record's, or always with
    ``verify``; a downloaded file against the one recorded on its first download (see the module
    docstring).
    """
    if name not in registry:
        raise DownloadError(f"unknown weights name {name!r}; known names: {', '.join(sorted(registry))}")
    from .models.checkpoint import convert_official

    entry = registry[name]
    if entry.unavailable:
        raise DownloadError(f"{name} is not available: {entry.unavailable}")
    root = Path(cache) if cache is not None else cache_dir()
    out = cached_path(name, root)
    record_file = record_path(name, root)
    record = read_record(record_file)
    if is_cached(name, root):
        _verify_converted(out, record, record_file, verify=verify)
        return out
    raw = root / "downloads" / entry.filename
    if not raw.is_file():
        log.info("downloading %s (%s)", name, entry.description)
        download(entry, raw, progress=progress)
    digest = _check_source(entry, raw, record, record_file)
    log.info("converting %s to %s", raw, out)
    convert_official(raw, out, overwrite=True, **entry.overrides)  # appears whole or not at all
    converted, stats = _hash_converted(out)
    record.update(
        name=name,
        file=entry.filename,
        url=entry.url,
        sha256=digest,
        bytes=raw.stat().st_size,
        converted=converted,
        stat=stats,
    )
    write_json(record_file, record, overwrite=True)
    if not keep_original:
        raw.unlink()
    return out


fetch = _one_fetch_at_a_time(fetch)
