"""The bank atlas: a static site that shows every channel of a bank, browsable from ``file://``.

Why this shape: an ImageNet bank has 2,048 channels x 5 prototypes and 1,000 classes, so one
page per entity with inline images would be thousands of files repeating the same pictures.
Instead the atlas is one single-page app (``index.html`` + ``atlas.js`` + ``atlas.css``, hash
routes ``#/channel/12``, ``#/class/7``, ``#/search/dog``) over

* ``images/<key>.jpg``: each distinct prototype thumbnail once, the bank's JPEG bytes as they are
  (no re-encoding); crops are drawn by the browser from the thumbnail and the box, so there are
  no crop files at all;
* ``data/*.js``: the numbers, as small script files that call ``atlasChunk(kind, index, data)``.
  Browsers refuse ``fetch()`` of local JSON from ``file://``, but they do run ``<script src>``
  from it, so the app injects a chunk's script tag when a view first needs it.

Labels and sample names may contain anything (``<``, ``&``, any script): the app only ever
puts them in the page as text nodes, never as HTML.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..aliases import JSONDict
from ..atomic import write_atomic
from ..naming import display_name

if TYPE_CHECKING:  # annotations only: the bank is drawn here, never built
    from ..bank import PrototypeBank

logger = logging.getLogger(__name__)

CHANNELS_PER_CHUNK = 64
CLASSES_PER_CHUNK = 128
GRID_CROPS = 3
_ASSETS = ("atlas.js", "atlas.css")
#: The audit's page (:mod:`epic_hf.viz.audit_page`), linked from the atlas's bar when it sits beside it.
AUDIT_PAGE = "audit.html"
#: The link as the atlas writes it while there is no audit beside it.
HIDDEN_AUDIT_LINK = 'id="audit-link" hidden'


def write_atlas(
    bank: PrototypeBank,
    directory: str | Path,
    *,
    title: str | None = None,
    top_classes_per_channel: int = 5,
    top_channels_per_class: int = 8,
) -> Path:
    """Write the atlas of ``bank`` into ``directory``; returns the path of its ``index.html``.

    Open the returned file in a browser (no server needed). Files of an earlier atlas in the same
    directory are replaced (its ``data/`` and ``images/`` are emptied first, so a smaller bank leaves
    no stale chunks behind); a directory that holds no atlas is only ever added to.
    """
    if top_classes_per_channel < 1 or top_channels_per_class < 1:
        raise ValueError("top_classes_per_channel and top_channels_per_class must be at least 1")
    started = time.perf_counter()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous_atlas(root)
    title = title or _default_title(bank)
    missing = _write_images(bank, root / "images")
    evidence = _evidence(bank)
    reliance = evidence.clamp(min=0).sum(dim=0) if evidence is not None else None
    _write_chunk(root / "data" / "meta.js", "meta", 0, _meta(bank, title, evidence, missing))
    _write_chunk(root / "data" / "grid.js", "grid", 0, _grid(bank, evidence, reliance))
    top_classes = _top_k(evidence.t(), top_classes_per_channel) if evidence is not None else None
    for index, start in enumerate(range(0, bank.num_channels, CHANNELS_PER_CHUNK)):
        stop = min(start + CHANNELS_PER_CHUNK, bank.num_channels)
        _write_chunk(root / "data" / f"channels-{index:03d}.js", "channels", index,
                     _channel_chunk(bank, start, stop, top_classes))
    if evidence is not None:
        top_channels = _top_k(evidence, top_channels_per_class)
        for index, start in enumerate(range(0, evidence.shape[0], CLASSES_PER_CHUNK)):
            stop = min(start + CLASSES_PER_CHUNK, evidence.shape[0])
            _write_chunk(root / "data" / f"classes-{index:03d}.js", "classes", index,
                         _class_chunk(bank, start, stop, top_channels))
    assets = resources.files(__package__).joinpath("atlas_assets")
    for name in _ASSETS:
        write_atomic(root / name, assets.joinpath(name).read_bytes())
    template = assets.joinpath("index.html").read_text(encoding="utf-8")
    index_path = root / "index.html"
    page = template.replace("{{TITLE}}", html.escape(title))
    # an audit written into the same folder (epic-hf audit --output-dir) is linked; writing one later shows the link
    page = page.replace("{{AUDIT_HIDDEN}}", "" if (root / AUDIT_PAGE).is_file() else " hidden")
    write_atomic(index_path, page)
    logger.info("wrote the atlas of %d channels to %s in %.1f s", bank.num_channels, root,
                time.perf_counter() - started)
    return index_path


def _clear_previous_atlas(root: Path) -> None:
    """Empty ``data/`` and ``images/`` only when they are an atlas's (never a user's own folders)."""
    meta = root / "data" / "meta.js"
    if meta.is_file() and meta.read_bytes().startswith(b'atlasChunk("meta"'):
        shutil.rmtree(root / "data")
        shutil.rmtree(root / "images", ignore_errors=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "images").mkdir(exist_ok=True)


def _config(bank: PrototypeBank) -> JSONDict:
    """The bank's EpicConfig as a plain dict (fields read by name, missing ones as None)."""
    return bank.config.to_dict() if bank.config is not None else {}


def _default_title(bank: PrototypeBank) -> str:
    model = display_name(_config(bank).get("base_model_name_or_path"))
    return f"{model}: EPIC bank atlas" if model else "EPIC bank atlas"


def _write_images(bank: PrototypeBank, directory: Path) -> list[int]:
    """Each distinct prototype thumbnail once, byte for byte; returns the keys the bank lacks."""
    missing = []
    for key in torch.unique(bank.sample_keys).tolist():
        data = bank.thumbnails.get(int(key))
        if data is None:
            missing.append(int(key))
            continue
        write_atomic(directory / f"{int(key)}.jpg", data)
    if missing:
        logger.warning("the bank has no thumbnail for %d prototype sample(s), e.g. key %d: the atlas shows "
                       "a placeholder for them", len(missing), missing[0])
    return missing


def _evidence(bank: PrototypeBank) -> torch.Tensor | None:
    evidence = bank.class_evidence
    if evidence is None:
        return None
    evidence = evidence.detach().to(torch.float32).cpu()
    if evidence.dim() != 2 or evidence.shape[1] != bank.num_channels:
        raise ValueError(f"class_evidence must be (num_classes, {bank.num_channels}), got {tuple(evidence.shape)}")
    return torch.nan_to_num(evidence, nan=0.0, posinf=0.0, neginf=0.0)


def _top_k(values: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row, the indices and values of the ``k`` largest entries, largest first."""
    top = torch.topk(values, min(k, values.shape[1]), dim=1)
    return top.indices.tolist(), top.values.tolist()


def _num(value: float) -> float:
    """Four significant digits: enough to read and compare, and the data files stay small."""
    return float(f"{value:.4g}")


def _labels(bank: PrototypeBank, num_classes: int) -> list[str]:
    names = {int(k): str(v) for k, v in (bank.id2label or {}).items()}
    return [names.get(index, f"class {index}") for index in range(num_classes)]


def _meta(bank: PrototypeBank, title: str, evidence: torch.Tensor | None, missing: list[int]) -> JSONDict:
    """What every view needs: sizes, labels, where the chunks are, and a summary of the fit."""
    names = bank.id2label or {}
    num_classes = evidence.shape[0] if evidence is not None else (max(map(int, names)) + 1 if names else 0)
    counts = bank.class_counts.to(torch.int64).tolist() if bank.class_counts is not None else None
    return {
        "title": title, "numChannels": bank.num_channels, "perChannel": bank.prototypes_per_channel,
        "inputSize": list(bank.input_size), "gridSize": list(bank.grid_size),
        "numClasses": num_classes, "labels": _labels(bank, num_classes), "counts": counts,
        "hasEvidence": evidence is not None, "channelsPerChunk": CHANNELS_PER_CHUNK,
        "classesPerChunk": CLASSES_PER_CHUNK, "missing": missing, "summary": _summary(bank),
        "channelParts": {channel: [str(named[0]), round(float(named[1]), 2)]
                         for channel, named in bank.config.channel_parts.items()},
    }


def _summary(bank: PrototypeBank) -> list[list[str]]:
    """(name, value) pairs for the header line, from whatever the bank's config has."""
    config = _config(bank)
    pairs = []
    model = display_name(config.get("base_model_name_or_path"))  # never a path of the author's disk
    if model:
        pairs.append(["model", model])
    if config.get("model_type"):
        pairs.append(["type", str(config["model_type"])])
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        dataset = " / ".join(str(display_name(dataset[k])) for k in ("name", "split") if dataset.get(k))
    if dataset:
        pairs.append(["dataset", str(dataset)])
    pairs.append(["channels", f"{bank.num_channels} x {bank.prototypes_per_channel} prototypes"])
    before, after = config.get("purity_before"), config.get("purity_after")
    if after is not None:
        purity = f"{float(after):.3f}" if before is None else f"{float(before):.3f} -> {float(after):.3f}"
        pairs.append(["purity", purity])
    return pairs


def _grid(bank: PrototypeBank, evidence: torch.Tensor | None, reliance: torch.Tensor | None) -> JSONDict:
    """Per channel: how much the classes rely on it, the class it drives most, its top crops."""
    keys = bank.sample_keys[:, :GRID_CROPS].tolist()
    boxes = bank.boxes[:, :GRID_CROPS].to(torch.int64).tolist()
    scores = bank.scores[:, 0].tolist() if bank.prototypes_per_channel else [0.0] * bank.num_channels
    top_class = evidence.argmax(dim=0).tolist() if evidence is not None and evidence.shape[0] else None
    rows = []
    for channel in range(bank.num_channels):
        rows.append([
            _num(float(reliance[channel])) if reliance is not None else 0,
            top_class[channel] if top_class is not None else -1,
            _num(scores[channel]),
            [[key, *box] for key, box in zip(keys[channel], boxes[channel])],
        ])
    return {"rows": rows}


def _channel_chunk(bank: PrototypeBank, start: int, stop: int,
                   top_classes: tuple[list[list[int]], list[list[float]]] | None) -> JSONDict:
    """Channels ``start`` to ``stop``: every prototype, the classes each drives most, sample names."""
    keys = bank.sample_keys[start:stop].tolist()
    scores = bank.scores[start:stop].tolist()
    boxes = bank.boxes[start:stop].to(torch.int64).tolist()
    items, names = [], {}
    for row in range(stop - start):
        prototypes = [[key, _num(score), *box] for key, score, box in zip(keys[row], scores[row], boxes[row])]
        for key in keys[row]:
            if key in bank.sample_names:
                names[str(key)] = str(bank.sample_names[key])
        classes = []
        if top_classes is not None:
            indices, values = top_classes
            classes = [[k, _num(v)] for k, v in zip(indices[start + row], values[start + row])]
        items.append({"p": prototypes, "c": classes})
    return {"start": start, "items": items, "names": names}


def _class_chunk(bank: PrototypeBank, start: int, stop: int,
                 top_channels: tuple[list[list[int]], list[list[float]]]) -> JSONDict:
    """Classes ``start`` to ``stop``: the channels each relies on most, with their evidence."""
    indices, values = top_channels
    items = [[[c, _num(v)] for c, v in zip(indices[k], values[k])] for k in range(start, stop)]
    return {"start": start, "items": items}


def _write_chunk(path: Path, kind: str, index: int, data: JSONDict) -> None:
    # ensure_ascii keeps the files independent of the page's charset (and of U+2028 in names).
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    write_atomic(path, f"atlasChunk({json.dumps(kind)},{index},{text});\n", encoding="ascii")
