"""One evaluation, end to end: stream the data once through the frozen classifier, then score prototypes.

The per-image metrics (stability, deletion) and the running top-N prototypes per channel are
accumulated batch by batch in float64; with ``output_dir`` the accumulators are written after
every batch, so a killed run resumes where it stopped and a capped run (``max_samples``) can be
extended later. Purity and class consistency need the whole data's top-N, so they are computed
once the stream ends, in one more pass over the prototype images only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from ..atomic import write_atomic
from ..backbone import FrozenClassifier
from ..bank import PrototypeBank
from ..data import DatasetLike, ImageSource, SkippedSamples, open_source
from ..decompose import Decomposer
from ..locks import DirectoryLock
from ..mining import TopN
from ..progress import progress_bar
from .baselines import ROAD_EVALUATED, road_scores
from .channels import EPIC, IDENTITY, VIEWS, ChannelView, read
from .config import EvaluationConfig, tensor_digest
from .consistency import class_consistency, lookup_labels
from .curves import CURVES_NAME, write_curves
from .deletion import Deletion
from .draws import draw
from .faithfulness import Faithfulness, Scorer, curves
from .maps import INTEGRATED_GRADIENTS, OWN_METHODS, MapMaker
from .parts import ClassSums, check_parts_column, part_report
from .purity import PairSet, bank_matches, describe, prototype_pass
from .report import EvaluationReport
from .sanity import Sanity, cascade, maker_for, other_classes
from .stability import PERTURBATIONS, DecisionKept, Stability, add_noise, cell_offset, intensity_scale, shift
from .state import REPORT_NAME, TABLE_NAME, EvaluationState

logger = logging.getLogger(__name__)

#: Prototypes mined per channel when the explainer has no bank to take the count from.
DEFAULT_PROTOTYPES = 5


class Explainable(Protocol):
    """What an evaluation reads from an explainer (an :class:`~epic_hf.EpicExplainer`)."""

    @property
    def classifier(self) -> FrozenClassifier: ...

    @property
    def decomposer(self) -> Decomposer: ...

    @property
    def matrix(self) -> str: ...

    @property
    def bank(self) -> PrototypeBank | None: ...


def evaluate_explainer(explainer: Explainable, dataset: DatasetLike, config: EvaluationConfig | None = None, *,
                       output_dir: str | Path | None = None, **overrides: Any) -> EvaluationReport:
    """Measure purity, class consistency, stability and exact deletion, under U and under U = I.

    ``dataset``: anything ``fit`` reads (Dataset, IterableDataset, DatasetDict, image folder,
    save_to_disk folder, Parquet/CSV/JSON-lines file, Hub id). Settings come from ``config`` (an
    :class:`EvaluationConfig`) with ``overrides`` on top, data settings included
    (``evaluate_explainer(explainer, ds, top_k=8, split="test")``). The bank's own prototypes
    are scored only on the dataset it was fit on (checked against its thumbnails). See
    docs/evaluation.md for the definitions.
    """
    settings = (config or EvaluationConfig()).replace(**overrides)
    bank = explainer.bank
    if settings.prototypes_per_channel is None:
        settings = settings.replace(prototypes_per_channel=bank.prototypes_per_channel if bank is not None
                                    else DEFAULT_PROTOTYPES)
    source = open_source(dataset, settings.data)
    with DirectoryLock(output_dir, "evaluation") if output_dir is not None else contextlib.nullcontext():
        return _evaluate(explainer, bank, source, settings, output_dir)


def _evaluate(explainer: Explainable, bank: PrototypeBank | None, source: ImageSource, settings: EvaluationConfig,
              output_dir: str | Path | None) -> EvaluationReport:
    run = Evaluation(explainer.classifier, explainer.decomposer, explainer.matrix, bank, source, settings)
    state = EvaluationState.open(output_dir, run.fingerprint() if output_dir is not None else {})
    max_samples = settings.max_samples
    if max_samples is not None and state.consumed > max_samples:
        raise ValueError(f"{output_dir} already holds an evaluation of {state.consumed} samples; pass max_samples of "
                         f"at least {state.consumed}, or use another output_dir")
    if state.covers(max_samples):
        logger.info("%s already holds this evaluation's result", output_dir)
        return EvaluationReport.from_dict(state.report or {})
    run.load(state)
    run.stream(state, output_dir)
    report = run.finish(state)
    state.report = report.to_dict()
    state.save(output_dir)
    if output_dir is not None:
        write_atomic(Path(output_dir) / REPORT_NAME, report.to_json())
        write_atomic(Path(output_dir) / TABLE_NAME, report.to_markdown())
        if report.faithfulness:
            write_curves(report.faithfulness, Path(output_dir) / CURVES_NAME)
    return report


class Evaluation:
    """The accumulators of one evaluation and the two passes that fill them."""

    def __init__(self, classifier: FrozenClassifier, decomposer: Decomposer, matrix: str,
                 bank: PrototypeBank | None, source: ImageSource, settings: EvaluationConfig) -> None:
        self.classifier, self.bank, self.source, self.settings = classifier, bank, source, settings
        head = classifier.head()
        self.bias = head.bias.double()
        self.matrix = matrix
        self.views = {EPIC: ChannelView(EPIC, decomposer.U.float(), decomposer.weight.double(),
                                        matrix == "orthogonal"),
                      IDENTITY: ChannelView(IDENTITY, None, head.weight.double(), True)}
        self.scale = intensity_scale(classifier)
        dim = classifier.num_channels
        self.stability = {v: {p: Stability() for p in PERTURBATIONS} for v in VIEWS}
        self.decision = {p: DecisionKept() for p in PERTURBATIONS}
        self.deletion = {v: Deletion() for v in VIEWS}
        self.mined = {v: TopN(dim, int(settings.prototypes_per_channel or DEFAULT_PROTOTYPES)) for v in VIEWS}
        self.skipped = SkippedSamples()
        self.faithfulness = Faithfulness(settings.faithfulness_steps) if settings.faithfulness else None
        self.sanity = Sanity() if settings.faithfulness else None
        self.class_sums = ClassSums() if settings.parts else None
        if settings.parts:
            check_parts_column(source, settings.parts_column)
        self.maps = MapMaker(classifier, self.views[EPIC], self.views[IDENTITY], settings.top_k, settings.seed)
        self._methods: list[str] | None = None
        self._cascade: list[tuple[str, MapMaker]] | None = None
        self.faithfulness_notes: list[str] = []

    def fingerprint(self) -> dict[str, Any]:
        """What the numbers depend on: a resumed run must agree on all of it."""
        source = self.source
        return {"base_model_fingerprint": self.classifier.fingerprint, "model_type": self.classifier.model_type,
                "matrix": self.matrix, "U": tensor_digest(self.views[EPIC].transform()),
                "dataset": source.fingerprint(), "split": source.split, "image_column": source.image_column,
                "key_column": source.key_column, "label_column": source.label_column,
                **self._result_settings()}

    def _result_settings(self) -> dict[str, Any]:
        """The settings that change the numbers; without faithfulness its settings are left out (older runs resume)."""
        found = self.settings.result_settings()
        if not self.settings.faithfulness:
            found = {k: v for k, v in found.items() if k not in ("faithfulness", "faithfulness_steps")}
        if not (self.settings.faithfulness and self.settings.road):
            found.pop("road", None)
        if not self.settings.parts:
            found = {k: v for k, v in found.items() if not k.startswith("parts")}
        return found

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stability": {v: {p: s.state_dict() for p, s in per.items()} for v, per in self.stability.items()},
                "decision": {p: d.state_dict() for p, d in self.decision.items()},
                "deletion": {v: d.state_dict() for v, d in self.deletion.items()},
                "mined": {v: m.state_dict() for v, m in self.mined.items()},
                **({"faithfulness": self.faithfulness.state_dict()} if self.faithfulness is not None else {}),
                **({"sanity": self.sanity.state_dict()} if self.sanity is not None else {}),
                **({"parts": self.class_sums.state_dict()} if self.class_sums is not None else {})}

    def load(self, state: EvaluationState) -> None:
        stored = state.accumulators
        self.skipped.keys = list(state.skipped_keys)
        if not stored:
            return
        self.stability = {v: {p: Stability.from_state(s) for p, s in per.items()}
                          for v, per in stored["stability"].items()}
        self.decision = {p: DecisionKept.from_state(d) for p, d in stored["decision"].items()}
        self.deletion = {v: Deletion.from_state(d) for v, d in stored["deletion"].items()}
        self.mined = {v: TopN.from_state(m) for v, m in stored["mined"].items()}
        if self.faithfulness is not None and "faithfulness" in stored:
            self.faithfulness = Faithfulness.from_state(stored["faithfulness"])
        if self.sanity is not None and "sanity" in stored:
            self.sanity = Sanity.from_state(stored["sanity"])
        if self.class_sums is not None and "parts" in stored:
            self.class_sums = ClassSums.from_state(stored["parts"])

    # -- the stream -------------------------------------------------------------------------
    def stream(self, state: EvaluationState, output_dir: str | Path | None) -> None:
        """Every batch after ``state.consumed`` up to ``max_samples``; the state is saved after each."""
        cap = self.settings.max_samples
        total = cap if cap is not None else (None if self.source.streaming else len(self.source))
        state.report = None
        bar = progress_bar(total=total, initial=state.consumed, desc="EPIC evaluation", unit="img")
        started = time.perf_counter()
        for keys, images, consumed in self.source.batches(self.settings.batch_size, self.skipped,
                                                          start=state.consumed, stop=cap):
            if keys:
                self.batch(keys, images)
            bar.update(consumed - state.consumed)
            state.consumed, state.skipped_keys = consumed, list(self.skipped.keys)
            state.accumulators = self.state_dict()
            state.seconds += time.perf_counter() - started
            started = time.perf_counter()
            state.save(output_dir)
        bar.close()
        state.exhausted = cap is None or state.consumed < cap

    @torch.no_grad()
    def batch(self, keys: list[int], images: list[Image.Image]) -> None:
        """Accumulate one batch: clean, noisy and shifted inputs, read under both views."""
        settings = self.settings
        pixel_values = self.classifier.preprocess(images)
        depth, height, width = (int(size) for size in pixel_values.shape[1:])
        draws = draw(settings.seed, keys, (depth, height, width), settings.noise_std, self.scale,
                     self.classifier.num_channels, settings.random_draws)
        inputs = {"clean": pixel_values, "noise": add_noise(pixel_values, draws.noise),
                  "shift": shift(pixel_values, settings.shift_pixels)}
        features = {name: self.classifier.features(values) for name, values in inputs.items()}
        fmaps = {name: found.fmap.float() for name, found in features.items()}
        extras = {name: found.extra_logits.double() if found.extra_logits is not None else 0.0
                  for name, found in features.items()}
        identity = self.views[IDENTITY]
        logits = {name: fmaps[name].double().mean(dim=(2, 3)) @ identity.weight.T + self.bias + extras[name]
                  for name in inputs}
        targets = logits["clean"].argmax(dim=1)
        if self.class_sums is not None:
            self.class_sums.update(targets, fmaps["clean"].double().mean(dim=(2, 3)))
        for name in PERTURBATIONS:
            self.decision[name].update(targets, logits[name])
        grid = (int(fmaps["clean"].shape[-2]), int(fmaps["clean"].shape[-1]))
        offset = cell_offset(settings.shift_pixels, (height, width), grid)
        for view in VIEWS:
            channels = self.views[view]
            readouts = {name: read(channels, fmaps[name], targets, settings.top_k) for name in inputs}
            self.stability[view]["noise"].update(readouts["clean"], readouts["noise"])
            self.stability[view]["shift"].update(readouts["clean"], readouts["shift"], offset)
            view_logits = readouts["clean"].pooled @ channels.weight.T + self.bias + extras["clean"]
            self.deletion[view].update(channels.weight, readouts["clean"], view_logits, targets, draws.orders)
            self.mined[view].update(keys, readouts["clean"].pooled.T)
        if self.faithfulness is not None:
            self.pixel_maps(keys, pixel_values, targets, fmaps["clean"])

    # -- pixel maps: faithfulness and sanity --------------------------------------------------------
    def methods(self) -> list[str]:
        """The compared methods: EPIC's own, then Grad-CAM and Integrated Gradients where their library imports."""
        if self._methods is None:
            from .baselines import COMPARE_HINT
            from .maps import GRADCAM

            self._methods = list(OWN_METHODS)
            for method, module in ((GRADCAM, "pytorch_grad_cam"), (INTEGRATED_GRADIENTS, "captum")):
                try:
                    __import__(module)
                except ImportError:
                    logger.warning("%s is not installed: %s is left out of the faithfulness table (%s)",
                                   module, method, COMPARE_HINT)
                else:
                    self._methods.append(method)
        return self._methods

    def cascade(self) -> list[tuple[str, MapMaker]]:
        """The randomised copies of the model (head first), built once per run."""
        if self._cascade is None:
            self._cascade = [(label, maker_for(copy, self.maps))
                             for label, copy in cascade(self.classifier, self.settings.seed)]
        return self._cascade

    def pixel_maps(self, keys: list[int], pixel_values: torch.Tensor, targets: torch.Tensor,
                   fmap: torch.Tensor) -> None:
        """Deletion/insertion curves of every method's map, and the sanity checks' correlations, for one batch."""
        assert self.faithfulness is not None and self.sanity is not None
        maps: dict[str, torch.Tensor] = {}
        for method in list(self.methods()):
            try:
                maps.update(self.maps.maps([method], keys, pixel_values, targets, fmap))
            except Exception as error:  # a baseline that does not support this model is left out, said why
                if method in OWN_METHODS:
                    raise
                note = f"{method} does not run on this model and is left out of the pixel-map table ({error})"
                logger.warning("%s", note)
                self.methods().remove(method)
                self.faithfulness_notes.append(note)
        methods = self.methods()
        scorer = Scorer(self.classifier, self.settings.batch_size)
        self.faithfulness.update(curves(scorer, pixel_values, targets, maps, self.settings.faithfulness_steps))
        if self.settings.road:
            self.faithfulness.update_road(road_scores(self.classifier, pixel_values, targets, maps, ROAD_EVALUATED,
                                                      self.settings.seed), len(keys))
        # Integrated Gradients costs a backward per path step: it is scored for faithfulness only
        checked = [m for m in methods if m != INTEGRATED_GRADIENTS]
        reference = {m: maps[m] for m in checked}
        for label, maker in self.cascade():
            self.sanity.update(reference, maker.maps(checked, keys, pixel_values, targets), f"randomised:{label}")
        num_classes = len(self.bias)
        if num_classes > 1:
            others = other_classes(self.settings.seed, keys, targets, num_classes)
            self.sanity.update(reference, self.maps.maps(checked, keys, pixel_values, others, fmap), "random_logit")

    # -- after the stream -------------------------------------------------------------------
    def finish(self, state: EvaluationState) -> EvaluationReport:
        """Purity and class consistency of the prototype sets, then the report."""
        if state.consumed - len(self.skipped.keys) <= 0:
            raise ValueError("no readable images were evaluated: the dataset is empty or every image is unreadable")
        epic = self.views[EPIC]
        sets = [PairSet(EPIC, self.mined[EPIC].keys, epic.transform(), epic.orthogonal),
                PairSet(IDENTITY, self.mined[IDENTITY].keys, self.views[IDENTITY].transform(), True)]
        if self.bank is not None:
            sets.append(PairSet("bank", self.bank.sample_keys, epic.transform(), epic.orthogonal))
        passed = prototype_pass(self.classifier, self.source, sets, self.settings.batch_size, self.bank)
        notes: list[str] = list(self.faithfulness_notes)
        bank_ok = False
        if self.bank is not None:
            bank_ok, why = bank_matches(passed, self.bank, self.source)
            if not bank_ok:
                notes.append(f"{why}; the bank's own purity and class consistency are not reported")
                logger.warning("%s", notes[-1])
        else:
            notes.append("the explainer has no bank: only the prototypes mined on this data are scored")
        config = self.bank.config if self.bank is not None else None
        purity = {"recorded_before": getattr(config, "purity_before", None),
                  "recorded_after": getattr(config, "purity_after", None),
                  "bank": passed.purity.get("bank") if bank_ok else None,
                  "mined": {EPIC: passed.purity[EPIC], IDENTITY: passed.purity[IDENTITY]},
                  "bank_check": describe(passed)}
        return EvaluationReport(
            model=self._model(), settings=self._settings(), num_samples=state.consumed - len(self.skipped.keys),
            num_skipped=len(self.skipped.keys), purity=purity, consistency=self._consistency(bank_ok, notes),
            stability={v: {p: s.result() for p, s in per.items()} for v, per in self.stability.items()},
            decision_kept={p: d.result() for p, d in self.decision.items()},
            deletion={v: d.result() for v, d in self.deletion.items()}, notes=notes,
            skipped_keys=list(self.skipped.keys), seconds=state.seconds,
            faithfulness=self.faithfulness.result() if self.faithfulness is not None else None,
            sanity=self.sanity.result([label for label, _ in self.cascade()]) if self.sanity is not None else None,
            parts=self._parts(state, notes))

    def _parts(self, state: EvaluationState, notes: list[str]) -> dict[str, Any] | None:
        """``report.parts`` (parts.py): one more pass over the records the stream read, when ``parts`` is set."""
        if self.class_sums is None:
            return None
        return part_report(self.classifier, self.source, self.views, {v: self.mined[v].keys for v in VIEWS},
                           self.class_sums, self.settings, state.consumed, notes)

    def _consistency(self, bank_ok: bool, notes: list[str]) -> dict[str, Any]:
        column = self.source.label_column
        empty = {"label_column": column, "bank": None, "mined": {EPIC: None, IDENTITY: None}}
        if column is None:
            notes.append("the dataset has no label column (pass label_column=...): class consistency not measured")
            return empty
        key_sets = {v: self.mined[v].keys for v in VIEWS}
        if bank_ok and self.bank is not None:
            key_sets["bank"] = self.bank.sample_keys
        labels = lookup_labels(self.source, torch.cat([k.reshape(-1) for k in key_sets.values()]).tolist())
        found = {name: class_consistency(keys, labels) for name, keys in key_sets.items()}
        return {"label_column": column, "bank": found["bank"]["class_consistency"] if "bank" in found else None,
                "mined": {v: found[v]["class_consistency"] for v in VIEWS}}

    def _model(self) -> dict[str, Any]:
        return {"base_model": self.classifier.reference.name_or_path, "model_type": self.classifier.model_type,
                "num_channels": self.classifier.num_channels, "matrix": self.matrix}

    def _settings(self) -> dict[str, Any]:
        source = self.source
        settings = {k: v for k, v in self.settings.to_dict().items() if k != "data"}
        return {**json.loads(json.dumps(settings)), "dataset": source.describe(), "label_column": source.label_column}

