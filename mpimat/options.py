"""Per-strategy options of `matmul`: typed, documented, validated on the root.

`matmul(A, B, strategy="dot", tasks_per_message=64)` passes its extra
keyword arguments here.  The root checks them (an unknown name is a
TypeError, a bad value a ValueError, on every rank) and broadcasts them with
the rest of the job, so every rank runs with the root's values: ranks can
never disagree about panels or batches and hang.  Pure: no MPI.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict, Optional

import numpy as np

from .errors import InputError
from .panels import ALONE_FLOPS, PANEL_FLOPS, TAIL_MIN_FLOPS


@dataclass(frozen=True)
class TilesOptions:
    """--strategy tiles.

    panel_flops: flops per result panel; a tile is computed (and its larger
        input block streamed) in about tile_flops / panel_flops panels, at
        most panels.MAX_PANELS (fewer, larger BLAS calls are faster; more
        panels start compute earlier).
    tail_flops: smallest piece of a tile's last panel that the root may take
        over from a late rank (takeover.py).
    alone_flops: a product of fewer flops (2 m k n) is computed by the root
        alone, with no messages: moving it would cost more than computing
        it; 0 distributes every product.
    check_panels: every rank checks each result panel it computes
        (Freivalds, verify.PanelFreivalds) right after the product, while
        the panel's inputs are at hand: about one more read of its blocks,
        in parallel on every rank; a wrong panel raises
        errors.PanelCheckError on every rank, naming the rank and the panel.
    """

    panel_flops: int = PANEL_FLOPS
    tail_flops: int = TAIL_MIN_FLOPS
    alone_flops: int = field(default=ALONE_FLOPS, metadata={"least": 0})
    check_panels: bool = False


@dataclass(frozen=True)
class DotOptions:
    """--strategy dot.

    tasks_per_message: dot products (tasks) per message (K).
    keep_blocks: workers keep rows and columns they already hold (an LRU
        cache whose slots the root mirrors), so a batch carries only what
        the worker lacks.
    window: batches in flight per worker (the pipeline's depth).
    keep_budget_bytes: with keep_blocks, each worker's cache holds at most
        this many bytes of rows (and as many of columns), but always room for
        one batch's rows and columns.
    """

    tasks_per_message: int = 1
    keep_blocks: bool = False
    window: int = 4
    keep_budget_bytes: int = 128 << 20


OPTIONS = {"tiles": TilesOptions, "dot": DotOptions}


def check(strategy: str, given: Dict[str, object]) -> Dict[str, object]:
    """The options of `strategy`, defaults filled in, as a JSON-able dict.

    Raises InputError (a TypeError kind) for a name the strategy does not
    take, and InputError for a value of the wrong type or range.
    """
    cls = OPTIONS.get(strategy)
    known = {f.name: f for f in fields(cls)} if cls else {}
    unknown = sorted(set(given) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "none"
        raise InputError(f"matmul() got unexpected option(s) {', '.join(map(repr, unknown))} for "
                         f"strategy={strategy!r} (it takes: {takes})", kind="TypeError")
    out = {}
    for name, f in known.items():
        value = given.get(name, f.default)
        if f.type in (bool, "bool"):
            if not isinstance(value, bool):
                raise InputError(f"{name}= must be True or False, got {value!r}", kind="TypeError")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InputError(f"{name}= must be a whole number, got {value!r}", kind="TypeError")
            value = int(value)
            least = f.metadata.get("least", 1)
            if value < least:
                raise InputError(f"{name}= must be at least {least}, got {value}")
        out[name] = value
    return out


def build(strategy: str, values: Optional[Dict[str, object]]):
    """The options object of `strategy` from check()'s dict (None for a strategy without options)."""
    cls = OPTIONS.get(strategy)
    return cls(**(values or {})) if cls else None
