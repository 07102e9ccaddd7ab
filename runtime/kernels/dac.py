"""The DAC: inputs quantized to symmetric levels and cut into the bit slices that drive the rows.

    dac_planes(x, scale, bits, slice_bits, count, out=planes) -> (any positive, any negative)

`quantize_inputs` and `bit_slices` are the numpy reference of `dac_planes`, whose Numba
kernel quantizes, splits the signs and slices in one pass.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from xbarc.runtime.kernels import backend, numba_kernel, prange, use_threads


def quantize_inputs(x: np.ndarray, scale: float | np.ndarray, bits: int) -> np.ndarray:
    """Symmetric DAC levels: clip(rint(x / scale), -(2^(bits-1)-1), 2^(bits-1)-1) as int32."""
    if not 2 <= bits <= 32:
        raise ValueError(f"quantize_inputs: {bits} bits; expected 2 to 32")
    limit = 2 ** (bits - 1) - 1
    levels = np.divide(x, scale)
    np.rint(levels, out=levels)
    np.clip(levels, -limit, limit, out=levels)
    return levels.astype(np.int32)


def dac_planes(
    x: np.ndarray,
    scale: float,
    bits: int,
    slice_bits: int,
    count: int,
    *,
    out: np.ndarray | None = None,
) -> tuple[bool, bool]:
    """The DAC's input slices of `x`, in one pass, into `out` ([2, count, *x.shape],
    C-contiguous float32 or float64, int8 for digits below 128, uint8 for digits below
    256: whole 8-bit levels): [0] the slices of the
    positive part of `quantize_inputs(x, scale, bits)`, [1] those of the negative part's
    magnitude (as `bit_slices`). Returns whether each part has a non-zero."""
    x = np.asarray(x, dtype=np.float32)
    if not 2 <= bits <= 32 or not 1 <= slice_bits <= 8 or count < 0:
        raise ValueError(f"dac_planes: {bits} bits in {count} slices of {slice_bits} bits")
    shape = (2, count, *x.shape)
    digit_bits = min(slice_bits, bits - 1)
    if (
        out is None
        or out.shape != shape
        or not (
            out.dtype in (np.float32, np.float64)
            or (out.dtype == np.int8 and digit_bits <= 7)
            or (out.dtype == np.uint8 and digit_bits <= 8)
        )
        or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"dac_planes: out must be float32 {shape} (int8 for digits < 128, uint8 < 256)"
        )
    if backend() == "numpy":
        return dac_planes_numpy(x, scale, bits, slice_bits, count, out=out)
    nonzero = np.zeros(2, np.int64)  # per sign: how many runs of values hold a non-zero
    use_threads(out.size)
    dac_planes_numba(
        np.ascontiguousarray(x).reshape(-1),
        np.float32(scale),
        np.float32(2 ** (bits - 1) - 1),
        int(slice_bits),
        out.reshape(2, count, x.size),
        nonzero,
    )
    return bool(nonzero[0]), bool(nonzero[1])


def dac_planes_numpy(
    x: np.ndarray, scale: float, bits: int, slice_bits: int, count: int, *, out: np.ndarray
) -> tuple[bool, bool]:
    levels = quantize_inputs(x, scale, bits)
    parts = (np.maximum(levels, 0), np.maximum(-levels, 0))
    for sign, part in enumerate(parts):
        out[sign] = bit_slices(part, slice_bits, count, out.dtype)
    return bool(parts[0].any()), bool(parts[1].any())


def bit_slices(
    levels_nonneg: np.ndarray, slice_bits: int, count: int, dtype: npt.DTypeLike = np.uint8
) -> np.ndarray:
    """Slices of non-negative integers, least significant first: [count, *levels.shape].

    Slice j is (v >> (j*slice_bits)) & (2^slice_bits - 1), stored as `dtype`. Numpy only:
    the reference of `dac_planes`, whose Numba kernel slices in the same pass.
    """
    levels = _check_bit_slices(levels_nonneg, slice_bits, count)
    shifts = (np.arange(count, dtype=levels.dtype) * slice_bits).reshape(
        (count,) + (1,) * levels.ndim
    )
    mask = (1 << slice_bits) - 1
    return ((levels[np.newaxis] >> shifts) & mask).astype(dtype)


def _check_bit_slices(levels_nonneg, slice_bits: int, count: int) -> np.ndarray:
    levels = np.asarray(levels_nonneg)
    if not 1 <= slice_bits <= 8 or count < 0:
        raise ValueError(
            f"bit_slices: {count} slices of {slice_bits} bits; expected widths of 1 to 8 bits"
        )
    if levels.dtype.kind not in "iu":
        raise ValueError(f"bit_slices: levels are {levels.dtype}; expected integers")
    if levels.size and levels.min() < 0:
        raise ValueError("bit_slices: levels must be non-negative; split signs first")
    return levels


# ---------------------------------------------------------------------------------------
# Numba kernel, compiled on first use


@numba_kernel(parallel=True)
def dac_planes_numba(x, scale, limit, slice_bits, out, nonzero):
    """`dac_planes` on checked arguments: `x` flat float32, `out` [2, count, x.size],
    levels clipped to +-`limit`; `nonzero[sign]` counts the runs of values with a
    non-zero."""
    _, count, size = out.shape
    mask = np.int32((1 << slice_bits) - 1)
    dest = out.reshape(-1)
    chunk = 16384
    chunks = (size + chunk - 1) // chunk
    flags = np.zeros((chunks, 2), np.int32)
    # Runs of consecutive values per task, flat unsigned indices, no reduction
    # variables across the parallel loop: the inner loop vectorizes.
    for task in prange(chunks):
        start = task * chunk
        stop = min(start + chunk, size)
        any_up = np.int32(0)
        any_down = np.int32(0)
        for j in range(count):
            shift = np.int32(j * slice_bits)
            up_row = np.uint64(j * size)
            down_row = np.uint64((count + j) * size)
            for i in range(start, stop):
                at = np.uint64(i)
                # float32 arithmetic, as numpy's x / scale with a float32 x
                level = np.int32(min(max(np.rint(x[at] / scale), -limit), limit))
                up = max(level, np.int32(0))
                down = max(-level, np.int32(0))
                any_up |= up
                any_down |= down
                dest[up_row + at] = (up >> shift) & mask
                dest[down_row + at] = (down >> shift) & mask
        flags[task, 0] = any_up
        flags[task, 1] = any_down
    nonzero[0] = flags[:, 0].sum()
    nonzero[1] = flags[:, 1].sum()
