"""The ADC: crossbar column sums converted to codes and accumulated, then dequantized.

    adc_accumulate(partial, target, factor, full_scale, levels, acc)   # acc += read-out
    dequantize(acc, unit, input_scale, column_scale, out)              # out = real values

Many reads pass through one `adc_accumulate` call (the executor buffers their sums): a
parallel launch costs as much as reading out a small read.
"""

from __future__ import annotations

import numpy as np

from xbarc.runtime.kernels import (
    PARALLEL_WORK,
    backend,
    check_accumulator,
    numba_kernel,
    prange,
    use_threads,
)


def adc_accumulate(
    partial: np.ndarray,
    target: np.ndarray,
    factor: np.ndarray,
    full_scale: np.ndarray,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
) -> None:
    """Quantized read-out of crossbar columns, added into `acc` in place.

    `partial` [M, P] holds the sums of M read columns over P patches (exact integers in
    `quant`). Per column m: code = clip(rint(partial * levels / full_scale[m]), low,
    levels) in float64 (half to even), low = -levels for a `signed` (differential) ADC
    else 0, then acc[target[m], p] += factor[m] * full_scale[m] * code, so acc / levels is
    the dequantized sum. levels == 0 is a lossless ADC: acc += factor[m] * partial.
    `target`, `factor`, `full_scale` are int64 [M]; `acc` is int64 [outputs, P]. The Numba
    kernel reads out the columns of one target together, in parallel over targets and runs
    of patches: one call for many reads costs one launch.
    """
    _check_adc(partial, target, factor, full_scale, levels, acc)
    if backend() == "numpy":
        adc_accumulate_numpy(partial, target, factor, full_scale, levels, acc, signed)
        return
    order = np.argsort(target, kind="stable")
    runs = np.flatnonzero(np.diff(target[order], prepend=-1, append=-1)).astype(np.int64)
    use_threads(PARALLEL_WORK)  # conversions pay for a parallel launch at any size
    adc_accumulate_numba(
        np.ascontiguousarray(partial),
        order,
        runs,
        target,
        factor,
        full_scale,
        int(levels),
        -float(levels) if signed else 0.0,
        acc,
    )


def adc_accumulate_numpy(
    partial: np.ndarray,
    target: np.ndarray,
    factor: np.ndarray,
    full_scale: np.ndarray,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
) -> None:
    _check_adc(partial, target, factor, full_scale, levels, acc)
    if levels == 0:
        contributions = factor[:, None] * partial.astype(np.int64)
    else:
        codes = np.rint(partial.astype(np.float64) * levels / full_scale[:, None])
        np.clip(codes, -levels if signed else 0, levels, out=codes)
        contributions = (factor * full_scale)[:, None] * codes.astype(np.int64)
    # Sum the columns sharing a target, then add once per target (integer sums are exact).
    order = np.argsort(target, kind="stable")
    sorted_targets = target[order]
    starts = np.flatnonzero(np.diff(sorted_targets, prepend=-1))
    if not starts.size:
        return
    sums = np.add.reduceat(contributions[order], starts, axis=0)
    acc[sorted_targets[starts]] += sums


def _check_adc(partial, target, factor, full_scale, levels, acc) -> None:
    if partial.ndim != 2:
        raise ValueError(f"adc_accumulate: partial sums of shape {partial.shape}; expected 2-D")
    columns, patches = partial.shape
    for name, array in (("target", target), ("factor", factor), ("full_scale", full_scale)):
        if array.shape != (columns,) or array.dtype != np.int64:
            raise ValueError(
                f"adc_accumulate: {name} is {array.dtype} {array.shape}; "
                f"expected int64 ({columns},)"
            )
    check_accumulator("adc_accumulate", acc, patches)
    if columns and (target.min() < 0 or target.max() >= acc.shape[0]):
        raise ValueError(f"adc_accumulate: targets outside the {acc.shape[0]} output rows")
    if levels < 0:
        raise ValueError(f"adc_accumulate: {levels} ADC levels; expected >= 0")
    if levels and columns and full_scale.min() <= 0:
        raise ValueError("adc_accumulate: full scales must be positive")


def dequantize(
    acc: np.ndarray, unit: int, input_scale: float, column_scale: np.ndarray, out: np.ndarray
) -> None:
    """out[c, p] = float32(float64(acc[c, p]) / unit * input_scale * column_scale[c]), the
    operations in this order in float64; `acc` int64 [C, P] (or float64: the sums of the
    basis combine), `column_scale` float64 [C], `out` float32 [C, P]."""
    if acc.shape != out.shape or column_scale.shape != acc.shape[:1]:
        raise ValueError(
            f"dequantize: acc {acc.shape}, column scales {column_scale.shape}, out {out.shape}"
        )
    if backend() == "numpy":
        dequantize_numpy(acc, unit, input_scale, column_scale, out)
        return
    use_threads(acc.size)
    dequantize_numba(acc, np.float64(unit), np.float64(input_scale), column_scale, out)


def dequantize_numpy(
    acc: np.ndarray, unit: int, input_scale: float, column_scale: np.ndarray, out: np.ndarray
) -> None:
    values = acc.astype(np.float64)
    values /= unit
    values *= input_scale
    values *= column_scale[:, None]
    out[...] = values


# ---------------------------------------------------------------------------------------
# Numba kernels, compiled on first use


@numba_kernel(parallel=True)
def adc_accumulate_numba(partial, order, runs, target, factor, full_scale, levels, low, acc):
    """`adc_accumulate` on checked arguments: the columns `order[runs[k]:runs[k+1]]` share
    a target; codes are clipped to [low, levels]."""
    columns, patches = partial.shape
    source = partial.reshape(-1)
    dest = acc.reshape(-1)
    top = np.float64(levels)
    chunk = 512
    chunks = (patches + chunk - 1) // chunk
    targets = len(runs) - 1  # columns order[runs[k]:runs[k+1]] share one target
    # One task per (target, run of patches): the columns of one target stay in one
    # task (they would race otherwise) and their sums in one cache-resident run of
    # `acc`. The patch loop runs over contiguous memory with unsigned flat indices, so
    # it vectorizes.
    for task in prange(targets * chunks):
        k = task // chunks
        start = task % chunks * chunk
        length = min(start + chunk, patches) - start
        into = np.uint64(target[order[runs[k]]] * patches + start)
        for index in range(runs[k], runs[k + 1]):
            m = order[index]
            read = np.uint64(m * patches + start)
            if levels == 0:
                for i in range(length):
                    at = np.uint64(i)
                    dest[into + at] += factor[m] * np.int64(source[read + at])
                continue
            step = factor[m] * full_scale[m]
            scale = np.float64(full_scale[m])
            for i in range(length):
                at = np.uint64(i)
                code = np.rint(np.float64(source[read + at]) * top / scale)
                dest[into + at] += step * np.int64(min(max(code, low), top))


@numba_kernel(parallel=True)
def dequantize_numba(acc, unit, input_scale, column_scale, out):
    """`dequantize` on checked arguments (`unit`, `input_scale` float64)."""
    columns, patches = acc.shape
    for c in prange(columns):
        scale = column_scale[c]
        for p in range(patches):
            out[c, p] = np.float32(np.float64(acc[c, p]) / unit * input_scale * scale)
