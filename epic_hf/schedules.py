"""How many prototypes per channel EPIC trains on at each schedule step.

Training starts broad (many prototypes per channel) and narrows to the few a bank keeps.
"""

from __future__ import annotations

import math

SCHEDULES = ("linear", "exponential", "logarithmic")


def prototypes_at_step(kind: str, step: int, start: int, end: int, steps: int) -> int:
    """N at ``step`` (0-based) of ``steps``.

    * linear: ``int(max(end, start - (start - end) / steps * step))`` (the reference's formula)
    * exponential: ``start * (end / start) ** (step / steps)``, fast early decay
    * logarithmic: ``start - (start - end) * log(1 + step) / log(1 + steps)``, slow late decay
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if steps < 1:
        raise ValueError(f"schedule_steps must be at least 1, got {steps}")
    if start < 1 or end < 1:
        raise ValueError(f"schedule_start and schedule_end must be positive, got {start} and {end}")
    if kind == "linear":
        value = start - (start - end) / steps * step
    elif kind == "exponential":
        value = start * (end / start) ** (step / steps)
    else:
        value = start - (start - end) * math.log1p(step) / math.log1p(steps)
    return int(max(end, value)) if start >= end else int(min(end, value))


def schedule(kind: str, start: int, end: int, steps: int) -> list[int]:
    return [prototypes_at_step(kind, step, start, end, steps) for step in range(steps)]
