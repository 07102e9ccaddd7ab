"""Pooling: the window geometry of MaxPool and AveragePool, their numpy semantics, and
the global pools.

`PoolAxis` and `pool_axes` give onnxruntime's output sizes and padding; `max_pool_numpy`
and `average_pool_numpy` are the reference the runtime's Numba pools
(`xbarc.runtime.pool_kernels`) are tested bit-equal against.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xbarc.onnx_ops.base import Array, OpCall, Unsupported, semantics


@dataclass(frozen=True, slots=True)
class PoolAxis:
    """How a pooling window walks one spatial axis: `size` inputs padded by `pad_begin` and
    `pad_end`, a `kernel` of taps `dilation` apart, moved by `stride` to `output` places."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int
    output: int

    def tap(self, tap: int) -> tuple[slice, slice] | None:
        """The outputs whose window tap `tap` lands inside the input, and the inputs it
        reads for them; None when it lands in the padding for every output."""
        start = tap * self.dilation - self.pad_begin  # the input read for output 0
        first = max(0, -(start // self.stride))
        last = min(self.output - 1, (self.size - 1 - start) // self.stride)
        if last < first:
            return None
        reads = slice(start + first * self.stride, start + last * self.stride + 1, self.stride)
        return slice(first, last + 1), reads

    def tap_counts(self, count_padding: bool) -> Array:
        """How many taps of each output's window land inside the input, or inside the
        padded input when `count_padding` (taps past the end padding never count)."""
        low, high = (-self.pad_begin, self.size + self.pad_end) if count_padding else (0, self.size)
        starts = np.arange(self.output, dtype=np.int64) * self.stride - self.pad_begin
        reads = starts[:, None] + np.arange(self.kernel, dtype=np.int64) * self.dilation
        return np.count_nonzero((reads >= low) & (reads < high), axis=1)


def pool_axes(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    auto_pad: str,
    ceil_mode: bool,
) -> list[PoolAxis]:
    """The window geometry of each spatial axis, with onnxruntime's output sizes (SAME pads
    ignore dilation there, as in onnxruntime)."""
    axes = []
    rank = len(spatial)
    for axis, size in enumerate(spatial):
        stride, taps, dilation = strides[axis], kernel[axis], dilations[axis]
        pad_begin, pad_end = pads[axis], pads[axis + rank]
        if auto_pad == "VALID":
            pad_begin = pad_end = 0
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            needed = (-(-size // stride) - 1) * stride + taps - size
            if needed < 0:
                raise Unsupported
            pad_begin = needed // 2 if auto_pad == "SAME_UPPER" else (needed + 1) // 2
            pad_end = needed - pad_begin
        span = size + pad_begin + pad_end - dilation * (taps - 1) - 1
        if span < 0:
            raise Unsupported  # the window is wider than the padded input
        output = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (output - 1) * stride >= size + pad_begin:
            output -= 1  # onnxruntime drops a last window that would start in the end padding
        axes.append(PoolAxis(size, taps, stride, dilation, pad_begin, pad_end, output))
    return axes


def _pool_geometry(call: OpCall, x: Array) -> list[PoolAxis]:
    kernel = call.ints_attr("kernel_shape")
    if kernel is None or x.ndim != len(kernel) + 2:
        raise Unsupported
    rank = len(kernel)
    auto_pad = call.string_attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise Unsupported
    pads = call.ints_attr("pads") or [0] * (2 * rank)
    if any(pad >= size for pad, size in zip(pads, kernel * 2, strict=True)):
        raise Unsupported  # onnxruntime rejects pads as large as the kernel
    return pool_axes(
        x.shape[2:],
        kernel,
        call.ints_attr("strides") or [1] * rank,
        call.ints_attr("dilations") or [1] * rank,
        pads,
        auto_pad,
        bool(call.int_attr("ceil_mode", 0)),
    )


def _taps(axes: Sequence[PoolAxis]) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """(output region, input region) for each kernel tap in row-major order, skipping taps
    that only ever read padding; regions index the spatial axes after (N, C)."""
    reaching = [[r for r in map(axis.tap, range(axis.kernel)) if r is not None] for axis in axes]
    for reaches in itertools.product(*reaching):
        yield (
            (slice(None), slice(None), *(outputs for outputs, _ in reaches)),
            (slice(None), slice(None), *(reads for _, reads in reaches)),
        )


WindowMax = Callable[[Array, Sequence[PoolAxis]], Array]
WindowMean = Callable[[Array, Sequence[PoolAxis], Array], Array]  # x, axes, window counts

_BLOCK_BYTES = 1 << 19


def _lowest(dtype: np.dtype) -> Any:
    return np.finfo(dtype).min if dtype.kind == "f" else np.iinfo(dtype).min


def _plane_blocks(x: Array, result: Array) -> Iterator[tuple[Array, Array]]:
    """Matching runs of (n, c) planes of `x` and `result`, each a few hundred kilobytes of
    input, so that the taps of a window re-read the input from cache rather than memory."""
    planes = x.reshape((-1, 1) + x.shape[2:])
    results = result.reshape((-1, 1) + result.shape[2:])
    step = max(1, _BLOCK_BYTES // max(planes[:1].nbytes, 1))
    for start in range(0, planes.shape[0], step):
        yield planes[start : start + step], results[start : start + step]


def max_pool_numpy(x: Array, axes: Sequence[PoolAxis]) -> Array:
    """Max over each window; windows with no input hold the type's lowest value. Each tap
    in row-major order updates every output it reaches."""
    result = np.full(x.shape[:2] + tuple(axis.output for axis in axes), _lowest(x.dtype), x.dtype)
    taps = list(_taps(axes))
    for planes, results in _plane_blocks(x, result):
        for outputs, reads in taps:
            np.maximum(results[outputs], planes[reads], out=results[outputs])
    return result


def max_pool_with_indices(
    x: Array, axes: Sequence[PoolAxis], column_major: bool
) -> tuple[Array, Array]:
    """Max over each window and the flat input index of its first maximum, as onnxruntime
    numbers them: (n*C + c) * spatial size + the position in row-major (or column-major)
    order."""
    spatial = x.shape[2:]
    if column_major:
        steps = [math.prod(spatial[:axis]) for axis in range(len(spatial))]
    else:
        steps = [math.prod(spatial[axis + 1 :]) for axis in range(len(spatial))]
    out_shape = x.shape[:2] + tuple(axis.output for axis in axes)
    channel_base = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2])
    channel_base = channel_base.reshape(x.shape[:2] + (1,) * len(axes)) * math.prod(spatial)
    # a window where nothing beats the lowest value keeps onnxruntime's "-1 per axis"
    indices = np.broadcast_to(channel_base - sum(steps), out_shape).copy()
    best = np.full(out_shape, _lowest(x.dtype), x.dtype)
    for outputs, reads in _taps(axes):
        window = x[reads]
        better = window > best[outputs]
        flat = channel_base
        for axis, read in enumerate(reads[2:]):
            positions = np.arange(read.start, read.stop, read.step, dtype=np.int64)
            shape = [1] * (2 + len(axes))
            shape[2 + axis] = positions.size
            flat = flat + positions.reshape(shape) * steps[axis]
        np.copyto(best[outputs], window, where=better)
        np.copyto(indices[outputs], np.broadcast_to(flat, window.shape), where=better)
    return best, indices


def window_counts(axes: Sequence[PoolAxis], count_padding: bool, dtype: np.dtype) -> Array:
    """The divisor of each output of an average pool, in `dtype`, shaped as the output's
    spatial axes (see `PoolAxis.tap_counts`)."""
    counts = np.ones((1,) * len(axes), dtype=np.int64)
    for index, axis in enumerate(axes):
        shape = [1] * len(axes)
        shape[index] = axis.output
        counts = counts * axis.tap_counts(count_padding).reshape(shape)
    return counts.astype(dtype)


def average_pool_numpy(x: Array, axes: Sequence[PoolAxis], counts: Array) -> Array:
    """Mean over each window: each tap in row-major order adds into every output it
    reaches, then each sum is divided by its entry of `counts` (`window_counts`)."""
    total = np.zeros(x.shape[:2] + tuple(axis.output for axis in axes), x.dtype)
    taps = list(_taps(axes))
    for planes, totals in _plane_blocks(x, total):
        for outputs, reads in taps:
            np.add(totals[outputs], planes[reads], out=totals[outputs])
    total /= counts
    return total


@semantics("MaxPool")
def max_pool(call: OpCall, window_max: WindowMax = max_pool_numpy) -> list[Array | None]:
    """MaxPool; `window_max` computes the max of every window (the runtime passes a Numba
    kernel with the same bits as `max_pool_numpy`)."""
    x = call.input(0)
    axes = _pool_geometry(call, x)
    if not call.wants(1):
        return [window_max(x, axes)]
    if x.dtype != np.float32:
        raise Unsupported
    column_major = call.int_attr("storage_order", 0) == 1
    return list(max_pool_with_indices(x, axes, column_major))


@semantics("AveragePool")
def average_pool(call: OpCall, window_mean: WindowMean = average_pool_numpy) -> list[Array | None]:
    """AveragePool: the sum of each window's taps inside the input over their count, or
    over the count of its taps inside the padded input when padding counts; `window_mean`
    computes it (the runtime passes a Numba kernel with the same bits as
    `average_pool_numpy`)."""
    x = call.input(0)
    if x.dtype.kind != "f":
        raise Unsupported
    axes = _pool_geometry(call, x)
    counts = window_counts(axes, bool(call.int_attr("count_include_pad", 0)), x.dtype)
    return [window_mean(x, axes, counts)]


@semantics("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    if x.ndim < 2:
        raise Unsupported
    size = math.prod(x.shape[2:])
    planes = x.reshape(x.shape[:2] + (size,))
    kept = x.shape[:2] + (1,) * (x.ndim - 2)
    if call.op_type == "GlobalMaxPool":
        return [np.maximum.reduce(planes, axis=2).reshape(kept)]
    if x.dtype not in (np.float32, np.float64):
        return [np.mean(planes, axis=2, dtype=x.dtype).reshape(kept)]
    # einsum sums short planes several times faster than np.mean, whose reduction pays a
    # call per plane (2048 planes of 7x7 in ResNet-50)
    total = np.einsum("ncp->nc", planes)
    total /= x.dtype.type(size)
    return [total.reshape(kept)]
