"""Exact deletion faithfulness: what happens to the logits when an explanation's channels are removed.

Deletion metrics (RISE, Petsiuk et al. 2018) usually mask pixels and re-run the model, which
mixes the explanation's quality with the model's reaction to out-of-distribution inputs. Here
removal is exact and needs no second forward pass: since ``logit_c = sum_j A'_{c,j} avg(G)_j +
cls_c + b_c``, deleting channel j takes ``A'_{c,j} avg(G)_j`` out of every class's logit c. The
top-k channels shown by the explanation are deleted, and, as the baseline, as many random
channels (``random_draws`` draws per image); the target class's logit drop and how often the
predicted class changes are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .channels import Readout


@dataclass
class Deletion:
    """Sums over images (float64) of the effects of deleting the shown channels vs random ones."""

    images: int = 0
    deleted_sum: float = 0.0
    target_logit_sum: float = 0.0
    top_drop_sum: float = 0.0
    top_changed: int = 0
    random_drop_sum: float = 0.0
    random_changed_sum: float = 0.0

    def update(self, weight: torch.Tensor, readout: Readout, logits: torch.Tensor, targets: torch.Tensor,
               orders: torch.Tensor) -> None:
        """``weight``: the view's head (K, D) float64; ``logits`` (B, K) float64; ``orders`` (B, R, D)."""
        pooled = readout.pooled
        batch, dim = pooled.shape
        sizes = readout.shown.sum(dim=1)  # (B,)
        top_mask = torch.zeros_like(pooled).scatter(1, readout.channels, readout.shown.to(pooled.dtype))
        top_drop = (pooled * top_mask) @ weight.T  # (B, K): what each class's logit loses
        picked = targets[:, None]
        self.images += batch
        self.deleted_sum += float(sizes.sum())
        self.target_logit_sum += float(logits.gather(1, picked).sum())
        self.top_drop_sum += float(top_drop.gather(1, picked).sum())
        self.top_changed += int(((logits - top_drop).argmax(dim=1) != targets).sum())
        orders = orders.to(pooled.device)
        draws = orders.shape[1]
        first = torch.arange(dim, device=pooled.device)[None, None, :] < sizes[:, None, None]  # (B, 1, D)
        random_mask = torch.zeros(orders.shape, dtype=pooled.dtype, device=pooled.device).scatter(
            2, orders, first.expand(-1, draws, -1).to(pooled.dtype))  # draw r deletes orders[b, r, :sizes[b]]
        random_drop = (pooled[:, None, :] * random_mask) @ weight.T  # (B, R, K)
        target_drop = random_drop.gather(2, picked[:, None, :].expand(batch, draws, 1))[..., 0]
        changed = (logits[:, None, :] - random_drop).argmax(dim=2) != targets[:, None]
        self.random_drop_sum += float(target_drop.mean(dim=1).sum())
        self.random_changed_sum += float(changed.double().mean(dim=1).sum())

    def result(self) -> dict[str, Any]:
        if not self.images:
            return {"images": 0}
        count = self.images
        return {"images": count, "mean_deleted_channels": self.deleted_sum / count,
                "mean_target_logit": self.target_logit_sum / count,
                "top_k_logit_drop": self.top_drop_sum / count, "random_logit_drop": self.random_drop_sum / count,
                "top_k_class_change_rate": self.top_changed / count,
                "random_class_change_rate": self.random_changed_sum / count}

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Deletion:
        return cls(**state)
