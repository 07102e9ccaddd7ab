"""Properties of the quantize, tile and allocate passes that text cannot show: levels and
slices against numpy references, coverage and invariants over random weights.

What a pass prints for a given program (its options, its errors) is tested as golden
text through `xbarc opt`, in tests/passes/<pass>/ (see tests/passes/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.programs import depthwise_program, layers_program
from xbarc.ir.cells import make_slices, slice_cells
from xbarc.ir.levels import quantize_levels
from xbarc.ir.tile import Span
from xbarc.ir.verifier import verify
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.passes.quantize import with_few_ones
from xbarc.report import report


def compile_program(program, pipeline):
    return run_pipeline(program, parse_pipeline(pipeline))


def test_quantize_per_tensor_matches_numpy_reference():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(1, 50, 30)).astype(np.float32)
    levels, scale = quantize_levels(weight, 8, per_column=False)
    expected_scale = np.float32(np.abs(weight).max() / 127)
    assert scale == pytest.approx(float(expected_scale))
    expected = np.clip(np.round(weight / expected_scale), -127, 127)
    np.testing.assert_array_equal(levels, expected)
    assert levels.dtype == np.int8
    assert np.max(np.abs(levels * scale - weight)) <= scale / 2 + 1e-7


def test_quantize_per_column_scales_each_column_to_full_range():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(2, 40, 7)).astype(np.float32) * np.arange(1, 8)
    levels, scale = quantize_levels(weight, 6, per_column=True)
    assert scale.shape == (2, 7)
    assert np.all(np.abs(levels).max(axis=1) == 31)


@settings(max_examples=60, deadline=None)
@given(
    weight_bits=st.integers(2, 12),
    cell_bits=st.integers(1, 4),
    encoding=st.sampled_from(["differential", "offset"]),
    seed=st.integers(0, 2**16),
)
def test_slices_recombine_to_levels(weight_bits, cell_bits, encoding, seed):
    assume(cell_bits <= weight_bits)
    rng = np.random.default_rng(seed)
    max_level = 2 ** (weight_bits - 1) - 1
    levels = rng.integers(-max_level, max_level + 1, size=(3, 5, 4))
    total = np.zeros(levels.shape, dtype=np.int64)
    for piece in make_slices(weight_bits, cell_bits, encoding):
        cells = slice_cells(levels, piece, weight_bits, encoding)
        assert cells.min() >= 0 and cells.max() < 2**piece.bits
        sign = 1 if piece.polarity == "+" else -1
        total += sign * (cells.astype(np.int64) << piece.shift)
    if encoding == "offset":
        total -= 2 ** (weight_bits - 1)
    np.testing.assert_array_equal(total, levels)


@settings(max_examples=60, deadline=None)
@given(
    weight_bits=st.integers(2, 12),
    max_ones=st.integers(1, 11),
    seed=st.integers(0, 2**16),
)
def test_max_ones_keeps_the_nearest_level_with_few_one_bits(weight_bits, max_ones, seed):
    assume(max_ones <= weight_bits - 1)
    top = 2 ** (weight_bits - 1) - 1
    levels = np.random.default_rng(seed).integers(-top, top + 1, size=(2, 6, 5))
    few = with_few_ones(levels, max_ones, weight_bits)
    allowed = np.array([v for v in range(top + 1) if bin(v).count("1") <= max_ones])
    for level, kept in zip(levels.flat, few.flat, strict=True):
        assert bin(abs(int(kept))).count("1") <= max_ones
        assert kept == 0 or np.sign(kept) == np.sign(level)
        distances = np.abs(allowed - abs(int(level)))
        nearest = allowed[distances == distances.min()].min()  # the smaller on a tie
        assert abs(int(kept)) == nearest


def test_dense_tiling_covers_every_weight_of_every_slice_once():
    rng = np.random.default_rng(3)
    program = layers_program([rng.normal(size=(1, 300, 200))], tiles=1000)
    program = compile_program(program, "quantize{weight-bits=8,cell-bits=2},tile,allocate")
    array = program.arrays[0]
    assert len(array.slices) == 8  # 7 magnitude bits in 2-bit cells, two polarities
    covered = np.zeros((len(array.slices), 300, 200), dtype=np.int32)
    for block in program.blocks:
        assert isinstance(block.rows, Span) and isinstance(block.cols, Span)
        assert len(block.rows) <= 128 and len(block.cols) <= 128
        rows = slice(block.rows.start, block.rows.stop)
        cols = slice(block.cols.start, block.cols.stop)
        covered[block.slice, rows, cols] += 1
    assert np.all(covered == 1)
    # 300 rows -> 3 row blocks, 200 columns -> 2 column blocks, 8 slices
    assert len(program.blocks) == 3 * 2 * 8
    assert program.vtile_count == len(program.blocks)


def test_a_vtile_still_on_the_chip_is_read_there_not_written_again():
    rng = np.random.default_rng(8)
    weights = []
    for shape in [(1, 60, 20), (1, 20, 30), (1, 30, 10)]:
        weight = rng.normal(size=shape)
        weight[rng.random(shape) < 0.8] = 0.0
        weights.append(weight)
    pipeline = "quantize{weight-bits=8,cell-bits=1},tile{rows=8,cols=8,mapping=squeeze,pack=model},"
    program = compile_program(layers_program(weights), pipeline + "allocate{tiles=3}")
    verify(program)
    assert len(program.phases) > 1
    on_chip: dict[int, int] = {}  # tile -> vtile
    kept = 0
    for phase in program.phases:
        for write in phase.writes:
            assert write.vtile not in on_chip.values()  # never written while still there
            on_chip[write.tile] = write.vtile
        written = {write.vtile for write in phase.writes}
        reads = {
            program.blocks[i].vtile for run in phase.runs for c in run.cycles for i in c.blocks
        }
        assert reads <= set(on_chip.values())
        kept += len(reads - written)
    assert kept > 0  # tiles that layers share are read again in later phases as they are
    writes = sum(len(phase.writes) for phase in program.phases)
    needed = sum(
        len(phase_reads)
        for phase_reads in [
            {program.blocks[i].vtile for run in phase.runs for c in run.cycles for i in c.blocks}
            for phase in program.phases
        ]
    )
    assert writes == needed - kept


def test_report_counts_cycles_per_inference():
    program = compile_program(depthwise_program(32), "quantize,tile,allocate{tiles=100}")
    summary = report(program)
    # 64 output pixels, one cycle each, 8 bit-serial input slices
    assert summary.layers[0].cycles == 64 * 1 * 8
    assert summary.layers[0].utilization == pytest.approx(
        (32 * 9 * slices_of(program)) / (program.vtile_count * 128 * 128)
    )


def slices_of(program):
    return len(program.arrays[0].slices)
