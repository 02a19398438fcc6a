"""The disentangling matrix U and the purity that training maximises.

U acts pixelwise on the feature map, ``G = U F``, and the head is rewritten as
``A' = A U^-1`` so that ``A' avg(G) + b == A avg(F) + b``: predictions never change.
Both parameterisations start at ``S = 0``, that is ``U = I``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .expm import matrix_exp

MatrixKind = Literal["orthogonal", "invertible"]
MATRIX_KINDS: tuple[str, ...] = ("orthogonal", "invertible")
#: Floor on the norm of a feature vector in the purity denominator (the paper's 1e-8).
NORM_FLOOR = 1e-8


class Disentangler(nn.Module):
    """Holds S and derives U from it.

    ``orthogonal``: ``U = base . exp(S - S^T)`` (a rotation, ``U^-1 = U^T``);
    ``invertible``: ``U = exp(S)`` with ``U^-1 = exp(-S)``.
    ``base`` is None (the identity) for the paper's parameterisation; a dynamically trivialized
    fit (:func:`cayley`, :meth:`move_base`) keeps U there and S at zero.
    """

    def __init__(self, dim: int, kind: MatrixKind = "orthogonal") -> None:
        super().__init__()
        if kind not in MATRIX_KINDS:
            raise ValueError(f"matrix must be one of {MATRIX_KINDS}, got {kind!r}")
        self.kind: MatrixKind = kind
        self.S = nn.Parameter(torch.zeros(dim, dim))
        self.base: torch.Tensor | None
        self.register_buffer("base", None)
        self._frozen: tuple[torch.Tensor, torch.Tensor] | None = None  # (U, U^-1) once frozen

    @classmethod
    def frozen(cls, S: torch.Tensor, kind: str, base: torch.Tensor | None = None) -> Disentangler:
        """A finished U (a bank's): S and base are fixed, with no gradient, and U, U^-1 are computed once.

        ``S`` is held as given (not copied); ``base`` is copied. Frozen means nothing trains it:
        :meth:`matrix` and :meth:`inverse` return the values computed on first use.
        """
        if kind not in MATRIX_KINDS:
            raise ValueError(f"matrix must be one of {MATRIX_KINDS}, got {kind!r}")
        disentangler = cls(S.shape[0], kind)  # type: ignore[arg-type]
        disentangler.S = nn.Parameter(S.detach(), requires_grad=False)
        disentangler.set_base(base)
        disentangler._frozen = (torch.empty(0), torch.empty(0))
        return disentangler

    @property
    def is_frozen(self) -> bool:
        return self._frozen is not None

    @torch.no_grad()
    def _frozen_pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._frozen is not None
        if not self._frozen[0].numel():
            U = self._matrix()
            self._frozen = (U.detach(), U.T.contiguous() if self.orthogonal else torch.linalg.matrix_exp(-self.S))
        return self._frozen

    def set_base(self, base: torch.Tensor | None) -> None:
        """Use ``base`` (an orthogonal D x D matrix, or None for the identity) as the point U is measured from."""
        if base is not None and not self.orthogonal:
            raise ValueError("only an orthogonal U can have a base (invertible fits train S directly)")
        self.base = None if base is None else base.detach().to(self.S).contiguous().clone()

    @torch.no_grad()
    def move_base(self, step: torch.Tensor) -> None:
        """``base <- base . cayley(step)`` for a skew-symmetric ``step``: U moves along the rotation group."""
        rotation = cayley(step.to(self.S))
        self.base = rotation if self.base is None else self.base @ rotation

    @torch.no_grad()
    def orthonormalize_base(self) -> None:
        """Remove the rounding that many float32 products leave in ``base`` (QR, signs kept)."""
        if self.base is not None:
            q, r = torch.linalg.qr(self.base.double())
            self.base = (q * torch.sign(torch.diagonal(r))).to(self.S).contiguous()  # row-major, as loaded

    @property
    def dim(self) -> int:
        return self.S.shape[0]

    @property
    def orthogonal(self) -> bool:
        return self.kind == "orthogonal"

    def generator(self) -> torch.Tensor:
        return self.S - self.S.T if self.orthogonal else self.S

    def matrix(self) -> torch.Tensor:
        """U, differentiable in S (with the cheaper Fréchet-derivative backward of :mod:`epic_hf.expm`)."""
        return self._frozen_pair()[0] if self._frozen is not None else self._matrix()

    def _matrix(self) -> torch.Tensor:
        if self.base is None:
            return matrix_exp(self.generator())
        if not bool(self.S.detach().any()):  # a trivialized fit keeps S at zero: U is the base
            return self.base
        return self.base @ matrix_exp(self.generator())

    def inverse(self) -> torch.Tensor:
        """U^-1, computed from S rather than by inverting U (stabler, and exact for rotations)."""
        if self._frozen is not None:
            return self._frozen_pair()[1]
        if self.orthogonal:
            return self.matrix().T
        return torch.linalg.matrix_exp(-self.S)


def cayley(step: torch.Tensor) -> torch.Tensor:
    """``(I - A/2)^-1 (I + A/2)``: an exact rotation for skew-symmetric A, equal to exp(A) to second order.

    One LU solve, against the dozen matrix products of a matrix exponential and its gradient.
    """
    identity = torch.eye(step.shape[0], dtype=step.dtype, device=step.device)
    return torch.linalg.solve(identity - step / 2, identity + step / 2)


def transform(fmap: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """G = U F, pixelwise: (B, D, H, W) -> (B, D, H, W)."""
    return torch.einsum("ij,bjhw->bihw", U.to(fmap.dtype), fmap)


def purity_of_maps(transformed: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Purity of (image, channel) pairs from already transformed maps G.

    ``transformed``: (P, D, H, W), one map per pair; ``channels``: (P,) channel per pair.
    At ``(h*, w*) = argmax G_c`` (first cell in row-major order on ties), purity is
    ``G_c[h*, w*] / max(||G[:, h*, w*]||_2, 1e-8)``, a value in [-1, 1].
    """
    pairs, dim = transformed.shape[:2]
    flat = transformed.reshape(pairs, dim, -1)
    rows = torch.arange(pairs, device=flat.device)
    channel_maps = flat[rows, channels]  # (P, HW)
    cells = channel_maps.argmax(dim=1)
    vectors = flat[rows, :, cells]  # (P, D)
    peak = channel_maps[rows, cells]
    return peak / vectors.norm(dim=1).clamp_min(NORM_FLOOR)


def purity_of_features(
    fmaps: torch.Tensor, channels: torch.Tensor, U: torch.Tensor, orthogonal: bool
) -> torch.Tensor:
    """Purity of pairs from untransformed maps F, without transforming whole maps.

    Equal to ``purity_of_maps(transform(F, U), channels)`` but costs ``D*HW + D^2`` per pair
    instead of ``D^2*HW``: only the channel's own map ``U[c] . F`` and the one vector at its
    argmax cell are transformed. For orthogonal U the norm needs no transform at all.
    Differentiable in U (the argmax cell is piecewise constant).
    """
    return purity_and_peaks(fmaps, channels, U, orthogonal)[0]


def purity_and_peaks(
    fmaps: torch.Tensor, channels: torch.Tensor, U: torch.Tensor, orthogonal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(purity (P,), argmax cell of ``G_c`` as a row-major index into H*W (P,)) of each pair."""
    pairs, dim = fmaps.shape[:2]
    flat = fmaps.reshape(pairs, dim, -1)
    rows = torch.arange(pairs, device=flat.device)
    U = U.to(flat.dtype)
    channel_maps = torch.einsum("pd,pdn->pn", U[channels], flat)  # (P, HW)
    cells = channel_maps.detach().argmax(dim=1)
    peak = channel_maps[rows, cells]
    vectors = flat[rows, :, cells]  # (P, D), untransformed
    if orthogonal:
        norms = vectors.norm(dim=1)
    else:
        norms = (vectors @ U.T).norm(dim=1)
    return peak / norms.clamp_min(NORM_FLOOR), cells


def purity_of_pairs(maps_of: Callable[[list[int]], torch.Tensor], keys: list[int], channels: list[int],
                    U: torch.Tensor, orthogonal: bool, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(purity (P,), peak cell (P,)) of the (image, channel) pairs ``zip(keys, channels)``, ``chunk`` pairs at a time.

    The one loop by which the fit (over its cached feature maps) and the evaluation (over one
    batch's maps) score prototypes: ``maps_of(keys)`` gives F (len(keys), D, H, W), and the
    formula is :func:`purity_and_peaks`'s. No gradient is kept.
    """
    values, cells = [], []
    with torch.no_grad():
        for start in range(0, len(keys), max(1, chunk)):
            fmaps = maps_of(keys[start: start + chunk])
            picked = torch.as_tensor(channels[start: start + chunk], device=fmaps.device)
            purity, peaks = purity_and_peaks(fmaps, picked, U.to(fmaps.device), orthogonal)
            values.append(purity.cpu())
            cells.append(peaks.cpu())
    if not values:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(values), torch.cat(cells)


def peak_cells(transformed_channel_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the argmax of each (..., H, W) map, first in row-major order on ties."""
    width = transformed_channel_maps.shape[-1]
    flat = transformed_channel_maps.flatten(-2).argmax(dim=-1)
    return flat // width, flat % width


def cell_box(
    row: int, col: int, grid: tuple[int, int], input_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The input-pixel box (x0, y0, x1, y1) covered by grid cell (row, col)."""
    grid_h, grid_w = grid
    height, width = input_size
    x0 = (col * width) // grid_w
    y0 = (row * height) // grid_h
    x1 = -(-(col + 1) * width // grid_w)
    y1 = -(-(row + 1) * height // grid_h)
    return int(x0), int(y0), int(x1), int(y1)
