"""Reading and writing .npy files (no MPI)."""

import os
import pickle

import numpy as np
import pytest

from mpimat.errors import InputError
from mpimat.fileio import AtomicWriter, load_npy


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f8", ">f8", ">i4", "<c8", ">c16", "?", "<f2", "u1"])
def test_load_any_order_and_byte_order(tmp_path, order, dtype):
    a = np.asarray(np.arange(12).reshape(3, 4) % 5, dtype=dtype, order=order)
    path = tmp_path / "a.npy"
    np.save(path, a)
    got = load_npy(str(path))
    assert got.dtype.isnative and got.dtype == a.dtype.newbyteorder("=")
    assert np.array_equal(got, a)
    assert got.flags.f_contiguous if order == "F" else got.flags.c_contiguous


def test_load_casts_to_requested_dtype(tmp_path):
    a = np.arange(6, dtype=">i8").reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    got = load_npy(str(tmp_path / "a.npy"), np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, a)


def test_load_in_chunks_matches(tmp_path, monkeypatch):
    import mpimat.fileio as fileio

    monkeypatch.setattr(fileio, "CHUNK_BYTES", 40)  # many small chunks, odd boundaries
    a = np.random.default_rng(0).standard_normal((37, 11)).astype(">f8")
    np.save(tmp_path / "a.npy", np.asfortranarray(a))
    assert np.array_equal(load_npy(str(tmp_path / "a.npy")), a)
    assert np.array_equal(load_npy(str(tmp_path / "a.npy"), np.float32), a.astype(np.float32))


def test_object_array_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    arr = np.empty((1, 1), dtype=object)
    arr[0, 0] = Boom()
    with open(tmp_path / "o.npy", "wb") as f:
        np.lib.format.write_array(f, arr, allow_pickle=True)
    with pytest.raises(InputError, match="object"):
        load_npy(str(tmp_path / "o.npy"))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a valid .npy"),
    (b"hello world, not numpy", "not a valid .npy"),
    (pickle.dumps([1, 2, 3]), "not a valid .npy"),
])
def test_corrupt_files(tmp_path, content, message):
    (tmp_path / "x.npy").write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_npy(str(tmp_path / "x.npy"))


def test_truncated_file(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((100, 100)))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-8])
    with pytest.raises(InputError, match="truncated"):
        load_npy(str(tmp_path / "t.npy"))


def test_wrong_rank_string_and_missing(tmp_path):
    np.save(tmp_path / "v.npy", np.ones(5))
    assert load_npy(str(tmp_path / "v.npy")).shape == (5,)  # vectors follow numpy's 1-D rules
    np.save(tmp_path / "t.npy", np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="2-D"):
        load_npy(str(tmp_path / "t.npy"))
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(InputError, match="string"):
        load_npy(str(tmp_path / "s.npy"))
    with pytest.raises(InputError, match="no such file"):
        load_npy(str(tmp_path / "missing.npy"))
    with pytest.raises(InputError, match="is a directory"):
        load_npy(str(tmp_path))


def test_atomic_writer_replaces_only_complete_files(tmp_path):
    target = tmp_path / "c.npy"
    target.write_bytes(b"precious")
    w = AtomicWriter(str(target))
    assert target.read_bytes() == b"precious"  # nothing written at validation
    assert sorted(os.listdir(tmp_path)) == ["c.npy"]
    w.write_npy(np.eye(3))
    assert np.array_equal(np.load(target), np.eye(3))
    assert sorted(os.listdir(tmp_path)) == ["c.npy"]  # no temp left


def test_atomic_writer_failure_leaves_existing_file(tmp_path):
    target = tmp_path / "c.npy"
    target.write_bytes(b"precious")
    w = AtomicWriter(str(target))
    with pytest.raises(ValueError):
        w.write_npy(np.array([[object()]], dtype=object))  # write_array refuses to pickle
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["c.npy"]


def test_atomic_writer_checks_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        AtomicWriter(str(tmp_path / "nope" / "c.npy"))
    with pytest.raises(InputError, match="is a directory"):
        AtomicWriter(str(tmp_path))
    assert not (tmp_path / "nope").exists()
