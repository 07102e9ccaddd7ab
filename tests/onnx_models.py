"""Test helpers: tiny ONNX models from ONNX text, onnxruntime runs, and an independent
numpy reference of crossbar layers (im2col / col2im) and of whole graph-part programs.

Nothing here calls xbarc's frontend code: the references only read the `Program` data.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime
from onnx import AttributeProto, ModelProto, TensorProto, helper, numpy_helper

from xbarc.ir.tile import Const, CrossbarLayer, DigitalOp, Program, Value
from xbarc.ir.types import NUMPY_DTYPES

ORT_MAX_IR_VERSION = 10
HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


# --- building and running ONNX models --------------------------------------------------


def parse(text: str, initializers: dict[str, np.ndarray] | None = None, **names: str) -> ModelProto:
    """A model from ONNX text (HEADER prepended when the text has none), with extra
    initializers; outputs written without a shape (`float y`) get the inferred one;
    `names` renames nodes by their first output (output=name)."""
    if not text.lstrip().startswith("<"):
        text = f"{HEADER}\n{text}"
    model = onnx.parser.parse_model(text)
    for name, array in (initializers or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    for node in model.graph.node:
        node.name = names.get(node.output[0], node.name)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    found = {value.name: value for value in inferred.graph.output}
    for output in model.graph.output:
        if not output.type.tensor_type.shape.dim and output.name in found:
            output.CopyFrom(found[output.name])
    return model


def save(model: ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = Path(folder) / name
    onnx.save(model, path)
    return path


def run_onnxruntime(model: ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    copy = ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = min(copy.ir_version, ORT_MAX_IR_VERSION)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        copy.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- numpy reference of crossbar layers ------------------------------------------------


def make_model(nodes, inputs, outputs, initializers, opset=17) -> ModelProto:
    """A float model of `nodes`: inputs (name, shape), outputs by name (shapes inferred),
    initializers by name."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def tanh_loop_model(weight: np.ndarray, trips: int = 3) -> ModelProto:
    """h_{k+1} = Tanh(h_k @ weight + x) for `trips` iterations of a Loop, every h_k a scan
    output: inputs x and h0 of shape [2, width], outputs h_last and hs."""
    width = weight.shape[0]
    state = [2, width]
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h", "w"], ["hw"]),
            helper.make_node("Add", ["hw", "x"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_next"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Identity", ["h_next"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, state),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, state),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, state),
        ],
    )
    loop = helper.make_node("Loop", ["trips", "", "h0"], ["h_last", "hs"], body=body)
    initializers = {"w": weight, "trips": np.int64(trips)}
    return make_model([loop], [("x", state), ("h0", state)], ["h_last", "hs"], initializers)


def im2col(
    x: np.ndarray,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Patches [N, positions, C * prod(kernel)] in channel-major (c, k0, k1, ...) order,
    and the output spatial shape."""
    rank = len(kernel)
    padding = [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)]
    padded = np.pad(x, padding)
    out_shape = tuple(
        (padded.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
        for i in range(rank)
    )
    patches = padded
    for i in range(rank):  # axis 2 + 2i: replace a spatial axis by (kernel, output)
        index = (
            np.arange(kernel[i])[:, None] * dilations[i]
            + np.arange(out_shape[i])[None, :] * strides[i]
        )
        axis = 2 + 2 * i
        patches = np.take(patches, index.reshape(-1), axis=axis)
        shape = patches.shape
        patches = patches.reshape(shape[:axis] + (kernel[i], out_shape[i]) + shape[axis + 1 :])
    n, channels = x.shape[:2]
    outputs = [3 + 2 * i for i in range(rank)]
    kernels = [2 + 2 * i for i in range(rank)]
    patches = patches.transpose([0, *outputs, 1, *kernels])
    return patches.reshape(n, math.prod(out_shape), channels * math.prod(kernel)), out_shape


def crossbar_conv(x: np.ndarray, layer: CrossbarLayer, store) -> np.ndarray:
    weight, geometry = store[layer.weight], layer.geometry
    per_group = x.shape[1] // layer.groups
    outputs = []
    for g in range(layer.groups):
        part = x[:, g * per_group : (g + 1) * per_group]
        cols, out_shape = im2col(
            part, geometry.kernel, geometry.strides, geometry.pads, geometry.dilations
        )
        outputs.append(cols.astype(np.float64) @ weight[g])
    y = np.concatenate(outputs, axis=2)  # [N, positions, Cout]
    y = y.transpose(0, 2, 1).reshape(x.shape[0], -1, *out_shape)
    return _plus_bias(y, layer, store)


def crossbar_conv_transpose(x: np.ndarray, layer: CrossbarLayer, store) -> np.ndarray:
    weight, geometry = store[layer.weight], layer.geometry
    kernel, strides, dilations = geometry.kernel, geometry.strides, geometry.dilations
    rank = len(kernel)
    spatial = x.shape[2:]
    per_group = x.shape[1] // layer.groups
    group_out = layer.cols // math.prod(kernel)
    full = [(spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(rank)]
    out = [
        full[i] + geometry.output_padding[i] - geometry.pads[i] - geometry.pads[i + rank]
        for i in range(rank)
    ]
    canvas_shape = [max(full[i], geometry.pads[i] + out[i]) for i in range(rank)]
    outputs = []
    for g in range(layer.groups):
        part = x[:, g * per_group : (g + 1) * per_group].astype(np.float64)
        rows = part.reshape(x.shape[0], per_group, -1).transpose(0, 2, 1)  # [N, P, Cin/g]
        cols = (rows @ weight[g]).reshape(x.shape[0], *spatial, group_out, *kernel)
        canvas = np.zeros((x.shape[0], group_out, *canvas_shape))
        for offsets in itertools.product(*(range(k) for k in kernel)):
            target = tuple(
                slice(
                    offsets[i] * dilations[i],
                    offsets[i] * dilations[i] + (spatial[i] - 1) * strides[i] + 1,
                    strides[i],
                )
                for i in range(rank)
            )
            contribution = cols[(Ellipsis, *offsets)]  # [N, *spatial, Cout/g]
            canvas[(slice(None), slice(None), *target)] += np.moveaxis(contribution, -1, 1)
        crop = tuple(slice(geometry.pads[i], geometry.pads[i] + out[i]) for i in range(rank))
        outputs.append(canvas[(slice(None), slice(None), *crop)])
    return _plus_bias(np.concatenate(outputs, axis=1), layer, store)


def crossbar_matmul(x: np.ndarray, layer: CrossbarLayer, store) -> np.ndarray:
    y = x.astype(np.float64) @ store[layer.weight][0]
    if layer.bias is not None:
        y = y + store[layer.bias]
    return y


def _plus_bias(y: np.ndarray, layer: CrossbarLayer, store) -> np.ndarray:
    if layer.bias is None:
        return y
    return y + store[layer.bias].reshape((1, -1) + (1,) * (y.ndim - 2))


LAYER_REFERENCES = {
    "conv": crossbar_conv,
    "conv_transpose": crossbar_conv_transpose,
    "gemm": crossbar_matmul,
    "matmul": crossbar_matmul,
}


# --- a reference interpreter of graph-part programs ------------------------------------

_ATTRIBUTE_TYPES = {
    "int": AttributeProto.INT,
    "float": AttributeProto.FLOAT,
    "string": AttributeProto.STRING,
    "ints": AttributeProto.INTS,
    "floats": AttributeProto.FLOATS,
    "strings": AttributeProto.STRINGS,
}


def digital_node(op: DigitalOp, store) -> onnx.NodeProto:
    """The ONNX node a digital op carries; constant operands are named `@tensor`."""
    inputs = [
        ""
        if operand is None
        else ("@" + operand.name if isinstance(operand, Const) else operand.name)
        for operand in op.inputs
    ]
    node = helper.make_node(op.op_type, inputs, list(op.outputs), name=op.name, domain=op.domain)
    for attribute in op.attributes:
        if attribute.kind == "tensor":
            tensor = numpy_helper.from_array(store[attribute.value.name])
            node.attribute.append(helper.make_attribute(attribute.name, tensor))
        elif attribute.kind == "proto":
            node.attribute.append(AttributeProto.FromString(store[attribute.value.name].tobytes()))
        else:
            kind = _ATTRIBUTE_TYPES[attribute.kind]
            value = list(attribute.value) if isinstance(attribute.value, tuple) else attribute.value
            node.attribute.append(helper.make_attribute(attribute.name, value, attr_type=kind))
    return node


def _operand_name(operand: Value | Const | None) -> str:
    if operand is None:
        return ""
    return f"@{operand.name}" if isinstance(operand, Const) else operand.name


def run_program(program: Program, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the graph part of `program`: layers with the numpy references above, digital
    ops with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    values = dict(feeds)
    store = program.store
    for op in program.ops:
        if isinstance(op, CrossbarLayer):
            result = LAYER_REFERENCES[op.kind](values[op.input], op, store)
            values[op.output] = result.astype(NUMPY_DTYPES[op.output_type.dtype])
            continue
        node = digital_node(op, store)
        op_feeds = {}
        for operand, name in zip(op.inputs, node.input, strict=True):
            if isinstance(operand, Const):
                op_feeds[name] = store[operand.name]
            elif isinstance(operand, Value):
                op_feeds[name] = values[operand.name]
        evaluator = ReferenceEvaluator(node, opsets={op.domain: op.opset})
        for name, result in zip(op.outputs, evaluator.run(None, op_feeds), strict=True):
            if name:
                values[name] = result
    return [values[name] for name in program.outputs]


# --- counting weights independently ----------------------------------------------------


def weight_bearing_counts(model: ModelProto) -> list[int]:
    """The number of weights of every Conv/ConvTranspose/Gemm/MatMul whose weight is an
    initializer, a ConstantOfShape of one, or a reshaped such constant, read straight
    from the ONNX graph."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    sizes = {name: array.size for name, array in initializers.items()}
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in initializers:
            sizes[node.output[0]] = math.prod(int(d) for d in initializers[node.input[0]])
        elif node.op_type in ("Reshape", "Transpose", "Identity") and node.input[0] in sizes:
            sizes[node.output[0]] = sizes[node.input[0]]
    layers = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    return [
        sizes[node.input[1]]
        for node in model.graph.node
        if node.op_type in layers and node.input[1] in sizes
    ]
