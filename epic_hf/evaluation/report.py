"""`EvaluationReport`: the numbers of one evaluation, as JSON, as a Markdown table and as a headline.

Every metric is given twice where it can be: under the bank's U (the EPIC channels) and under
U = I (the model's raw channels), so that what the disentangling adds is read off one row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..naming import display_name
from .channels import EPIC, IDENTITY

_COLUMNS = "| metric | EPIC (U) | raw channels (U = I) |\n| --- | ---: | ---: |"


@dataclass
class EvaluationReport:
    """What :meth:`EpicExplainer.evaluate` measured (definitions: docs/evaluation.md).

    ``purity``: ``recorded_before``/``recorded_after`` (the fit's, from the bank config), ``bank``
    (the bank's own prototypes, recomputed), ``mined`` (top-N per channel mined on the evaluated
    data, per view). ``consistency``: ``bank`` and ``mined`` as for purity. ``stability``: per view,
    per perturbation, ``channel_jaccard`` and ``peak_kept``; ``decision_kept``: how often a
    perturbation left the prediction unchanged. ``deletion``: per view, the target logit drop and
    the class change rate for the top-k channels and for random ones. With ``faithfulness``:
    ``faithfulness`` (RISE deletion/insertion AUC per pixel-map method, and the mean curves, see
    :mod:`.faithfulness`) and ``sanity`` (Spearman correlations under model randomisation and for a
    random other class, see :mod:`.sanity`); None otherwise. With ``parts``: ``parts`` (part purity,
    ``channels_over_half``, ``per_channel``, part consistency and stability, each per view; see
    :mod:`.parts`); None otherwise.
    """

    model: dict[str, Any]
    settings: dict[str, Any]
    num_samples: int
    num_skipped: int
    purity: dict[str, Any]
    consistency: dict[str, Any]
    stability: dict[str, Any]
    decision_kept: dict[str, Any]
    deletion: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    skipped_keys: list[int] = field(default_factory=list)
    seconds: float = 0.0
    faithfulness: dict[str, Any] | None = None
    sanity: dict[str, Any] | None = None
    parts: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationReport:
        known = {spec.name for spec in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def headline(self) -> dict[str, float | None]:
        """A few numbers for a model card: purity, class consistency, stability and deletion, EPIC vs U = I."""
        mined = self.purity.get("mined", {})
        consistency = self.consistency.get("mined", {})
        shift = {view: self.stability.get(view, {}).get("shift", {}) for view in (EPIC, IDENTITY)}
        deletion = self.deletion.get(EPIC, {})
        parts = {f"part_{name}{suffix}": self.parts.get(name, {}).get(view)
                 for name in ("purity", "consistency", "stability")
                 for view, suffix in ((EPIC, ""), (IDENTITY, "_identity"))} if self.parts else {}
        return {
            "purity": mined.get(EPIC), "purity_identity": mined.get(IDENTITY),
            "bank_purity": self.purity.get("bank"),
            "class_consistency": consistency.get(EPIC), "class_consistency_identity": consistency.get(IDENTITY),
            "shift_stability": shift[EPIC].get("channel_jaccard"),
            "shift_stability_identity": shift[IDENTITY].get("channel_jaccard"),
            "deletion_drop_top_k": deletion.get("top_k_logit_drop"),
            "deletion_drop_random": deletion.get("random_logit_drop"), **parts,
        }

    def channel_parts(self) -> dict[str, list[Any]]:
        """Each EPIC channel's best annotated part and its part purity, ``{"17": ["beak", 0.82]}``: what names channels.

        Empty without ``parts``; channels whose prototypes hit no part are left out. Stored in the
        bank's config by ``explainer.evaluate``, so the sheet, the atlas and the app can say it.
        """
        rows = (self.parts or {}).get("per_channel", {}).get(EPIC) or []
        return {str(row["channel"]): [row["part"], round(float(row["purity"]), 4)] for row in rows if row["part"]}

    def to_markdown(self) -> str:
        """The table: one row per metric, one column per view."""
        top_k, count = self.settings.get("top_k"), self.settings.get("prototypes_per_channel")
        rows = [
            (f"purity, top-{count} per channel mined on this data", *self._views(self.purity.get("mined", {}))),
            ("purity recorded by the fit", self.purity.get("recorded_after"), self.purity.get("recorded_before")),
            ("purity of the bank's prototypes, recomputed", self.purity.get("bank"), None),
            (f"class consistency, top-{count} mined on this data", *self._views(self.consistency.get("mined", {}))),
            ("class consistency of the bank's prototypes", self.consistency.get("bank"), None),
        ]
        for name, label in (("noise", f"noise (std {self.settings.get('noise_std')})"),
                            ("shift", f"shift ({self.settings.get('shift_pixels')} px)")):
            kept = self.decision_kept.get(name)
            rows.append((f"stability under {label}: top-{top_k} channel Jaccard",
                         *self._views(self._stability(name, "channel_jaccard"))))
            rows.append((f"stability under {label}: peak cell kept", *self._views(self._stability(name, "peak_kept"))))
            rows.append((f"prediction unchanged under {label}", kept, kept))
        for key, label in (("top_k_logit_drop", f"deletion: target logit drop, top-{top_k} channels"),
                           ("random_logit_drop", "deletion: target logit drop, as many random channels"),
                           ("top_k_class_change_rate", f"deletion: predicted class changes, top-{top_k}"),
                           ("random_class_change_rate", "deletion: predicted class changes, random"),
                           ("mean_deleted_channels", "deletion: channels deleted per image")):
            rows.append((label, *self._views({v: self.deletion.get(v, {}).get(key) for v in (EPIC, IDENTITY)})))
        model = self.model
        title = (f"EPIC evaluation of {display_name(model.get('base_model')) or 'an unnamed classifier'} ({model.get('model_type')}, "
                 f"D={model.get('num_channels')}, matrix={model.get('matrix')}) on {self.num_samples} images "
                 f"({self.num_skipped} unreadable, skipped)")
        lines = [title, "", _COLUMNS]
        lines += [f"| {name} | {_number(epic)} | {_number(identity)} |" for name, epic, identity in rows]
        lines += self._part_lines()
        lines += self._faithfulness_lines()
        if self.notes:
            lines += [""] + [f"* {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def _part_lines(self) -> list[str]:
        """The part-grounded rows (PIP-Net's purity, Huang et al.'s consistency and stability), when measured."""
        parts = self.parts
        if not parts:
            return []
        rows = [("part purity (mean over channels)", "purity"), ("channels with part purity > 0.5", "channels_over_half"),
                (f"part consistency (class top-{parts.get('class_channels')}, threshold {parts.get('threshold')})",
                 "consistency"), ("part consistency: mean best-part hit share", "best_part_share"),
                (f"part stability (noise std {parts.get('noise_std')})", "stability")]
        return [f"| {label} | {_number(parts.get(key, {}).get(EPIC))} | {_number(parts.get(key, {}).get(IDENTITY))} |"
                for label, key in rows]

    def _faithfulness_lines(self) -> list[str]:
        """The pixel-map table: RISE deletion/insertion AUC and the sanity checks' rank correlations, per method."""
        found = self.faithfulness
        if not found:
            return []
        sanity = self.sanity or {}
        randomised = sanity.get("randomisation", {})
        last = (sanity.get("steps") or [None])[-1]
        first = (sanity.get("steps") or [None])[0]
        lines = ["", f"Pixel maps on the same images (RISE, {found.get('steps')} steps; sanity: Spearman rho with the "
                 "trained model's map, lower is better):", "",
                 f"| method | deletion AUC (lower is better) | insertion AUC (higher is better) | rho, {first} "
                 f"randomised | rho, {last} randomised | rho, random other class |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for method in found.get("deletion", {}):
            steps = randomised.get(method, {})
            lines.append(f"| {method} | {_number(found['deletion'].get(method))} | "
                         f"{_number(found.get('insertion', {}).get(method))} | {_number(steps.get(first))} | "
                         f"{_number(steps.get(last))} | {_number(sanity.get('random_logit', {}).get(method))} |")
        constant = sorted(f"{method} ({check.removeprefix('randomised:')}: {count})"
                          for check, per in sanity.get("constant", {}).items() for method, count in per.items())
        if constant:
            lines += ["", "Images where a map was constant, so that no rank correlation exists (a map wiped out by "
                      "the randomisation; n/a above where every image's was): " + ", ".join(constant) + "."]
        road = found.get("road")
        if road:
            lines += ["", "ROAD (pytorch-grad-cam; the change of the class's probability, mean over 10-90 %: MoRF more "
                      "negative and LeRF nearer 0 are better):", "", "| method | ROAD MoRF | ROAD LeRF |",
                      "| --- | ---: | ---: |"]
            lines += [f"| {m} | {_number(v.get('morf'))} | {_number(v.get('lerf'))} |" for m, v in road.items()]
        return lines

    def _stability(self, perturbation: str, key: str) -> dict[str, Any]:
        return {view: self.stability.get(view, {}).get(perturbation, {}).get(key) for view in (EPIC, IDENTITY)}

    @staticmethod
    def _views(values: dict[str, Any]) -> tuple[Any, Any]:
        return values.get(EPIC), values.get(IDENTITY)

    def __repr__(self) -> str:
        numbers = ", ".join(f"{k}={_number(v)}" for k, v in self.headline().items() if v is not None)
        return f"EvaluationReport({self.num_samples} images, {numbers})"


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
