"""The web demo's HTTP API and event handlers, in-process, on the tiny model."""

from __future__ import annotations

import base64
import io
import itertools
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import LABEL_WORDS
from fastapi.testclient import TestClient
from PIL import Image

from langseg import LSegPredictor, load_model
from langseg.app import AppConfig, BackendError, LocalBackend, create_app, serve_in_thread
from langseg.errors import LabelError
from langseg.inference import MultiScaleConfig

SMALL_MS = MultiScaleConfig(scales=(0.75, 1.0), base_size=64, crop_size=64, batch_size=4)


def scene(h: int = 70, w: int = 90, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: sky over grass with a noisy box, different per seed."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (120, 180, 250)
    img[h // 2 :] = (60, 160, 60)
    img[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = rng.integers(
        0, 256, (3 * h // 4 - h // 4, 2 * w // 3 - w // 3, 3)
    )
    return img


def split_labels(model, img: np.ndarray, shift: int = 0) -> str:
    """Three labels the random tiny model does not answer with one label everywhere on ``img``.

    Comparisons of masks mean little when every pixel gets the same label, and which words split an
    image depends on the random weights; so search (``shift`` rotates the word order).
    """
    predictor = LSegPredictor(model, max_side=1024)
    words = LABEL_WORDS[shift % len(LABEL_WORDS) :] + LABEL_WORDS[: shift % len(LABEL_WORDS)]
    for combo in itertools.combinations(words, 3):
        counts = np.bincount(predictor.predict(img, list(combo)).labels.ravel(), minlength=3)
        if np.sort(counts)[-2] >= 0.05 * img.shape[0] * img.shape[1]:
            return ", ".join(combo)
    pytest.fail("no label triple splits the test image; the tiny model's outputs are constant")


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def httpx_multipart(image: bytes) -> tuple[bytes, str]:
    """A multipart body with one image field, and its content type."""
    import httpx

    request = httpx.Request("POST", "http://x/", files={"image": ("n.png", image, "image/png")})
    return request.read(), request.headers["content-type"]


def decode_mask(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as img:
        assert img.mode == "P"
        return np.asarray(img).astype(np.int64)


@pytest.fixture(scope="module")
def model(tiny_weights):
    return load_model(tiny_weights, device="cpu")


def make_client(model, **cfg) -> tuple[TestClient, LocalBackend]:
    config = AppConfig(weights="tiny", device="cpu", multi_scale=SMALL_MS, **cfg)
    backend = LocalBackend(model, config)
    return TestClient(create_app(config, backend, ui=False)), backend


@pytest.fixture(scope="module")
def client(model):
    return make_client(model)[0]


def post(client, data: bytes, labels: str | None = "cat, grass, sky", filename: str = "scene.png", **fields):
    form = dict(fields)
    if labels is not None:
        form["labels"] = labels
    return client.post("/api/segment", files={"image": (filename, data, "image/png")}, data=form)


def test_segment_returns_mask_labels_and_shares(client, model):
    img = scene()
    labels = split_labels(model, img)
    r = post(client, png(img), labels=labels)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == labels.split(", ")
    assert (body["width"], body["height"]) == (90, 70)
    mask = decode_mask(body["mask_png"])
    assert mask.shape == (70, 90) and mask.min() >= 0 and mask.max() < 3
    assert len(np.unique(mask)) >= 2  # a non-trivial answer, so the comparison below means something
    expected = LSegPredictor(model, max_side=1024).predict(img, labels).labels
    np.testing.assert_array_equal(mask, expected)
    counts = np.bincount(mask.ravel(), minlength=3) / mask.size
    assert sum(body["shares"].values()) == pytest.approx(1.0)
    for name, share in zip(body["labels"], counts):
        assert body["shares"][name] == pytest.approx(share)
    assert body["multi_scale"] is False and body["seconds"] >= 0


def test_segment_multi_scale_synonyms_and_default_labels(client, model):
    img = scene(seed=1)
    labels = split_labels(model, img)
    r = post(client, png(img), labels=labels, multi_scale="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["multi_scale"] is True
    got = decode_mask(body["mask_png"])
    np.testing.assert_array_equal(got, LSegPredictor(model, multi_scale=SMALL_MS).predict(img, labels).labels)
    assert (got != LSegPredictor(model).predict(img, labels).labels).any()  # not the single-scale answer
    r = post(client, png(img), labels="cat;kitten, dog ; puppy")
    assert r.json()["labels"] == ["cat", "dog"]
    expected = LSegPredictor(model).predict(img, [("cat", "kitten"), ("dog", "puppy")]).labels
    np.testing.assert_array_equal(decode_mask(r.json()["mask_png"]), expected)
    r = post(client, png(img), labels=None)  # no labels field: the checkpoint's own labels
    assert r.json()["labels"] == [n if isinstance(n, str) else n[0] for n in model.config.labels]


def test_features_endpoint(client, model):
    img = scene(64, 96, seed=2)
    r = client.post(
        "/api/features", files={"image": ("f.png", png(img), "image/png")}, data={"labels": "cat, sky"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["grid_width"], body["grid_height"], body["width"], body["height"]) == (48, 32, 96, 64)
    sim = body["similarity"]
    assert sim["shape"] == [2, 32, 48]
    got = np.frombuffer(base64.b64decode(sim["data"]), dtype="<f2").reshape(2, 32, 48).astype(np.float32)
    pred = LSegPredictor(model)
    text, _ = pred.text_features("cat, sky")
    feats = pred.features(img)  # (D, 32, 48)
    ref = (text[:, :, None, None] * feats[None]).sum(1).numpy()  # (K, h, w) dot products
    np.testing.assert_allclose(got, ref, atol=2e-3)
    with Image.open(io.BytesIO(base64.b64decode(body["pca_png"]))) as pca:
        assert pca.size == (48, 32) and pca.mode == "RGB"
    assert body["logit_scale"] == pytest.approx(1 / 0.07)


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"this is not an image", "not an image file"),
        (png(scene())[:200], "corrupt or truncated"),
        (b"", "empty"),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_bad_image_is_a_400_json_error(client, data, needle):
    r = post(client, data, filename="broken.png")
    assert r.status_code == 400
    body = r.json()
    assert needle in body["error"] and "broken.png" in body["error"]
    assert body["kind"] == "image"


def test_bad_requests(client):
    r = post(client, png(scene()), labels="cat,,dog")
    assert r.status_code == 422 and r.json()["kind"] == "labels" and "empty label" in r.json()["error"]
    r = post(client, png(scene()), labels="cat, Cat")
    assert r.status_code == 422 and "appears twice" in r.json()["error"]
    r = post(client, png(scene()), labels=",".join(f"l{i}" for i in range(65)))
    assert r.status_code == 422 and "at most 64" in r.json()["error"]
    r = post(client, png(scene()), multi_scale="maybe")
    assert r.status_code == 422 and "multi_scale" in r.json()["error"]
    r = client.post("/api/segment", data={"labels": "cat"}, files={"other": ("x", b"1")})
    assert r.status_code == 400 and "'image'" in r.json()["error"]
    body, ctype = httpx_multipart(png(scene()))
    r = client.post("/api/segment", content=iter([body[:500], body[500:]]), headers={"content-type": ctype})
    assert r.status_code == 200 and r.json()["width"] == 90  # a chunked body is fine within the limit
    r = client.post("/api/segment", json={"image": "x"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]


def test_oversized_uploads_are_refused(model):
    client, backend = make_client(model, max_upload_bytes=4096, max_pixels=100 * 100)
    noisy = png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert len(noisy) > 4096
    r = post(client, noisy)
    assert r.status_code == 413 and r.json()["kind"] == "too_large" and "4,096" in r.json()["error"]
    flat = png(np.full((120, 120, 3), 90, np.uint8))  # small file, too many pixels
    assert len(flat) < 4096
    r = post(client, flat, filename="big.png")
    assert r.status_code == 413 and "big.png" in r.json()["error"] and "pixels" in r.json()["error"]
    assert backend.peak_active == 1  # the pixel check ran inside a slot, the byte check before one
    body, ctype = httpx_multipart(
        png(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    )
    chunks = iter([body[i : i + 8192] for i in range(0, len(body), 8192)])  # no Content-Length header
    r = client.post("/api/segment", content=chunks, headers={"content-type": ctype})
    assert r.status_code == 413 and "the request is above the upload limit of 4,096" in r.json()["error"]
    r = post(client, png(np.full((100, 100, 3), 90, np.uint8)))  # exactly at the limit
    assert r.status_code == 200


def test_full_queue_answers_503(model):
    client, backend = make_client(model, queue_size=0)
    with backend.slot():  # the only slot is busy and nobody may wait
        r = post(client, png(scene()))
    assert r.status_code == 503 and r.json()["kind"] == "busy"
    assert post(client, png(scene())).status_code == 200


def test_parallel_requests_are_all_answered_within_the_concurrency_bound(model):
    config = AppConfig(weights="tiny", device="cpu", concurrency=2, queue_size=8)
    backend = LocalBackend(model, config)
    images = [scene(64 + 32 * (i % 2), 96, seed=10 + i) for i in range(6)]
    label_sets = [split_labels(model, img, shift=i) for i, img in enumerate(images)]
    reference = LSegPredictor(model, max_side=1024)
    expected = [reference.predict(img, labels).labels for img, labels in zip(images, label_sets)]
    app = create_app(config, backend, ui=False)
    import httpx

    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:

        def call(i: int):
            files = {"image": (f"img{i}.png", png(images[i]), "image/png")}
            return http.post("/api/segment", files=files, data={"labels": label_sets[i]})

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(call, range(6)))
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["labels"] == label_sets[i].split(", ")
        np.testing.assert_array_equal(decode_mask(body["mask_png"]), expected[i])
        assert len(np.unique(expected[i])) >= 2
    assert 1 <= backend.peak_active <= 2
    assert backend.pending == 0 and backend.active == 0


def test_remote_backend_matches_local_and_maps_errors(model):
    from langseg.app.remote import RemoteBackend

    config = AppConfig(weights="tiny", device="cpu")
    local = LocalBackend(model, config)
    img = scene(seed=3)
    labels = split_labels(model, img)
    with serve_in_thread(create_app(config, local, ui=False)) as url:
        remote = RemoteBackend(url, timeout=60)
        assert remote.info().default_labels == local.info().default_labels
        got = remote.segment(png(img), labels)
        want = local.segment(Image.fromarray(img), labels)
        np.testing.assert_array_equal(got.mask, want.mask)
        assert got.names == want.names and got.shares == pytest.approx(want.shares)
        feats = remote.features(png(img), "cat, sky")
        assert feats.similarity.shape == (2, 35, 45) and feats.pca.shape == (35, 45, 3)
        with pytest.raises(LabelError, match="appears twice"):
            remote.segment(png(img), "cat, cat")
        # a page-only frontend proxies the API to the backend
        front = TestClient(create_app(AppConfig(backend_url=url), remote, ui=False))
        r = post(front, png(img), labels=labels)
        assert r.status_code == 200 and r.json()["labels"] == labels.split(", ")
        np.testing.assert_array_equal(decode_mask(r.json()["mask_png"]), want.mask)
        assert post(front, b"junk", filename="junk.png").json()["kind"] == "image"
        remote.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(BackendError, match="cannot reach"):
        RemoteBackend(f"http://127.0.0.1:{port}", timeout=5).info()


# ------------------------------------------------------------ page handlers


@pytest.fixture(scope="module")
def ui(model):
    from langseg.app.ui import DemoUI

    config = AppConfig(weights="tiny", device="cpu")
    return DemoUI(LocalBackend(model, config), config)


def test_ui_segment_and_bad_image_message(ui, tmp_path):
    import gradio as gr

    path = tmp_path / "photo.png"
    path.write_bytes(png(scene()))
    labels = split_labels(ui.backend.model, scene())
    shown, legend, preview, mask_file, status = ui.segment(str(path), labels, False)
    assert shown.size[0] >= 90 and shown.size[1] >= 70  # overlay plus legend panel
    with Image.open(mask_file) as m:
        assert m.mode == "P" and m.size == (90, 70)
        mask = np.asarray(m)
    for name, share in zip(labels.split(", "), np.bincount(mask.ravel(), minlength=3) / mask.size):
        assert f'legend-name">{name}</span><span class="legend-share">{share:.1%}' in legend
    assert "90×70 px" in status and preview.size == (90, 70)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(gr.Error, match="bad.jpg"):
        ui.segment(str(bad), labels, False)
    with pytest.raises(gr.Error, match="appears twice"):
        ui.segment(str(path), "cat, cat", False)
    with pytest.raises(gr.Error, match="Upload an image"):
        ui.segment(None, labels, False)


def test_ui_features_click_and_heatmap(ui, tmp_path):
    import gradio as gr

    path = tmp_path / "photo.png"
    path.write_bytes(png(scene(64, 96)))
    pca, heat, _, state, _ = ui.features(str(path), "cat, grass")
    H, W = pca.shape[:2]
    assert heat.shape == (H, W, 3) and state["sim"].shape == (2, 32, 48)
    evt = gr.SelectData(None, {"index": [W - 1, 0], "value": None})
    _, probs, table = ui.select(state, evt)
    cosine = state["sim"][:, 0, 47].astype(np.float64)  # top-right grid cell
    z = np.exp(state["scale"] * cosine)
    assert probs["cat"] == pytest.approx(z[0] / z.sum(), rel=1e-5)
    assert sum(probs.values()) == pytest.approx(1.0) and "grid cell (47, 0)" in table
    assert "Image pixel (95, 0)" in table  # the click, in the 96x64 original
    assert ui.heat(state, "grass").shape == (H, W, 3)
    from langseg.app.ui import heat_map, label_probabilities

    prob = label_probabilities(state["sim"], state["scale"])  # (2, h, w), checked against numpy here
    z = np.exp(state["scale"] * state["sim"].astype(np.float64))
    np.testing.assert_allclose(prob, z / z.sum(0), rtol=1e-4)
    ramp = heat_map(np.array([[0.0, 1.0]]), (2, 1))
    assert ramp[0, 0].tolist() == [13, 8, 135] and ramp[0, 1].tolist() == [240, 249, 33]  # ends of the ramp


def test_legend_escapes_label_html():
    from langseg.app.ui import legend_html

    out = legend_html(["<img src=x onerror=alert(1)>", "b"], {"b": 1.0})
    assert "<img" not in out and "&lt;img" in out and "100.0%" in out


def test_cli_app_help_and_errors(capsys, tiny_weights):
    from langseg.cli import main

    with pytest.raises(SystemExit) as e:
        main(["app", "--help"])
    assert e.value.code == 0 and "/api/segment" in capsys.readouterr().out
    assert main(["app", "--weights", str(tiny_weights), "--concurrency", "0"]) == 2
    assert "concurrency must be at least 1" in capsys.readouterr().err
    assert main(["app", "--weights", str(tiny_weights), "--labels", "a,,b"]) == 2
    assert "empty label" in capsys.readouterr().err
    assert main(["app", "--examples", "no/such.jpg"]) == 2
    assert "example image not found: no/such.jpg" in capsys.readouterr().err
    assert main(["app", "--backend", "gpu-box:7860"]) == 2
    assert "must start with http://" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--weights", str(tiny_weights), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_info_and_json_error_shape(client):
    info = client.get("/api/info").json()
    assert info["max_upload_bytes"] == AppConfig().max_upload_bytes and info["device"] == "cpu"
    r = post(client, b"x", filename="a.png")
    assert set(json.loads(r.text)) == {"error", "kind"}


CONTROL_LABELS = [
    ("sky\nblue, other", "'sky\\nblue' contains a newline"),
    ("sky\tblue, other", "'sky\\tblue' contains a tab"),
    ("sky\x00blue, other", "'sky\\x00blue' contains control character U+0000"),
]


@pytest.mark.parametrize("route", ["/api/segment", "/api/features"])
def test_control_characters_in_labels_are_a_one_line_422(client, route):
    for labels, message in CONTROL_LABELS:
        files = {"image": ("scene.png", png(scene(20, 20)), "image/png")}
        r = client.post(route, files=files, data={"labels": labels})
        assert r.status_code == 422, (labels, r.text)
        body = r.json()
        assert body["kind"] == "labels" and message in body["error"], body
        assert "\n" not in body["error"] and "\x00" not in body["error"] and "Traceback" not in r.text


def test_control_characters_in_labels_are_a_one_line_message_in_the_page(ui, tmp_path):
    import gradio as gr

    path = tmp_path / "photo.png"
    path.write_bytes(png(scene(20, 20)))
    for labels, message in CONTROL_LABELS:
        for handler, args in ((ui.segment, (False,)), (ui.features, ())):
            with pytest.raises(gr.Error) as caught:
                handler(str(path), labels, *args)
            text = caught.value.message
            assert message in text and "\n" not in text and "\x00" not in text, (handler.__name__, text)
