"""`xbarc sweep`: a 24-point grid on a digits fixture against separate compile + eval
runs of its points, the files it writes, resuming after a kill, and bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xbarc.cli import main
from xbarc.compiler import compile_onnx
from xbarc.evaluate import evaluate
from xbarc.ir.io import load_program, save_program
from xbarc.sweep import (
    FIGURE_COLUMNS,
    TIMING_COLUMNS,
    mark_pareto,
    point_options,
    program_figures,
)

ROOT = Path(__file__).parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"
MODEL = DIGITS / "mlp_p90.onnx"
DATA = DIGITS / "digits_test.npz"
SAMPLES, SEEDS = 60, 2
GRID = (
    ("tile", ("32x32", "64x64", "128x128", "256x256")),
    ("mapping", ("dense", "sparse", "squeeze")),
    ("adc_bits", ("6", "8")),
)


def sweep_args(output: Path, *extra: str, grid=GRID, samples=SAMPLES, seeds=SEEDS) -> list[str]:
    args = [
        "sweep",
        str(MODEL),
        "--input-shape",
        "x=1x1x8x8",
        "--data",
        str(DATA),
        "--labels",
        "y",
        "--samples",
        str(samples),
        "--seeds",
        str(seeds),
        "-o",
        str(output),
        "-q",
    ]
    for name, values in grid:
        args += ["--grid", f"{name}={','.join(values)}"]
    return args + list(extra)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def figures(rows: list[dict]) -> list[dict]:
    """The rows without their timings (which differ from run to run)."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    """The 24-point sweep, uninterrupted, and its JSON report from stdout."""
    output = tmp_path_factory.mktemp("sweep") / "study"
    with_stdout = subprocess.run(
        [sys.executable, "-m", "xbarc", *sweep_args(output), "--json"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return output, json.loads(with_stdout.stdout)


def test_sweep_writes_csv_json_and_plots(study):
    output, document = study
    rows = read_csv(output / "sweep.csv")
    assert len(rows) == 24
    assert list(rows[0])[:3] == ["tile", "mapping", "adc_bits"]
    assert list(rows[0])[3:] == [*FIGURE_COLUMNS, *TIMING_COLUMNS]
    # the first knob varies slowest, the last fastest
    assert [(r["tile"], r["mapping"], r["adc_bits"]) for r in rows[:3]] == [
        ("32x32", "dense", "6"),
        ("32x32", "dense", "8"),
        ("32x32", "sparse", "6"),
    ]
    assert json.loads((output / "sweep.json").read_text())["points"] == document["points"]
    assert document["points_computed"] == 24 and document["points_reused"] == 0
    assert document["grid"][0] == {"knob": "tile", "values": list(GRID[0][1])}
    for row, point in zip(rows, document["points"], strict=True):
        assert float(row["accuracy_mean"]) == point["accuracy_mean"]
        assert float(row["edap_used"]) == point["edap_used"]
        assert int(row["crossbars"]) == point["crossbars"]
        assert len(point["per_seed"]) == SEEDS
    assert len(list((output / "points").glob("*.json"))) == 24
    # one program per (tile, mapping, adc_bits): none shared, each with its tensors
    assert len(list((output / "programs").glob("*.xbar"))) == 24
    assert len(list((output / "programs").glob("*.xbar.npz"))) == 24
    for picture in ("accuracy.png", "pareto.png"):
        assert (output / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_points_equal_separate_compile_and_eval(study, tmp_path):
    """Every point's figures are what compiling its options and evaluating the program on
    seeds 0..N-1 give, done separately."""
    output, document = study
    from xbarc.compiler import CompileOptions

    base = CompileOptions(input_shapes={"x": (1, 1, 8, 8)})
    for point in document["points"]:
        knobs = tuple(point["knobs"].items())
        options, overrides = point_options(base, (), knobs)
        assert options.tile_rows == int(point["knobs"]["tile"].split("x")[0])
        assert options.hw_set == (f"adc.bits={point['knobs']['adc_bits']}",)
        program = compile_onnx(MODEL, options)
        assert program.hardware.adc.bits == int(point["knobs"]["adc_bits"])
        path = tmp_path / "p.xbar"
        save_program(path, program)
        cached = output / "programs" / f"{point['program']}.xbar"
        assert cached.read_text() == path.read_text()
        report = evaluate(
            path,
            MODEL,
            DATA,
            noise="rram",
            labels_key="y",
            instances=SEEDS,
            samples=SAMPLES,
            overrides=overrides,
        )
        assert [row["accuracy"] for row in report.instances] == [
            row["accuracy"] for row in point["per_seed"]
        ]
        assert point["accuracy_mean"] == report.summary["accuracy"]["mean"]
        assert point["accuracy_std"] == report.summary["accuracy"]["std"]
        assert point["agreement_mean"] == report.summary["agreement"]["mean"]
        assert point["reference_accuracy"] == report.reference_accuracy
        for key, value in program_figures(load_program(path)).items():
            assert point[key] == value, key


def test_program_figures_follow_the_knobs(study):
    """Smaller tiles take more crossbars for the same dense network; 8-bit ADCs cost more
    energy than 6-bit ones; sparse mapping of a 90 % pruned network needs fewer crossbars
    than dense."""
    _, document = study
    by = {tuple(p["knobs"].values()): p for p in document["points"]}
    assert by[("32x32", "dense", "8")]["crossbars"] > by[("128x128", "dense", "8")]["crossbars"]
    for tile in ("32x32", "64x64", "128x128", "256x256"):
        for mapping in ("dense", "sparse", "squeeze"):
            assert by[(tile, mapping, "8")]["energy_uj"] > by[(tile, mapping, "6")]["energy_uj"]
        assert by[(tile, "sparse", "8")]["crossbars"] < by[(tile, "dense", "8")]["crossbars"]
    for point in document["points"]:
        edap = point["energy_uj"] * 1e6 * point["latency_us"] * 1e3 * point["used_area_mm2"]
        assert point["edap_used"] == pytest.approx(edap, rel=1e-12)
        assert 0 < point["used_area_mm2"] <= point["area_mm2"]


def test_pareto_front(study):
    _, document = study
    points = document["points"]
    front = [p for p in points if p["pareto"]]
    assert front
    for p in front:  # nothing dominates a front point
        assert not any(
            q["edap_used"] <= p["edap_used"]
            and q["accuracy_mean"] >= p["accuracy_mean"]
            and (q["edap_used"] < p["edap_used"] or q["accuracy_mean"] > p["accuracy_mean"])
            for q in points
        )
    for p in points:  # every other point is dominated by some point
        if not p["pareto"]:
            assert any(
                q["edap_used"] <= p["edap_used"] and q["accuracy_mean"] >= p["accuracy_mean"]
                for q in points
                if q is not p
            )
    made = [
        {"edap_used": 1.0, "accuracy_mean": 0.5},
        {"edap_used": 2.0, "accuracy_mean": 0.9},
        {"edap_used": 2.0, "accuracy_mean": 0.8},  # dominated by the second
        {"edap_used": 0.5, "accuracy_mean": 0.5},  # dominates the first
    ]
    mark_pareto(made)
    assert [p["pareto"] for p in made] == [False, True, False, True]


def test_accuracy_plot_lines(study):
    """The accuracy panel of each knob: one line per combination of the other knobs, its
    points the accuracy means of the sweep."""
    from xbarc.plots import sweep_accuracy_figure

    _, document = study
    figure = sweep_accuracy_figure(document["points"], GRID, "test")
    lines = {
        artist.get_gid(): artist
        for axes in figure.axes
        for artist in axes.get_lines()
        if artist.get_gid()
    }
    tile_lines = [gid for gid in lines if gid.startswith("line:tile:")]
    assert len(tile_lines) == 6  # 3 mappings x 2 ADC widths
    line = lines["line:tile:squeeze|6"]
    want = [
        100 * p["accuracy_mean"]
        for p in document["points"]
        if p["knobs"]["mapping"] == "squeeze" and p["knobs"]["adc_bits"] == "6"
    ]
    assert list(line.get_ydata()) == pytest.approx(want)
    assert len([gid for gid in lines if gid.startswith("line:mapping:")]) == 8  # 4 tiles x 2


def test_rerun_reuses_every_point(study, tmp_path):
    output, _ = study
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(output), str(copy)], check=True)
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "points").iterdir()}
    assert main(sweep_args(copy, "--json")) == 0
    document = json.loads((copy / "sweep.json").read_text())
    assert document["points_reused"] == 24 and document["points_computed"] == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in (copy / "points").iterdir()}
    assert figures(read_csv(copy / "sweep.csv")) == figures(read_csv(output / "sweep.csv"))


class Interrupted(Exception):
    pass


def test_resume_after_interruption(study, tmp_path):
    """A sweep stopped after 7 points (an exception from the point hook, as a Ctrl-C
    would), run again, computes only the other 17 and gives the uninterrupted numbers."""
    from xbarc.compiler import CompileOptions
    from xbarc.sweep import Knob, SweepOptions, run_sweep

    output, _ = study
    resumed = tmp_path / "resumed"
    options = SweepOptions(
        model=MODEL,
        data=DATA,
        labels="y",
        knobs=tuple(Knob(name, values) for name, values in GRID),
        output=resumed,
        seeds=SEEDS,
        samples=SAMPLES,
        base=CompileOptions(input_shapes={"x": (1, 1, 8, 8)}),
    )
    seen = []

    def stop_after_seven(record: dict, reused: bool) -> None:
        seen.append(record)
        if len(seen) == 7:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_sweep(options, on_point=stop_after_seven)
    done = {p.name: p.stat().st_mtime_ns for p in (resumed / "points").glob("*.json")}
    assert len(done) == 7
    assert not (resumed / "sweep.csv").exists()
    result = run_sweep(options)
    assert (result.reused, result.computed) == (7, 17)
    for name, mtime in done.items():
        assert (resumed / "points" / name).stat().st_mtime_ns == mtime
    assert figures(read_csv(resumed / "sweep.csv")) == figures(read_csv(output / "sweep.csv"))


@pytest.mark.slow
def test_resume_after_kill(study, tmp_path):
    """A sweep killed (SIGKILL) once 5 points are done, run again, computes only the rest
    and gives the numbers of the uninterrupted sweep."""
    output, _ = study
    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        [sys.executable, "-m", "xbarc", *sweep_args(resumed)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while process.poll() is None:
            points = resumed / "points"
            if points.is_dir() and len(list(points.glob("*.json"))) >= 5:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (resumed / "points").glob("*.json")}
    assert 5 <= len(done) < 24
    assert not (resumed / "sweep.csv").exists()
    assert main(sweep_args(resumed)) == 0
    document = json.loads((resumed / "sweep.json").read_text())
    assert document["points_reused"] == len(done)
    assert document["points_computed"] == 24 - len(done)
    for name, mtime in done.items():  # finished points were not recomputed
        assert (resumed / "points" / name).stat().st_mtime_ns == mtime
    assert figures(read_csv(resumed / "sweep.csv")) == figures(read_csv(output / "sweep.csv"))


SMALL = (("mapping", ("dense", "sparse")),)


def test_changed_fixed_options_are_not_reused(tmp_path):
    output = tmp_path / "study"
    assert main(sweep_args(output, grid=SMALL, samples=20, seeds=1)) == 0
    for extra in (
        ("--set", "read_sigma=0.02"),
        ("--tiles", "64"),
        ("--hw-set", "cell.g_max_us=30"),
    ):
        assert main(sweep_args(output, *extra, grid=SMALL, samples=20, seeds=1)) == 0
        document = json.loads((output / "sweep.json").read_text())
        assert document["points_reused"] == 0, extra
    assert main(sweep_args(output, grid=SMALL, samples=30, seeds=1)) == 0
    assert json.loads((output / "sweep.json").read_text())["points_reused"] == 0
    assert main(sweep_args(output, grid=SMALL, samples=20, seeds=1)) == 0
    assert json.loads((output / "sweep.json").read_text())["points_reused"] == 2


def test_deterministic_profile_runs_one_seed_and_noise_knobs(tmp_path):
    """quant draws nothing: one chip run per point whatever --seeds; a noise knob moves
    the simulation but not the program (one program for both points)."""
    output = tmp_path / "study"
    grid = (("noise.adc_bits", ("3", "8")),)
    assert main(sweep_args(output, "--noise", "quant", grid=grid, samples=40, seeds=3)) == 0
    points = json.loads((output / "sweep.json").read_text())["points"]
    assert [p["seeds"] for p in points] == [1, 1]
    assert all(p["accuracy_std"] == 0 for p in points)
    assert points[0]["program"] == points[1]["program"]
    assert len(list((output / "programs").glob("*.xbar"))) == 1
    assert points[0]["energy_uj"] == points[1]["energy_uj"]  # the chip did not change
    assert points[0]["accuracy_mean"] < points[1]["accuracy_mean"]


def test_summary_table(tmp_path, capsys):
    output = tmp_path / "study"
    args = [a for a in sweep_args(output, grid=SMALL, samples=20, seeds=2)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["mapping", "accuracy"]
    assert lines[1].split()[0] == "dense" and lines[2].split()[0] == "sparse"
    assert "2 points (2 computed, 0 reused" in lines[3]
    assert lines[4].startswith("wrote ")


# --- bad input: one line, exit 1, nothing written ---------------------------------------


def run_bad(tmp_path, capsys, *args: str, grid=SMALL) -> str:
    output = tmp_path / "study"
    base = sweep_args(output, grid=grid)
    assert main([*base, *args]) == 1
    error = capsys.readouterr().err
    assert error.startswith("xbarc: ") and error.count("\n") == 1, error
    assert not output.exists()
    return error


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ((("bogus", ("1",)),), "unknown knob 'bogus'"),
        ((("tile", ("32by32",)),), "tile=32by32: not ROWSxCOLS"),
        ((("mapping", ("dense", "diagonal")),), "mapping=diagonal: unknown mapping"),
        ((("cell_bits", ("two",)),), "cell_bits=two: expected a whole number"),
        ((("tiles", ("0",)),), "tiles=0: expected a whole number of at least 1"),
        ((("tile", ("32x32",)), ("tile", ("64x64",))), "--grid tile is given twice"),
        ((("adc_bits", ("6",)), ("hw.adc.bits", ("8",))), "given twice (as adc_bits)"),
        ((("mapping", ("dense", "dense")),), "value 'dense' is given twice"),
        (
            (("weight_bits", ("8", "4")), ("cell_bits", ("2", "8"))),
            "grid point weight_bits=4 cell_bits=8: cell bits (8) exceed weight bits (4)",
        ),
        ((("tile", ("100000x100000",)),), "grid point tile=100000x100000: the row count"),
        ((("hw.adc.sparkle", ("1",)),), "adc has no field 'sparkle'"),
        ((("adc_bits", ("six",)),), "expected a whole number"),
        ((("adc_bits", ("0",)),), "grid point adc_bits=0: --hw-set 'adc.bits=0': expected 1 to 64"),
        ((("hw", ("isaac", "nosuchchip")),), "grid point hw=nosuchchip: "),
        ((("noise.bogus", ("1",)),), "grid point noise.bogus=1"),
        ((("noise.read_sigma", ("abc",)),), "grid point noise.read_sigma=abc"),
        (
            (("encoding", ("offset",)), ("mapping", ("sparse",))),
            "mapping=sparse drops zero cells",
        ),
    ],
)
def test_bad_grid(tmp_path, capsys, grid, message):
    assert message in run_bad(tmp_path, capsys, grid=grid)


def test_differential_adc_below_two_bits(tmp_path, capsys):
    error = run_bad(
        tmp_path,
        capsys,
        "--set",
        "adc_placement=differential",
        grid=(("adc_bits", ("6", "1")),),
    )
    assert "grid point adc_bits=1: adc_placement" in error and "at least 2 bits" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "adc_bits=4"), "overrides it in the simulation"),
        (("--tiles", "64"), "--grid tiles and --tiles both set the tile budget"),
        (("--hw-set", "adc.bits=4"), "--grid adc_bits and --hw-set adc.bits=4 both set"),
        (("--seeds", "0"), "--seeds must be at least 1"),
        (("--samples", "0"), "--samples must be at least 1"),
        (("--workers", "0"), "--workers must be at least 1"),
        (("--labels", "z"), "the data has no array named 'z'"),
        (("--data", "missing.npz"), "missing.npz does not exist"),
        (("--reference", "missing.onnx"), "missing.onnx"),
        (("--noise", "sparkly"), "xbarc: error: unknown noise profile 'sparkly'"),
        (("--set", "read_sigma=abc"), "xbarc: --set read_sigma=abc: error: read_sigma"),
        (("--hw-set", "adc.sparkle=1"), "xbarc: error: --hw-set 'adc.sparkle=1'"),
    ],
)
def test_bad_options(tmp_path, capsys, args, message):
    grid = (("adc_bits", ("6", "8")), ("tiles", ("16", "32")))
    assert message in run_bad(tmp_path, capsys, *args, grid=grid)


def test_no_grid_and_output_file(tmp_path, capsys):
    output = tmp_path / "study"
    args = sweep_args(output, grid=())
    assert main(args) == 1
    assert "needs at least one --grid" in capsys.readouterr().err
    output.write_text("not a folder")
    assert main(sweep_args(output, grid=SMALL)) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert output.read_text() == "not a folder"


@pytest.mark.skipif(
    not hasattr(__import__("xbarc.distributed").distributed, "add_engine_options"),
    reason="the Dask engine (which reaches schedulers) is not merged yet",
)
def test_unreachable_scheduler(tmp_path, capsys):
    error = run_bad(tmp_path, capsys, "--scheduler", "tcp://127.0.0.1:9")
    assert "scheduler" in error


def test_hardware_preset_knob(tmp_path):
    """`--grid hw=isaac,puma`: each point's program is compiled for that preset's chip,
    and the cost figures are the preset's."""
    from xbarc.compiler import CompileOptions, build_hardware

    output = tmp_path / "study"
    grid = (("hw", ("isaac", "puma")),)
    assert main(sweep_args(output, grid=grid, samples=20, seeds=1)) == 0
    points = json.loads((output / "sweep.json").read_text())["points"]
    for point, preset in zip(points, ("isaac", "puma"), strict=True):
        program = load_program(output / "programs" / f"{point['program']}.xbar")
        assert program.hardware == build_hardware(CompileOptions(hw=preset))
        for key, value in program_figures(program).items():
            assert point[key] == value, key
    assert points[0]["energy_uj"] != points[1]["energy_uj"]


@pytest.mark.parametrize(
    ("tile", "mapping", "adc_bits"),
    [("32x32", "squeeze", "6"), ("64x64", "sparse", "8"), ("256x256", "dense", "6")],
)
def test_points_equal_the_commands(study, tmp_path, capsys, tile, mapping, adc_bits):
    """A point's figures are those of `xbarc compile` (with --hw-set adc.bits), `xbarc
    inspect` and `xbarc eval --seeds` of the same options, run as commands."""
    _, document = study
    (point,) = [
        p
        for p in document["points"]
        if p["knobs"] == {"tile": tile, "mapping": mapping, "adc_bits": adc_bits}
    ]
    program = tmp_path / "p.xbar"
    compile_args = ["compile", str(MODEL), "--input-shape", "x=1x1x8x8", "--tile-size", tile]
    compile_args += ["--mapping", mapping, "--hw-set", f"adc.bits={adc_bits}", "-o", str(program)]
    assert main([*compile_args, "--json", "-q"]) == 0
    compiled = json.loads(capsys.readouterr().out)
    eval_args = ["eval", str(program), "--reference", str(MODEL), "--data", str(DATA)]
    eval_args += ["--labels", "y", "--noise", "rram", "--seeds", str(SEEDS)]
    assert main([*eval_args, "--samples", str(SAMPLES), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["accuracy"] for row in report["instances"]] == [
        row["accuracy"] for row in point["per_seed"]
    ]
    assert point["accuracy_mean"] == report["summary"]["accuracy"]["mean"]
    assert point["accuracy_std"] == report["summary"]["accuracy"]["std"]
    assert point["crossbars"] == compiled["totals"]["tiles"]
    assert main(["inspect", str(program), "--json", "-q"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert point["crossbars"] == totals["tiles"]
    assert point["vtiles"] == totals["vtiles"]
    assert point["phases"] == totals["phases"]
    assert point["cell_writes"] == totals["cell_writes"]
    assert point["cycles"] == totals["cycles"]
    assert point["area_mm2"] == totals["area_mm2"]
    assert point["used_area_mm2"] == totals["used_area_mm2"]
    assert point["energy_uj"] == totals["energy_uj"]
    assert point["latency_us"] == totals["latency_us"]
    assert point["edap_used"] == totals["edap_used"]


OTHER_INPUT = """
other (float[N,64] data) => (float[N,10] logits)
{
  logits = Gemm <transB = 1> (data, w, b)
}
"""


def test_reference(tmp_path, capsys):
    """--reference: agreement and the float accuracy are the reference's (the dense MLP
    for its pruned version); a reference with other inputs is refused before any work."""
    import numpy as np
    import onnx

    from tests.onnx_models import parse

    output = tmp_path / "study"
    args = sweep_args(output, "--reference", str(DIGITS / "mlp.onnx"), grid=SMALL, seeds=1)
    assert main([*args, "--samples", "60"]) == 0
    points = json.loads((output / "sweep.json").read_text())["points"]
    capsys.readouterr()
    alone = tmp_path / "alone"
    assert main(sweep_args(alone, grid=SMALL, seeds=1)) == 0
    plain = json.loads((alone / "sweep.json").read_text())["points"]
    assert points[0]["reference_accuracy"] != plain[0]["reference_accuracy"]
    assert points[0]["accuracy_mean"] == plain[0]["accuracy_mean"]  # the same programs
    assert points[0]["key"] != plain[0]["key"]
    other = tmp_path / "other.onnx"
    weights = {"w": np.zeros((10, 64), np.float32), "b": np.zeros(10, np.float32)}
    onnx.save(parse(OTHER_INPUT, weights), other)
    (tmp_path / "bad").mkdir()
    assert "--reference takes inputs data, the model x" in run_bad(
        tmp_path / "bad", capsys, "--reference", str(other)
    )
