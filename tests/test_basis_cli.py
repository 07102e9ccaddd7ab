"""`xbarc compile --strategy basis` from the command line: the basis options, the data-aware
fit from --calibration-data, and a one-line error naming the option for every bad input,
with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run_cli
from xbarc.ir.io import load_program
from xbarc.passes.basisn import fit

DIGITS = Path(__file__).parent / "fixtures" / "digits"
LENET = DIGITS / "lenet.onnx"
SHAPE = ("--input-shape", "x=1x1x8x8")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    with np.load(DIGITS / "digits_test.npz") as data:
        images = data["x"][:64]
    np.savez(folder / "good.npz", x=images)
    np.savez(folder / "misnamed.npz", images=images)
    np.savez(folder / "flat.npz", x=images.reshape(64, 64))
    np.savez(folder / "integers.npz", x=(images * 16).astype(np.complex64))
    return folder


def compile_lenet(capsys, tmp_path, *options: str) -> tuple[int, str, str, Path]:
    output = tmp_path / "lenet.xbar"
    status, out, err = run_cli(
        capsys, "compile", LENET, *SHAPE, "--strategy", "basis", "-o", output, *options
    )
    return status, out, err, output


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (("--coef-bits", "1"), ("basis{coef-bits} (--coef-bits)", "between 2 and 16, got 1")),
        (("--coef-bits", "17"), ("basis{coef-bits} (--coef-bits)", "got 17")),
        (("--basis-terms", "0"), ("basis{terms} (--basis-terms)", "between 1 and K = 128")),
        (("--basis-k", "16", "--basis-terms", "17"), ("basis{terms}", "K = 16, got 17")),
        (("--basis-k", "129"), ("basis{k} (--basis-k)", "segment rows L = 128, got 129")),
        (("--tiles", "8", "--basis-k", "128", "--cell-bits", "1"), ("K = 128", "--basis-k")),
        (
            ("--basis-keep", "/0/Conv", "--basis-keep", "/3/Conv", "--basis-keep", "/7/Gemm"),
            ("too small for one copy", "--tiles"),
        ),
        (("--basis-copies", "3"), ("basis{copies} (--basis-copies)", "between 1 and 2")),
        (("--basis-keep", "conv9"), ("basis{keep} (--basis-keep)", "'conv9'")),
        (("--basis-fit", "identity", "--basis-k", "4"), ("fit=identity", "--basis-k")),
    ],
)
def test_bad_basis_options_are_one_line_errors_and_write_nothing(
    capsys, tmp_path, options, fragments
):
    status, out, err, output = compile_lenet(capsys, tmp_path, "--tiles", "16", *options)
    assert_one_line_error(status, err, *fragments)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ("misnamed.npz", ("--calibration-data", "no array named 'x'", "images")),
        ("flat.npz", ("--calibration-data", "array 'x' has shape 64x64", "Nx1x8x8")),
        ("integers.npz", ("--calibration-data", "array 'x' is complex64", "f32")),
        ("missing.npz", ("does not exist",)),
    ],
)
def test_calibration_data_with_the_wrong_inputs_is_one_line_and_writes_nothing(
    capsys, tmp_path, calibration, data, fragments
):
    status, _, err, _ = compile_lenet(
        capsys, tmp_path, "--tiles", "16", "--calibration-data", calibration / data
    )
    assert_one_line_error(status, err, *fragments)
    assert not list(tmp_path.iterdir())


def test_calibration_data_needs_the_basis_strategy(capsys, tmp_path, calibration):
    output = tmp_path / "lenet.xbar"
    good = calibration / "good.npz"
    common = ("compile", LENET, *SHAPE, "-o", output, "--calibration-data", good)
    status, _, err = run_cli(capsys, *common)
    assert_one_line_error(status, err, "--calibration-data", "--strategy basis")
    pipeline = "quantize,basis,tile,allocate{tiles=16}"
    status, _, err = run_cli(capsys, *common, "--pipeline", pipeline)
    assert_one_line_error(status, err, "--calibration-data", "objective=outputs")
    assert not list(tmp_path.iterdir())


def test_objective_outputs_without_calibration_data_is_refused(capsys, tmp_path):
    pipeline = "quantize,basis{objective=outputs},tile,allocate{tiles=16}"
    status, _, err = run_cli(
        capsys, "compile", LENET, *SHAPE, "-o", tmp_path / "x.xbar", "--pipeline", pipeline
    )
    assert_one_line_error(status, err, "basis{objective}=outputs", "--calibration-data")
    assert not list(tmp_path.iterdir())


def test_calibration_data_changes_the_coefficients_not_the_basis(capsys, tmp_path, calibration):
    """With --calibration-data the program carries the same basis, other coefficients
    (fitted to the outputs), no Gram tensors, and rebuilds weights whose output error on
    those inputs is lower."""
    options = ("--tiles", "16", "--basis-k", "16")
    status, *_ = compile_lenet(capsys, tmp_path, *options)
    assert status == 0
    plain = load_program(tmp_path / "lenet.xbar")
    other = tmp_path / "calibrated"
    other.mkdir()
    status, *_ = compile_lenet(
        capsys, other, *options, "--calibration-data", calibration / "good.npz"
    )
    assert status == 0
    calibrated = load_program(other / "lenet.xbar")
    assert not [d.name for d in calibrated.tensors if d.name.endswith(".input_gram")]
    basis = plain.array("basis")
    assert plain.tensor(basis.levels) == calibrated.tensor(basis.levels)
    from xbarc.basis_data import input_grams
    from xbarc.ir.basis import program_combined_weight

    with np.load(calibration / "good.npz") as data:
        grams = input_grams(plain, {"x": data["x"]})
    lower = 0
    for combine in plain.combines:
        layer = plain.layer(combine.layer)
        weight = plain.store[layer.weight]
        before = fit.relative_output_error(
            weight, program_combined_weight(plain, combine), grams[layer.name]
        )
        after = fit.relative_output_error(
            weight, program_combined_weight(calibrated, combine), grams[layer.name]
        )
        lower += after < before
    assert lower == len(plain.combines)
