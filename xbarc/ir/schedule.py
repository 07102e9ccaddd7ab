"""Cycle compatibility: which reads one tile can do in the same array cycle, and the greedy
assignment of reads to cycles.

A tile does one read per cycle: one input vector on its rows, currents sensed on its
columns. So two reads of one tile share a cycle only if they sense different columns and
drive either different rows or the same rows with the same input segment at the same row
offset. This is the one statement of that rule: the verifier checks it, allocate builds
the schedule with it, and the tile pass counts cycles with it when it weighs layouts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

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
    reads it can share a cycle with, so only the cycles its own tile is in are checked,
    each against the tile's occupied rows and columns as bit masks."""
    cycles: list[list[Read]] = []
    on_tile: dict[int, dict[int, _Occupied]] = defaultdict(dict)  # vtile -> cycle -> use
    drives: dict[tuple, int] = {}  # drive key -> a small number standing for it
    for block, segment in reads:
        used = on_tile[block.vtile]
        cols = ((1 << len(block.cols)) - 1) << block.col_offset
        rows = ((1 << len(block.rows)) - 1) << block.row_offset
        key = drives.setdefault(drive_key(block, segment), len(drives))
        cycle = 0
        while cycle in used and not used[cycle].admits(cols, rows, key):
            cycle += 1
        if cycle == len(cycles):
            cycles.append([])
        cycles[cycle].append(Read(block.index, segment))
        used.setdefault(cycle, _Occupied()).add(cols, rows, key)
    return tuple(Cycle(tuple(members)) for members in cycles)


class _Occupied:
    """The columns and rows of one tile that one cycle reads, as bit masks: columns never
    shared, rows shared only by reads with the same drive key (so within a cycle the rows
    of different inputs are disjoint)."""

    def __init__(self) -> None:
        self.cols = 0
        self.rows = 0
        self.rows_by_drive: dict[int, int] = {}

    def admits(self, cols: int, rows: int, key: int) -> bool:
        if self.cols & cols:
            return False
        other_drives = self.rows & ~self.rows_by_drive.get(key, 0)
        return not other_drives & rows

    def add(self, cols: int, rows: int, key: int) -> None:
        self.cols |= cols
        self.rows |= rows
        self.rows_by_drive[key] = self.rows_by_drive.get(key, 0) | rows


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
