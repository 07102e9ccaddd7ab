"""Batch sizes and sample counts of `xbarc eval` and `xbarc calibrate`: `--samples`, the
automatic batch size (xbarc/batching.py) and that neither changes the figures."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import re
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

import xbarc
from xbarc import batching
from xbarc.batching import BatchChoice, choose_batch, memory_budget
from xbarc.calibrate import calibrate, calibration_batch
from xbarc.cli import main
from xbarc.diagnostics import XbarcError
from xbarc.ir.io import load_program
from xbarc.runtime.memory import sample_bytes, sample_cost
from xbarc.runtime.noise import noise_settings

DIGITS = Path(__file__).parent / "fixtures" / "digits"
DATA = DIGITS / "digits_test.npz"


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> Path:
    """The trained digits LeNet compiled for batch 1 (its batch dim is symbolic)."""
    program = tmp_path_factory.mktemp("lenet") / "lenet.xbar"
    arguments = ["compile", str(DIGITS / "lenet.onnx"), "--input-shape", "x=1x1x8x8"]
    assert main([*arguments, "-o", str(program)]) == 0
    return program


def eval_json(capsys, program: Path, data: Path, *extra: str) -> dict:
    arguments = ["eval", str(program), "--reference", str(DIGITS / "lenet.onnx")]
    assert main([*arguments, "--data", str(data), "--labels", "y", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def reference_accuracy(count: int) -> float:
    """onnxruntime's accuracy of the float LeNet on the first `count` held-out samples."""
    with np.load(DATA) as npz:
        x, y = npz["x"][:count], npz["y"][:count]
    session = onnxruntime.InferenceSession(
        str(DIGITS / "lenet.onnx"), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {"x": x})
    return float(np.mean(logits.argmax(-1) == y))


# --- eval --samples ------------------------------------------------------------------------


def test_eval_samples_uses_the_first_samples(lenet, tmp_path, capsys):
    """--samples 40 reports on the first 40 samples: the same figures as a data file that
    holds only them, and the reference accuracy onnxruntime gives on them."""
    with np.load(DATA) as npz:
        first = tmp_path / "first40.npz"
        np.savez(first, x=npz["x"][:40], y=npz["y"][:40])
    cut = eval_json(capsys, lenet, DATA, "--samples", "40", "--noise", "quant")
    whole = eval_json(capsys, lenet, first, "--noise", "quant")
    assert cut["samples"] == 40
    assert cut["outputs"] == whole["outputs"]
    assert cut["accuracy"] == whole["accuracy"]
    assert cut["reference_accuracy"] == reference_accuracy(40)
    # more samples than the data holds: all of them, as calibrate --samples does
    assert eval_json(capsys, lenet, first, "--samples", "1000")["samples"] == 40


@pytest.mark.parametrize("value", ["0", "-3"])
def test_eval_samples_must_be_positive(lenet, capsys, value):
    arguments = ["eval", str(lenet), "--reference", str(DIGITS / "lenet.onnx")]
    assert main([*arguments, "--data", str(DATA), "--samples", value]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert "--samples must be at least 1" in line and "Traceback" not in captured.err


# --- the estimate of a sample's memory -----------------------------------------------------


def traced_run_peak(program: Path, profile: str, x: np.ndarray) -> int:
    """tracemalloc's peak of one run of a fresh session on `x`, above what the session
    holds before it (the programmed chip)."""
    gc.collect()
    tracemalloc.start()
    try:
        session = xbarc.InferenceSession(program, noise=profile)
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        session.run(None, {"x": x})
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def resnet_basis(tmp_path_factory) -> Path:
    """The digits ResNet combined from a basis (BasisN) at 16 tiles."""
    program = tmp_path_factory.mktemp("basis") / "resnet.xbar"
    arguments = ["compile", str(DIGITS / "resnet.onnx"), "--input-shape", "x=1x1x8x8"]
    arguments += ["--strategy", "basis", "--tiles", "16", "-o", str(program)]
    assert main(arguments) == 0
    return program


@pytest.mark.parametrize(
    "which, profile",
    [("lenet", "quant"), ("lenet", "rram"), ("resnet_basis", "quant")],
)
def test_sample_estimate_bounds_the_measured_memory(request, which, profile):
    """What one more sample adds to a run's peak (numpy's allocations, as tracemalloc
    sees them, between batches of 16 and 80) is at most the estimate and not far below
    it: the estimate leans high by design (benchmarks/batch_memory.py: 0.3 to 0.9)."""
    program = request.getfixturevalue(which)
    session = xbarc.InferenceSession(program, noise=profile)
    estimate = sample_bytes(session.program, session.settings)
    with np.load(DATA) as npz:
        x = npz["x"]
    session.run(None, {"x": x[:16]})  # Numba's kernels loaded before measuring
    small = traced_run_peak(program, profile, x[:16])
    large = traced_run_peak(program, profile, x[:80])
    measured = (large - small) / 64
    assert 0.2 * estimate < measured < 1.2 * estimate, (measured, estimate)


def test_sample_estimate_counts_activations_and_patches(lenet):
    """The parts of the estimate for LeNet in quant, from its shapes: the activations
    (every value of the graph, float32), and the largest layer's unfolded patches (the
    second conv: 72 rows x 16 output positions x 8 slices x 2 signs, one byte a digit)."""
    program = load_program(lenet)
    cost = sample_cost(program, noise_settings("quant"))
    values = program.value_types()
    assert cost.activations == sum(4 * math.prod(t.shape[1:]) for t in values.values())
    # the faithful default's bit planes (issue 18): the second conv's levels unfolded (72
    # rows x 16 positions after pooling, a byte each) and both signs' 8 planes packed (2
    # words of 64 rows, 8 bytes each); the first conv's 9-row reads look its levels up in
    # place (depthwise tables)
    assert cost.workspace >= 72 * 16 + 2 * 8 * 2 * 16 * 8
    ideal = sample_cost(program, noise_settings("ideal"))
    assert ideal.total == 2 * cost.activations  # onnxruntime's copy of the activations
    rram = sample_cost(program, noise_settings("rram"))
    # rram's noisy read path (reads under 128 rows: all of LeNet's) unfolds each sign's
    # uint8 levels whole and converts into an int64 accumulator: more than quant's packed
    # bit planes, whose kernel writes the output dequantized (no accumulator)
    assert cost.workspace < rram.workspace


# --- the choice ------------------------------------------------------------------------------


def test_choice_is_the_budget_over_a_sample_capped_by_the_samples(lenet):
    program = load_program(lenet)
    quant = noise_settings("quant")
    per_sample = sample_bytes(program, quant)
    choice = choose_batch(program, [quant], 360, budget=50 * per_sample + 1)
    assert (choice.size, choice.how, choice.sample_bytes) == (50, "auto", per_sample)
    assert choose_batch(program, [quant], 360, budget=1 << 30).size == 360  # all samples
    assert choose_batch(program, [quant], 360, budget=10).size == 1  # at least one
    # the costliest of several settings counts, times the executors alive at once
    rram = noise_settings("rram")
    both = choose_batch(program, [quant, rram], 360, budget=1 << 20, copies=2)
    costliest = max(sample_bytes(program, quant), sample_bytes(program, rram))
    assert both.sample_bytes == 2 * costliest
    assert both.size == (1 << 20) // both.sample_bytes
    # a given size wins, and a program compiled for one batch keeps it
    assert choose_batch(program, [quant], 360, batch_size=7) == BatchChoice(7, "given")
    fixed = dataclasses.replace(
        program, inputs=tuple(dataclasses.replace(i, fixed_batch=True) for i in program.inputs)
    )
    assert choose_batch(fixed, [quant], 360) == BatchChoice(1, "fixed")
    with pytest.raises(XbarcError, match="--batch-size must be at least 1"):
        choose_batch(program, [quant], 360, batch_size=0)


def test_budget_is_half_the_available_memory_when_less(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    monkeypatch.setattr(batching, "MEMINFO", meminfo)
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  1000000 kB\n")
    assert memory_budget() == 500000 * 1024
    meminfo.write_text("MemTotal:  64000000 kB\nMemAvailable:  32000000 kB\n")
    assert memory_budget() == 1 << 30
    meminfo.unlink()  # no /proc/meminfo (not Linux): the default
    assert memory_budget() == 1 << 30


def test_format_bytes():
    assert batching.format_bytes(1 << 30) == "1 GiB"
    assert batching.format_bytes(2 << 30) == "2 GiB"
    assert batching.format_bytes(512_000_000) == "512 MB"
    assert batching.format_bytes(114_200) == "0.11 MB"
    assert batching.format_bytes(2_340_000) == "2.3 MB"


# --- the report line -------------------------------------------------------------------------

REPORT_LINE = re.compile(
    r"(\d+) samples in batches of (\d+) \(auto: ~([\d.]+) MB a sample, (.+) budget\)"
)


def test_eval_report_states_the_automatic_batch(lenet, capsys, monkeypatch):
    """Without --batch-size: all 360 samples in one batch, the line saying why; with a
    budget of 100 samples (patched), batches of 100 and the same figures as
    --batch-size 100."""
    arguments = ["eval", str(lenet), "--reference", str(DIGITS / "lenet.onnx")]
    arguments += ["--data", str(DATA), "--labels", "y", "--noise", "quant"]
    assert main(arguments) == 0
    first = capsys.readouterr().out.splitlines()[0]
    match = REPORT_LINE.search(first)
    assert match is not None, first
    per_sample = sample_bytes(load_program(lenet), noise_settings("quant"))
    assert match.groups() == ("360", "360", batching.format_bytes(per_sample)[:-3], "1 GiB")
    monkeypatch.setattr(batching, "memory_budget", lambda: 100 * per_sample + 5)
    assert main([*arguments, "--json"]) == 0
    auto = json.loads(capsys.readouterr().out)
    assert auto["batch_size"] == 100 and auto["batching"]["how"] == "auto"
    assert auto["batching"]["budget"] == 100 * per_sample + 5
    assert main([*arguments, "--json", "--batch-size", "100"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["batching"]["note"] == "--batch-size"
    assert given["outputs"] == auto["outputs"] and given["accuracy"] == auto["accuracy"]


def test_calibrate_report_states_the_automatic_batch(lenet, tmp_path, capsys):
    out = tmp_path / "calibrated.xbar"
    assert main(["calibrate", str(lenet), "--data", str(DATA), "-o", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "on 360 samples at the 99.99th percentile, in batches of 360 (auto: ~" in first
    assert first.endswith(" MB a sample, 1 GiB budget)")


# --- automatic batches do not change results -------------------------------------------------

CALIBRATED = ("input_range=calibrated", "adc_range=calibrated")
NO_READ_NOISE = ("read_sigma=0", "output_noise=0", "input_noise=0")


@pytest.fixture(scope="module")
def calibrated_lenet(lenet, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("calibrated") / "lenet.xbar"
    assert main(["calibrate", str(lenet), "--data", str(DATA), "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "profile, overrides",
    [("quant", CALIBRATED), ("rram", CALIBRATED + NO_READ_NOISE), ("ideal", ())],
)
def test_batches_do_not_change_outputs(calibrated_lenet, profile, overrides):
    """One batch of 24 and 24 batches of one give the same bits: in quant with calibrated
    converter ranges, and in rram when reads are noise-free (the chip's programming noise
    and stuck cells are drawn once, from the chip seed). With the default
    `input_range=dynamic` the DAC's full scale is the batch's largest |x| (an oracle), and
    read noise is drawn per read-out of the batch's partial sums: there, as documented,
    the batch size changes the draws and the ranges (not the statistics)."""
    with np.load(DATA) as npz:
        x = npz["x"][:24]
    whole = xbarc.InferenceSession(calibrated_lenet, profile, seed=3, overrides=list(overrides))
    (together,) = whole.run(None, {"x": x})
    single = xbarc.InferenceSession(calibrated_lenet, profile, seed=3, overrides=list(overrides))
    apart = np.concatenate([single.run(None, {"x": x[i : i + 1]})[0] for i in range(24)])
    np.testing.assert_array_equal(together, apart)


def test_eval_auto_batch_equals_batch_of_one(calibrated_lenet, capsys):
    """eval's figures without --batch-size (one batch of 24) and with --batch-size 1: the
    same accuracy, agreement and largest error; the SNR's sums only in another order."""
    settings = [item for pair in zip(["--set"] * 2, CALIBRATED, strict=True) for item in pair]
    extra = ("--samples", "24", "--noise", "quant", *settings)
    auto = eval_json(capsys, calibrated_lenet, DATA, *extra)
    one = eval_json(capsys, calibrated_lenet, DATA, *extra, "--batch-size", "1")
    assert (auto["batch_size"], one["batch_size"]) == (24, 1)
    assert auto["accuracy"] == one["accuracy"]
    (mine,), (theirs,) = auto["outputs"], one["outputs"]
    assert mine["max_abs_error"] == theirs["max_abs_error"]
    assert mine["top1_agreement"] == theirs["top1_agreement"]
    assert mine["snr_db"] == pytest.approx(theirs["snr_db"], rel=1e-9)


def test_a_reference_that_fixes_its_batch_keeps_it(tmp_path, capsys):
    """The program runs any batch, but its reference (float[4,6] x) takes only 4: eval
    runs batches of 4 and says why; --batch-size still wins (and onnxruntime refuses)."""
    from tests.onnx_models import parse, random

    model = tmp_path / "fixed.onnx"
    weights = {"w": random((6, 3), 1), "b": random((3,), 2)}
    onnx.save(parse("g (float[4,6] x) => (float y) { y = Gemm (x, w, b) }", weights), model)
    program = tmp_path / "fixed.xbar"
    assert main(["compile", str(model), "--tiles", "4", "-o", str(program)]) == 0
    data = tmp_path / "data.npz"
    np.savez(data, x=random((12, 6), 3))
    capsys.readouterr()
    arguments = ["eval", str(program), "--reference", str(model), "--data", str(data)]
    assert main(arguments) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "12 samples in batches of 4 (the reference model's fixed batch)" in first
    assert main([*arguments, "--batch-size", "6"]) == 1
    assert "onnxruntime cannot run the reference on a batch of 6" in capsys.readouterr().err


def test_calibrate_auto_batch_gives_the_same_ranges(lenet):
    """calibrate() without batch_size runs the 360 samples in one batch: the same ranges
    as the old default of 32 a batch (integer read sums and percentiles of all |x| do not
    depend on how the samples are grouped)."""
    program = load_program(lenet)
    with np.load(DATA) as npz:
        data = {"x": npz["x"]}
    assert calibration_batch(program, data).size == 360
    auto = calibrate(program, data)
    assert auto.calibration == calibrate(program, data, batch_size=32).calibration


def test_subsampled_calibration_does_not_depend_on_the_batch(lenet, monkeypatch):
    """Where the layers' inputs are subsampled (more |x| values than INPUT_SAMPLE), each
    sample keeps its own seeded draw: batches of 1, 7 and all 360 (what the machine's
    memory lets the automatic batch be) give the same calibration, bit for bit."""
    import xbarc.calibrate as calibration

    monkeypatch.setattr(calibration, "INPUT_SAMPLE", 3000)  # 8 values a sample
    program = load_program(lenet)
    with np.load(DATA) as npz:
        data = {"x": npz["x"]}
    ranges = [calibrate(program, data, batch_size=size).calibration for size in (1, 7, 360)]
    assert ranges[0] == ranges[1] == ranges[2]
    # the subsample is what set them: with every value kept, some layer's range differs
    monkeypatch.setattr(calibration, "INPUT_SAMPLE", 1 << 21)
    whole = calibrate(program, data, batch_size=360).calibration
    assert whole is not None and ranges[0] is not None
    assert [layer.input_range for layer in whole.layers] != [
        layer.input_range for layer in ranges[0].layers
    ]
