"""Two banks on the same data: which channels are the same concept, which concepts one has alone, which classes moved.

Two models (or one before and after fine-tuning) have channels in no common order and, in
general, of no common basis, so channels are matched by what they fire on: the Jaccard index of
their top-N sample sets on the shared data, matched one to one greedily, highest overlap first. A
channel that drives a class in one model and overlaps no channel of the other by at least
:data:`MATCH_OVERLAP` is a concept found only there. A class's evidence *moved* by
``1 - Jaccard`` of the samples its strongest channels fire on in A and in B.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomic
from ..data import DatasetLike, open_source
from ..viz.compare_page import PAIRS_SHOWN, PICTURES_SHOWN, write_compare_page
from .config import AuditConfig
from .findings import Scene
from .index import read_samples
from .report import CompareReport
from .runner import Auditable, pictures_of, scene_of

JSON_NAME = "compare.json"
HTML_NAME = "compare.html"

#: Least top-N overlap (Jaccard) for two channels to count as one concept.
MATCH_OVERLAP = 0.2


def compare_banks(a: Auditable, b: Auditable, dataset: DatasetLike, config: AuditConfig | None = None, *,
                  fit_dirs: tuple[str | Path | None, str | Path | None] = (None, None), **overrides: Any
                  ) -> CompareReport:
    """Compare explainer ``a``'s bank with ``b``'s on ``dataset``: each model's fit index (kept in memory by its
    last fit, else in ``fit_dirs``, by default that fit's output_dir) is reused where it is this data's."""
    settings = (config or AuditConfig()).replace(**overrides)
    source = open_source(dataset, settings.data)
    scenes = []
    for explainer, fit_dir in zip((a, b), fit_dirs):
        data = read_samples(explainer.classifier, source, settings.data, settings.batch_size,
                            fit_dir if fit_dir is not None else explainer.fit_dir, explainer.fit_index)
        decomposer = explainer.decomposer
        scenes.append(scene_of(data, decomposer.U.detach().cpu().float(), decomposer.weight.detach().cpu().double(),
                               explainer.classifier, settings))
    first, second = scenes
    if first.keys.shape != second.keys.shape or not bool((first.keys == second.keys).all()):
        raise ValueError("the two models read different samples of the data (unreadable images differ?)")
    overlap = overlaps(first.top_keys, second.top_keys)
    matches = match(overlap)
    shared = [_shared(first.top_keys[a], second.top_keys[b]) for a, b, _ in matches]
    only_a, only_b = _alone(first, overlap.amax(dim=1)), _alone(second, overlap.amax(dim=0))
    # pictures of what the page shows: the first pairs' shared images and the lone concepts' top images
    wanted = {key for keys in shared[:PAIRS_SHOWN] for key in keys}
    wanted |= {key for row in only_a + only_b for key in row["samples"]}
    thumbnails, names, _ = pictures_of(a.classifier, source, wanted)
    return CompareReport(matches=matches, only_a=only_a, only_b=only_b, moved=_moved(first, second),
                         labels=first.names, num_samples=len(first.keys),
                         settings={k: v for k, v in settings.to_dict().items() if k != "data"}, shared=shared,
                         models=[str(e.classifier.reference.name_or_path or "") for e in (a, b)], sample_names=names,
                         match_overlap=MATCH_OVERLAP, thumbnails=thumbnails)


def write_compare(report: CompareReport, directory: str | Path) -> Path:
    """``compare.json`` and ``compare.html`` (with its pictures) into ``directory``; returns the HTML's path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / JSON_NAME, report.to_json())
    return write_compare_page(report.to_dict(), report.thumbnails, root / HTML_NAME)


def _shared(top_a: torch.Tensor, top_b: torch.Tensor) -> list[int]:
    """The first :data:`PICTURES_SHOWN` keys in both top-N lists, in A's order (its strongest first)."""
    in_b = set(top_b.tolist())
    return [key for key in top_a.tolist() if key in in_b][:PICTURES_SHOWN]


def overlaps(top_a: torch.Tensor, top_b: torch.Tensor) -> torch.Tensor:
    """(D_a, D_b) Jaccard index of each pair of channels' top-N sample-key sets."""
    keys = torch.unique(torch.cat([top_a.reshape(-1), top_b.reshape(-1)]))
    member_a = torch.zeros(top_a.shape[0], len(keys))
    member_b = torch.zeros(top_b.shape[0], len(keys))
    member_a.scatter_(1, torch.searchsorted(keys, top_a), 1.0)
    member_b.scatter_(1, torch.searchsorted(keys, top_b), 1.0)
    both = member_a @ member_b.T
    either = member_a.sum(dim=1, keepdim=True) + member_b.sum(dim=1)[None, :] - both
    return both / either.clamp_min(1)


def match(overlap: torch.Tensor) -> list[tuple[int, int, float]]:
    """One-to-one (channel of A, channel of B, overlap), greedily by highest overlap; pairs with none left out."""
    pairs: list[tuple[int, int, float]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    values, order = overlap.flatten().sort(descending=True, stable=True)  # ties: lower channels first
    width = overlap.shape[1]
    for value, flat in zip(values.tolist(), order.tolist()):
        if value <= 0:
            break
        row, col = divmod(flat, width)
        if row not in used_a and col not in used_b:
            pairs.append((row, col, float(value)))
            used_a.add(row)
            used_b.add(col)
    return pairs


def _alone(scene: Scene, best: torch.Tensor) -> list[dict[str, Any]]:
    """The channels that drive a class here and overlap no channel of the other model by MATCH_OVERLAP."""
    found = []
    for k, channels in scene.drivers.items():
        for channel in channels:
            if float(best[channel]) < MATCH_OVERLAP:
                found.append({"channel": channel, "class": k, "label": scene.names[k],
                              "evidence_share": float(scene.share[k, channel]), "best_overlap": float(best[channel]),
                              "samples": scene.top_keys[channel, :PICTURES_SHOWN].tolist()})
    return found


def _moved(first: Scene, second: Scene) -> list[dict[str, Any]]:
    """Per class (matched by name), 1 - Jaccard of the samples its drivers fire on in A and in B; largest first."""
    rows: list[tuple[float, dict[str, Any]]] = []
    by_name = {name: k for k, name in enumerate(second.names)}
    for k, name in enumerate(first.names):
        other = by_name.get(name)
        if other is None:
            continue
        in_a = set(first.top_keys[first.drivers.get(k, [])].reshape(-1).tolist())
        in_b = set(second.top_keys[second.drivers.get(other, [])].reshape(-1).tolist())
        union = in_a | in_b
        moved = 1.0 - len(in_a & in_b) / len(union) if union else 0.0
        rows.append((moved, {"class": k, "label": name, "moved": moved, "channels_a": first.drivers.get(k, []),
                             "channels_b": second.drivers.get(other, [])}))
    rows.sort(key=lambda row: -row[0])
    return [row for _, row in rows]
