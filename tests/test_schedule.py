"""Cycle assignment: the fast first-fit gives exactly the cycles of the plain one.

`schedule_reads` finds each read's cycle from bit masks over cycle numbers instead of
scanning its tile's cycles; its result is part of the program text, so it must equal,
read for read and in order, the straightforward greedy first-fit kept here as the
reference (`reference_schedule_reads`, the code it replaced)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from xbarc.ir.schedule import ScheduledRead, assign_cycles, cycle_clash, drive_key, schedule_reads
from xbarc.ir.tile import Block, Cycle, IndexTable, Indices, Read, Segment, Span, own_input


def reference_schedule_reads(reads: Sequence[ScheduledRead]) -> tuple[Cycle, ...]:
    """A read joins the first cycle that does not use its tile or whose use of it admits
    the read, checked cycle by cycle (quadratic in the reads per tile)."""
    cycles: list[list[Read]] = []
    on_tile: dict[int, dict[int, _Occupied]] = defaultdict(dict)
    drives: dict[tuple, int] = {}
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


TILE = 12  # small tiles, so that reads collide often


OFFSETS = st.integers(0, TILE - 1)
TABLES = st.sampled_from(["t0", "t1"])  # a few shared tables, so that tables repeat
BITS = st.integers(0, 1)


def draw_indices(draw, count: int, limit: int) -> Indices:
    """`count` input or weight rows out of `limit`: a span or an index table. (A plain
    function, not a strategy of its own, and the strategies built once: drawing the reads
    is most of the property test's time.)"""
    start = draw(st.integers(0, limit - count))
    if draw(st.booleans()):
        return Span(start, start + count)
    return IndexTable(draw(TABLES), count, start)


@st.composite
def scheduled_reads(draw) -> list[ScheduledRead]:
    """Blocks packed on a few tiles (shelves: equal row offsets, and columns reused from
    shelf to shelf, overlapping at random too), each read with its own input or with a
    segment from a small shared pool (as basis blocks are), in random order and with some
    blocks read several times."""
    count = draw(st.integers(1, 60))
    tiles = draw(st.integers(1, 3))
    shelves = draw(st.lists(OFFSETS, min_size=1, max_size=3))
    row_offsets = st.sampled_from(shelves) | OFFSETS
    vtiles = st.integers(0, tiles - 1)
    blocks = []
    for index in range(count):
        row_offset = draw(row_offsets)
        col_offset = draw(OFFSETS)
        height = draw(st.integers(1, TILE - row_offset))
        width = draw(st.integers(1, TILE - col_offset))
        rows = draw_indices(draw, height, 16)
        cols = draw_indices(draw, width, 16)
        vtile = draw(vtiles)
        group = draw(BITS)
        blocks.append(Block(index, "a", 0, group, rows, cols, "t", vtile, row_offset, col_offset))
    reads = []
    for block in draw(st.lists(st.sampled_from(blocks), min_size=1, max_size=80)):
        height = len(block.rows)
        shared = Segment(draw(BITS), Span(0, height))
        segment = draw(st.sampled_from([own_input(block), shared]))
        reads.append((block, segment))
    return reads


# One property test for both checks: drawing the reads is most of its time, so each
# draw is checked both ways (before: two tests, of 200 and 100 draws).
@settings(max_examples=200, deadline=None)
@given(scheduled_reads())
def test_schedule_reads_matches_the_plain_first_fit_and_its_cycles_are_compatible(reads):
    cycles = schedule_reads(reads)
    assert cycles == reference_schedule_reads(reads)
    by_index = {block.index: block for block, _ in reads}
    for cycle in cycles:
        by_tile: dict[int, list[ScheduledRead]] = defaultdict(list)
        for read in cycle.reads:
            block = by_index[read.block]
            by_tile[block.vtile].append((block, read.input))
        assert all(cycle_clash(tile_reads) is None for tile_reads in by_tile.values())


def test_a_shelf_takes_a_cycle_per_block_and_slices_side_by_side_share_one():
    """Blocks of one shelf drive overlapping rows with different inputs: one cycle each,
    except two slices of one piece (same rows, same offset), which share a cycle; the next
    shelf's blocks fill the first cycles whose columns are free."""
    shelf = [Block(i, "a", 0, 0, Span(8 * i, 8 * i + 4), Span(i, i + 1), "t", 0, 0, i)
             for i in range(3)]  # fmt: skip
    twin = Block(3, "a", 1, 0, Span(0, 4), Span(0, 1), "t", 0, 0, 3)  # slice 1 of b0
    below = Block(4, "a", 0, 0, Span(0, 4), Span(0, 1), "t", 0, 4, 0)  # column of b0
    cycles = assign_cycles([*shelf, twin, below])
    assert [cycle.blocks for cycle in cycles] == [(0, 3), (1, 4), (2,)]
