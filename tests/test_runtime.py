"""The executor: `ideal` against onnxruntime, `quant` bit for bit against an independent
numpy reference of the same quantization, over dense, sliced, grouped and phased programs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.onnx_models import im2col, parse, random, run_onnxruntime, save
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.hardware import DacSpec
from xbarc.ir.geometry import conv_output_spatial
from xbarc.ir.tile import Const, CrossbarLayer, Span
from xbarc.runtime.executor import Executor
from xbarc.runtime.kernels import depthwise
from xbarc.runtime.noise import noise_settings

CNN = """
cnn (float[2,3,9,9] x) => (float y)
{
  c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <group = 6, strides = [2, 2], pads = [1, 0, 1, 0]> (r1, w2)
  c3 = Conv <group = 3, dilations = [2, 2]> (c2, w3, b3)
  p = GlobalAveragePool (c3)
  f = Flatten (p)
  s = Slice (f, starts, ends, axes)
  y = Gemm (s, w4, b4)
}
"""
CNN_WEIGHTS = {
    "w1": (6, 3, 3, 3),
    "b1": (6,),
    "w2": (6, 1, 3, 3),
    "w3": (24, 2, 2, 2),
    "b3": (24,),
    "w4": (4, 5),
    "b4": (5,),
}


def cnn_model():
    weights = {
        name: random(shape, seed=i + 1) for i, (name, shape) in enumerate(CNN_WEIGHTS.items())
    }
    weights["starts"] = np.array([0], dtype=np.int64)
    weights["ends"] = np.array([4], dtype=np.int64)
    weights["axes"] = np.array([1], dtype=np.int64)
    return parse(CNN, weights)


CONV_TRANSPOSE = """
up (float[1,4,5,5] x) => (float y)
{
  y = ConvTranspose <group = 2, strides = [2, 2], pads = [1, 0, 0, 1],
                     output_padding = [1, 1]> (x, w, b)
}
"""

MATMUL = """
mm (float[2,3,20] x) => (float y)
{
  y = MatMul (x, w)
}
"""

PIPELINES = {
    "one phase": "quantize{weight-bits=8,cell-bits=2},tile{rows=8,cols=4},allocate{tiles=10000}",
    "phases": "quantize{weight-bits=6,cell-bits=2},tile{rows=8,cols=4},allocate{tiles=3}",
    "unsliced": "quantize{weight-bits=4,cell-bits=4},tile{rows=16,cols=16},allocate",
    "offset": "quantize{weight-bits=5,cell-bits=2,encoding=offset},tile{rows=8,cols=8},allocate",
    "per column": "quantize{weight-bits=8,cell-bits=3,scale=column},tile,allocate{tiles=5}",
    "separate groups": "quantize,tile{rows=16,cols=8,groups=separate},allocate{tiles=7}",
    # 11-bit cell levels on 128-row tiles, 7-bit DAC steps (below): the sums of a read can
    # pass 2^24, so reads are float64
    "wide cells": "quantize{weight-bits=12,cell-bits=12},tile{rows=128,cols=16},allocate",
    # compacted blocks: row-gather and column-scatter tables, several blocks per tile
    "sparse": "quantize{weight-bits=8,cell-bits=2},tile{rows=8,cols=8,mapping=sparse,group-cols=3},"
    "allocate{tiles=4}",
    "squeeze": "quantize{weight-bits=8,cell-bits=2},tile{rows=8,cols=8,mapping=squeeze,"
    "group-cols=2},allocate",
    # blocks of several layers share tiles over several phases (kept on the chip where they can be)
    "packed dense": "quantize,tile{rows=16,cols=16,pack=model},allocate{tiles=3}",
    "packed squeeze": "quantize{weight-bits=8,cell-bits=1},tile{rows=8,cols=8,mapping=squeeze,"
    "pack=model},allocate{tiles=3}",
}


def compiled(model, pipeline, tmp_path, name="model"):
    path = save(model, tmp_path, f"{name}.onnx")
    return compile_onnx(path, CompileOptions(pipeline=pipeline))


def models():
    return {
        "cnn": (cnn_model(), {"x": random((2, 3, 9, 9), seed=10)}),
        "conv transpose": (
            parse(CONV_TRANSPOSE, {"w": random((4, 3, 3, 3), 3), "b": random((6,), 4)}),
            {"x": random((1, 4, 5, 5), seed=11)},
        ),
        "matmul": (parse(MATMUL, {"w": random((20, 7), 5)}), {"x": random((2, 3, 20), 12)}),
    }


# Compacted programs hold no cell for a weight whose quantized level is zero, so in
# `ideal` such a weight's real value (below half a level) is gone: tested apart, on pruned
# weights.
DENSE = [name for name in PIPELINES if name not in ("sparse", "squeeze", "packed squeeze")]


@pytest.mark.parametrize("pipeline", DENSE)
@pytest.mark.parametrize("model_name", ["cnn", "conv transpose", "matmul"])
def test_ideal_equals_onnxruntime(model_name, pipeline, tmp_path):
    model, feeds = models()[model_name]
    program = compiled(model, PIPELINES[pipeline], tmp_path)
    got = Executor(program).run(feeds)
    (want,) = run_onnxruntime(model, feeds)
    (name,) = program.outputs
    np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("pipeline", ["sparse", "squeeze", "packed squeeze"])
def test_ideal_on_compacted_programs(pipeline, tmp_path):
    """A pruned network (exact zeros) mapped sparse or squeezed is still the float model in
    `ideal`: each weight's rest beyond its level sits in the lowest slice it kept."""
    weights = random((20, 7), 5)
    weights[np.random.default_rng(6).random(weights.shape) < 0.7] = 0.0
    model = parse(MATMUL, {"w": weights})
    feeds = {"x": random((2, 3, 20), 12)}
    program = compiled(model, PIPELINES[pipeline], tmp_path)
    got = Executor(program).run(feeds)["y"]
    (want,) = run_onnxruntime(model, feeds)
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error < 1e-6


def test_ideal_graph_is_a_valid_model_holding_the_weights_read_from_the_tiles(tmp_path):
    import onnx
    from onnx import numpy_helper

    from xbarc.runtime.effective import effective_model

    model, _ = models()["cnn"]
    program = compiled(model, PIPELINES["phases"], tmp_path)
    executor = Executor(program)
    ideal = effective_model(program, executor.effective_weights)
    onnx.checker.check_model(ideal, full_check=True)
    stored = {tensor.name: numpy_helper.to_array(tensor) for tensor in ideal.graph.initializer}
    original = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    (first_conv, *_) = (node for node in ideal.graph.node if node.op_type == "Conv")
    # 8-bit weights in 2-bit slices: the slices of |w|/scale add back up to w
    np.testing.assert_allclose(stored[first_conv.input[1]], original["w1"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("noise", ["ideal", "quant"])
@pytest.mark.parametrize("model_name", ["cnn", "conv transpose"])
def test_tiles_kept_across_phases_compute_what_one_phase_computes(model_name, noise, tmp_path):
    """Blocks of several layers share tiles; on three tiles the phases read some of them
    again without writing them (they are still on the chip), on many tiles all is written
    once: the same blocks, so the same outputs (to float round-off: runs split over phases
    add their partial sums in another order)."""
    model, feeds = models()[model_name]
    tile = "quantize{weight-bits=8,cell-bits=1},tile{rows=8,cols=8,mapping=squeeze,"
    tile += "group-cols=4,pack=model},"
    phased = compiled(model, tile + "allocate{tiles=3}", tmp_path)
    single = compiled(model, tile + "allocate{tiles=1000}", tmp_path)
    assert phased.blocks == single.blocks and len(single.phases) == 1
    kept = 0
    for phase in phased.phases:
        written = {write.vtile for write in phase.writes}
        read = {phased.blocks[i].vtile for run in phase.runs for c in run.cycles for i in c.blocks}
        kept += len(read - written)
    assert kept > 0
    settings = noise_settings(noise, **({"adc_bits": "exact"} if noise == "quant" else {}))
    got = Executor(phased, settings).run(feeds)
    want = Executor(single, settings).run(feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6 * np.abs(value).max())


@pytest.fixture(
    params=[
        "integer",
        "integer bitplane",
        "integer fused",
        "integer sparse",
        "integer read by read",
        "float",
    ]
)
def reads(request, monkeypatch):
    """Quantized reads as exact integers: bit-serial reads as table lookups where they
    drive few rows (`depthwise_accumulate`) and as bit planes (`bitplane_accumulate`)
    elsewhere (the default), or all as bit planes; or where the machine's integer GEMM is
    exact, on the fused path (the engine its measured table names), all of a layer's
    columns at once (`sparse_read_accumulate`) or read by read (integer GEMMs, as when an
    observer takes the partial sums); or float32 GEMMs."""
    from xbarc.runtime.kernels import gemm

    bit_serial = request.param in ("integer", "integer bitplane")
    if request.param == "float":
        monkeypatch.setattr(gemm, "integer_matmul_exact", lambda: False)
    elif not bit_serial and not gemm.integer_matmul_exact():
        pytest.skip("onnxruntime's integer GEMM saturates on this machine")
    if bit_serial:  # every layer, even where the sparse kernel is faster
        monkeypatch.setattr("xbarc.runtime.executor.prefers_sparse", lambda reads, columns: False)
    else:
        monkeypatch.setattr(Executor, "_bitplane_reads", lambda self, plans: False)
    if request.param == "integer bitplane":
        monkeypatch.setattr(Executor, "_depthwise_columns", lambda self, plans: None)
    if request.param in ("integer sparse", "integer read by read", "float"):
        monkeypatch.setattr(Executor, "_fused_columns", lambda self, plans: None)
    if request.param in ("integer read by read", "float"):
        monkeypatch.setattr(Executor, "_sparse_columns", lambda self, plans: None)
    return request.param


@pytest.mark.parametrize("adc_bits", [0, 8, 4])
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("model_name", ["cnn", "conv transpose", "matmul"])
def test_quant_equals_numpy_reference_bit_for_bit(model_name, pipeline, adc_bits, reads, tmp_path):
    model, feeds = models()[model_name]
    program = compiled(model, PIPELINES[pipeline], tmp_path)
    if pipeline == "wide cells":
        hardware = replace(program.hardware, dac=DacSpec(bits=8, slice_bits=8))
        program = replace(program, hardware=hardware)
    executor = Executor(program, noise_settings("quant", adc_bits=adc_bits or "exact"))
    if pipeline == "wide cells":
        assert executor.cell_type == np.float64
    elif reads not in ("integer", "integer bitplane"):
        assert executor.cell_type == (np.float32 if reads == "float" else np.uint8)
    values = executor.run_all(feeds)
    for layer in program.layers():
        want = quant_layer_reference(program, layer, values[layer.input], adc_bits)
        np.testing.assert_array_equal(values[layer.output], want, err_msg=layer.name)
    # bit-serial integer reads take the tables where their reads drive few rows (one
    # input bit a step) and the bit planes elsewhere; without them, the fused path (its
    # engines include the sparse kernel and read by read) or the sparse kernel, but for the
    # offset correction's input sums; 8-bit DAC steps of wide cells ("wide cells") on the
    # fused path, else read by read
    paths = {executor._paths[layer.name] for layer in program.layers()}
    if reads in ("integer read by read", "float"):
        assert paths == {"by read"}
    elif pipeline == "wide cells":
        fused = ("integer", "integer bitplane", "integer fused")
        assert paths == {"fused" if reads in fused else "by read"}
    elif reads == "integer":
        for layer in program.layers():
            assert executor._paths[layer.name] == bit_serial_path(executor, layer)
    elif reads == "integer bitplane":
        assert paths == {"bitplane"}
    elif pipeline == "offset":
        assert paths == {"by read"}
    else:
        assert paths == {"fused" if reads == "integer fused" else "sparse"}


def bit_serial_path(executor: Executor, layer: CrossbarLayer) -> str:
    """The path of a layer's bit-serial reads: "depthwise" where the DAC steps are one
    bit and no read drives more than `depthwise.TABLE_ROWS` rows, else "bitplane"."""
    plans = executor.plans[layer.name]
    driven = [np.arange(layer.rows)[read.rows] for plan in plans for read in plan.reads]
    one_bit = executor.program.hardware.dac.slice_bits == 1
    short = one_bit and max(len(rows) for rows in driven) <= depthwise.TABLE_ROWS
    return "depthwise" if short else "bitplane"


@pytest.mark.parametrize("adc_bits", [0, 8, 4])
@pytest.mark.parametrize(
    "pipeline", ["one phase", "phases", "unsliced", "per column", "wide cells"]
)
@pytest.mark.parametrize("model_name", ["cnn", "matmul"])
def test_differential_adc_equals_numpy_reference(model_name, pipeline, adc_bits, tmp_path):
    model, feeds = models()[model_name]
    program = compiled(model, PIPELINES[pipeline], tmp_path)
    settings = noise_settings("quant", adc_bits=adc_bits or "exact", adc_placement="differential")
    values = Executor(program, settings).run_all(feeds)
    for layer in program.layers():
        want = quant_layer_reference(program, layer, values[layer.input], adc_bits, True)
        np.testing.assert_array_equal(values[layer.output], want, err_msg=layer.name)
    if adc_bits == 0:  # a lossless ADC does not care where it sits
        per_polarity = Executor(program, noise_settings("quant", adc_bits="exact")).run(feeds)
        for name, value in Executor(program, settings).run(feeds).items():
            np.testing.assert_array_equal(value, per_polarity[name])


def test_quant_is_deterministic_and_close_to_ideal(tmp_path):
    model, feeds = models()["cnn"]
    program = compiled(model, PIPELINES["one phase"], tmp_path)
    first = Executor(program, noise_settings("quant")).run(feeds)
    second = Executor(program, noise_settings("quant")).run(feeds)
    ideal = Executor(program).run(feeds)
    (name,) = program.outputs
    np.testing.assert_array_equal(first[name], second[name])
    error = np.abs(first[name] - ideal[name]).max() / np.abs(ideal[name]).max()
    assert 0 < error < 0.1  # quantized, but not broken


def test_quant_run_lets_a_relu_overwrite_only_the_layer_output_it_alone_reads(
    tmp_path, monkeypatch
):
    from xbarc.runtime import digital

    model, feeds = models()["cnn"]
    program = compiled(model, PIPELINES["one phase"], tmp_path)
    executor = Executor(program, noise_settings("quant"))
    kept = {name: array.copy() for name, array in feeds.items()}
    (name,) = program.outputs
    values = executor.run_all(feeds)
    assert (values["c1"] < 0).any()  # run_all keeps every value as computed
    donations = []
    run_digital = digital.run_digital

    def spy(op, inputs, constant, *, donated=frozenset()):
        donations.append((op.op_type, sorted(donated)))
        return run_digital(op, inputs, constant, donated=donated)

    monkeypatch.setattr(digital, "run_digital", spy)
    got = executor.run(feeds)
    # offered: the layer outputs one op reads alone (c1 by the Relu, c3 by the pool)
    offered = [(op_type, donated) for op_type, donated in donations if donated]
    assert offered == [("Relu", [0]), ("GlobalAveragePool", [0])]
    np.testing.assert_array_equal(got[name], values[name])
    for key, array in feeds.items():
        np.testing.assert_array_equal(array, kept[key])


def test_lossless_adc_gives_the_same_answer_for_any_tiling(tmp_path):
    """With a lossless ADC, how weights are cut into blocks and phases cannot matter."""
    model, feeds = models()["cnn"]
    results = []
    for rows, cols, tiles in ((8, 4, 10000), (16, 16, 2), (128, 128, 128)):
        pipeline = f"quantize{{weight-bits=6,cell-bits=2}},tile{{rows={rows},cols={cols}}}"
        program = compiled(model, f"{pipeline},allocate{{tiles={tiles}}}", tmp_path)
        results.append(Executor(program, noise_settings("quant", adc_bits="exact")).run(feeds))
    (name,) = program.outputs
    for other in results[1:]:
        np.testing.assert_array_equal(other[name], results[0][name])


def test_a_misplaced_block_gives_a_wrong_answer(tmp_path):
    """The executor reads the programmed tiles, so a mapping bug cannot hide."""
    from dataclasses import replace

    model, feeds = models()["matmul"]
    program = compiled(model, PIPELINES["one phase"], tmp_path)
    (name,) = program.outputs
    right = Executor(program).run(feeds)[name]
    blocks = list(program.blocks)
    blocks[0] = replace(blocks[0], rows=Span(1, 1 + len(blocks[0].rows)))
    wrong = Executor(replace(program, blocks=tuple(blocks))).run(feeds)[name]
    assert not np.allclose(right, wrong, rtol=1e-3)


# --- an independent numpy reference of the quantized crossbar ----------------------------


def quant_layer_reference(
    program, layer: CrossbarLayer, x: np.ndarray, adc_bits: int, differential: bool = False
):
    """Block by block, input bit by input bit, as the SPEC describes, in plain numpy. With
    `differential`, a + block and the - block at the same rows, columns and shift, read in
    the same run, are read as one: their sums subtract before a signed ADC of
    2^(bits-1) - 1 levels a side."""
    hardware = program.hardware
    store = program.store
    array = program.array(layer.name)
    x = x.astype(np.float32)
    rows_per_group = reference_rows(layer, x)  # [groups, P, rows]
    dac_bits, slice_bits = hardware.dac.bits, hardware.dac.slice_bits
    # a non-negative input needs no sign: all the DAC's bits are magnitude (unless that
    # would widen a slice's digit)
    magnitude_bits = dac_bits if x.min() >= 0 and slice_bits <= dac_bits - 1 else dac_bits - 1
    limit = 2**magnitude_bits - 1
    peak = float(np.abs(x).max())
    input_scale = peak / limit if peak > 0 else 1.0
    levels_in = np.clip(np.rint(rows_per_group / input_scale), -limit, limit).astype(np.int64)
    input_slices = -(-magnitude_bits // slice_bits)
    adc_levels = 0 if adc_bits == 0 else 2**adc_bits - 1
    if differential and adc_bits:
        adc_levels = 2 ** (adc_bits - 1) - 1
    unit = adc_levels or 1
    acc = np.zeros(rows_per_group.shape[:2] + (array.cols,), dtype=np.int64)
    levels = store[array.levels].astype(np.int64)
    offset = 2 ** (array.weight_bits - 1)
    lowest = {
        p: min(s.shift for s in array.slices if s.polarity == p)
        for p in "+-"
        if any(s.polarity == p for s in array.slices)
    }
    mine = [block for block in program.blocks if block.array == layer.name]
    run_of = {  # a pair is sensed together only when both are read in the same run
        index: (phase.index, number)
        for phase in program.phases
        for number, run in enumerate(phase.runs)
        for cycle in run.cycles
        for index in cycle.blocks
    }

    def place(block):
        piece = array.slices[block.slice]
        return (run_of[block.index], block.group, piece.shift,
                tuple(indices(block.rows, store)), tuple(indices(block.cols, store)))  # fmt: skip

    negative = {place(b): b for b in mine if array.slices[b.slice].polarity == "-"}

    def block_cells(block):
        piece = array.slices[block.slice]
        rows, cols = indices(block.rows, store), indices(block.cols, store)
        weights = levels[block.group][np.ix_(rows, cols)]
        if array.encoding == "offset":
            magnitude = weights + offset
        else:
            magnitude = np.maximum(weights if piece.polarity == "+" else -weights, 0)
        return (magnitude >> piece.shift) & (2**piece.bits - 1)

    paired = set()
    for block in mine:
        piece = array.slices[block.slice]
        partner = negative.get(place(block)) if differential and piece.polarity == "+" else None
        if block.index in paired:
            continue
        rows = indices(block.rows, store)
        cols = indices(block.cols, store)
        cells = block_cells(block)
        if partner is not None:
            paired.add(partner.index)
            cells = cells - block_cells(partner)
        significance = (1 if piece.polarity == "+" else -1) * 2**piece.shift
        full_scale = (2**slice_bits - 1) * (2**piece.bits - 1) * len(rows)
        for sign in (1, -1):
            part = np.maximum(sign * levels_in[block.group], 0)[:, rows]
            for j in range(input_slices):
                bits = (part >> (j * slice_bits)) & (2**slice_bits - 1)
                sums = bits @ cells
                if adc_levels:
                    low = -adc_levels if differential else 0
                    codes = np.clip(np.rint(sums * adc_levels / full_scale), low, adc_levels)
                    sums = codes.astype(np.int64) * full_scale
                acc[block.group][:, cols] += sign * significance * 2 ** (j * slice_bits) * sums
            if array.encoding == "offset" and piece.shift == lowest[piece.polarity]:
                acc[block.group][:, cols] -= (sign * offset * unit * part.sum(axis=1))[:, None]
    scale = array.scale
    weight_scale = store[scale.name][:, None, :] if isinstance(scale, Const) else scale
    result = (acc.astype(np.float64) / unit * input_scale * weight_scale).astype(np.float32)
    return reference_output(layer, result, x, store)


def indices(span_or_table, store) -> np.ndarray:
    if isinstance(span_or_table, Span):
        return np.arange(span_or_table.start, span_or_table.stop)
    return span_or_table.entries(store).astype(np.int64)


def reference_rows(layer: CrossbarLayer, x: np.ndarray) -> np.ndarray:
    if layer.kind == "conv":
        geometry = layer.geometry
        per_group = x.shape[1] // layer.groups
        parts = []
        for g in range(layer.groups):
            cols, _ = im2col(
                x[:, g * per_group : (g + 1) * per_group],
                geometry.kernel,
                geometry.strides,
                geometry.pads,
                geometry.dilations,
            )
            parts.append(cols.reshape(-1, cols.shape[-1]))
        return np.stack(parts)
    if layer.kind == "conv_transpose":
        pixels = x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1).reshape(-1, x.shape[1])
        return pixels.reshape(pixels.shape[0], layer.groups, layer.rows).transpose(1, 0, 2)
    return x.reshape(1, -1, x.shape[-1])


def reference_output(layer: CrossbarLayer, result: np.ndarray, x: np.ndarray, store):
    """Lay the accumulated [groups, P, cols] out as the layer output, bias added."""
    from xbarc.runtime.kernels import im2col

    if layer.kind == "conv":
        geometry = layer.geometry
        out = conv_output_spatial(
            x.shape[2:], geometry.kernel, geometry.strides, geometry.pads, geometry.dilations
        )
        groups, _, cols = result.shape
        image = result.reshape(groups, x.shape[0], -1, cols).transpose(1, 0, 3, 2)
        y = image.reshape(x.shape[0], groups * cols, *out)
    elif layer.kind == "conv_transpose":
        g = layer.geometry
        y = im2col.fold_numpy(
            result.transpose(0, 2, 1),
            x.shape[0],
            x.shape[2:],
            layer.cols // int(np.prod(g.kernel)),
            g.kernel,
            g.strides,
            g.pads,
            g.dilations,
            g.output_padding,
            layer.groups,
        )
    else:
        y = result[0].reshape(*x.shape[:-1], result.shape[-1])
    if layer.bias is not None:
        bias = store[layer.bias].astype(np.float32)
        y = y + (bias.reshape((1, -1) + (1,) * (y.ndim - 2)) if layer.geometry else bias)
    return y.astype(np.float32)


@pytest.mark.parametrize("path", ["depthwise", "bitplane", "fused", "sparse"])
@pytest.mark.parametrize("pipeline", ["one phase", "per column", "separate groups", "squeeze"])
def test_sparse_reads_equal_reads_one_by_one_with_calibrated_ranges(
    pipeline, path, tmp_path, monkeypatch
):
    """Ranges calibrated at the median clip many inputs and read sums: the depthwise
    tables (with the bit planes for the taller reads), the bit-plane, the fused and the
    sparse kernel (all of a layer's columns at once) give the bits integer GEMMs read by
    read give."""
    from xbarc.calibrate import calibrate
    from xbarc.runtime.kernels import gemm

    if not gemm.integer_matmul_exact():
        pytest.skip("onnxruntime's integer GEMM saturates on this machine")
    model, feeds = models()["cnn"]
    program = calibrate(compiled(model, PIPELINES[pipeline], tmp_path), feeds, percentile=50)
    settings = noise_settings("quant", input_range="calibrated", adc_range="calibrated")
    sparse = Executor(program, settings)
    if path in ("fused", "sparse"):
        monkeypatch.setattr(sparse, "_bitplane_reads", lambda plans: False)
    if path == "sparse":
        monkeypatch.setattr(sparse, "_fused_columns", lambda plans: None)
    if path in ("depthwise", "bitplane"):  # every layer, even where sparse is faster
        monkeypatch.setattr("xbarc.runtime.executor.prefers_sparse", lambda reads, columns: False)
    if path == "bitplane":
        monkeypatch.setattr(sparse, "_depthwise_columns", lambda plans: None)
    got = sparse.run_all(feeds)
    if path == "depthwise":
        paths = [sparse._paths[layer.name] for layer in program.layers()]
        assert paths == [bit_serial_path(sparse, layer) for layer in program.layers()]
    else:
        assert {sparse._paths[layer.name] for layer in program.layers()} == {path}
    one_by_one = Executor(program, settings)
    one_by_one.on_read_sums = lambda layer, sums, full_scales: None  # observed: read by read
    want = one_by_one.run_all(feeds)
    layers = [layer.name for layer in program.layers()]
    assert {one_by_one._read_path(one_by_one.plans[name]) for name in layers} == {"by read"}
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
