"""Batch safety: a program compiled for batch 1 and fed 4 images gives the 4 right
answers, or refuses in one line; never a wrong shape or a partial read (issue 13, item 3).

Stand-ins: the pattern torch exports for `x.view(x.size(0), -1)` (Shape -> Gather ->
Unsqueeze -> Concat -> Reshape, and Shape -> Slice -> Concat -> Reshape) with a fixed
batch-1 input and with a symbolic batch, a plain CNN with a symbolic batch, and a model
that fixes its batch itself (the constant Reshape target [1, -1] of a traced export).
The right answers are onnxruntime's on each image alone; in `quant` (with calibrated DAC
ranges, so that a batch does not change the converters) the batch's rows equal the runs
of each image alone, bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.onnx_models import parse, random, run_onnxruntime, save
from tests.test_cli import assert_one_line_error, run_cli
from xbarc.calibrate import calibrate
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.diagnostics import XbarcError
from xbarc.ir.io import save_program
from xbarc.ir.printer import print_program
from xbarc.runtime.patches import check_width
from xbarc.session import InferenceSession

PROFILES = ("ideal", "quant", "rram")
IMAGES = 4
# quant runs of one image and of the batch use the same converters only with fixed
# ranges: calibrated DAC ranges, and a lossless ADC so that the error is the weights' and
# the DAC's
FIXED_RANGES = ("input_range=calibrated", "adc_bits=exact")

CONV_HEAD = """
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    r = Relu (c)
"""
# torch: x.view(x.size(0), -1)
VIEW_GATHER = """
    s = Shape (r)
    n = Gather <axis = 0> (s, zero)
    u = Unsqueeze (n, axes0)
    t = Concat <axis = 0> (u, minus1)
    f = Reshape (r, t)
"""
VIEW_SLICE = """
    s = Shape (r)
    n = Slice (s, starts, ends)
    t = Concat <axis = 0> (n, minus1)
    f = Reshape (r, t)
"""
CONSTANT_TARGET = """
    f = Reshape (r, one_minus1)
"""
TAIL = """
    y = Gemm (f, g, b)
}
"""


def stand_in(batch: str, flatten: str):
    text = f"g (float[{batch},3,6,6] x) => (float y) {{{CONV_HEAD}{flatten}{TAIL}"
    constants = {
        "w": random((4, 3, 3, 3), 1),
        "g": random((4 * 6 * 6, 5), 2),
        "b": random((5,), 3),
        "zero": np.array(0, np.int64),
        "axes0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64),
        "starts": np.array([0], np.int64),
        "ends": np.array([1], np.int64),
        "one_minus1": np.array([1, -1], np.int64),
    }
    used = {
        name: array for name, array in constants.items() if f"{name})" in text or f"{name}," in text
    }
    return parse(text, used)


GENERIC = {
    "view_gather_batch1": ("1", VIEW_GATHER),
    "view_slice_batch1": ("1", VIEW_SLICE),
    "view_gather_symbolic": ("N", VIEW_GATHER),
    "flatten_symbolic": ("N", "    f = Flatten (r)\n"),
}


def compiled(tmp_path, model):
    path = save(model, tmp_path)
    return compile_onnx(path, CompileOptions(tiles=16, input_shapes={"x": (1, 3, 6, 6)}))


def images(count: int = IMAGES) -> np.ndarray:
    return random((count, 3, 6, 6), 7)


def one_by_one(model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run_onnxruntime(model, {"x": x[i : i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_batch_generic_program_gives_each_image_its_answer(tmp_path, name):
    model = stand_in(*GENERIC[name])
    program = compiled(tmp_path, model)
    assert not program.inputs[0].fixed_batch
    assert "batch=fixed" not in print_program(program)
    x = images()
    expected = one_by_one(model, x)
    scale = np.abs(expected).max()

    (ideal,) = InferenceSession(program, "ideal").run(None, {"x": x})
    assert ideal.shape == (IMAGES, 5)
    np.testing.assert_allclose(ideal, expected, rtol=1e-4, atol=1e-5 * scale)

    calibrated = calibrate(program, {"x": x}, percentile=100)
    quant = InferenceSession(calibrated, "quant", overrides=FIXED_RANGES)
    (batch,) = quant.run(None, {"x": x})
    alone = np.concatenate([quant.run(None, {"x": x[i : i + 1]})[0] for i in range(IMAGES)])
    assert batch.shape == (IMAGES, 5)
    np.testing.assert_array_equal(batch, alone)
    assert np.abs(batch - expected).max() < 0.05 * scale

    (noisy,) = InferenceSession(program, "rram", seed=3).run(None, {"x": x})
    assert noisy.shape == (IMAGES, 5)
    # each row answers its own image: nearer its own reference than any other image's
    distances = np.linalg.norm(noisy[:, None, :] - expected[None, :, :], axis=2)
    assert (distances.argmin(axis=1) == np.arange(IMAGES)).all(), distances


def test_symbolic_batch_is_not_folded_to_the_compiled_one(tmp_path):
    """`Shape(x)[0:1]` stays a computation; the dims that do not depend on the batch fold."""
    model = stand_in("N", VIEW_SLICE)
    program = compiled(tmp_path, model)
    kinds = [getattr(op, "op_type", None) or op.kind for op in program.ops]
    assert kinds == ["conv", "Relu", "Shape", "Slice", "Concat", "Reshape", "gemm"]
    # the types are the compiled batch's, as before
    assert program.value_types()["f"].shape == (1, 144)


def test_model_that_fixes_its_batch_is_refused_in_every_profile(tmp_path):
    program = compiled(tmp_path, stand_in("1", CONSTANT_TARGET))
    assert program.inputs[0].fixed_batch
    assert "input %x : f32[1,3,6,6] batch=fixed" in print_program(program)
    x = images()
    for profile in PROFILES:
        session = InferenceSession(program, profile)
        with pytest.raises(XbarcError) as caught:
            session.run(None, {"x": x})
        message = str(caught.value)
        assert "\n" not in message
        for fragment in ("'x'", "batch 4", "1x3x6x6", "--input-shape x=4x3x6x6"):
            assert fragment in message, message
        # the compiled batch still runs, and right
        (y,) = session.run(None, {"x": x[:1]})
        assert y.shape == (1, 5)


def test_fixed_batch_survives_save_and_load(tmp_path):
    program = compiled(tmp_path, stand_in("1", CONSTANT_TARGET))
    path = tmp_path / "fixed.xbar"
    save_program(path, program)
    with pytest.raises(XbarcError, match="compiled for 1x3x6x6"):
        InferenceSession(path, "quant").run(None, {"x": images()})


@pytest.mark.parametrize("profile", PROFILES)
def test_cli_run_with_four_images(tmp_path, capsys, profile):
    generic = tmp_path / "generic.xbar"
    fixed = tmp_path / "fixed.xbar"
    save_program(generic, compiled(tmp_path, stand_in("1", VIEW_GATHER)))
    save_program(fixed, compiled(tmp_path, stand_in("1", CONSTANT_TARGET)))
    feeds = tmp_path / "x.npz"
    np.savez(feeds, x=images())
    out = tmp_path / "y.npz"
    status, text, _ = run_cli(
        capsys, "run", generic, "--input", feeds, "--noise", profile, "-o", out
    )
    assert status == 0
    assert "y: float32[4, 5]" in text
    assert np.load(out)["y"].shape == (IMAGES, 5)
    status, _, err = run_cli(capsys, "run", fixed, "--input", feeds, "--noise", profile)
    assert_one_line_error(status, err, "'x'", "1x3x6x6", "--input-shape")


def test_compile_says_when_the_model_fixes_its_batch(tmp_path, capsys):
    for flatten, fixed in ((VIEW_GATHER, False), (CONSTANT_TARGET, True)):
        model = save(stand_in("1", flatten), tmp_path)
        status, text, _ = run_cli(capsys, "compile", model, "-o", tmp_path / "m.xbar")
        assert status == 0
        note = "batch: the model fixes its batch size, so the program runs batches of 1 only"
        assert (note in text) == fixed, text


def test_a_read_never_takes_an_input_of_another_width(tmp_path):
    """Without the batch=fixed guard (a program written by hand, or an older one), the
    layer behind the constant Reshape would get 4 x 144 features: quant and rram refuse
    it at the layer instead of reading the first 144; ideal fails in onnxruntime."""
    program = compiled(tmp_path, stand_in("1", CONSTANT_TARGET))
    unguarded = dataclasses.replace(
        program, inputs=tuple(dataclasses.replace(i, fixed_batch=False) for i in program.inputs)
    )
    for profile in PROFILES:
        with pytest.raises(XbarcError) as caught:
            InferenceSession(unguarded, profile).run(None, {"x": images()})
        if profile != "ideal":
            assert "layer @" in str(caught.value) and "1x576" in str(caught.value)


def test_check_width_per_layer_kind(tmp_path):
    program = compiled(tmp_path, stand_in("N", "    f = Flatten (r)\n"))
    conv, gemm = program.layers()
    check_width(conv, (2, 3, 6, 6))
    check_width(gemm, (2, 144))
    for layer, shape in ((conv, (2, 4, 6, 6)), (conv, (3, 6, 6)), (gemm, (2, 143))):
        with pytest.raises(XbarcError, match=f"layer @{layer.name}"):
            check_width(layer, shape)


def test_inputs_of_different_leading_sizes_fix_the_batch(tmp_path):
    model = parse(
        """g (float[1,3] x, float[2,3] h) => (float y) {
            s = ReduceSum <keepdims = 1> (h, axes)
            y = Add (x, s)
        }""",
        {"axes": np.array([0], np.int64)},
    )
    program = compile_onnx(save(model, tmp_path), CompileOptions(tiles=4))
    assert [i.fixed_batch for i in program.inputs] == [True, True]


def test_batch_moved_to_another_axis_still_runs_any_batch(tmp_path):
    """[N, C, T] -> [T, N, C], as a recognizer's output before CTC decoding."""
    model = parse(
        """g (float[N,4,7] x) => (float y) {
            t = Transpose <perm = [2, 0, 1]> (x)
            y = MatMul (t, w)
        }""",
        {"w": random((4, 3), 1)},
    )
    program = compile_onnx(
        save(model, tmp_path), CompileOptions(tiles=4, input_shapes={"x": (1, 4, 7)})
    )
    assert not program.inputs[0].fixed_batch
    x = random((IMAGES, 4, 7), 2)
    (y,) = InferenceSession(program, "quant").run(None, {"x": x})
    assert y.shape == (7, IMAGES, 3)
    expected = run_onnxruntime(model, {"x": x})[0]
    assert np.abs(y - expected).max() < 0.05 * np.abs(expected).max()


def test_calibrate_runs_a_fixed_program_in_its_compiled_batch(tmp_path):
    program = compiled(tmp_path, stand_in("1", CONSTANT_TARGET))
    x = images(3)
    calibrated = calibrate(program, {"x": x}, percentile=100)
    assert calibrated.calibration is not None
    # the same ranges as three runs of one image each: the largest |x| of the first layer
    first = calibrated.calibration.of(program.ops[0].name)
    assert first is not None and first.input_range == pytest.approx(np.abs(x).max(), rel=1e-6)
    with pytest.raises(XbarcError, match="compiled for 1x3x6x6"):
        calibrate(program, {"x": x}, batch_size=3)


def test_dims_that_do_not_depend_on_the_batch_still_fold(tmp_path):
    """x.view(x.size(0), x.size(1), -1): Gather(Shape(x), 1) and Slice(Shape(x), 1:2) fold
    to constants (the channels); Gather(Shape(x), 0) stays a computation."""
    model = parse(
        """g (float[N,4,6] x) => (float y, float z) {
            s = Shape (x)
            n = Gather <axis = 0> (s, zero)
            c = Gather <axis = 0> (s, one)
            cs = Slice (s, one1, two1)
            un = Unsqueeze (n, axes0)
            uc = Unsqueeze (c, axes0)
            t = Concat <axis = 0> (un, uc, minus1)
            y = Reshape (x, t)
            z = Mul (cs, cs)
        }""",
        {
            "zero": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "one1": np.array([1], np.int64),
            "two1": np.array([2], np.int64),
            "axes0": np.array([0], np.int64),
            "minus1": np.array([-1], np.int64),
        },
    )
    program = compile_onnx(
        save(model, tmp_path), CompileOptions(tiles=4, input_shapes={"x": (1, 4, 6)})
    )
    kinds = [op.op_type for op in program.ops]
    assert kinds == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Identity"]
    concat = program.ops[3]
    assert program.store[concat.inputs[1].name].tolist() == [4]  # Unsqueeze(Gather(s, 1))
    identity = program.ops[-1]
    assert program.store[identity.inputs[0].name].tolist() == [16]  # Mul(cs, cs) folded
    assert program.inputs[0].fixed_batch  # z = [16] has no batch
    x = random((1, 4, 6), 3)
    y, z = InferenceSession(program, "ideal").run(None, {"x": x})
    np.testing.assert_array_equal(y, x)
    assert z.tolist() == [16]


def test_control_flow_keeps_the_compiled_batch(tmp_path):
    """A branch is folded at the compiled shapes, where Shape(x)[0:1] is the constant [1]:
    the program must not claim to run any batch (the second inference at another batch
    sees the branch's constant target). Its inputs are batch=fixed; a batch of 4 is refused
    in one line, in every profile; batch 1 runs and matches onnxruntime."""
    from onnx import helper

    from tests.test_control_flow import DATA_CONDITION, branch, make_model

    view = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "stop"], ["n"]),
        helper.make_node("Concat", ["n", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
    ]
    then_branch = branch("then", [*view, helper.make_node("MatMul", ["flat", "m"], ["t"])], "t")
    else_branch = branch("else", [*view, helper.make_node("MatMul", ["flat", "k"], ["e"])], "e")
    nodes = [
        *DATA_CONDITION,
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    weights = {
        "m": random((2 * 4 * 4, 5), 2),
        "k": random((2 * 4 * 4, 5), 3),
        "zero": np.float32(0),
        "start": np.array([0], np.int64),
        "stop": np.array([1], np.int64),
        "minus_one": np.array([-1], np.int64),
    }
    model = make_model(nodes, [("x", ["N", 2, 4, 4])], ["y"], weights)
    path = save(model, tmp_path)
    program = compile_onnx(path, CompileOptions(tiles=16, input_shapes={"x": (1, 2, 4, 4)}))
    assert program.inputs[0].fixed_batch
    x = random((IMAGES, 2, 4, 4), 9)
    for profile in PROFILES:
        session = InferenceSession(program, profile)
        with pytest.raises(XbarcError, match="batch 4") as caught:
            session.run(None, {"x": x})
        assert "\n" not in str(caught.value)
    (y,) = InferenceSession(program, "ideal").run(None, {"x": x[:1]})
    np.testing.assert_allclose(y, run_onnxruntime(model, {"x": x[:1]})[0], rtol=1e-4, atol=1e-6)
