"""How a tiles product is cut into panels: pure arithmetic, the same on every rank.

One input block of each tile is streamed in panels (row panels of A's row
block or column panels of B's column block) so a rank starts computing as
soon as it holds the other block and the first panel, and each result panel
goes back at once.  The last panel of a non-root tile is cut across into
halves, quarters, ... (the tail) that the root may take over (takeover.py).
No MPI here: movement.py sends what this module describes.
"""

from __future__ import annotations

from typing import List, Tuple

from .partition import Layout, Tile, blocks

# Products below this many flops are computed by the root alone: sending the
# operands and the result and the Python around each message cost more than
# the product itself (a solver's small calls; see scripts/bench_calls.py).
ALONE_FLOPS = 1 << 23
PANEL_FLOPS = 1 << 32  # about 4 GFLOP a panel: ~0.1 s of one core
MAX_PANELS = 4  # each BLAS call repacks its B block: 16 panels cost ~4% at n=4096, 8 ~2%
TAIL_PIECES = 6  # the last panel of a tile in halves, quarters, ...: at most this many pieces
TAIL_MIN_FLOPS = 1 << 29  # ... each worth at least ~0.01 s of one core
# MPI copies strided runs shorter than this element by element (movement.short_runs);
# tail pieces keep their runs in C at least this long.
SHORT_RUN_BYTES = 256


class PanelPlan:
    """How a tiles product is cut into panels, the same on every rank.

    One input block is streamed in panels (row panels of A's row block, or
    column panels of B's column block): a rank starts computing once it
    holds the other block and the first panel, instead of after everything
    has arrived, and each result panel goes back as soon as it is computed.
    We stream the larger block if its panels are contiguous in the root's
    array, else the other one: a contiguous message is pulled by the
    receiver while the root computes, a strided one (a datatype) needs the
    root to pack it.  The decision and the panel count are global (from the
    largest tile), so every member of a grid row or column cuts a shared
    block identically.
    """

    def __init__(self, layout: Layout, itemsize_a: int, itemsize_b: int, order_a: str = "C",
                 order_b: str = "C", panel_flops: int = PANEL_FLOPS, shared: bool = False,
                 tail_flops: int = TAIL_MIN_FLOPS, itemsize_c: int = 8):
        grid, k = layout.grid, layout.k
        rows, cols = -(-layout.m // grid.rows), -(-layout.n // grid.cols)
        rows_contiguous = order_a == "C"   # A[r0:r1, :] of a C-order A
        cols_contiguous = order_b == "F"   # B[:, c0:c1] of a Fortran-order B
        b_larger = cols * itemsize_b > rows * itemsize_a   # B's block k x cols vs A's rows x k
        if b_larger:
            self.axis = "cols" if cols_contiguous or not rows_contiguous else "rows"
        else:
            self.axis = "rows" if rows_contiguous or not cols_contiguous else "cols"
        self.count = max(1, min(MAX_PANELS, (2 * rows * cols * max(k, 1)) // max(1, panel_flops)))
        self.shared, self.tail_flops = shared, tail_flops
        # Column pieces land in C as runs of their width: keep those runs long
        # enough for MPI to copy them as blocks (see short_runs).
        self.tail_min_cols = -(-SHORT_RUN_BYTES // itemsize_c)
        self.layout = layout
        # Worked out once: a plan is kept with its job between calls (tiles.run).
        self.tiles = layout.tiles()
        self.cuts = {}

    def parts(self, extent: int) -> List[Tuple[int, int]]:
        """`extent` lines of the streamed block in `count` even panels (one message each)."""
        return blocks(extent, max(1, min(self.count, extent)))

    def a_parts(self, r: int) -> List[Tuple[int, int]]:
        """Row ranges (within row block r) in which A's block travels."""
        row0, row1 = self.layout.row_block(r)
        return self.parts(row1 - row0) if self.axis == "rows" else [(0, row1 - row0)]

    def b_parts(self, c: int) -> List[Tuple[int, int]]:
        """Column ranges (within column block c) in which B's block travels."""
        col0, col1 = self.layout.col_block(c)
        return self.parts(col1 - col0) if self.axis == "cols" else [(0, col1 - col0)]

    def tile_panels(self, tile: Tile, whole_tail: bool = False) -> List[Tuple[int, int, int, int]]:
        """The result panels of a tile, as [row0, row1) x [col0, col1) of C.

        One panel per streamed part, except that (when `shared`) the last
        one is cut across, into halves, quarters, ... (the tail): the
        pieces a late rank may hand over to the root (takeover.py).  Cut
        across, each piece repacks only the small streamed part in BLAS,
        and together they pack the large block once, as one call would.
        whole_tail: no cut (the root's own tile: it sends no messages and
        is asked for nothing, so fewer, larger BLAS calls are better).
        The list is shared between callers: read it, never change it.
        """
        key = (tile, whole_tail)
        found = self.cuts.get(key)
        if found is None:
            found = self.cuts[key] = self.cut(tile, whole_tail)
        return found

    def cut(self, tile: Tile, whole_tail: bool) -> List[Tuple[int, int, int, int]]:
        if tile.empty:
            return []
        if self.axis == "rows":
            panels = [(tile.row0 + p0, tile.row0 + p1, tile.col0, tile.col1) for p0, p1 in self.a_parts(tile.r)]
        else:
            panels = [(tile.row0, tile.row1, tile.col0 + q0, tile.col0 + q1) for q0, q1 in self.b_parts(tile.c)]
        if not self.shared or whole_tail:
            return panels
        r0, r1, c0, c1 = panels.pop()
        if self.axis == "rows":
            cut = self.tail(c1 - c0, 2 * self.layout.k * (r1 - r0), self.tail_min_cols)
            panels += [(r0, r1, c0 + q0, c0 + q1) for q0, q1 in cut]
        else:
            cut = self.tail(r1 - r0, 2 * self.layout.k * (c1 - c0), 1)
            panels += [(r0 + p0, r0 + p1, c0, c1) for p0, p1 in cut]
        return panels

    def tail(self, extent: int, line_flops: int, min_lines: int) -> List[Tuple[int, int]]:
        """[0, extent) in halves, quarters, ..., each piece worth tail_flops or more
        and at least min_lines long."""
        pieces, p0 = [], 0
        for _ in range(TAIL_PIECES - 1):
            half = (extent - p0 + 1) // 2
            rest = extent - p0 - half
            if rest < min_lines or rest * line_flops < self.tail_flops:
                break
            pieces.append((p0, p0 + half))
            p0 += half
        return pieces + [(p0, extent)]

    def tail_start(self, tile: Tile) -> int:
        """Index in tile_panels(tile) of the first panel the root may take over."""
        regular = len(self.tile_panels(tile, whole_tail=True))
        return regular - 1 if self.shared else regular
