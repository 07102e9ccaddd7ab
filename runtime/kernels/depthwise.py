"""Depthwise reads: short bit-serial reads looked up in a table of their input bit patterns.

    depthwise_accumulate(levels_in, gather, columns, sign, acc)   # acc += every read-out

A read that drives few rows (a depthwise 3x3 convolution: 9 rows of one channel, one
output column per group; a single-channel 3x3 stem) with one input bit a DAC step has
few possible inputs: the n bits that plane j of its rows holds, a pattern below 2^n. Its
columns' sums, their ADC codes and what they add to each output are a function of that
pattern alone, so they are computed once per layer, for every pattern, into a table per
(input segment, output): table[pattern] = sum over the segment's columns on that output
of factor x full_scale x code(sum of the cells on the pattern's set bits), exactly as
`adc.adc_accumulate_numpy` converts and adds them, the offset correction included
(`xbarc.runtime.depthwise.depthwise_columns`). A run then adds, per output, patch and
input plane j, sign x 2^j x table[pattern_j]: one lookup where the bit-plane kernel makes
a popcount sum and a conversion for every read column (8 of them per output for 8-bit
weights on 2-bit cells, differential), and the sparse kernel multiply-adds every cell.

The levels are read straight from the layer's input (an implicit im2col through the
offsets of `fused.PatchGather`; nothing of size [rows, P] is written), and every pattern
is made in the pass that looks it up. Integer sums in any order give the same int64, so the
result is bit-identical to the by-read reference; a plane whose bits are all zero over a
tile has pattern 0 everywhere, which adds table[0] = 0 (a zero sum converts to code 0),
and is skipped. `depthwise_finish` writes a whole layer's output itself for one sign of
inputs (after a ReLU) where each output has one entry: its totals dequantized as
`fused.dequantize_items` does it (plus the float32 bias), items first, with no
accumulator. The numpy twin (`depthwise_accumulate_numpy`) unfolds the levels through
the same offsets and indexes the tables with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbarc.runtime.kernels import (
    PARALLEL_WORK,
    backend,
    check_accumulator,
    numba_kernel,
    prange,
    use_threads,
)
from xbarc.runtime.kernels.bitplane import EMPTY_FINISH, finishing
from xbarc.runtime.kernels.fused import (
    PatchGather,
    check_gather,
    dequantize_items,
    tile_shape,
    unfold_levels,
)

# Rows a table's pattern covers at most: 2^10 entries of 8 bytes, 8 KB a table (a 3x3
# depthwise read has 9 rows: 4 KB), so a task's tables stay in the L1/L2 cache.
TABLE_ROWS = 10
# Patches a task takes (whole items where they are small): its patterns [8, TILE] int32
# and sums [TILE] int64 stay in the L1 cache.
TILE = 512
PLANES = 8  # input bit planes of uint8 levels


@dataclass(frozen=True)
class DepthwiseColumns:
    """A layer's reads as tables over their input bit patterns.

    Segment s drives the flat rows (groups x rows, the rows of the gather's offsets)
    `segment_rows[segment_start[s]:segment_start[s+1]]`, row i of it on bit i of the
    pattern; it adds to output `target[e]` (of the flat [groups x cols] accumulator)
    `tables[e, pattern]` for e in `entry_start[s]:entry_start[s+1]` (the outputs its
    columns reach, one entry each)."""

    segment_start: np.ndarray  # int64 [S + 1]
    segment_rows: np.ndarray  # int64 [rows of all segments]
    entry_start: np.ndarray  # int64 [S + 1]
    target: np.ndarray  # int64 [E]
    tables: np.ndarray  # int64 [E, 2^pattern_bits]
    row_count: int  # flat rows the segments reach (largest + 1)
    target_count: int  # outputs the entries reach (largest target + 1)
    largest: int  # the largest |table entry|

    @property
    def pattern_bits(self) -> int:
        return int(self.tables.shape[1]).bit_length() - 1

    @classmethod
    def of(
        cls, segments: list[np.ndarray], entries: list[list[tuple[int, np.ndarray]]]
    ) -> DepthwiseColumns:
        """From each segment's flat rows and its entries (target, table over the patterns
        of its rows: 2^len(rows) int64 values), padded to the longest segment's patterns."""
        lengths = [len(rows) for rows in segments]
        bits = max(lengths, default=0)
        if bits > TABLE_ROWS:
            raise ValueError(f"DepthwiseColumns: a segment of {bits} rows; at most {TABLE_ROWS}")
        segment_start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        counts = [len(of_segment) for of_segment in entries]
        entry_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = [entry for of_segment in entries for entry in of_segment]
        tables = np.zeros((len(flat), 1 << bits), dtype=np.int64)
        for e, (_, table) in enumerate(flat):
            tables[e, : len(table)] = table
        target = np.array([t for t, _ in flat], dtype=np.int64)
        rows = np.concatenate(segments).astype(np.int64) if segments else np.zeros(0, np.int64)
        return cls(
            segment_start,
            rows,
            entry_start,
            target,
            tables,
            int(rows.max()) + 1 if len(rows) else 0,
            int(target.max()) + 1 if len(target) else 0,
            int(np.abs(tables).max(initial=0)),
        )


def depthwise_accumulate(
    levels_in: np.ndarray,
    gather: PatchGather,
    columns: DepthwiseColumns,
    sign: int,
    acc: np.ndarray,
) -> None:
    """acc += the read-out of every segment of `columns` for each input bit plane j of
    one sign's DAC levels `levels_in` (uint8, the layer input's layout, items first: any
    shape of size items x `gather.image`): sign x 2^j x tables[e, pattern] into
    target[e], pattern bit i the plane's bit of the segment's row i at the patch (the
    padding reads 0). `acc` int64 [outputs, items x gather.pixels]."""
    _check(levels_in, gather, columns, sign, acc)
    if backend() == "numpy":
        depthwise_accumulate_numpy(levels_in, gather, columns, sign, acc)
        return
    _run_kernel(levels_in, gather, columns, sign, acc, None)


def depthwise_finish(
    levels_in: np.ndarray,
    gather: PatchGather,
    columns: DepthwiseColumns,
    sign: int,
    unit: int,
    input_scale: float,
    column_scale: np.ndarray,
    out: np.ndarray,
    bias: np.ndarray | None = None,
) -> None:
    """`depthwise_accumulate` of one sign into a zero accumulator, then
    `fused.dequantize_items` of it into `out` (float32 [items, outputs, pixels]
    C-contiguous, the layer's image items first; `column_scale` float64 [outputs]), in
    one pass: each task writes its outputs dequantized (float32(float64(total) / unit x
    input_scale x column_scale[t]): the same operations, the same bits), with no
    accumulator filled, added to and read back. For layers whose outputs each one entry
    reaches at most (`one_entry_each`); outputs none reaches are the dequantized zero.
    `bias` (float32 [outputs], optional): added in float32 in the same pass."""
    items, count, pixels = out.shape
    if (
        out.dtype != np.float32
        or not out.flags.c_contiguous
        or pixels != gather.pixels
        or items * gather.image != levels_in.size
        or column_scale.shape != (count,)
        or not one_entry_each(columns)
        or not (bias is None or (bias.dtype == np.float32 and bias.shape == (count,)))
    ):
        raise ValueError(
            f"depthwise_finish: out {out.dtype} {out.shape}, column scales "
            f"{column_scale.shape}, {gather.pixels} pixels an item, entries a target "
            f"{np.bincount(columns.target).max(initial=0)}"
        )
    column_scale = np.ascontiguousarray(column_scale, dtype=np.float64)
    patches = items * pixels
    if backend() == "numpy":
        acc = np.zeros((count, patches), dtype=np.int64)
        depthwise_accumulate_numpy(levels_in, gather, columns, sign, acc)
        dequantize_items(acc, unit, input_scale, column_scale, out)
        if bias is not None:
            out += bias[None, :, None]
        return
    _check(levels_in, gather, columns, sign, np.zeros((count, patches), dtype=np.int64))
    finish = finishing(columns.target, unit, input_scale, column_scale, out, bias)
    _run_kernel(levels_in, gather, columns, sign, None, finish)


def one_entry_each(columns: DepthwiseColumns) -> bool:
    """Whether every output of `columns` is reached by one entry at most."""
    return int(np.bincount(columns.target).max(initial=0)) <= 1


# `depthwise_accumulate_numba`'s finishing arguments when it adds into an accumulator


def _run_kernel(levels_in, gather, columns, sign, acc, finish) -> None:
    """`depthwise_accumulate_numba` adding into `acc` or, with `finish` (unit, input
    scale, column scales, out), writing dequantized into `out` (`depthwise_finish`)."""
    items = levels_in.size // gather.image
    # a zero after each item's levels, which the padding's offsets read
    padded = np.zeros((items, gather.image + 1), dtype=np.uint8)
    padded[:, : gather.image] = levels_in.reshape(items, gather.image)
    tile_items, tile_pixels = tile_shape(TILE, items, gather.pixels)
    use_threads(PARALLEL_WORK)
    depthwise_accumulate_numba(
        padded,
        gather.offsets,
        columns.segment_start,
        columns.segment_rows,
        columns.entry_start,
        columns.target,
        columns.tables,
        np.int64(sign),
        tile_items,
        tile_pixels,
        np.zeros((1, 1), dtype=np.int64) if acc is None else acc,
        finish is not None,
        *(finish if finish is not None else EMPTY_FINISH),
    )


def depthwise_accumulate_numpy(
    levels_in: np.ndarray,
    gather: PatchGather,
    columns: DepthwiseColumns,
    sign: int,
    acc: np.ndarray,
) -> None:
    _check(levels_in, gather, columns, sign, acc)
    unfolded = unfold_levels(levels_in, gather)  # int64 [flat rows, P]
    for s in range(len(columns.segment_start) - 1):
        rows = columns.segment_rows[columns.segment_start[s] : columns.segment_start[s + 1]]
        bit = np.arange(len(rows), dtype=np.int64)[:, None]
        for j in range(PLANES):
            pattern = (((unfolded[rows] >> j) & 1) << bit).sum(axis=0)
            for e in range(columns.entry_start[s], columns.entry_start[s + 1]):
                acc[columns.target[e]] += (sign << j) * columns.tables[e, pattern]


def _check(levels_in, gather, columns, sign, acc) -> None:
    if levels_in.dtype != np.uint8 or levels_in.size % max(gather.image, 1):
        raise ValueError(
            f"depthwise_accumulate: levels are {levels_in.dtype} {levels_in.shape}; expected "
            f"uint8 items of {gather.image}"
        )
    check_gather("depthwise_accumulate", gather, columns.row_count, "segments")
    if sign not in (1, -1):
        raise ValueError(f"depthwise_accumulate: sign {sign}")
    items = levels_in.size // max(gather.image, 1)
    check_accumulator("depthwise_accumulate", acc, items * gather.pixels)
    if columns.target_count > acc.shape[0]:
        raise ValueError("depthwise_accumulate: targets beyond the accumulator's rows")
    # what a patch adds to an output: at most (2^8 - 1) x the largest entry per entry on it
    sharing = int(np.bincount(columns.target).max()) if len(columns.target) else 0
    if columns.largest * (2**PLANES - 1) * sharing >= 2**62:
        raise ValueError("depthwise_accumulate: table entries too large for int64 sums")


# ---------------------------------------------------------------------------------------
# Numba kernel, compiled on first use


@numba_kernel(parallel=True)
def depthwise_accumulate_numba(
    levels_in,
    offsets,
    segment_start,
    segment_rows,
    entry_start,
    target,
    tables,
    sign,
    tile_items,
    tile_pixels,
    acc,
    finish,
    unit,
    input_scale,
    column_scale,
    out,
    has_bias,
    bias,
):
    """`depthwise_accumulate` on checked arguments: `levels_in` uint8 [items, image + 1],
    each item's levels and a zero (read by the padding's offsets). With `finish`,
    `depthwise_finish`: the totals dequantized into `out` (`acc` unused)."""
    items, stride = levels_in.shape
    pixels = offsets.shape[1]
    patches = acc.shape[1]
    source = levels_in.reshape(-1)
    gathers = offsets.reshape(-1)
    dest = acc.reshape(-1)
    width = tables.shape[1]
    flat_tables = tables.reshape(-1)
    segments = len(segment_start) - 1
    item_blocks = (items + tile_items - 1) // tile_items
    pixel_blocks = (pixels + tile_pixels - 1) // tile_pixels
    tile = tile_items * tile_pixels
    # One task per tile of patches (a block of items x a block of their pixels), which it
    # owns in `acc` for every output: no races. Per segment, the levels of its rows over
    # the tile are gathered side by side, a byte each, into two words a patch (rows 0-7
    # and 8-15); each word's 8 x 8 bit matrix transposed in place puts plane j's bits of
    # its rows into byte j: the patterns. Then each of the segment's outputs adds its
    # table's entries for them. Loops over the tile's patches run over contiguous memory
    # with unsigned indices, so they vectorize (the lookups are gathers).
    for task in prange(item_blocks * pixel_blocks):
        first_item = task // pixel_blocks * tile_items
        first_pixel = task % pixel_blocks * tile_pixels
        n = min(tile_items, items - first_item)
        q = min(tile_pixels, pixels - first_pixel)
        length = n * q
        low_rows = np.empty(tile, dtype=np.uint64)
        high_rows = np.empty(tile, dtype=np.uint64)
        pattern = np.empty((8, tile), dtype=np.uint64)
        total = np.empty(tile, dtype=np.int64)
        byte = np.uint64(0xFF)
        for s in range(segments):
            for i in range(length):
                low_rows[i] = 0
                high_rows[i] = 0
            count = segment_start[s + 1] - segment_start[s]
            for r in range(segment_start[s], segment_start[s + 1]):
                row = segment_rows[r]
                bit = r - segment_start[s]
                words = low_rows if bit < 8 else high_rows
                place = np.uint64(8 * (bit % 8))
                for b in range(n):
                    at = np.uint64((first_item + b) * stride)
                    into = np.uint64(b * q)
                    line = np.uint64(row * pixels + first_pixel)
                    for p in range(q):
                        offset = np.uint64(gathers[line + np.uint64(p)])
                        words[into + np.uint64(p)] |= np.uint64(source[at + offset]) << place
            seen = np.uint64(0)  # the rows' levels OR-ed: the planes set anywhere in the tile
            for i in range(length):
                seen |= low_rows[i] | high_rows[i]
            seen |= seen >> np.uint64(32)
            seen |= seen >> np.uint64(16)
            seen |= seen >> np.uint64(8)
            if seen & byte == 0:  # every pattern is 0: adds table[0] = 0
                if finish:  # the outputs' dequantized zero
                    for i in range(length):
                        total[i] = 0
                    for e in range(entry_start[s], entry_start[s + 1]):
                        write_items(
                            total,
                            target[e],
                            first_item,
                            first_pixel,
                            n,
                            q,
                            unit,
                            input_scale,
                            column_scale[target[e]],
                            has_bias,
                            bias,
                            out,
                        )
                continue
            for i in range(length):
                x = transpose8(low_rows[i])
                y = transpose8(high_rows[i]) if count > 8 else np.uint64(0)
                for j in range(8):
                    shift = np.uint64(8 * j)
                    pattern[j, i] = ((x >> shift) & byte) | (((y >> shift) & byte) << np.uint64(8))
            for e in range(entry_start[s], entry_start[s + 1]):
                table = np.uint64(e * width)
                for i in range(length):
                    total[i] = 0
                for j in range(8):
                    if (seen >> np.uint64(j)) & np.uint64(1) == 0:
                        continue  # pattern 0 throughout
                    for i in range(length):
                        total[i] += flat_tables[table + pattern[j, i]] << j
                if finish:
                    if sign < 0:
                        for i in range(length):
                            total[i] = -total[i]
                    write_items(
                        total,
                        target[e],
                        first_item,
                        first_pixel,
                        n,
                        q,
                        unit,
                        input_scale,
                        column_scale[target[e]],
                        has_bias,
                        bias,
                        out,
                    )
                    continue
                into = np.uint64(target[e] * patches + first_item * pixels + first_pixel)
                for b in range(n):
                    at = into + np.uint64(b * pixels)
                    for p in range(q):
                        dest[at + np.uint64(p)] += sign * total[b * q + p]


@numba_kernel(inline="always")
def write_items(
    total, t, first_item, first_pixel, n, q, unit, input_scale, scale, has_bias, bias, out
):
    """out[first_item + b, t, first_pixel + p] = total[b x q + p] dequantized, as
    `fused.dequantize_items` computes it, plus bias[t] in float32 if `has_bias`, for b <
    n, p < q."""
    _, count, pixels = out.shape
    image = out.reshape(-1)
    added = bias[t] if has_bias else np.float32(0)
    for b in range(n):
        into = np.uint64(((first_item + b) * count + t) * pixels + first_pixel)
        at = b * q
        if has_bias:
            for p in range(q):
                value = np.float64(total[at + p]) / unit * input_scale * scale
                image[into + np.uint64(p)] = np.float32(value) + added
        else:
            for p in range(q):
                value = np.float64(total[at + p]) / unit * input_scale * scale
                image[into + np.uint64(p)] = np.float32(value)


@numba_kernel(inline="always")
def transpose8(x):
    """The 8 x 8 bit matrix of uint64 `x` (byte r: row r) transposed: byte j then holds bit
    j of the 8 bytes (bit r: byte r's)."""
    t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
    x = x ^ t ^ (t << np.uint64(7))
    t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
    x = x ^ t ^ (t << np.uint64(14))
    t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
    return x ^ t ^ (t << np.uint64(28))
