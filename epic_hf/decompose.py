"""The exact decomposition of a logit under U, and the explanations built from it.

``logit_k = sum_j A'_{k,j} avg(G)_j + cls_k + b_k`` with ``G = U F`` and ``A' = A U^-1``; ``cls_k``
is the non-spatial term of models that also read a CLS token (0 for the others). Channels are
shown by positive evidence ``A'_{k,j} relu(avg G_j)``: a channel whose average activation is
negative is not a concept the image has, whatever the sign of its contribution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as nnf

from .adapters import IDENTITY_TOLERANCE, ModelForward, full_precision, relative_gaps
from .backbone import FrozenClassifier
from .bank import PrototypeBank
from .disentangle import Disentangler, cell_box, peak_cells
from .errors import UnreadableImageError
from .explanation import ChannelExplanation, Explanation
from .naming import match_label


class Decomposer:
    """U, ``A' = A U^-1`` and ``b`` for one state of the disentangler (rebuilt when S changes).

    Its arithmetic runs in float32 (float64 for sums) whatever autocast the caller has; only the
    model's own forward runs under it.
    """

    tolerance = IDENTITY_TOLERANCE

    def __init__(self, classifier: FrozenClassifier, disentangler: Disentangler) -> None:
        self.classifier = classifier
        with torch.no_grad(), full_precision():
            head = classifier.head()
            self.U = disentangler.matrix().detach().to(classifier.device)
            inverse = disentangler.inverse().detach().to(classifier.device)
            self.weight = head.weight.to(self.U) @ inverse
            self.bias = head.bias.to(self.U)

    @torch.no_grad()
    def exactness_error(self) -> float:
        """Relative error of the logits decomposed under U against the model's own, on the probe images."""
        forward = self.classifier.forward(self.classifier.probe_pixel_values())
        with full_precision():
            logits = self._logits(forward.pooled.pooled.float() @ self.U.T, forward.pooled.extra_logits)
            return float(relative_gaps(logits, forward.logits).max())

    def _logits(self, pooled_G: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        logits = pooled_G.double() @ self.weight.double().T + self.bias.double()
        return logits if extra is None else logits + extra.double()

    @torch.no_grad()
    def explain_batch(self, images: Sequence[object], target: int | str | None, top_k: int, offset: int,
                      bank: PrototypeBank | None, true_labels: Sequence[object]) -> list[Explanation]:
        try:
            pixel_values = self.classifier.preprocess(images)
        except UnreadableImageError as error:  # re-number positions within the whole list
            raise error.shifted(offset) from None
        forward = self.classifier.forward(pixel_values)  # the model's own forward, checked against its terms
        with full_precision():
            return self._explanations(forward, pixel_values, images, target, top_k, bank, true_labels)

    def _explanations(self, forward: ModelForward, pixel_values: torch.Tensor, images: Sequence[object], target: int | str | None,
                      top_k: int, bank: PrototypeBank | None, true_labels: Sequence[object]) -> list[Explanation]:
        assert forward.fmap is not None  # a full forward keeps F
        fmap = forward.fmap.float()
        extra = forward.pooled.extra_logits
        pooled = forward.pooled.pooled.float() @ self.U.T  # avg_hw(G) = U avg_hw(F)
        # the terms under U must add up to the model's own logits too (U's conditioning, this batch's values)
        self.classifier.check(self._logits(pooled, extra), forward, what="the decomposition under U")
        logits = forward.logits.float()  # the model's own numbers, not the decomposition's
        results = []
        for index in range(fmap.shape[0]):
            target_index = self.resolve_target(target, logits[index])
            results.append(self._explanation(index, target_index, fmap[index], pooled[index], logits[index],
                                             extra, pixel_values[index], top_k, bank,
                                             true_labels[index], images[index]))
        return results

    def _explanation(self, index: int, target: int, fmap: torch.Tensor, pooled: torch.Tensor, logits: torch.Tensor,
                     extra: torch.Tensor | None, pixel_values: torch.Tensor, top_k: int, bank: PrototypeBank | None,
                     true_label: object, source: object) -> Explanation:
        contributions = self.weight[target].double() * pooled.double()
        evidence = self.weight[target].double() * pooled.double().relu()
        ranked = evidence.argsort(descending=True)[: min(top_k, evidence.numel())]
        shown = ranked[evidence[ranked] > 0]
        input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        grid = (int(fmap.shape[-2]), int(fmap.shape[-1]))
        maps = torch.einsum("cd,dhw->chw", self.U[shown], fmap)  # only the shown channels' G_c
        rows, cols = peak_cells(maps)
        heatmaps = (nnf.interpolate(maps.relu()[None], size=input_size, mode="bilinear", align_corners=False)[0]
                    if shown.numel() else maps.new_zeros((0, *input_size)))  # no channel argues for the class
        picture = self.classifier.to_image(pixel_values)
        query_key = (bank.matching_key(picture, bank.sample_keys[shown.cpu()].reshape(-1).tolist())
                     if bank is not None else None)
        channels = [
            ChannelExplanation(
                channel=channel, contribution=float(contributions[channel]), evidence=float(evidence[channel]),
                box=cell_box(int(rows[slot]), int(cols[slot]), grid, input_size), heatmap=heatmaps[slot].cpu(),
                prototypes=bank.prototypes(channel, query_key=query_key) if bank is not None else [],
                part=bank.channel_part(channel) if bank is not None else None)
            for slot, channel in enumerate(shown.tolist())
        ]
        id2label = self.classifier.id2label
        return Explanation(
            logits=logits.float().cpu(), target_index=target, target_label=id2label.get(target, str(target)),
            contributions=contributions.cpu(), bias=float(self.bias[target]), channels=channels, image=picture,
            id2label=id2label, cls_contribution=float(extra[index, target]) if extra is not None else 0.0,
            true_label=self._label_name(true_label), source=_source_name(source),
            feature_map=fmap.float().to("cpu", copy=True), target_weights=self.weight[target].cpu(),  # F: its own storage
            disentangling_matrix=self.U.cpu(),  # the explainer's own U, shared: attribution_map() reads it
        )

    def _label_name(self, label: object) -> str | None:
        """A true label as the model spells it: a class index, or a name matched as class folders are
        (``red_circle`` is ``red circle``); a name that matches no label is kept as given."""
        if label is None:
            return None
        if isinstance(label, int) and not isinstance(label, bool):
            return self.classifier.id2label.get(label, str(label))
        return match_label(str(label), self.classifier.id2label.values()) or str(label)

    def resolve_target(self, target: int | str | None, logits: torch.Tensor) -> int:
        num_classes = logits.shape[-1]
        if target is None:
            return int(logits.argmax())
        if isinstance(target, str):
            by_label = {label: index for index, label in self.classifier.id2label.items()}
            if target in by_label:
                return by_label[target]
            examples = ", ".join(repr(v) for v in list(by_label)[:5])
            raise ValueError(
                f"unknown target label {target!r}; use a class index in [0, {num_classes - 1}] or one "
                f"of the model's labels (e.g. {examples})"
            )
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
            raise ValueError(f"target must be a class index in [0, {num_classes - 1}] or a label name, got {target!r}")
        return int(target)


def _source_name(source: object) -> str | None:
    """A file name for an image given by path, for captions and reports."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return None


