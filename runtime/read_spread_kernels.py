"""The Numba kernels of `read_spread.py`, imported on first use (importing this module
compiles them, or loads them from the on-disk cache beside it).

They live at module level, not in a function like `kernels.py`'s: kernels that call other
jitted functions defined in a closure miss Numba's cache and compile anew in every
process (3 s).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from xbarc.runtime.read_spread import (
    FIRST_BIN_KEY,
    MANTISSA_SHIFT,
    STEPS,
    VALUE_TABLE_LIMIT,
)


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
    # Every index is unsigned, as in `tally` (a signed one costs a wraparound test):
    # counting takes 0.42-0.52 ns a sum, against 0.5-0.63 with the patches signed (as
    # `p + 1` is), 0.85-1.3 with the tables signed too, and 0.55-0.73 copying each run
    # into int64 for `tally` itself (int16, int32, int64 sums, runs of 64 and 4096).
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
    # unsigned offsets, of the patches as of the tables: `p + 1` alone is signed
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    second, third, fourth = np.uint64(stride), np.uint64(2 * stride), np.uint64(3 * stride)
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
            whole = np.uint64(stop - (stop - start) % 4)
            for p in range(np.uint64(start), whole, four):
                tables[np.uint64(abs(np.int64(row[p])))] += 1
                tables[second + np.uint64(abs(np.int64(row[p + one])))] += 1
                tables[third + np.uint64(abs(np.int64(row[p + two])))] += 1
                tables[fourth + np.uint64(abs(np.int64(row[p + three])))] += 1
            for p in range(whole, np.uint64(stop)):
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


@intrinsic
def popcount(typingctx, x):
    """The set bits of uint64 `x` (LLVM's ctpop: VPOPCNTQ where the machine has it)."""
    signature = types.uint64(types.uint64)
    return signature, lambda context, builder, sig, args: builder.ctpop(args[0])


@numba.njit(cache=True)
def piece(k, turn, every, patches, offsets, run):
    """The k-th run of patches [start, stop) an entry counts: sampled (`every` > 1), its
    run in stratum k; else the k-th run of `run` patches."""
    if every > 1:
        return run_of(turn, k, patches, offsets, every, run)
    start = min(k * run, patches)
    return start, min(start + run, patches)


@numba.njit(cache=True)
def count_by(mode, value, scale, times, top, histogram):
    """Count `times` sums of `value` (>= 0) as `mode` bins them; returns the clipped."""
    if mode == STEPS:
        return count(np.float64(value) * scale, times, top, histogram)
    index = np.int64((np.float64(value) / scale) * top)
    histogram[min(max(index, 0), histogram.shape[0] - 1)] += times
    return 0


@numba.njit(cache=True)
def flush_by(mode, tables, stride, used, scale, top, histogram, weight):
    """`flush` for `mode`: bin the values 0..used counted in the four tables."""
    if mode == STEPS:
        return flush(tables, stride, used, scale, top, histogram, weight)
    for value in range(used + 1):
        times = (
            tables[value]
            + tables[stride + value]
            + tables[2 * stride + value]
            + tables[3 * stride + value]
        )
        if times:
            count_by(mode, value, scale, times * weight, top, histogram)
            tables[value] = 0
            tables[stride + value] = 0
            tables[2 * stride + value] = 0
            tables[3 * stride + value] = 0
    return 0


@numba.njit(cache=True)
def tally(sums, length, tables, stride):
    """Count |sums[:length]| by value in the four tables (`flush` bins them); returns
    the largest."""
    largest = 0
    for i in range(length):  # a pass of its own: it vectorizes
        sums[i] = abs(sums[i])
        largest = max(largest, sums[i])
    # unsigned indices: a signed one costs a wraparound test per increment (2x)
    whole = np.uint64(length - length % 4)
    second = np.uint64(stride)
    third = np.uint64(2 * stride)
    fourth = np.uint64(3 * stride)
    for i in range(np.uint64(0), whole, np.uint64(4)):
        tables[np.uint64(sums[i])] += 1
        tables[second + np.uint64(sums[i + np.uint64(1)])] += 1
        tables[third + np.uint64(sums[i + np.uint64(2)])] += 1
        tables[fourth + np.uint64(sums[i + np.uint64(3)])] += 1
    for i in range(whole, np.uint64(length)):
        tables[np.uint64(sums[i])] += 1
    return largest


@numba.njit(cache=True, parallel=True)
def sampled_bitplane(
    packed,
    flags,
    term_start,
    term_word,
    term_low,
    term_high,
    term_shift,
    slice_bits,
    chunk,
    column,
    plane,
    turn,
    every,
    steps,
    bound,
    offsets,
    run,
    mode,
    top,
    value_tables,
    histograms,
    clipped,
    counted,
):
    # `observed_reads.count_bitplane`: entry e's sums on its counted patches, as
    # `bitplane_accumulate` sums them (AND + popcount over the packed planes of its DAC
    # slice, from `plane[e]`, with the terms of kernel column `column[e]`; -1: cells all
    # zero, every sum 0), each counted `every[e]` times: by value in the task's tables
    # (`spread_histogram`'s way: a branch per sum cost several times more), binned where
    # the step or the weight changes. One histogram per task, the entries in order.
    planes, words, patches = packed.shape
    source = packed.reshape(-1)
    tasks = histograms.shape[0]
    entries = len(column)
    stride = value_tables.shape[1] // 4
    one = np.uint64(1)
    for task in numba.prange(tasks):
        first_entry = task * entries // tasks
        last_entry = (task + 1) * entries // tasks
        tables = value_tables[task]
        sums = np.zeros(run, dtype=np.int64)
        histogram = histograms[task]
        scale = -1.0
        weight = 0
        used = 0
        lost = 0
        seen = 0
        for e in range(first_entry, last_entry):
            m = column[e]
            times = every[e]
            tabled = bound[e] <= VALUE_TABLE_LIMIT
            if tabled and (steps[e] != scale or times != weight):
                lost += flush_by(mode, tables, stride, used, scale, top, histogram, weight)
                scale = steps[e]
                weight = times
                used = 0
            pieces = len(offsets) if times > 1 else (patches + run - 1) // run
            for k in range(pieces):
                start, stop = piece(k, turn[e], times, patches, offsets, run)
                length = stop - start
                if length <= 0:
                    continue
                for i in range(length):
                    sums[i] = 0
                if m >= 0:
                    for a in range(slice_bits):
                        j = plane[e] + a
                        for t in range(term_start[m], term_start[m + 1]):
                            word = term_word[t]
                            if flags[j, word, start // chunk] == 0:
                                continue
                            low = term_low[t]
                            high = term_high[t]
                            shift = term_shift[t] + np.uint64(a)
                            line = np.uint64((j * words + word) * patches + start)
                            for i in range(length):
                                x = source[line + np.uint64(i)]
                                sums[i] += np.int64(
                                    (popcount(x & low) + (popcount(x & high) << one)) << shift
                                )
                seen += length
                if tabled:
                    used = max(used, tally(sums, length, tables, stride))
                else:
                    for i in range(length):
                        value = abs(sums[i])
                        lost += count_by(mode, value, steps[e], times, top, histogram)
        lost += flush_by(mode, tables, stride, used, scale, top, histogram, weight)
        clipped[task] += lost
        counted[task] += seen


@numba.njit(cache=True, parallel=True)
def sampled_levels(
    levels,
    start,
    rows,
    cells,
    column,
    sign,
    shift,
    mask,
    turn,
    every,
    steps,
    bound,
    offsets,
    run,
    mode,
    top,
    value_tables,
    histograms,
    clipped,
    counted,
):
    # `observed_reads.count_levels`: entry e's sums on its counted patches, the non-zero
    # cells of sparse column `column[e]` (-1: none, every sum 0) times the digits
    # (level >> shift[e]) & mask of sign `sign[e]`'s unfolded levels [2, rows, P],
    # counted as in `sampled_bitplane`.
    rows_per_sign, patches = levels.shape[1], levels.shape[2]
    source = levels.reshape(-1)
    tasks = histograms.shape[0]
    entries = len(column)
    stride = value_tables.shape[1] // 4
    for task in numba.prange(tasks):
        first_entry = task * entries // tasks
        last_entry = (task + 1) * entries // tasks
        tables = value_tables[task]
        sums = np.zeros(run, dtype=np.int64)
        histogram = histograms[task]
        scale = -1.0
        weight = 0
        used = 0
        lost = 0
        seen = 0
        for e in range(first_entry, last_entry):
            m = column[e]
            times = every[e]
            tabled = bound[e] <= VALUE_TABLE_LIMIT
            if tabled and (steps[e] != scale or times != weight):
                lost += flush_by(mode, tables, stride, used, scale, top, histogram, weight)
                scale = steps[e]
                weight = times
                used = 0
            plane = sign[e] * rows_per_sign
            down = np.uint64(shift[e])
            bits = np.uint64(mask)
            pieces = len(offsets) if times > 1 else (patches + run - 1) // run
            for k in range(pieces):
                first, stop = piece(k, turn[e], times, patches, offsets, run)
                length = stop - first
                if length <= 0:
                    continue
                for i in range(length):
                    sums[i] = 0
                if m >= 0:
                    for t in range(start[m], start[m + 1]):
                        # unsigned offsets into the flat levels: the loop vectorizes
                        line = np.uint64((plane + rows[t]) * patches + first)
                        cell = np.int64(cells[t])
                        for i in range(length):
                            level = np.uint64(source[line + np.uint64(i)])
                            sums[i] += cell * np.int64((level >> down) & bits)
                seen += length
                if tabled:
                    used = max(used, tally(sums, length, tables, stride))
                else:
                    for i in range(length):
                        value = abs(sums[i])
                        lost += count_by(mode, value, steps[e], times, top, histogram)
        lost += flush_by(mode, tables, stride, used, scale, top, histogram, weight)
        clipped[task] += lost
        counted[task] += seen
