"""One audit, end to end: the samples' numbers (reused or one pass), the examined channels' peaks, the findings.

Cost: on the data the bank was fit on, with the fit's ``output_dir``, the audit reads the fit's
pooled index (:mod:`.index`) and runs the backbone only on the top-N images of the channels it
examines (each class's strongest few), for the cell where each peaks. Everything else (logits,
class evidence, top-N mining, confusions, label checks) is arithmetic on the pooled vectors.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from ..atomic import write_atomic
from ..backbone import FrozenClassifier
from ..bank import PrototypeBank
from ..data import DatasetLike, ImageSource, open_source
from ..decompose import Decomposer
from ..disentangle import cell_box, purity_of_pairs
from ..fit.bank_builder import class_evidence
from ..fit.index import KeptIndex, PooledIndex, top_rows
from ..images import encode_jpeg
from ..viz.audit_page import write_audit_page
from .config import AuditConfig
from .findings import (
    Scene,
    class_drivers,
    confusion_matrix,
    evidence_shares,
    fixed_position,
    off_class,
    shared_confusion,
    suspect_labels,
)
from .index import AuditData, read_samples
from .report import KINDS, AuditReport, Finding

logger = logging.getLogger(__name__)

JSON_NAME = "audit.json"
HTML_NAME = "audit.html"
#: Long side and JPEG quality of the pictures the report carries (a bank's thumbnail defaults).
THUMBNAIL_SIZE, THUMBNAIL_QUALITY = 112, 80
#: A suspect label's carrying channels shown with their prototypes, and prototypes shown per channel.
CARRIERS_SHOWN = 3


class Auditable(Protocol):
    """What an audit reads from an explainer (an :class:`~epic_hf.EpicExplainer`)."""

    @property
    def classifier(self) -> FrozenClassifier: ...

    @property
    def decomposer(self) -> Decomposer: ...

    @property
    def bank(self) -> PrototypeBank | None: ...

    #: the last fit's output_dir and the pooled index it kept in memory (None where there was no such fit)
    fit_dir: Path | None
    fit_index: KeptIndex | None


def run_audit(explainer: Auditable, dataset: DatasetLike, config: AuditConfig | None = None, *,
              fit_dir: str | Path | None = None, output_dir: str | Path | None = None,
              kept_index: KeptIndex | None = None, **overrides: Any) -> AuditReport:
    """Find what the model relies on: fixed-position shortcuts, off-class channels, shared confusions, suspect labels.

    ``dataset``: anything ``fit`` reads; labels come from its label column. ``fit_dir``: the
    output_dir of the fit that made the bank, or ``kept_index``: the index that fit kept in memory
    (``FitReport.kept_index``); when ``dataset`` is the data it was fit on, the fit's pooled index is
    reused (no backbone pass over the data). ``output_dir``: where
    ``audit.json`` and ``audit.html`` are written. Definitions: docs/audit.md.
    """
    settings = (config or AuditConfig()).replace(**overrides)
    started = time.perf_counter()
    source = open_source(dataset, settings.data)
    classifier = explainer.classifier
    data = read_samples(classifier, source, settings.data, settings.batch_size, fit_dir, kept_index)
    decomposer = explainer.decomposer
    U = decomposer.U.detach().cpu().float()
    weight = decomposer.weight.detach().cpu().double()
    scene = scene_of(data, U, weight, classifier, settings)
    orthogonal = explainer.bank is None or explainer.bank.matrix == "orthogonal"
    scene.cells = _peak_cells(data, scene, U, orthogonal, settings.batch_size)
    predictions = data.predictions
    found = (fixed_position(scene, settings) + off_class(scene, settings)
             + shared_confusion(scene, predictions, settings)
             + suspect_labels(scene, predictions, settings))
    found.sort(key=lambda finding: (KINDS.index(finding.kind), -finding.score))
    thumbnails, names, input_size = pictures_of(classifier, source, {key for f in found for key in f.samples})
    for finding in found:  # a suspect sample is named as a person finds it: by its file, where it has one
        key = finding.samples[0] if finding.kind == "suspect_label" else None
        if key is not None and key in names and not names[key].endswith(f"#{key}"):
            finding.message = finding.message.replace(f"sample {key} ", f"sample {key}, {names[key]}, ", 1)
    _add_boxes(found, scene, input_size)
    carried = _carrier_prototypes(found, explainer.bank, input_size)
    report = AuditReport(
        findings=found, labels=scene.names, num_samples=len(data.keys), input_size=input_size,
        grid_size=data.grid, settings={k: v for k, v in settings.to_dict().items() if k != "data"},
        reused_index=data.reused_index, backbone_images=data.store.computed + (0 if data.reused_index else
                                                                               len(data.keys)),
        seconds=time.perf_counter() - started, notes=_notes(source, data, classifier),
        confusion=confusion_matrix(data.labels, predictions, len(scene.names)).tolist(),
        model={"base_model": classifier.reference.name_or_path, "model_type": classifier.model_type,
               "num_channels": classifier.num_channels}, sample_names=names, thumbnails=thumbnails,
        prototype_thumbnails=carried)
    logger.info("audit: %d findings on %d samples in %.1f s (backbone on %d images)", len(found), report.num_samples,
                report.seconds, report.backbone_images)
    if output_dir is not None:
        write_audit(report, output_dir)
    return report


def write_audit(report: AuditReport, directory: str | Path) -> Path:
    """``audit.json`` and ``audit.html`` (with its pictures) into ``directory``; returns the HTML's path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / JSON_NAME, report.to_json())
    return write_audit_page(report.to_dict(), report.thumbnails, root / HTML_NAME, report.prototype_thumbnails)


def scene_of(data: AuditData, U: torch.Tensor, weight: torch.Tensor, classifier: FrozenClassifier,
           settings: AuditConfig) -> Scene:
    """The class evidence, drivers, top-N per channel and what the detectors read per sample."""
    num_classes = weight.shape[0]
    index = PooledIndex(data.vectors, data.keys, data.grid, data.predictions)
    evidence, _ = class_evidence(index, U, weight, num_classes)
    assert evidence is not None  # the index holds predictions
    share = evidence_shares(evidence)
    drivers = class_drivers(share, settings.channels_per_class, settings.min_evidence_share)
    _, rows = top_rows(data.vectors, U, settings.top_n)
    names = [classifier.id2label.get(k, f"class {k}") for k in range(num_classes)]
    return Scene(share=share, drivers=drivers, top_keys=data.keys[rows], cells={}, grid=data.grid, keys=data.keys,
                 labels=data.labels, probabilities=data.probabilities, vectors=data.vectors, U=U, weight=weight,
                 names=names)


def _peak_cells(data: AuditData, scene: Scene, U: torch.Tensor, orthogonal: bool,
                chunk: int) -> dict[int, torch.Tensor]:
    """Channel -> (N,) peak cell of ``argmax_hw G_c`` on each of its top-N images, for every examined channel.

    The backbone runs only on those images whose maps the store does not already hold.
    """
    examined = sorted({c for channels in scene.drivers.values() for c in channels})
    if not examined:
        return {}
    keys = scene.top_keys[examined]
    pair_keys = keys.reshape(-1).tolist()
    pair_channels = torch.tensor(examined).repeat_interleave(keys.shape[1]).tolist()
    data.store.prefetch(pair_keys)
    _, cells = purity_of_pairs(data.store.maps, pair_keys, pair_channels, U, orthogonal, chunk)
    cells = cells.reshape(keys.shape)
    return {channel: cells[row] for row, channel in enumerate(examined)}


def pictures_of(classifier: FrozenClassifier, source: ImageSource,
                keys: set[int]) -> tuple[dict[int, bytes], dict[int, str], tuple[int, int]]:
    """JPEG pictures of the model's input for the samples ``keys``, their display names (file name, label), and
    the input size boxes refer to."""
    pictures: dict[int, bytes] = {}
    names: dict[int, str] = {}
    size: tuple[int, int] | None = None
    for key, image, name in source.iter_named_images(sorted(keys)):
        if name is not None:
            names[key] = name
        pixel_values = classifier.preprocess([image])[0]
        size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        pictures[key] = encode_jpeg(classifier.to_image(pixel_values), THUMBNAIL_SIZE, THUMBNAIL_QUALITY)
    if size is None:
        size = tuple(int(v) for v in classifier.probe_pixel_values().shape[-2:])  # type: ignore[assignment]
    return pictures, names, size  # type: ignore[return-value]


def _carrier_prototypes(found: list[Finding], bank: PrototypeBank | None,
                        input_size: tuple[int, int]) -> dict[int, bytes]:
    """Each suspect label gets the bank's top prototypes of the channels that carry its prediction (at most
    :data:`CARRIERS_SHOWN` of each); returns their thumbnails, by the bank's sample keys."""
    if bank is None:
        return {}
    scale_y, scale_x = input_size[0] / bank.input_size[0], input_size[1] / bank.input_size[1]
    thumbnails: dict[int, bytes] = {}
    for finding in found:
        if finding.kind != "suspect_label":
            continue
        for channel in finding.channels[:CARRIERS_SHOWN]:
            keys = bank.sample_keys[channel, :CARRIERS_SHOWN].tolist()
            boxes = [[round(x0 * scale_x), round(y0 * scale_y), round(x1 * scale_x), round(y1 * scale_y)]
                     for x0, y0, x1, y1 in bank.boxes[channel, :CARRIERS_SHOWN].tolist()]
            finding.prototypes.append({"channel": channel, "samples": keys, "boxes": boxes})
            thumbnails.update({key: bank.thumbnails[key] for key in keys if key in bank.thumbnails})
    return thumbnails


def _add_boxes(found: list[Finding], scene: Scene, input_size: tuple[int, int]) -> None:
    """Each channel finding's samples get the box of the cell where the channel peaks on them."""
    for finding in found:
        peaks = scene.cells.get(finding.channel)
        if finding.kind not in ("fixed_position", "off_class") or peaks is None:
            continue
        finding.boxes = [list(cell_box(*divmod(int(cell), scene.grid[1]), scene.grid, input_size))
                         for cell in peaks.tolist()]


def _notes(source: ImageSource, data: AuditData, classifier: FrozenClassifier) -> list[str]:
    notes = []
    if source.label_column is None:
        notes.append("the dataset has no label column (pass label_column=...): off-class channels, confusions and "
                     "suspect labels need labels and were not looked for")
    elif bool((data.labels < 0).all()):
        notes.append("no label of the dataset names a class of the model: label checks were skipped")
    if data.skipped:
        notes.append(f"{len(data.skipped)} unreadable samples were skipped")
    if data.reused_index:
        notes.append("the fit's pooled index was reused: no backbone pass over the data")
    elif classifier.adapter.has_extra_logits:
        notes.append("the audit ran its own pass over the data: the model's logits have a CLS term, which a fit's "
                     "pooled index does not keep")
    else:
        notes.append("the audit ran its own pass over the data")
    return notes
