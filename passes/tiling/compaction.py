"""Compaction of sparse and squeezed arrays into column groups, with their index tables.

    Array slice(s)  ->  Pieces of the non-zero rows x columns of each column group,
                        plus one i32 vector of row-gather and column-scatter tables

`mapping=sparse` (pruning-aware, seed 000) compacts all slices of an array together;
`mapping=squeeze` (SME's squeeze-out, seed 003) each slice (bit plane) on its own, so
the high-order planes, mostly zeros, shrink the most. `similar_columns` reorders columns
so that those using the same rows share a column group. Compaction only removes zero
cells, so with a lossless ADC every mapping computes the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbarc.hardware import TileType
from xbarc.ir.tile import Array, IndexTable, Indices, Program, Slice, Span
from xbarc.passes.tiling.packing import Piece


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


@dataclass(frozen=True, slots=True)
class Kept:
    """The rows and columns that the column groups of one plane keep, [groups, column
    groups] each, and the slices (`copies`) that share this plane's pieces."""

    rows: np.ndarray
    cols: np.ndarray
    copies: int


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
        if self.reorder and 1 < width < array.cols:  # one column per group: no order helps
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
            bits = bitmask(piece)
            planes.append(Plane(piece.index, rows_or & bits != 0, cols_or & bits != 0, order))
        return planes

    def _reordered_planes(self, array: Array, width: int) -> list[Plane]:
        levels = self.program.store[array.levels]
        masks: list[tuple[int | None, np.ndarray]]
        if self.per_slice:
            unsigned = magnitudes(levels, True)
            masks = [
                (piece.index, unsigned[piece.polarity] & bitmask(piece)) for piece in array.slices
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
        cell, as one-column groups keep (each slice's own bits, when every slice is
        compacted on its own; else every slice of each non-zero weight)."""
        levels = self.program.store[array.levels]
        if not self.per_slice:
            return int(np.count_nonzero(levels)) * len(array.slices)
        unsigned = magnitudes(levels, True)
        return sum(
            int(np.count_nonzero(unsigned[piece.polarity] & bitmask(piece)))
            for piece in array.slices
        )

    def kept(self, array: Array, width: int) -> list[Kept]:
        """How many rows and columns each column group of each plane keeps at `width`: the
        sizes of the pieces `pieces` would cut, without cutting them."""
        return [
            Kept(
                plane.row_used.sum(axis=1),
                plane.col_used.sum(axis=2),
                len(array.slices) if plane.slice is None else 1,
            )
            for plane in self.planes(array, width)
        ]

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


def bitmask(piece: Slice) -> int:
    """The bits of a level's magnitude that slice `piece` holds."""
    return ((1 << piece.bits) - 1) << piece.shift


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
