"""tile: map every array slice onto virtual tiles, dense or sparse (seed 000, seed 003).

    Array(groups, rows, cols, slices)  ->  Blocks of at most R x C cells on virtual tiles

`mapping=dense` (seed 000's dense scheme): each slice of each group is cut into R x C
blocks, zeros included. Grouped and depthwise convolutions whose group matrix fits a tile
are placed block-diagonally: groups side by side on the diagonal of a tile, on disjoint
rows and columns, so one read serves them all (`groups=diagonal`, the default);
`groups=separate` gives every group its own blocks. Blocks are ordered by array, group,
row block, column block, then slice, so the slices of one weight block sit together.

`mapping=sparse` (pruning-aware, seed 000): the columns of each group are cut into column
groups of `group-cols` adjacent columns (with `reorder=true`, columns that use the same
rows grouped together, see `similar_columns`); each column group keeps only its columns that
hold a non-zero weight and the rows non-zero somewhere in them (a row-gather table and a
column-scatter table), cut into blocks of at most R rows; empty column groups take no
cells. `mapping=squeeze` (SME's squeeze-out, seed 003) compacts each slice (bit plane) on
its own, so the high-order planes, mostly zeros, shrink the most. Without `group-cols`,
each layer's group width is chosen by the tiles-versus-cycles trade-off (see
`choose_layouts`) and recorded on its array. Compaction only removes zero cells, so
with a lossless ADC every mapping computes the same sums.

`pack` places blocks on virtual tiles: `off` gives every block its own tile (dense's
default); `layer` (sparse's default) and `model` pack them by shelf first-fit (`Packer`),
the blocks of one layer or of the whole model sharing tiles; `auto` packs a layer only
where the model needs it to fit the chip in one phase (see `choose_layouts`). Blocks on
one tile that read different inputs take separate cycles: the allocate pass orders them,
inspect counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware, TileType, tile_type_name
from xbarc.ir.geometry import layer_patches
from xbarc.ir.schedule import assign_cycles
from xbarc.ir.tile import (
    Array,
    Block,
    CrossbarLayer,
    IndexTable,
    Indices,
    Program,
    Span,
    with_tensors,
)

MAPPINGS = ("dense", "sparse", "squeeze")
PACKINGS = ("off", "layer", "model", "auto")
NARROWEST_GROUP = 8  # the narrowest column group the automatic choice tries


@dataclass(frozen=True, slots=True)
class Tile:
    """Cut every array into tile-sized blocks on virtual tiles of one tile type.

    On a chip with one tile type, `rows`/`cols` set its size; with several, they pick one."""

    name: ClassVar[str] = "tile"
    rows: int | None = None  # default: the first tile type of the hardware
    cols: int | None = None
    groups: str = "diagonal"  # diagonal | separate
    mapping: str = "dense"  # dense | sparse | squeeze
    group_cols: int | None = None  # sparse, squeeze: columns per group; default: per layer
    # (dense mapping ignores it)
    pack: str | None = None  # off | layer | model | auto; default: off for dense, else layer
    reorder: bool = False  # sparse, squeeze: group columns by the rows they use

    def target(self, hardware: Hardware) -> Hardware:
        """The chip with the tile size this pass names (on a chip of one tile type)."""
        return with_tile_size(hardware, self.rows, self.cols)

    def apply(self, program: Program) -> Program:
        self.check()
        if not program.arrays and any(True for _ in program.layers()):
            raise XbarcError("tile needs quantized arrays", hint="run quantize before tile")
        tile_type = choose_tile_type(program.hardware, self.rows, self.cols)
        pack = self.pack or default_packing(self.mapping)
        compactor = None
        if self.mapping != "dense":
            check_sparse_encoding(program, self.mapping)
            compactor = Compactor(program, tile_type, self.mapping == "squeeze", self.reorder)
        layouts = self.layouts(program, tile_type, compactor, pack)
        if compactor is not None:
            arrays = tuple(
                replace(a, group_cols=layouts[a.name].group_cols) for a in program.arrays
            )
            program = replace(program, arrays=arrays)
        packer = Packer(tile_type)
        blocks: list[Block] = []
        tables: dict[str, np.ndarray] = {}
        for array in program.arrays:
            layout = layouts[array.name]
            placed, array_tables = self.place_layer(array, layout, compactor, packer, len(blocks))
            blocks += placed
            tables.update(array_tables)
            if pack != "model":
                packer.close()
        program = with_tensors(program, tables) if tables else program
        return replace(program, blocks=tuple(blocks), phases=())

    def layouts(
        self, program: Program, tile_type: TileType, compactor: Compactor | None, pack: str
    ) -> dict[str, Layout]:
        """Each array's column-group width and packing: as given, or chosen (see
        `choose_layouts`) where the options leave a choice."""
        if compactor is None:
            widths: list[int | None] = [None]
        elif self.group_cols is None:
            widths = list(group_widths(tile_type.cols))
        else:
            widths = [min(self.group_cols, tile_type.cols)]
        packings = [False, True] if pack == "auto" else [pack != "off"]
        if len(widths) == 1 and len(packings) == 1:
            return {array.name: Layout(widths[0], packings[0]) for array in program.arrays}

        def place(array: Array, layout: Layout, packer: Packer) -> list[Block]:
            return self.place_layer(array, layout, compactor, packer, 0)[0]

        return choose_layouts(program, tile_type, widths, packings, place, compactor)

    def place_layer(
        self,
        array: Array,
        layout: Layout,
        compactor: Compactor | None,
        packer: Packer,
        first_block: int,
    ) -> tuple[list[Block], dict[str, np.ndarray]]:
        """The blocks of one array, numbered from `first_block`, and its index tables."""
        tile_type = packer.tile_type
        if compactor is None:
            if diagonal_fits(array, tile_type, self.groups):
                return diagonal_blocks(array, tile_type, first_block, packer), {}
            pieces = dense_pieces(array, tile_type)
            return packer.place_all(pieces, first_block, layout.packed), {}
        pieces, tables = compactor.pieces(array, layout.group_cols or tile_type.cols)
        return packer.place_all(pieces, first_block, layout.packed), tables

    def check(self) -> None:
        for option, value, known in (
            ("group mapping", self.groups, ("diagonal", "separate")),
            ("mapping", self.mapping, MAPPINGS),
            ("packing", self.pack or "off", PACKINGS),
        ):
            if value not in known:
                raise XbarcError(f"unknown {option} {value!r}", hint=f"use {' or '.join(known)}")
        if self.group_cols is not None and self.group_cols < 1:
            raise XbarcError(f"group-cols must be at least 1, got {self.group_cols}")


def default_packing(mapping: str) -> str:
    """Dense blocks each take a tile of their own; compacted ones are packed per layer."""
    return "off" if mapping == "dense" else "layer"


def with_tile_size(hardware: Hardware, rows: int | None, cols: int | None) -> Hardware:
    """A one-type chip takes the size the pass asks for; a several-type chip must have it."""
    if len(hardware.tile_types) != 1 or (rows is None and cols is None):
        return hardware
    only = hardware.tile_types[0]
    rows = only.rows if rows is None else rows
    cols = only.cols if cols is None else cols
    if rows < 1 or cols < 1:
        raise XbarcError(f"tile size must be at least 1x1, got {rows}x{cols}")
    resized = TileType(tile_type_name(rows, cols), rows, cols, only.count)
    return replace(hardware, tile_types=(resized,))


def choose_tile_type(hardware: Hardware, rows: int | None, cols: int | None) -> TileType:
    if rows is None and cols is None:
        return hardware.tile_types[0]
    for tile_type in hardware.tile_types:
        if (rows is None or tile_type.rows == rows) and (cols is None or tile_type.cols == cols):
            return tile_type
    known = ", ".join(f"{t.rows}x{t.cols}" for t in hardware.tile_types)
    raise XbarcError(
        f"the hardware has no {rows}x{cols} tile type",
        hint=f"its tile types are {known}; set --tile-size to match",
    )


def check_sparse_encoding(program: Program, mapping: str) -> None:
    offset = [a.name for a in program.arrays if a.encoding == "offset"]
    if offset:
        raise XbarcError(
            f"mapping={mapping} drops zero cells, but array @{offset[0]} uses "
            "offset encoding, whose zero weights are not zero cells",
            hint="quantize with encoding=differential (--encoding differential)",
        )


# --- pieces: blocks before placement -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Piece:
    """A block before it is placed: rows x cols of one slice of one group of an array."""

    array: str
    slice: int
    group: int
    rows: Indices
    cols: Indices


def dense_pieces(array: Array, tile_type: TileType) -> list[Piece]:
    pieces = []
    for group in range(array.groups):
        for row_start in range(0, array.rows, tile_type.rows):
            rows = Span(row_start, min(row_start + tile_type.rows, array.rows))
            for col_start in range(0, array.cols, tile_type.cols):
                cols = Span(col_start, min(col_start + tile_type.cols, array.cols))
                pieces += [Piece(array.name, s.index, group, rows, cols) for s in array.slices]
    return pieces


def diagonal_fits(array: Array, tile_type: TileType, groups: str) -> bool:
    return (
        groups == "diagonal"
        and array.groups > 1
        and array.rows <= tile_type.rows
        and array.cols <= tile_type.cols
    )


def diagonal_blocks(
    array: Array, tile_type: TileType, first_block: int, packer: Packer
) -> list[Block]:
    """Groups on the diagonal of whole tiles of their own, one tile per chunk and slice."""
    per_tile = min(tile_type.rows // array.rows, tile_type.cols // array.cols)
    blocks: list[Block] = []
    rows, cols = Span(0, array.rows), Span(0, array.cols)
    for chunk_start in range(0, array.groups, per_tile):
        chunk = range(chunk_start, min(chunk_start + per_tile, array.groups))
        for piece in array.slices:
            vtile = packer.whole_tile()
            for position, group in enumerate(chunk):
                blocks.append(
                    Block(
                        first_block + len(blocks),
                        array.name,
                        piece.index,
                        group,
                        rows,
                        cols,
                        tile_type.name,
                        vtile,
                        position * array.rows,
                        position * array.cols,
                    )
                )
    return blocks


@dataclass(frozen=True, slots=True)
class Plane:
    """What a compacted plane keeps in column groups: `slice` (None: all slices at once);
    whether each row of each column group holds a non-zero cell, [groups, rows, column
    groups]; whether each column does, [groups, column groups, width]; and `order`,
    [groups, cols], the array columns in the order they were cut into column groups."""

    slice: int | None
    row_used: np.ndarray
    col_used: np.ndarray
    order: np.ndarray


def in_column_groups(values: np.ndarray, column_groups: int, width: int) -> np.ndarray:
    """[groups, rows, cols] -> [groups, rows, column groups, width], zero-padded."""
    groups, rows, cols = values.shape
    padding = column_groups * width - cols
    if padding:
        values = np.pad(values, ((0, 0), (0, 0), (0, padding)))
    return values.reshape(groups, rows, column_groups, width)


class Compactor:
    """The compacted pieces of sparse and squeezed arrays and the index tables they need,
    computed once per array and column-group width."""

    def __init__(self, program: Program, tile_type: TileType, per_slice: bool, reorder: bool):
        self.program = program
        self.tile_type = tile_type
        self.per_slice = per_slice
        self.reorder = reorder
        self.found: dict[tuple[str, int], tuple[list[Piece], dict[str, np.ndarray]]] = {}

    def planes(self, array: Array, width: int) -> list[Plane]:
        """The planes compacted on their own: one per slice for squeeze, else all slices as
        one. Without `reorder`, the magnitudes of each polarity are OR-ed over each column
        group's columns and over its rows once, and a slice's plane is the bits it holds of
        those ORs; with it, each plane's columns are grouped by `similar_columns` where that
        keeps fewer cells than their own order."""
        if self.reorder and width < array.cols:
            return self._reordered_planes(array, width)
        column_groups = -(-array.cols // width)
        order = np.broadcast_to(np.arange(array.cols), (array.groups, array.cols))
        reduced = {}
        for polarity, magnitude in magnitudes(
            self.program.store[array.levels], self.per_slice
        ).items():
            grouped = in_column_groups(magnitude, column_groups, width)
            reduced[polarity] = (
                np.bitwise_or.reduce(grouped, axis=3),
                np.bitwise_or.reduce(grouped, axis=1),
            )
        if not self.per_slice:
            rows_or, cols_or = reduced[""]
            return [Plane(None, rows_or != 0, cols_or != 0, order)]
        planes = []
        for piece in array.slices:
            rows_or, cols_or = reduced[piece.polarity]
            bitmask = ((1 << piece.bits) - 1) << piece.shift
            planes.append(Plane(piece.index, rows_or & bitmask != 0, cols_or & bitmask != 0, order))
        return planes

    def _reordered_planes(self, array: Array, width: int) -> list[Plane]:
        levels = self.program.store[array.levels]
        masks: list[tuple[int | None, np.ndarray]]
        if self.per_slice:
            unsigned = magnitudes(levels, True)
            masks = [
                (piece.index, unsigned[piece.polarity] & (((1 << piece.bits) - 1) << piece.shift))
                for piece in array.slices
            ]
        else:
            masks = [(None, levels)]
        column_groups = -(-array.cols // width)
        natural = np.broadcast_to(np.arange(array.cols), (array.groups, array.cols))
        planes = []
        for index, values in masks:
            nonzero = values != 0
            similar = np.stack([similar_columns(nonzero[g], width) for g in range(array.groups)])
            options = []
            for order in (natural, similar):
                reordered = np.take_along_axis(nonzero, order[:, None, :], axis=2)
                grouped = in_column_groups(reordered, column_groups, width)
                row_used, col_used = np.any(grouped, axis=3), np.any(grouped, axis=1)
                cells = int((row_used.sum(axis=1) * col_used.sum(axis=2)).sum())
                options.append((cells, Plane(index, row_used, col_used, order)))
            planes.append(min(options, key=lambda option: option[0])[1])  # natural on a tie
        return planes

    def least_cells(self, array: Array) -> int:
        """A lower bound on the cells `array` keeps at any column grouping: one per non-zero
        weight (in each slice, unless every slice is compacted on its own)."""
        nonzero = int(np.count_nonzero(self.program.store[array.levels]))
        return nonzero if self.per_slice else nonzero * len(array.slices)

    def pieces(self, array: Array, width: int) -> tuple[list[Piece], dict[str, np.ndarray]]:
        """The pieces of `array` in column groups of `width`, by group, column group, plane,
        then row chunk; and the index tables they name."""
        key = (array.name, width)
        if key not in self.found:
            self.found[key] = self._compact(array, width)
        return self.found[key]

    def _compact(self, array: Array, width: int) -> tuple[list[Piece], dict[str, np.ndarray]]:
        tables = IndexTables(f"{array.name}.index")
        found: dict[tuple[int, int], list[Piece]] = {}
        for plane in self.planes(array, width):
            index = plane.slice
            slices = [s.index for s in array.slices] if index is None else [index]
            for group, column_group in zip(*np.nonzero(plane.col_used.any(axis=2)), strict=True):
                first = int(column_group) * width
                kept = first + np.flatnonzero(plane.col_used[group, column_group])
                cols = tables.indices(np.sort(plane.order[group, kept]))
                kept_rows = np.flatnonzero(plane.row_used[group, :, column_group])
                chunks = found.setdefault((int(group), first), [])
                for start in range(0, len(kept_rows), self.tile_type.rows):
                    rows = tables.indices(kept_rows[start : start + self.tile_type.rows])
                    chunks += [Piece(array.name, s, int(group), rows, cols) for s in slices]
        pieces = [piece for key in sorted(found) for piece in found[key]]
        return pieces, tables.tensors()


def similar_columns(nonzero: np.ndarray, width: int) -> np.ndarray:
    """An order of the columns of `nonzero` [rows, cols] that puts columns with non-zeros on
    the same rows into the same group of `width`, so each group's row-gather table keeps
    fewer rows: a group starts from the remaining column with the most non-zeros and
    takes the `width - 1` remaining columns that add the fewest rows to it (most shared
    rows on a tie). One matrix-vector product per group."""
    weights = nonzero.astype(np.float32)
    counts = weights.sum(axis=0)
    left = np.ones(nonzero.shape[1], dtype=bool)
    order: list[int] = []
    while left.any():
        candidates = np.flatnonzero(left)
        seed = int(candidates[np.argmax(counts[candidates])])
        left[seed] = False
        candidates = candidates[candidates != seed]
        shared = weights[:, seed] @ weights[:, candidates]
        added = counts[candidates] - shared
        chosen = candidates[np.lexsort((-shared, added))[: width - 1]]
        left[chosen] = False
        order += [seed, *chosen.tolist()]
    return np.array(order)


class IndexTables:
    """The index tables of one array as runs of one i32 vector, each distinct table once."""

    def __init__(self, name: str):
        self.name = name
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.known: dict[bytes, int] = {}  # table content -> its start in the vector

    def indices(self, selected: np.ndarray) -> Indices:
        """A run of consecutive indices as a span, anything else as an index table."""
        if selected[-1] - selected[0] == len(selected) - 1:
            return Span(int(selected[0]), int(selected[-1]) + 1)
        table = selected.astype(np.int32)
        start = self.known.setdefault(table.tobytes(), self.size)
        if start == self.size:
            self.parts.append(table)
            self.size += len(table)
        return IndexTable(self.name, len(table), start)

    def tensors(self) -> dict[str, np.ndarray]:
        return {self.name: np.concatenate(self.parts)} if self.parts else {}


# --- the column-group width: tiles against cycles -----------------------------------------


def group_widths(tile_cols: int) -> list[int]:
    """The widths the automatic choice tries, widest first: the tile's width, halved down
    to NARROWEST_GROUP columns."""
    widths = [tile_cols]
    while widths[-1] // 2 >= NARROWEST_GROUP:
        widths.append(widths[-1] // 2)
    return widths


@dataclass(frozen=True, slots=True)
class Layout:
    """How one array lands on tiles: its column-group width (compacted mappings; None
    for dense) and whether its blocks share tiles."""

    group_cols: int | None
    packed: bool


@dataclass(frozen=True, slots=True)
class Fit:
    """One array laid out on tiles of its own."""

    tiles: int
    cycles: int  # per inference: cycles per read x the input vectors read


def choose_layouts(
    program: Program,
    tile_type: TileType,
    widths: list[int | None],
    packings: list[bool],
    place: Callable[[Array, Layout, Packer], list[Block]],
    compactor: Compactor | None,
) -> dict[str, Layout]:
    """Each array's layout when the options leave a choice of column-group width (`widths`,
    widest first) or of packing (`packings`, unpacked first). Wider groups keep more zero
    cells and packing fewer blocks per tile take more tiles; narrower groups and packed
    tiles give a tile more inputs to read one after another: more cycles (and narrower
    groups more index tables). A tile saved costs about a cycle added, so:

    - the fastest layout (widest groups, one per tile width as in SME's squeeze-out,
      unpacked) when the model fits the chip's tiles in one phase with it;
    - the widest groups, packed, when it cannot fit even with the tightest layout (it is
      reprogrammed either way, and packed tiles take fewer phases);
    - otherwise tighter layouts until it fits, one layer at a time: each step in the layer
      that saves the most tiles per cycle it adds to an inference.

    Each array's tiles are counted packed on tiles of its own, so `pack=model` may end up
    with fewer."""

    budget = tile_type.count
    hopeless = {array.name: Layout(widths[0], packings[-1]) for array in program.arrays}
    if compactor is not None:
        least_cells = sum(compactor.least_cells(array) for array in program.arrays)
        if least_cells > budget * tile_type.rows * tile_type.cols:
            return hopeless  # even the non-zero weights alone need more tiles
    layers = {layer.name: layer for layer in program.layers()}
    types = program.value_types()
    options = [(k, p) for k in range(len(widths)) for p in range(len(packings))]
    fits: dict[tuple[str, int, int], Fit] = {}

    def fit(array: Array, option: tuple[int, int]) -> Fit:
        key = (array.name, *option)
        if key not in fits:
            layout = Layout(widths[option[0]], packings[option[1]])
            blocks = place(array, layout, packer := Packer(tile_type))
            layer: CrossbarLayer | None = layers.get(array.name)
            reads = max(1, layer_patches(layer, types)) if layer is not None else 1
            fits[key] = Fit(packer.vtiles, len(assign_cycles(blocks)) * reads)
        return fits[key]

    arrays = program.arrays
    if sum(fit(a, options[-1]).tiles for a in arrays) > budget:
        return hopeless
    choice = {array.name: options[0] for array in arrays}
    while sum(fit(a, choice[a.name]).tiles for a in arrays) > budget:
        steps = [
            (saved / max(fit(a, option).cycles - now.cycles, 0.5), a.name, option)
            for a in arrays
            for now in [fit(a, choice[a.name])]
            for option in options
            if option[0] >= choice[a.name][0] and option[1] >= choice[a.name][1]
            if (saved := now.tiles - fit(a, option).tiles) > 0
        ]
        _, name, option = max(steps)  # some step saves tiles, as the tightest layout fits
        choice[name] = option
    return {name: Layout(widths[k], packings[p]) for name, (k, p) in choice.items()}


def magnitudes(levels: np.ndarray, per_polarity: bool) -> dict[str, np.ndarray]:
    """The magnitudes of integer `levels` as unsigned integers of the same width: of the
    positive and the negative levels apart ("+", "-"), or of all ("")."""
    unsigned = levels.dtype.str.replace("i", "u")  # |level| < 2^(bits-1): no overflow
    if per_polarity:
        return {
            "+": np.maximum(levels, 0).view(unsigned),
            "-": np.maximum(-levels, 0).view(unsigned),
        }
    return {"": np.abs(levels).view(unsigned)}


# --- packing -----------------------------------------------------------------------------


class FirstFit:
    """Capacities of bins in order, answering "the first bin with at least `need` left"
    in O(log n) through a max segment tree over them."""

    def __init__(self) -> None:
        self.size = 1
        self.tree = [0, 0]  # 1-based heap: node n has children 2n, 2n+1; leaves from `size`
        self.count = 0

    def append(self, capacity: int) -> int:
        if self.count == self.size:
            leaves = self.tree[self.size :]
            self.size *= 2
            self.tree = [0] * self.size + leaves + [0] * (self.size - len(leaves))
            for node in range(self.size - 1, 0, -1):
                self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
        self.count += 1
        self.set(self.count - 1, capacity)
        return self.count - 1

    def capacity(self, index: int) -> int:
        return self.tree[self.size + index]

    def set(self, index: int, capacity: int) -> None:
        tree = self.tree
        node = self.size + index
        tree[node] = capacity
        node //= 2
        while node:
            left, right = tree[2 * node], tree[2 * node + 1]
            best = left if left > right else right
            if tree[node] == best:
                break
            tree[node] = best
            node //= 2

    def first(self, need: int) -> int | None:
        tree = self.tree
        if tree[1] < need:
            return None
        node = 1
        while node < self.size:
            node *= 2
            if tree[node] < need:
                node += 1
        return node - self.size


NO_SHELVES: tuple[list[tuple[int, int]], FirstFit] = ([], FirstFit())


class Packer:
    """Shelf first-fit 2-D packing of blocks onto virtual tiles of one type.

    A tile is cut into shelves, row bands stacked from row 0; a block goes into the first
    shelf with room for its columns of its height class (its rows rounded up to a
    sixteenth of the tile) or, failing that, of the next taller class; else into a new
    shelf on the first tile with rows left for it, else onto a new tile. Blocks placed
    unpacked take a tile of their own; `close` stops packing into the tiles handed out
    so far (`pack=layer` closes after each layer)."""

    def __init__(self, tile_type: TileType):
        self.tile_type = tile_type
        self.quantum = max(1, tile_type.rows // 16)
        self.vtiles = 0
        self.close()

    def close(self) -> None:
        self.first_open = self.vtiles  # tiles before this one take no more blocks
        self.free_rows = FirstFit()  # per open tile: rows not in any shelf
        self.shelves: dict[int, tuple[list[tuple[int, int]], FirstFit]] = {}

    def whole_tile(self) -> int:
        """A new virtual tile that takes no packed blocks."""
        self.free_rows.append(0)
        self.vtiles += 1
        return self.vtiles - 1

    def place(self, height: int, width: int, packed: bool = True) -> tuple[int, int, int]:
        """(vtile, row offset, column offset) for a block of height x width cells, on a
        tile of its own unless `packed`."""
        rows, cols = self.tile_type.rows, self.tile_type.cols
        shelf_height = min(rows, -(-height // self.quantum) * self.quantum)
        if not packed or (width == cols and shelf_height == rows):
            return self.whole_tile(), 0, 0
        if width == cols:  # a shelf that takes nothing more
            slot, row = self.new_shelf(shelf_height)
            return self.first_open + slot, row, 0
        for taller in range(shelf_height, rows + 1, self.quantum):
            places, free_cols = self.shelves.get(taller, NO_SHELVES)
            shelf = free_cols.first(width)
            if shelf is not None:
                break
        else:
            places, free_cols = self.shelves.setdefault(shelf_height, ([], FirstFit()))
            places.append(self.new_shelf(shelf_height))
            shelf = free_cols.append(cols)
        slot, row = places[shelf]
        free = free_cols.capacity(shelf)
        free_cols.set(shelf, free - width)
        return self.first_open + slot, row, cols - free

    def new_shelf(self, height: int) -> tuple[int, int]:
        """(open tile, first row) of a new shelf of `height` rows."""
        rows = self.tile_type.rows
        slot = self.free_rows.first(height)
        if slot is None:
            slot = self.free_rows.append(rows)
            self.vtiles += 1
        row = rows - self.free_rows.capacity(slot)
        self.free_rows.set(slot, rows - row - height)
        return slot, row

    def place_all(self, pieces: Iterable[Piece], first_block: int, packed: bool) -> list[Block]:
        """Blocks for `pieces`, numbered from `first_block`; packed, tallest first (first-fit
        decreasing height packs shelves tighter), in their own order on a tie."""
        blocks: list[Block] = []
        if packed:
            pieces = sorted(pieces, key=lambda piece: -len(piece.rows))
        for piece in pieces:
            vtile, row, column = self.place(len(piece.rows), len(piece.cols), packed)
            blocks.append(
                Block(
                    first_block + len(blocks),
                    piece.array,
                    piece.slice,
                    piece.group,
                    piece.rows,
                    piece.cols,
                    self.tile_type.name,
                    vtile,
                    row,
                    column,
                )
            )
        return blocks
