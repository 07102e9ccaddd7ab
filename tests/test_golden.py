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
