"""The top-N prototypes of every channel among the samples seen so far, kept while the data streams by.

A channel's score for a sample is ``avg_hw G_c`` (the bank's ``sum_hw G_c`` divided by H W: the
same ranking). Ties go to the smaller sample key, so the result does not depend on the order or
the batching in which the samples arrived.
"""

from __future__ import annotations

from typing import Any

import torch


class TopPrototypes:
    """(D, n <= N) best scores and their sample keys, best first, float64 on the CPU."""

    def __init__(self, num_channels: int, count: int) -> None:
        self.count = count
        self.scores = torch.empty(num_channels, 0, dtype=torch.float64)
        self.keys = torch.empty(num_channels, 0, dtype=torch.int64)

    def update(self, keys: list[int], pooled: torch.Tensor) -> None:
        """Merge a batch: ``keys`` (B,) and its channel scores ``pooled`` (B, D)."""
        if not keys:
            return
        new_keys = torch.tensor(keys, dtype=torch.int64)[None, :].expand(self.scores.shape[0], -1)
        scores = torch.cat([self.scores, pooled.detach().double().cpu().T], dim=1)
        all_keys = torch.cat([self.keys, new_keys], dim=1)
        by_key = all_keys.argsort(dim=1, stable=True)  # two stable sorts: by score, then by key on ties
        scores, all_keys = scores.gather(1, by_key), all_keys.gather(1, by_key)
        order = scores.argsort(dim=1, descending=True, stable=True)[:, : self.count]
        self.scores, self.keys = scores.gather(1, order), all_keys.gather(1, order)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "scores": self.scores.tolist(), "keys": self.keys.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TopPrototypes:
        scores = torch.tensor(state["scores"], dtype=torch.float64)
        keys = torch.tensor(state["keys"], dtype=torch.int64)
        top = cls(scores.shape[0], int(state["count"]))
        top.scores, top.keys = scores.reshape(len(state["scores"]), -1), keys.reshape(len(state["keys"]), -1)
        return top
