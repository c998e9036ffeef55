"""notebooks/quickstart.ipynb: committed without outputs, and runs top to bottom with the toy model."""

from __future__ import annotations

import nbformat
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def test_quickstart_is_stripped_and_runs_top_to_bottom():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "strip the outputs"
    assert "DEMO = False" in code[0].source  # the one line that switches to the demo weights
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on any error
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # overlays, the PCA picture, the similarity map
    text = "".join(o.get("text", "") for o in outputs)
    assert (
        "lseg_tiny on cpu - toy_scene.png (96, 96)" in text and "multi-scale and single-scale agree" in text
    )
