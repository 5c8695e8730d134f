"""The 2-D block layout and SUMMA's panels (pure: no MPI)."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpimat.dist.layout import (BlockLayout, as_grid, choose_summa_grid, default_grid, owner_index,
                                panel_count, panel_width, panels, segments, summa_cost)
from mpimat.partition import Grid, block, factor_pairs


def test_importing_the_layout_does_not_load_mpi():
    # In a fresh interpreter: in this one, other tests may have imported mpi4py already.
    code = "import sys, mpimat.dist, mpimat.dist.layout, mpimat.dist.gemm; assert 'mpi4py' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@given(m=st.integers(0, 60), n=st.integers(0, 60), p=st.integers(1, 12), data=st.data())
@settings(max_examples=200, deadline=None)
def test_blocks_tile_the_matrix_exactly_once(m, n, p, data):
    rows, cols = data.draw(st.sampled_from(list(factor_pairs(p))))
    layout = BlockLayout((m, n), Grid(rows, cols))
    seen = [[0] * n for _ in range(m)]
    for rank, b in enumerate(layout.blocks()):
        assert b.rank == rank and (b.r, b.c) == divmod(rank, cols)
        assert (b.row0, b.row1) == block(m, rows, b.r) and (b.col0, b.col1) == block(n, cols, b.c)
        for i in range(b.row0, b.row1):
            for j in range(b.col0, b.col1):
                seen[i][j] += 1
                assert layout.owner(i, j) == rank
    assert all(v == 1 for row in seen for v in row)


def test_more_ranks_than_rows_gives_empty_blocks():
    layout = BlockLayout((2, 3), Grid(4, 1))
    shapes = [b.shape for b in layout.blocks()]
    assert shapes == [(1, 3), (1, 3), (0, 3), (0, 3)]
    assert [b.empty for b in layout.blocks()] == [False, False, True, True]


@given(n=st.integers(1, 200), parts=st.integers(1, 20))
def test_owner_index_agrees_with_block(n, parts):
    for i in range(n):
        lo, hi = block(n, parts, owner_index(n, parts, i))
        assert lo <= i < hi


def test_owner_rejects_outside_entries_and_ranks():
    layout = BlockLayout((3, 3), Grid(1, 1))
    with pytest.raises(IndexError):
        layout.owner(3, 0)
    with pytest.raises(ValueError, match="not on the 1x1 grid"):
        layout.block_of(1)


@given(k=st.integers(0, 300), pr=st.integers(1, 7), pc=st.integers(1, 7),
       width=st.one_of(st.none(), st.integers(1, 50)))
@settings(max_examples=300, deadline=None)
def test_panels_cover_k_and_never_span_two_owners(k, pr, pc, width):
    grid = Grid(pr, pc)
    ps = panels(k, grid, width)
    if k == 0:
        assert ps == []
        return
    assert [p.k0 for p in ps] == [0] + [p.k1 for p in ps[:-1]]
    assert ps[-1].k1 == k
    for p in ps:
        assert p.width >= 1
        if width is not None:
            assert p.width <= width
        a0, a1 = block(k, pc, p.a_col)
        b0, b1 = block(k, pr, p.b_row)
        assert a0 <= p.k0 < p.k1 <= a1, "A's panel must come from one grid column"
        assert b0 <= p.k0 < p.k1 <= b1, "B's panel must come from one grid row"


@given(k=st.integers(0, 300), pr=st.integers(1, 7), pc=st.integers(1, 7), width=st.integers(1, 400))
@settings(max_examples=300, deadline=None)
def test_panel_count_and_segments_agree_with_panels(k, pr, pc, width):
    # The model counts panels without listing them (model.summa_time): the same panels.
    grid = Grid(pr, pc)
    ps = panels(k, grid, width)
    assert panel_count(k, grid, width) == (len(ps), max((p.width for p in ps), default=0))
    assert sum(segments(k, grid)) == k and len(segments(k, grid)) == len(panels(k, grid))


def test_panels_are_near_equal_pieces_of_each_segment():
    ps = panels(10, Grid(1, 1), 4)
    assert [(p.k0, p.k1) for p in ps] == [(0, 4), (4, 7), (7, 10)]
    # 2x3 grid, k = 12: A's column blocks [0,4,8,12], B's row blocks [0,6,12].
    ps = panels(12, Grid(2, 3))
    assert [(p.k0, p.k1, p.a_col, p.b_row) for p in ps] == [
        (0, 4, 0, 0), (4, 6, 1, 0), (6, 8, 1, 1), (8, 12, 2, 1)]


def test_panel_width_bounds_panel_bytes_and_has_a_floor():
    # 4096 rows of float64 = 32 KiB per column: 32 MiB -> 1024 columns.
    assert panel_width(10000, 4096, 100, 8, 8, panel_bytes=32 << 20) == 1024
    assert panel_width(10000, 10 ** 7, 1, 8, 8) == 128   # the floor
    assert panel_width(50, 10 ** 7, 1, 8, 8) == 50       # never wider than k
    assert panel_width(0, 10, 10, 8, 8) == 1


def test_summa_grid_follows_the_shape():
    assert choose_summa_grid(1000, 1000, 1000, 4) == Grid(2, 2)
    assert choose_summa_grid(100000, 100, 100, 4) == Grid(4, 1)   # tall A: A stays put
    assert choose_summa_grid(100, 100, 100000, 4) == Grid(1, 4)   # wide B
    assert choose_summa_grid(500, 500, 500, 2) == Grid(2, 1)      # tie: more grid rows
    assert choose_summa_grid(10, 10, 10, 7) == Grid(7, 1)
    for p in range(1, 13):
        g = choose_summa_grid(300, 200, 100, p)
        assert g.size == p
        assert summa_cost(300, 200, 100, g) == min(
            summa_cost(300, 200, 100, Grid(r, c)) for r, c in factor_pairs(p))


def test_default_grid_is_near_square_with_more_rows():
    assert [str(default_grid(p)) for p in (1, 2, 3, 4, 6, 8, 9, 12)] == [
        "1x1", "2x1", "3x1", "2x2", "3x2", "4x2", "3x3", "4x3"]


def test_as_grid_accepts_three_spellings_and_names_the_parameter():
    assert as_grid("2x3", 6) == as_grid((2, 3), 6) == as_grid(Grid(2, 3), 6) == Grid(2, 3)
    with pytest.raises(ValueError, match=r"grid=3x1 has 3 ranks but the communicator has 4"):
        as_grid("3x1", 4)
    with pytest.raises(ValueError, match=r"grid= must look like PRxPC"):
        as_grid("banana", 4)


# ---------------------------------------------------------------- gemm.Accumulator (pure numpy + BLAS)

import numpy as np  # noqa: E402

from mpimat.dist import gemm  # noqa: E402


def views(M, rng):
    """M as C order, Fortran order, a transposed copy's view and a strided slice."""
    yield M
    yield np.asfortranarray(M)
    yield np.ascontiguousarray(M.T).T
    big = np.zeros((M.shape[0] * 2 + 1, M.shape[1] + 3), dtype=M.dtype)
    big[1::2, 2:2 + M.shape[1]] = M
    yield big[1::2, 2:2 + M.shape[1]]


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "complex64", "float16", "int8", "bool"])
@pytest.mark.parametrize("c_order", ["C", "F"])
def test_accumulator_adds_panel_products_like_numpy(dtype, c_order):
    rng = np.random.default_rng(1)
    m, k, n = 13, 20, 11
    if dtype == "bool":
        A, B = rng.random((m, k)) < 0.3, rng.random((k, n)) < 0.3
    elif dtype == "int8":
        A = rng.integers(-128, 127, (m, k), dtype=np.int8)
        B = rng.integers(-128, 127, (k, n), dtype=np.int8)
    else:
        A = (rng.standard_normal((m, k)) + (1j * rng.standard_normal((m, k)) if "complex" in dtype else 0)).astype(dtype)
        B = (rng.standard_normal((k, n)) + (1j * rng.standard_normal((k, n)) if "complex" in dtype else 0)).astype(dtype)
    R = A @ B
    for a_view in views(A, rng):
        for b_view in views(B, rng):
            C = np.empty((m, n), dtype=R.dtype, order=c_order)
            acc = gemm.Accumulator(C)
            pokes = []
            for i, k0 in enumerate(range(0, k, 6)):
                acc.add(a_view[:, k0:k0 + 6], b_view[k0:k0 + 6], first=(i == 0), poke=lambda: pokes.append(1))
            if R.dtype.kind in "fc":
                tol = 1e-2 if dtype == "float16" else 1e-4
                np.testing.assert_allclose(C, R, rtol=tol, atol=tol * np.abs(R).max())
            else:
                np.testing.assert_array_equal(C, R)  # integers wrap exactly like numpy's
            assert pokes


def test_accumulator_mixed_dtypes_and_empty_shapes():
    A = np.arange(12, dtype=np.int16).reshape(3, 4)
    B = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    C = np.empty((3, 2), dtype=(A @ B).dtype)
    acc = gemm.Accumulator(C)
    acc.add(A[:, :2], B[:2], first=True)
    acc.add(A[:, 2:], B[2:], first=False)
    np.testing.assert_allclose(C, A @ B, rtol=1e-6)
    empty = np.empty((0, 5))
    gemm.Accumulator(empty).add(np.ones((0, 2)), np.ones((2, 5)), first=True)


def test_blas_routines_are_found_for_numpys_openblas():
    # numpy's wheels link scipy-openblas (ILP64): the in-place gemm must be
    # found there, or SUMMA silently falls back to numpy plus a temporary.
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if "openblas" not in info.get("name", ""):
        pytest.skip(f"numpy uses {info.get('name')}, not OpenBLAS")
    assert set(gemm.routines()) == {np.dtype(t) for t in ("float32", "float64", "complex64", "complex128")}
