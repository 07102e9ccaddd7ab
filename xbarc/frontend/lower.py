"""Lower the folded working graph to the graph part of a tile-IR `Program`.

Layers whose second operand is a constant go on crossbars (`CrossbarLayer`):

    Conv(x, W[Cout, Cin/g, k...], b)   -> weight[g, Cin/g * prod(k), Cout/g]   (im2col rows)
    ConvTranspose(x, W[Cin, Cout/g, k...], b) -> weight[g, Cin/g, Cout/g * prod(k)] (col2im)
    Gemm(A, B, C)   -> [Transpose(A) if transA] -> weight[1, K, N] = alpha * B, bias beta * C
                       [-> Add(., beta * C) when C is not one value per column]
    MatMul(x, W[K, N]) -> weight[1, K, N]

Padding is always explicit in the result: auto_pad, output_shape and output_padding are
resolved from the static input shape. Every other node becomes a `DigitalOp` carried
verbatim; the constants it reads become program tensors named after their ONNX values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from onnx import AttributeProto, GraphProto, numpy_helper

from xbarc.diagnostics import XbarcError
from xbarc.frontend.control import defined_names, rename_graph, subgraph_graph
from xbarc.frontend.fold import FLOAT_KINDS, InferTypes, fold_graph, product_float32
from xbarc.frontend.load import to_array
from xbarc.frontend.mapping import is_crossbar_layer, not_mapped
from xbarc.hardware import Hardware
from xbarc.ir.graph import Graph, Node, outer_references, unique_name
from xbarc.ir.printer import format_type
from xbarc.ir.tensors import element_type
from xbarc.ir.tile import (
    REGION_NAMES,
    Attribute,
    Const,
    ConvGeometry,
    CrossbarLayer,
    DigitalOp,
    GraphInput,
    Op,
    Operand,
    Program,
    Region,
    Value,
    with_tensors,
)
from xbarc.ir.types import NUMPY_DTYPES, TensorType

Dims = tuple[int | None, ...]
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.]")
_SIMPLE_ATTRIBUTES = {
    AttributeProto.INT: "int",
    AttributeProto.FLOAT: "float",
    AttributeProto.INTS: "ints",
    AttributeProto.FLOATS: "floats",
}


def lower_graph(
    graph: Graph,
    hardware: Hardware,
    where: str,
    infer_types: InferTypes | None = None,
    fixed_batch: frozenset[str] = frozenset(),
) -> Program:
    """The Program (hardware, tensors, inputs, ops, outputs) of a folded graph.
    `infer_types` infers the types of a working graph: the subgraphs of control-flow
    ops are folded with it before they are lowered into regions. The inputs named in
    `fixed_batch` run only the batch size they were compiled for."""
    lowering = _Lowering(graph, where, infer_types)
    for node in graph.nodes():
        lowering.lower(node)
    lowering.keep_constant_outputs()
    program = Program(
        hardware=hardware,
        inputs=tuple(
            GraphInput(name, type_, fixed_batch=name in fixed_batch)
            for name, type_ in graph.inputs.items()
        ),
        ops=tuple(lowering.ops),
        outputs=graph.outputs,
    )
    return with_tensors(program, lowering.arrays)


def safe_tensor_name(name: str) -> str:
    """`name` with every character outside [A-Za-z0-9_.] replaced by `_`, starting with a
    letter or `_`."""
    safe = _UNSAFE_CHARACTERS.sub("_", name)
    if not safe or not (safe[0].isalpha() or safe[0] == "_"):
        safe = f"t_{safe}"
    return safe


class _Lowering:
    """The ops and tensors of the program being built, and the names already taken."""

    def __init__(
        self,
        graph: Graph,
        where: str,
        infer_types: InferTypes | None = None,
        parent: _Lowering | None = None,
    ):
        """`parent`: the lowering of the enclosing graph, when `graph` is a subgraph;
        tensors and names are shared with it (names are unique in the whole program)."""
        self.graph = graph
        self.where = where
        self.infer_types = infer_types
        self.parent = parent
        self.ops: list[Op] = []
        if parent is None:
            self.arrays: dict[str, np.ndarray] = {}
            self.tensor_of_constant: dict[str, str] = {}
            self.value_names = graph.value_names()
            self.op_names = {node.name for node in graph.nodes()}
        else:
            self.arrays = parent.arrays
            self.tensor_of_constant = parent.tensor_of_constant
            self.value_names = parent.value_names
            self.op_names = parent.op_names
            self.value_names |= graph.value_names()
            self.op_names |= {node.name for node in graph.nodes()}

    # --- nodes -----------------------------------------------------------------------

    def lower(self, node: Node) -> None:
        if node.is_default_domain and node.op_type in REGION_NAMES and node.has_subgraph:
            self.ops.append(self.control(node))
        elif not self._is_crossbar_layer(node):
            self.ops.append(self.digital(node))
        elif node.op_type == "Conv":
            self.ops.append(self.conv(node))
        elif node.op_type == "ConvTranspose":
            self.ops.append(self.conv_transpose(node))
        elif node.op_type == "Gemm":
            self.ops.extend(self.gemm(node))
        else:
            self.ops.append(self.matmul(node))

    def _is_crossbar_layer(self, node: Node) -> bool:
        return is_crossbar_layer(self.graph, node)  # the decision and its reasons: mapping.py

    def conv(self, node: Node) -> CrossbarLayer:
        weight = self._conv_weight(node)
        input_shape = self._input_shape(node, weight.ndim)
        groups = node.attribute("group", 1)
        out_channels, group_in_channels = weight.shape[:2]
        kernel = tuple(weight.shape[2:])
        if groups < 1 or out_channels % groups:
            raise self.error(
                node,
                f"the weight has {out_channels} output channels, not a multiple of group {groups}",
            )
        self._check_channels(node, input_shape[1], group_in_channels * groups)
        self._check_kernel_shape(node, kernel)
        bias = self._bias(node, out_channels)
        strides, dilations = self._strides_and_dilations(node, len(kernel))
        pads = self._conv_pads(node, input_shape[2:], kernel, strides, dilations)
        spatial = tuple(
            _conv_output_size(size, k, s, d, pads[i], pads[i + len(kernel)])
            for i, (size, k, s, d) in enumerate(
                zip(input_shape[2:], kernel, strides, dilations, strict=True)
            )
        )
        if any(size is not None and size < 1 for size in spatial):
            raise self.error(
                node,
                f"the kernel {list(kernel)} does not fit the padded input {_show(input_shape)}",
            )
        group_out = out_channels // groups
        matrix = _transposed_groups(weight.reshape(groups, group_out, -1))
        return CrossbarLayer(
            name=node.name,
            kind="conv",
            input=node.input(0),
            output=node.outputs[0],
            output_type=self._output_type(node, (input_shape[0], out_channels, *spatial)),
            weight=self.layer_tensor(node, "weight", matrix),
            bias=None if bias is None else self.layer_tensor(node, "bias", bias),
            groups=groups,
            rows=group_in_channels * math.prod(kernel),
            cols=group_out,
            geometry=ConvGeometry(kernel, strides, pads, dilations),
            source=node.source,
        )

    def conv_transpose(self, node: Node) -> CrossbarLayer:
        weight = self._conv_weight(node)
        input_shape = self._input_shape(node, weight.ndim)
        groups = node.attribute("group", 1)
        in_channels, group_out = weight.shape[:2]
        kernel = tuple(weight.shape[2:])
        if groups < 1 or in_channels % groups:
            raise self.error(
                node,
                f"the weight has {in_channels} input channels, not a multiple of group {groups}",
            )
        self._check_channels(node, input_shape[1], in_channels)
        self._check_kernel_shape(node, kernel)
        out_channels = group_out * groups
        bias = self._bias(node, out_channels)
        strides, dilations = self._strides_and_dilations(node, len(kernel))
        output_padding = self._ints(node, "output_padding", len(kernel), 0)
        pads, output_padding = self._conv_transpose_pads(
            node, input_shape[2:], kernel, strides, dilations, output_padding
        )
        spatial = tuple(
            None
            if size is None
            else s * (size - 1) + extra + (k - 1) * d + 1 - pads[i] - pads[i + len(kernel)]
            for i, (size, k, s, d, extra) in enumerate(
                zip(input_shape[2:], kernel, strides, dilations, output_padding, strict=True)
            )
        )
        if any(size is not None and size < 1 for size in spatial):
            raise self.error(node, f"the pads {list(pads)} leave an empty output")
        group_in = in_channels // groups
        matrix = np.ascontiguousarray(weight.reshape(groups, group_in, -1), dtype=np.float32)
        return CrossbarLayer(
            name=node.name,
            kind="conv_transpose",
            input=node.input(0),
            output=node.outputs[0],
            output_type=self._output_type(node, (input_shape[0], out_channels, *spatial)),
            weight=self.layer_tensor(node, "weight", matrix),
            bias=None if bias is None else self.layer_tensor(node, "bias", bias),
            groups=groups,
            rows=group_in,
            cols=group_out * math.prod(kernel),
            geometry=ConvGeometry(kernel, strides, pads, dilations, output_padding),
            source=node.source,
        )

    def gemm(self, node: Node) -> list[Op]:
        weight = self.graph.constants[node.input(1)]
        if weight.ndim != 2:
            raise self.error(node, f"the weight B has rank {weight.ndim}; Gemm needs rank 2")
        transpose_a = bool(node.attribute("transA", 0))
        alpha, beta = node.attribute("alpha", 1.0), node.attribute("beta", 1.0)
        transpose_b = bool(node.attribute("transB", 0))
        matrix = weight.T if transpose_b else weight
        a_shape = self._input_shape(node, 2)
        rows, inner = (a_shape[1], a_shape[0]) if transpose_a else a_shape
        if inner is not None and inner != matrix.shape[0]:
            raise self.error(
                node,
                f"A has {inner} columns (after transA) but B has {matrix.shape[0]} rows "
                "(after transB)",
            )
        ops: list[Op] = []
        layer_input = node.input(0)
        if transpose_a:
            layer_input = self.fresh_value(f"{node.input(0)}_transposed")
            ops.append(self._transpose(node, node.input(0), layer_input, (rows, inner)))
        addend = node.input(2) if beta != 0 else ""
        bias = self._column_bias(addend, beta, matrix.shape[1])
        output = node.outputs[0]
        output_type = self._output_type(node, (rows, matrix.shape[1]))
        layer_output = (
            output if bias is not None or not addend else self.fresh_value(f"{output}_gemm")
        )
        ops.append(
            CrossbarLayer(
                name=node.name,
                kind="gemm",
                input=layer_input,
                output=layer_output,
                output_type=output_type,
                weight=self.layer_tensor(node, "weight", _gemm_matrix(weight, transpose_b, alpha)),
                bias=None if bias is None else self.layer_tensor(node, "bias", bias),
                groups=1,
                rows=matrix.shape[0],
                cols=matrix.shape[1],
                source=node.source,
            )
        )
        if layer_output != output:
            ops.extend(self._add_after(node, layer_output, addend, beta, output, output_type))
        return ops

    def matmul(self, node: Node) -> CrossbarLayer:
        weight = self.graph.constants[node.input(1)]
        data_type = self.graph.type_of(node.input(0))
        shape: Dims = (None,) if data_type is None or data_type.shape is None else data_type.shape
        if shape and shape[-1] is not None and shape[-1] != weight.shape[0]:
            raise self.error(
                node,
                f"the input has {shape[-1]} features but the weight has {weight.shape[0]} rows",
            )
        out_shape: Dims | None = (*shape[:-1], weight.shape[1])
        if data_type is None or data_type.shape is None:
            out_shape = None  # unknown rank
        return CrossbarLayer(
            name=node.name,
            kind="matmul",
            input=node.input(0),
            output=node.outputs[0],
            output_type=self._output_type(node, out_shape),
            weight=self.layer_tensor(node, "weight", _gemm_matrix(weight, False, 1.0)),
            bias=None,
            groups=1,
            rows=weight.shape[0],
            cols=weight.shape[1],
            source=node.source,
        )

    # --- control flow: subgraphs become regions ---------------------------------------

    def control(self, node: Node) -> DigitalOp:
        """An If, Loop or Scan whose subgraphs are regions, folded and lowered like the
        main graph: their crossbar layers are layers of the program."""
        if self.infer_types is None:
            raise self.error(node, "control flow needs shape inference to lower its subgraphs")
        order = REGION_NAMES[node.op_type]
        subgraphs = [attr for attr in node.attributes if attr.type == AttributeProto.GRAPH]
        unknown = [attr.name for attr in subgraphs if attr.name not in order]
        if unknown:
            raise self.error(node, f"unknown subgraph attribute {unknown[0]!r}")
        subgraphs.sort(key=lambda attr: order.index(attr.name))
        plain = tuple(attr for attr in node.attributes if attr.type != AttributeProto.GRAPH)
        op = self.digital(replace(node, attributes=plain))
        return replace(op, regions=tuple(self.region(node, attr) for attr in subgraphs))

    def region(self, node: Node, attr: AttributeProto) -> Region:
        assert self.infer_types is not None  # checked by `control`
        proto = attr.g
        renames: dict[str, str] = {}
        for name in sorted(defined_names(proto) & self.value_names):
            renames[name] = unique_name(name, self.value_names | set(renames.values()))
        proto = rename_graph(proto, renames)
        self.value_names |= defined_names(proto)
        graph, formal = subgraph_graph(
            proto,
            self.visible_types(),
            self.visible_constants(),
            self.graph.opsets,
            self.op_names,
            f"{node.name}/{attr.name}",
            self.where,
            self._formal_input_types(node),
        )
        if node.op_type == "Loop":
            self._check_carried(node, [graph.inputs[name] for name in formal[2:]])
        fold_graph(graph, self.infer_types, self.where)
        lowering = _Lowering(graph, self.where, self.infer_types, parent=self)
        for inner in graph.nodes():
            lowering.lower(inner)
        lowering.keep_constant_outputs()
        inputs = tuple(
            GraphInput(name, graph.types.get(name) or graph.inputs[name]) for name in formal
        )
        return Region(attr.name, inputs, tuple(lowering.ops), graph.outputs)

    def _check_carried(self, node: Node, formal: list[TensorType]) -> None:
        """A Loop gives its body one initial value per carried input, of the type the
        body takes: a body run on a missing value or one of another element type or
        rank fails only at run time."""
        for value, dtypes, what in (
            (node.input(0), ("i64",), "trip count M"),
            (node.input(1), ("bool",), "condition"),
        ):
            known = self.graph.type_of(value) if value else None
            if known is None:
                continue
            one = known.shape is None or math.prod(d or 1 for d in known.shape) == 1
            if known.dtype not in dtypes or not one or len(known.shape or ()) > 1:
                raise self.error(
                    node,
                    f"its {what} {value!r} is {format_type(known)}, not one {dtypes[0]} value",
                )
        carried = list(node.inputs[2:])
        if len(carried) != len(formal) or "" in carried:
            given = len([value for value in carried if value])
            raise self.error(
                node, f"its body takes {len(formal)} carried value(s) but the Loop gives {given}"
            )
        for value, declared in zip(carried, formal, strict=True):
            actual = self.graph.type_of(value)
            if actual is None or _types_agree(actual, declared):
                continue
            raise self.error(
                node,
                f"the initial value {value!r} is {format_type(actual)} but the body takes "
                f"{format_type(declared)}",
            )

    def _formal_input_types(self, node: Node) -> list[TensorType | None]:
        """What a body's formal inputs are when the model leaves them untyped: a Loop's
        iteration number, condition and its initial carried values; a Scan's states."""
        if node.op_type == "Loop":
            carried = [self.graph.type_of(value) for value in node.inputs[2:]]
            return [TensorType("i64", ()), TensorType("bool", ()), *carried]
        if node.op_type == "Scan":
            states = len(node.inputs) - int(node.attribute("num_scan_inputs", 0))
            return [self.graph.type_of(value) for value in node.inputs[:states]]
        return []

    def visible_types(self) -> dict[str, TensorType]:
        """The known types of the values this graph's ops can read, enclosing ones too."""
        types = self.parent.visible_types() if self.parent else {}
        types.update(self.graph.inputs)
        types.update(self.graph.types)
        return types

    def visible_constants(self) -> dict[str, np.ndarray]:
        constants = self.parent.visible_constants() if self.parent else {}
        constants.update(self.graph.constants)
        return constants

    def digital(self, node: Node) -> DigitalOp:
        return DigitalOp(
            name=node.name,
            op_type=node.op_type,
            domain=node.domain,
            opset=self.graph.opset(node.domain),
            inputs=tuple(self.operand(value) for value in node.inputs),
            outputs=node.outputs,
            output_types=tuple(self.graph.types.get(v) if v else None for v in node.outputs),
            attributes=tuple(self.attribute(node, attr) for attr in node.attributes),
            not_mapped=not_mapped(self.graph, node),
        )

    def keep_constant_outputs(self) -> None:
        """Graph outputs that folded to constants are produced by an Identity of them."""
        for output in dict.fromkeys(self.graph.outputs):
            if output not in self.graph.constants:
                continue
            array = self.graph.constants[output]
            self.ops.append(
                DigitalOp(
                    name=self.fresh_op(f"{output}_constant"),
                    op_type="Identity",
                    domain="",
                    opset=self.graph.opset(""),
                    inputs=(Const(self.constant_tensor(output)),),
                    outputs=(output,),
                    output_types=(TensorType(element_type(array), tuple(array.shape)),),
                )
            )

    # --- operands, attributes and names ----------------------------------------------

    def operand(self, value: str) -> Operand:
        if not value:
            return None
        if value in self.graph.constants:
            return Const(self.constant_tensor(value))
        return Value(value)

    def attribute(self, node: Node, attr: AttributeProto) -> Attribute:
        kind = _SIMPLE_ATTRIBUTES.get(attr.type)
        if kind == "int":
            return Attribute(attr.name, kind, int(attr.i))
        if kind == "float":
            return Attribute(attr.name, kind, float(attr.f))
        if kind == "ints":
            return Attribute(attr.name, kind, tuple(int(v) for v in attr.ints))
        if kind == "floats":
            return Attribute(attr.name, kind, tuple(float(v) for v in attr.floats))
        text = _decoded_strings(attr)
        if text is not None:
            return Attribute(attr.name, *text)
        if attr.type == AttributeProto.TENSOR:
            tensor = self.add_tensor(f"{node.name}.{attr.name}", to_array(attr.t))
            return Attribute(attr.name, "tensor", Const(tensor))
        proto = self._with_outer_constants(attr)
        data = np.frombuffer(proto.SerializeToString(), dtype=np.uint8).copy()
        return Attribute(
            attr.name, "proto", Const(self.add_tensor(f"{node.name}.{attr.name}", data))
        )

    def _with_outer_constants(self, attr: AttributeProto) -> AttributeProto:
        """A copy of a subgraph attribute holding the outer constants its graphs read, so
        that the serialized attribute is self-contained."""
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
        if not any(outer_references(g) & self.graph.constants.keys() for g in graphs):
            return attr
        copy = AttributeProto()
        copy.CopyFrom(attr)
        for graph in [copy.g] if attr.type == AttributeProto.GRAPH else list(copy.graphs):
            _add_initializers(graph, self.graph.constants)
        return copy

    def constant_tensor(self, value: str) -> str:
        """The program tensor holding constant `value` (added on first use)."""
        if value not in self.tensor_of_constant:
            self.tensor_of_constant[value] = self.add_tensor(value, self.graph.constants[value])
        return self.tensor_of_constant[value]

    def layer_tensor(self, node: Node, what: str, array: np.ndarray) -> str:
        """A crossbar layer's weight or bias as a program tensor, refused when it is not
        finite: NaN or infinity in an initializer, or made so by an attribute folded into
        it (Gemm alpha, a BatchNormalization's variance), would compute garbage."""
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise self.error(
                node, f"its {what} has {bad} NaN or infinite value(s) of {np.size(array)}"
            )
        return self.add_tensor(f"{node.name}.{what}", array)

    def add_tensor(self, base: str, array: np.ndarray) -> str:
        name = unique_name(safe_tensor_name(base), set(self.arrays))
        self.arrays[name] = array
        return name

    def fresh_value(self, base: str) -> str:
        name = unique_name(base, self.value_names)
        self.value_names.add(name)
        return name

    def fresh_op(self, base: str) -> str:
        name = unique_name(base, self.op_names)
        self.op_names.add(name)
        return name

    def error(self, node: Node, message: str) -> XbarcError:
        return XbarcError(
            f"node {node.label}: {message}",
            where=self.where,
            hint="the model is invalid; fix or re-export it",
        )

    # --- checks and geometry ---------------------------------------------------------

    def _input_shape(self, node: Node, rank: int) -> Dims:
        """The dims of the node's data input (None where unknown), of rank `rank`."""
        known = self.graph.type_of(node.input(0))
        if known is None or known.shape is None:
            return (None,) * rank
        if len(known.shape) != rank:
            if node.op_type == "Gemm":
                raise self.error(node, f"A has rank {len(known.shape)}; Gemm needs rank 2")
            raise self.error(
                node, f"the weight has rank {rank} but the input has rank {len(known.shape)}"
            )
        return known.shape

    def _conv_weight(self, node: Node) -> np.ndarray:
        weight = self.graph.constants[node.input(1)]
        if weight.ndim < 3:
            raise self.error(
                node, f"the weight has rank {weight.ndim}; a convolution weight has rank 3 or more"
            )
        return weight

    def _check_channels(self, node: Node, actual: int | None, expected: int) -> None:
        if actual is not None and actual != expected:
            raise self.error(
                node, f"the input has {actual} channels but the weight expects {expected}"
            )

    def _check_kernel_shape(self, node: Node, kernel: tuple[int, ...]) -> None:
        declared = node.attribute("kernel_shape")
        if declared is not None and tuple(declared) != kernel:
            raise self.error(
                node, f"kernel_shape {list(declared)} differs from the weight's {list(kernel)}"
            )

    def _bias(self, node: Node, channels: int) -> np.ndarray | None:
        if not node.input(2):
            return None
        bias = self.graph.constants[node.input(2)]
        if bias.shape != (channels,):
            raise self.error(node, f"the bias has shape {list(bias.shape)}; it needs [{channels}]")
        return bias.astype(np.float32)

    def _ints(self, node: Node, name: str, count: int, default: int) -> tuple[int, ...]:
        values = node.attribute(name)
        if values is None:
            return (default,) * count
        if len(values) != count:
            raise self.error(node, f"{name} has {len(values)} values; it needs {count}")
        return tuple(int(v) for v in values)

    def _strides_and_dilations(
        self, node: Node, rank: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        strides = self._ints(node, "strides", rank, 1)
        dilations = self._ints(node, "dilations", rank, 1)
        if min(strides + dilations, default=1) < 1:
            raise self.error(node, "strides and dilations must be at least 1")
        return strides, dilations

    def _auto_pad(self, node: Node) -> str:
        auto_pad = node.attribute("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad not in AUTO_PADS:
            raise self.error(
                node, f"unknown auto_pad {auto_pad!r}; use one of {', '.join(AUTO_PADS)}"
            )
        return auto_pad

    def _static_spatial(self, node: Node, spatial: Dims, why: str) -> tuple[int, ...]:
        if any(size is None for size in spatial):
            raise XbarcError(
                f"node {node.label}: {why} needs the static input shape, which is unknown",
                where=self.where,
                hint="give the model's input shapes with --input-shape NAME=1x3x224x224",
            )
        return tuple(int(size) for size in spatial)  # type: ignore[arg-type]

    def _conv_pads(
        self,
        node: Node,
        spatial: Dims,
        kernel: tuple[int, ...],
        strides: tuple[int, ...],
        dilations: tuple[int, ...],
    ) -> tuple[int, ...]:
        """Explicit pads, begins then ends, of a Conv."""
        auto_pad = self._auto_pad(node)
        rank = len(kernel)
        if auto_pad == "VALID":
            return (0,) * (2 * rank)
        if auto_pad == "NOTSET":
            return self._ints(node, "pads", 2 * rank, 0)
        sizes = self._static_spatial(node, spatial, f"auto_pad {auto_pad}")
        totals = [
            max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True)
        ]
        return _split_pads(totals, extra_at_end=auto_pad == "SAME_UPPER")

    def _conv_transpose_pads(
        self,
        node: Node,
        spatial: Dims,
        kernel: tuple[int, ...],
        strides: tuple[int, ...],
        dilations: tuple[int, ...],
        output_padding: tuple[int, ...],
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Explicit pads (begins then ends) and output padding of a ConvTranspose."""
        auto_pad = self._auto_pad(node)
        rank = len(kernel)
        wanted = node.attribute("output_shape")
        if wanted is None and auto_pad in ("NOTSET", "VALID"):
            pads = self._ints(node, "pads", 2 * rank, 0)
            return (0,) * (2 * rank) if auto_pad == "VALID" else pads, output_padding
        sizes = self._static_spatial(
            node, spatial, "output_shape" if wanted else f"auto_pad {auto_pad}"
        )
        if wanted is None:
            wanted = [size * s for size, s in zip(sizes, strides, strict=True)]
        wanted = list(wanted)[-rank:]  # some exporters give the whole N, C, ... shape
        if len(wanted) != rank:
            raise self.error(node, f"output_shape has {len(wanted)} values; it needs {rank}")
        natural = [
            s * (size - 1) + extra + (k - 1) * d + 1
            for size, k, s, d, extra in zip(
                sizes, kernel, strides, dilations, output_padding, strict=True
            )
        ]
        totals = [full - want for full, want in zip(natural, wanted, strict=True)]
        if node.attribute("output_shape") is not None:
            # an output_shape beyond the full output grows it at the end with zeros, as
            # onnx's reference does: that is output padding
            output_padding = tuple(
                extra + max(-total, 0) for extra, total in zip(output_padding, totals, strict=True)
            )
        # SAME asking for more than the full output gets the full output (as onnxruntime)
        totals = [max(total, 0) for total in totals]
        return _split_pads(totals, extra_at_end=auto_pad == "SAME_UPPER"), output_padding

    def _output_type(self, node: Node, computed: Dims | None) -> TensorType:
        """The layer's output type: inferred dims where known, else the computed ones."""
        inferred = self.graph.types.get(node.outputs[0])
        input_type = self.graph.type_of(node.input(0))
        dtype = inferred.dtype if inferred else input_type.dtype if input_type else "f32"
        if computed is None:
            return TensorType(dtype, None if inferred is None else inferred.shape)
        if inferred is None or inferred.shape is None or len(inferred.shape) != len(computed):
            return TensorType(dtype, computed)
        merged = tuple(
            c if c is not None else i for c, i in zip(computed, inferred.shape, strict=True)
        )
        return TensorType(dtype, merged)

    # --- Gemm helpers ----------------------------------------------------------------

    def _column_bias(self, addend: str, beta: float, columns: int) -> np.ndarray | None:
        """beta * C as one value per column, when C is such a constant; else None."""
        constant = self.graph.constants.get(addend) if addend else None
        if constant is None or constant.dtype.kind != FLOAT_KINDS:
            return None
        per_column = constant.ndim <= 1 or (constant.ndim == 2 and constant.shape[0] == 1)
        if not per_column or constant.size not in (1, columns):
            return None
        return np.broadcast_to(beta * constant.astype(np.float64).reshape(-1), (columns,)).astype(
            np.float32
        )

    def _transpose(self, node: Node, source: str, target: str, dims: Dims) -> DigitalOp:
        known = self.graph.type_of(source)
        return DigitalOp(
            name=self.fresh_op(f"{node.name}_transpose_a"),
            op_type="Transpose",
            domain="",
            opset=self.graph.opset(""),
            inputs=(Value(source),),
            outputs=(target,),
            output_types=(TensorType(known.dtype if known else "f32", dims),),
            attributes=(Attribute("perm", "ints", (1, 0)),),
        )

    def _add_after(
        self,
        node: Node,
        layer_output: str,
        addend: str,
        beta: float,
        output: str,
        type_: TensorType,
    ) -> list[DigitalOp]:
        """Digital ops adding beta * C to the layer's output, for a C that is not a
        per-column constant."""
        ops: list[DigitalOp] = []
        opset = self.graph.opset("")
        constant = self.graph.constants.get(addend)
        term: Operand
        if constant is not None and beta == 1:
            term = Const(self.constant_tensor(addend))
        elif constant is not None:
            scaled = (beta * constant.astype(np.float64)).astype(constant.dtype)
            term = Const(self.add_tensor(f"{addend}_scaled", scaled))
        elif beta == 1:
            term = Value(addend)
        else:
            scaled_name = self.fresh_value(f"{addend}_scaled")
            addend_type = self.graph.type_of(addend)
            dtype = addend_type.dtype if addend_type else "f32"
            beta_tensor = self.add_tensor(
                f"{node.name}.beta", np.array(beta, dtype=_numpy_dtype(dtype))
            )
            ops.append(
                DigitalOp(
                    name=self.fresh_op(f"{node.name}_beta"),
                    op_type="Mul",
                    domain="",
                    opset=opset,
                    inputs=(Value(addend), Const(beta_tensor)),
                    outputs=(scaled_name,),
                    output_types=(addend_type,),
                )
            )
            term = Value(scaled_name)
        ops.append(
            DigitalOp(
                name=self.fresh_op(f"{node.name}_add_c"),
                op_type="Add",
                domain="",
                opset=opset,
                inputs=(Value(layer_output), term),
                outputs=(output,),
                output_types=(type_,),
            )
        )
        return ops


def _conv_output_size(
    size: int | None, kernel: int, stride: int, dilation: int, begin: int, end: int
) -> int | None:
    if size is None:
        return None
    return (size + begin + end - (kernel - 1) * dilation - 1) // stride + 1


def _split_pads(totals: Sequence[int], extra_at_end: bool) -> tuple[int, ...]:
    """Begins then ends of total paddings; an odd unit goes to the end for SAME_UPPER
    (and ConvTranspose's output_shape with SAME_UPPER), to the beginning otherwise."""
    begins = [total // 2 if extra_at_end else total - total // 2 for total in totals]
    ends = [total - begin for total, begin in zip(totals, begins, strict=True)]
    return (*begins, *ends)


def _transposed_groups(weights: np.ndarray) -> np.ndarray:
    """[g, n, k] -> contiguous float32 [g, k, n], copied in cache-sized tiles (a plain
    transpose copy of a large matrix is several times slower)."""
    groups, rows, cols = weights.shape
    out = np.empty((groups, cols, rows), dtype=np.float32)
    tile = 128
    for row in range(0, rows, tile):
        for col in range(0, cols, tile):
            out[:, col : col + tile, row : row + tile] = weights[
                :, row : row + tile, col : col + tile
            ].transpose(0, 2, 1)
    return out


def _gemm_matrix(weight: np.ndarray, transpose: bool, alpha: float) -> np.ndarray:
    """alpha * (weight.T if transpose else weight) as contiguous float32 [1, K, N]; the
    product is taken in float64 before rounding."""
    if alpha != 1:
        weight = product_float32(weight, np.array(alpha))
    if transpose:
        return _transposed_groups(weight[None])
    return np.ascontiguousarray(weight[None], dtype=np.float32)


def _decoded_strings(attr: AttributeProto) -> tuple[str, str | tuple[str, ...]] | None:
    """("string", text) or ("strings", texts) when the attribute holds UTF-8 text."""
    try:
        if attr.type == AttributeProto.STRING:
            return "string", attr.s.decode("utf-8")
        if attr.type == AttributeProto.STRINGS:
            return "strings", tuple(s.decode("utf-8") for s in attr.strings)
    except UnicodeDecodeError:
        return None  # binary bytes travel as a serialized proto
    return None


def _add_initializers(graph: GraphProto, constants: dict[str, np.ndarray]) -> None:
    for name in sorted(outer_references(graph) & constants.keys()):
        graph.initializer.append(numpy_helper.from_array(np.asarray(constants[name]), name))


def _numpy_dtype(dtype: str) -> np.dtype:
    return NUMPY_DTYPES.get(dtype, np.dtype(np.float32))


def _show(dims: Dims) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _types_agree(actual: TensorType, declared: TensorType) -> bool:
    """Same element type, and same rank and dims where both are known."""
    if actual.dtype != declared.dtype:
        return False
    if actual.shape is None or declared.shape is None:
        return True
    if len(actual.shape) != len(declared.shape):
        return False
    return all(
        a is None or d is None or a == d for a, d in zip(actual.shape, declared.shape, strict=True)
    )
