"""Whether a compiled program runs any batch size, or only the one it was compiled for.

Folding runs with every input's leading dimension (its batch) unknown, so no constant of
the program depends on the batch: `Reshape(x, Concat(Shape(x)[0:1], -1))` stays a
computation rather than the constant [1, -1]. A model can still fix its batch itself
(an exporter's constant Reshape target [1, -1], a Squeeze of axis 0, inputs whose leading
dimensions differ). So the folded graph's shapes are inferred again at a second batch
size: the program runs any batch when, there,

- every crossbar layer candidate (Conv, ConvTranspose, Gemm, MatMul) reads an input of
  the same width: the channels and image size of a convolution, the features of a
  MatMul or Gemm (a read never gets another width), and
- every graph output has the batch on one axis, the leading one or another (an RNN's
  [time, batch, classes]), and the same size on every other axis (each image's answer in
  its own slot).

Otherwise its batched inputs are marked `batch=fixed` and the runtime refuses another
batch size with a one-line error instead of computing a wrong shape.
"""

from __future__ import annotations

from collections.abc import Callable

from xbarc.diagnostics import XbarcError
from xbarc.frontend.fold import LAYER_OPS
from xbarc.ir.graph import Graph, Node
from xbarc.ir.types import TensorType

InferTypes = Callable[[Graph], dict[str, TensorType]]
BATCH_STEP = 2  # the second batch size is the compiled one plus this


def fixed_batch_inputs(graph: Graph, infer_types: InferTypes) -> frozenset[str]:
    """The inputs whose batch the program cannot change: none, or every batched input
    (rank 1 or more). `graph.types` holds the types at the compiled shapes."""
    batched = {name: t for name, t in graph.inputs.items() if t.shape}
    if not batched:
        return frozenset()
    batches = {t.shape[0] for t in batched.values()}  # type: ignore[index]
    if len(batches) != 1:
        return frozenset(batched)  # inputs of different leading sizes: no common batch
    (batch,) = batches
    assert batch is not None  # input shapes are static
    other = batch + BATCH_STEP
    compiled = graph.types
    saved = graph.inputs
    graph.inputs = {name: _with_batch(t, other) if t.shape else t for name, t in saved.items()}
    try:
        resized = infer_types(graph)
    except XbarcError:
        return frozenset(batched)
    finally:
        graph.inputs = saved
    if _layers_keep_width(graph, compiled, resized) and all(
        _scales_with_batch(compiled.get(output), resized.get(output), batch, other)
        for output in graph.outputs
    ):
        return frozenset()
    return frozenset(batched)


def _with_batch(tensor_type: TensorType, batch: int) -> TensorType:
    assert tensor_type.shape is not None
    return TensorType(tensor_type.dtype, (batch, *tensor_type.shape[1:]))


def _layers_keep_width(
    graph: Graph, compiled: dict[str, TensorType], resized: dict[str, TensorType]
) -> bool:
    for node in graph.nodes():
        if node.op_type not in LAYER_OPS or not node.is_default_domain:
            continue
        before, after = compiled.get(node.input(0)), resized.get(node.input(0))
        if before is None or after is None or before.shape is None or after.shape is None:
            return False
        if len(before.shape) != len(after.shape):
            return False
        width = _width(node, before.shape)
        if None in width or width != _width(node, after.shape):
            return False
    return True


def _width(node: Node, dims: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """What a layer's reads depend on: a convolution's channels and image size, the
    features (the contracted axis) of a MatMul or Gemm."""
    if not dims:
        return (None,)
    if node.op_type in ("Conv", "ConvTranspose"):
        return dims[1:]
    if node.op_type == "Gemm" and node.attribute("transA", 0):
        return dims[:1]
    return dims[-1:]


def _scales_with_batch(
    before: TensorType | None, after: TensorType | None, batch: int, other: int
) -> bool:
    """Whether an output has the batch on one axis (its size `batch` at the compiled
    batch, `other` at the second) and the same size on every other axis."""
    if before is None or after is None or before.shape is None or after.shape is None:
        return False
    if len(before.shape) != len(after.shape) or None in before.shape:
        return False
    changed = [(b, a) for b, a in zip(before.shape, after.shape, strict=True) if b != a]
    return changed == [(batch, other)]
