"""The training time estimate counts optimizer steps, not the one-off work at the start of a schedule step."""

from __future__ import annotations

import logging

import pytest

from epic_hf.fit.estimate import MEASURED_STEPS, WARMUP_STEPS, TrainingEstimate


def test_the_first_estimate_is_the_median_step_times_the_steps_left(caplog):
    estimate = TrainingEstimate(remaining_steps=100)
    with caplog.at_level(logging.INFO, logger="epic_hf.fit.estimate"):
        estimate.record(9.0)  # warm-up: not counted
        for seconds in (0.1, 0.1, 5.0, 0.1, 0.1):  # one slow outlier: the median ignores it
            estimate.record(seconds)
    assert WARMUP_STEPS == 1 and MEASURED_STEPS == 5
    assert estimate.per_step == pytest.approx(0.1)
    assert estimate.first_estimate == pytest.approx(0.1 * 94)
    assert "about 9 s for the remaining 94 steps" in caplog.text


def test_the_once_per_schedule_step_overhead_is_added_after_the_first_schedule_step():
    estimate = TrainingEstimate(remaining_steps=20)
    for seconds in (3.0, 1.0, 1.0, 1.0, 1.0, 1.0):
        estimate.record(seconds)
    # the schedule step took 30 s in all, 8 of them in its optimizer steps: 22 s of mining and maps
    left = estimate.schedule_step_done(30.0, steps_left=2)
    assert left == pytest.approx(14 * 1.0 + 22.0 * 2)


def test_no_estimate_before_enough_steps():
    estimate = TrainingEstimate(remaining_steps=3)
    estimate.record(1.0)
    estimate.record(1.0)
    assert estimate.per_step is None and estimate.schedule_step_done(5.0, steps_left=1) is None
