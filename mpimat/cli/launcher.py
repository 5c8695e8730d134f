"""Is this job what the user launched?  Detecting a foreign launcher.

A launcher of another MPI (Open MPI's mpirun, srun with the wrong plugin)
starts N independent singletons of mpi4py's MPI instead of one job of N
ranks: each would compute the whole product alone.  Only the command line
cares (a library caller passes its own communicator).
"""

from __future__ import annotations

import os
import sys

from mpi4py import MPI


def launched_size() -> int:
    """How many processes the launcher says it started (0 if it says nothing).

    Hydra/PMI (MPICH), Open MPI's mpirun and srun each export their own
    variable; a process that sees one of these > 1 but a COMM_WORLD of size 1
    was started by a launcher whose MPI is not the one mpi4py loaded.
    """
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS_WORLD"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    if "SLURM_PROCID" in os.environ:
        value = os.environ.get("SLURM_STEP_NUM_TASKS", "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 0


def foreign_launcher_message(comm: MPI.Comm) -> str:
    """A one-line complaint if this job is N singletons, else ''."""
    claimed = launched_size()
    if comm.size == 1 and claimed > 1:
        # Open MPI puts a NUL byte in its version string.
        library = MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()
        plugin = "pmix" if "Open MPI" in library else "pmi2"
        return (
            f"the launcher started {claimed} processes but MPI sees a world of 1: "
            f"mpiexec/srun belongs to a different MPI than mpi4py's ({library}); use the launcher "
            f"of the same MPI ({os.path.join(os.path.dirname(sys.executable), 'mpiexec')}, "
            f"or srun --mpi={plugin})"
        )
    return ""
