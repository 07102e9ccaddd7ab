"""The nine real network topologies that ship with onnx compile, round-trip and keep
every weight."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import light_model, light_model_params
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import Span


def onnx_weight_count(model: onnx.ModelProto) -> int:
    """Weights of the Conv/ConvTranspose/Gemm/MatMul nodes, read straight from the ONNX graph
    (the light models build their weights with ConstantOfShape of a constant shape, some
    then Reshape them)."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = {name: value.shape for name, value in initializers.items()}
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in initializers:
            shapes[node.output[0]] = tuple(int(d) for d in initializers[node.input[0]])
        if node.op_type == "Reshape" and node.input[0] in shapes:  # keeps the count
            shapes[node.output[0]] = (math.prod(shapes[node.input[0]]),)
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            total += math.prod(shapes[node.input[1]])
    return total


def placed_weights(program) -> int:
    """Distinct weight positions covered by the blocks of each array's first slice, checking
    that every slice covers the same positions exactly once."""
    total = 0
    for array in program.arrays:
        coverage = np.zeros((len(array.slices), array.groups, array.rows, array.cols), np.uint8)
        for block in program.blocks:
            if block.array != array.name:
                continue
            assert isinstance(block.rows, Span) and isinstance(block.cols, Span)
            rows = slice(block.rows.start, block.rows.stop)
            cols = slice(block.cols.start, block.cols.stop)
            coverage[block.slice, block.group, rows, cols] += 1
        assert coverage.max() == 1 and coverage.min() == 1, array.name
        total += array.groups * array.rows * array.cols
    return total


@pytest.mark.parametrize("name", light_model_params())
def test_light_model_compiles_round_trips_and_keeps_every_weight(name):
    path = light_model(name)
    program = compile_onnx(path, CompileOptions(tiles=128))
    expected = onnx_weight_count(onnx.load(path))
    assert sum(layer.weight_count for layer in program.layers()) == expected
    assert placed_weights(program) == expected
    text = print_program(program)
    parsed = parse_program(text, f"{name}.xbar").program
    assert parsed == program
    assert print_program(parsed) == text
