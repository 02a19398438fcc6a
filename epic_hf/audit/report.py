"""The audit's results as data: :class:`Finding`, :class:`AuditReport` and :class:`CompareReport`.

Plain values only (numbers, names, sample keys), so that ``audit.json`` is the whole result and
the HTML page (:mod:`epic_hf.viz.audit_page`) is drawn from it; the prototype pictures travel
beside it as the processed images' JPEG bytes, keyed by sample key, as a bank's thumbnails do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: The kinds of finding, in the order the report lists them: what the model relies on first, then the data.
KINDS = ("fixed_position", "off_class", "shared_confusion", "suspect_label")


@dataclass
class Finding:
    """One thing the audit found, with the evidence to check it by eye.

    ``kind``: one of :data:`KINDS`. ``channel``: the channel concerned (-1 for a suspect label,
    whose ``channels`` lists the channels that carry the prediction). ``classes``: class indices, the
    class the channel drives first. ``samples``: sample keys (row indices of an in-memory Dataset,
    as the bank's prototypes use), best first. ``score``: the ranking score of the kind,
    documented in docs/audit.md; comparable within a kind. ``boxes``: (x0, y0, x1, y1) in model-input
    pixels, one per sample (empty where no place is meant). ``numbers``: the measured values the
    message reports. ``prototypes``: for a suspect label, each carrying channel's top prototypes in the
    bank, ``{"channel", "samples" (the bank's sample keys), "boxes" (in model-input pixels)}``.
    """

    kind: str
    channel: int
    classes: list[int]
    samples: list[int]
    score: float
    message: str
    boxes: list[list[int]] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    prototypes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditReport:
    """Every finding of one audit, ranked, and how the audit was run.

    ``findings`` are grouped by kind in :data:`KINDS` order and sorted by ``score`` within a kind.
    ``reused_index`` says whether the fit's pooled index stood in for a backbone pass;
    ``backbone_images`` is how many images the backbone saw during the audit.
    """

    findings: list[Finding]
    labels: list[str]
    num_samples: int
    input_size: tuple[int, int]
    grid_size: tuple[int, int]
    settings: dict[str, Any]
    reused_index: bool
    backbone_images: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    sample_names: dict[int, str] = field(default_factory=dict)  # sample key -> file name (and label), as the bank's
    thumbnails: dict[int, bytes] = field(default_factory=dict, repr=False)
    prototype_thumbnails: dict[int, bytes] = field(default_factory=dict, repr=False)  # the bank's, by its keys

    def of_kind(self, kind: str) -> list[Finding]:
        """The findings of one kind, best first."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return [finding for finding in self.findings if finding.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pictures (JSON-serialisable)."""
        values = {k: v for k, v in asdict(self).items() if k not in ("thumbnails", "prototype_thumbnails")}
        values["findings"] = [finding.to_dict() for finding in self.findings]
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AuditReport:
        values = dict(values)
        values["findings"] = [Finding(**finding) for finding in values.get("findings", [])]
        values["input_size"] = tuple(values["input_size"])
        values["grid_size"] = tuple(values["grid_size"])
        values["sample_names"] = {int(key): str(name) for key, name in values.get("sample_names", {}).items()}
        return cls(**values)

    def to_markdown(self) -> str:
        """A short table of the findings, for the terminal."""
        lines = [f"EPIC audit of {self.num_samples} samples: {len(self.findings)} findings", "",
                 "| kind | channel | score | finding |", "| --- | --- | --- | --- |"]
        for finding in self.findings:
            channel = str(finding.channel) if finding.channel >= 0 else ", ".join(map(str, finding.channels))
            lines.append(f"| {finding.kind} | {channel} | {finding.score:.3f} | {finding.message} |")
        lines.extend(f"\n_{note}_" for note in self.notes)
        return "\n".join(lines) + "\n"


@dataclass
class CompareReport:
    """Two banks on the same data: matched channels, concepts found in one only, classes whose evidence moved.

    ``matches``: (channel of A, channel of B, overlap) with overlap the Jaccard index of their
    top-N sample sets on the data. ``only_a`` / ``only_b``: channels that drive a class in one
    model and match no channel of the other. ``moved``: per class, 1 - the Jaccard index of the
    samples its strongest channels fire on in A and in B, largest first. ``shared``: per match, the
    first few sample keys in both channels' top-N (in A's order), for the page's pictures; each entry
    of ``only_a`` / ``only_b`` has its channel's first few top ``samples``. ``models``: the two base
    models' names; ``sample_names``: key -> file name (and label) of the pictured samples.
    """

    matches: list[tuple[int, int, float]]
    only_a: list[dict[str, Any]]
    only_b: list[dict[str, Any]]
    moved: list[dict[str, Any]]
    labels: list[str]
    num_samples: int
    settings: dict[str, Any]
    shared: list[list[int]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    match_overlap: float = 0.2  # the least overlap for two channels to be one concept (compare.MATCH_OVERLAP)
    sample_names: dict[int, str] = field(default_factory=dict)
    thumbnails: dict[int, bytes] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pictures (JSON-serialisable)."""
        return {k: v for k, v in asdict(self).items() if k != "thumbnails"}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_markdown(self) -> str:
        matched = sum(1 for _, _, overlap in self.matches if overlap > 0)
        lines = [f"EPIC compare on {self.num_samples} samples: {matched} channel pairs share top activations", "",
                 "Concepts only in A: " + (", ".join(f"channel {c['channel']} ({c['label']})" for c in self.only_a)
                                           or "none"),
                 "Concepts only in B: " + (", ".join(f"channel {c['channel']} ({c['label']})" for c in self.only_b)
                                           or "none"), "", "| class | evidence moved | A's channels | B's channels |",
                 "| --- | --- | --- | --- |"]
        for row in self.moved:
            lines.append(f"| {row['label']} | {row['moved']:.2f} | {row['channels_a']} | {row['channels_b']} |")
        return "\n".join(lines) + "\n"
