"""The Numba kernels of `read_spread.py`, imported on first use (importing this module
compiles them, or loads them from the on-disk cache beside it).

They live at module level, not in a function like `kernels.py`'s: kernels that call other
jitted functions defined in a closure miss Numba's cache and compile anew in every
process (3 s).
"""

from __future__ import annotations

import numba
import numpy as np

from xbarc.runtime.read_spread import FIRST_BIN_KEY, MANTISSA_SHIFT, VALUE_TABLE_LIMIT


@numba.njit(cache=True)
def count(steps, times, top, histogram):
    """Count `times` sums of `steps` steps; returns how many of them are clipped."""
    if steps == 0:
        histogram[0] += times
        return 0
    key = (np.float64(steps).view(np.int64) >> MANTISSA_SHIFT) - FIRST_BIN_KEY + 1
    histogram[min(max(key, 1), histogram.shape[0] - 1)] += times
    return times if steps > top else 0


@numba.njit(cache=True)
def run_of(turn, stratum, patches, offsets, every, run):
    """The patches [start, stop) that a column counts in `stratum` (empty past the end);
    `turn`: the column's number modulo `every` (kept by the caller: a division per column
    and stratum cost more than counting the few patches of a 7x7 image)."""
    chosen = offsets[stratum] + turn
    if chosen >= every:
        chosen -= every
    start = (stratum * every + chosen) * run
    return min(start, patches), min(start + run, patches)


@numba.njit(cache=True)
def flush(tables, stride, used, scale, top, histogram, weight):
    """Bin the values 0..used counted in the four tables at `scale`, each for `weight`
    sums, and clear them; returns how many were clipped."""
    clipped = 0
    for value in range(used + 1):
        times = (
            tables[value]
            + tables[stride + value]
            + tables[2 * stride + value]
            + tables[3 * stride + value]
        )
        if times:
            clipped += count(np.float64(value) * scale, times * weight, top, histogram)
            tables[value] = 0
            tables[stride + value] = 0
            tables[2 * stride + value] = 0
            tables[3 * stride + value] = 0
    return clipped


@numba.njit(cache=True)
def spread_histogram(sums, steps_per_unit, top, histogram, offsets, every, run):
    # One thread, and the sums counted by value first, then binned value by value: a
    # branch per sum (most are zero after a ReLU and bit-serial inputs, the rest
    # scattered) cost 5 ns a sum. Four tables take turns, as consecutive increments of
    # one entry (runs of zeros) would each wait for the last one's store: 7 ns a sum
    # with one table, 1 with four. Consecutive read columns with the same step (most
    # of them) share the tables: binning and clearing them per column cost more than
    # counting a few patches. Each counted sum stands for `every` (1: all are counted).
    columns, patches = sums.shape
    strata = len(offsets)
    largest = np.zeros(columns, dtype=np.int64)
    turn = every - 1
    for m in range(columns):
        turn = turn + 1 if turn + 1 < every else 0
        row = sums[m]
        top_sum = 0
        for k in range(strata):
            start, stop = run_of(turn, k, patches, offsets, every, run)
            for p in range(np.uint64(start), np.uint64(stop)):
                top_sum = max(top_sum, abs(np.int64(row[p])))
        largest[m] = top_sum
    stride = 1
    for m in range(columns):
        if largest[m] <= VALUE_TABLE_LIMIT:
            stride = max(stride, largest[m] + 1)
    tables = np.zeros(4 * stride, dtype=np.int64)
    scale = -1.0  # the step of the columns counted in the tables
    used = 0  # the largest value counted in them
    clipped = 0
    turn = every - 1
    for m in range(columns):
        turn = turn + 1 if turn + 1 < every else 0
        row = sums[m]
        if largest[m] > VALUE_TABLE_LIMIT:
            for k in range(strata):
                start, stop = run_of(turn, k, patches, offsets, every, run)
                for p in range(start, stop):
                    steps = abs(np.float64(row[p])) * steps_per_unit[m]
                    clipped += count(steps, every, top, histogram)
            continue
        if steps_per_unit[m] != scale:
            clipped += flush(tables, stride, used, scale, top, histogram, every)
            scale = steps_per_unit[m]
            used = 0
        used = max(used, largest[m])
        for k in range(strata):
            start, stop = run_of(turn, k, patches, offsets, every, run)
            whole = stop - (stop - start) % 4
            for p in range(np.uint64(start), np.uint64(whole), 4):
                tables[np.uint64(abs(np.int64(row[p])))] += 1
                tables[np.uint64(stride + abs(np.int64(row[p + 1])))] += 1
                tables[np.uint64(2 * stride + abs(np.int64(row[p + 2])))] += 1
                tables[np.uint64(3 * stride + abs(np.int64(row[p + 3])))] += 1
            for p in range(np.uint64(whole), np.uint64(stop)):
                tables[np.uint64(abs(np.int64(row[p])))] += 1
    clipped += flush(tables, stride, used, scale, top, histogram, every)
    return clipped


@numba.njit(cache=True)
def spread_histogram_float(sums, steps_per_unit, top, histogram, offsets, every, run):
    # noisy reads: real sums, binned one by one
    columns, patches = sums.shape
    clipped = 0
    turn = every - 1
    for m in range(columns):
        turn = turn + 1 if turn + 1 < every else 0
        scale = steps_per_unit[m]
        for k in range(len(offsets)):
            start, stop = run_of(turn, k, patches, offsets, every, run)
            for p in range(start, stop):
                steps = abs(np.float64(sums[m, p])) * scale
                clipped += count(steps, every, top, histogram)
    return clipped
