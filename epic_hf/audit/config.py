"""`AuditConfig`: every setting of an audit, its default, help and validation, written once.

``explainer.audit``, ``run_audit`` and the ``epic-hf audit`` flags are derived from it, as the
evaluation's are from :class:`~epic_hf.evaluation.EvaluationConfig`; how the dataset is read is the
same :class:`~epic_hf.config.DataConfig`. The thresholds are the documented definitions of the
findings (docs/audit.md): changing one changes what counts as a finding, not how it is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig, DataSettings, _section, _setting


@dataclass(frozen=True)
class AuditConfig(DataSettings):
    """Every setting of :meth:`EpicExplainer.audit` (definitions: docs/audit.md)."""

    what = "audit"

    data: DataConfig = _section(DataConfig, "how to read the dataset")
    top_n: int = _setting(20, "top activations per channel whose peak places the audit compares", group="audit",
                          minimum=2)
    channels_per_class: int = _setting(3, "strongest channels of each class that the audit examines", group="audit",
                                       minimum=1)
    min_evidence_share: float = _setting(
        0.05, "least share of a class's positive evidence for a channel to count as driving it", group="audit",
        minimum=0, maximum=1)
    fixed_position_share: float = _setting(
        0.8, "least share of a channel's top activations peaking in one cell for a fixed-position finding",
        group="audit", minimum=0, maximum=1)
    significance: float = _setting(
        0.01, "family-wise level of the fixed-position test against the data's own spread of peaks (Bonferroni "
        "over the examined channels)", group="audit", minimum=0, maximum=1)
    null_draws: int = _setting(4000, "Monte Carlo draws of the fixed-position null", group="audit", minimum=100)
    off_class_share: float = _setting(
        0.5, "a channel is off-class when more than this share of its top activations are labelled another class",
        group="audit", minimum=0, maximum=1)
    min_confusions: int = _setting(3, "least number of confused samples for a class pair to be examined",
                                   group="audit", minimum=1)
    suspect_confidence: float = _setting(
        0.5, "least probability of the predicted class for a disagreeing label to be suspect", group="audit",
        minimum=0, maximum=1)
    max_suspects: int = _setting(50, "suspect labels reported at most", group="audit", minimum=0)
    seed: int = _setting(0, "seed of the fixed-position null's draws", group="audit", minimum=0)
    batch_size: int = _setting(32, "images per backbone batch", group="compute", result=False, minimum=1)

