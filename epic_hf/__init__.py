"""epic_hf: prototype explanations for pretrained Hugging Face image classifiers (EPIC).

``EpicExplainer.from_pretrained(...)`` wraps a classifier, ``fit`` mines a prototype bank,
``explain`` decomposes a logit exactly into disentangled channels and their prototypes.
"""

from .adapters import ADAPTERS, ModelAdapter, register_adapter, supported_model_types
from .bank import PrototypeBank
from .errors import BankFormatError, BankMismatchError, CheckpointMismatchError, EpicError, UnsupportedModelError
from .explainer import EpicExplainer
from .explanation import ChannelExplanation, Explanation, PrototypeMatch

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "BankFormatError",
    "BankMismatchError",
    "ChannelExplanation",
    "CheckpointMismatchError",
    "EpicError",
    "EpicExplainer",
    "Explanation",
    "ModelAdapter",
    "PrototypeBank",
    "PrototypeMatch",
    "UnsupportedModelError",
    "register_adapter",
    "supported_model_types",
]


def __getattr__(name: str):
    # Heavier, optional pieces are imported on first use.
    if name == "FitReport":
        from .training import FitReport

        return FitReport
    if name == "write_html_report":
        from .report import write_html_report

        return write_html_report
    raise AttributeError(f"module 'epic_hf' has no attribute {name!r}")
