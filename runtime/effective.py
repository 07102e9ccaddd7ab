"""The ideal chip as one ONNX model, run by onnxruntime.

With every non-ideality switched off, a crossbar read is linear: the partial sums a layer
accumulates over its blocks, slices and phases add up to one matrix product with the
*effective* weights, the cells the phases programmed times their significance and scale,
at the rows and columns each block's gather tables name. The executor reads those weights
back from the programmed tiles; here each crossbar layer becomes the ONNX op that multiplies
by them (Conv, ConvTranspose, MatMul, plus the bias), the digital ops stay as they are, and
onnxruntime runs the whole graph with its fused, vectorized kernels. A mapping bug (a block
on the wrong rows, a slice with the wrong significance, a phase that never writes a tile)
changes the effective weights, so it still shows up as a wrong answer.

Tensor names: graph values keep their program names (so feeds and outputs match), program
constants become initializers named `const:<name>`, layer weights `weight:<layer>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from onnx import ModelProto, TensorProto, ValueInfoProto, helper, numpy_helper

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import CrossbarLayer, DigitalOp, Program, Value, all_ops
from xbarc.ir.types import ONNX_DTYPES, TensorType
from xbarc.runtime.digital import DEFAULT_DOMAINS, attribute_proto, first_line
from xbarc.runtime.kernels import thread_count

# The opset of the crossbar layers' ops when no digital op fixes one: Conv, ConvTranspose
# and MatMul mean the same from opset 11 to the latest.
_LAYER_OPSET = 17
_MIN_IR_VERSION = 8


def effective_model(
    program: Program, weights: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
) -> ModelProto:
    """The program as an ONNX model: `weights[layer]` (float32 [groups, rows, cols], the
    dequantized effective matrix of each crossbar layer) in place of the crossbar layers.
    `outputs` defaults to the program's."""
    store = program.store
    initializers: dict[str, TensorProto] = {}

    def constant(name: str) -> str:
        key = f"const:{name}"
        if key not in initializers:
            initializers[key] = numpy_helper.from_array(np.asarray(store[name]), key)
        return key

    types = program.value_types()

    def node_list(ops) -> list:
        """The ONNX nodes of `ops`; a control-flow op's regions become its subgraphs."""
        nodes = []
        for op in ops:
            if isinstance(op, CrossbarLayer):
                weight_name = f"weight:{op.name}"
                initializers[weight_name] = numpy_helper.from_array(
                    layer_weight(op, weights[op.name]), weight_name
                )
                bias = constant(op.bias) if op.bias is not None else None
                nodes.extend(layer_nodes(op, weight_name, bias))
                continue
            inputs = []
            for operand in op.inputs:
                if operand is None:
                    inputs.append("")  # an omitted optional input
                elif isinstance(operand, Value):
                    inputs.append(operand.name)
                else:
                    inputs.append(constant(operand.name))
            node = helper.make_node(
                op.op_type,
                inputs=_trimmed(inputs),
                outputs=_trimmed(list(op.outputs)),
                name=op.name,
                domain=op.domain,
            )
            node.attribute.extend(
                attribute_proto(a, lambda name: store[name]) for a in op.attributes
            )
            for region in op.regions:
                subgraph = helper.make_graph(
                    node_list(region.ops),
                    region.name,
                    [_region_input(graph_input) for graph_input in region.inputs],
                    [_output(name, types) for name in region.outputs],
                )
                node.attribute.append(helper.make_attribute(region.name, subgraph))
            nodes.append(node)
        return nodes

    nodes = node_list(program.ops)
    graph = helper.make_graph(
        nodes,
        "xbarc_ideal_chip",
        [
            helper.make_tensor_value_info(
                graph_input.name, ONNX_DTYPES[graph_input.type.dtype], _any_batch(graph_input)
            )
            for graph_input in program.inputs
        ],
        [_output(name, types) for name in (outputs or program.outputs)],
        initializer=list(initializers.values()),
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in _opsets(program).items()]
    ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), _MIN_IR_VERSION)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def layer_weight(layer: CrossbarLayer, matrix: np.ndarray) -> np.ndarray:
    """The ONNX weight tensor of a layer from its [groups, rows, cols] matrix."""
    groups, rows, cols = matrix.shape
    if layer.kind == "conv":
        assert layer.geometry is not None
        kernel = layer.geometry.kernel
        # rows are (input channel in group, taps), cols the group's output channels
        per_channel = rows // int(np.prod(kernel))
        return np.ascontiguousarray(
            matrix.transpose(0, 2, 1).reshape(groups * cols, per_channel, *kernel)
        )
    if layer.kind == "conv_transpose":
        assert layer.geometry is not None
        kernel = layer.geometry.kernel
        # rows are the group's input channels, cols (output channel in group, taps)
        return matrix.reshape(groups * rows, cols // int(np.prod(kernel)), *kernel)
    return matrix[0]  # Gemm / MatMul: [K, N]


def layer_nodes(layer: CrossbarLayer, weight: str, bias: str | None) -> list:
    """The ONNX nodes computing a crossbar layer with the given weight initializer."""
    geometry = layer.geometry
    if layer.kind in ("conv", "conv_transpose"):
        assert geometry is not None
        attributes: dict[str, Any] = {
            "kernel_shape": list(geometry.kernel),
            "strides": list(geometry.strides),
            "pads": list(geometry.pads),
            "dilations": list(geometry.dilations),
            "group": layer.groups,
        }
        if layer.kind == "conv_transpose":
            rank = len(geometry.kernel)
            attributes["output_padding"] = list(geometry.output_padding or (0,) * rank)
        op_type = "Conv" if layer.kind == "conv" else "ConvTranspose"
        inputs = [layer.input, weight] + ([bias] if bias else [])
        return [helper.make_node(op_type, inputs, [layer.output], name=layer.name, **attributes)]
    if bias is None:
        return [helper.make_node("MatMul", [layer.input, weight], [layer.output], name=layer.name)]
    product = f"product:{layer.name}"
    return [
        helper.make_node("MatMul", [layer.input, weight], [product], name=layer.name),
        helper.make_node("Add", [product, bias], [layer.output], name=f"{layer.name}:bias"),
    ]


def _output(name: str, types: Mapping[str, TensorType]) -> ValueInfoProto:
    """A graph output with its element type and rank if known (dims left open: the
    batch may differ from the model's)."""
    value_type = types.get(name)
    if value_type is None or value_type.shape is None:
        return ValueInfoProto(name=name)
    rank = len(value_type.shape)
    return helper.make_tensor_value_info(name, ONNX_DTYPES[value_type.dtype], [None] * rank)


def _region_input(graph_input) -> ValueInfoProto:
    """A region's formal input: its element type and rank (dims may change per iteration)."""
    shape = graph_input.type.shape
    dims = None if shape is None else [None] * len(shape)
    return helper.make_tensor_value_info(
        graph_input.name, ONNX_DTYPES[graph_input.type.dtype], dims
    )


def _any_batch(graph_input) -> list | None:
    """An input's dims with the first left open: sessions take any batch size."""
    shape = graph_input.type.shape
    return None if shape is None else ["batch", *shape[1:]] if shape else []


def _trimmed(names: list[str]) -> list[str]:
    """Names with trailing omitted ("") entries dropped, as ONNX writes optional slots."""
    while names and not names[-1]:
        names.pop()
    return names


def _opsets(program: Program) -> dict[str, int]:
    """One opset per domain: the digital ops' (they come from one model, so they agree)."""
    opsets: dict[str, int] = {}
    for op in all_ops(program.ops):
        if not isinstance(op, DigitalOp):
            continue
        domain = "" if op.domain in DEFAULT_DOMAINS else op.domain
        if opsets.setdefault(domain, op.opset) != op.opset:
            raise XbarcError(
                f'op "{op.name}" ({op.op_type}) has opset {op.opset} of domain '
                f'"{domain or "ai.onnx"}" where other ops have {opsets[domain]}',
                hint="the ideal profile runs the graph as one model: use one opset per domain",
            )
    opsets.setdefault("", _LAYER_OPSET)
    return opsets


class IdealGraph:
    """An onnxruntime session over the effective model of a programmed chip."""

    def __init__(self, program: Program, weights: Mapping[str, np.ndarray]):
        self.program = program
        self.weights = weights
        self._sessions: dict[tuple[str, ...], Any] = {}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        session = self._session(tuple(outputs))
        try:
            return session.run(list(outputs), dict(feeds))
        except Exception as error:  # onnxruntime raises its own exception types
            raise XbarcError(
                f"onnxruntime failed to run the ideal chip graph: {first_line(error)}",
                hint="check the inputs' names, shapes and dtypes against the program's",
            ) from error

    def _session(self, outputs: tuple[str, ...]) -> Any:
        session = self._sessions.get(outputs)
        if session is None:
            import onnxruntime  # imported on first use: it is slow to load

            model = effective_model(self.program, self.weights, outputs)
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = thread_count()  # XBARC_THREADS
            try:
                session = onnxruntime.InferenceSession(
                    model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                )
            except Exception as error:
                raise XbarcError(
                    f"onnxruntime rejects the ideal chip graph: {first_line(error)}",
                    hint="run the program with --noise quant, or report the model",
                ) from error
            self._sessions[outputs] = session
        return session


class IdealLayers:
    """Crossbar layers one at a time, each an onnxruntime model of its effective weights:
    the ideal profile of programs whose control flow runs on the host."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        self.weights = weights
        self._sessions: dict[str, Any] = {}

    def run(self, layer: CrossbarLayer, store, x: np.ndarray) -> np.ndarray:
        session = self._sessions.get(layer.name)
        if session is None:
            session = self._sessions[layer.name] = self._session(layer, store, x.ndim)
        try:
            (result,) = session.run(None, {"x": np.asarray(x, dtype=np.float32)})
        except Exception as error:  # onnxruntime raises its own exception types
            raise XbarcError(
                f"layer @{layer.name} failed on an input of shape {list(x.shape)}: "
                f"{first_line(error)}",
                hint="check the inputs' shapes against the program's",
            ) from error
        return result

    def _session(self, layer: CrossbarLayer, store, rank: int) -> Any:
        import onnxruntime  # imported on first use: it is slow to load

        initializers = [numpy_helper.from_array(layer_weight(layer, self.weights[layer.name]), "w")]
        if layer.bias is not None:
            initializers.append(numpy_helper.from_array(np.asarray(store[layer.bias]), "b"))
        one = replace(layer, input="x", output="y")
        graph = helper.make_graph(
            layer_nodes(one, "w", "b" if layer.bias is not None else None),
            "xbarc_ideal_layer",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None] * rank)],
            [ValueInfoProto(name="y")],
            initializer=initializers,
        )
        opsets = [helper.make_opsetid("", _LAYER_OPSET)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=_MIN_IR_VERSION)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        return onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
