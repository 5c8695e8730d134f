"""Run the mpimat job across several machines (Lightning and by hand).

- ``python -m mpimat.lightning [options] [--] <mpimat job args>``: the plain
  entry point, one per machine.  It reads ``MASTER_ADDR``, ``MASTER_PORT``,
  ``NODE_RANK`` and ``NUM_NODES`` (or ``WORLD_SIZE``), as Lightning's
  multi-machine Jobs set them, and joins the machines into one MPI world
  (see :mod:`mpimat.lightning.rendezvous`).
- ``MPIMatWork`` / ``MPIMatMultiNode`` / ``MPIMatJobFlow`` (in
  :mod:`mpimat.lightning.component`): the Lightning App component built on
  ``lightning_app.components.MultiNode``; needs ``pip install 'mpimat[lightning]'``.

Importing this package never imports Lightning: the component names are
loaded on first use.
"""

from .rendezvous import JoinTimeout, RendezvousError, run_node

_COMPONENT_NAMES = ("MPIMatWork", "MPIMatMultiNode", "MPIMatJobFlow")

__all__ = ["run_node", "RendezvousError", "JoinTimeout", *_COMPONENT_NAMES]


def __getattr__(name):
    if name in _COMPONENT_NAMES:
        from . import component

        return getattr(component, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
