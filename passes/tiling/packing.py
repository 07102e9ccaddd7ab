"""Pieces (blocks before placement) and their 2-D shelf packing onto virtual tiles.

    Pieces of rows x cols cells  ->  Blocks at (vtile, row offset, column offset)

`Packer` places pieces by shelf first-fit (`FirstFit` finds the first shelf or tile with
room in O(log n)); unpacked pieces take a tile each. `tiles_bound` bounds the tiles it
takes from the pieces' sizes alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from xbarc.hardware import TileType
from xbarc.ir.tile import Block, Indices


@dataclass(frozen=True, slots=True)
class Piece:
    """A block before it is placed: rows x cols of one slice of one group of an array."""

    array: str
    slice: int
    group: int
    rows: Indices
    cols: Indices


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


def shelf_quantum(tile_type: TileType) -> int:
    """Shelf heights are multiples of this many rows: a sixteenth of the tile."""
    return max(1, tile_type.rows // 16)


def tiles_bound(
    heights: np.ndarray, widths: np.ndarray, counts: np.ndarray, tile_type: TileType, packed: bool
) -> int:
    """A lower bound on the virtual tiles `Packer` takes for `counts[i]` blocks of
    `heights[i]` x `widths[i]` cells each (one layer, on tiles of its own): unpacked, every
    block takes a tile (exact); packed, a block fills at least its shelf height (its rows
    rounded up to the packer's quantum) times its columns, so the tiles hold at least the
    sum of those areas."""
    if not packed:
        return int(counts.sum())
    rows, cols = tile_type.rows, tile_type.cols
    quantum = shelf_quantum(tile_type)
    shelves = np.minimum(rows, -(-heights // quantum) * quantum)
    area = int((shelves.astype(np.int64) * widths * counts).sum())
    return -(-area // (rows * cols))


NO_SHELVES: tuple[list[tuple[int, int]], FirstFit] = ([], FirstFit())


class Packer:
    """Shelf first-fit 2-D packing of blocks onto virtual tiles of one type.

    A tile is cut into shelves, row bands stacked from row 0; a block goes into the first
    shelf with room for its columns of its height class (its rows rounded up to a
    sixteenth of the tile) or, failing that, of the next taller class; else into a new
    shelf on the first tile with rows left for it, else onto a new tile. Blocks placed
    unpacked take a tile of their own; `close` stops packing into the tiles handed out
    so far (`pack=layer` closes after each layer). A packer made with `keep_blocks=False`
    only counts the tiles (`vtiles`): `place_all` returns no blocks, as the layout chooser
    measures many layouts it then drops, and building their blocks cost more than placing
    them."""

    def __init__(self, tile_type: TileType, keep_blocks: bool = True):
        self.tile_type = tile_type
        self.keep_blocks = keep_blocks
        self.quantum = shelf_quantum(tile_type)
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
        if not self.keep_blocks:
            for piece in pieces:
                self.place(len(piece.rows), len(piece.cols), packed)
            return blocks
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
