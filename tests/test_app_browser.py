"""The web demo in a real headless Chromium (Debian's, driven by Playwright; nothing is downloaded).

Needs /usr/bin/chromium and the playwright package: ``bash scripts/setup_browser.sh`` installs both.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import LABEL_WORDS
from PIL import Image

from langseg import LSegPredictor
from langseg.app import AppConfig, LocalBackend, create_app, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


def scene() -> np.ndarray:
    """(70, 90, 3) uint8: sky over grass with a noisy box."""
    img = np.zeros((70, 90, 3), np.uint8)
    img[:35] = (120, 180, 250)
    img[35:] = (60, 160, 60)
    img[17:52, 30:60] = np.random.default_rng(0).integers(0, 256, (35, 30, 3))
    return img


def split_labels(predictor: LSegPredictor, img: np.ndarray) -> str:
    """Three labels the random tiny model does not answer with one label everywhere (a real legend)."""
    for combo in itertools.combinations(LABEL_WORDS, 3):
        counts = np.bincount(predictor.predict(img, list(combo)).labels.ravel(), minlength=3)
        if np.sort(counts)[-2] >= 0.05 * img.shape[0] * img.shape[1]:
            return ", ".join(combo)
    pytest.fail("no label triple splits the test image; the tiny model's outputs are constant")


@pytest.fixture(scope="module")
def served(tiny_weights):
    config = AppConfig(weights=str(tiny_weights), device="cpu")
    backend = LocalBackend.from_config(config)
    with serve_in_thread(create_app(config, backend)) as url:
        yield url, backend


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run 'bash scripts/setup_browser.sh' (installs Debian's chromium)"
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.outside = []  # every request that left 127.0.0.1
        page.on(
            "request",
            lambda r: (
                None
                if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                else page.outside.append(r.url)
            ),
        )
        try:
            yield page
        finally:
            context.close()


def test_page_segments_an_upload_and_shows_legend(served, page, tmp_path):
    url, backend = served
    img = scene()
    photo = tmp_path / "photo.png"
    Image.fromarray(img).save(photo)
    reference = LSegPredictor(backend.model, max_side=1024)
    labels = split_labels(reference, img)
    page.goto(url + "/", wait_until="load")
    page.locator("#seg-run").wait_for()
    assert page.locator("#seg-labels textarea").input_value() == backend.info().default_labels

    page.locator("#seg-image input[type=file]").set_input_files(str(photo))
    page.locator("#seg-labels textarea").fill(labels)
    page.locator("#seg-run").click()
    page.locator("#seg-legend .legend-row").first.wait_for()
    page.locator("#seg-overlay img").wait_for()

    expected = reference.predict(img, labels)
    legend = page.locator("#seg-legend .legend-row").all_inner_texts()
    want = [f"{name}\n{share:.1%}" for name, share in expected.shares().items()]
    assert [" ".join(t.split()) for t in legend] == [" ".join(t.split()) for t in want]
    assert "90×70 px" in page.locator("#seg-status").inner_text()

    src = page.locator("#seg-overlay img").get_attribute("src")
    shown = page.request.get(src)
    assert shown.ok
    with Image.open(io.BytesIO(shown.body())) as overlay:
        assert overlay.width >= 90 and overlay.height >= 70  # the overlay plus its legend panel
    link = page.locator("#seg-mask-file a").first
    assert "photo_mask.png" in link.get_attribute("href")
    download = page.request.get(link.get_attribute("href"))
    with Image.open(io.BytesIO(download.body())) as mask:  # the raw mask: pixel value = label index
        assert mask.mode == "P"
        np.testing.assert_array_equal(np.asarray(mask), expected.labels)
    assert page.outside == [], f"the page fetched from outside: {page.outside}"


def test_page_reports_a_bad_image(served, page, tmp_path):
    url, _ = served
    buf = io.BytesIO()
    Image.fromarray(scene()).save(buf, format="PNG")
    broken = tmp_path / "broken.png"
    broken.write_bytes(buf.getvalue()[:300])  # a valid header, truncated pixels
    page.goto(url + "/", wait_until="load")
    page.locator("#seg-image input[type=file]").set_input_files(str(broken))
    page.locator("#seg-run").click()
    page.get_by_text("corrupt or truncated").first.wait_for()
    assert "broken.png" in page.get_by_text("corrupt or truncated").first.inner_text()
    page.locator("#seg-run").wait_for()  # the page is still there, ready for the next image


def test_features_tab_click_shows_label_similarity(served, page, tmp_path):
    url, _ = served
    photo = tmp_path / "photo.png"
    Image.fromarray(scene()).save(photo)
    page.goto(url + "/", wait_until="load")
    page.get_by_role("tab", name="Features").click()
    page.locator("#feat-image input[type=file]").set_input_files(str(photo))
    page.locator("#feat-labels textarea").fill("house, wall")
    page.locator("#feat-run").click()
    page.locator("#feat-pca img").wait_for()
    page.locator("#feat-heat img").wait_for()
    assert "feature grid 45×35" in page.locator("#feat-status").inner_text()
    page.locator("#feat-pca img").click(position={"x": 20, "y": 20})
    page.locator("#feat-table table").wait_for()
    rows = page.locator("#feat-table tbody tr").all_inner_texts()
    assert sorted(r.split()[0] for r in rows) == ["house", "wall"]
    probs = [float(r.split()[-1].rstrip("%")) for r in rows]
    assert sum(probs) == pytest.approx(100.0, abs=0.2)
    assert page.outside == []
