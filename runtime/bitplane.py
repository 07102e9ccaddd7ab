"""A layer's integer reads as bit planes (`BitplaneColumns`), for `bitplane_accumulate`.

    columns = bitplane_columns(reads, rows, cols, slice_bits, levels, offset)

Built once per layer, on its first run, from its read plans: each distinct input segment
(a group and its source rows) once, each read column's cells cut into bit planes and
packed 64 rows a word, and for offset encoding one column of ones per offset-corrected
output and read (its sums are the read's input sums, which the digital correction
subtracts: `offset` x unit each).
"""

from __future__ import annotations

import numpy as np

from xbarc.runtime.kernels.bitplane import BitplaneColumns, pack_bits
from xbarc.runtime.reads import ReadPlan, index_key

BIT_LENGTH = np.array([value.bit_length() for value in range(256)], dtype=np.int64)


def bitplane_columns(
    reads: list[ReadPlan], rows: int, cols: int, slice_bits: int, levels: int, offset: int
) -> BitplaneColumns:
    """The read columns of a layer's integer reads (every group): segments on the rows of
    the flat [groups x `rows`] unfolded input, codes into the flat [groups x `cols`]
    accumulator, read by DAC slices of `slice_bits` bits and converted over `levels` ADC
    levels (0: lossless); `offset`: the offset of offset encoding (2^(weight bits - 1)),
    subtracted times the input sums from the outputs of the reads' `offset_columns`.
    Columns whose cells are all zero read zero and are left out."""
    segment_of: dict[tuple, int] = {}
    segments: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {
        name: [] for name in ("segment", "planes", "cells", "factor", "full_scale", "target")
    }

    def add(segment, planes, cells, factor, full_scale, target) -> None:
        values = (segment, planes, cells, factor, full_scale, target)
        for name, value in zip(parts, values, strict=True):
            parts[name].append(np.asarray(value))

    unit = levels or 1
    for read in reads:
        key = (read.group, index_key(read.rows))
        if key not in segment_of:
            segment_of[key] = len(segments)
            segments.append(read.group * rows + np.arange(rows, dtype=np.int64)[read.rows])
        segment = segment_of[key]
        cells_t = np.asarray(read.cells_t).astype(np.int64)  # integers: uint8 or exact floats
        largest = cells_t.max(axis=1, initial=0)
        kept = np.flatnonzero(largest)  # columns of zero cells read zero: left out
        planes = BIT_LENGTH[largest[kept]]
        packed = pack_bits(cells_t[kept].T, int(planes.max(initial=0)))  # [b, words, kept]
        # each kept column's planes below its own, plane-major: [planes[k], words]
        ordered = packed.transpose(2, 0, 1)
        used = np.arange(packed.shape[0])[None, :, None] < planes[:, None, None]
        used = np.broadcast_to(used, ordered.shape)
        count = len(kept)
        add(
            np.full(count, segment),
            planes,
            ordered[used],
            read.factor[kept],
            read.full_scale[kept] if levels else np.zeros(count, np.int64),
            read.group * cols + read.target[kept],
        )
        if read.offset_columns is None:
            continue
        corrected = np.arange(cols)[read.offset_columns]
        ones = pack_bits(np.ones(cells_t.shape[1], dtype=np.int64), 1).reshape(-1)
        count = len(corrected)
        add(
            np.full(count, segment),
            np.ones(count, np.int64),
            np.tile(ones, count),
            np.full(count, -offset * unit),
            np.zeros(count, np.int64),
            read.group * cols + corrected,
        )
    joined = {
        name: np.concatenate(values) if values else np.zeros(0, np.int64)
        for name, values in parts.items()
    }
    return BitplaneColumns.of(
        segments,
        joined["segment"].astype(np.int64),
        joined["planes"].astype(np.int64),
        joined["cells"].astype(np.uint64),
        joined["factor"].astype(np.int64),
        joined["full_scale"].astype(np.int64),
        joined["target"].astype(np.int64),
        slice_bits,
        levels,
    )


# Layers whose read columns hold fewer than SPARSE_CELLS non-zero cells on average, or
# whose packed input words serve fewer than SHARED_WORD read columns each, run faster
# through `sparse_read_accumulate`. Measured per layer (each layer's read time on the
# digits fixtures and their 80/90 %-pruned versions, batch 360, best of 3, the two paths
# in the same process; sparse time / bit-plane time): depthwise 3x3 convolutions (9-row
# segments of one channel each, ~8 columns a packed word: the packing writes 8 planes x
# 8 bytes for 9 levels) 0.72-0.86 unpruned, 0.62-0.84 at 90 % pruning; pruned pointwise
# and small layers of 0.4-1.4 non-zero cells a column 0.50-0.94; against 1.05-1.22 for
# first convolutions (one 9-row segment read by 128 columns), 1.4-2.8 for dense reads of
# 16-96 rows (where the sparse kernel was not even taken: read by read) and 0.98-1.24 for
# 90 %-pruned 72-row convolutions (2.5 cells a column). With DAC steps of one bit (the
# faithful default) the depthwise layers take neither: `_choose_path` looks reads of at
# most 10 rows up in tables first (`depthwise_accumulate`: the digits MobileNet's
# depthwise layers take 4.6-4.9x less CPU than on the sparse kernel, the whole layer, one
# thread); this rule still picks between the two kernels for them at DAC steps of 2
# bits. At DAC steps of one bit the bit-plane kernel's faithful-default loop (conversions
# by reciprocal, one word per column where it can, no shifts for 2-bit cells) takes the
# rest: every layer this rule sent to the sparse kernel on the 16 digits fixtures (pruned
# pointwise convolutions and Gemms of 0.7-1.4 non-zero cells a column) ran 1.0-2.0x
# faster as bit planes (the whole layer, one thread, CPU time, the same process:
# mobilenet_p90's pointwise layers 23.4, 7.4 and 8.6 ms against 11.6, 3.6 and 6.5;
# resnet_p90's shortcut 7.0 against 3.7; the last Gemms of 10 columns alike).
SPARSE_CELLS = 1.5
SHARED_WORD = 16


def prefers_sparse(reads: list[ReadPlan], columns: BitplaneColumns) -> bool:
    """Whether a layer's integer reads run faster through `sparse_read_accumulate` than
    as bit planes (see SPARSE_CELLS): at DAC steps of 2 bits, very sparse cells, or
    segments too short to share their packed words among many columns; at steps of one
    bit, never."""
    if columns.slice_bits == 1:
        return False
    read_columns = sum(len(read.target) for read in reads)
    nonzero = sum(int(np.count_nonzero(read.cells_t)) for read in reads)
    if not read_columns or not columns.words:
        return False
    return (
        nonzero / read_columns < SPARSE_CELLS or len(columns.target) / columns.words < SHARED_WORD
    )
