"""Learning-rate schedule as a pure function of the step (or epoch)."""

from __future__ import annotations


def poly_factor(t: int, total: int, power: float = 0.9, warmup: int = 0) -> float:
    """The official poly decay ``(1 - t / total) ** power``, after an optional linear warm-up.

    ``t`` counts epochs (official: stepped once per epoch) or optimizer steps. The factor is 0 from
    ``t = total`` on. During ``warmup`` steps it rises linearly from ``1 / warmup`` to the poly value.
    """
    if total < 1:
        raise ValueError(f"the schedule needs a positive length, got {total}")
    factor = max(0.0, 1.0 - t / total) ** power
    if warmup > 0 and t < warmup:
        factor *= (t + 1) / warmup
    return factor


class PolyLambda:
    """A ``LambdaLR`` multiplier; a class (not a closure) so its settings travel in the scheduler state."""

    def __init__(self, total: int, power: float = 0.9, warmup: int = 0) -> None:
        self.total, self.power, self.warmup = total, power, warmup

    def __call__(self, t: int) -> float:
        return poly_factor(t, self.total, self.power, self.warmup)
