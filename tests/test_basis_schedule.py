"""BasisN programs in the IR: the basis pass's output, its copies on tiles, the schedule of
basis reads per input segment, and the verifier's checks of all three."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.programs import depthwise_program, layers_program
from xbarc.diagnostics import XbarcError
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import Cycle, LayerRun, Program, Read, Segment, Span
from xbarc.ir.verifier import verify
from xbarc.passes.manager import parse_pipeline, run_pipeline, target_chip

DIGITS = Path(__file__).parent / "fixtures" / "digits"


def compiled(program: Program, pipeline: str) -> Program:
    passes = parse_pipeline(pipeline)
    program = replace(program, hardware=target_chip(program.hardware, passes.passes))
    return run_pipeline(program, passes)


def basis_program(weights, tiles=16, rows=8, cols=8, basis="", cell_bits=2) -> Program:
    program = layers_program(weights, tiles=tiles, tile_rows=rows, tile_cols=cols)
    return compiled(
        program,
        f"quantize{{weight-bits=4,cell-bits={cell_bits}}},basis{{{basis}}},"
        f"tile{{rows={rows},cols={cols}}},allocate{{tiles={tiles}}}",
    )


def weights(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for shape in shapes]


def test_basis_program_has_one_phase_and_reads_every_segment_once_per_position():
    program = basis_program(weights((1, 20, 6), (1, 6, 5)), tiles=16)
    (basis,) = [array for array in program.arrays if array.kind == "basis"]
    assert basis.rows == 8 and basis.cols == 8  # K: as many as fit, at most L
    assert not [array for array in program.arrays if array.kind == "weights"]
    assert len(program.phases) == 1
    per_copy = len(program.blocks) // basis.copies
    assert basis.copies * per_copy == len(program.blocks)
    # 4-bit weights in 2-bit cells, differential: 2 slices x 2 polarities of 8 columns on one
    # 8 x 8 tile? no: 4 pieces of 8 columns take 4 tiles per copy, so 16 tiles hold 4 copies
    assert per_copy == 4 and basis.copies == 4
    runs = {run.layer: run for run in program.phases[0].runs}
    # fc0: 20 rows = 3 segments (8, 8, 4 rows) over 4 copies: one cycle
    assert len(runs["fc0"].cycles) == 1
    reads = [read for cycle in runs["fc0"].cycles for read in cycle.reads]
    assert sorted({(read.input.rows.start, read.input.rows.stop) for read in reads}) == [
        (0, 8),
        (8, 16),
        (16, 20),
    ]
    assert len(reads) == 3 * per_copy


def test_segments_serialize_when_copies_run_out():
    # one copy only: 5 segments of a 40-row layer take 5 cycles
    program = basis_program(weights((1, 40, 6)), tiles=4, basis="copies=1")
    (run,) = program.phases[0].runs
    assert len(run.cycles) == 5
    two = basis_program(weights((1, 40, 6)), tiles=8, basis="copies=2")
    assert len(two.phases[0].runs[0].cycles) == 3


def test_grouped_layers_read_each_group_segment():
    program = depthwise_program(channels=6, tiles=16)
    program = compiled(
        program,
        "quantize{weight-bits=4,cell-bits=2},basis{segment-rows=8},tile{rows=8,cols=8},"
        "allocate{tiles=16}",
    )
    (run,) = program.phases[0].runs
    reads = [read for cycle in run.cycles for read in cycle.reads]
    # 9 rows = 2 segments (8 + 1 rows) for each of 6 groups
    items = {(read.input.group, read.input.rows.start) for read in reads}
    assert items == {(g, s) for g in range(6) for s in (0, 8)}
    verify(program)


def test_basis_program_round_trips_through_text():
    program = basis_program(weights((1, 20, 6), (1, 6, 5)))
    text = print_program(program)
    assert "copies=4" in text and "combine @fc0 basis=@basis" in text
    assert parse_program(text).program == program  # equality compares tensor digests


def test_identity_basis_keeps_the_levels_as_coefficients():
    program = layers_program(weights((1, 8, 5)), tiles=8, tile_rows=8, tile_cols=8)
    quantized = compiled(program, "quantize{weight-bits=4,cell-bits=2}")
    levels = quantized.store[quantized.weights_of("fc0").levels]
    scale = quantized.store[quantized.weights_of("fc0").scale.name]
    combined = compiled(
        program, "quantize{weight-bits=4,cell-bits=2},basis{fit=identity,coef-bits=4}"
    )
    (combine,) = combined.combines
    coef = combined.store[combine.coefficients]  # [G, S, K, N], K = L = 8 unit vectors
    np.testing.assert_array_equal(coef[0, 0], levels[0])
    np.testing.assert_allclose(combined.store[combine.scale.name], scale, rtol=1e-6)


def test_reconstruction_error_falls_with_k():
    program = layers_program(weights((1, 32, 16), seed=3), tiles=64, tile_rows=8, tile_cols=8)
    errors = []
    for k in (2, 4, 8):
        combined = compiled(program, f"quantize{{weight-bits=8}},basis{{k={k},coef-bits=12}}")
        (combine,) = combined.combines
        basis = combined.store[combined.array("basis").values][0]
        coef = combined.store[combine.coefficients].astype(np.float64)
        scale = combined.store[combine.scale.name]
        rebuilt = np.einsum("gskn,lk->gsln", coef, basis).reshape(1, 32, 16) * scale[:, None]
        original = program.store["fc0.w"]
        errors.append(np.linalg.norm(rebuilt - original) / np.linalg.norm(original))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01  # K = L: only the coefficients' rounding is left


def test_kept_layers_stay_on_their_own_arrays():
    program = basis_program(weights((1, 20, 6), (1, 6, 5)), tiles=16, basis="keep=fc1")
    assert [a.layer for a in program.arrays if a.kind == "weights"] == ["fc1"]
    assert [combine.layer for combine in program.combines] == ["fc0"]
    assert len(program.phases) == 1


@pytest.mark.parametrize(
    ("basis", "tiles", "message"),
    [
        ("coef-bits=1", 16, "basis{coef-bits} (--coef-bits) must be between 2 and 16, got 1"),
        ("coef-bits=17", 16, "basis{coef-bits} (--coef-bits) must be between 2 and 16, got 17"),
        ("k=9", 16, "basis{k} (--basis-k) must be between 1 and the segment rows L = 8, got 9"),
        ("k=0", 16, "basis{k} (--basis-k) must be between 1 and the segment rows L = 8, got 0"),
        ("terms=9", 16, "basis{terms} (--basis-terms) must be between 1 and K = 8, got 9"),
        ("k=4,terms=5", 16, "basis{terms} (--basis-terms) must be between 1 and K = 4, got 5"),
        ("fit=pca", 16, "basis{fit} (--basis-fit): unknown fit 'pca'"),
        ("objective=loss", 16, "basis{objective}: unknown objective 'loss'"),
        ("objective=outputs", 16, "basis{objective}=outputs needs the layers' calibration"),
        ("keep=nope", 16, "basis{keep} (--basis-keep) names 'nope', which is no crossbar layer"),
        (
            "k=8",
            2,
            "K = 8 (basis{k}, --basis-k) does not fit the tile budget of 2 (--tiles",
        ),
        (
            "copies=5",
            16,
            "basis{copies} (--basis-copies) must be between 1 and 4, the copies of 4 tiles",
        ),
        (
            "fit=identity,k=4",
            16,
            "basis{k} (--basis-k): fit=identity has K = segment rows = 8 vectors",
        ),
    ],
)
def test_basis_options_out_of_range_are_refused(basis, tiles, message):
    with pytest.raises(XbarcError, match=re.escape(message)):
        basis_program(weights((1, 20, 6)), tiles=tiles, basis=basis)


def run_with(program: Program, runs: tuple[LayerRun, ...]) -> Program:
    phase = replace(program.phases[0], runs=runs)
    return replace(program, phases=(phase,))


def test_verifier_refuses_a_segment_read_twice_or_never():
    program = basis_program(weights((1, 20, 6)), tiles=16)
    (run,) = program.phases[0].runs
    cycle = run.cycles[0]
    dropped = Cycle(cycle.reads[:-1])
    with pytest.raises(XbarcError, match="never reads basis slice"):
        verify(run_with(program, (replace(run, cycles=(dropped,)),)))
    last = cycle.reads[-1]
    again = Cycle((replace(last, block=cycle.reads[0].block),))
    twice = replace(run, cycles=(cycle, again))
    with pytest.raises(XbarcError, match="not once"):
        verify(run_with(program, (twice,)))


def test_verifier_refuses_a_basis_read_off_the_segment_grid():
    program = basis_program(weights((1, 20, 6)), tiles=16)
    (run,) = program.phases[0].runs
    cycle = run.cycles[0]
    first = cycle.reads[0]
    shifted = Read(first.block, Segment(0, Span(3, 11)))
    bad = replace(run, cycles=(Cycle((shifted, *cycle.reads[1:])),))
    with pytest.raises(XbarcError, match=r"not a segment of 8 rows of @fc0"):
        verify(run_with(program, (bad,)))


def test_verifier_refuses_coefficients_wider_than_their_bits():
    program = basis_program(weights((1, 20, 6)), tiles=16, basis="coef-bits=4")
    (combine,) = program.combines
    coef = program.store[combine.coefficients].copy()
    coef[0, 0, 0, 0] = 8  # 4 bits: at most +-7
    from xbarc.ir.tile import with_tensors

    with pytest.raises(XbarcError, match="coefficients exceed the 4-bit range"):
        verify(with_tensors(program, {combine.coefficients: coef}))


def test_verifier_refuses_copies_of_a_weights_array():
    program = layers_program(weights((1, 8, 5)), tiles=8, tile_rows=8, tile_cols=8)
    program = compiled(program, "quantize{weight-bits=4}")
    array = replace(program.arrays[0], copies=2)
    with pytest.raises(XbarcError, match="copies=2"):
        verify(replace(program, arrays=(array,)))


def test_digits_fixtures_compile_with_the_basis_strategy(tmp_path):
    from xbarc.compiler import CompileOptions, compile_onnx

    for name in ("mlp.onnx", "lenet.onnx", "lenet_p90.onnx"):
        for tiles in (16, 128):
            options = CompileOptions(
                tiles=tiles, strategy="basis", input_shapes={"x": (1, 1, 8, 8)}
            )
            program = compile_onnx(DIGITS / name, options)
            assert len(program.phases) == 1
            assert {c.layer for c in program.combines} == {lay.name for lay in program.layers()}


def test_weight_report_measures_the_weights_a_combine_rebuilds():
    from xbarc.weight_report import weight_errors

    program = layers_program(weights((1, 20, 6), (1, 6, 5)), tiles=16, tile_rows=8, tile_cols=8)
    direct = compiled(program, "quantize{weight-bits=4}")
    identity = compiled(program, "quantize{weight-bits=4},basis{fit=identity,coef-bits=4}")
    for plain, combined in zip(weight_errors(direct), weight_errors(identity), strict=True):
        assert combined.layer == plain.layer and combined.scale == "basis"
        assert combined.sqnr_db == pytest.approx(plain.sqnr_db, abs=1e-6)
    low_rank = compiled(program, "quantize{weight-bits=4},basis{k=2,coef-bits=8}")
    assert weight_errors(low_rank)[0].sqnr_db < weight_errors(direct)[0].sqnr_db
