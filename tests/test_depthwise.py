"""Depthwise reads: short reads' tables over input bit patterns, looked up straight from the
layer input, against a dense integer GEMM and `adc.adc_accumulate_numpy` read by read (the
executor's reference), on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.read_plans import random_reads
from tests.test_bitplane import reference
from xbarc.runtime import kernels
from xbarc.runtime.depthwise import depthwise_columns
from xbarc.runtime.kernels import depthwise
from xbarc.runtime.kernels.fused import PatchGather, dequantize_items, unfold_levels
from xbarc.runtime.reads import ReadPlan

PROPERTY = settings(max_examples=60, deadline=None)


@st.composite
def short_reads(draw):
    """A layer's random integer reads of at most TABLE_ROWS rows each: groups, segments
    that are slices or gather tables (shared by several reads), cells of 1 to 8 bits with
    all-zero columns, repeated targets, full scales below the largest sum (codes clip),
    offset-corrected columns; a gather of items x pixels from images with padding; both
    signs' DAC levels of up to 8 bits."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.integers(1, 3))
    rows = draw(st.integers(1, depthwise.TABLE_ROWS))
    cols = draw(st.integers(1, 6))
    cell_bits = draw(st.sampled_from([1, 2, 3, 8]))
    magnitude_bits = draw(st.integers(1, 8))
    items = draw(st.sampled_from([1, 3, 40]))
    pixels = draw(st.sampled_from([1, 9, 600]))  # 600: several tiles of one item's pixels
    levels = draw(st.sampled_from([0, 1, 15, 255]))
    offset = draw(st.sampled_from([0, 128]))
    count = draw(st.integers(1, 6))
    reads = random_reads(rng, count, groups, rows, cols, cell_bits, (0.2, 1.0), offset=offset)
    image = int(rng.integers(1, 50))
    # each flat row at each pixel reads a level of the item, or the padding (`image`)
    offsets = rng.integers(0, image + 1, (groups * rows, pixels)).astype(np.int64)
    gather = PatchGather(offsets, image, pixels)
    high = 2**magnitude_bits
    signs = [
        (rng.integers(0, high, (items, image)) >> rng.integers(0, 8)).astype(np.uint8)
        * (rng.random() < 0.8)
        for _ in range(2)
    ]
    return reads, groups, rows, cols, magnitude_bits, levels, offset, gather, signs


def run_depthwise(reads, groups, rows, cols, levels, offset, gather, signs) -> np.ndarray:
    """The depthwise read-out as the executor runs it: one call per sign with inputs."""
    columns = depthwise_columns(reads, rows, cols, levels, offset)
    assert columns is not None
    patches = signs[0].shape[0] * gather.pixels
    acc = np.arange(groups * cols * patches, dtype=np.int64).reshape(groups * cols, patches)
    for sign, levels_in in zip((1, -1), signs, strict=True):
        if levels_in.any():
            depthwise.depthwise_accumulate(levels_in, gather, columns, sign, acc)
    return acc


@PROPERTY
@given(short_reads())
def test_depthwise_reads_equal_a_gemm_then_the_adc_read_by_read(case):
    reads, groups, rows, cols, magnitude_bits, levels, offset, gather, signs = case
    patches = signs[0].shape[0] * gather.pixels
    expected = np.arange(groups * cols * patches, dtype=np.int64).reshape(groups * cols, patches)
    unfolded = [unfold_levels(levels_in, gather) for levels_in in signs]  # [flat rows, P]
    reference(reads, rows, cols, 1, magnitude_bits, levels, offset, unfolded, expected)
    arguments = (reads, groups, rows, cols, levels, offset, gather, signs)
    by_numba = run_depthwise(*arguments)
    try:
        kernels.set_backend("numpy")
        by_numpy = run_depthwise(*arguments)
    finally:
        kernels.set_backend("numba")
    np.testing.assert_array_equal(by_numba, expected, strict=True)
    np.testing.assert_array_equal(by_numpy, expected, strict=True)


def test_depthwise_table_holds_each_patterns_converted_sums():
    # one read of 2 rows: column 0 cells (1, 0), column 1 cells (3, 3), both on output 0
    # with factors 1 and -2 over full scale 8 at 4 ADC levels: codes rint(s / 2) clipped
    # to 4 (half to even); output 1 corrected by offset 2 (times the pattern's bits)
    cells = np.array([[1, 0], [3, 3]], dtype=np.uint8)
    read = ReadPlan(0, slice(0, 2), cells, np.array([0, 0]), np.array([1, -2]),
                    np.array([8, 8]), slice(1, 2))  # fmt: skip
    columns = depthwise_columns([read], 2, 2, 4, 2)
    assert columns is not None
    assert columns.target.tolist() == [0, 1]
    # patterns 00, 01 (row 0), 10 (row 1), 11: sums (0, 0), (1, 3), (0, 3), (1, 6)
    # -> codes (0, 0), (0, 2), (0, 2), (0, 3) (0.5 -> 0, 1.5 -> 2, 3 -> 3)
    assert columns.tables[0].tolist() == [0, 8 * (0 - 2 * 2), 8 * (0 - 2 * 2), 8 * (0 - 2 * 3)]
    assert columns.tables[1].tolist() == [0, -2 * 4, -2 * 4, -2 * 4 * 2]
    gather = PatchGather(np.array([[0, 2], [1, 1]], dtype=np.int64), 2, 2)  # pixel 1 pads row 0
    levels_in = np.array([[3, 1]], dtype=np.uint8)  # row 0 <- 3 (planes 0, 1), row 1 <- 1
    acc = np.zeros((2, 2), dtype=np.int64)
    depthwise.depthwise_accumulate(levels_in, gather, columns, -1, acc)
    # pixel 0: plane 0 pattern 11, plane 1 pattern 01; pixel 1: plane 0 pattern 10
    table = columns.tables
    assert acc[:, 0].tolist() == [
        -(table[0, 3] + 2 * table[0, 1]),
        -(table[1, 3] + 2 * table[1, 1]),
    ]
    assert acc[:, 1].tolist() == [-table[0, 2], -table[1, 2]]


def test_depthwise_columns_leave_reads_of_more_than_table_rows_out():
    rows = depthwise.TABLE_ROWS + 1
    cells = np.ones((1, rows), dtype=np.uint8)
    read = ReadPlan(0, slice(0, rows), cells, np.array([0]), np.array([1]), np.array([9]), None)
    assert depthwise_columns([read], rows, 1, 255, 0) is None


@pytest.mark.parametrize("name", ["acc", "levels"])
def test_depthwise_accumulate_rejects_wrong_arrays(name):
    cells = np.ones((1, 2), dtype=np.uint8)
    read = ReadPlan(0, slice(0, 2), cells, np.array([0]), np.array([1]), np.array([2]), None)
    columns = depthwise_columns([read], 2, 1, 255, 0)
    assert columns is not None
    gather = PatchGather(np.zeros((2, 1), dtype=np.int64), 1, 1)
    levels_in = np.ones((3, 1), dtype=np.uint8)
    acc = np.zeros((1, 3), dtype=np.int64)
    if name == "acc":
        acc = acc.astype(np.int32)
    else:
        levels_in = levels_in.astype(np.float32)
    with pytest.raises(ValueError, match="depthwise_accumulate"):
        depthwise.depthwise_accumulate(levels_in, gather, columns, 1, acc)


@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_depthwise_finish_equals_accumulate_then_dequantize_items(sign, backend, biased):
    # depthwise 3x3 reads (9 rows of one group each, 2-bit cells in 4 slices x 2 signs on
    # its output column); cols 2: the second output of each group no column reaches, so
    # it is the dequantized zero; items x pixels of images
    # with padding, several tiles
    rng = np.random.default_rng(7)
    groups, rows, cols, items, pixels, image = 3, 9, 2, 40, 64, 64
    reads = [
        ReadPlan(group, slice(0, rows), rng.integers(0, 4, (8, rows)).astype(np.uint8),
                 np.zeros(8, dtype=np.int64), np.array([1, 4, 16, 64, -1, -4, -16, -64]),
                 np.full(8, 27, dtype=np.int64), None)
        for group in range(groups)
    ]  # fmt: skip
    columns = depthwise_columns(reads, rows, cols, 255, 0)
    assert columns is not None and depthwise.one_entry_each(columns)
    offsets = rng.integers(0, image + 1, (groups * rows, pixels)).astype(np.int64)
    gather = PatchGather(offsets, image, pixels)
    levels_in = rng.integers(0, 256, (items, image)).astype(np.uint8)
    levels_in[:10] = 0  # tiles whose every pattern is 0
    outputs = groups * cols
    column_scale = np.linspace(-0.5, 2.0, outputs)
    acc = np.zeros((outputs, items * pixels), dtype=np.int64)
    depthwise.depthwise_accumulate(levels_in, gather, columns, sign, acc)
    expected = np.empty((items, outputs, pixels), dtype=np.float32)
    dequantize_items(acc, 255, 0.37, column_scale, expected)
    bias = np.linspace(-3, 3, outputs, dtype=np.float32) if biased else None
    if bias is not None:  # float32 + float32, as `Executor._plus_bias` adds it
        expected += bias[None, :, None]
    kernels.set_backend(backend)
    try:
        got = np.full_like(expected, np.nan)
        depthwise.depthwise_finish(
            levels_in, gather, columns, sign, 255, 0.37, column_scale, got, bias
        )
    finally:
        kernels.set_backend("numba")
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32), strict=True)


def test_depthwise_finish_rejects_outputs_that_two_entries_reach():
    # two segments (groups 0 and 1 of a read of group 0 and one of group 1) on output 0:
    # their sums add up in an accumulator, so they cannot be written one at a time
    cells = np.ones((1, 4), dtype=np.uint8)
    reads = [
        ReadPlan(0, slice(0, 4), cells, np.array([0]), np.array([1]), np.array([4]), None),
        ReadPlan(0, slice(4, 8), cells, np.array([0]), np.array([1]), np.array([4]), None),
    ]
    columns = depthwise_columns(reads, 8, 1, 255, 0)
    assert columns is not None and not depthwise.one_entry_each(columns)
    gather = PatchGather(np.zeros((8, 2), dtype=np.int64), 4, 2)
    out = np.zeros((3, 1, 2), dtype=np.float32)
    levels_in = np.ones((3, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="depthwise_finish"):
        depthwise.depthwise_finish(levels_in, gather, columns, 1, 255, 1.0, np.ones(1), out)
