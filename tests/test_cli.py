"""The command line end to end: compile, inspect, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import light_model
from xbarc.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_conv_model(batch: int | str = 1) -> onnx.ModelProto:
    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def resnet_program(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("resnet") / "resnet50.xbar"
    assert main(["compile", str(light_model("resnet50")), "--tiles", "128", "-o", str(output)]) == 0
    return output


def test_compile_resnet50_writes_text_and_tensors(resnet_program):
    assert resnet_program.exists()
    assert Path(f"{resnet_program}.npz").exists()
    assert resnet_program.read_text().startswith("xbar 2")


def test_inspect_prints_per_layer_table_and_json_totals_agree(resnet_program, capsys):
    status, text, _ = run_cli(capsys, "inspect", resnet_program)
    assert status == 0
    status, raw, _ = run_cli(capsys, "inspect", resnet_program, "--json")
    assert status == 0
    data = json.loads(raw)
    assert len(data["layers"]) == 54  # 53 convolutions and the classifier
    for layer in data["layers"]:
        assert layer["name"] in text
    totals = data["totals"]
    total_row = next(line for line in text.splitlines() if line.startswith("total "))
    numbers = [int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d.%])", total_row)]
    for key in ("weights", "blocks", "vtiles", "tiles", "phases", "cell_writes", "cycles"):
        assert totals[key] in numbers, key
    assert totals["weights"] == sum(layer["weights"] for layer in data["layers"])
    assert totals["phases"] > 1  # ResNet-50 needs far more than 128 tiles
    assert f"{totals['utilization']:.1%}" in total_row


def test_enough_tiles_gives_one_phase(tmp_path, capsys):
    output = tmp_path / "squeezenet.xbar"
    model = light_model("squeezenet")
    status, _, _ = run_cli(capsys, "compile", model, "--tiles", "100000", "-o", output)
    assert status == 0
    _, raw, _ = run_cli(capsys, "inspect", output, "--json")
    totals = json.loads(raw)["totals"]
    assert totals["phases"] == 1
    status, _, _ = run_cli(capsys, "compile", model, "--tiles", "64", "-o", output)
    _, raw, _ = run_cli(capsys, "inspect", output, "--json")
    many = json.loads(raw)["totals"]
    assert many["phases"] > 1
    assert many["cell_writes"] == totals["cell_writes"]  # every block cell written once a pass


def test_emit_graph_and_print_ir_after_all(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), model)
    output = tmp_path / "tiny.xbar"
    status, out, _ = run_cli(capsys, "compile", model, "--emit", "graph", "-o", output)
    assert status == 0
    assert "blocks {" not in output.read_text()
    status, out, _ = run_cli(capsys, "compile", model, "--print-ir-after-all", "-o", output)
    assert status == 0
    for name in ("quantize", "tile", "allocate"):
        assert f"IR after {name}" in out


def test_input_model_is_never_modified(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), model)
    before = model.read_bytes()
    status, _, _ = run_cli(capsys, "compile", model, "-o", tmp_path / "tiny.xbar")
    assert status == 0
    assert model.read_bytes() == before
    status, _, err = run_cli(capsys, "compile", model, "-o", model)
    assert_one_line_error(status, err, "refusing to write the program")
    assert model.read_bytes() == before


def test_symbolic_input_shape_needs_override(tmp_path, capsys):
    model = tmp_path / "symbolic.onnx"
    onnx.save(tiny_conv_model(batch="N"), model)
    output = tmp_path / "symbolic.xbar"
    status, _, err = run_cli(capsys, "compile", model, "-o", output)
    assert_one_line_error(status, err, "x", "--input-shape")
    assert not output.exists()
    status, _, _ = run_cli(capsys, "compile", model, "--input-shape", "x=2x3x8x8", "-o", output)
    assert status == 0


def test_truncated_model(tmp_path, capsys):
    model = tmp_path / "truncated.onnx"
    model.write_bytes(light_model("squeezenet").read_bytes()[:5000])
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "t.xbar")
    assert_one_line_error(status, err, "truncated.onnx")
    assert not (tmp_path / "t.xbar").exists()


def test_not_an_onnx_file(tmp_path, capsys):
    model = tmp_path / "notes.onnx"
    model.write_text("these are my notes, not a model\n")
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "n.xbar")
    assert_one_line_error(status, err, "notes.onnx")


def test_missing_model(tmp_path, capsys):
    status, _, err = run_cli(capsys, "compile", tmp_path / "nowhere.onnx")
    assert_one_line_error(status, err, "nowhere.onnx")


def test_bad_options(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), model)
    cases = [
        (["--tile-size", "128by128"], "--tile-size"),
        (["--tiles", "0"], "--tiles must be at least 1"),
        (["--input-shape", "x=1xAx8"], "--input-shape"),
        (["--input-shape", "y=1x3x8x8"], "y"),
        (["--weight-bits", "4", "--cell-bits", "5"], "cell bits (5) exceed weight bits (4)"),
        (["--pipeline", "quantize,tyle"], "unknown pass 'tyle'"),
        (["--pipeline", "quantize,tile", "--scale", "tensor"], "--scale has no effect"),
        (["--pipeline", "quantize,tile", "--mapping", "sparse"], "tile{mapping=M}"),
    ]
    for extra, fragment in cases:
        status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "o.xbar", *extra)
        assert_one_line_error(status, err, fragment)
        assert not (tmp_path / "o.xbar").exists()


def compiled_tiny(tmp_path: Path, capsys) -> Path:
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), model)
    output = tmp_path / "tiny.xbar"
    status, _, _ = run_cli(capsys, "compile", model, "-o", output)
    assert status == 0
    return output


def test_corrupt_program_text(tmp_path, capsys):
    program = compiled_tiny(tmp_path, capsys)
    lines = program.read_text().splitlines()
    block_line = next(i for i, line in enumerate(lines) if line.strip().startswith("b0 ="))
    lines[block_line] = lines[block_line].replace("rows=", "rows=!")
    program.write_text("\n".join(lines) + "\n")
    status, _, err = run_cli(capsys, "inspect", program)
    assert_one_line_error(status, err, f"tiny.xbar:{block_line + 1}:")


def test_program_that_breaks_an_invariant(tmp_path, capsys):
    program = compiled_tiny(tmp_path, capsys)
    text = program.read_text()
    broken = re.sub(r"(b0 = .*? at )\d+,\d+", r"\g<1>120,0", text, count=1)
    assert broken != text
    program.write_text(broken)
    status, _, err = run_cli(capsys, "inspect", program)
    line = 1 + next(i for i, ln in enumerate(broken.splitlines()) if ln.strip().startswith("b0 ="))
    assert_one_line_error(status, err, f"tiny.xbar:{line}:", "exceed the 128 rows")


def test_tensor_file_with_wrong_hash(tmp_path, capsys):
    program = compiled_tiny(tmp_path, capsys)
    sidecar = Path(f"{program}.npz")
    with np.load(sidecar) as npz:
        arrays = {name: npz[name].copy() for name in npz.files}
    name = next(n for n in arrays if arrays[n].dtype == np.float32 and arrays[n].size > 1)
    arrays[name].flat[0] += 1.0
    np.savez(sidecar, **arrays)
    status, _, err = run_cli(capsys, "inspect", program)
    assert_one_line_error(status, err, "does not match its hash")


def test_tensor_file_holding_pickled_objects(tmp_path, capsys):
    program = compiled_tiny(tmp_path, capsys)
    sidecar = Path(f"{program}.npz")
    with np.load(sidecar) as npz:
        arrays = {name: npz[name] for name in npz.files}
    first = next(iter(arrays))
    arrays[first] = np.array([{"evil": 1}], dtype=object)
    np.savez(sidecar, **arrays)
    status, _, err = run_cli(capsys, "inspect", program)
    assert_one_line_error(status, err, "pickled")


def test_tensor_file_missing_or_truncated(tmp_path, capsys):
    program = compiled_tiny(tmp_path, capsys)
    sidecar = Path(f"{program}.npz")
    data = sidecar.read_bytes()
    sidecar.write_bytes(data[: len(data) // 2])
    status, _, err = run_cli(capsys, "inspect", program)
    assert_one_line_error(status, err, "tiny.xbar.npz")
    sidecar.unlink()
    status, _, err = run_cli(capsys, "inspect", program)
    assert_one_line_error(status, err, "missing")


def test_errors_from_a_real_process_have_no_traceback(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-m", "xbarc", "compile", str(tmp_path / "absent.onnx")],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr
    assert finished.stderr.count("\n") == 1
