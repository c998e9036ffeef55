"""Hugging Face Hub names, downloads and uploads, offline, against a local Hub on 127.0.0.1.

``FakeHub`` answers the endpoints ``huggingface_hub`` calls (HEAD/GET ``/{repo}/resolve/{rev}/{file}``
with ``X-Repo-Commit`` and ``ETag``, ``X-Error-Code`` errors, ``/api/repos/create``,
``/api/validate-yaml``, ``/api/models/{repo}/preupload|commit|branch/{rev}``) from files the tests make.
In-process tests point ``huggingface_hub.constants`` at it (they are read from ``HF_ENDPOINT`` /
``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE`` once, when the library is imported); one subprocess test sets the
environment variables themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from conftest import SUBPROCESS_ENV

import langseg
from langseg.cli import main
from langseg.files import OutputExistsError
from langseg.hf_hub import HubError, parse_hub_name

TOKEN = "hf_test_token"


@dataclass
class Repo:
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files


class FakeHub:
    """The Hub endpoints ``huggingface_hub`` uses, over plain HTTP on an ephemeral port."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---------------------------------------------------------------- state
    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", private=False) -> str:
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(private=private))
            parent = dict(repo.commits.get(repo.refs.get(branch, ""), {}))
            parent.update(files)
            digest = hashlib.sha1(repr((len(repo.commits), sorted(parent.items()))).encode()).hexdigest()
            repo.commits[digest] = parent
            repo.refs[branch] = digest
            return digest

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs.get(revision, revision)]

    def requests(self, method: str, fragment: str = "") -> list[tuple[str, str, str | None]]:
        return [r for r in self.log if r[0] == method and fragment in r[1]]


def _handler(hub: FakeHub) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head=False) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, code: int, obj, headers: dict | None = None) -> None:
            self._send(
                code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
            )

        def _error(self, code: int, error_code: str, message: str, head=False, **headers) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(code, body, {"X-Error-Code": error_code, "X-Error-Message": message, **headers}, head)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {TOKEN}"

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _record(self) -> str:
            path = urlsplit(self.path).path
            hub.log.append((self.command, path, self.headers.get("Authorization")))
            return path

        # -------------------------------------------------------- downloads
        def do_HEAD(self) -> None:
            self._resolve(head=True)

        def do_GET(self) -> None:
            self._resolve(head=False)

        def _resolve(self, head: bool) -> None:
            parts = self._record().strip("/").split("/", 4)
            if len(parts) != 5 or parts[2] != "resolve":
                return self._error(404, "EntryNotFound", "unknown endpoint", head)
            repo_id, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote(parts[4])
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                return self._error(401, "RepoNotFound", "Repository not found", head)
            commit = repo.refs.get(revision, revision if revision in repo.commits else None)
            if commit is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id", head)
            content = repo.commits[commit].get(filename)
            if content is None:
                return self._error(
                    404, "EntryNotFound", f"{filename} does not exist", head, **{"X-Repo-Commit": commit}
                )
            etag = '"' + hashlib.sha256(content).hexdigest() + '"'
            self._send(200, content, {"X-Repo-Commit": commit, "ETag": etag}, head)

        # ---------------------------------------------------------- uploads
        def do_POST(self) -> None:
            path = self._record()
            body = self._body()
            if not self._authorized():
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                if repo_id in hub.repos:  # the Hub names the existing repository in its 409 answer
                    return self._json(
                        409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    )
                hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})
                return self._json(200, {"url": f"{hub.url}/{repo_id}"})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            parts = path.strip("/").split("/")
            if len(parts) != 6 or parts[:2] != ["api", "models"]:
                return self._error(404, "EntryNotFound", "unknown endpoint")
            repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], unquote(parts[5])
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if action == "branch":
                if revision not in repo.refs:
                    repo.refs[revision] = repo.refs["main"]
                return self._json(200, {})
            if revision not in repo.refs:
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            if action == "preupload":
                files = json.loads(body)["files"]
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._json(200, {"files": answer})
            if action == "commit":
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                files = {
                    v["value"]["path"]: base64.b64decode(v["value"]["content"])
                    for v in lines
                    if v["key"] == "file"
                }
                if any(v["key"] != "file" for v in lines[1:]):
                    return self._error(400, "BadRequest", "only regular files are supported here")
                commit = hub.commit(repo_id, files, branch=revision)
                return self._json(
                    200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit}
                )
            return self._error(404, "EntryNotFound", "unknown endpoint")

    return Handler


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """A running FakeHub; huggingface_hub points at it, with an empty cache under tmp_path, online."""
    from huggingface_hub import constants

    fake = FakeHub()
    fake.thread.start()
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json")}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_parse_hub_name():
    assert parse_hub_name("hf-hub:org/name") == langseg.hf_hub.HubName("org/name", None)
    assert parse_hub_name("hf-hub:org/name@v1.0").revision == "v1.0"
    for bad in ("hf-hub:name", "hf-hub:org/name@", "hf-hub:a/b/c", "hf-hub:org/../x"):
        with pytest.raises(HubError):
            parse_hub_name(bad)


def test_download_cache_hit_and_revision(hub, tiny_weights, tiny_model, tmp_path):
    v1 = hub.commit("org/tiny", _folder_files(tiny_weights))
    other = langseg.create_model("lseg_tiny").eval()  # a second, different set of random weights
    langseg.save_pretrained(other, tmp_path / "other")
    hub.commit("org/tiny", _folder_files(tmp_path / "other"))  # main moves on

    model = langseg.load_model("hf-hub:org/tiny", progress=False)
    _same_weights(model, other)
    assert model.source == "hf-hub:org/tiny"
    gets = len(hub.requests("GET", "/resolve/"))
    assert gets == 2  # config.json and model.safetensors

    again = langseg.load_model("hf-hub:org/tiny", progress=False)  # cache hit: HEAD only, no GET
    _same_weights(again, other)
    assert len(hub.requests("GET", "/resolve/")) == gets

    pinned = langseg.load_model(f"hf-hub:org/tiny@{v1}", progress=False)  # revision pinning
    _same_weights(pinned, tiny_model)
    path = langseg.resolve_weights(f"hf-hub:org/tiny@{v1}", progress=False)
    assert path.name == v1 and path.parent.name == "snapshots"
    assert path.is_relative_to(os.environ["HF_HUB_CACHE"])


def test_missing_repo_revision_and_file(hub, tiny_weights, capsys):
    with pytest.raises(
        HubError, match=r"hf-hub:org/nope: no model repository org/nope on http://127\.0\.0\.1"
    ):
        langseg.load_model("hf-hub:org/nope", progress=False)
    hub.commit("org/tiny", _folder_files(tiny_weights))
    with pytest.raises(HubError, match="has no revision 'v9'"):
        langseg.load_model("hf-hub:org/tiny@v9", progress=False)
    hub.commit("org/half", {"config.json": (tiny_weights / "config.json").read_bytes()})
    with pytest.raises(HubError, match="the repository has no model.safetensors"):
        langseg.load_model("hf-hub:org/half", progress=False)
    # the CLI: one line, no traceback
    assert main(["weights", "path", "hf-hub:org/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("langseg: error: hf-hub:org/nope: no model repository") and "Traceback" not in err


def test_private_repo_needs_token(hub, tiny_weights, monkeypatch):
    hub.commit("org/secret", _folder_files(tiny_weights), private=True)
    with pytest.raises(HubError, match="or it is private: set HF_TOKEN"):
        langseg.resolve_weights("hf-hub:org/secret", progress=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert (langseg.resolve_weights("hf-hub:org/secret", progress=False) / "config.json").is_file()
    assert hub.requests("GET", "/org/secret/")[-1][2] == f"Bearer {TOKEN}"


def test_offline_with_and_without_cache(hub, tiny_weights, tiny_model, monkeypatch):
    hub.commit("org/tiny", _folder_files(tiny_weights))
    langseg.resolve_weights("hf-hub:org/tiny", progress=False)  # fills the cache
    _offline(monkeypatch)
    hub.log.clear()
    _same_weights(langseg.load_model("hf-hub:org/tiny", progress=False), tiny_model)
    assert hub.log == []  # offline: not a single request
    hub.commit("org/other", _folder_files(tiny_weights))
    with pytest.raises(
        HubError, match=r"not in the Hugging Face cache .* offline mode is on \(HF_HUB_OFFLINE=1\)"
    ):
        langseg.load_model("hf-hub:org/other", progress=False)
    assert hub.log == []


def test_push_model_and_run(hub, tiny_model, tiny_weights, tmp_path, monkeypatch, capsys):
    with pytest.raises(HubError, match="upload failed"):  # no token
        tiny_model.push_to_hub("me/tiny")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    url = tiny_model.push_to_hub("me/tiny", commit_message="first")
    files = hub.files("me/tiny")
    assert url.endswith(hub.repos["me/tiny"].refs["main"])
    assert {"model.safetensors", "config.json", "README.md"} <= files.keys()
    card = files["README.md"].decode()
    assert card.startswith("---\nlicense: mit\nlibrary_name: langseg\n")
    assert 'langseg.load_model("hf-hub:me/tiny"' in card and "variant: `lseg_tiny`" in card
    _same_weights(langseg.load_model("hf-hub:me/tiny", progress=False), tiny_model)  # round trip

    # a training run: best/ with training metrics, the run's config.yaml, an evaluation record
    run = tmp_path / "run"
    langseg.save_pretrained(
        tiny_model,
        run / "best",
        extra={"train": {"epoch": 3, "global_step": 120, "metrics": {"val/miou": 0.5}}},
    )
    (run / "config.yaml").write_text("model:\n  name: lseg_tiny\noptim:\n  lr: 0.0004\n")
    record = tmp_path / "eval.json"
    record.write_text(
        json.dumps({"task": "fixed-label", "dataset": {"name": "toy", "split": "val"}, "mIoU": 0.61})
    )
    code = main(["weights", "push", str(run), "me/tiny", "--revision", "v2", "--eval-record", str(record)])
    assert code == 0, capsys.readouterr().err
    assert "/me/tiny/commit/" in capsys.readouterr().out
    card = hub.files("me/tiny", "v2")["README.md"].decode()
    assert "lr: 0.0004" in card and "| mIoU | 0.6100 |" in card and "val/miou: 0.5000" in card
    assert "step 120" in card
    assert hub.files("me/tiny", "main")["README.md"].decode() != card  # main untouched
    # bad sources are refused with the path named
    assert main(["weights", "push", str(tmp_path / "missing"), "me/tiny"]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert main(["weights", "push", str(run), "not-a-repo-id"]) == 2
    assert "not a Hub repository id" in capsys.readouterr().err


def test_save_pretrained_writes_the_card(tiny_model, tmp_path):
    out = langseg.save_pretrained(
        tiny_model, tmp_path / "m", extra={"source": "demo_e200.ckpt", "source_sha256": "ab" * 32}
    )
    card = (out / "README.md").read_text()
    langseg.save_pretrained(tiny_model, out, overwrite=True)  # its own card is replaced ...
    (out / "README.md").write_text("# my notes\n")
    with pytest.raises(OutputExistsError, match="README.md"):  # ... a user's README is not
        langseg.save_pretrained(tiny_model, out, overwrite=True)
    assert (out / "README.md").read_text() == "# my notes\n"
    assert "- source: demo_e200.ckpt" in card and f"source SHA-256: `{'ab' * 32}`" in card
    assert "mean (0.5, 0.5, 0.5)" in card and "multiples of 32" in card
    assert "default labels: other" in card


def test_hf_endpoint_environment_in_a_subprocess(hub, tiny_weights):
    """The real configuration path: HF_ENDPOINT / HF_HUB_CACHE read by huggingface_hub at import."""
    hub.commit("org/tiny", _folder_files(tiny_weights))
    env = {
        **SUBPROCESS_ENV,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"],
        "HF_HUB_OFFLINE": "0",
    }
    code = "import langseg, sys; print(langseg.resolve_weights(sys.argv[1], progress=False))"
    out = subprocess.run(
        [sys.executable, "-c", code, "hf-hub:org/tiny"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert (folder / "model.safetensors").read_bytes() == (tiny_weights / "model.safetensors").read_bytes()
