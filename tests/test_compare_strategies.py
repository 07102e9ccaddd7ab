"""`xbarc compile --compare-strategies`: reprogram and basis side by side at one budget,
and `inspect` of a basis program compiled from a real fixture."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, run_cli
from xbarc.compiler import CompileOptions, compare_strategies, compile_onnx
from xbarc.ir.io import load_program
from xbarc.report import report

LENET = Path(__file__).parent / "fixtures" / "digits" / "lenet.onnx"
CHIP = ("--input-shape", "x=1x1x8x8", "--tiles", "16", "--tile-size", "32x32")


def options(strategy: str = "reprogram") -> CompileOptions:
    return CompileOptions(
        tiles=16, tile_rows=32, tile_cols=32, input_shapes={"x": (1, 1, 8, 8)}, strategy=strategy
    )


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {row["strategy"]: row for row in compare_strategies(LENET, options())}


def test_reprogram_pays_its_writes_on_every_inference_basis_once(rows):
    reprogram, basis = rows["reprogram"], rows["basis"]
    assert reprogram["phases"] > 1  # LeNet needs more than 16 tiles of 32x32
    summary = report(compile_onnx(LENET, options()))
    assert reprogram["cell_writes_per_inference"] == summary.cell_writes > 0
    assert reprogram["deployment_cell_writes"] == 0
    assert reprogram["write_latency_us"] == pytest.approx(summary.write_latency_us)
    assert reprogram["write_energy_uj"] == pytest.approx(summary.write_energy_uj)
    assert basis["phases"] == 1
    assert basis["cell_writes_per_inference"] == 0
    assert basis["write_latency_us"] == 0.0 and basis["write_energy_uj"] == 0.0
    assert basis["deployment_cell_writes"] > 0
    assert basis["combine_energy_uj"] > 0.0 and reprogram["combine_energy_uj"] == 0.0
    for row in (reprogram, basis):
        assert row["edp"] == pytest.approx(row["energy_uj"] * 1e6 * row["latency_us"] * 1e3)
        assert row["tiles"] <= 16


def test_compile_prints_both_and_writes_the_chosen_strategy(tmp_path, capsys, rows):
    output = tmp_path / "lenet.xbar"
    status, text, _ = run_cli(
        capsys, "compile", LENET, *CHIP, "--strategy", "basis", "--compare-strategies",
        "-o", output,
    )  # fmt: skip
    assert status == 0
    program = load_program(output)
    assert program.combines and len(program.phases) == 1  # the basis program was written
    printed = {
        line.split()[0]: line.split()
        for line in text.splitlines()
        if re.match(r"(reprogram|basis) +\d", line)
    }
    for strategy in ("reprogram", "basis"):
        fields = printed[strategy]
        assert int(fields[1]) == rows[strategy]["phases"]
        assert int(fields[3]) == rows[strategy]["cycles"]
        assert int(fields[4]) == rows[strategy]["cell_writes_per_inference"]
        assert float(fields[7]) == pytest.approx(rows[strategy]["energy_uj"], abs=1e-3)
    ratios = re.search(r"basis / reprogram: cycles ([\d.]+)%.*EDP ([\d.]+)%", text)
    assert ratios is not None
    edp = rows["basis"]["edp"] / rows["reprogram"]["edp"]
    assert float(ratios.group(2)) == pytest.approx(100 * edp, abs=0.01)


def test_a_strategy_that_cannot_compile_is_a_row_not_a_failure(capsys, tmp_path):
    output = tmp_path / "lenet.xbar"
    # 64 basis vectors of 32 rows are more than the segments have: the basis row says so
    status, text, _ = run_cli(
        capsys, "compile", LENET, *CHIP, "--basis-k", "64", "--compare-strategies", "-o", output
    )
    assert status == 0
    assert re.search(r"^basis +cannot compile: ", text, re.M), text
    assert output.exists()  # the reprogram program (the default strategy)


def test_compare_strategies_refuses_a_pipeline_and_writes_nothing(capsys, tmp_path):
    output = tmp_path / "lenet.xbar"
    status, _, err = run_cli(
        capsys, "compile", LENET, *CHIP, "--compare-strategies", "--pipeline",
        "quantize,tile,allocate{tiles=16}", "-o", output,
    )  # fmt: skip
    assert_one_line_error(status, err, "--compare-strategies", "--pipeline")
    assert not output.exists()
    status, _, err = run_cli(
        capsys, "compile", LENET, *CHIP, "--compare-strategies", "--emit", "graph", "-o", output
    )
    assert_one_line_error(status, err, "--compare-strategies", "--emit graph")
    assert not output.exists()


def test_inspect_json_of_a_basis_program(tmp_path, capsys):
    import json

    output = tmp_path / "lenet.xbar"
    run_cli(capsys, "compile", LENET, *CHIP, "--strategy", "basis", "-o", output)
    _, raw, _ = run_cli(capsys, "inspect", output, "--json")
    data = json.loads(raw)
    (basis,) = data["basis"]
    program = load_program(output)
    coefficients = [program.store[combine.coefficients] for combine in program.combines]
    assert basis["coefficient_entries"] == sum(c.size for c in coefficients)
    assert basis["coefficient_nonzeros"] == sum(int((c != 0).sum()) for c in coefficients)
    assert basis["copies"] == program.array("basis").copies
    assert data["totals"]["cell_writes_per_inference"] == 0
    assert data["totals"]["deployment_cell_writes"] == data["totals"]["cell_writes"]
    combined = [layer for layer in data["layers"] if layer["combined"]]
    assert len(combined) == len(program.combines)
    assert sum(layer["combine_macs"] for layer in combined) == basis["combine_macs"]


def test_basis_cycles_count_segments_dealt_to_copies():
    """Every combined layer reads its groups x segments input segments per patch, dealt
    round robin to the basis copies: ceil(items / copies) cycles per patch and input
    slice, as the cost model and inspect count them; the combine does one MAC per
    non-zero coefficient per patch."""
    program = compile_onnx(LENET, options("basis"))
    result = report(program)
    copies = program.array("basis").copies
    slices = program.hardware.dac.input_slices
    for layer in result.layers:
        combine = next(c for c in program.combines if c.layer == layer.name)
        coefficients = program.store[combine.coefficients]
        items = coefficients.shape[0] * coefficients.shape[1]
        assert layer.segments == items
        assert layer.cycles == layer.patches * slices * -(-items // copies)
        assert layer.combine_macs == layer.patches * int((coefficients != 0).sum())


def test_inspect_names_the_layers_kept_out_of_the_basis():
    program = compile_onnx(LENET, replace(options("basis"), basis_keep=("/0/Conv",)))
    result = report(program)
    (basis,) = result.basis
    assert basis.kept_layers == ("/0/Conv",)
    assert basis.combined_layers == len(result.layers) - 1
    kept = next(layer for layer in result.layers if layer.name == "/0/Conv")
    assert not kept.combined and kept.combine_macs == 0 and kept.cell_writes > 0
    # the kept layer's own tiles and the basis are both written once, at deployment
    assert result.deployment_cell_writes == kept.cell_writes + basis.cell_writes


def test_calibration_data_fits_the_basis_and_leaves_reprogram_alone():
    data = LENET.parent / "digits_test.npz"
    with_data = replace(options("basis"), calibration_data=data)
    rows = {row["strategy"]: row for row in compare_strategies(LENET, with_data)}
    assert "error" not in rows["reprogram"] and rows["reprogram"]["phases"] > 1
    assert rows["basis"]["phases"] == 1
