"""``matrix_exp`` whose backward reuses the forward's Padé approximant.

Once the backbone is out of EPIC's training loop, each optimizer step is dominated by
``U = exp(A)`` and its backward. PyTorch differentiates ``matrix_exp`` by exponentiating a
2D x 2D block matrix, about eight times the forward cost. Here the forward evaluates the
scaling-and-squaring Padé approximant ``r_m(A / 2^s)^(2^s)`` itself and keeps what the
backward needs: the even powers of ``A / 2^s``, the LU factors of ``q_m = V - U`` and the
matrices that get squared. The backward is then the exact Fréchet derivative of that same
approximant (Al-Mohy & Higham, "Computing the Fréchet derivative of the matrix exponential",
SIAM J. Matrix Anal. Appl. 30(4), 2009, Algorithm 6.4) without recomputing any of it: about
two products per product of the forward, plus one triangular solve pair.

The degree m and the number of squarings s follow the 1-norm of A, so small generators (EPIC's
S starts at zero and moves by about the learning rate per step) cost a degree-3 or degree-5
approximant and no squaring. The thresholds are the ``ell_m`` of Al-Mohy & Higham's
Algorithm 6.4: the largest norm at which both ``r_m`` and its Fréchet derivative have backward
error below the unit roundoff. They are smaller than Higham's (2005) ``theta_m``, which bound
the value alone; the value and the gradient come from one approximant, so the gradient's bound
decides.

Precision: float64 input is worked in float64 with the double-precision table; every other
dtype is worked in float32 with the single-precision table (u = 2^-24, derived the same way;
``tests/test_expm.py`` re-derives both tables). In single precision degree 7 is the cheapest to
scale: forward and backward together, degree 13 would cost 6 more products and save about 1.6
squarings of 3 products each (Higham 2005 likewise stops at 7 for single). Float32 is what
``torch.linalg.matrix_exp`` does for float32 input, and on a CPU float64 products cost about
twice as much; the float32 result is about as close to a float64 reference as torch's own
(``benchmarks/bench_expm.py`` prints both errors).

The gradient of a loss through ``exp`` is ``L(A^T, G) = L(A, G^T)^T``, so the backward runs the
Fréchet recurrences at A, where the forward's factors live. Memory: between forward and backward
the graph holds the powers, W, the LU factors and the s + 1 squaring steps, about 6 + s D x D
matrices beyond A and exp(A) at degree 7 (s = 5 at 1-norm 100 in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from torch.autograd.function import once_differentiable

#: (degree m, ell_m) for the work dtype: the largest 1-norm of the scaled generator at which the
#: degree-m approximant and its Fréchet derivative have relative backward error <= u. The last
#: row is the degree used with scaling.
_THRESHOLDS: dict[torch.dtype, tuple[tuple[int, float], ...]] = {
    torch.float64: (
        (3, 1.081338577784837e-02),
        (5, 1.998063206978949e-01),
        (7, 7.834608472962045e-01),
        (9, 1.782448623969279e00),
        (13, 4.740307543766807e00),
    ),
    torch.float32: (
        (3, 3.080330418453301e-01),
        (5, 1.482532614793145e00),
        (7, 3.248671755200478e00),
    ),
}


@cache
def pade_coefficients(degree: int) -> tuple[float, ...]:
    """``b_0..b_m`` of the [m/m] Padé approximant of exp, scaled to ``b_m = 1``.

    ``p_m(x) = sum_j b_j x^j`` and ``r_m(x) = p_m(x) / p_m(-x)``; with the usual scaling the
    coefficients are the integers ``(2m - j)! / (j! (m - j)!)`` (Higham 2005, eq. 2.2).
    """
    m = degree
    return tuple(float(math.factorial(2 * m - j) // (math.factorial(j) * math.factorial(m - j))) for j in range(m + 1))


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the exponential is computed in: float64 stays, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def choose_approximant(norm: float, dtype: torch.dtype) -> tuple[int, int]:
    """(degree m, squarings s) for a generator of 1-norm ``norm`` worked in ``dtype``.

    The lowest degree whose threshold covers the norm, else the top degree with the fewest
    halvings ``s`` that bring ``norm / 2^s`` under its threshold.
    """
    table = _THRESHOLDS[work_dtype(dtype)]
    for degree, bound in table:
        if norm <= bound:
            return degree, 0
    degree, bound = table[-1]
    if not math.isfinite(norm):
        return degree, 0  # inf or nan entries: no scaling makes sense, let them propagate
    return degree, max(0, math.ceil(math.log2(norm / bound)))


def _combination(coefficients: tuple[float, ...], matrices: tuple[torch.Tensor, ...],
                 constant: float = 0.0) -> torch.Tensor:
    """``sum_k c_k X_k + constant * I``, accumulated in place (one new matrix, no temporaries)."""
    total = matrices[0] * coefficients[0]
    for c, X in zip(coefficients[1:], matrices[1:]):
        total.add_(X, alpha=c)
    if constant:
        total.diagonal().add_(constant)
    return total


def _factor(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LU factors of M for :func:`_solve`: L and U packed in one row-major matrix, and the row order of ``P^T``.

    ``torch.linalg.lu_solve`` on the column-major factors of ``lu_factor`` measured 1.7-2.8 D^3
    products per solve on a CPU; two triangular solves on a row-major copy, 1.4-2.0.
    """
    lu, pivots = torch.linalg.lu_factor(M)
    order = list(range(M.shape[0]))
    for row, pivot in enumerate(pivots.tolist()):  # LAPACK's sequential row swaps, as one gather
        order[row], order[pivot - 1] = order[pivot - 1], order[row]
    return lu.contiguous(), torch.tensor(order, device=M.device)


def _solve(lu: torch.Tensor, order: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``M^-1 B`` from the factors of :func:`_factor` (each solve reads only its triangle of ``lu``)."""
    Y = torch.linalg.solve_triangular(lu, B[order], upper=False, unitriangular=True)
    return torch.linalg.solve_triangular(lu, Y, upper=True)


@dataclass
class _Approximant:
    """What the forward computed and the backward reuses, all at the scaled generator ``A / 2^s``.

    ``powers``: ``(A, A^2, A^4, ...)`` up to ``A^(m-1)`` (``A^6`` for m = 13); ``odd``: W with
    the odd part ``U = A W``; ``lu``/``order``: the factors of ``V - U`` (see :func:`_factor`); ``chain``:
    ``r_m, r_m^2, ..., r_m^(2^s)``, the last being ``exp(A)``.
    """

    degree: int
    squarings: int
    powers: tuple[torch.Tensor, ...]
    odd: torch.Tensor
    lu: torch.Tensor
    order: torch.Tensor
    chain: tuple[torch.Tensor, ...]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (*self.powers, self.odd, self.lu, self.order, *self.chain)

    @classmethod
    def from_tensors(cls, degree: int, squarings: int, tensors: tuple[torch.Tensor, ...]) -> _Approximant:
        count = len(_even_powers_needed(degree)) + 1
        powers, (odd, lu, order), chain = tensors[:count], tensors[count : count + 3], tensors[count + 3 :]
        return cls(degree, squarings, tuple(powers), odd, lu, order, tuple(chain))


def _even_powers_needed(degree: int) -> tuple[int, ...]:
    """Exponents of the even powers the degree-m evaluation forms: 2, 4, ..., m - 1 (up to 6 for m = 13)."""
    return (2, 4, 6) if degree == 13 else tuple(range(2, degree, 2))


def _odd_even(degree: int, powers: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, V) with ``p_m(A) = A W + V``: V collects the even terms, ``A W`` the odd ones."""
    b = pade_coefficients(degree)
    even = powers[1:]
    if degree == 13:  # Higham 2005, eq. 2.3: two products instead of three more powers
        A2, A4, A6 = even
        W1 = _combination((b[13], b[11], b[9]), (A6, A4, A2))
        Z1 = _combination((b[12], b[10], b[8]), (A6, A4, A2))
        W = _combination((b[7], b[5], b[3]), (A6, A4, A2), b[1]).addmm_(A6, W1)
        V = _combination((b[6], b[4], b[2]), (A6, A4, A2), b[0]).addmm_(A6, Z1)
        return W, V
    W = _combination(tuple(b[k + 1] for k in range(2, degree, 2)), even, b[1])
    V = _combination(tuple(b[k] for k in range(2, degree, 2)), even, b[0])
    return W, V


def _evaluate(A: torch.Tensor, keep: bool) -> tuple[torch.Tensor, _Approximant | None]:
    """``exp(A)`` for A already in its work dtype; with ``keep``, also the factors for the backward."""
    norm = float(torch.linalg.matrix_norm(A, ord=1))
    degree, squarings = choose_approximant(norm, A.dtype)
    if squarings:
        A = A * 2.0**-squarings
    powers = [A, A @ A]
    for _ in _even_powers_needed(degree)[1:]:
        powers.append(powers[-1] @ powers[1])
    powers_t = tuple(powers)
    W, V = _odd_even(degree, powers_t)
    U = A @ W
    lu, order = _factor(V - U)
    chain = [_solve(lu, order, V.add_(U))]
    del U, V
    for _ in range(squarings):
        chain.append(chain[-1] @ chain[-1])
        if not keep:
            del chain[0]
    if not keep:
        return chain[-1], None
    return chain[-1], _Approximant(degree, squarings, powers_t, W, lu, order, tuple(chain))


def _frechet_of_polynomials(state: _Approximant, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_U, L_V): the Fréchet derivatives of the odd and even parts of ``p_m`` along E.

    ``M_2k``, the derivative of ``A^2k``, follows ``M_2 = A E + E A`` and
    ``M_2k = A^(2k-2) M_2 + M_(2k-2) A^2``.
    """
    degree = state.degree
    b = pade_coefficients(degree)
    A, A2 = state.powers[0], state.powers[1]
    M = [(A @ E).addmm_(E, A)]
    for A_before in state.powers[1:-1]:
        M.append((A_before @ M[0]).addmm_(M[-1], A2))
    M_t = tuple(M)
    if degree == 13:
        A6 = state.powers[3]
        A_even = (state.powers[3], state.powers[2], A2)
        M6_4_2 = (M_t[2], M_t[1], M_t[0])
        W1 = _combination((b[13], b[11], b[9]), A_even)
        Z1 = _combination((b[12], b[10], b[8]), A_even)
        Lw = _combination((b[7], b[5], b[3]), M6_4_2).addmm_(A6, _combination((b[13], b[11], b[9]), M6_4_2))
        Lw.addmm_(M_t[2], W1)
        Lv = _combination((b[6], b[4], b[2]), M6_4_2).addmm_(A6, _combination((b[12], b[10], b[8]), M6_4_2))
        Lv.addmm_(M_t[2], Z1)
    else:
        Lw = _combination(tuple(b[k + 1] for k in range(2, degree, 2)), M_t)
        Lv = _combination(tuple(b[k] for k in range(2, degree, 2)), M_t)
    Lu = (E @ state.odd).addmm_(A, Lw)
    return Lu, Lv


def _frechet(state: _Approximant, E: torch.Tensor) -> torch.Tensor:
    """``L(A, E)`` of the approximant in ``state``, E in the work dtype (unscaled)."""
    if state.squarings:
        E = E * 2.0**-state.squarings
    Lu, Lv = _frechet_of_polynomials(state, E)
    # (V - U) r = V + U, differentiated: (V - U) L_r = L_U + L_V + (L_U - L_V) r
    rhs = (Lu + Lv).addmm_(Lu.sub_(Lv), state.chain[0])
    del Lu, Lv
    L = _solve(state.lu, state.order, rhs)
    for R in state.chain[:-1]:  # X -> X^2 differentiates to L -> R L + L R
        L = (R @ L).addmm_(L, R)
    return L


def frechet_exp(A: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """``L(A, E) = d/dt exp(A + tE) at t = 0`` for square A, E (computed in float64 at most)."""
    work = work_dtype(A.dtype)
    _, state = _evaluate(A.to(work), keep=True)
    assert state is not None  # keep=True always returns the factors
    return _frechet(state, E.to(work)).to(A.dtype)


class _MatrixExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor) -> torch.Tensor:  # noqa: D102
        keep = ctx.needs_input_grad[0]
        X, state = _evaluate(A.to(work_dtype(A.dtype)), keep=keep)
        if state is not None:
            ctx.degree, ctx.squarings = state.degree, state.squarings
            ctx.save_for_backward(*state.tensors())
        return X.to(A.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        state = _Approximant.from_tensors(ctx.degree, ctx.squarings, ctx.saved_tensors)
        return _frechet(state, grad.mT.to(state.odd.dtype)).mT.to(grad.dtype)


def matrix_exp(A: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_exp`` for one square matrix, with a backward that reuses the forward."""
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix_exp expects one square matrix, got shape {tuple(A.shape)}")
    return _MatrixExp.apply(A)
