"""The nine onnx light networks, compiled with default settings and run in `ideal`, agree
with onnxruntime on the outputs and on the logits (the input of the final Softmax), with
their own constant weights and with seeded random weights (equal weights hide mapping and
permutation bugs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import LIGHT_MODELS, light_model, light_model_params
from tests.onnx_models import run_onnxruntime, save
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime.executor import Executor

RELATIVE_ERROR = 1e-4


def randomized(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The model with every ConstantOfShape constant replaced by seeded random values
    suited to its role: He-scaled weights, small biases, BatchNorm statistics near 1."""
    rng = np.random.default_rng(seed)
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, tuple[str, int]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, (node.op_type, position))
    result = onnx.ModelProto()
    result.CopyFrom(model)
    kept = []
    for node in result.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in initializers:
            kept.append(node)
            continue
        shape = tuple(int(d) for d in initializers[node.input[0]])
        values = random_constant(rng, shape, consumers.get(node.output[0], ("", 0)))
        result.graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
    del result.graph.node[:]
    result.graph.node.extend(kept)
    result.ir_version = max(result.ir_version, 4)  # initializers need not be inputs from IR 4
    return result


def random_constant(rng, shape: tuple[int, ...], consumer: tuple[str, int]) -> np.ndarray:
    op_type, position = consumer
    normal = rng.standard_normal(shape)
    if op_type in ("Conv", "Gemm") and position == 1:
        fan_in = int(np.prod(shape[1:])) if op_type == "Conv" else shape[-1]
        values = normal * np.sqrt(2.0 / fan_in)
    elif op_type == "BatchNormalization" and position in (1, 4):
        values = 1.0 + 0.1 * np.abs(normal) if position == 4 else 1.0 + 0.1 * normal
    elif op_type == "Mul":
        values = 1.0 + 0.1 * normal
    else:
        values = 0.1 * normal
    return values.astype(np.float32)


def with_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the input of its last Softmax as an extra output."""
    softmax = [node for node in model.graph.node if node.op_type == "Softmax"]
    if not softmax:
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    logits = softmax[-1].input[0]
    result.graph.output.append(helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    return result


def ill_conditioned(logits: np.ndarray) -> bool:
    """Whether float32 rounding alone can move the Softmax of these logits by more than the
    tolerance: one rounding step at their scale (2^-24 relative) exceeds it, and the top
    two logits are too close (under 20, e^-20 ~ 2e-9) for the winner to absorb it."""
    rounding = float(np.abs(logits).max()) * 2.0**-24
    rows = np.sort(logits.reshape(logits.shape[0], -1), axis=1)
    gap = float((rows[:, -1] - rows[:, -2]).min())
    return rounding > RELATIVE_ERROR and gap < 20.0


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("weights", ["constant", "random"])
@pytest.mark.parametrize("name", light_model_params())
def test_ideal_light_model_equals_onnxruntime(name, weights, tmp_path):
    model = onnx.load(light_model(name))
    if weights == "random":
        model = randomized(model, seed=LIGHT_MODELS.index(name))
    model = with_logits(model)
    program = compile_onnx(save(model, tmp_path), CompileOptions(tiles=128))
    (graph_input,) = program.inputs
    x = np.random.default_rng(7).standard_normal(graph_input.type.static_shape()).astype("f4")
    got = Executor(program).run({graph_input.name: x})
    want = run_onnxruntime(model, {graph_input.name: x})
    assert len(program.outputs) == len(want)
    logits = want[-1] if len(want) > 1 else None
    for output, expected in zip(program.outputs, want, strict=True):
        assert np.abs(expected).max() > 0, output
        if output == program.outputs[0] and logits is not None and ill_conditioned(logits):
            # constant weights make all logits equal and huge (squeezenet: 6.7e9): float32
            # rounding alone then moves the Softmax by far more than 1e-4, whoever computes
            # it; the logits themselves are still checked below
            assert weights == "constant", "random weights must give well-conditioned logits"
            continue
        assert relative_error(got[output], expected) <= RELATIVE_ERROR, output
