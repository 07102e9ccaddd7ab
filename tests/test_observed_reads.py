"""A `ReadSpread` observer on the fast read paths sees what it sees read by read.

`xbarc run` and `eval` observe every quantized run with a `ReadSpread` (their ADC report);
the bit-plane, sparse and fused paths keep their kernels under it and count its sample
beside them (`runtime/observed_reads.py`). Each test runs the same program observed read by
read (an observer that is not a `ReadSpread` forces that path, as before) and on a fast
path, and compares everything the spread reports: the histogram, the sums, the counted
and clipped numbers, the largest full scale, layer by layer and in the same order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.onnx_models import random
from tests.test_runtime import PIPELINES, compiled, models
from xbarc.runtime import kernels
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import noise_settings
from xbarc.runtime.read_spread import ReadSpread

PATHS = ("bitplane", "fused", "sparse")


def force_path(executor: Executor, path: str, monkeypatch) -> None:
    """Send every layer `path` can take to it (as `tests/test_runtime.py`'s `reads` does),
    the fused one to its own kernel whatever the engines table says."""
    monkeypatch.setattr(executor, "_depthwise_columns", lambda plans: None)  # short reads too
    if path == "bitplane":  # every layer, even where the sparse kernel is faster
        monkeypatch.setattr("xbarc.runtime.executor.prefers_sparse", lambda reads, columns: False)
        return
    monkeypatch.setattr(executor, "_bitplane_reads", lambda plans: False)
    if path == "fused":
        monkeypatch.setattr(executor, "_fused_engine", lambda plans, columns, patches: "fused")
    else:
        monkeypatch.setattr(executor, "_fused_columns", lambda plans: None)


def by_read(spread: ReadSpread):
    """`spread` behind a plain callable: the executor then reads one read at a time."""
    return lambda layer, sums, full_scales: spread(layer, sums, full_scales)


def counts(spread: ReadSpread) -> dict:
    """Everything a spread holds, per layer in the order its reads first came."""
    return {
        layer: (
            c.histogram.tolist(),
            c.sums,
            c.counted,
            c.clipped,
            c.full_scale,
        )
        for layer, c in spread._layers.items()
    }


def observed_both_ways(program, settings, feeds, path, monkeypatch, batches=1):
    """Run `program` observed on `path` and read by read; returns (fast executor, fast
    spread, read-by-read spread) after checking that the outputs are the same bits."""
    fast = Executor(program, settings)
    force_path(fast, path, monkeypatch)
    slow = Executor(program, settings)
    spread = ReadSpread(fast.adc_levels, 99.99)
    reference = ReadSpread(slow.adc_levels, 99.99)
    fast.on_read_sums = spread
    slow.on_read_sums = by_read(reference)
    for _ in range(batches):
        got = fast.run_all(feeds)
        want = slow.run_all(feeds)
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    return fast, spread, reference


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "pipeline", ["one phase", "phases", "offset", "per column", "separate groups", "squeeze"]
)
@pytest.mark.parametrize("model_name", ["cnn", "conv transpose", "matmul"])
def test_spread_on_fast_paths_equals_read_by_read(
    model_name, pipeline, path, tmp_path, monkeypatch
):
    """Small batches of read sums (every sum counted) and, with the thresholds lowered,
    batches cut by the read-out budget and sampled: the same figures either way."""
    model, feeds = models()[model_name]
    program = compiled(model, PIPELINES[pipeline], tmp_path)
    settings = noise_settings("quant")
    for budget, above in ((1 << 20, 1 << 16), (300, 40)):
        monkeypatch.setattr("xbarc.runtime.reads.READOUT_BUDGET", budget)
        monkeypatch.setattr("xbarc.runtime.observed_reads.READOUT_BUDGET", budget)
        monkeypatch.setattr("xbarc.runtime.read_spread.SAMPLE_ABOVE", above)
        monkeypatch.setattr("xbarc.runtime.observed_reads.SAMPLE_ABOVE", above)
        fast, spread, reference = observed_both_ways(program, settings, feeds, path, monkeypatch)
        assert counts(spread) == counts(reference)
        if all(c.histogram.any() for c in reference._layers.values()):  # else no figures
            assert spread.layers() == reference.layers()
        if pipeline != "offset" or path == "bitplane":  # offset encoding: read by read
            assert set(fast._paths.values()) == {path}
            assert fast._observed  # counted beside the kernels
        if above == 40:
            sampled = [c for c in reference._layers.values() if c.counted < c.sums]
            assert sampled, "no batch was sampled"


@pytest.mark.parametrize("path", PATHS)
def test_spread_with_calibrated_ranges_counts_the_clipped_sums(path, tmp_path, monkeypatch):
    """Ranges calibrated at the median clip many read sums: the clipped fractions agree."""
    from xbarc.calibrate import calibrate

    model, feeds = models()["cnn"]
    program = calibrate(compiled(model, PIPELINES["one phase"], tmp_path), feeds, percentile=50)
    settings = noise_settings("quant", input_range="calibrated", adc_range="calibrated")
    _, spread, reference = observed_both_ways(program, settings, feeds, path, monkeypatch, 2)
    assert counts(spread) == counts(reference)
    assert any(row.clipped > 0 for row in reference.layers())


def test_spread_with_a_differential_adc_on_the_fused_path(tmp_path, monkeypatch):
    """Signed cells and codes (a differential ADC): the fused path, |sum| counted."""
    model, feeds = models()["cnn"]
    program = compiled(model, PIPELINES["one phase"], tmp_path)
    settings = noise_settings("quant", adc_placement="differential")
    fast, spread, reference = observed_both_ways(program, settings, feeds, "fused", monkeypatch)
    assert set(fast._paths.values()) == {"fused"}
    assert counts(spread) == counts(reference)


@pytest.mark.parametrize("path", PATHS)
def test_spread_under_the_numpy_twins(path, tmp_path, monkeypatch):
    """The numpy twins of the side kernels count what the Numba ones count."""
    model, feeds = models()["conv transpose"]
    program = compiled(model, PIPELINES["per column"], tmp_path)
    monkeypatch.setattr("xbarc.runtime.read_spread.SAMPLE_ABOVE", 40)
    monkeypatch.setattr("xbarc.runtime.observed_reads.SAMPLE_ABOVE", 40)
    settings = noise_settings("quant")
    kernels.set_backend("numpy")
    try:
        _, twin, reference = observed_both_ways(program, settings, feeds, path, monkeypatch)
    finally:
        kernels.set_backend("numba")
    _, compiled_spread, _ = observed_both_ways(program, settings, feeds, path, monkeypatch)
    assert counts(twin) == counts(reference) == counts(compiled_spread)


@pytest.fixture(scope="module")
def cnn_programs(tmp_path_factory):
    model, _ = models()["cnn"]
    folder = tmp_path_factory.mktemp("observed")
    return {
        name: compiled(model, PIPELINES[name], folder, name.replace(" ", "_"))
        for name in (
            "one phase",
            "separate groups",
            "sparse",
        )
    }


@settings(max_examples=30, deadline=None)
@given(
    pipeline=st.sampled_from(["one phase", "separate groups", "sparse"]),
    path=st.sampled_from(PATHS),
    batch=st.integers(1, 7),
    budget=st.one_of(
        st.integers(1, 4000),
        # whole multiples of a read's sums: a batch filled exactly to the budget
        st.tuples(st.integers(1, 12), st.sampled_from([4, 8, 196, 392])),
    ),
    above=st.integers(0, 3000),
    seed=st.integers(0, 2**16),
    relu=st.booleans(),
)
def test_spread_counts_property(cnn_programs, pipeline, path, batch, budget, above, seed, relu):
    """Any batch, read-out budget and sampling threshold, inputs of both signs or none
    negative: the fast paths count what `ReadOut` shows."""
    if isinstance(budget, tuple):
        budget = budget[0] * budget[1] * batch
    program = cnn_programs[pipeline]
    x = random((batch, 3, 9, 9), seed=seed)
    if relu:
        x = np.maximum(x, 0)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr("xbarc.runtime.reads.READOUT_BUDGET", budget)
        monkeypatch.setattr("xbarc.runtime.observed_reads.READOUT_BUDGET", budget)
        monkeypatch.setattr("xbarc.runtime.read_spread.SAMPLE_ABOVE", above)
        monkeypatch.setattr("xbarc.runtime.observed_reads.SAMPLE_ABOVE", above)
        _, spread, reference = observed_both_ways(
            program, noise_settings("quant"), {"x": x}, path, monkeypatch
        )
    assert counts(spread) == counts(reference)


DIGITS = Path(__file__).parent / "fixtures" / "digits"


@pytest.mark.parametrize("cell_bits", [None, 8])
@pytest.mark.parametrize("name", ["lenet", "mobilenet"])
def test_digits_report_figures_equal_read_by_read(name, cell_bits, monkeypatch):
    """The digits fixtures on their own paths (bit planes, MobileNet's depthwise layers
    sparse), 360 samples: batches of many sums, sampled and cut by the read-out budget as
    `xbarc eval` sees them; the ADC report's figures are the ones read by read gives."""
    from xbarc.adc_report import measured_layer
    from xbarc.compiler import CompileOptions, compile_onnx

    options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)}, cell_bits=cell_bits)
    program = compile_onnx(DIGITS / f"{name}.onnx", options)
    feeds = {"x": np.load(DIGITS / "digits_test.npz")["x"]}
    fast = Executor(program, noise_settings("quant"))
    slow = Executor(program, noise_settings("quant"))
    spread = ReadSpread(fast.adc_levels, 99.99)
    reference = ReadSpread(slow.adc_levels, 99.99)
    fast.on_read_sums = spread
    slow.on_read_sums = by_read(reference)
    got, want = fast.run(feeds), slow.run(feeds)
    for output in program.outputs:
        np.testing.assert_array_equal(got[output], want[output])
    assert set(slow._paths.values()) - {"by read"}  # the paths it would take unobserved
    assert fast._observed and not slow._observed
    if cell_bits is None:  # the faithful default: the stem (and depthwise layers) on tables
        depthwise = [layer for layer, path in fast._paths.items() if path == "depthwise"]
        assert depthwise
        assert all((layer, False) in fast._observed for layer in depthwise)  # counted there
    assert counts(spread) == counts(reference)
    assert [measured_layer(row, False) for row in spread.layers()] == [
        measured_layer(row, False) for row in reference.layers()
    ]
    assert any(row.counted < row.sums for row in reference.layers())  # sampled


def force_path_everywhere(path: str, monkeypatch) -> None:
    """`force_path` for every executor made from here on (calibrate makes its own)."""
    monkeypatch.setattr(Executor, "_depthwise_columns", lambda self, plans: None)
    if path == "bitplane":
        monkeypatch.setattr("xbarc.runtime.executor.prefers_sparse", lambda reads, columns: False)
        return
    monkeypatch.setattr(Executor, "_bitplane_reads", lambda self, plans: False)
    if path == "fused":
        monkeypatch.setattr(
            Executor, "_fused_engine", lambda self, plans, columns, patches: "fused"
        )
    else:
        monkeypatch.setattr(Executor, "_fused_columns", lambda self, plans: None)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pipeline", ["one phase", "per column", "squeeze", "offset"])
def test_calibration_on_fast_paths_equals_read_by_read(pipeline, path, tmp_path, monkeypatch):
    """`xbarc calibrate` counts every read sum as a fraction of its full scale
    (`ReadFractions`): on the fast paths the same histograms, so the same ranges."""
    from xbarc.calibrate import calibrate

    model, feeds = models()["cnn"]
    program = compiled(model, PIPELINES[pipeline], tmp_path)
    counted: list[str] = []
    real = Executor._observe_levels, Executor._observe_bitplane

    def spy(method):
        def observe(self, plans, *args):
            counted.append(plans[0].layer.name)
            return method(self, plans, *args)

        return observe

    with monkeypatch.context() as patches:
        patches.setattr(Executor, "_spread", lambda self: None)  # read by read, as before
        want = calibrate(program, feeds, percentile=90)
    with monkeypatch.context() as patches:
        force_path_everywhere(path, patches)
        patches.setattr(Executor, "_observe_levels", spy(real[0]))
        patches.setattr(Executor, "_observe_bitplane", spy(real[1]))
        got = calibrate(program, feeds, percentile=90)
    assert got.calibration == want.calibration
    if pipeline != "offset" or path == "bitplane":  # offset encoding: read by read
        assert counted  # on the fast path
    assert {r.adc_range for r in want.calibration.layers} != {1.0}  # ranges measured


@pytest.mark.parametrize("name", ["lenet", "mobilenet"])
def test_digits_calibration_equals_read_by_read(name, monkeypatch):
    """The digits fixtures' calibration on 100 samples: batches of over a million sums,
    every one counted: the same ranges."""
    from xbarc.calibrate import calibrate
    from xbarc.compiler import CompileOptions, compile_onnx

    options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
    program = compile_onnx(DIGITS / f"{name}.onnx", options)
    data = {"x": np.load(DIGITS / "digits_test.npz")["x"][:100]}
    got = calibrate(program, data)
    with monkeypatch.context() as patches:
        patches.setattr(Executor, "_spread", lambda self: None)
        want = calibrate(program, data)
    assert got.calibration == want.calibration


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("path", PATHS)
def test_read_fractions_on_fast_paths(path, backend, tmp_path, monkeypatch):
    """A `ReadFractions` (every sum counted) on each fast path, Numba kernels and numpy
    twins: the histograms read by read gives, over batches cut by the read-out budget."""
    from xbarc.runtime.read_spread import ReadFractions

    model, feeds = models()["conv transpose"]
    program = compiled(model, PIPELINES["per column"], tmp_path)
    monkeypatch.setattr("xbarc.runtime.reads.READOUT_BUDGET", 500)
    monkeypatch.setattr("xbarc.runtime.observed_reads.READOUT_BUDGET", 500)
    fast = Executor(program, noise_settings("quant"))
    force_path(fast, path, monkeypatch)
    slow = Executor(program, noise_settings("quant"))
    fractions, reference = ReadFractions(64), ReadFractions(64)
    fast.on_read_sums = fractions
    slow.on_read_sums = lambda layer, sums, scales: reference(layer, sums, scales)
    kernels.set_backend(backend)
    try:
        got, want = fast.run(feeds), slow.run(feeds)
    finally:
        kernels.set_backend("numba")
    np.testing.assert_array_equal(got["y"], want["y"])
    assert set(fast._paths.values()) == {path} and fast._observed
    assert list(fractions.histograms) == list(reference.histograms)
    for layer, histogram in reference.histograms.items():
        np.testing.assert_array_equal(fractions.histograms[layer], histogram, err_msg=layer)


@pytest.mark.parametrize("path", PATHS)
def test_spread_of_a_basis_program(path, monkeypatch):
    """Layers combined from a basis (BasisN) read the basis into response columns: the
    fast paths count their sums as read by read does."""
    from tests.test_basis_runtime import compiled as compiled_basis
    from tests.test_basis_runtime import layer_model, pipeline

    model, feeds = layer_model("conv", {"channels": 3, "kernel": 3, "outputs": 4}, 0.0, True, 5)
    program = compiled_basis(model, pipeline("k=6,coef-bits=6,copies=2"))
    assert program.combines
    monkeypatch.setattr("xbarc.runtime.read_spread.SAMPLE_ABOVE", 40)
    monkeypatch.setattr("xbarc.runtime.observed_reads.SAMPLE_ABOVE", 40)
    fast, spread, reference = observed_both_ways(
        program, noise_settings("quant"), feeds, path, monkeypatch
    )
    assert set(fast._paths.values()) == {path} and fast._observed
    assert counts(spread) == counts(reference)
