"""Calibration: converter ranges measured on data, stored in the program, used by runs."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from tests.onnx_models import parse, random, save
from xbarc.calibrate import adc_fraction, calibrate
from xbarc.cli import main
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.diagnostics import XbarcError
from xbarc.ir.io import load_program, save_program
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import Calibration, LayerRange
from xbarc.ir.verifier import verify
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import noise_settings

MLP = """
mlp (float[8,24] x) => (float y)
{
  h = Gemm (x, w1, b1)
  r = Relu (h)
  y = Gemm (r, w2, b2)
}
"""


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    weights = {"w1": random((24, 40), 1), "b1": random((40,), 2)}
    weights |= {"w2": random((40, 10), 3), "b2": random((10,), 4)}
    folder = tmp_path_factory.mktemp("mlp")
    path = save(parse(MLP, weights), folder)
    program = compile_onnx(path, CompileOptions(tiles=16, tile_rows=16, tile_cols=16))
    return path, program


def relative_error(got, want) -> float:
    return float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want**2)))


def test_input_ranges_are_the_percentile_of_the_float_activations(mlp):
    _, program = mlp
    data = {"x": random((24, 24), 5)}
    calibrated = calibrate(program, data, percentile=99.0, batch_size=8)
    assert calibrated.calibration is not None
    assert calibrated.calibration.samples == 24 and calibrated.calibration.percentile == 99.0
    values = Executor(program).run_all(data)  # the whole set in one batch
    for layer, entry in zip(program.layers(), calibrated.calibration.layers, strict=True):
        assert entry.layer == layer.name
        want = np.percentile(np.abs(values[layer.input]), 99.0)
        assert entry.input_range == pytest.approx(want, rel=1e-6)
        assert 0 < entry.adc_range <= 1
    # a calibrated program prints, parses and verifies
    text = print_program(calibrated)
    assert "calibration percentile=99.0 samples=24 {" in text
    assert parse_program(text).program.calibration == calibrated.calibration


def test_adc_fraction_is_the_upper_edge_of_the_percentile_bin():
    histogram = np.zeros(1024, dtype=np.int64)
    histogram[[10, 100, 500]] = [50, 49, 1]
    assert adc_fraction(histogram, 50.0) == 11 / 1024
    assert adc_fraction(histogram, 99.0) == 101 / 1024
    assert adc_fraction(histogram, 100.0) == 501 / 1024
    assert adc_fraction(np.zeros(1024, dtype=np.int64), 99.0) == 1.0


def test_calibrated_adc_range_beats_the_fixed_range_at_low_adc_bits(mlp):
    _, program = mlp
    x = {"x": random((8, 24), 6)}
    calibrated = calibrate(program, {"x": random((64, 24), 7)})
    ideal = Executor(program).run(x)["y"]
    fixed = Executor(calibrated, noise_settings("quant", adc_bits=4)).run(x)["y"]
    tuned = Executor(calibrated, noise_settings("quant", adc_bits=4, adc_range="calibrated"))
    assert relative_error(tuned.run(x)["y"], ideal) < 0.6 * relative_error(fixed, ideal)
    oracle = Executor(program, noise_settings("quant", adc_bits=4, adc_range="dynamic"))
    assert relative_error(oracle.run(x)["y"], ideal) < 0.6 * relative_error(fixed, ideal)


def test_calibrated_input_range_is_the_stored_one(mlp):
    _, program = mlp
    x = {"x": random((8, 24), 8)}
    ranges = tuple(LayerRange(layer.name, 2.5, 1.0) for layer in program.layers())
    stored = replace(program, calibration=Calibration(99.9, 10, ranges))
    verify(stored)
    by_calibration = Executor(stored, noise_settings("quant", input_range="calibrated"))
    by_number = Executor(program, noise_settings("quant", input_range=2.5))
    dynamic = Executor(program, noise_settings("quant"))
    got = by_calibration.run(x)["y"]
    assert np.array_equal(got, by_number.run(x)["y"])
    assert not np.array_equal(got, dynamic.run(x)["y"])


def test_calibrated_ranges_need_a_calibration(mlp):
    _, program = mlp
    with pytest.raises(XbarcError, match="no calibrated range for layer @Gemm_0.*xbarc calibrate"):
        Executor(program, noise_settings("quant", adc_range="calibrated"))
    with pytest.raises(XbarcError, match="input_range = 0: expected"):
        noise_settings("quant", input_range=0)
    with pytest.raises(XbarcError, match="--percentile must be in"):
        calibrate(program, {"x": random((4, 24))}, percentile=0)
    with pytest.raises(XbarcError, match="no array named 'x'"):
        calibrate(program, {"image": random((4, 24))})


@pytest.mark.parametrize(
    "line, message",
    [
        ("@nothing input_range=1.0 adc_range=0.5", "calibration names no crossbar layer @nothing"),
        ("@Gemm_0 input_range=1.0 adc_range=1.5", "adc_range 1.5 is not in (0, 1]"),
        ("@Gemm_0 input_range=0.0 adc_range=0.5", "input_range 0.0 is not > 0"),
    ],
)
def test_verifier_checks_the_calibration(mlp, tmp_path, line, message):
    _, program = mlp
    text = print_program(program)
    head, phases = text.split("\nphase 0", 1)
    bad = f"{head}\ncalibration percentile=99.0 samples=4 {{\n  {line}\n}}\n\nphase 0{phases}"
    path = tmp_path / "bad.xbar"
    save_program(path, program)
    path.write_text(bad)
    with pytest.raises(XbarcError, match=rf"bad\.xbar:\d+:\d+: error: .*{re.escape(message)}"):
        load_program(path)


def test_calibrate_command(mlp, tmp_path, capsys):
    _, program = mlp
    path = tmp_path / "mlp.xbar"
    save_program(path, program)
    data = tmp_path / "calib.npz"
    np.savez(data, x=random((40, 24), 9))
    out = tmp_path / "calibrated.xbar"
    arguments = ["calibrate", str(path), "--data", str(data)]
    assert main([*arguments, "--samples", "32", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibrated 2 layers on 32 samples at the 99.99th percentile" in text
    assert load_program(out).calibration is not None
    assert load_program(path).calibration is None  # -o leaves the input alone
    assert main(arguments) == 0  # in place
    calibration = load_program(path).calibration
    assert calibration is not None and calibration.samples == 40
    status = main(["calibrate", str(path), "--data", str(tmp_path / "absent.npz")])
    assert status == 1 and "does not exist" in capsys.readouterr().err


STATEFUL = """
stateful (float[1,6] x, float[2,6] h, float s) => (float y)
{
  h0 = ReduceSum <keepdims = 1> (h, axes)
  a = Add (x, h0)
  m = MatMul (a, w)
  y = Mul (m, s)
}
"""


def stateful_program(tmp_path):
    """STATEFUL compiled, and 5 samples for it: x [5, 6], whole states h [5, 2, 6] and
    scalars s [5]."""
    weights = {"w": random((6, 5), 7), "axes": np.array([0], dtype=np.int64)}
    path = save(parse(STATEFUL, weights), tmp_path)
    program = compile_onnx(path, CompileOptions(tiles=4, tile_rows=8, tile_cols=8))
    rng = np.random.default_rng(8)
    data = {
        "x": rng.normal(size=(5, 6)).astype(np.float32),
        "h": rng.normal(size=(5, 2, 6)).astype(np.float32),
        "s": rng.uniform(0.5, 2, size=5).astype(np.float32),
    }
    return program, data


def test_inputs_without_a_batch_axis_take_whole_samples(tmp_path):
    """A state [2,6] and a scalar have no batch axis: arrays with one axis more hold one
    whole input per sample, and each sample runs on its own with x's row."""
    program, data = stateful_program(tmp_path)
    calibrated = calibrate(program, data, percentile=100.0)
    assert calibrated.calibration is not None and calibrated.calibration.samples == 5
    (entry,) = calibrated.calibration.layers
    layer_input = data["x"] + data["h"].sum(axis=1)  # sample i: x[i] + the sum of h[i]
    assert entry.input_range == pytest.approx(float(np.abs(layer_input).max()), rel=1e-6)


def test_basis_input_statistics_take_whole_samples_too(tmp_path):
    """--calibration-data for the basis fit reads the same whole-input samples: the
    layer's Gram matrix is the sum over samples of its input row's outer product."""
    from xbarc.basis_data import input_grams, load_calibration_data

    program, data = stateful_program(tmp_path)
    samples = tmp_path / "samples.npz"
    np.savez(samples, **data)
    loaded = load_calibration_data(samples, program)
    (gram,) = input_grams(program, loaded).values()
    layer_input = (data["x"] + data["h"].sum(axis=1)).astype(np.float64)
    np.testing.assert_allclose(gram[0], layer_input.T @ layer_input, rtol=1e-5)


def test_calibration_batches_hold_exactly_the_samples_asked_for(mlp):
    from xbarc.calibrate import calibration_batches

    _, program = mlp
    data = {"x": np.arange(100 * 24, dtype=np.float32).reshape(100, 24)}
    batches = calibration_batches(program, data, 70, 32)
    assert [count for count, _ in batches] == [32, 32, 6]
    stacked = np.concatenate([feeds["x"] for _, feeds in batches])
    np.testing.assert_array_equal(stacked, data["x"][:70])


SEQUENCE = """
sequence (float[3,6] x, float[1,6] h) => (float y)
{
  shape = Constant <value = int64[2] {3, 6}> ()
  r = Reshape (x, shape)
  a = Add (r, h)
  y = MatMul (a, w)
}
"""


def test_one_run_of_a_fixed_shape_model_whose_inputs_disagree_on_the_first_axis(tmp_path):
    """Silero VAD's sequence model fixes its shapes: 77 chunks and a state of batch 1.
    Data of exactly those shapes is one run (clipping every input to the smallest first
    axis fed the chunks as a batch of 1, which the fixed shape refuses)."""
    path = save(parse(SEQUENCE, {"w": random((6, 5), 3)}), tmp_path)
    program = compile_onnx(path, CompileOptions(tiles=4, tile_rows=8, tile_cols=8))
    assert all(graph_input.fixed_batch for graph_input in program.inputs)
    rng = np.random.default_rng(2)
    data = {
        "x": rng.normal(size=(3, 6)).astype(np.float32),
        "h": rng.normal(size=(1, 6)).astype(np.float32),
    }
    calibrated = calibrate(program, data, percentile=100.0)
    assert calibrated.calibration is not None and calibrated.calibration.samples == 3
    (entry,) = calibrated.calibration.layers
    assert entry.input_range == pytest.approx(float(np.abs(data["x"] + data["h"]).max()))
