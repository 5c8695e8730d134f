"""`strategy="auto"`: the cost model chooses the strategy, grid and options.

The choice is made on the root only (ranks on other nodes may see a
different calibration file) and travels with the rest of the job in the
root's broadcast (api.py), so every rank runs the same strategy on the same
grid.  The model's grid and options replace any given ones: auto decides
them all.
"""

from __future__ import annotations

from . import calibration, model


def choose(m: int, k: int, n: int, ranks: int, dtype, distributed: bool = False) -> dict:
    """The model's pick for this product on `ranks` ranks, with its prediction (JSON-able).

    distributed: the matrices can stay in blocks from start to end (the
    command line's parallel I/O), so SUMMA competes; matmul(A, B) on the
    root chooses among the root-scatter strategies.
    """
    mach = calibration.load_or_defaults()
    best = model.recommend(m, k, n, ranks, mach, dtype, distributed=distributed)["best"]
    strategy, grid, options = model.choice(best)
    if strategy == "tiles":
        # The model costed this grid's messages (it has no root-alone
        # candidate): run what it predicted, however small.
        options = {**options, "alone_flops": 0}
    return {"strategy": strategy, "grid": [grid.rows, grid.cols] if grid else None,
            "options": options, "predicted_seconds": best.total,
            "predicted_phases": best.phases, "machine": mach.source}
