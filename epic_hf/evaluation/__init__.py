"""Evaluation of EPIC explanations: purity, class consistency, stability and exact deletion.

Each metric is measured under the bank's U and under U = I (the model's raw channels), so that
what EPIC adds shows. One module per metric family; :mod:`.runner` streams the data and keeps
resumable accumulators. Definitions and sources: docs/evaluation.md.
"""

from .config import EvaluationConfig
from .report import EvaluationReport
from .runner import evaluate_explainer

__all__ = ["EvaluationReport", "EvaluationConfig", "evaluate_explainer"]
