"""Numba kernels of the elementwise work after a crossbar layer: Relu, and its bias.

A Relu follows nearly every crossbar layer, and numpy's `maximum` takes 0.37 ns an element
on float32 (it checks for NaN as it goes): 0.10 ms of the digits LeNet's first Relu at
batch 540 ([540, 8, 8, 8]), against 0.03 ms here. `relu_numba` gives the bits of
`onnx_ops.elementwise`'s Relu, `np.maximum(x, 0)`: x where x > 0 or x is a NaN (the NaN
itself, payload and sign kept), else +0 (for -0, negatives and -inf). Parallel above
`kernels.PARALLEL_WORK` elements; every element is its own, so the bits do not depend on
the threads. `add_channel_bias` adds a convolution's bias per channel in place, as numpy's
broadcast `+=` does (float32 sums, the same bits): 0.018 ms against 0.059 on LeNet's first
convolution. Numba is imported on the first call; compiled code is cached on disk next to
this file.
"""

from __future__ import annotations

import numpy as np

from xbarc.runtime import kernels
from xbarc.runtime.kernels import numba_kernel, prange

NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def relu_numba(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = max(x, 0) as numpy's `maximum` gives it; `x` and `out` C-contiguous arrays of
    one shape and of float32 or float64 (`out` may be `x`)."""
    if (
        x.dtype not in NUMBA_DTYPES
        or out.dtype != x.dtype
        or out.shape != x.shape
        or not (x.flags.c_contiguous and out.flags.c_contiguous and out.flags.writeable)
    ):
        raise ValueError(
            f"relu_numba: {x.dtype} {x.shape} into {out.dtype} {out.shape}; expected "
            "C-contiguous float32 or float64 of one shape"
        )
    kernels.use_threads(x.size)
    relu_kernel(x.reshape(-1), out.reshape(-1))
    return out


def add_channel_bias(x: np.ndarray, bias: np.ndarray) -> None:
    """x[n, c, ...] += bias[c] in place: `x` C-contiguous float32 [N, C, *spatial],
    `bias` float32 [C]."""
    if (
        x.dtype != np.float32
        or bias.dtype != np.float32
        or x.ndim < 2
        or bias.shape != x.shape[1:2]
        or not (x.flags.c_contiguous and x.flags.writeable)
    ):
        raise ValueError(
            f"add_channel_bias: {x.dtype} {x.shape} plus {bias.dtype} {bias.shape}; expected "
            "C-contiguous float32 [N, C, ...] plus float32 [C]"
        )
    if not x.size:
        return
    kernels.use_threads(x.size)
    add_channel_bias_kernel(x.reshape(x.shape[0], x.shape[1], -1), np.ascontiguousarray(bias))


CHUNK = 1 << 14  # elements a parallel task takes


@numba_kernel(parallel=True)
def relu_kernel(source, dest):
    """`relu_numba` on flat checked arrays, in chunks of CHUNK elements. The element is
    stored as it is read (no conversion, which would quiet a signalling NaN)."""
    size = len(source)
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        for i in range(np.uint64(start), np.uint64(min(start + CHUNK, size))):
            value = source[i]
            if value > 0 or value != value:
                dest[i] = value
            else:
                dest[i] = 0


@numba_kernel(parallel=True)
def add_channel_bias_kernel(x, bias):
    """`add_channel_bias` on checked arguments, `x` [N, C, pixels]; items in parallel."""
    items, channels, pixels = x.shape
    flat = x.reshape(-1)
    for n in prange(items):
        for c in range(channels):
            value = bias[c]
            at = np.uint64((n * channels + c) * pixels)
            for p in range(pixels):
                flat[at + np.uint64(p)] += value
