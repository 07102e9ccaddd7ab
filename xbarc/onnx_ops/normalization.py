"""BatchNormalization at inference, Softmax and LogSoftmax."""

from __future__ import annotations

import math

import numpy as np

from xbarc.onnx_ops.base import Array, OpCall, Unsupported, normalize_axis, semantics


@semantics("BatchNormalization")
def _batch_normalization(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    training = call.int_attr("training_mode", 0) if call.opset >= 14 else 0
    if training or any(call.wants(index) for index in range(1, 5)):
        raise Unsupported  # training statistics
    if x.ndim < 2 or not call.int_attr("spatial", 1):
        raise Unsupported  # per-element statistics (spatial=0, before opset 9)
    scale, bias, mean, var = (call.input(index).astype(x.dtype) for index in range(1, 5))
    epsilon = x.dtype.type(call.float_attr("epsilon", 1e-5))
    # the same association as onnxruntime: x * (scale / std) + (bias - mean * scale / std)
    new_scale = np.reciprocal(np.sqrt(var + epsilon)) * scale
    new_bias = bias - mean * new_scale
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    result = x * new_scale.reshape(shape)
    result += new_bias.reshape(shape)  # in place: one temporary less on large activations
    return [result]


def _softmax_axis(call: OpCall, x: Array) -> tuple[Array, int]:
    """`x` viewed so that softmax runs along one axis: opset 13+ uses `axis` itself, older
    opsets flatten to 2-D at `axis` and normalize each row."""
    if call.opset >= 13:
        return x, normalize_axis(call.int_attr("axis", -1), x.ndim)
    axis = normalize_axis(call.int_attr("axis", 1), x.ndim) if x.ndim else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), 1


@semantics("Softmax", "LogSoftmax")
def _softmax(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    if x.dtype.kind != "f" or x.ndim == 0:
        raise Unsupported
    rows, axis = _softmax_axis(call, x)
    shifted = rows - np.max(rows, axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    total = np.sum(exponentials, axis=axis, keepdims=True)
    if call.op_type == "LogSoftmax":
        return [(shifted - np.log(total)).reshape(x.shape)]
    return [(exponentials / total).reshape(x.shape)]
