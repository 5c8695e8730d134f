"""Partitioning: who computes which dot products (pure arithmetic, no MPI)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mpimat.partition import (Grid, Layout, block, blocks, choose_grid, factor_pairs, parse_grid,
                              layout_for, words_moved)

dims = st.integers(min_value=0, max_value=60)
ranks = st.integers(min_value=1, max_value=40)


@given(n=st.integers(0, 10_000), parts=st.integers(1, 200))
def test_blocks_cover_range_in_order_and_balance(n, parts):
    bs = blocks(n, parts)
    assert len(bs) == parts
    assert bs[0][0] == 0 and bs[-1][1] == n
    for (a0, a1), (b0, b1) in zip(bs, bs[1:]):
        assert a1 == b0
    sizes = [b - a for a, b in bs]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1
    assert sum(sizes) == n


@settings(max_examples=300, deadline=None)
@given(m=dims, k=dims, n=dims, p=ranks)
def test_every_dot_product_computed_exactly_once(m, k, n, p):
    layout = layout_for(m, k, n, p)
    assert layout.grid.size == p
    count = np.zeros((m, n), dtype=int)
    for tile in layout.tiles():
        count[tile.row0:tile.row1, tile.col0:tile.col1] += 1
    assert (count == 1).all()


@given(n=st.integers(0, 10_000), parts=st.integers(1, 50), less=st.integers(0, 500))
def test_a_lighter_first_block_gives_its_items_evenly_to_the_others(n, parts, less):
    bs = [block(n, parts, i, first_less=less) for i in range(parts)]
    assert bs[0][0] == 0 and bs[-1][1] == n
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(bs, bs[1:]))
    even = blocks(n, parts)
    first, want = bs[0][1], even[0][1] - even[0][0]
    assert first == (max(0, want - less) if parts > 1 else want)
    rest = [b - a for a, b in bs[1:]]
    assert not rest or max(rest) - min(rest) <= 1


@settings(max_examples=200, deadline=None)
@given(m=dims, k=dims, n=dims, p=st.integers(1, 12), less=st.integers(0, 20))
def test_root_less_lightens_grid_rank_0_on_one_column_or_one_row_grids_only(m, k, n, p, less):
    for grid in {Grid(p, 1), Grid(1, p), choose_grid(m, k, n, p)}:
        layout = Layout(m, k, n, grid, root_less=less)
        count = np.zeros((m, n), dtype=int)
        for tile in layout.tiles():
            count[tile.row0:tile.row1, tile.col0:tile.col1] += 1
        assert (count == 1).all()  # still every dot product exactly once
        even = Layout(m, k, n, grid).tile(0).shape
        shape = layout.tile(0).shape
        if grid.cols == 1 and grid.rows > 1:
            assert shape == (max(0, even[0] - less), even[1])
        elif grid.rows == 1 and grid.cols > 1:
            assert shape == (even[0], max(0, even[1] - less))
        else:
            assert shape == even


@settings(max_examples=200, deadline=None)
@given(m=dims, k=dims, n=dims, p=ranks)
def test_tiles_balanced_within_one_row_and_column(m, k, n, p):
    layout = layout_for(m, k, n, p)
    rows = [t.shape[0] for t in layout.tiles()]
    cols = [t.shape[1] for t in layout.tiles()]
    assert max(rows) - min(rows) <= 1
    assert max(cols) - min(cols) <= 1


@settings(max_examples=200, deadline=None)
@given(m=dims, k=dims, n=dims, p=ranks)
def test_chosen_grid_moves_fewest_bytes(m, k, n, p):
    grid = choose_grid(m, k, n, p)
    best = min(words_moved(m, k, n, Grid(r, c)) for r, c in factor_pairs(p))
    assert words_moved(m, k, n, grid) == best


def test_grid_follows_shape():
    # Square: near-square grid.  Tall-skinny A: all rows.  Wide B: all columns.
    assert choose_grid(4096, 4096, 4096, 4) == Grid(2, 2)
    assert choose_grid(100_000, 64, 64, 8) == Grid(8, 1)
    assert choose_grid(64, 64, 100_000, 8) == Grid(1, 8)
    assert choose_grid(1000, 1000, 1000, 7) in (Grid(7, 1), Grid(1, 7))  # prime P still works
    assert choose_grid(1000, 1000, 1000, 6) in (Grid(2, 3), Grid(3, 2))


def test_more_ranks_than_dot_products_leave_ranks_idle():
    layout = layout_for(1, 5, 1, 6)
    busy = [t for t in layout.tiles() if not t.empty]
    assert len(busy) == 1 and busy[0].shape == (1, 1)


def test_parse_grid_and_mismatch():
    assert parse_grid("2x3") == Grid(2, 3)
    assert parse_grid(" 4X1 ") == Grid(4, 1)
    for bad in ("2", "x3", "2x0", "axb", "2x3x4", ""):
        with pytest.raises(ValueError):
            parse_grid(bad)
    with pytest.raises(ValueError, match="has 6 ranks but the job has 4"):
        layout_for(10, 10, 10, 4, Grid(2, 3))


def test_block_rejects_out_of_range():
    with pytest.raises(ValueError):
        block(10, 3, 3)
    with pytest.raises(ValueError):
        block(10, 0, 0)


def test_layout_tile_coordinates_row_major():
    layout = Layout(10, 3, 7, Grid(2, 3))
    t = layout.tile(4)
    assert (t.r, t.c) == (1, 1)
    assert (t.row0, t.row1, t.col0, t.col1) == (5, 10, 3, 5)
