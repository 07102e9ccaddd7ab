"""Patch geometry: how many input vectors a crossbar layer reads, and the output extent of
a convolution. Shared by the passes (which weigh tiles against cycles), the report and
the runtime (which unfolds inputs), so that all three count patches the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence

from xbarc.ir.tile import CrossbarLayer
from xbarc.ir.types import TensorType


def conv_output_spatial(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> tuple[int, ...]:
    """Output extent of a convolution per spatial axis (ONNX Conv, explicit pads)."""
    rank = len(spatial)
    return tuple(
        (spatial[a] + pads[a] + pads[rank + a] - dilations[a] * (kernel[a] - 1) - 1) // strides[a]
        + 1
        for a in range(rank)
    )


def conv_transpose_output_spatial(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
) -> tuple[int, ...]:
    """Output extent of a transposed convolution per spatial axis (ONNX ConvTranspose)."""
    rank = len(in_spatial)
    return tuple(
        (in_spatial[a] - 1) * strides[a]
        - pads[a]
        - pads[rank + a]
        + dilations[a] * (kernel[a] - 1)
        + output_padding[a]
        + 1
        for a in range(rank)
    )


def layer_patches(layer: CrossbarLayer, types: dict[str, TensorType]) -> int:
    """Input vectors the layer's crossbars read in one forward pass (0 if unknown)."""
    source = types.get(layer.input) if layer.kind == "conv_transpose" else layer.output_type
    if source is None or not source.is_static:
        return 0
    shape = source.static_shape()
    if layer.kind in ("conv", "conv_transpose"):
        return shape[0] * math.prod(shape[2:])
    return math.prod(shape[:-1])
