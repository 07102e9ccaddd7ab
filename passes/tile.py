"""tile: dense mapping of every array slice onto virtual tiles (seed 000's dense scheme).

    Array(groups, rows, cols, slices)  ->  Blocks of at most R x C cells, zeros included

Each slice of each group is cut into R x C blocks, one virtual tile each. Grouped and
depthwise convolutions whose group matrix fits a tile are packed block-diagonally: groups
side by side on the diagonal of a tile, on disjoint rows and columns, so one read serves
them all (`groups=diagonal`, the default); `groups=separate` gives every group its own
tiles. Blocks are ordered by array, group, row block, column block, then slice, so the
slices of one weight block sit on neighbouring tiles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware, TileType, tile_type_name
from xbarc.ir.tile import Array, Block, Program, Span


@dataclass(frozen=True, slots=True)
class Tile:
    """Cut every array into tile-sized blocks on virtual tiles of one tile type.

    On a chip with one tile type, `rows`/`cols` set its size; with several, they pick one."""

    name: ClassVar[str] = "tile"
    rows: int | None = None  # default: the first tile type of the hardware
    cols: int | None = None
    groups: str = "diagonal"  # diagonal | separate

    def apply(self, program: Program) -> Program:
        if self.groups not in ("diagonal", "separate"):
            raise XbarcError(
                f"unknown group mapping {self.groups!r}", hint="use diagonal or separate"
            )
        if not program.arrays and any(True for _ in program.layers()):
            raise XbarcError("tile needs quantized arrays", hint="run quantize before tile")
        hardware = with_tile_size(program.hardware, self.rows, self.cols)
        program = replace(program, hardware=hardware)
        tile_type = choose_tile_type(hardware, self.rows, self.cols)
        blocks: list[Block] = []
        next_vtile = 0
        for array in program.arrays:
            placed = dense_blocks(
                array, tile_type, len(blocks), next_vtile, self.groups == "diagonal"
            )
            blocks.extend(placed)
            next_vtile = 1 + max((b.vtile for b in blocks), default=-1)
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
