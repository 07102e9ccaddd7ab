"""Bit-plane reads: packed inputs and cells, AND + popcount sums converted by the ADC, against
a dense integer GEMM and `adc.adc_accumulate_numpy` read by read (the executor's reference),
on both backends; and whole programs on the bit-plane path against the other read paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.read_plans import random_reads
from xbarc.runtime import kernels
from xbarc.runtime.bitplane import bitplane_columns, prefers_sparse
from xbarc.runtime.kernels import bitplane
from xbarc.runtime.kernels.adc import adc_accumulate_numpy
from xbarc.runtime.kernels.fused import dequantize_items
from xbarc.runtime.reads import ReadPlan

PROPERTY = settings(max_examples=60, deadline=None)


@pytest.fixture(params=kernels.BACKENDS)
def backend(request):
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend("numba")


@st.composite
def layer_reads(draw):
    """A layer's random integer reads: groups, segments of rows that are slices or gather
    tables (not multiples of 64 long, shared by several reads), cells of 1 to 8 bits with
    all-zero columns, repeated targets, full scales below the largest sum (codes clip),
    offset-corrected columns; and both signs' DAC levels."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.integers(1, 3))
    rows = draw(st.sampled_from([5, 64, 100, 130, 200]))
    cols = draw(st.integers(1, 6))
    cell_bits = draw(st.sampled_from([1, 2, 3, 4, 8]))
    slice_bits = draw(st.sampled_from([1, 2]))
    magnitude_bits = draw(st.integers(1, 8))
    patches = draw(st.sampled_from([1, 7, 300, 600]))  # 300, 600: several runs of patches
    levels = draw(st.sampled_from([0, 1, 15, 255]))
    offset = draw(st.sampled_from([0, 128]))
    count = draw(st.integers(1, 6))
    reads = random_reads(
        rng, count, groups, rows, cols, cell_bits, (0.05, 0.5, 1.0), 2**slice_bits - 1, offset
    )
    high = 2**magnitude_bits
    signs = [
        (rng.integers(0, high, (groups * rows, patches)) >> rng.integers(0, 8)).astype(np.uint8)
        * (rng.random() < 0.8)
        for _ in range(2)
    ]
    return reads, groups, rows, cols, slice_bits, magnitude_bits, levels, offset, signs


def reference(reads, rows, cols, slice_bits, count, levels, offset, signs, acc) -> None:
    """acc += the read-out read by read, as `Executor._accumulate_by_read` does it: per
    sign, slice and read, the dense integer GEMM of its cells and digits through
    `adc_accumulate_numpy`; the offset correction from the reads' input sums."""
    unit = levels or 1
    for sign, levels_in in zip((1, -1), signs, strict=True):
        for j in range(count):
            shift = j * slice_bits
            digits = (levels_in.astype(np.int64) >> shift) & (2**slice_bits - 1)
            significance = sign << shift
            for read in reads:
                driven = digits[read.group * rows + np.arange(rows)[read.rows]]
                partial = read.cells_t.astype(np.int64) @ driven
                targets = read.group * cols + read.target
                factor = read.factor * significance
                adc_accumulate_numpy(partial, targets, factor, read.full_scale, levels, acc)
                if read.offset_columns is not None:
                    corrected = read.group * cols + np.arange(cols)[read.offset_columns]
                    acc[corrected] -= offset * unit * significance * driven.sum(axis=0)


def run_bitplane(reads, groups, rows, cols, slice_bits, magnitude_bits, levels, offset, signs):
    """The bit-plane read-out as the executor runs it: pack both signs, then one call."""
    columns = bitplane_columns(reads, rows, cols, slice_bits, levels, offset)
    count = -(-magnitude_bits // slice_bits)
    planes = count * slice_bits
    patches = signs[0].shape[1]
    packed = np.full((2 * planes, columns.words, patches), 0xDEAD, dtype=np.uint64)
    flags = np.zeros((2 * planes, columns.words, bitplane.runs_of(patches)), dtype=np.uint8)
    for sign, levels_in in enumerate(signs):
        if levels_in.any():
            bitplane.pack_inputs(levels_in, columns, sign * planes, planes, packed, flags)
    slices = [  # as the executor: the slices of the signs that have inputs
        (index * planes + j * slice_bits, sign << (j * slice_bits))
        for index, sign in enumerate((1, -1))
        if signs[index].any()
        for j in range(count)
    ]
    slice_plane, significance = np.array(slices, dtype=np.int64).reshape(-1, 2).T.copy()
    acc = np.arange(groups * cols * patches, dtype=np.int64).reshape(groups * cols, patches)
    bitplane.bitplane_accumulate(packed, flags, columns, slice_plane, significance, acc)
    return acc, packed, flags


@PROPERTY
@given(layer_reads())
def test_bitplane_reads_equal_a_gemm_then_the_adc_read_by_read(case):
    reads, groups, rows, cols, slice_bits, magnitude_bits, levels, offset, signs = case
    count = -(-magnitude_bits // slice_bits)
    patches = signs[0].shape[1]
    expected = np.arange(groups * cols * patches, dtype=np.int64).reshape(groups * cols, patches)
    reference(reads, rows, cols, slice_bits, count, levels, offset, signs, expected)
    by_numba, packed, flags = run_bitplane(*case)
    try:
        kernels.set_backend("numpy")
        by_numpy, packed_numpy, flags_numpy = run_bitplane(*case)
    finally:
        kernels.set_backend("numba")
    np.testing.assert_array_equal(by_numba, expected, strict=True)
    np.testing.assert_array_equal(by_numpy, expected, strict=True)
    present = np.repeat([signs[0].any(), signs[1].any()], len(packed) // 2)
    np.testing.assert_array_equal(packed[present], packed_numpy[present], strict=True)
    np.testing.assert_array_equal(flags, flags_numpy, strict=True)


def test_pack_bits_puts_row_i_on_bit_i_of_word_i_over_64():
    levels = np.zeros((130, 2), dtype=np.uint8)
    levels[0, 0] = 1  # plane 0, word 0, bit 0
    levels[63, 1] = 2  # plane 1, word 0, bit 63
    levels[129, 0] = 3  # planes 0 and 1, word 2, bit 1
    packed = bitplane.pack_bits(levels, 2)
    assert packed.shape == (2, 3, 2)
    assert packed[0, :, 0].tolist() == [1, 0, 2]
    assert packed[1, :, 0].tolist() == [0, 0, 2]
    assert packed[1, :, 1].tolist() == [2**63, 0, 0]
    assert not packed[0, :, 1].any()


def test_bitplane_rounds_half_to_even_clips_and_skips_zero_words(backend):
    # one read of 2 rows: column 0 cells (1, 0), column 1 cells (3, 3), both on output
    # 0 with factors 1 and -2 over full scale 8, 4 ADC levels; 3-bit levels, 1-bit slices
    levels_in = np.array([[1, 4], [3, 1]], dtype=np.uint8)
    cells = np.array([[1, 0], [3, 3]], dtype=np.uint8)
    read = ReadPlan(0, slice(0, 2), cells, np.array([0, 0]), np.array([1, -2]),
                    np.array([8, 8]), None)  # fmt: skip
    columns = bitplane_columns([read], 2, 1, 1, 4, 0)
    assert columns.cell_planes.tolist() == [1, 2]
    planes = 3
    packed = np.zeros((2 * planes, 1, 2), dtype=np.uint64)
    flags = np.zeros((2 * planes, 1, 1), dtype=np.uint8)
    bitplane.pack_inputs(levels_in, columns, 0, planes, packed, flags)
    assert packed[:planes, 0].tolist() == [[3, 2], [2, 0], [0, 1]]  # bit j of rows 0, 1
    assert flags[:, 0, 0].tolist() == [1, 1, 1, 0, 0, 0]
    acc = np.zeros((1, 2), dtype=np.int64)
    slice_plane = np.arange(2 * planes, dtype=np.int64)
    significance = np.array([1, 2, 4, -1, -2, -4], dtype=np.int64)
    bitplane.bitplane_accumulate(packed, flags, columns, slice_plane, significance, acc)
    # sums per plane: column 0 (1, 0), (0, 0), (0, 1); column 1 (6, 3), (3, 0), (0, 3);
    # codes rint(s / 2) clipped to 4: 0.5 -> 0, 1.5 -> 2, 3 -> 3, 6 -> 4
    codes0 = [(0, 0), (0, 0), (0, 0)]
    codes1 = [(3, 2), (2, 0), (0, 2)]
    want = [sum(8 * (2**j) * (codes0[j][p] - 2 * codes1[j][p]) for j in range(3)) for p in range(2)]
    assert acc.tolist() == [want]


def test_bitplane_columns_share_segments_and_drop_zero_columns():
    cells = np.array([[0, 0, 0], [1, 2, 3]], dtype=np.uint8)
    reads = [
        ReadPlan(0, slice(0, 3), cells, np.array([0, 1]), np.array([1, 1]), np.array([9, 9]),
                 None),
        ReadPlan(0, slice(0, 3), cells, np.array([2, 3]), np.array([2, 2]), np.array([9, 9]),
                 None),
        ReadPlan(1, np.array([0, 2, 4]), cells, np.array([0, 1]), np.array([1, 1]),
                 np.array([9, 9]), slice(0, 2)),
    ]  # fmt: skip
    columns = bitplane_columns(reads, 5, 4, 1, 255, 128)
    assert columns.segment_rows.tolist() == [0, 1, 2, 5, 7, 9]
    # the all-zero column of each read left out; two offset columns of ones for the last
    assert columns.column_segment.tolist() == [0, 0, 1, 1, 1]
    assert columns.target.tolist() == [1, 3, 5, 4, 5]
    assert columns.full_scale.tolist() == [9, 9, 9, 0, 0]
    assert columns.factor.tolist() == [1, 2, 1, -128 * 255, -128 * 255]


def sparse_rule_cases():
    """Layers' reads for `prefers_sparse`: (reads, rows, the answer at 2-bit DAC steps)."""
    rng = np.random.default_rng(0)

    def read(group, rows, cells_t):
        count = len(cells_t)
        return ReadPlan(group, rows, cells_t.astype(np.uint8), np.arange(count),
                        np.ones(count, dtype=np.int64), np.full(count, 99), None)  # fmt: skip

    dense = rng.integers(1, 4, (64, 128))
    one_cell = np.eye(64, 128, dtype=np.int64)  # a unit basis: one cell a column
    return [
        ([read(0, slice(0, 128), dense)], 128, False),
        ([read(0, slice(0, 128), one_cell)], 128, True),
        # depthwise: a 9-row segment per group, read by 8 columns
        ([read(g, slice(0, 9), rng.integers(1, 4, (8, 9))) for g in range(32)], 9, True),
        # a first convolution: one 9-row segment read by 64 columns
        ([read(0, slice(0, 9), rng.integers(1, 4, (64, 9)))], 9, False),
    ]


def test_sparse_kernel_is_preferred_for_sparse_cells_and_short_unshared_segments():
    for reads, rows, sparse in sparse_rule_cases():  # DAC steps of 2 bits
        assert prefers_sparse(reads, bitplane_columns(reads, rows, 64, 2, 255, 0)) == sparse


def test_bit_planes_are_preferred_at_one_bit_dac_steps():
    for reads, rows, _ in sparse_rule_cases():  # measured faster on every digits layer
        assert not prefers_sparse(reads, bitplane_columns(reads, rows, 64, 1, 255, 0))


@pytest.mark.parametrize("levels", [1, 15, 255])
def test_bitplane_converts_every_sum_as_the_adc_does(levels):
    # patch p drives ones on rows 0 to p - 1: columns of cells 1 and 3 read every sum
    # from 0 to 128 and 384 (multiples of 3); full scales that make ties, clip and divide
    rows = 128
    levels_in = (np.arange(rows)[:, None] < np.arange(rows + 1)[None, :]).astype(np.uint8)
    # (22, 26, 100: ties that a product with the float64 reciprocal rounds the other way
    # at 255 levels, so those columns keep the division)
    full_scales = [1, 2, 3, 4, 7, 8, 22, 26, 100, 128, 200, 255, 256, 384, 1000]
    reads = [
        ReadPlan(0, slice(0, rows), np.full((2, rows), cell, dtype=np.uint8),
                 np.array([0, 1]), np.array([1, -4]), np.array([full_scale, full_scale]), None)
        for cell in (1, 3)
        for full_scale in full_scales
    ]  # fmt: skip
    signs = [levels_in, np.zeros_like(levels_in)]
    case = (reads, 1, rows, 2, 1, 1, levels, 0, signs)
    expected = np.arange(2 * (rows + 1), dtype=np.int64).reshape(2, rows + 1)
    reference(reads, rows, 2, 1, 1, levels, 0, signs, expected)
    got, _, _ = run_bitplane(*case)
    np.testing.assert_array_equal(got, expected, strict=True)


def test_adc_reciprocals_keep_the_division_where_a_product_would_round_a_tie_otherwise():
    # 255 / 48 = 5.3125 is exact: every sum converts alike; 77 x 255 / 22 = 892.5 rounds
    # to 892 (even) but 77 x fl(255 / 22) to 893, so the column of full scale 22 keeps
    # the division once its sums reach 77, not below
    largest = np.array([192, 76, 77, 192, 192], dtype=np.int64)
    full_scale = np.array([48, 22, 22, 0, 2**20], dtype=np.int64)
    got = bitplane.adc_reciprocals(largest, full_scale, 255)
    assert np.rint(77 * 255 / 22) == 892 and np.rint(77 * (255 / 22)) == 893
    assert got.tolist() == [255 / 48, 255 / 22, 0.0, 0.0, 255 / 2**20]
    assert not bitplane.adc_reciprocals(largest, full_scale, 0).any()  # lossless: no codes


@pytest.mark.parametrize("rows", [16, 32, 40, 64])
def test_quads_of_the_faithful_default_equal_the_read_by_read_adc(rows):
    # the faithful default's reads (2-bit cells, 1-bit DAC steps, one word a column):
    # eight columns a target (4 slices x 2 signs), taken four at a time; cells past row 32
    # (rows 40, 64) keep the quads in float64, those within it take float32 (`narrow`);
    # full scales below the largest sum clip, 22 keeps the division (`adc_reciprocals`)
    rng = np.random.default_rng(rows)
    cols, patches = 5, 600
    reads = []
    for full_scale in (3 * rows, rows, 22, 7):
        cells_t = rng.integers(0, 4, (8 * cols, rows)).astype(np.uint8)
        factor = np.tile([1, 4, 16, 64, -1, -4, -16, -64], cols)
        target = np.repeat(np.arange(cols), 8)
        scales = np.full(8 * cols, full_scale, dtype=np.int64)
        reads.append(ReadPlan(0, slice(0, rows), cells_t, target, factor, scales, None))
    levels_in = (rng.integers(0, 256, (rows, patches)) * (rng.random(patches) < 0.9)).astype(
        np.uint8
    )
    signs = [levels_in, np.zeros_like(levels_in)]
    columns = bitplane_columns(reads, rows, cols, 1, 255, 0)
    quads = columns.quads
    assert quads.member.sum() >= len(quads.member) // 2  # most columns in quads
    assert quads.clips.any() and not quads.clips.all()
    assert quads.narrow.any() == (rows <= 32)
    case = (reads, 1, rows, cols, 1, 8, 255, 0, signs)
    expected = np.arange(cols * patches, dtype=np.int64).reshape(cols, patches)
    reference(reads, rows, cols, 1, 8, 255, 0, signs, expected)
    got, _, _ = run_bitplane(*case)
    np.testing.assert_array_equal(got, expected, strict=True)


def test_narrow_quads_keep_float64_where_float32_would_round_otherwise():
    # 7 x 255 / 14 = 127.5 is a tie: float64's product rounds it to 128 as the division
    # does, float32's to 127, so that quad stays in float64; steps whose codes add up
    # past 2^24 too
    low = np.full((3, 4), 0xFFFF, dtype=np.uint64)
    high = np.full((3, 4), 0xFFFF, dtype=np.uint64)
    ratio = np.array([[255 / 48] * 4, [255 / 48] * 3 + [255 / 14], [255 / 48] * 4])
    largest = np.full((3, 4), 48, dtype=np.int64)
    step = np.array([[48.0] * 4, [48.0] * 4, [2.0**15] * 4])
    narrow, ratio32 = bitplane.narrow_quads(low, high, ratio, largest, step, 255)
    sums = np.arange(49)
    wide = np.rint(sums * (255 / 14))
    single = np.rint(sums.astype(np.float32) * np.float32(255 / 14))
    assert wide[7] == np.rint(7 * 255 / 14) == 128 and single[7] == 127
    assert narrow.tolist() == [1, 0, 0]
    assert ratio32.dtype == np.float32


@PROPERTY
@given(layer_reads(), st.sampled_from([1, 3, 4]))
def test_bitplane_finish_equals_accumulate_then_dequantize_items(case, items):
    # the read-out written dequantized, items first, by the kernel itself: the same bits
    # as accumulating from zero and `dequantize_items`; outputs no column reaches (beyond
    # the reads' targets) the dequantized zero
    reads, groups, rows, cols, slice_bits, magnitude_bits, levels, offset, signs = case
    patches = signs[0].shape[1]
    if patches % items:
        items = 1
    columns = bitplane_columns(reads, rows, cols, slice_bits, levels, offset)
    count = -(-magnitude_bits // slice_bits)
    planes = count * slice_bits
    packed = np.zeros((2 * planes, columns.words, patches), dtype=np.uint64)
    flags = np.zeros((2 * planes, columns.words, bitplane.runs_of(patches)), dtype=np.uint8)
    for sign, levels_in in enumerate(signs):
        if levels_in.any():
            bitplane.pack_inputs(levels_in, columns, sign * planes, planes, packed, flags)
    slices = [
        (index * planes + j * slice_bits, sign << (j * slice_bits))
        for index, sign in enumerate((1, -1))
        if signs[index].any()
        for j in range(count)
    ]
    slice_plane, significance = np.array(slices, dtype=np.int64).reshape(-1, 2).T.copy()
    outputs = groups * cols + 1  # one output that no column reaches
    column_scale = np.linspace(-0.5, 2.0, outputs)
    unit, input_scale = levels or 1, 0.37
    acc = np.zeros((outputs, patches), dtype=np.int64)
    bitplane.bitplane_accumulate(packed, flags, columns, slice_plane, significance, acc)
    expected = np.full((items, outputs, patches // items), np.nan, dtype=np.float32)
    dequantize_items(acc, unit, input_scale, column_scale, expected)
    bias = np.linspace(-3, 3, outputs, dtype=np.float32)
    biased = expected + bias[None, :, None]  # float32 + float32, as `_plus_bias`
    for name in kernels.BACKENDS:
        kernels.set_backend(name)
        try:
            got = np.full_like(expected, np.nan)
            bitplane.bitplane_finish(packed, flags, columns, slice_plane, significance, unit,
                                     input_scale, column_scale, got)  # fmt: skip
            with_bias = np.full_like(expected, np.nan)
            bitplane.bitplane_finish(packed, flags, columns, slice_plane, significance, unit,
                                     input_scale, column_scale, with_bias, bias)  # fmt: skip
        finally:
            kernels.set_backend("numba")
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32), strict=True)
        np.testing.assert_array_equal(with_bias.view(np.uint32), biased.view(np.uint32))
