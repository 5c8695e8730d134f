"""Run under mpiexec on the cluster: rank 0 prints one line per rank,
"<rank> <MPI processor name> <hostname> <UCX_TLS>"."""
import os
import socket

from mpi4py import MPI

comm = MPI.COMM_WORLD
rows = comm.gather((comm.rank, MPI.Get_processor_name(), socket.gethostname(),
                    os.environ.get("UCX_TLS", "")))
if comm.rank == 0:
    for row in rows:
        print(*row)
