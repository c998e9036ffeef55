"""Named official weights: where they live, downloading once into a cache, converting to our format.

The cache directory is ``$LANGSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/langseg`` (``~/.cache/langseg``).
A named model is downloaded to ``<cache>/downloads/<file>`` (resumable ``.part`` file, progress bar,
SHA-256 checked when known), converted to ``<cache>/<name>/`` (``model.safetensors`` + ``config.json``)
and the original is removed unless ``keep_original``.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from .errors import LangsegError
from .models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, convert_official
from .provenance import sha256_file

log = logging.getLogger(__name__)

_DRIVE = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
_DRIVE_PAGE = "https://drive.google.com/file/d/{id}/view"


class DownloadError(LangsegError, RuntimeError):
    """A named checkpoint could not be fetched; the message says how to get it by hand."""


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable official checkpoint."""

    name: str  # our name, used with load_model(name)
    filename: str  # the official file name
    url: str  # direct download location
    page: str  # where a person downloads it by hand
    description: str
    sha256: str | None = None  # checked after download when known
    overrides: dict[str, Any] = field(default_factory=dict)  # config fields the weights cannot tell
    note: str = ""


def _drive(name: str, filename: str, file_id: str, description: str, **kw: Any) -> WeightsEntry:
    return WeightsEntry(
        name, filename, _DRIVE.format(id=file_id), _DRIVE_PAGE.format(id=file_id), description, **kw
    )


_ZS_VIT = {"name": "lseg_zs_vitl16_384", "activation": "relu", "labels": ("others",)}
_ZS_RN = {"name": "lseg_zs_rn101", "labels": ("others",)}

REGISTRY: MappingProxyType[str, WeightsEntry] = MappingProxyType(
    {
        e.name: e
        for e in [
            _drive(
                "lseg-demo-vitl16",
                "demo_e200.ckpt",
                "1ayk6NXURI_vIPlym16f_RG3ffxBWHxvb",
                "demo model: ViT-L/16 image encoder, CLIP ViT-B/32 text encoder (any labels)",
                overrides={"labels": ("dog", "grass", "other")},
            ),
            _drive(
                "lseg-fss-vitl16",
                "fss_l16.ckpt",
                "1-wRkHVQ4UxVYiVPNVXFU4Qwo8qliN-xg",
                "zero-shot FSS-1000, ViT-L/16 (87.8 mIoU)",
                overrides=_ZS_VIT,
            ),
            _drive(
                "lseg-fss-rn101",
                "fss_rn101.ckpt",
                "1tIv239sRibgTF73m09Z3fmDYkTngQhwp",
                "zero-shot FSS-1000, ResNet-101 (84.7 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-pascal-fold0-rn101",
                "pascal_fold0.ckpt",
                "1gKXh_VORfFBhGVfwaDD-FzLn3hqiIAoR",
                "zero-shot PASCAL-5i fold 0, ResNet-101 (52.8 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-pascal-fold1-rn101",
                "pascal_fold1.ckpt",
                "16GrCGJi5hfjMZ0lzd-SHtLvbRpbxa8Sh",
                "zero-shot PASCAL-5i fold 1, ResNet-101 (53.8 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-pascal-fold2-rn101",
                "pascal_fold2.ckpt",
                "1hJXCus0QzhphZ3R96fe8WHVYiYfpkF-G",
                "zero-shot PASCAL-5i fold 2, ResNet-101 (44.4 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-pascal-fold3-rn101",
                "pascal_fold3.ckpt",
                "1lGzhGxx9FECPg52LAVW_4GZQIMx25ele",
                "zero-shot PASCAL-5i fold 3, ResNet-101 (38.5 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-coco-fold0-rn101",
                "coco_fold0.ckpt",
                "1Q261gloDZQeqVA6pDqWVVzW8I6k0TTHu",
                "zero-shot COCO-20i fold 0, ResNet-101 (22.1 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-coco-fold1-rn101",
                "coco_fold1.ckpt",
                "1q7iqEUmPePqqUq0QDUlhHkajTAydvVYn",
                "zero-shot COCO-20i fold 1, ResNet-101 (25.1 mIoU)",
                overrides=_ZS_RN,
                note="the official link for fold 1 points at the fold-2 file (lang-seg issue #42)",
            ),
            _drive(
                "lseg-coco-fold2-rn101",
                "coco_fold2.ckpt",
                "1q7iqEUmPePqqUq0QDUlhHkajTAydvVYn",
                "zero-shot COCO-20i fold 2, ResNet-101 (24.9 mIoU)",
                overrides=_ZS_RN,
            ),
            _drive(
                "lseg-coco-fold3-rn101",
                "coco_fold3.ckpt",
                "1H6d6udhJ92eEMeRDF0E5NFJD2LDI1DBX",
                "zero-shot COCO-20i fold 3, ResNet-101 (21.5 mIoU)",
                overrides=_ZS_RN,
            ),
        ]
    }
)


def cache_dir() -> Path:
    """``$LANGSEG_CACHE``, else ``$XDG_CACHE_HOME/langseg``, else ``~/.cache/langseg``."""
    if os.environ.get("LANGSEG_CACHE"):
        return Path(os.environ["LANGSEG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "langseg"


def _one_fetch_at_a_time(fetch_fn):
    """Run ``fetch`` for one cache entry in one process at a time (a lock file beside the entry).

    Ranks of one job, SLURM array tasks and two shells that fetch the same name share the cache's
    ``.part`` file and conversion folder; the second waits for the first and then finds the entry
    ready. An entry already in the cache is returned without the lock (a read-only cache works).
    """

    @functools.wraps(fetch_fn)
    def locked(name: str, *args: Any, cache: str | Path | None = None, **kwargs: Any) -> Path:
        root = Path(cache) if cache is not None else cache_dir()
        out = root / name
        ready = (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file()
        if ready or name not in kwargs.get("registry", REGISTRY):  # unknown names fail in fetch
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


def download(entry: WeightsEntry, target: Path, *, progress: bool = True, timeout: float = 15.0) -> Path:
    """Download ``entry`` to ``target``, resuming a partial ``.part`` file; verify the checksum."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(entry.url, headers={"User-Agent": "langseg"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise DownloadError(
                f"{entry.url}: HTTP {e.code} {e.reason}. {_manual_hint(entry, target)}"
            ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {entry.url} ({reason}); are you offline? {_manual_hint(entry, target)}"
        ) from None
    if response is not None:
        with response:
            if "text/html" in response.headers.get("Content-Type", ""):
                raise DownloadError(
                    f"{entry.url} answered with a web page, not the file. {_manual_hint(entry, target)}"
                )
            resumed = have and response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with (
                open(part, "ab" if resumed else "wb") as f,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=entry.filename,
                    disable=not progress,
                ) as bar,
            ):
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


def fetch(
    name: str,
    *,
    registry: MappingProxyType[str, WeightsEntry] | dict[str, WeightsEntry] = REGISTRY,
    cache: str | Path | None = None,
    progress: bool = True,
    keep_original: bool = False,
) -> Path:
    """Make sure the named weights are in the cache in our format and return their directory."""
    if name not in registry:
        raise DownloadError(f"unknown weights name {name!r}; known names: {', '.join(sorted(registry))}")
    entry = registry[name]
    root = Path(cache) if cache is not None else cache_dir()
    out = root / name
    if (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file():
        return out
    raw = root / "downloads" / entry.filename
    if raw.is_file() and entry.sha256 and sha256_file(raw) != entry.sha256:
        raise DownloadError(
            f"{raw}: checksum mismatch with the known {entry.filename}; remove it and run again"
        )
    if not raw.is_file():
        log.info("downloading %s (%s)", name, entry.description)
        download(entry, raw, progress=progress)
    log.info("converting %s to %s", raw, out)
    convert_official(raw, out, overwrite=True, **entry.overrides)  # appears whole or not at all
    if not keep_original:
        raw.unlink()
    return out


fetch = _one_fetch_at_a_time(fetch)
