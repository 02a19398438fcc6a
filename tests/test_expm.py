"""The Padé matrix_exp and its Fréchet-derivative backward equal PyTorch's own, branch by branch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from epic_hf.disentangle import Disentangler
from epic_hf.expm import _THRESHOLDS, choose_approximant, frechet_exp, matrix_exp, pade_coefficients

ROOT = Path(__file__).resolve().parents[1]


def generator(dim: int, norm: float, skew: bool, seed: int, dtype=torch.float64) -> torch.Tensor:
    A = torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if skew:
        A = A - A.T
    return (A * norm / torch.linalg.matrix_norm(A, ord=1).clamp_min(1e-12)).to(dtype)


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    x, reference = x.detach().double(), reference.detach().double()
    return float((x - reference).norm() / reference.norm())


@pytest.mark.parametrize("norm", [0.0, 1e-3, 0.5, 3.0, 20.0, 80.0])  # no scaling up to 6 squarings
def test_gradient_matches_torch_in_float64(norm):
    generator_ = torch.Generator().manual_seed(int(norm * 10))
    A = torch.randn(24, 24, dtype=torch.float64, generator=generator_)
    A = (A * norm / torch.linalg.matrix_norm(A, ord=1).clamp_min(1e-12)).requires_grad_()
    G = torch.randn(24, 24, dtype=torch.float64, generator=generator_)
    expected, = torch.autograd.grad(torch.linalg.matrix_exp(A), A, G)
    got, = torch.autograd.grad(matrix_exp(A), A, G)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


# (1-norm, the (degree, squarings) it must select): every float64 branch, just under each threshold,
# then past the last one.
FLOAT64_BRANCHES = [(0.01, (3, 0)), (0.19, (5, 0)), (0.75, (7, 0)), (1.7, (9, 0)), (4.5, (13, 0)),
                    (9.0, (13, 1)), (150.0, (13, 5))]


@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
@pytest.mark.parametrize("norm, branch", FLOAT64_BRANCHES)
def test_every_float64_branch_matches_torch(norm, branch, skew):
    assert choose_approximant(norm, torch.float64) == branch
    A = generator(20, norm, skew, seed=int(norm * 100)).requires_grad_()
    G = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ours = matrix_exp(A)
    expected = torch.linalg.matrix_exp(A)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-13)
    got, = torch.autograd.grad(ours, A, G)
    want, = torch.autograd.grad(expected, A, G)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)


# float32 work uses the single-precision table: degree 7 is the top, larger norms scale.
FLOAT32_BRANCHES = [(0.05, (3, 0)), (0.3, (3, 0)), (1.4, (5, 0)), (3.0, (7, 0)), (10.0, (7, 2)), (100.0, (7, 5))]


@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
@pytest.mark.parametrize("norm, branch", FLOAT32_BRANCHES)
def test_every_float32_branch_is_float32_accurate(norm, branch, skew):
    assert choose_approximant(norm, torch.float32) == branch
    A64 = generator(32, norm, skew, seed=int(norm * 10) + 3)
    G = torch.randn(32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    reference = torch.linalg.matrix_exp(A64)
    leaf = A64.detach().clone().requires_grad_()
    reference_grad, = torch.autograd.grad(torch.linalg.matrix_exp(leaf), leaf, G)
    A = A64.float().requires_grad_()
    ours = matrix_exp(A)
    assert ours.dtype == torch.float32
    grad, = torch.autograd.grad(ours, A, G.float())
    # relative errors measured ~1e-7 unscaled and ~2e-6 at 5 squarings (torch's float32: up to ~1e-5)
    assert relative_error(ours, reference) < 1e-5
    assert relative_error(grad, reference_grad) < 1e-5
    # elementwise, torch's float32 result is no closer to the reference than ours: compare as matrices
    assert relative_error(ours, torch.linalg.matrix_exp(A.detach())) < 2e-5


def test_half_precision_input_is_worked_in_float32():
    A = generator(16, 2.0, True, seed=9, dtype=torch.bfloat16).requires_grad_()
    X = matrix_exp(A)
    X.float().sum().backward()
    assert X.dtype == torch.bfloat16 and A.grad.dtype == torch.bfloat16
    torch.testing.assert_close(X.float(), torch.linalg.matrix_exp(A.detach().float()), rtol=2e-2, atol=1e-2)


def test_no_grad_forward_is_the_same_approximant():
    A = generator(24, 30.0, False, seed=4, dtype=torch.float32)
    with torch.no_grad():
        without = matrix_exp(A)
    with_graph = matrix_exp(A.clone().requires_grad_())
    assert torch.equal(without, with_graph.detach())


def test_frechet_derivative_matches_finite_differences():
    generator_ = torch.Generator().manual_seed(7)
    A = torch.randn(6, 6, dtype=torch.float64, generator=generator_)
    E = torch.randn(6, 6, dtype=torch.float64, generator=generator_)
    step = 1e-6
    numeric = (torch.linalg.matrix_exp(A + step * E) - torch.linalg.matrix_exp(A - step * E)) / (2 * step)
    torch.testing.assert_close(frechet_exp(A, E), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("norm", [0.1, 40.0])  # unscaled degree 5; degree 13 with 4 squarings
def test_frechet_exp_matches_the_derivative_torch_differentiates(norm):
    A = generator(12, norm, False, seed=11)
    E = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    _, expected = torch.autograd.functional.jvp(torch.linalg.matrix_exp, A, E)
    torch.testing.assert_close(frechet_exp(A, E), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_disentangler_gradient_in_float32(kind):
    disentangler = Disentangler(32, kind)
    with torch.no_grad():
        disentangler.S.copy_(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)) * 0.2)
    weights = torch.randn(32, 32, generator=torch.Generator().manual_seed(2))
    (disentangler.matrix() * weights).sum().backward()
    ours = disentangler.S.grad.clone()
    S = disentangler.S.detach().clone().requires_grad_()
    generator_matrix = S - S.T if kind == "orthogonal" else S
    (torch.linalg.matrix_exp(generator_matrix) * weights).sum().backward()
    torch.testing.assert_close(ours, S.grad, rtol=1e-4, atol=1e-5)


def test_matrix_exp_refuses_batches():
    with pytest.raises(ValueError, match="one square matrix"):
        matrix_exp(torch.zeros(2, 3, 3))


def test_pade_coefficients_are_higham_2005_degree_13():
    assert pade_coefficients(13) == (
        64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
        10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0)
    assert pade_coefficients(3) == (120.0, 60.0, 12.0, 1.0)


def _backward_error_series(degree: int, terms: int, mp) -> list:
    """Coefficients c_k of ``h(x) = log(exp(-x) r_m(x)) = log p(x) - log p(-x) - x`` (exact Padé coefficients)."""

    def log_series(p: list) -> list:  # log P from (log P)' = P' / P, P(0) = 1
        p = p + [0] * (terms + 1 - len(p))
        derivative = []
        for k in range(terms):
            derivative.append((k + 1) * p[k + 1] - sum(derivative[i] * p[k - i] for i in range(k)))
        return [mp.mpf(0)] + [derivative[k - 1] / k for k in range(1, terms + 1)]

    b = pade_coefficients(degree)  # integers, exact in float64
    p = [mp.mpf(int(bj)) / int(b[0]) for bj in b]
    plus, minus = log_series(p), log_series([(-1) ** j * c for j, c in enumerate(p)])
    h = [x - y for x, y in zip(plus, minus)]
    h[1] -= 1
    return h


def _largest_root(function, mp):
    low, high = mp.mpf(0), mp.mpf(1)
    while function(high) < 0:
        high *= 2
    for _ in range(70):
        middle = (low + high) / 2
        low, high = (middle, high) if function(middle) < 0 else (low, middle)
    return low


def test_thresholds_are_rederived_from_the_backward_error_series():
    """theta_m (Higham 2005: sum |c_k| x^(k-1) = u) reproduces the published double-precision values,
    and the same series gives the ell_m of the table (Al-Mohy & Higham 2009: sum k |c_k| x^(k-1) = u)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        _check_thresholds(mpmath.mp)


def _check_thresholds(mp) -> None:
    published_theta = {3: 1.495585217958292e-2, 5: 2.539398330063230e-1, 7: 9.504178996162932e-1,
                       9: 2.097847961257068e0, 13: 5.371920351148152e0}
    for dtype, unit_roundoff in ((torch.float64, mp.mpf(2) ** -53), (torch.float32, mp.mpf(2) ** -24)):
        for degree, ell in _THRESHOLDS[dtype]:
            h = _backward_error_series(degree, 120, mp)
            assert max(abs(c) for c in h[: 2 * degree + 1]) < mp.mpf(10) ** -40  # h = O(x^(2m+1))
            tail = range(2 * degree + 1, len(h))
            derived_ell = _largest_root(lambda x: sum(k * abs(h[k]) * x ** (k - 1) for k in tail) - unit_roundoff, mp)
            assert float(derived_ell) == pytest.approx(ell, rel=1e-12)
            if dtype == torch.float64:
                theta = _largest_root(lambda x: sum(abs(h[k]) * x ** (k - 1) for k in tail) - unit_roundoff, mp)
                assert float(theta) == pytest.approx(published_theta[degree], rel=1e-12)


def test_benchmark_small_mode_prints_its_table(capsys):
    spec = importlib.util.spec_from_file_location("bench_expm", ROOT / "benchmarks" / "bench_expm.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--small", "--norms", "0.05", "100", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 64 ") or line.startswith("| 128 ")]
    assert [row.split("|")[1:5] for row in rows] == [
        [" 64 ", " 0.05 ", " 3 ", " 0 "], [" 64 ", " 100.0 ", " 7 ", " 5 "],
        [" 128 ", " 0.05 ", " 3 ", " 0 "], [" 128 ", " 100.0 ", " 7 ", " 5 "]]
    for row in rows:
        assert float(row.split("|")[11]) < 1e-5  # forward error of ours against float64
