"""Golden text of the frontend: a small model's program as the ONNX import lowers it.

What the passes make of this program, after each of them, is tested through `xbarc opt`
in tests/passes/pipeline/ (its input is this text). Set XBARC_UPDATE_GOLDEN=1 to rewrite
the expected file after an intended change, then read the diff before committing it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import onnx
import onnx.parser

from xbarc.cli import main
from xbarc.compiler import compile_onnx
from xbarc.ir.printer import print_program

GOLDEN = Path(__file__).parent / "golden"
PIPELINE_INPUT = Path(__file__).parent / "passes" / "pipeline" / "small_cnn.xbar"
UPDATE = os.environ.get("XBARC_UPDATE_GOLDEN") == "1"


def test_frontend_program_text(tmp_path):
    model = onnx.parser.parse_model((GOLDEN / "small_cnn.onnxtxt").read_text())
    path = tmp_path / "small_cnn.onnx"
    onnx.save(model, path)
    printed = print_program(compile_onnx(path, emit="graph"))
    expected_file = GOLDEN / "small_cnn.graph.xbar"
    if UPDATE:
        expected_file.write_text(printed)
    assert printed == expected_file.read_text()


def test_pipeline_golden_input_is_the_frontend_program():
    """tests/passes/pipeline/small_cnn.xbar is this program below its comment lines."""
    without_comments = re.sub(r"\A(#[^\n]*\n)+", "", PIPELINE_INPUT.read_text())
    assert without_comments == (GOLDEN / "small_cnn.graph.xbar").read_text(), (
        "copy tests/golden/small_cnn.graph.xbar below the RUN lines of "
        "tests/passes/pipeline/small_cnn.xbar"
    )


INSPECT_GOLDEN = GOLDEN / "lenet_basis.inspect.txt"
LENET = Path(__file__).parent / "fixtures" / "digits" / "lenet.onnx"


def test_inspect_basis_lines_golden(tmp_path, capsys):
    """The basis section of `inspect` for LeNet combined from the identity basis (the
    lossless reference: deterministic coefficients, the layers' own levels), from the
    basis line to the cell-writes line. XBARC_UPDATE_GOLDEN=1 rewrites the expected text."""
    output = tmp_path / "lenet.xbar"
    chip = ("--input-shape", "x=1x1x8x8", "--tiles", "16", "--tile-size", "32x32")
    basis = ("--strategy", "basis", "--basis-fit", "identity")
    assert main(["compile", str(LENET), *chip, *basis, "-o", str(output)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(output)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("basis @"))
    stop = next(i for i, line in enumerate(lines) if line.startswith("cell writes: "))
    printed = "\n".join(lines[start : stop + 1]) + "\n"
    if UPDATE:
        INSPECT_GOLDEN.write_text(printed)
    assert printed == INSPECT_GOLDEN.read_text()
