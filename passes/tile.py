"""tile: map every array slice onto virtual tiles, dense or sparse (seed 000, seed 003).

    Array(groups, rows, cols, slices)  ->  Blocks of at most R x C cells

`mapping=dense` (seed 000's dense scheme): each slice of each group is cut into R x C
blocks, zeros included, one virtual tile each. Grouped and depthwise convolutions whose
group matrix fits a tile are packed block-diagonally: groups side by side on the diagonal
of a tile, on disjoint rows and columns, so one read serves them all (`groups=diagonal`,
the default); `groups=separate` gives every group its own tiles. Blocks are ordered by
array, group, row block, column block, then slice, so the slices of one weight block sit
on neighbouring tiles.

`mapping=sparse` (pruning-aware, seed 000): the columns of each group are cut into column
groups of `group-cols` adjacent columns; each column group keeps only its columns that
hold a non-zero weight and the rows non-zero somewhere in them (a row-gather table and a
column-scatter table), cut into blocks of at most R rows; empty column groups take no
cells. `mapping=squeeze` (SME's squeeze-out, seed 003) compacts each slice (bit plane) on
its own, so the high-order planes, mostly zeros, shrink the most. Compacted blocks of one
array are packed side by side on shared tiles; blocks on one tile that read different
inputs take separate cycles (the allocate pass orders them, inspect counts them).
Compaction only removes zero cells, so with a lossless ADC every mapping computes the
same sums.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware, TileType, tile_type_name
from xbarc.ir.tile import Array, Block, IndexTable, Indices, Program, Span, with_tensors
from xbarc.passes.quantize import slice_cells

MAPPINGS = ("dense", "sparse", "squeeze")


@dataclass(frozen=True, slots=True)
class Tile:
    """Cut every array into tile-sized blocks on virtual tiles of one tile type.

    On a chip with one tile type, `rows`/`cols` set its size; with several, they pick one."""

    name: ClassVar[str] = "tile"
    rows: int | None = None  # default: the first tile type of the hardware
    cols: int | None = None
    groups: str = "diagonal"  # diagonal | separate
    mapping: str = "dense"  # dense | sparse | squeeze
    group_cols: int | None = None  # sparse, squeeze: columns per column group (tile width)

    def apply(self, program: Program) -> Program:
        if self.groups not in ("diagonal", "separate"):
            raise XbarcError(
                f"unknown group mapping {self.groups!r}", hint="use diagonal or separate"
            )
        if self.mapping not in MAPPINGS:
            raise XbarcError(
                f"unknown mapping {self.mapping!r}", hint=f"use one of {', '.join(MAPPINGS)}"
            )
        if self.group_cols is not None and self.group_cols < 1:
            raise XbarcError(f"group-cols must be at least 1, got {self.group_cols}")
        if not program.arrays and any(True for _ in program.layers()):
            raise XbarcError("tile needs quantized arrays", hint="run quantize before tile")
        hardware = with_tile_size(program.hardware, self.rows, self.cols)
        program = replace(program, hardware=hardware)
        tile_type = choose_tile_type(hardware, self.rows, self.cols)
        if self.mapping != "dense":
            offset = [a.name for a in program.arrays if a.encoding == "offset"]
            if offset:
                raise XbarcError(
                    f"mapping={self.mapping} drops zero cells, but array @{offset[0]} uses "
                    "offset encoding, whose zero weights are not zero cells",
                    hint="quantize with encoding=differential (--encoding differential)",
                )
        blocks: list[Block] = []
        tables: dict[str, np.ndarray] = {}
        next_vtile = 0
        for array in program.arrays:
            if self.mapping == "dense":
                placed = dense_blocks(
                    array, tile_type, len(blocks), next_vtile, self.groups == "diagonal"
                )
            else:
                width = min(self.group_cols or tile_type.cols, tile_type.cols)
                placed = sparse_blocks(
                    array,
                    program.store[array.levels],
                    tile_type,
                    SparseLayout(len(blocks), next_vtile, width, self.mapping == "squeeze"),
                    tables,
                )
            blocks.extend(placed)
            next_vtile = 1 + max((b.vtile for b in blocks), default=-1)
        program = with_tensors(program, tables) if tables else program
        return replace(program, blocks=tuple(blocks), phases=())


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


def dense_blocks(
    array: Array, tile_type: TileType, first_block: int, first_vtile: int, pack_groups: bool
) -> list[Block]:
    """All blocks of `array`, numbered from `first_block`, on vtiles from `first_vtile`."""
    fits = array.rows <= tile_type.rows and array.cols <= tile_type.cols
    if pack_groups and array.groups > 1 and fits:
        return _diagonal_blocks(array, tile_type, first_block, first_vtile)
    blocks: list[Block] = []
    vtile = first_vtile
    for group in range(array.groups):
        for row_start in range(0, array.rows, tile_type.rows):
            row_span = Span(row_start, min(row_start + tile_type.rows, array.rows))
            for col_start in range(0, array.cols, tile_type.cols):
                col_span = Span(col_start, min(col_start + tile_type.cols, array.cols))
                for piece in array.slices:
                    blocks.append(
                        Block(
                            first_block + len(blocks),
                            array.name,
                            piece.index,
                            group,
                            row_span,
                            col_span,
                            tile_type.name,
                            vtile,
                            0,
                            0,
                        )
                    )
                    vtile += 1
    return blocks


def _diagonal_blocks(
    array: Array, tile_type: TileType, first_block: int, first_vtile: int
) -> list[Block]:
    per_tile = min(tile_type.rows // array.rows, tile_type.cols // array.cols)
    blocks: list[Block] = []
    vtile = first_vtile
    rows, cols = Span(0, array.rows), Span(0, array.cols)
    for chunk_start in range(0, array.groups, per_tile):
        chunk = range(chunk_start, min(chunk_start + per_tile, array.groups))
        for piece in array.slices:
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
            vtile += 1
    return blocks


@dataclass(frozen=True, slots=True)
class SparseLayout:
    first_block: int
    first_vtile: int
    group_cols: int
    per_slice: bool  # squeeze: each slice compacted on its own


def sparse_blocks(
    array: Array,
    levels: np.ndarray,
    tile_type: TileType,
    layout: SparseLayout,
    tables: dict[str, np.ndarray],
) -> list[Block]:
    """The compacted blocks of `array`, packed side by side on its own virtual tiles; the
    index tables they need go into `tables`."""
    pieces: list[tuple[int, int, Indices, Indices]] = []  # per block: slice, group, rows, cols
    for group in range(array.groups):
        for first in range(0, array.cols, layout.group_cols):
            columns = np.arange(first, min(first + layout.group_cols, array.cols))
            weights = levels[group][:, columns]
            masks: list[tuple[int | None, np.ndarray]]  # (slice or all slices, non-zero)
            if layout.per_slice:
                masks = [
                    (
                        piece.index,
                        slice_cells(weights, piece, array.weight_bits, "differential") != 0,
                    )
                    for piece in array.slices
                ]
            else:
                masks = [(None, weights != 0)]
            for index, mask in masks:
                kept_cols = columns[mask.any(axis=0)]
                kept_rows = np.flatnonzero(mask.any(axis=1))
                if not kept_cols.size:
                    continue  # an empty column group takes no cells
                name = f"{array.name}.g{group}.c{first}" + ("" if index is None else f".s{index}")
                cols = indices(kept_cols, f"{name}.cols", tables)
                for start in range(0, len(kept_rows), tile_type.rows):
                    chunk = kept_rows[start : start + tile_type.rows]
                    rows = indices(chunk, f"{name}.r{start}", tables)
                    slices = [s.index for s in array.slices] if index is None else [index]
                    for piece in slices:
                        pieces.append((piece, group, rows, cols))
    return pack(array, pieces, tile_type, layout)


def indices(selected: np.ndarray, name: str, tables: dict[str, np.ndarray]) -> Indices:
    """A run of consecutive indices as a span, anything else as an index table."""
    if selected[-1] - selected[0] == len(selected) - 1:
        return Span(int(selected[0]), int(selected[-1]) + 1)
    tables[name] = selected.astype(np.int32)
    return IndexTable(name, len(selected))


def pack(array: Array, pieces, tile_type: TileType, layout: SparseLayout) -> list[Block]:
    """Blocks placed side by side, first fit along the columns of the array's virtual
    tiles: a block goes to the first of them with room for its columns."""
    used: list[int] = []  # columns taken on each of this array's virtual tiles
    blocks: list[Block] = []
    for piece, group, rows, cols in pieces:
        width = len(cols)
        slot = next((i for i, taken in enumerate(used) if taken + width <= tile_type.cols), None)
        if slot is None:
            slot = len(used)
            used.append(0)
        blocks.append(
            Block(
                layout.first_block + len(blocks),
                array.name,
                piece,
                group,
                rows,
                cols,
                tile_type.name,
                layout.first_vtile + slot,
                0,
                used[slot],
            )
        )
        used[slot] += width
    return blocks
