"""The EPIC fit, in the order the data flows: source -> index -> features -> trainer -> bank builder."""

from .pipeline import bank_purity, run_fit
from .report import FitReport, StepRecord

__all__ = ["FitReport", "StepRecord", "bank_purity", "run_fit"]
