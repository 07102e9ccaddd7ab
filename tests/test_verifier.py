"""The verifier rejects each broken invariant with a message that names the culprit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.programs import depthwise_program, layers_program
from xbarc.diagnostics import Location, XbarcError
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import Cycle, LayerRun, Phase, Read, Segment, Slice, Span, TileWrite, own_input
from xbarc.ir.verifier import verify
from xbarc.passes.allocate import Allocate
from xbarc.passes.manager import parse_pipeline, run_pipeline


@pytest.fixture(scope="module")
def compiled():
    rng = np.random.default_rng(0)
    program = layers_program([rng.normal(size=(1, 200, 100)), rng.normal(size=(1, 100, 10))])
    pipeline = "quantize{weight-bits=4,cell-bits=2},tile,allocate"
    return run_pipeline(program, parse_pipeline(pipeline))


def expect_error(program, message):
    with pytest.raises(XbarcError) as error:
        verify(program)
    assert message in str(error.value)


def test_compiled_program_verifies(compiled):
    verify(compiled)


def test_block_outside_its_array(compiled):
    block = replace(compiled.blocks[0], rows=Span(100, 260))
    blocks = (block,) + compiled.blocks[1:]
    expect_error(replace(compiled, blocks=blocks), "b0: rows [100:260] are not within 0..200")


def test_block_beyond_tile_edge(compiled):
    block = replace(compiled.blocks[0], row_offset=60)
    expect_error(replace(compiled, blocks=(block,) + compiled.blocks[1:]), "exceed the 128 rows")


def test_overlapping_blocks(compiled):
    second = replace(compiled.blocks[1], vtile=compiled.blocks[0].vtile)
    blocks = (compiled.blocks[0], second) + compiled.blocks[2:]
    expect_error(replace(compiled, blocks=blocks), "blocks b0 and b1 overlap")


def test_slices_must_cover_magnitude_bits(compiled):
    array = compiled.arrays[0]
    broken = replace(array, slices=(Slice(0, "+", 0, 2), Slice(1, "-", 0, 2), Slice(2, "-", 2, 1)))
    expect_error(replace(compiled, arrays=(broken,) + compiled.arrays[1:]), "+ slices cover 2 of 3")


def with_read(program, read: Read, cycle_position: int = 0):
    """`program` with the first read of cycle `cycle_position` of its first run replaced."""
    phase = program.phases[0]
    run = phase.runs[0]
    cycle = run.cycles[cycle_position]
    cycles = list(run.cycles)
    cycles[cycle_position] = replace(cycle, reads=(read,) + cycle.reads[1:])
    runs = (replace(run, cycles=tuple(cycles)),) + phase.runs[1:]
    return replace(program, phases=(replace(phase, runs=runs),) + program.phases[1:])


def test_block_read_twice(compiled):
    phase = compiled.phases[0]
    last = compiled.blocks[-1]
    extra = LayerRun("fc1", (Cycle((Read(last.index, own_input(last)),)),))
    broken = replace(phase, runs=phase.runs + (extra,))
    expect_error(replace(compiled, phases=(broken,)), "is read 2 times by @fc1")


def test_a_weight_block_reads_the_input_rows_its_weights_multiply(compiled):
    first = compiled.blocks[0]
    assert compiled.phases[0].runs[0].cycles[0].reads[0] == Read(0, Segment(0, Span(0, 128)))
    shifted = Read(0, Segment(0, Span(1, 129)))
    expect_error(
        with_read(compiled, shifted),
        "the read of b0 must drive the input rows its weights multiply: g0[0:128]",
    )
    expect_error(
        with_read(compiled, Read(0, Segment(1, first.rows))),
        "the read of b0: @fc0 has no input group g1",
    )
    expect_error(
        with_read(compiled, Read(0, Segment(0, Span(100, 201)))),
        "the read of b0: input rows [100:201] are not within 0..200",
    )
    expect_error(
        with_read(compiled, Read(0, Segment(0, Span(0, 100)))),
        "the read of b0 drives 100 input rows onto its 128 rows",
    )


def test_a_block_is_read_at_most_once_per_cycle(compiled):
    cycle = compiled.phases[0].runs[0].cycles[0]
    twice = with_read(compiled, cycle.reads[1])
    expect_error(twice, f"b{cycle.reads[1].block} is read twice in one cycle")


def test_reads_of_one_tile_drive_one_input_vector():
    program = run_pipeline(depthwise_program(16), parse_pipeline("quantize,tile,allocate"))
    first, second = program.blocks[0], program.blocks[1]
    assert first.vtile == second.vtile and first.group != second.group
    # the second group's block moved onto the first one's rows: two inputs on those rows
    moved = replace(second, row_offset=first.row_offset)
    blocks = list(program.blocks)
    blocks[1] = moved
    expect_error(replace(program, blocks=tuple(blocks)), "need different inputs on the same rows")


def test_read_errors_point_at_the_read_in_the_text(compiled):
    text = print_program(compiled)
    assert "    cycle b0..b3 <- g0[0:128]; b4..b7 <- g0[128:200]" in text
    broken = text.replace("b4..b7 <- g0[128:200]", "b4..b7 <- g0[127:199]", 1)
    parsed = parse_program(broken, "m.xbar")
    with pytest.raises(XbarcError) as error:
        verify(parsed.program, parsed.locate)
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "g0[127:199]" in text)
    column = broken.splitlines()[line - 1].index("b4..b7") + 1
    assert str(error.value).startswith(f"m.xbar:{line}:{column}: error: the read of b4 must")


def test_block_read_when_its_tile_is_not_resident(compiled):
    phase = compiled.phases[0]
    broken = replace(phase, writes=phase.writes[1:])
    expect_error(replace(compiled, phases=(broken,)), "v0 is not on any tile then")


def test_write_onto_a_tile_that_does_not_exist(compiled):
    phase = compiled.phases[0]
    writes = (TileWrite(0, 999),) + phase.writes[1:]
    expect_error(replace(compiled, phases=(replace(phase, writes=writes),)), "t999 does not exist")


def test_layers_run_in_graph_order(compiled):
    phase = compiled.phases[0]
    broken = replace(phase, runs=tuple(reversed(phase.runs)))
    expect_error(replace(compiled, phases=(broken,)), "out of graph order")


def test_blocks_sharing_columns_cannot_share_a_cycle():
    program = run_pipeline(depthwise_program(16), parse_pipeline("quantize,tile,allocate"))
    first, second = program.blocks[0], program.blocks[1]
    moved = replace(second, col_offset=first.col_offset, row_offset=first.row_offset + 9)
    blocks = list(program.blocks)
    blocks[1] = moved
    expect_error(replace(program, blocks=tuple(blocks)), "share v0 in one cycle")


def test_missing_phase_index_and_value_use_before_definition(compiled):
    bad_phase = replace(compiled.phases[0], index=3)
    expect_error(replace(compiled, phases=(bad_phase,)), "phase 3 is out of order")
    layer = replace(compiled.ops[0], input="nowhere")
    expect_error(replace(compiled, ops=(layer,) + compiled.ops[1:]), "reads %nowhere before")


def test_errors_carry_the_location_given_by_locate(compiled):
    block = replace(compiled.blocks[0], rows=Span(0, 300))
    program = replace(compiled, blocks=(block,) + compiled.blocks[1:])
    with pytest.raises(XbarcError) as error:
        verify(program, lambda key: Location("model.xbar", 12, 3) if key == ("block", 0) else None)
    assert str(error.value).startswith("model.xbar:12:3: error: block b0")


def test_phases_with_no_runs_for_a_block():
    program = run_pipeline(depthwise_program(16), parse_pipeline("quantize,tile,allocate"))
    phase = program.phases[0]
    emptied = Phase(0, phase.writes, ())
    expect_error(replace(program, phases=(emptied,)), "is read 0 times")


def test_index_tables_must_increase_within_their_array_and_vector(compiled):
    from xbarc.ir.tile import IndexTable, with_tensors

    program = with_tensors(compiled, {"fc1.index": np.array([0, 3, 9, 4, 5, 250], np.int32)})

    def with_rows(table: IndexTable):
        block = replace(program.blocks[0], rows=table)
        # the rows b0 no longer holds are zero weights, as the sparse mapping leaves out
        levels = program.store["fc0.levels"].copy()
        dropped = np.setdiff1d(np.arange(128), program.store["fc1.index"][table.start : table.stop])
        levels[:, dropped] = 0
        zeroed = with_tensors(program, {"fc0.levels": levels})
        return Allocate().apply(replace(zeroed, blocks=(block,) + program.blocks[1:]))

    verify(with_rows(IndexTable("fc1.index", 3)))  # 0, 3, 9
    verify(with_rows(IndexTable("fc1.index", 2, 3)))  # 4, 5
    expect_error(with_rows(IndexTable("fc1.index", 3, 1)), "must increase strictly within 0..199")
    expect_error(with_rows(IndexTable("fc1.index", 2, 4)), "must increase strictly within 0..199")
    expect_error(with_rows(IndexTable("fc1.index", 4, 3)), "has no entries 3..6 (shape [6])")


def test_blocks_a_pass_kept_are_not_checked_again_unless_what_they_rest_on_changed(
    compiled, monkeypatch
):
    from xbarc.hardware import TileType
    from xbarc.ir import verifier

    checked = []
    original = verifier._Verifier.check_blocks
    monkeypatch.setattr(
        verifier._Verifier, "check_blocks", lambda self: checked.append(1) or original(self)
    )
    rerun = replace(compiled, phases=compiled.phases[:])
    verify(rerun, verified=compiled)
    assert checked == []  # the same blocks, arrays, tensors and tile shapes
    verify(replace(compiled, blocks=compiled.blocks[:1] + compiled.blocks[1:]), verified=compiled)
    assert checked == [1]  # a new blocks tuple is checked
    tile_type = compiled.hardware.tile_types[0]
    smaller = (TileType(tile_type.name, 64, tile_type.cols, tile_type.count),)
    shrunk = replace(compiled, hardware=replace(compiled.hardware, tile_types=smaller))
    with pytest.raises(XbarcError, match="exceed the 64 rows"):
        verify(shrunk, verified=compiled)
