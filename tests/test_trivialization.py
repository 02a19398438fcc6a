"""Dynamic trivialization (the default for an orthogonal U) against the paper's Adam on S.

At S = 0 the two parameterisations have the same gradient, so their first optimizer step is the
same rotation up to the Cayley map's third-order difference from exp; afterwards U stays a
rotation, and a bank carries its base so that explanations are exact after a round trip.
"""

from __future__ import annotations

import pytest
import torch

from epic_hf import EpicExplainer, FitConfig, PrototypeBank
from epic_hf.disentangle import Disentangler, cayley
from epic_hf.fit.checkpoint import FitCheckpoint
from epic_hf.fit.distributed import make_accelerator
from epic_hf.fit.index import PooledIndex
from epic_hf.fit.report import FitReport
from epic_hf.fit.trainer import Trainer
from epic_hf.synthetic import planted_dataset, tiny_resnet

FIT = dict(schedule_start=8, schedule_end=3, schedule_steps=3, prototypes_per_channel=3, train_batch_size=64)


class MapsInMemory:
    """Feature maps by sample key, all in memory: the ``FeatureMaps`` protocol the Trainer reads, no backbone."""

    def __init__(self, maps: torch.Tensor) -> None:
        self.table = dict(enumerate(maps))
        self.fetched: list[int] = []

    def maps(self, keys) -> torch.Tensor:
        keys = [int(k) for k in keys]
        self.fetched.extend(keys)
        return torch.stack([self.table[k] for k in keys])

    def prefetch(self, keys) -> None:
        missing = set(int(k) for k in keys) - set(self.table)
        assert not missing, f"the trainer asked for keys it was never given: {sorted(missing)}"


def _trainer(kind: str, maps: torch.Tensor, trivialization: str, **settings) -> Trainer:
    """A real Trainer over ``maps`` (keys 0..n-1), read through the FeatureMaps protocol."""
    config = FitConfig(trivialization=trivialization, **{"lr": 1e-2, **settings})
    store = MapsInMemory(maps)
    keys = list(range(maps.shape[0]))
    index = PooledIndex(vectors=maps.mean(dim=(2, 3)), keys=torch.tensor(keys), grid_size=tuple(maps.shape[-2:]))
    return Trainer(Disentangler(maps.shape[1], kind), index, store, config, make_accelerator(None),
                   FitCheckpoint(None, {}))


def test_the_first_step_matches_the_papers_up_to_third_order():
    maps = torch.rand(6, 12, 3, 3, generator=torch.Generator().manual_seed(0))
    keys, channels = torch.arange(6).repeat(2), torch.arange(12)
    paper, ours = _trainer("orthogonal", maps, "none"), _trainer("orthogonal", maps, "dynamic")
    paper.train_step(keys, channels, 12)
    ours.train_step(keys, channels, 12)
    step = paper.disentangler.S.detach() - paper.disentangler.S.detach().T
    assert step.abs().max() > 1e-3  # a real step was taken
    with torch.no_grad():
        third_order = float(torch.linalg.matrix_norm(step, ord=2)) ** 3 / 12  # exp(A) - cayley(A) = A^3/12 + ...
        difference = (ours.disentangler.matrix() - paper.disentangler.matrix()).abs().max()
        assert 0 < difference <= 2 * third_order
        assert torch.allclose(ours.disentangler.matrix(), cayley(step), atol=1e-7)
    assert not ours.disentangler.S.detach().any()  # S is moved into the base every step
    assert sorted(ours.store.fetched) == sorted(keys.tolist())  # the step read exactly its minibatch's maps


def test_a_schedule_over_maps_in_memory_raises_the_purity_it_trains():
    """Trainer.run on a planted structure: channel c's maps peak at one cell in a mixed direction, which a
    rotation can make pure; each step's purity after training is above the purity it started from."""
    generator = torch.Generator().manual_seed(4)
    mixing = torch.linalg.qr(torch.randn(8, 8, generator=generator))[0]
    maps = torch.rand(24, 8, 3, 3, generator=generator) * 0.05
    for image in range(24):
        maps[image, :, image % 3, image % 2] += 2.0 * mixing[:, image % 8]
    trainer = _trainer("orthogonal", maps, "dynamic", schedule_start=12, schedule_end=4, schedule_steps=3,
                       train_batch_size=32, lr=5e-2)
    report = FitReport(purity_before=float("nan"), purity_after=float("nan"))
    trainer.run(report)
    assert len(report.steps) == len(trainer.plan) == 3
    assert all(step.purity_after > step.purity_before for step in report.steps)
    assert report.steps[-1].purity_after > report.steps[0].purity_before + 0.05


def test_many_steps_keep_U_a_rotation():
    maps = torch.rand(10, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    ours = _trainer("orthogonal", maps, "dynamic")
    for _ in range(300):
        ours.train_step(torch.arange(10).repeat(4)[:32], torch.randint(0, 16, (32,)), 32)
    U = ours.disentangler.matrix()
    assert (U @ U.T - torch.eye(16)).abs().max() < 1e-4
    ours.disentangler.orthonormalize_base()
    U = ours.disentangler.matrix()
    assert (U @ U.T - torch.eye(16)).abs().max() < 1e-6 and U.is_contiguous()


def test_invertible_fits_keep_the_papers_parameterisation():
    maps = torch.rand(4, 6, 2, 2, generator=torch.Generator().manual_seed(2))
    trainer = _trainer("invertible", maps, "dynamic")
    trainer.train_step(torch.arange(4), torch.arange(4), 4)
    assert trainer.disentangler.base is None and trainer.disentangler.S.detach().abs().sum() > 0
    with pytest.raises(ValueError, match="only an orthogonal U"):
        trainer.disentangler.set_base(torch.eye(6))


@pytest.mark.parametrize("trivialization", ["dynamic", "none"])
def test_a_trivialized_bank_round_trips_exactly(trivialization, tmp_path):
    data = planted_dataset(40, num_classes=4, size=32, seed=0)
    model, processor = tiny_resnet(4, (8, 8), seed=3)
    explainer = EpicExplainer(model, processor)
    report = explainer.fit(data, trivialization=trivialization, lr=5e-2, **FIT)
    bank = explainer.bank
    assert (bank.base is not None) == (trivialization == "dynamic")
    assert not torch.allclose(explainer.U, torch.eye(explainer.num_channels))  # U moved
    assert report.purity_after == pytest.approx(bank.config.purity_after)
    explainer.save_pretrained(tmp_path / "bank")
    loaded = PrototypeBank.from_pretrained(tmp_path / "bank")
    assert torch.equal(loaded.U, bank.U)
    again = EpicExplainer(model, processor, bank=loaded)
    images = list(planted_dataset(2, num_classes=4, size=32, seed=7)["image"])
    for a, b in zip(explainer.explain(images), again.explain(images)):
        assert torch.equal(a.logits, b.logits) and torch.equal(a.contributions, b.contributions)
        assert float(b.contributions.sum() + b.bias) == pytest.approx(float(b.logits[b.target_index]), abs=1e-5)


def test_a_trivialized_bank_stores_its_base_once(tmp_path):
    from safetensors import safe_open

    data = planted_dataset(24, num_classes=4, size=32, seed=0)
    model, processor = tiny_resnet(4, (8, 8), seed=3)
    explainer = EpicExplainer(model, processor)
    explainer.fit(data, **FIT)
    explainer.save_pretrained(tmp_path / "bank")
    with safe_open(str(tmp_path / "bank" / "epic_bank.safetensors"), framework="pt") as handle:
        assert "U_base" not in handle.keys() and handle.metadata()["U_is_base"] == "1"
    loaded = PrototypeBank.from_pretrained(tmp_path / "bank")
    assert torch.equal(loaded.base, explainer.bank.base) and torch.equal(loaded.U, explainer.U.cpu())
