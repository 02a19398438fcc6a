"""Mining is exact: the chunked top-N equals a brute-force sort over all samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epic_hf.disentangle import Disentangler, cell_box, purity_of_features, purity_of_maps, transform
from epic_hf.fit.index import IndexWriter, PooledIndex, merge_shards, top_rows
from epic_hf.fit.schedules import prototypes_at_step, schedule


def _random_U(dim: int, kind: str, seed: int = 0) -> torch.Tensor:
    disentangler = Disentangler(dim, kind)
    with torch.no_grad():
        disentangler.S.copy_(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)) * 0.2)
        return disentangler.matrix()


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
@pytest.mark.parametrize("count,chunk", [(100, 64), (7, 64), (100, 1000), (150, 37)])
def test_top_rows_equal_brute_force(kind, count, chunk):
    vectors = torch.randn(1000, 12, generator=torch.Generator().manual_seed(1))  # last chunk is short
    U = _random_U(12, kind)
    scores, rows = top_rows(vectors, U, count, chunk_size=chunk, scale=49.0)
    full = (vectors @ U.T).T * 49.0
    expected_scores, expected_rows = full.sort(dim=1, descending=True, stable=True)
    assert torch.equal(rows, expected_rows[:, :count])
    torch.testing.assert_close(scores, expected_scores[:, :count].double())


def test_ties_break_towards_the_lower_row_for_any_chunk_size():
    vectors = torch.ones(10, 3)
    _, rows_a = top_rows(vectors, torch.eye(3), 4, chunk_size=3)
    _, rows_b = top_rows(vectors, torch.eye(3), 4, chunk_size=100)
    assert rows_a.tolist() == rows_b.tolist() == [[0, 1, 2, 3]] * 3


def test_count_larger_than_index_is_clamped():
    scores, rows = top_rows(torch.randn(3, 4), torch.eye(4), 10, chunk_size=2)
    assert rows.shape == (4, 3)


def test_index_scores_are_sums_over_cells():
    index = PooledIndex(vectors=torch.tensor([[1.0, 2.0]]), keys=torch.tensor([5]), grid_size=(2, 3))
    scores, _ = index.top_prototypes(torch.eye(2), 1)
    assert scores.tolist() == [[6.0], [12.0]]


def test_index_writer_spills_to_a_memory_map(tmp_path):
    writer = IndexWriter(dim=4, budget_bytes=100, spill_dir=tmp_path)
    batches = [torch.randn(5, 4) for _ in range(4)]
    for i, batch in enumerate(batches):
        writer.add(list(range(i * 5, i * 5 + 5)), batch)
    vectors, keys = writer.finish()
    assert writer.spill_path is not None and writer.spill_path.parent == tmp_path
    torch.testing.assert_close(vectors, torch.cat(batches))
    assert keys.tolist() == list(range(20))


def test_merge_shards_sorts_and_deduplicates():
    a = (torch.tensor([[3.0], [1.0]]), torch.tensor([3, 1]))
    b = (torch.tensor([[2.0], [1.0]]), torch.tensor([2, 1]))  # key 1 padded in twice
    vectors, keys = merge_shards([a, b])
    assert keys.tolist() == [1, 2, 3] and vectors.squeeze(1).tolist() == [1.0, 2.0, 3.0]


# -- purity, worked out by hand ---------------------------------------------------------------
def test_purity_by_hand():
    G = torch.zeros(1, 2, 2, 2)
    G[0, 0] = torch.tensor([[1.0, 3.0], [0.0, 2.0]])  # channel 0 peaks at (0, 1) with 3
    G[0, 1] = torch.tensor([[0.0, 4.0], [5.0, 0.0]])  # the other channel there is 4
    purity = purity_of_maps(G, torch.tensor([0]))
    assert purity.item() == pytest.approx(3 / 5)  # 3 / ||(3, 4)||
    assert purity_of_maps(G, torch.tensor([1])).item() == pytest.approx(5 / 5)  # at (1, 0): (0, 5)


def test_purity_tie_takes_the_first_cell_in_row_major_order():
    G = torch.zeros(1, 2, 1, 3)
    G[0, 0] = torch.tensor([[2.0, 2.0, 1.0]])
    G[0, 1] = torch.tensor([[0.0, 2.0, 0.0]])  # the tie at cells 0 and 1: cell 0 wins
    assert purity_of_maps(G, torch.tensor([0])).item() == pytest.approx(1.0)


def test_purity_of_a_zero_cell_uses_the_norm_floor():
    G = torch.zeros(1, 3, 2, 2)
    assert purity_of_maps(G, torch.tensor([1])).item() == 0.0
    G[0, 0, 0, 0] = -1e-9  # an all-negative channel peaks at a zero cell: 0 / 1e-8
    G[0, 0, 1:, :] = -1.0
    G[0, 0, 0, 1] = -2.0
    assert purity_of_maps(G, torch.tensor([0])).item() == pytest.approx(-1e-9 / 1e-8)


def test_negative_purity_is_possible():
    G = torch.tensor([[[[-1.0]], [[1.0]]]])
    assert purity_of_maps(G, torch.tensor([0])).item() == pytest.approx(-1 / 2**0.5)


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_fast_purity_equals_whole_map_purity(kind):
    generator = torch.Generator().manual_seed(3)
    fmaps = torch.randn(20, 6, 3, 4, generator=generator).relu()
    channels = torch.randint(0, 6, (20,), generator=generator)
    U = _random_U(6, kind, seed=4)
    fast = purity_of_features(fmaps, channels, U, orthogonal=(kind == "orthogonal"))
    torch.testing.assert_close(fast, purity_of_maps(transform(fmaps, U), channels), atol=1e-5, rtol=1e-5)


def test_cell_box_scales_the_grid_to_input_pixels():
    assert cell_box(0, 0, (7, 7), (224, 224)) == (0, 0, 32, 32)
    assert cell_box(6, 6, (7, 7), (224, 224)) == (192, 192, 224, 224)
    assert cell_box(1, 2, (3, 3), (10, 20)) == (13, 3, 20, 7)


# -- schedules ----------------------------------------------------------------------------------
def test_linear_schedule_matches_the_reference_formula():
    expected = [int(max(5, 100 - (100 - 5) / 10 * step)) for step in range(10)]
    assert schedule("linear", 100, 5, 10) == expected == [100, 90, 81, 71, 62, 52, 43, 33, 24, 14]


def test_exponential_and_logarithmic_schedules():
    assert prototypes_at_step("exponential", 0, 100, 5, 10) == 100
    assert prototypes_at_step("exponential", 5, 100, 5, 10) == int(100 * (5 / 100) ** 0.5)
    log = schedule("logarithmic", 100, 5, 10)
    assert log[0] == 100 and all(a >= b for a, b in zip(log, log[1:]))


def test_schedules_match_the_official_values():
    """The official EPIC code's LinearDecay, ExponentialDecay and LogDecay, value for value."""
    assert schedule("linear", 100, 5, 10) == [100, 90, 81, 71, 62, 52, 43, 33, 24, 14]
    assert schedule("exponential", 100, 5, 10) == [int(100 * (5 / 100) ** (s / 10)) for s in range(10)]
    assert schedule("exponential", 100, 5, 10) == [100, 74, 54, 40, 30, 22, 16, 12, 9, 6]
    assert schedule("logarithmic", 100, 5, 10) == [100, 92, 85, 77, 69, 60, 51, 40, 29, 18]
    assert schedule("linear", 20, 5, 3) == [20, 15, 10]
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedule("cosine", 100, 5, 10)


@pytest.mark.parametrize("block", [1, 5, 64])
def test_the_one_miner_gives_the_brute_force_top_n_whatever_the_order_and_blocks(block):
    """Fit and evaluation both merge with TopN: scores in shuffled blocks, ties included, give the full sort."""
    from epic_hf.mining import TopN

    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (200, 4), generator=generator).double()  # many ties
    keys = torch.randperm(200, generator=generator) * 7  # keys are not positions
    top = TopN(4, 9)
    for start in range(0, 200, block):
        top.update(keys[start: start + block], scores[start: start + block].T)
    by_key = keys.argsort()
    expected = by_key[scores[by_key].T.argsort(dim=1, descending=True, stable=True)[:, :9]]
    assert torch.equal(top.keys, keys[expected])
    assert torch.equal(top.scores, scores.T.gather(1, expected))
    restored = TopN.from_state(top.state_dict())
    assert torch.equal(restored.keys, top.keys) and torch.equal(restored.scores, top.scores)


def test_the_fit_and_the_evaluation_mine_the_same_prototypes_from_the_same_vectors():
    from epic_hf.mining import TopN

    vectors = torch.randn(300, 6, generator=torch.Generator().manual_seed(4))
    U = _random_U(6, "invertible")
    _, rows = top_rows(vectors, U, 5, chunk_size=64)
    streamed = TopN(6, 5)
    for start in range(0, 300, 32):  # as the evaluation sees the data: batches of (B, D) readouts
        streamed.update(list(range(start, min(start + 32, 300))), (vectors[start: start + 32] @ U.T).T)
    assert torch.equal(streamed.keys, rows)
