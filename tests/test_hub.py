"""Named weights: download from a local HTTP server (127.0.0.1), resume, checksum, cache, offline errors."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest
import torch

import langseg
from langseg.hub import DownloadError, WeightsEntry, fetch
from langseg.models.checkpoint import langseg_to_official


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from ``server.files`` with Range support; records the requests it saw."""

    def do_GET(self):  # noqa: N802 (http.server API)
        data = self.server.files.get(self.path)
        self.server.log.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        limit = self.server.cut_after
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if limit is not None:
            self.server.cut_after = None
            self.wfile.write(body[:limit])  # then drop the connection: an interrupted download
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.log, httpd.cut_after = {}, [], None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def official_bytes(tiny_model, tmp_path_factory) -> bytes:
    """A synthesized official-layout checkpoint (tiny network) as bytes."""
    path = tmp_path_factory.mktemp("srv") / "tiny_official.ckpt"
    torch.save(
        {"epoch": 1, "global_step": 1, "state_dict": langseg_to_official(tiny_model.state_dict())}, path
    )
    return path.read_bytes()


def _entry(server, data: bytes | None, sha256: str | None = "auto") -> dict[str, WeightsEntry]:
    if data is not None:
        server.files["/tiny.ckpt"] = data
    port = server.server_address[1]
    digest = hashlib.sha256(data).hexdigest() if (sha256 == "auto" and data is not None) else sha256
    entry = WeightsEntry(
        "tiny-test",
        "tiny.ckpt",
        f"http://127.0.0.1:{port}/tiny.ckpt",
        "https://example.invalid/page",
        "test weights",
        sha256=digest,
        overrides={"labels": ("cat", "dog")},
    )
    return {entry.name: entry}


def test_download_convert_and_cache(server, official_bytes, tmp_path, tiny_model):
    registry = _entry(server, official_bytes)
    out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (tmp_path / "downloads" / "tiny.ckpt").exists()  # original removed after conversion
    model = langseg.load_model(out)
    assert model.config.labels == ("cat", "dog")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, ["a", "b"]), tiny_model(x, ["a", "b"]))
    requests = len(server.log)
    again = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert again == out and len(server.log) == requests  # cached: nothing downloaded again


def test_interrupted_download_resumes(server, official_bytes, tmp_path):
    registry = _entry(server, official_bytes)
    server.cut_after = len(official_bytes) // 3
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    part = tmp_path / "downloads" / "tiny.ckpt.part"
    assert part.is_file() and 0 < part.stat().st_size < len(official_bytes)
    out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert (out / "model.safetensors").is_file()
    assert server.log[-1][1] == f"bytes={len(official_bytes) // 3}-"  # the second request asked for the rest


def test_concurrent_first_fetches_download_once(server, official_bytes, tmp_path, monkeypatch):
    """Two first fetches at once (two ranks, two array tasks): one download, both get the weights."""
    registry = _entry(server, official_bytes)
    serve = _Handler.do_GET

    def slow_get(handler):  # keep the first download busy while the second fetch starts
        time.sleep(0.5)
        serve(handler)

    monkeypatch.setattr(_Handler, "do_GET", slow_get)
    start = threading.Barrier(2)
    results: list[Path | BaseException] = []

    def one() -> None:
        start.wait()
        try:
            results.append(fetch("tiny-test", registry=registry, cache=tmp_path, progress=False))
        except BaseException as e:  # noqa: BLE001 (reported by the assertion below)
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [tmp_path / "tiny-test"] * 2
    assert [path for path, _ in server.log] == ["/tiny.ckpt"]  # one request in all
    assert langseg.load_model(results[0]).config.labels == ("cat", "dog")


def test_checksum_mismatch_is_refused(server, official_bytes, tmp_path):
    registry = _entry(server, official_bytes, sha256="0" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert not (tmp_path / "tiny-test").exists()
    assert not (tmp_path / "downloads" / "tiny.ckpt.part").exists()


def test_offline_fails_fast_with_instructions(tmp_path):
    entry = WeightsEntry(
        "tiny-test",
        "tiny.ckpt",
        "http://127.0.0.1:9/tiny.ckpt",
        "https://example.invalid/page",
        "test weights",
    )
    with pytest.raises(DownloadError) as e:
        fetch("tiny-test", registry={"tiny-test": entry}, cache=tmp_path, progress=False)
    msg = str(e.value)
    assert (
        "tiny.ckpt" in msg and str(tmp_path / "downloads" / "tiny.ckpt") in msg and "example.invalid" in msg
    )


def test_manually_placed_file_is_used(server, official_bytes, tmp_path):
    registry = _entry(server, None, sha256=hashlib.sha256(official_bytes).hexdigest())
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "tiny.ckpt").write_bytes(official_bytes)
    out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert (out / "model.safetensors").is_file() and server.log == []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LANGSEG_CACHE", str(tmp_path / "c"))
    assert langseg.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LANGSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert langseg.cache_dir() == Path(tmp_path / "x" / "langseg")


def test_registry_covers_the_official_checkpoints():
    names = set(langseg.REGISTRY)
    assert {"lseg-demo-vitl16", "lseg-fss-vitl16", "lseg-fss-rn101"} <= names
    assert {f"lseg-pascal-fold{f}-rn101" for f in range(4)} <= names
    assert {f"lseg-coco-fold{f}-rn101" for f in range(4)} <= names
    assert langseg.REGISTRY["lseg-demo-vitl16"].filename == "demo_e200.ckpt"
