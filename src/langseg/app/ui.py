"""The Gradio page: a "Segment" tab (overlay, legend, mask PNG, timing) and a "Features" tab
(PCA picture of the dense features; click a pixel for its similarity to each label, or pick a
label for its heat-map). It only talks to a :class:`~langseg.app.backend.Backend`.
"""

from __future__ import annotations

import html
import os
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from ..errors import LangsegError  # noqa: E402
from ..files import write_bytes  # noqa: E402
from ..visualize import colorize, overlay, palette  # noqa: E402
from .api import short_message  # noqa: E402
from .backend import Backend, FeatureResult  # noqa: E402
from .codec import decode_image, encode_mask_png  # noqa: E402
from .config import AppConfig  # noqa: E402

DISPLAY_SIDE = 768  # long side at which the feature pictures are shown
KEEP_FILES = 64  # mask files kept on disk for download (gradio copies them into its own cache)
_HEAT = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], np.float32)
OUT_BUTTONS = ["download", "fullscreen"]  # no "share": it targets Hugging Face Spaces
CSS = """
.legend-row {display: flex; align-items: center; gap: 0.5em; margin: 0.15em 0;}
.legend-swatch {display: inline-block; width: 1.1em; height: 1.1em; border: 1px solid #0003; border-radius: 3px;}
.legend-absent {opacity: 0.45;}
"""


def legend_html(names: list[str], shares: dict[str, float]) -> str:
    """Every label with its colour swatch and pixel share (labels absent from the mask are dimmed)."""
    colors = palette(len(names))
    rows = []
    for name, color in zip(names, colors):
        share = shares.get(name, 0.0)
        cls = "legend-row" if share > 0 else "legend-row legend-absent"
        rgb = ",".join(str(int(c)) for c in color)
        rows.append(
            f'<div class="{cls}"><span class="legend-swatch" style="background: rgb({rgb})"></span>'
            f'<span class="legend-name">{html.escape(name)}</span>'
            f'<span class="legend-share">{share:.1%}</span></div>'
        )
    return '<div class="legend">' + "".join(rows) + "</div>"


def heat_map(values: np.ndarray, size: tuple[int, int], base: np.ndarray | None = None) -> np.ndarray:
    """``(h, w)`` values in [0, 1] -> ``(H, W, 3)`` uint8 colour map (0 dark blue, 1 yellow) at
    ``size = (W, H)``, blended over ``base`` (``(H, W, 3)`` uint8) when given."""
    pos = np.clip(values, 0.0, 1.0) * (len(_HEAT) - 1)  # (h, w) position along the colour ramp
    i = np.clip(np.floor(pos).astype(int), 0, len(_HEAT) - 2)
    frac = (pos - i)[..., None]
    rgb = _HEAT[i] * (1 - frac) + _HEAT[i + 1] * frac  # (h, w, 3)
    img = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.BILINEAR), dtype=np.float32)
    if base is not None:
        img = 0.7 * img + 0.3 * base.astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def label_probabilities(similarity: np.ndarray, logit_scale: float) -> np.ndarray:
    """``(K, ...)`` cosine similarities -> softmax over the K labels of ``logit_scale * similarity``."""
    z = logit_scale * similarity.astype(np.float32)
    z = np.exp(z - z.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


def pixel_report(names: list[str], cosine: np.ndarray, logit_scale: float) -> tuple[dict[str, float], str]:
    """``(K,)`` cosine similarities of one pixel -> label probabilities and a Markdown table."""
    prob = label_probabilities(cosine.astype(np.float64), logit_scale)
    rows = ["| label | cosine | probability |", "|---|---:|---:|"]
    for k in np.argsort(-cosine):
        rows.append(f"| {html.escape(names[k]).replace('|', '&#124;')} | {cosine[k]:.3f} | {prob[k]:.1%} |")
    return {n: float(p) for n, p in zip(names, prob)}, "\n".join(rows)


class DemoUI:
    """Event handlers of the page; errors reach the user as ``gr.Error`` messages, never tracebacks."""

    def __init__(self, backend: Backend, config: AppConfig) -> None:
        self.backend = backend
        self.config = config
        self._tmp = tempfile.TemporaryDirectory(prefix="langseg-app-")
        self._files: deque[Path] = deque()

    def _read(self, image_path: str | None) -> tuple[bytes, Image.Image]:
        if not image_path:
            raise gr.Error("Upload an image first (or pick an example).")
        path = Path(image_path)
        size = path.stat().st_size
        if size > self.config.max_upload_bytes:
            raise gr.Error(
                f"{path.name}: {size:,} bytes is above the limit of {self.config.max_upload_bytes:,}"
            )
        data = path.read_bytes()
        try:
            image = decode_image(
                data,
                name=path.name,
                max_pixels=self.config.max_pixels,
                max_bytes=self.config.max_upload_bytes,
            )
        except LangsegError as e:
            raise gr.Error(short_message(str(e))) from None
        return data, image

    def _save_mask(self, mask: np.ndarray, n_labels: int, stem: str) -> str:
        folder = Path(self._tmp.name) / uuid.uuid4().hex
        folder.mkdir()
        path = folder / f"{stem}_mask.png"
        write_bytes(path, encode_mask_png(mask, n_labels))
        self._files.append(path)
        while len(self._files) > KEEP_FILES:  # gradio has already copied older files into its cache
            old = self._files.popleft()
            old.unlink(missing_ok=True)
            old.parent.rmdir()
        return str(path)

    def segment(self, image_path: str | None, labels: str, multi_scale: bool):
        """-> (overlay, legend HTML, colour mask, mask PNG path, status text)."""
        start = time.perf_counter()
        data, image = self._read(image_path)
        try:
            result = self.backend.segment(data, labels, bool(multi_scale), name=Path(image_path).name)
        except LangsegError as e:
            raise gr.Error(short_message(str(e))) from None
        K = len(result.names)
        shown = overlay(image, result.mask, result.names, alpha=0.5, legend=True)
        mask_file = self._save_mask(result.mask, K, Path(image_path).stem[:60] or "image")
        total = time.perf_counter() - start
        mode = "multi-scale" if result.multi_scale else "single scale"
        status = (
            f"{image.width}×{image.height} px · {K} label{'s' if K != 1 else ''} · {mode} · "
            f"model {result.seconds:.2f} s · total {total:.2f} s"
        )
        preview = colorize(result.mask, K) if K <= 256 else None
        return shown, legend_html(result.names, result.shares), preview, mask_file, status

    def features(self, image_path: str | None, labels: str):
        """-> (PCA picture, heat-map, label dropdown, session state, status text)."""
        start = time.perf_counter()
        data, image = self._read(image_path)
        try:
            result: FeatureResult = self.backend.features(data, labels, name=Path(image_path).name)
        except LangsegError as e:
            raise gr.Error(short_message(str(e))) from None
        K, h, w = result.similarity.shape
        scale = max(1, round(DISPLAY_SIDE / max(h, w)))  # whole cells, about DISPLAY_SIDE px
        size = (w * scale, h * scale)
        pca = np.asarray(Image.fromarray(result.pca).resize(size, Image.NEAREST))
        base = np.asarray(image.resize(size, Image.BILINEAR))
        state = {
            "names": result.names,
            "sim": result.similarity.astype(np.float16),
            "scale": result.logit_scale,
            "pca": pca,
            "base": base,
            "size": result.size,  # (H, W) of the original image
        }
        heat = heat_map(label_probabilities(result.similarity, result.logit_scale)[0], size, base)
        status = (
            f"{image.width}×{image.height} px · feature grid {w}×{h} · "
            f"model {result.seconds:.2f} s · total {time.perf_counter() - start:.2f} s · "
            "click the PCA picture to inspect a pixel"
        )
        choices = gr.Dropdown(choices=result.names, value=result.names[0], interactive=True)
        return pca, heat, choices, state, status

    @staticmethod
    def _cell(state: dict, x: float, y: float) -> tuple[int, int]:
        _, h, w = state["sim"].shape
        H, W = state["pca"].shape[:2]
        return min(max(int(y * h / H), 0), h - 1), min(max(int(x * w / W), 0), w - 1)

    def select(self, state: dict | None, evt: gr.SelectData):
        """A click on the PCA picture -> (marked picture, label probabilities, similarity table)."""
        if not state:
            raise gr.Error("Compute the features first.")
        x, y = evt.index[0], evt.index[1]
        gy, gx = self._cell(state, x, y)
        cosine = state["sim"][:, gy, gx].astype(np.float32)
        probs, table = pixel_report(state["names"], cosine, state["scale"])
        marked = Image.fromarray(state["pca"])
        draw = ImageDraw.Draw(marked)
        r = max(4, marked.width // 100)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=max(2, r // 2))
        draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], outline=(0, 0, 0), width=1)
        H, W = state["size"]
        xo, yo = int(x * W / marked.width), int(y * H / marked.height)  # in the original image
        return marked, probs, f"Image pixel ({xo}, {yo}) · grid cell ({gx}, {gy})\n\n{table}"

    def heat(self, state: dict | None, label: str | None):
        """The chosen label's probability (softmax over the labels) as a heat-map over the image."""
        if not state or label not in state["names"]:
            return None
        k = state["names"].index(label)
        H, W = state["pca"].shape[:2]
        return heat_map(label_probabilities(state["sim"], state["scale"])[k], (W, H), state["base"])


def build_blocks(backend: Backend, config: AppConfig) -> gr.Blocks:
    """The whole page, with its queue set to the backend's concurrency limit."""
    ui = DemoUI(backend, config)
    info = backend.info()
    default_labels = config.default_labels or info.default_labels
    where = f"remote backend {config.backend_url}" if config.backend_url else info.device
    with gr.Blocks(
        title="langseg: segment images with any words", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(
            "## langseg — segment images with any words\n"
            f"Model `{html.escape(info.model)}` on {html.escape(where)}. Labels are comma-separated; "
            "`;` joins synonyms (`cat;kitten, grass, other`). Images up to "
            f"{info.max_pixels / 1e6:.0f} MP and {config.max_upload_bytes / 2**20:.0f} MiB."
        )
        with gr.Tab("Segment"):
            _segment_tab(ui, default_labels, config.examples)
        with gr.Tab("Features"):
            _features_tab(ui, default_labels)
    # The page's queue holds at most queue_size events (at least one: Gradio queues every event before
    # running it); the backend's slots then decide, as for the API (busy -> an error message).
    demo.queue(default_concurrency_limit=config.concurrency, max_size=max(1, config.queue_size))
    return demo


def _input_image(elem_id: str) -> gr.Image:
    return gr.Image(
        label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id=elem_id
    )


def _output_image(label: str, elem_id: str, type: str = "pil") -> gr.Image:
    return gr.Image(
        label=label, type=type, format="png", interactive=False, buttons=OUT_BUTTONS, elem_id=elem_id
    )


def _segment_tab(ui: DemoUI, default_labels: str, examples) -> None:
    """Image, labels and the multi-scale switch in; overlay, legend, mask and its PNG out."""
    with gr.Row():
        with gr.Column():
            image = _input_image("seg-image")
            labels = gr.Textbox(
                label="Labels",
                value=default_labels,
                elem_id="seg-labels",
                info="comma-separated; ';' joins synonyms",
            )
            multi = gr.Checkbox(
                label="Multi-scale (official evaluator: 6 scales + flip; slower)", elem_id="seg-multi"
            )
            run = gr.Button("Segment", variant="primary", elem_id="seg-run")
            if examples:
                gr.Examples([[str(p)] for p in examples], [image], elem_id="seg-examples")
        with gr.Column():
            shown = _output_image("Overlay", "seg-overlay")
            legend = gr.HTML(label="Legend", elem_id="seg-legend")
            status = gr.Markdown(label="Status", elem_id="seg-status")
            with gr.Row():
                mask = _output_image("Mask", "seg-mask")
                mask_file = gr.File(label="Mask PNG (pixel value = label index)", elem_id="seg-mask-file")
    outputs = [shown, legend, mask, mask_file, status]
    run.click(ui.segment, [image, labels, multi], outputs, api_name="segment")
    labels.submit(ui.segment, [image, labels, multi], outputs, api_name=False)


def _features_tab(ui: DemoUI, default_labels: str) -> None:
    """Image and labels in; the PCA picture, per-pixel label probabilities and a label's heat-map out."""
    state = gr.State()
    with gr.Row():
        with gr.Column():
            image = _input_image("feat-image")
            labels = gr.Textbox(label="Labels", value=default_labels, elem_id="feat-labels")
            run = gr.Button("Compute features", variant="primary", elem_id="feat-run")
            status = gr.Markdown(label="Status", elem_id="feat-status")
            probs = gr.Label(label="Labels at the clicked pixel", num_top_classes=8, elem_id="feat-probs")
            table = gr.Markdown(elem_id="feat-table")
        with gr.Column():
            pca = _output_image("Feature PCA (click a pixel)", "feat-pca", type="numpy")
            choice = gr.Dropdown(label="Heat-map for label", choices=[], elem_id="feat-label")
            heat = _output_image(
                "Probability of the label (softmax over the labels; blue 0, yellow 1)",
                "feat-heat",
                type="numpy",
            )
    run.click(ui.features, [image, labels], [pca, heat, choice, state, status], api_name="features")
    pca.select(ui.select, [state], [pca, probs, table], api_name=False, concurrency_limit=None)
    choice.change(ui.heat, [state, choice], [heat], api_name=False, concurrency_limit=None)
