"""Turn N machines into one MPI world with MPICH Hydra's manual launcher.

Pure standard library plus subprocess: no Lightning, no mpi4py import.

Node 0 (the *head*) runs

    mpiexec -launcher manual -localhost <main_address> \\
            -hosts mpimat-node0:P,mpimat-node1:P,... -n N*P <program>

which prints one ``HYDRA_LAUNCH: .../hydra_pmi_proxy ... --proxy-id i`` line
per node and then waits for the N proxies to connect to its control port.
The head runs proxy 0 itself and hands line i to node i over HTTP on
``main_port`` (``GET /launch/<i>``); every other node (a *member*) polls for
its line and runs that proxy.  Hydra then starts P ranks under every proxy
and forwards their output and exit status to mpiexec on node 0, so node 0's
exit status is the job's.

HTTP, because Lightning's local runtime sends ``GET /`` to every work's port
as a readiness check, so whatever listens on ``main_port`` must answer HTTP.

Facts this relies on (MPICH 5.0.2 wheel):
- host names in ``-hosts`` are never resolved, but identical names merge
  into one proxy, hence the distinct ``mpimat-node<i>`` names;
- without ``-localhost`` the control port is advertised under the local
  host name, so the head passes ``main_address``;
- ``MPIEXEC_PORT_RANGE=P:P`` pins the control port (optional here);
- a proxy started before mpiexec listens fails at once, so the head hands
  out the lines only once mpiexec's control socket is listening;
- ``mpiexec -launcher manual`` ignores SIGTERM while it waits, so every
  child runs in its own process group and is killed as a group; a small
  reaper process kills those groups too if this process dies abruptly.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

LAUNCH_PREFIX = "HYDRA_LAUNCH:"
LAUNCH_END = "HYDRA_LAUNCH_END"
DEFAULT_JOIN_TIMEOUT = 600.0
HOST_PREFIX = "mpimat-node"
# How long the head waits for mpiexec to print its launch lines and listen.
STARTUP_TIMEOUT = 60.0
# After one proxy exits with an error, how long mpiexec gets to end the job
# by itself before the head kills it.
FAILURE_GRACE = 10.0


class RendezvousError(RuntimeError):
    """The nodes could not be joined into one MPI job (message says why)."""


class JoinTimeout(RendezvousError):
    """A node never joined (or the head never answered) in time."""


def log(message: str) -> None:
    print(f"mpimat.lightning: {message}", file=sys.stderr, flush=True)


def tool_path(name: str) -> Path:
    """An MPICH tool installed next to the running interpreter."""
    return Path(sys.executable).with_name(name)


def job_program(job_args: Sequence[str] = ()) -> List[str]:
    """The command every rank runs: ``python -m mpimat <job args>``."""
    return [sys.executable, "-m", "mpimat", *job_args]


def mpiexec_command(program: Sequence[str], num_nodes: int, procs_per_node: int,
                    main_address: str) -> List[str]:
    hosts = ",".join(f"{HOST_PREFIX}{i}:{procs_per_node}" for i in range(num_nodes))
    return [str(tool_path("mpiexec")), "-launcher", "manual", "-localhost", main_address,
            "-hosts", hosts, "-n", str(num_nodes * procs_per_node), *program]


def parse_launch_line(line: str) -> List[str]:
    return shlex.split(line[len(LAUNCH_PREFIX):])


def option_value(argv: Sequence[str], option: str) -> Optional[str]:
    for i, word in enumerate(argv[:-1]):
        if word == option:
            return argv[i + 1]
    return None


def localize_proxy(argv: Sequence[str]) -> List[str]:
    """Run the node's own hydra_pmi_proxy (the head's path may differ here);
    refuse to run anything else."""
    if not argv or Path(argv[0]).name != "hydra_pmi_proxy":
        raise RendezvousError(f"refusing to run {list(argv)[:1]}: not a hydra_pmi_proxy command")
    local = tool_path("hydra_pmi_proxy")
    return [str(local) if local.exists() else argv[0], *argv[1:]]


# --------------------------------------------------------------------------
# process groups and the reaper
#
# Hydra's proxy puts every rank in a process group of its own, so killing a
# proxy's group does not reach its ranks: the ranks are found as the proxy's
# descendants (Linux /proc) and killed by pid, checking the start time so a
# reused pid is never hit.

def _process_table() -> Dict[int, Tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc."""
    table: Dict[int, Tuple[int, str]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()  # fields 3.. of proc(5)
        table[int(name)] = (int(fields[1]), fields[19])
    return table


def descendants(roots: Iterable[int]) -> Dict[int, str]:
    """pid -> start time of the roots and all their descendants."""
    table = _process_table()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: Dict[int, str] = {}
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found[pid] = table[pid][1]
        todo.extend(children.get(pid, ()))
    return found


def kill_listed(procs: Dict[int, str], sig: int = signal.SIGKILL) -> None:
    """Send sig to the listed processes that still have the same start time."""
    table = _process_table()
    for pid, started in procs.items():
        if table.get(pid, (0, None))[1] == started:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _reaper_main() -> None:
    """Runs as a separate process (``python rendezvous.py --reaper``).

    Reads "+pid" (watch pid's group and descendants), "-pid" (forget it) and
    "done" on stdin.  At end of input without "done" (its parent died, even
    by SIGKILL), kills every watched group and every process seen under them.
    """
    import select

    roots: Dict[int, str] = {}
    seen: Dict[int, str] = {}
    stdin = sys.stdin
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.5)
        if ready:
            line = stdin.readline()
            if not line:
                break
            word = line.strip()
            if word == "done":
                return
            if word[:1] in "+-" and word[1:].isdigit():
                pid = int(word[1:])
                if word[0] == "+":
                    roots[pid] = descendants([pid]).get(pid, "")
                else:
                    roots.pop(pid, None)
        seen = {**{p: t for p, t in seen.items() if p not in roots}, **descendants(roots)}
    for _ in range(3):
        for pgid in roots:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        seen.update(descendants(roots))
        kill_listed(seen)
        time.sleep(0.2)


class ProcessGroups:
    """Children started in process groups of their own, killed with their
    descendants.

    A reaper process is told each child's pid; if this process dies without
    saying "done" (even by SIGKILL), the reaper kills what is left.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.procs: List[subprocess.Popen] = []
        self._reaper = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--reaper"], stdin=subprocess.PIPE,
            text=True, start_new_session=True)

    def _tell(self, word: str) -> None:
        try:
            self._reaper.stdin.write(word + "\n")
            self._reaper.stdin.flush()
        except (OSError, ValueError):
            pass

    def start(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
            self.procs.append(proc)
            self._tell(f"+{proc.pid}")
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """Kill proc, its process group and its descendants; reap proc."""
        tree = descendants([proc.pid]) if proc.poll() is None else {}
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=2.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            tree.update(descendants([proc.pid]))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        kill_listed(tree)
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
        self._tell(f"-{proc.pid}")

    def wait_or_kill(self, proc: subprocess.Popen, timeout: float) -> Optional[int]:
        """proc's exit status, or None if it had to be killed after timeout."""
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            return None

    def close(self) -> None:
        """Kill every child still running, then dismiss the reaper."""
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
            else:
                try:  # whatever is left in its group
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        self._tell("done")
        try:
            self._reaper.stdin.close()
        except OSError:
            pass
        try:
            self._reaper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._reaper.kill()
            self._reaper.wait()


# --------------------------------------------------------------------------
# the head's HTTP server

class _Board:
    """What the head publishes and what it heard back from the members."""

    def __init__(self, num_nodes: int) -> None:
        self.num_nodes = num_nodes
        self.lines: Optional[Dict[int, List[str]]] = None
        self.aborted: Optional[str] = None
        self.fetched: Dict[int, float] = {}
        self.exited: Dict[int, int] = {}
        self.job_rc: Optional[int] = None
        self.changed = threading.Condition()

    def note(self, table: Dict[int, object], node: int, value) -> None:
        with self.changed:
            table.setdefault(node, value)
            self.changed.notify_all()


def _handler(board: _Board):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def node(self, prefix: str) -> Optional[int]:
            if not self.path.startswith(prefix):
                return None
            try:
                node = int(self.path[len(prefix):])
            except ValueError:
                return None
            return node if 0 < node < board.num_nodes else None

        def do_GET(self) -> None:
            if self.path == "/":
                self.reply(200, {"service": "mpimat rendezvous", "nodes": board.num_nodes})
                return
            node = self.node("/launch/")
            if node is None:
                self.reply(404, {"error": f"no such path {self.path}"})
            elif board.aborted is not None:
                self.reply(410, {"error": board.aborted})
            elif board.lines is None:
                self.reply(503, {"error": "not ready"})
            else:
                board.note(board.fetched, node, time.monotonic())
                self.reply(200, {"argv": board.lines[node]})

        def do_POST(self) -> None:
            node = self.node("/exited/")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b"{}"
            try:
                code = int(json.loads(body)["returncode"])
            except (ValueError, KeyError, TypeError):
                node = None
            if node is None:
                self.reply(400, {"error": "bad request"})
                return
            board.note(board.exited, node, code)
            # Answer with the job's status once node 0 knows it.
            with board.changed:
                board.changed.wait_for(
                    lambda: board.job_rc is not None or board.aborted is not None, timeout=15)
                job_rc, aborted = board.job_rc, board.aborted
            self.reply(200, {"job_returncode": job_rc, "aborted": aborted})

    return Handler


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


# --------------------------------------------------------------------------
# head

def _listening(pid: int, port: int) -> bool:
    """Whether process pid has a TCP socket listening on port (Linux /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for row in fh:
                    cols = row.split()
                    if (cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port
                            and cols[9] in inodes):
                        return True
        except OSError:
            continue
    return False


def _pump_output(stream, on_launch: Callable[[Optional[str]], None]) -> None:
    """Forward mpiexec's stdout, handing the HYDRA_LAUNCH lines to on_launch."""
    in_launch = True
    for line in stream:
        if in_launch and line.startswith(LAUNCH_PREFIX):
            on_launch(line.rstrip("\n"))
            continue
        if in_launch and line.strip() == LAUNCH_END:
            in_launch = False
            on_launch(None)
            continue
        sys.stdout.write(line)
        sys.stdout.flush()
    if in_launch:
        on_launch(None)


def run_head(program: Sequence[str], *, num_nodes: int, procs_per_node: int,
             main_address: str, main_port: int, bind: str = "0.0.0.0",
             control_port: Optional[int] = None,
             join_timeout: float = DEFAULT_JOIN_TIMEOUT,
             job_timeout: Optional[float] = None,
             env: Optional[Dict[str, str]] = None) -> int:
    """Run node 0: mpiexec, proxy 0 and the HTTP server.  Returns mpiexec's
    exit status (the job's).  Raises RendezvousError/JoinTimeout when the
    nodes cannot be joined; nothing started here is left running."""
    if num_nodes < 1 or procs_per_node < 1:
        raise ValueError("num_nodes and procs_per_node must be at least 1")
    board = _Board(num_nodes)
    try:
        server = _Server((bind, main_port), _handler(board))
    except OSError as exc:
        raise RendezvousError(f"node 0 cannot listen on {bind}:{main_port}: {exc}") from None
    server_thread = threading.Thread(target=server.serve_forever, name="mpimat-rendezvous",
                                     daemon=True)
    server_thread.start()
    groups = ProcessGroups()
    joined_all = False
    try:
        child_env = dict(os.environ if env is None else env)
        if control_port:
            child_env["MPIEXEC_PORT_RANGE"] = f"{control_port}:{control_port}"
        cmd = mpiexec_command(program, num_nodes, procs_per_node, main_address)
        log(f"node 0/{num_nodes}: starting {shlex.join(cmd)}")
        mpiexec = groups.start(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=child_env, text=True, errors="replace", bufsize=1)

        launch: List[str] = []
        launch_done = threading.Event()

        def on_launch(line: Optional[str]) -> None:
            if line is None:
                launch_done.set()
            else:
                launch.append(line)

        pump = threading.Thread(target=_pump_output, args=(mpiexec.stdout, on_launch),
                                name="mpimat-mpiexec-output", daemon=True)
        pump.start()
        if not launch_done.wait(STARTUP_TIMEOUT) or len(launch) != num_nodes:
            mpiexec_rc = mpiexec.poll()
            raise RendezvousError(
                f"mpiexec printed {len(launch)} of {num_nodes} launch lines"
                + (f" and exited with status {mpiexec_rc}" if mpiexec_rc is not None else
                   f" within {STARTUP_TIMEOUT:.0f} s"))
        lines: Dict[int, List[str]] = {}
        for text in launch:
            argv = parse_launch_line(text)
            lines[int(option_value(argv, "--proxy-id") or -1)] = argv
        if sorted(lines) != list(range(num_nodes)):
            raise RendezvousError(f"unexpected launch lines from mpiexec: {launch}")
        control = option_value(lines[0], "--control-port") or ""
        try:
            port = int(control.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            raise RendezvousError(f"no control port in {launch[0]!r}") from None

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _listening(mpiexec.pid, port):
            if mpiexec.poll() is not None:
                raise RendezvousError(f"mpiexec exited with status {mpiexec.returncode} "
                                      "before listening on its control port")
            if time.monotonic() > deadline:
                raise RendezvousError(f"mpiexec did not listen on control port {port} "
                                      f"within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.05)

        proxy0 = groups.start(localize_proxy(lines[0]), stdin=subprocess.DEVNULL,
                              env=child_env)
        with board.changed:
            board.lines = lines
            board.changed.notify_all()
        if num_nodes > 1:
            log(f"node 0/{num_nodes}: control port {control}; waiting for nodes "
                f"1..{num_nodes - 1} at http://{main_address}:{main_port}/launch/<node>")

        start = time.monotonic()
        failed_at: Optional[float] = None
        failure = ""
        while True:
            rc = mpiexec.poll()
            if rc is not None:
                break
            now = time.monotonic()
            with board.changed:
                missing = [i for i in range(1, num_nodes) if i not in board.fetched]
                bad = {i: c for i, c in board.exited.items() if c != 0}
            if proxy0.poll() not in (None, 0):
                bad[0] = proxy0.returncode
            if not missing:
                joined_all = True
            elif now - start > join_timeout:
                raise JoinTimeout(
                    f"node(s) {', '.join(map(str, missing))} of {num_nodes} never joined within "
                    f"{join_timeout:g} s (no request to http://{main_address}:{main_port}"
                    f"/launch/<node>); stopped the job")
            if bad and failed_at is None:
                failed_at = now
                failure = ", ".join(f"node {i} exited with status {c}" for i, c in sorted(bad.items()))
            if failed_at is not None and now - failed_at > FAILURE_GRACE:
                raise RendezvousError(f"{failure}; mpiexec did not end the job, stopped it")
            if job_timeout is not None and now - start > job_timeout:
                raise RendezvousError(f"the job did not finish within {job_timeout:g} s; stopped it")
            with board.changed:
                board.changed.wait(0.1)
        groups.wait_or_kill(proxy0, FAILURE_GRACE)
        pump.join(timeout=5)
        with board.changed:
            board.job_rc = rc
            if not joined_all:
                board.aborted = f"the job on node 0 ended with status {rc}"
            board.changed.notify_all()
            # Tell the members that ran a proxy how the job ended.
            board.changed.wait_for(lambda: set(board.exited) >= set(board.fetched), timeout=5)
        return rc
    except BaseException as exc:
        with board.changed:
            board.aborted = str(exc) or type(exc).__name__
        raise
    finally:
        groups.close()
        if board.aborted is not None and num_nodes > 1:
            # Let members that still poll hear the news (HTTP 410), and those
            # that ran a proxy learn that the job was stopped.
            linger_end = time.monotonic() + 1.5
            with board.changed:
                board.changed.wait_for(lambda: set(board.exited) >= set(board.fetched),
                                       timeout=FAILURE_GRACE)
            time.sleep(max(0.0, linger_end - time.monotonic()))
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------
# member

def _get_json(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return exc.code, body


def run_member(node_rank: int, *, main_address: str, main_port: int,
               join_timeout: float = DEFAULT_JOIN_TIMEOUT,
               job_timeout: Optional[float] = None, poll: float = 0.3) -> int:
    """Run node i > 0: fetch its proxy command from the head, run it, and
    return the proxy's exit status."""
    base = f"http://{main_address}:{main_port}"
    url = f"{base}/launch/{node_rank}"
    deadline = time.monotonic() + join_timeout
    last_error = "no answer"
    argv = None
    while argv is None:
        try:
            code, body = _get_json(url)
        except (OSError, ValueError) as exc:  # not up yet (refused, reset, ...)
            code, body = None, {}
            last_error = str(getattr(exc, "reason", exc))
        if code == 200 and isinstance(body.get("argv"), list):
            argv = [str(a) for a in body["argv"]]
            break
        if code == 410:
            raise RendezvousError(f"node {node_rank}: node 0 gave up: {body.get('error', '')}")
        if code is not None and code != 503:
            raise RendezvousError(f"node {node_rank}: {url} answered HTTP {code}: {body}")
        if code == 503:
            last_error = "node 0 not ready yet"
        if time.monotonic() > deadline:
            raise JoinTimeout(f"node {node_rank}: got no launch command from node 0 at {url} "
                              f"within {join_timeout:g} s (last: {last_error})")
        time.sleep(poll)

    groups = ProcessGroups()
    try:
        log(f"node {node_rank}: joined node 0 at {base}; starting proxy")
        proxy = groups.start(localize_proxy(argv), stdin=subprocess.DEVNULL)
        rc = groups.wait_or_kill(proxy, job_timeout if job_timeout is not None else 1e9)
        if rc is None:
            raise RendezvousError(f"node {node_rank}: the job did not finish within "
                                  f"{job_timeout:g} s; stopped it")
    finally:
        groups.close()
    # Report to node 0 and learn the job's status (best effort: node 0 may
    # be gone already); a member's proxy exits 0 even when a rank failed.
    job_rc = aborted = None
    try:
        req = urllib.request.Request(f"{base}/exited/{node_rank}",
                                     data=json.dumps({"returncode": rc}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            answer = json.loads(resp.read() or b"{}")
            job_rc, aborted = answer.get("job_returncode"), answer.get("aborted")
    except (OSError, ValueError, AttributeError):
        pass
    if rc == 0 and job_rc is None and aborted:
        log(f"node {node_rank}: node 0 stopped the job: {aborted}")
        return 1
    if rc == 0 and isinstance(job_rc, int) and job_rc != 0:
        log(f"node {node_rank}: the job failed on node 0 with status {job_rc}")
        return job_rc
    return rc


def run_node(job_args: Sequence[str] = (), *, node_rank: int, num_nodes: int,
             main_address: str, main_port: int, procs_per_node: int = 1,
             program: Optional[Sequence[str]] = None, **options) -> int:
    """Run this node's part of the job; returns its exit status.

    Node 0's status is the job's.  ``program`` replaces the default
    ``python -m mpimat <job_args>``."""
    if not 0 <= node_rank < num_nodes:
        raise ValueError(f"node rank {node_rank} is not in 0..{num_nodes - 1}")
    if node_rank == 0:
        return run_head(list(program) if program else job_program(job_args),
                        num_nodes=num_nodes, procs_per_node=procs_per_node,
                        main_address=main_address, main_port=main_port, **options)
    options.pop("control_port", None)
    options.pop("bind", None)
    options.pop("env", None)
    return run_member(node_rank, main_address=main_address, main_port=main_port, **options)


if __name__ == "__main__" and sys.argv[1:] == ["--reaper"]:
    _reaper_main()
