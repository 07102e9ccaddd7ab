"""Every op of `xbarc.onnx_ops` (the semantics constant folding and the runtime share)
against onnxruntime, on edge cases, through both paths:

- folding: the op in a model whose inputs are initializers, folded by the frontend
  (`build_graph`, `fold_constants`) into a constant;
- running: the op in a model whose inputs are graph inputs, lowered to a `DigitalOp` and
  executed as the executor does (`run_digital_op`).

Neither path may fall back (to onnx's reference evaluator or to onnxruntime): the
semantics under test must produce the result. Results must have onnxruntime's dtype and
shape and, by default, its exact bits (NaN where it has NaN): integers, booleans, ops
that move, pick or convert values, and IEEE-rounded arithmetic (Add, Sub, Mul, Div,
Range's accumulation) must be bit-equal. Float ops that onnxruntime computes with its own
vectorized approximations or summation orders (exp, log, tanh, sigmoid, softmax, pow,
averages, MatMul, BatchNormalization, linear Resize) are compared to `FLOAT_ROUNDING`
(relative 1e-6, absolute 1e-7), the tolerance of tests/test_digital.py. A model that
onnxruntime refuses must be refused by both paths too (an XbarcError).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import onnxruntime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import ModelProto, TensorProto, ValueInfoProto, helper, numpy_helper

from xbarc import onnx_ops
from xbarc.diagnostics import XbarcError
from xbarc.frontend import fold
from xbarc.frontend.load import build_graph
from xbarc.frontend.lower import lower_graph
from xbarc.hardware import make_hardware
from xbarc.ir.tensors import element_type
from xbarc.ir.tile import DigitalOp
from xbarc.ir.types import TensorType
from xbarc.onnx_ops import SEMANTICS
from xbarc.runtime import digital
from xbarc.runtime.executor import run_digital_op

FLOAT_ROUNDING = {"rtol": 1e-6, "atol": 1e-7}
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)


@dataclass(frozen=True)
class Case:
    """One op on concrete inputs (None: an omitted optional input)."""

    op_type: str
    inputs: Sequence[np.ndarray | None]
    attributes: dict[str, Any] = field(default_factory=dict)
    opset: int = 17
    outputs: int = 1
    tolerance: dict[str, float] | None = None  # None: bit-equal

    def node(self) -> Any:
        names = ["" if x is None else f"x{i}" for i, x in enumerate(self.inputs)]
        outputs = [f"y{i}" for i in range(self.outputs)]
        return helper.make_node(self.op_type, names, outputs, name="op", **self.attributes)

    def model(self, constant_inputs: bool) -> ModelProto:
        present = [(f"x{i}", x) for i, x in enumerate(self.inputs) if x is not None]
        declared = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for name, x in present
        ]
        graph = helper.make_graph(
            [self.node()],
            "case",
            [] if constant_inputs else declared,
            [ValueInfoProto(name=f"y{i}") for i in range(self.outputs)],
            initializer=[numpy_helper.from_array(x, name) for name, x in present]
            if constant_inputs
            else [],
        )
        return helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=8
        )

    def feeds(self) -> dict[str, np.ndarray]:
        return {f"x{i}": x for i, x in enumerate(self.inputs) if x is not None}

    def __repr__(self) -> str:
        shapes = ",".join("_" if x is None else f"{x.dtype}{list(x.shape)}" for x in self.inputs)
        return f"{self.op_type}-{self.opset}({shapes}){self.attributes or ''}"


def onnxruntime_outputs(case: Case) -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(
        case.model(constant_inputs=False).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    return [np.asarray(y) for y in session.run(None, case.feeds())]


@contextmanager
def no_fallbacks():
    """Fail if folding or running hands the op to its fallback."""
    with (
        mock.patch.object(
            fold, "_evaluate_with_reference", side_effect=AssertionError("folding fell back")
        ),
        mock.patch.object(
            digital, "run_onnxruntime", side_effect=AssertionError("running fell back")
        ),
    ):
        yield


def folded_outputs(case: Case) -> list[np.ndarray]:
    graph = build_graph(case.model(constant_inputs=True), {}, "case.onnx")
    assert fold.fold_constants(graph, "case.onnx"), "the node did not fold"
    return [graph.constants[f"y{i}"] for i in range(case.outputs)]


def run_outputs(case: Case) -> list[np.ndarray | None]:
    inputs = {
        f"x{i}": TensorType(element_type(x), tuple(x.shape))
        for i, x in enumerate(case.inputs)
        if x is not None
    }
    graph = build_graph(case.model(constant_inputs=False), inputs, "case.onnx")
    program = lower_graph(graph, make_hardware(tiles=1), "case.onnx")
    (op,) = program.ops
    assert isinstance(op, DigitalOp)
    return run_digital_op(op, case.feeds(), program.store)


def assert_same(got: np.ndarray | None, want: np.ndarray, case: Case, path: str) -> None:
    assert got is not None, f"{path}: no result"
    assert (got.dtype, got.shape) == (want.dtype, want.shape), f"{path} of {case!r}"
    if case.tolerance is None or want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=f"{path} of {case!r}", strict=True)
    else:
        np.testing.assert_allclose(got, want, err_msg=f"{path} of {case!r}", **case.tolerance)


def check(case: Case) -> None:
    """Folding and running give onnxruntime's outputs, or both refuse what it refuses."""
    try:
        expected = onnxruntime_outputs(case)
    except Exception:  # onnxruntime refuses the model: so must xbarc, on both paths
        with no_fallbacks():
            with pytest.raises(XbarcError):
                folded_outputs(case)
            with pytest.raises(XbarcError):
                run_outputs(case)
        return
    with no_fallbacks():
        folded, ran = folded_outputs(case), run_outputs(case)
    for index, want in enumerate(expected):
        assert_same(folded[index], want, case, f"folding output {index}")
        assert_same(ran[index], want, case, f"running output {index}")


def ints(*values: int, dtype: Any = np.int64) -> np.ndarray:
    return np.array(values, dtype=dtype)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def scalar(value: Any, dtype: Any) -> np.ndarray:
    return np.array(value, dtype=dtype)


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def arange(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


FIVE = arange(5)
MATRIX = arange(3, 4, dtype=np.int64)
CUBE = randn(2, 3, 4)

# --- the edge cases the folder and the runtime disagreed on, or could -------------------

SLICE_CASES = [
    # the example: start -100 clamps to 0 when stepping backwards
    Case("Slice", [FIVE, ints(-100), ints(-100), None, ints(-1)]),
    Case("Slice", [FIVE, ints(-100), ints(-100)]),
    Case("Slice", [FIVE, ints(100), ints(-100), None, ints(-1)]),
    Case("Slice", [FIVE, ints(10), ints(20)]),
    Case("Slice", [FIVE, ints(-10), ints(-7)]),
    Case("Slice", [FIVE, ints(2), ints(2)]),
    Case("Slice", [FIVE, ints(3), ints(1)]),
    Case("Slice", [FIVE, ints(1), ints(INT64_MAX)]),
    Case("Slice", [FIVE, ints(-1), ints(INT64_MAX), None, ints(-1)]),
    Case("Slice", [FIVE, ints(-1), ints(INT64_MIN), None, ints(-1)]),
    Case("Slice", [FIVE, ints(INT64_MIN), ints(INT64_MAX), None, ints(2)]),
    Case("Slice", [FIVE, ints(INT64_MAX), ints(INT64_MIN), None, ints(-2)]),
    Case("Slice", [FIVE, *(ints(v, dtype=np.int32) for v in (4, INT32_MAX, 0, -1))]),
    Case("Slice", [FIVE, *(ints(v, dtype=np.int32) for v in (INT32_MIN, INT32_MAX))]),
    Case("Slice", [MATRIX, ints(-1, 0), ints(-5, 2), ints(-1, -2), ints(-2, 1)]),
    Case("Slice", [MATRIX, ints(0), ints(9), ints(-1), ints(3)]),
    Case("Slice", [CUBE, ints(1, 3), ints(2, -1), ints(0, 2)]),
    Case("Slice", [FIVE, ints(0), ints(5), None, ints(0)]),  # a zero step is refused
    Case("Slice", [MATRIX, ints(0, 1), ints(2, 3), ints(1, -1)]),  # an axis twice
    Case("Slice", [CUBE], {"starts": [1, -100], "ends": [100, -1], "axes": [-1, 0]}, opset=9),
    Case("Slice", [FIVE, ints(-100), ints(-100), None, ints(-1)], opset=10),
]

GATHER_CASES = [
    Case("Gather", [MATRIX, ints(-1, 0, -3)], {"axis": 0}),
    Case("Gather", [MATRIX, ints(-4, 3, dtype=np.int32)], {"axis": -1}),
    Case("Gather", [CUBE, scalar(-2, np.int64)], {"axis": -2}),
    Case("Gather", [CUBE, np.array([[0, -1], [2, 1]], np.int64)], {"axis": 1}),
    Case("Gather", [MATRIX, np.zeros((0,), np.int64)], {"axis": 1}),
    Case("Gather", [ints(7, 8, 9), ints(3)]),  # out of range: refused
    Case("Gather", [ints(7, 8, 9), ints(-4)]),
]

CONCAT_CASES = [
    Case("Concat", [MATRIX, MATRIX[:, :1]], {"axis": -1}),
    Case("Concat", [CUBE, CUBE[:1], CUBE[:0]], {"axis": -3}),
    Case("Concat", [MATRIX[:0], MATRIX[:2]], {"axis": 0}),
    Case("Concat", [ints(1, 2, dtype=np.int32), ints(3, dtype=np.int32)], {"axis": 0}),
    Case("Concat", [MATRIX, MATRIX[:, :1]], {"axis": 0}),  # mismatched: refused
]

SQUEEZE_CASES = [
    Case("Squeeze", [arange(1, 3, 1, 1), ints(-1, 0)]),
    Case("Squeeze", [arange(1, 3, 1, 1)]),
    Case("Squeeze", [arange(1, 3, 1)], {"axes": [-1]}, opset=11),
    Case("Squeeze", [arange(1, 1, dtype=np.int64), ints(-2, -1)]),
    Case("Squeeze", [arange(1, 3), ints(1)]),  # not of size 1: refused
    Case("Unsqueeze", [MATRIX, ints(-1, 0)]),
    Case("Unsqueeze", [MATRIX, ints(3, 0)]),
    Case("Unsqueeze", [scalar(2.5, np.float32), ints(-1)]),
    Case("Unsqueeze", [CUBE], {"axes": [-1, 1]}, opset=11),
    Case("Unsqueeze", [MATRIX, ints(1, 1)]),  # twice the same axis: refused
]

LAYOUT_CASES = [
    Case("Flatten", [CUBE], {"axis": -1}),
    Case("Flatten", [CUBE], {"axis": -3}),
    Case("Flatten", [CUBE], {"axis": 0}),
    Case("Flatten", [CUBE], {"axis": 3}),
    Case("Flatten", [arange(2, 0, 3)], {"axis": 2}),
    Case("Transpose", [CUBE], {"perm": [2, 0, 1]}),
    Case("Transpose", [MATRIX]),
    Case("Transpose", [arange(2, 1, 3, 2, dtype=np.int32)], {"perm": [3, 1, 0, 2]}),
    Case("Reshape", [CUBE, ints(0, -1)]),
    Case("Reshape", [CUBE, ints(-1, 0, 2)]),
    Case("Reshape", [CUBE, ints(0, 0, 0)]),
    Case("Reshape", [CUBE, ints(4, 0, 2)]),
    Case("Reshape", [arange(0, 3), ints(0, 3)], {"allowzero": 1}),
    Case("Reshape", [arange(0, 3), ints(3, 0)], {"allowzero": 1}),
    Case("Reshape", [arange(0, 3), ints(3, 0)]),
    Case("Reshape", [arange(2, 0), ints(0, -1)]),
    Case("Reshape", [CUBE, ints(5, -1)]),  # does not divide: refused
    Case("Expand", [arange(3, 1), ints(3, 4)]),
    Case("Expand", [arange(4), ints(2, 1, 4)]),
    Case("Expand", [CUBE, ints(3, 1)]),
    Case("Expand", [arange(3, 1, dtype=np.int64), ints(1, 5)]),
    Case("Expand", [arange(0, 1), ints(1, 3)]),
    Case("Expand", [scalar(7, np.int32), ints()]),
    Case("Expand", [arange(3), ints(2)]),  # does not broadcast: refused
    Case("Split", [CUBE], {"axis": -1}, outputs=2),
    Case("Split", [CUBE, ints(1, 0, 2)], {"axis": 1}, outputs=3),
    Case("Split", [arange(7)], {"num_outputs": 3}, opset=18, outputs=3),
    Case("Pad", [MATRIX, ints(1, -1, 0, 2)]),
    Case("Pad", [CUBE, ints(0, 1, 2, 1, 0, 0), scalar(-1.5, np.float32)]),
    Case("Pad", [CUBE, ints(1, 2, 0, 2), None, ints(-1, 0)], {"mode": "edge"}, opset=18),
    Case("Pad", [CUBE, ints(0, 0, 2, 0, 0, 1)], {"mode": "reflect"}),
]

BROADCAST_SHAPES = [
    ((2, 3, 4), (4,)),
    ((3, 1), (1, 5)),
    ((2, 1, 4), (3, 1)),
    ((), (2, 3)),
    ((5,), (1,)),
]

ARITHMETIC_CASES = [
    *(
        Case(op, [randn(*a, seed=1), randn(*b, seed=2)])
        for op in ("Add", "Sub", "Mul", "Div")
        for a, b in BROADCAST_SHAPES
    ),
    *(
        Case(op, [np.random.default_rng(3).integers(-50, 50, a).astype(dtype), divisor])
        for op in ("Add", "Sub", "Mul", "Div")
        for dtype in (np.int64, np.int32)
        for a, divisor in (((4, 3), ints(7, -2, 5, dtype=dtype)), ((2, 1), ints(-3, dtype=dtype)))
    ),
    # integer Div truncates toward zero, as C++ does, where numpy floors
    Case("Div", [ints(-7, 7, -7, 7, 0, -1, 9), ints(2, -2, -2, 2, -3, 4, -10)]),
    Case("Div", [ints(-7, 7, -6, 1, dtype=np.int32), ints(3, -4, 4, -1, dtype=np.int32)]),
    Case("Div", [ints(200, 7, 255, dtype=np.uint8), ints(3, 2, 16, dtype=np.uint8)]),
    Case("Div", [ints(INT64_MAX, INT64_MIN + 1), ints(-7, 3)]),
    # wrapping and IEEE specials
    Case("Add", [ints(INT32_MAX, INT32_MIN, dtype=np.int32), ints(1, -1, dtype=np.int32)]),
    Case("Sub", [ints(3, 0, dtype=np.uint8), ints(5, 1, dtype=np.uint8)]),
    Case("Mul", [ints(INT64_MAX, 3), ints(2, -(2**62))]),
    Case("Div", [f32(1, -1, 0, np.inf, 3), f32(0, 0, 0, np.inf, -np.inf)]),
    Case("Add", [f32(np.inf, np.nan, 1e38), f32(-np.inf, 1, 1e38)]),
    Case("Mul", [f32(1e30, -0.0), f32(1e10, 5)]),
    Case("Add", [np.array([0.1, 1e300], np.float64), np.array([0.2, 1e300], np.float64)]),
]

CAST_CASES = [
    Case("Cast", [f32(-2.7, -0.5, 0.5, 2.7, 1e6)], {"to": TensorProto.INT32}),
    Case("Cast", [f32(-2.7, 127.9, -128.9)], {"to": TensorProto.INT8}),
    Case("Cast", [f32(-2.7, 2.7, 3e9)], {"to": TensorProto.INT64}),
    Case("Cast", [ints(2**53 + 1, -(2**40) - 1, 3)], {"to": TensorProto.FLOAT}),
    Case("Cast", [ints(2**53 + 1, -(2**60) - 1, 3)], {"to": TensorProto.DOUBLE}),
    Case("Cast", [ints(2**40 + 5, -(2**33) - 2, -1)], {"to": TensorProto.INT32}),
    Case("Cast", [ints(200, 127, 0, 255, dtype=np.uint8)], {"to": TensorProto.INT8}),
    Case("Cast", [ints(-1, 300, dtype=np.int32)], {"to": TensorProto.UINT8}),
    Case("Cast", [f32(70000, 1e-8, 0.1, -3.3e-5, 65519)], {"to": TensorProto.FLOAT16}),
    Case("Cast", [np.array([0.1, 1e39, -1e-46, 2.5], np.float64)], {"to": TensorProto.FLOAT}),
    Case("Cast", [f32(0, -0.0, 0.25, -3, np.inf, np.nan)], {"to": TensorProto.BOOL}),
    Case("Cast", [ints(0, 2, -1, dtype=np.int32)], {"to": TensorProto.BOOL}),
    Case("Cast", [np.array([True, False])], {"to": TensorProto.INT64}),
    Case("Cast", [np.array([True, False])], {"to": TensorProto.FLOAT}),
    Case("Cast", [np.array([1.5, -2.25], np.float16)], {"to": TensorProto.INT16}),
    Case("Cast", [MATRIX], {"to": TensorProto.INT64}),
    Case("Cast", [f32(-2.7, 2.7)], {"to": TensorProto.INT32}, opset=9),
]

RANGE_CASES = [
    Case("Range", [scalar(1, np.int64), scalar(13, np.int64), scalar(3, np.int64)]),
    Case("Range", [scalar(5, np.int64), scalar(1, np.int64), scalar(-2, np.int64)]),
    Case("Range", [scalar(5, np.int32), scalar(-4, np.int32), scalar(-3, np.int32)]),
    Case("Range", [scalar(1, np.int64), scalar(1, np.int64), scalar(1, np.int64)]),
    Case("Range", [scalar(3, np.int64), scalar(1, np.int64), scalar(1, np.int64)]),
    Case("Range", [scalar(1, np.int64), scalar(3, np.int64), scalar(-1, np.int64)]),
    Case("Range", [scalar(0.1, np.float32), scalar(10.0, np.float32), scalar(0.1, np.float32)]),
    Case("Range", [scalar(1.0, np.float32), scalar(-2.0, np.float32), scalar(-0.3, np.float32)]),
    Case("Range", [scalar(1.0, np.float32), scalar(1.0, np.float32), scalar(0.5, np.float32)]),
    # counts that tell the arithmetic apart: 11 and 12 with the inputs subtracted in double
    # (onnxruntime), 12 and 12 with a float32 difference, 11 and 11 all in float32
    Case("Range", [scalar(0.37, np.float32), scalar(4.44, np.float32), scalar(0.37, np.float32)]),
    Case("Range", [scalar(0.0, np.float32), scalar(4.07, np.float32), scalar(0.37, np.float32)]),
    Case("Range", [scalar(0.5, np.float64), scalar(3.0, np.float64), scalar(0.7, np.float64)]),
    Case("Range", [scalar(1, np.int64), scalar(5, np.int64), scalar(0, np.int64)]),  # refused
]

CONSTANT_CASES = [
    Case("ConstantOfShape", [ints()]),
    Case("ConstantOfShape", [ints()], {"value": numpy_helper.from_array(ints(7))}),
    Case("ConstantOfShape", [ints(2, 0)], {"value": numpy_helper.from_array(f32(2.5))}),
    Case(
        "ConstantOfShape",
        [ints(2, 3)],
        {"value": numpy_helper.from_array(ints(-4, dtype=np.int32))},
    ),
    Case("ConstantOfShape", [ints(3)], {"value": numpy_helper.from_array(np.array([True]))}),
    Case("ConstantOfShape", [ints(0)]),
    Case("Constant", [], {"value": numpy_helper.from_array(MATRIX)}),
    Case("Constant", [], {"value_float": 0.1}),
    Case("Constant", [], {"value_ints": [3, -1]}),
    Case("Shape", [CUBE]),
    Case("Shape", [CUBE], {"start": -2}, opset=15),
    Case("Shape", [CUBE], {"start": -10, "end": 10}, opset=15),
    Case("Shape", [CUBE], {"start": 2, "end": 1}, opset=15),
    Case("Shape", [scalar(1.0, np.float32)]),
    Case("Size", [CUBE]),
    Case("Size", [scalar(3, np.int32)]),
    Case("Size", [arange(2, 0)]),
    Case("Identity", [MATRIX]),
    Case("Dropout", [CUBE], outputs=2, opset=9),
    Case("Dropout", [CUBE], outputs=2, opset=10),
    Case("Dropout", [CUBE], outputs=2, opset=13),
    Case("Dropout", [CUBE, scalar(0.3, np.float32), scalar(False, np.bool_)], outputs=2),
]

# --- one case or more for every other op the folder and the runtime share ---------------

ROUNDED = FLOAT_ROUNDING
POSITIVE = np.abs(randn(2, 3, 4, seed=4)) + np.float32(0.1)
IMAGE = randn(1, 2, 6, 6, seed=5)

COMPUTE_CASES = [
    *(Case(op, [CUBE]) for op in ("Relu", "Neg", "Abs")),
    *(Case(op, [CUBE], tolerance=ROUNDED) for op in ("Sigmoid", "Tanh", "Exp", "HardSwish")),
    *(Case(op, [POSITIVE], tolerance=ROUNDED) for op in ("Log", "Sqrt")),
    Case("Relu", [ints(-3, 0, 4, dtype=np.int32)]),
    Case("Abs", [ints(-3, INT64_MIN + 1, 4)]),
    Case("Neg", [ints(-3, 0, 4, dtype=np.int8)]),
    Case("LeakyRelu", [CUBE], {"alpha": 0.3}),
    Case("HardSigmoid", [CUBE], {"alpha": 0.3, "beta": 0.4}),
    Case("Clip", [CUBE, scalar(-0.5, np.float32), scalar(0.5, np.float32)]),
    Case("Clip", [ints(-9, 0, 9), None, scalar(4, np.int64)]),
    Case("Clip", [CUBE], {"min": -0.5, "max": 0.2}, opset=9),
    Case("Pow", [POSITIVE, f32(2.5)], tolerance=ROUNDED),
    Case("Pow", [POSITIVE, ints(3)], tolerance=ROUNDED),
    Case("Sum", [CUBE, randn(4, seed=6), randn(3, 1, seed=7)]),
    Case("Sum", [CUBE]),
    Case("Mean", [CUBE, randn(3, 4, seed=6)], tolerance=ROUNDED),
    Case("Max", [CUBE, randn(1, 4, seed=6)]),
    Case("Min", [MATRIX, ints(5), ints(1, 2, 3, 4)]),
    Case("MatMul", [randn(2, 3, 4), randn(4, 5, seed=8)], tolerance=ROUNDED),
    Case("MatMul", [MATRIX, ints(1, -2, 3, 0)]),
    Case("MaxPool", [IMAGE], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    Case(
        "MaxPool",
        [IMAGE],
        {"kernel_shape": [2, 2], "ceil_mode": 1, "strides": [2, 2]},
        outputs=2,
    ),
    Case(
        "AveragePool",
        [IMAGE],
        {"kernel_shape": [3, 3], "pads": [1, 0, 1, 2], "count_include_pad": 1},
        tolerance=ROUNDED,
    ),
    Case(
        "AveragePool",
        [IMAGE],
        {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER"},
        tolerance=ROUNDED,
    ),
    Case("GlobalAveragePool", [IMAGE], tolerance=ROUNDED),
    Case("GlobalMaxPool", [IMAGE]),
    Case(
        "BatchNormalization",
        [IMAGE, f32(0.5, 2), f32(0.1, -0.3), f32(0.2, 0.4), f32(1.5, 0.25)],
        {"epsilon": 1e-3},
        tolerance=ROUNDED,
    ),
    Case("Softmax", [CUBE], {"axis": -2}, tolerance=ROUNDED),
    Case("Softmax", [CUBE], {"axis": 1}, opset=11, tolerance=ROUNDED),
    Case("LogSoftmax", [CUBE], tolerance=ROUNDED),
    Case("Resize", [IMAGE, None, f32(1, 1, 2, 1.5)], {"mode": "nearest"}),
    Case("Resize", [IMAGE, None, None, ints(1, 2, 4, 9)], {"mode": "linear"}, tolerance=ROUNDED),
    Case("Resize", [IMAGE, f32(1, 1, 2, 2)], {"mode": "nearest"}, opset=10),
    Case("Upsample", [IMAGE, f32(1, 1, 2, 3)], {"mode": "nearest"}, opset=9),
]

CASES = [
    *SLICE_CASES,
    *GATHER_CASES,
    *CONCAT_CASES,
    *SQUEEZE_CASES,
    *LAYOUT_CASES,
    *ARITHMETIC_CASES,
    *CAST_CASES,
    *RANGE_CASES,
    *CONSTANT_CASES,
    *COMPUTE_CASES,
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_folding_and_running_give_onnxruntimes_outputs(case):
    check(case)


def test_every_op_with_semantics_is_checked():
    assert set(SEMANTICS) == {case.op_type for case in CASES}


def test_the_semantics_import_no_other_part_of_xbarc():
    """They sit below the frontend and the runtime, which both import them."""
    package = Path(onnx_ops.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                inside = name == "xbarc.onnx_ops" or name.startswith("xbarc.onnx_ops.")
                assert inside or not name.startswith("xbarc"), f"{path.name} imports {name}"


def test_folding_and_running_use_the_same_semantics():
    """Both paths look the op up in one table: the runtime adds only its Numba pools and
    Relu (each bit-equal to the semantics it replaces: tests/test_digital.py)."""
    own = {op for op in digital.native_op_types() if digital._KERNELS[op] is not SEMANTICS.get(op)}
    assert set(digital.native_op_types()) == set(SEMANTICS)
    assert own == {"MaxPool", "AveragePool", "Relu"}


# --- properties ---------------------------------------------------------------------------

BOUNDS = st.one_of(
    st.integers(-8, 8),
    st.sampled_from([INT64_MIN, INT64_MAX, INT32_MIN, INT32_MAX, -100, 100]),
)


@settings(max_examples=80, deadline=None)
@given(
    slices=st.lists(
        st.tuples(
            st.integers(-3, 2), BOUNDS, BOUNDS, st.sampled_from([1, 2, 3, -1, -2, -5, INT64_MAX])
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda s: s[0] % 3,
    ),
    integer_data=st.booleans(),
)
def test_slice_matches_onnxruntime_on_any_bounds(slices, integer_data):
    axes, starts, ends, steps = (ints(*column) for column in zip(*slices, strict=True))
    data = arange(4, 5, 3, dtype=np.int64 if integer_data else np.float32)
    check(Case("Slice", [data, starts, ends, axes, steps]))


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(-20, 20),
    limit=st.integers(-20, 20),
    delta=st.integers(-7, 7).filter(bool),
    dtype=st.sampled_from([np.int32, np.int64, np.float32]),
)
def test_range_matches_onnxruntime(start, limit, delta, dtype):
    scale = 0.37 if dtype == np.float32 else 1  # float deltas that do not add up exactly
    values = (scalar(v * scale, dtype) for v in (start, limit, delta))
    check(Case("Range", list(values)))


@settings(max_examples=60, deadline=None)
@given(
    left=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=6),
    divisor=st.integers(-(2**31) + 1, 2**31 - 1).filter(bool),
    dtype=st.sampled_from([np.int32, np.int64]),
)
def test_integer_division_truncates_like_onnxruntime(left, divisor, dtype):
    check(Case("Div", [ints(*left, dtype=dtype), ints(divisor, dtype=dtype)]))


@st.composite
def broadcastable_shapes(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast: ranks may differ, any dim may be 1 or 0 on one side."""
    out = draw(st.lists(st.integers(0, 3), min_size=0, max_size=4))
    left = [draw(st.sampled_from([d, 1])) for d in out]
    right = [draw(st.sampled_from([d, 1])) for d in out]
    right = right[draw(st.integers(0, len(right))) :]
    return tuple(left), tuple(right)


@settings(max_examples=60, deadline=None)
@given(
    shapes=broadcastable_shapes(),
    op_type=st.sampled_from(["Add", "Sub", "Mul", "Div", "Expand"]),
    integers=st.booleans(),
)
def test_broadcasting_matches_onnxruntime(shapes, op_type, integers):
    left, right = shapes
    rng = np.random.default_rng(len(left) + 3 * len(right))
    if integers:
        a = rng.integers(-20, 20, left).astype(np.int64)
        b = rng.integers(1, 9, right).astype(np.int64) * rng.choice([-1, 1], right)
    else:
        a, b = rng.standard_normal(left), rng.standard_normal(right)
    a, b = (np.asarray(x, np.int64 if integers else np.float32) for x in (a, b))
    if op_type == "Expand":
        b = ints(*right)
    check(Case(op_type, [a, b]))
