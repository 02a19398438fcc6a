"""``matrix_exp`` with a cheaper exact backward: the Fréchet derivative by Padé recurrences.

Once the backbone is out of EPIC's training loop, each optimizer step is dominated by
``U = exp(A)`` and its backward. PyTorch differentiates ``matrix_exp`` by exponentiating a
2D x 2D block matrix, about eight times the forward cost. The Fréchet derivative ``L(A, E)``
can instead be carried along the same scaling-and-squaring Padé [13/13] approximant that
computes ``exp(A)`` (Al-Mohy & Higham, "Computing the Fréchet derivative of the matrix
exponential", SIAM J. Matrix Anal. Appl. 30(4), 2009, Algorithm 6.4), for about three times
the forward cost, with the accuracy of the approximant itself. The gradient of a loss through
``exp`` is ``L(A^T, G)``.
"""

from __future__ import annotations

import math

import torch

# Padé [13/13] coefficients of exp and the 1-norm bound below which no scaling is needed.
_B13 = (
    64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
    10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0,
)
_THETA13 = 5.371920351148152


def frechet_exp(A: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """``L(A, E) = d/dt exp(A + tE) at t = 0`` for square A, E (computed in float64 at most)."""
    dtype = A.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    A = A.to(work)
    E = E.to(work)
    norm = float(torch.linalg.matrix_norm(A, ord=1))
    squarings = max(0, math.ceil(math.log2(norm / _THETA13))) if norm > _THETA13 else 0
    if squarings:
        A = A / 2**squarings
        E = E / 2**squarings
    b = _B13
    identity = torch.eye(A.shape[-1], dtype=work, device=A.device)
    A2 = A @ A
    A4 = A2 @ A2
    A6 = A2 @ A4
    M2 = A @ E + E @ A
    M4 = A2 @ M2 + M2 @ A2
    M6 = A4 @ M2 + M4 @ A2
    W1 = b[13] * A6 + b[11] * A4 + b[9] * A2
    W2 = b[7] * A6 + b[5] * A4 + b[3] * A2 + b[1] * identity
    Z1 = b[12] * A6 + b[10] * A4 + b[8] * A2
    Z2 = b[6] * A6 + b[4] * A4 + b[2] * A2 + b[0] * identity
    W = A6 @ W1 + W2
    U = A @ W
    V = A6 @ Z1 + Z2
    Lw1 = b[13] * M6 + b[11] * M4 + b[9] * M2
    Lw2 = b[7] * M6 + b[5] * M4 + b[3] * M2
    Lz1 = b[12] * M6 + b[10] * M4 + b[8] * M2
    Lz2 = b[6] * M6 + b[4] * M4 + b[2] * M2
    Lw = A6 @ Lw1 + M6 @ W1 + Lw2
    Lu = A @ Lw + E @ W
    Lv = A6 @ Lz1 + M6 @ Z1 + Lz2
    factors = torch.linalg.lu_factor(V - U)
    R = torch.linalg.lu_solve(*factors, U + V)
    L = torch.linalg.lu_solve(*factors, Lu + Lv + (Lu - Lv) @ R)
    for _ in range(squarings):
        L = R @ L + L @ R
        R = R @ R
    return L.to(dtype)


class _MatrixExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(A)
        return torch.linalg.matrix_exp(A)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (A,) = ctx.saved_tensors
        return frechet_exp(A.mT, grad)


def matrix_exp(A: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_exp`` for one square matrix, with the Fréchet-derivative backward."""
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix_exp expects one square matrix, got shape {tuple(A.shape)}")
    return _MatrixExp.apply(A)
