"""The fused read path: `fused_read_accumulate` (Numba and its numpy twin) against an
independent numpy reference, the executor's fused path against reads read by read, and the
measured engines table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.ir.tile import CrossbarLayer
from xbarc.runtime import kernels
from xbarc.runtime.executor import Executor
from xbarc.runtime.kernels import adc, engines, fused, im2col
from xbarc.runtime.kernels.sparse_read import SparseColumns
from xbarc.runtime.noise import Seeds, noise_settings

PROPERTY = settings(max_examples=60, deadline=None)
DIGITS = Path(__file__).parent / "fixtures" / "digits"


@st.composite
def fused_reads(draw):
    """A random convolution's input levels and read columns over its unfolded rows: cells
    up to 8 bits (signed for a differential ADC), digits up to 7 bits in several slices,
    repeated targets, empty columns, full scales below the largest sum (codes clip),
    patches not a multiple of the tile."""
    groups = draw(st.sampled_from([1, 2]))
    channels = groups * draw(st.integers(1, 3))
    spatial = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 1)) for _ in range(4))
    assume(all(spatial[a] + pads[a] + pads[2 + a] >= kernel[a] for a in range(2)))
    items = draw(st.integers(1, 3))
    slice_bits, slices = draw(st.sampled_from([(7, 1), (4, 2), (3, 2), (2, 4), (1, 7), (8, 1)]))
    cell_bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    levels = draw(st.sampled_from([0, 1, 7, 127, 255]))
    sign = draw(st.sampled_from([1, -1]))
    outputs = draw(st.integers(1, 5))
    columns = draw(st.integers(0, 12))
    tile = draw(st.sampled_from([16, 32, 48]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    magnitude_bits = min(slices * slice_bits, 8)
    x = rng.integers(0, 2**magnitude_bits, (items, channels, *spatial)).astype(np.uint8)
    x[rng.random(x.shape) < 0.3] = 0
    rows = groups * channels // groups * kernel[0] * kernel[1]
    low = -(2**cell_bits - 1) if signed else 0
    cells = rng.integers(low, 2**cell_bits, (columns, rows)) * (rng.random((columns, rows)) < 0.5)
    column, row = np.nonzero(cells)
    start = np.concatenate([[0], np.cumsum(np.bincount(column, minlength=columns))])
    digit_max = 2**slice_bits - 1
    largest = int(np.abs(cells).sum(axis=1).max(initial=1)) * digit_max
    full_scale = rng.integers(1, max(2, largest), size=columns)
    target = rng.integers(0, outputs, size=columns)
    factor = rng.choice([-1, 1], size=columns) * 2 ** rng.integers(0, 4, size=columns)
    packed = SparseColumns.of(start, row, cells[column, row], target, factor, full_scale)
    geometry = (kernel, strides, pads, (1, 1), groups)
    return x, geometry, packed, cells, slice_bits, slices, sign, levels, signed, outputs, tile


def reference(x, geometry, cells, packed, slice_bits, slices, sign, levels, signed, acc):
    """Unfold with im2col's numpy twin, then per slice the dense integer GEMM and the numpy
    ADC read-out."""
    kernel, strides, pads, dilations, groups = geometry
    unfolded = im2col.unfold_numpy(x.astype(np.float64), kernel, strides, pads, dilations, groups)
    flat = unfolded.reshape(-1, unfolded.shape[-1]).astype(np.int64)
    for j in range(slices):
        digits = (flat >> (j * slice_bits)) & (2**slice_bits - 1)
        partial = cells.astype(np.int64) @ digits
        factor = packed.factor * sign * 2 ** (j * slice_bits)
        adc.adc_accumulate_numpy(
            partial, packed.target, factor, packed.full_scale, levels, acc, signed
        )
    return acc


def gather_of(x: np.ndarray, geometry) -> fused.PatchGather:
    kernel, strides, pads, dilations, groups = geometry
    image = x[0].size
    positions = np.arange(1, image + 1, dtype=np.float64).reshape(1, *x.shape[1:])
    unfolded = im2col.unfold_numpy(positions, kernel, strides, pads, dilations, groups)
    return fused.patch_gather(unfolded, image)


@PROPERTY
@given(fused_reads())
def test_fused_read_numba_and_numpy_equal_unfold_gemm_then_the_adc(read):
    x, geometry, packed, cells, slice_bits, slices, sign, levels, signed, outputs, tile = read
    layer = fused.FusedLayer.of(packed, gather_of(x, geometry))
    patches = x.shape[0] * layer.gather.pixels
    acc = np.random.default_rng(1).integers(-1000, 1000, size=(outputs, patches))
    expected = reference(
        x, geometry, cells, packed, slice_bits, slices, sign, levels, signed, acc.copy()
    )
    arguments = (x, layer, slice_bits, slices, sign, levels)
    by_numpy = acc.copy()
    fused.fused_read_accumulate_numpy(*arguments, by_numpy, signed)
    by_numba = acc.copy()
    fused.fused_read_accumulate(*arguments, by_numba, signed, tile)
    np.testing.assert_array_equal(by_numpy, expected, strict=True)
    np.testing.assert_array_equal(by_numba, expected, strict=True)


@PROPERTY
@given(fused_reads())
def test_gemm_read_equals_unfold_gemm_then_the_adc(read):
    # the one-GEMM-per-layer engine: uint8 cells, int8 digits
    x, geometry, packed, cells, slice_bits, slices, sign, levels, signed, outputs, _ = read
    assume(cells.min(initial=0) >= 0 and min(2**slice_bits - 1, int(x.max())) <= 127)
    layer = fused.FusedLayer.of(packed, gather_of(x, geometry))
    patches = x.shape[0] * layer.gather.pixels
    acc = np.random.default_rng(2).integers(-1000, 1000, size=(outputs, patches))
    expected = reference(
        x, geometry, cells, packed, slice_bits, slices, sign, levels, signed, acc.copy()
    )
    by_gemm = acc.copy()
    fused.gemm_read_accumulate(x, layer, slice_bits, slices, sign, levels, by_gemm, signed)
    np.testing.assert_array_equal(by_gemm, expected, strict=True)


def test_gemm_read_refuses_cells_and_digits_beyond_bytes():
    x = np.array([[200, 3]], dtype=np.uint8)
    gather = fused.patch_gather(np.array([[[1.0], [2.0]]]), 2)
    acc = np.zeros((1, 1), dtype=np.int64)

    def layer(cell, full_scale=100):
        columns = SparseColumns.of(
            np.array([0, 2]), np.array([0, 1]), np.array([cell, 1]),
            np.array([0]), np.array([1]), np.array([full_scale]),
        )  # fmt: skip
        return fused.FusedLayer.of(columns, gather)

    with pytest.raises(ValueError, match="full scales not positive"):
        fused.gemm_read_accumulate(x, layer(1, full_scale=0), 4, 2, 1, 255, acc)
    fused.gemm_read_accumulate(x, layer(1, full_scale=0), 4, 2, 1, 0, acc)  # lossless: no scale
    assert acc.tolist() == [[200 + 3]]
    acc[...] = 0
    with pytest.raises(ValueError, match="cells beyond"):
        fused.gemm_read_accumulate(x, layer(-1), 7, 1, 1, 255, acc)
    with pytest.raises(ValueError, match="digits beyond"):  # 200 in one 8-bit digit
        fused.gemm_read_accumulate(x, layer(1), 8, 1, 1, 255, acc)
    fused.gemm_read_accumulate(x, layer(1), 4, 2, 1, 0, acc)  # 200 in 4-bit digits: exact
    assert acc.tolist() == [[200 + 3]]


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_fused_read_rounds_half_to_even_and_clips(backend):
    # a Gemm-like gather: 2 rows, one pixel per item; items' levels (1, 3) and (4, 1).
    # Column 0: cell 1 on row 0, sums 1, 4; column 1: cells 3 on rows 0 and 1, sums 12, 15;
    # both on output 0, factors 1 and -2, full scale 8
    x = np.array([[1, 3], [4, 1]], dtype=np.uint8)
    gather = fused.patch_gather(np.array([[[1.0], [2.0]]]), 2)
    packed = SparseColumns.of(
        np.array([0, 1, 3]), np.array([0, 0, 1]), np.array([1, 3, 3]),
        np.array([0, 0]), np.array([1, -2]), np.array([8, 8]),
    )  # fmt: skip
    layer = fused.FusedLayer.of(packed, gather)
    kernels.set_backend(backend)
    try:
        # 4 ADC levels, negative sign: codes rint(0.5, 2) = 0, 2 and rint(6, 7.5) = 6, 8
        # clipped to 4, 4
        acc = np.zeros((1, 2), dtype=np.int64)
        fused.fused_read_accumulate(x, layer, 3, 1, -1, 4, acc)
        assert acc.tolist() == [[-(8 * 0 - 2 * 8 * 4), -(8 * 2 - 2 * 8 * 4)]]
        # a signed ADC clips at -levels: the negative factor's codes -4, not 0
        acc = np.zeros((1, 2), dtype=np.int64)
        fused.fused_read_accumulate(x, layer, 3, 1, 1, 4, acc, True)
        assert acc.tolist() == [[8 * 0 - 2 * 8 * 4, 8 * 2 - 2 * 8 * 4]]
        # three slices of 1 bit through a lossless ADC add up to the whole levels' sums
        acc = np.zeros((1, 2), dtype=np.int64)
        fused.fused_read_accumulate(x, layer, 1, 3, 1, 0, acc)
        assert acc.tolist() == [[1 - 2 * 12, 4 - 2 * 15]]
    finally:
        kernels.set_backend("numba")


def test_fused_read_rejects_what_it_cannot_read_exactly():
    x = np.zeros((2, 2), dtype=np.uint8)
    gather = fused.patch_gather(np.array([[[1.0], [2.0]]]), 2)
    packed = SparseColumns.of(
        np.array([0, 1]), np.array([0]), np.array([1]), np.array([0]), np.array([1]),
        np.array([2**46]),
    )  # fmt: skip
    acc = np.zeros((1, 2), dtype=np.int64)
    wide = SparseColumns.of(
        np.array([0, 1]), np.array([0]), np.array([2**17]), np.array([0]), np.array([1]),
        np.array([4]),
    )  # fmt: skip
    with pytest.raises(ValueError, match="2\\^24"):  # 2^17 x digits up to 255
        fused.fused_read_accumulate(x, fused.FusedLayer.of(wide, gather), 8, 1, 1, 255, acc)
    with pytest.raises(ValueError, match="2\\^53"):  # 2^46 x 255 levels x 2^7
        fused.fused_read_accumulate(x, fused.FusedLayer.of(packed, gather), 1, 8, 1, 255, acc)
    with pytest.raises(ValueError, match="levels are"):
        fused.fused_read_accumulate(
            x.astype(np.int8), fused.FusedLayer.of(packed, gather), 1, 1, 1, 3, acc
        )
    with pytest.raises(ValueError, match="acc is"):
        fused.fused_read_accumulate(x, fused.FusedLayer.of(packed, gather), 1, 1, 1, 3, acc[:, :1])


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("pixels", [1, 5, 64])
def test_dequantize_items_is_adc_dequantize_laid_out_items_first(backend, pixels):
    rng = np.random.default_rng(pixels)
    items, count = 7, 6
    acc = rng.integers(-(2**40), 2**40, size=(count, items * pixels))
    column_scale = rng.uniform(1e-4, 1.0, size=count)
    expected = np.empty((count, items * pixels), dtype=np.float32)
    adc.dequantize_numpy(acc, 255, 0.0123, column_scale, expected)
    out = np.full((items, count, pixels), np.nan, dtype=np.float32)
    kernels.set_backend(backend)
    try:
        fused.dequantize_items(acc, 255, 0.0123, column_scale, out)
    finally:
        kernels.set_backend("numba")
    laid_out = expected.reshape(count, items, pixels).transpose(1, 0, 2)
    np.testing.assert_array_equal(out, laid_out, strict=True)
    with pytest.raises(ValueError, match="dequantize_items"):
        fused.dequantize_items(acc, 255, 0.0123, column_scale, out[:-1])


# ---------------------------------------------------------------------------------------
# The executor's fused path


MATCHED = dict(cell_bits=8, hw_set=("dac.slice_bits=8",))


def digits_program(model: str, **options):
    return compile_onnx(
        DIGITS / f"{model}.onnx",
        CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)}, **options),
    )


def run(program, settings, x, path: str | None = None, engine: str | None = None):
    """The program's logits on `x` and its executor; bit-serial layers on the fused path
    too (the bit-plane path takes them first by default)."""
    executor = Executor(program, settings, Seeds.derive(0))
    executor._bitplane_reads = lambda plans: False  # type: ignore[method-assign]
    if path is not None:
        executor._choose_path = lambda plans: path  # type: ignore[method-assign]
    if engine is not None:
        executor._fused_engine = lambda *args: engine  # type: ignore[method-assign]
    return executor.run({"x": x})["logits"], executor


@pytest.fixture(scope="module")
def digits():
    return np.load(DIGITS / "digits_test.npz")["x"][:120]


@pytest.mark.parametrize(
    ("model", "options", "changes"),
    [
        ("lenet", MATCHED, {}),  # the matched settings: 8-bit cells, one 7-bit DAC step
        ("mobilenet", MATCHED, {"adc_bits": "exact"}),  # lossless ADC, depthwise groups
        ("resnet", dict(cell_bits=4, hw_set=("dac.slice_bits=4",)), {}),  # two slices
        ("mlp", MATCHED, {"adc_placement": "differential"}),  # signed cells and codes
        ("lenet", {}, {}),  # the faithful default: 2-bit cells, 1-bit DAC steps
    ],
)
def test_fused_path_gives_the_bits_of_reads_read_by_read(digits, model, options, changes):
    program = digits_program(model, **options)
    settings = noise_settings("quant", **changes)
    by_read, _ = run(program, settings, digits, path="by read")
    chosen, executor = run(program, settings, digits)
    assert set(executor._paths.values()) == {"fused"}
    forced, _ = run(program, settings, digits, engine="fused")
    np.testing.assert_array_equal(chosen, by_read, strict=True)
    np.testing.assert_array_equal(forced, by_read, strict=True)
    kernels.set_backend("numpy")
    try:
        by_numpy, _ = run(program, settings, digits, engine="fused")
    finally:
        kernels.set_backend("numba")
    np.testing.assert_array_equal(by_numpy, by_read, strict=True)


def test_every_engine_gives_the_same_bits(digits):
    # ranges calibrated at the median clip many inputs and read sums
    from xbarc.calibrate import calibrate

    program = calibrate(digits_program("lenet", **MATCHED), {"x": digits}, percentile=50)
    settings = noise_settings("quant", input_range="calibrated", adc_range="calibrated")
    by_read, _ = run(program, settings, digits, path="by read")
    for engine in ("fused", "gemm", "sparse", "by read"):
        result, _ = run(program, settings, digits, engine=engine)
        np.testing.assert_array_equal(result, by_read, strict=True, err_msg=engine)


def test_fused_layers_give_their_outputs_in_the_image_layout(digits):
    # the layer's output is the C-contiguous image itself (a Relu after it runs in place),
    # not a transposed view of [channels, items x pixels] as read by read
    program = digits_program("lenet", **MATCHED)
    layers = [op for op in program.ops if isinstance(op, CrossbarLayer)]
    layouts = {}
    for engine in ("fused", "by read"):
        executor = Executor(program, noise_settings("quant"), Seeds.derive(0))
        executor._fused_engine = lambda *args, e=engine: e  # type: ignore[method-assign]
        values = executor.run_all({"x": digits})
        layouts[engine] = [values[layer.output].flags.c_contiguous for layer in layers]
    assert layouts["fused"] == [True] * len(layers)
    assert not all(layouts["by read"])  # the convolutions' outputs: transposed views


def test_noisy_and_dynamic_reads_take_another_path(digits):
    program = digits_program("lenet", **MATCHED)
    _, dynamic = run(program, noise_settings("quant", adc_range="dynamic"), digits)
    assert "fused" not in dynamic._paths.values()
    _, noisy = run(program, noise_settings("rram"), digits)
    assert "fused" not in noisy._paths.values()


# ---------------------------------------------------------------------------------------
# The measured engines table


def test_the_shipped_engines_table_loads_and_names_known_engines():
    table = engines.load_table(engines.TABLE)
    assert table, "engines.toml measures no shape"
    for entry in table:
        assert set(entry.ms) <= set(engines.ENGINES)
        assert {"fused", "by read"} <= set(entry.ms)
        assert all(ms > 0 for ms in entry.ms.values())


def test_fastest_takes_the_nearest_measured_shape(tmp_path):
    table = tmp_path / "engines.toml"
    table.write_text(
        "[[shape]]\nrows = 128\ncolumns = 64\npatches = 8192\ndigit_bits = 7\nslices = 1\n"
        'density = 0.5\nms = { fused = 1.0, sparse = 3.0, "by read" = 2.0 }\n'
        "[[shape]]\nrows = 9\ncolumns = 16\npatches = 8192\ndigit_bits = 1\nslices = 7\n"
        'density = 0.1\nms = { fused = 4.0, sparse = 1.0, "by read" = 2.0 }\n'
    )
    tall = engines.ReadShape(120, 80, 10000, 7, 1, 0.45)
    short = engines.ReadShape(12, 20, 6000, 1, 7, 0.2)
    assert engines.fastest(tall, ["fused", "sparse", "by read"], table) == "fused"
    assert engines.fastest(short, ["fused", "sparse", "by read"], table) == "sparse"
    assert engines.fastest(short, ["fused", "by read"], table) == "by read"
    # whether the input is unfolded first weighs like a 16x size: a conv takes the conv's
    # figures where one is measured at its size
    tall_conv = engines.ReadShape(120, 80, 10000, 7, 1, 0.45, unfolds=True)
    assert engines.fastest(tall_conv, ["fused", "sparse", "by read"], table) == "fused"
    convs = tmp_path / "convs.toml"  # another path: tables are cached by path
    convs.write_text(
        table.read_text() + "[[shape]]\nrows = 128\ncolumns = 256\npatches = 8192\ndigit_bits = 7\n"
        'slices = 1\ndensity = 0.5\nunfolds = true\nms = { fused = 3.0, "by read" = 2.0 }\n'
    )
    assert engines.fastest(tall_conv, ["fused", "sparse", "by read"], convs) == "by read"
    assert engines.fastest(tall, ["fused", "sparse", "by read"], convs) == "fused"
