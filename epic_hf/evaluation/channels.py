"""Two ways of reading a feature map as channels, and what an explanation takes from each image.

The EPIC view reads ``G = U F`` through the head ``A' = A U^-1``; the identity view reads the raw
``F`` through ``A`` (U = I). Both decompose the same logits exactly, so comparing the metrics of
the two shows what the disentangling adds. Channels are picked as :mod:`epic_hf.decompose` picks
them for an explanation: the ``top_k`` with the most positive evidence ``A'_{k,j} relu(avg G_j)``
for the target class k, each located at the argmax cell of its map ``G_j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..disentangle import peak_cells

EPIC, IDENTITY = "epic", "identity"
VIEWS = (EPIC, IDENTITY)


@dataclass
class ChannelView:
    """One reading of the channels: ``U`` (None for the identity) and the head weight on them (float64)."""

    name: str
    U: torch.Tensor | None
    weight: torch.Tensor
    orthogonal: bool = True

    def pooled(self, pooled_features: torch.Tensor) -> torch.Tensor:
        """``avg_hw G = U avg_hw F`` (B, D), float64."""
        if self.U is None:
            return pooled_features
        return pooled_features @ self.U.double().T

    def channel_maps(self, fmap: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """``G_j`` (B, k, H, W) of the given channels (B, k) only."""
        if self.U is None:
            index = channels[:, :, None, None].expand(-1, -1, *fmap.shape[-2:])
            return fmap.gather(1, index)
        return torch.einsum("bkd,bdhw->bkhw", self.U[channels].to(fmap.dtype), fmap)

    def transform(self) -> torch.Tensor:
        """U as a matrix (the identity for the identity view), for purity."""
        if self.U is None:
            dim = self.weight.shape[1]
            return torch.eye(dim, device=self.weight.device)
        return self.U


@dataclass
class Readout:
    """What the explanation of each image in a batch shows under one view.

    ``pooled``: avg G (B, D) float64; ``channels``: the top channels by evidence (B, k), best
    first; ``shown``: which of them have positive evidence (the ones an explanation shows);
    ``rows``/``cols``: the peak cell of each (B, k).
    """

    pooled: torch.Tensor
    channels: torch.Tensor
    shown: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor

    def shown_set(self, index: int) -> dict[int, tuple[int, int]]:
        """Image ``index``'s shown channels -> their peak cell."""
        mask = self.shown[index]
        return {int(c): (int(r), int(q)) for c, r, q in zip(self.channels[index][mask].tolist(),
                                                             self.rows[index][mask].tolist(),
                                                             self.cols[index][mask].tolist())}


def read(view: ChannelView, fmap: torch.Tensor, targets: torch.Tensor, top_k: int) -> Readout:
    """The explanation's channel choice for each image of ``fmap`` (B, D, H, W) and its ``targets`` (B,)."""
    pooled = view.pooled(fmap.double().mean(dim=(2, 3)))
    evidence = view.weight[targets] * pooled.relu()
    count = min(top_k, evidence.shape[1])
    channels = evidence.argsort(dim=1, descending=True, stable=True)[:, :count]
    shown = evidence.gather(1, channels) > 0
    rows, cols = peak_cells(view.channel_maps(fmap, channels))
    return Readout(pooled=pooled, channels=channels, shown=shown, rows=rows, cols=cols)
