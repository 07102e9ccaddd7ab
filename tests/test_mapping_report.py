"""How much of a model compile maps onto crossbars (issue 13, item 4): the share of the
multiply-accumulates on crossbars against the work left digital, and warnings that name
the digital ops with the frontend's reason for each.

MACs are checked against an independent count from the ONNX model (onnx shape
inference, then out elements x the weight's fan-in per output)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from tests.conftest import light_model
from tests.onnx_models import parse, random, save
from tests.test_cli import run_cli
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.ir.tile import DigitalOp
from xbarc.report import (
    DIGITAL_SHARE_WARNING,
    format_macs,
    mapping_line,
    mapping_warnings,
    report,
)

INTEGER = "integer ops are not mapped (give xbarc the float model)"
TWO_ACTIVATIONS = "MatMul of two activations: no constant weight"


def compiled(tmp_path, model, **shapes):
    return compile_onnx(save(model, tmp_path), CompileOptions(tiles=16, input_shapes=shapes))


def onnx_macs(model: onnx.ModelProto) -> dict[str, int]:
    """MACs of each Conv, Gemm and MatMul node (by output name), counted independently
    from onnx's shape inference: output elements x the products summed into each."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
    }
    shapes.update({t.name: tuple(t.dims) for t in model.graph.initializer})
    macs = {}
    for node in model.graph.node:
        out = math.prod(shapes[node.output[0]])
        if node.op_type in ("Conv", "ConvInteger"):
            macs[node.output[0]] = out * math.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger"):
            transposed = any(a.name == "transA" and a.i for a in node.attribute)
            a_shape = shapes[node.input[0]]
            macs[node.output[0]] = out * (a_shape[0] if transposed else a_shape[-1])
    return macs


def test_light_squeezenet_maps_all_its_work(tmp_path):
    path = light_model("squeezenet")
    program = compile_onnx(path, CompileOptions(tiles=128))
    summary = report(program)
    expected = onnx_macs(onnx.load(path))
    assert summary.crossbar_macs == sum(expected.values())
    assert {layer.name: layer.macs for layer in summary.layers}.keys() == {
        layer.name for layer in program.layers()
    }
    assert summary.digital_work == () and summary.digital_macs == 0
    assert summary.mapped_share == 1.0
    assert mapping_warnings(summary) == []
    assert mapping_line(summary) == (
        f"mapped: 26 crossbar layers do {format_macs(summary.crossbar_macs)} per forward pass "
        "(100.0% of the work)"
    )
    assert format_macs(summary.crossbar_macs) == "349.15 MMAC"


INTEGER_MODEL = """g (uint8[1,3,8,8] x) => (int32[1,4,6,6] y, int32[1,10] z) {
    y = ConvInteger (x, w)
    f = Flatten (x)
    z = MatMulInteger (f, m)
}"""


def integer_model():
    rng = np.random.default_rng(0)
    constants = {
        "w": rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8),
        "m": rng.integers(0, 255, (192, 10)).astype(np.uint8),
    }
    return parse(INTEGER_MODEL, constants, y="conv_int", z="matmul_int")


def test_integer_ops_map_nothing_and_say_why(tmp_path):
    model = integer_model()
    summary = report(compiled(tmp_path, model))
    expected = onnx_macs(model)
    assert summary.layers == ()
    assert [(w.name, w.op_type, w.reason, w.macs) for w in summary.digital_work] == [
        ("conv_int", "ConvInteger", INTEGER, expected["y"]),
        ("matmul_int", "MatMulInteger", INTEGER, expected["z"]),
    ]
    assert expected == {"y": 144 * 27, "z": 1920}
    assert mapping_warnings(summary) == [
        "warning: the program has no crossbar layers: the whole model runs digitally:",
        f"warning:   conv_int (ConvInteger, 3.89 kMAC): {INTEGER}",
        f"warning:   matmul_int (MatMulInteger, 1.92 kMAC): {INTEGER}",
    ]


def test_model_without_work_warns_that_nothing_is_mapped(tmp_path):
    model = parse("g (float[1,8] x) => (float y) { y = Relu (x) }")
    summary = report(compiled(tmp_path, model))
    assert summary.digital_work == ()
    assert mapping_warnings(summary) == [
        "warning: the program has no crossbar layers: the whole model runs digitally (it "
        "has no Conv, ConvTranspose, Gemm or MatMul to map)"
    ]


ATTENTION = """g (float[1,6,16] x) => (float[1,6,16] y) {
    q = MatMul (x, wq)
    k = MatMul (x, wk)
    kt = Transpose <perm = [0, 2, 1]> (k)
    s = MatMul (q, kt)
    y = MatMul (s, x)
}"""


def test_matmul_of_two_activations_is_named_with_its_share(tmp_path):
    model = parse(ATTENTION, {"wq": random((16, 16), 1), "wk": random((16, 16), 2)}, s="scores")
    program = compiled(tmp_path, model)
    summary = report(program)
    expected = onnx_macs(model)
    assert [layer.name for layer in summary.layers] == ["MatMul_0", "MatMul_1"]
    assert summary.crossbar_macs == expected["q"] + expected["k"] == 2 * 6 * 16 * 16
    assert [(w.name, w.reason, w.macs) for w in summary.digital_work] == [
        ("scores", TWO_ACTIVATIONS, expected["s"]),
        ("MatMul_4", TWO_ACTIVATIONS, expected["y"]),
    ]
    share = summary.crossbar_macs / (summary.crossbar_macs + expected["s"] + expected["y"])
    assert summary.mapped_share == pytest.approx(share)
    assert 1 - share > DIGITAL_SHARE_WARNING
    warnings = mapping_warnings(summary)
    assert warnings[0] == (
        f"warning: {1 - share:.1%} of the work stays digital (1.15 kMAC of 4.22 kMAC):"
    )
    assert warnings[1:] == [  # the largest first; equal ones in program order
        f"warning:   scores (MatMul, 576 MAC): {TWO_ACTIVATIONS}",
        f"warning:   MatMul_4 (MatMul, 576 MAC): {TWO_ACTIVATIONS}",
    ]


def test_a_small_digital_share_does_not_warn(tmp_path):
    model = parse(
        """g (float[1,64] x) => (float y) {
            h = MatMul (x, w)
            t = Transpose (h)
            y = MatMul (h, t)
        }""",
        {"w": random((64, 64), 1)},
    )
    summary = report(compiled(tmp_path, model))
    assert summary.digital_macs == 64 and summary.crossbar_macs == 64 * 64
    assert 1 - summary.mapped_share < DIGITAL_SHARE_WARNING
    assert mapping_warnings(summary) == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("y = Conv (x, w)", "its weight is computed at run time, not a constant"),
        ("y = MatMul (x, m)", TWO_ACTIVATIONS),
        ("y = Gemm (x, m)", "Gemm of two activations: no constant weight"),
        ("y = MatMul (c, x)", "its constant is the left operand (a crossbar layer computes x @ W)"),
    ],
)
def test_reasons_of_layers_without_a_constant_weight(tmp_path, text, reason):
    model = parse(
        f"""g (float[4,4] x) => (float y) {{
            w = Reshape (x, s)
            m = Relu (x)
            {text}
        }}""",
        {"s": np.array([1, 4, 2, 2], np.int64), "c": random((4, 4), 1)},
    )
    program = compiled(tmp_path, model)
    (op,) = [o for o in program.ops if isinstance(o, DigitalOp) and o.not_mapped is not None]
    assert op.not_mapped is not None and op.not_mapped.reason == reason


# Crossbar layers inside subgraphs and recurrent weights are mapped (issue 13, item 2):
# an If holding a Conv in each branch and an LSTM leave no work digital.
IF_AND_LSTM = """g (float[1,3,6,6] x, bool c, float[5,1,8] s) => (float y, float h) {
    y = If (c) <
        then_branch = g1 () => (float a) {
            conv = Conv <pads = [1, 1, 1, 1]> (x, w)
            a = Relu (conv)
        },
        else_branch = g2 () => (float[1,4,6,6] b) { b = Conv <pads = [1, 1, 1, 1]> (x, v) }
    >
    h = LSTM <hidden_size = 16> (s, lw, lr)
}"""


def test_work_inside_if_and_lstm_is_mapped(tmp_path):
    constants = {
        "w": random((4, 3, 3, 3), 1),
        "v": random((4, 3, 3, 3), 2),
        "lw": random((1, 64, 8), 3),
        "lr": random((1, 64, 16), 4),
    }
    model = parse(IF_AND_LSTM, constants)
    summary = report(compiled(tmp_path, model))
    assert summary.digital_work == ()
    assert len(summary.layers) >= 4  # a Conv per branch, the LSTM's W and R
    assert mapping_warnings(summary) == []


def test_compile_and_inspect_print_the_share_and_the_warnings(tmp_path, capsys):
    model = save(integer_model(), tmp_path, "integer.onnx")
    output = tmp_path / "integer.xbar"
    status, text, err = run_cli(capsys, "compile", model, "-o", output)
    assert status == 0
    assert (
        "mapped: 0 crossbar layers do 0 MAC per forward pass (0.0% of the work); 5.81 kMAC "
        "stay digital on 2 ops that could be crossbar work" in text
    )
    assert err.splitlines() == [
        "warning: the program has no crossbar layers: the whole model runs digitally:",
        f"warning:   conv_int (ConvInteger, 3.89 kMAC): {INTEGER}",
        f"warning:   matmul_int (MatMulInteger, 1.92 kMAC): {INTEGER}",
    ]
    program_text = output.read_text()
    assert f'not_mapped="{INTEGER}" macs=3888' in program_text

    status, text, err = run_cli(capsys, "inspect", output)
    assert status == 0
    assert f"  conv_int (ConvInteger, 3.89 kMAC): {INTEGER}" in text
    assert "warning: the program has no crossbar layers" in err

    status, text, _ = run_cli(capsys, "inspect", output, "--json")
    mapping = json.loads(text)["mapping"]
    assert mapping["crossbar_layers"] == 0 and mapping["crossbar_macs"] == 0
    assert mapping["digital_macs"] == 3888 + 1920
    assert mapping["digital_work"][0] == {
        "name": "conv_int",
        "op_type": "ConvInteger",
        "reason": INTEGER,
        "macs": 3888,
    }
    assert mapping["warnings"][0].startswith("warning: the program has no crossbar layers")


QUANTIZED_AND_EINSUM = """g (uint8[1,3,8,8] x, float[2,5,7] e)
    => (uint8[1,4,6,6] y, uint8[1,10] z, float[2,5,3] s) {
    y = QLinearConv (x, xs, xz, w, ws, wz, ys, yz)
    f = Flatten (x)
    z = QLinearMatMul (f, xs, xz, m, ws, wz, ys, yz)
    s = Einsum <equation = "bij,jk->bik"> (e, k)
}"""


def test_quantized_ops_and_einsum_are_counted(tmp_path):
    rng = np.random.default_rng(0)
    scale, zero = np.array(0.1, np.float32), np.array(0, np.uint8)
    constants = {
        "w": rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8),
        "m": rng.integers(0, 255, (192, 10)).astype(np.uint8),
        "k": random((7, 3), 1),
        **{name: scale for name in ("xs", "ws", "ys")},
        **{name: zero for name in ("xz", "wz", "yz")},
    }
    model = parse(QUANTIZED_AND_EINSUM, constants)
    work = {w.op_type: w for w in report(compiled(tmp_path, model)).digital_work}
    assert work["QLinearConv"].macs == 4 * 36 * 27
    assert work["QLinearMatMul"].macs == 10 * 192
    assert work["QLinearConv"].reason == work["QLinearMatMul"].reason == INTEGER
    assert work["Einsum"].macs == 2 * 5 * 7 * 3
    assert work["Einsum"].reason == "Einsum is not mapped (export the layer as MatMul or Gemm)"


def test_digital_work_inside_a_region_is_named(tmp_path):
    """A Loop body's MatMul of two activations: a digital op inside the region."""
    model = parse(
        """g (float[1,8] x, int64 n) => (float y, float z) {
            y = MatMul (x, w)
            z = Loop (n, "", x) <
                body = b (int64 i, bool c, float[1,8] h) => (bool co, float[1,8] ho) {
                    co = Identity (c)
                    t = Transpose (h)
                    sq = MatMul (t, h)
                    ho = MatMul (h, sq)
                }
            >
        }""",
        {"w": random((8, 8), 1)},
    )
    summary = report(compiled(tmp_path, model))
    assert [(w.op_type, w.reason, w.macs) for w in summary.digital_work] == [
        ("MatMul", TWO_ACTIVATIONS, 64),
        ("MatMul", TWO_ACTIVATIONS, 64),
    ]
    assert mapping_warnings(summary)[0].startswith("warning: 66.7% of the work stays digital")
