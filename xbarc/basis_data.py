"""Calibration inputs for BasisN's data-aware fit (`xbarc compile --strategy basis
--calibration-data X.npz`).

    program (graph, float weights) + samples
      -> the float model run on the samples (onnxruntime, the ideal chip's graph)
      -> each crossbar layer's input unfolded into patches [G, rows, P]
      -> XtX per group, summed over all patches of all samples: [G, rows, rows]
      -> program + tensors `<layer>.input_gram` (f32), which the basis pass reads with
         objective=outputs and drops from the program it emits

The .npz holds one array per program input, samples first (as for `xbarc calibrate`).
Layers inside control-flow regions get no Gram matrix (the ideal graph cannot hand their
inputs out); the basis pass fits them on their weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xbarc.calibrate import calibration_batches
from xbarc.diagnostics import XbarcError
from xbarc.evaluate import load_data
from xbarc.ir.tile import CrossbarLayer, Program, with_tensors
from xbarc.ir.types import NUMPY_DTYPES
from xbarc.passes.basisn.fit import gram_tensor_name

OPTION = "--calibration-data"
DEFAULT_SAMPLES = 256  # calibration samples used at most (the first ones)
BATCH_SIZE = 32


def load_calibration_data(path: Path, program: Program) -> dict[str, np.ndarray]:
    """The arrays of `path` for the program's inputs, checked: one per input, named after
    it, samples first, then the input's shape after its batch axis (or, for an input
    without one, such as a recurrent state, the whole input), its element type."""
    data = load_data(path)
    names = [graph_input.name for graph_input in program.inputs]
    for graph_input in program.inputs:
        name = graph_input.name
        if name not in data:
            raise XbarcError(
                f"{OPTION} {path} has no array named {name!r} (the model input)",
                hint=f"its arrays are {', '.join(data) or '(none)'}; name them after the "
                f"model's inputs ({', '.join(names)}), samples first",
            )
        check_shape(path, name, data[name], graph_input.type.shape)
        expected = NUMPY_DTYPES.get(graph_input.type.dtype)
        if expected is not None and data[name].dtype != expected:
            if not np.can_cast(data[name].dtype, expected, casting="same_kind"):
                raise XbarcError(
                    f"{OPTION} array {name!r} is {data[name].dtype}, the model input is "
                    f"{graph_input.type.dtype}",
                    hint=f"convert it, e.g. x.astype(np.{expected})",
                )
            data[name] = data[name].astype(expected)
    counts = {len(data[name]) for name in names}
    if len(counts) > 1 or 0 in counts:
        raise XbarcError(
            f"{OPTION} {path}: the input arrays need the same number of samples, at least 1",
            hint="give one sample per row of every input array",
        )
    return {name: data[name] for name in names}


def check_shape(path: Path, name: str, value: np.ndarray, shape) -> None:
    """Refuse an array whose dims after the samples axis differ from the input's."""
    if shape is None:
        return
    want = list(shape[1:])
    got = list(value.shape[1:])
    same_rank = value.ndim == len(shape)
    if same_rank and all(w is None or w == g for w, g in zip(want, got, strict=True)):
        return
    whole = list(shape)  # or each sample a whole input (an input without a batch axis)
    if value.ndim == len(shape) + 1 and all(
        w is None or w == g for w, g in zip(whole, got, strict=True)
    ):
        return
    shown = "x".join("?" if d is None else str(d) for d in ["N", *want])
    raise XbarcError(
        f"{OPTION} array {name!r} has shape {'x'.join(map(str, value.shape))}, the model "
        f"input needs {shown}",
        hint=f"samples first, then the input's own dims ({path})",
    )


def input_grams(
    program: Program, data: Mapping[str, np.ndarray], samples: int = DEFAULT_SAMPLES
) -> dict[str, np.ndarray]:
    """XtX [G, rows, rows] (f64) of every top-level crossbar layer's unfolded input over
    the first `samples` samples, the float model run by onnxruntime."""
    from xbarc.runtime.effective import IdealGraph
    from xbarc.runtime.patches import layer_columns

    layers = [op for op in program.ops if isinstance(op, CrossbarLayer)]
    if not layers:
        return {}
    weights = {layer.name: program.store[layer.weight] for layer in program.layers()}
    graph = IdealGraph(program, weights)
    names = [graph_input.name for graph_input in program.inputs]
    count = min(samples, min(len(data[name]) for name in names))
    wanted = list(dict.fromkeys(layer.input for layer in layers))
    grams = {layer.name: np.zeros((layer.groups, layer.rows, layer.rows)) for layer in layers}
    for _, feeds in calibration_batches(program, data, count, BATCH_SIZE):
        values = dict(zip(wanted, graph.run(feeds, wanted), strict=True))
        for layer in layers:
            x = np.asarray(values[layer.input], dtype=np.float32)
            unfold, _ = layer_columns(layer, x.shape)
            columns = np.asarray(unfold(x), dtype=np.float64)  # [G, rows, P]
            grams[layer.name] += columns @ columns.transpose(0, 2, 1)
    return grams


def with_input_grams(
    program: Program, data: Mapping[str, np.ndarray], samples: int = DEFAULT_SAMPLES
) -> Program:
    """`program` with each top-level crossbar layer's input Gram matrix attached as the
    tensor `<layer>.input_gram`, for the basis pass' objective=outputs."""
    grams = input_grams(program, data, samples)
    # f32 halves what a large network's Gram matrices hold (rows^2 per group and layer)
    tensors = {gram_tensor_name(name): g.astype(np.float32) for name, g in grams.items()}
    return with_tensors(program, tensors)
