"""Shape and layout ops, and the ops that make constants: the ones constant folding meets
most (the light ONNX zoo models build their weights with ConstantOfShape and their shapes
with Shape, Gather, Concat, Slice and Reshape).

Results are views of the inputs where numpy gives one (Identity, Reshape, Flatten,
Squeeze, Unsqueeze, Transpose, Slice, Dropout): treat them as read-only.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from onnx import TensorProto, helper

from xbarc.onnx_ops.base import (
    Array,
    OpCall,
    Unsupported,
    int_list,
    normalize_axis,
    semantics,
)


@semantics("Identity")
def _identity(call: OpCall) -> list[Array | None]:
    return [call.input(0)]


@semantics("Constant")
def _constant(call: OpCall) -> list[Array | None]:
    for name, dtype in _CONSTANT_ATTRIBUTES:
        value = call.attribute(name)
        if value is not None:
            return [np.array(value, dtype)]
    value = call.tensor_attr("value")
    if value is None:
        raise Unsupported  # strings and sparse tensors: the fallback knows them
    return [value]


_CONSTANT_ATTRIBUTES = (
    ("value_float", np.float32),
    ("value_floats", np.float32),
    ("value_int", np.int64),
    ("value_ints", np.int64),
)


@semantics("Flatten")
def _flatten(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    axis = call.int_attr("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"axis {axis} is out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@semantics("Reshape")
def _reshape(call: OpCall) -> list[Array | None]:
    x, shape = call.input(0), int_list(call.input(1))
    if not call.int_attr("allowzero", 0):
        shape = [x.shape[index] if dim == 0 else dim for index, dim in enumerate(shape)]
    return [x.reshape(shape)]


@semantics("Transpose")
def _transpose(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    return [np.transpose(x, call.ints_attr("perm") or None)]


@semantics("Concat")
def _concat(call: OpCall) -> list[Array | None]:
    parts = [call.input(index) for index in range(len(call.inputs))]
    return [np.concatenate(parts, axis=normalize_axis(call.int_attr("axis", 0), parts[0].ndim))]


@semantics("Split")
def _split(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    axis = normalize_axis(call.int_attr("axis", 0), x.ndim)
    sizes = call.ints_attr("split") if call.opset < 13 else None
    if call.opset >= 13 and call.optional(1) is not None:
        sizes = int_list(call.input(1))
    if not sizes:
        parts = call.int_attr("num_outputs", len(call.outputs))
        if call.opset < 18 and x.shape[axis] % parts:
            raise ValueError(f"axis size {x.shape[axis]} does not split into {parts} equal parts")
        chunk = -(-x.shape[axis] // parts)  # the last part is smaller when uneven (opset 18)
        sizes = [min(chunk, x.shape[axis] - chunk * index) for index in range(parts)]
    if sum(sizes) != x.shape[axis] or min(sizes) < 0:
        raise ValueError(f"split sizes {sizes} do not add up to axis size {x.shape[axis]}")
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


_TO_THE_END = (2**31 - 1, 2**63 - 1)  # ends that mean "through the last element" either way


def slice_bounds(start: int, end: int, step: int, size: int) -> slice:
    """ONNX Slice bounds (clamped, negatives from the end) as a Python slice."""
    if step == 0:
        raise ValueError("slice step cannot be 0")
    if end in _TO_THE_END:
        end = size if step > 0 else -size - 1
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), size), min(max(end, 0), size), step)
    start = min(max(start, 0), size - 1)
    end = min(max(end, -1), size - 1)
    return slice(start, None if end < 0 else end, step)


@semantics("Slice")
def _slice(call: OpCall) -> list[Array | None]:
    """Slice; the bounds clamp into the axis instead of wrapping (see `slice_bounds`)."""
    x = call.input(0)
    if call.opset < 10:
        starts, ends = call.ints_attr("starts") or [], call.ints_attr("ends") or []
        axes, steps = call.ints_attr("axes"), None
    else:
        starts, ends = int_list(call.input(1)), int_list(call.input(2))
        axes_input, steps_input = call.optional(3), call.optional(4)
        axes = None if axes_input is None else int_list(axes_input)
        steps = None if steps_input is None else int_list(steps_input)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    sliced: set[int] = set()
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis = normalize_axis(axis, x.ndim)
        if axis in sliced:
            raise ValueError(f"axis {axis} is sliced twice")
        sliced.add(axis)
        index[axis] = slice_bounds(start, end, step, x.shape[axis])
    return [x[tuple(index)]]


def _axes_operand(call: OpCall) -> list[int] | None:
    """`axes` of Squeeze and Unsqueeze: an attribute before opset 13, an input after."""
    if call.opset < 13:
        return call.ints_attr("axes")
    axes = call.optional(1)
    return None if axes is None else int_list(axes)


@semantics("Squeeze")
def _squeeze(call: OpCall) -> list[Array | None]:
    x, axes = call.input(0), _axes_operand(call)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(normalize_axis(axis, x.ndim) for axis in axes))]


@semantics("Unsqueeze")
def _unsqueeze(call: OpCall) -> list[Array | None]:
    x, axes = call.input(0), _axes_operand(call)
    if axes is None:
        raise Unsupported
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(normalize_axis(axis, rank) for axis in axes))]


def _pad_widths(call: OpCall, x: Array) -> list[int]:
    """Begins then ends for every axis of `x`, from the attribute (opset < 11) or the
    input, spread over `axes` (opset 18)."""
    if call.opset < 11:
        return call.ints_attr("pads") or [0] * (2 * x.ndim)
    pads = int_list(call.input(1))
    axes_input = call.optional(3)
    if axes_input is None:
        return pads
    axes = [normalize_axis(axis, x.ndim) for axis in int_list(axes_input)]
    widths = [0] * (2 * x.ndim)
    for index, axis in enumerate(axes):
        widths[axis], widths[axis + x.ndim] = pads[index], pads[index + len(axes)]
    return widths


_PAD_MODES: dict[str, Literal["constant", "reflect", "edge", "wrap"]] = {
    "constant": "constant",
    "reflect": "reflect",
    "edge": "edge",
    "wrap": "wrap",
}


@semantics("Pad")
def _pad(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    mode = _PAD_MODES.get(call.string_attr("mode", "constant"))
    if mode is None:
        raise Unsupported
    widths = _pad_widths(call, x)
    if len(widths) != 2 * x.ndim:
        raise ValueError(f"pads has {len(widths)} values for a rank {x.ndim} input")
    begins, ends = widths[: x.ndim], widths[x.ndim :]
    if any(n + b + e < 0 for b, e, n in zip(begins, ends, x.shape, strict=True)):
        raise ValueError(f"pads {widths} crop more than the input holds")
    # negative pads crop before anything is added
    crop = [slice(-min(b, 0), n + min(e, 0)) for b, e, n in zip(begins, ends, x.shape, strict=True)]
    x = x[tuple(crop)]
    pad_width = [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends, strict=True)]
    if mode == "constant":
        return [np.pad(x, pad_width, mode=mode, constant_values=_pad_value(call, x.dtype))]
    # numpy mirrors or wraps again past the far edge and pads empty axes, where onnxruntime
    # refuses or wraps its own way
    reach = {"reflect": lambda size: size - 1, "wrap": lambda size: size}.get(mode)
    if x.size == 0 or (
        reach and any(max(p) > reach(n) for p, n in zip(pad_width, x.shape, strict=True))
    ):
        raise Unsupported
    return [np.pad(x, pad_width, mode=mode)]


def _pad_value(call: OpCall, dtype: np.dtype) -> Any:
    """The constant fill: the `value` attribute before opset 11, else the optional input."""
    if call.opset < 11:
        return dtype.type(call.float_attr("value", 0.0))
    fill = call.optional(2)
    return dtype.type(0) if fill is None or not fill.size else fill.reshape(-1)[0]


@semantics("Shape")
def _shape(call: OpCall) -> list[Array | None]:
    shape = call.input(0).shape
    start, end = call.int_attr("start", 0), call.int_attr("end", len(shape))
    return [np.array(shape[slice_bounds(start, end, 1, len(shape))], dtype=np.int64)]


@semantics("Gather")
def _gather(call: OpCall) -> list[Array | None]:
    data, indices = call.input(0), call.input(1)
    axis = normalize_axis(call.int_attr("axis", 0), data.ndim)
    if indices.size and (indices.min() < -data.shape[axis] or indices.max() >= data.shape[axis]):
        raise IndexError(f"gather indices out of range [-{data.shape[axis]}, {data.shape[axis]})")
    return [np.take(data, indices.astype(np.int64), axis=axis)]


_CASTABLE = frozenset(
    {
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
        TensorProto.INT8,
        TensorProto.INT16,
        TensorProto.INT32,
        TensorProto.INT64,
        TensorProto.UINT8,
        TensorProto.UINT16,
        TensorProto.UINT32,
        TensorProto.UINT64,
        TensorProto.BOOL,
    }
)


@semantics("Cast")
def _cast(call: OpCall) -> list[Array | None]:
    x, target = call.input(0), call.int_attr("to", 0)
    if target not in _CASTABLE or x.dtype.kind not in "fiub":
        raise Unsupported  # strings, bfloat16, float8 and int4 follow onnxruntime's rules
    return [x.astype(helper.tensor_dtype_to_np_dtype(target))]


@semantics("ConstantOfShape")
def _constant_of_shape(call: OpCall) -> list[Array | None]:
    shape = int_list(call.input(0))
    value = call.tensor_attr("value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


@semantics("Dropout")
def _dropout(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    training = call.optional(2) if call.opset >= 12 else None
    if training is not None and bool(training.reshape(-1)[0]):
        raise Unsupported
    if call.opset >= 12:
        mask = np.ones(x.shape, dtype=np.bool_)
    else:
        # onnxruntime fills the mask with zeros before opset 12 (of x's type before 10)
        mask = np.zeros(x.shape, dtype=np.bool_ if call.opset >= 10 else x.dtype)
    return [x, mask]


@semantics("Size")
def _size(call: OpCall) -> list[Array | None]:
    return [np.array(call.input(0).size, dtype=np.int64)]


@semantics("Expand")
def _expand(call: OpCall) -> list[Array | None]:
    x, shape = call.input(0), int_list(call.input(1))
    # a copy, as onnxruntime makes: a broadcast view is read-only and may reach the user
    return [np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))))]


@semantics("Range")
def _range(call: OpCall) -> list[Array | None]:
    """Range as onnxruntime computes it: the count is ceil((limit - start) / delta) in
    double (the inputs converted before they are subtracted); then each value is the
    previous one plus delta, accumulated in the input type (not start + i * delta, which
    rounds differently in float)."""
    start, limit, delta = (call.input(index).reshape(()) for index in range(3))
    if delta == 0:
        raise ValueError("Range delta must not be 0")
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    steps = np.full(count, delta, dtype=start.dtype)
    if count:
        steps[0] = start
    return [np.add.accumulate(steps, dtype=start.dtype)]
