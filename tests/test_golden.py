"""Golden text: a small model's program after the frontend and after each pass.

Set XBARC_UPDATE_GOLDEN=1 to rewrite the expected files after an intended change, then
read the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx.parser
import pytest

from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.ir.printer import print_program

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("XBARC_UPDATE_GOLDEN") == "1"
PIPELINE = "quantize{weight-bits=4,cell-bits=2},tile{rows=32,cols=8},allocate{tiles=6}"
STAGES = ("graph", "quantize", "tile", "allocate")


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, str]:
    model = onnx.parser.parse_model((GOLDEN / "small_cnn.onnxtxt").read_text())
    path = tmp_path_factory.mktemp("golden") / "small_cnn.onnx"
    onnx.save(model, path)
    printed = {"graph": print_program(compile_onnx(path, emit="graph"))}

    def keep(pass_object, program) -> None:
        printed[pass_object.name] = print_program(program)

    compile_onnx(path, CompileOptions(pipeline=PIPELINE), after_pass=keep)
    return printed


@pytest.mark.parametrize("stage", STAGES)
def test_program_text_after_each_stage(stages, stage):
    expected_file = GOLDEN / f"small_cnn.{stage}.xbar"
    if UPDATE:
        expected_file.write_text(stages[stage])
    assert stages[stage] == expected_file.read_text()
