"""Where each block of a distributed matrix lives, and SUMMA's panels.

A distributed m x n matrix is cut into pr x pc blocks on a Cartesian grid of
ranks (numbered row-major, rank = r*pc + c): grid rank (r, c) holds rows
block(m, pr, r) and columns block(n, pc, c), the balanced divmod split of
partition.block (sizes differ by at most one; with more ranks than rows the
extra blocks are empty).

Pure arithmetic: no MPI, no numpy.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..partition import Grid, Tile, block, factor_pairs, parse_grid

# SUMMA's panels: at most this many bytes per panel of either operand (a
# BLAS call of this size runs at full speed; wider only costs memory and
# overlap), and the cost model (model.summa_panel_width) never picks fewer
# than MIN_PANEL_WIDTH columns of A / rows of B when k and memory allow it.
PANEL_BYTES = 32 << 20
MIN_PANEL_WIDTH = 128


# The part of a matrix one rank holds: rows [row0, row1), columns [col0, col1)
# of grid rank (r, c) -- the same rectangle as a tile of the root-scatter strategies.
Block = Tile


@dataclass(frozen=True)
class BlockLayout:
    """An m x n matrix in 2-D blocks on a grid."""

    shape: Tuple[int, int]
    grid: Grid

    def __post_init__(self):
        m, n = self.shape
        if m < 0 or n < 0:
            raise ValueError(f"shape {self.shape} has a negative dimension")

    def row_block(self, r: int) -> Tuple[int, int]:
        return block(self.shape[0], self.grid.rows, r)

    def col_block(self, c: int) -> Tuple[int, int]:
        return block(self.shape[1], self.grid.cols, c)

    def block_of(self, rank: int) -> Block:
        if not 0 <= rank < self.grid.size:
            raise ValueError(f"rank {rank} is not on the {self.grid} grid")
        r, c = self.grid.coords(rank)
        row0, row1 = self.row_block(r)
        col0, col1 = self.col_block(c)
        return Block(rank, r, c, row0, row1, col0, col1)

    def blocks(self) -> List[Block]:
        return [self.block_of(rank) for rank in range(self.grid.size)]

    def owner(self, i: int, j: int) -> int:
        """The rank that holds entry (i, j)."""
        m, n = self.shape
        if not (0 <= i < m and 0 <= j < n):
            raise IndexError(f"({i}, {j}) is outside the {m}x{n} matrix")
        return self.grid.rank(owner_index(m, self.grid.rows, i), owner_index(n, self.grid.cols, j))


def owner_index(n: int, parts: int, i: int) -> int:
    """Which of the `parts` blocks of block(n, parts, .) holds item i."""
    q, r = divmod(n, parts)
    # The first r blocks have q + 1 items, the rest q.
    if i < r * (q + 1):
        return i // (q + 1)
    return r + (i - r * (q + 1)) // q


def intersect(a: Tuple[int, int], b: Tuple[int, int]) -> Tuple[int, int]:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if hi > lo else (lo, lo)


def as_grid(grid, ranks: int, name: str = "grid") -> Grid:
    """A Grid from a Grid, 'PRxPC' or (pr, pc); it must have `ranks` ranks."""
    if isinstance(grid, str):
        try:
            grid = parse_grid(grid)
        except ValueError:
            raise ValueError(f"{name}= must look like PRxPC (e.g. 2x3), not {grid!r}") from None
    elif isinstance(grid, (tuple, list)) and len(grid) == 2:
        grid = Grid(int(grid[0]), int(grid[1]))
    elif not isinstance(grid, Grid):
        raise ValueError(f"{name}= must be a partition.Grid, 'PRxPC' or (pr, pc), not {grid!r}")
    if grid.size != ranks:
        raise ValueError(f"{name}={grid} has {grid.size} ranks but the communicator has {ranks}")
    return grid


def summa_cost(m: int, k: int, n: int, grid: Grid, itemsize_a: int = 8, itemsize_b: int = 8) -> int:
    """Bytes SUMMA moves in total on this grid.

    A's panels travel along grid rows (each of A's m*k entries reaches the
    pc - 1 other ranks of its grid row), B's along grid columns (pr - 1).
    C never moves.
    """
    return itemsize_a * m * k * (grid.cols - 1) + itemsize_b * k * n * (grid.rows - 1)


def largest_block(m: int, n: int, grid: Grid) -> int:
    return -(-m // grid.rows) * -(-n // grid.cols)


def choose_summa_grid(m: int, k: int, n: int, ranks: int, itemsize_a: int = 8,
                      itemsize_b: int = 8) -> Grid:
    """The pr x pc grid that moves the fewest bytes in SUMMA (model-free).

    Square products get a near-square grid, a tall-skinny A many grid rows,
    a wide B many grid columns.  Ties: the smaller largest block of C (less
    idle time), then more grid rows.
    """
    if ranks < 1:
        raise ValueError("need at least one rank")
    return min(
        (Grid(r, c) for r, c in factor_pairs(ranks)),
        key=lambda g: (summa_cost(m, k, n, g, itemsize_a, itemsize_b), largest_block(m, n, g), -g.rows),
    )


def default_grid(ranks: int) -> Grid:
    """The grid for a matrix whose partner is not known yet: near-square, rows >= columns.

    It is the grid choose_summa_grid picks for square products, so square
    operands loaded or generated on their own need no redistribution.
    """
    return choose_summa_grid(1, 1, 1, ranks)


@dataclass(frozen=True)
class Panel:
    """k-range [k0, k1) of one SUMMA step: A's columns and B's rows.

    a_col: the grid column whose ranks hold these columns of A;
    b_row: the grid row whose ranks hold these rows of B.
    """

    k0: int
    k1: int
    a_col: int
    b_row: int

    @property
    def width(self) -> int:
        return self.k1 - self.k0


def panel_width(k: int, rows_a: int, cols_b: int, itemsize_a: int, itemsize_b: int,
                panel_bytes: int = PANEL_BYTES) -> int:
    """The widest panel whose buffer of either operand holds at most `panel_bytes`
    (but at least MIN_PANEL_WIDTH, or k).  SUMMA's default width is the cost
    model's choice below this cap (model.summa_panel_width)."""
    widest = max(rows_a * itemsize_a, cols_b * itemsize_b, 1)
    return max(1, min(k, max(MIN_PANEL_WIDTH, panel_bytes // widest)))


def _cuts(k: int, grid: Grid) -> List[int]:
    """Where A's column blocks or B's row blocks start (and 0, k): no panel spans one."""
    return sorted({0, k} | {block(k, grid.cols, c)[0] for c in range(grid.cols)}
                  | {block(k, grid.rows, r)[0] for r in range(grid.rows)})


def segments(k: int, grid: Grid) -> List[int]:
    """Lengths of the stretches of k that panels() cuts into pieces (no panel spans two)."""
    cuts = _cuts(k, grid)
    return [hi - lo for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def panel_count(k: int, grid: Grid, width: int) -> Tuple[int, int]:
    """(how many panels, the widest) panels(k, grid, width) makes, without listing them."""
    count = widest = 0
    for length in segments(k, grid):
        pieces = -(-length // width)
        count += pieces
        widest = max(widest, -(-length // pieces))
    return count, widest


def panels(k: int, grid: Grid, width: Optional[int] = None) -> List[Panel]:
    """SUMMA's panels: never spanning two owners, each at most `width` wide.

    A's columns are split over the pc grid columns, B's rows over the pr
    grid rows; a panel is an intersection of one of each (so a single rank
    of every grid row holds its part of A, and a single rank of every grid
    column its part of B), cut into near-equal pieces of at most `width`.
    """
    if width is not None and width < 1:
        raise ValueError(f"panel= must be at least 1, got {width}")
    cuts = _cuts(k, grid)
    a_starts = [block(k, grid.cols, c)[0] for c in range(grid.cols)]
    b_starts = [block(k, grid.rows, r)[0] for r in range(grid.rows)]
    out: List[Panel] = []
    for lo, hi in zip(cuts, cuts[1:]):
        if hi <= lo:
            continue
        # The owner is the last block starting at or before lo (empty blocks
        # start where the next one does, so bisect skips them).
        a_col = bisect.bisect_right(a_starts, lo) - 1
        b_row = bisect.bisect_right(b_starts, lo) - 1
        pieces = 1 if width is None else -(-(hi - lo) // width)
        for i in range(pieces):
            p0, p1 = block(hi - lo, pieces, i)
            out.append(Panel(lo + p0, lo + p1, a_col, b_row))
    return out
