"""Host execution of digital ops: numpy kernels for the common ONNX ops, onnxruntime for the rest.

`run_digital(op, inputs, constant)` runs one `DigitalOp` on concrete arrays. Ops that
networks use between crossbar layers (activations, arithmetic, pools, layout, softmax,
resize...) have numpy kernels here that follow the ONNX spec across opsets 9..26 and match
onnxruntime: same dtypes and shapes, integers exactly, floats to rounding. A kernel that
meets an attribute combination it does not implement raises `_NotNative`, and the op runs
through onnxruntime as a one-node model instead (`run_onnxruntime`), with one cached
session per op signature so that every input shape reuses it.

Outputs may share memory with inputs (Identity, Reshape, Transpose return views): treat
them as read-only. Tensors numpy cannot hold natively (bfloat16, float8, int4, int2) cannot
cross onnxruntime's Python boundary either, so ops producing or reading them fail with an
XbarcError.

Buffer donation: `run_digital(..., donated={i, ...})` tells the kernels that the caller will
never read inputs i again. Elementwise kernels (Relu, LeakyRelu, Sigmoid, HardSigmoid,
HardSwish, Clip, Tanh, Exp, Log, Sqrt, Neg, Abs, Add, Sub, Mul, Div, Sum, Max, Min, Mean)
then write their result into a donated input that fits it exactly (shape, dtype, writable,
C-contiguous, not aliased by another input) instead of a fresh array, which saves the
allocation and its page faults; the bits are the same either way. Pools run in Numba for
float32 and float64 (`xbarc.runtime.pool_kernels`), with the numpy code here as their twin.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from onnx import AttributeProto, ModelProto, TensorProto, ValueInfoProto, helper, numpy_helper

from xbarc.diagnostics import XbarcError
from xbarc.ir.graph import outer_references
from xbarc.ir.tile import Attribute, Const, DigitalOp
from xbarc.runtime import pool_kernels

Array = np.ndarray
Constant = Callable[[str], np.ndarray]
Kernel = Callable[["_Call"], list[Array | None]]

DEFAULT_DOMAINS = ("", "ai.onnx")


def run_digital(
    op: DigitalOp,
    inputs: Sequence[Array | None],
    constant: Constant,
    *,
    donated: frozenset[int] = frozenset(),
) -> list[Array | None]:
    """Execute `op` on `inputs` (aligned with `op.inputs`, None for omitted ones); one array
    per output of `op`, None for unused ("") outputs. `constant(name)` reads the program's
    tensors for tensor and proto attributes.

    `donated` holds the indices of inputs the caller will never read again: an elementwise
    kernel may write its result into one of them (and return it) rather than allocate,
    when that input is a writable C-contiguous array of exactly the result's shape and
    dtype and no other input of the op shares its memory. The caller must also know that
    no array it still reads is a view of a donated one (Reshape and Identity results are).
    Results are the same bits either way."""
    # np.asarray returns an ndarray itself: donated buffers stay the caller's objects
    arrays = [None if value is None else np.asarray(value) for value in inputs]
    kernel = _KERNELS.get(op.op_type) if op.domain in DEFAULT_DOMAINS else None
    if kernel is None:
        return run_onnxruntime(op, arrays, constant)
    try:
        # onnxruntime computes IEEE infinities and NaNs silently; so do the kernels
        with np.errstate(all="ignore"):
            results = kernel(_Call(op, arrays, constant, donated))
    except _NotNative:
        return run_onnxruntime(op, arrays, constant)
    except (ValueError, IndexError) as error:
        shapes = ", ".join("_" if a is None else str(list(a.shape)) for a in arrays)
        raise XbarcError(
            f'op "{op.name}" ({op.op_type}) failed on inputs of shapes {shapes}: {error}',
            hint="check the model's input shapes",
        ) from error
    return _aligned(op, results)


def _aligned(op: DigitalOp, results: Sequence[Array | None]) -> list[Array | None]:
    """One array per output slot of `op`: None for unused slots and for results not made."""
    aligned: list[Array | None] = []
    for index, name in enumerate(op.outputs):
        result = results[index] if index < len(results) else None
        aligned.append(np.asarray(result) if name and result is not None else None)
    return aligned


# --- the kernel registry and what a kernel sees ------------------------------------------


class _NotNative(Exception):
    """The kernel does not implement this attribute combination: use onnxruntime."""


_KERNELS: dict[str, Kernel] = {}


def _kernel(*op_types: str) -> Callable[[Kernel], Kernel]:
    def register(function: Kernel) -> Kernel:
        for op_type in op_types:
            _KERNELS[op_type] = function
        return function

    return register


def native_op_types() -> tuple[str, ...]:
    """The default-domain op types with a numpy kernel (others always use onnxruntime)."""
    return tuple(sorted(_KERNELS))


@dataclass(frozen=True, slots=True)
class _Call:
    """One op applied to concrete inputs, with typed access to its attributes."""

    op: DigitalOp
    inputs: Sequence[Array | None]
    constant: Constant
    donated: frozenset[int] = frozenset()

    @property
    def opset(self) -> int:
        return self.op.opset

    def out(self, shape: tuple[int, ...], dtype: np.dtype, among: Sequence[int] = (0,)) -> Array:
        """Where to write a result of `shape` and `dtype`: a donated input among `among`
        that can take it in place (see `run_digital`), else a new array."""
        for index in among:
            array = self.optional(index)
            if index not in self.donated or array is None:
                continue
            if array.shape != shape or array.dtype != dtype:
                continue
            if not (array.flags.writeable and array.flags.c_contiguous):
                continue
            others = (a for i, a in enumerate(self.inputs) if i != index and a is not None)
            if not any(np.may_share_memory(array, other) for other in others):
                return array
        return np.empty(shape, dtype)

    def input(self, index: int) -> Array:
        value = self.optional(index)
        if value is None:
            raise _NotNative  # a required input is missing: let onnxruntime report it
        return value

    def optional(self, index: int) -> Array | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def wants(self, index: int) -> bool:
        return index < len(self.op.outputs) and bool(self.op.outputs[index])

    def _value(self, name: str) -> Any:
        for attribute in self.op.attributes:
            if attribute.name == name:
                return attribute.value
        return None

    def int_attr(self, name: str, default: int) -> int:
        value = self._value(name)
        return default if value is None else int(value)

    def float_attr(self, name: str, default: float) -> float:
        """A float attribute rounded to float32, as ONNX stores it."""
        value = self._value(name)
        return float(np.float32(default if value is None else value))

    def string_attr(self, name: str, default: str) -> str:
        value = self._value(name)
        return default if value is None else str(value)

    def ints_attr(self, name: str) -> list[int] | None:
        value = self._value(name)
        return None if value is None else [int(v) for v in value]

    def floats_attr(self, name: str) -> list[float] | None:
        value = self._value(name)
        return None if value is None else [float(np.float32(v)) for v in value]

    def tensor_attr(self, name: str) -> Array | None:
        value = self._value(name)
        return None if value is None else np.asarray(self.constant(value.name))


def _int_list(values: Array) -> list[int]:
    return [int(v) for v in values.reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


# --- elementwise -------------------------------------------------------------------------

_UNARY: dict[str, np.ufunc] = {
    "Tanh": np.tanh,
    "Exp": np.exp,
    "Log": np.log,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Abs": np.absolute,
}


@_kernel(*_UNARY)
def _unary(call: _Call) -> list[Array | None]:
    x = call.input(0)
    return [_UNARY[call.op.op_type](x, out=call.out(x.shape, x.dtype))]


@_kernel("Identity")
def _identity(call: _Call) -> list[Array | None]:
    return [call.input(0)]


@_kernel("Relu")
def _relu(call: _Call) -> list[Array | None]:
    x = call.input(0)
    return [np.maximum(x, x.dtype.type(0), out=call.out(x.shape, x.dtype))]


@_kernel("LeakyRelu")
def _leaky_relu(call: _Call) -> list[Array | None]:
    x = call.input(0)
    alpha = x.dtype.type(call.float_attr("alpha", 0.01))
    scaled = x < 0  # NaN is left as it is, as NaN * alpha would be
    result = call.out(x.shape, x.dtype)
    if result is not x:
        np.copyto(result, x)
    return [np.multiply(result, alpha, out=result, where=scaled)]


@_kernel("Sigmoid")
def _sigmoid(call: _Call) -> list[Array | None]:
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


@_kernel("HardSigmoid", "HardSwish")
def _hard_sigmoid(call: _Call) -> list[Array | None]:
    x = call.input(0)
    swish = call.op.op_type == "HardSwish"
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


@_kernel("Clip")
def _clip(call: _Call) -> list[Array | None]:
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


@_kernel(*_BINARY)
def _binary(call: _Call) -> list[Array | None]:
    a, b = call.input(0), call.input(1)
    out = call.out(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b), among=(0, 1))
    return [_BINARY[call.op.op_type](a, b, out=out)]


@_kernel("Pow")
def _pow(call: _Call) -> list[Array | None]:
    base, exponent = call.input(0), call.input(1)
    if base.dtype.kind != "f" or exponent.dtype.kind not in "fiu":
        raise _NotNative  # integer powers round through double in onnxruntime
    return [np.power(base, exponent.astype(base.dtype))]


_VARIADIC: dict[str, np.ufunc] = {
    "Sum": np.add,
    "Mean": np.add,
    "Max": np.maximum,
    "Min": np.minimum,
}


@_kernel(*_VARIADIC)
def _variadic(call: _Call) -> list[Array | None]:
    operands = [call.input(index) for index in range(len(call.inputs))]
    function, mean = _VARIADIC[call.op.op_type], call.op.op_type == "Mean"
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


@_kernel("MatMul")
def _matmul(call: _Call) -> list[Array | None]:
    return [np.matmul(call.input(0), call.input(1))]


# --- pooling -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolAxis:
    """How a pooling window walks one spatial axis: `size` inputs padded by `pad_begin` and
    `pad_end`, a `kernel` of taps `dilation` apart, moved by `stride` to `output` places."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int
    output: int

    def tap(self, tap: int) -> tuple[slice, slice] | None:
        """The outputs whose window tap `tap` lands inside the input, and the inputs it
        reads for them; None when it lands in the padding for every output."""
        start = tap * self.dilation - self.pad_begin  # the input read for output 0
        first = max(0, -(start // self.stride))
        last = min(self.output - 1, (self.size - 1 - start) // self.stride)
        if last < first:
            return None
        reads = slice(start + first * self.stride, start + last * self.stride + 1, self.stride)
        return slice(first, last + 1), reads

    def tap_counts(self, count_padding: bool) -> Array:
        """How many taps of each output's window land inside the input, or inside the
        padded input when `count_padding` (taps past the end padding never count)."""
        low, high = (-self.pad_begin, self.size + self.pad_end) if count_padding else (0, self.size)
        starts = np.arange(self.output, dtype=np.int64) * self.stride - self.pad_begin
        reads = starts[:, None] + np.arange(self.kernel, dtype=np.int64) * self.dilation
        return np.count_nonzero((reads >= low) & (reads < high), axis=1)


def pool_axes(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    auto_pad: str,
    ceil_mode: bool,
) -> list[PoolAxis]:
    """The window geometry of each spatial axis, with onnxruntime's output sizes (SAME pads
    ignore dilation there, as in onnxruntime)."""
    axes = []
    rank = len(spatial)
    for axis, size in enumerate(spatial):
        stride, taps, dilation = strides[axis], kernel[axis], dilations[axis]
        pad_begin, pad_end = pads[axis], pads[axis + rank]
        if auto_pad == "VALID":
            pad_begin = pad_end = 0
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            needed = (-(-size // stride) - 1) * stride + taps - size
            if needed < 0:
                raise _NotNative
            pad_begin = needed // 2 if auto_pad == "SAME_UPPER" else (needed + 1) // 2
            pad_end = needed - pad_begin
        span = size + pad_begin + pad_end - dilation * (taps - 1) - 1
        if span < 0:
            raise _NotNative  # the window is wider than the padded input
        output = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (output - 1) * stride >= size + pad_begin:
            output -= 1  # onnxruntime drops a last window that would start in the end padding
        axes.append(PoolAxis(size, taps, stride, dilation, pad_begin, pad_end, output))
    return axes


def _pool_geometry(call: _Call, x: Array) -> list[PoolAxis]:
    kernel = call.ints_attr("kernel_shape")
    if kernel is None or x.ndim != len(kernel) + 2:
        raise _NotNative
    rank = len(kernel)
    auto_pad = call.string_attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise _NotNative
    pads = call.ints_attr("pads") or [0] * (2 * rank)
    if any(pad >= size for pad, size in zip(pads, kernel * 2, strict=True)):
        raise _NotNative  # onnxruntime rejects pads as large as the kernel
    return pool_axes(
        x.shape[2:],
        kernel,
        call.ints_attr("strides") or [1] * rank,
        call.ints_attr("dilations") or [1] * rank,
        pads,
        auto_pad,
        bool(call.int_attr("ceil_mode", 0)),
    )


def _taps(axes: Sequence[PoolAxis]) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """(output region, input region) for each kernel tap in row-major order, skipping taps
    that only ever read padding; regions index the spatial axes after (N, C)."""
    reaching = [[r for r in map(axis.tap, range(axis.kernel)) if r is not None] for axis in axes]
    for reaches in itertools.product(*reaching):
        yield (
            (slice(None), slice(None), *(outputs for outputs, _ in reaches)),
            (slice(None), slice(None), *(reads for _, reads in reaches)),
        )


_BLOCK_BYTES = 1 << 19


def _lowest(dtype: np.dtype) -> Any:
    return np.finfo(dtype).min if dtype.kind == "f" else np.iinfo(dtype).min


def _plane_blocks(x: Array, result: Array) -> Iterator[tuple[Array, Array]]:
    """Matching runs of (n, c) planes of `x` and `result`, each a few hundred kilobytes of
    input, so that the taps of a window re-read the input from cache rather than memory."""
    planes = x.reshape((-1, 1) + x.shape[2:])
    results = result.reshape((-1, 1) + result.shape[2:])
    step = max(1, _BLOCK_BYTES // max(planes[:1].nbytes, 1))
    for start in range(0, planes.shape[0], step):
        yield planes[start : start + step], results[start : start + step]


def max_pool(x: Array, axes: Sequence[PoolAxis]) -> Array:
    """Max over each window; windows with no input hold the type's lowest value. Float32
    and float64 run in Numba, other types in numpy (the same bits)."""
    if x.dtype in pool_kernels.NUMBA_DTYPES:
        return pool_kernels.max_pool_numba(x, axes)
    return max_pool_numpy(x, axes)


def max_pool_numpy(x: Array, axes: Sequence[PoolAxis]) -> Array:
    """`max_pool` in numpy: each tap in row-major order updates every output it reaches."""
    result = np.full(x.shape[:2] + tuple(axis.output for axis in axes), _lowest(x.dtype), x.dtype)
    taps = list(_taps(axes))
    for planes, results in _plane_blocks(x, result):
        for outputs, reads in taps:
            np.maximum(results[outputs], planes[reads], out=results[outputs])
    return result


def max_pool_with_indices(
    x: Array, axes: Sequence[PoolAxis], column_major: bool
) -> tuple[Array, Array]:
    """Max over each window and the flat input index of its first maximum, as onnxruntime
    numbers them: (n*C + c) * spatial size + the position in row-major (or column-major)
    order."""
    spatial = x.shape[2:]
    if column_major:
        steps = [math.prod(spatial[:axis]) for axis in range(len(spatial))]
    else:
        steps = [math.prod(spatial[axis + 1 :]) for axis in range(len(spatial))]
    out_shape = x.shape[:2] + tuple(axis.output for axis in axes)
    channel_base = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2])
    channel_base = channel_base.reshape(x.shape[:2] + (1,) * len(axes)) * math.prod(spatial)
    # a window where nothing beats the lowest value keeps onnxruntime's "-1 per axis"
    indices = np.broadcast_to(channel_base - sum(steps), out_shape).copy()
    best = np.full(out_shape, _lowest(x.dtype), x.dtype)
    for outputs, reads in _taps(axes):
        window = x[reads]
        better = window > best[outputs]
        flat = channel_base
        for axis, read in enumerate(reads[2:]):
            positions = np.arange(read.start, read.stop, read.step, dtype=np.int64)
            shape = [1] * (2 + len(axes))
            shape[2 + axis] = positions.size
            flat = flat + positions.reshape(shape) * steps[axis]
        np.copyto(best[outputs], window, where=better)
        np.copyto(indices[outputs], np.broadcast_to(flat, window.shape), where=better)
    return best, indices


def average_pool(x: Array, axes: Sequence[PoolAxis], count_include_pad: bool) -> Array:
    """Mean over each window: the sum of its taps inside the input over their count, or
    over the count of its taps inside the padded input when padding counts. Float32 and
    float64 run in Numba, other types in numpy (the same bits)."""
    counts = window_counts(axes, count_include_pad, x.dtype)
    if x.dtype in pool_kernels.NUMBA_DTYPES:
        return pool_kernels.average_pool_numba(x, axes, counts)
    return average_pool_numpy(x, axes, counts)


def window_counts(axes: Sequence[PoolAxis], count_padding: bool, dtype: np.dtype) -> Array:
    """The divisor of each output of an average pool, in `dtype`, shaped as the output's
    spatial axes (see `PoolAxis.tap_counts`)."""
    counts = np.ones((1,) * len(axes), dtype=np.int64)
    for index, axis in enumerate(axes):
        shape = [1] * len(axes)
        shape[index] = axis.output
        counts = counts * axis.tap_counts(count_padding).reshape(shape)
    return counts.astype(dtype)


def average_pool_numpy(x: Array, axes: Sequence[PoolAxis], counts: Array) -> Array:
    """`average_pool` in numpy: each tap in row-major order adds into every output it
    reaches, then each sum is divided by its entry of `counts`."""
    total = np.zeros(x.shape[:2] + tuple(axis.output for axis in axes), x.dtype)
    taps = list(_taps(axes))
    for planes, totals in _plane_blocks(x, total):
        for outputs, reads in taps:
            np.add(totals[outputs], planes[reads], out=totals[outputs])
    total /= counts
    return total


@_kernel("MaxPool")
def _max_pool(call: _Call) -> list[Array | None]:
    x = call.input(0)
    axes = _pool_geometry(call, x)
    if not call.wants(1):
        return [max_pool(x, axes)]
    if x.dtype != np.float32:
        raise _NotNative
    column_major = call.int_attr("storage_order", 0) == 1
    return list(max_pool_with_indices(x, axes, column_major))


@_kernel("AveragePool")
def _average_pool(call: _Call) -> list[Array | None]:
    x = call.input(0)
    if x.dtype.kind != "f":
        raise _NotNative
    axes = _pool_geometry(call, x)
    return [average_pool(x, axes, bool(call.int_attr("count_include_pad", 0)))]


@_kernel("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(call: _Call) -> list[Array | None]:
    x = call.input(0)
    if x.ndim < 2:
        raise _NotNative
    size = math.prod(x.shape[2:])
    planes = x.reshape(x.shape[:2] + (size,))
    kept = x.shape[:2] + (1,) * (x.ndim - 2)
    if call.op.op_type == "GlobalMaxPool":
        return [np.maximum.reduce(planes, axis=2).reshape(kept)]
    if x.dtype not in (np.float32, np.float64):
        return [np.mean(planes, axis=2, dtype=x.dtype).reshape(kept)]
    # einsum sums short planes several times faster than np.mean, whose reduction pays a
    # call per plane (2048 planes of 7x7 in ResNet-50)
    total = np.einsum("ncp->nc", planes)
    total /= x.dtype.type(size)
    return [total.reshape(kept)]


# --- shapes and layout -------------------------------------------------------------------


@_kernel("Flatten")
def _flatten(call: _Call) -> list[Array | None]:
    x = call.input(0)
    axis = call.int_attr("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"axis {axis} is out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@_kernel("Reshape")
def _reshape(call: _Call) -> list[Array | None]:
    x, shape = call.input(0), _int_list(call.input(1))
    if not call.int_attr("allowzero", 0):
        shape = [x.shape[index] if dim == 0 else dim for index, dim in enumerate(shape)]
    return [x.reshape(shape)]


@_kernel("Transpose")
def _transpose(call: _Call) -> list[Array | None]:
    x = call.input(0)
    return [np.transpose(x, call.ints_attr("perm") or None)]


@_kernel("Concat")
def _concat(call: _Call) -> list[Array | None]:
    parts = [call.input(index) for index in range(len(call.inputs))]
    return [np.concatenate(parts, axis=_axis(call.int_attr("axis", 0), parts[0].ndim))]


@_kernel("Split")
def _split(call: _Call) -> list[Array | None]:
    x = call.input(0)
    axis = _axis(call.int_attr("axis", 0), x.ndim)
    sizes = call.ints_attr("split") if call.opset < 13 else None
    if call.opset >= 13 and call.optional(1) is not None:
        sizes = _int_list(call.input(1))
    if not sizes:
        parts = call.int_attr("num_outputs", len(call.op.outputs))
        if call.opset < 18 and x.shape[axis] % parts:
            raise ValueError(f"axis size {x.shape[axis]} does not split into {parts} equal parts")
        chunk = -(-x.shape[axis] // parts)  # the last part is smaller when uneven (opset 18)
        sizes = [min(chunk, x.shape[axis] - chunk * index) for index in range(parts)]
    if sum(sizes) != x.shape[axis] or min(sizes) < 0:
        raise ValueError(f"split sizes {sizes} do not add up to axis size {x.shape[axis]}")
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


_TO_THE_END = (2**31 - 1, 2**63 - 1)  # ends that mean "through the last element" either way


def _slice_bounds(start: int, end: int, step: int, size: int) -> slice:
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


@_kernel("Slice")
def _slice(call: _Call) -> list[Array | None]:
    x = call.input(0)
    if call.opset < 10:
        starts, ends = call.ints_attr("starts") or [], call.ints_attr("ends") or []
        axes, steps = call.ints_attr("axes"), None
    else:
        starts, ends = _int_list(call.input(1)), _int_list(call.input(2))
        axes_input, steps_input = call.optional(3), call.optional(4)
        axes = None if axes_input is None else _int_list(axes_input)
        steps = None if steps_input is None else _int_list(steps_input)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis = _axis(axis, x.ndim)
        index[axis] = _slice_bounds(start, end, step, x.shape[axis])
    return [x[tuple(index)]]


def _axes_operand(call: _Call) -> list[int] | None:
    """`axes` of Squeeze and Unsqueeze: an attribute before opset 13, an input after."""
    if call.opset < 13:
        return call.ints_attr("axes")
    axes = call.optional(1)
    return None if axes is None else _int_list(axes)


@_kernel("Squeeze")
def _squeeze(call: _Call) -> list[Array | None]:
    x, axes = call.input(0), _axes_operand(call)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(_axis(axis, x.ndim) for axis in axes))]


@_kernel("Unsqueeze")
def _unsqueeze(call: _Call) -> list[Array | None]:
    x, axes = call.input(0), _axes_operand(call)
    if axes is None:
        raise _NotNative
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(_axis(axis, rank) for axis in axes))]


def _pad_widths(call: _Call, x: Array) -> list[int]:
    """Begins then ends for every axis of `x`, from the attribute (opset < 11) or the
    input, spread over `axes` (opset 18)."""
    if call.opset < 11:
        return call.ints_attr("pads") or [0] * (2 * x.ndim)
    pads = _int_list(call.input(1))
    axes_input = call.optional(3)
    if axes_input is None:
        return pads
    axes = [_axis(axis, x.ndim) for axis in _int_list(axes_input)]
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


@_kernel("Pad")
def _pad(call: _Call) -> list[Array | None]:
    x = call.input(0)
    mode = _PAD_MODES.get(call.string_attr("mode", "constant"))
    if mode is None:
        raise _NotNative
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
        raise _NotNative
    return [np.pad(x, pad_width, mode=mode)]


def _pad_value(call: _Call, dtype: np.dtype) -> Any:
    """The constant fill: the `value` attribute before opset 11, else the optional input."""
    if call.opset < 11:
        return dtype.type(call.float_attr("value", 0.0))
    fill = call.optional(2)
    return dtype.type(0) if fill is None or not fill.size else fill.reshape(-1)[0]


@_kernel("Shape")
def _shape(call: _Call) -> list[Array | None]:
    shape = call.input(0).shape
    start, end = call.int_attr("start", 0), call.int_attr("end", len(shape))
    return [np.array(shape[_slice_bounds(start, end, 1, len(shape))], dtype=np.int64)]


@_kernel("Gather")
def _gather(call: _Call) -> list[Array | None]:
    data, indices = call.input(0), call.input(1)
    axis = _axis(call.int_attr("axis", 0), data.ndim)
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


@_kernel("Cast")
def _cast(call: _Call) -> list[Array | None]:
    x, target = call.input(0), call.int_attr("to", 0)
    if target not in _CASTABLE or x.dtype.kind not in "fiub":
        raise _NotNative  # strings, bfloat16, float8 and int4 follow onnxruntime's rules
    return [x.astype(helper.tensor_dtype_to_np_dtype(target))]


@_kernel("ConstantOfShape")
def _constant_of_shape(call: _Call) -> list[Array | None]:
    shape = _int_list(call.input(0))
    value = call.tensor_attr("value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


@_kernel("Dropout")
def _dropout(call: _Call) -> list[Array | None]:
    x = call.input(0)
    training = call.optional(2) if call.opset >= 12 else None
    if training is not None and bool(training.reshape(-1)[0]):
        raise _NotNative
    if call.opset >= 12:
        mask = np.ones(x.shape, dtype=np.bool_)
    else:
        # onnxruntime fills the mask with zeros before opset 12 (of x's type before 10)
        mask = np.zeros(x.shape, dtype=np.bool_ if call.opset >= 10 else x.dtype)
    return [x, mask]


# --- normalization -----------------------------------------------------------------------


@_kernel("BatchNormalization")
def _batch_normalization(call: _Call) -> list[Array | None]:
    x = call.input(0)
    training = call.int_attr("training_mode", 0) if call.opset >= 14 else 0
    if training or any(call.wants(index) for index in range(1, 5)):
        raise _NotNative  # training statistics
    if x.ndim < 2 or not call.int_attr("spatial", 1):
        raise _NotNative  # per-element statistics (spatial=0, before opset 9)
    scale, bias, mean, var = (call.input(index).astype(x.dtype) for index in range(1, 5))
    epsilon = x.dtype.type(call.float_attr("epsilon", 1e-5))
    # the same association as onnxruntime: x * (scale / std) + (bias - mean * scale / std)
    new_scale = np.reciprocal(np.sqrt(var + epsilon)) * scale
    new_bias = bias - mean * new_scale
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    result = x * new_scale.reshape(shape)
    result += new_bias.reshape(shape)  # in place: one temporary less on large activations
    return [result]


def _softmax_axis(call: _Call, x: Array) -> tuple[Array, int]:
    """`x` viewed so that softmax runs along one axis: opset 13+ uses `axis` itself, older
    opsets flatten to 2-D at `axis` and normalize each row."""
    if call.opset >= 13:
        return x, _axis(call.int_attr("axis", -1), x.ndim)
    axis = _axis(call.int_attr("axis", 1), x.ndim) if x.ndim else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), 1


@_kernel("Softmax", "LogSoftmax")
def _softmax(call: _Call) -> list[Array | None]:
    x = call.input(0)
    if x.dtype.kind != "f" or x.ndim == 0:
        raise _NotNative
    rows, axis = _softmax_axis(call, x)
    shifted = rows - np.max(rows, axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    total = np.sum(exponentials, axis=axis, keepdims=True)
    if call.op.op_type == "LogSoftmax":
        return [(shifted - np.log(total)).reshape(x.shape)]
    return [(exponentials / total).reshape(x.shape)]


# --- resize ------------------------------------------------------------------------------

_F32 = np.float32


_COORDINATE_MODES = (
    "asymmetric",
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "align_corners",
    "half_pixel_symmetric",
)
_NEAREST_MODES = ("simple", "floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


def resize_source_coordinates(mode: str, output_size: int, input_size: int, scale: float) -> Array:
    """The input coordinate (float32, unclamped) each output position samples, computed in
    the order onnxruntime does so that nearest neighbours round the same way."""
    resized = np.arange(output_size, dtype=_F32)
    scale_f, output_f, input_f = _F32(scale), _F32(output_size), _F32(input_size)
    half = _F32(0.5)
    if mode == "asymmetric":
        return resized / scale_f
    if mode == "half_pixel":
        return (resized + half) / scale_f - half
    if mode == "pytorch_half_pixel":
        if output_size <= 1:
            return np.zeros(output_size, dtype=_F32)
        return (resized + half) / scale_f - half
    if mode == "tf_half_pixel_for_nn":
        return (resized + half) / scale_f
    if mode == "align_corners":
        if output_size == 1:
            return np.zeros(1, dtype=_F32)
        return resized * (input_f - _F32(1)) / (output_f - _F32(1))
    if mode == "half_pixel_symmetric":  # the offset in float32, the rest in double
        adjustment = output_f / (scale_f * input_f)
        offset = float(input_f / _F32(2) * (_F32(1) - adjustment))
        return (offset + (resized.astype(np.float64) + 0.5) / float(scale_f) - 0.5).astype(_F32)
    raise ValueError(f"unknown coordinate_transformation_mode {mode}")


_NEAR_TIE = 1e-5  # relative distance from a rounding tie that onnxruntime may round either way


def nearest_indices(coordinates: Array, nearest_mode: str, downsampling: bool, size: int) -> Array:
    """The input index each coordinate picks, clamped into [0, size)."""
    if nearest_mode == "simple":  # Resize-10 and Upsample
        picked = np.ceil(coordinates) if downsampling else np.trunc(coordinates)
    elif nearest_mode == "floor":
        picked = np.floor(coordinates)
    elif nearest_mode == "ceil":
        picked = np.ceil(coordinates)
    elif nearest_mode in ("round_prefer_floor", "round_prefer_ceil"):
        from_half = np.abs(coordinates - np.floor(coordinates) - _F32(0.5))
        near_tie = (from_half > 0) & (from_half <= _NEAR_TIE * np.maximum(1, np.abs(coordinates)))
        if near_tie.any():
            # onnxruntime rounds some coordinates a few ulps below a tie up, some not
            # (1/(2/7) picks 4, 3/(2/7) picks 10): leave those scales to it
            raise _NotNative
        halfway = coordinates == np.trunc(coordinates) + _F32(0.5)
        tie = (
            np.floor(coordinates) if nearest_mode == "round_prefer_floor" else np.ceil(coordinates)
        )
        picked = np.where(halfway, tie, np.round(coordinates))
    else:
        raise ValueError(f"unknown nearest_mode {nearest_mode}")
    return np.clip(picked.astype(np.int64), 0, size - 1)


def linear_weights(coordinates: Array, size: int) -> tuple[Array, Array, Array, Array]:
    """(low index, high index, low weight, high weight) for linear interpolation along one
    axis, with onnxruntime's clamping at the borders."""
    clamped = np.clip(coordinates, _F32(0), _F32(size - 1))
    low = np.minimum(clamped.astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    high_weight = np.abs(clamped - low.astype(_F32))
    low_weight = np.abs(clamped - high.astype(_F32))
    same = low == high
    low_weight[same] = high_weight[same] = _F32(0.5)
    return low, high, low_weight, high_weight


@dataclass(frozen=True, slots=True)
class ResizePlan:
    """What a Resize or Upsample does: per-axis float32 scales and output sizes, how output
    positions map back to input coordinates, and how nearest rounds them."""

    scales: list[float]
    sizes: list[int]
    coordinate_mode: str
    nearest_mode: str


def _resize_plan(call: _Call, x: Array) -> ResizePlan:
    """The plan of a Resize (any opset) or Upsample on `x`, from `scales` or `sizes`."""
    scales_values: list[float] | None
    sizes_values: list[int] | None = None
    if call.op.op_type == "Upsample" and call.opset < 9:
        scales_values = call.floats_attr("scales")
    elif call.op.op_type == "Upsample" or call.opset < 11:
        scales_values = [float(v) for v in call.input(1).reshape(-1)]
    else:
        scales_input, sizes_input = call.optional(2), call.optional(3)
        scales_values = None
        if scales_input is not None and scales_input.size:
            scales_values = [float(v) for v in scales_input.reshape(-1)]
        if sizes_input is not None and sizes_input.size:
            sizes_values = _int_list(sizes_input)
    policy = call.string_attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch" or call.int_attr("antialias", 0):
        raise _NotNative  # onnxruntime's own rules for aspect ratios and antialiasing
    axes = [_axis(axis, x.ndim) for axis in call.ints_attr("axes") or range(x.ndim)]
    scales = [1.0] * x.ndim
    sizes = list(x.shape)
    for index, axis in enumerate(axes):
        size = x.shape[axis]
        if sizes_values is not None:
            sizes[axis] = sizes_values[index]
            scales[axis] = float(_F32(sizes[axis]) / _F32(size)) if size else 1.0
        elif scales_values is not None:
            scales[axis] = float(_F32(scales_values[index]))
            sizes[axis] = int(_F32(scales[axis]) * _F32(size))
        else:
            raise _NotNative
    if call.op.op_type == "Upsample" and any(scale < 1 for scale in scales):
        raise _NotNative  # Upsample refuses to shrink
    # before opset 11 there was one coordinate mode and one rounding rule
    legacy = call.op.op_type == "Upsample" or call.opset < 11
    mode = call.string_attr("coordinate_transformation_mode", "half_pixel")
    nearest = call.string_attr("nearest_mode", "round_prefer_floor")
    if legacy:
        mode, nearest = "asymmetric", "simple"
    if mode not in _COORDINATE_MODES or nearest not in _NEAREST_MODES:
        raise _NotNative  # tf_crop_and_resize reads the region of interest
    return ResizePlan(scales, sizes, mode, nearest)


def resize_nearest(x: Array, plan: ResizePlan) -> Array:
    """Nearest-neighbour resize: one gather of input indices per resized axis."""
    result = x
    for axis, (scale, size) in enumerate(zip(plan.scales, plan.sizes, strict=True)):
        if scale == 1 and size == x.shape[axis]:
            continue  # onnxruntime leaves unit-scale axes alone, even in tf_half_pixel_for_nn
        coordinates = resize_source_coordinates(plan.coordinate_mode, size, x.shape[axis], scale)
        picks = nearest_indices(coordinates, plan.nearest_mode, scale < 1, x.shape[axis])
        result = np.take(result, picks, axis=axis)
    return result


def resize_linear(x: Array, plan: ResizePlan) -> Array:
    """Linear interpolation along each resized axis, last axis first as onnxruntime does."""
    result = x
    for axis in reversed(range(x.ndim)):
        scale, size = plan.scales[axis], plan.sizes[axis]
        if scale == 1 and size == x.shape[axis]:
            continue  # onnxruntime samples a unit scale at integer positions
        coordinates = resize_source_coordinates(plan.coordinate_mode, size, x.shape[axis], scale)
        low, high, low_weight, high_weight = linear_weights(coordinates, x.shape[axis])
        shape = [1] * x.ndim
        shape[axis] = size
        low_weight = low_weight.astype(x.dtype).reshape(shape)
        high_weight = high_weight.astype(x.dtype).reshape(shape)
        result = np.take(result, low, axis=axis) * low_weight + (
            np.take(result, high, axis=axis) * high_weight
        )
    return result


@_kernel("Resize", "Upsample")
def _resize(call: _Call) -> list[Array | None]:
    x = call.input(0)
    plan = _resize_plan(call, x)
    mode = call.string_attr("mode", "nearest")
    if plan.sizes == list(x.shape):
        return [x]  # onnxruntime copies whatever the scales when the shape does not change
    if mode == "nearest":
        return [resize_nearest(x, plan)]
    # onnxruntime interpolates floats only on the two innermost axes of 2-D or 4-D inputs
    # (bilinear); other layouts go to its own kernels or errors
    outer_fixed = all(scale == 1 for scale in plan.scales[:-2])
    if mode != "linear" or x.dtype.kind != "f" or x.ndim not in (2, 4) or not outer_fixed:
        raise _NotNative
    return [resize_linear(x, plan)]


# --- onnxruntime fallback ----------------------------------------------------------------

_SIMPLE_ATTRIBUTE_TYPES = {
    "int": AttributeProto.INT,
    "float": AttributeProto.FLOAT,
    "string": AttributeProto.STRING,
    "ints": AttributeProto.INTS,
    "floats": AttributeProto.FLOATS,
    "strings": AttributeProto.STRINGS,
}
# A custom domain still needs the default domain imported; its version does not matter to a
# node of another domain, so any version onnxruntime supports will do.
_COMPANION_OPSET = 17
_MIN_IR_VERSION = 8  # late enough for every attribute type (type protos came in IR 8)

_SESSIONS: dict[tuple, Any] = {}
_NEEDS_STATIC_SHAPES = object()  # a session signature that only works with exact shapes


def run_onnxruntime(
    op: DigitalOp, inputs: Sequence[Array | None], constant: Constant
) -> list[Array | None]:
    """Execute `op` with onnxruntime as a one-node model. Sessions are cached per op
    signature (domain, type, opset, attributes, input dtypes and ranks, outputs) and declare
    unknown dims, so one session serves every input shape."""
    # np.ascontiguousarray would turn scalars into 1-element vectors
    arrays = [None if value is None else np.require(value, requirements="C") for value in inputs]
    session = cached_session(op, arrays, constant)
    feeds = {f"x{index}": array for index, array in enumerate(arrays) if array is not None}
    try:
        results = session.run(None, feeds)
    except Exception as error:  # onnxruntime raises its own exception types
        raise XbarcError(
            f'op "{op.name}" ({op.op_type}) failed in onnxruntime: {first_line(error)}',
            hint="check the model's input shapes and values",
        ) from error
    produced = iter(results)
    return [np.asarray(next(produced)) if name else None for name in op.outputs]


def cached_session(op: DigitalOp, arrays: Sequence[Array | None], constant: Constant) -> Any:
    """The onnxruntime session that runs `op` on inputs like `arrays`: one per signature,
    whatever the dims, unless shape inference insists on exact dims (then one per shape)."""
    signature = (
        op.domain,
        op.op_type,
        op.opset,
        tuple(_attribute_key(attribute, constant) for attribute in op.attributes),
        tuple(None if a is None else (a.dtype.str, a.ndim) for a in arrays),
        tuple(bool(name) for name in op.outputs),
    )
    if _SESSIONS.get(signature) is not _NEEDS_STATIC_SHAPES:
        if signature in _SESSIONS:
            return _SESSIONS[signature]
        try:
            _SESSIONS[signature] = _new_session(op, arrays, constant, static_shapes=False)
            return _SESSIONS[signature]
        except XbarcError:
            # some shape inference (Resize's `sizes`) rejects inputs of unknown length
            _SESSIONS[signature] = _NEEDS_STATIC_SHAPES
    static = (*signature, tuple(None if a is None else a.shape for a in arrays))
    if static not in _SESSIONS:
        _SESSIONS[static] = _new_session(op, arrays, constant, static_shapes=True)
    return _SESSIONS[static]


def _attribute_key(attribute: Attribute, constant: Constant) -> tuple:
    """An attribute by content: tensor names differ between programs, their data decides."""
    if attribute.kind not in ("tensor", "proto"):
        return (attribute.name, attribute.kind, attribute.value)
    data = _attribute_data(attribute, constant)
    return (attribute.name, attribute.kind, data.dtype.str, data.shape, data.tobytes())


def _attribute_data(attribute: Attribute, constant: Constant) -> Array:
    """The program tensor a tensor or proto attribute refers to."""
    if not isinstance(attribute.value, Const):
        raise XbarcError(f'{attribute.kind} attribute "{attribute.name}" must name a tensor')
    return np.asarray(constant(attribute.value.name))


def _new_session(
    op: DigitalOp, arrays: Sequence[Array | None], constant: Constant, static_shapes: bool
) -> Any:
    import onnxruntime  # imported on first use: it is slow to load

    model = one_node_model(op, arrays, constant, static_shapes)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # failures surface as XbarcError, notices are noise
    # one small op at a time: threads spinning after it would slow the kernels that follow
    options.intra_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own exception types
        raise XbarcError(
            f'op "{op.name}" ({op.op_type}) of domain "{op.domain or "ai.onnx"}" opset '
            f"{op.opset} cannot run on the host: onnxruntime rejects it: {first_line(error)}",
            hint="replace the op in the model, or add a kernel for it to xbarc.runtime.digital",
        ) from error


def one_node_model(
    op: DigitalOp,
    arrays: Sequence[Array | None],
    constant: Constant,
    static_shapes: bool = False,
) -> ModelProto:
    """A model holding just `op`: inputs x<i> of the dtypes and ranks of `arrays` with
    unknown dims (their exact dims if `static_shapes`), untyped outputs y<i>, and the op's
    opset. Omitted inputs are "" except at the end, where they are dropped."""
    attributes = [attribute_proto(attribute, constant) for attribute in op.attributes]
    _check_self_contained(op, attributes)
    present = [index for index, array in enumerate(arrays) if array is not None]
    input_count = present[-1] + 1 if present else 0
    node = helper.make_node(
        op.op_type,
        inputs=[f"x{i}" if arrays[i] is not None else "" for i in range(input_count)],
        outputs=_node_outputs(op.outputs),
        name=op.name,
        domain=op.domain,
    )
    node.attribute.extend(attributes)
    graph = helper.make_graph(
        [node],
        "digital_op",
        [
            helper.make_tensor_value_info(
                f"x{index}",
                helper.np_dtype_to_tensor_dtype(array.dtype),
                array.shape if static_shapes else [None] * array.ndim,
            )
            for index, array in enumerate(arrays)
            if array is not None
        ],
        [ValueInfoProto(name=f"y{index}") for index, name in enumerate(op.outputs) if name],
    )
    opsets = [helper.make_opsetid(op.domain, op.opset)]
    if op.domain not in DEFAULT_DOMAINS:
        opsets.append(helper.make_opsetid("", _companion_opset(op.domain, op.opset)))
    ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), _MIN_IR_VERSION)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def _node_outputs(outputs: Sequence[str]) -> list[str]:
    """y<i> for every used output; unused ones before the last used one get a name too, as
    onnxruntime crashes on some ops (Split) given "" there, and trailing ones are dropped."""
    used = [index for index, name in enumerate(outputs) if name]
    count = used[-1] + 1 if used else 0
    return [f"y{index}" if outputs[index] else f"unused{index}" for index in range(count)]


def _companion_opset(domain: str, version: int) -> int:
    """The default-domain opset first released beside `version` of `domain` (ai.onnx.ml),
    else a version onnxruntime supports."""
    if domain == "ai.onnx.ml":
        releases = [row[2] for row in helper.VERSION_TABLE if row[3] == version]
        if releases:
            return releases[0]
    return _COMPANION_OPSET


def attribute_proto(attribute: Attribute, constant: Constant) -> AttributeProto:
    """The ONNX attribute of an op's IR attribute; tensor and proto attributes read their
    data with `constant(name)`."""
    if attribute.kind == "proto":
        proto = AttributeProto.FromString(_attribute_data(attribute, constant).tobytes())
        proto.name = attribute.name
        return proto
    if attribute.kind == "tensor":
        data = _attribute_data(attribute, constant)
        return helper.make_attribute(attribute.name, numpy_helper.from_array(data))
    attr_type = _SIMPLE_ATTRIBUTE_TYPES.get(attribute.kind)
    if attr_type is None:
        raise XbarcError(f'attribute "{attribute.name}" has unknown kind "{attribute.kind}"')
    return helper.make_attribute(attribute.name, attribute.value, attr_type=attr_type)


def _check_self_contained(op: DigitalOp, attributes: Sequence[AttributeProto]) -> None:
    """Subgraphs (If, Loop, Scan bodies) must not read values of the enclosing graph: a
    one-node model has none to give them."""
    for attribute in attributes:
        if attribute.type not in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            continue
        graphs = [attribute.g] if attribute.type == AttributeProto.GRAPH else attribute.graphs
        outer = sorted(set().union(*(outer_references(graph) for graph in graphs)))
        if outer:
            raise XbarcError(
                f'op "{op.name}" ({op.op_type}) cannot run on the host: its subgraph '
                f'"{attribute.name}" reads {", ".join(outer)} from the enclosing graph',
                hint="fold the control flow out of the model before compiling "
                "(e.g. onnx-simplifier), or pass those values as explicit inputs",
            )


def first_line(error: Exception) -> str:
    """The first line of an error's message (onnxruntime's run on for pages)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
