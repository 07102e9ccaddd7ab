"""The ONNX frontend: loading, shapes, folding and lowering, checked against onnxruntime."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, helper, numpy_helper

from tests.onnx_models import (
    crossbar_conv,
    crossbar_conv_transpose,
    crossbar_matmul,
    parse,
    random,
    run_onnxruntime,
    run_program,
    save,
    weight_bearing_counts,
)
from xbarc.diagnostics import XbarcError
from xbarc.frontend import import_onnx
from xbarc.hardware import make_hardware
from xbarc.ir.tile import Const, CrossbarLayer, DigitalOp, Program, Value
from xbarc.ir.types import TensorType

HARDWARE = make_hardware(tiles=16)
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
RTOL, ATOL = 1e-4, 1e-5


def compile_model(model: onnx.ModelProto, tmp_path: Path, **shapes) -> Program:
    return import_onnx(save(model, tmp_path), HARDWARE, shapes or None)


def digital_ops(program: Program) -> list[DigitalOp]:
    return [op for op in program.ops if isinstance(op, DigitalOp)]


def op_types(program: Program) -> list[str]:
    return [op.op_type if isinstance(op, DigitalOp) else op.kind for op in program.ops]


def assert_matches_onnxruntime(
    program: Program, model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> None:
    expected = run_onnxruntime(model, feeds)
    actual = run_program(program, feeds)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --- convolution -----------------------------------------------------------------------

CONV_CASES = {
    "plain": ((1, 3, 8, 8), (4, 3, 3, 3), ""),
    "strided_padded": ((2, 3, 9, 7), (5, 3, 3, 2), "strides = [2, 1], pads = [1, 0, 2, 1]"),
    "dilated": ((1, 2, 9, 9), (3, 2, 3, 3), "dilations = [2, 3], pads = [2, 1, 2, 3]"),
    "grouped": ((1, 4, 6, 6), (6, 2, 3, 3), "group = 2, pads = [1, 1, 1, 1]"),
    "depthwise": ((1, 3, 7, 7), (3, 1, 3, 3), "group = 3, strides = [2, 2]"),
    "depthwise_multiplier": ((1, 2, 5, 5), (6, 1, 3, 3), "group = 2"),
    "same_upper": ((1, 2, 7, 8), (3, 2, 4, 3), 'auto_pad = "SAME_UPPER", strides = [2, 3]'),
    "same_lower": ((1, 2, 7, 8), (3, 2, 4, 3), 'auto_pad = "SAME_LOWER", strides = [2, 3]'),
    "valid": ((1, 2, 7, 8), (3, 2, 3, 3), 'auto_pad = "VALID", strides = [2, 2]'),
    "conv1d": ((2, 3, 10), (4, 3, 3), "strides = [2], pads = [1, 2]"),
    "conv1d_same": ((1, 3, 9), (4, 3, 4), 'auto_pad = "SAME_LOWER"'),
    "conv3d": ((1, 4, 5, 6, 4), (4, 2, 2, 3, 2), "pads = [1, 0, 1, 0, 1, 1], group = 2"),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_layer_matches_onnxruntime(case, bias, tmp_path):
    x_shape, w_shape, attributes = CONV_CASES[case]
    dims = ",".join(map(str, x_shape))
    inputs = "x, w, b" if bias else "x, w"
    weights = {"w": random(w_shape, 1), "b": random(w_shape[:1], 2)}
    if not bias:
        del weights["b"]
    attributes = f"<{attributes}>" if attributes else ""
    model = parse(
        f"g (float[{dims}] x) => (float y) {{ y = Conv {attributes} ({inputs}) }}", weights
    )
    program = compile_model(model, tmp_path)
    (layer,) = program.ops
    assert isinstance(layer, CrossbarLayer) and layer.kind == "conv"
    groups = layer.groups
    assert program.store[layer.weight].shape == (groups, layer.rows, layer.cols)
    assert layer.rows == w_shape[1] * int(np.prod(w_shape[2:]))
    assert layer.cols == w_shape[0] // groups
    assert (layer.bias is not None) == bias
    x = random(x_shape, 3)
    (expected,) = run_onnxruntime(model, {"x": x})
    actual = crossbar_conv(x, layer, program.store)
    assert layer.output_type.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_conv_weight_layout_is_channel_major_im2col(tmp_path):
    weight = random((6, 2, 3, 3), 1)
    model = parse(
        "g (float[1,4,5,5] x) => (float y) { y = Conv <group = 2> (x, w) }", {"w": weight}
    )
    program = compile_model(model, tmp_path)
    (layer,) = program.layers()
    matrix = program.store[layer.weight]
    for group in range(2):
        np.testing.assert_array_equal(
            matrix[group], weight[group * 3 : (group + 1) * 3].reshape(3, -1).T
        )
    assert layer.geometry.pads == (0, 0, 0, 0)


def test_same_padding_is_resolved_to_explicit_pads(tmp_path):
    model = parse(
        "g (float[1,1,7,7] x) => (float y) "
        '{ y = Conv <auto_pad = "SAME_UPPER", strides = [2, 2]> (x, w) }',
        {"w": random((1, 1, 4, 4))},
    )
    (layer,) = compile_model(model, tmp_path).layers()
    # out 4, total padding (4-1)*2 + 4 - 7 = 3: the odd unit goes to the end
    assert layer.geometry.pads == (1, 1, 2, 2)
    assert layer.output_type.shape == (1, 1, 4, 4)


CONV_TRANSPOSE_CASES = {  # input shape, weight shape, group, other attributes
    "strided_output_padding": (
        (1, 3, 4, 5),
        (3, 2, 3, 3),
        1,
        "strides = [2, 3], output_padding = [1, 2]",
    ),
    "padded": ((2, 2, 5, 4), (2, 3, 3, 2), 1, "strides = [2, 2], pads = [1, 0, 1, 1]"),
    "dilated_grouped": ((1, 4, 4, 4), (4, 2, 2, 3), 2, "dilations = [2, 1], strides = [1, 2]"),
    "output_shape": ((1, 2, 5, 5), (2, 3, 4, 4), 1, "strides = [2, 2], output_shape = [10, 11]"),
    "output_shape_upper": (
        (1, 2, 5, 5),
        (2, 3, 4, 4),
        1,
        'strides = [2, 2], output_shape = [11, 10], auto_pad = "SAME_UPPER"',
    ),
    "same_upper": ((1, 2, 5, 4), (2, 3, 3, 4), 1, 'strides = [2, 1], auto_pad = "SAME_UPPER"'),
    "same_lower": ((1, 2, 5, 4), (2, 3, 3, 4), 1, 'strides = [2, 1], auto_pad = "SAME_LOWER"'),
    "same_wide_stride": ((1, 2, 4), (2, 3, 1), 1, 'strides = [3], auto_pad = "SAME_UPPER"'),
    "conv1d": ((1, 3, 6), (3, 2, 4), 1, "strides = [3], pads = [1, 2], output_padding = [1]"),
    "depthwise": ((1, 3, 4, 4), (3, 1, 3, 3), 3, "strides = [2, 2]"),
}


@pytest.mark.parametrize("case", sorted(CONV_TRANSPOSE_CASES))
def test_conv_transpose_layer_matches_onnxruntime(case, tmp_path):
    x_shape, w_shape, group, attributes = CONV_TRANSPOSE_CASES[case]
    dims = ",".join(map(str, x_shape))
    model = parse(
        f"g (float[{dims}] x) => (float y) "
        f"{{ y = ConvTranspose <group = {group}, {attributes}> (x, w, b) }}",
        {"w": random(w_shape, 1), "b": random((w_shape[1] * group,), 2)},
    )
    program = compile_model(model, tmp_path)
    (layer,) = program.ops
    assert isinstance(layer, CrossbarLayer) and layer.kind == "conv_transpose"
    assert (layer.groups, layer.rows) == (group, w_shape[0] // group)
    assert layer.cols == w_shape[1] * int(np.prod(w_shape[2:]))
    x = random(x_shape, 3)
    (expected,) = run_onnxruntime(model, {"x": x})
    actual = crossbar_conv_transpose(x, layer, program.store)
    assert layer.output_type.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


# --- Gemm and MatMul -------------------------------------------------------------------

M, K, N = 3, 5, 4
GEMM_C_SHAPES = {
    "none": None,
    "vector": (N,),
    "row": (1, N),
    "scalar": (),
    "matrix": (M, N),
    "column": (M, 1),
}


@pytest.mark.parametrize("c_shape", sorted(GEMM_C_SHAPES))
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_matches_onnxruntime(trans_a, trans_b, c_shape, tmp_path):
    a_dims = f"{K},{M}" if trans_a else f"{M},{K}"
    b = random((N, K) if trans_b else (K, N), 1)
    shape = GEMM_C_SHAPES[c_shape]
    initializers = {"B": b}
    inputs = "a, B"
    if shape is not None:
        initializers["C"] = random(shape, 2)
        inputs += ", C"
    attributes = f"transA = {trans_a}, transB = {trans_b}, alpha = 0.5, beta = 2.0"
    model = parse(
        f"g (float[{a_dims}] a) => (float y) {{ y = Gemm <{attributes}> ({inputs}) }}",
        initializers,
    )
    program = compile_model(model, tmp_path)
    (layer,) = program.layers()
    assert (layer.rows, layer.cols) == (K, N)
    np.testing.assert_allclose(
        program.store[layer.weight][0], 0.5 * (b.T if trans_b else b), rtol=1e-6
    )
    per_column = c_shape in ("vector", "row", "scalar")
    assert (layer.bias is not None) == per_column
    kinds = op_types(program)
    assert kinds.count("Transpose") == trans_a
    assert kinds.count("Add") == (c_shape in ("matrix", "column"))
    assert_matches_onnxruntime(program, model, {"a": random((K, M) if trans_a else (M, K), 3)})


def test_gemm_with_activation_c_adds_it_digitally(tmp_path):
    model = parse(
        f"g (float[{M},{K}] a, float[{M},{N}] c) => (float y) "
        "{ y = Gemm <beta = 3.0> (a, B, c) }",
        {"B": random((K, N), 1)},
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["gemm", "Mul", "Add"]
    feeds = {"a": random((M, K), 2), "c": random((M, N), 3)}
    assert_matches_onnxruntime(program, model, feeds)


def test_matmul_with_constant_right_operand_on_rank3_input(tmp_path):
    model = parse("g (float[2,3,5] x) => (float y) { y = MatMul (x, w) }", {"w": random((5, 4), 1)})
    program = compile_model(model, tmp_path)
    (layer,) = program.ops
    assert isinstance(layer, CrossbarLayer) and layer.kind == "matmul"
    assert (layer.groups, layer.rows, layer.cols) == (1, 5, 4) and layer.bias is None
    assert layer.output_type.shape == (2, 3, 4)
    x = random((2, 3, 5), 2)
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(crossbar_matmul(x, layer, program.store), expected, rtol=RTOL)


@pytest.mark.parametrize("dtype, onnx_type", [(np.float16, "float16"), (np.float64, "double")])
def test_float16_and_float64_weights_become_float32(dtype, onnx_type, tmp_path):
    model = parse(
        f"g ({onnx_type}[2,5] x) => ({onnx_type} y) {{ y = MatMul (x, w) }}",
        {"w": random((5, 4), 1).astype(dtype)},
    )
    program = compile_model(model, tmp_path)
    (layer,) = program.layers()
    assert program.store[layer.weight].dtype == np.float32
    assert layer.output_type.dtype == {"float16": "f16", "double": "f64"}[onnx_type]
    x = random((2, 5), 2).astype(dtype)
    (expected,) = run_onnxruntime(model, {"x": x})
    (actual,) = run_program(program, {"x": x})
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-2 if dtype == np.float16 else RTOL)


def test_conv_with_a_weight_computed_at_run_time_stays_digital(tmp_path):
    model = parse(
        "g (float[1,2,4,4] x, float[3,2,1,1] w) => (float y) { y = Conv (x, w, b) }",
        {"b": random((3,), 1)},
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["Conv"]
    assert program.ops[0].inputs == (Value("x"), Value("w"), Const("b"))
    assert program.ops[0].output_types[0].shape == (1, 3, 4, 4)


def test_matmul_of_two_activations_and_constant_left_operand_stay_digital(tmp_path):
    model = parse(
        """g (float[2,3] x, float[3,4] z) => (float y, float v) {
            y = MatMul (x, z)
            v = MatMul (w, z)
        }""",
        {"w": random((5, 3), 1)},
    )
    program = compile_model(model, tmp_path)
    assert not list(program.layers())
    assert op_types(program) == ["MatMul", "MatMul"]
    assert program.ops[1].inputs == (Const("w"), Value("z"))


# --- folding ---------------------------------------------------------------------------


def bn_initializers(channels: int, seed: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "scale": rng.uniform(0.5, 2.0, channels).astype(np.float32),
        "bias": rng.standard_normal(channels).astype(np.float32),
        "mean": rng.standard_normal(channels).astype(np.float32),
        "var": rng.uniform(0.1, 3.0, channels).astype(np.float32),
    }


def test_batch_norm_folds_into_conv(tmp_path):
    model = parse(
        """g (float[2,3,6,6] x) => (float y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
            n = BatchNormalization <epsilon = 0.001> (c, scale, bias, mean, var)
            y = Relu (n)
        }""",
        {"w": random((4, 3, 3, 3), 1), "b": random((4,), 2), **bn_initializers(4)},
        c="conv1",
        n="bn1",
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["conv", "Relu"]
    (layer,) = program.layers()
    assert layer.name == "conv1" and layer.output == "n"
    assert layer.source == "conv1 (Conv) + bn1 (BatchNormalization)"
    assert program.store[layer.weight].dtype == np.float32
    assert {decl.name for decl in program.tensors} == {"conv1.weight", "conv1.bias"}
    assert_matches_onnxruntime(program, model, {"x": random((2, 3, 6, 6), 3)})


@pytest.mark.parametrize("layer_op", ["ConvTranspose", "Gemm", "MatMul"])
def test_batch_norm_folds_into_other_layers(layer_op, tmp_path):
    if layer_op == "ConvTranspose":
        graph = "c = ConvTranspose <group = 2, strides = [2, 2]> (x, w, b)"
        x_shape, weights = (1, 4, 3, 3), {"w": random((4, 3, 2, 2), 1), "b": random((6,), 2)}
        channels = 6
    elif layer_op == "Gemm":
        graph = "c = Gemm <transB = 1, alpha = 2.0, beta = 0.5> (x, w, b)"
        x_shape, weights = (3, 5), {"w": random((4, 5), 1), "b": random((4,), 2)}
        channels = 4
    else:
        graph = "c = MatMul (x, w)"
        x_shape, weights = (3, 5), {"w": random((5, 4), 1)}
        channels = 4
    dims = ",".join(map(str, x_shape))
    model = parse(
        f"""g (float[{dims}] x) => (float y) {{
            {graph}
            y = BatchNormalization (c, scale, bias, mean, var)
        }}""",
        {**weights, **bn_initializers(channels)},
    )
    program = compile_model(model, tmp_path)
    assert len(program.ops) == 1
    (layer,) = program.layers()
    assert layer.bias is not None and layer.output == "y"
    assert "BatchNormalization" in layer.source and layer_op in layer.source
    assert_matches_onnxruntime(program, model, {"x": random(x_shape, 3)})


def test_batch_norm_that_cannot_fold_stays_digital(tmp_path):
    model = parse(
        """g (float[1,3,4,4] x) => (float y, float z, float c) {
            a = BatchNormalization (x, scale, bias, mean, var)
            c = Conv (a, w)
            y = BatchNormalization (c, scale2, bias2, mean2, var2)
            d = Conv (a, w)
            e = BatchNormalization (d, scale2, bias2, mean2, var2)
            z = Add (d, e)
        }""",
        {
            **bn_initializers(3),
            **{f"{k}2": v for k, v in bn_initializers(2, seed=5).items()},
            "w": random((2, 3, 1, 1), 1),
        },
    )
    program = compile_model(model, tmp_path)
    # the first BN follows no layer; c is a graph output; d is also read by the Add
    assert op_types(program).count("BatchNormalization") == 3
    assert_matches_onnxruntime(program, model, {"x": random((1, 3, 4, 4), 2)})


def test_per_channel_mul_and_add_fold_into_conv(tmp_path):
    model = parse(
        """<ir_version: 4, opset_import: ["" : 9]>
        g (float[1,3,5,5] x) => (float y) {
            c = Conv (x, w, b)
            n = BatchNormalization (c, scale, bias, mean, var)
            s = Unsqueeze <axes = [1, 2]> (sw)
            m = Mul (n, s)
            t = Unsqueeze <axes = [1, 2]> (sb)
            a = Add (t, m)
            y = Relu (a)
        }""",
        {
            "w": random((4, 3, 3, 3), 1),
            "b": random((4,), 2),
            "sw": random((4,), 3),
            "sb": random((4,), 4),
            **bn_initializers(4),
        },
        c="conv",
        n="bn",
        m="mul",
        a="add",
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["conv", "Relu"]
    (layer,) = program.layers()
    assert layer.source == "conv (Conv) + bn (BatchNormalization) + mul (Mul) + add (Add)"
    assert_matches_onnxruntime(program, model, {"x": random((1, 3, 5, 5), 5)})


def test_mul_that_is_not_per_channel_stays_digital(tmp_path):
    model = parse(
        """g (float[1,3,4,4] x) => (float y) {
            c = Conv (x, w)
            y = Mul (c, m)
        }""",
        {"w": random((2, 3, 1, 1), 1), "m": random((4,), 2)},
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["conv", "Mul"]
    assert_matches_onnxruntime(program, model, {"x": random((1, 3, 4, 4), 2)})


def test_shape_chains_and_constant_of_shape_fold(tmp_path):
    model = parse(
        """g (float[N,3,4,4] x) => (float y) {
            s = Shape (x)
            zero = Constant <value = int64[1] {0}> ()
            n = Gather <axis = 0> (s, zero)
            minus = Constant <value = int64[1] {-1}> ()
            target = Concat <axis = 0> (n, minus)
            flat = Reshape (x, target)
            wshape = Constant <value = int64[2] {48, 5}> ()
            ones = ConstantOfShape <value = float[1] {0.5}> (wshape)
            w = Mul (ones, r)
            y = MatMul (flat, w)
        }""",
        {"r": random((48, 5), 1)},
    )
    program = compile_model(model, tmp_path, x=(2, 3, 4, 4))
    # the batch stays symbolic while folding: Shape(x)[0] is computed at run time, not
    # folded to the compiled batch 2 (the program runs any batch)
    assert op_types(program) == ["Shape", "Gather", "Concat", "Reshape", "matmul"]
    assert not program.inputs[0].fixed_batch
    reshape = program.ops[3]
    assert reshape.inputs[0] == Value("x")
    assert program.value_types()[reshape.outputs[0]].shape == (2, 48)
    (layer,) = program.layers()
    np.testing.assert_allclose(program.store[layer.weight][0], 0.5 * random((48, 5), 1))
    assert {decl.name for decl in program.tensors} == {"zero", "minus", "MatMul_9.weight"}
    for batch in (2, 5):
        assert_matches_onnxruntime(program, model, {"x": random((batch, 3, 4, 4), 2)})


def test_folding_evaluates_common_ops_like_onnxruntime(tmp_path):
    model = parse(
        """<ir_version: 8, opset_import: ["" : 15]>
        g (float[2,12] x) => (float y, int64[2] shape) {
            r = Range (start, limit, delta)
            e = Expand (r, eshape)
            t = Transpose <perm = [1, 0]> (e)
            sl = Slice (t, starts, ends, axes, steps)
            f = Flatten <axis = 0> (sl)
            c = Cast <to = 1> (f)
            d = Div (c, two)
            u = Unsqueeze (d, uaxes)
            q = Squeeze (u, uaxes)
            k = Reshape (q, kshape)
            k2 = Reshape (k, kshape2)
            i = Identity (k2)
            g = Sub (i, one)
            y = Add (x, g)
            shape = Shape <start = -2> (y)
        }""",
        {
            "start": np.array(1, np.int64),
            "limit": np.array(13, np.int64),
            "delta": np.array(1, np.int64),
            "eshape": np.array([2, 1], np.int64),
            "starts": np.array([11, 0], np.int64),
            "ends": np.array([-100, 9], np.int64),
            "axes": np.array([0, 1], np.int64),
            "steps": np.array([-1, 1], np.int64),
            "two": np.array(2.0, np.float32),
            "one": np.array([1.0], np.float32),
            "uaxes": np.array([0, -1], np.int64),
            "kshape": np.array([2, -1], np.int64),
            "kshape2": np.array([0, 12], np.int64),
        },
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["Add", "Identity"]
    assert program.ops[1].outputs == ("shape",)
    assert_matches_onnxruntime(program, model, {"x": random((2, 12), 1)})


def test_folding_falls_back_to_the_reference_evaluator(tmp_path):
    model = parse(
        """g (float[2] x) => (float y) {
            q = Div (a, b)
            f = Cast <to = 1> (q)
            r = Sqrt (f2)
            s = ReduceSum <keepdims = 0> (r2, axes)
            t = Add (f, r)
            u = Add (t, s)
            y = Add (x, u)
        }""",
        {
            "a": np.array([-7, 7], np.int64),
            "b": np.array([2, 2], np.int64),
            "f2": np.array([4.0, 9.0], np.float32),
            "r2": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
            "axes": np.array([0], np.int64),
        },
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["Add"]
    # -7 / 2 truncates to -3: (-3 + 2) + 4 = 3 and (3 + 3) + 6 = 12
    np.testing.assert_array_equal(program.store[program.ops[0].inputs[1].name], [3.0, 12.0])
    assert_matches_onnxruntime(program, model, {"x": random((2,), 1)})


def test_dropout_and_identity_are_folded_away(tmp_path):
    model = parse(
        """g (float[1,2,3,3] x) => (float y, float z) {
            c = Conv (x, w)
            d = Dropout (c)
            i = Identity (d)
            y = Relu (i)
            z = Dropout (y)
        }""",
        {"w": random((2, 2, 1, 1), 1)},
    )
    program = compile_model(model, tmp_path)
    # the last Dropout produces a graph output, so it stays
    assert op_types(program) == ["conv", "Relu", "Dropout"]
    assert program.ops[1].inputs == (Value("c"),)
    assert_matches_onnxruntime(program, model, {"x": random((1, 2, 3, 3), 2)})


def test_unused_constants_and_dead_nodes_are_dropped(tmp_path):
    model = parse(
        """g (float[2,3] x) => (float y) {
            dead = Relu (x)
            y = Add (x, c)
        }""",
        {"c": random((3,), 1), "unused": random((100,), 2)},
    )
    program = compile_model(model, tmp_path)
    assert op_types(program) == ["Add"]
    assert [decl.name for decl in program.tensors] == ["c"]


def test_constant_graph_output_is_kept_by_an_identity(tmp_path):
    model = parse(
        """g (float[2,3] x) => (float y, int64[1] s) {
            y = Relu (x)
            s = Shape <start = 1> (x)
        }"""
    )
    program = compile_model(model, tmp_path)
    identity = program.ops[-1]
    assert identity.op_type == "Identity" and identity.outputs == ("s",)
    assert program.inputs[0].fixed_batch  # an output without the batch: s stays [3]
    assert program.outputs == ("y", "s")
    assert_matches_onnxruntime(program, model, {"x": random((2, 3), 1)})


def test_random_ops_are_not_folded(tmp_path):
    model = parse(
        """g (float[2,3] x) => (float y) {
            r = RandomNormal <shape = [2, 3], seed = 1.0> ()
            y = Add (x, r)
        }"""
    )
    assert op_types(compile_model(model, tmp_path)) == ["RandomNormal", "Add"]


# --- digital ops carried verbatim ------------------------------------------------------


def test_digital_op_attributes_are_carried_verbatim(tmp_path):
    model = parse(
        """<ir_version: 8, opset_import: ["" : 17, "xbarc.test" : 3]>
        g (float[2,3] x) => (float y) {
            y = xbarc.test.Opaque <i = 7, f = 1.5, s = "hi", ints = [1, 2], floats = [0.5],
                                   strings = ["a", "b"], t = float[2] {1.0, 2.0}> (x, , c)
        }""",
        {"c": random((3,), 1)},
    )
    binary = helper.make_attribute("raw", b"\xff\xfe")
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value_float=1.0)],
        "body",
        [],
        [helper.make_tensor_value_info("k", 1, [])],
    )
    graph_attribute = helper.make_attribute("body", body)
    model.graph.node[0].attribute.extend([binary, graph_attribute])
    program = compile_model(model, tmp_path)
    (op,) = program.ops
    assert (op.op_type, op.domain, op.opset) == ("Opaque", "xbarc.test", 3)
    assert op.inputs == (Value("x"), None, Const("c"))
    kinds = {a.name: (a.kind, a.value) for a in op.attributes}
    assert kinds["i"] == ("int", 7)
    assert kinds["f"] == ("float", 1.5)
    assert kinds["s"] == ("string", "hi")
    assert kinds["ints"] == ("ints", (1, 2))
    assert kinds["floats"] == ("floats", (0.5,))
    assert kinds["strings"] == ("strings", ("a", "b"))
    assert kinds["t"][0] == "tensor"
    np.testing.assert_array_equal(program.store[kinds["t"][1].name], [1.0, 2.0])
    for name, attribute in (("raw", binary), ("body", graph_attribute)):
        kind, const = kinds[name]
        assert kind == "proto"
        data = program.store[const.name]
        assert data.dtype == np.uint8
        assert AttributeProto.FromString(data.tobytes()) == attribute


def test_subgraph_reading_an_outer_constant_reads_the_program_tensor(tmp_path):
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", 1, [3])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", 1, [3])],
    )
    node = helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", 1, [3]),
        ],
        [helper.make_tensor_value_info("y", 1, [3])],
        [numpy_helper.from_array(random((3,), 1), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    program = compile_model(model, tmp_path)
    (op,) = program.ops
    assert isinstance(op, DigitalOp) and op.attributes == ()
    assert [region.name for region in op.regions] == ["then_branch", "else_branch"]
    (add,) = op.region("then_branch").ops
    assert add.inputs == (Value("x"), Const("c"))
    np.testing.assert_array_equal(program.store["c"], random((3,), 1))
    # the else branch reads the enclosing value (an Identity giving a region output stays)
    (identity,) = op.region("else_branch").ops
    assert identity.inputs == (Value("x"),) and op.region("else_branch").outputs == ("e",)


def test_names_are_unique_and_tensor_names_safe(tmp_path):
    model = parse(
        """g (float[1,2,3,3] x) => (float y) {
            a = Conv (x, w)
            b = Conv (a, w)
            y = Mul (b, k)
        }""",
        {"w": random((2, 2, 1, 1), 1), "k": random((3,), 2)},
        a="conv",
        b="conv",
    )
    model.graph.initializer[1].name = "1/k:0"
    model.graph.node[2].input[1] = "1/k:0"
    program = compile_model(model, tmp_path)
    assert [op.name for op in program.ops] == ["conv", "conv_1", "Mul_2"]
    assert program.ops[2].inputs[1] == Const("t_1_k_0")


# --- inputs and shapes -----------------------------------------------------------------


def test_initializers_listed_as_inputs_are_not_real_inputs(tmp_path):
    model = parse(
        """<ir_version: 3, opset_import: ["" : 9]>
        g (float[1,2,3,3] x, float[4,2,1,1] w) => (float y) { y = Conv (x, w) }""",
        {"w": random((4, 2, 1, 1), 1)},
    )
    program = compile_model(model, tmp_path)
    assert [i.name for i in program.inputs] == ["x"]
    assert op_types(program) == ["conv"]


SYMBOLIC = "g (float[batch,3,4,4] x) => (float y) { y = Conv (x, w) }"


def test_symbolic_input_needs_an_input_shape(tmp_path):
    model = parse(SYMBOLIC, {"w": random((2, 3, 1, 1))})
    with pytest.raises(XbarcError) as caught:
        compile_model(model, tmp_path)
    message = str(caught.value)
    assert "'x'" in message and "[batch,3,4,4]" in message
    assert "use --input-shape x=1x3x4x4" in message


def test_input_shape_override_fixes_symbolic_dims(tmp_path):
    model = parse(SYMBOLIC, {"w": random((2, 3, 1, 1))})
    program = compile_model(model, tmp_path, x=(5, 3, 4, 4))
    assert program.inputs[0].type.shape == (5, 3, 4, 4)
    (layer,) = program.layers()
    assert layer.output_type.shape == (5, 2, 4, 4)


def test_unknown_input_shape_name_lists_the_inputs(tmp_path):
    model = parse(SYMBOLIC, {"w": random((2, 3, 1, 1))})
    with pytest.raises(XbarcError, match="'data'.*the inputs are: x"):
        compile_model(model, tmp_path, data=(1, 3, 4, 4))


def test_input_shape_with_the_wrong_rank_is_refused(tmp_path):
    model = parse(SYMBOLIC, {"w": random((2, 3, 1, 1))})
    with pytest.raises(XbarcError, match="gives 2 dimensions but the input has rank 4"):
        compile_model(model, tmp_path, x=(1, 3))


# --- bad input -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(XbarcError, match="no such file"):
        import_onnx(tmp_path / "absent.onnx", HARDWARE)


def test_directory(tmp_path):
    with pytest.raises(XbarcError, match="is a directory"):
        import_onnx(tmp_path, HARDWARE)


@pytest.mark.parametrize(
    "content", [b"this is not an onnx model\n", b"", b"\x08\x07\x12\xff\xff\xff"]
)
def test_not_an_onnx_file(content, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, HARDWARE)
    assert str(caught.value).startswith(f"{path}: error: not")
    assert "ONNX model" in str(caught.value)


def test_truncated_file(tmp_path):
    model = parse(SYMBOLIC, {"w": random((2, 3, 1, 1))})
    data = model.SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(XbarcError, match="truncated or not an ONNX model"):
        import_onnx(path, HARDWARE)


def test_checker_errors_name_the_file(tmp_path):
    model = parse("g (float[2] x) => (float y) { y = Relu (x) }")
    model.graph.node[0].input[0] = "nowhere"
    path = save(model, tmp_path)
    with pytest.raises(XbarcError, match=f"{path}: error: invalid ONNX model"):
        import_onnx(path, HARDWARE)


def test_outputs_declared_without_a_shape_are_accepted(tmp_path):
    model = parse("g (float[2,3] x) => (float y) { y = Relu (x) }")
    model.graph.output[0].type.tensor_type.ClearField("shape")
    program = compile_model(model, tmp_path)
    assert program.ops[0].output_types == (TensorType("f32", (2, 3)),)


def test_input_declared_without_a_shape_needs_an_input_shape(tmp_path):
    model = parse("g (float[2,3] x) => (float y) { y = Relu (x) }")
    model.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(XbarcError, match=r"'x' has shape \[\*\] \(unknown rank\)"):
        compile_model(model, tmp_path)
    program = compile_model(model, tmp_path, x=(4, 5))
    assert program.inputs[0].type == TensorType("f32", (4, 5))


def test_too_new_opset_is_refused(tmp_path):
    newest = onnx.defs.onnx_opset_version()
    model = parse(
        f'<ir_version: 8, opset_import: ["" : {newest + 1}]>\n'
        "g (float[2] x) => (float y) { y = Relu (x) }"
    )
    with pytest.raises(XbarcError, match=f"opset {newest + 1}, newer than opset {newest}"):
        compile_model(model, tmp_path)


def test_opsets_older_than_9_are_converted(tmp_path):
    model = parse(
        '<ir_version: 4, opset_import: ["" : 6]>\n'
        "g (float[1,4] x) => (float y) { h = Relu (x) y = Gemm (h, w, c) }",
        {"w": random((4, 3), 1), "c": random((3,), 2)},
    )
    program = compile_model(model, tmp_path)
    (layer,) = program.layers()
    assert layer.kind == "gemm"
    relu = program.ops[0]
    assert relu.op_type == "Relu" and relu.opset == 9


def test_corrupt_initializer_is_reported(tmp_path):
    model = parse("g (float[2,3] x) => (float y) { y = MatMul (x, w) }", {"w": random((3, 4))})
    model.graph.initializer[0].raw_data = b"\x00" * 5
    with pytest.raises(XbarcError, match="invalid ONNX model: .*raw_data size"):
        compile_model(model, tmp_path)


def test_layer_errors_name_the_node(tmp_path):
    model = parse(
        "g (float[1,2,4,4] x) => (float y) { y = Conv (x, w) }", {"w": random((2, 2, 3))}, y="conv3"
    )
    path = save(model, tmp_path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, HARDWARE)
    assert str(caught.value).startswith(
        f'{path}: error: node "conv3" (Conv): the weight has rank 3 but the input has rank 4'
    )


def test_external_data_is_read_from_the_model_folder(tmp_path):
    model = parse("g (float[2,3] x) => (float y) { y = MatMul (x, w) }", {"w": random((3, 4), 1)})
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    program = import_onnx(path, HARDWARE)
    np.testing.assert_array_equal(program.store["MatMul_0.weight"][0], random((3, 4), 1))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("location", ["../w.bin", "sub/../../w.bin", "/etc/passwd"])
def test_external_data_outside_the_model_folder_is_refused(location, tmp_path):
    model = parse("g (float[2,3] x) => (float y) { y = MatMul (x, w) }", {"w": random((3, 4), 1)})
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "w.bin").write_bytes(random((3, 4), 1).tobytes())
    with pytest.raises(XbarcError, match="outside the model's folder"):
        import_onnx(save(model, folder), HARDWARE)


# --- the onnx light model zoo ----------------------------------------------------------


def test_light_models_import_with_all_their_weights():
    started = time.perf_counter()
    for path in sorted(LIGHT.glob("*.onnx")):
        model = onnx.load(path)
        program = import_onnx(path, HARDWARE)
        expected = weight_bearing_counts(model)
        layers = list(program.layers())
        assert len(layers) == len(expected), path.name
        assert sum(layer.weight_count for layer in layers) == sum(expected), path.name
        ops = Counter(op_types(program))
        assert ops["ConstantOfShape"] == 0, path.name
        assert ops["Dropout"] == 0, path.name
    assert len(list(LIGHT.glob("*.onnx"))) == 9
    print(f"imported 9 light models in {time.perf_counter() - started:.2f} s")


def test_light_resnet50_folds_every_batch_norm():
    program = import_onnx(LIGHT / "light_resnet50.onnx", HARDWARE)
    assert "BatchNormalization" not in op_types(program)
    convs = [layer for layer in program.layers() if layer.kind == "conv"]
    assert len(convs) == 53
    assert all(layer.source.endswith("(BatchNormalization)") for layer in convs)
