"""Issue 15, deliver 4: no program that would compute something other than what its text
says gets past the verifier, the frontend refuses weights and inputs it cannot map, and
every name survives a round trip through the text and the sidecar.

Each test edits a small compiled program (its text, or a tensor of its sidecar with the
declared digest updated, as a careful forger would) and checks the one-line error names
the entity at its file:line. Before issue 15 each of these programs loaded and ran.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.programs import depthwise_program, layers_program
from xbarc.diagnostics import XbarcError
from xbarc.frontend import import_onnx
from xbarc.hardware import make_hardware
from xbarc.ir.io import load_program, save_program
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import Const, Span, with_tensors
from xbarc.ir.verifier import verify
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.session import InferenceSession

# --- programs to break -----------------------------------------------------------------


def compiled(pipeline: str, *shapes: tuple[int, int, int]):
    rng = np.random.default_rng(0)
    program = layers_program([rng.normal(size=shape) for shape in shapes])
    return run_pipeline(program, parse_pipeline(pipeline))


@pytest.fixture(scope="module")
def mlp():
    """200 -> 20 -> 10, 4-bit weights in 2-bit cells, per-column scales: fc0 is cut into
    rows [0:128] and [128:200] (blocks b0..b7), fc1 is one row block (b8..b11)."""
    return compiled("quantize{weight-bits=4,cell-bits=2},tile,allocate", (1, 200, 20), (1, 20, 10))


@pytest.fixture(scope="module")
def mlp8():
    """The same with 8-bit weights and one scale per tensor."""
    return compiled(
        "quantize{weight-bits=8,cell-bits=2,scale=tensor},tile,allocate", (1, 200, 20), (1, 20, 10)
    )


@pytest.fixture(scope="module")
def conv():
    program = depthwise_program(4)
    return run_pipeline(program, parse_pipeline("quantize{weight-bits=4},tile,allocate"))


def save(tmp_path: Path, program) -> Path:
    path = tmp_path / "p.xbar"
    save_program(path, program)
    return path


def edited(tmp_path: Path, program, *changes: tuple[str, str]) -> tuple[Path, str]:
    """`program` saved with its text edited (each `old` must occur); the path and text."""
    path = save(tmp_path, program)
    text = path.read_text("utf-8")
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text, "utf-8")
    return path, text


def line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


def rejected(path: Path, message: str, line: int | None = None) -> str:
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    error = str(caught.value)
    assert message in error, error
    assert "\n" not in error
    if line is not None:
        assert error.startswith(f"{path}:{line}:"), error
    return error


def ideal_output(program, x: np.ndarray) -> np.ndarray:
    (output,) = InferenceSession(program, "ideal").run(None, {"x": x})
    return output


def test_the_unbroken_programs_load(tmp_path, mlp, mlp8, conv):
    for name, program in (("a", mlp), ("b", mlp8), ("c", conv)):
        folder = tmp_path / name
        folder.mkdir()
        load_program(save(folder, program))


# --- blocks cover their array exactly --------------------------------------------------


def test_a_row_left_out_between_blocks_is_refused(tmp_path, mlp):
    """`rows=[129:200]` on the second row block of fc0 (and its read) left row 128 out of
    every tile and changed the outputs, and loaded before issue 15."""
    changes = [
        (
            f"b{i} = @fc0 slice {i - 4} group 0 rows=[128:200]",
            f"b{i} = @fc0 slice {i - 4} group 0 rows=[129:200]",
        )
        for i in range(4, 8)
    ]
    path, text = edited(tmp_path, mlp, *changes, ("g0[128:200]", "g0[129:200]"))
    broken = load_program(path, verify=False)
    x = np.random.default_rng(1).normal(size=(1, 200)).astype(np.float32)
    assert not np.allclose(ideal_output(broken, x), ideal_output(mlp, x))  # it computes else
    rejected(path, "array @fc0: slice 0 group 0 leaves row 128 column", line_of(text, "array @fc0"))


def test_rows_left_out_at_the_start_are_refused(tmp_path, mlp):
    """`rows=[2:128]`: rows 0 and 1 of fc0 on no tile."""
    changes = [
        (
            f"b{i} = @fc0 slice {i} group 0 rows=[0:128]",
            f"b{i} = @fc0 slice {i} group 0 rows=[2:128]",
        )
        for i in range(4)
    ]
    path, text = edited(tmp_path, mlp, *changes, ("g0[0:128]", "g0[2:128]"))
    rejected(path, "leaves row 0 column", line_of(text, "array @fc0"))


def test_a_row_placed_twice_is_refused(tmp_path, mlp):
    """Two row blocks of one slice holding the same rows count them twice."""
    changes = [
        (
            f"b{i} = @fc0 slice {i - 4} group 0 rows=[128:200]",
            f"b{i} = @fc0 slice {i - 4} group 0 rows=[120:200]",
        )
        for i in range(4, 8)
    ]
    path, text = edited(tmp_path, mlp, *changes, ("g0[128:200]", "g0[120:200]"))
    rejected(path, "holds row 120 column 0 of slice 0 group 0 twice", line_of(text, "b4 = "))


def test_a_column_left_out_is_refused(tmp_path, mlp):
    """The fuzz campaign's `cols=[0:9]` of a 10-column array: column 9 of slice 0 lost."""
    old = "b8 = @fc1 slice 0 group 0 rows=[0:20] cols=[0:10]"
    path, text = edited(tmp_path, mlp, (old, old.replace("cols=[0:10]", "cols=[0:9]")))
    rejected(path, "array @fc1: slice 0 group 0 leaves row", line_of(text, "array @fc1"))


def test_a_block_moved_to_another_slice_is_refused(tmp_path, mlp):
    """`slice 1` changed to `slice 0`: slice 0 held twice, slice 1 on no tile."""
    old = "b1 = @fc0 slice 1 group 0"
    path, text = edited(tmp_path, mlp, (old, "b1 = @fc0 slice 0 group 0"))
    rejected(
        path, "block b1: @fc0 holds row 0 column 0 of slice 0 group 0 twice", line_of(text, "b1 = ")
    )


def test_offset_encoding_needs_every_cell_placed(tmp_path):
    """Under offset encoding a zero weight is the cell 2^(B-1), and the blocks of the
    shift-0 slice carry the offset correction: a column of zero weights left out of the
    top slice alone, or a zero column left out of every slice, changes nothing, but a
    column of weights left out does."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 20, 10))
    weight[:, :, 9] = 0
    program = run_pipeline(
        layers_program([weight]),
        parse_pipeline("quantize{weight-bits=4,cell-bits=2,encoding=offset},tile,allocate"),
    )
    text = print_program(program)
    assert "slice 1 + shift=2 bits=2" in text
    lines = [line for line in text.splitlines() if " = @fc0 slice " in line]
    dropped = [(line, line.replace("cols=[0:10]", "cols=[0:9]")) for line in lines]
    folder = tmp_path / "zero"
    folder.mkdir()
    load_program(edited(folder, program, *dropped)[0])  # column 9 (zeros) in no slice: fine
    folder = tmp_path / "top"
    folder.mkdir()
    path, text = edited(folder, program, dropped[1])  # slice 1 alone leaves out the 2^(B-1)
    rejected(path, "slice 1 group 0 leaves row 0 column 9 (level 0)", line_of(text, "array @fc0"))
    folder = tmp_path / "weights"
    folder.mkdir()
    moved = [(a, b.replace("cols=[0:9]", "cols=[1:10]")) for a, b in dropped]
    path, text = edited(folder, program, *moved)
    rejected(path, "slice 0 group 0 leaves row 1 column 0 (level -2)", line_of(text, "array @fc0"))


def test_a_block_of_zero_cells_may_be_left_out(tmp_path):
    """The sparse mappings drop zero cells: rows whose levels are all zero need no tile."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 40, 8))
    weight[:, 10:20] = 0
    program = layers_program([weight])
    program = run_pipeline(program, parse_pipeline("quantize,tile{mapping=sparse},allocate"))
    load_program(save(tmp_path, program))


# --- scales, conductances, converters, costs ---------------------------------------------


@pytest.mark.parametrize("scale", ["nan", "inf", "0.0", "-0.5"])
def test_a_bad_tensor_scale_is_refused(tmp_path, mlp8, scale):
    text = print_program(mlp8)
    old = re.search(r"scale=[0-9.e+-]+ values=@fc0", text).group(0)  # type: ignore[union-attr]
    path, text = edited(tmp_path, mlp8, (old, f"scale={scale} values=@fc0"))
    rejected(path, f"array @fc0: scale {scale} is not a finite number above 0")


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_a_bad_column_scale_is_refused(tmp_path, mlp, bad):
    scale = mlp.store["fc1.scale"].copy()
    scale[0, 3] = bad
    path = save(tmp_path, with_tensors(mlp, {"fc1.scale": scale}))
    text = path.read_text("utf-8")
    rejected(path, "array @fc1: scale @fc1.scale holds", line_of(text, "array @fc1"))


@pytest.mark.parametrize("tensor", ["fc0.w", "fc0.scale"])
def test_non_finite_weights_are_refused(tmp_path, mlp, tensor):
    data = mlp.store[tensor].copy()
    data.flat[5] = np.nan
    path = save(tmp_path, with_tensors(mlp, {tensor: data}))
    rejected(path, f"@{tensor} holds")


@pytest.mark.parametrize(
    "cell, message",
    [
        ("g_min_us=30.0 g_max_us=25.0", "g_min_us 30.0 must be below g_max_us 25.0"),
        ("g_min_us=25.0 g_max_us=25.0", "g_min_us 25.0 must be below g_max_us 25.0"),
        ("g_min_us=nan g_max_us=25.0", "g_min_us nan"),
        ("g_min_us=-1.0 g_max_us=25.0", "g_min_us -1.0"),
        ("g_min_us=2.5 g_max_us=inf", "g_max_us inf"),
    ],
)
def test_bad_conductances_are_refused(tmp_path, mlp, cell, message):
    path, text = edited(tmp_path, mlp, ("g_min_us=2.5 g_max_us=25.0", cell))
    rejected(path, message, line_of(text, "cell bits"))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("cols_per_adc=128", "cols_per_adc=0", "cols_per_adc=0"),
        ("adc bits=8", "adc bits=25", "ADC bits 25"),
        ("adc bits=8", "adc bits=0", "ADC bits 0"),
        ("dac bits=8", "dac bits=1", "DAC bits 1"),
        ("dac bits=8", "dac bits=33", "DAC bits 33"),
        ("slice_bits=1", "slice_bits=9", "slice_bits 9"),
        ("slice_bits=1", "slice_bits=0", "slice_bits 0"),
        ("cell bits=2", "cell bits=17", "cell bits 17"),
    ],
)
def test_converters_the_runtime_cannot_run_are_refused(tmp_path, mlp, old, new, message):
    path, text = edited(tmp_path, mlp, (old, new))
    rejected(path, message, line_of(text, new))


def test_converters_that_overflow_the_exact_accumulator_are_refused(tmp_path, mlp8):
    """24-bit ADC and DAC with 8-bit weights over 200 rows: sums past 2^63 would wrap."""
    path, text = edited(
        tmp_path, mlp8, ("adc bits=8", "adc bits=24"), ("dac bits=8", "dac bits=24")
    )
    rejected(path, "need a 64-bit accumulator", line_of(text, "adc bits=24"))
    path.write_text(text.replace("adc bits=24", "adc bits=16"), "utf-8")
    load_program(path)  # 16 + 24 + 8 + 8 bits fit


@pytest.mark.parametrize(
    "old, new",
    [
        ("rows=128 cols=128 count=128", "rows=100000 cols=128 count=128"),
        ("rows=128 cols=128 count=128", "rows=128 cols=128 count=2000000"),
    ],
)
def test_absurd_tiles_are_refused(tmp_path, mlp, old, new):
    path, text = edited(tmp_path, mlp, (old, new))
    rejected(path, "more than xbarc supports")


@pytest.mark.parametrize(
    "old, new",
    [
        ("xbar_read_energy_pj=30.0", "xbar_read_energy_pj=nan"),
        ("xbar_read_energy_pj=30.0", "xbar_read_energy_pj=-30.0"),
        ("adc_rate_gsps=1.28", "adc_rate_gsps=inf"),
        ("adc_rate_gsps=1.28", "adc_rate_gsps=0.0"),
        ("digital_clock_ghz=1.2", "digital_clock_ghz=0.0"),
        ("combine_lanes=256", "combine_lanes=0"),
        ("write_pv_iterations=10", "write_pv_iterations=-1"),
    ],
)
def test_bad_costs_are_refused(tmp_path, mlp, old, new):
    path, text = edited(tmp_path, mlp, (old, new))
    key = new.split("=")[0]
    rejected(path, f"cost {key}={new.split('=')[1]}", line_of(text, "cost "))


# --- levels, dimensions, geometry --------------------------------------------------------


def test_level_minus_128_in_an_8_bit_array_is_refused(tmp_path, mlp8):
    """np.abs(int8(-128)) is -128: the level range check let it pass."""
    levels = mlp8.store["fc0.levels"].copy()
    assert levels.dtype == np.int8
    levels[0, 3, 4] = -128
    path = save(tmp_path, with_tensors(mlp8, {"fc0.levels": levels}))
    text = path.read_text("utf-8")
    rejected(path, "levels exceed 8-bit range +-127", line_of(text, "array @fc0"))


@pytest.mark.parametrize("weight_bits", ["1", "17"])
def test_weight_bits_the_runtime_cannot_hold_are_refused(tmp_path, mlp8, weight_bits):
    path, text = edited(tmp_path, mlp8, ("weight_bits=8", f"weight_bits={weight_bits}"))
    rejected(path, f"weight_bits={weight_bits} is not within 2..16")


@pytest.mark.parametrize(
    "old, new",
    [
        ("input %x : f32[1,200]", "input %x : f32[-1,200]"),
        ("%y0 = xbar matmul @fc0 (%x) : f32[1,20]", "%y0 = xbar matmul @fc0 (%x) : f32[1,-20]"),
    ],
)
def test_negative_dimensions_are_refused(tmp_path, mlp, old, new):
    path, text = edited(tmp_path, mlp, (old, new))
    rejected(path, "negative dimension", line_of(text, new))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("strides=[1,1]", "strides=[0,1]", "strides [0, 1]"),
        ("dilations=[1,1]", "dilations=[1,-1]", "dilations [1, -1]"),
        ("pads=[1,1,1,1]", "pads=[1,-1,1,1]", "pads [1, -1, 1, 1]"),
        ("kernel=[3,3]", "kernel=[3,2]", "kernel [3, 2]"),
    ],
)
def test_bad_convolution_geometry_is_refused(tmp_path, conv, old, new, message):
    path, text = edited(tmp_path, conv, (old, new))
    rejected(path, message, line_of(text, "xbar conv"))


# --- the frontend -------------------------------------------------------------------------


def gemm_model(tmp_path: Path, weight: np.ndarray, bias_value: float = 0.0) -> Path:
    node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(np.full(weight.shape[1], bias_value, np.float32), "B"),
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_weight_is_refused_naming_the_node(tmp_path, bad):
    weight = np.ones((4, 3), np.float32)
    weight[2, 1] = bad
    with pytest.raises(XbarcError) as caught:
        import_onnx(gemm_model(tmp_path, weight), make_hardware(4))
    error = str(caught.value)
    assert "node 'fc' (Gemm)" in error and "'W'" in error and "NaN or infinite" in error, error


def test_a_non_finite_bias_is_refused_naming_the_node(tmp_path):
    with pytest.raises(XbarcError) as caught:
        import_onnx(gemm_model(tmp_path, np.ones((4, 3)), np.nan), make_hardware(4))
    assert "node 'fc' (Gemm)" in str(caught.value) and "bias" in str(caught.value)


def test_a_non_finite_constant_weight_is_refused(tmp_path):
    """A weight given by a Constant node rather than an initializer."""
    weight = np.ones((4, 3), np.float32)
    weight[0, 0] = np.inf
    nodes = [
        helper.make_node(
            "Constant", [], ["W"], name="w", value=numpy_helper.from_array(weight, "w")
        ),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4))
    assert "node 'mm' (MatMul)" in str(caught.value), str(caught.value)


def test_a_non_finite_weight_inside_a_loop_body_is_refused(tmp_path):
    """The fuzz campaign's -inf in an initializer a Loop body's MatMul reads."""
    from tests.onnx_models import tanh_loop_model

    weight = np.ones((6, 6), np.float32)
    weight[1, 2] = -np.inf
    path = tmp_path / "m.onnx"
    onnx.save(tanh_loop_model(weight), path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4, 8, 8))
    error = str(caught.value)
    assert "(MatMul)" in error and "NaN or infinite" in error, error


def test_a_non_finite_constant_of_a_digital_op_is_kept(tmp_path):
    """Only weights that go on crossbars must be finite: an inf in an Add stays digital."""
    nodes = [helper.make_node("Add", ["x", "C"], ["y"], name="add")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array([0, np.inf, 0, 0], np.float32), "C")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    program = import_onnx(path, make_hardware(4))
    assert np.isinf(program.store["C"]).any()


def test_a_negative_input_dimension_is_refused(tmp_path):
    path = gemm_model(tmp_path, np.ones((4, 3)))
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -2
    onnx.save(model, path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4))
    error = str(caught.value)
    assert "input 'x'" in error and "negative dimension -2" in error, error


@pytest.mark.parametrize("shape", [(4, 0), (0, 3)])
def test_a_zero_size_weight_is_refused(tmp_path, shape):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, shape[1]])],
        [numpy_helper.from_array(np.ones(shape, np.float32), "W")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4))
    error = str(caught.value)
    assert "node 'mm' (MatMul)" in error and "no elements" in error, error


def test_a_conv_with_zero_output_channels_is_refused(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="c", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((0, 2, 3, 3), np.float32), "W")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4))
    assert "node 'c' (Conv)" in str(caught.value), str(caught.value)


# --- names ---------------------------------------------------------------------------------

# any text, with the characters that end lines in some readers, quotes, escapes and lone
# surrogates; a tensor name is also a zip member name, which holds neither NUL nor a lone
# surrogate (the verifier refuses those, test below)
awkward_names = st.text(min_size=1, max_size=8) | st.sampled_from(
    ["a\u2028b", "\x85", "\x7f", "tab\there", 'q"\\', "x\ud800", "a b", "a\x00b", "\x1b[0m"]
)
tensor_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=8,
) | st.sampled_from(["a\u2028b", "\x85", "tab\there", 'q"\\', "a/../b", "/abs", "x.npy"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=awkward_names, layer=tensor_names, tensor=tensor_names)
def test_names_round_trip_through_text_and_sidecar(tmp_path_factory, value, layer, tensor):
    """A compiled program whose value, layer and tensor names are any text prints, saves,
    loads and verifies to the same program."""
    rng = np.random.default_rng(0)
    program = layers_program([rng.normal(size=(1, 6, 3))], tiles=4, tile_rows=8, tile_cols=8)
    (first,) = program.ops
    weight = program.store[first.weight]
    layer_op = replace(first, name=layer, input=value, weight=tensor)
    program = replace(
        with_tensors(replace(program, tensors=(), store=type(program.store)()), {tensor: weight}),
        inputs=(replace(program.inputs[0], name=value),),
        ops=(layer_op,),
    )
    program = run_pipeline(program, parse_pipeline("quantize,tile,allocate"))
    assert parse_program(print_program(program)).program == replace(
        program, store=type(program.store)()
    )
    folder = tmp_path_factory.mktemp("names")
    loaded = load_program(save(folder, program))
    assert print_program(loaded) == print_program(program)
    assert loaded.ops[0].name == layer and loaded.inputs[0].name == value
    assert np.array_equal(loaded.store[tensor], weight)


@pytest.mark.parametrize("name", ["a\x00b", "x\ud800"])
def test_a_tensor_name_no_sidecar_can_hold_is_refused(mlp, name):
    """A zip member name cannot hold NUL (zipfile cuts the name there) nor a lone surrogate
    (not UTF-8): the sidecar could not give the tensor back."""
    with pytest.raises(XbarcError) as caught:
        verify(with_tensors(mlp, {name: np.zeros(2, np.float32)}))
    assert "NUL or a lone surrogate" in str(caught.value)


def test_a_nul_in_an_onnx_name_is_refused_naming_the_node(tmp_path):
    path = gemm_model(tmp_path, np.ones((4, 3)))
    model = onnx.load(path)
    model.graph.initializer[0].name = "W\x00"
    model.graph.node[0].input[1] = "W\x00"
    onnx.save(model, path)
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4))
    error = str(caught.value)
    assert "node 'fc' (Gemm)" in error and "NUL" in error, error


def test_scale_const_is_declared(mlp):
    """(The fixture's fc1 has a per-column scale, which the column scale tests rely on.)"""
    assert isinstance(mlp.arrays[1].scale, Const)


def test_a_name_that_is_not_utf8_is_refused_naming_the_node(tmp_path):
    """protobuf hands a name whose bytes are not UTF-8 over as bytes: an internal error
    (UnicodeDecodeError) before issue 15."""
    path = gemm_model(tmp_path, np.ones((4, 3)))
    model = onnx.load(path)
    model.graph.node[0].name = "fXc"
    data = model.SerializeToString()
    assert data.count(b"fXc") == 1
    path.write_bytes(data.replace(b"fXc", b"f\xafc"))
    with pytest.raises(XbarcError) as caught:
        import_onnx(path, make_hardware(4))
    error = str(caught.value)
    assert "ONNX node '#0' (Gemm)" in error and "not UTF-8 text" in error, error


def test_an_index_table_entry_of_minus_2_to_the_31_is_refused():
    """A squeezed table whose last entry became -2^31: the i32 step up to it wrapped round
    to a rise, so the table "increased" and the coverage count crashed (fuzz campaign,
    mobilenet squeeze): now an error at the block."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 40, 8))
    weight[:, 10:20] = 0
    program = run_pipeline(
        layers_program([weight]), parse_pipeline("quantize,tile{mapping=squeeze},allocate")
    )
    block = next(b for b in program.blocks if not isinstance(b.rows, Span))
    table = program.store[block.rows.tensor].copy()
    table[block.rows.stop - 1] = np.iinfo(np.int32).min
    with pytest.raises(XbarcError) as caught:
        verify(with_tensors(program, {block.rows.tensor: table}))
    assert "must increase strictly" in str(caught.value), str(caught.value)


# --- regions and element types (issue 15, the slow fuzz test's findings) -------------------

LOOP_CORPUS = Path(__file__).parent / "fuzz_corpus" / "loop.xbar"


def loop_mutant(tmp_path: Path, old: str, new: str) -> Path:
    text = LOOP_CORPUS.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "p.xbar"
    path.write_text(text.replace(old, new))
    (tmp_path / "p.xbar.npz").write_bytes(Path(f"{LOOP_CORPUS}.npz").read_bytes())
    return path


def test_the_loop_corpus_program_verifies() -> None:
    load_program(LOOP_CORPUS)


@pytest.mark.parametrize(
    "old, new",
    [
        ("      output %scan\n", "      output %scan\n      output %scan\n"),  # one too many
        ("      output %scan\n", ""),  # one too few
        (", %h : f32[2,4]) {", ") {"),  # a carried value the body does not take
    ],
    ids=["extra-output", "missing-output", "missing-input"],
)
def test_a_region_whose_signature_disagrees_with_its_op_is_refused(
    tmp_path: Path, old: str, new: str
) -> None:
    """A Loop body returning one value more or less than the op expects (or taking fewer)
    loaded and then failed at run time with an internal zip() error (exit 3)."""
    with pytest.raises(XbarcError, match="region body of op Loop takes"):
        load_program(loop_mutant(tmp_path, old, new))


def test_a_digital_op_declared_another_element_type_is_refused(tmp_path: Path) -> None:
    """`%cond_out = op Identity (%i) : bool[]` (the i64 iteration number declared bool)
    loaded and changed the outputs: the Loop stopped after one iteration."""
    path = loop_mutant(tmp_path, "op Identity (%cond) : bool[]", "op Identity (%i) : bool[]")
    with pytest.raises(XbarcError, match="op Identity returns i64, but %cond_out is declared bool"):
        load_program(path)


def test_a_loop_condition_that_is_not_bool_is_refused(tmp_path: Path) -> None:
    path = loop_mutant(tmp_path, "op Identity (%cond) : bool[]", "op Identity (%i) : i64[]")
    with pytest.raises(XbarcError, match="returns a i64 condition, not bool"):
        load_program(path)


def test_minus_one_dimensions_are_unknown_as_exporters_write_them(tmp_path):
    """Paddle's exporters write an unknown dimension as -1 (PP-OCR's text direction
    classifier has input x: [-1,3,?,?]): it is a dynamic dimension, not a negative one, and
    --input-shape gives it, as it gives a `?`."""
    path = gemm_model(tmp_path, np.arange(12, dtype=np.float32).reshape(4, 3))
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    onnx.save(model, path)
    with pytest.raises(XbarcError, match=r"unknown dimensions \(use --input-shape x=1x4\)"):
        import_onnx(path, make_hardware(4))
    program = import_onnx(path, make_hardware(4), input_shapes={"x": (2, 4)})
    assert program.inputs[0].type.shape == (2, 4)


def test_a_negative_dimension_given_by_input_shape_is_accepted(tmp_path):
    """--input-shape replaces the model's shape, its negative dimension included."""
    path = gemm_model(tmp_path, np.ones((4, 3)))
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -2
    onnx.save(model, path)
    program = import_onnx(path, make_hardware(4), input_shapes={"x": (2, 4)})
    assert program.inputs[0].type.shape == (2, 4)
