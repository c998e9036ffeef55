"""Models on the Hugging Face Hub: ``hf-hub:ORG/NAME[@REVISION]`` names, download and upload.

Everything goes through ``huggingface_hub``: its cache (``$HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``), revision pinning, offline mode (``HF_HUB_OFFLINE=1``), endpoint
(``HF_ENDPOINT``) and token handling (``HF_TOKEN`` or ``hf auth login``). A repository holds our format:
``model.safetensors`` + ``config.json`` (+ the model card ``README.md``).

>>> model = langseg.load_model("hf-hub:someone/lseg-ade20k@v1.0")      # branch, tag or commit
>>> model.push_to_hub("someone/lseg-ade20k-finetuned")                   # or: langseg weights push
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LangsegError
from .models.checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, read_config

if TYPE_CHECKING:
    from .models import LSeg

log = logging.getLogger(__name__)

PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
RUN_CONFIG = "config.yaml"  # the resolved training config in a run directory


class HubError(LangsegError, RuntimeError):
    """A Hub repository that cannot be read or written; the message says why and what to do."""


@dataclass(frozen=True)
class HubName:
    """``hf-hub:ORG/NAME[@REVISION]`` split into its parts (``revision`` None means ``main``)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_name(name: str | Path) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse_hub_name(name: str) -> HubName:
    """``"hf-hub:org/name@rev"`` -> :class:`HubName`; a malformed name raises :class:`HubError`."""
    if not is_hub_name(name):
        raise HubError(f"{name}: not a Hub name (expected {PREFIX}ORG/NAME[@REVISION])")
    repo_id, _, revision = name[len(PREFIX) :].partition("@")
    check_repo_id(repo_id, name)
    if "@" in name[len(PREFIX) :] and not revision:
        raise HubError(f"{name}: empty revision after '@' (expected a branch, tag or commit)")
    return HubName(repo_id, revision or None)


def check_repo_id(repo_id: str, what: str | None = None) -> str:
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise HubError(f"{what or repo_id}: not a Hub repository id (expected ORG/NAME)")
    return repo_id


# -------------------------------------------------------------------------------------- download
def download(name: str | HubName, *, progress: bool = True, token: str | bool | None = None) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` of a Hub model into the Hugging Face cache.

    Returns the snapshot folder of one commit (both files from the same commit, even if the branch
    moves in between). A cached copy is used without a download; offline (``HF_HUB_OFFLINE=1``) the
    cached copy of the revision is used or a :class:`HubError` says that none exists.
    """
    from huggingface_hub import hf_hub_download

    from . import __version__

    hub = parse_hub_name(name) if isinstance(name, str) else name
    kwargs: dict[str, Any] = {
        "repo_id": hub.repo_id,
        "token": token,
        "library_name": "langseg",
        "library_version": __version__,
    }
    if not progress:
        kwargs["tqdm_class"] = _silent_bar_class()
    with _hub_errors(hub):
        config = Path(hf_hub_download(filename=CONFIG_NAME, revision=hub.revision, **kwargs))
        commit = config.parent.name  # the cache keeps one snapshot folder per commit
        weights = Path(hf_hub_download(filename=WEIGHTS_NAME, revision=commit, **kwargs))
    if weights.parent != config.parent:  # a cache layout we do not know: keep the files together anyway
        raise HubError(f"{hub}: {WEIGHTS_NAME} and {CONFIG_NAME} landed in different folders of the cache")
    log.info("%s -> %s (commit %s)", hub, config.parent, commit)
    return config.parent


def _silent_bar_class() -> type:
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


class _hub_errors:
    """Turns ``huggingface_hub`` errors into one-line :class:`HubError` messages."""

    def __init__(self, hub: HubName | str, action: str = "download") -> None:
        self.hub, self.action = hub, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, LangsegError) or not isinstance(exc, Exception):
            return False
        from huggingface_hub import constants
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        hub = self.hub
        repo = hub.repo_id if isinstance(hub, HubName) else hub
        where = constants.ENDPOINT
        if isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled):
            why = (
                "offline mode is on (HF_HUB_OFFLINE=1)"
                if constants.is_offline_mode()
                else f"{where} cannot be reached"
            )
            msg = (
                f"{hub}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}; "
                "run once with network access, or pass a local folder instead"
            )
        elif isinstance(exc, GatedRepoError):
            msg = f"{hub}: the repository is gated; accept its terms on {where}/{repo} and set HF_TOKEN"
        elif isinstance(exc, RepositoryNotFoundError):
            msg = (
                f"{hub}: no model repository {repo} on {where} (or it is private: set HF_TOKEN "
                "or run `hf auth login`)"
            )
        elif isinstance(exc, RevisionNotFoundError):
            rev = hub.revision if isinstance(hub, HubName) else None
            msg = f"{hub}: {repo} has no revision {rev!r} (a branch, tag or commit)"
        elif isinstance(exc, EntryNotFoundError):
            msg = (
                f"{hub}: the repository has no {_missing_file(exc)}; a langseg model holds "
                f"{WEIGHTS_NAME} + {CONFIG_NAME} (upload one with `langseg weights push`)"
            )
        elif isinstance(exc, HfHubHTTPError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            msg = f"{hub}: {self.action} failed: {first}"
        elif isinstance(exc, OSError):
            msg = f"{hub}: {self.action} failed: {exc}"
        else:
            return False
        raise HubError(msg) from None


def _missing_file(exc: BaseException) -> str:
    text = str(exc)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if name in text:
            return name
    return f"{WEIGHTS_NAME} or {CONFIG_NAME}"


# ---------------------------------------------------------------------------------------- upload
def weights_folder(path: str | Path) -> Path:
    """A saved model (``model.safetensors`` + ``config.json``) or a training run (its ``best/``, else
    its ``last/``) -> the folder holding the weights."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise HubError(f"{path}: no such folder (expected a saved model or a `langseg train` run)")
    for candidate in (path, path / "best", path / "last"):
        if (candidate / WEIGHTS_NAME).is_file() and (candidate / CONFIG_NAME).is_file():
            return candidate
    raise HubError(
        f"{path}: neither a saved model ({WEIGHTS_NAME} + {CONFIG_NAME}) nor a training run with best/ or last/"
    )


def _train_config(folder: Path, meta: Mapping[str, Any]) -> str | None:
    """The run's resolved training config, found beside ``best/``/``last/`` or at the recorded run."""
    train = meta.get("train")
    candidates = [folder.parent / RUN_CONFIG, folder / RUN_CONFIG]
    if isinstance(train, Mapping) and train.get("run"):
        candidates.append(Path(train["run"]) / RUN_CONFIG)
    for c in candidates:
        if c.is_file():
            return c.read_text()
    return None


def read_eval_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HubError(f"{path}: not a readable evaluation record: {e}") from None
    if not isinstance(record, dict):
        raise HubError(f"{path}: not a readable evaluation record (expected a JSON object)")
    return record


def push_to_hub(
    source: LSeg | str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    eval_record: str | Path | Mapping[str, Any] | None = None,
    license: str = "mit",
) -> str:
    """Upload a model with a generated model card to ``repo_id`` (created if missing); return the commit URL.

    ``source``: a network (saved to a temporary folder first), a folder of ours, or a training run
    (its ``best/``, else ``last/``; the run's ``config.yaml`` goes into the card). ``eval_record``: a
    JSON record of ``langseg eval`` whose metrics go into the card. ``revision``: the branch to commit
    to (created from ``main`` if missing). The token comes from ``token``, ``HF_TOKEN`` or the login.
    """
    from .models import LSeg, save_pretrained

    check_repo_id(repo_id)
    record = read_eval_record(eval_record) if isinstance(eval_record, str | Path) else eval_record
    if isinstance(source, LSeg):
        meta = getattr(source, "meta", {}) or {}
        extra = {k: v for k, v in meta.items() if k not in ("format", "model")}
        with tempfile.TemporaryDirectory(prefix="langseg-push-") as tmp:
            folder = save_pretrained(source, Path(tmp) / "model", extra=extra)
            return _upload(folder, repo_id, revision, private, token, commit_message, record, license)
    return _upload(weights_folder(source), repo_id, revision, private, token, commit_message, record, license)


def _upload(
    folder: Path,
    repo_id: str,
    revision: str | None,
    private: bool | None,
    token: str | bool | None,
    commit_message: str | None,
    record: Mapping[str, Any] | None,
    license: str,
) -> str:
    from huggingface_hub import CommitOperationAdd, HfApi

    from .model_card import model_card

    meta = read_config(folder / CONFIG_NAME)
    card = model_card(
        meta, repo_id=repo_id, train_config=_train_config(folder, meta), eval_record=record, license=license
    )
    operations = [
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode()),
    ]
    api = HfApi(token=token, library_name="langseg")
    with _hub_errors(repo_id, "upload"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {meta['model'].get('name', 'LSeg')} with langseg",
            revision=revision,
        )
    log.info("uploaded %s to %s", folder, info.commit_url)
    return str(info.commit_url)
