"""Digital ops on the host: every numpy kernel against onnxruntime running the same one-node
model, across attribute variants and opsets; the onnxruntime fallback, its session cache
and its errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from unittest import mock

import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Attribute, Const, DigitalOp, Value
from xbarc.onnx_ops import pooling
from xbarc.runtime import activation_kernels, digital, pool_kernels
from xbarc.runtime.digital import cached_session, run_digital, run_onnxruntime

NEWEST = 26  # the newest opset onnxruntime supports


def attribute(name: str, value, store: dict[str, np.ndarray]) -> Attribute:
    """An Attribute of the kind `value` implies; arrays become tensors in `store`."""
    if isinstance(value, np.ndarray):
        store[f"attr.{name}"] = value
        return Attribute(name, "tensor", Const(f"attr.{name}"))
    if isinstance(value, bool | int):
        return Attribute(name, "int", int(value))
    if isinstance(value, float):
        return Attribute(name, "float", value)
    if isinstance(value, str):
        return Attribute(name, "string", value)
    values = tuple(value)
    if all(isinstance(v, str) for v in values) and values:
        return Attribute(name, "strings", values)
    if all(isinstance(v, int) for v in values):
        return Attribute(name, "ints", values)
    return Attribute(name, "floats", tuple(float(v) for v in values))


def digital_op(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    opset: int,
    outputs: int | Sequence[str] = 1,
    domain: str = "",
    **attributes,
) -> tuple[DigitalOp, dict[str, np.ndarray]]:
    store: dict[str, np.ndarray] = {}
    names = tuple(f"y{i}" for i in range(outputs)) if isinstance(outputs, int) else outputs
    op = DigitalOp(
        name=f"{op_type.lower()}_0",
        op_type=op_type,
        domain=domain,
        opset=opset,
        inputs=tuple(None if x is None else Value(f"x{i}") for i, x in enumerate(inputs)),
        outputs=tuple(names),
        output_types=(None,) * len(names),
        attributes=tuple(attribute(k, v, store) for k, v in attributes.items()),
    )
    return op, store


@contextmanager
def native_only():
    """Fail if the kernel hands the op to onnxruntime."""
    with mock.patch.object(
        digital, "run_onnxruntime", side_effect=AssertionError("fell back to onnxruntime")
    ):
        yield


def check(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    opset: int = NEWEST,
    *,
    outputs: int | Sequence[str] = 1,
    rtol: float = 1e-6,
    atol: float = 1e-7,
    may_fall_back: bool = False,
    **attributes,
) -> list[np.ndarray | None]:
    """Run the op natively (or as run_digital chooses, if `may_fall_back`) and in
    onnxruntime; the results must agree in dtype and shape, exactly for integers and to
    `rtol`/`atol` for floats."""
    op, store = digital_op(op_type, inputs, opset, outputs, **attributes)
    expected = run_onnxruntime(op, inputs, store.__getitem__)
    with nullcontext() if may_fall_back else native_only():
        actual = run_digital(op, inputs, store.__getitem__)
    assert len(actual) == len(expected) == len(op.outputs)
    for got, want in zip(actual, expected, strict=True):
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert (got.dtype, got.shape) == (want.dtype, want.shape)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(got, want)
    return actual


def randn(*shape: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randint(*shape: int, low: int = -9, high: int = 10, seed: int = 0, dtype=np.int32):
    return np.random.default_rng(seed).integers(low, high, shape).astype(dtype)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# --- elementwise -------------------------------------------------------------------------

SHAPES = [(), (7,), (2, 3, 5), (1, 4, 6, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "op_type", ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Identity", "HardSwish"]
)
def test_unary(op_type, shape):
    x = randn(*shape) * 4
    check(op_type, [x])


@pytest.mark.parametrize("op_type", ["Log", "Sqrt"])
def test_unary_positive(op_type):
    check(op_type, [np.abs(randn(3, 8)) + 0.01], 13)


def test_sigmoid_saturates_without_overflow():
    check("Sigmoid", [floats(-1000, -90, -20, 0, 20, 90, 1000)], 13)


@pytest.mark.parametrize("op_type", ["Relu", "Neg", "Abs"])
@pytest.mark.parametrize("dtype", [np.int32, np.int8])
def test_integer_unary(op_type, dtype):
    check(op_type, [randint(4, 5, dtype=dtype)], 14)


@pytest.mark.parametrize("opset", [9, 16])
@pytest.mark.parametrize("alpha", [None, 0.1, 3.0])
def test_leaky_relu(opset, alpha):
    extra = {} if alpha is None else {"alpha": alpha}
    check("LeakyRelu", [randn(3, 7)], opset, **extra)


@pytest.mark.parametrize("params", [{}, {"alpha": 0.3, "beta": 0.4}, {"alpha": 0.1}])
def test_hard_sigmoid(params):
    check("HardSigmoid", [randn(4, 9) * 5], 9, **params)
    check("HardSigmoid", [randn(4, 9) * 5], NEWEST, **params)


def test_hard_swish_saturates():
    check("HardSwish", [floats(-5, -3, -1.5, 0, 1.5, 3, 5)], 14)


@pytest.mark.parametrize("params", [{}, {"min": -0.5}, {"max": 0.3}, {"min": -0.2, "max": 0.7}])
def test_clip_attributes_before_opset_11(params):
    check("Clip", [randn(5, 6)], 6, **params)
    check("Clip", [randn(5, 6)], 9, **params)


@pytest.mark.parametrize("opset", [11, 13, NEWEST])
@pytest.mark.parametrize(
    "bounds", [(), (floats(-0.5)[0],), (None, floats(0.3)[0]), (floats(-0.2)[0], floats(0.7)[0])]
)
def test_clip_inputs(opset, bounds):
    bounds = [None if b is None else np.array(b, dtype=np.float32) for b in bounds]
    x = np.concatenate([randn(20), floats(np.inf, -np.inf)])
    check("Clip", [x, *bounds], opset)


def test_clip_min_above_max_gives_max():
    check("Clip", [randn(10), np.array(1.0, np.float32), np.array(-1.0, np.float32)], 13)


def test_clip_integers():
    check("Clip", [randint(30), np.array(-3, np.int32), np.array(4, np.int32)], 13)
    check("Clip", [randint(30, dtype=np.int64), None, np.array(4, np.int64)], NEWEST)


BROADCASTS = [
    ((3, 4), (3, 4)),
    ((2, 3, 4), (4,)),
    ((2, 1, 4), (3, 1)),
    ((), (2, 3)),
    ((1, 8, 5, 5), (1, 8, 1, 1)),
]


@pytest.mark.parametrize("shapes", BROADCASTS)
@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_float(op_type, shapes):
    a, b = randn(*shapes[0], seed=1), randn(*shapes[1], seed=2)
    check(op_type, [a, b], 9)
    check(op_type, [b, a], NEWEST)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_integer(op_type, dtype):
    a = randint(4, 6, seed=1, dtype=dtype)
    b = randint(6, seed=2, dtype=dtype)
    b[b == 0] = 3
    check(op_type, [a, b], 13)
    check(op_type, [a, b[::-1].copy()], 14)


def test_integer_division_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 6, -6, 0], dtype=np.int64)
    b = np.array([2, 2, -2, -2, 3, -3, 5], dtype=np.int64)
    (quotient,) = check("Div", [a, b], 13)
    assert quotient is not None
    assert quotient.tolist() == [3, -3, -3, 3, 2, 2, 0]


@pytest.mark.parametrize(
    "exponent", [floats(2.0), floats(0.5), floats(3.0, -1.0, 0.5), np.array([2, 3, 1], np.int64)]
)
def test_pow(exponent):
    base = np.abs(randn(4, 3)) + 0.1
    check("Pow", [base, exponent], 15 if exponent.dtype == np.int64 else 9)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("op_type", ["Sum", "Max", "Min", "Mean"])
def test_variadic(op_type, count):
    shapes = [(2, 3, 4), (3, 1), (4,)][:count]
    inputs = [randn(*shape, seed=i) for i, shape in enumerate(shapes)]
    check(op_type, inputs, 9)
    check(op_type, inputs, NEWEST)


@pytest.mark.parametrize("op_type", ["Max", "Min"])
def test_variadic_integers(op_type):
    check(op_type, [randint(3, 4, seed=1), randint(4, seed=2), randint(3, 1, seed=3)], 13)


@pytest.mark.parametrize(
    "shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))]
)
def test_matmul(shapes):
    a, b = randn(*shapes[0], seed=1), randn(*shapes[1], seed=2)
    check("MatMul", [a, b], 13, rtol=1e-5, atol=1e-6)


def test_matmul_integers():
    check("MatMul", [randint(3, 4, seed=1), randint(4, 2, seed=2)], 13)


# --- buffer donation ---------------------------------------------------------------------

SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 0.0, -0.0]


def special(x: np.ndarray) -> np.ndarray:
    """`x` with a NaN, infinities and signed zeros at its start (floats only)."""
    if x.dtype.kind == "f" and x.size >= 5:
        x.reshape(-1)[:5] = SPECIAL_FLOATS
    return x


POSITIVE = np.abs(randn(2, 3, 5)) + 0.01
DONATING: list[tuple[str, list[np.ndarray], dict]] = [
    ("Relu", [randn(2, 3, 5)], {}),
    ("Relu", [randint(2, 3, 5)], {}),
    ("Relu", [randn()], {}),
    ("LeakyRelu", [randn(2, 3, 5)], {"alpha": 0.1}),
    ("Sigmoid", [randn(2, 3, 5) * 30], {}),
    ("HardSigmoid", [randn(2, 3, 5) * 5], {"alpha": 0.3}),
    ("HardSwish", [randn(2, 3, 5) * 5], {}),
    ("Clip", [randn(2, 3, 5), floats(-0.5).reshape(()), floats(0.3).reshape(())], {}),
    ("Clip", [randn(7, dtype=np.float64)], {}),
    ("Tanh", [randn(2, 3, 5)], {}),
    ("Exp", [randn(2, 3, 5)], {}),
    ("Log", [POSITIVE], {}),
    ("Sqrt", [POSITIVE], {}),
    ("Neg", [randn(2, 3, 5)], {}),
    ("Abs", [randint(2, 3, 5)], {}),
    ("Add", [randn(2, 3, 5, seed=1), randn(2, 3, 5, seed=2)], {}),
    ("Sub", [randn(2, 3, 5, seed=1), randn(3, 5, seed=2)], {}),
    ("Mul", [randn(2, 1, 5, seed=1), randn(2, 3, 5, seed=2)], {}),
    ("Div", [randn(2, 3, 5, seed=1), randn(2, 3, 5, seed=2)], {}),
    ("Div", [randint(2, 3, 5, seed=1), randint(5, low=1, seed=2)], {}),
    ("Sum", [randn(2, 3, 5, seed=1), randn(2, 3, 5, seed=2)], {}),
    ("Sum", [randn(3, 5, seed=1), randn(2, 3, 5, seed=2), randn(5, seed=3)], {}),
    ("Max", [randn(2, 3, 5, seed=1), randn(2, 3, 5, seed=2), randn(2, 3, 5, seed=3)], {}),
    ("Min", [randint(2, 3, 5, seed=1), randint(2, 3, 5, seed=2)], {}),
    ("Mean", [randn(2, 3, 5, seed=1), randn(1, 5, seed=2), randn(2, 3, 5, seed=3)], {}),
    ("Mean", [randn(2, 3, 5)], {}),
]


def run_donating(
    op_type: str, inputs: Sequence[np.ndarray], attributes: dict, donated: frozenset[int]
) -> np.ndarray:
    op, store = digital_op(op_type, inputs, NEWEST, **attributes)
    with native_only():
        (result,) = run_digital(op, inputs, store.__getitem__, donated=donated)
    assert result is not None
    return result


@pytest.mark.parametrize(("op_type", "inputs", "attributes"), DONATING)
def test_donated_inputs_take_the_result_with_the_same_bits(op_type, inputs, attributes):
    originals = [special(x.copy()) for x in inputs]
    want = run_donating(op_type, [x.copy() for x in originals], attributes, frozenset())
    takers = 0
    for index in range(len(inputs)):
        fresh = [x.copy() for x in originals]
        got = run_donating(op_type, fresh, attributes, frozenset({index}))
        assert_same_bits(got, want)
        fitting = fresh[index].shape == want.shape and fresh[index].dtype == want.dtype
        # an n-ary fold can only write into one of the two operands it reads first
        fitting = fitting and (index < 2 or op_type not in ("Sum", "Max", "Min", "Mean"))
        assert np.shares_memory(got, fresh[index]) == fitting
        takers += fitting
        for other, (array, original) in enumerate(zip(fresh, originals, strict=True)):
            if other != index or not fitting:
                assert_same_bits(array, original)  # what is not donated or not taken is kept
    assert takers


@pytest.mark.parametrize(("op_type", "inputs", "attributes"), DONATING)
def test_inputs_are_kept_without_donation(op_type, inputs, attributes):
    fresh = [special(x.copy()) for x in inputs]
    originals = [x.copy() for x in fresh]
    got = run_donating(op_type, fresh, attributes, frozenset())
    for array, original in zip(fresh, originals, strict=True):
        assert not np.shares_memory(got, array)
        assert_same_bits(array, original)


def unfit_donations() -> list[tuple[str, list[np.ndarray]]]:
    """Donated inputs an op cannot write into: broadcast, of another dtype, read-only,
    strided, or also passed as another input of the op."""
    a, b = randn(3, 4, seed=1), randn(3, 4, seed=2)
    read_only = a.copy()
    read_only.flags.writeable = False
    return [
        ("Add", [randn(3, 1, seed=1), b]),
        ("Add", [a.astype(np.float16), b]),
        ("Add", [read_only, b]),
        ("Add", [randn(4, 3, seed=1).T, b]),
        ("Add", [a, a]),
        ("Sum", [a, b, a]),
        ("Relu", [randn(4, 6)[:, ::2]]),
    ]


@pytest.mark.parametrize(("op_type", "inputs"), unfit_donations())
def test_unfit_donations_are_not_taken(op_type, inputs):
    originals = [x.copy() for x in inputs]
    want = run_donating(op_type, originals, {}, frozenset())
    got = run_donating(op_type, inputs, {}, frozenset({0}))
    assert_same_bits(got, want)
    assert not np.shares_memory(got, inputs[0])
    for array, original in zip(inputs, originals, strict=True):
        assert_same_bits(array, original)


def test_views_are_unaffected_by_donation():
    x = randn(2, 6)
    op, store = digital_op("Reshape", [x, ints(3, 4)], NEWEST)
    (y,) = run_digital(op, [x, ints(3, 4)], store.__getitem__, donated=frozenset({0, 1}))
    assert y is not None and y.base is x


# --- pooling -----------------------------------------------------------------------------

POOLS_2D = [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [2, 0, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [3, 3], "strides": [2, 1], "auto_pad": "VALID"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 0, 0], "ceil_mode": 1},
]
DILATED = [
    {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 2, 2, 2]},
    {"kernel_shape": [2, 3], "dilations": [2, 1], "strides": [2, 2], "ceil_mode": 1},
]


@pytest.mark.parametrize("shape", [(1, 3, 9, 9), (2, 2, 8, 11)])
@pytest.mark.parametrize("params", POOLS_2D)
def test_max_pool_2d(params, shape):
    x = randn(*shape)
    check("MaxPool", [x], 12, **params)
    if "ceil_mode" not in params:
        check("MaxPool", [x], 9, **params)


@pytest.mark.parametrize("params", DILATED)
def test_max_pool_dilated(params):
    check("MaxPool", [randn(2, 3, 10, 9)], NEWEST, **params)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("params", POOLS_2D[:3] + DILATED)
def test_max_pool_indices(params, storage_order):
    # ties make the "first maximum" rule matter
    x = np.round(randn(2, 3, 9, 8) * 2).astype(np.float32)
    check("MaxPool", [x], 12, outputs=2, storage_order=storage_order, **params)


def test_max_pool_indices_only_some_outputs():
    check("MaxPool", [randn(1, 2, 6, 6)], 12, outputs=("", "i"), kernel_shape=[2, 2])


@pytest.mark.parametrize(
    "params",
    [
        {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
        {"kernel_shape": [4], "strides": [3], "ceil_mode": 1},
        {"kernel_shape": [2], "dilations": [3], "auto_pad": "SAME_UPPER"},
    ],
)
def test_max_pool_1d(params):
    check("MaxPool", [randn(2, 3, 17)], 12, **params)
    check("MaxPool", [randn(2, 3, 17)], 12, outputs=2, **params)


def test_max_pool_3d():
    check("MaxPool", [randn(1, 2, 5, 6, 7)], 12, kernel_shape=[2, 3, 2], pads=[1, 0, 1, 0, 1, 1])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_8_bit(dtype):
    x = randint(1, 3, 7, 7, low=0 if dtype == np.uint8 else -128, high=127, dtype=dtype)
    check("MaxPool", [x], 12, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("params", POOLS_2D)
def test_average_pool_2d(params, count_include_pad):
    x = randn(2, 3, 9, 10)
    check("AveragePool", [x], 11, count_include_pad=count_include_pad, **params)
    if "ceil_mode" not in params:
        check("AveragePool", [x], 9, count_include_pad=count_include_pad, **params)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("params", DILATED)
def test_average_pool_dilated(params, count_include_pad):
    check("AveragePool", [randn(2, 3, 10, 9)], 19, count_include_pad=count_include_pad, **params)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_1d(count_include_pad):
    params = {"kernel_shape": [3], "strides": [2], "pads": [1, 2]}
    check("AveragePool", [randn(2, 3, 12)], NEWEST, count_include_pad=count_include_pad, **params)


@st.composite
def pool_cases(draw) -> tuple[np.ndarray, dict]:
    """A 2-D pooling geometry onnxruntime accepts, and an input it fits."""
    kernel = [draw(st.integers(1, 4)) for _ in range(2)]
    params: dict = {
        "kernel_shape": kernel,
        "strides": [draw(st.integers(1, 3)) for _ in range(2)],
        "dilations": [draw(st.integers(1, 2)) for _ in range(2)],
        "ceil_mode": draw(st.integers(0, 1)),
    }
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    if auto_pad == "NOTSET":
        params["pads"] = [draw(st.integers(0, k - 1)) for k in kernel * 2]
    else:
        params["auto_pad"] = auto_pad
    reach = [d * (k - 1) + 1 for d, k in zip(params["dilations"], kernel, strict=True)]
    height, width = (draw(st.integers(r, r + 7)) for r in reach)
    return randn(2, 3, height, width, seed=draw(st.integers(0, 9))), params


@settings(max_examples=60, deadline=None)
@given(case=pool_cases(), count_include_pad=st.integers(0, 1), indices=st.booleans())
def test_pools_match_onnxruntime_on_random_geometries(case, count_include_pad, indices):
    x, params = case
    strides_over_kernel = any(
        s > k for s, k in zip(params["strides"], params["kernel_shape"], strict=True)
    )
    assume(not ("SAME" in params.get("auto_pad", "") and strides_over_kernel))
    # (onnxruntime's SAME padding can go negative there: it refuses)
    check("MaxPool", [x], 12, outputs=2 if indices else 1, **params)
    check("AveragePool", [x], 19, count_include_pad=count_include_pad, **params)


def test_max_pool_in_double():
    # onnxruntime has no double AveragePool: the kernel tests below hold it to its twin
    x = randn(2, 3, 11, 10, dtype=np.float64)
    check("MaxPool", [x], 12, kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1)


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 16, 7, 7), (2, 2, 3, 4, 5), (0, 3, 4, 4)])
def test_global_pools(op_type, shape):
    check(op_type, [randn(*shape)], 9)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_global_average_pool_of_other_floats(dtype):
    # onnxruntime has no double or half kernel to compare with
    x = randn(2, 5, 3, 4, dtype=dtype)
    op, store = digital_op("GlobalAveragePool", [x], 9)
    with native_only():
        (y,) = run_digital(op, [x], store.__getitem__)
    assert y is not None and (y.dtype, y.shape) == (x.dtype, (2, 5, 1, 1))
    want = np.mean(x.astype(np.float64), axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(y, want, rtol=1e-2 if dtype == np.float16 else 1e-12)


@st.composite
def pool_geometries(draw) -> tuple[np.ndarray, list[pooling.PoolAxis]]:
    """1 to 3 spatial axes of any geometry `pool_axes` accepts, windows that read only
    padding included, and float32 or float64 data sprinkled with NaN, infinities and
    signed zeros."""
    rank = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 3)) for _ in range(rank)]
    reach = [d * (k - 1) + 1 for d, k in zip(dilations, kernel, strict=True)]
    pads = [draw(st.integers(0, r)) for r in reach * 2]
    spatial = [
        draw(st.integers(max(1, r - pads[a] - pads[a + rank]), r + 6)) for a, r in enumerate(reach)
    ]
    strides = [draw(st.integers(1, 4)) for _ in range(rank)]
    axes = pooling.pool_axes(
        spatial, kernel, strides, dilations, pads, "NOTSET", draw(st.booleans())
    )
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = randn(
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        *spatial,
        seed=draw(st.integers(0, 9)),
        dtype=dtype,
    )
    return sprinkled(draw, x), axes


def sprinkled(draw, x: np.ndarray) -> np.ndarray:
    """`x` with a drawn share (0, 10 or 50 %) of its entries NaN, infinite or signed zero."""
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    specials = rng.random(x.shape) < draw(st.sampled_from([0.0, 0.1, 0.5]))
    x[specials] = rng.choice(SPECIAL_FLOATS, size=int(specials.sum()))
    return x


def assert_pools_give_the_numpy_twins_bits(x, axes, count_padding) -> None:
    """The max and average pool kernels give their numpy twins' bits on `x`."""
    assert_same_bits(pool_kernels.max_pool_numba(x, axes), pooling.max_pool_numpy(x, axes))
    x[x == -np.inf] = np.inf  # inf - inf makes a NaN whose sign depends on operand order
    counts = pooling.window_counts(axes, count_padding, x.dtype)
    assert_same_bits(
        pool_kernels.average_pool_numba(x, axes, counts),
        pooling.average_pool_numpy(x, axes, counts),
    )


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    unsigned = np.dtype(f"u{want.dtype.itemsize}")
    np.testing.assert_array_equal(got.view(unsigned), want.view(unsigned))


@settings(max_examples=150, deadline=None)
@given(case=pool_geometries())
def test_max_pool_kernel_gives_the_numpy_twins_bits(case):
    x, axes = case
    assert_same_bits(pool_kernels.max_pool_numba(x, axes), pooling.max_pool_numpy(x, axes))


@settings(max_examples=150, deadline=None)
@given(case=pool_geometries(), count_padding=st.booleans())
def test_average_pool_kernel_gives_the_numpy_twins_bits(case, count_padding):
    x, axes = case
    x[x == -np.inf] = np.inf  # inf - inf makes a NaN whose sign depends on operand order
    counts = pooling.window_counts(axes, count_padding, x.dtype)
    with np.errstate(all="ignore"):  # empty windows divide 0 by 0
        want = pooling.average_pool_numpy(x, axes, counts)
    assert_same_bits(pool_kernels.average_pool_numba(x, axes, counts), want)


def test_pools_of_other_types_run_in_numpy():
    x = randn(1, 2, 6, 6, dtype=np.float16)
    axes = pooling.pool_axes([6, 6], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], "NOTSET", False)
    with mock.patch.object(pool_kernels, "_numba", side_effect=AssertionError("ran Numba")):
        assert digital.max_pool(x, axes).dtype == np.float16
        counts = pooling.window_counts(axes, False, x.dtype)
        assert digital.average_pool(x, axes, counts).dtype == np.float16
        assert digital.max_pool(x.astype(np.int8), axes).dtype == np.int8


# --- shapes and layout -------------------------------------------------------------------


@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("axis", [0, 1, 2, 4])
def test_flatten(axis, opset):
    check("Flatten", [randn(2, 3, 4, 5)], opset, axis=axis)


@pytest.mark.parametrize("axis", [-1, -3, -4])
def test_flatten_negative_axis(axis):
    check("Flatten", [randn(2, 3, 4, 5)], 13, axis=axis)


@pytest.mark.parametrize(
    ("shape", "opset", "params"),
    [
        (ints(6, -1), 9, {}),
        (ints(0, 3, -1), 13, {}),
        (ints(-1), 13, {}),
        (ints(2, 0, 4, 5), 14, {"allowzero": 0}),
        (ints(2, 3, 20), 14, {"allowzero": 1}),
    ],
)
def test_reshape(shape, opset, params):
    check("Reshape", [randn(2, 3, 4, 5), shape], opset, **params)


def test_reshape_allowzero_keeps_zero_dims():
    check("Reshape", [np.zeros((0, 4), np.float32), ints(4, 0)], 14, allowzero=1)


@pytest.mark.parametrize("perm", [None, [0, 2, 3, 1], [3, 1, 0, 2]])
def test_transpose(perm):
    params = {} if perm is None else {"perm": perm}
    check("Transpose", [randn(2, 3, 4, 5)], 13, **params)


@pytest.mark.parametrize(("axis", "opset"), [(0, 9), (1, 9), (-1, 13), (-3, NEWEST)])
def test_concat(axis, opset):
    shapes = [[2, 3, 4] for _ in range(3)]
    for i, shape in enumerate(shapes):
        shape[axis] = i + 1
    check("Concat", [randn(*shape, seed=i) for i, shape in enumerate(shapes)], opset, axis=axis)


def test_concat_integers():
    check("Concat", [randint(2, 3), randint(2, 5, seed=1)], 13, axis=1)


@pytest.mark.parametrize(
    ("opset", "inputs", "outputs", "params"),
    [
        (9, [], 3, {"axis": 2}),
        (11, [], 2, {"axis": -1, "split": [2, 4]}),
        (11, [], 1, {"axis": 0}),
        (13, [ints(1, 3, 2)], 3, {"axis": 2}),
        (13, [ints(7)], 1, {"axis": -2}),
        (13, [], 2, {"axis": 0}),
        (13, [], 2, {"axis": -1}),
        (18, [], 4, {"axis": 1, "num_outputs": 4}),
        (18, [], 3, {"axis": 1, "num_outputs": 3}),
        (18, [ints(5, 1)], 2, {"axis": 2}),
    ],
)
def test_split(opset, inputs, outputs, params):
    check("Split", [randn(4, 7, 6), *inputs], opset, outputs=outputs, **params)


def test_split_with_an_unused_output():
    check("Split", [randn(4, 6)], 13, outputs=("a", "", "c"), axis=1)


@pytest.mark.parametrize(
    "params",
    [
        {"starts": [1], "ends": [3]},
        {"starts": [0, -3], "ends": [100, -1], "axes": [0, 2]},
        {"starts": [-100, 2], "ends": [2, 1000], "axes": [-1, 1]},
    ],
)
def test_slice_attributes_before_opset_10(params):
    check("Slice", [randn(5, 6, 7)], 9, **params)


SLICES = [
    (ints(1), ints(3), None, None),
    (ints(0, -3), ints(100, -1), ints(0, 2), None),
    (ints(-1), ints(-100), ints(1), ints(-1)),
    (ints(5, 0), ints(0, 7), ints(-1, 0), ints(-2, 3)),
    (ints(2), ints(2), None, None),
    (ints(10), ints(-10), ints(2), ints(-3)),
    (ints(-(2**63)), ints(2**63 - 1), ints(1), ints(2)),
]


@pytest.mark.parametrize("opset", [10, 13])
@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), SLICES)
def test_slice(starts, ends, axes, steps, opset):
    inputs = [randn(5, 6, 7), starts, ends]
    if axes is not None or steps is not None:
        inputs.append(axes)
    if steps is not None:
        inputs.append(steps)
    check("Slice", inputs, opset)


BOUNDS = st.one_of(st.integers(-9, 9), st.sampled_from([-(2**63), 2**63 - 1, -(2**31), 2**31]))


@settings(max_examples=60, deadline=None)
@given(
    slices=st.lists(
        st.tuples(st.integers(-3, 2), BOUNDS, BOUNDS, st.sampled_from([1, 2, 3, -1, -2, -4])),
        min_size=1,
        max_size=3,
        unique_by=lambda s: s[0] % 3,
    )
)
def test_slice_matches_onnxruntime_on_random_bounds(slices):
    axes, starts, ends, steps = (ints(*column) for column in zip(*slices, strict=True))
    check("Slice", [randn(5, 6, 7), starts, ends, axes, steps], 13)


def test_slice_int32_indices():
    indices = [np.array([1], np.int32), np.array([-1], np.int32), np.array([0], np.int32)]
    check("Slice", [randn(5, 6), *indices], 13)


@pytest.mark.parametrize(("opset", "axes"), [(11, None), (11, [1, -1]), (13, None), (13, [-3])])
def test_squeeze(opset, axes):
    x = randn(1, 1, 4, 1)
    if opset < 13:
        check("Squeeze", [x], opset, **({} if axes is None else {"axes": axes}))
    else:
        check("Squeeze", [x] if axes is None else [x, ints(*axes)], opset)


@pytest.mark.parametrize(("opset", "axes"), [(9, [0]), (11, [-1, 1]), (13, [0, 3]), (13, [-1, -4])])
def test_unsqueeze(opset, axes):
    x = randn(3, 4)
    if opset < 13:
        check("Unsqueeze", [x], opset, axes=axes)
    else:
        check("Unsqueeze", [x, ints(*axes)], opset)


def test_unsqueeze_scalar():
    check("Unsqueeze", [np.array(2.5, np.float32), ints(0)], NEWEST)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 2, 0, 0, 2, 1], [0, 1, 0, 0, 0, 1, 1, 3]])
def test_pad_attributes_before_opset_11(mode, pads):
    params = {"value": 1.5} if mode == "constant" else {}
    check("Pad", [randn(2, 3, 4, 5)], 9, mode=mode, pads=pads, **params)


@pytest.mark.parametrize("opset", [11, 13, 18, 19])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize(
    "pads",
    [ints(0, 0, 1, 2, 0, 0, 2, 1), ints(0, 1, -1, 0, 0, -1, 2, 3), ints(0, 0, 0, 0, 0, 0, 0, 0)],
)
def test_pad(opset, mode, pads):
    fill = np.array(-2.0, np.float32) if mode == "constant" else None
    check("Pad", [randn(2, 3, 4, 5), pads, fill], opset, mode=mode)


@settings(max_examples=60, deadline=None)
@given(
    pads=st.lists(st.integers(-2, 4), min_size=6, max_size=6),
    mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]),
)
def test_pad_matches_onnxruntime_on_random_widths(pads, mode):
    inputs = [randn(3, 4, 5), ints(*pads)]
    op, store = digital_op("Pad", inputs, 19, mode=mode)
    try:
        run_onnxruntime(op, inputs, store.__getitem__)
    except XbarcError:  # reflecting past the far edge: refused on both paths
        with pytest.raises(XbarcError):
            run_digital(op, inputs, store.__getitem__)
        return
    check("Pad", inputs, 19, mode=mode, may_fall_back=True)  # wrapping past the far edge


def test_pad_constant_defaults_to_zero():
    check("Pad", [randint(3, 4), ints(1, 1, 1, 1)], 13)


def test_pad_axes():
    check("Pad", [randn(2, 3, 4, 5), ints(1, 2, 3, 0), None, ints(-1, 1)], 18, mode="edge")


def test_pad_wrap():
    check("Pad", [randn(2, 3, 4, 5), ints(0, 0, 2, 1, 0, 0, 3, 4)], 19, mode="wrap")


@pytest.mark.parametrize(("opset", "params"), [(13, {}), (15, {"start": 1}), (15, {"end": -1})])
def test_shape(opset, params):
    check("Shape", [randn(2, 3, 4, 5)], opset, **params)


def test_shape_clamps_start_and_end():
    check("Shape", [randn(2, 3, 4)], 21, start=-10, end=10)


@pytest.mark.parametrize(
    ("axis", "indices"),
    [
        (0, ints(2, 0, 1, 2)),
        (1, np.array([[0, 3], [-1, 2]], np.int64)),
        (-1, np.array([-5, 4], np.int32)),
        (2, np.array(1, np.int64)),
    ],
)
def test_gather(axis, indices):
    check("Gather", [randn(3, 4, 5), indices], 13, axis=axis)
    check("Gather", [randint(3, 4, 5), indices], 11, axis=axis)


@pytest.mark.parametrize("opset", [9, 13, 19])
@pytest.mark.parametrize(
    ("source", "to"),
    [
        (np.float32, TensorProto.INT32),
        (np.float32, TensorProto.INT64),
        (np.float32, TensorProto.FLOAT16),
        (np.float32, TensorProto.DOUBLE),
        (np.float32, TensorProto.BOOL),
        (np.int64, TensorProto.FLOAT),
        (np.int32, TensorProto.INT8),
        (np.bool_, TensorProto.FLOAT),
        (np.float64, TensorProto.FLOAT),
        (np.float16, TensorProto.FLOAT),
    ],
)
def test_cast(source, to, opset):
    x = (randn(4, 5) * 50).astype(source)
    if source == np.int32:
        x = randint(4, 5, low=-128, high=128)
    check("Cast", [x], opset, to=to)


@pytest.mark.parametrize(
    "value", [None, np.array([7], np.int64), np.array([0.25], np.float32), np.array([1], np.int32)]
)
@pytest.mark.parametrize("shape", [ints(2, 3), ints(4), ints()])
def test_constant_of_shape(shape, value):
    check("ConstantOfShape", [shape], 9, **({} if value is None else {"value": value}))


@pytest.mark.parametrize(("opset", "outputs"), [(9, 1), (9, 2), (10, 2), (12, 2), (13, 1), (13, 2)])
def test_dropout_is_the_identity_at_inference(opset, outputs):
    params = {"ratio": 0.3} if opset < 12 else {}
    check("Dropout", [randn(3, 4)], opset, outputs=outputs, **params)


def test_dropout_ratio_input_without_training():
    inputs = [randn(3, 4), np.array(0.2, np.float32), np.array(False)]
    check("Dropout", inputs, 13, outputs=2)


# --- normalization -----------------------------------------------------------------------


@pytest.mark.parametrize("opset", [9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 7), (1, 4, 5, 5)])
def test_batch_normalization(opset, shape):
    x = randn(*shape)
    scale, bias, mean = randn(4, seed=1), randn(4, seed=2), randn(4, seed=3)
    var = np.abs(randn(4, seed=4)) + 0.1
    check("BatchNormalization", [x, scale, bias, mean, var], opset, epsilon=1e-3, rtol=1e-5)


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(
    ("opset", "axis"),
    [(9, axis) for axis in (None, 0, 1, 2)]  # negative axes start at opset 11
    + [(opset, axis) for opset in (11, 13, NEWEST) for axis in (None, 0, 1, 2, -1, -3)],
)
def test_softmax(op_type, opset, axis):
    params = {} if axis is None else {"axis": axis}
    check(op_type, [randn(2, 3, 4) * 3], opset, rtol=1e-5, atol=1e-6, **params)


# --- resize ------------------------------------------------------------------------------

COORDINATE_MODES = [
    "half_pixel",
    "asymmetric",
    "pytorch_half_pixel",
    "align_corners",
    "tf_half_pixel_for_nn",
]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [floats(1, 1, 2, 2), floats(1, 1, 0.5, 0.6), floats(1, 1, 1.7, 0.75), floats(1, 1, 3, 1)]


@pytest.mark.parametrize("scales", SCALES)
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
def test_resize_nearest(coordinate_mode, nearest_mode, scales):
    x = randn(1, 2, 6, 7)
    params = {"coordinate_transformation_mode": coordinate_mode, "nearest_mode": nearest_mode}
    check("Resize", [x, floats(), scales], 11, **params)


@pytest.mark.parametrize("scales", SCALES)
@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES[:4])
def test_resize_linear(coordinate_mode, scales):
    params = {"coordinate_transformation_mode": coordinate_mode, "mode": "linear"}
    check("Resize", [randn(2, 3, 6, 7), None, scales], 13, rtol=1e-5, atol=1e-6, **params)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    factors=st.tuples(*[st.sampled_from([0.25, 0.5, 0.6, 0.75, 1, 1.3, 1.5, 2, 2.5, 3])] * 2),
    mode=st.sampled_from(["nearest", "linear"]),
    coordinate_mode=st.sampled_from([*COORDINATE_MODES, "half_pixel_symmetric"]),
    nearest_mode=st.sampled_from(NEAREST_MODES),
    by_sizes=st.booleans(),
)
def test_resize_matches_onnxruntime_on_random_scales(
    shape, factors, mode, coordinate_mode, nearest_mode, by_sizes
):
    x = randn(1, 2, *shape)
    if by_sizes:
        sizes = ints(1, 2, *(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True)))
        inputs = [x, None, None, sizes]
    else:
        empty = any(
            int(np.float32(f) * np.float32(n)) == 0 for n, f in zip(shape, factors, strict=True)
        )
        assume(not empty)  # an empty output
        inputs = [x, None, floats(1, 1, *factors)]
    params = {
        "mode": mode,
        "coordinate_transformation_mode": coordinate_mode,
        "nearest_mode": nearest_mode,
    }
    # scales a few ulps off a rounding tie go to onnxruntime on purpose
    check("Resize", inputs, 19, rtol=1e-5, atol=1e-6, may_fall_back=True, **params)


def test_resize_leaves_near_ties_to_onnxruntime():
    # 1 / float32(2/7) is a few ulps below 3.5, which onnxruntime rounds up and numpy down
    inputs = [np.arange(21, dtype=np.float32).reshape(1, 1, 1, 21), None, None, ints(1, 1, 1, 6)]
    params = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_ceil"}
    with pytest.raises(AssertionError, match="fell back"):
        check("Resize", inputs, 13, **params)
    check("Resize", inputs, 13, may_fall_back=True, **params)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("sizes", [ints(1, 2, 12, 5), ints(1, 2, 4, 9), ints(1, 2, 1, 1)])
def test_resize_sizes(mode, sizes):
    check("Resize", [randn(1, 2, 6, 7), None, None, sizes], 13, rtol=1e-5, atol=1e-6, mode=mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_2d_input(mode):
    check("Resize", [randn(5, 6), None, floats(2.5, 0.5)], 13, rtol=1e-5, atol=1e-6, mode=mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [floats(1, 1, 2, 2), floats(1, 1, 3, 1.5)])
def test_resize_opset_10_and_upsample(mode, scales):
    x = randn(1, 2, 5, 4)
    check("Resize", [x, scales], 10, rtol=1e-5, atol=1e-6, mode=mode)
    check("Upsample", [x, scales], 9, rtol=1e-5, atol=1e-6, mode=mode)
    check("Upsample", [x], 7, rtol=1e-5, atol=1e-6, mode=mode, scales=scales.tolist())


def test_resize_downsampling_opset_10_rounds_up():
    check("Resize", [randn(1, 1, 9, 8), floats(1, 1, 0.5, 0.4)], 10)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_axes(mode):
    x = randn(1, 2, 5, 6)
    check("Resize", [x, None, floats(2, 1.5)], 18, rtol=1e-5, atol=1e-6, mode=mode, axes=[2, 3])
    check("Resize", [x, None, None, ints(7, 3)], 19, rtol=1e-5, atol=1e-6, mode=mode, axes=[-2, -1])


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_half_pixel_symmetric(mode):
    params = {"coordinate_transformation_mode": "half_pixel_symmetric", "mode": mode}
    check("Resize", [randn(1, 2, 5, 6), None, floats(1, 1, 1.7, 0.6)], 19, rtol=1e-5, **params)


def test_resize_nearest_integers_and_channels():
    check("Resize", [randint(2, 3, 4, 5), None, floats(1, 2, 1.5, 2)], 13)


# --- the fallback ------------------------------------------------------------------------


def test_ops_without_kernels_run_in_onnxruntime():
    x = randn(1, 5, 4, 4)
    op, store = digital_op("LRN", [x], 13, size=3, alpha=2e-4, beta=0.75, bias=1.0)
    (y,) = run_digital(op, [x], store.__getitem__)
    square_sums = sum(
        np.pad(x**2, ((0, 0), (1, 1), (0, 0), (0, 0)))[:, c : c + 5] for c in range(3)
    )
    np.testing.assert_allclose(y, x / (1.0 + 2e-4 / 3 * square_sums) ** 0.75, rtol=1e-5)

    a, b = randn(2, 3), randn(3, 4, seed=1)
    op, store = digital_op("Einsum", [a, b], 12, equation="ij,jk->ik")
    (y,) = run_digital(op, [a, b], store.__getitem__)
    np.testing.assert_allclose(y, a @ b, rtol=1e-5)


def test_ops_of_other_domains_run_in_onnxruntime():
    x = floats(-1, 0.5, 2).reshape(1, 3)
    op, store = digital_op("Binarizer", [x], 1, domain="ai.onnx.ml", threshold=0.4)
    (y,) = run_digital(op, [x], store.__getitem__)
    assert y is not None and y.tolist() == [[0.0, 1.0, 1.0]]


@pytest.mark.parametrize(
    ("op_type", "inputs", "params"),
    [
        ("Resize", [randn(1, 1, 4, 4), None, floats(1, 1, 2, 2)], {"mode": "cubic"}),
        ("Resize", [randn(2, 5, 6), None, floats(1, 2, 2)], {"mode": "linear"}),
        ("Pow", [randint(3, 4, low=1), np.array(2, np.int32)], {}),
        ("Cast", [randn(3, 4)], {"to": TensorProto.STRING}),
        ("Dropout", [randn(3, 4), np.array(0.0, np.float32), np.array(True)], {}),
    ],
)
def test_attribute_combinations_without_kernels_run_in_onnxruntime(op_type, inputs, params):
    with pytest.raises(AssertionError, match="fell back"):
        check(op_type, inputs, NEWEST, **params)
    check(op_type, inputs, NEWEST, may_fall_back=True, **params)


def test_crop_and_resize_runs_in_onnxruntime():
    inputs = [randn(1, 1, 4, 5), floats(0, 0, 0.2, 0.1, 1, 1, 0.8, 0.7), floats(1, 1, 2, 2)]
    params = {"coordinate_transformation_mode": "tf_crop_and_resize", "mode": "linear"}
    with pytest.raises(AssertionError, match="fell back"):
        check("Resize", inputs, 13, **params)
    check("Resize", inputs, 13, may_fall_back=True, **params)


def test_bad_data_in_a_kernel_is_a_located_error():
    x = randn(2, 3)
    op, store = digital_op("Reshape", [x, ints(4, -1)], 13)
    with pytest.raises(XbarcError, match=r'op "reshape_0" \(Reshape\).*\[2, 3\]'):
        run_digital(op, [x, ints(4, -1)], store.__getitem__)


def test_fallback_sessions_are_cached_across_shapes():
    small, large = randn(3), randn(2, 5, seed=1)
    op, store = digital_op("Erf", [small], 13)
    (y,) = run_digital(op, [small], store.__getitem__)
    session = cached_session(op, [small], store.__getitem__)
    assert cached_session(op, [randn(7, seed=2)], store.__getitem__) is session
    assert cached_session(op, [large], store.__getitem__) is not session  # another rank
    (y,) = run_digital(op, [large], store.__getitem__)
    np.testing.assert_allclose(y, np.vectorize(math.erf)(large.astype(np.float64)), rtol=1e-6)


def test_sessions_are_keyed_by_attribute_content_not_tensor_names():
    x = ints(2, 3)
    op, store = digital_op("ConstantOfShape", [x], 9, value=np.array([1.5], np.float32))
    (first,) = run_onnxruntime(op, [x], store.__getitem__)
    store["attr.value"] = np.array([7], np.int64)
    (second,) = run_onnxruntime(op, [x], store.__getitem__)
    assert first is not None and second is not None
    assert first.dtype == np.float32 and second.dtype == np.int64
    assert second.tolist() == [[7, 7, 7], [7, 7, 7]]


def test_one_node_model_matches_a_hand_written_model():
    x = randn(1, 2, 7, 7)
    params = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "storage_order": 1}
    op, store = digital_op("MaxPool", [x], 12, outputs=("", "i"), **params)
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **params)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("i", TensorProto.INT64, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (want,) = session.run(None, {"x": x})
    got = run_onnxruntime(op, [x], store.__getitem__)
    assert got[0] is None
    np.testing.assert_array_equal(got[1], want)


def test_unknown_op_is_a_located_error():
    op, store = digital_op("Frobnicate", [randn(3)], 1, domain="com.example", level=3)
    with pytest.raises(XbarcError, match=r'op "frobnicate_0" \(Frobnicate\).*onnxruntime'):
        run_digital(op, [randn(3)], store.__getitem__)


def test_runtime_failure_is_an_error():
    op, store = digital_op("Add", [randn(3), randn(4)], 13)
    with pytest.raises(XbarcError, match=r'op "add_0" \(Add\)'):
        run_digital(op, [randn(3), randn(4)], store.__getitem__)


def branch(name: str, node: onnx.NodeProto) -> onnx.GraphProto:
    return helper.make_graph(
        [node], name, [], [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)]
    )


def if_op(then_branch: onnx.GraphProto, else_branch: onnx.GraphProto):
    """An If op whose branches travel as serialized AttributeProto bytes, as lowering does."""
    store: dict[str, np.ndarray] = {}
    for name, graph in (("then_branch", then_branch), ("else_branch", else_branch)):
        proto = helper.make_attribute(name, graph).SerializeToString()
        store[name] = np.frombuffer(proto, dtype=np.uint8).copy()
    op = DigitalOp(
        name="if_0",
        op_type="If",
        domain="",
        opset=13,
        inputs=(Value("cond"),),
        outputs=("y",),
        output_types=(None,),
        attributes=tuple(Attribute(name, "proto", Const(name)) for name in store),
    )
    return op, store


def test_subgraph_reading_the_outer_graph_is_refused():
    op, store = if_op(
        branch("then", helper.make_node("Identity", ["outer_value"], ["a"])),
        branch("else", helper.make_node("Constant", [], ["b"], value_float=0.0)),
    )
    with pytest.raises(XbarcError, match=r'op "if_0" \(If\).*outer_value'):
        run_digital(op, [np.array(True)], store.__getitem__)


def test_self_contained_subgraphs_run():
    op, store = if_op(
        branch("then", helper.make_node("Constant", [], ["a"], value_float=4.0)),
        branch("else", helper.make_node("Constant", [], ["b"], value_float=-1.0)),
    )
    (y,) = run_digital(op, [np.array(False)], store.__getitem__)
    assert y is not None and float(y) == -1.0


def test_kernels_cover_the_common_ops():
    expected = {
        "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Exp", "Log",
        "Sqrt", "Neg", "Abs", "Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean",
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
        "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Softmax", "LogSoftmax",
        "Pad", "Dropout", "Identity", "BatchNormalization", "Shape", "Gather", "Cast",
        "ConstantOfShape", "Resize", "Upsample", "MatMul",
    }  # fmt: skip
    assert expected <= set(digital.native_op_types())


@st.composite
def inside_pool_geometries(draw) -> tuple[np.ndarray, list[pooling.PoolAxis]]:
    """1 to 3 spatial axes without padding whose windows all lie inside the input (the
    pool kernels' register path), over data sprinkled with NaN, infinities, signed zeros."""
    rank = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, 4)) for _ in range(rank)]
    reach = [d * (k - 1) + 1 for d, k in zip(dilations, kernel, strict=True)]
    spatial = [r + draw(st.integers(0, 9)) for r in reach]
    axes = pooling.pool_axes(spatial, kernel, strides, dilations, [0] * 2 * rank, "NOTSET", False)
    assert all(pool_kernels.inside(axis) for axis in axes)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = randn(
        draw(st.integers(1, 3)),
        draw(st.integers(1, 5)),
        *spatial,
        seed=draw(st.integers(0, 9)),
        dtype=dtype,
    )
    return sprinkled(draw, x), axes


@settings(max_examples=150, deadline=None)
@given(case=inside_pool_geometries(), count_padding=st.booleans())
def test_pool_kernels_inside_give_the_numpy_twins_bits(case, count_padding):
    assert_pools_give_the_numpy_twins_bits(*case, count_padding)


@st.composite
def pair_pool_geometries(draw) -> tuple[np.ndarray, list[pooling.PoolAxis]]:
    """2x2 windows moved by 2 over two axes of even or odd length (the pool kernels'
    unrolled path, `pool_kernels.pairs`), over data sprinkled with NaN, infinities and
    signed zeros."""
    spatial = [draw(st.integers(2, 9)), draw(st.integers(2, 9))]
    axes = pooling.pool_axes(spatial, [2, 2], [2, 2], [1, 1], [0] * 4, "NOTSET", False)
    assert pool_kernels.pairs(axes)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = randn(draw(st.integers(1, 3)), draw(st.integers(1, 5)), *spatial, dtype=dtype)
    return sprinkled(draw, x), axes


@settings(max_examples=100, deadline=None)
@given(case=pair_pool_geometries(), count_padding=st.booleans())
def test_pool_kernels_of_pairs_give_the_numpy_twins_bits(case, count_padding):
    assert_pools_give_the_numpy_twins_bits(*case, count_padding)


def test_pairs_are_two_axes_of_2x2_windows_by_2_inside():
    def axes(spatial, kernel, strides, pads, dilations=(1, 1)):
        return pooling.pool_axes(spatial, kernel, strides, dilations, pads, "NOTSET", False)

    assert pool_kernels.pairs(axes([8, 8], [2, 2], [2, 2], [0] * 4))
    assert pool_kernels.pairs(axes([5, 7], [2, 2], [2, 2], [0] * 4))  # the last column unread
    assert not pool_kernels.pairs(axes([8, 8], [2, 2], [1, 1], [0] * 4))
    assert not pool_kernels.pairs(axes([8, 8], [3, 3], [2, 2], [0] * 4))
    assert not pool_kernels.pairs(axes([8, 8], [2, 2], [2, 2], [0] * 4, dilations=(2, 2)))
    assert not pool_kernels.pairs(axes([8, 8], [2, 2], [2, 2], [1, 1, 1, 1]))
    assert not pool_kernels.pairs(pooling.pool_axes([8], [2], [2], [1], [0, 0], "NOTSET", False))


@settings(max_examples=100, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    size=st.integers(0, 3 * activation_kernels.CHUNK),
    share=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 99),
    donated=st.booleans(),
)
def test_relu_kernel_gives_numpy_maximums_bits(dtype, size, share, seed, donated):
    """NaN kept as it is (a signalling one and its payload too), -0 and negatives to +0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).astype(dtype)
    specials = rng.random(size) < share
    x[specials] = rng.choice(SPECIAL_FLOATS + [-np.nan], size=int(specials.sum()))
    unsigned = np.dtype(f"u{x.itemsize}")
    if size > 3:  # a signalling NaN with a payload, and a negative quiet one with one
        quiet_bit = 1 << (np.finfo(dtype).nmant - 1)
        x.view(unsigned)[1] = np.array(np.inf, dtype).view(unsigned) + 1
        x.view(unsigned)[3] = np.array(-np.inf, dtype).view(unsigned) + quiet_bit + 5
    want = np.maximum(x, dtype(0))
    got = run_donating("Relu", [x], {}, frozenset({0}) if donated else frozenset())
    assert_same_bits(got, want)
    assert (got is x) == donated


def test_relu_of_other_types_and_layouts_runs_in_numpy():
    with mock.patch.object(activation_kernels, "relu_kernel", side_effect=AssertionError):
        for x in (randn(4, 6)[:, ::2], randn(3, 5, dtype=np.float16), randint(2, 3, 5)):
            got = run_donating("Relu", [x], {}, frozenset())
            assert_same_bits(got, np.maximum(x, x.dtype.type(0)))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=2, max_size=5),
    seed=st.integers(0, 99),
    threads=st.sampled_from(["1", "2"]),
)
def test_channel_bias_gives_numpys_broadcast_sum(shape, seed, threads):
    x = special(randn(*shape, seed=seed))
    bias = special(randn(shape[1], seed=seed + 1))
    want = x.copy()
    with np.errstate(invalid="ignore"):  # inf + -inf: a NaN, on both sides
        want += bias.reshape((1, -1) + (1,) * (x.ndim - 2))
    with mock.patch.dict("os.environ", {"XBARC_THREADS": threads}):
        activation_kernels.add_channel_bias(x, bias)
    assert_same_bits(x, want)


def test_channel_bias_refuses_what_it_cannot_add():
    with pytest.raises(ValueError, match="add_channel_bias"):
        activation_kernels.add_channel_bias(randn(2, 3, 4), randn(4))
    with pytest.raises(ValueError, match="add_channel_bias"):
        activation_kernels.add_channel_bias(randn(2, 3, 4, dtype=np.float64), randn(3))
    with pytest.raises(ValueError, match="add_channel_bias"):
        activation_kernels.add_channel_bias(randn(2, 4, 3).transpose(0, 2, 1), randn(3))


def test_relu_same_bits_on_one_thread_and_two(monkeypatch):
    x = special(randn(5, 64, 32, 32, seed=4))  # 330 k elements: above PARALLEL_WORK
    assert x.size >= activation_kernels.kernels.PARALLEL_WORK
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("XBARC_THREADS", threads)
        results.append(activation_kernels.relu_numba(x, np.empty_like(x)))
    assert_same_bits(results[0], results[1])
    assert_same_bits(results[0], np.maximum(x, np.float32(0)))


@pytest.mark.parametrize(
    "kernel, pads", [(3, (0, 0, 0, 0)), (3, (1, 1, 1, 1)), (2, (0, 0, 0, 0))]
)  # the row kernel, the register kernel, the pairs kernel
def test_pool_kernels_same_bits_on_one_thread_and_two(monkeypatch, kernel, pads):
    """Rows of outputs run in parallel above the kernels' work threshold: the bits are the
    same on any thread count (each output folds its own taps in order)."""
    x = randn(8, 64, 48, 48, seed=3)  # 1.2 M taps or more: above PARALLEL_WORK
    axes = pooling.pool_axes([48, 48], [kernel] * 2, [2, 2], [1, 1], list(pads), "NOTSET", False)
    counts = pooling.window_counts(axes, False, x.dtype)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("XBARC_THREADS", threads)
        results.append(
            (pool_kernels.max_pool_numba(x, axes), pool_kernels.average_pool_numba(x, axes, counts))
        )
    for one, two in zip(*results, strict=True):
        assert_same_bits(one, two)
    assert_same_bits(results[0][0], pooling.max_pool_numpy(x, axes))
