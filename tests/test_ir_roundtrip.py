"""The text format round-trips: parse(print(p)) == p, printing is stable, and a program
saved with its tensors loads back identical.

NaN != NaN, so dataclass `==` fails on any program holding a NaN float even when the
round trip is perfect; `same` compares structurally instead, treating NaN as equal to
NaN and telling -0.0 from 0.0 and an int from a float (which `==` would not).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings

from tests.ir_strategies import programs
from xbarc.hardware import make_hardware
from xbarc.ir.io import load_program, load_program_text, save_program, sidecar_path
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import (
    Array,
    Attribute,
    BasisCombine,
    Block,
    Const,
    ConvGeometry,
    CrossbarLayer,
    Cycle,
    DigitalOp,
    GraphInput,
    IndexTable,
    LayerRun,
    Phase,
    Program,
    Read,
    Segment,
    Slice,
    Span,
    TileWrite,
    Value,
    own_input,
    with_tensors,
)
from xbarc.ir.types import TensorType

SPEC = Path(__file__).parent.parent / "ir_spec" / "SPEC.md"
ROUND_TRIP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """Structural equality where NaN equals NaN, -0.0 differs from 0.0, and types match."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.compare
        )
    return a == b


def has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, tuple):
        return any(has_nan(item) for item in value)
    if dataclasses.is_dataclass(value):
        return any(has_nan(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare)
    return False


@ROUND_TRIP
@given(programs())
def test_parse_inverts_print_and_printing_is_stable(program: Program) -> None:
    text = print_program(program)
    parsed = parse_program(text, "random.xbar").program
    assert same(parsed, program)
    if not has_nan(program):
        assert parsed == program
    assert print_program(parsed) == text


def test_same_sees_what_equality_misses() -> None:
    assert same(float("nan"), float("nan"))
    assert not same(0.0, -0.0)
    assert not same(1, 1.0)
    assert same((Const("a"), 1.5), (Const("a"), 1.5))


# --- one program with every construct, printed exactly ------------------------------------


def kitchen_sink() -> Program:
    hardware = make_hardware(4, 8, 8)
    hardware = dataclasses.replace(
        hardware,
        tile_types=(
            *hardware.tile_types,
            dataclasses.replace(hardware.tile_types[0], name="t4x4", rows=4, cols=4, count=2),
        ),
    )
    geometry = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    conv = CrossbarLayer(
        "conv 1", "conv", "x", "y", TensorType("f32", (1, 8, 4, 4)), "w", "b", 1, 18, 8, geometry,
        "conv1 (Conv)",
    )  # fmt: skip
    fc = CrossbarLayer("fc", "gemm", "z", "out", TensorType("f32", (1, 10)), "fc.w", None, 1, 8, 10)
    split = DigitalOp(
        name="split",
        op_type="Split",
        domain="com.example",
        opset=1,
        inputs=(Value("y"), None, Const("split.sizes")),
        outputs=("z", ""),
        output_types=(TensorType("f32", (None, 8)), None),
        attributes=(
            Attribute("axis", "int", -1),
            Attribute("alpha", "float", -0.0),
            Attribute("mode", "string", 'a "b"'),
            Attribute("pads", "ints", ()),
            Attribute("scales", "floats", (float("inf"), 5e-324)),
            Attribute("names", "strings", ("p", "q")),
            Attribute("value", "tensor", Const("split.value")),
            Attribute("body", "proto", Const("split.body")),
        ),
    )
    relu = DigitalOp("", "Relu", "", 14, (Value("out"),), ("prob",), (TensorType("f32", None),))
    blocks = tuple(
        Block(i, "conv 1", i % 2, 0, Span(0, 8), Span(0, 8), "t8x8", i, 0, 0) for i in range(4)
    ) + (Block(4, "fc", 0, 0, IndexTable("fc.rows", 5), Span(0, 4), "t4x4", 4, 0, 0),)

    def own(index: int) -> Read:
        return Read(index, own_input(blocks[index]))

    return Program(
        hardware=hardware,
        inputs=(GraphInput("x", TensorType("f32", (1, 2, 4, 4))),),
        ops=(conv, split, fc, relu),
        outputs=("prob",),
        arrays=(
            Array(
                "conv 1",
                "weights",
                1,
                18,
                8,
                4,
                "differential",
                0.25,
                "w",
                "w.q",
                (Slice(0, "+", 0, 2), Slice(1, "-", 0, 2)),
                layer="conv 1",
            ),
            Array(
                "fc",
                "weights",
                1,
                8,
                10,
                4,
                "offset",
                Const("fc.scale"),
                "fc.w",
                "fc.q",
                (Slice(0, "+", 0, 4),),
            ),
        ),  # fmt: skip
        blocks=blocks,
        combines=(BasisCombine("fc", "fc", 8, "fc.coef", 4, float("nan")),),
        phases=(
            Phase(
                0,
                (TileWrite(0, 0), TileWrite(1, 1), TileWrite(2, 2), TileWrite(4, 4)),
                (LayerRun("conv 1", (Cycle((own(0), own(1))), Cycle((own(2),)))),),
            ),
            Phase(
                1,
                (TileWrite(3, 0),),
                (
                    LayerRun("conv 1", (Cycle((own(3),)),)),
                    LayerRun("fc", (Cycle((own(4), Read(4, Segment(1, Span(3, 8))))), Cycle(()))),
                ),
            ),
        ),
    )


KITCHEN_SINK_TEXT = """\
xbar 2
hardware {
  tile t8x8 rows=8 cols=8 count=4
  tile t4x4 rows=4 cols=4 count=2
  cell bits=2 g_min_us=2.5 g_max_us=25.0
  encoding differential
  dac bits=8 slice_bits=1
  adc bits=8 range=fixed cols_per_adc=128
  cost xbar_read_energy_pj=30.0 xbar_read_latency_ns=100.0 xbar_area_um2=25.0
       adc_energy_pj=1.56 adc_rate_gsps=1.28 adc_area_um2=1200.0
       dac_power_uw=3.9 dac_area_um2=0.166 shift_add_power_mw=0.05
       shift_add_area_um2=60.0 edram_access_pj=17.2 write_pulse_ns=50.0
       write_verify_ns=10.0 write_pv_iterations=10 write_pulse_energy_pj=1.0
       scale_multiply_energy_pj=1.1 scale_multiplier_area_um2=830.0 scale_bits=16
       buffer_area_um2_per_byte=1.27 combine_multiply_energy_pj=0.2 combine_add_energy_pj=0.1
       combine_lanes=256 digital_clock_ghz=1.2 combine_lane_area_um2=212.0
       buffer_access_bits=256 digital_op_energy_pj=0.1 digital_unit_area_um2=840.0
       input_bit_density=1.0
}

graph {
  input %x : f32[1,2,4,4]
  %y = xbar conv @"conv 1" (%x) : f32[1,8,4,4] {    # 144 weights
    weight=@w bias=@b groups=1 rows=18 cols=8
    kernel=[3,3] strides=[1,1] pads=[1,1,1,1] dilations=[1,1] output_padding=[]
    source="conv1 (Conv)"
  }
  %z, _ = op com.example:Split (%y, _, @split.sizes) : f32[?,8], ? {
    opset=1 name="split"
    attrs {
      axis:int=-1
      alpha:float=-0.0
      mode:string="a \\"b\\""
      pads:ints=[]
      scales:floats=[inf,5e-324]
      names:strings=["p","q"]
      value:tensor=@split.value
      body:proto=@split.body
    }
  }
  %out = xbar gemm @fc (%z) : f32[1,10] {    # 80 weights
    weight=@fc.w bias=none groups=1 rows=8 cols=10
    source=""
  }
  %prob = op Relu (%out) : f32[*] { opset=14 name="" }
  output %prob
}

array @"conv 1" weights layer=@"conv 1" groups=1 rows=18 cols=8 weight_bits=4 encoding=differential
      scale=0.25 values=@w levels=@w.q {    # 4 blocks
  slice 0 + shift=0 bits=2
  slice 1 - shift=0 bits=2
}

array @fc weights groups=1 rows=8 cols=10 weight_bits=4 encoding=offset
      scale=@fc.scale values=@fc.w levels=@fc.q {    # 1 block
  slice 0 + shift=0 bits=4
}

blocks {    # 5 blocks on 5 virtual tiles
  b0 = @"conv 1" slice 0 group 0 rows=[0:8] cols=[0:8] on v0:t8x8 at 0,0
  b1 = @"conv 1" slice 1 group 0 rows=[0:8] cols=[0:8] on v1:t8x8 at 0,0
  b2 = @"conv 1" slice 0 group 0 rows=[0:8] cols=[0:8] on v2:t8x8 at 0,0
  b3 = @"conv 1" slice 1 group 0 rows=[0:8] cols=[0:8] on v3:t8x8 at 0,0
  b4 = @fc slice 0 group 0 rows=@fc.rows[5] cols=[0:4] on v4:t4x4 at 0,0
}

combine @fc basis=@fc segment_rows=8 coefficients=@fc.coef coef_bits=4 scale=nan

# phase 0: 4 tiles written (212 cells in blocks), 1 layer run, 2 cycles per input vector
phase 0 {
  write v0..v2 -> t0..t2, v4 -> t4
  run @"conv 1" {
    cycle b0..b1 <- g0[0:8]
    cycle b2 <- g0[0:8]
  }
}

# phase 1: 1 tile written (64 cells in blocks), 2 layer runs, 3 cycles per input vector
phase 1 {
  write v3 -> t0
  run @"conv 1" {
    cycle b3 <- g0[0:8]
  }
  run @fc {
    cycle b4 <- g0 @fc.rows[5]; b4 <- g1[3:8]
    cycle
  }
}
"""


def test_every_construct_prints_as_documented() -> None:
    program = kitchen_sink()
    assert print_program(program) == KITCHEN_SINK_TEXT
    assert same(parse_program(KITCHEN_SINK_TEXT).program, program)


def test_hand_written_text_may_omit_defaults_and_comments_and_reorder_hardware() -> None:
    text = """
    xbar 2   # the format version
    hardware { encoding offset tile t rows=4 cols=4 count=1 cost write_pv_iterations=3 }
    graph { input %x : f32[] }
    """
    program = parse_program(text).program
    assert program.hardware.encoding == "offset"
    assert program.hardware.cost.write_pv_iterations == 3
    assert program.hardware.cost.xbar_read_energy_pj == 30.0  # default kept
    assert program.hardware.cell == make_hardware(1).cell
    assert program.inputs == (GraphInput("x", TensorType("f32", ())),)
    assert program.ops == program.blocks == program.phases == ()


def test_ranges_expand_in_order() -> None:
    text = """xbar 2
    hardware { tile t rows=4 cols=4 count=8 }
    blocks { b6 = @a slice 0 group 0 rows=[0:4] cols=[0:4] on v0:t at 0,0 }
    phase 3 { write v5..v7 -> t0..t2, v1 -> t7 write v0 -> t6
              run @l { cycle b4..b6, b0 <- g0[0:4]; b2..b3 <- g1 @r[4:8] } }
    """
    phase = parse_program(text).program.phases[0]
    assert [(w.vtile, w.tile) for w in phase.writes] == [(5, 0), (6, 1), (7, 2), (1, 7), (0, 6)]
    reads = phase.runs[0].cycles[0].reads
    assert [read.block for read in reads] == [4, 5, 6, 0, 2, 3]
    assert {read.input for read in reads[:4]} == {Segment(0, Span(0, 4))}
    assert {read.input for read in reads[4:]} == {Segment(1, IndexTable("r", 4, 4))}


def test_locations_point_at_statements() -> None:
    parsed = parse_program(KITCHEN_SINK_TEXT, "sink.xbar")
    lines = KITCHEN_SINK_TEXT.splitlines()

    def line_of(*key: Any) -> str:
        where = parsed.location(*key)
        assert where.file == "sink.xbar"
        return lines[where.line - 1][where.column - 1 :]

    assert line_of("tile_type", "t4x4").startswith("tile t4x4")
    assert line_of("op", 1).startswith("%z, _ = op")
    assert line_of("op", "conv 1").startswith('%y = xbar conv @"conv 1"')
    assert line_of("value", "z").startswith("%z, _ = op")
    assert line_of("array", "fc").startswith("array @fc")
    assert line_of("slice", "conv 1", 1).startswith("slice 1 -")
    assert line_of("block", 4).startswith("b4 = @fc")
    assert line_of("combine", "fc").startswith("combine @fc")
    assert line_of("phase", 1).startswith("phase 1 {")
    assert line_of("write", 0, 3).startswith("write v0..v2")
    assert line_of("run", 1, 1).startswith("run @fc")
    assert line_of("cycle", 0, 0, 1).startswith("cycle b2")
    assert line_of("read", 1, 1, 0, 0).startswith("b4 <- g0 @fc.rows[5]")
    assert line_of("read", 1, 1, 0, 1).startswith("b4 <- g1[3:8]")
    assert parsed.location("block", 99) == parsed.location("nothing")
    assert str(parsed.location("block", 99)) == "sink.xbar"


def test_spec_example_parses() -> None:
    """The first ```xbar example of SPEC.md is a complete, valid text."""
    match = re.search(r"```xbar\n(.*?)```", SPEC.read_text("utf-8"), re.DOTALL)
    assert match is not None
    program = parse_program(match.group(1), "SPEC.md").program
    assert program.blocks and program.phases and program.arrays


def test_spec_grammar_excerpt_matches_the_grammar() -> None:
    match = re.search(r"```lark\n(.*?)```", SPEC.read_text("utf-8"), re.DOTALL)
    assert match is not None
    grammar = (SPEC.parent / "xbar.lark").read_text("utf-8").splitlines()
    excerpt = [line for line in match.group(1).splitlines() if line.strip()]
    assert len(excerpt) > 50
    assert [line for line in excerpt if line not in grammar] == []


# --- save and load with real tensors ------------------------------------------------------


def program_with_tensors() -> Program:
    rng = np.random.default_rng(7)
    program = kitchen_sink()
    tensors = {
        "w": rng.normal(size=(1, 18, 8)).astype(np.float32),
        "b": rng.normal(size=(8,)).astype(np.float32),
        "w.q": rng.integers(-7, 8, size=(1, 18, 8)).astype(np.int8),
        "fc.rows": np.array([0, 2, 3, 5, 7], np.int32),
        "fc.scale": np.full((1, 10), 0.5, np.float64),
        "split.sizes": np.array([8, 8], np.int64),
        "split.value": np.array(1.5, np.float32),  # a scalar
        "split.body": np.frombuffer(b"\x08\x01", np.uint8),
        "empty": np.zeros((0, 3), np.float16),
        "file": np.array([True, False]),  # a name np.savez itself would choke on
        "gpu 0/näme:x": np.array(["a", "bc"]),
    }
    return with_tensors(program, tensors)


def test_save_then_load_gives_the_same_program_and_tensors(tmp_path: Path) -> None:
    program = program_with_tensors()
    path = tmp_path / "sink.xbar"
    save_program(path, program)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sink.xbar", "sink.xbar.npz"]
    assert path.read_text("utf-8") == print_program(program)
    loaded = load_program(path, verify=False)  # the kitchen sink breaks invariants on purpose
    assert same(loaded, program)
    assert set(loaded.store) == {decl.name for decl in program.tensors}
    for name, data in program.store.items():
        assert loaded.store[name].dtype == data.dtype
        np.testing.assert_array_equal(loaded.store[name], data)
    structure = load_program_text(str(path))
    assert same(structure.program, program) and len(structure.program.store) == 0
    assert structure.location("array", "fc").line is not None


def test_saving_replaces_an_older_program(tmp_path: Path) -> None:
    path = tmp_path / "p.xbar"
    save_program(path, program_with_tensors())
    smaller = with_tensors(Program(make_hardware(2)), {"only": np.ones(3, np.float32)})
    save_program(path, smaller)
    loaded = load_program(path, verify=False)
    assert loaded == smaller
    assert list(loaded.store) == ["only"]
    assert sidecar_path(path) == tmp_path / "p.xbar.npz"


def test_graph_only_program_needs_no_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "g.xbar"
    path.write_text(print_program(Program(make_hardware(1))), "utf-8")
    assert load_program(path) == Program(make_hardware(1))
