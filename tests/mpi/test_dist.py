"""mpimat.dist (distributed matrices, SUMMA, MPI-IO, parallel Freivalds) against numpy.

Run as: mpiexec -n K python -m pytest --with-mpi tests/mpi/test_dist.py   (K = 1..4)

Every rank builds the same reference with numpy (the matrices are small),
so every rank checks its own block, and the root checks gathered results.
"""

import glob
import os
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

from mpimat import InputError, dist
from mpimat import generate
from mpimat.dist import npyio
from mpimat.generate import random_pair
from mpimat.partition import Grid, factor_pairs
from mpimat.stats import Stats

pytestmark = pytest.mark.mpi

comm = MPI.COMM_WORLD
GRIDS = [f"{r}x{c}" for r, c in factor_pairs(comm.size)]

from cases import DTYPES, SHAPES, check_same  # noqa: E402 - shared with test_matmul_mpi.py


def check_blocks(X, R):
    """X's block on this rank is R's, and to_root gives R on the root."""
    b = X.layout.block_of(comm.rank)
    assert X.local.shape == b.shape
    check_same(X.local, R[b.row0:b.row1, b.col0:b.col1])
    full = X.to_root(root=0)
    if comm.rank == 0:
        check_same(full, R)
    else:
        assert full is None


def scatter(M, grid=None, root=0):
    return dist.from_root(M if comm.rank == root else None, comm, root=root, grid=grid)


def same_everywhere(text):
    assert len(set(comm.allgather(text))) == 1


@pytest.fixture
def shared_dir():
    """A directory every rank sees (pytest's tmp_path differs per rank)."""
    path = tempfile.mkdtemp(prefix="mpimat-dist-") if comm.rank == 0 else None
    path = comm.bcast(path, root=0)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def no_temp_files(directory):
    return glob.glob(os.path.join(directory, ".mpimat-*"))


# ---------------------------------------------------------------- layout, bridges

@pytest.mark.parametrize("shape", [(7, 5), (1, 1), (0, 3), (3, 0), (2, 9), (13, 1)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_from_root_to_root_round_trip(shape, order):
    M = np.asarray(np.arange(np.prod(shape), dtype=np.float64).reshape(shape), order=order)
    for grid in GRIDS + [None]:
        X = scatter(M, grid)
        # A vector or empty array is C-contiguous too: it counts as C.
        assert X.shape == shape and X.order == ("F" if np.isfortran(M) else "C")
        check_blocks(X, M)


def test_from_root_any_root_and_big_endian():
    M = np.arange(30, dtype=">i4").reshape(5, 6)
    X = scatter(M, root=comm.size - 1)
    assert X.dtype == np.dtype("int32")
    check_blocks(X, M.astype("int32"))
    full = X.to_root(root=comm.size - 1)
    if comm.rank == comm.size - 1:
        np.testing.assert_array_equal(full, M)


def test_from_root_bad_input_raises_everywhere():
    for bad, exc, message in [(np.ones(3), ValueError, "2-D"),
                              (np.array([["a"]]), TypeError, "string"),
                              (None, ValueError, "missing")]:
        with pytest.raises(exc, match=message) as info:
            scatter(bad)
        assert isinstance(info.value, InputError)
        same_everywhere(str(info.value))
    with pytest.raises(ValueError, match="grid="):
        scatter(np.ones((2, 2)), grid=f"{comm.size + 1}x1")


def test_redistribute_between_every_pair_of_grids():
    M = np.arange(11 * 7, dtype=np.int64).reshape(11, 7)
    for g1 in GRIDS:
        X = scatter(np.asfortranarray(M), g1)
        for g2 in GRIDS:
            stats = Stats()
            Y = dist.redistribute(X, g2, stats)
            assert str(Y.grid) == g2 and Y.order == "F"
            check_blocks(Y, M)
            # What this rank keeps does not travel; the rest arrives from others.
            old, new = X.layout.block_of(comm.rank), Y.layout.block_of(comm.rank)
            kept = max(0, min(old.row1, new.row1) - max(old.row0, new.row0)) * \
                max(0, min(old.col1, new.col1) - max(old.col0, new.col0))
            assert stats.bytes_received == (0 if g1 == g2 else (new.shape[0] * new.shape[1] - kept) * 8)
            assert comm.allreduce(stats.bytes_sent) == comm.allreduce(stats.bytes_received)


def test_random_is_generate_random_pair_on_every_grid():
    if not hasattr(generate, "random_block"):
        pytest.skip("mpimat.generate.random_block is not there yet")
    for shape in [(37, 300, 290), (1, 3, 600), (0, 5, 2)]:
        for dtype in ["float64", "float16", "complex64", "int8", "bool"]:
            A, B = random_pair(*shape, dtype, seed=5)
            for grid in GRIDS:
                X = dist.random(shape[:2], dtype, 5, comm, "A", grid=grid)
                Y = dist.random(shape[1:], dtype, 5, comm, "B", grid=grid, order="F")
                b = X.layout.block_of(comm.rank)
                np.testing.assert_array_equal(X.local, A[b.row0:b.row1, b.col0:b.col1])
                b = Y.layout.block_of(comm.rank)
                np.testing.assert_array_equal(Y.local, B[b.row0:b.row1, b.col0:b.col1])
                assert Y.local.flags.f_contiguous


# ---------------------------------------------------------------- SUMMA

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_shapes_and_dtypes(shape, dtype):
    A, B = random_pair(*shape, dtype, seed=7)
    R = A @ B
    X, Y = scatter(A), scatter(B)
    C = dist.matmul(X, Y)
    assert C.dtype == R.dtype and C.shape == R.shape
    check_blocks(C, R)
    C = dist.matmul(X, Y, panel=2)  # many panels, look-ahead on every step
    check_blocks(C, R)


@pytest.mark.parametrize("shape", [(24, 10, 18), (3, 4, 2), (1, 3, 1), (40, 33, 9)])
def test_every_grid_and_operands_on_other_grids(shape):
    A, B = random_pair(*shape, "float64", seed=1)
    R = A @ B
    for g in GRIDS:
        for ga in GRIDS:
            X, Y = scatter(A, ga), scatter(B, GRIDS[-1])
            C = dist.matmul(X, Y, grid=g, panel=3)
            assert str(C.grid) == g
            check_blocks(C, R)
            C = dist.matmul(X, Y, grid=Grid(*map(int, g.split("x"))))
            check_blocks(C, R)
    # No grid given, operands on different grids: the cheapest grid for the shape.
    C = dist.matmul(scatter(A, GRIDS[0]), scatter(B, GRIDS[-1]))
    assert C.grid == dist.choose_summa_grid(*shape, comm.size)
    check_blocks(C, R)


@pytest.mark.parametrize("order_a, order_b", [("F", "C"), ("C", "F"), ("F", "F")])
def test_fortran_order_operands(order_a, order_b):
    A, B = random_pair(31, 22, 27, "float64", seed=2)
    for panel in (None, 4):
        C = dist.matmul(scatter(np.asarray(A, order=order_a)), scatter(np.asarray(B, order=order_b)), panel=panel)
        check_blocks(C, A @ B)


@pytest.mark.parametrize("da, db", [("float32", "float64"), ("int8", "float32"), ("int16", "int64"),
                                    ("bool", "int32"), ("complex64", "float64"), ("uint64", "int64"),
                                    ("float16", "int8"), ("int8", "uint8")])
def test_mixed_dtypes_promote_like_numpy(da, db):
    A, _ = random_pair(13, 11, 1, da, seed=4)
    _, B = random_pair(1, 11, 9, db, seed=5)
    for panel in (None, 2):
        check_blocks(dist.matmul(scatter(A), scatter(B), panel=panel), A @ B)


def test_integers_wrap_exactly_like_numpy():
    rng = np.random.default_rng(8)
    A = rng.integers(-2**62, 2**62, size=(17, 29), dtype=np.int64)
    B = rng.integers(-2**62, 2**62, size=(29, 13), dtype=np.int64)
    A8 = rng.integers(-128, 127, size=(9, 50), dtype=np.int8)
    B8 = rng.integers(-128, 127, size=(50, 9), dtype=np.int8)
    for panel in (None, 3):
        check_blocks(dist.matmul(scatter(A), scatter(B), panel=panel), A @ B)
        check_blocks(dist.matmul(scatter(A8), scatter(B8), panel=panel), A8 @ B8)


def test_nan_and_inf_propagate():
    A, B = random_pair(12, 9, 10, "float64", seed=9)
    A[2, 3], B[4, 5] = np.nan, np.inf
    R = A @ B
    C = dist.matmul(scatter(A), scatter(B), panel=2).to_root()
    if comm.rank == 0:
        np.testing.assert_array_equal(np.isnan(C), np.isnan(R))
        np.testing.assert_array_equal(np.isinf(C), np.isinf(R))
        finite = np.isfinite(R)
        np.testing.assert_allclose(C[finite], R[finite], rtol=1e-12, atol=1e-12 * np.abs(R[finite]).max())


def test_bytes_moved_per_rank():
    m, k, n = 30, 20, 16
    A, B = random_pair(m, k, n, "float32", seed=3)
    for g in GRIDS:
        X, Y = scatter(A, g), scatter(B, g)
        stats = Stats()
        dist.matmul(X, Y, panel=3, stats=stats)
        grid = X.grid
        a, b = X.layout.block_of(comm.rank), Y.layout.block_of(comm.rank)
        # A's row block arrives except the columns this rank holds; same for B.
        want = 0
        if grid.cols > 1:
            want += a.shape[0] * (k - a.shape[1]) * 4
        if grid.rows > 1:
            want += b.shape[1] * (k - b.shape[0]) * 4
        assert stats.bytes_received == want
        assert comm.allreduce(stats.bytes_sent) == comm.allreduce(stats.bytes_received)
        assert stats.extra["grid"] == g and stats.extra["panels"] >= 1


def test_repeated_calls_blas_threads_and_sub_communicator():
    A, B = random_pair(50, 40, 30, "float64", seed=10)
    for threads in (1, 2, None):
        check_blocks(dist.matmul(scatter(A), scatter(B), blas_threads=threads), A @ B)
    sub = comm.Split(comm.rank % 2, comm.rank)
    try:
        X = dist.from_root(A if sub.rank == 0 else None, sub)
        Y = dist.from_root(B if sub.rank == 0 else None, sub)
        C = dist.matmul(X, Y).to_root()
        if sub.rank == 0:
            check_same(C, A @ B)
    finally:
        sub.Free()


def test_default_panel_is_the_models_width_for_the_machine_given():
    from mpimat import model
    from mpimat.dist.layout import panel_count

    m, k, n = 64, 20000, 64  # long k, small blocks: the latency decides the width
    A, B = random_pair(m, k, n, "float64", seed=12)
    X, Y = scatter(A), scatter(B)
    for mach in (None, model.Machine(latency=1e-2)):
        stats = Stats()
        check_blocks(dist.matmul(X, Y, stats=stats, machine=mach), A @ B)
        w = model.summa_panel_width(m, k, n, X.grid, mach, np.float64, np.float64)
        assert stats.extra["panel_width"] == panel_count(k, X.grid, w)[1]
    # Ranks passing different machines agree on the narrowest width: the same panels, no hang.
    stats = Stats()
    mine = model.Machine(latency=1e-7 if comm.rank == 0 else 1e-2)
    check_blocks(dist.matmul(X, Y, stats=stats, machine=mine), A @ B)
    same_everywhere(stats.extra["panel_width"])
    with pytest.raises(TypeError, match="machine="):
        dist.matmul(X, Y, machine={"latency": 1e-6})


def test_matmul_bad_arguments_raise_everywhere():
    X, Y = scatter(np.ones((3, 4))), scatter(np.ones((5, 2)))
    with pytest.raises(InputError, match="shape mismatch") as info:
        dist.matmul(X, Y)
    same_everywhere(str(info.value))
    with pytest.raises(ValueError, match=r"grid=.* has .* ranks but the communicator has"):
        dist.matmul(X, X.to_root() if False else scatter(np.ones((4, 2))), grid=f"{comm.size + 1}x1")
    with pytest.raises(ValueError, match="panel="):
        dist.matmul(X, scatter(np.ones((4, 2))), panel=0)
    with pytest.raises(TypeError, match="DistMatrix"):
        dist.matmul(np.ones((3, 4)), Y)


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128", "int32", "float16"])
def test_matmul_torch_kernel_matches_numpy(dtype):
    pytest.importorskip("torch")
    from mpimat import control, kernels

    for shape in [(37, 23, 41), (5, 0, 4), (0, 4, 5), (1, 8, 1), (24, 10, 18)]:
        A, B = random_pair(*shape, dtype, seed=11)
        R = A @ B
        # Fortran order too: the owner's panel is then a strided view.
        for X, Y in [(scatter(A), scatter(B)), (scatter(np.asfortranarray(A)), scatter(np.asfortranarray(B)))]:
            for g in GRIDS:
                for panel in (None, 2):  # many panels: beta = 0 then 1 on every chunk
                    check_blocks(dist.matmul(X, Y, grid=g, panel=panel, kernel="torch"), R)
    assert control.agree_kernel(comm, "torch", np.float64, np.float64) is kernels.get_kernel("torch")
    # Where torch would not give numpy's result, numpy runs.
    assert control.agree_kernel(comm, "torch", np.int32, np.int32) is kernels.NUMPY
    assert control.agree_kernel(comm, "torch", np.float32, np.float64) is kernels.NUMPY


def test_matmul_torch_kernel_nan_inf_and_threads():
    torch = pytest.importorskip("torch")
    A, B = random_pair(12, 9, 10, "float64", seed=9)
    A[2, 3], B[4, 5] = np.nan, np.inf
    R = A @ B
    before = torch.get_num_threads()
    C = dist.matmul(scatter(A), scatter(B), panel=2, kernel="torch", blas_threads=1).to_root()
    assert torch.get_num_threads() == before
    if comm.rank == 0:
        np.testing.assert_array_equal(np.isnan(C), np.isnan(R))
        np.testing.assert_array_equal(np.isinf(C), np.isinf(R))
        finite = np.isfinite(R)
        np.testing.assert_allclose(C[finite], R[finite], rtol=1e-12, atol=1e-12 * np.abs(R[finite]).max())


def test_matmul_bad_kernel_raises_everywhere(monkeypatch):
    from mpimat import kernels

    X, Y = scatter(np.ones((3, 4))), scatter(np.ones((4, 2)))
    with pytest.raises(ValueError, match="kernel= must be one of") as info:
        dist.matmul(X, Y, kernel="cuda")
    same_everywhere(str(info.value))
    # torch missing on one rank only: the same InputError on every rank, no hang.
    if comm.rank == comm.size - 1:
        def missing(name, table=None):
            raise kernels.KernelUnavailable("kernel 'torch' needs torch")
        monkeypatch.setattr(kernels, "get_kernel", missing)
    with pytest.raises(InputError, match="torch"):
        dist.matmul(X, Y, kernel="torch")


# ---------------------------------------------------------------- parallel .npy I/O

def write_on_root(path, array, version=None):
    if comm.rank == 0:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, array, version=version, allow_pickle=False)
    comm.Barrier()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_load_npy_versions_orders_byte_orders(shared_dir, version, order, byteorder):
    A, _ = random_pair(29, 17, 1, "float64", seed=11)
    stored = np.asarray(A, order=order).astype(byteorder + "f8", order=order)
    path = os.path.join(shared_dir, "a.npy")
    write_on_root(path, stored, version)
    for grid in GRIDS:
        X = dist.load_npy(path, comm, grid=grid)
        assert X.dtype == np.dtype("float64") and X.dtype.isnative
        assert X.order == order and str(X.grid) == grid
        check_blocks(X, A)


@pytest.mark.parametrize("dtype", ["float16", "complex128", "int8", "uint64", "bool", ">i2", ">c8"])
@pytest.mark.parametrize("shape", [(23, 11), (1, 5), (3, 1), (0, 4), (0, 0), (2, 9)])
def test_save_then_load_round_trip(shared_dir, dtype, shape):
    M, _ = random_pair(shape[0], shape[1], 1, np.dtype(dtype).newbyteorder("="), seed=12)
    path = os.path.join(shared_dir, "m.npy")
    for order in ("C", "F"):
        X = scatter(np.asarray(M.astype(dtype), order=order))
        dist.save_npy(path, X)
        if comm.rank == 0:
            back = np.load(path, allow_pickle=False)
            np.testing.assert_array_equal(back, M)
            assert np.isfortran(back) == (order == "F" and min(shape) > 1)
            with open(path, "rb") as f:   # data starts at a multiple of 64
                np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                assert f.tell() % 64 == 0
        Y = dist.load_npy(path, comm)
        check_blocks(Y, M)
        assert not no_temp_files(shared_dir)


def test_io_on_one_node_is_independent(shared_dir):
    # Every rank here shares one node: ROMIO's collective buffering is turned off for
    # reads and writes, data sieving for writes (the namespace-host tests in
    # tests/cluster do I/O across hosts with ROMIO's defaults).  ROMIO reports the
    # hints in force on the open file.
    path = os.path.join(shared_dir, "hints.npy")
    write_on_root(path, np.zeros((4, 4)))
    alone = comm.Split(comm.rank)  # one rank is on one node too
    for group in (comm, alone):
        for op, amode in (("read", MPI.MODE_RDONLY), ("write", MPI.MODE_WRONLY)):
            fh = npyio._open(group, path, amode, op)
            info = fh.Get_info()
            try:
                for key, value in npyio.ONE_NODE_HINTS[op].items():
                    assert info.Get(key) == value, (op, key)
            finally:
                info.Free()
                fh.Close()
        group.Barrier()
    alone.Free()


def test_load_npy_casts_to_dtype(shared_dir):
    A, _ = random_pair(9, 8, 1, "int16", seed=13)
    path = os.path.join(shared_dir, "i.npy")
    write_on_root(path, A.astype(">i2"))
    X = dist.load_npy(path, comm, dtype="float32")
    check_blocks(X, A.astype("float32"))


def test_summa_files_in_and_out(shared_dir):
    A, B = random_pair(33, 21, 25, "float32", seed=14)
    pa, pb, pc = (os.path.join(shared_dir, f) for f in ("A.npy", "B.npy", "C.npy"))
    write_on_root(pa, A)
    write_on_root(pb, np.asfortranarray(B))
    C = dist.matmul(dist.load_npy(pa, comm), dist.load_npy(pb, comm))
    dist.save_npy(pc, C)
    if comm.rank == 0:
        check_same(np.load(pc), A @ B)


def bad_files(directory):
    def raw(name, data):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    out = []
    out.append((os.path.join(directory, "missing.npy"), "no such file"))
    out.append((directory, "is a directory"))
    out.append((raw("garbage.npy", b"this is not numpy"), "not a valid .npy file"))
    full = os.path.join(directory, "full.npy")
    np.save(full, np.ones((50, 50)))
    data = open(full, "rb").read()
    out.append((raw("truncated.npy", data[:-100]), "truncated"))
    obj = os.path.join(directory, "object.npy")
    np.save(obj, np.array([[1, "x"]], dtype=object), allow_pickle=True)
    out.append((obj, "object"))
    three = os.path.join(directory, "three.npy")
    np.save(three, np.ones((2, 2, 2)))
    out.append((three, "2-D"))
    strings = os.path.join(directory, "strings.npy")
    np.save(strings, np.array([["a"]]))
    out.append((strings, "string"))
    out.append((raw("badversion.npy", b"\x93NUMPY\x09\x00" + data[8:]), "version|not a valid"))
    return out


def test_bad_files_raise_the_same_error_everywhere(shared_dir):
    cases = bad_files(shared_dir) if comm.rank == 0 else None
    cases = comm.bcast(cases, root=0)
    for path, message in cases:
        with pytest.raises(InputError, match=message) as info:
            dist.load_npy(path, comm)
        same_everywhere(str(info.value))
    # The communicator still works: nothing is left in flight.
    A, B = random_pair(5, 4, 3, "float64", seed=0)
    check_blocks(dist.matmul(scatter(A), scatter(B)), A @ B)


def test_save_to_bad_places_raises_everywhere(shared_dir):
    X = scatter(np.ones((4, 4)))
    for path, message in [(os.path.join(shared_dir, "nope", "C.npy"), "does not exist"),
                          (shared_dir, "is a directory")]:
        with pytest.raises(InputError, match=message) as info:
            dist.save_npy(path, X)
        same_everywhere(str(info.value))
    assert not no_temp_files(shared_dir)


def test_failed_write_keeps_the_existing_file_and_leaves_no_temp_file(shared_dir, monkeypatch):
    path = os.path.join(shared_dir, "C.npy")
    old = np.arange(6.0).reshape(2, 3)
    write_on_root(path, old)
    X = scatter(np.ones((40, 30)))
    failing = comm.size - 1
    if comm.rank == failing:
        real = npyio._write_all

        def broken(fh, buf):
            real(fh, buf)  # the collective completes; this rank's write "fails"
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(npyio, "_write_all", broken)
    with pytest.raises(InputError, match="No space left on device") as info:
        dist.save_npy(path, X)
    same_everywhere(str(info.value))
    comm.Barrier()
    if comm.rank == 0:
        np.testing.assert_array_equal(np.load(path), old)
        assert not no_temp_files(shared_dir)
    # And a later save works and replaces it.
    monkeypatch.undo()
    dist.save_npy(path, X)
    if comm.rank == 0:
        np.testing.assert_array_equal(np.load(path), np.ones((40, 30)))


# ---------------------------------------------------------------- parallel Freivalds

@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "int32", "uint8", "bool", "float16"])
@pytest.mark.parametrize("shape", [(37, 23, 41), (301, 5, 3), (1, 8, 1), (0, 3, 2), (4, 0, 5)])
def test_freivalds_passes_correct_products(dtype, shape):
    A, B = random_pair(*shape, dtype, seed=15)
    X, Y = scatter(A), scatter(B)
    C = dist.matmul(X, Y, grid=GRIDS[-1])
    v = dist.freivalds(X, Y, C, seed=3)
    assert v.passed, v.detail
    same_everywhere(repr(v))


@pytest.mark.parametrize("dtype", ["float64", "complex64", "int64", "int8", "bool"])
def test_freivalds_catches_a_wrong_entry_on_any_rank(dtype):
    A, B = random_pair(40, 30, 35, dtype, seed=16)
    X, Y = scatter(A), scatter(B)
    for culprit in range(comm.size):
        C = dist.matmul(X, Y)
        if comm.rank == culprit and C.local.size:
            if C.dtype.kind == "b":
                C.local[0, 0] = ~C.local[0, 0]
            else:
                with np.errstate(over="ignore"):
                    C.local[0, 0] += 100
        bad = comm.allreduce(int(C.local.size > 0 and comm.rank == culprit))
        v = dist.freivalds(X, Y, C, seed=4)
        same_everywhere(repr(v))
        assert v.passed == (not bad), v.detail


def test_freivalds_nan_and_inf_by_pattern():
    A, B = random_pair(20, 15, 18, "float64", seed=17)
    A[3, 4], B[2, 7], A[5, 1] = np.nan, np.inf, -np.inf
    X, Y = scatter(A), scatter(B)
    C = dist.matmul(X, Y)
    v = dist.freivalds(X, Y, C, seed=5)
    assert v.passed, v.detail
    assert v.extra["recomputed_rows"] >= 2 and v.extra["recomputed_cols"] >= 1
    # A finite value where numpy has NaN fails.
    R = A @ B
    b = C.layout.block_of(comm.rank)
    nan_here = np.argwhere(np.isnan(R[b.row0:b.row1, b.col0:b.col1]))
    if comm.rank == 0 and nan_here.size:
        i, j = nan_here[0]
        C.local[i, j] = 1.0
    broken = comm.allreduce(int(comm.rank == 0 and nan_here.size > 0))
    v = dist.freivalds(X, Y, C, seed=5)
    same_everywhere(repr(v))
    assert v.passed == (not broken)


def test_freivalds_on_operands_from_other_grids():
    A, B = random_pair(25, 19, 22, "float32", seed=18)
    X, Y = scatter(A, GRIDS[0]), scatter(B, GRIDS[-1])
    C = dist.matmul(X, Y, grid=GRIDS[len(GRIDS) // 2])
    assert dist.freivalds(X, Y, C).passed


def test_freivalds_overflow_to_inf_goes_the_careful_way():
    A = np.full((6, 8), 200, dtype=np.float16)
    B = np.full((8, 5), 200, dtype=np.float16)
    A[0] = 0.5  # one finite row
    X, Y = scatter(A), scatter(B)
    with np.errstate(over="ignore"):
        R = A @ B
        C = dist.matmul(X, Y)
    check_blocks_pattern = C.to_root()
    if comm.rank == 0:
        np.testing.assert_array_equal(np.isinf(check_blocks_pattern), np.isinf(R))
    v = dist.freivalds(X, Y, C, seed=6)
    same_everywhere(repr(v))
    assert v.passed and v.extra["recomputed_rows"] == 5, v
