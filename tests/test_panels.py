"""Panels and tails (movement.PanelPlan) and the take-over rule (takeover.handed_over).

Pure arithmetic, checked for every grid and shape: each tile's panels cover
it exactly once, tail pieces lie inside the tile's last streamed part, and
a rank hands the root only a suffix of its tail, worth at most 1/P of what
it has left.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpimat.panels import PanelPlan
from mpimat.partition import Grid, Layout
from mpimat.takeover import CLOCK, handed_over, root_left


def plan_for(m, k, n, grid, order_a="C", order_b="C", tail_flops=1, panel_flops=1):
    layout = Layout(m, k, n, grid)
    return layout, PanelPlan(layout, 8, 8, order_a, order_b, panel_flops=panel_flops, shared=True,
                             tail_flops=tail_flops)


@settings(max_examples=300, deadline=None)
@given(m=st.integers(0, 60), k=st.integers(0, 9), n=st.integers(0, 200), rows=st.integers(1, 4),
       cols=st.integers(1, 4), orders=st.sampled_from(["CC", "CF", "FC", "FF"]),
       tail_flops=st.sampled_from([1, 50, 10**9]))
def test_panels_cover_every_tile_exactly_once(m, k, n, rows, cols, orders, tail_flops):
    layout, plan = plan_for(m, k, n, Grid(rows, cols), *orders, tail_flops=tail_flops)
    for tile in layout.tiles():
        for whole_tail in (False, True):
            panels = plan.tile_panels(tile, whole_tail=whole_tail)
            cells = [(i, j) for r0, r1, c0, c1 in panels for i in range(r0, r1) for j in range(c0, c1)]
            expect = list(itertools.product(range(tile.row0, tile.row1), range(tile.col0, tile.col1)))
            assert sorted(cells) == expect
            assert all(r1 > r0 and c1 > c0 for r0, r1, c0, c1 in panels)
        regular = plan.tile_panels(tile, whole_tail=True)
        panels = plan.tile_panels(tile)
        start = plan.tail_start(tile)
        assert panels[:start] == regular[:start]
        if panels:
            # The tail cuts the last regular panel across the streamed axis.
            r0, r1, c0, c1 = regular[-1]
            for p in panels[start:]:
                if plan.axis == "rows":
                    assert (p[0], p[1]) == (r0, r1) and c0 <= p[2] < p[3] <= c1
                else:
                    assert (p[2], p[3]) == (c0, c1) and r0 <= p[0] < p[1] <= r1
            if plan.axis == "rows" and len(panels) > start + 1:
                # Column pieces land in C as runs MPI can copy as blocks.
                assert min(p[3] - p[2] for p in panels[start:]) * 8 >= 256


def test_tail_is_halves_quarters_down_to_the_minimum_piece():
    layout, plan = plan_for(4096, 4096, 4096, Grid(2, 1), tail_flops=1 << 29, panel_flops=1 << 32)
    tile = layout.tile(1)
    panels = plan.tile_panels(tile)
    assert plan.tail_start(tile) == 3
    assert [c1 - c0 for _, _, c0, c1 in panels[3:]] == [2048, 1024, 512, 256, 128, 128]
    assert plan.tile_panels(tile, whole_tail=True) == [(r, r + 512, 0, 4096) for r in range(2048, 4096, 512)]
    # Too little work for pieces: the tail is the last panel, whole.
    layout, plan = plan_for(64, 64, 64, Grid(2, 1), tail_flops=1 << 29)
    assert len(plan.tile_panels(layout.tile(1))) == plan.tail_start(layout.tile(1)) + 1


def test_unshared_plan_has_no_tail():
    layout = Layout(4096, 4096, 4096, Grid(1, 1))
    plan = PanelPlan(layout, 8, 8, shared=False)
    tile = layout.tile(0)
    assert plan.tile_panels(tile) == plan.tile_panels(tile, whole_tail=True)
    assert plan.tail_start(tile) == len(plan.tile_panels(tile))


# Three regular panels of area 32, then a tail of pieces of area 16, 8, 4 and 4.
PIECES = [(0, 4, 0, 8)] * 3 + [(4, 8, 0, 4), (4, 8, 4, 6), (4, 8, 6, 7), (4, 8, 7, 8)]


@pytest.mark.parametrize("next_panel, ranks, keep", [
    (0, 2, 3),   # 128 left, budget 64: the whole tail (32)
    (3, 2, 4),   # 32 left, budget 16: 4 + 4 + 8
    (3, 4, 5),   # 32 left, budget 8: 4 + 4
    (5, 2, 6),   # 8 left, budget 4: the last piece
    (6, 2, 7),   # 4 left, budget 2: nothing
    (7, 2, 7),   # done: nothing
    (1, 9, 5),   # 96 left, budget 10: 4 + 4 (the piece of 8 would make 16)
])
def test_handed_over(next_panel, ranks, keep):
    assert handed_over(PIECES, next_panel, 3, ranks) == keep


def test_handed_over_leaves_room_for_the_roots_own_work():
    # 32 left, the root still has 16 of its own: budget (32 - 16) / 2 = 8: 4 + 4.
    assert handed_over(PIECES, 3, 3, 2, root_left=16) == 5
    # The root has more left than the rank: nothing.
    assert handed_over(PIECES, 3, 3, 2, root_left=40) == 7


def test_root_left_reads_the_roots_clock_only_on_its_machine():
    sent, free, left = 1_000, 3_000, 800
    assert root_left(np.array([sent, free, left, CLOCK]), 1_000) == 800   # just asked
    assert root_left(np.array([sent, free, left, CLOCK]), 2_500) == 200   # a quarter to go
    assert root_left(np.array([sent, free, left, CLOCK]), 9_000) == 0     # past its estimate
    assert root_left(np.array([sent, free, left, CLOCK + 1]), 2_500) == 800  # other machine: the worst
    assert root_left(np.array([sent, sent, 0, CLOCK]), 2_500) == 0        # asked when done
