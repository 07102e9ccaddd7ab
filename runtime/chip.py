"""Programming the chip: the cells of every physical tile as the schedule's writes leave them.

    tiles = ProgrammedTiles(program, quantized=True)
    for phase in program.phases:
        tiles.write(phase.writes)      # erase each written tile, set its blocks' cells
        tiles.cells(block)             # a block's cells where its virtual tile lives now

A write erases a physical tile and sets the cells of every block on the written virtual
tile from its slice of the array (`BlockCells`): in `quant` the slice's bits of the integer
level, in `ideal` the same bits plus the rest of the real weight. A noisy profile programs
the tile through the device models (`devices.Chip`: conductances, programming noise, stuck
cells, drift), drawn again at each write. Tiles keep what was last written to them, so a
later phase may read cells an earlier one left (`ChipState`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np

from xbarc import progress
from xbarc.diagnostics import XbarcError
from xbarc.ir.cells import slice_cells
from xbarc.ir.tile import Array, Block, ChipState, Const, Indices, Program, Span, TileWrite
from xbarc.limits import MAX_PROGRAMMED_CELLS
from xbarc.runtime.devices import Chip


class ProgrammedTiles:
    """The physical tiles of one chip as the phases' writes program them: cells [rows,
    cols] per tile written so far, float32 (float64 in `ideal`, so that the effective
    weights read back round once, to the float weights themselves)."""

    def __init__(
        self,
        program: Program,
        quantized: bool,
        device: Chip | None = None,
        is_noisy: Callable[[str], bool] = lambda layer: True,
    ):
        """`device`: the device models that program the tiles (None: cells take their
        targets exactly); `is_noisy(layer)`: whether a layer's blocks get them (the others
        keep their targets)."""
        self.hardware = program.hardware
        check_programmed_cells(program)
        self.device = device
        self.is_noisy = is_noisy
        self.blocks_on: dict[int, list[Block]] = defaultdict(list)  # vtile -> its blocks
        for block in program.blocks:
            self.blocks_on[block.vtile].append(block)
        # array -> the layer whose blocks it holds (a basis array: its own name)
        self.layer_of = {array.name: array.layer or array.name for array in program.arrays}
        self.basis_arrays = {array.name for array in program.arrays if array.kind == "basis"}
        self.block_cells = BlockCells(program, quantized)
        self.state: dict[int, np.ndarray] = {}  # physical tile -> its cells
        # noisy chips: the targets of tiles holding basis blocks, which layers outside
        # the noisy ones read (a basis is shared: its cells cannot be made clean in place)
        self.targets: dict[int, np.ndarray] = {}
        self.chip = ChipState()

    def write(
        self, writes: Iterable[TileWrite], task: progress.AnyTask = progress.NULL_TASK
    ) -> None:
        """Apply the writes of one phase, in order, counting each in `task`."""
        for write in writes:
            self.chip.write(write.vtile, write.tile)
            tile_type = self.hardware.tile_type_of(write.tile)
            state = self.state.get(write.tile)
            if state is None:
                shape = (tile_type.rows, tile_type.cols)
                state = np.zeros(shape, dtype=self.block_cells.cell_dtype)
                self.state[write.tile] = state
            state[...] = 0.0  # programming erases the tile
            for block in self.blocks_on[write.vtile]:
                programmed_region(state, block)[...] = self.block_cells.cells(block)
            if self.device is not None:
                self._program_noisy(write.tile, state, self.blocks_on[write.vtile])
            task.update()

    def cells(self, block: Block, noisy: bool = True) -> np.ndarray:
        """The programmed cells that hold `block`, on the tile that holds its vtile now
        (`noisy=False`: a basis block's cells as targeted, without the device's noise)."""
        tile = self.chip.tile_of[block.vtile]
        if not noisy and tile in self.targets and block.array in self.basis_arrays:
            return programmed_region(self.targets[tile], block)
        return programmed_region(self.state[tile], block)

    def _program_noisy(self, tile: int, state: np.ndarray, blocks: list[Block]) -> None:
        """Program `tile` to `state` through the device models, in place; the blocks of
        layers outside `noisy_layers` keep their targets (basis blocks, which every
        combined layer shares, keep their noisy cells and their targets beside them)."""
        assert self.device is not None
        targets = state.copy()
        state[...] = self.device.program(tile, targets)
        self.targets.pop(tile, None)
        for block in blocks:
            if block.array in self.basis_arrays:
                self.targets[tile] = targets
            elif not self.is_noisy(self.layer_of[block.array]):
                programmed_region(state, block)[...] = programmed_region(targets, block)


def check_programmed_cells(program: Program) -> None:
    """Refuse, before programming anything, a schedule that writes more tile cells than
    the simulator holds: each written tile is kept whole (its rows x cols cells), so a
    chip header of huge tiles written many times is refused here, not by MemoryError."""
    hardware = program.hardware
    written = {write.tile for phase in program.phases for write in phase.writes}
    cells = sum(hardware.tile_type_of(tile).cells for tile in written)
    if cells > MAX_PROGRAMMED_CELLS:
        raise XbarcError(
            f"the program writes {len(written)} tiles of {cells} cells in all, more than the"
            f" simulator holds ({MAX_PROGRAMMED_CELLS})",
            hint="compile it for fewer or smaller tiles: --tiles, --tile-size",
        )


def programmed_region(state: np.ndarray, block: Block) -> np.ndarray:
    """The cells of a programmed tile that hold `block`."""
    return state[
        block.row_offset : block.row_offset + len(block.rows),
        block.col_offset : block.col_offset + len(block.cols),
    ]


def row_indices(indices: Indices, store) -> slice | np.ndarray:
    """A block's source rows or columns as a slice where they are a range (a view), else
    as an index array."""
    if isinstance(indices, Span):
        return slice(indices.start, indices.stop)
    return np.asarray(indices.entries(store), dtype=np.int64)


def index_array(indices: Indices, store) -> np.ndarray:
    """A block's source rows or columns as an int64 index array."""
    if isinstance(indices, Span):
        return np.arange(indices.start, indices.stop, dtype=np.int64)
    return np.asarray(indices.entries(store), dtype=np.int64)


class BlockCells:
    """The values a block's cells are programmed to, per profile.

    `quant`: the slice's bits of the integer level. `ideal`: the same bits plus the rest of
    the real weight, v - level (at most half a level), added to the least significant slice
    that holds the weight (a compacted program may hold only some slices of a weight), so
    the cells still sum to v exactly; a weight with no cell at all (a zero level dropped by
    sparse mapping) loses what is below half a level. The slices of one weight block come
    one after another, so the block's weights are kept from one slice to the next."""

    def __init__(self, program: Program, quantized: bool):
        self.program = program
        self.store = program.store
        self.quantized = quantized
        self.cell_dtype = np.float32 if quantized else np.float64
        self.arrays = {array.name: array for array in program.arrays}
        self._last: tuple | None = None
        self._weights: tuple | None = None
        self._lowest: dict[str, LowestSlices] = {}

    def cells(self, block: Block) -> np.ndarray:
        array = self.arrays[block.array]
        piece = array.slices[block.slice]
        levels, rest = self.weights(array, block)
        cells = slice_cells(levels, piece, array.weight_bits, array.encoding)
        cells = cells.astype(self.cell_dtype)
        if rest is not None:  # ideal: the rest of each weight, in its home slice
            home, remainder = rest
            takes = home[piece.polarity] == piece.shift
            sign = 1.0 if piece.polarity == "+" else -1.0
            cells[takes] += sign / 2**piece.shift * remainder[takes]
        return cells

    def weights(self, array: Array, block: Block):
        """The block's integer levels and, in ideal, where each weight's rest goes (per
        polarity, the shift of the slice that takes it, -1 for none) and the rest itself
        (v - level, v the real weight over the scale); computed once for the slices of
        one weight block."""
        key = (block.array, block.group, block.rows, block.cols)
        if key == self._last and self._weights is not None:
            return self._weights
        rows = row_indices(block.rows, self.store)  # a slice where it can: a view
        cols = index_array(block.cols, self.store)
        levels = self.store[array.levels][block.group][rows][:, cols].astype(np.int64)
        rest = None
        if not self.quantized:
            values = self.store[array.values][block.group][rows][:, cols].astype(np.float64)
            scale = array.scale
            if isinstance(scale, Const):
                values = values / self.store[scale.name][block.group][cols].astype(np.float64)
            else:
                values = values / np.float64(scale)
            lowest = self._lowest.get(array.name)
            if lowest is None:
                lowest = self._lowest[array.name] = LowestSlices(self.program, array)
            remainder = values - levels
            rest = (lowest.home(block.group, rows, cols, levels, remainder), remainder)
        self._last, self._weights = key, (levels, rest)
        return self._weights


class LowestSlices:
    """Per weight of an array, the shift of the least significant slice of each polarity
    that a block holds (-1: none), for the rest of an ideal weight to go to."""

    def __init__(self, program: Program, array: Array):
        store = program.store
        self.array = array
        self.full: dict[str, int] = {}  # polarity -> lowest shift, when blocks hold every weight
        self.maps: dict[str, np.ndarray] = {}
        polarities = sorted({piece.polarity for piece in array.slices})
        blocks = [b for b in program.blocks if b.array == array.name]
        covered = {piece.index: 0 for piece in array.slices}
        for block in blocks:
            covered[block.slice] += len(block.rows) * len(block.cols)
        total = array.groups * array.rows * array.cols
        if all(count >= total for count in covered.values()):  # dense: scalars will do
            for polarity in polarities:
                shifts = [p.shift for p in array.slices if p.polarity == polarity]
                self.full[polarity] = min(shifts)
            return
        none = np.iinfo(np.int16).max
        for polarity in polarities:
            self.maps[polarity] = np.full((array.groups, array.rows, array.cols), none, np.int16)
        for block in blocks:
            piece = array.slices[block.slice]
            region = np.ix_(index_array(block.rows, store), index_array(block.cols, store))
            target = self.maps[piece.polarity][block.group]
            target[region] = np.minimum(target[region], piece.shift)
        for lowest in self.maps.values():
            lowest[lowest == none] = -1

    def home(self, group, rows, cols, levels, remainder) -> dict[str, np.ndarray]:
        """Per polarity, the shift of the slice that takes each weight's remainder (-1
        where that polarity does not take it): + for positive weights, - for negative
        ones, else whichever the weight has a slice of."""
        shape = levels.shape
        lowest = {}
        for polarity in ("+", "-"):
            if polarity in self.full:
                lowest[polarity] = np.full(shape, self.full[polarity])
            elif polarity in self.maps:
                lowest[polarity] = self.maps[polarity][group][rows][:, cols]
            else:
                lowest[polarity] = np.full(shape, -1)
        plus_first = (levels > 0) | ((levels == 0) & (remainder >= 0))
        has_plus, has_minus = lowest["+"] >= 0, lowest["-"] >= 0
        to_plus = (plus_first & has_plus) | (~plus_first & ~has_minus & has_plus)
        to_minus = ~to_plus & has_minus
        return {
            "+": np.where(to_plus, lowest["+"], -1),
            "-": np.where(to_minus, lowest["-"], -1),
        }
