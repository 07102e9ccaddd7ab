"""im2col and col2im: convolution inputs unfolded into crossbar columns, products folded back.

    unfold(x, kernel, strides, pads, dilations, groups) -> columns [groups, rows, N*prod(out)]
    fold(products, batch, in_spatial, cout_per_group, kernel, ...) -> y [N, Cout, *out]

Spatial ranks 1 to 3 run through one rank-3 Numba kernel: lower ranks get leading axes of
size 1 (`lift`). `pads` are ONNX ordered: all begins, then all ends. The layouts are in
`xbarc.runtime.kernels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xbarc.ir.geometry import conv_output_spatial, conv_transpose_output_spatial
from xbarc.runtime.kernels import backend, numba_kernel, prange, touched, use_threads

KERNEL_RANK = 3


def lift(values: Sequence[int], fill: int) -> tuple[int, ...]:
    """Per-axis values for the rank-3 kernels: leading axes of size 1 get `fill`."""
    return (fill,) * (KERNEL_RANK - len(values)) + tuple(int(v) for v in values)


def _lift_pads(pads: Sequence[int]) -> tuple[int, ...]:
    rank = len(pads) // 2
    return lift(pads[:rank], 0) + lift(pads[rank:], 0)


def _tap_sources(
    out_length: int, in_length: int, kernel: int, stride: int, dilation: int, pad_begin: int
) -> np.ndarray:
    """[out_length, kernel]: the input index whose product with tap t lands on output o
    of a transposed convolution (o = i*stride + t*dilation - pad_begin), or -1."""
    span = np.arange(out_length)[:, None] + pad_begin - np.arange(kernel)[None, :] * dilation
    source = span // stride
    lands = (span >= 0) & (span % stride == 0) & (source < in_length)
    return np.where(lands, source, -1)


def unfold(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    groups: int,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """im2col: x [N, C, *spatial] -> [groups, C/groups*prod(kernel), N*prod(out)], float32
    (int8, uint8 and float64 `x` keep their type: DAC digits and levels).

    Row (channel in group, k0, k1, ...), column n*prod(out) + output pixel (row-major);
    positions in the padding read zero. `out`, a C-contiguous array of the result's shape
    and type, is filled and returned instead of a new array.
    """
    out_spatial = _check_unfold(x, kernel, strides, pads, dilations, groups)
    if backend() == "numpy":
        return unfold_numpy(x, kernel, strides, pads, dilations, groups, out=out)
    shape = _unfold_shape(x.shape, kernel, groups, out_spatial)
    dtype = unfold_dtype(x)
    out = _output_buffer("unfold", out, shape, dtype)
    x3 = np.ascontiguousarray(x, dtype=dtype).reshape(x.shape[:2] + lift(x.shape[2:], 1))
    use_threads(out.size)
    unfold_numba(
        x3,
        lift(kernel, 1),
        lift(strides, 1),
        _lift_pads(pads),
        lift(dilations, 1),
        lift(out_spatial, 1),
        out,
    )
    return out


def fold(
    columns: np.ndarray,
    batch: int,
    in_spatial: Sequence[int],
    cout_per_group: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
) -> np.ndarray:
    """col2im: [groups, cout_per_group*prod(kernel), N*prod(in)] -> y [N, Cout, *out].

    The product of input pixel i and kernel tap k lands on output i*stride + k*dilation -
    pad_begin per axis; products landing in the padding are dropped. Each output sums its
    products in increasing tap order (that order makes the two backends bit-identical).
    """
    geometry = (
        batch,
        in_spatial,
        cout_per_group,
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
    )
    if backend() == "numpy":
        return fold_numpy(columns, *geometry)
    out_spatial = _check_fold(columns, *geometry)
    axes = zip(
        lift(out_spatial, 1),
        lift(in_spatial, 1),
        lift(kernel, 1),
        lift(strides, 1),
        lift(dilations, 1),
        _lift_pads(pads)[:KERNEL_RANK],
        strict=True,
    )
    sources = tuple(_tap_sources(*axis) for axis in axes)
    y = touched((batch, groups * cout_per_group, *lift(out_spatial, 1)), np.float32)
    use_threads(y.size * math.prod(kernel))
    fold_numba(
        np.ascontiguousarray(columns, dtype=np.float32),
        int(batch),
        int(cout_per_group),
        lift(in_spatial, 1),
        sources,
        lift(out_spatial, 1),
        int(groups),
        y,
    )
    return y.reshape(batch, groups * cout_per_group, *out_spatial)


def unfold_numpy(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    groups: int,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    out_spatial = _check_unfold(x, kernel, strides, pads, dilations, groups)
    rank = x.ndim - 2
    batch, channels = x.shape[:2]
    dtype = unfold_dtype(x)
    padded = np.pad(
        np.asarray(x, dtype=dtype),
        [(0, 0), (0, 0)] + [(pads[a], pads[rank + a]) for a in range(rank)],
    )
    # taps [N, C, *kernel, *out]: one strided window of the padded input per kernel tap
    taps = np.empty((batch, channels, *kernel, *out_spatial), dtype=dtype)
    for tap in np.ndindex(*kernel):
        window = tuple(
            slice(
                tap[a] * dilations[a],
                tap[a] * dilations[a] + strides[a] * (out_spatial[a] - 1) + 1,
                strides[a],
            )
            for a in range(rank)
        )
        taps[(slice(None), slice(None), *tap)] = padded[(slice(None), slice(None), *window)]
    # [N, C, *kernel, *out] -> [groups, C/groups*K, N, P]
    shape = _unfold_shape(x.shape, kernel, groups, out_spatial)
    out = _output_buffer("unfold", out, shape, dtype)
    rows = taps.reshape(batch, groups, shape[1], -1).transpose(1, 2, 0, 3)
    out.reshape(groups, shape[1], batch, -1)[...] = rows
    return out


def fold_numpy(
    columns: np.ndarray,
    batch: int,
    in_spatial: Sequence[int],
    cout_per_group: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
) -> np.ndarray:
    out_spatial = _check_fold(
        columns,
        batch,
        in_spatial,
        cout_per_group,
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
    )
    rank = len(in_spatial)
    products = np.asarray(columns, dtype=np.float32).reshape(
        groups, cout_per_group, *kernel, batch, *in_spatial
    )
    # -> [N, groups, cout, *kernel, *in]
    products = np.moveaxis(products, 2 + rank, 0)
    # The canvas holds every product position i*stride + k*dilation; the output is the
    # canvas shifted by pad_begin (output_padding may reach past the last product).
    canvas_spatial = [
        max((in_spatial[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1,
            pads[a] + out_spatial[a])
        for a in range(rank)
    ]  # fmt: skip
    canvas = np.zeros((batch, groups, cout_per_group, *canvas_spatial), dtype=np.float32)
    for tap in np.ndindex(*kernel):
        window = tuple(
            slice(
                tap[a] * dilations[a],
                tap[a] * dilations[a] + strides[a] * (in_spatial[a] - 1) + 1,
                strides[a],
            )
            for a in range(rank)
        )
        canvas[(slice(None),) * 3 + window] += products[(slice(None),) * 3 + tap]
    crop = tuple(slice(pads[a], pads[a] + out_spatial[a]) for a in range(rank))
    image = canvas[(slice(None),) * 3 + crop]
    return np.ascontiguousarray(image).reshape(batch, groups * cout_per_group, *out_spatial)


def _check_geometry(
    op: str,
    rank: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> None:
    if not 1 <= rank <= KERNEL_RANK:
        raise ValueError(f"{op}: {rank} spatial axes; 1 to {KERNEL_RANK} are supported")
    lengths = (len(kernel), len(strides), len(pads), len(dilations))
    if lengths != (rank, rank, 2 * rank, rank):
        raise ValueError(
            f"{op}: kernel, strides, pads, dilations have lengths {lengths}; "
            f"expected {(rank, rank, 2 * rank, rank)} for {rank} spatial axes"
        )
    if min(kernel) < 1 or min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise ValueError(
            f"{op}: kernel {tuple(kernel)}, strides {tuple(strides)} and dilations "
            f"{tuple(dilations)} must be positive and pads {tuple(pads)} non-negative"
        )


def _check_unfold(x, kernel, strides, pads, dilations, groups) -> tuple[int, ...]:
    rank = x.ndim - 2
    _check_geometry("unfold", rank, kernel, strides, pads, dilations)
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"unfold: {x.shape[1]} channels do not split into {groups} groups")
    out_spatial = conv_output_spatial(x.shape[2:], kernel, strides, pads, dilations)
    if min(out_spatial) < 1:
        raise ValueError(
            f"unfold: kernel {tuple(kernel)} with dilations {tuple(dilations)} does not fit "
            f"input {x.shape[2:]} padded by {tuple(pads)}"
        )
    return out_spatial


def _unfold_shape(x_shape, kernel, groups, out_spatial) -> tuple[int, int, int]:
    batch, channels = x_shape[:2]
    return (groups, channels // groups * math.prod(kernel), batch * math.prod(out_spatial))


def unfold_dtype(x: np.ndarray) -> np.dtype:
    """The element type `unfold` gives for `x`: int8, uint8 and float64 stay, the rest is
    float32."""
    return x.dtype if x.dtype in (np.int8, np.uint8, np.float64) else np.dtype(np.float32)


def _output_buffer(
    op: str, out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    if out is None:
        return touched(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"{op}: out is {out.dtype} {out.shape}; expected C-contiguous {dtype} {shape}"
        )
    return out


def _check_fold(
    columns,
    batch,
    in_spatial,
    cout_per_group,
    kernel,
    strides,
    pads,
    dilations,
    output_padding,
    groups,
) -> tuple[int, ...]:
    rank = len(in_spatial)
    _check_geometry("fold", rank, kernel, strides, pads, dilations)
    if len(output_padding) != rank or min(output_padding) < 0:
        raise ValueError(
            f"fold: output_padding {tuple(output_padding)} must be {rank} non-negative values"
        )
    expected = (groups, cout_per_group * math.prod(kernel), batch * math.prod(in_spatial))
    if columns.shape != expected:
        raise ValueError(f"fold: columns have shape {columns.shape}, expected {expected}")
    out_spatial = conv_transpose_output_spatial(
        in_spatial, kernel, strides, pads, dilations, output_padding
    )
    if min(out_spatial) < 1:
        raise ValueError(f"fold: pads {tuple(pads)} leave an empty output {out_spatial}")
    return out_spatial


# ---------------------------------------------------------------------------------------
# Numba kernels, compiled on first use


@numba_kernel(parallel=True)
def unfold_numba(x, kernel, strides, pads, dilations, out_spatial, out):
    """`unfold` on checked arguments lifted to rank 3: `x` [N, C, D, H, W], the geometry
    as 3-tuples (`pads` 6), `out` [groups, rows, N*prod(out_spatial)]."""
    batch, channels, in_d, in_h, in_w = x.shape
    k_d, k_h, k_w = kernel
    s_d, s_h, s_w = strides
    d_d, d_h, d_w = dilations
    out_d, out_h, out_w = out_spatial
    groups, row_length, _ = out.shape
    pixels = out_d * out_h * out_w
    group_channels = channels // groups
    taps = k_d * k_h * k_w
    # Flat indices: array views would count references in the hot loop.
    source = x.reshape(-1)
    dest = out.reshape(-1)
    # One task per row of the result (image, channel, tap): a strided copy of the input
    # plane per output line, zeros where the tap reads the padding.
    for task in prange(batch * channels * taps):
        n = task // (channels * taps)
        c = task // taps % channels
        tap = task % taps
        t_d = tap // (k_h * k_w)
        t_h = tap // k_w % k_h
        t_w = tap % k_w
        g = c // group_channels
        row = (c % group_channels) * taps + tap
        first = ((g * row_length + row) * batch + n) * pixels
        plane = (n * channels + c) * in_d * in_h * in_w
        # output columns whose input column o_w*s_w + shift lies inside [0, in_w)
        shift = t_w * d_w - pads[2]
        inside_from = min(out_w, max(0, -(shift // s_w)))
        inside_to = max(inside_from, min(out_w, -((shift - in_w) // s_w)))
        for o_d in range(out_d):
            i_d = o_d * s_d - pads[0] + t_d * d_d
            for o_h in range(out_h):
                i_h = o_h * s_h - pads[1] + t_h * d_h
                at = first + (o_d * out_h + o_h) * out_w
                if not (0 <= i_d < in_d and 0 <= i_h < in_h):
                    for o_w in range(out_w):
                        dest[at + o_w] = 0
                    continue
                for o_w in range(inside_from):
                    dest[at + o_w] = 0
                # unsigned indices: LLVM can then vectorize the gather
                line = np.uint64(plane + (i_d * in_h + i_h) * in_w + shift)
                for o_w in range(inside_from, inside_to):
                    dest[np.uint64(at + o_w)] = source[line + np.uint64(o_w * s_w)]
                for o_w in range(inside_to, out_w):
                    dest[at + o_w] = 0


@numba_kernel(parallel=True)
def fold_numba(columns, batch, cout_per_group, in_spatial, sources, out_spatial, groups, y):
    """`fold` on checked arguments lifted to rank 3: `sources` per axis the input index
    each (output, tap) reads or -1 (`_tap_sources`), `y` [N, Cout, D, H, W]."""
    in_d, in_h, in_w = in_spatial
    source_d, source_h, source_w = sources
    k_d, k_h, k_w = source_d.shape[1], source_h.shape[1], source_w.shape[1]
    out_d, out_h, out_w = out_spatial
    # Gather form of col2im: each output sums its products in increasing tap order,
    # like the numpy twin's loop over taps; one task per output row, so no races.
    for task in prange(batch * out_d * out_h):
        n = task // (out_d * out_h)
        o_d = task // out_h % out_d
        o_h = task % out_h
        for g in range(groups):
            for co in range(cout_per_group):
                for o_w in range(out_w):
                    total = np.float32(0.0)
                    for t_d in range(k_d):
                        i_d = source_d[o_d, t_d]
                        if i_d < 0:
                            continue
                        for t_h in range(k_h):
                            i_h = source_h[o_h, t_h]
                            if i_h < 0:
                                continue
                            pixel = ((n * in_d + i_d) * in_h + i_h) * in_w
                            row = ((co * k_d + t_d) * k_h + t_h) * k_w
                            for t_w in range(k_w):
                                i_w = source_w[o_w, t_w]
                                if i_w >= 0:
                                    total += columns[g, row + t_w, pixel + i_w]
                    y[n, g * cout_per_group + co, o_d, o_h, o_w] = total
