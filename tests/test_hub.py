"""Named weights: download from a local HTTP server (127.0.0.1), resume, checksums (published and trust on
first use), cache, offline errors, unavailable entries."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

import langseg
from langseg.cli import main
from langseg.hub import REGISTRY, DownloadError, WeightsEntry, fetch, record_path
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


def _entry(server, data: bytes | None, sha256: str | None = None) -> dict[str, WeightsEntry]:
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


def test_first_download_records_its_sha256_and_later_uses_are_checked(
    server, official_bytes, tmp_path, caplog
):
    registry = _entry(server, official_bytes)  # like the official entries: no published hash
    digest = hashlib.sha256(official_bytes).hexdigest()
    with caplog.at_level(logging.WARNING, logger="langseg.hub"):
        out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert digest in caplog.text  # shown to the user, who can compare it with a copy they trust
    record = json.loads(record_path("tiny-test", tmp_path).read_text())
    assert record_path("tiny-test", tmp_path).parent == out.parent  # beside the cache entry
    assert record["sha256"] == digest and record["bytes"] == len(official_bytes)
    weights = out / "model.safetensors"
    assert record["converted"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert fetch("tiny-test", registry=registry, cache=tmp_path, progress=False) == out  # unchanged: fine
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the cached weights
    weights.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="model.safetensors: SHA-256 .* differs .* recorded"):
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)


def test_a_cached_entry_is_hashed_again_only_when_its_size_or_mtime_changed(
    server, official_bytes, tmp_path, monkeypatch
):
    import langseg.hub as hub

    registry = _entry(server, official_bytes)
    out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    record_file = record_path("tiny-test", tmp_path)
    assert json.loads(record_file.read_text())["stat"] == {}  # just written: its mtime is not trusted yet
    weights, config = out / "model.safetensors", out / "config.json"
    settled = time.time_ns() - 10 * 10**9  # as if converted 10 s ago
    for f in (weights, config):
        os.utime(f, ns=(settled, settled))
    fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)  # hashed, size and time recorded
    stat = json.loads(record_file.read_text())["stat"]
    assert stat["model.safetensors"] == {"size": weights.stat().st_size, "mtime_ns": settled}

    hashed = []
    real_sha256 = hub.sha256_file
    monkeypatch.setattr(hub, "sha256_file", lambda path: hashed.append(Path(path).name) or real_sha256(path))
    assert fetch("tiny-test", registry=registry, cache=tmp_path, progress=False) == out
    assert hashed == []  # unchanged: not read again
    fetch("tiny-test", registry=registry, cache=tmp_path, progress=False, verify=True)
    assert sorted(hashed) == ["config.json", "model.safetensors"]  # verify=True always hashes

    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[-1] ^= 1
    weights.write_bytes(bytes(flipped))  # same size, new mtime
    os.utime(weights, ns=(settled + 10**9, settled + 10**9))
    hashed.clear()
    with pytest.raises(DownloadError, match="model.safetensors: SHA-256 .* differs .* recorded") as e:
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert "model.safetensors" in hashed and "\n" not in str(e.value)

    weights.write_bytes(original + b"\0")  # another size, the recorded mtime
    os.utime(weights, ns=(settled, settled))
    hashed.clear()
    with pytest.raises(DownloadError, match="model.safetensors: SHA-256 .* differs .* recorded"):
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert "model.safetensors" in hashed

    weights.write_bytes(original)  # the recorded content again, touched: hashed once, then trusted
    os.utime(weights, ns=(settled - 10**9, settled - 10**9))
    fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    hashed.clear()
    fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert hashed == []


def test_a_changed_download_is_refused_against_the_first_use_record(server, official_bytes, tmp_path):
    registry = _entry(server, official_bytes)
    out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    first = json.loads(record_path("tiny-test", tmp_path).read_text())["sha256"]
    shutil.rmtree(out)  # the cache entry is gone; the record stays
    server.files["/tiny.ckpt"] = official_bytes + b"changed upstream"
    with pytest.raises(DownloadError, match=f"differs from {first}, recorded"):
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)
    assert not out.exists()


def test_a_kept_original_is_checked_on_later_use(server, official_bytes, tmp_path):
    registry = _entry(server, official_bytes)
    out = fetch("tiny-test", registry=registry, cache=tmp_path, progress=False, keep_original=True)
    raw = tmp_path / "downloads" / "tiny.ckpt"
    assert raw.read_bytes() == official_bytes
    shutil.rmtree(out)
    raw.write_bytes(official_bytes[:-1] + bytes([official_bytes[-1] ^ 1]))
    with pytest.raises(DownloadError, match="tiny.ckpt: SHA-256 .* recorded"):
        fetch("tiny-test", registry=registry, cache=tmp_path, progress=False)


def test_registry_publishes_no_hash_and_says_so():
    assert all(e.sha256 is None for e in REGISTRY.values())  # the maintainers publish none
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "no published" in readme and "known SHA-256 is checked" not in readme


def test_coco_fold1_is_unavailable_with_the_reason_and_the_way_around(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LANGSEG_CACHE", str(tmp_path))
    entry = REGISTRY["lseg-coco-fold1-rn101"]
    assert entry.unavailable and entry.url == REGISTRY["lseg-coco-fold2-rn101"].url  # why: the same file
    with pytest.raises(DownloadError) as e:
        fetch("lseg-coco-fold1-rn101", progress=False)
    msg = str(e.value)
    assert "issue #42" in msg and "fold-2" in msg and "path" in msg
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "lseg-coco-fold1-rn101").exists()
    assert main(["weights", "download", "lseg-coco-fold1-rn101"]) == 2
    err = capsys.readouterr().err
    assert "issue #42" in err and "Traceback" not in err
    assert main(["weights", "list"]) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if "lseg-coco-fold1-rn101" in ln]
    assert "n/a" in listed[0]


def test_a_run_record_takes_a_cached_names_hash_from_its_record(
    server, official_bytes, tmp_path, monkeypatch
):
    import langseg.provenance as provenance

    out = fetch("tiny-test", registry=_entry(server, official_bytes), cache=tmp_path, progress=False)
    weights = out / "model.safetensors"
    truth = provenance.sha256_file(weights)
    hashed = []
    real_sha256 = provenance.sha256_file
    monkeypatch.setattr(provenance, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    assert provenance.weights_record("tiny-test", out)["sha256"] == truth
    assert hashed == [weights]  # just written: no size and time recorded yet, so it is read
    settled = time.time_ns() - 10 * 10**9
    os.utime(weights, ns=(settled, settled))
    os.utime(out / "config.json", ns=(settled, settled))
    fetch(
        "tiny-test", registry=_entry(server, official_bytes), cache=tmp_path, progress=False
    )  # records them
    hashed.clear()
    assert provenance.weights_record("tiny-test", out)["sha256"] == truth
    assert hashed == []  # the record's hash, not a second read of the weights
    weights.write_bytes(weights.read_bytes() + b"\0")  # changed: read again, its own hash
    assert provenance.weights_record("tiny-test", out)["sha256"] == real_sha256(weights) != truth
    assert hashed == [weights]
