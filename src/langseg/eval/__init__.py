"""Evaluation: fixed-label (ADE20K, generic layout) and zero-shot (PASCAL-5i, COCO-20i, FSS-1000).

Metrics live in :mod:`langseg.metrics`; this package holds the loops, the benchmark readers and the
provenance record written next to every result.
"""

from .evaluate import EvalResult, evaluate
from .fewshot import (
    BENCHMARKS,
    Episode,
    EpisodeDataset,
    FewShotBenchmark,
    fold_classes,
    label_names,
    load_benchmark,
)
from .zeroshot import ZeroShotResult, evaluate_zeroshot

__all__ = [
    "BENCHMARKS",
    "Episode",
    "EpisodeDataset",
    "EvalResult",
    "FewShotBenchmark",
    "ZeroShotResult",
    "evaluate",
    "evaluate_zeroshot",
    "fold_classes",
    "label_names",
    "load_benchmark",
]
