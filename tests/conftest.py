"""Shared fixtures: a tiny random-weight model saved in our format, and paths to the reference material."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("LANGSEG_REFERENCE", REPO.parent / "shared" / "reference"))

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

# the environment of subprocesses the tests start (one thread, offline, no analytics)
SUBPROCESS_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


def run_ranks(fn, args: tuple, nprocs: int, timeout: float = 300.0) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` processes and wait; fail (rather than hang) after ``timeout``
    seconds, e.g. when a rendezvous never completes. Fork: the children reuse this process's imports
    (spawn would import torch and open_clip again in each)."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="fork")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):  # raises if a process failed
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail(f"{nprocs} processes did not finish within {timeout:.0f} s")


# everyday words the app tests draw label sets from
LABEL_WORDS = (
    "house",
    "wall",
    "water",
    "sand",
    "other",
    "sky",
    "grass",
    "road",
    "tree",
    "dog",
    "cat",
    "car",
    "person",
)


def reference_available() -> bool:
    return (REFERENCE / "synth_weights.py").is_file()


@pytest.fixture(scope="session")
def reference():
    """The official reference helpers (synth_weights, lseg_fixtures) from ../shared/reference."""
    if not reference_available():
        pytest.fail(f"reference material not found at {REFERENCE}; set LANGSEG_REFERENCE")
    sys.path.insert(0, str(REFERENCE))
    import lseg_fixtures
    import synth_weights

    return synth_weights, lseg_fixtures


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random-weight LSeg (ViT trunk, 2-layer text tower) in eval mode."""
    from langseg.models import create_model

    torch.manual_seed(0)
    return create_model("lseg_tiny").eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, tiny_model) -> Path:
    """The tiny model saved in our format (model.safetensors + config.json)."""
    from langseg.models import save_pretrained

    out = tmp_path_factory.mktemp("weights") / "tiny"
    save_pretrained(tiny_model, out)
    return out


@pytest.fixture()
def eager_compile(monkeypatch) -> list:
    """``torch.compile`` through dynamo's ``eager`` backend (tracing and guards, no inductor build, which
    takes minutes on a small CPU). Returns the backends the code asked for, in call order."""
    asked: list = []
    real_compile = torch.compile

    def compile_eagerly(fn, **kwargs):
        asked.append(kwargs.get("backend"))
        return real_compile(fn, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    return asked
