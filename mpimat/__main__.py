import warnings

# mpi4py warns at import when the environment says "another MPI's launcher";
# the CLI reports that itself, in one line (control.foreign_launcher_message).
warnings.filterwarnings("ignore", message="suspicious MPI execution environment")

from .cli import console_main  # noqa: E402

console_main()
