"""What a fit did and how well: purity (docs/how_epic_works.md), per-step curves, timings, counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..aliases import JSONDict
from .index import KeptIndex


@dataclass
class StepRecord:
    """One schedule step: N, and the purity of the freshly mined prototypes before and after training on them."""

    prototypes: int
    purity_before: float
    purity_after: float
    seconds: float

    def to_dict(self) -> JSONDict:
        return asdict(self)


@dataclass
class FitReport:
    """The result of :meth:`EpicExplainer.fit`.

    ``purity_before``: the bank's purity under U = I (top prototypes mined without training);
    ``purity_after``: the final bank's purity under the trained U.
    """

    purity_before: float
    purity_after: float
    steps: list[StepRecord] = field(default_factory=list)
    index_seconds: float = 0.0
    total_seconds: float = 0.0
    num_samples: int = 0
    num_skipped: int = 0
    skipped_keys: list[int] = field(default_factory=list)
    resumed_from_step: int = 0
    num_processes: int = 1
    backbone_images: int = 0
    condition_number: float | None = None
    patch_share: float | None = None  # CLS-token models: the patches' mean share of |evidence| over the data
    #: the pooled index, kept for the audit when it is small (KEEP_INDEX_BYTES); not part of the written report
    kept_index: KeptIndex | None = field(default=None, repr=False, compare=False)

    @property
    def step_prototypes(self) -> list[int]:
        return [step.prototypes for step in self.steps]

    @property
    def step_purity(self) -> list[float]:
        """Purity of each step's prototypes after training on them."""
        return [step.purity_after for step in self.steps]

    @property
    def step_seconds(self) -> list[float]:
        return [step.seconds for step in self.steps]

    def to_dict(self) -> JSONDict:
        found = asdict(replace(self, kept_index=None))
        del found["kept_index"]
        return found

    @classmethod
    def from_dict(cls, values: JSONDict) -> FitReport:
        values = dict(values)
        values["steps"] = [StepRecord(**step) for step in values.get("steps", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})
