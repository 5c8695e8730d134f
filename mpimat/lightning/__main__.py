"""``python -m mpimat.lightning [options] [--] <mpimat job args>``

Run once per machine.  Node 0 starts the MPI job and hands every other node
its part over HTTP on MASTER_PORT; the job is ``python -m mpimat <job args>``
with ``--procs-per-node`` ranks on every machine.  Settings come from the
options or, as Lightning's multi-machine Jobs set them, from the environment:

    MASTER_ADDR  address of node 0 (as the other machines reach it)
    MASTER_PORT  free TCP port on node 0 for the rendezvous
    NODE_RANK    this machine's index, 0..NUM_NODES-1
    NUM_NODES    number of machines (WORLD_SIZE is used if NUM_NODES is unset)

By hand on one computer, in N shells:
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 NUM_NODES=2 NODE_RANK=0 \\
        python -m mpimat.lightning -P 2 -- --size 1024
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 NUM_NODES=2 NODE_RANK=1 \\
        python -m mpimat.lightning -P 2

Exit status: node 0's is the job's (see ``python -m mpimat --help``); the
other nodes exit with their proxy's status; 1 if the nodes could not be
joined (e.g. a node never came), 2 for bad settings.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, Optional

from .rendezvous import DEFAULT_JOIN_TIMEOUT, RendezvousError, log, run_node


def _env_int(names, default=None):
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise SystemExit(f"mpimat.lightning: error: {name}={value!r} is not a whole number")
    return default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mpimat.lightning", allow_abbrev=False,
        description="Join this machine to a multi-machine mpimat job. Options after `--` "
                    "(or not recognised here) go to `python -m mpimat`.")
    p.add_argument("-P", "--procs-per-node", type=int,
                   default=_env_int(["MPIMAT_PROCS_PER_NODE"], 1),
                   help="MPI ranks on each machine (default 1, or $MPIMAT_PROCS_PER_NODE)")
    p.add_argument("--main-address", default=os.environ.get("MASTER_ADDR"),
                   help="node 0's address (default $MASTER_ADDR)")
    p.add_argument("--main-port", type=int, default=_env_int(["MASTER_PORT"]),
                   help="rendezvous port on node 0 (default $MASTER_PORT)")
    p.add_argument("--node-rank", type=int, default=_env_int(["NODE_RANK"]),
                   help="this machine's index (default $NODE_RANK)")
    p.add_argument("--num-nodes", type=int, default=_env_int(["NUM_NODES", "WORLD_SIZE"]),
                   help="number of machines (default $NUM_NODES, else $WORLD_SIZE)")
    p.add_argument("--join-timeout", type=float,
                   default=float(os.environ.get("MPIMAT_JOIN_TIMEOUT") or DEFAULT_JOIN_TIMEOUT),
                   help="seconds to wait for all machines to join (default %(default)g)")
    p.add_argument("--job-timeout", type=float, default=None,
                   help="stop the job after this many seconds (default: no limit)")
    p.add_argument("--control-port", type=int, default=_env_int(["MPIMAT_CONTROL_PORT"]),
                   help="pin mpiexec's control port on node 0 (default: any free port)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        ours, job_args = argv[:cut], argv[cut + 1:]
        parser = build_parser()
        args = parser.parse_args(ours)
    else:
        parser = build_parser()
        args, job_args = parser.parse_known_args(argv)
    missing = [flag for flag, value in (("--main-address/MASTER_ADDR", args.main_address),
                                        ("--main-port/MASTER_PORT", args.main_port),
                                        ("--node-rank/NODE_RANK", args.node_rank),
                                        ("--num-nodes/NUM_NODES", args.num_nodes))
               if value is None]
    if missing:
        parser.error("not set: " + ", ".join(missing))
    if args.num_nodes < 1 or not 0 <= args.node_rank < args.num_nodes:
        parser.error(f"node rank {args.node_rank} is not in 0..{args.num_nodes - 1}")
    if args.procs_per_node < 1:
        parser.error("--procs-per-node must be at least 1")

    # SIGTERM (a stopped Lightning Job, `kill`) unwinds like Ctrl-C, so the
    # process groups started below are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run_node(job_args, node_rank=args.node_rank, num_nodes=args.num_nodes,
                        main_address=args.main_address, main_port=args.main_port,
                        procs_per_node=args.procs_per_node, join_timeout=args.join_timeout,
                        job_timeout=args.job_timeout, control_port=args.control_port)
    except RendezvousError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
