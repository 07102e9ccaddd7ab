"""Host execution of digital ops: the numpy semantics of `xbarc.onnx_ops`, onnxruntime for the rest.

`run_digital(op, inputs, constant)` runs one `DigitalOp` on concrete arrays. Ops that
networks use between crossbar layers (activations, arithmetic, pools, layout, softmax,
resize...) run the semantics of `xbarc.onnx_ops` (the same ones constant folding uses),
which follow the ONNX spec across opsets 9..26 and match onnxruntime: same dtypes and
shapes, integers exactly, floats to rounding. An op without semantics there, or whose
semantics raise `Unsupported` for its attributes, runs through onnxruntime as a one-node
model instead (`run_onnxruntime`), with one cached session per op signature so that
every input shape reuses it.

Outputs may share memory with inputs (Identity, Reshape, Transpose return views): treat
them as read-only. Tensors numpy cannot hold natively (bfloat16, float8, int4, int2) cannot
cross onnxruntime's Python boundary either, so ops producing or reading them fail with an
XbarcError.

Buffer donation: `run_digital(..., donated={i, ...})` tells the kernels that the caller will
never read inputs i again. Elementwise kernels (Relu, LeakyRelu, Sigmoid, HardSigmoid,
HardSwish, Clip, Tanh, Exp, Log, Sqrt, Neg, Abs, Add, Sub, Mul, Div, Sum, Max, Min, Mean)
then write their result into a donated input that fits it exactly (shape, dtype, writable,
C-contiguous, not aliased by another input) instead of a fresh array, which saves the
allocation and its page faults; the bits are the same either way. The window loops of
MaxPool and AveragePool run in Numba for float32 and float64
(`xbarc.runtime.pool_kernels`), bit-equal to their numpy twins in `xbarc.onnx_ops.pooling`,
and so does Relu (`xbarc.runtime.activation_kernels`), bit-equal to numpy's `maximum`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import AttributeProto, ModelProto, ValueInfoProto, helper, numpy_helper

from xbarc.diagnostics import XbarcError
from xbarc.ir.graph import outer_references
from xbarc.ir.tile import Attribute, Const, DigitalOp
from xbarc.onnx_ops import SEMANTICS, OpCall, Semantics, Unsupported, pooling
from xbarc.runtime import activation_kernels, pool_kernels

Array = np.ndarray
Constant = Callable[[str], np.ndarray]

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
    except Unsupported:
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


# --- the kernels and what a kernel sees ----------------------------------------------------


def max_pool(x: Array, axes: Sequence[pooling.PoolAxis]) -> Array:
    """Max over each window: Numba for float32 and float64, numpy for other types (the
    same bits)."""
    if x.dtype in pool_kernels.NUMBA_DTYPES:
        return pool_kernels.max_pool_numba(x, axes)
    return pooling.max_pool_numpy(x, axes)


def average_pool(x: Array, axes: Sequence[pooling.PoolAxis], counts: Array) -> Array:
    """Mean over each window (sums over `counts`): Numba for float32 and float64, numpy
    for other types (the same bits)."""
    if x.dtype in pool_kernels.NUMBA_DTYPES:
        return pool_kernels.average_pool_numba(x, axes, counts)
    return pooling.average_pool_numpy(x, axes, counts)


def relu(call: OpCall) -> list[Array | None]:
    """Relu: Numba for C-contiguous float32 and float64 (`activation_kernels`, 5x faster),
    the semantics of `onnx_ops` for the rest (the same bits)."""
    x = call.input(0)
    if x.dtype not in activation_kernels.NUMBA_DTYPES or not x.flags.c_contiguous:
        return SEMANTICS["Relu"](call)
    return [activation_kernels.relu_numba(x, call.out(x.shape, x.dtype))]


# the ops' semantics, with the pools' window loops and Relu in Numba
_KERNELS: dict[str, Semantics] = {
    **SEMANTICS,
    "MaxPool": functools.partial(pooling.max_pool, window_max=max_pool),
    "AveragePool": functools.partial(pooling.average_pool, window_mean=average_pool),
    "Relu": relu,
}


def native_op_types() -> tuple[str, ...]:
    """The default-domain op types with a numpy kernel (others always use onnxruntime)."""
    return tuple(sorted(_KERNELS))


@dataclass(frozen=True, slots=True)
class _Call(OpCall):
    """A DigitalOp applied to concrete inputs; tensor attributes are program tensors."""

    op: DigitalOp
    inputs: Sequence[Array | None]
    constant: Constant
    donated: frozenset[int] = frozenset()

    @property
    def op_type(self) -> str:
        return self.op.op_type

    @property
    def opset(self) -> int:
        return self.op.opset

    @property
    def outputs(self) -> Sequence[str]:
        return self.op.outputs

    def attribute(self, name: str) -> Any:
        for attribute in self.op.attributes:
            if attribute.name == name:
                return attribute.value
        return None

    def tensor_attr(self, name: str) -> Array | None:
        value = self.attribute(name)
        return None if value is None else np.asarray(self.constant(value.name))

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
                hint="recompile the model: xbarc now lowers If, Loop and Scan subgraphs into "
                "regions that see the enclosing values; for other ops, pass those values "
                "as explicit inputs",
            )


def first_line(error: Exception) -> str:
    """The first line of an error's message (onnxruntime's run on for pages)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
