"""The one top-N miner: each channel's best samples, kept while scores arrive in blocks.

The fit mines its pooled index chunk by chunk (``V U^T``); the evaluation mines the data as it
streams by. Both merge with :class:`TopN`, so both follow one rule: the highest scores, best
first, and among equal scores the smaller sample key, so that the result depends neither on the
order nor on the blocks in which the samples arrived. Scores are merged in float64 (a float32
product widened loses nothing, and float64 readouts keep their precision).
"""

from __future__ import annotations

import torch

from .aliases import JSONDict


class TopN:
    """(D, n <= count) best scores and their sample keys, best first, float64 and int64 on ``device``
    (the fit merges where it multiplies, on its accelerator)."""

    def __init__(self, num_channels: int, count: int, device: torch.device | str = "cpu") -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.count = count
        self.scores = torch.empty(num_channels, 0, dtype=torch.float64, device=device)
        self.keys = torch.empty(num_channels, 0, dtype=torch.int64, device=device)

    def update(self, keys: torch.Tensor | list[int], scores: torch.Tensor) -> None:
        """Merge a block: ``keys`` (B,) and their scores ``scores`` (D, B), one row per channel."""
        keys = torch.as_tensor(keys, dtype=torch.int64).to(self.keys.device)
        if keys.numel() == 0:
            return
        scores = scores.detach().to(self.scores.device, torch.float64)
        if scores.shape != (self.scores.shape[0], keys.numel()):
            raise ValueError(f"expected scores of shape {(self.scores.shape[0], keys.numel())}, got "
                             f"{tuple(scores.shape)}")
        all_scores = torch.cat([self.scores, scores], dim=1)
        all_keys = torch.cat([self.keys, keys[None, :].expand(scores.shape[0], -1)], dim=1)
        held_max = int(self.keys.max()) if self.keys.numel() else None
        in_key_order = bool((keys[1:] > keys[:-1]).all()) and (held_max is None or int(keys[0]) > held_max)
        if not in_key_order:  # put every row in key order, so that the stable sort below breaks ties by key
            by_key = all_keys.argsort(dim=1, stable=True)
            all_scores, all_keys = all_scores.gather(1, by_key), all_keys.gather(1, by_key)
        order = all_scores.argsort(dim=1, descending=True, stable=True)[:, : self.count]
        self.scores, self.keys = all_scores.gather(1, order), all_keys.gather(1, order)

    def state_dict(self) -> JSONDict:
        return {"count": self.count, "scores": self.scores.cpu().tolist(), "keys": self.keys.cpu().tolist()}

    @classmethod
    def from_state(cls, state: JSONDict) -> TopN:
        rows = len(state["scores"])
        top = cls(rows, int(state["count"]))
        top.scores = torch.tensor(state["scores"], dtype=torch.float64).reshape(rows, -1)
        top.keys = torch.tensor(state["keys"], dtype=torch.int64).reshape(rows, -1)
        return top
