"""matmul under 1, 2, 3 and 4 ranks, compared with numpy.

Run as: mpiexec -n K python -m pytest --with-mpi tests/mpi   (K = 1..4)
"""

import time

import numpy as np
import pytest
from mpi4py import MPI

from mpimat import InputError, matmul
from mpimat.generate import random_pair
from mpimat.panels import PanelPlan
from mpimat.partition import Grid, Layout, factor_pairs
from mpimat.stats import Stats

pytestmark = pytest.mark.mpi

comm = MPI.COMM_WORLD

from cases import DTYPES, SHAPES, check_same  # noqa: E402 - shared with test_dist.py


def on_root(root, *arrays):
    return arrays if comm.rank == root else tuple(None for _ in arrays)


# These products are small: distribute them anyway (alone_flops=0), or the
# root would compute them alone and nothing here would test the messages.
DISTRIBUTE = {"alone_flops": 0}


def run(A, B, root=0, **kw):
    a, b = on_root(root, A, B)
    C = matmul(a, b, comm=comm, root=root, **{**(DISTRIBUTE if kw.get("strategy", "tiles") == "tiles" else {}), **kw})
    if comm.rank == root:
        check_same(C, A @ B)
    else:
        assert C is None
    return C


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes_and_dtypes(shape, dtype):
    A, B = random_pair(*shape, dtype, seed=7)
    run(A, B)


@pytest.mark.parametrize("root", range(4))
def test_any_root(root):
    if root >= comm.size:
        pytest.skip(f"root {root} needs {root + 1} ranks")
    A, B = random_pair(23, 17, 19, "float64", seed=root)
    run(A, B, root=root)


@pytest.mark.parametrize("shape", [(24, 10, 18), (3, 4, 2), (1, 3, 1)])
def test_every_grid(shape):
    A, B = random_pair(*shape, "float64", seed=1)
    for rows, cols in factor_pairs(comm.size):
        run(A, B, grid=f"{rows}x{cols}")
        run(A, B, grid=Grid(rows, cols))


@pytest.mark.parametrize("order_a, order_b", [("F", "C"), ("C", "F"), ("F", "F")])
def test_fortran_order(order_a, order_b):
    A, B = random_pair(31, 22, 27, "float64", seed=2)
    run(np.asarray(A, order=order_a), np.asarray(B, order=order_b))


def test_big_endian_and_strided_views():
    A, B = random_pair(40, 30, 20, "float32", seed=3)
    run(A.astype(">f4"), B.astype(">f4"))
    run(A[::2, 1:], B[1:, ::3])


@pytest.mark.parametrize("da, db", [("float32", "float64"), ("int8", "float32"), ("int16", "int64"),
                                    ("bool", "int32"), ("complex64", "float64"), ("uint64", "int64"),
                                    ("float16", "int8")])
def test_mixed_dtypes_promote_like_numpy(da, db):
    A, _ = random_pair(13, 11, 1, da, seed=4)
    _, B = random_pair(1, 11, 9, db, seed=5)
    run(A, B)


def test_integers_wrap_exactly_like_numpy():
    rng = np.random.default_rng(8)
    A = rng.integers(-2**62, 2**62, size=(17, 29), dtype=np.int64)
    B = rng.integers(-2**62, 2**62, size=(29, 13), dtype=np.int64)
    run(A, B)
    A8 = rng.integers(-128, 127, size=(9, 50), dtype=np.int8)
    B8 = rng.integers(-128, 127, size=(50, 9), dtype=np.int8)
    run(A8, B8)


def test_nan_and_inf_propagate():
    A, B = random_pair(12, 9, 10, "float64", seed=9)
    A[2, 3], B[4, 5] = np.nan, np.inf
    a, b = on_root(0, A, B)
    C = matmul(a, b, comm=comm, **DISTRIBUTE)
    if comm.rank == 0:
        R = A @ B
        np.testing.assert_array_equal(np.isnan(C), np.isnan(R))
        np.testing.assert_allclose(C[np.isfinite(R)], R[np.isfinite(R)], rtol=1e-12)


def test_repeated_calls_and_blas_threads():
    A, B = random_pair(50, 40, 30, "float64", seed=10)
    for threads in (1, 2, None):
        run(A, B, blas_threads=threads)


# Bad input: the same exception, with the same message, on every rank.
BAD = [
    (lambda: (np.ones((3, 4)), np.ones((5, 2))), ValueError, "shape mismatch"),
    (lambda: (np.ones((2, 3, 4)), np.ones((4, 2))), ValueError, "2-D"),
    (lambda: (np.ones(4), np.ones((2, 4, 2))), ValueError, "1-D vector or a 2-D matrix"),
    (lambda: (np.float64(3.0), np.ones((1, 2))), ValueError, "1-D vector or a 2-D matrix"),
    (lambda: (np.ones(4), np.ones((5, 2))), ValueError, "shape mismatch"),
    (lambda: (np.array([[object()]], dtype=object), np.ones((1, 1))), TypeError, "object"),
    (lambda: (np.array([["a"]]), np.array([["b"]])), TypeError, "string"),
    (lambda: (np.ones((2, 2), dtype="M8[s]"), np.ones((2, 2))), TypeError, "datetime"),
]


@pytest.mark.parametrize("make, exc, message", BAD)
def test_bad_input_raises_everywhere(make, exc, message):
    A, B = on_root(0, *make())
    with pytest.raises(exc, match=message) as info:
        matmul(A, B, comm=comm)
    assert isinstance(info.value, InputError)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1
    # The communicator still works afterwards: nothing is left in flight.
    run(*random_pair(5, 4, 3, "float64", seed=0))


def test_bad_grid_raises_everywhere():
    A, B = on_root(0, np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="ranks but the job has") as info:
        matmul(A, B, comm=comm, grid=f"{comm.size + 1}x1")
    assert len(set(comm.allgather(str(info.value)))) == 1
    assert "grid=" in str(info.value) and "--grid" not in str(info.value)  # the library names parameters
    with pytest.raises(ValueError, match="PRxPC") as info:
        matmul(A, B, comm=comm, grid="banana")
    assert len(set(comm.allgather(str(info.value)))) == 1


@pytest.mark.parametrize("options, exc, message", [
    ({"panel_flopz": 1}, TypeError, "unexpected option.*'panel_flopz'.*panel_flops, tail_flops"),
    ({"tasks_per_message": 4}, TypeError, "unexpected option.*'tasks_per_message'"),
    ({"panel_flops": 0}, ValueError, "panel_flops= must be at least 1"),
    ({"panel_flops": "many"}, TypeError, "panel_flops= must be a whole number"),
    ({"alone_flops": -1}, ValueError, "alone_flops= must be at least 0"),
])
def test_bad_options_raise_everywhere(options, exc, message):
    # A misspelt or misplaced option is the same error on every rank, never
    # silently ignored; only the root's options are read.
    A, B = on_root(0, np.ones((4, 3)), np.ones((3, 2)))
    kw = options if comm.rank == 0 else {}
    with pytest.raises(exc, match=message) as info:
        matmul(A, B, comm=comm, **kw)
    assert isinstance(info.value, InputError)
    assert len(set(comm.allgather(str(info.value)))) == 1
    run(*random_pair(5, 4, 3, "float64", seed=0))  # nothing left in flight


def test_options_are_the_roots():
    # Other ranks' option values are ignored: the root's travel with the job.
    from mpimat.stats import Stats

    A, B = random_pair(64, 64, 64, "float64", seed=3)
    stats = Stats()
    mine = {"panel_flops": 100} if comm.rank == 0 else {"panel_flops": 10 ** 12}
    run(A, B, stats=stats, **mine)
    panels = comm.allgather(stats.extra["panels"])
    if comm.size > 1:
        assert max(panels[1:]) > 1  # many small panels, as the root asked


def test_bad_root_raises_everywhere():
    with pytest.raises(ValueError, match="root"):
        matmul(None, None, comm=comm, root=comm.size)


def test_sub_communicator():
    # Works on any communicator, not only COMM_WORLD: here the even ranks.
    sub = comm.Split(comm.rank % 2, comm.rank)
    try:
        A, B = random_pair(15, 7, 11, "float64", seed=11)
        a, b = (A, B) if sub.rank == 0 else (None, None)
        C = matmul(a, b, comm=sub, **DISTRIBUTE)
        if sub.rank == 0:
            check_same(C, A @ B)
    finally:
        sub.Free()


# Streaming in panels: tiny panels force many of them on small matrices.
@pytest.mark.parametrize("shape", [(40, 30, 9), (9, 30, 40), (33, 1, 35), (64, 64, 64), (3, 50, 2)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("order", ["C", "F"])
def test_many_panels_every_grid(shape, order):
    A, B = random_pair(*shape, "float64", seed=12)
    A, B = np.asarray(A, order=order), np.asarray(B, order=order)
    for rows, cols in factor_pairs(comm.size):
        stats = Stats()
        run(A, B, grid=f"{rows}x{cols}", panel_flops=500, tail_flops=100, stats=stats)
        if comm.rank == 0:
            # The knob's effect: the root computes its tile in as many panels as the plan says.
            layout = Layout(*A.shape, B.shape[1], Grid(rows, cols))
            plan = PanelPlan(layout, 8, 8, order, order, panel_flops=500, shared=comm.size > 1, tail_flops=100)
            want = len(plan.tile_panels(layout.tile(0), whole_tail=True))
            assert stats.extra["panels"] == want
            if shape == (64, 64, 64):
                assert want > 1  # the default panel_flops gives one panel


def test_many_panels_mixed_dtypes_and_root():
    A, _ = random_pair(45, 20, 1, "int16", seed=13)
    _, B = random_pair(1, 20, 38, "float32", seed=14)
    run(A, B, root=comm.size - 1, panel_flops=200)


# Taking over: slow the other ranks down so the root, done first, computes
# the ends of their tiles (takeover.py).  Tiny tail pieces make tails even
# on small matrices.
@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("order", ["C", "F"])  # C: A streams in row panels; F: B in column panels
def test_root_takes_over_the_ends_of_late_tiles(order, monkeypatch):
    from mpimat import tiles
    from mpimat.stats import Stats

    if comm.rank != 0:
        real = tiles.local_product

        def slow(a, b, out=None, kernel=None):
            time.sleep(0.05)
            return real(a, b, out=out, kernel=kernel)

        monkeypatch.setattr(tiles, "local_product", slow)
    A, B = random_pair(260, 40, 260, "float64", seed=15)
    A, B = np.asarray(A, order=order), np.asarray(B, order=order)
    for rows, cols in factor_pairs(comm.size):
        stats = Stats()
        run(A, B, grid=f"{rows}x{cols}", panel_flops=2000, tail_flops=200, stats=stats)
        if comm.rank == 0:
            assert stats.extra["panels_taken_over"] > 0


class Unconvertible:
    """An operand whose conversion to an array fails with something other than ValueError/TypeError."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("the data source is gone")


def test_any_exception_during_validation_reaches_every_rank():
    A, B = on_root(0, Unconvertible(), np.ones((2, 2)))
    with pytest.raises(InputError, match="RuntimeError on the root rank: the data source is gone") as info:
        matmul(A, B, comm=comm)
    assert len(set(comm.allgather(str(info.value)))) == 1
    run(*random_pair(5, 4, 3, "float64", seed=0))  # nothing left in flight


@pytest.mark.mpi(min_size=2)
def test_ranks_naming_different_roots_raise_everywhere():
    A, B = np.ones((3, 3)), np.ones((3, 3))
    with pytest.raises(ValueError, match="root= differs between ranks"):
        matmul(A, B, comm=comm, root=comm.rank % 2)
    with pytest.raises(ValueError, match="root"):  # one rank names a root that does not exist
        matmul(A, B, comm=comm, root=comm.size if comm.rank == 1 else 0)
    run(*random_pair(5, 4, 3, "float64", seed=0))


@pytest.mark.mpi(min_size=2)
def test_a_rank_short_of_memory_refuses_on_every_rank():
    import resource

    A, B = on_root(0, np.ones((3000, 3000)), np.ones((3000, 3000)))  # 72 MiB each: checked
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if comm.rank == 1:
        with open("/proc/self/status") as f:
            mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (16 << 20), hard))
    try:
        with pytest.raises(InputError, match="rank 1 .* needs .* but this process may use only .*RLIMIT_AS") as info:
            matmul(A, B, comm=comm)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert len(set(comm.allgather(str(info.value)))) == 1
    assert "more ranks" in str(info.value)


# numpy's 1-D rules: A @ x and x @ B are vectors, x @ y a scalar.
@pytest.mark.parametrize("shapes", [((37, 23), (23,)), ((23,), (23, 29)), ((23,), (23,)), ((1,), (1, 5)),
                                    ((0,), (0, 3)), ((4, 0), (0,))],
                         ids=lambda s: " @ ".join(map(str, s)))
@pytest.mark.parametrize("dtype", ["float64", "int16", "complex64", "bool"])
def test_vectors_follow_numpys_rules(shapes, dtype):
    rng = np.random.default_rng(21)
    A = rng.integers(-5, 5, shapes[0]).astype(dtype)
    B = rng.integers(-5, 5, shapes[1]).astype(dtype)
    a, b = on_root(0, A, B)
    C = matmul(a, b, comm=comm, **DISTRIBUTE)
    if comm.rank == 0:
        want = A @ B
        assert np.shape(C) == np.shape(want) and np.asarray(C).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(np.asarray(C).astype(np.complex128), np.asarray(want).astype(np.complex128),
                                   rtol=1e-5)
        assert isinstance(C, np.ndarray) == isinstance(want, np.ndarray)


# Local kernels (kernels.py): numpy's dtype and values whichever runs; the report says which ran.
@pytest.mark.parametrize("dtype, runs", [("float64", "torch"), ("float32", "torch"), ("complex128", "torch"),
                                         ("int16", "numpy"), ("float16", "numpy"), ("bool", "numpy")])
def test_torch_kernel_or_numpys_fallback(dtype, runs):
    pytest.importorskip("torch")
    A, B = random_pair(70, 45, 66, dtype, seed=30)
    stats = Stats()
    run(A, B, kernel="torch", stats=stats, panel_flops=20000, tail_flops=2000)
    assert stats.extra["kernel"] == runs
    _, b = random_pair(1, 45, 66, "int8", seed=31)
    stats = Stats()
    run(A, b, kernel="torch", stats=stats)  # mixed dtypes: numpy
    assert stats.extra["kernel"] == "numpy"


def test_numpy_kernel_by_default_and_bad_kernel_everywhere():
    A, B = random_pair(20, 10, 30, "float64", seed=32)
    stats = Stats()
    run(A, B, stats=stats)
    assert stats.extra["kernel"] == "numpy"
    a, b = on_root(0, A, B)
    with pytest.raises(ValueError, match="kernel= must be one of numpy, torch, auto") as info:
        matmul(a, b, comm=comm, kernel="cuda")
    assert len(set(comm.allgather(str(info.value)))) == 1


def test_kernel_agreement_when_ranks_differ(monkeypatch):
    """control.agree_kernel (api's and dist's one agreement): a rank without the
    kernel fails every rank; ranks that resolved differently all run numpy."""
    pytest.importorskip("torch")  # the real torch kernel on the other ranks
    from mpimat import control, kernels

    real = kernels.resolve
    last = comm.size - 1
    if comm.rank == last:
        def missing(name, dtype_a, dtype_b):
            raise kernels.KernelUnavailable("no torch on this rank")
        monkeypatch.setattr(kernels, "resolve", missing)
    with pytest.raises(InputError) as info:
        control.agree_kernel(comm, "torch", np.float64, np.float64)
    assert str(info.value) == ("no torch on this rank" if comm.rank == last
                               else "kernel 'torch' is missing on some rank: install it everywhere")
    # "auto" read from differing calibration files (the last rank's says numpy): numpy everywhere.
    monkeypatch.setattr(kernels, "resolve", (lambda *args: kernels.NUMPY) if comm.rank == last else
                        (lambda name, a, b: real("torch", a, b)))
    chosen = control.agree_kernel(comm, "auto", np.float64, np.float64)
    assert chosen is kernels.NUMPY
    monkeypatch.setattr(kernels, "resolve", real)
    assert control.agree_kernel(comm, "torch", np.float64, np.float64) is kernels.get_kernel("torch")


# A solver's small products: below alone_flops the root computes alone, with no messages.
@pytest.mark.parametrize("dtype", ["float64", "int32", "complex64"])
def test_small_products_are_computed_by_the_root_alone(dtype):
    A, B = random_pair(40, 30, 50, dtype, seed=40)  # 120,000 flops
    stats = Stats()
    run(A, B, stats=stats, alone_flops=120_001)
    assert stats.extra["alone"] is True and stats.extra["grid"] == "1x1"
    assert stats.bytes_sent == stats.bytes_received == 0
    stats = Stats()
    run(A, B, stats=stats, alone_flops=120_000)  # not below: distributed
    assert "alone" not in stats.extra
    if comm.size > 1 and comm.rank == 1:
        assert stats.bytes_received > 0


def test_repeated_calls_reuse_the_plan_and_stay_right():
    # Shapes, dtypes, orders and options change between calls on one
    # communicator: each call is planned as its own (the cached plans are
    # keyed by all of them), also when option values look alike (True and 1).
    from mpimat.session import session

    cases = [((9, 7, 5), "float64", "C"), ((9, 7, 5), "float32", "C"), ((9, 7, 5), "float64", "F"),
             ((5, 7, 9), "float64", "C"), ((9, 7, 5), "float64", "C")]
    for _ in range(3):
        for shape, dtype, order in cases:
            A, B = random_pair(*shape, dtype, seed=41)
            run(np.asarray(A, order=order), np.asarray(B, order=order))
    A, B = random_pair(6, 5, 4, "float64", seed=42)
    a, b = on_root(0, A, B)
    run(A, B, strategy="dot", keep_blocks=True)
    with pytest.raises(TypeError, match="keep_blocks= must be True or False"):
        matmul(a, b, comm=comm, strategy="dot", keep_blocks=1)  # 1 == True, but not the cached call
    # Bounded: a loop over ever-new shapes keeps the most recent plans only.
    for m in range(1, 100):
        run(*random_pair(m, 2, 3, "float64", seed=m))
    cached = session(comm)
    assert len(cached.jobs.values) == cached.jobs.size
    # Decisions are the root's (rank 0 here; others were roots of earlier tests).
    assert len(cached.decisions.values) <= cached.decisions.size
    assert comm.rank != 0 or len(cached.decisions.values) == cached.decisions.size


def test_a_repeat_is_recognised_by_strides_byte_order_and_type():
    # The root remembers a checked call by its operands' type, shape, strides
    # and dtype: a same-shaped operand that is a strided view, byte-swapped, a
    # list or an ndarray subclass is checked (and converted) afresh, every time.
    from mpimat.session import session

    class Tagged(np.ndarray):  # a subclass: asarray gives a plain view of it
        pass

    A, B = random_pair(12, 10, 8, "float64", seed=43)
    wide = np.asarray(random_pair(12, 20, 8, "float64", seed=44)[0])
    variants = [
        (A, B),
        (wide[:, ::2], B),  # A's shape, other strides: a copy is made and nothing remembered
        (A.astype(A.dtype.newbyteorder(">")), B),
        (A.tolist(), B),
        (A.view(Tagged), B),
        (A, np.asfortranarray(B)),
    ]
    for _ in range(3):
        for a, b in variants:
            expected = np.asarray(a, dtype=np.float64) @ np.asarray(b)
            C = matmul(*on_root(0, a, b), comm=comm, alone_flops=10 ** 9)
            if comm.rank == 0:
                assert type(C) is np.ndarray and C.dtype == expected.dtype
                check_same(C, expected)
    if comm.rank == 0:
        # Only the calls whose operands went through as given are remembered.
        remembered = [key for key in session(comm).decisions.values if key[0] == (12, 10) and key[3] == (10, 8)]
        assert sorted(key[1] for key in remembered) == [(80, 8), (80, 8)]  # A as given, with B in C and F order


# check_panels: every rank checks the panels it computes; a wrong one names its rank.
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "int32", "uint8", "bool"])
@pytest.mark.parametrize("order", ["C", "F"])  # C: A streams in row panels; F: B in column panels
def test_checked_panels_pass_and_are_counted(dtype, order):
    A, B = random_pair(70, 33, 61, dtype, seed=50)
    A, B = np.asarray(A, order=order), np.asarray(B, order=order)
    for rows, cols in factor_pairs(comm.size):
        stats = Stats()
        run(A, B, grid=f"{rows}x{cols}", panel_flops=20_000, tail_flops=2000, check_panels=True, stats=stats)
        checked = comm.allreduce(stats.extra["panels_checked"])
        assert checked >= comm.size  # every rank's tile has rows and columns here
        assert stats.phases["verify"] > 0
    stats = Stats()
    run(A, B, check_panels=True, alone_flops=10 ** 9, stats=stats)  # the root alone checks its one panel
    assert stats.extra["panels_checked"] == (1 if comm.rank == 0 else 0)


@pytest.mark.parametrize("alone", [False, True])
def test_a_wrong_panel_raises_on_every_rank_naming_its_rank(alone, monkeypatch):
    from mpimat import PanelCheckError, tiles

    bad = comm.size - 1  # the root's own panels when there is one rank
    if comm.rank == bad:
        real = tiles.local_product

        def wrong(a, b, out=None, kernel=None):  # one entry of every panel off by one
            C = real(a, b, out=out, kernel=kernel)
            C.flat[0] += 1
            return C

        monkeypatch.setattr(tiles, "local_product", wrong)
    A, B = random_pair(50, 20, 40, "float64", seed=51)
    a, b = on_root(0, A, B)
    options = {"alone_flops": 10 ** 9} if alone else {"alone_flops": 0, "panel_flops": 20_000}
    if alone and bad != 0:
        matmul(a, b, comm=comm, check_panels=True, **options)  # only the root computes
        return
    with pytest.raises(PanelCheckError, match=rf"failed their check: rank {bad}'s panel C\[\d+:\d+, \d+:\d+\]"):
        matmul(a, b, comm=comm, check_panels=True, **options)
    # Unchecked, the same wrong product returns: the check is what caught it.
    C = matmul(a, b, comm=comm, **options)
    if comm.rank == 0:
        assert not np.allclose(C, A @ B)


def shared_pair(root, A, B, order="C"):
    """A and B copied into one node-shared window (nodemem), every rank's views of them."""
    from mpimat.nodemem import NodeArrays

    shapes = [A.shape, B.shape] if order == "C" else [A.shape[::-1], B.shape[::-1]]
    window = NodeArrays(comm, [(shapes[0], A.dtype), (shapes[1], B.dtype)], root=root)
    a, b = window.arrays if order == "C" else (x.T for x in window.arrays)
    if comm.rank == root:
        a[...], b[...] = A, B
    comm.Barrier()  # the root's copy is in place before any rank reads
    return window, a, b


# Shared operands (one node): every rank reads A and B in place, nothing is sent to it.
@pytest.mark.parametrize("shape,dtype,order,root,grid", [
    ((50, 40, 30), "float64", "C", 0, None),
    ((61, 17, 45), "complex64", "F", -1, None),
    ((33, 1, 35), "int16", "C", -1, "1xP"),
    ((64, 64, 64), "float32", "F", 0, "Px1"),
    ((3, 50, 2), "bool", "C", 0, None),
])
def test_shared_operands_move_no_input_data(shape, dtype, order, root, grid):
    root = root % comm.size
    m, k, n = shape
    A, B = random_pair(m, k, n, dtype, seed=17)
    window, a, b = shared_pair(root, A, B, order)
    try:
        stats = Stats()
        grid = {None: None, "1xP": f"1x{comm.size}", "Px1": f"{comm.size}x1"}[grid]
        C = matmul(a, b, comm=comm, root=root, grid=grid, shared=True, panel_flops=2000, tail_flops=200,
                   stats=stats, **DISTRIBUTE)
        if comm.rank == root:
            check_same(C, A @ B)
            assert stats.bytes_sent == 0  # no rows or columns went out
        else:
            assert C is None
            assert stats.bytes_received == 0
        assert stats.extra["shared"] is True
    finally:
        a = b = None
        window.free()


def test_shared_ranks_reuse_result_buffers_without_mixing_panels():
    # Panels of ~190 KB (rendezvous, not eager): a rank's next panel finds its
    # earlier buffers still on their way or free again, and must never write
    # into one whose panel the root has not received.
    m = k = n = 600
    A, B = random_pair(m, k, n, "float64", seed=23)
    window, a, b = shared_pair(0, A, B)
    try:
        for _ in range(2):
            C = matmul(a, b, comm=comm, shared=True, panel_flops=2 * 40 * k * n, tail_flops=2 * 4 * k * n,
                       **DISTRIBUTE)
            if comm.rank == 0:
                check_same(C, A @ B)
    finally:
        a = b = None
        window.free()


def test_shared_is_ignored_by_the_dot_strategy():
    A, B = random_pair(9, 8, 7, "float64", seed=3)
    window, a, b = shared_pair(0, A, B)
    try:
        stats = Stats()
        C = matmul(a, b, comm=comm, strategy="dot", shared=True, stats=stats)
        if comm.rank == 0:
            check_same(C, A @ B)
        assert stats.extra["shared"] is False
    finally:
        a = b = None
        window.free()


@pytest.mark.skipif(comm.size == 1, reason="needs a rank besides the root")
def test_shared_views_unlike_the_roots_are_refused_everywhere():
    A, B = random_pair(12, 10, 8, "float64", seed=4)
    window, a, b = shared_pair(0, A, B)
    try:
        for theirs, message in [((a[:-1], b), r"rank 1's A is 11x10 <f8 \(C order\) but the root's is 12x10 <f8"),
                                ((a, b.astype(np.float32)), "rank 1's B is 10x8 <f4"),
                                ((a, b.T), r"rank 1's B is 8x10"),
                                ((a, b[:, ::2]), r"B is 10x4 <f8 \(strided\)"),
                                ((a, None), "B is NoneType, not an array")]:
            mine = (a, b) if comm.rank != 1 else theirs
            with pytest.raises(InputError, match=message):
                matmul(*mine, comm=comm, shared=True, **DISTRIBUTE)
    finally:
        a = b = None
        window.free()


def test_shared_needs_operands_as_given_and_a_bool():
    A, B = random_pair(12, 10, 8, "float64", seed=4)
    with pytest.raises(InputError, match="shared=True needs A and B as the tiles strategy reads them"):
        matmul(A[:, ::2], B[:5], comm=comm, shared=True)
    with pytest.raises(InputError, match="shared= must be True or False"):
        matmul(A, B, comm=comm, shared="yes")


@pytest.mark.parametrize("strategy", ["tiles", "dot"])
@pytest.mark.parametrize("shapes", [((9, 8), (8, 7)), ((8,), (8, 7)), ((9, 8), (8,)), ((8,), (8,))])
def test_out_takes_the_product_on_the_root(strategy, shapes):
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    want = A @ B
    out = np.full(np.shape(want), np.nan) if comm.rank == 0 else None
    C = matmul(*on_root(0, A, B), comm=comm, strategy=strategy, out=out,
               **(DISTRIBUTE if strategy == "tiles" else {}))
    if comm.rank == 0:
        assert C is out
        check_same(out, np.asarray(want))
    else:
        assert C is None


@pytest.mark.parametrize("make,message", [
    (lambda: np.empty((9, 6)), r"out= is 9x6 <f8 \(C-contiguous\); the product needs a writeable C-contiguous 9x7 <f8"),
    (lambda: np.empty((9, 7), np.float32), "out= is 9x7 <f4"),
    (lambda: np.empty((9, 7), order="F"), r"\(not C-contiguous\)"),
    (lambda: np.broadcast_to(np.empty(7), (9, 7)), "read-only"),
    (lambda: [[0.0] * 7] * 9, "out= is list, not an array"),
])
def test_bad_out_raises_everywhere(make, message):
    A, B = random_pair(9, 8, 7, "float64", seed=2)
    with pytest.raises(InputError, match=message):
        matmul(*on_root(0, A, B), comm=comm, out=make() if comm.rank == 0 else None)


# Distributed (no rows, columns or results travel) and below alone_flops (the root
# computes into out= and every rank still returns with the whole product).
@pytest.mark.parametrize("shape,alone", [((70, 50, 60), False), ((6, 5, 4), True)])
def test_shared_out_moves_no_data_and_is_complete_on_every_rank(shape, alone):
    from mpimat.nodemem import NodeArrays

    m, k, n = shape
    A, B = random_pair(m, k, n, "float64", seed=8)
    window, a, b = shared_pair(0, A, B)
    c_window = NodeArrays(comm, [((m, n), np.float64)])
    (c,) = c_window.arrays
    distribute = {} if alone else {"panel_flops": 4000, "tail_flops": 400, **DISTRIBUTE}
    try:
        stats = Stats()
        C = matmul(a, b, comm=comm, shared=True, out=c, stats=stats, **distribute)
        assert stats.extra.get("alone", False) is alone
        assert stats.bytes_sent == stats.bytes_received == 0
        if comm.rank == 0:
            assert C is c
        check_same(c, A @ B)  # every rank sees the whole product
        if comm.size > 1 and not alone:  # a rank's out= unlike the root's is refused everywhere
            mine = c if comm.rank != 1 else np.empty((m, n))[:, :30]
            with pytest.raises(InputError, match="rank 1's out= is 70x30"):
                matmul(a, b, comm=comm, shared=True, out=mine, **distribute)
    finally:
        a = b = c = C = None
        c_window.free()
        window.free()
