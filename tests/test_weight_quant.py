"""Weight quantization that real networks survive (issue 13, item 1).

- per-column scales by default, and the clip modes against an independent numpy reference
  (mse really minimizes over its candidates; percentile clips where it says);
- the weight error report against numpy;
- the cost of per-column scales;
- the anchor: on a stand-in with BatchNorm-folded channels spread 0.27..9.2, xbarc `quant`
  (8-bit weights and DAC, lossless ADC, calibrated input ranges) is at least as close to
  the float model as onnxruntime's own static int8 quantization, and one scale per tensor
  is clearly worse.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime
import pytest

from tests.programs import layers_program
from tests.quant_standin import standin_images, standin_model
from xbarc.calibrate import calibrate
from xbarc.cli import main
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.cost import program_cost
from xbarc.diagnostics import XbarcError
from xbarc.ir.levels import MSE_RATIOS, quantize_levels
from xbarc.ort_quant import quantize_int8
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.passes.quantize import Quantize
from xbarc.session import InferenceSession
from xbarc.weight_report import weight_errors

# --- an independent reference of symmetric quantization with a clip range --------------


def reference_quantize(w: np.ndarray, clip_range: float, bits: int) -> tuple[np.ndarray, float]:
    """Levels and scale of `w` (any shape) for the range `clip_range`, in plain numpy."""
    top = 2 ** (bits - 1) - 1
    scale = float(np.float32(clip_range / top)) if clip_range > 0 else 1.0
    levels = np.clip(np.rint(w.astype(np.float64) / scale), -top, top)
    return levels, scale


def reference_error(w: np.ndarray, clip_range: float, bits: int) -> float:
    levels, scale = reference_quantize(w, clip_range, bits)
    return float(np.square(levels * scale - w.astype(np.float64)).sum())


def heavy_tailed(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t weights (3 degrees of freedom): outliers, as trained layers have."""
    return np.random.default_rng(seed).standard_t(3, size=shape).astype(np.float32)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_clip_chooses_per_column_the_candidate_of_least_error(bits):
    weight = heavy_tailed(1, (2, 40, 6))
    levels, scale = quantize_levels(weight, bits, per_column=True, clip="mse")
    assert isinstance(scale, np.ndarray)
    chose_a_clip = False
    for group in range(2):
        for col in range(6):
            column = weight[group, :, col]
            peak = float(np.abs(column).max())
            errors = [reference_error(column, ratio * peak, bits) for ratio in MSE_RATIOS]
            best = int(np.argmin(errors))  # the first (largest ratio) on a tie
            _, want_scale = reference_quantize(column, MSE_RATIOS[best] * peak, bits)
            assert scale[group, col] == pytest.approx(want_scale, rel=1e-6)
            got = levels[group, :, col].astype(np.float64) * float(scale[group, col])
            got_error = float(np.square(got - column).sum())
            assert got_error == pytest.approx(min(errors), rel=1e-9)
            assert got_error <= errors[0]  # never worse than clip=max
            chose_a_clip |= best > 0
    # at 4 bits heavy tails leave some column better off clipped (at 8 the steps are fine
    # enough that a 40-weight column keeps its largest)
    assert chose_a_clip or bits == 8


def test_mse_clip_per_tensor_searches_one_range_for_the_whole_tensor():
    weight = heavy_tailed(2, (1, 64, 8))
    levels, scale = quantize_levels(weight, 4, per_column=False, clip="mse")
    peak = float(np.abs(weight).max())
    errors = [reference_error(weight, ratio * peak, 4) for ratio in MSE_RATIOS]
    _, want_scale = reference_quantize(weight, MSE_RATIOS[int(np.argmin(errors))] * peak, 4)
    assert isinstance(scale, float)
    assert scale == pytest.approx(want_scale, rel=1e-6)
    np.testing.assert_array_equal(levels, reference_quantize(weight, want_scale * 7, 4)[0])
    assert min(errors) < errors[0]


@pytest.mark.parametrize("percentile", [90.0, 99.0])
def test_percentile_clip_puts_the_largest_level_at_that_percentile(percentile):
    weight = heavy_tailed(3, (1, 200, 5))
    levels, scale = quantize_levels(
        weight, 8, per_column=True, clip="percentile", percentile=percentile
    )
    assert isinstance(scale, np.ndarray)
    for col in range(5):
        column = np.abs(weight[0, :, col]).astype(np.float64)
        kept = float(np.percentile(column, percentile))
        assert scale[0, col] * 127 == pytest.approx(kept, rel=1e-6)
        beyond = column > kept * (1 + 1e-6) + scale[0, col] / 2
        # the weights beyond the range saturate at the largest level; none inside does
        assert beyond.any()
        np.testing.assert_array_equal(np.abs(levels[0, beyond, col]), 127)
        assert (np.abs(levels[0, ~beyond, col]) <= 127).all()


def test_max_clip_is_exact_for_the_largest_weight_of_each_column():
    weight = heavy_tailed(4, (3, 20, 4))
    levels, scale = quantize_levels(weight, 8, per_column=True)
    assert isinstance(scale, np.ndarray)
    np.testing.assert_allclose(scale, np.abs(weight).max(axis=1) / 127, rtol=1e-6)
    np.testing.assert_array_equal(np.abs(levels).max(axis=1), 127)


def test_per_column_is_the_default_everywhere():
    assert Quantize().scale == "column"
    assert CompileOptions().scale == "column"
    program = run_pipeline(layers_program([heavy_tailed(5, (1, 8, 3))]), parse_pipeline("quantize"))
    assert weight_errors(program)[0].scale == "column"


def test_clip_layers_give_one_layer_its_own_mode():
    weights = [heavy_tailed(6, (1, 64, 4)), heavy_tailed(7, (1, 4, 3))]
    pipeline = "quantize{weight-bits=4,scale=tensor,clip=mse,clip-layers=fc0=max}"
    program = run_pipeline(layers_program(weights), parse_pipeline(pipeline))
    first, second = program.arrays
    assert first.scale == pytest.approx(float(np.float32(np.abs(weights[0]).max() / 7)))
    _, mse_scale = quantize_levels(weights[1], 4, per_column=False, clip="mse")
    assert second.scale == mse_scale
    with pytest.raises(XbarcError, match="no crossbar layer"):
        run_pipeline(layers_program(weights), parse_pipeline("quantize{clip-layers=fc9=max}"))


# --- the weight error report ------------------------------------------------------------


def test_weight_report_matches_numpy_and_shows_the_column_one_scale_per_tensor_ruins():
    rng = np.random.default_rng(8)
    # column 0 of small weights beside a column of large ones, as after BatchNorm folding
    weight = np.concatenate([rng.normal(0, 0.03, (1, 27, 1)), rng.normal(0, 1, (1, 27, 3))], axis=2)
    weight = weight.astype(np.float32)
    found = {}
    for scale in ("tensor", "column"):
        program = run_pipeline(
            layers_program([weight]), parse_pipeline(f"quantize{{scale={scale}}}")
        )
        (error,) = weight_errors(program)
        levels, got_scale = quantize_levels(weight, 8, per_column=scale == "column")
        factor = got_scale[:, None, :] if isinstance(got_scale, np.ndarray) else got_scale
        noise = np.square(levels * np.asarray(factor, np.float64) - weight.astype(np.float64))
        signal = np.square(weight.astype(np.float64))
        assert error.relative_rms == pytest.approx(math.sqrt(noise.sum() / signal.sum()))
        assert error.sqnr_db == pytest.approx(10 * math.log10(signal.sum() / noise.sum()))
        per_column = 10 * np.log10(signal.sum(axis=1) / noise.sum(axis=1))
        assert error.worst_column_sqnr_db == pytest.approx(per_column.min())
        assert error.clipped == 0.0
        found[scale] = error
    # one scale for all four columns leaves column 0 about 4 levels: its SQNR collapses
    assert found["tensor"].worst_column_sqnr_db < found["column"].worst_column_sqnr_db - 20


def test_weight_report_counts_the_weights_a_percentile_range_clips():
    weight = heavy_tailed(9, (1, 100, 2))
    program = run_pipeline(
        layers_program([weight]), parse_pipeline("quantize{clip=percentile,clip-percentile=95}")
    )
    (error,) = weight_errors(program)
    # 5 % of each column lies beyond its 95th percentile (less the half step that rounds in)
    assert 0.02 <= error.clipped <= 0.05


# --- the cost of per-column scales ------------------------------------------------------


def test_per_column_scales_cost_a_multiply_and_a_buffer_read_per_output_and_their_area():
    weight = np.random.default_rng(10).normal(size=(1, 128, 128))
    costs = {}
    for scale in ("tensor", "column"):
        pipeline = f"quantize{{scale={scale}}},tile,allocate"
        program = run_pipeline(layers_program([weight], tiles=8), parse_pipeline(pipeline))
        costs[scale] = program_cost(program, {"fc0": 3})
    tensor, column = costs["tensor"], costs["column"]
    assert tensor.layers[0].scale_energy_pj == 0.0
    assert tensor.column_scales == 0 and tensor.scale_area_mm2 == 0.0
    # 3 patches x 128 columns, each a 1.1 pJ multiply and 16 bits of a 17.2 pJ 256-bit read
    per_output = 1.1 + 17.2 * 16 / 256
    assert column.layers[0].scale_energy_pj == pytest.approx(3 * 128 * per_output)
    assert column.energy_pj - tensor.energy_pj == pytest.approx(3 * 128 * per_output)
    assert column.column_scales == 128
    # 128 scales of 2 bytes at 1.27 um^2 a byte, one 830 um^2 multiplier per 8 tiles
    assert column.scale_area_mm2 == pytest.approx((128 * 2 * 1.27 + 1 * 830.0) * 1e-6)
    assert column.area_mm2 - tensor.area_mm2 == pytest.approx(column.scale_area_mm2)


# --- onnxruntime's int8 quantization, the anchor ------------------------------------------


def test_quantize_int8_leaves_the_model_alone_and_quantizes_weights_per_channel():
    model = standin_model(0)
    before = model.SerializeToString()
    quantized = quantize_int8(model, {"x": standin_images(4, 1)})
    assert model.SerializeToString() == before
    ops = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    weights = [v for name, v in initializers.items() if name.endswith("_quantized") and v.ndim == 4]
    assert weights and all(v.dtype == np.int8 for v in weights)
    scales = [v for name, v in initializers.items() if "W_" in name and name.endswith("_scale")]
    assert any(v.ndim == 1 and v.size == 16 for v in scales)  # one scale per channel


def test_quantize_int8_names_a_missing_input():
    with pytest.raises(XbarcError, match="no array named 'x'"):
        quantize_int8(standin_model(0), {"image": standin_images(2, 1)})


def relative_rms(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sqrt(np.square(got - want).sum() / np.square(want).sum()))


def run_ort(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return np.concatenate([session.run(None, {"x": image[None]})[0] for image in images])


def test_quant_is_at_least_as_good_as_onnxruntime_int8_on_the_depthwise_bn_standin(tmp_path):
    model = standin_model(0)
    path = tmp_path / "standin.onnx"
    onnx.save(model, path)
    calibration, held_out = standin_images(32, 1), standin_images(32, 2)
    want = run_ort(model, held_out)
    ort_error = relative_rms(run_ort(quantize_int8(model, {"x": calibration}), held_out), want)
    errors = {}
    for scale in ("column", "tensor"):
        program = calibrate(compile_onnx(path, CompileOptions(scale=scale)), {"x": calibration})
        session = InferenceSession(
            program, noise="quant", overrides=["adc_bits=exact", "input_range=calibrated"]
        )
        got = np.concatenate(
            [session.run(None, {"x": held_out[i : i + 8]})[0] for i in range(0, 32, 8)]
        )
        errors[scale] = relative_rms(got, want)
    assert errors["column"] <= ort_error
    assert errors["tensor"] > 1.5 * errors["column"]  # the stand-in tells them apart


# --- the command line ---------------------------------------------------------------------


def test_compile_prints_the_worst_layers_and_inspect_every_layer(tmp_path, capsys):
    path = tmp_path / "standin.onnx"
    onnx.save(standin_model(0), path)
    output = tmp_path / "standin.xbar"
    assert main(["compile", str(path), "--scale", "tensor", "-o", str(output)]) == 0
    line = next(
        text for text in capsys.readouterr().out.splitlines() if text.startswith("weight error")
    )
    assert "scale per tensor" in line and "worst: conv1" in line
    assert main(["inspect", str(output), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_layer = {layer["name"]: layer["weight_error"] for layer in data["layers"]}
    assert set(by_layer) == {"conv1", "dwconv", "pwconv", "fc"}
    assert by_layer["conv1"]["scale"] == "tensor"
    assert by_layer["conv1"]["worst_column_sqnr_db"] < 20  # the channel of BN scale 0.27
    assert data["totals"]["column_scales"] == 0


def test_compile_clip_options_reach_the_pass(tmp_path, capsys):
    path = tmp_path / "standin.onnx"
    onnx.save(standin_model(0), path)
    output = tmp_path / "clipped.xbar"
    argv = ["compile", str(path), "--clip", "percentile", "--clip-percentile", "50"]
    assert main([*argv, "--clip", "fc=max", "-o", str(output)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(output), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    clipped = {layer["name"]: layer["weight_error"]["clipped"] for layer in data["layers"]}
    assert clipped["fc"] == 0.0  # max for fc
    assert clipped["conv1"] > 0.3  # half of each column beyond its median
    assert main(["compile", str(path), "--clip", "median"]) == 1
    assert "unknown clip mode 'median'" in capsys.readouterr().err


def test_eval_ort_int8_prints_onnxruntime_beside_the_program(tmp_path, capsys):
    path = tmp_path / "standin.onnx"
    onnx.save(standin_model(0), path)
    data = tmp_path / "data.npz"
    np.savez(data, x=standin_images(6, 3))
    program = tmp_path / "standin.xbar"
    assert main(["compile", str(path), "-o", str(program)]) == 0
    capsys.readouterr()
    argv = ["eval", str(program), "--reference", str(path), "--data", str(data), "--noise", "quant"]
    assert main([*argv, "--ort-int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    int8 = report["ort_int8"]
    assert int8["calibration_samples"] == 6
    (row,) = int8["outputs"]
    assert 20 < row["snr_db"] < 80 and row["top1_agreement"] is not None
    assert main([*argv, "--calibration", str(data)]) == 1
    assert "--calibration is the calibration data of --ort-int8" in capsys.readouterr().err
