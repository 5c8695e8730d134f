"""A real multi-host cluster on this machine for the tests in this directory.

The session fixture `cluster` brings up three hosts h1..h3 with
scripts/cluster.sh (network namespaces on a private bridge, veth links capped
with tc tbf in both directions) and always takes them down at the end, also
when a test fails. MPI jobs go through Hydra's rsh launcher with
scripts/cluster/rsh, exactly as docs/cluster.md tells users to run them, each
with MPIEXEC_TIMEOUT and a subprocess timeout.

Without root the tests skip with the reason; in CI (CI set) they fail instead.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
RSH = REPO / "scripts" / "cluster" / "rsh"
MPIEXEC = Path(sys.executable).with_name("mpiexec")
RATE = "1gbit"
HOSTS = 3
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str):
    if IN_CI:
        pytest.fail(f"cluster tests must run in CI but cannot: {reason}", pytrace=False)
    pytest.skip(reason)


def cannot_run() -> str | None:
    if sys.platform != "linux":
        return "the namespace cluster needs Linux"
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth links and tc need CAP_NET_ADMIN (run as root, e.g. in CI)"
    for tool in ("ip", "tc", "unshare", "nsenter"):
        if not shutil.which(tool):
            return f"'{tool}' not found (iproute2 / util-linux)"
    return None


def read_state(directory: Path) -> dict:
    state = {}
    for line in (directory / "state").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            state[key] = value
    return state


def ns_pids(ns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in proc.stdout.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def shm_files(pids) -> set[Path]:
    """The /dev/shm files the processes PIDS map (MPICH's shared memory)."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        found.update(Path(line.split(None, 5)[5].strip()) for line in maps.splitlines()
                     if len(line.split(None, 5)) == 6 and "/dev/shm/" in line)
    return {p for p in found if not p.name.endswith(" (deleted)")}


def remove_orphans(paths) -> None:
    """Unlink those of PATHS that no process maps any more: ranks killed by
    a signal never remove their MPICH shared-memory segments."""
    in_use = shm_files(int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
    for path in set(paths) - in_use:
        path.unlink(missing_ok=True)


@dataclass
class Cluster:
    dir: Path
    state: dict
    env: dict

    @property
    def n(self) -> int:
        return int(self.state["N"])

    @property
    def bridge_ip(self) -> str:
        return self.state["BRIDGE_IP"]

    def ns(self, i: int) -> str:
        return self.state[f"NS_{i}"]

    def ip(self, i: int) -> str:
        return self.state[f"IP_{i}"]

    def veth(self, i: int) -> str:
        return self.state[f"VETH_{i}"]

    def counters(self) -> dict[int, tuple[int, int]]:
        """Per host: (bytes out of the host, bytes into the host), read on the
        host end of its veth in the root namespace (rx there = sent by the host)."""
        out = {}
        for i in range(1, self.n + 1):
            stats = Path("/sys/class/net") / self.veth(i) / "statistics"
            out[i] = (int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text()))
        return out

    def all_pids(self) -> dict[int, list[int]]:
        return {i: ns_pids(self.ns(i)) for i in range(1, self.n + 1)}

    def script(self, *args, timeout=60, **kw):
        return subprocess.run(["bash", str(CLUSTER_SH), *map(str, args)], env=self.env,
                              capture_output=True, text=True, timeout=timeout, **kw)

    def mpiexec_cmd(self, hosts: int, ppn: int, args, timeout: int = 60) -> list[str]:
        hostlist = ",".join(f"h{i}" for i in range(1, hosts + 1))
        return [str(MPIEXEC), "-launcher", "rsh", "-launcher-exec", str(RSH),
                "-localhost", self.bridge_ip, "-hosts", hostlist,
                "-n", str(hosts * ppn), "-ppn", str(ppn), *map(str, args)]

    def mpiexec(self, hosts: int, ppn: int, args, timeout: int = 60, cwd=None):
        """Run ARGS on `hosts` hosts x `ppn` ranks; MPIEXEC_TIMEOUT ends a hung
        job, the subprocess timeout is the backstop."""
        env = dict(self.env, MPIEXEC_TIMEOUT=str(timeout))
        return subprocess.run(self.mpiexec_cmd(hosts, ppn, args), env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout + 30)


@contextlib.contextmanager
def namespace_cluster(hosts: int, rate: str, prefix: str):
    """Bring a cluster up with scripts/cluster.sh and always take it down, checking nothing is left."""
    reason = cannot_run()
    if reason:
        skip_or_fail(reason)
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPIMAT_", "UCX_", "PMI_"))}
    env["MPIMAT_CLUSTER_DIR"] = str(state_dir)

    def down():
        return subprocess.run(["bash", str(CLUSTER_SH), "down", "--dir", str(state_dir)],
                              env=env, capture_output=True, text=True, timeout=120)

    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(CLUSTER_SH), "up", str(hosts), "--bandwidth", rate,
                               "--dir", str(state_dir)],
                              env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        down()
        pytest.fail(f"cluster bring-up timed out: {exc}", pytrace=False)
    if proc.returncode == 3:
        down()
        shutil.rmtree(state_dir, ignore_errors=True)
        skip_or_fail(proc.stderr.strip())
    if proc.returncode != 0:
        down()
        pytest.fail(f"cluster bring-up failed (exit {proc.returncode}):\n{proc.stderr}",
                    pytrace=False)
    state = read_state(state_dir)
    made = [f"{i}" for i in range(1, hosts + 1)]
    print(f"\nnamespace cluster up in {time.monotonic() - started:.2f} s ({state_dir}, "
          f"{state['SUBNET']}, {rate})")
    c = Cluster(state_dir, state, env)
    try:
        yield c
    finally:
        result = down()
        left_ns = [c.ns(int(i)) for i in made if Path("/var/run/netns", c.ns(int(i))).exists()]
        left_links = [name for name in [state["BRIDGE"], *(c.veth(int(i)) for i in made)]
                      if Path("/sys/class/net", name).exists()]
        shutil.rmtree(state_dir, ignore_errors=True)
        assert result.returncode == 0, f"cluster teardown failed: {result.stderr}"
        assert not left_ns and not left_links, f"left after down: {left_ns} {left_links}"


@pytest.fixture(scope="session")
def cluster():
    with namespace_cluster(HOSTS, RATE, "mpimat-cluster.") as c:
        yield c


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs the namespace cluster (root)")


SLURM_SH = REPO / "scripts" / "slurm_cluster.sh"
SLURM_DIR = REPO / "slurm"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


@dataclass
class SlurmOnHosts:
    """slurmctld on the bridge plus one slurmd per host of `cluster`."""
    dir: Path
    env: dict
    cluster: Cluster

    def run(self, args, timeout=30, env=None, **kw):
        return subprocess.run(list(map(str, args)), env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=timeout, **kw)

    def sbatch(self, *args, cwd, env=None) -> str:
        proc = self.run(["sbatch", "--parsable", "--time=5", *args], cwd=cwd, env=env)
        assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
        return proc.stdout.strip().split(";")[0]

    def records(self, job_id: str) -> list[dict]:
        import re
        proc = self.run(["scontrol", "show", "job", "-o", job_id])
        assert proc.returncode == 0, proc.stderr
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines()
                if line.strip()]

    def wait(self, job_id: str, timeout: float = 90) -> list[dict]:
        """Poll every 0.5 s until the job (every array element) has ended."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.records(job_id)
            pending_array = any("[" in r.get("ArrayTaskId", "") or "-" in r.get("ArrayTaskId", "")
                                for r in records)
            if records and not pending_array and all(r.get("JobState") in TERMINAL
                                                     for r in records):
                return records
            if time.monotonic() > deadline:
                self.run(["scancel", job_id])
                pytest.fail(f"job {job_id} not done after {timeout} s: "
                            f"{[(r.get('JobId'), r.get('JobState')) for r in records]}\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.5)

    def log_tail(self, lines: int = 10) -> str:
        out = []
        for path in sorted((self.dir / "log").glob("slurm*.log")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)


@pytest.fixture(scope="module")
def slurm_hosts(cluster):
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        skip_or_fail("Slurm is not installed and there is no apt-get to install it")
    state = Path(tempfile.mkdtemp(prefix="mpimat-slurm-hosts-"))

    def down():
        return subprocess.run(["bash", str(SLURM_SH), "down", str(state)], capture_output=True,
                              text=True, timeout=120)

    try:
        proc = subprocess.run(["bash", str(SLURM_SH), "up", str(state), "--hosts", str(cluster.dir)],
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        down()
        pytest.fail(f"Slurm bring-up timed out: {exc}", pytrace=False)
    if proc.returncode != 0:
        down()
        if proc.returncode == 3:
            skip_or_fail(proc.stderr.strip())
        pytest.fail(f"Slurm bring-up on the hosts failed (exit {proc.returncode}):\n{proc.stderr}",
                    pytrace=False)
    env = {k: v for k, v in cluster.env.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMIX_", "OMPI_"))}
    # The jobs' ranks talk over the links (see scripts/cluster/env).
    env.update(SLURM_CONF=str(state / "slurm.conf"), MPIMAT_VENV=str(Path(sys.executable).parent.parent),
               UCX_TLS="tcp,self", MPIEXEC_TIMEOUT="120")
    pids = {p.name: p.read_text().strip() for p in (state / "pids").iterdir()}
    try:
        yield SlurmOnHosts(state, env, cluster)
    finally:
        result = down()
        alive = [f"{name} ({pid})" for name, pid in pids.items()
                 if Path(f"/proc/{pid}").exists() and cmdline(int(pid))]
        if result.returncode == 0 and not alive:
            shutil.rmtree(state, ignore_errors=True)
        assert result.returncode == 0, f"Slurm teardown failed: {result.stderr}"
        assert not alive, f"daemons still running after teardown: {alive}"
