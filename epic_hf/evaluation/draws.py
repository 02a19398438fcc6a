"""Every random draw of an evaluation, seeded per sample by ``(seed, sample key)``.

Seeding by sample rather than by batch makes the numbers independent of the batch size and of
where a resumed run picked up: a sample gets the same noise and the same random channels however
the data reached it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


def sample_seed(seed: int, key: int) -> int:
    """The seed of one sample's draws (a hash, so that neighbouring keys get unrelated streams)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Draws:
    """For a batch: pixel noise (B, C, H, W) in input units, and random channel orders (B, R, D)."""

    noise: torch.Tensor
    orders: torch.Tensor


def draw(seed: int, keys: list[int], input_shape: tuple[int, int, int], noise_std: float,
         scale: torch.Tensor, num_channels: int, random_draws: int) -> Draws:
    """Noise of ``noise_std`` (in [0, 1] intensity units, times ``scale`` per input channel), then orders.

    ``orders[b, r]`` is a random permutation of the channels; draw r deletes its first n entries,
    n being the number of channels the top-k deletion removed from that image.
    """
    noises, orders = [], []
    for key in keys:
        generator = torch.Generator().manual_seed(sample_seed(seed, key))
        noises.append(torch.randn(input_shape, generator=generator, dtype=torch.float32))
        orders.append(torch.rand(random_draws, num_channels, generator=generator, dtype=torch.float64).argsort(dim=1))
    noise = torch.stack(noises) * (noise_std * scale.float().cpu())
    return Draws(noise=noise, orders=torch.stack(orders))
