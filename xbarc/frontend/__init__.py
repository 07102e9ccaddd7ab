"""ONNX frontend: load, check, infer shapes, fold constants and lower to the graph IR.

    import_onnx(path, hardware, input_shapes) -> Program (hardware, tensors, inputs, ops,
    outputs; no arrays, blocks or phases yet)

Identity and inference-mode Dropout are folded away by rewiring their consumers to their
input (they stay, as digital ops, when their output is a graph output).

Folding sees every input's leading dimension (the batch) as unknown, so nothing that
depends on the batch becomes a constant; the program's types are then inferred at the
compiled shapes, and `batch.fixed_batch_inputs` decides whether the program runs any
batch size or only the compiled one (its inputs then say `batch=fixed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from xbarc import progress
from xbarc.frontend.batch import fixed_batch_inputs
from xbarc.frontend.fold import fold_graph
from xbarc.frontend.load import (
    batch_free,
    build_graph,
    check_layer_weights,
    check_mapped_weights,
    infer_types,
    input_types,
    load_model,
)
from xbarc.frontend.lower import lower_graph
from xbarc.hardware import Hardware
from xbarc.ir.graph import Graph
from xbarc.ir.tile import Program
from xbarc.ir.types import TensorType

__all__ = ["import_onnx"]


def import_onnx(
    path: str | Path,
    hardware: Hardware,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Program:
    """The graph part of a Program for the ONNX model at `path`.

    `input_shapes` fixes input dimensions (name -> dims), e.g. a symbolic batch size.
    Raises XbarcError, naming the file and the node, for anything wrong with the model.
    """
    where = str(path)
    with progress.task("import", total=4, unit="step", estimate=False) as task:
        task.describe("load")
        model = load_model(path)
        inputs = input_types(model, input_shapes or {}, where)
        graph = build_graph(model, batch_free(inputs), where)
        task.update(item="fold")

        def infer(working: Graph) -> dict[str, TensorType]:
            return infer_types(working, model, where)

        fold_graph(graph, infer, where, inputs)
        check_mapped_weights(graph, where)
        task.update(item="shapes")
        graph.inputs = inputs
        graph.types = infer(graph)
        batch = fixed_batch_inputs(graph, infer)
        task.update(item="lower")
        program = lower_graph(graph, hardware, where, infer, batch)
        check_layer_weights(program, where)
        task.update()
    return program
