"""epic_hf: prototype explanations for pretrained Hugging Face image classifiers (EPIC).

``EpicExplainer.from_pretrained(...)`` wraps a classifier, ``fit`` mines a prototype bank,
``explain`` decomposes a logit exactly into disentangled channels and their prototypes.
"""

from ._version import __version__
from .adapters import ADAPTERS, ModelAdapter, register_adapter, supported_model_types
from .audit import AuditConfig, AuditReport, CompareReport, Finding, compare_banks
from .bank import PrototypeBank
from .config import DataConfig, EpicConfig, FitConfig
from .errors import (
    BankFormatError,
    BankMismatchError,
    BaseModelNotFoundError,
    CheckpointMismatchError,
    DecompositionError,
    EmptyDatasetError,
    EpicError,
    HubUnreachableError,
    OutputDirLockedError,
    UnreadableImageError,
    UnsupportedModelError,
)
from .evaluation import EvaluationConfig, EvaluationReport
from .explainer import EpicExplainer
from .explanation import ChannelExplanation, Explanation, PrototypeMatch
from .fit import FitReport
from .viz import write_html_report

__all__ = [
    "ADAPTERS",
    "AuditConfig",
    "AuditReport",
    "BankFormatError",
    "BankMismatchError",
    "BaseModelNotFoundError",
    "ChannelExplanation",
    "CheckpointMismatchError",
    "CompareReport",
    "DecompositionError",
    "DataConfig",
    "EmptyDatasetError",
    "EpicConfig",
    "EpicError",
    "EpicExplainer",
    "EvaluationConfig",
    "EvaluationReport",
    "Explanation",
    "Finding",
    "FitConfig",
    "FitReport",
    "HubUnreachableError",
    "OutputDirLockedError",
    "UnreadableImageError",
    "ModelAdapter",
    "PrototypeBank",
    "PrototypeMatch",
    "UnsupportedModelError",
    "__version__",
    "compare_banks",
    "register_adapter",
    "supported_model_types",
    "write_html_report",
]
