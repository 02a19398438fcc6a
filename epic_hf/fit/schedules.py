"""How many prototypes per channel EPIC trains on at each schedule step.

Training starts broad (many prototypes per channel) and narrows to the few a bank keeps.
"""

from __future__ import annotations

import math

SCHEDULES = ("linear", "exponential", "logarithmic")


def prototypes_at_step(kind: str, step: int, start: int, end: int, steps: int) -> int:
    """N at ``step`` (0-based) of ``steps``.

    The formulas of the official EPIC code:

    * linear: ``int(max(end, start - (start - end) / steps * step))``
      (100 -> 5 over 10 steps: 100, 90, 81, 71, 62, 52, 43, 33, 24, 14)
    * exponential: ``int(start * (end / start) ** (step / steps))``, fast early decay
    * logarithmic: ``int(end + (start - end) * log(1 + 0.1 (steps - step)) / log(1 + 0.1 steps))``,
      slow early decay (100, 92, 85, 77, 69, 60, 51, 40, 29, 18)
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
        value = end + (start - end) * (math.log(1 + 0.1 * (steps - step)) / math.log(1 + 0.1 * steps))
    return int(max(end, value)) if start >= end else int(min(end, value))


def schedule(kind: str, start: int, end: int, steps: int) -> list[int]:
    return [prototypes_at_step(kind, step, start, end, steps) for step in range(steps)]
