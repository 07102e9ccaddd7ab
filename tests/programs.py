"""Hand-built graph-level programs for pass tests (no ONNX involved)."""

from __future__ import annotations

import numpy as np

from xbarc.hardware import make_hardware
from xbarc.ir.tile import ConvGeometry, CrossbarLayer, GraphInput, Program, with_tensors
from xbarc.ir.types import TensorType


def layers_program(
    weights: list[np.ndarray],
    tiles: int = 128,
    tile_rows: int = 128,
    tile_cols: int = 128,
    cell_bits: int = 2,
) -> Program:
    """A chain of matmul layers, one per weight tensor [groups, rows, cols]."""
    hardware = make_hardware(tiles, tile_rows, tile_cols, cell_bits)
    first_rows = weights[0].shape[0] * weights[0].shape[1]
    program = Program(hardware, inputs=(GraphInput("x", TensorType("f32", (1, first_rows))),))
    ops = []
    tensors = {}
    previous = "x"
    for index, weight in enumerate(weights):
        groups, rows, cols = weight.shape
        name = f"fc{index}"
        tensors[f"{name}.w"] = weight.astype(np.float32)
        ops.append(
            CrossbarLayer(
                name=name,
                kind="matmul",
                input=previous,
                output=f"y{index}",
                output_type=TensorType("f32", (1, groups * cols)),
                weight=f"{name}.w",
                bias=None,
                groups=groups,
                rows=rows,
                cols=cols,
            )
        )
        previous = f"y{index}"
    program = with_tensors(program, tensors)
    from dataclasses import replace

    return replace(program, ops=tuple(ops), outputs=(previous,))


def depthwise_program(channels: int, kernel: int = 3, tiles: int = 16) -> Program:
    """One depthwise 2-D convolution on a 1 x channels x 8 x 8 input."""
    from dataclasses import replace

    hardware = make_hardware(tiles)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(channels, kernel * kernel, 1)).astype(np.float32)
    layer = CrossbarLayer(
        name="dw",
        kind="conv",
        input="x",
        output="y",
        output_type=TensorType("f32", (1, channels, 8, 8)),
        weight="dw.w",
        bias=None,
        groups=channels,
        rows=kernel * kernel,
        cols=1,
        geometry=ConvGeometry((kernel, kernel), (1, 1), (1, 1, 1, 1), (1, 1)),
    )
    program = Program(hardware, inputs=(GraphInput("x", TensorType("f32", (1, channels, 8, 8))),))
    program = with_tensors(program, {"dw.w": weight})
    return replace(program, ops=(layer,), outputs=("y",))
