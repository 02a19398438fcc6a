"""The final bank: top prototypes under the trained U, their boxes, thumbnails and names,
and the class evidence that the pooled index gives for free.
"""

from __future__ import annotations

import torch

from ..backbone import FrozenClassifier
from ..bank import PrototypeBank
from ..config import EpicConfig, FitConfig
from ..data import ImageSource
from ..disentangle import Disentangler, cell_box
from ..images import encode_jpeg
from .features import FeatureStore, mean_purity
from .index import PooledIndex

#: Pooled vectors transformed at a time for the class evidence: bounded memory on a memory-mapped index.
EVIDENCE_CHUNK_ROWS = 16384


def class_evidence(index: PooledIndex, U: torch.Tensor, weight: torch.Tensor,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """(mean contribution (C, D), counts (C,)) of each channel to each class over the samples predicted as it.

    The contribution of channel j to class k for sample v is ``A'_{k,j} (U v)_j``, exact and
    computed on the pooled index: no backbone pass.
    """
    if index.predictions is None:
        return None, None
    sums = torch.zeros(num_classes, U.shape[0], dtype=torch.float64)
    counts = torch.bincount(index.predictions, minlength=num_classes)[:num_classes]
    for start in range(0, len(index), EVIDENCE_CHUNK_ROWS):
        transformed = torch.as_tensor(index.vectors[start: start + EVIDENCE_CHUNK_ROWS]).double() @ U.double().T
        sums.index_add_(0, index.predictions[start: start + EVIDENCE_CHUNK_ROWS], transformed)
    means = sums / counts.clamp_min(1)[:, None].double()
    return (means * weight.double()).float(), counts.to(torch.int64)


def mean_patch_share(index: PooledIndex, U: torch.Tensor, weight: torch.Tensor) -> float | None:
    """The patches' mean share of |evidence| over the indexed samples, as ``Explanation.patch_share`` defines it.

    For sample v predicted as k: ``sum_j |A'_{k,j} (U v)_j| / (that + |CLS term_k|)``; None for a model
    with no CLS term (every share is 1) or an index that did not record it.
    """
    if index.cls_terms is None or index.predictions is None or len(index) == 0:
        return None
    total = 0.0
    for start in range(0, len(index), EVIDENCE_CHUNK_ROWS):
        transformed = torch.as_tensor(index.vectors[start: start + EVIDENCE_CHUNK_ROWS]).double() @ U.double().T
        rows = weight.double()[index.predictions[start: start + EVIDENCE_CHUNK_ROWS]]
        spatial = (rows * transformed).abs().sum(dim=1)
        whole = spatial + index.cls_terms[start: start + EVIDENCE_CHUNK_ROWS].double()
        total += float(torch.where(whole > 0, spatial / whole.clamp_min(1e-300), torch.ones_like(whole)).sum())
    return total / len(index)


def build_bank(classifier: FrozenClassifier, disentangler: Disentangler, source: ImageSource, index: PooledIndex,
               store: FeatureStore, config: FitConfig) -> PrototypeBank:
    """Top-``prototypes_per_channel`` prototypes per channel under the trained U, with boxes and thumbnails."""
    with torch.no_grad():
        U = disentangler.matrix().detach()
        inverse = disentangler.inverse().detach()
    scores, rows = index.top_prototypes(U, config.prototypes_per_channel)
    sample_keys = index.keys[rows]
    chunk = max(config.batch_size, config.train_batch_size)
    purity_after, peaks = mean_purity(store, sample_keys, U, disentangler.orthogonal, chunk)
    thumbnails: dict[int, bytes] = {}
    names: dict[int, str] = {}
    input_size: tuple[int, int] | None = None
    for key, image, name in source.iter_named_images(sample_keys.reshape(-1).tolist()):
        pixel_values = classifier.preprocess([image])[0]  # the processed input, as the model saw it
        input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        thumbnails[key] = encode_jpeg(classifier.to_image(pixel_values), config.thumbnail_size,
                                      config.thumbnail_quality)
        if name is not None:
            names[key] = name
    assert input_size is not None
    grid = index.grid_size
    boxes = torch.tensor(
        [cell_box(cell // grid[1], cell % grid[1], grid, input_size) for cell in peaks.reshape(-1).tolist()],
        dtype=torch.int64,
    ).reshape(*rows.shape, 4)
    weight = classifier.head().weight.detach().cpu().double() @ inverse.cpu().double()
    evidence, counts = class_evidence(index, U.cpu(), weight, weight.shape[0])
    patch_share = mean_patch_share(index, U.cpu(), weight)
    epic_config = EpicConfig(
        model_type=classifier.model_type, num_channels=disentangler.dim,
        prototypes_per_channel=int(sample_keys.shape[1]), matrix=disentangler.kind, grid_size=grid,
        input_size=input_size, base_model_name_or_path=classifier.reference.name_or_path,
        base_model_revision=classifier.reference.revision, base_model_fingerprint=classifier.fingerprint,
        fit=config, purity_after=purity_after, patch_share=patch_share, split_cls=classifier.split_cls,
        condition_number=1.0 if disentangler.orthogonal else float(torch.linalg.cond(U.double().cpu())),
    )
    return PrototypeBank.from_disentangler(
        disentangler, sample_keys=sample_keys.clone(), scores=scores.float(), boxes=boxes, thumbnails=thumbnails,
        input_size=input_size, grid_size=grid, config=epic_config, class_evidence=evidence, class_counts=counts,
        id2label=classifier.id2label, sample_names=names,
    )
