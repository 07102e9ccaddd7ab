"""Control flow on the host: If, Loop and Scan, whose regions run op by op.

    run_control(op, inputs, run_region) -> the op's outputs

The host evaluates the condition, the trip count and the scan slices with numpy (ONNX
semantics, opset 9 and later); `run_region(region, bound)` runs a region's ops (crossbar
layers among them, on the chip) with its formal inputs bound to `bound` and every value
of the enclosing scopes visible, and returns the region's outputs. So a branch's layers
run only when it is taken, and a Loop or Scan body's layers once per iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from xbarc import progress
from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import DigitalOp, Region
from xbarc.ir.types import NUMPY_DTYPES
from xbarc.limits import MAX_LOOP_ITERATIONS

Array = np.ndarray
RunRegion = Callable[[Region, Sequence[Array]], list[Array]]


def run_control(
    op: DigitalOp, inputs: Sequence[Array | None], run_region: RunRegion
) -> list[Array | None]:
    """The outputs of control-flow op `op` (If, Loop or Scan) on `inputs` (aligned with
    `op.inputs`, None for omitted ones); None for unused output slots."""
    if op.op_type == "If":
        results = _run_if(op, inputs, run_region)
    elif op.op_type == "Loop":
        results = _run_loop(op, inputs, run_region)
    elif op.op_type == "Scan":
        results = _run_scan(op, inputs, run_region)
    else:
        raise XbarcError(f'op "{op.name}" ({op.op_type}) holds regions, but is no control flow')
    return [np.asarray(r) if name else None for name, r in zip(op.outputs, results, strict=True)]


def _run_if(op: DigitalOp, inputs: Sequence[Array | None], run_region: RunRegion) -> list[Array]:
    condition = inputs[0]
    if condition is None or condition.size != 1:
        size = "no" if condition is None else condition.size
        raise XbarcError(
            f'op "{op.name}" (If): the condition has {size} elements, not one',
            hint="an If condition is a single boolean",
        )
    taken = "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch"
    return run_region(op.region(taken), [])


def _run_loop(op: DigitalOp, inputs: Sequence[Array | None], run_region: RunRegion) -> list[Array]:
    trip_count = inputs[0] if inputs else None
    condition = inputs[1] if len(inputs) > 1 else None
    if trip_count is None and condition is None:
        raise XbarcError(
            f'op "{op.name}" (Loop) has neither a trip count nor a condition: it never ends',
            hint="give the Loop a trip count M",
        )
    carried = [np.asarray(value) for value in inputs[2:]]
    body = op.region("body")
    scans: list[list[Array]] = [[] for _ in range(len(body.outputs) - 1 - len(carried))]
    limit = None if trip_count is None else int(np.asarray(trip_count).reshape(-1)[0])
    if limit is not None and limit > MAX_LOOP_ITERATIONS:
        raise XbarcError(
            f'op "{op.name}" (Loop): trip count {limit} is more than xbarc runs '
            f"({MAX_LOOP_ITERATIONS} iterations)",
            hint="check the program's trip count tensor",
        )
    running = True if condition is None else bool(np.asarray(condition).reshape(-1)[0])
    iteration = 0
    with progress.task("Loop", total=limit, unit="iteration") as task:
        while running and (limit is None or iteration < limit):
            if iteration == MAX_LOOP_ITERATIONS:  # only a condition ends it: it does not
                raise XbarcError(
                    f'op "{op.name}" (Loop) is still running after {iteration} iterations',
                    hint="its condition never turns false; give the Loop a trip count M",
                )
            bound = [np.array(iteration, dtype=np.int64), np.array(running), *carried]
            results = run_region(body, bound)
            running = bool(np.asarray(results[0]).reshape(-1)[0])
            carried = results[1 : 1 + len(carried)]
            for stack, value in zip(scans, results[1 + len(carried) :], strict=True):
                stack.append(np.asarray(value))
            iteration += 1
            task.update()
    stacked = [_stacked(op, stack, len(carried) + k) for k, stack in enumerate(scans)]
    return [*carried, *stacked]


def _stacked(op: DigitalOp, stack: list[Array], output: int) -> Array:
    """Scan outputs of the iterations along a new first axis; empty when none ran."""
    if stack:
        return np.stack(stack)
    known = op.output_types[output] if output < len(op.output_types) else None
    if known is None or known.shape is None or not all(d is not None for d in known.shape[1:]):
        raise XbarcError(
            f'op "{op.name}" ({op.op_type}) ran no iteration, and the shape of its scan '
            f"output {output} is not known",
            hint="give the model static shapes (--input-shape)",
        )
    dims = [0, *(int(d or 0) for d in known.shape[1:])]
    return np.zeros(dims, dtype=NUMPY_DTYPES[known.dtype])


def _run_scan(op: DigitalOp, inputs: Sequence[Array | None], run_region: RunRegion) -> list[Array]:
    if op.opset < 9:
        raise XbarcError(
            f'op "{op.name}" (Scan) of opset {op.opset}: xbarc runs Scan from opset 9 on',
            hint="export the model with opset 9 or newer",
        )
    scan_count = _ints(op, "num_scan_inputs")[0]
    state = [np.asarray(value) for value in inputs[: len(inputs) - scan_count]]
    sequences = [np.asarray(value) for value in inputs[len(inputs) - scan_count :]]
    axes = _axes(_ints(op, "scan_input_axes"), sequences, scan_count)
    directions = _ints(op, "scan_input_directions") or (0,) * scan_count
    lengths = {sequence.shape[axis] for sequence, axis in zip(sequences, axes, strict=True)}
    if len(lengths) != 1:
        raise XbarcError(
            f'op "{op.name}" (Scan): the scan inputs have different lengths {sorted(lengths)}',
            hint="check the model's input shapes",
        )
    (length,) = lengths
    body = op.region("body")
    outputs: list[list[Array]] = [[] for _ in range(len(body.outputs) - len(state))]
    with progress.task("Scan", total=length, unit="step") as task:
        for step in range(length):
            slices = [
                np.take(sequence, length - 1 - step if reverse else step, axis=axis)
                for sequence, axis, reverse in zip(sequences, axes, directions, strict=True)
            ]
            results = run_region(body, [*state, *slices])
            state = results[: len(state)]
            for stack, value in zip(outputs, results[len(state) :], strict=True):
                stack.append(np.asarray(value))
            task.update()
    out_directions = _ints(op, "scan_output_directions") or (0,) * len(outputs)
    out_axes = _ints(op, "scan_output_axes") or (0,) * len(outputs)
    scanned = []
    for k, (stack, reverse, axis) in enumerate(zip(outputs, out_directions, out_axes, strict=True)):
        stacked = _stacked(op, stack[::-1] if reverse else stack, len(state) + k)
        scanned.append(np.moveaxis(stacked, 0, axis % stacked.ndim))
    return [*state, *scanned]


def _ints(op: DigitalOp, name: str) -> tuple[int, ...]:
    """Attribute `name` of `op` as integers (an int becomes one); () when absent."""
    for attribute in op.attributes:
        if attribute.name == name:
            value = attribute.value
            return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)  # type: ignore[union-attr]
    return ()


def _axes(given: tuple[int, ...], sequences: Sequence[Array], count: int) -> list[int]:
    axes = list(given) if given else [0] * count
    return [int(axis) % sequence.ndim for axis, sequence in zip(axes, sequences, strict=True)]
