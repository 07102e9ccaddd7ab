"""Runtime kernels: Numba against the numpy twins, convolutions against onnxruntime, the ADC
read-out against a plain loop."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from xbarc.ir.geometry import conv_output_spatial, conv_transpose_output_spatial
from xbarc.runtime import kernels
from xbarc.runtime.kernels import adc, dac, gemm, im2col, prange, sparse_read

PROPERTY = settings(max_examples=40, deadline=None)


@pytest.fixture(params=kernels.BACKENDS)
def backend(request):
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend("numba")


def random_floats(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Convolution through the kernels vs onnxruntime


def run_onnx(op: str, x: np.ndarray, w: np.ndarray, b: np.ndarray, **attributes) -> np.ndarray:
    node = helper.make_node(op, ["x", "w", "b"], ["y"], **attributes)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def conv_by_kernels(x, w, b, strides, pads, dilations, groups) -> np.ndarray:
    """Conv as a crossbar layer: y[g] = W[g]^T @ unfold(x)[g] + bias."""
    batch, (cout, kernel) = x.shape[0], (w.shape[0], w.shape[2:])
    # W[g]^T = w[g*Ng:(g+1)*Ng].reshape(Ng, -1)
    transposed = w.reshape(groups, cout // groups, -1)
    y = transposed @ im2col.unfold(x, kernel, strides, pads, dilations, groups)  # [G, Ng, NP]
    out_spatial = conv_output_spatial(x.shape[2:], kernel, strides, pads, dilations)
    image = y.reshape(cout, batch, -1).transpose(1, 0, 2).reshape(batch, cout, *out_spatial)
    return image + b.reshape(1, -1, *(1,) * len(kernel))


def conv_transpose_by_kernels(x, w, b, strides, pads, dilations, output_padding, groups):
    """ConvTranspose as a crossbar layer: W[g]^T @ input planes[n, g], then col2im."""
    cin, cout_per_group, kernel = w.shape[0], w.shape[1], w.shape[2:]
    in_group = cin // groups
    # [groups, Cin/groups, N*pixels]
    planes = x.reshape(x.shape[0], groups, in_group, -1).transpose(1, 2, 0, 3)
    planes = planes.reshape(groups, in_group, -1)
    # W[g] = w[g*Cg:(g+1)*Cg].reshape(Cg, -1)
    transposed = w.reshape(groups, in_group, -1).transpose(0, 2, 1)
    columns = transposed @ planes
    y = im2col.fold(
        columns,
        x.shape[0],
        x.shape[2:],
        cout_per_group,
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
    )
    return y + b.reshape(1, -1, *(1,) * len(kernel))


CONV_CASES = {
    # name: (x shape, w shape, strides, pads, dilations, groups)
    "1d": ((2, 4, 11), (6, 4, 3), (1,), (1, 1), (1,), 1),
    "1d-strided-dilated-asymmetric": ((2, 4, 13), (6, 2, 3), (2,), (2, 0), (2,), 2),
    "2d": ((1, 3, 9, 8), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "2d-pointwise-strided": ((2, 8, 7, 7), (5, 8, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "2d-grouped-asymmetric": ((2, 4, 10, 9), (6, 2, 3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    "2d-depthwise-strided": ((1, 5, 12, 11), (5, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 5),
    "2d-depthwise-multiplier": ((1, 3, 8, 8), (6, 1, 3, 3), (1, 1), (1, 2, 1, 0), (1, 1), 3),
    "2d-dilated": ((1, 3, 13, 12), (4, 3, 3, 3), (1, 2), (2, 3, 1, 0), (2, 3), 1),
    "2d-large-kernel-stride": ((2, 3, 23, 21), (4, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_by_unfold_matches_onnxruntime(case, backend):
    x_shape, w_shape, strides, pads, dilations, groups = case
    x = random_floats(x_shape, seed=1)
    w = random_floats(w_shape, seed=2)
    b = random_floats(w_shape[:1], seed=3)
    expected = run_onnx(
        "Conv",
        x,
        w,
        b,
        kernel_shape=w_shape[2:],
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=groups,
    )
    actual = conv_by_kernels(x, w, b, strides, pads, dilations, groups)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


CONV_TRANSPOSE_CASES = {
    # name: (x shape, w shape, strides, pads, dilations, output_padding, groups)
    "1d": ((2, 3, 6), (3, 4, 3), (1,), (0, 0), (1,), (0,), 1),
    "1d-strided-padded": ((2, 4, 5), (4, 3, 4), (3,), (1, 2), (1,), (2,), 2),
    "2d": ((1, 3, 5, 4), (3, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (0, 0), 1),
    "2d-output-padding": ((2, 4, 4, 5), (4, 3, 3, 2), (2, 3), (1, 0, 0, 1), (1, 1), (1, 2), 1),
    "2d-dilated-grouped": ((1, 6, 5, 5), (6, 2, 3, 3), (2, 2), (2, 1, 0, 2), (2, 3), (1, 0), 3),
    "2d-depthwise": ((1, 4, 6, 6), (4, 1, 4, 4), (2, 2), (1, 1, 1, 1), (1, 1), (0, 0), 4),
}  # fmt: skip


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES.values(), ids=CONV_TRANSPOSE_CASES.keys())
def test_conv_transpose_by_fold_matches_onnxruntime(case, backend):
    x_shape, w_shape, strides, pads, dilations, output_padding, groups = case
    x = random_floats(x_shape, seed=4)
    w = random_floats(w_shape, seed=5)
    b = random_floats((w_shape[1] * groups,), seed=6)
    expected = run_onnx(
        "ConvTranspose",
        x,
        w,
        b,
        kernel_shape=w_shape[2:],
        strides=strides,
        pads=pads,
        dilations=dilations,
        output_padding=output_padding,
        group=groups,
    )
    actual = conv_transpose_by_kernels(x, w, b, strides, pads, dilations, output_padding, groups)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Numba kernels vs their numpy twins


@st.composite
def conv_geometries(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    kernel = draw(st.tuples(*[st.integers(1, 3)] * rank))
    strides = draw(st.tuples(*[st.integers(1, 3)] * rank))
    dilations = draw(st.tuples(*[st.integers(1, 2)] * rank))
    pads = draw(st.tuples(*[st.integers(0, 2)] * (2 * rank)))
    # smallest input the dilated kernel fits in once padded, plus some room
    spatial = tuple(
        max(1, dilations[a] * (kernel[a] - 1) + 1 - pads[a] - pads[rank + a])
        + draw(st.integers(0, 6 if rank < 3 else 3))
        for a in range(rank)
    )
    batch = draw(st.integers(1, 2))
    return (batch, channels, *spatial), kernel, strides, pads, dilations, groups


@PROPERTY
@given(conv_geometries(), st.integers(0, 2**16))
def test_unfold_numba_equals_numpy(geometry, seed):
    shape, kernel, strides, pads, dilations, groups = geometry
    x = random_floats(shape, seed)
    expected = im2col.unfold_numpy(x, kernel, strides, pads, dilations, groups)
    actual = im2col.unfold(x, kernel, strides, pads, dilations, groups)
    np.testing.assert_array_equal(actual, expected, strict=True)


def test_unfold_fills_a_given_buffer():
    x = random_floats((2, 4, 6, 5))
    expected = im2col.unfold_numpy(x, (3, 3), (1, 2), (1, 0, 1, 1), (1, 1), 2)
    buffer = np.full(expected.shape, np.nan, dtype=np.float32)
    actual = im2col.unfold(x, (3, 3), (1, 2), (1, 0, 1, 1), (1, 1), 2, out=buffer)
    assert actual is buffer
    np.testing.assert_array_equal(buffer, expected)
    with pytest.raises(ValueError, match="out is float32"):
        im2col.unfold(x, (3, 3), (1, 2), (1, 0, 1, 1), (1, 1), 2, out=buffer[:1])


@st.composite
def fold_geometries(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    cout_per_group = draw(st.integers(1, 3))
    kernel = draw(st.tuples(*[st.integers(1, 3)] * rank))
    strides = draw(st.tuples(*[st.integers(1, 3)] * rank))
    dilations = draw(st.tuples(*[st.integers(1, 2)] * rank))
    pads = draw(st.tuples(*[st.integers(0, 2)] * (2 * rank)))
    output_padding = draw(st.tuples(*[st.integers(0, 2)] * rank))
    in_spatial = draw(st.tuples(*[st.integers(1, 5 if rank < 3 else 3)] * rank))
    out_spatial = conv_transpose_output_spatial(
        in_spatial, kernel, strides, pads, dilations, output_padding
    )
    assume(min(out_spatial) >= 1)
    batch = draw(st.integers(1, 2))
    return (
        batch,
        in_spatial,
        cout_per_group,
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
    )


@PROPERTY
@given(fold_geometries(), st.integers(0, 2**16))
def test_fold_numba_equals_numpy(geometry, seed):
    batch, in_spatial, cout_per_group, kernel, *_, groups = geometry
    shape = (groups, cout_per_group * np.prod(kernel), batch * np.prod(in_spatial))
    columns = random_floats(shape, seed)
    expected = im2col.fold_numpy(columns, *geometry)
    actual = im2col.fold(columns, *geometry)
    np.testing.assert_array_equal(actual, expected, strict=True)


def test_fold_adds_overlapping_products_and_drops_the_padding():
    # 1-D, kernel 3, stride 1, pads 1/1: output j sums tap k of input pixel j + 1 - k
    columns = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    y = im2col.fold(columns, 1, (4,), 1, (3,), (1,), (1, 1), (1,), (0,), 1)
    c = columns[0]  # [tap, input pixel]
    by_hand = [c[1, 0] + c[0, 1]]
    by_hand += [c[2, j - 1] + c[1, j] + c[0, j + 1] for j in (1, 2)]
    by_hand += [c[2, 2] + c[1, 3]]
    np.testing.assert_array_equal(y, np.array(by_hand, dtype=np.float32).reshape(1, 1, 4))


def test_unfold_layout_puts_taps_on_rows_and_pixels_on_columns(backend):
    # 1-D, 2 images, 2 channels in 2 groups, kernel 2, stride 2, pad 1 at the start
    x = np.arange(20, dtype=np.float32).reshape(2, 2, 5)
    columns = im2col.unfold(x, (2,), (2,), (1, 0), (1,), 2)
    assert columns.shape == (2, 2, 6)  # [groups, (channel, tap), (image, output pixel)]
    # output pixel o reads inputs 2o - 1 and 2o; input -1 is padding
    np.testing.assert_array_equal(columns[0], [[0, 1, 3, 0, 11, 13], [0, 2, 4, 10, 12, 14]])
    np.testing.assert_array_equal(columns[1], [[0, 6, 8, 0, 16, 18], [5, 7, 9, 15, 17, 19]])


# ---------------------------------------------------------------------------------------
# ADC read-out


def adc_by_loop(partial, target, factor, full_scale, levels, acc) -> np.ndarray:
    """The read-out in plain Python: float division, round half to even, exact ints."""
    acc = acc.copy()
    for m, p in np.ndindex(*partial.shape):
        if levels == 0:
            acc[target[m], p] += int(factor[m]) * int(partial[m, p])
            continue
        ratio = float(partial[m, p]) * levels / int(full_scale[m])
        code = min(max(round(ratio), 0), levels)
        acc[target[m], p] += int(factor[m]) * code * int(full_scale[m])
    return acc


@st.composite
def adc_reads(draw):
    patches = draw(st.sampled_from([1, 5, 12, 1500]))  # 1500: several runs of patches
    columns = draw(st.integers(1, 20))
    outputs = draw(st.integers(1, 6))
    levels = draw(st.sampled_from([0, 1, 3, 15, 255]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    full_scale = rng.integers(1, 500, size=columns)
    # partial sums up to twice the full scale, so that some clip
    partial = rng.random((columns, patches)) * 2 * full_scale[:, None]
    partial = np.floor(partial).astype(np.float32)
    target = rng.integers(0, outputs, size=columns)  # repeats are likely
    factor = rng.choice([-1, 1], size=columns) * 2 ** rng.integers(0, 12, size=columns)
    acc = rng.integers(-1000, 1000, size=(outputs, patches))
    return partial, target, factor, full_scale, levels, acc


@PROPERTY
@given(adc_reads())
def test_adc_accumulate_numba_numpy_and_loop_agree(read):
    partial, target, factor, full_scale, levels, acc = read
    expected = adc_by_loop(*read)
    by_numpy = acc.copy()
    adc.adc_accumulate_numpy(partial, target, factor, full_scale, levels, by_numpy)
    by_numba = acc.copy()
    adc.adc_accumulate(partial, target, factor, full_scale, levels, by_numba)
    np.testing.assert_array_equal(by_numpy, expected, strict=True)
    np.testing.assert_array_equal(by_numba, expected, strict=True)


@pytest.mark.parametrize("levels", [0, 4])
def test_adc_accumulate_rounds_half_to_even_clips_and_sums_repeated_targets(levels, backend):
    # full scale 8 at 4 levels: codes of 1, 3, 5, 12 are rint(0.5, 1.5, 2.5, 6) -> 0, 2, 2, 4
    # two read columns (rows here), two patches (columns)
    partial = np.array([[1, 5], [3, 12]], dtype=np.float32)
    target = np.array([0, 0])
    factor = np.array([1, -2])
    full_scale = np.array([8, 8])
    acc = np.zeros((1, 2), dtype=np.int64)
    adc.adc_accumulate(partial, target, factor, full_scale, levels, acc)
    if levels == 0:
        assert acc.tolist() == [[1 - 2 * 3, 5 - 2 * 12]]
    else:
        assert acc.tolist() == [[(0 - 2 * 2) * 8, (2 - 2 * 4) * 8]]


@st.composite
def sparse_reads(draw):
    """Random read columns in sparse form over int8 levels, with repeated targets, empty
    columns, full scales below the largest sum (codes clip) and a signed significance."""
    rows = draw(st.integers(1, 40))
    patches = draw(st.sampled_from([1, 7, 600, 1500]))  # 600, 1500: several runs of patches
    columns = draw(st.integers(0, 12))
    outputs = draw(st.integers(1, 5))
    levels = draw(st.sampled_from([0, 1, 15, 255]))
    slice_bits, slices = draw(st.sampled_from([(1, 7), (1, 3), (2, 4), (3, 2), (7, 1), (8, 1)]))
    sign = draw(st.sampled_from([1, -1]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    cells = rng.integers(0, 4, (columns, rows)) * (rng.random((columns, rows)) < 0.4)
    # levels mostly small, as after a DAC: the high slices are zero in most runs
    high = draw(st.sampled_from([2, 16, 256]))
    levels_in = rng.integers(0, high, (rows, patches)).astype(np.uint8)
    column, row = np.nonzero(cells)
    start = np.concatenate([[0], np.cumsum(np.bincount(column, minlength=columns))])
    largest = 3 * min(int(levels_in.max(initial=0)), 2**slice_bits - 1) * rows
    full_scale = rng.integers(1, max(2, largest), size=columns)
    target = rng.integers(0, outputs, size=columns)
    factor = rng.choice([-1, 1], size=columns) * 2 ** rng.integers(0, 6, size=columns)
    packed = sparse_read.SparseColumns.of(
        start, row, cells[column, row], target, factor, full_scale
    )
    acc = rng.integers(-1000, 1000, size=(outputs, patches))
    return levels_in, packed, cells, slice_bits, slices, sign, levels, acc


@PROPERTY
@given(sparse_reads())
def test_sparse_read_numba_and_numpy_equal_a_gemm_then_the_adc(read):
    levels_in, packed, cells, slice_bits, slices, sign, levels, acc = read
    # the reference: per slice, its digits, the dense integer GEMM of the cells, the ADC
    expected = acc
    for j in range(slices):
        digits = (levels_in.astype(np.int64) >> (j * slice_bits)) & (2**slice_bits - 1)
        partial = cells.astype(np.int64) @ digits
        factor = packed.factor * sign * 2 ** (j * slice_bits)
        expected = adc_by_loop(partial, packed.target, factor, packed.full_scale, levels, expected)
    arguments = (levels_in, packed, slice_bits, slices, sign, levels)
    by_numpy = acc.copy()
    sparse_read.sparse_read_accumulate_numpy(*arguments, by_numpy)
    by_numba = acc.copy()
    sparse_read.sparse_read_accumulate(*arguments, by_numba)
    np.testing.assert_array_equal(by_numpy, expected, strict=True)
    np.testing.assert_array_equal(by_numba, expected, strict=True)
    maxima = sparse_read.chunk_maxima(levels_in)
    np.testing.assert_array_equal(maxima, sparse_read.chunk_maxima_numpy(levels_in))


def test_sparse_read_rounds_half_to_even_clips_and_recomposes_slices(backend):
    # levels [rows, patches]: row 0 = 1, 4; row 1 = 3, 1. Column 0: cell 1 on row 0, sums
    # 1, 4; column 1: cells 3 on rows 0 and 1, sums 12, 15; both on output 0, factors 1
    # and -2, full scale 8
    levels_in = np.array([[1, 4], [3, 1]], dtype=np.uint8)
    packed = sparse_read.SparseColumns.of(
        np.array([0, 1, 3]), np.array([0, 0, 1]), np.array([1, 3, 3]),
        np.array([0, 0]), np.array([1, -2]), np.array([8, 8]),
    )  # fmt: skip
    # one slice of 3 bits, 4 ADC levels, negative sign: codes rint(0.5, 2) = 0, 2 and
    # rint(6, 7.5) = 6, 8 clipped to 4, 4
    acc = np.zeros((1, 2), dtype=np.int64)
    sparse_read.sparse_read_accumulate(levels_in, packed, 3, 1, -1, 4, acc)
    assert acc.tolist() == [[-(8 * 0 - 2 * 8 * 4), -(8 * 2 - 2 * 8 * 4)]]
    # three slices of 1 bit through a lossless ADC add up to the whole levels' sums
    acc = np.zeros((1, 2), dtype=np.int64)
    sparse_read.sparse_read_accumulate(levels_in, packed, 1, 3, 1, 0, acc)
    assert acc.tolist() == [[1 - 2 * 12, 4 - 2 * 15]]


def test_sparse_read_skips_runs_of_patches_below_a_slice_and_keeps_the_sums():
    # levels below 4 everywhere but in the second run of patches of row 1: slice 2 (shift
    # 2) reads only there
    levels_in = np.zeros((2, 3 * sparse_read.CHUNK), dtype=np.uint8)
    levels_in[:, :] = 3
    levels_in[1, sparse_read.CHUNK + 5] = 12
    maxima = sparse_read.chunk_maxima(levels_in)
    assert maxima.tolist() == [[3, 3, 3], [3, 12, 3]]
    levels_in[0, 7] = 255  # 8-bit levels
    assert sparse_read.chunk_maxima(levels_in)[0, 0] == 255
    levels_in[0, 7] = 3
    packed = sparse_read.SparseColumns.of(
        np.array([0, 2]), np.array([0, 1]), np.array([1, 2]), np.array([0]), np.array([1]),
        np.array([100]),
    )  # fmt: skip
    # slices of 2 bits: slice 0 reads every level (3), slice 1 only the 12 (as 3)
    acc = np.zeros((1, levels_in.shape[1]), dtype=np.int64)
    sparse_read.sparse_read_accumulate(levels_in, packed, 2, 2, 1, 0, acc, maxima)
    expected = np.full(levels_in.shape[1], 1 * 3 + 2 * 3)
    expected[sparse_read.CHUNK + 5] = 1 * 3 + 2 * 0 + 4 * 2 * 3
    np.testing.assert_array_equal(acc[0], expected)


def test_sparse_read_rejects_rows_beyond_the_levels():
    packed = sparse_read.SparseColumns.of(
        np.array([0, 1]), np.array([5]), np.array([1]), np.array([0]), np.array([1]), np.array([3])
    )
    with pytest.raises(ValueError, match="rows beyond"):
        sparse_read.sparse_read_accumulate(
            np.zeros((2, 4), np.uint8), packed, 1, 1, 1, 3, np.zeros((1, 4), np.int64)
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_matmul_equals_numpy(dtype, backend):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, (37, 129)).astype(dtype)
    b = rng.integers(0, 2, (129, 300)).astype(dtype)
    out = np.empty((37, 300), dtype)
    gemm.float_matmul(a, b, out)
    np.testing.assert_array_equal(out, a @ b)  # integer sums: exact in any order
    c = rng.standard_normal((129, 300)).astype(dtype)
    gemm.float_matmul(a, c, out)
    np.testing.assert_allclose(out, a @ c, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="expected one float type"):
        gemm.float_matmul(a.astype(np.float16), b, out)


def test_signed_adc_clips_both_ways(backend):
    # a differential read: sums of either sign; full scale 8 at 4 levels a side
    partial = np.array([[-1, -5, -20, 20], [3, -12, 0.5, -0.5]], dtype=np.float32)
    target = np.array([0, 1])
    factor = np.array([1, 2])
    full_scale = np.array([8, 8])
    acc = np.zeros((2, 4), dtype=np.int64)
    adc.adc_accumulate(partial, target, factor, full_scale, 4, acc, signed=True)
    # codes rint(x / 2) clipped to [-4, 4]: [-0, -2, -4, 4], [2, -4, 0, -0]
    assert acc.tolist() == [[0, -2 * 8, -4 * 8, 4 * 8], [2 * 2 * 8, -4 * 2 * 8, 0, 0]]
    unsigned = np.zeros((2, 4), dtype=np.int64)
    adc.adc_accumulate(partial, target, factor, full_scale, 4, unsigned)
    assert unsigned.tolist() == [[0, 0, 0, 4 * 8], [2 * 2 * 8, 0, 0, 0]]


def test_adc_accumulate_rejects_mismatched_tables():
    partial = np.zeros((3, 2), dtype=np.float32)
    acc = np.zeros((2, 2), dtype=np.int64)
    ones = np.ones(3, dtype=np.int64)
    with pytest.raises(ValueError, match="target is int32"):
        adc.adc_accumulate(partial, ones.astype(np.int32), ones, ones, 4, acc)
    with pytest.raises(ValueError, match="targets outside"):
        adc.adc_accumulate(partial, ones * 2, ones, ones, 4, acc)


# ---------------------------------------------------------------------------------------
# Input quantization and slicing


def test_quantize_inputs_rounds_half_to_even_and_clips_symmetrically():
    x = np.array([0.5, 1.5, -2.5, 200.0, -200.0, 0.26], dtype=np.float32)
    levels = dac.quantize_inputs(x, 1.0, 8)
    assert levels.dtype == np.int32
    assert levels.tolist() == [0, 2, -2, 127, -127, 0]


@PROPERTY
@given(st.integers(1, 4), st.integers(0, 4), st.integers(0, 2**16), st.integers(0, 3))
def test_bit_slices_recompose(slice_bits, count, seed, rank):
    top = 2 ** (slice_bits * count)
    shape = (3, 5, 7)[:rank]
    levels = np.random.default_rng(seed).integers(0, top, size=shape).astype(np.int32)
    slices = dac.bit_slices(levels, slice_bits, count)
    assert slices.shape == (count, *shape) and slices.dtype == np.uint8
    as_floats = dac.bit_slices(levels, slice_bits, count, dtype=np.float32)
    np.testing.assert_array_equal(as_floats, slices.astype(np.float32), strict=True)
    weights = (2 ** (slice_bits * np.arange(count))).reshape((count,) + (1,) * rank)
    np.testing.assert_array_equal((slices.astype(np.int64) * weights).sum(axis=0), levels)


@PROPERTY
@given(st.integers(2, 9), st.integers(1, 8), st.integers(0, 2**16))
def test_dac_planes_split_signs_slice_and_numba_equals_numpy(bits, slice_bits, seed):
    count = -(-(bits - 1) // slice_bits)
    scale = 0.05
    x = random_floats((3, 40), seed) * 2
    x[0, :6] = np.array([0.5, -0.5, 1.5, -2.5, 0.0, 1e9], dtype=np.float32) * scale  # ties
    planes = np.full((2, count, *x.shape), np.nan, np.float32)  # every entry is written
    expected = planes.copy()
    nonzero = dac.dac_planes(x, scale, bits, slice_bits, count, out=planes)
    expected_nonzero = dac.dac_planes_numpy(x, scale, bits, slice_bits, count, out=expected)
    np.testing.assert_array_equal(planes, expected, strict=True)
    assert nonzero == expected_nonzero == (True, True)
    weights = (2.0 ** (slice_bits * np.arange(count))).reshape(count, 1, 1)
    recomposed = (planes[0] * weights).sum(axis=0) - (planes[1] * weights).sum(axis=0)
    np.testing.assert_array_equal(recomposed, dac.quantize_inputs(x, scale, bits))


def test_dac_planes_report_a_missing_sign():
    planes = np.empty((2, 7, 3), np.float32)
    nonzero = dac.dac_planes(np.array([0.0, 1.0, 2.0]), 0.1, 8, 1, 7, out=planes)
    assert nonzero == (True, False) and not planes[1].any()
    with pytest.raises(ValueError, match="out must be float32"):
        dac.dac_planes(np.zeros(3), 0.1, 8, 1, 7, out=planes[:, :6])


@pytest.mark.parametrize("slice_bits", [1, 2, 7])
def test_dac_planes_into_int8_equal_the_float_planes(slice_bits, backend):
    x = random_floats((2, 3, 11), seed=slice_bits)
    count = -(-7 // slice_bits)
    as_float = np.empty((2, count, *x.shape), np.float32)
    as_int8 = np.empty((2, count, *x.shape), np.int8)
    assert dac.dac_planes(x, 0.02, 8, slice_bits, count, out=as_float) == (True, True)
    assert dac.dac_planes(x, 0.02, 8, slice_bits, count, out=as_int8) == (True, True)
    np.testing.assert_array_equal(as_int8.astype(np.float32), as_float)


def test_dac_planes_into_uint8_hold_whole_8_bit_levels(backend):
    # 9 bits: magnitudes of 8 bits, as one slice of 8 bits (levels up to 255)
    x = random_floats((2, 3, 11), seed=4)
    as_float = np.empty((2, 1, *x.shape), np.float32)
    as_uint8 = np.empty((2, 1, *x.shape), np.uint8)
    scale = float(np.abs(x).max()) / 255
    dac.dac_planes(x, scale, 9, 8, 1, out=as_float)
    dac.dac_planes(x, scale, 9, 8, 1, out=as_uint8)
    np.testing.assert_array_equal(as_uint8.astype(np.float32), as_float)
    assert as_uint8.max() == 255
    with pytest.raises(ValueError, match="uint8 < 256"):
        dac.dac_planes(x, scale, 9, 8, 1, out=np.empty((2, 1, *x.shape), np.int8))


def test_unfold_keeps_uint8_levels(backend):
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.uint8) + 200
    columns = im2col.unfold(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    as_float = im2col.unfold(x.astype(np.float32), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert columns.dtype == np.uint8
    np.testing.assert_array_equal(columns.astype(np.float32), as_float)


@PROPERTY
@given(st.integers(1, 255), st.floats(1e-6, 1e3), st.integers(0, 2**16))
def test_dequantize_numba_equals_numpy(unit, input_scale, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**40), 2**40, size=(7, 33))
    column_scale = rng.random(7).astype(np.float32).astype(np.float64)
    by_numba = np.empty(acc.shape, np.float32)
    by_numpy = np.empty(acc.shape, np.float32)
    adc.dequantize(acc, unit, input_scale, column_scale, by_numba)
    adc.dequantize_numpy(acc, unit, input_scale, column_scale, by_numpy)
    np.testing.assert_array_equal(by_numba, by_numpy, strict=True)
    want = (acc / unit * input_scale * column_scale[:, None]).astype(np.float32)
    np.testing.assert_array_equal(by_numba, want)


@pytest.mark.skipif(
    not gemm.integer_matmul_exact(), reason="onnxruntime's integer GEMM saturates here"
)
@PROPERTY
@given(st.integers(1, 70), st.integers(1, 300), st.integers(1, 70), st.integers(0, 2**16))
def test_integer_matmul_is_exact_and_numba_backend_equals_numpy(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    a[0] = 255  # extreme rows: a non-VNNI kernel would saturate here
    b[:, 0] = 127
    out = np.full((m, n), -1, np.int32)
    gemm.integer_matmul(a, b, out)
    np.testing.assert_array_equal(out, a.astype(np.int64) @ b.astype(np.int64))


def test_integer_matmul_refuses_other_types():
    with pytest.raises(ValueError, match="expected C-contiguous uint8 @ int8 -> int32"):
        gemm.integer_matmul(
            np.zeros((2, 3), np.float32), np.zeros((3, 2), np.int8), np.zeros((2, 2), np.int32)
        )


def test_unfold_keeps_int8_digits(backend):
    x = np.arange(-8, 10, dtype=np.int8).reshape(1, 2, 9)
    columns = im2col.unfold(x, (3,), (2,), (1, 1), (1,), 1)
    assert columns.dtype == np.int8
    np.testing.assert_array_equal(
        columns, im2col.unfold_numpy(x.astype(np.float32), (3,), (2,), (1, 1), (1,), 1)
    )


def test_bit_slices_refuse_negative_levels():
    with pytest.raises(ValueError, match="split signs first"):
        dac.bit_slices(np.array([3, -1]), 2, 4)


# ---------------------------------------------------------------------------------------
# Module behaviour


def test_importing_the_kernels_leaves_numba_unloaded():
    modules = "xbarc.runtime.executor, xbarc.runtime.kernels.adc, xbarc.runtime.kernels.dac"
    modules += ", xbarc.runtime.kernels.gemm, xbarc.runtime.kernels.im2col"
    code = f"import sys, {modules}; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@kernels.numba_kernel()
def doubled(x):
    return 2 * x


@kernels.numba_kernel(parallel=True)
def doubled_sum(x):
    total = 0.0
    for i in prange(len(x)):  # a parallel reduction
        total += doubled(x[i])
    return total


def test_numba_kernels_compile_on_first_call_with_prange_and_compiled_callees():
    import numba

    x = np.arange(1000, dtype=np.float64)
    assert doubled_sum._compiled is None and doubled._compiled is None
    assert doubled_sum.function(x) == 2 * x.sum()  # the plain Python function runs too
    assert doubled_sum(x) == 2 * x.sum()
    dispatcher = doubled_sum.compiled()
    assert dispatcher.targetoptions["parallel"] and doubled._compiled is not None
    assert dispatcher.py_func.__globals__["prange"] is numba.prange
    assert dispatcher.py_func.__globals__["doubled"] is doubled.compiled()
    assert kernels.prange is range  # the module itself is left as it was


def test_the_runtime_kernels_compile_parallel_and_cached():
    for kernel in (
        im2col.unfold_numba,
        im2col.fold_numba,
        dac.dac_planes_numba,
        adc.adc_accumulate_numba,
        adc.dequantize_numba,
    ):
        dispatcher = kernel.compiled()
        assert dispatcher.targetoptions["parallel"], kernel.__name__
        assert dispatcher._cache.__class__.__name__ == "FunctionCache", kernel.__name__


def test_unknown_backend_and_bad_groups_are_refused():
    with pytest.raises(ValueError, match="unknown kernel backend 'cuda'"):
        kernels.set_backend("cuda")
    with pytest.raises(ValueError, match="5 channels do not split into 2 groups"):
        im2col.unfold(np.zeros((1, 5, 4, 4)), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2)
