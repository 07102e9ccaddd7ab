"""What the ADC does to a read: the read-sum histogram kernel, the per-layer figures of
inspect, run and eval, and the warning with its fix on a trained network whose unsliced
reads lose most of their bits to a fixed ADC range."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import xbarc
from tests.onnx_models import parse, random, save
from xbarc.adc_report import bits_used, largest_read_sums, measured_adc, observe_reads
from xbarc.cli import main
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime import kernels
from xbarc.runtime.read_spread import (
    BINS,
    LOWEST_BITS,
    SAMPLE_ABOVE,
    SAMPLE_EVERY,
    SAMPLE_RUN,
    VALUE_TABLE_LIMIT,
    PatchSample,
    ReadSpread,
    bin_upper_edge,
    percentile_steps,
    spread_histogram,
)

DIGITS = Path(__file__).parent / "fixtures" / "digits"
DATA = DIGITS / "digits_test.npz"
MODEL = DIGITS / "resnet_p90.onnx"


# --- the histogram kernel -------------------------------------------------------------------


def histogram_of(sums, steps_per_unit, levels=255) -> tuple[np.ndarray, int]:
    histogram = np.zeros(BINS, dtype=np.int64)
    clipped = spread_histogram(sums, np.asarray(steps_per_unit, np.float64), levels, histogram)
    return histogram, clipped


@pytest.fixture(params=["numba", "numpy"])
def backend(request):
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend("numba")


def test_sums_fall_in_the_bin_of_their_steps(backend):
    # at 0.5 units per step: 0, 0.5, 1, 1.5 (in the eighth above 1), 300 steps (clipped)
    sums = np.array([[0, -1, 2, 3, -600]], dtype=np.int32)
    histogram, clipped = histogram_of(sums, [0.5])
    assert clipped == 1
    assert histogram[0] == 1 and histogram.sum() == 5
    edges = [bin_upper_edge(int(index)) for index in np.flatnonzero(histogram[1:]) + 1]
    assert edges == [0.5625, 1.125, 1.625, 320.0]
    # below 2^LOWEST_BITS steps: the first bin; beyond the last bin: the last
    tiny, _ = histogram_of(np.array([[1]], np.int16), [2.0 ** (LOWEST_BITS - 3)])
    huge, _ = histogram_of(np.array([[1e12]], np.float64), [1.0])
    assert tiny[1] == 1 and huge[-1] == 1


@pytest.mark.parametrize(
    "dtype, high", [(np.int16, 300), (np.int32, 4 * VALUE_TABLE_LIMIT), (np.float32, 3000)]
)
@pytest.mark.parametrize("sampled", [False, True])
def test_numba_kernel_counts_like_its_numpy_twin(dtype, high, sampled):
    rng = np.random.default_rng(int(high))
    sums = rng.integers(-high, high, size=(24, 777)) * (rng.random((24, 777)) < 0.4)
    sums = sums.astype(dtype)
    if dtype == np.float32:
        sums += rng.normal(size=sums.shape).astype(np.float32)  # noisy reads: no zeros
    steps_per_unit = 10 ** rng.uniform(-3, 0.5, size=24)
    # runs of 5 patches, one in 3 per column; the last stratum reaches past the end
    sample = PatchSample(rng.integers(0, 3, 52), 3, 5) if sampled else None
    results = []
    for name in ("numba", "numpy"):
        kernels.set_backend(name)
        histogram = np.zeros(BINS, dtype=np.int64)
        clipped = spread_histogram(sums, steps_per_unit, 255, histogram, sample)
        results.append((histogram, clipped))
    kernels.set_backend("numba")
    (numba_histogram, numba_clipped), (numpy_histogram, numpy_clipped) = results
    assert np.array_equal(numba_histogram, numpy_histogram)
    assert numba_clipped == numpy_clipped > 0
    counted = sum(len(sample.patches(m, 777)) for m in range(24)) if sample else sums.size
    assert numba_histogram.sum() == counted * (3 if sample else 1)  # each counted for 3
    if sample is not None:
        assert 24 * 777 / 3 - 24 * 5 < counted < 24 * 777 / 3 + 24 * 5


def test_percentile_is_the_upper_edge_of_its_bin():
    histogram = np.zeros(BINS, dtype=np.int64)
    histogram[0] = 9998  # zeros
    histogram[65] = 1  # [1, 1.125) steps
    histogram[100] = 1
    assert percentile_steps(histogram, 99.99) == 1.125
    assert percentile_steps(histogram, 100.0) == bin_upper_edge(100)
    assert percentile_steps(histogram, 50.0) == 0.0  # among the zeros
    assert percentile_steps(np.zeros(BINS, np.int64), 99.0) == 0.0
    assert bits_used(1.125, signed=False) == pytest.approx(math.log2(1.125))
    assert bits_used(1.125, signed=True) == pytest.approx(math.log2(1.125) + 1)
    assert bits_used(0.0, signed=False) is None


# --- against an executor's own read sums ----------------------------------------------------

MLP = """
mlp (float[8,40] x) => (float y)
{
  h = Gemm (x, w1, b1)
  r = Relu (h)
  y = Gemm (r, w2, b2)
}
"""


@pytest.fixture(scope="module")
def mlp_program(tmp_path_factory):
    weights = {"w1": random((40, 24), 1), "b1": random((24,), 2)}
    weights |= {"w2": random((24, 10), 3), "b2": random((10,), 4)}
    path = save(parse(MLP, weights), tmp_path_factory.mktemp("mlp"))
    return compile_onnx(path, CompileOptions(tiles=16, tile_rows=16, tile_cols=16))


def test_measured_spread_is_the_percentile_of_the_reads_sums(mlp_program):
    session = xbarc.InferenceSession(mlp_program, noise="quant")
    spread = ReadSpread(session.adc_levels, 99.0)
    raw: dict[str, list[np.ndarray]] = {}
    full_scales: dict[str, int] = {}

    def record(layer, sums, scales):
        steps = np.abs(sums.astype(np.float64)) * session.adc_levels / scales[:, None]
        raw.setdefault(layer, []).append(steps.reshape(-1))
        full_scales[layer] = max(full_scales.get(layer, 0), int(scales.max()))
        spread(layer, sums, scales)

    session.observe_reads(record)
    session.run(None, {"x": random((8, 40), 5)})
    largest = largest_read_sums(mlp_program)
    rows = spread.layers()
    assert [row.layer for row in rows] == [layer.name for layer in mlp_program.layers()]
    for row in rows:
        steps = np.concatenate(raw[row.layer])
        true = float(np.percentile(steps, 99.0, method="inverted_cdf"))
        assert true <= row.spread_steps <= true * 9 / 8
        assert row.sums == row.counted == steps.size
        assert row.zero == pytest.approx(np.mean(steps == 0))
        assert row.clipped == 0.0  # a fixed range holds every sum
        # inspect's largest sum is the executor's fixed full scale: one rule
        assert full_scales[row.layer] == largest[row.layer]
        assert row.step == largest[row.layer] / 255


def test_large_batches_of_reads_are_sampled_evenly():
    spread = ReadSpread(255, 99.0)
    patches = 1000 * 49  # a batch of 7x7 images
    sample = spread.sample(patches)
    assert np.array_equal(sample.offsets, ReadSpread(255, 99.0).sample(patches).offsets)
    counted = sample.patches(0, patches)
    assert np.all(np.diff(counted) > 0) and counted[-1] < patches
    assert abs(len(counted) - patches / SAMPLE_EVERY) <= SAMPLE_RUN
    # each column counts every pixel of the image, and every part of the batch, about as
    # often; SAMPLE_EVERY columns in a row count every patch once
    assert np.bincount(counted % 49, minlength=49).min() > 0.6 * len(counted) / 49
    assert np.bincount(counted * 10 // patches, minlength=10).min() > 0.7 * len(counted) / 10
    together = np.concatenate([sample.patches(m, patches) for m in range(7, 7 + SAMPLE_EVERY)])
    assert np.array_equal(np.sort(together), np.arange(patches))
    # reads over fewer patches than a run: whole columns, one in SAMPLE_EVERY
    short = spread.sample(49)
    assert sum(len(short.patches(m, 49)) for m in range(SAMPLE_EVERY)) == 49

    # the sample's figures are the whole batch's, to within a bin or so; each counted sum
    # stands for SAMPLE_EVERY of them
    rng = np.random.default_rng(3)
    for rows, width in ((16, patches), (4096, 49)):
        sums = rng.poisson(12, (rows, width)) * (rng.random((rows, width)) < 0.3)
        sums = sums.astype(np.int16)
        assert sums.size > SAMPLE_ABOVE
        spread = ReadSpread(255, 99.0)
        spread(layer="a", sums=sums, full_scales=np.full(rows, 255))
        (row,) = spread.layers()
        true = float(np.percentile(np.abs(sums), 99.0))
        assert row.sums == sums.size
        assert abs(row.counted - sums.size / SAMPLE_EVERY) < 0.02 * sums.size / SAMPLE_EVERY
        assert true / 1.25 < row.spread_steps < true * 1.25
        assert row.zero == pytest.approx(np.mean(sums == 0), abs=0.01)
    # fewer sums: every one of them counted
    small = np.ones((4, SAMPLE_ABOVE // 4), dtype=np.int16)
    spread(layer="b", sums=small, full_scales=np.full(4, 255))
    assert spread.layers()[1].counted == small.size


def test_a_layer_whose_sample_counts_nothing_reports_zeros(monkeypatch):
    monkeypatch.setattr("xbarc.runtime.read_spread.SAMPLE_ABOVE", 4)
    spread = ReadSpread(255, 99.0)
    patches = 10  # fewer than a run: only the column whose run is the first counts them
    offset = int(spread.sample(patches).offsets[0])
    assert offset != 0  # so the one column below counts none of its sums
    spread(layer="a", sums=np.full((1, patches), 300, np.int16), full_scales=np.full(1, 255))
    (row,) = spread.layers()
    assert (row.sums, row.counted) == (patches, 0)
    assert (row.zero, row.clipped, row.spread_steps) == (0.0, 0.0, 0.0)
    assert row.step == 1.0
    assert bits_used(row.spread_steps, signed=False) is None
    # once a batch is counted, the figures are those of its sums alone
    spread(layer="a", sums=np.array([[0, 300]], np.int16), full_scales=np.full(1, 255))
    (row,) = spread.layers()
    assert (row.sums, row.counted, row.zero, row.clipped) == (patches + 2, 2, 0.5, 0.5)


def test_reads_are_observed_only_when_asked(mlp_program):
    session = xbarc.InferenceSession(mlp_program, noise="quant")
    calls = []
    session.observe_reads(lambda layer, sums, scales: calls.append(layer))
    x = {"x": random((8, 40), 6)}
    session.run(None, x)
    seen = len(calls)
    assert seen >= 2
    session.observe_reads(None)
    session.run(None, x)
    assert len(calls) == seen
    # no ADC step to measure against: ideal reads and a lossless ADC
    assert observe_reads(xbarc.InferenceSession(mlp_program)) is None
    exact = xbarc.InferenceSession(mlp_program, noise="quant", overrides=["adc_bits=exact"])
    assert observe_reads(exact) is None


def test_a_signed_adc_counts_the_sign_bit(mlp_program):
    session = xbarc.InferenceSession(
        mlp_program, noise="quant", overrides=["adc_placement=differential"]
    )
    assert session.adc_levels == 127
    spread = observe_reads(session)
    assert spread is not None
    session.run(None, {"x": random((8, 40), 7)})
    use = measured_adc(spread, session.settings, mlp_program, 8)
    assert use.signed and use.levels == 127
    for layer, row in zip(use.layers, spread.layers(), strict=True):
        assert layer.bits_used == pytest.approx(math.log2(row.spread_steps) + 1)


# --- a trained network compiled unsliced ----------------------------------------------------
# resnet_p90 with --cell-bits 8 and one scale per tensor (measured: float 98.06 %; quant,
# fixed ADC range 87.22 %, layers at 3.8 to 5.3 of 8 bits, two below 4; calibrated ADC
# range 98.33 %, 8.0 bits). Per-column scales (the default) fill more of each read's
# range: 93.6 % with the fixed range.

LAYERS = [
    "/0/0.0/Conv",
    "/2/conv1/conv1.0/Conv",
    "/2/conv2/conv2.0/Conv",
    "/3/conv1/conv1.0/Conv",
    "/3/conv2/conv2.0/Conv",
    "/4/conv1/conv1.0/Conv",
    "/4/conv2/conv2.0/Conv",
    "/4/shortcut/shortcut.0/Conv",
    "/7/Gemm",
]
STARVED = ["/2/conv1/conv1.0/Conv", "/4/conv2/conv2.0/Conv"]  # under 4 of 8 bits


@pytest.fixture(scope="module")
def unsliced(tmp_path_factory) -> tuple[Path, Path]:
    """The program, and a copy calibrated on the first 100 samples."""
    folder = tmp_path_factory.mktemp("unsliced")
    program = folder / "resnet_p90.xbar"
    options = [
        "--tiles",
        "64",
        "--cell-bits",
        "8",
        "--scale",
        "tensor",
        "--input-shape",
        "x=1x1x8x8",
    ]
    assert main(["compile", str(MODEL), *options, "-o", str(program)]) == 0
    calibrated = folder / "calibrated.xbar"
    arguments = ["calibrate", str(program), "--data", str(DATA), "--samples", "100"]
    assert main([*arguments, "-o", str(calibrated)]) == 0
    return program, calibrated


def run_cli(capsys, *arguments: str) -> tuple[str, str]:
    capsys.readouterr()
    assert main([*map(str, arguments)]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def evaluate(capsys, program: Path, *extra: str) -> tuple[dict, str]:
    out, err = run_cli(
        capsys,
        *("eval", program, "--reference", MODEL, "--data", DATA, "--labels", "y"),
        *("--batch-size", "360", "--noise", "quant", "--json", *extra),
    )
    return json.loads(out), err


def table_rows(text: str) -> dict[str, list[str]]:
    """The ADC table's rows by layer name."""
    section = text[text.index("ADC: ") :].splitlines()
    return {line.split()[0]: line.split()[1:] for line in section[3:] if line.startswith("  /")}


def test_eval_warns_when_a_fixed_range_starves_the_reads(unsliced, capsys):
    program, _ = unsliced
    report, err = evaluate(capsys, program)
    assert report["reference_accuracy"] == pytest.approx(0.9806, abs=0.001)
    assert 0.84 < report["accuracy"] < 0.90  # measured 87.22 %
    adc = report["adc"]
    assert (adc["bits"], adc["levels"], adc["range"], adc["percentile"]) == (8, 255, "fixed", 99.99)
    assert adc["source"] == "measured on 360 samples"
    assert [layer["layer"] for layer in adc["layers"]] == LAYERS
    for layer in adc["layers"]:
        assert 3.5 < layer["bits_used"] < 5.6  # measured 3.8 to 5.3
        assert layer["bits_used"] == pytest.approx(math.log2(layer["spread_steps"]))
        assert layer["clipped"] == 0.0 and 0.5 < layer["zero"] < 0.95
        assert layer["sums"] > 0 and layer["step"] > 0
    starved = [layer["layer"] for layer in adc["layers"] if layer["bits_used"] < 4]
    assert starved == STARVED
    # one line per starved layer, then the fix, on stderr (stdout stays JSON)
    lines = err.strip().splitlines()
    assert len(lines) == 3 and lines[:2] == [f"xbarc: warning: {line}" for line in adc["warnings"]]
    for line, name in zip(lines, STARVED, strict=False):
        assert re.fullmatch(
            rf"xbarc: warning: layer @{re.escape(name)}: reads use 3\.\d of the ADC's 8 bits "
            r"\(99\.99 % of their sums stay below 1\d(\.\d+)? of its 255 steps\)",
            line,
        )
    assert lines[2] == f"xbarc: fix: {adc['fix']}"
    assert (
        f"xbarc calibrate {program} --data SAMPLES.npz, then --set adc_range=calibrated"
        in (adc["fix"])
    )
    assert "--set adc_bits=13" in adc["fix"] and "--cell-bits 2" in adc["fix"]


def test_a_calibrated_range_uses_every_bit_and_recovers_the_accuracy(unsliced, capsys):
    _, calibrated = unsliced
    report, err = evaluate(capsys, calibrated, "--set", "adc_range=calibrated")
    assert report["accuracy"] > 0.975  # measured 98.33 %
    adc = report["adc"]
    assert adc["range"] == "calibrated" and adc["warnings"] == [] and adc["fix"] is None
    assert err == ""
    for layer in adc["layers"]:
        assert 7.8 < layer["bits_used"] < 8.4 and layer["clipped"] < 0.001


def test_eval_text_shows_the_bits_each_layer_uses(unsliced, capsys):
    program, _ = unsliced
    out, err = run_cli(
        capsys,
        *("eval", program, "--reference", MODEL, "--data", DATA, "--labels", "y"),
        *("--batch-size", "360", "--noise", "quant"),
    )
    assert "ADC: 8 bits (255 levels), range fixed" in out
    assert "spread: the 99.99th percentile of |sum| (measured on 360 samples)" in out
    rows = table_rows(out)
    assert list(rows) == LAYERS
    assert rows["/2/conv1/conv1.0/Conv"][0] == "63.75"  # 127 x 128 rows / 255
    assert all(row[3] == "of" and row[4] == "8" for row in rows.values())
    assert err.count("xbarc: warning:") == 2 and err.count("xbarc: fix:") == 1
    # ideal reads have no ADC, a lossless ADC no step: no section, no warning
    for extra in ([], ["--set", "adc_bits=exact"]):
        out, err = run_cli(
            capsys,
            *("eval", program, "--reference", MODEL, "--data", DATA, "--batch-size", "360"),
            *(["--noise", "quant", *extra] if extra else []),
        )
        assert "ADC:" not in out and err == ""


def test_run_reports_the_adc_use_of_its_batch(unsliced, capsys, tmp_path):
    program, _ = unsliced
    inputs = tmp_path / "x.npz"
    with np.load(DATA) as npz:
        np.savez(inputs, x=npz["x"][:40])
    out, err = run_cli(capsys, "run", program, "--input", inputs, "--noise", "quant")
    assert "(measured on 40 samples)" in out and list(table_rows(out)) == LAYERS
    assert "xbarc: fix: calibrate the ADC range" in err


def test_inspect_shows_the_step_against_the_largest_and_the_calibrated_sums(unsliced, capsys):
    program, calibrated = unsliced
    out, err = run_cli(capsys, "inspect", program)
    assert "spread of the read sums: not known without a calibration" in out
    rows = table_rows(out)
    assert list(rows) == LAYERS
    # 3x3x16 rows, 128 on the tallest tile: 127 x 128 = 16256, step 16256 / 255
    assert rows["/2/conv1/conv1.0/Conv"][:3] == ["16256", "16256", "63.75"]
    assert rows["/0/0.0/Conv"][:3] == ["1143", "1143", "4.482"]  # 9 rows
    assert rows["/2/conv1/conv1.0/Conv"][3:] == ["-", "-", "-"] and err == ""

    out, err = run_cli(capsys, "inspect", calibrated, "--json")
    data = json.loads(out)
    adc = data["adc"]
    assert adc["percentile"] == 99.99 and adc["source"] == "calibration on 100 samples"
    for layer in data["layers"]:
        figures = layer["adc"]
        assert figures["full_scale"] == figures["largest_sum"] and figures["sums"] is None
        assert figures["step"] == pytest.approx(figures["largest_sum"] / 255)
        assert figures["spread_steps"] == pytest.approx(figures["spread"] / figures["step"])
        assert figures["bits_used"] == pytest.approx(math.log2(figures["spread_steps"]))
    bits = {layer["name"]: layer["adc"]["bits_used"] for layer in data["layers"]}
    assert [name for name, used in bits.items() if used < 4] == STARVED
    assert "use the program's calibrated ADC range (--set adc_range=calibrated)" in adc["fix"]
    assert err.count("xbarc: warning:") == 2

    # the calibration's estimate and the run's measurement agree (100 vs 360 samples,
    # calibrated vs dynamic DAC ranges)
    report, _ = evaluate(capsys, program)
    for layer in report["adc"]["layers"]:
        assert layer["bits_used"] == pytest.approx(bits[layer["layer"]], abs=0.35)
