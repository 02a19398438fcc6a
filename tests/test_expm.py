"""The Fréchet-derivative backward of matrix_exp equals PyTorch's own gradient."""

from __future__ import annotations

import pytest
import torch

from epic_hf.disentangle import Disentangler
from epic_hf.expm import frechet_exp, matrix_exp


@pytest.mark.parametrize("norm", [0.0, 1e-3, 0.5, 3.0, 20.0, 80.0])  # no scaling up to 6 squarings
def test_gradient_matches_torch_in_float64(norm):
    generator = torch.Generator().manual_seed(int(norm * 10))
    A = torch.randn(24, 24, dtype=torch.float64, generator=generator)
    A = (A * norm / torch.linalg.matrix_norm(A, ord=1).clamp_min(1e-12)).requires_grad_()
    G = torch.randn(24, 24, dtype=torch.float64, generator=generator)
    expected, = torch.autograd.grad(torch.linalg.matrix_exp(A), A, G)
    got, = torch.autograd.grad(matrix_exp(A), A, G)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_frechet_derivative_matches_finite_differences():
    generator = torch.Generator().manual_seed(7)
    A = torch.randn(6, 6, dtype=torch.float64, generator=generator)
    E = torch.randn(6, 6, dtype=torch.float64, generator=generator)
    step = 1e-6
    numeric = (torch.linalg.matrix_exp(A + step * E) - torch.linalg.matrix_exp(A - step * E)) / (2 * step)
    torch.testing.assert_close(frechet_exp(A, E), numeric, rtol=1e-6, atol=1e-8)


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
