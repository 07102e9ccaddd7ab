"""Exact integer reads of a layer's non-zero cells, converted by the ADC as they are summed.

    sparse_read_accumulate(digits, columns, significance, levels, acc)   # acc += read-out

The fast path of integer `quant` reads (uint8 cells, int8 DAC digits): instead of one
GEMM per read and input slice into a buffer of partial sums that the ADC kernel then reads
back (`gemm.integer_matmul` + `adc.adc_accumulate`), one kernel call per input slice takes
every read column of a layer, all groups at once: it sums the column's non-zero cells
times the digits of the rows they sit on, over a run of patches held in the cache, and
converts and accumulates each sum as `adc_accumulate` does. The sums are the same exact
integers and go through the same float64 conversion, so the result is bit-identical; the
gain is in what is not done: no Python call per read (a depthwise layer has one read per
channel), no zero cells multiplied (the high-order slices and the unused polarity of a
differential pair are mostly zero), no partial-sum buffer written and read back.

`SparseColumns` holds a layer's read columns in compressed form (built once per layer by
`xbarc.runtime.reads.sparse_columns`). Its numpy twin, `sparse_read_accumulate_numpy`,
multiplies a dense copy of the cells and calls `adc.adc_accumulate_numpy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbarc.runtime.kernels import PARALLEL_WORK, backend, numba_kernel, prange, use_threads
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
        )

    def dense(self, rows: int) -> np.ndarray:
        """The cells as a dense int64 matrix [M, rows] (for the numpy twin and tests)."""
        matrix = np.zeros((len(self.target), rows), dtype=np.int64)
        column = np.repeat(np.arange(len(self.target)), np.diff(self.start))
        np.add.at(matrix, (column, self.rows), self.cells)
        return matrix


def sparse_read_accumulate(
    digits: np.ndarray, columns: SparseColumns, significance: int, levels: int, acc: np.ndarray
) -> None:
    """acc += the ADC read-out of every column of `columns` driven by `digits`.

    `digits` int8 [rows, P] (the unfolded input slice, groups flattened into rows); each
    column's sum s[p] = sum of cells x digits[rows, p] is converted as `adc.adc_accumulate`
    converts it (levels > 0: code = clip(rint(s * levels / full_scale), 0, levels) in
    float64, acc[target] += factor * significance * full_scale * code; levels == 0: acc
    += factor * significance * s). `acc` is int64 [outputs, P]."""
    _check(digits, columns, acc)
    if backend() == "numpy":
        sparse_read_accumulate_numpy(digits, columns, significance, levels, acc)
        return
    use_threads(PARALLEL_WORK)
    sparse_read_accumulate_numba(
        digits,
        columns.start,
        columns.rows,
        columns.cells,
        columns.order,
        columns.runs,
        columns.target,
        columns.factor,
        columns.full_scale,
        np.int64(significance),
        int(levels),
        acc,
    )


def sparse_read_accumulate_numpy(
    digits: np.ndarray, columns: SparseColumns, significance: int, levels: int, acc: np.ndarray
) -> None:
    _check(digits, columns, acc)
    partial = columns.dense(digits.shape[0]) @ digits.astype(np.int64)
    factor = columns.factor * significance
    adc_accumulate_numpy(partial, columns.target, factor, columns.full_scale, levels, acc)


def _check(digits: np.ndarray, columns: SparseColumns, acc: np.ndarray) -> None:
    if digits.dtype != np.int8 or digits.ndim != 2 or not digits.flags.c_contiguous:
        raise ValueError(
            f"sparse_read_accumulate: digits are {digits.dtype} {digits.shape}; "
            "expected C-contiguous int8 [rows, P]"
        )
    if (
        acc.dtype != np.int64
        or acc.ndim != 2
        or acc.shape[1] != digits.shape[1]
        or not (acc.flags.writeable and acc.flags.c_contiguous)
    ):
        raise ValueError(
            f"sparse_read_accumulate: acc is {acc.dtype} {acc.shape}; expected writable "
            f"C-contiguous int64 (outputs, {digits.shape[1]})"
        )
    if len(columns.rows) and columns.rows.max() >= digits.shape[0]:
        raise ValueError("sparse_read_accumulate: cells on rows beyond the digits' rows")
    if len(columns.target) and columns.target.max() >= acc.shape[0]:
        raise ValueError("sparse_read_accumulate: targets beyond the accumulator's rows")


# ---------------------------------------------------------------------------------------
# Numba kernel, compiled on first use


@numba_kernel(parallel=True)
def sparse_read_accumulate_numba(
    digits, start, rows, cells, order, runs, target, factor, full_scale, significance, levels, acc
):
    """`sparse_read_accumulate` on checked arguments."""
    patches = digits.shape[1]
    source = digits.reshape(-1)
    dest = acc.reshape(-1)
    top = np.float64(levels)
    chunk = 512
    chunks = (patches + chunk - 1) // chunk
    targets = len(runs) - 1
    # One task per (run of patches, target): the columns of one target stay in one task
    # (no races on `acc`); a column's sums over the run stay in the cache from the
    # multiply-adds to their conversion; consecutive tasks (one thread's) take the same
    # run of patches, whose digits stay in the cache for all targets (target-major order
    # ran 2-3x slower on 864-row layers). Cells are taken four at a time (one pass over
    # the sums for four rows), loops over patches run over contiguous memory with
    # unsigned flat indices, so they vectorize.
    for task in prange(targets * chunks):
        k = task % targets
        first = task // targets * chunk
        length = min(first + chunk, patches) - first
        into = np.uint64(target[order[runs[k]]] * patches + first)
        sums = np.zeros(chunk, dtype=np.int32)
        for index in range(runs[k], runs[k + 1]):
            m = order[index]
            for i in range(length):
                sums[i] = 0
            e = start[m]
            while e + 4 <= start[m + 1]:
                c0, c1, c2, c3 = cells[e], cells[e + 1], cells[e + 2], cells[e + 3]
                line0 = np.uint64(rows[e] * patches + first)
                line1 = np.uint64(rows[e + 1] * patches + first)
                line2 = np.uint64(rows[e + 2] * patches + first)
                line3 = np.uint64(rows[e + 3] * patches + first)
                for i in range(length):
                    at = np.uint64(i)
                    sums[i] += (
                        c0 * np.int32(source[line0 + at])
                        + c1 * np.int32(source[line1 + at])
                        + c2 * np.int32(source[line2 + at])
                        + c3 * np.int32(source[line3 + at])
                    )
                e += 4
            while e < start[m + 1]:
                line = np.uint64(rows[e] * patches + first)
                for i in range(length):
                    sums[i] += cells[e] * np.int32(source[line + np.uint64(i)])
                e += 1
            weight = factor[m] * significance
            if levels == 0:
                for i in range(length):
                    dest[into + np.uint64(i)] += weight * np.int64(sums[i])
                continue
            step = weight * full_scale[m]
            scale = np.float64(full_scale[m])
            for i in range(length):
                code = np.rint(np.float64(sums[i]) * top / scale)
                dest[into + np.uint64(i)] += step * np.int64(min(max(code, 0.0), top))
