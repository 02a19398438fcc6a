"""The audit: what a model relies on, found in its bank (fixed-position shortcuts, off-class channels,
shared confusions, suspect labels), and the comparison of two banks on the same data (docs/audit.md)."""

from .compare import compare_banks, write_compare
from .config import AuditConfig
from .report import KINDS, AuditReport, CompareReport, Finding
from .runner import run_audit, write_audit

__all__ = ["KINDS", "AuditConfig", "AuditReport", "CompareReport", "Finding", "compare_banks", "run_audit", "write_audit", "write_compare"]
