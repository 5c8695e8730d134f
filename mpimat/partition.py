"""Who computes which dot products.

C = A @ B has m*n entries, each one dot product of a row of A with a column
of B.  We hand them out as rectangular tiles on a pr x pc grid of ranks:
grid rank (r, c) computes C[rows(r), cols(c)], so it needs only the rows
rows(r) of A and the columns cols(c) of B.  Rows and columns are split as
evenly as possible (block sizes differ by at most one).

This module is pure arithmetic: no MPI, no numpy, so it is testable alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple


def block(n: int, parts: int, i: int, first_less: int = 0) -> Tuple[int, int]:
    """[start, stop) of block i when n items are split into `parts` blocks.

    The first n % parts blocks get one extra item (divmod split), so any two
    blocks differ by at most one item; blocks past n are empty.
    first_less: items taken from block 0 and split evenly over the others
    (block 0 keeps at least none; nothing moves when there is no other).
    """
    if parts < 1 or not 0 <= i < parts:
        raise ValueError(f"block {i} of {parts} does not exist")
    q, r = divmod(n, parts)
    if first_less > 0 and parts > 1:
        first = max(0, q + (1 if r else 0) - first_less)
        if i == 0:
            return 0, first
        start, stop = block(n - first, parts - 1, i - 1)
        return first + start, first + stop
    start = i * q + min(i, r)
    return start, start + q + (1 if i < r else 0)


def blocks(n: int, parts: int) -> List[Tuple[int, int]]:
    return [block(n, parts, i) for i in range(parts)]


@dataclass(frozen=True)
class Grid:
    """A rows x cols grid of ranks, numbered row-major (rank = r*cols + c)."""

    rows: int
    cols: int

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"grid {self.rows}x{self.cols} must have at least one row and column")

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def coords(self, rank: int) -> Tuple[int, int]:
        return divmod(rank, self.cols)

    def rank(self, r: int, c: int) -> int:
        return r * self.cols + c

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX*,]\s*(\d+)\s*$")


def parse_grid(text: str) -> Grid:
    """Parse 'PRxPC' (e.g. '2x3')."""
    match = _GRID_RE.match(text)
    if not match:
        raise ValueError(f"grid= must look like PRxPC (e.g. 2x3), not {text!r}")
    rows, cols = int(match.group(1)), int(match.group(2))
    if rows < 1 or cols < 1:
        raise ValueError(f"grid={text}: both dimensions must be at least 1")
    return Grid(rows, cols)


def words_moved(m: int, k: int, n: int, grid: Grid, itemsize_a: int = 8, itemsize_b: int = 8) -> int:
    """Bytes of A and B that must reach the ranks for this grid.

    Each of the pr*pc ranks receives its m/pr rows of A and n/pc columns of B,
    so in total A travels pc times and B pr times.  (C's m*n entries are
    gathered once whatever the grid, so they do not decide between grids.)
    """
    return itemsize_a * m * k * grid.cols + itemsize_b * k * n * grid.rows


def largest_tile(m: int, n: int, grid: Grid) -> int:
    """Entries of C in the biggest tile: the critical path of the compute."""
    return -(-m // grid.rows) * -(-n // grid.cols)


def factor_pairs(p: int) -> Iterator[Tuple[int, int]]:
    for rows in range(1, p + 1):
        if p % rows == 0:
            yield rows, p // rows


def choose_grid(m: int, k: int, n: int, ranks: int, itemsize_a: int = 8, itemsize_b: int = 8) -> Grid:
    """The pr x pc grid (pr*pc == ranks) that moves the fewest bytes.

    Square products get a near-square grid; a tall-skinny A (m >> n) gets
    many grid rows, a wide B many grid columns.  Ties go to the grid with
    the smaller largest tile (less idle time), then to more grid rows (row
    blocks of C are contiguous, so gathering them needs no strided copies).
    """
    if ranks < 1:
        raise ValueError("need at least one rank")
    best = min(
        (Grid(r, c) for r, c in factor_pairs(ranks)),
        key=lambda g: (words_moved(m, k, n, g, itemsize_a, itemsize_b), largest_tile(m, n, g), -g.rows),
    )
    return best


@dataclass(frozen=True)
class Tile:
    rank: int
    r: int
    c: int
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> Tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    @property
    def empty(self) -> bool:
        return self.row1 <= self.row0 or self.col1 <= self.col0


@dataclass(frozen=True)
class Layout:
    """The tiling of an m x n result (inner dimension k) over a grid.

    root_less: on a one-column grid, rows of grid rank 0's tile given to the
    other tiles instead (on a one-row grid, columns); ignored on other
    grids.  For a root with duties the other ranks lack (tiles.layout).
    """

    m: int
    k: int
    n: int
    grid: Grid
    root_less: int = 0

    def row_block(self, r: int) -> Tuple[int, int]:
        return block(self.m, self.grid.rows, r, self.root_less if self.grid.cols == 1 else 0)

    def col_block(self, c: int) -> Tuple[int, int]:
        return block(self.n, self.grid.cols, c, self.root_less if self.grid.rows == 1 else 0)

    def tile(self, rank: int) -> Tile:
        r, c = self.grid.coords(rank)
        row0, row1 = self.row_block(r)
        col0, col1 = self.col_block(c)
        return Tile(rank, r, c, row0, row1, col0, col1)

    def tiles(self) -> List[Tile]:
        return [self.tile(rank) for rank in range(self.grid.size)]


def grid_for(m: int, k: int, n: int, ranks: int, grid: Optional[Grid] = None,
             itemsize_a: int = 8, itemsize_b: int = 8) -> Grid:
    """The given grid, checked against `ranks`, or the cheapest one (choose_grid)."""
    if grid is None:
        return choose_grid(m, k, n, ranks, itemsize_a, itemsize_b)
    if grid.size != ranks:
        raise ValueError(f"grid={grid} has {grid.size} ranks but the job has {ranks}")
    return grid


def layout_for(m: int, k: int, n: int, ranks: int, grid: Optional[Grid] = None,
               itemsize_a: int = 8, itemsize_b: int = 8) -> Layout:
    """The layout for `ranks` ranks, with the given grid or the cheapest one."""
    return Layout(m, k, n, grid_for(m, k, n, ranks, grid, itemsize_a, itemsize_b))
