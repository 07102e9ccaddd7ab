"""xbarc.ort_quant.quantize_int8: onnxruntime's static int8 quantization, the anchor of quant.

The quantized model must hold per-channel int8 weights whose scales are MinMax's (the
largest |w| of each output channel over 127), run in onnxruntime, and stay near the float
model without equalling it; calibration samples may carry a batch axis or be whole inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from xbarc.diagnostics import XbarcError
from xbarc.ort_quant import quantize_int8


def conv_model(weights: np.ndarray) -> onnx.ModelProto:
    """x [N,3,8,8] -> Conv(weights, pad 1) -> Relu -> y [N,C,8,8]."""
    channels = weights.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 8, 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0]


def weight_scales(model: onnx.ModelProto) -> np.ndarray:
    """The scale of the DequantizeLinear that feeds the Conv its weights."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    dequantize = next(node for node in model.graph.node if node.output[0] == conv.input[1])
    assert initializers[dequantize.input[0]].dtype == np.int8
    return initializers[dequantize.input[1]]


@pytest.fixture
def weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    # channels of very different ranges: the case per-channel scales exist for
    spread = np.array([0.05, 0.3, 1.0, 4.0], dtype=np.float32)[:, None, None, None]
    return (rng.normal(size=(4, 3, 3, 3)) * spread).astype(np.float32)


def test_per_channel_weights_have_minmax_scales(weights):
    rng = np.random.default_rng(1)
    calibration = {"x": rng.normal(size=(6, 3, 8, 8)).astype(np.float32)}
    quantized = quantize_int8(conv_model(weights), calibration)
    expected = np.abs(weights).reshape(4, -1).max(axis=1) / 127
    np.testing.assert_allclose(weight_scales(quantized), expected, rtol=1e-6)
    ops = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_per_tensor_has_one_scale(weights):
    calibration = {"x": np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)}
    quantized = quantize_int8(conv_model(weights), calibration, per_channel=False)
    np.testing.assert_allclose(weight_scales(quantized), np.abs(weights).max() / 127, rtol=1e-6)


def test_quantized_model_is_close_but_not_equal(weights):
    rng = np.random.default_rng(2)
    calibration = {"x": rng.normal(size=(8, 3, 8, 8)).astype(np.float32)}
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    model = conv_model(weights)
    float_y, int8_y = run(model, x), run(quantize_int8(model, calibration), x)
    error = np.abs(int8_y - float_y).max() / np.abs(float_y).max()
    assert 0 < error < 0.05


def test_whole_input_samples_and_ragged_counts(weights):
    rng = np.random.default_rng(3)
    model = conv_model(weights)
    # one axis more than the input: each sample is a whole input (here a batch of two)
    whole = {"x": rng.normal(size=(3, 2, 3, 8, 8)).astype(np.float32)}
    assert weight_scales(quantize_int8(model, whole)).shape == (4,)
    with pytest.raises(XbarcError, match="same"):
        quantize_int8(model, {"x": np.zeros((0, 3, 8, 8), np.float32)})
