"""Nothing lost, nothing left behind: what a hostile user and a faulty cluster do to a run.

Every case runs the real CLI under the real launcher (`mpiexec -n N python
-m mpimat`) with a timeout, and checks the exit code, the one error line,
the files left (none partial, none damaged) and, where it applies, that no
process or shared-memory segment of the job is left.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import MPIEXEC, one_error_line, run_mpimat
from mpimat.shm import mapped_segments

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tmpfs mounts, device nodes)")


def leftovers(directory):
    return sorted(p for p in os.listdir(directory) if p.startswith(".mpimat-"))


def usage_error(args, cwd, n=2, message=None, timeout=60):
    """Run, expect exit 2 with one error line (containing `message`); return the line."""
    started = time.monotonic()
    proc = run_mpimat(args, n=n, cwd=cwd, timeout=timeout)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    line = one_error_line(proc)
    if message:
        assert message in line, line
    assert time.monotonic() - started < timeout
    return line


# -- outputs ------------------------------------------------------------------------------------

def test_out_and_report_the_same_file_are_refused(tmp_path):
    (tmp_path / "C.npy").write_bytes(b"existing")
    usage_error(["--size", 16, "--out", "C.npy", "--report", "C.npy"], tmp_path, message="the same file")
    os.symlink("C.npy", tmp_path / "link.json")
    usage_error(["--size", 16, "--out", "C.npy", "--report", "link.json"], tmp_path, message="the same file")
    os.link(tmp_path / "C.npy", tmp_path / "hard.json")
    usage_error(["--size", 16, "--out", "C.npy", "--report", "hard.json"], tmp_path, message="the same file")
    assert (tmp_path / "C.npy").read_bytes() == b"existing"
    assert leftovers(tmp_path) == []


def test_out_may_replace_an_input(tmp_path):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((20, 10)), rng.standard_normal((10, 20))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    proc = run_mpimat(["--a", "A.npy", "--b", "B.npy", "--out", "A.npy", "--quiet"], n=2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "A.npy"), A @ B, rtol=1e-12)


def test_report_may_not_replace_an_input(tmp_path):
    np.save(tmp_path / "A.npy", np.ones((3, 3)))
    before = (tmp_path / "A.npy").read_bytes()
    usage_error(["--a", "A.npy", "--b", "A.npy", "--report", "A.npy"], tmp_path, message="is the input --a")
    assert (tmp_path / "A.npy").read_bytes() == before


def test_outputs_that_are_not_regular_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        (tmp_path / "adir").mkdir()
        cases = [
            (["--out", "fifo"], "a FIFO"),
            (["--out", "sock"], "a socket"),
            (["--out", "adir"], "is a directory"),
            (["--out", "C.npy/"], "trailing slash"),
            (["--out", ""], "--out: empty path"),
            (["--report", ""], "--report: empty path"),
            (["--report", "fifo"], "a FIFO"),
        ]
        if os.geteuid() == 0:  # as root, replacing /dev/null would be possible: must be refused
            cases.append((["--out", "/dev/null"], "a character device"))
        for args, message in cases:
            usage_error(["--size", 8, *args], tmp_path, message=message)
    finally:
        sock.close()
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert sorted(os.listdir(tmp_path)) == ["adir", "fifo", "sock"]


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own, unmounted afterwards (also on failure)."""
    mounted = []

    def mount(name, size):
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@ROOT_ONLY
def test_out_on_a_too_small_file_system_is_refused_before_computing(tmp_path, tmpfs):
    small = tmpfs("small", "8m")
    (small / "C.npy").write_bytes(b"existing")
    line = usage_error(["--size", 2048, "--out", str(small / "C.npy")], tmp_path, message="needs 32 MiB")
    assert "is free" in line
    assert (small / "C.npy").read_bytes() == b"existing"
    assert leftovers(small) == []


@ROOT_ONLY
def test_report_failing_late_leaves_no_out(tmp_path, tmpfs):
    full = tmpfs("full", "1m")
    # Fill it after validation would pass: a file system with room for the probe only.
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    (tmp_path / "C.npy").write_bytes(b"existing")
    proc = run_mpimat(["--size", 64, "--out", "C.npy", "--report", str(full / "r.json"), "--quiet"], n=2,
                      cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert "--report" in line and "No space left" in line
    assert (tmp_path / "C.npy").read_bytes() == b"existing"
    assert leftovers(tmp_path) == [] and leftovers(full) == []
    assert not (full / "r.json").exists()


# -- the job is whole, or nothing is written --------------------------------------------------

def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_job(args, cwd, n=2):
    env = dict(os.environ, MPIEXEC_TIMEOUT="120")
    return subprocess.Popen([str(MPIEXEC), "-n", str(n), sys.executable, "-m", "mpimat", *map(str, args)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def kill_tree(proc, ranks):
    for pid in ranks:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait(timeout=30)


def job_ranks(proc, ranks, n=2):
    """Fill `ranks` with the pids of the job's ranks (children of mpiexec's proxies); True once all n are up."""
    ranks[:] = [c for p in children(proc.pid) for c in children(p)]
    return len(ranks) == n


def test_launcher_death_commits_nothing(tmp_path):
    (tmp_path / "C.npy").write_bytes(b"existing")
    proc = start_job(["--size", 4096, "--out", "C.npy", "--quiet"], tmp_path)
    ranks = []
    try:
        assert wait_for(lambda: job_ranks(proc, ranks), 30)
        proxies = children(proc.pid)
        time.sleep(2)  # inside the job: generating or computing
        segments = job_segments(ranks)
        assert segments
        for proxy in proxies:
            os.kill(proxy, signal.SIGKILL)  # the launcher's proxy dies; the ranks are orphaned
        proc.wait(timeout=60)
        assert proc.returncode != 0
        # The orphans finish the product, see their launcher gone, and write nothing.
        assert wait_for(lambda: not any(alive(r) for r in ranks), 90)
    finally:
        kill_tree(proc, ranks)
    assert (tmp_path / "C.npy").read_bytes() == b"existing"
    assert leftovers(tmp_path) == []
    # An orphan's MPI_Finalize would end it before MPICH removes them.
    assert {p for p in segments if os.path.exists(p)} == set()


# -- signals -------------------------------------------------------------------------------------

def job_segments(ranks):
    """The MPICH shared-memory segments the job's ranks map (other jobs' are not ours to judge)."""
    return set().union(*(mapped_segments(pid) for pid in ranks))


def wait_for_phase(proc, phase, timeout=60):
    """Read the job's --progress line until it shows `phase`."""
    seen = ""
    os.set_blocking(proc.stderr.fileno(), False)
    deadline = time.monotonic() + timeout
    while f"mpimat: {phase}" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
        except BlockingIOError:
            time.sleep(0.02)
    assert f"mpimat: {phase}" in seen, seen


def signalled_run(tmp_path, phase, send, size=3072):
    """Start a job showing its phases, call send(proc, ranks) once `phase` shows; return what stays."""
    (tmp_path / "C.npy").write_bytes(b"existing")
    proc = start_job(["--size", size, "--out", "C.npy", "--verify", "none", "--progress"], tmp_path)
    ranks = []
    try:
        assert wait_for(lambda: job_ranks(proc, ranks), 30)
        wait_for_phase(proc, phase)
        segments = job_segments(ranks)
        assert segments  # MPICH maps them from MPI_Init on
        started = time.monotonic()
        send(proc, ranks)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - started
        assert wait_for(lambda: not any(alive(r) for r in ranks), 10)
    finally:
        kill_tree(proc, ranks)
    return proc.returncode, elapsed, {p for p in segments if os.path.exists(p)}


@pytest.mark.parametrize("how", ["SIGTERM to mpiexec", "SIGINT to mpiexec", "SIGTERM to every process"])
def test_signals_stop_every_rank_and_leave_nothing(tmp_path, how):
    def send(proc, ranks):
        if how == "SIGTERM to every process":  # what scancel does
            for pid in [proc.pid, *ranks]:
                os.kill(pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM if "TERM" in how else signal.SIGINT)

    code, elapsed, segments = signalled_run(tmp_path, "compute", send)
    assert code != 0
    assert elapsed < 10
    assert (tmp_path / "C.npy").read_bytes() == b"existing"
    assert leftovers(tmp_path) == []
    assert segments == set(), segments


def test_kill_9_while_writing_leaves_no_temp_file(tmp_path):
    def send(proc, ranks):
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)

    # 288 MiB of C: writing it takes long enough for the progress line to show it.
    code, _, _ = signalled_run(tmp_path, "write", send, size=6144)
    assert code != 0
    assert (tmp_path / "C.npy").read_bytes() == b"existing"
    assert leftovers(tmp_path) == []  # the output was an unnamed (O_TMPFILE) file


# -- memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--size", 300000], ["--shape", 1000000, 10, 1000000]],
                         ids=["size 300000", "shape 1e6 10 1e6"])
def test_products_larger_than_memory_are_refused(tmp_path, args):
    line = usage_error(args, tmp_path, message="needs")
    assert "may use only" in line and "TiB" in line


def test_input_file_larger_than_memory_is_refused(tmp_path):
    big = tmp_path / "big.npy"
    with open(big, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                 "shape": (200000, 200000)})
        f.truncate(f.tell() + 200000 * 200000 * 8)  # sparse: 320 GB of holes
    np.save(tmp_path / "B.npy", np.ones((200000, 1)))
    line = usage_error(["--a", "big.npy", "--b", "B.npy"], tmp_path, message="needs 298 GiB")
    assert "may use only" in line


def test_address_space_limit_is_respected_and_budget_reported(tmp_path):
    # RLIMIT_AS of 6 GiB for every rank: 9 GiB of A + B + C on rank 0 cannot fit.
    env_limit = ["prlimit", f"--as={6 << 30}"]
    proc = subprocess.run([*env_limit, str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpimat", "--size", "20000"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=90,
                          env=dict(os.environ, MPIEXEC_TIMEOUT="60"))
    assert proc.returncode == 2, proc.stderr
    assert "RLIMIT_AS" in one_error_line(proc)
    proc = run_mpimat(["--size", 64, "--report", "r.json", "--quiet"], n=2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert all(r["memory_budget_bytes"] > 0 for r in rep["per_rank"])


# -- hostile inputs --------------------------------------------------------------------------------

def test_fifo_inputs_are_refused_not_waited_for(tmp_path):
    os.mkfifo(tmp_path / "A.npy")
    os.mkfifo(tmp_path / "cal.json")
    np.save(tmp_path / "B.npy", np.ones((2, 2)))
    usage_error(["--a", "A.npy", "--b", "B.npy"], tmp_path, message="not a regular file (a FIFO)")
    usage_error(["plan", "--size", 8, "--calibration", "cal.json"], tmp_path, message="a FIFO")
    usage_error(["--a", "/dev/zero", "--b", "B.npy"], tmp_path, message="not a regular file")


@pytest.mark.parametrize("header, message", [
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (True, 5), }", "not a tuple of integers"),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 5), }", "negative"),
    ("{'descr': '<f8', 'fortran_order': 1, 'shape': (2, 5), }", "not a valid .npy"),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", "larger than any memory"),
])
def test_every_header_field_is_checked(tmp_path, header, message):
    body = header.encode().ljust(118) + b"\n"
    (tmp_path / "A.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body + b"\0" * 80)
    np.save(tmp_path / "B.npy", np.ones((5, 2)))
    usage_error(["--a", "A.npy", "--b", "B.npy"], tmp_path, message=message)


def test_a_path_with_a_newline_is_still_one_line(tmp_path):
    line = usage_error(["--a", "no\nsuch.npy", "--b", "x.npy"], tmp_path, message="no such file")
    assert "no\\nsuch.npy" in line


@pytest.mark.parametrize("machine, message", [
    ({"gflops": 0}, "gflops must be positive"),
    ({"gflops": -3}, "gflops must be positive"),
    ({"latency": "fast"}, "latency must be a finite number"),
    ({"latency": float("nan")}, "not a valid mpimat calibration"),
    ([1, 2], "'machine' is a list"),
    ({"cores": 0}, "cores must be"),
])
def test_bad_calibration_files_are_one_line_exit_2(tmp_path, machine, message):
    (tmp_path / "cal.json").write_text(json.dumps({"machine": machine}))
    usage_error(["plan", "--size", 64, "--calibration", "cal.json"], tmp_path, message=message)
    proc = run_mpimat(["--size", 64, "--strategy", "auto"], n=2, cwd=tmp_path,
                      env={"MPIMAT_CALIBRATION": str(tmp_path / "cal.json")})
    assert proc.returncode == 2 and message in one_error_line(proc)


def test_calibration_from_a_device_is_refused(tmp_path):
    usage_error(["plan", "--size", 64, "--calibration", "/dev/zero"], tmp_path, message="not a regular file")
