"""Exact integer reads of a layer's non-zero cells, converted by the ADC as they are summed.

    sparse_read_accumulate(levels_in, columns, slice_bits, slices, sign, levels, acc)
    # acc += the read-out of every input slice of one sign's DAC levels

The fast path of integer `quant` reads (uint8 cells, integer DAC digits): instead of one
GEMM per read and input slice into a buffer of partial sums that the ADC kernel then reads
back (`gemm.integer_matmul` + `adc.adc_accumulate`), one kernel call per input sign takes
every read column of a layer, all groups and input slices at once: it sums the column's
non-zero cells times the digits of the rows they sit on, over a run of patches held in
the cache, and converts and accumulates each sum as `adc_accumulate` does. The sums are
the same exact integers and go through the same float64 conversion, so the result is
bit-identical; the gain is in what is not done: no Python call per read (a depthwise
layer has one read per channel), no zero cell multiplied (the high-order slices and the
unused polarity of a differential pair are mostly zero), no buffer of partial sums
written and read back. The digits are cut from the unfolded DAC levels (one uint8 plane
per sign, unfolded once for all slices, not once per slice), and a row's run of patches
whose levels all lie below the slice's lowest bit is skipped (the high slices of most
inputs are zero).

`SparseColumns` holds a layer's read columns in compressed form (built once per layer by
`xbarc.runtime.reads.sparse_columns`). Its numpy twin, `sparse_read_accumulate_numpy`,
multiplies a dense copy of the cells and calls `adc.adc_accumulate_numpy`.
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
from xbarc.runtime.kernels.adc import adc_accumulate_numpy


@dataclass(frozen=True)
class SparseColumns:
    """A layer's read columns, their non-zero cells in compressed sparse rows.

    Column m sums `cells[start[m]:start[m+1]]` times the digits of the input rows
    `rows[start[m]:start[m+1]]` (rows of the flat [groups x rows] unfolded input); its
    ADC code goes to output row `target[m]` (of the flat [groups x cols] accumulator)
    with the signed significance `factor[m]`, over the full scale `full_scale[m]`.
    `order[runs[k]:runs[k+1]]` are the columns of one target. Columns without a non-zero
    cell read zero, convert to code 0 and are left out."""

    start: np.ndarray  # int64 [M + 1]
    rows: np.ndarray  # int64 [nnz]
    cells: np.ndarray  # int32 [nnz], non-zero cell levels
    target: np.ndarray  # int64 [M]
    factor: np.ndarray  # int64 [M]
    full_scale: np.ndarray  # int64 [M]
    order: np.ndarray  # int64 [M]: columns sorted by target (stable)
    runs: np.ndarray  # int64 [targets + 1]
    row_count: int  # rows the cells reach (largest row + 1)
    target_count: int  # outputs the columns reach (largest target + 1)

    @classmethod
    def of(cls, start, rows, cells, target, factor, full_scale) -> SparseColumns:
        order = np.argsort(target, kind="stable")
        runs = np.flatnonzero(np.diff(target[order], prepend=-1, append=-1)).astype(np.int64)
        if not len(target):
            runs = np.zeros(1, dtype=np.int64)
        return cls(
            np.ascontiguousarray(start, dtype=np.int64),
            np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(cells, dtype=np.int32),
            np.ascontiguousarray(target, dtype=np.int64),
            np.ascontiguousarray(factor, dtype=np.int64),
            np.ascontiguousarray(full_scale, dtype=np.int64),
            order.astype(np.int64),
            runs,
            int(rows.max()) + 1 if len(rows) else 0,
            int(target.max()) + 1 if len(target) else 0,
        )

    def dense(self, rows: int) -> np.ndarray:
        """The cells as a dense int64 matrix [M, rows] (for the numpy twin and tests)."""
        matrix = np.zeros((len(self.target), rows), dtype=np.int64)
        column = np.repeat(np.arange(len(self.target)), np.diff(self.start))
        np.add.at(matrix, (column, self.rows), self.cells)
        return matrix


# Patches per task of the kernel, and per entry of `chunk_maxima`.
CHUNK = 512


def sparse_read_accumulate(
    levels_in: np.ndarray,
    columns: SparseColumns,
    slice_bits: int,
    slices: int,
    sign: int,
    levels: int,
    acc: np.ndarray,
    maxima: np.ndarray | None = None,
) -> None:
    """acc += the ADC read-out of every column of `columns` driven by each input slice.

    `levels_in` uint8 [rows, P] (the unfolded DAC levels of one sign's magnitude, groups
    flattened into rows); slice j < `slices` drives the digits (levels_in >> shift) &
    (2^slice_bits - 1), shift = j x slice_bits, with the significance sign x 2^shift.
    Each column's sum s[p] = sum of cells x digits[rows, p] is converted as
    `adc.adc_accumulate` converts it (levels > 0: code = clip(rint(s * levels /
    full_scale), 0, levels) in float64, acc[target] += factor * significance * full_scale
    * code; levels == 0: acc += factor * significance * s). `acc` is int64 [outputs, P].
    `maxima` (from `chunk_maxima`) lets the kernel skip the runs of patches of a row whose
    levels are all below 2^shift (their digits are zero)."""
    _check(levels_in, columns, acc)
    if not 1 <= slice_bits <= 8 or not 0 <= (slices - 1) * slice_bits < 8 or sign not in (1, -1):
        raise ValueError(
            f"sparse_read_accumulate: {slices} slices of {slice_bits} bits, sign {sign}"
        )
    if backend() == "numpy":
        sparse_read_accumulate_numpy(levels_in, columns, slice_bits, slices, sign, levels, acc)
        return
    if maxima is None:
        maxima = chunk_maxima(levels_in)
    use_threads(PARALLEL_WORK)
    sparse_read_accumulate_numba(
        levels_in,
        maxima,
        columns.start,
        columns.rows,
        columns.cells,
        columns.order,
        columns.runs,
        columns.target,
        columns.factor,
        columns.full_scale,
        np.int32(slice_bits),
        int(slices),
        np.int64(sign),
        int(levels),
        CHUNK,
        acc,
    )


def sparse_read_accumulate_numpy(
    levels_in: np.ndarray,
    columns: SparseColumns,
    slice_bits: int,
    slices: int,
    sign: int,
    levels: int,
    acc: np.ndarray,
) -> None:
    _check(levels_in, columns, acc)
    cells = columns.dense(levels_in.shape[0])
    for j in range(slices):
        shift = j * slice_bits
        digits = (levels_in.astype(np.int64) >> shift) & ((1 << slice_bits) - 1)
        factor = columns.factor * (sign << shift)
        partial = cells @ digits
        adc_accumulate_numpy(partial, columns.target, factor, columns.full_scale, levels, acc)


def chunk_maxima(levels_in: np.ndarray) -> np.ndarray:
    """The largest level of each row in each run of CHUNK patches: uint8 [rows, runs]."""
    rows, patches = levels_in.shape
    runs = -(-patches // CHUNK)
    if backend() == "numpy":
        return chunk_maxima_numpy(levels_in)
    maxima = np.empty((rows, runs), dtype=np.uint8)
    use_threads(levels_in.size)
    chunk_maxima_numba(levels_in, CHUNK, maxima)
    return maxima


def chunk_maxima_numpy(levels_in: np.ndarray) -> np.ndarray:
    rows, patches = levels_in.shape
    runs = -(-patches // CHUNK)
    padded = np.zeros((rows, runs * CHUNK), dtype=np.uint8)
    padded[:, :patches] = levels_in
    return padded.reshape(rows, runs, CHUNK).max(axis=2, initial=0)


def _check(digits: np.ndarray, columns: SparseColumns, acc: np.ndarray) -> None:
    if digits.dtype != np.uint8 or digits.ndim != 2 or not digits.flags.c_contiguous:
        raise ValueError(
            f"sparse_read_accumulate: levels are {digits.dtype} {digits.shape}; "
            "expected C-contiguous uint8 [rows, P]"
        )
    check_accumulator("sparse_read_accumulate", acc, digits.shape[1])
    if columns.row_count > digits.shape[0]:
        raise ValueError("sparse_read_accumulate: cells on rows beyond the levels' rows")
    if columns.target_count > acc.shape[0]:
        raise ValueError("sparse_read_accumulate: targets beyond the accumulator's rows")


# ---------------------------------------------------------------------------------------
# Numba kernel, compiled on first use


@numba_kernel(parallel=True)
def chunk_maxima_numba(levels_in, chunk, maxima):
    """`chunk_maxima` into `maxima`."""
    rows, patches = levels_in.shape
    runs = maxima.shape[1]
    for task in prange(rows * runs):
        row = task // runs
        first = task % runs * chunk
        largest = np.uint8(0)
        for i in range(first, min(first + chunk, patches)):
            largest = max(largest, levels_in[row, i])
        maxima[row, task % runs] = largest


@numba_kernel(parallel=True)
def sparse_read_accumulate_numba(
    levels_in,
    maxima,
    start,
    rows,
    cells,
    order,
    runs,
    target,
    factor,
    full_scale,
    slice_bits,
    slices,
    sign,
    levels,
    chunk,
    acc,
):
    """`sparse_read_accumulate` on checked arguments (`slice_bits` int32), `maxima` per
    run of `chunk` patches."""
    patches = levels_in.shape[1]
    source = levels_in.reshape(-1)
    dest = acc.reshape(-1)
    top = np.float64(levels)
    mask = np.int32((1 << slice_bits) - 1)
    chunks = maxima.shape[1]
    targets = len(runs) - 1
    longest = 0
    for m in range(len(start) - 1):
        longest = max(longest, start[m + 1] - start[m])
    # One task per (run of patches, target): the columns of one target stay in one task
    # (no races on `acc`), their codes summed in the task's own buffer and added to `acc`
    # once (adding each column's codes to `acc` moved 6x the memory); a column's sums
    # over the run stay in the cache from the multiply-adds to their conversion;
    # consecutive tasks (one thread's) take the same run of patches, whose levels stay in
    # the cache for all targets and slices (target-major order ran 2-3x slower on 864-row
    # layers). The cells whose row has digits in the run are taken four at a time (one
    # pass over the sums for four rows); loops over patches run over contiguous memory
    # with unsigned flat indices, so they vectorize.
    for task in prange(targets * chunks):
        k = task % targets
        run = task // targets
        first = run * chunk
        length = min(first + chunk, patches) - first
        into = np.uint64(target[order[runs[k]]] * patches + first)
        sums = np.zeros(chunk, dtype=np.int32)
        total = np.zeros(chunk, dtype=np.int64)
        lines = np.empty(longest + 4, dtype=np.uint64)
        weights = np.zeros(longest + 4, dtype=np.int32)
        touched = False
        for j in range(slices):
            shift = np.int32(j * slice_bits)
            lowest = np.uint8(1 << shift)  # a row's run with no level this high reads 0
            for index in range(runs[k], runs[k + 1]):
                m = order[index]
                active = 0
                for e in range(start[m], start[m + 1]):
                    if maxima[rows[e], run] >= lowest:
                        lines[active] = np.uint64(rows[e] * patches + first)
                        weights[active] = cells[e]
                        active += 1
                if active == 0:
                    continue  # every sum is 0, so is every code
                touched = True
                for i in range(length):
                    sums[i] = 0
                for a in range(active, (active + 3) // 4 * 4):  # pad to four: weight 0
                    lines[a] = lines[0]
                    weights[a] = 0
                for a in range(0, active, 4):
                    c0, c1, c2, c3 = weights[a], weights[a + 1], weights[a + 2], weights[a + 3]
                    line0, line1, line2, line3 = lines[a], lines[a + 1], lines[a + 2], lines[a + 3]
                    for i in range(length):
                        at = np.uint64(i)
                        sums[i] += (
                            c0 * ((np.int32(source[line0 + at]) >> shift) & mask)
                            + c1 * ((np.int32(source[line1 + at]) >> shift) & mask)
                            + c2 * ((np.int32(source[line2 + at]) >> shift) & mask)
                            + c3 * ((np.int32(source[line3 + at]) >> shift) & mask)
                        )
                weight = factor[m] * (sign << shift)
                if levels == 0:
                    for i in range(length):
                        total[i] += weight * np.int64(sums[i])
                    continue
                step = weight * full_scale[m]
                scale = np.float64(full_scale[m])
                for i in range(length):
                    code = np.rint(np.float64(sums[i]) * top / scale)
                    total[i] += step * np.int64(min(max(code, 0.0), top))
        if touched:
            for i in range(length):
                dest[into + np.uint64(i)] += total[i]
