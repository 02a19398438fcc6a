"""Training U: the schedule of (re-mine the prototypes, train on them) steps.

At each schedule step the top-N prototypes of every channel are re-mined under the current U
(a matrix product on the pooled index), their purity is measured, U is trained for a few
epochs on the shuffled (prototype, channel) pairs, and the purity of the same pairs is
measured again: the curve the official code reports. An orthogonal U is trained by dynamic
trivialization by default (a gradient at the current U and a Cayley rotation per step, no
``matrix_exp``); ``trivialization='none'`` and the invertible kind follow the paper: Adam on S
through one ``matrix_exp`` per minibatch. Minibatches are split across processes and their
gradients summed.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..config import FitConfig
from ..disentangle import Disentangler, purity_of_features
from ..progress import progress_bar
from .checkpoint import FitCheckpoint
from .distributed import local_share
from .estimate import TrainingEstimate
from .features import FeatureMaps, mean_purity, pairs
from .index import PooledIndex
from .report import FitReport, StepRecord
from .schedules import schedule as make_schedule

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

#: The pair order of epoch e of schedule step s is a permutation seeded with
#: ``seed * SEED_STRIDE_RUN + s * SEED_STRIDE_STEP + e``: distinct primes keep the orders of
#: different runs, steps and epochs apart, and the same on every process and on a resume.
SEED_STRIDE_RUN = 1_000_003
SEED_STRIDE_STEP = 1009


def optimizer_steps(plan: list[int], samples: int, dim: int, epochs: int, batch: int) -> int:
    """How many optimizer steps a plan takes (each one D x D linear solve, or a matrix exponential and its gradient)."""
    return sum(-(-min(count, samples) * dim // batch) for count in plan) * epochs


@torch.no_grad()
def bound_condition(S: torch.Tensor, max_condition: float) -> bool:
    """Keep ``cond(exp(S)) <= max_condition`` by scaling S back; True when it had to.

    ``cond(exp(S)) <= exp(2 ||S||_2)`` and ``||S||_2 <= sqrt(||S||_1 ||S||_inf)``, so bounding that
    cheap product (two O(D^2) norms, no SVD) bounds the condition number: U stays invertible
    enough for ``A' = A U^-1`` to reproduce the logits in float32.
    """
    limit = math.log(max_condition) / 2
    norm = math.sqrt(float(S.abs().sum(dim=0).max()) * float(S.abs().sum(dim=1).max()))
    if norm <= limit * (1 + 1e-6):  # rounding after a previous scale-back is not a new excess
        return False
    S.mul_(limit / norm)
    return True


class Trainer:
    """Runs the schedule on a disentangler, resuming from a checkpoint's last finished step.

    It reads feature maps through ``store`` (any :class:`~epic_hf.fit.features.FeatureMaps`): the
    backbone, the data and the images are the store's business, not the trainer's.
    """

    def __init__(self, disentangler: Disentangler, index: PooledIndex, store: FeatureMaps, config: FitConfig,
                 accelerator: Accelerator, checkpoint: FitCheckpoint) -> None:
        self.disentangler = disentangler
        self.index = index
        self.store = store
        self.config = config
        self.accelerator = accelerator
        self.checkpoint = checkpoint
        self.plan = make_schedule(config.schedule, config.schedule_start, config.schedule_end, config.schedule_steps)
        self.chunk = max(config.batch_size, config.train_batch_size)
        self.optimizer = torch.optim.Adam(disentangler.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.dynamic = disentangler.orthogonal and config.trivialization == "dynamic"

    def run(self, report: FitReport) -> None:
        """Train from S = 0 (U = I), or from the checkpoint; records each step in ``report``."""
        with torch.no_grad():
            self.disentangler.S.zero_()
        self.disentangler.set_base(None)
        first = self._resume(report)
        total = optimizer_steps(self.plan, len(self.index), self.disentangler.dim, self.config.epochs_per_step,
                                self.config.train_batch_size)
        done = optimizer_steps(self.plan[:first], len(self.index), self.disentangler.dim,
                               self.config.epochs_per_step, self.config.train_batch_size)
        logger.info("training plan: %d schedule steps %s, %d optimizer steps on a %dx%d U", len(self.plan),
                    self.plan, total, self.disentangler.dim, self.disentangler.dim)
        progress = progress_bar(total=total, initial=done, desc="EPIC training", unit="step",
                                disable=not self.accelerator.is_local_main_process)
        self.estimate = TrainingEstimate(total - done)
        for step in range(first, len(self.plan)):
            record = self._schedule_step(step, progress)
            report.steps.append(record)
            logger.info("step %d/%d: N=%d, purity of the mined prototypes %.4f -> %.4f after training (%.1f s)",
                        step + 1, len(self.plan), record.prototypes, record.purity_before, record.purity_after,
                        record.seconds)
            self.checkpoint.save_state(self._state_tensors(), {"finished_steps": step + 1,
                                                               "steps": [s.to_dict() for s in report.steps]})
            self.accelerator.wait_for_everyone()
        progress.close()

    def _resume(self, report: FitReport) -> int:
        state = self.checkpoint.load_state()
        if state is None:
            return 0
        tensors, meta = state
        with torch.no_grad():
            self.disentangler.S.copy_(tensors["S"].to(self.disentangler.S))
        self.disentangler.set_base(tensors.get("base"))
        if "adam.exp_avg" in tensors:
            device = self.disentangler.S.device
            self.optimizer.state[self.disentangler.S] = {
                "step": tensors["adam.step"].float().cpu(),
                "exp_avg": tensors["adam.exp_avg"].to(device),
                "exp_avg_sq": tensors["adam.exp_avg_sq"].to(device),
            }
        report.steps = [StepRecord(**values) for values in meta.get("steps", [])]
        report.resumed_from_step = int(meta["finished_steps"])
        logger.info("resuming the schedule after step %d of %d", report.resumed_from_step, len(self.plan))
        return report.resumed_from_step

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"S": self.disentangler.S.detach()}
        if self.disentangler.base is not None:
            tensors["base"] = self.disentangler.base
        state = self.optimizer.state.get(self.disentangler.S, {})
        for name in ("step", "exp_avg", "exp_avg_sq"):
            if name in state:
                tensors[f"adam.{name}"] = torch.as_tensor(state[name]).detach()
        return tensors

    def _current_U(self) -> torch.Tensor:
        with torch.no_grad():
            return self.disentangler.matrix().detach()

    def _schedule_step(self, step: int, progress: tqdm) -> StepRecord:
        started = time.perf_counter()
        count = self.plan[step]
        _, rows = self.index.top_prototypes(self._current_U(), count)
        keys = self.index.keys[rows]
        pair_keys, pair_channels = pairs(keys)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        orders = [torch.randperm(pair_keys.numel(), generator=torch.Generator().manual_seed(
            self.config.seed * SEED_STRIDE_RUN + step * SEED_STRIDE_STEP + epoch)) for epoch in range(self.config.epochs_per_step)]
        local = torch.cat([local_share(order, self.config.train_batch_size, rank, world) for order in orders])
        self.store.prefetch(pair_keys[local].tolist())
        orthogonal = self.disentangler.orthogonal
        before, _ = mean_purity(self.store, keys, self._current_U(), orthogonal, self.chunk)
        for order in orders:
            self._epoch(order, pair_keys, pair_channels, progress)
        self.disentangler.orthonormalize_base()
        after, _ = mean_purity(self.store, keys, self._current_U(), orthogonal, self.chunk)
        seconds = time.perf_counter() - started
        self.estimate.schedule_step_done(seconds, len(self.plan) - step - 1)
        return StepRecord(prototypes=count, purity_before=before, purity_after=after, seconds=seconds)

    def _epoch(self, order: torch.Tensor, pair_keys: torch.Tensor, pair_channels: torch.Tensor,
               progress: tqdm) -> None:
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        batch_size = self.config.train_batch_size
        for start in range(0, order.numel(), batch_size):
            batch = order[start: start + batch_size]
            started = time.perf_counter()
            self.train_step(pair_keys[batch[rank::world]], pair_channels[batch[rank::world]], batch.numel())
            self.estimate.record(time.perf_counter() - started)
            progress.update(1)

    def train_step(self, keys: torch.Tensor, channels: torch.Tensor, global_size: int) -> float:
        """One Adam step on ``-mean purity`` of a minibatch (this process's share of it)."""
        if self.dynamic:
            return self._trivialized_step(keys, channels, global_size)
        disentangler = self.disentangler
        self.optimizer.zero_grad(set_to_none=False)
        U = disentangler.matrix()
        if keys.numel():
            fmaps = self.store.maps(keys.tolist())
            purity = purity_of_features(fmaps, channels.to(fmaps.device), U, disentangler.orthogonal)
            loss = -purity.sum() / global_size
        else:
            loss = U.sum() * 0.0
        loss.backward()
        if self.accelerator.num_processes > 1:
            disentangler.S.grad = self.accelerator.reduce(disentangler.S.grad, reduction="sum")
        self.optimizer.step()
        if not disentangler.orthogonal:
            bound_condition(disentangler.S, self.config.max_condition)
        return float(-loss.detach()) * global_size

    def _trivialized_step(self, keys: torch.Tensor, channels: torch.Tensor, global_size: int) -> float:
        """Adam on S at S = 0 for ``U = base . exp(S - S^T)``, then ``base <- base . cayley(S - S^T)``, S <- 0.

        At S = 0 the gradient needs no matrix exponential: for ``G = dLoss/dU`` it is
        ``M - M^T`` with ``M = base^T G`` (a dynamic trivialization, Lezcano-Casado & Martinez-Rubio
        2019, moved every step, with a Cayley retraction). Adam's moments carry over between bases.
        """
        disentangler = self.disentangler
        base = disentangler.base if disentangler.base is not None else torch.eye(disentangler.dim).to(disentangler.S)
        U = base.detach().clone().requires_grad_(True)
        loss = U.sum() * 0.0
        if keys.numel():
            fmaps = self.store.maps(keys.tolist())
            loss = -purity_of_features(fmaps, channels.to(fmaps.device), U, True).sum() / global_size
        loss.backward()
        grad = U.grad if U.grad is not None else torch.zeros_like(U)  # no pairs on this process: no gradient
        if self.accelerator.num_processes > 1:
            grad = self.accelerator.reduce(grad, reduction="sum")
        moment = base.T @ grad
        self.optimizer.zero_grad(set_to_none=False)
        disentangler.S.grad = moment - moment.T
        self.optimizer.step()
        with torch.no_grad():
            disentangler.move_base(disentangler.S - disentangler.S.T)
            disentangler.S.zero_()
        return float(-loss.detach()) * global_size
