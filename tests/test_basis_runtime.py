"""BasisN programs on the simulated chip: layers combined from one shared basis run in every
profile.

- `quant`, lossless (`fit=identity`: K = L unit vectors, q = the weight bits, exact ADC):
  the basis program gives the direct program's outputs bit for bit, on random dense and
  sparse conv, grouped and depthwise conv and gemm layers (a property test) and on the
  digits fixtures.
- `quant` with an 8-bit ADC: every combined layer call equals an independent numpy
  reference of the basis reads (each segment through the DAC, each basis block's slices
  through the ADC at the full scale of the block's rows) and of the digital combine.
- `ideal` (`fit=svd`, K = L, q = 16) equals onnxruntime on the float model to 1e-4.
- `rram`: deterministic per seed; every copy of the basis gets its own programming noise,
  of the size the device model gives; a layer outside the noisy ones reads the basis
  without it.
- layers inside a Loop are combined and run once per iteration.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tests.onnx_models import make_model, run_onnxruntime, save, tanh_loop_model
from tests.test_control_flow import recorded_layer_calls
from tests.test_runtime import reference_output, reference_rows
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.ir.tile import Const, CrossbarLayer, Program
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings

DIGITS = Path(__file__).parent / "fixtures" / "digits"
FLOAT = TensorProto.FLOAT
EXACT = noise_settings("quant", adc_bits="exact")


# --- programs -------------------------------------------------------------------------------


def pipeline(
    basis: str | None,
    rows: int = 8,
    cols: int = 8,
    tiles: int = 64,
    encoding: str = "differential",
    weight_bits: int = 8,
) -> str:
    """The pipeline of a direct (`basis=None`) or basis program on tiles of rows x cols."""
    quantize = f"quantize{{weight-bits={weight_bits},cell-bits=2,encoding={encoding}}}"
    middle = "" if basis is None else f"basis{{{basis}}},"
    return f"{quantize},{middle}tile{{rows={rows},cols={cols}}},allocate{{tiles={tiles}}}"


def compiled(model: onnx.ModelProto, pipeline_text: str) -> Program:
    with tempfile.TemporaryDirectory() as folder:
        return compile_onnx(save(model, Path(folder)), CompileOptions(pipeline=pipeline_text))


def sparse_weight(shape, sparsity: float, rng) -> np.ndarray:
    weight = rng.standard_normal(shape).astype(np.float32)
    weight[rng.random(shape) < sparsity] = 0.0
    return weight


def layer_model(kind: str, size: dict, sparsity: float, bias: bool, seed: int):
    """One crossbar layer (conv, grouped conv, depthwise conv or gemm) with random
    weights, and a random input for it."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    if kind == "gemm":
        features, outputs = size["features"], size["outputs"]
        weights["w"] = sparse_weight((features, outputs), sparsity, rng)
        shape = [3, features]
        node = helper.make_node("Gemm", ["x", "w"] + (["b"] if bias else []), ["y"])
        if bias:
            weights["b"] = rng.standard_normal(outputs).astype(np.float32)
    else:
        channels, kernel = size["channels"], size["kernel"]
        groups = {"conv": 1, "grouped": 2, "depthwise": channels}[kind]
        channels *= 2 if kind == "grouped" else 1
        out_channels = channels if kind == "depthwise" else size["outputs"] * groups
        weights["w"] = sparse_weight(
            (out_channels, channels // groups, kernel, kernel), sparsity, rng
        )
        shape = [2, channels, 5, 5]
        node = helper.make_node(
            "Conv",
            ["x", "w"] + (["b"] if bias else []),
            ["y"],
            group=groups,
            pads=[kernel // 2] * 4,
        )
        if bias:
            weights["b"] = rng.standard_normal(out_channels).astype(np.float32)
    model = make_model([node], [("x", shape)], ["y"], weights)
    x = rng.standard_normal(shape).astype(np.float32)
    return model, {"x": x}


@st.composite
def layer_cases(draw):
    kind = draw(st.sampled_from(["conv", "grouped", "depthwise", "gemm"]))
    if kind == "gemm":
        # rows (features) from below one segment to several, rarely a multiple of L = 8
        size = {"features": draw(st.integers(3, 30)), "outputs": draw(st.integers(1, 11))}
    else:
        size = {
            "channels": draw(st.integers(1, 4)),
            "kernel": draw(st.sampled_from([1, 3])),
            "outputs": draw(st.integers(1, 5)),
        }
    sparsity = draw(st.sampled_from([0.0, 0.6, 0.95]))
    return kind, size, sparsity, draw(st.booleans()), draw(st.integers(0, 2**16))


# --- an independent numpy reference of a combined layer in `quant` -----------------------------


def basis_layer_reference(program: Program, layer: CrossbarLayer, x: np.ndarray, adc_bits: int):
    """The combined layer on `x`, in plain numpy from the SPEC: each input segment s of
    group g (rows s*L .. s*L+L-1 of the unfolded input, fewer in the last) drives every
    basis position (slice, rows [a:b], cols) of the basis: its DAC digits, bit-serially,
    times the slice's cells of the basis levels, through the ADC at the full scale of the
    block's b - a rows; the responses r[g, s, k] dequantized with the DAC's and the basis's
    scales; then y[n] = coef_scale[g, n] * sum_{s,k} coef[g, s, k, n] * r[g, s, k]."""
    hardware, store = program.hardware, program.store
    (combine,) = [c for c in program.combines if c.layer == layer.name]
    basis = program.array(combine.basis)
    length = combine.segment_rows
    x = x.astype(np.float32)
    rows_per_group = reference_rows(layer, x)  # [groups, P, rows]
    dac_bits, slice_bits = hardware.dac.bits, hardware.dac.slice_bits
    magnitude_bits = dac_bits if x.min() >= 0 and slice_bits <= dac_bits - 1 else dac_bits - 1
    limit = 2**magnitude_bits - 1
    peak = float(np.abs(x).max())
    input_scale = peak / limit if peak > 0 else 1.0
    levels_in = np.clip(np.rint(rows_per_group / input_scale), -limit, limit).astype(np.int64)
    adc_levels = 0 if adc_bits == 0 else 2**adc_bits - 1
    unit = adc_levels or 1
    groups, patches, rows = levels_in.shape
    segments = math.ceil(rows / length)
    basis_levels = store[basis.levels][0].astype(np.int64)  # [L, K]
    offset = 2 ** (basis.weight_bits - 1)
    positions = sorted(
        {
            (b.slice, b.rows.start, b.rows.stop, b.cols.start, b.cols.stop)
            for b in program.blocks
            if b.array == basis.name
        }
    )
    responses = np.zeros((groups, patches, segments, basis.cols), dtype=np.int64)
    for g in range(groups):
        for s in range(segments):
            for index, start, stop, first_col, last_col in positions:
                piece = basis.slices[index]
                driven = min(stop - start, rows - s * length - start)
                if driven <= 0:
                    continue
                weights = basis_levels[start : start + driven, first_col:last_col]
                if basis.encoding == "offset":
                    magnitude = weights + offset
                else:
                    magnitude = np.maximum(weights if piece.polarity == "+" else -weights, 0)
                cells = (magnitude >> piece.shift) & (2**piece.bits - 1)
                significance = (1 if piece.polarity == "+" else -1) * 2**piece.shift
                full_scale = (2**slice_bits - 1) * (2**piece.bits - 1) * (stop - start)
                source = np.arange(s * length + start, s * length + start + driven)
                for sign in (1, -1):
                    part = np.maximum(sign * levels_in[g], 0)[:, source]
                    for j in range(-(-magnitude_bits // slice_bits)):
                        bits = (part >> (j * slice_bits)) & (2**slice_bits - 1)
                        sums = bits @ cells
                        if adc_levels:
                            codes = np.clip(np.rint(sums * adc_levels / full_scale), 0, adc_levels)
                            sums = codes.astype(np.int64) * full_scale
                        contribution = sign * significance * 2 ** (j * slice_bits) * sums
                        responses[g, :, s, first_col:last_col] += contribution
                    if basis.encoding == "offset" and piece.shift == 0:
                        responses[g, :, s, first_col:last_col] -= (
                            sign * offset * unit * part.sum(axis=1)
                        )[:, None]
    basis_scale = (
        store[basis.scale.name][0] if isinstance(basis.scale, Const) else np.float64(basis.scale)
    )
    r = responses.astype(np.float64) / unit * input_scale * basis_scale  # [G, P, S, K]
    coef = store[combine.coefficients].astype(np.float64)  # [G, S, K, N]
    assert isinstance(combine.scale, Const)
    coef_scale = store[combine.scale.name].astype(np.float64)  # [G, N]
    y = np.einsum("gpsk,gskn->gpn", r, coef) * coef_scale[:, None, :]
    return reference_output(layer, y.astype(np.float32), x, store)


def assert_lossless(direct: Program, basis: Program) -> None:
    """`fit=identity` with q = the weight bits is lossless: the coefficients are the
    direct program's levels and their scales its scales, exactly."""
    store = basis.store
    for combine in basis.combines:
        array = direct.weights_of(combine.layer)
        assert array is not None
        levels = direct.store[array.levels]
        coef = store[combine.coefficients]  # [G, S, K, N], K = L unit vectors
        groups, segments, length, cols = coef.shape
        padded = np.zeros((groups, segments * length, cols), dtype=np.int64)
        padded[:, : levels.shape[1]] = levels
        np.testing.assert_array_equal(coef.reshape(padded.shape), padded)
        assert isinstance(combine.scale, Const) and isinstance(array.scale, Const)
        np.testing.assert_array_equal(store[combine.scale.name], direct.store[array.scale.name])


# --- the combine's formula ---------------------------------------------------------------------


@pytest.mark.parametrize("groups, rows, length, count, cols", [(1, 20, 8, 5, 3), (6, 9, 8, 8, 1)])
def test_combined_weights_follow_the_formula_of_the_ir(groups, rows, length, count, cols):
    from xbarc.ir.basis import combined_weight
    from xbarc.ir.tensors import TensorStore
    from xbarc.ir.tile import Array, BasisCombine, ConvGeometry, Slice
    from xbarc.ir.types import TensorType
    from xbarc.runtime.combine import combine_table, combined_weights

    rng = np.random.default_rng(groups)
    segments = math.ceil(rows / length)
    coef = rng.integers(-127, 128, (groups, segments, count, cols)).astype(np.int8)
    coef_scale = rng.random((groups, cols)).astype(np.float32)
    levels = rng.integers(-127, 128, (length, count))
    basis_scale = rng.random((1, count)).astype(np.float32)
    store = TensorStore({"c": coef, "cs": coef_scale, "bs": basis_scale})
    basis = Array("B", "basis", 1, length, count, 8, "differential", Const("bs"), "v", "q",
                  (Slice(0, "+", 0, 7), Slice(1, "-", 0, 7)))  # fmt: skip
    layer = CrossbarLayer("conv", "conv", "x", "y", TensorType("f32", (1, groups * cols, 3, 3)),
                          "w", None, groups, rows, cols,
                          ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)))  # fmt: skip
    table = combine_table(
        BasisCombine("conv", "B", length, "c", 8, Const("cs")), basis, layer, store
    )
    # every segment read the same basis (in levels): row s*L + r holds basis row r
    read = np.concatenate([levels] * segments)[:rows].astype(np.float64)
    got = combined_weights(table, np.broadcast_to(read, (groups, rows, count)))
    want = combined_weight(coef, coef_scale, levels * basis_scale.astype(np.float64), rows)
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --- lossless: the basis program is the direct program ---------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=layer_cases(),
    encoding=st.sampled_from(["differential", "offset"]),
    length=st.sampled_from([8, 16]),  # segments of one tile's rows, or of two row bands
)
def test_identity_basis_reproduces_the_direct_quant_outputs(case, encoding, length, monkeypatch):
    kind, size, sparsity, bias, seed = case
    model, feeds = layer_model(kind, size, sparsity, bias, seed)
    direct = compiled(model, pipeline(None, encoding=encoding))
    basis = compiled(
        model, pipeline(f"fit=identity,coef-bits=8,segment-rows={length}", encoding=encoding)
    )
    assert basis.combines and not [a for a in basis.arrays if a.kind == "weights"]
    assert_lossless(direct, basis)
    want = Executor(direct, EXACT).run(feeds)["y"]
    got = Executor(basis, EXACT).run(feeds)["y"]
    np.testing.assert_array_equal(got, want)
    # and with an 8-bit ADC, the basis reads and the combine as the SPEC says
    quant = Executor(basis, noise_settings("quant"))
    calls = recorded_layer_calls(quant, monkeypatch)
    quant.run(feeds)
    ((layer, x, y),) = calls
    np.testing.assert_allclose(
        y, basis_layer_reference(basis, layer, x, 8), rtol=1e-5, atol=1e-6 * np.abs(y).max()
    )


@pytest.mark.parametrize("name, keep", [("lenet", ()), ("mobilenet", ()), ("lenet", ("/0/Conv",))])
def test_identity_basis_reproduces_a_digits_network(name, keep):
    data = np.load(DIGITS / "digits_test.npz")
    feeds = {"x": data["x"][:16].astype(np.float32)}
    options = {"input_shapes": {"x": (1, 1, 8, 8)}, "tiles": 128}
    direct = compile_onnx(DIGITS / f"{name}.onnx", CompileOptions(**options))
    basis = compile_onnx(
        DIGITS / f"{name}.onnx",
        CompileOptions(
            **options, strategy="basis", basis_fit="identity", coef_bits=8, basis_keep=keep
        ),
    )
    layers = [layer.name for layer in basis.layers()]
    assert len(basis.phases) == 1
    assert [c.layer for c in basis.combines] == [name for name in layers if name not in keep]
    # a kept layer stays on its own weights, read beside the basis
    assert [a.layer for a in basis.arrays if a.kind == "weights"] == list(keep)
    assert_lossless(direct, basis)
    (output,) = direct.outputs
    want = Executor(direct, EXACT).run(feeds)[output]
    executor = Executor(basis, EXACT)
    got = executor.run(feeds)[output]
    np.testing.assert_array_equal(got, want)
    # its layers take an integer kernel (the depthwise tables for reads of a few rows,
    # the bit planes, sparse, or the fused path's engines), which gives the bits of
    # reading read by read (an observer of the read sums forces that)
    paths = ("depthwise", "bitplane", "sparse", "fused")
    assert all(executor._paths[c.layer] in paths for c in basis.combines)
    observed = Executor(basis, EXACT)
    seen: set[str] = set()
    observed.on_read_sums = lambda layer, sums, full_scales: seen.add(layer)
    np.testing.assert_array_equal(observed.run(feeds)[output], got)
    assert seen == {layer.name for layer in basis.layers()}


# --- quant with a lossy ADC, against the reference --------------------------------------------


@pytest.mark.parametrize("encoding", ["differential", "offset"])
def test_svd_basis_quant_layers_match_the_reference(encoding, monkeypatch):
    model, feeds = layer_model("conv", {"channels": 3, "kernel": 3, "outputs": 4}, 0.0, True, 5)
    # 27 rows: segments of 8, 8, 8 and 3 rows; K = 6 basis vectors, 2 copies
    basis = compiled(model, pipeline("k=6,coef-bits=6,copies=2", encoding=encoding))
    (array,) = [a for a in basis.arrays if a.kind == "basis"]
    assert (array.rows, array.cols, array.copies) == (8, 6, 2)
    quant = Executor(basis, noise_settings("quant"))
    calls = recorded_layer_calls(quant, monkeypatch)
    quant.run(feeds)
    ((layer, x, y),) = calls
    want = basis_layer_reference(basis, layer, x, 8)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # a lossless ADC: the same reference, exact responses
    exact = Executor(basis, EXACT)
    calls = recorded_layer_calls(exact, monkeypatch)
    exact.run(feeds)
    ((layer, x, y),) = calls
    want = basis_layer_reference(basis, layer, x, 0)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


# --- ideal: the float model ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, size",
    [
        ("conv", {"channels": 3, "kernel": 3, "outputs": 5}),
        ("grouped", {"channels": 2, "kernel": 3, "outputs": 3}),
        ("depthwise", {"channels": 4, "kernel": 3, "outputs": 1}),
        ("gemm", {"features": 21, "outputs": 7}),
    ],
)
def test_full_rank_svd_basis_ideal_matches_onnxruntime(kind, size):
    model, feeds = layer_model(kind, size, 0.3, True, 11)
    basis = compiled(model, pipeline("fit=svd,k=8,coef-bits=16"))
    (want,) = run_onnxruntime(model, feeds)
    got = Executor(basis).run(feeds)["y"]
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    # the basis cells are what ideal reads: a wrong basis changes the answer
    broken = broken_basis(basis)
    assert np.abs(Executor(broken).run(feeds)["y"] - want).max() > 1e-2 * scale


def broken_basis(program: Program) -> Program:
    """`program` with its basis values and levels (all copies) swapped in two columns."""
    from dataclasses import replace

    (array,) = [a for a in program.arrays if a.kind == "basis"]
    store = program.store
    values, levels = store[array.values].copy(), store[array.levels].copy()
    values[..., [0, 1]] = values[..., [1, 0]]
    levels[..., [0, 1]] = levels[..., [1, 0]]
    return replace(program, store=store.with_tensors({array.values: values, array.levels: levels}))


def test_full_rank_svd_basis_ideal_matches_onnxruntime_on_digits():
    data = np.load(DIGITS / "digits_test.npz")
    feeds = {"x": data["x"][:32].astype(np.float32)}
    basis = compile_onnx(
        DIGITS / "resnet.onnx",
        CompileOptions(
            input_shapes={"x": (1, 1, 8, 8)}, tiles=128, strategy="basis", coef_bits=16,
            basis_k=128,
        ),
    )  # fmt: skip
    (want,) = run_onnxruntime(onnx.load(DIGITS / "resnet.onnx"), feeds)
    got = Executor(basis).run(feeds)[basis.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# --- rram: every copy its own noise -----------------------------------------------------------

RELATIVE = {"programming": "relative", "programming_relative": 0.05, "p_sa0": 0.0, "p_sa1": 0.0}


def segment_cells(executor: Executor, layer: str) -> dict[int, np.ndarray]:
    """The cells each input segment of `layer` was read against (first row -> [M, rows])."""
    cells = {}
    for plan in executor.plans[layer]:
        for read in plan.reads:
            assert isinstance(read.rows, slice)
            cells[read.rows.start] = read.cells_t.astype(np.float64)
    return cells


def copy_of_segments(program: Program, layer: str) -> dict[int, int]:
    """Which copy of the basis each input segment's reads name (first row -> copy)."""
    (array,) = [a for a in program.arrays if a.kind == "basis"]
    per_copy = len([b for b in program.blocks if b.array == array.name]) // array.copies
    copies: dict[int, set[int]] = {}
    for phase in program.phases:
        for run in phase.runs:
            if run.layer != layer:
                continue
            for cycle in run.cycles:
                for read in cycle.reads:
                    start = read.input.rows.start
                    copies.setdefault(start, set()).add(read.block // per_copy)
    assert all(len(found) == 1 for found in copies.values())
    return {start: found.pop() for start, found in copies.items()}


def test_every_copy_of_the_basis_gets_its_own_programming_noise():
    # 64 rows: 8 segments of 8 rows over 4 copies, each copy read by two segments
    model, feeds = layer_model("gemm", {"features": 64, "outputs": 6}, 0.0, False, 2)
    program = compiled(model, pipeline("fit=svd,copies=4", rows=8, cols=8, tiles=64))
    (layer,) = [layer.name for layer in program.layers()]
    copy_of = copy_of_segments(program, layer)
    assert sorted(set(copy_of.values())) == [0, 1, 2, 3]
    targets = segment_cells(Executor(program, noise_settings("quant")), layer)
    settings = noise_settings("rram", **RELATIVE)
    noisy = segment_cells(Executor(program, settings, Seeds.derive(3)), layer)
    cell = program.hardware.cell
    cell_max = 2**cell.bits - 1
    span = cell.g_max_us - cell.g_min_us
    noise = {}
    for start, target in targets.items():
        # sigma of the relative model, in the level units a read sees
        conductance = cell.g_min_us + span * target / cell_max
        sigma = 0.05 * conductance * cell_max / span
        noise[start] = (noisy[start] - target) / sigma
    # each segment's noise has the model's size...
    for z in noise.values():
        assert abs(z.mean()) < 0.15 and 0.85 < z.std() < 1.15
    by_copy: dict[int, list[int]] = {}
    for start, copy in sorted(copy_of.items()):
        by_copy.setdefault(copy, []).append(start)
    for starts in by_copy.values():  # ... the same for segments read against one copy
        first, second = starts
        np.testing.assert_array_equal(noise[first], noise[second])
    # ... and independent between copies
    heads = [starts[0] for starts in by_copy.values()]
    for i, a in enumerate(heads):
        for b in heads[i + 1 :]:
            assert abs(np.corrcoef(noise[a].ravel(), noise[b].ravel())[0, 1]) < 0.12
    # deterministic per seed, another seed another chip
    rram = noise_settings("rram")
    first = Executor(program, rram, Seeds.derive(3)).run(feeds)["y"]
    again = Executor(program, rram, Seeds.derive(3)).run(feeds)["y"]
    other = Executor(program, rram, Seeds.derive(4)).run(feeds)["y"]
    np.testing.assert_array_equal(first, again)
    assert np.isfinite(first).all() and not np.array_equal(first, other)
    quant = Executor(program, noise_settings("quant")).run(feeds)["y"]
    assert np.abs(first - quant).max() > 0
    pcm = [Executor(program, noise_settings("pcm"), Seeds.derive(3)).run(feeds)["y"] for _ in "ab"]
    np.testing.assert_array_equal(*pcm)
    assert np.isfinite(pcm[0]).all() and not np.array_equal(pcm[0], quant)


def test_a_layer_outside_the_noisy_ones_reads_the_basis_without_noise():
    model = make_model(
        [
            helper.make_node("Gemm", ["x", "w1"], ["h"]),
            helper.make_node("Gemm", ["h", "w2"], ["y"]),
        ],
        [("x", [3, 20])],
        ["y"],
        {"w1": sparse_weight((20, 12), 0.0, np.random.default_rng(1)),
         "w2": sparse_weight((12, 5), 0.0, np.random.default_rng(2))},
    )  # fmt: skip
    program = compiled(model, pipeline("fit=svd"))
    first, second = [layer.name for layer in program.layers()]
    targets = Executor(program, noise_settings("quant"))
    settings = noise_settings("rram", **RELATIVE)
    one = Executor(program, settings, Seeds.derive(5), noisy_layers=frozenset({first}))
    for layer, noisy in ((first, True), (second, False)):
        clean, read = segment_cells(targets, layer), segment_cells(one, layer)
        for start in clean:
            assert np.array_equal(clean[start], read[start]) != noisy, (layer, start)
    none = Executor(program, settings, Seeds.derive(5), noisy_layers=frozenset())
    feeds = {"x": np.random.default_rng(3).standard_normal((3, 20)).astype(np.float32)}
    np.testing.assert_array_equal(none.run(feeds)["y"], targets.run(feeds)["y"])


# --- control flow -----------------------------------------------------------------------------


def test_a_loop_body_layer_is_combined_and_runs_every_iteration(monkeypatch):
    """h_{k+1} = Tanh(h_k @ w + x) for 3 iterations, the MatMul combined from the basis."""
    rng = np.random.default_rng(7)
    model = tanh_loop_model(rng.standard_normal((11, 11)).astype(np.float32))
    program = compiled(model, pipeline("fit=svd,k=8,coef-bits=16"))
    (layer,) = program.layers()
    assert [c.layer for c in program.combines] == [layer.name]
    feeds = {name: rng.standard_normal((2, 11)).astype(np.float32) for name in ("x", "h0")}
    want = run_onnxruntime(model, feeds)
    ideal = Executor(program).run(feeds)
    for name, expected in zip(program.outputs, want, strict=True):
        np.testing.assert_allclose(ideal[name], expected, rtol=1e-4, atol=1e-4)
    quant = Executor(program, noise_settings("quant"))
    calls = recorded_layer_calls(quant, monkeypatch)
    quant.run(feeds)
    assert [call[0].name for call in calls] == [layer.name] * 3
    for layer_called, x, y in calls:
        reference = basis_layer_reference(program, layer_called, x, 8)
        np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6 * np.abs(y).max())
    rram = noise_settings("rram")
    noisy = [Executor(program, rram, Seeds.derive(seed)).run(feeds) for seed in (1, 1, 2)]
    for name in program.outputs:
        np.testing.assert_array_equal(noisy[0][name], noisy[1][name])
        assert not np.array_equal(noisy[0][name], noisy[2][name])


# --- the command line -------------------------------------------------------------------------


def test_run_eval_calibrate_and_inspect_a_basis_program(tmp_path, capsys):
    from xbarc.cli import main
    from xbarc.ir.io import load_program

    data = np.load(DIGITS / "digits_test.npz")
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=data["x"][:48], y=data["y"][:48])
    program = tmp_path / "lenet.xbar"
    model = str(DIGITS / "lenet.onnx")
    shape = ["--input-shape", "x=1x1x8x8"]
    assert main(["compile", model, *shape, "--tiles", "16", "--strategy", "basis",
                 "-o", str(program)]) == 0  # fmt: skip
    loaded = load_program(program)
    assert loaded.combines and len(loaded.phases) == 1
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=data["x"][:48])
    out = tmp_path / "y.npz"
    for noise in ("quant", "rram"):
        capsys.readouterr()
        assert main(["run", str(program), "--input", str(inputs), "-o", str(out),
                     "--noise", noise, "--seed", "2"]) == 0  # fmt: skip
        settings = noise_settings(noise)
        want = Executor(loaded, settings, Seeds.derive(2)).run({"x": data["x"][:48]})
        (name,) = loaded.outputs
        np.testing.assert_array_equal(np.load(out)[name], want[name])
        report = capsys.readouterr().out
        # the ADC report measures every combined layer's basis reads
        for layer in loaded.layers():
            assert re.search(rf"^  {re.escape(layer.name)} +\d", report, re.M), layer.name
    assert main(["calibrate", str(program), "--data", str(samples)]) == 0
    calibration = load_program(program).calibration
    assert calibration is not None and len(calibration.layers) == len(loaded.combines)
    assert all(0 < entry.adc_range < 1 for entry in calibration.layers)
    capsys.readouterr()
    assert main(["eval", str(program), "--reference", model, "--data", str(samples),
                 "--labels", "y", "--noise", "quant", "--set", "adc_range=calibrated",
                 "--set", "input_range=calibrated"]) == 0  # fmt: skip
    accuracy = re.search(r"accuracy ([\d.]+)% \(reference ([\d.]+)%\)", capsys.readouterr().out)
    assert accuracy and float(accuracy[1]) >= float(accuracy[2]) - 5
    assert main(["inspect", str(program), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    # a combined layer's tallest read is a read of the basis: 2-bit cells (top level 3)
    # over a block's 128 rows, driven by 1-bit DAC steps: 3 x 128
    assert [layer["adc"]["largest_sum"] for layer in layers] == [3 * 128] * len(layers)


def test_numpy_and_numba_kernels_give_a_basis_program_the_same_bits():
    from xbarc.runtime import kernels

    data = np.load(DIGITS / "digits_test.npz")
    feeds = {"x": data["x"][:8].astype(np.float32)}
    options = CompileOptions(input_shapes={"x": (1, 1, 8, 8)}, tiles=16, strategy="basis")
    program = compile_onnx(DIGITS / "lenet.onnx", options)
    (output,) = program.outputs
    results = {}
    try:
        for backend in ("numba", "numpy"):
            kernels.set_backend(backend)
            results[backend] = [
                Executor(program, noise_settings(profile), Seeds.derive(1)).run(feeds)[output]
                for profile in ("quant", "rram")
            ]
    finally:
        kernels.set_backend("numba")
    for numba, numpy in zip(results["numba"], results["numpy"], strict=True):
        np.testing.assert_array_equal(numba, numpy)
