"""Control flow in the frontend: inline `If`s whose condition is known, and turn the
subgraphs of the others into working graphs of their own.

    If(c = constant) { then_branch } { else_branch } -> the taken branch's nodes

The taken branch's nodes join the enclosing graph under unique node names
("<If name>/<node name>"); values the branch defines keep their names unless the
enclosing graph already uses them (then they get `_1`, `_2`... suffixes), its initializers
become constants, and each If output is the branch output it stands for (through an
Identity when the branch returns an enclosing value, a constant or one value twice).

`subgraph_graph` builds the working graph of an If branch or a Loop/Scan body that stays:
its formal inputs, the enclosing values it reads as typed inputs (so shape inference and
folding see them), its own initializers and the enclosing constants it reads. Lowering
folds and lowers it like the main graph, into a `Region` of the op.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from onnx import AttributeProto, GraphProto, NodeProto, helper

from xbarc.diagnostics import XbarcError
from xbarc.frontend.load import tensor_type, to_array
from xbarc.ir.graph import Graph, Node, node_from_proto, outer_references, unique_name
from xbarc.ir.types import TensorType

BRANCHES = {True: "then_branch", False: "else_branch"}


# --- inlining Ifs with a known condition ------------------------------------------------


def inline_constant_ifs(graph: Graph, where: str) -> bool:
    """Replace every `If` whose condition is a constant by its taken branch; True if any."""
    changed = False
    for node in graph.live_nodes():
        if node.op_type != "If" or not node.is_default_domain:
            continue
        condition = graph.constants.get(node.input(0))
        if condition is None:
            continue
        if condition.size != 1:
            raise XbarcError(
                f"node {node.label}: the condition has {condition.size} elements, not one",
                where=where,
                hint="the model is invalid; an If condition is a single boolean",
            )
        branch = node.attribute(BRANCHES[bool(condition.reshape(-1)[0])])
        _inline(graph, node, branch)
        changed = True
    return changed


def _inline(graph: Graph, node: Node, branch: GraphProto) -> None:
    taken = graph.value_names()
    defined = defined_names(branch)
    produced = {name for proto in branch.node for name in proto.output if name}
    outputs = [output.name for output in branch.output]
    renames: dict[str, str] = {}
    identities: list[tuple[str, str]] = []  # (branch value, If output)
    for branch_output, if_output in zip(outputs, node.outputs, strict=True):
        if not if_output:
            continue
        if branch_output in produced and branch_output not in renames:
            renames[branch_output] = if_output
        else:
            identities.append((branch_output, if_output))
    used = taken | set(renames.values())
    for name in sorted(defined - renames.keys()):
        if name in used:
            renames[name] = unique_name(name, used)
        used.add(renames.get(name, name))
    graph.remove(node.name)
    for tensor in branch.initializer:
        graph.constants[renames.get(tensor.name, tensor.name)] = to_array(tensor)
    node_names = {existing.name for existing in graph.nodes()}
    protos = list(branch.node) + [
        helper.make_node("Identity", [source], [target], name=f"{target}_identity")
        for source, target in identities
    ]
    for index, proto in enumerate(protos):
        renamed = rename_node(proto, renames)
        name = unique_name(f"{node.name}/{proto.name or f'{proto.op_type}_{index}'}", node_names)
        node_names.add(name)
        graph.add(node_from_proto(renamed, name))


def defined_names(graph: GraphProto) -> set[str]:
    """The values a (sub)graph defines at its own level: formal inputs, initializers and
    node outputs."""
    names = {value.name for value in graph.input}
    names |= {tensor.name for tensor in graph.initializer}
    names |= {tensor.values.name for tensor in graph.sparse_initializer}
    names |= {name for node in graph.node for name in node.output if name}
    return names


def rename_node(proto: NodeProto, renames: Mapping[str, str]) -> NodeProto:
    """A copy of `proto` reading and writing the renamed values, in its subgraphs too."""
    copy = NodeProto()
    copy.CopyFrom(proto)
    if renames:
        _rename_in_node(copy, renames)
    return copy


def rename_graph(graph: GraphProto, renames: Mapping[str, str]) -> GraphProto:
    """A copy of `graph` with values renamed everywhere (no name shadows another in
    ONNX, so a name means the same value in every nested subgraph)."""
    copy = GraphProto()
    copy.CopyFrom(graph)
    if renames:
        _rename_in_graph(copy, renames)
    return copy


def _rename_in_graph(graph: GraphProto, renames: Mapping[str, str]) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    for tensor in graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for node in graph.node:
        _rename_in_node(node, renames)


def _rename_in_node(node: NodeProto, renames: Mapping[str, str]) -> None:
    for index, name in enumerate(node.input):
        node.input[index] = renames.get(name, name)
    for index, name in enumerate(node.output):
        node.output[index] = renames.get(name, name)
    for attribute in node.attribute:
        if attribute.type == AttributeProto.GRAPH:
            _rename_in_graph(attribute.g, renames)
        elif attribute.type == AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                _rename_in_graph(graph, renames)


# --- subgraphs that stay: their own working graphs ----------------------------------------


def subgraph_graph(
    proto: GraphProto,
    outer_types: Mapping[str, TensorType],
    outer_constants: Mapping[str, np.ndarray],
    opsets: dict[str, int],
    taken_nodes: set[str],
    prefix: str,
    where: str,
    input_types: list[TensorType | None] | None = None,
) -> tuple[Graph, list[str]]:
    """The working graph of subgraph `proto` and the names of its formal inputs.

    Its inputs are the formal inputs, then the enclosing values it reads (typed from
    `outer_types`, so that shape inference inside it knows them); its constants are its
    own initializers and the enclosing constants it reads. Node names are made unique
    against `taken_nodes` (which they join), prefixed with `prefix` when they have none.
    `input_types` stand in for formal inputs declared without a type (a Loop body's
    carried values take the types of the Loop's initial values)."""
    formal = {}
    fallback = list(input_types or [])
    for index, value in enumerate(proto.input):
        declared = tensor_type(value.type)
        if value.type.WhichOneof("value") is None and index < len(fallback):
            declared = fallback[index]
        if declared is None:
            raise XbarcError(
                f"subgraph input {value.name!r} of {prefix} is not a tensor",
                where=where,
                hint="xbarc runs control flow over tensors only (no sequences or maps)",
            )
        formal[value.name] = declared
    outer = outer_references(proto)
    constants = {name: outer_constants[name] for name in outer if name in outer_constants}
    inputs = dict(formal)
    for name in sorted(outer - constants.keys()):
        known = outer_types.get(name)
        inputs[name] = known if known is not None else TensorType("f32", None)
    for tensor in proto.initializer:
        constants[tensor.name] = to_array(tensor)
    graph = Graph(inputs, (output.name for output in proto.output), constants, opsets)
    for index, node in enumerate(proto.node):
        name = unique_name(node.name or f"{prefix}/{node.op_type}_{index}", taken_nodes)
        taken_nodes.add(name)
        graph.add(node_from_proto(node, name))
    return graph, list(formal)
