"""The cost model: its arithmetic, MPICH's Bcast choices, bounds and recommendations."""

import math

import pytest

from mpimat import model
from mpimat.dist.layout import MIN_PANEL_WIDTH, PANEL_BYTES, panel_count, panels
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


# --- two levels: ranks in blocks on nodes, the root node's link the bottleneck --------

NET = Machine(**{**M.as_dict(), "latency": 20e-6, "bandwidth": 12e6,
                 "latency_intra": 1e-6, "bandwidth_intra": 10e9})


def two_level(rpn, mach=NET):
    return Machine(**{**mach.as_dict(), "ranks_per_node": rpn})


def test_block_placement_and_links():
    mach = two_level(2)
    assert [mach.node(r) for r in range(6)] == [0, 0, 1, 1, 2, 2]
    assert mach.link(0, 1) == pytest.approx((1e-6, 1e-10))
    assert mach.link(1, 2) == pytest.approx((20e-6, 1 / 12e6))
    # One level (no ranks_per_node): every message over latency/bandwidth, as before.
    assert NET.link(0, 1) == pytest.approx((20e-6, 1 / 12e6))
    # An old calibration (no intra figures) on two levels: intra = inter.
    assert two_level(2, M).link(0, 1) == two_level(2, M).link(0, 2) == (1e-6, 1e-9)


def test_one_rank_per_node_is_the_one_level_model():
    # Every message crosses nodes: the single-level messages; but over the
    # network the other tiles are computed after rank 0's (counted in gather).
    for shape, grid in [((100, 50, 80), Grid(2, 2)), ((512, 384, 640), Grid(3, 2)), ((1000, 7, 30), Grid(4, 1))]:
        one, two = model.predict_tiles(*shape, grid, NET), model.predict_tiles(*shape, grid, two_level(1))
        assert two.phases["distribute"] == pytest.approx(one.phases["distribute"]), (shape, grid)
        assert two.phases["compute"] == pytest.approx(one.phases["compute"]), (shape, grid)
        assert two.phases["gather"] == pytest.approx(one.phases["gather"] + one.phases["compute"]), (shape, grid)
    # dot: dispatch costs calibrated over the same link (no intra figures).
    net = Machine(**{**NET.as_dict(), "latency_intra": None, "bandwidth_intra": None})
    for K, keep in [(1, False), (16, True)]:
        one = model.predict_dot(48, 64, 40, 5, net, tasks_per_message=K, keep_blocks=keep)
        two = model.predict_dot(48, 64, 40, 5, two_level(1, net), tasks_per_message=K, keep_blocks=keep)
        assert two.phases == pytest.approx(one.phases)


def test_tiles_2x1_on_two_nodes_by_hand():
    # 2 hosts x 1 rank: A_1 (512 rows) and then B (the column bcast of 2) out over the network, C_1 back.
    n = 1024
    p = model.predict_tiles(n, n, n, Grid(2, 1), two_level(1))
    out = (512 * n + n * n) * 8
    assert p.phases["distribute"] == pytest.approx(2 * 20e-6 + out / 12e6)
    compute = 2 * 512 * n * n / 10e9
    assert p.phases["compute"] == pytest.approx(compute)
    # Rank 1's tile follows rank 0's (its inputs move while rank 0 is in MPI), then comes back.
    assert p.phases["gather"] == pytest.approx(compute + 20e-6 + 512 * n * 8 / 12e6)
    # The same grid inside one node: the intra link, ~1000x faster, and the tiles overlap.
    inside = model.predict_tiles(n, n, n, Grid(2, 1), two_level(2))
    assert inside.phases["distribute"] == pytest.approx(2 * 1e-6 + out / 10e9)
    assert inside.phases["gather"] == pytest.approx(1e-6 + 512 * n * 8 / 10e9)


def test_tiles_2x2_on_two_nodes_serialises_node_0s_link():
    # Ranks 0,1 on node 0, ranks 2,3 on node 1; grid rank = r*2 + c.  Leaving
    # node 0: A_1 to rank 2 (root), B_0 down column 0 (root), B_1 down column
    # 1 (rank 1, same link): three 512x1024 blocks, one after the other.
    n = 1024
    mach = two_level(2)
    p = model.predict_tiles(n, n, n, Grid(2, 2), mach)
    block_bytes = 512 * n * 8
    nic = 3 * (20e-6 + block_bytes / 12e6)
    assert p.phases["distribute"] == pytest.approx(nic)
    # Gather: rank 1's tile within node 0, ranks 2 and 3's through the network.
    tile = 512 * 512 * 8
    assert p.phases["gather"] == pytest.approx((1e-6 + tile / 10e9) + 2 * (20e-6 + tile / 12e6)
                                               + p.phases["compute"])
    # The messages' own critical path (root -> leaders, then the slowest row and
    # column broadcasts) crosses the network with two blocks only: the shared link rules.
    assert p.phases["distribute"] > 1.4 * 2 * block_bytes / 12e6


def test_node_aware_broadcast():
    mach = two_level(4)
    b = 10 ** 6
    # Within one node: a binomial tree over the intra link.
    assert model.group_bcast_time([0, 1, 2, 3], b, mach) == pytest.approx(2 * (1e-6 + b / 10e9))
    # Across two nodes, two ranks each: one network hop, then one within the node.
    assert model.group_bcast_time([0, 1, 4, 5], b, mach) == pytest.approx((20e-6 + b / 12e6) + (1e-6 + b / 10e9))


def test_dot_workers_beyond_node_0_pay_the_network():
    local = model.predict_dot(64, 64, 64, 4, two_level(4), tasks_per_message=16)
    remote = model.predict_dot(64, 64, 64, 4, two_level(1), tasks_per_message=16)
    mixed = model.predict_dot(64, 64, 64, 4, two_level(2), tasks_per_message=16)
    assert local.total < mixed.total < remote.total
    assert "2 of 3 workers beyond node 0's link" in " ".join(mixed.notes)


def test_contention_counts_the_ranks_of_one_node():
    crowded = two_level(2, Machine(**{**NET.as_dict(), "cores": 2}))
    free = two_level(2, NET)
    # 8 ranks, 2 per node on 2-core nodes: no slowdown (one level would say 4x).
    p = model.predict_tiles(512, 512, 512, Grid(2, 4), crowded)
    assert p.phases["compute"] == pytest.approx(model.predict_tiles(512, 512, 512, Grid(2, 4), free).phases["compute"])
    one_node = Machine(**{**NET.as_dict(), "cores": 2})
    assert model.predict_tiles(512, 512, 512, Grid(2, 4), one_node).phases["compute"] == \
        pytest.approx(4 * p.phases["compute"])


def test_lower_bound_holds_on_two_levels():
    for rpn, cores, ranks in [(1, None, (1, 2, 4, 8)), (2, None, (1, 2, 4, 8)), (4, None, (1, 2, 4, 8)),
                              (1, 2, (2, 4, 8)), (2, 2, (2, 4, 8))]:
        mach = two_level(rpn, Machine(**{**NET.as_dict(), "cores": cores}))
        for shape in [(64, 64, 64), (2048, 2048, 2048), (10 ** 5, 100, 64)]:
            for P in ranks:
                bound = model.lower_bound(*shape, P, mach)["seconds"]
                for p in model.candidates(*shape, P, mach):
                    assert p.total >= bound * 0.999, (rpn, shape, P, p.label())


def test_old_calibration_dicts_load_with_one_level():
    old = {k: v for k, v in M.as_dict().items() if k not in ("latency_intra", "bandwidth_intra", "ranks_per_node")}
    mach = Machine.from_dict(old)
    assert mach.ranks_per_node is None and mach.intra == mach.inter == (1e-6, 1e-9)
    assert model.predict_tiles(100, 50, 80, Grid(2, 2), mach).phases == \
        model.predict_tiles(100, 50, 80, Grid(2, 2), M).phases


def test_dot_batches_for_other_nodes_pay_the_network_latency_on_the_root():
    # Calibrated on 2 nodes x 2 ranks, dispatch_batch was timed between ranks 0 and 1 on one
    # node: a batch for another node also costs the root the latency difference (one send,
    # one answer through the network).  Calibrated on 2 x 1 (no intra figures) it already did.
    K, n = 1, 32
    shared = two_level(1)
    plain = two_level(1, Machine(**{**NET.as_dict(), "latency_intra": None, "bandwidth_intra": None}))
    # Four workers on other nodes: the root paces both.
    a = model.predict_dot(n, n, n, 5, shared, tasks_per_message=K)
    b = model.predict_dot(n, n, n, 5, plain, tasks_per_message=K)
    assert "paced by the root (dispatcher)" in a.notes and "paced by the root (dispatcher)" in b.notes
    assert a.total == pytest.approx(b.total + n * n * (20e-6 - 1e-6), rel=1e-6)


# --- SUMMA's panel width (issue 12) ---------------------------------------------

SHAPES = [(8192, 8192, 8192, Grid(2, 1)), (8192, 8192, 8192, Grid(2, 2)), (2048, 16384, 2048, Grid(4, 4)),
          (512, 65536, 512, Grid(4, 4)), (100000, 100000, 100000, Grid(32, 32)), (300, 5000, 7000, Grid(3, 1)),
          (1, 10 ** 6, 1, Grid(1, 1))]


def with_(mach, **changes):
    return Machine(**{**mach.as_dict(), **changes})


@pytest.mark.parametrize("m,k,n,grid", SHAPES)
def test_panel_width_stays_between_the_minimum_and_k_and_under_the_panel_cap(m, k, n, grid):
    for mach in (M, Machine(), with_(M, latency=1e-3), with_(M, bandwidth=1e6)):
        w = model.summa_panel_width(m, k, n, grid, mach)
        assert MIN_PANEL_WIDTH <= w <= k
        rows, cols = -(-m // grid.rows), -(-n // grid.cols)
        assert w * max(rows, cols) * 8 <= max(PANEL_BYTES, MIN_PANEL_WIDTH * max(rows, cols) * 8)


@pytest.mark.parametrize("k", [0, 1, 7, 64, MIN_PANEL_WIDTH])
def test_panel_width_for_a_tiny_k_is_k(k):
    for grid in (Grid(1, 1), Grid(2, 2), Grid(3, 1)):
        assert model.summa_panel_width(1000, k, 1000, grid, M) == max(k, 1)  # k = 0: no panels, width 1


def test_panel_width_respects_the_memory_bound():
    m = k = n = 8192
    grid = Grid(2, 2)
    blocks, per_column = model.summa_panel_memory(m, k, n, grid, 1)
    free = model.summa_panel_width(m, k, n, grid, M)
    for memory in (blocks + 4 * per_column * free, blocks + per_column * 700, blocks + per_column * 300,
                   blocks + per_column * 5, blocks + per_column):
        w = model.summa_panel_width(m, k, n, grid, M, memory=memory)
        assert blocks + w * per_column <= memory, memory
        assert w == min(free, (memory - blocks) // per_column)  # here narrower is never faster
    # Below the minimum the memory bound wins; not even one column: 1 (the caller refuses).
    assert model.summa_panel_width(m, k, n, grid, M, memory=blocks + 5 * per_column) == 5
    assert model.summa_panel_width(m, k, n, grid, M, memory=blocks // 2) == 1
    # A smaller cap per panel buffer also bounds it.
    assert model.summa_panel_width(m, k, n, grid, M, panel_bytes=4096 * 8 * 256) == 256


def test_panel_width_grows_with_latency():
    # Small blocks, long k, the broadcasts not hidden by the products: the per-panel
    # latency is what narrow panels pay.
    for m, k, n, grid in [(512, 65536, 512, Grid(4, 4)), (256, 100000, 256, Grid(4, 4))]:
        widths = [model.summa_panel_width(m, k, n, grid, with_(M, latency=lat))
                  for lat in (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)]
        assert widths == sorted(widths) and widths[-1] > 4 * widths[0], widths


def test_panel_width_grows_with_blas_loss_and_shrinks_with_a_slow_link():
    m, k, n, grid = 2048, 16384, 2048, Grid(4, 4)
    by_h = [model.summa_panel_width(m, k, n, grid, with_(M, gemm_half_width=h)) for h in (0, 8, 32, 128)]
    assert by_h == sorted(by_h) and by_h[-1] > by_h[0]
    # A slow link: the first panel's broadcast, which nothing hides, is what wide panels pay.
    by_bw = [model.summa_panel_width(m, k, n, grid, with_(M, bandwidth=b)) for b in (1e8, 1e9, 1e10)]
    assert by_bw == sorted(by_bw) and by_bw[0] < by_bw[-1]


@pytest.mark.parametrize("m,k,n,grid", SHAPES)
def test_panel_width_is_deterministic_and_the_least_predicted_time(m, k, n, grid):
    w = model.summa_panel_width(m, k, n, grid, M)
    assert w == model.summa_panel_width(m, k, n, grid, Machine.from_dict(M.as_dict()))
    best = model.summa_time(m, k, n, grid, M, w).seconds
    for other in (MIN_PANEL_WIDTH, w // 2, w * 2, k):
        if MIN_PANEL_WIDTH <= other <= k and other * max(-(-m // grid.rows), -(-n // grid.cols)) * 8 <= PANEL_BYTES:
            assert best <= model.summa_time(m, k, n, grid, M, other).seconds * (1 + 1e-12), other


def test_summa_time_terms_by_hand():
    # 1x2 grid, k = 1000 in two owners' halves, width 250: 4 panels of 250.
    t = model.summa_time(100, 1000, 200, Grid(1, 2), M, 250)
    assert (t.count, t.widest) == (4, 250)
    assert t.products == pytest.approx(2 * 100 * 100 * (1000 + 4 * 32.0) / 10e9)
    assert t.steps == pytest.approx(4 * 2e-5)
    panel = 1e-6 + 100 * 250 * 8 / 1e9  # A's panel to the other rank of the grid row (B stays put)
    assert t.broadcasts == pytest.approx(4 * panel) and t.fill == pytest.approx(panel)
    # One level: every broadcast overlaps the products (none counted as between nodes).
    assert t.network == 0 and t.slow == 1
    assert t.seconds == pytest.approx(max(t.products + t.steps, t.broadcasts) + t.fill)


def test_summa_broadcasts_between_nodes_add_to_the_products():
    # 2 hosts x 1 rank, 1x2 grid: A's panel crosses the network.  Without asynchronous
    # progress (TCP) it moves only inside MPI: products + steps + broadcasts, no fill.
    t = model.summa_time(100, 1000, 200, Grid(1, 2), two_level(1), 250)
    assert (t.count, t.widest) == (4, 250)
    panel = 20e-6 + 100 * 250 * 8 / 12e6
    assert t.network == pytest.approx(4 * panel)
    assert t.broadcasts == 0 and t.fill == 0
    assert t.products == pytest.approx(2 * 100 * 100 * (1000 + 4 * 32.0) / 10e9)
    assert t.seconds == pytest.approx(t.products + t.steps + 4 * panel)
    # The same grid within one node (shared memory): the look-ahead overlaps them.
    inside = model.summa_time(100, 1000, 200, Grid(1, 2), two_level(2), 250)
    near = 1e-6 + 100 * 250 * 8 / 10e9
    assert inside.network == 0
    assert inside.broadcasts == pytest.approx(4 * near) and inside.fill == pytest.approx(near)
    assert inside.seconds == pytest.approx(max(inside.products + inside.steps, 4 * near) + near)
    # Broadcasts longer than the products: within a node they still hide the products.
    slow_bcast = with_(two_level(2), bandwidth_intra=1e6)
    hidden = model.summa_time(100, 1000, 200, Grid(1, 2), slow_bcast, 250)
    assert hidden.broadcasts > hidden.products + hidden.steps
    assert hidden.seconds == pytest.approx(hidden.broadcasts + hidden.fill)
    # predict_summa's compute is that time (plus the BLAS setup, 0 here).
    for mach in (two_level(1), two_level(2)):
        pred = model.predict_summa(100, 1000, 200, Grid(1, 2), mach, width=250)
        assert pred.phases["compute"] == pytest.approx(
            model.summa_time(100, 1000, 200, Grid(1, 2), mach, 250).seconds)


def test_summa_2x2_on_two_nodes_overlaps_rows_and_adds_columns():
    # Ranks 0,1 on node 0, 2,3 on node 1: grid rows stay within a node (A's panels
    # overlap the products), grid columns cross the network (B's panels add).
    m = k = n = 1024
    t = model.summa_time(m, k, n, Grid(2, 2), two_level(2), 128)
    assert t.count == 8
    a_panel = 1e-6 + 512 * 128 * 8 / 10e9
    b_panel = 20e-6 + 128 * 512 * 8 / 12e6
    assert t.broadcasts == pytest.approx(8 * a_panel) and t.fill == pytest.approx(a_panel)
    assert t.network == pytest.approx(8 * b_panel)
    assert t.seconds == pytest.approx(max(t.products + t.steps, 8 * a_panel) + a_panel + 8 * b_panel)


def test_summa_contention_counts_the_ranks_of_one_node_and_spares_the_network():
    m = k = n = 2048
    grid = Grid(2, 2)
    # 4 hosts x 1 rank on 1-core hosts: one rank per core, no slowdown
    # (before: contention(4) = 4x on everything, as if all four shared one host).
    free, crowded = two_level(1), two_level(1, with_(NET, cores=1))
    assert model.predict_summa(m, k, n, grid, crowded, width=256).phases == \
        pytest.approx(model.predict_summa(m, k, n, grid, free, width=256).phases)
    assert model.summa_time(m, k, n, grid, crowded, 256).slow == 1
    # 2 ranks per 1-core host: the products and steps 2x, the broadcasts between hosts not.
    two, two_crowded = two_level(2), two_level(2, with_(NET, cores=1))
    a, b = model.summa_time(m, k, n, grid, two, 256), model.summa_time(m, k, n, grid, two_crowded, 256)
    assert b.slow == 2
    assert b.products == pytest.approx(2 * a.products) and b.steps == pytest.approx(2 * a.steps)
    assert b.broadcasts == pytest.approx(2 * a.broadcasts)  # copies within the node, by the shared core
    assert b.network == pytest.approx(a.network) and a.network > 0
    # One level, 4 ranks on 2 cores: everything 2x, as before.
    one, one_crowded = M, with_(M, cores=2)
    assert model.predict_summa(m, k, n, grid, one_crowded, width=256).phases["compute"] == \
        pytest.approx(2 * model.predict_summa(m, k, n, grid, one, width=256).phases["compute"])
    assert "2.0x" in " ".join(model.predict_summa(m, k, n, grid, one_crowded, width=256).notes)


def test_summa_panel_width_follows_the_rule():
    # Single node, one level: the benchmark shapes' widths (bench_summa, 2 and 4 ranks) stay.
    for mach in (Machine(), with_(Machine(), cores=2)):
        assert model.summa_panel_width(8192, 8192, 8192, Grid(2, 1), mach) == 512
        assert model.summa_panel_width(8192, 8192, 8192, Grid(2, 2), mach) == 1024
    # Across hosts nothing overlaps the broadcasts, so narrow panels only add per-panel
    # costs: the widest panels (here one per owner's half of k) win.
    m = k = n = 4096
    grid = Grid(2, 2)
    across = two_level(1, with_(NET, bandwidth=114e6, latency=15e-6, gflops=50.0))
    w = model.summa_panel_width(m, k, n, grid, across)
    assert w == panel_count(k, grid, k)[1] == 2048
    # The same figures on one level (every broadcast overlapped): narrow panels, to keep
    # the unhidden first panel short.
    overlapped = with_(across, ranks_per_node=None)
    assert model.summa_panel_width(m, k, n, grid, overlapped) == 128


def test_predict_summa_uses_the_width_dist_matmul_picks():
    for m, k, n, grid in SHAPES[:5]:
        w = model.summa_panel_width(m, k, n, grid, M)
        p = model.predict_summa(m, k, n, grid, M)
        count, widest = panel_count(k, grid, w)
        assert p.options == {"panel_width": widest, "panels": count}
        assert count == len(panels(k, grid, w))
        assert f"panels of {widest}" in p.notes[0]
        words = model.summa_words(m, k, n, grid, width=widest)
        blocks, per_column = model.summa_panel_memory(m, k, n, grid, 1)
        assert words["memory_bytes"] == blocks + widest * per_column
    # An explicit width is what is predicted.
    assert model.predict_summa(4096, 4096, 4096, Grid(2, 2), M, width=128).options["panels"] == 32
