"""The frontend's working graph: a DAG of ONNX-like nodes that folding rewrites in place.

Op nodes and value nodes alternate in a networkx `DiGraph` (value -> op for every input,
op -> value for every output), so the producer and the consumers of a value are neighbour
lookups. Ties in topological order are broken by insertion position, which keeps the
order of the ONNX file wherever it is valid. Besides the nodes, the graph holds what the
frontend learns about the model: its real inputs and their types, its outputs, the
constants (numpy arrays) and the inferred value types.

Unlike the tile IR this graph is mutable: it only lives while the frontend works.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np
from onnx import AttributeProto, GraphProto, NodeProto, helper

from xbarc.ir.tensors import element_type
from xbarc.ir.types import TensorType

_OP = "op"
_VALUE = "value"
_VALUE_POSITION = -1  # a ready value is visited before any op, so ops keep file order


@dataclass(frozen=True, slots=True)
class Node:
    """One ONNX-like node. `implicit_inputs` are outer values its subgraphs read;
    `sources` are the "name (OpType)" labels of the ONNX nodes it stands for when other
    nodes were folded into it (empty: just itself)."""

    name: str
    op_type: str
    domain: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    attributes: tuple[AttributeProto, ...] = ()
    implicit_inputs: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f'"{self.name}" ({self.op_type})'

    @property
    def source_labels(self) -> tuple[str, ...]:
        return self.sources or (f"{self.name} ({self.op_type})",)

    @property
    def source(self) -> str:
        return " + ".join(self.source_labels)

    @property
    def is_default_domain(self) -> bool:
        return self.domain in ("", "ai.onnx")

    @property
    def has_subgraph(self) -> bool:
        return any(
            attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for attr in self.attributes
        )

    def attribute(self, name: str, default: Any = None) -> Any:
        """The decoded value of attribute `name` (bytes stay bytes), or `default`."""
        for attr in self.attributes:
            if attr.name == name:
                return helper.get_attribute_value(attr)
        return default

    def input(self, index: int) -> str:
        """The name of input `index`, or "" when it is omitted."""
        return self.inputs[index] if index < len(self.inputs) else ""

    def to_proto(self) -> NodeProto:
        proto = helper.make_node(
            self.op_type, list(self.inputs), list(self.outputs), name=self.name, domain=self.domain
        )
        proto.attribute.extend(self.attributes)
        return proto


def node_from_proto(proto: NodeProto, name: str) -> Node:
    """The node of an ONNX NodeProto, renamed `name` (unique names are the caller's job)."""
    return Node(
        name=name,
        op_type=proto.op_type,
        domain=proto.domain,
        inputs=tuple(proto.input),
        outputs=tuple(proto.output),
        attributes=tuple(proto.attribute),
        implicit_inputs=tuple(sorted(_node_outer_references(proto))),
    )


def outer_references(graph: GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (used but not defined inside it)."""
    defined = {v.name for v in graph.input}
    defined |= {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used |= {name for name in node.input if name}
        used |= _node_outer_references(node)
        defined |= set(node.output)
    return used - defined


def _node_outer_references(node: NodeProto) -> set[str]:
    references: set[str] = set()
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            references |= outer_references(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            for graph in attr.graphs:
                references |= outer_references(graph)
    return references


class Graph:
    """A mutable DAG of `Node`s with the model's inputs, outputs, constants and types."""

    def __init__(
        self,
        inputs: dict[str, TensorType],
        outputs: Iterable[str],
        constants: dict[str, np.ndarray],
        opsets: dict[str, int],
    ):
        self.inputs = dict(inputs)
        self.outputs = tuple(outputs)
        self.constants = dict(constants)
        self.opsets = dict(opsets)
        self.types: dict[str, TensorType] = {}
        self._dag = nx.DiGraph()
        self._next_position = 0

    # --- queries ---------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return (_OP, name) in self._dag

    def __len__(self) -> int:
        return sum(1 for kind, _ in self._dag if kind == _OP)

    def node(self, name: str) -> Node:
        return self._dag.nodes[(_OP, name)]["node"]

    def nodes(self) -> list[Node]:
        """All nodes in a topological order (file order wherever that is valid)."""
        order = nx.lexicographical_topological_sort(
            self._dag, key=lambda key: self._dag.nodes[key]["position"]
        )
        return [self._dag.nodes[key]["node"] for key in order if key[0] == _OP]

    def live_nodes(self) -> Iterator[Node]:
        """Nodes in topological order as they are when reached, for loops that edit the
        graph: a node removed meanwhile is skipped, a replaced one is seen as it is now."""
        for node in self.nodes():
            if node.name in self:
                yield self.node(node.name)

    def producer(self, value: str) -> Node | None:
        key = (_VALUE, value)
        if key not in self._dag:
            return None
        for producer in self._dag.predecessors(key):
            return self._dag.nodes[producer]["node"]
        return None

    def consumers(self, value: str) -> list[Node]:
        key = (_VALUE, value)
        if key not in self._dag:
            return []
        return [self._dag.nodes[op]["node"] for op in self._dag.successors(key)]

    def is_used(self, value: str) -> bool:
        return value in self.outputs or bool(self.consumers(value))

    def value_names(self) -> set[str]:
        names = {name for kind, name in self._dag if kind == _VALUE}
        return names | set(self.inputs) | set(self.outputs) | set(self.constants)

    def opset(self, domain: str) -> int:
        if domain in ("", "ai.onnx"):
            return self.opsets.get("", self.opsets.get("ai.onnx", 1))
        return self.opsets.get(domain, 1)

    def type_of(self, value: str) -> TensorType | None:
        """The known type of `value`: from its constant, else from inference."""
        if value in self.constants:
            array = self.constants[value]
            return TensorType(element_type(array), tuple(array.shape))
        return self.types.get(value)

    # --- edits -----------------------------------------------------------------------

    def add(self, node: Node, position: int | None = None) -> None:
        key = (_OP, node.name)
        if key in self._dag:
            raise ValueError(f"node {node.name!r} is already in the graph")
        if position is None:
            position = self._next_position
            self._next_position += 1
        self._dag.add_node(key, node=node, position=position)
        for value in (*node.inputs, *node.implicit_inputs):
            if value:
                self._dag.add_node((_VALUE, value), position=_VALUE_POSITION)
                self._dag.add_edge((_VALUE, value), key)
        for value in node.outputs:
            if value:
                self._dag.add_node((_VALUE, value), position=_VALUE_POSITION)
                self._dag.add_edge(key, (_VALUE, value))

    def remove(self, name: str) -> int:
        """Remove node `name`; returns its position, so a replacement can take it."""
        key = (_OP, name)
        position = self._dag.nodes[key]["position"]
        neighbours = [*self._dag.predecessors(key), *self._dag.successors(key)]
        self._dag.remove_node(key)
        self._dag.remove_nodes_from([v for v in neighbours if self._dag.degree(v) == 0])
        return position

    def replace(self, name: str, node: Node) -> None:
        """Put `node` where node `name` was."""
        self.add(node, self.remove(name))

    def rewire(self, old: str, new: str) -> None:
        """Make every node that reads value `old` read `new` instead."""
        for consumer in self.consumers(old):
            inputs = tuple(new if value == old else value for value in consumer.inputs)
            self.replace(consumer.name, replace(consumer, inputs=inputs))

    def fresh_name(self, base: str) -> str:
        """A value name not used yet: `base`, else `base_1`, `base_2`, ..."""
        taken = self.value_names()
        return unique_name(base, taken)


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_<n>` with the smallest n >= 1 that is not in `taken`."""
    if base not in taken:
        return base
    suffix = 1
    while f"{base}_{suffix}" in taken:
        suffix += 1
    return f"{base}_{suffix}"
