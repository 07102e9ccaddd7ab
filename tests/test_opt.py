"""`xbarc opt` as a tool: writing programs, chaining runs, and one-line errors for bad input.

What each pass prints is golden text in tests/passes/; this file tests the command around
it: -o writes text and tensors atomically, a failure leaves nothing behind, results load
and run again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xbarc.cli import main
from xbarc.ir.io import load_program
from xbarc.ir.printer import print_program

PASSES = Path(__file__).parent / "passes"
SMALL_CNN = PASSES / "pipeline" / "small_cnn.xbar"
STEPS = ("quantize{weight-bits=4,cell-bits=2}", "tile{rows=32,cols=8}", "allocate{tiles=6}")
PIPELINE = ",".join(STEPS)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def copy_program(source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copy(source, target)
    shutil.copy(f"{source}.npz", f"{target}.npz")
    return target


def test_output_file_holds_what_stdout_prints_and_loads_with_its_tensors(tmp_path, capsys):
    program = copy_program(SMALL_CNN, tmp_path)
    status, printed, _ = run_cli(capsys, "opt", program, "--pipeline", PIPELINE)
    assert status == 0
    assert printed == (PASSES / "pipeline" / "small_cnn.out.xbar").read_text()
    status, dash, _ = run_cli(capsys, "opt", program, "--pipeline", PIPELINE, "-o", "-")
    assert status == 0 and dash == printed
    output = tmp_path / "small_cnn.tiled.xbar"
    status, summary, err = run_cli(capsys, "opt", program, "--pipeline", PIPELINE, "-o", output)
    assert status == 0, err
    assert output.read_text() == printed
    assert summary.startswith(f"wrote {output} (+ small_cnn.tiled.xbar.npz)")
    assert "3 arrays, 24 blocks on 16 virtual tiles, 3 phase(s)" in summary
    loaded = load_program(output)  # the sidecar holds the new tensors (levels) too
    assert {"Conv_0.levels", "Conv_3.levels", "Gemm_6.levels"} <= set(loaded.store)
    assert print_program(loaded) == printed


def test_passes_run_one_at_a_time_give_the_program_of_the_whole_pipeline(tmp_path, capsys):
    program = copy_program(SMALL_CNN, tmp_path)
    for step in STEPS:
        status, _, err = run_cli(capsys, "opt", program, "--pipeline", step, "-o", program)
        assert status == 0, err  # in place: the input is replaced by the result
    assert program.read_text() == (PASSES / "pipeline" / "small_cnn.out.xbar").read_text()
    leftovers = sorted(path.name for path in tmp_path.iterdir())
    assert leftovers == ["small_cnn.xbar", "small_cnn.xbar.npz"]


def test_print_ir_after_all_with_an_output_file(tmp_path, capsys):
    program = copy_program(SMALL_CNN, tmp_path)
    output = tmp_path / "out.xbar"
    status, out, _ = run_cli(
        capsys, "opt", program, "--pipeline", PIPELINE, "--print-ir-after-all", "-o", output
    )
    assert status == 0
    dumps = out.split("// ----- IR after ")[1:]
    assert [dump.split(" ", 1)[0] for dump in dumps] == ["quantize", "tile", "allocate"]
    assert dumps[-1].startswith("allocate -----\n" + output.read_text())  # the result
    assert out.splitlines()[-1].startswith(f"wrote {output} (+ out.xbar.npz)")


def test_a_failing_pass_writes_nothing_and_leaves_the_input_alone(tmp_path, capsys):
    program = copy_program(SMALL_CNN, tmp_path)
    before = program.read_bytes(), Path(f"{program}.npz").read_bytes()
    for target in (tmp_path / "out.xbar", program):
        status, out, err = run_cli(
            capsys, "opt", program, "--pipeline", "quantize,tile{mapping=sparse,group-cols=0}",
            "-o", target,
        )  # fmt: skip
        assert_one_line_error(status, err, "small_cnn.xbar", "pass tile{", "group-cols")
        assert out == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "small_cnn.xbar",
        "small_cnn.xbar.npz",
    ]
    assert (program.read_bytes(), Path(f"{program}.npz").read_bytes()) == before


@pytest.mark.parametrize(
    "output, fragment",
    [
        ("out.xbar.npz", "refusing to write the program to"),
        ("model.onnx", "refusing to write the program to"),
        ("missing/out.xbar", "the folder missing does not exist"),
    ],
)
def test_bad_output_paths(tmp_path, capsys, monkeypatch, output, fragment):
    copy_program(SMALL_CNN, tmp_path)
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli(
        capsys, "opt", "small_cnn.xbar", "--pipeline", "quantize", "-o", output
    )
    assert_one_line_error(status, err, fragment)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "small_cnn.xbar",
        "small_cnn.xbar.npz",
    ]


def test_bad_input_files_name_the_file_and_line(tmp_path, capsys):
    status, _, err = run_cli(capsys, "opt", tmp_path / "absent.xbar", "--pipeline", "quantize")
    assert_one_line_error(status, err, "absent.xbar does not exist")

    program = copy_program(SMALL_CNN, tmp_path)
    lines = program.read_text().splitlines()
    line = next(i for i, text in enumerate(lines) if "groups=4 rows=9" in text)
    lines[line] = lines[line].replace("rows=9", "rowz=9")
    program.write_text("\n".join(lines) + "\n")
    status, _, err = run_cli(capsys, "opt", program, "--pipeline", "quantize")
    assert_one_line_error(status, err, f"small_cnn.xbar:{line + 1}:", "found 'rowz'")

    program = copy_program(SMALL_CNN, tmp_path)
    Path(f"{program}.npz").unlink()
    status, _, err = run_cli(capsys, "opt", program, "--pipeline", "quantize")
    assert_one_line_error(status, err, "small_cnn.xbar.npz is missing")
