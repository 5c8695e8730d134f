"""Example Lightning App: the mpimat job across several Lightning machines.

    pip install 'mpimat[lightning]'
    # in the cloud (lightning-app 2.3.2, the last release of the discontinued App framework):
    lightning_app run app examples/lightning_app.py --cloud \
        --env MPIMAT_NUM_NODES=2 --env MPIMAT_PROCS_PER_NODE=4 \
        --env MPIMAT_JOB_ARGS="--size 8192 --report run.json"
    # on this computer, all "machines" as local processes:
    MPIMAT_SIMULATE_NODES=1 lightning_app run app examples/lightning_app.py --open-ui false

Settings (environment variables, read when the app file is loaded):
    MPIMAT_NUM_NODES        machines (default 2)
    MPIMAT_PROCS_PER_NODE   MPI ranks per machine (default 1)
    MPIMAT_MACHINE          Lightning CloudCompute name (default "cpu")
    MPIMAT_JOB_ARGS         arguments of `python -m mpimat` (default "--size 2048");
                            paths (--a/--b/--out/--report) are on machine 0
    MPIMAT_JOIN_TIMEOUT     seconds for all machines to join (default 600)
    MPIMAT_SIMULATE_NODES   1: run all machines locally (Lightning's MultiNode
                            otherwise runs just one node when not in the cloud)
"""

import os
import shlex

from lightning_app import CloudCompute, LightningApp

if os.environ.get("MPIMAT_SIMULATE_NODES") == "1":
    # MultiNode collapses num_nodes to 1 unless it believes it runs in the cloud.
    import lightning_app.components.multi_node.base as _multi_node_base

    _multi_node_base.is_running_in_cloud = lambda: True

from mpimat.lightning.component import MPIMatJobFlow  # noqa: E402

app = LightningApp(
    MPIMatJobFlow(
        num_nodes=int(os.environ.get("MPIMAT_NUM_NODES", "2")),
        cloud_compute=CloudCompute(os.environ.get("MPIMAT_MACHINE", "cpu")),
        procs_per_node=int(os.environ.get("MPIMAT_PROCS_PER_NODE", "1")),
        job_args=shlex.split(os.environ.get("MPIMAT_JOB_ARGS", "--size 2048")),
        join_timeout=float(os.environ.get("MPIMAT_JOIN_TIMEOUT", "600")),
    )
)
