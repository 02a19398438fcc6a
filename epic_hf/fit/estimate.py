"""How long the rest of training will take, from what dominates it: the optimizer steps themselves.

A schedule step starts with work that is done once (mining the top-N under the current U,
computing the prototype images' feature maps, the purity before), then runs its optimizer steps.
Timing the first few steps from the start of the fit folds that one-off work into "seconds per
step" and multiplies it by every remaining step: on a real fit that said 11,731 s for a 575 s run.
So the estimate times each optimizer step alone, drops the first (warm-up: allocation, caches),
uses the median of the next few, and adds the measured once-per-schedule-step overhead after the
first schedule step.
"""

from __future__ import annotations

import logging
import statistics

logger = logging.getLogger(__name__)

#: Optimizer steps left out of the estimate (the first runs allocate and warm caches).
WARMUP_STEPS = 1
#: Optimizer steps whose median gives the first estimate.
MEASURED_STEPS = 5


class TrainingEstimate:
    """Collects optimizer-step durations and logs the time left, twice: early, then with the overheads."""

    def __init__(self, remaining_steps: int) -> None:
        self.remaining = remaining_steps
        self.durations: list[float] = []
        self._seen = 0
        self._step_seconds: list[float] = []  # optimizer time inside the current schedule step
        self.first_estimate: float | None = None

    @property
    def per_step(self) -> float | None:
        """The median measured optimizer step, once enough have been measured."""
        return statistics.median(self.durations) if len(self.durations) >= MEASURED_STEPS else None

    def record(self, seconds: float) -> None:
        """One optimizer step took ``seconds``."""
        self._seen += 1
        self.remaining -= 1
        self._step_seconds.append(seconds)
        if self._seen > WARMUP_STEPS and len(self.durations) < MEASURED_STEPS:
            self.durations.append(seconds)
            per_step = self.per_step
            if per_step is not None and self.remaining > 0:
                self.first_estimate = per_step * self.remaining
                logger.info("training: %.3f s per optimizer step (median of %d), about %.0f s for the remaining "
                            "%d steps, plus mining and prototype maps once per schedule step", per_step,
                            MEASURED_STEPS, self.first_estimate, self.remaining)

    def schedule_step_done(self, seconds: float, steps_left: int) -> float | None:
        """A schedule step took ``seconds`` in all; logs (and returns) the time left, overheads included."""
        optimizer = sum(self._step_seconds)
        self._step_seconds = []
        per_step = self.per_step
        if per_step is None or steps_left <= 0:
            return None
        overhead = max(seconds - optimizer, 0.0)  # mining, prototype maps, purity: about once per schedule step
        left = per_step * self.remaining + overhead * steps_left
        logger.info("training: about %.0f s left (%d optimizer steps at %.3f s, and %.1f s of mining and prototype "
                    "maps per schedule step for %d more)", left, self.remaining, per_step, overhead, steps_left)
        return left
