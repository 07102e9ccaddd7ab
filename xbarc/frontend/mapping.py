"""What the frontend maps onto crossbars, and why the work it leaves digital stays there.

The one place that decides it. Lowering makes a crossbar layer of every node for which
`is_crossbar_layer` holds; every other node that does work a crossbar could do (the ops
of `WORK_OPS`, and `If`/`Loop`/`Scan` whose subgraphs hold such ops) becomes a digital op
that carries `not_mapped(graph, node)`: the reason and its multiply-accumulates at the
compiled shapes. Compile and inspect report from those, never guessing.

To map a new kind of op, make `digital_reason` return None for it (and lower it); the
reasons are the entries of `REASONS` and the checks of `_layer_reason`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from onnx import GraphProto, NodeProto, helper

from xbarc.frontend.fold import FLOAT_KINDS, LAYER_OPS
from xbarc.ir.graph import Graph, Node
from xbarc.ir.tile import NotMapped

INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"})
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
# ops whose multiply-accumulates a crossbar could do (with a constant operand)
WORK_OPS = LAYER_OPS | INTEGER_OPS | RECURRENT_OPS | {"Einsum"}

# why an op of this type stays digital, whatever its operands
REASONS = {
    **{op: "integer ops are not mapped (give xbarc the float model)" for op in INTEGER_OPS},
    **{op: "recurrent layers are not mapped (their weights stay digital)" for op in RECURRENT_OPS},
    "Einsum": "Einsum is not mapped (export the layer as MatMul or Gemm)",
    "If": "ops inside an If subgraph are not mapped",
    "Loop": "ops inside a Loop subgraph are not mapped",
    "Scan": "ops inside a Scan subgraph are not mapped",
}

Shape = tuple[int, ...]
ShapeOf = Callable[[str], Shape | None]


# --- the decision ----------------------------------------------------------------------


def is_crossbar_layer(graph: Graph, node: Node) -> bool:
    """Whether lowering maps `node` onto crossbars: a Conv, ConvTranspose, Gemm or MatMul
    whose weight (second operand) is a float constant."""
    return (
        node.is_default_domain and node.op_type in LAYER_OPS and _layer_reason(graph, node) is None
    )


def digital_reason(graph: Graph, node: Node) -> str | None:
    """Why `node`, which does work a crossbar could do, stays digital; None when it is a
    crossbar layer or does no such work."""
    if not node.is_default_domain:
        return None
    if node.op_type in LAYER_OPS:
        return _layer_reason(graph, node)
    if node.op_type in SUBGRAPH_OPS:
        holds_work = any(_holds_work(g) for g in _subgraphs(node.attributes))
        return REASONS[node.op_type] if holds_work else None
    return REASONS.get(node.op_type)


def _layer_reason(graph: Graph, node: Node) -> str | None:
    constants = graph.constants
    data, weight = node.input(0), constants.get(node.input(1))
    if weight is None:
        if data in constants:
            return "its constant is the left operand (a crossbar layer computes x @ W)"
        if node.op_type in ("MatMul", "Gemm"):
            return f"{node.op_type} of two activations: no constant weight"
        return "its weight is computed at run time, not a constant"
    if not data or data in constants:
        return "all its operands are constants"
    if weight.dtype.kind != FLOAT_KINDS:
        return (
            f"its weight is {weight.dtype} (integer weights are not mapped; give the float model)"
        )
    if node.op_type == "MatMul" and weight.ndim != 2:
        return f"its weight has rank {weight.ndim} (a crossbar holds a matrix)"
    bias = node.input(2)
    if node.op_type != "Gemm" and bias and bias not in constants:
        return "its bias is computed at run time"
    return None


def not_mapped(graph: Graph, node: Node) -> NotMapped | None:
    """The reason and the size of the work `node` leaves digital, or None."""
    reason = digital_reason(graph, node)
    if reason is None:
        return None
    shapes = _graph_shapes(graph)
    if node.op_type in SUBGRAPH_OPS:
        macs = control_flow_macs(
            node.op_type, node.inputs, node.attributes, node.attribute, shapes, graph.constants.get
        )
    else:
        macs = node_macs(node.op_type, node.inputs, node.outputs, node.attribute, shapes)
    return NotMapped(reason, macs)


# --- multiply-accumulates --------------------------------------------------------------


def node_macs(
    op_type: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    attribute: Callable[..., Any],
    shape_of: ShapeOf,
) -> int | None:
    """The multiply-accumulates of one run of a work op at the shapes `shape_of` knows
    (None where a shape it needs is unknown)."""

    def shape(index: int, names: Sequence[str] = inputs) -> Shape | None:
        return shape_of(names[index]) if index < len(names) and names[index] else None

    if op_type in ("Conv", "ConvInteger", "QLinearConv"):
        out, weight = shape(0, outputs), shape(3 if op_type == "QLinearConv" else 1)
        return None if out is None or weight is None else math.prod(out) * math.prod(weight[1:])
    if op_type == "ConvTranspose":
        data, weight = shape(0), shape(1)
        return None if data is None or weight is None else math.prod(data) * math.prod(weight[1:])
    if op_type == "Gemm":
        out, a = shape(0, outputs), shape(0)
        if out is None or a is None or len(a) != 2:
            return None
        return math.prod(out) * a[0 if attribute("transA", 0) else 1]
    if op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        out, a = shape(0, outputs), shape(0)
        return None if out is None or not a else math.prod(out) * a[-1]
    if op_type in RECURRENT_OPS:
        data, weight, recurrent = shape(0), shape(1), shape(2)
        if data is None or weight is None or recurrent is None or len(data) != 3:
            return None
        steps = data[0] * data[1]  # sequence x batch, in either layout
        return steps * (math.prod(weight) + math.prod(recurrent))
    if op_type == "Einsum":
        return _einsum_macs(attribute("equation"), [shape(i) for i in range(len(inputs))])
    return None


def _einsum_macs(equation: Any, shapes: list[Shape | None]) -> int | None:
    """Every index of the operands enumerated once: the product of their sizes."""
    if isinstance(equation, bytes):
        equation = equation.decode()
    if not isinstance(equation, str) or len(shapes) < 2 or None in shapes:
        return None
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(terms) != len(shapes):
        return None
    sizes: dict[str, int] = {}
    for term, dims in zip(terms, shapes, strict=True):
        assert dims is not None
        letters = term.replace("...", "")
        broadcast = len(dims) - len(letters)
        if "..." in term:
            start = term.index("...")
            sizes["..."] = max(sizes.get("...", 1), math.prod(dims[start : start + broadcast]))
            dims = dims[:start] + dims[start + broadcast :]
        for letter, size in zip(letters, dims, strict=False):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def _graph_shapes(graph: Graph) -> ShapeOf:
    def shape_of(name: str) -> Shape | None:
        if name in graph.constants:
            return tuple(graph.constants[name].shape)
        known = graph.type_of(name)
        return None if known is None or not known.is_static else known.static_shape()

    return shape_of


# --- subgraphs -------------------------------------------------------------------------


def control_flow_macs(
    op_type: str,
    inputs: Sequence[str],
    attributes: Sequence[Any],
    attribute: Callable[..., Any],
    shape_of: ShapeOf,
    constant_of: Callable[[str], np.ndarray | None] = lambda name: None,
) -> int | None:
    """The multiply-accumulates of the work ops in one run of an If (its larger branch),
    a Loop (an iteration times its trip count, when that is a constant) or a Scan (an
    iteration per element of its first scanned input); None where unknown."""
    counts = [_graph_macs(graph, shape_of) for graph in _subgraphs(attributes)]
    if not counts or None in counts:
        return None
    per_iteration = max(count for count in counts if count is not None)
    if op_type == "If":
        return per_iteration
    if op_type == "Loop":
        trips = constant_of(inputs[0]) if inputs and inputs[0] else None
        return None if trips is None else per_iteration * int(np.asarray(trips).reshape(-1)[0])
    scanned = len(inputs) - int(attribute("num_scan_inputs", 0))
    axes = attribute("scan_input_axes", None) or [0]
    dims = shape_of(inputs[scanned]) if 0 <= scanned < len(inputs) else None
    return None if not dims else per_iteration * dims[axes[0]]


def _graph_macs(graph: GraphProto, outer: ShapeOf) -> int | None:
    local: dict[str, Shape] = {}
    for value in (*graph.input, *graph.output, *graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            local[value.name] = tuple(d.dim_value for d in dims)
    for tensor in graph.initializer:
        local[tensor.name] = tuple(tensor.dims)

    def shape_of(name: str) -> Shape | None:
        return local[name] if name in local else outer(name)

    total = 0
    for proto in graph.node:
        if proto.domain not in ("", "ai.onnx"):
            continue
        if proto.op_type in WORK_OPS:
            macs = node_macs(
                proto.op_type, proto.input, proto.output, _proto_attribute(proto), shape_of
            )
        elif proto.op_type in SUBGRAPH_OPS:
            macs = control_flow_macs(
                proto.op_type, proto.input, proto.attribute, _proto_attribute(proto), shape_of
            )
        else:
            continue
        if macs is None:
            return None
        total += macs
    return total


def _proto_attribute(proto: NodeProto) -> Callable[..., Any]:
    values = {attr.name: helper.get_attribute_value(attr) for attr in proto.attribute}

    def attribute(name: str, default: Any = None) -> Any:
        return values.get(name, default)

    return attribute


def _subgraphs(attributes: Sequence[Any]) -> list[GraphProto]:
    graphs: list[GraphProto] = []
    for attr in attributes:
        if attr.type == attr.GRAPH:
            graphs.append(attr.g)
        elif attr.type == attr.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _holds_work(graph: GraphProto) -> bool:
    return any(
        proto.op_type in WORK_OPS or any(_holds_work(g) for g in _subgraphs(proto.attribute))
        for proto in graph.node
    )
