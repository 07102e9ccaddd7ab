"""Numba kernels of MaxPool and AveragePool on float32 and float64 tensors [N, C, *spatial].

`max_pool_numba` and `average_pool_numba` walk the window geometry of
`xbarc.onnx_ops.pooling.PoolAxis` (one per spatial axis, 1 to 3 axes) and give the same bits
as the numpy twins there (`max_pool_numpy`, `average_pool_numpy`): every output folds the
taps of its window that land inside the input in row-major tap order, starting from the
type's lowest value (max) or zero (sum), and the mean divides the sum by the same count
array. The max folds as numpy's `maximum` does on x86: a NaN wins (the running one if both
are), equal values (+0 and -0) give the tap. Lower ranks run through the rank-3 kernel with
leading axes of size 1.

Where every window lies inside the input (no padding reached: LeNet's and VGG's 2x2
pools), `pool_inside` folds each output's taps in a register and writes it once, plane by
plane: 2.8x faster than the row kernel on the digits LeNet's pools (0.20 ms against 0.56
for [540, 8, 8, 8]), which was 2x slower than the numpy twin there. 2x2 windows moved by 2
(those pools exactly, `pairs`) take `pool_pairs`, which unrolls the four taps: 0.05 ms
against 0.20 on the same pool, 0.04 against 0.13 on LeNet's second ([540, 16, 4, 4]).
The kernels run their planes or rows of outputs in parallel above `kernels.PARALLEL_WORK`
taps (`use_threads`, XBARC_THREADS); every output folds its own taps, so the bits do not
depend on the threads. Numba is imported on the first call, so importing this module stays cheap;
compiled code is cached on disk next to this file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from xbarc.runtime import kernels
from xbarc.runtime.kernels.im2col import KERNEL_RANK, lift

if TYPE_CHECKING:
    from xbarc.onnx_ops.pooling import PoolAxis

NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def max_pool_numba(x: np.ndarray, axes: Sequence[PoolAxis]) -> np.ndarray:
    """Max over each window of `x`; windows with no input hold the type's lowest value."""
    lowest = np.finfo(x.dtype).min
    no_counts = np.ones((1, 1, 1), x.dtype)
    return _pool(x, axes, lowest, no_counts, average=False)


def average_pool_numba(x: np.ndarray, axes: Sequence[PoolAxis], counts: np.ndarray) -> np.ndarray:
    """The sum over each window of `x` divided by `counts`, an array of `x`'s dtype that
    broadcasts to the output's spatial shape."""
    spatial = tuple(axis.output for axis in axes)
    counts = np.array(np.broadcast_to(counts, spatial), dtype=x.dtype, order="C")
    return _pool(x, axes, 0, counts.reshape(lift(spatial, 1)), average=True)


def _pool(
    x: np.ndarray, axes: Sequence[PoolAxis], initial: float, counts: np.ndarray, average: bool
) -> np.ndarray:
    """Fold each window of `x` from `initial`: sums divided by `counts` [D, H, W] if
    `average`, else maxima."""
    if x.dtype not in NUMBA_DTYPES:
        raise ValueError(f"pooling kernels take float32 or float64, not {x.dtype}")
    if not 1 <= len(axes) <= KERNEL_RANK or x.ndim != len(axes) + 2:
        raise ValueError(
            f"pooling kernels take [N, C, *spatial] with 1 to {KERNEL_RANK} spatial axes, "
            f"not {len(axes)} axes over shape {x.shape}"
        )
    spatial = tuple(axis.output for axis in axes)
    out = np.empty(x.shape[:2] + spatial, x.dtype)
    if pairs(axes):
        kernels.use_threads(out.size * 4)
        _numba().pool_pairs(
            np.ascontiguousarray(x).reshape(-1, *x.shape[-2:]),
            x.dtype.type(initial),
            counts.reshape(counts.shape[-2:]),
            average,
            out.reshape(-1, *spatial),
        )
        return out
    if all(inside(axis) for axis in axes):
        kernels.use_threads(out.size * math.prod(axis.kernel for axis in axes))
        _numba().pool_inside(
            np.ascontiguousarray(x).reshape(x.shape[:2] + lift(x.shape[2:], 1)),
            lift([axis.kernel for axis in axes], 1),
            lift([axis.stride for axis in axes], 1),
            lift([axis.dilation for axis in axes], 1),
            x.dtype.type(initial),
            counts,
            average,
            out.reshape(x.shape[:2] + lift(spatial, 1)),
        )
        return out
    single_tap = np.array([[0, 1, 0]], dtype=np.int64)
    taps = [single_tap] * (KERNEL_RANK - len(axes)) + [_tap_table(axis) for axis in axes]
    kernels.use_threads(out.size * math.prod(axis.kernel for axis in axes))
    _numba().pool(
        np.ascontiguousarray(x).reshape(x.shape[:2] + lift(x.shape[2:], 1)),
        *taps,
        lift([axis.stride for axis in axes], 1),
        x.dtype.type(initial),
        counts,
        average,
        out.reshape(x.shape[:2] + lift(spatial, 1)),
    )
    return out


def pairs(axes: Sequence[PoolAxis]) -> bool:
    """Whether the pool is 2x2 windows moved by 2 over two spatial axes, every window
    inside the input (LeNet's and VGG's pools): `pool_pairs` unrolls their four taps."""
    return len(axes) == 2 and all(
        axis.kernel == 2 and axis.stride == 2 and axis.dilation == 1 and inside(axis)
        for axis in axes
    )


def inside(axis: PoolAxis) -> bool:
    """Whether every tap of every window of `axis` reads the input (no padding reached)."""
    last = (axis.output - 1) * axis.stride + (axis.kernel - 1) * axis.dilation
    return axis.pad_begin == 0 and axis.output > 0 and last <= axis.size - 1


def _tap_table(axis: PoolAxis) -> np.ndarray:
    """[taps, 3] int64, one row per tap reaching the input, in tap order: the first output
    it reaches, one past the last, and the input it reads for output 0 (output o reads that
    plus o * stride)."""
    rows = []
    for tap in range(axis.kernel):
        reach = axis.tap(tap)
        if reach is not None:
            outputs, _ = reach
            rows.append((outputs.start, outputs.stop, tap * axis.dilation - axis.pad_begin))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


# ---------------------------------------------------------------------------------------
# Numba implementations, compiled on first use


@functools.cache
def _numba() -> SimpleNamespace:
    """Compile (or load from the on-disk cache) the Numba kernels."""
    import numba
    from numba import prange

    # the numpy error model: 0 / 0 is NaN, as in numpy, not ZeroDivisionError
    @numba.njit(cache=True, error_model="numpy", parallel=True)
    def pool_kernel(x, taps_d, taps_h, taps_w, strides, initial, counts, average, out):
        batch, channels, in_d, in_h, in_w = x.shape
        out_d, out_h, out_w = out.shape[2:]
        s_d, s_h, s_w = strides
        source = x.reshape(-1)
        dest = out.reshape(-1)
        # Row by row of outputs, which takes the taps in row-major order, each over the
        # whole row: every output sees its taps in the numpy twin's order.
        for task in prange(batch * channels * out_d * out_h):
            plane = task // (out_d * out_h)
            o_d = task // out_h % out_d
            o_h = task % out_h
            row = np.uint64(task * out_w)
            for o_w in range(out_w):
                dest[row + np.uint64(o_w)] = initial
            for t_d in range(taps_d.shape[0]):
                if not taps_d[t_d, 0] <= o_d < taps_d[t_d, 1]:
                    continue
                i_d = taps_d[t_d, 2] + o_d * s_d
                for t_h in range(taps_h.shape[0]):
                    if not taps_h[t_h, 0] <= o_h < taps_h[t_h, 1]:
                        continue
                    line = ((plane * in_d + i_d) * in_h + taps_h[t_h, 2] + o_h * s_h) * in_w
                    for t_w in range(taps_w.shape[0]):
                        first, stop = taps_w[t_w, 0], taps_w[t_w, 1]
                        read = np.uint64(line + taps_w[t_w, 2] + first * s_w)
                        at = row + np.uint64(first)
                        count, stride = np.uint64(stop - first), np.uint64(s_w)
                        # a literal stride vectorizes better (1.5x at stride 2)
                        if average and s_w == 1:
                            for k in range(count):
                                dest[at + k] += source[read + k]
                        elif average and s_w == 2:
                            for k in range(count):
                                dest[at + k] += source[read + k * np.uint64(2)]
                        elif average:
                            for k in range(count):
                                dest[at + k] += source[read + k * stride]
                        elif s_w == 1:
                            for k in range(count):
                                best, value = dest[at + k], source[read + k]
                                dest[at + k] = best if best > value or best != best else value
                        elif s_w == 2:
                            for k in range(count):
                                best, value = dest[at + k], source[read + k * np.uint64(2)]
                                dest[at + k] = best if best > value or best != best else value
                        else:
                            for k in range(count):
                                best, value = dest[at + k], source[read + k * stride]
                                dest[at + k] = best if best > value or best != best else value
            if average:
                for o_w in range(out_w):
                    dest[row + np.uint64(o_w)] /= counts[o_d, o_h, o_w]

    @numba.njit(cache=True, error_model="numpy", parallel=True)
    def pool_inside_kernel(x, kernel, strides, dilations, initial, counts, average, out):
        batch, channels, in_d, in_h, in_w = x.shape
        out_d, out_h, out_w = out.shape[2:]
        k_d, k_h, k_w = kernel
        s_d, s_h, s_w = strides
        d_d, d_h, d_w = dilations
        source = x.reshape(-1)
        dest = out.reshape(-1)
        # Every window inside the input: each output folds its taps in row-major order,
        # held in a register and written once; planes in parallel.
        for plane in prange(batch * channels):
            for o_d in range(out_d):
                for o_h in range(out_h):
                    row = np.uint64(((plane * out_d + o_d) * out_h + o_h) * out_w)
                    for o_w in range(out_w):
                        acc = initial
                        for t_d in range(k_d):
                            i_d = o_d * s_d + t_d * d_d
                            for t_h in range(k_h):
                                i_h = o_h * s_h + t_h * d_h
                                line = ((plane * in_d + i_d) * in_h + i_h) * in_w + o_w * s_w
                                for t_w in range(k_w):
                                    value = source[np.uint64(line + t_w * d_w)]
                                    if average:
                                        acc += value
                                    else:
                                        acc = acc if acc > value or acc != acc else value
                        if average:
                            acc /= counts[o_d, o_h, o_w]
                        dest[row + np.uint64(o_w)] = acc

    @numba.njit(cache=True, error_model="numpy", parallel=True)
    def pool_pairs_kernel(x, initial, counts, average, out):
        # x [planes, H, W], out [planes, H', W']: output (o_h, o_w) folds the taps (2 o_h,
        # 2 o_w), (2 o_h, 2 o_w + 1), (2 o_h + 1, 2 o_w), (2 o_h + 1, 2 o_w + 1) in this
        # (row-major) order, held in a register; 2.3x faster than `pool_inside_kernel`,
        # whose loops over taps of any count run once or twice each.
        planes, in_h, in_w = x.shape
        out_h, out_w = out.shape[1:]
        source = x.reshape(-1)
        dest = out.reshape(-1)
        for plane in prange(planes):
            for o_h in range(out_h):
                upper = np.uint64((plane * in_h + 2 * o_h) * in_w)
                lower = upper + np.uint64(in_w)
                row = np.uint64((plane * out_h + o_h) * out_w)
                for o_w in range(out_w):
                    left = np.uint64(2 * o_w)
                    right = left + np.uint64(1)
                    acc = initial
                    for value in (source[upper + left], source[upper + right],
                                  source[lower + left], source[lower + right]):  # fmt: skip
                        if average:
                            acc += value
                        else:
                            acc = acc if acc > value or acc != acc else value
                    if average:
                        acc /= counts[o_h, o_w]
                    dest[row + np.uint64(o_w)] = acc

    return SimpleNamespace(
        pool=pool_kernel, pool_inside=pool_inside_kernel, pool_pairs=pool_pairs_kernel
    )
