"""The Lightning App component: the mpimat job on ``num_nodes`` machines.

Needs ``pip install 'mpimat[lightning]'`` (lightning-app 2.3.2, the last
release of the discontinued Lightning App framework, which needs numpy<2
and uvicorn<0.36).

    from lightning_app import CloudCompute, LightningApp
    from mpimat.lightning.component import MPIMatJobFlow

    app = LightningApp(MPIMatJobFlow(
        num_nodes=2, procs_per_node=4, cloud_compute=CloudCompute("cpu-medium"),
        job_args=["--size", "8192", "--report", "run.json"]))

``MPIMatWork.run(main_address, main_port, num_nodes, node_rank)`` (called by
Lightning's ``MultiNode``) joins the machines into one MPI world with
:mod:`mpimat.lightning.rendezvous`; node 0 serves the rendezvous on its own
work port.  A failed job, rank or node raises in the work, which fails the
app; node 0's exit status is the job's.

Locally, ``MultiNode`` runs a single node unless it believes it runs in the
cloud (``lightning_app.components.multi_node.base.is_running_in_cloud``).
"""

from __future__ import annotations

import signal
from typing import Any, List, Optional, Sequence

try:
    from lightning_app import CloudCompute, LightningFlow, LightningWork
    from lightning_app.components import MultiNode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mpimat.lightning.component needs the Lightning App framework: "
        "pip install 'mpimat[lightning]' (lightning-app==2.3.2, numpy<2, uvicorn<0.36)"
    ) from exc

from .rendezvous import DEFAULT_JOIN_TIMEOUT, run_node


def _last_line(text: Optional[str]) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1].strip() if lines else ""


class MPIMatJobFailed(RuntimeError):
    """The mpimat job (or this node's part of it) ended with a non-zero status."""


def one_sigterm_at_a_time() -> None:
    """Make a second SIGTERM wait for the work's first SIGTERM handler instead of re-entering it.

    lightning-app 2.3.2's work runner (utilities/proxies.py) handles SIGTERM
    inside `with _state_observer_lock` (not reentrant), and a stopped app's
    works may get SIGTERM twice; the second, arriving inside the first
    handler, deadlocks the work, and the app never exits (about 1 run in 8
    of tests/lightning/test_lightning_app.py; py-spy showed the handler
    nested in itself).  The framework is discontinued, so the work guards
    the handler the runner installed for this call.
    """
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler) or getattr(handler, "one_at_a_time", False):
        return
    handling = []

    def once(signum, frame):
        if handling:  # the first is still running, and it ends the process
            return
        handling.append(signum)
        handler(signum, frame)

    once.one_at_a_time = True
    signal.signal(signal.SIGTERM, once)


class MPIMatWork(LightningWork):
    """One machine of the job: ``procs_per_node`` ranks of ``python -m mpimat <job_args>``."""

    def __init__(self, job_args: Sequence[str] = (), procs_per_node: int = 1,
                 join_timeout: float = DEFAULT_JOIN_TIMEOUT, job_timeout: Optional[float] = None,
                 control_port: Optional[int] = None, **work_kwargs: Any) -> None:
        super().__init__(**work_kwargs)
        self.job_args: List[str] = [str(a) for a in job_args]
        self.procs_per_node = int(procs_per_node)
        self.join_timeout = float(join_timeout)
        self.job_timeout = None if job_timeout is None else float(job_timeout)
        self.control_port = control_port
        self.exit_code: Optional[int] = None  # this node's exit status, once known

    def run(self, main_address: str, main_port: int, num_nodes: int, node_rank: int) -> None:
        one_sigterm_at_a_time()
        rc = run_node(self.job_args, node_rank=node_rank, num_nodes=num_nodes,
                      main_address=main_address, main_port=main_port,
                      procs_per_node=self.procs_per_node, join_timeout=self.join_timeout,
                      job_timeout=self.job_timeout, control_port=self.control_port)
        self.exit_code = rc
        if rc != 0:
            what = "the mpimat job" if node_rank == 0 else f"node {node_rank} of the mpimat job"
            raise MPIMatJobFailed(f"{what} failed with exit status {rc}")


class MPIMatMultiNode(MultiNode):
    """``MultiNode`` of ``MPIMatWork``: ``num_nodes`` machines of ``cloud_compute``."""

    def __init__(self, num_nodes: int, cloud_compute: Optional[CloudCompute] = None,
                 **work_kwargs: Any) -> None:
        super().__init__(MPIMatWork, num_nodes, cloud_compute or CloudCompute("cpu"),
                         **work_kwargs)

    @property
    def finished(self) -> bool:
        """Whether every node's part ended with status 0."""
        return all(w.exit_code == 0 for w in self.ws)


class MPIMatJobFlow(LightningFlow):
    """Root flow: run the job once on all machines, then stop the app;
    fail the app as soon as any machine's work has failed."""

    def __init__(self, num_nodes: int, cloud_compute: Optional[CloudCompute] = None,
                 **work_kwargs: Any) -> None:
        super().__init__()
        self.job = MPIMatMultiNode(num_nodes, cloud_compute, **work_kwargs)

    def run(self) -> None:
        self.job.run()
        failed = [w for w in self.job.ws if w.has_failed]
        if failed:
            # Fail now rather than when Lightning next polls its error queue
            # (every 30 s by default).
            self.fail("mpimat job failed: " + "; ".join(
                f"{w.name}: {_last_line(w.status.message) or 'failed'}" for w in failed))
        if self.job.finished:
            self.stop(f"mpimat job finished on {len(self.job.ws)} node(s)")
