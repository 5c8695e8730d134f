"""The cost model: its arithmetic, MPICH's Bcast choices, bounds and recommendations."""

import math

import pytest

from mpimat import model
from mpimat.model import Machine
from mpimat.partition import Grid

M = Machine(latency=1e-6, bandwidth=1e9, gflops=10.0, gflops_noblas=1.0, dot_gflops=2.0, dot_call=1e-6,
            dispatch_batch=5e-6, dispatch_task=1e-6, cores=None)


def test_bcast_binomial_for_short_messages_and_small_communicators():
    # 3 rounds of a binomial tree for 8 ranks and a short message.
    assert model.bcast_time(8, 1000, M) == pytest.approx(3 * (1e-6 + 1000 / 1e9))
    # Fewer than 8 ranks: binomial even for long messages.
    assert model.bcast_time(4, 10 ** 7, M) == pytest.approx(2 * (1e-6 + 10 ** 7 / 1e9))
    assert model.bcast_time(1, 10 ** 7, M) == 0.0


def test_bcast_scatter_allgather_for_long_messages():
    p, b = 16, 10 ** 7
    expected = 4 * 1e-6 + 15 / 16 * b / 1e9 + 15 * 1e-6 + 15 / 16 * b / 1e9
    assert model.bcast_time(p, b, M) == pytest.approx(expected)
    # Long messages cost ~2 copies whatever p: far below the binomial's log2(p) copies.
    assert model.bcast_time(1024, b, M) < 2.1 * b / 1e9 + 1100 * 1e-6


def test_tiles_phases_by_hand_on_a_2x2_grid():
    p = model.predict_tiles(100, 50, 80, Grid(2, 2), M)
    # Root -> 1 row leader (50x50) and 1 column leader (50x40), then a 2-rank Bcast each.
    stage1 = 2e-6 + (50 * 50 + 50 * 40) * 8 / 1e9
    stage2 = (1e-6 + 50 * 50 * 8 / 1e9) + (1e-6 + 50 * 40 * 8 / 1e9)
    assert p.phases["distribute"] == pytest.approx(stage1 + stage2)
    assert p.phases["compute"] == pytest.approx(2 * 50 * 40 * 50 / 10e9)
    assert p.phases["gather"] == pytest.approx(3e-6 + (100 * 80 - 50 * 40) * 8 / 1e9)


def test_rates_per_dtype_and_oversubscription():
    assert M.rate("float32") == 2 * M.rate("float64")
    assert M.rate("complex128") == M.rate("float64") / 4
    assert M.rate("int32") == 1e9
    crowded = Machine(**{**M.as_dict(), "cores": 2})
    one = model.predict_tiles(512, 512, 512, Grid(2, 2), M)
    two = model.predict_tiles(512, 512, 512, Grid(2, 2), crowded)
    assert two.phases["compute"] == pytest.approx(2 * one.phases["compute"])


def test_dot_is_paced_by_the_dispatcher_and_batching_amortises_it():
    one = model.predict_dot(64, 64, 64, 8, M, tasks_per_message=1)
    batched = model.predict_dot(64, 64, 64, 8, M, tasks_per_message=64)
    per_batch_root = 5e-6 + 1e-6 + (2 * 64 * 8 + 8 * 8) / 1e9  # dispatch_batch + task + bytes
    assert one.total == pytest.approx(64 * 64 * per_batch_root + (1e-6 + model.dot_task_time(64, M)
                                                                  + (2 * 64 * 8 + 8 * 8) / 1e9))
    assert batched.total < one.total / 3
    alone = model.predict_dot(64, 64, 64, 1, M)
    assert alone.phases["compute"] == pytest.approx(64 * 64 * model.dot_task_time(64, M))
    assert model.predict_dot(0, 5, 5, 4, M).total == 0


def test_lower_bound_is_the_root_link_for_the_blog_scenario():
    n = 1000
    blog = model.predict_blog(n, M)
    assert blog["ranks"] == n * n
    assert blog["lower_bound_seconds"] == pytest.approx(2 * n * n * 8 / 1e9)
    # The literal scheme moves 2 n^3 words; the claim is one dot product.
    assert blog["literal_seconds"] > 2 * n ** 3 * 8 / 1e9
    assert blog["claimed_seconds"] < blog["lower_bound_seconds"] / 100
    # The bound grows like n^2 however many ranks: no O(n).
    ratio = model.predict_blog(2 * n, M)["lower_bound_seconds"] / blog["lower_bound_seconds"]
    assert ratio == pytest.approx(4)


def test_lower_bound_never_exceeds_any_prediction():
    for shape in [(64, 64, 64), (2048, 2048, 2048), (10 ** 5, 100, 10 ** 5), (1, 10 ** 6, 1)]:
        for P in (1, 2, 4, 16, 64):
            bound = model.lower_bound(*shape, P, M)["seconds"]
            for p in model.candidates(*shape, P, M):
                assert p.total >= bound * 0.999, (shape, P, p.label())


def test_recommendation_prefers_tiles_and_a_shape_matching_grid():
    rec = model.recommend(4096, 4096, 4096, 16, M)
    assert rec["best"].strategy == "tiles"
    # MPICH's long Bcast (scatter + allgather) makes 2x8 and 4x4 nearly equal;
    # the lopsided 1x16 / 16x1 grids move more and lose.
    assert rec["best"].grid in ("2x8", "8x2", "4x4")
    totals = {p.grid: p.total for p in rec["candidates"] if p.strategy == "tiles"}
    assert totals["1x16"] > totals[rec["best"].grid]
    tall = model.recommend(10 ** 5, 256, 64, 8, M)["best"]
    assert tall.grid == "8x1"
    strategy, grid, opts = model.choose(10 ** 5, 256, 64, 8, M)
    assert (strategy, grid, opts) == ("tiles", Grid(8, 1), {})


def test_advice_to_use_fewer_ranks_when_the_link_dominates():
    slow_link = Machine(**{**M.as_dict(), "bandwidth": 1e6, "gflops": 100.0})
    rec = model.recommend(512, 512, 512, 64, slow_link)
    assert rec["advice"] and "1 rank" in rec["advice"]


def test_machine_round_trips_through_a_dict():
    again = Machine.from_dict({**M.as_dict(), "unknown_key": 1})
    assert again == M
    assert math.isclose(again.beta, 1e-9)
