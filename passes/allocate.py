"""allocate: place virtual tiles on the chip's physical tiles, in phases when they do not fit.

    Blocks on virtual tiles  ->  Phases(writes v -> t, runs of layers in cycles)

Layers are visited in graph order; each layer's virtual tiles are written onto free
physical tiles of their type. When the chip is full, the phase closes and the next one
rewrites tiles, first those whose vtiles no later run reads, so a layer larger than the
chip is split over phases that accumulate its partial sums. A vtile still on the chip
from an earlier phase (a packed tile that several layers share, or one a layer's run was
split across) is read where it is, without a second write. Phases run batch-major: each
write serves the whole batch. A model that fits the budget gets exactly one phase.

Within a layer's run, each block is read once with its own input, and the reads are
grouped greedily into cycles (`assign_cycles` in xbarc/ir/schedule.py): reads of different
tiles always share a cycle; reads of one tile only with different columns, and the same
rows only with the same input.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import ClassVar

from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware
from xbarc.ir.schedule import assign_cycles, schedule_reads
from xbarc.ir.tile import (
    BasisCombine,
    Block,
    ChipState,
    CrossbarLayer,
    LayerRun,
    Phase,
    Program,
    Segment,
    Span,
    TileWrite,
)


@dataclass(frozen=True, slots=True)
class Allocate:
    """Assign virtual tiles to physical tiles over as few phases as the budget allows."""

    name: ClassVar[str] = "allocate"
    tiles: int | None = None  # chip option: the tiles of each tile type (default: the chip's)

    def target(self, hardware: Hardware) -> Hardware:
        """The chip with the tile budget this pass names."""
        return with_tile_budget(hardware, self.tiles)

    def apply(self, program: Program) -> Program:
        return replace(program, phases=tuple(allocate_phases(program)))


def with_tile_budget(hardware: Hardware, tiles: int | None) -> Hardware:
    """The chip with `tiles` physical tiles of each of its tile types (a chip of several
    types, `compile --tile-size 32x32,64x64 --tiles N`, has N of each)."""
    if tiles is None:
        return hardware
    if tiles < 1:
        raise XbarcError(f"the tile budget must be at least 1, got {tiles}")
    types = tuple(replace(tile_type, count=tiles) for tile_type in hardware.tile_types)
    return replace(hardware, tile_types=types)


def layer_blocks(program: Program) -> dict[str, list[Block]]:
    """The blocks each layer reads, in block order: its own array's, or its basis'."""
    by_array: dict[str, list[Block]] = defaultdict(list)
    for block in program.blocks:
        by_array[block.array].append(block)
    return {
        layer: [block for array in arrays for block in by_array.get(array, [])]
        for layer, arrays in program.arrays_read_by().items()
    }


class _PhaseBuilder:
    """Collects the writes and runs of phases while tiles are handed out. A tile keeps
    what was last written to it, so a vtile still on the chip from an earlier phase is
    read where it is, without a write; a new phase hands out empty tiles and tiles whose
    vtile no run still to come reads first, lowest id first."""

    def __init__(self, hardware: Hardware, unread: Counter[int]):
        self.hardware = hardware
        self.unread = unread  # vtile -> reads of its blocks not yet in a run
        self.chip = ChipState()
        self.phases: list[Phase] = []
        self.open_phase()

    def open_phase(self) -> None:
        self.writes: list[TileWrite] = []
        self.runs: list[LayerRun] = []
        self.resident: dict[int, int] = {}  # vtile -> physical tile, in this phase
        self.taken: set[int] = set()  # tiles this phase has used
        self.free = {}
        for tile_type in self.hardware.tile_types:
            ids = sorted(self.hardware.tile_ids(tile_type.name), key=self.hand_out_order)
            self.free[tile_type.name] = ids[::-1]  # pop() hands out the first

    def hand_out_order(self, tile: int) -> tuple[bool, int]:
        vtile = self.chip.vtile_on.get(tile)
        return vtile is not None and self.unread[vtile] > 0, tile

    def close_phase(self) -> None:
        if self.writes or self.runs:
            self.phases.append(Phase(len(self.phases), tuple(self.writes), tuple(self.runs)))
        self.open_phase()

    def place(self, block: Block) -> bool:
        """Make the block's vtile resident; False when its tile type is full."""
        if block.vtile in self.resident:
            return True
        kept = self.chip.tile_of.get(block.vtile)
        if kept is not None:  # on the chip since an earlier phase: no write
            self.taken.add(kept)
            self.resident[block.vtile] = kept
            return True
        free = self.free[block.tile_type]
        while free and free[-1] in self.taken:
            free.pop()
        if not free:
            return False
        tile = free.pop()
        self.taken.add(tile)
        self.chip.write(block.vtile, tile)
        self.resident[block.vtile] = tile
        self.writes.append(TileWrite(block.vtile, tile))
        return True


def allocate_phases(program: Program) -> list[Phase]:
    reads = layer_blocks(program)
    unread = Counter(block.vtile for blocks in reads.values() for block in blocks)
    builder = _PhaseBuilder(program.hardware, unread)
    combines = {combine.layer: combine for combine in program.combines}
    for layer in program.layers():
        pending = reads[layer.name]
        combine = combines.get(layer.name)
        if combine is not None:
            basis = program.array(combine.basis)
            copies = resident_copies(builder, pending, basis.copies, layer.name)
            builder.runs.append(LayerRun(layer.name, basis_cycles(layer, combine, copies)))
            unread.subtract(block.vtile for block in pending)
            continue
        while pending:
            placed = 0
            while placed < len(pending) and builder.place(pending[placed]):
                placed += 1
            if placed == 0:
                builder.close_phase()
                continue
            cycles = assign_cycles(pending[:placed])
            builder.runs.append(LayerRun(layer.name, cycles))
            unread.subtract(block.vtile for block in pending[:placed])
            pending = pending[placed:]
            if pending:
                builder.close_phase()
    builder.close_phase()
    return builder.phases


def resident_copies(
    builder: _PhaseBuilder, blocks: list[Block], copies: int, layer: str
) -> list[list[Block]]:
    """The copies of a basis (its blocks, copy after copy) placed on the chip for a
    combined layer: all that fit in the open phase, in a new phase if none does."""
    per_copy = len(blocks) // copies
    split = [blocks[c * per_copy : (c + 1) * per_copy] for c in range(copies)]
    for fresh in (False, True):
        if fresh:
            builder.close_phase()
        placed = []
        for copy in split:
            if not all(builder.place(block) for block in copy):
                break
            placed.append(copy)
        if placed:
            return placed
    raise XbarcError(
        f"@{layer}: not even one copy of its basis fits the tile budget",
        hint="give more tiles (--tiles) or a smaller basis (basis{k=...})",
    )


def basis_cycles(layer: CrossbarLayer, combine: BasisCombine, copies: list[list[Block]]):
    """Cycles that read, for every group g and input segment s of `layer`, all blocks of
    one basis copy against that segment; segments are dealt to the copies in turn, so R
    copies read R segments per cycle. The last segment drives only the layer's rows."""
    length = combine.segment_rows
    reads: list[tuple[Block, Segment]] = []
    item = 0
    for group in range(layer.groups):
        for start in range(0, layer.rows, length):
            rows = min(length, layer.rows - start)
            for block in copies[item % len(copies)]:
                first = block.rows.start  # type: ignore[union-attr]  # basis rows: a Span
                if first < rows:
                    stop = start + first + min(len(block.rows), rows - first)
                    reads.append((block, Segment(group, Span(start + first, stop))))
            item += 1
    return schedule_reads(reads)
