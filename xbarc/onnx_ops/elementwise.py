"""Elementwise ops: activations, arithmetic with broadcasting, variadic folds, MatMul.

Results follow onnxruntime: the inputs' dtype and broadcast shape, integers exactly
(integer Div truncates toward zero, as C++ does), floats to rounding. Unary and binary
results are written where `call.out` says, so the runtime can hand over an input buffer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xbarc.onnx_ops.base import Array, OpCall, Unsupported, semantics

_UNARY: dict[str, np.ufunc] = {
    "Tanh": np.tanh,
    "Exp": np.exp,
    "Log": np.log,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Abs": np.absolute,
}


@semantics(*_UNARY)
def _unary(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    return [_UNARY[call.op_type](x, out=call.out(x.shape, x.dtype))]


@semantics("Relu")
def _relu(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    return [np.maximum(x, x.dtype.type(0), out=call.out(x.shape, x.dtype))]


@semantics("LeakyRelu")
def _leaky_relu(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    alpha = x.dtype.type(call.float_attr("alpha", 0.01))
    scaled = x < 0  # NaN is left as it is, as NaN * alpha would be
    result = call.out(x.shape, x.dtype)
    if result is not x:
        np.copyto(result, x)
    return [np.multiply(result, alpha, out=result, where=scaled)]


@semantics("Sigmoid")
def _sigmoid(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    # exp of -|x| never overflows; 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below
    positive = x >= 0
    decay = np.absolute(x, out=np.empty(x.shape, x.dtype))
    np.negative(decay, out=decay)
    np.exp(decay, out=decay)
    one = x.dtype.type(1)
    denominator = np.add(decay, one, out=call.out(x.shape, x.dtype))
    np.copyto(decay, one, where=positive)
    return [np.divide(decay, denominator, out=denominator)]


@semantics("HardSigmoid", "HardSwish")
def _hard_sigmoid(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    swish = call.op_type == "HardSwish"
    if swish:  # fixed alpha and beta, no attributes
        alpha, beta = x.dtype.type(1 / 6), x.dtype.type(0.5)
    else:
        alpha, beta = (
            x.dtype.type(call.float_attr("alpha", 0.2)),
            x.dtype.type(call.float_attr("beta", 0.5)),
        )
    out = call.out(x.shape, x.dtype)
    gate = np.multiply(x, alpha, out=np.empty(x.shape, x.dtype) if swish else out)
    np.add(gate, beta, out=gate)
    np.maximum(gate, x.dtype.type(0), out=gate)
    np.minimum(gate, x.dtype.type(1), out=gate)
    return [np.multiply(x, gate, out=out) if swish else gate]


@semantics("Clip")
def _clip(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    # onnxruntime clips to the type's range when a bound is absent, so +-inf become finite
    info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
    if call.opset < 11:
        low = call.float_attr("min", float(np.finfo(np.float32).min))
        high = call.float_attr("max", float(np.finfo(np.float32).max))
    else:
        low_input, high_input = call.optional(1), call.optional(2)
        low = info.min if low_input is None else low_input.reshape(()).item()
        high = info.max if high_input is None else high_input.reshape(()).item()
    result = np.maximum(x, x.dtype.type(low), out=call.out(x.shape, x.dtype))
    return [np.minimum(result, x.dtype.type(high), out=result)]


def _divide(a: Array, b: Array, out: Array) -> Array:
    if a.dtype.kind == "f":
        return np.divide(a, b, out=out)
    # integer division truncates toward zero in onnxruntime (C++), numpy floors
    quotient = np.floor_divide(a, b)
    inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return np.add(quotient, inexact.astype(quotient.dtype), out=out)


_BINARY: dict[str, Callable[..., Array]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _divide,
}


@semantics(*_BINARY)
def _binary(call: OpCall) -> list[Array | None]:
    a, b = call.input(0), call.input(1)
    out = call.out(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b), among=(0, 1))
    return [_BINARY[call.op_type](a, b, out=out)]


@semantics("Pow")
def _pow(call: OpCall) -> list[Array | None]:
    base, exponent = call.input(0), call.input(1)
    if base.dtype.kind != "f" or exponent.dtype.kind not in "fiu":
        raise Unsupported  # integer powers round through double in onnxruntime
    return [np.power(base, exponent.astype(base.dtype))]


_VARIADIC: dict[str, np.ufunc] = {
    "Sum": np.add,
    "Mean": np.add,
    "Max": np.maximum,
    "Min": np.minimum,
}


@semantics(*_VARIADIC)
def _variadic(call: OpCall) -> list[Array | None]:
    operands = [call.input(index) for index in range(len(call.inputs))]
    function, mean = _VARIADIC[call.op_type], call.op_type == "Mean"
    if len(operands) == 1 and not mean:
        return [operands[0]]
    shape = np.broadcast_shapes(*(operand.shape for operand in operands))
    dtype = np.result_type(*operands)
    # folded left to right: only the first two operands are read before the first write
    out = call.out(shape, dtype, among=(0, 1))
    result = operands[0]
    for operand in operands[1:]:
        result = function(result, operand, out=out)
    if mean:
        result = np.divide(result, dtype.type(len(operands)), out=out)
    return [result]


@semantics("MatMul")
def _matmul(call: OpCall) -> list[Array | None]:
    return [np.matmul(call.input(0), call.input(1))]
