"""Several processes (``accelerate launch`` / torchrun) or one: the accelerator and its collectives.

Each process indexes a disjoint share of the data; the shares are gathered and merged by sample
key, and each training minibatch is split across processes with its gradient summed over them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from .index import merge_shards

if TYPE_CHECKING:
    from accelerate import Accelerator


def make_accelerator(mixed_precision: str | None) -> Accelerator:
    """An ``accelerate.Accelerator`` from the launcher's environment; gloo on CPU-only machines."""
    from accelerate import Accelerator  # imports torch.distributed machinery: only when a fit starts

    cpu_only = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu_only)
    check_process_group(accelerator)
    return accelerator


def check_process_group(accelerator: Accelerator) -> None:
    """Refuse to run N independent copies of the fit when a launcher started N processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate set up "
            f"{accelerator.num_processes}; check the launcher's flags (`accelerate launch --multi_gpu "
            "--num_processes N` and torchrun both work on CPU-only machines)"
        )


def gather_index(accelerator: Accelerator, vectors: torch.Tensor, keys: torch.Tensor,
                 *extras: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All processes' (vectors, keys, *per-row extras), merged: padded gather, unpadded by counts,
    deduplicated and sorted by key."""
    if accelerator.num_processes == 1:
        if keys.numel() == 0 or bool((keys[1:] > keys[:-1]).all()):
            return (vectors, keys, *extras)  # already sorted and unique: keep a memmap as it is
        return merge_shards([(vectors, keys, *extras)])
    device = accelerator.device
    counts = accelerator.gather(torch.tensor([keys.numel()], device=device)).cpu().tolist()
    columns = [accelerator.gather(accelerator.pad_across_processes(torch.as_tensor(column).to(device), dim=0)).cpu()
               for column in (vectors, keys, *extras)]
    width = columns[1].shape[0] // len(counts)
    shards = [tuple(column[i * width: i * width + count] for column in columns) for i, count in enumerate(counts)]
    return merge_shards(shards)


def gather_keys(accelerator: Accelerator, keys: list[int]) -> list[int]:
    """The union of every process's ``keys``, sorted."""
    if accelerator.num_processes == 1:
        return sorted(keys)
    from accelerate.utils import gather_object  # only reached under a multi-process launch

    return sorted(set(gather_object(list(keys))))


def max_over_processes(accelerator: Accelerator, values: list[int]) -> list[int]:
    """Element-wise max of a small integer list over processes (e.g. the grid, known where data was)."""
    if accelerator.num_processes == 1:
        return values
    tensor = torch.tensor(values, device=accelerator.device)
    return [int(v) for v in accelerator.reduce(tensor, reduction="max").tolist()]


def local_share(order: torch.Tensor, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """The positions of ``order`` this process trains on: its slice of every minibatch."""
    if world == 1:
        return order
    return torch.cat([order[start: start + batch_size][rank::world] for start in range(0, order.numel(), batch_size)])
