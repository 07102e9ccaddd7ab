"""Patches: a crossbar layer's input unfolded into the columns that drive the rows, and back.

    unfold, restore = layer_columns(layer, x.shape)
    columns = unfold(x)            # [groups, rows, P]: one column per patch
    y = restore(accumulated)       # [groups, cols, P] laid out as the layer's output

A convolution's patches are its output pixels (im2col, or a view of the input planes for
a pointwise convolution); a transposed convolution reads each input pixel and folds the
products back into the image (col2im); a Gemm or MatMul reads each row of its input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.ir.geometry import conv_output_spatial
from xbarc.ir.tile import CrossbarLayer
from xbarc.runtime.kernels import im2col

Memory = Callable[[tuple[int, ...]], np.ndarray]  # a float32 buffer of the given shape


def layer_columns(layer: CrossbarLayer, shape: tuple[int, ...]):
    """How a layer's input of `shape` drives the crossbar rows: a function from an array of
    that shape to its columns [groups, rows, P] (one column per patch, P = batch x pixels;
    where they are not a view of the input, they go into `memory(shape)` if given), and the
    function that lays the accumulated [groups, cols, P] out as the layer's output."""
    check_width(layer, shape)
    geometry = layer.geometry
    groups = layer.groups
    if layer.kind == "conv":
        assert geometry is not None
        batch = shape[0]
        out_spatial = conv_output_spatial(
            shape[2:], geometry.kernel, geometry.strides, geometry.pads, geometry.dilations
        )
        pointwise = all(k == 1 for k in geometry.kernel) and all(s == 1 for s in geometry.strides)

        def unfold(x: np.ndarray, memory: Memory | None = None) -> np.ndarray:
            if pointwise and not any(geometry.pads):  # the input planes (a view at batch 1)
                return channels_first(x, groups)
            shape = (groups, layer.rows, batch * math.prod(out_spatial))
            return im2col.unfold(
                x,
                geometry.kernel,
                geometry.strides,
                geometry.pads,
                geometry.dilations,
                groups,
                out=None if memory is None else memory(shape),
            )

        def image(acc: np.ndarray) -> np.ndarray:
            planes = acc.reshape(groups, layer.cols, batch, -1).transpose(2, 0, 1, 3)
            return planes.reshape(batch, groups * layer.cols, *out_spatial)

        return unfold, image
    if layer.kind == "conv_transpose":
        assert geometry is not None
        batch, in_spatial = shape[0], shape[2:]
        cout_per_group = layer.cols // math.prod(geometry.kernel)

        def fold(acc: np.ndarray) -> np.ndarray:
            return im2col.fold(
                np.ascontiguousarray(acc, dtype=np.float32),
                batch,
                in_spatial,
                cout_per_group,
                geometry.kernel,
                geometry.strides,
                geometry.pads,
                geometry.dilations,
                geometry.output_padding or (0,) * len(geometry.kernel),
                groups,
            )

        return lambda x, memory=None: channels_first(x, groups), fold
    # Gemm / MatMul: each row of the input is one patch
    leading, features = shape[:-1], shape[-1]

    def rows(acc: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(acc[0].T).reshape(*leading, acc.shape[1])

    return lambda x, memory=None: x.reshape(-1, features).T[None], rows


def check_width(layer: CrossbarLayer, shape: tuple[int, ...]) -> None:
    """Refuse an input whose width (channels, or features of a Gemm or MatMul) is not the
    one the layer's blocks read: a read of fewer rows would be a silent partial read."""
    geometry = layer.geometry
    if geometry is None:
        rank_ok, width, expected = len(shape) >= 1, shape[-1:], layer.rows
    else:
        per_group = layer.rows
        if layer.kind == "conv":
            per_group //= math.prod(geometry.kernel)
        rank_ok, width, expected = len(shape) == 2 + len(geometry.kernel), shape[1:2], per_group
        expected *= layer.groups
    if rank_ok and tuple(width) == (expected,):
        return
    shown = "x".join(map(str, shape)) or "scalar"
    raise XbarcError(
        f"layer @{layer.name} reads {expected} input "
        f"{'features' if geometry is None else 'channels'} per patch, but its input has "
        f"shape {shown}",
        hint="the input does not fit the compiled program (another batch size through a "
        "model that fixes it?); compile the model for this input's shape",
    )


def channels_first(x: np.ndarray, groups: int) -> np.ndarray:
    """[N, C, *spatial] -> [groups, C/groups, N*pixels]: a view at batch 1, else a copy."""
    batch, channels = x.shape[:2]
    planes = x.reshape(batch, groups, channels // groups, -1).transpose(1, 2, 0, 3)
    return planes.reshape(groups, channels // groups, -1)
