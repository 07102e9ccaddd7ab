"""Fold what is known at compile time, so that only real computation is left to lower.

Rewrites of the working graph, in place:

- constant folding: `op(constants...) -> constant`; `Shape(x)` and `Size(x)` also fold
  when the dimensions of `x` they read are known, and so do `Gather` and `Slice` of
  `Shape(x)` that pick only known ones. Every input's batch (its leading dimension) is
  unknown while folding, so what depends on it is never folded. An op is
  evaluated with its semantics in `xbarc.onnx_ops`, the ones the runtime runs (the light
  ONNX zoo models build their 25 M weights with ConstantOfShape); ops without them, or
  with attributes they do not cover, with onnx's reference evaluator, one node at a
  time. Random ops and ops with subgraphs never fold.
- identity removal: `Identity(x) -> x`, and `Dropout(x) -> x` (inference mode, mask
  unused): consumers read `x` directly. An Identity or Dropout whose output is a graph
  output stays, as a digital op.
- dead node removal: a node none of whose outputs is used goes away.
- layer folding: `layer(x, W, b) -> BatchNormalization -> layer(x, W', b')` for Conv,
  ConvTranspose, Gemm and MatMul with a constant weight (`MatMul -> BN` becomes a Gemm),
  and `Conv(x, W, b) -> Mul(., m) / Add(., a) -> Conv(x, W', b')` for per-output-channel
  constants. Folded weights are computed in float64 and stored as float32.

Shape inference runs again after every round that changed the graph, so shapes that
folding makes known are used by the next round.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from onnx import helper

from xbarc.diagnostics import XbarcError
from xbarc.frontend.control import inline_constant_ifs
from xbarc.frontend.load import to_array
from xbarc.frontend.recurrent import expand_recurrent_layers
from xbarc.ir.graph import Graph, Node
from xbarc.ir.types import TensorType
from xbarc.onnx_ops import SEMANTICS, OpCall, Unsupported

MAX_ROUNDS = 16
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)
SHAPE_OPS = frozenset({"Shape", "Size"})
SHAPE_PICK_OPS = frozenset({"Gather", "Slice"})
# two values no dimension has, standing in for an unknown one (the batch)
UNKNOWN_DIM_STAND_INS = (2**40 + 1, 2**40 + 3)
LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
FLOAT_KINDS = "f"
BN_DEFAULT_EPSILON = 1e-5

Arrays = Sequence[np.ndarray | None]
InferTypes = Callable[[Graph], dict[str, TensorType]]


def fold_graph(
    graph: Graph,
    infer_types: InferTypes,
    where: str,
    compiled_inputs: dict[str, TensorType] | None = None,
) -> None:
    """Fold constants, identities and dead nodes to a fixed point, rewrite recurrent
    layers (their shapes known by then) and fold what that exposes, then fold layers.
    `compiled_inputs`: the inputs' compiled types, when `graph.inputs` leave the batch
    unknown; the recurrent rewrite needs the whole sequence shape, so it sees them."""
    _fold_to_fixed_point(graph, infer_types, where)
    if _expand_recurrent(graph, infer_types, where, compiled_inputs):
        _fold_to_fixed_point(graph, infer_types, where)
    fold_layers(graph)
    drop_unused_constants(graph)


def _expand_recurrent(
    graph: Graph, infer_types: InferTypes, where: str, compiled: dict[str, TensorType] | None
) -> bool:
    if compiled is None:
        return expand_recurrent_layers(graph, where)
    batch_free = graph.inputs
    graph.inputs = dict(compiled)
    graph.types = infer_types(graph)
    try:
        return expand_recurrent_layers(graph, where)
    finally:
        graph.inputs = batch_free
        graph.types = infer_types(graph)


def _fold_to_fixed_point(graph: Graph, infer_types: InferTypes, where: str) -> None:
    for _ in range(MAX_ROUNDS):
        graph.types = infer_types(graph)
        changed = fold_constants(graph, where)
        changed |= inline_constant_ifs(graph, where)
        changed |= remove_identities(graph)
        changed |= remove_dead_nodes(graph)
        if not changed:
            break


# --- constant folding ------------------------------------------------------------------


def fold_constants(graph: Graph, where: str) -> bool:
    """Evaluate every node whose inputs are known; True when any was folded."""
    changed = False
    for node in graph.live_nodes():
        outputs = _evaluate(graph, node, where)
        if outputs is None:
            continue
        graph.remove(node.name)
        for name, array in zip(node.outputs, outputs, strict=False):
            if name and array is not None:
                graph.constants[name] = array
        changed = True
    return changed


def _evaluate(graph: Graph, node: Node, where: str) -> list[np.ndarray | None] | None:
    """The node's outputs (None for unused slots) when it can be folded, else None."""
    if not _can_fold(graph, node):
        return _evaluate_shape_pick(graph, node, where)
    args = [_argument(graph, node, value) for value in node.inputs]
    return _run(node, args, graph.opset(node.domain), where)


def _evaluate_shape_pick(graph: Graph, node: Node, where: str) -> list[np.ndarray | None] | None:
    """`Gather(Shape(x), i)` or `Slice(Shape(x), ...)` picking only known dimensions of x
    (not the batch): evaluated on the shape with two stand-ins for the unknown ones, and
    folded when both give the same result."""
    if node.op_type not in SHAPE_PICK_OPS or not node.is_default_domain or node.has_subgraph:
        return None
    dims = _shape_dims(graph, node.input(0))
    rest = node.inputs[1:]
    if dims is None or any(value and value not in graph.constants for value in rest):
        return None
    results = []
    for stand_in in UNKNOWN_DIM_STAND_INS:
        shape = np.array([stand_in if dim is None else dim for dim in dims], np.int64)
        args = [shape, *(graph.constants[value] if value else None for value in rest)]
        results.append(_run(node, args, graph.opset(node.domain), where))
    first, second = results
    if first is None or second is None:
        return None
    same = all(
        (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
        for a, b in zip(first, second, strict=True)
    )
    return first if same else None


def _shape_dims(graph: Graph, value: str) -> tuple[int | None, ...] | None:
    """The dimensions `value` holds when a Shape node makes it, some of them unknown."""
    producer = graph.producer(value) if value else None
    if producer is None or producer.op_type != "Shape" or not producer.is_default_domain:
        return None
    known = graph.type_of(producer.input(0))
    if known is None or known.shape is None:
        return None
    rank = len(known.shape)
    start, end = producer.attribute("start", 0), producer.attribute("end", rank)
    return known.shape[slice(start, end)]


def _run(node: Node, args: Arrays, opset: int, where: str) -> list[np.ndarray | None] | None:
    """The node's outputs on `args` with its semantics (or onnx's reference evaluator)."""
    semantics = SEMANTICS.get(node.op_type)
    if semantics is None:
        return _evaluate_with_reference(node, args, opset)
    try:
        with np.errstate(all="ignore"):  # IEEE infinities and NaNs, as at run time
            results = semantics(_FoldCall(node, args, opset))
    except Unsupported:
        return _evaluate_with_reference(node, args, opset)
    except (ValueError, IndexError, TypeError, KeyError, ArithmeticError, MemoryError) as error:
        raise XbarcError(
            f"node {node.label}: cannot evaluate it on its constant inputs ({error})",
            where=where,
            hint="the model is invalid; check that it runs in onnxruntime",
        ) from None
    made = [results[index] if index < len(results) else None for index in range(len(node.outputs))]
    if any(array is None for array, name in zip(made, node.outputs, strict=True) if name):
        return _evaluate_with_reference(node, args, opset)  # an output the semantics skip
    return [None if array is None else np.asarray(array) for array in made]


def _can_fold(graph: Graph, node: Node) -> bool:
    if not node.is_default_domain or node.has_subgraph or node.implicit_inputs:
        return False
    if node.op_type in RANDOM_OPS or _is_training_dropout(graph, node):
        return False
    if node.op_type in SHAPE_OPS:
        return _read_dims_known(graph, node)
    return all(not value or value in graph.constants for value in node.inputs)


def _read_dims_known(graph: Graph, node: Node) -> bool:
    """Whether the dimensions a Shape (those between its start and end) or Size reads are
    known: `Shape<start=1>(x)` folds while the batch, x's leading dimension, is unknown."""
    known = graph.type_of(node.input(0))
    if known is None or known.shape is None:
        return False
    dims = known.shape
    if node.op_type == "Shape":
        rank = len(dims)
        start, end = node.attribute("start", 0), node.attribute("end", rank)
        dims = dims[slice(start, end)]
    return None not in dims


def _is_training_dropout(graph: Graph, node: Node) -> bool:
    if node.op_type != "Dropout" or not node.input(2):
        return False
    training = graph.constants.get(node.input(2))
    return training is None or bool(training.size and training.reshape(-1)[0])


def _argument(graph: Graph, node: Node, value: str) -> np.ndarray | None:
    if not value:
        return None
    if value in graph.constants:
        return graph.constants[value]
    # Shape and Size of an activation only need its shape: a zero-stride stand-in (an
    # unknown dimension is one the node does not read)
    dims = graph.types[value].shape or ()
    shape = tuple(1 if dim is None else dim for dim in dims)
    return np.broadcast_to(np.zeros((), np.float32), shape)


def _evaluate_with_reference(
    node: Node, args: Arrays, opset: int
) -> list[np.ndarray | None] | None:
    from onnx.reference import ReferenceEvaluator  # slow to import; rarely needed

    feeds = {name: array for name, array in zip(node.inputs, args, strict=True) if name}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            results = ReferenceEvaluator(node.to_proto(), opsets={"": opset}).run(None, feeds)
    except Exception:  # not implemented, or an unusual type: the node stays digital
        return None
    if len(results) != len(node.outputs):
        return None
    if not all(isinstance(result, np.ndarray) for result in results):
        return None  # sequences, maps, optionals are not constants of a program
    return list(results)


# --- what a semantics function sees of a node ------------------------------------------


@dataclass(frozen=True, slots=True)
class _FoldCall(OpCall):
    """A graph node applied to its constant inputs."""

    node: Node
    inputs: Arrays
    default_opset: int

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def opset(self) -> int:
        return self.default_opset

    @property
    def outputs(self) -> Sequence[str]:
        return self.node.outputs

    def attribute(self, name: str) -> Any:
        value = self.node.attribute(name)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    def tensor_attr(self, name: str) -> np.ndarray | None:
        value = self.node.attribute(name)
        return value if value is None else to_array(value)


# --- identities and dead nodes ---------------------------------------------------------


def remove_identities(graph: Graph) -> bool:
    """Make consumers of Identity(x) and inference Dropout(x) read x; True if any went."""
    changed = False
    for node in graph.live_nodes():
        if not _is_removable_identity(graph, node):
            continue
        graph.rewire(node.outputs[0], node.inputs[0])
        graph.remove(node.name)
        changed = True
    return changed


def _is_removable_identity(graph: Graph, node: Node) -> bool:
    if not node.is_default_domain or node.op_type not in ("Identity", "Dropout"):
        return False
    if node.op_type == "Dropout" and _is_training_dropout(graph, node):
        return False
    if not node.inputs or not node.outputs or not node.inputs[0]:
        return False
    output = node.outputs[0]
    if output in graph.outputs or any(graph.is_used(mask) for mask in node.outputs[1:] if mask):
        return False
    # a subgraph reading the output by name cannot be rewired
    return all(output not in consumer.implicit_inputs for consumer in graph.consumers(output))


def remove_dead_nodes(graph: Graph) -> bool:
    """Remove nodes none of whose outputs is used; True if any went."""
    changed = False
    for node in reversed(graph.nodes()):  # consumers first, so chains go in one sweep
        if any(graph.is_used(output) for output in node.outputs if output):
            continue
        graph.remove(node.name)
        changed = True
    return changed


def drop_unused_constants(graph: Graph) -> None:
    used = {v for node in graph.nodes() for v in (*node.inputs, *node.implicit_inputs)}
    used |= set(graph.outputs)
    graph.constants = {name: a for name, a in graph.constants.items() if name in used}


# --- layer folding ---------------------------------------------------------------------


def fold_layers(graph: Graph) -> None:
    """Fold BatchNormalization, and per-channel Mul/Add after a Conv, into the layer."""
    for node in graph.live_nodes():
        if not node.is_default_domain:
            continue
        with np.errstate(all="ignore"):  # a negative variance gives NaN, as at run time
            if node.op_type == "BatchNormalization":
                _fold_batch_norm(graph, node)
            elif node.op_type in ("Mul", "Add") and len(node.inputs) == 2:
                _fold_channel_affine(graph, node)


def _fold_batch_norm(graph: Graph, norm: Node) -> None:
    if norm.attribute("training_mode", 0):
        return
    if any(graph.is_used(output) for output in norm.outputs[1:] if output):
        return  # training-style running statistics are read
    layer = _layer_feeding(graph, norm.input(0), norm)
    params = [graph.constants.get(norm.input(index)) for index in range(1, 5)]
    if layer is None or any(param is None for param in params):
        return
    gamma, beta, mean, variance = (np.asarray(p, np.float64).reshape(-1) for p in params)
    if len({gamma.size, beta.size, mean.size, variance.size}) != 1:
        return  # inconsistent statistics: left to the runtime to refuse
    if layer.op_type == "MatMul" and _rank(graph, layer.outputs[0]) != 2:
        return  # BN normalizes axis 1, which is the MatMul's output axis only in 2-D
    epsilon = norm.attribute("epsilon", BN_DEFAULT_EPSILON)
    scale = gamma / np.sqrt(variance + epsilon)
    _fold_into(graph, layer, norm, scale, beta - mean * scale)


def _fold_channel_affine(graph: Graph, node: Node) -> None:
    for data, other in ((0, 1), (1, 0)):
        constant = graph.constants.get(node.inputs[other])
        layer = _layer_feeding(graph, node.inputs[data], node)
        if constant is None or layer is None or layer.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight = graph.constants[layer.input(1)]
        vector = _per_channel(constant, weight.ndim, _output_channels(layer, weight))
        if vector is None:
            continue
        if node.op_type == "Mul":
            _fold_into(graph, layer, node, vector, np.zeros(1))
        else:
            _fold_into(graph, layer, node, None, vector)
        return


def _fold_into(
    graph: Graph, layer: Node, follower: Node, scale: np.ndarray | None, shift: np.ndarray
) -> None:
    """Replace `layer -> follower` by the layer computing follower(layer(x)) =
    layer(x) * scale + shift per output channel (scale None: 1)."""
    folded = _scaled_layer(graph, layer, scale, shift)
    if folded is None:
        return
    graph.remove(follower.name)
    sources = (*layer.source_labels, follower.source)
    folded = replace(folded, outputs=(follower.outputs[0],), sources=sources)
    graph.replace(layer.name, folded)


def _layer_feeding(graph: Graph, value: str, consumer: Node) -> Node | None:
    """The foldable layer producing `value` when `consumer` is the only one reading it."""
    if not value or value in graph.outputs:
        return None
    if [node.name for node in graph.consumers(value)] != [consumer.name]:
        return None
    layer = graph.producer(value)
    if layer is None or not layer.is_default_domain or layer.op_type not in LAYER_OPS:
        return None
    if layer.outputs[0] != value or not _has_constant_weights(graph, layer):
        return None
    return layer


def _has_constant_weights(graph: Graph, layer: Node) -> bool:
    weight = graph.constants.get(layer.input(1))
    if weight is None or weight.dtype.kind != FLOAT_KINDS:
        return False
    if layer.input(0) in graph.constants:
        return False
    bias = layer.input(2)
    if bias and bias not in graph.constants:
        return False
    if layer.op_type == "ConvTranspose":
        groups = layer.attribute("group", 1)
        return weight.ndim >= 3 and groups >= 1 and weight.shape[0] % groups == 0
    if layer.op_type == "Conv":
        return weight.ndim >= 3
    return weight.ndim == 2


def _rank(graph: Graph, value: str) -> int | None:
    known = graph.type_of(value)
    return None if known is None or known.shape is None else len(known.shape)


def _output_channels(layer: Node, weight: np.ndarray) -> int:
    if layer.op_type == "Conv":
        return weight.shape[0]
    if layer.op_type == "ConvTranspose":
        return weight.shape[1] * layer.attribute("group", 1)
    if layer.op_type == "Gemm" and layer.attribute("transB", 0):
        return weight.shape[0]
    return weight.shape[1]


def _per_channel(constant: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """`constant` as one value per channel, when it broadcasts to [1, C, 1, ...] of an
    output of rank `rank` without growing it; else None."""
    if constant.ndim > rank or constant.dtype.kind != FLOAT_KINDS:
        return None
    shape = (1,) * (rank - constant.ndim) + constant.shape
    if any(dim != 1 for axis, dim in enumerate(shape) if axis != 1):
        return None
    if shape[1] not in (1, channels):
        return None
    return np.broadcast_to(constant.reshape(-1).astype(np.float64), (channels,))


def _scaled_layer(
    graph: Graph, layer: Node, scale: np.ndarray | None, shift: np.ndarray
) -> Node | None:
    """`layer` with weight and bias constants that compute layer(x) * scale + shift."""
    weight = graph.constants[layer.input(1)]
    channels = _output_channels(layer, weight)
    if (scale is not None and scale.size not in (1, channels)) or shift.size not in (1, channels):
        return None
    scale_vector = None if scale is None else np.broadcast_to(scale, (channels,))
    shift_vector = np.broadcast_to(shift, (channels,))
    if layer.op_type in ("Conv", "ConvTranspose"):
        bias = _float64_or_zeros(graph.constants.get(layer.input(2)), (channels,))
        if bias.shape != (channels,):
            return None  # an invalid bias: lowering reports it
        new_weight = _scaled_weight(layer, weight, scale_vector)
        new_bias = (bias if scale_vector is None else bias * scale_vector) + shift_vector
        return _with_weights(graph, layer, new_weight, new_bias.astype(np.float32))
    # Gemm, or MatMul, which becomes a Gemm to carry the bias
    addend = _gemm_addend(graph, layer)
    if not _broadcasts(addend.shape, (channels,)):
        return None
    new_weight = _scaled_weight(layer, weight, scale_vector)
    new_bias = (addend if scale_vector is None else addend * scale_vector) + shift_vector
    gemm = _as_gemm(layer)
    return _with_weights(graph, gemm, new_weight, new_bias.astype(np.float32))


def _broadcasts(*shapes: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def _gemm_addend(graph: Graph, layer: Node) -> np.ndarray:
    """beta * C of a Gemm (0 when absent), in float64."""
    bias = graph.constants.get(layer.input(2))
    if layer.op_type == "MatMul" or bias is None:
        return np.zeros(1)
    return layer.attribute("beta", 1.0) * bias.astype(np.float64)


def _as_gemm(layer: Node) -> Node:
    """A Gemm node equal to `layer` whose C will be added with beta = 1."""
    if layer.op_type == "MatMul":
        return replace(layer, op_type="Gemm", attributes=(), sources=layer.source_labels)
    kept = tuple(attr for attr in layer.attributes if attr.name != "beta")
    return replace(layer, attributes=(*kept, helper.make_attribute("beta", 1.0)))


def _scaled_weight(layer: Node, weight: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """The weight with each output channel multiplied by its scale (float64, then f32)."""
    if scale is None:
        return weight
    shape = weight.shape
    if layer.op_type == "Conv":
        factor = scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    elif layer.op_type == "ConvTranspose":
        groups = layer.attribute("group", 1)
        weight = weight.reshape(groups, shape[0] // groups, shape[1], -1)
        factor = scale.reshape(groups, 1, shape[1], 1)
    elif layer.op_type == "Gemm" and layer.attribute("transB", 0):
        factor = scale.reshape(-1, 1)
    else:
        factor = scale.reshape(1, -1)
    return product_float32(weight, factor).reshape(shape)


def product_float32(weight: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """weight * factor computed in float64 and rounded once to float32 (the ufunc casts
    buffer by buffer, so no float64 copy of the whole weight is made)."""
    out = np.empty(np.broadcast_shapes(weight.shape, factor.shape), np.float32)
    np.multiply(weight, factor, out=out, dtype=np.float64, casting="unsafe")
    return out


def _float64_or_zeros(array: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if array is None:
        return np.zeros(shape)
    return array.astype(np.float64)


def _with_weights(graph: Graph, layer: Node, weight: np.ndarray, bias: np.ndarray) -> Node:
    weight_name = layer.input(1)
    if weight is not graph.constants[weight_name]:
        weight_name = graph.fresh_name(f"{layer.name}_folded_weight")
        graph.constants[weight_name] = weight
    bias_name = graph.fresh_name(f"{layer.name}_folded_bias")
    graph.constants[bias_name] = bias
    return replace(layer, inputs=(layer.input(0), weight_name, bias_name))
