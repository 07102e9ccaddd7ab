"""Cycle compatibility: which reads one tile can do in the same array cycle, and the greedy
assignment of reads to cycles.

A tile does one read per cycle: one input vector on its rows, currents sensed on its
columns. So two reads of one tile share a cycle only if they sense different columns and
drive either different rows or the same rows with the same input segment at the same row
offset. This is the one statement of that rule: the verifier checks it, allocate builds
the schedule with it, and the tile pass counts cycles with it when it weighs layouts.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from functools import reduce
from operator import or_

from xbarc.ir.tile import Block, Cycle, Read, Segment, own_input

ScheduledRead = tuple[Block, Segment]


def drive_key(block: Block, segment: Segment) -> tuple:
    """What a read drives onto its tile's rows: reads with equal keys drive the same
    values on the same rows, and so may share them in one cycle."""
    return (segment, block.row_offset)


def assign_cycles(blocks: Sequence[Block]) -> tuple[Cycle, ...]:
    """Cycles that read every block once with its own input (`own_input`)."""
    return schedule_reads([(block, own_input(block)) for block in blocks])


def schedule_reads(reads: Sequence[ScheduledRead]) -> tuple[Cycle, ...]:
    """Greedy first-fit of reads into cycles, keeping read order within each cycle.

    A read joins the first cycle that does not use its tile, or that uses it only with
    reads it can share a cycle with. Each read drives as many input rows as its block has
    rows (as the verifier demands). Rather than trying its tile's cycles one by one, a
    read finds the first cycle it may join at once, from the cycles that use its tile's
    rows and columns (`_TileCycles`): a packed tile's reads cost about linear time, not
    quadratic."""
    cycles: list[list[Read]] = []
    tiles: dict[int, _TileCycles] = {}
    drives: dict[tuple, int] = {}  # drive key -> a small number standing for it
    for block, segment in reads:
        tile = tiles.get(block.vtile)
        if tile is None:
            tile = tiles[block.vtile] = _TileCycles()
        drive = drives.setdefault(drive_key(block, segment), len(drives))
        cols = (block.col_offset, block.col_offset + len(block.cols))
        rows = (block.row_offset, block.row_offset + len(block.rows))
        cycle = tile.join(cols, rows, drive)
        if cycle == len(cycles):
            cycles.append([])
        cycles[cycle].append(Read(block.index, segment))
    return tuple(Cycle(tuple(members)) for members in cycles)


class _TileCycles:
    """How the cycles use one tile, as bit masks over cycle numbers (bit c for cycle c):
    the cycles that sense each column, that drive each row, and in which each drive
    drives its rows.

    A read with drive d cannot join a cycle that senses one of its columns, nor one that
    drives one of its rows without driving d. Reads with drive d drive the same rows, so
    in a cycle that drives d no other drive drives them: the read's rows block just the
    cycles that drive them and not d. The cycles it may join are the zero bits of what
    blocks it, and first-fit takes the lowest (a new cycle when all are blocked)."""

    def __init__(self) -> None:
        self.cols = _CellRanges()
        self.rows = _CellRanges()
        self.drives: dict[int, int] = {}

    def join(self, cols: tuple[int, int], rows: tuple[int, int], drive: int) -> int:
        """The first cycle a read of columns and rows [start, stop) with `drive` may join,
        now marked as using them."""
        driving_this = self.drives.get(drive, 0)
        blocked = self.cols.using(*cols) | (self.rows.using(*rows) & ~driving_this)
        cycle = (~blocked & (blocked + 1)).bit_length() - 1
        bit = 1 << cycle
        self.cols.mark(*cols, bit)
        self.rows.mark(*rows, bit)
        self.drives[drive] = driving_this | bit
        return cycle


class _CellRanges:
    """The cycles that use each row (or each column) of a tile, kept per run of rows that
    every read so far uses alike: `starts` cut the rows into runs (the first from row 0,
    the last open-ended), `cycles[i]` the cycles that use run i. A tile's reads start and
    end at few rows (packed shelves share their first row), so a read spans few runs
    where it would span many rows."""

    def __init__(self) -> None:
        self.starts = [0]
        self.cycles = [0]

    def using(self, start: int, stop: int) -> int:
        """The cycles that use any of rows start..stop-1."""
        first = bisect_right(self.starts, start) - 1
        last = bisect_left(self.starts, stop)
        return reduce(or_, self.cycles[first:last], 0)

    def mark(self, start: int, stop: int, cycle_bit: int) -> None:
        """Rows start..stop-1 are used in the cycle of `cycle_bit`."""
        first, last = self.cut(start), self.cut(stop)
        cycles = self.cycles
        for run in range(first, last):
            cycles[run] |= cycle_bit

    def cut(self, row: int) -> int:
        """The run that starts at `row`, cut from the run holding it if need be."""
        run = bisect_right(self.starts, row) - 1
        if self.starts[run] == row:
            return run
        self.starts.insert(run + 1, row)
        self.cycles.insert(run + 1, self.cycles[run])
        return run + 1


def cycle_clash(tile_reads: Sequence[ScheduledRead]) -> tuple[Block, Block] | None:
    """Two reads of one tile that cannot be done in the same cycle, if any (their blocks).

    In O(k log k): sorted by start, a set of intervals overlaps somewhere only if two
    neighbours overlap. Columns must never overlap; rows may overlap only between reads
    with the same drive key, so reads with the same key count once."""
    by_cols = sorted((block for block, _ in tile_reads), key=lambda b: b.col_offset)
    for first, second in zip(by_cols, by_cols[1:], strict=False):
        if second.col_offset < first.col_offset + len(first.cols):
            return first, second
    one_per_drive = {drive_key(block, segment): block for block, segment in tile_reads}
    by_rows = sorted(one_per_drive.values(), key=lambda b: b.row_offset)
    for first, second in zip(by_rows, by_rows[1:], strict=False):
        if second.row_offset < first.row_offset + len(first.rows):
            return first, second
    return None
