"""Dense tiling (seed 000's dense scheme) and block-diagonal grouped convolutions.

    Array(groups, rows, cols, slices)  ->  Pieces of at most R x C, zeros included

Grouped and depthwise convolutions whose group matrix fits a tile can instead sit
block-diagonally: groups side by side on the diagonal of a tile, on disjoint rows and
columns, so one read serves them all.
"""

from __future__ import annotations

from xbarc.hardware import TileType
from xbarc.ir.tile import Array, Block, Span
from xbarc.passes.tiling.packing import Packer, Piece


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
