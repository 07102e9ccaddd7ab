"""A small stand-in for the trained networks whose weights one scale per tensor destroys.

    x -> Conv 3x3 + BN -> Relu -> depthwise Conv 3x3 + BN -> Relu -> Conv 1x1 + BN -> Relu
      -> GlobalAveragePool -> Flatten -> Gemm -> y

As in the text recognizers and detectors of issue 13, each BatchNorm scales its channels
by factors spread from 0.27 to 9.2, so after folding the channels' largest |w| differ
by a factor of about 34: one 8-bit scale per tensor leaves the small channels a handful
of levels. Built with onnx.helper from one seed; the data are smooth random images.
Shared by tests/test_weight_quant.py and benchmarks/quant_anchor.py.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SMALLEST_SCALE, LARGEST_SCALE = 0.27, 9.2  # the channel scales after BN folding
CHANNELS = 16
WIDE = 32
CLASSES = 10


def standin_model(seed: int = 0, size: int = 16) -> onnx.ModelProto:
    """The stand-in network for `size` x `size` RGB images, batch 1."""
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(name: str, x: str, weight: np.ndarray, groups: int, factors: np.ndarray) -> str:
        channels = weight.shape[0]
        pad = weight.shape[-1] // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [
                    x,
                    constant(f"{name}.w", weight),
                    constant(f"{name}.b", rng.normal(0, 0.1, channels)),
                ],
                [f"{name}.conv"],
                name=name,
                group=groups,
                pads=[pad] * 4,
            )
        )
        variance = rng.uniform(0.5, 2.0, channels)
        gamma = factors * np.sqrt(variance + 1e-5)
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [
                    f"{name}.conv",
                    constant(f"{name}.gamma", gamma),
                    constant(f"{name}.beta", rng.normal(0.2, 0.3, channels) * factors),
                    constant(f"{name}.mean", rng.normal(0, 0.2, channels)),
                    constant(f"{name}.var", variance),
                ],
                [f"{name}.bn"],
                name=f"{name}_bn",
            )
        )
        nodes.append(
            helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"], name=f"{name}_relu")
        )
        return f"{name}.relu"

    def unit_weights(shape: tuple[int, ...]) -> np.ndarray:
        """Gaussian weights, each output channel scaled to a largest |w| of 1."""
        weight = rng.normal(size=shape)
        return weight / np.abs(weight).reshape(shape[0], -1).max(axis=1).reshape(-1, 1, 1, 1)

    # the BN scales gamma / sqrt(var + eps): spread over conv1's channels, and the
    # inverse over the depthwise conv's, which brings every channel back to a like size
    spread = np.geomspace(SMALLEST_SCALE, LARGEST_SCALE, CHANNELS)[rng.permutation(CHANNELS)]
    inverse = SMALLEST_SCALE * LARGEST_SCALE / spread
    h = conv_bn("conv1", "x", unit_weights((CHANNELS, 3, 3, 3)), 1, spread)
    h = conv_bn("dwconv", h, unit_weights((CHANNELS, 1, 3, 3)) / 2, CHANNELS, inverse / 8)
    h = conv_bn("pwconv", h, unit_weights((WIDE, CHANNELS, 1, 1)) / 3, 1, rng.uniform(0.5, 2, WIDE))
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    fc_weight = rng.normal(0, 1 / np.sqrt(WIDE), (CLASSES, WIDE))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["flat", constant("fc.w", fc_weight), constant("fc.b", rng.normal(0, 0.1, CLASSES))],
            ["y"],
            name="fc",
            transB=1,
        )
    )
    graph = helper.make_graph(
        nodes,
        "quant_standin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def standin_images(count: int, seed: int, size: int = 16) -> np.ndarray:
    """`count` smooth random RGB images in [0, 1], f32[count, 3, size, size]: noise on a
    coarse grid, upsampled, so that neighbouring pixels correlate as in photographs."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (count, 3, size // 4, size // 4))
    fine = coarse.repeat(4, axis=2).repeat(4, axis=3)
    images = 0.7 * fine + 0.3 * rng.uniform(0, 1, (count, 3, size, size))
    return images.astype(np.float32)
