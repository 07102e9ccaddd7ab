"""Bad program text and bad files give one located line saying what is wrong, never a
traceback: golden messages for syntax errors, meaning errors, and broken sidecars."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import xbarc.ir.io as program_io
from xbarc.diagnostics import XbarcError
from xbarc.hardware import make_hardware
from xbarc.ir.io import load_program, load_program_text, save_program, sidecar_path
from xbarc.ir.parser import parse_program
from xbarc.ir.tile import Program, with_tensors

HARDWARE = "xbar 2\nhardware {\n  tile t rows=4 cols=4 count=2\n}\n"  # lines 1-4
ZEROS = "0" * 64


def error_of(text: str) -> str:
    with pytest.raises(XbarcError) as caught:
        parse_program(text, "m.xbar")
    return str(caught.value)


SYNTAX_ERRORS = {
    "misspelt keyword": (
        "xbar 2\nhardware {\n  tile t rowz=4 cols=4 count=2\n}\n",
        "m.xbar:3:10: error: found 'rowz', expected 'rows'",
    ),
    "a longer word is not its keyword prefix": (
        HARDWARE + "graph {\n  op Foo () { opset=1 attrs { axis:integer=1 } }\n}\n",
        "m.xbar:6:36: error: found 'integer', expected 'float', 'floats', 'int', 'ints',"
        " 'proto', 'string', 'strings' or 'tensor'",
    ),
    "float where an integer belongs": (
        HARDWARE + "graph {\n  op Foo () { opset=1 attrs { axis:int=1.5 } }\n}\n",
        "m.xbar:6:40: error: found '1.5', expected an integer",
    ),
    "end of file inside a phase": (
        HARDWARE + "phase 0 {\n  write v0 -> t0\n",
        "m.xbar:7:1: error: found end of file, expected ',', 'run', 'write' or '}'",
    ),
    "stray character": (
        HARDWARE + "graph {\n  input %x : f32[1,$]\n}\n",
        "m.xbar:6:20: error: found '$', expected '?' or an integer",
    ),
    "missing closing brace": (
        HARDWARE + "graph {\n  input %x : f32[1]\n\narray @a weights\n",
        "m.xbar:8:1: error: found 'array', expected '_', 'batch', 'input', 'op', 'output', '}'"
        " or a value name (%x)",
    ),
    "sections out of order": (
        HARDWARE + "phase 0 { }\ngraph { }\n",
        "m.xbar:6:1: error: found 'graph', expected 'phase' or end of file",
    ),
    "unclosed string": (
        HARDWARE + 'graph {\n  op Foo () { opset=1 name="abc }\n}\n',
        "m.xbar:6:28: error: found a string that is not closed on its line or holds a bad"
        ' escape, expected a quoted string ("...")',
    ),
    "empty file": ("", "m.xbar:1:1: error: found end of file, expected 'xbar'"),
    "binary junk": ("\x00\x01", "m.xbar:1:1: error: found '\\u0000', expected 'xbar'"),
}

MEANING_ERRORS = {
    "unknown encoding": (
        "xbar 2\nhardware {\n  encoding diff\n}\n",
        "m.xbar:3:12: error: unknown encoding 'diff' (use differential or offset)",
    ),
    "unknown array encoding": (
        HARDWARE + "array @a weights groups=1 rows=1 cols=1 weight_bits=2\n"
        "  encoding=foo scale=1.0 values=@v levels=@q { }\n",
        "m.xbar:6:12: error: unknown encoding 'foo' (use differential or offset)",
    ),
    "newer format": (
        "xbar 3\nhardware { }\n",
        "m.xbar:1:6: error: format version 3 is not supported (recompile the model with this"
        " xbarc: it reads version 2, in which every read of a cycle names its input)",
    ),
    "version 1 program, before reads named their inputs": (
        "# compiled last year\nxbar 1\nhardware {\n  tile t rows=4 cols=4 count=2\n}\n"
        "phase 0 {\n  run @l { cycle b0..b3 }\n}\n",
        "m.xbar:2:6: error: format version 1 is not supported (recompile the model with this"
        " xbarc: it reads version 2, in which every read of a cycle names its input)",
    ),
    "cycle read without its input": (
        HARDWARE + "phase 0 {\n  run @l { cycle b0..b3 }\n}\n",
        "m.xbar:6:25: error: found '}', expected ',' or '<-'",
    ),
    "duplicate tensor": (
        HARDWARE + f"tensors {{\n  @w : f32[2] sha256={ZEROS}\n  @w : f32[3] sha256={ZEROS}\n}}\n",
        "m.xbar:7:3: error: tensor @w is defined twice (first at line 6, column 3)",
    ),
    "duplicate value": (
        HARDWARE + 'graph {\n  input %"a b" : f32[1]\n  %"a b" = op Relu () { opset=1 }\n}\n',
        'm.xbar:7:3: error: value %"a b" is defined twice (first at line 6, column 3)',
    ),
    "duplicate block": (
        HARDWARE + "blocks {\n"
        "  b0 = @a slice 0 group 0 rows=[0:1] cols=[0:1] on v0:t at 0,0\n"
        "  b0 = @a slice 0 group 0 rows=[0:1] cols=[0:1] on v1:t at 0,0\n}\n",
        "m.xbar:7:3: error: block b0 is defined twice (first at line 6, column 3)",
    ),
    "write ranges of different lengths": (
        HARDWARE + "phase 0 {\n  write v0..v3 -> t0..t1\n}\n",
        "m.xbar:6:9: error: v0..v3 names 4 virtual tiles but t0..t1 names 2 tiles"
        " (the two ranges of a write pair up one to one)",
    ),
    "range counting down": (
        HARDWARE + "phase 0 {\n  run @l { cycle b5..b2 <- g0[0:4] }\n}\n",
        "m.xbar:6:18: error: range b5..b2 counts down; write it upward",
    ),
    "unknown element type": (
        HARDWARE + "graph {\n  input %x : f33[1]\n}\n",
        "m.xbar:6:14: error: unknown element type 'f33' (use f32, f16, f64, bf16, i8, i16,"
        " i32, i64, u8, u16, u32, u64, bool, str, c64, c128, or onnx<code> for other ONNX"
        " types)",
    ),
    "layer with two results": (
        HARDWARE + "graph {\n  %a, %b = xbar gemm @l (%x) : f32[1] {\n"
        "    weight=@w bias=none groups=1 rows=1 cols=1\n  }\n}\n",
        "m.xbar:6:3: error: a crossbar layer has exactly one named result",
    ),
    "float for an integer cost": (
        "xbar 2\nhardware {\n  cost write_pv_iterations=2.5\n}\n",
        "m.xbar:3:28: error: write_pv_iterations must be an integer, found 2.5",
    ),
    "repeated hardware line": (
        "xbar 2\nhardware {\n  dac bits=8 slice_bits=1\n  dac bits=4 slice_bits=1\n}\n",
        "m.xbar:4:3: error: the 'dac' line is defined twice (first at line 3, column 3)",
    ),
    "repeated attribute": (
        HARDWARE + "graph {\n  op Foo () { opset=1 attrs { a:int=1 a:int=2 } }\n}\n",
        "m.xbar:6:39: error: attribute 'a' is given twice",
    ),
    "tensor of unknown shape": (
        HARDWARE + f"tensors {{\n  @w : f32[?] sha256={ZEROS}\n}}\n",
        "m.xbar:6:3: error: tensor @w needs a known shape, got f32[?]",
    ),
}


@pytest.mark.parametrize("case", list(SYNTAX_ERRORS), ids=str)
def test_syntax_error_says_where_what_was_found_and_what_was_expected(case: str) -> None:
    text, message = SYNTAX_ERRORS[case]
    assert error_of(text) == message


@pytest.mark.parametrize("case", list(MEANING_ERRORS), ids=str)
def test_meaning_error_points_at_the_token(case: str) -> None:
    text, message = MEANING_ERRORS[case]
    assert error_of(text) == message


def test_unknown_cost_parameter_lists_the_known_ones() -> None:
    message = error_of("xbar 2\nhardware {\n  cost adc_enrgy_pj=2.0\n}\n")
    assert message.startswith("m.xbar:3:8: error: unknown cost parameter 'adc_enrgy_pj' (use ")
    assert "adc_energy_pj" in message


def test_parse_errors_carry_a_location_object() -> None:
    with pytest.raises(XbarcError) as caught:
        parse_program(HARDWARE + "graph {\n  input %x f32[1]\n}\n", "dir/m.xbar")
    where = caught.value.where
    assert (where.file, where.line, where.column) == ("dir/m.xbar", 6, 12)  # type: ignore[union-attr]
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- reading program files ---------------------------------------------------------------


def test_missing_program_file(tmp_path: Path) -> None:
    path = tmp_path / "none.xbar"
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    assert str(caught.value) == f"error: program file {path} does not exist"


def test_folder_instead_of_program_file(tmp_path: Path) -> None:
    with pytest.raises(XbarcError) as caught:
        load_program_text(tmp_path)
    assert str(caught.value) == f"error: {tmp_path} is a folder, not a program file"


def test_program_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.xbar"
    path.write_bytes(b"xbar 2\nhardware {\n  tile t\xe9 rows=4\n")
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    assert str(caught.value) == (
        f"{path}:3:9: error: the program is not UTF-8 text (byte 0xe9)"
        " (is this really an .xbar file?)"
    )


def test_syntax_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.xbar"
    path.write_text("xbar 2\nhardware {\n  tile t rows=4 cols=4 cout=2\n}\n", "utf-8")
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    assert str(caught.value) == f"{path}:3:24: error: found 'cout', expected 'count'"


# --- sidecars ----------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A saved program with two tensors; returns the path of its text."""
    program = with_tensors(
        Program(make_hardware(2)),
        {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "q": np.array([1, -1], np.int8)},
    )
    path = tmp_path / "p.xbar"
    save_program(path, program)
    return path


def rewrite_sidecar(path: Path, **arrays: np.ndarray) -> None:
    """Replace the sidecar with one holding `arrays` (pickling allowed, to make bad ones)."""
    np.savez(sidecar_path(path), allow_pickle=True, **arrays)  # type: ignore[arg-type]


def load_error(path: Path) -> str:
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    return str(caught.value)


def test_missing_sidecar(saved: Path) -> None:
    sidecar_path(saved).unlink()
    assert load_error(saved) == (
        f"error: tensor file {saved}.npz is missing"
        " (keep the .xbar.npz next to its .xbar, or recompile)"
    )


def test_sidecar_with_changed_data(saved: Path) -> None:
    rewrite_sidecar(saved, w=np.ones((2, 3), np.float32), q=np.array([1, -1], np.int8))
    assert load_error(saved) == (
        f"{saved}.npz: error: tensor 'w' does not match its hash in the program"
        " (the tensor file was changed or belongs to another program; recompile)"
    )


def test_sidecar_with_wrong_shape(saved: Path) -> None:
    rewrite_sidecar(saved, w=np.arange(6, dtype=np.float32), q=np.array([1, -1], np.int8))
    assert load_error(saved) == (
        f"{saved}.npz: error: tensor 'w' has shape [6], the program declares [2, 3]"
        " (the tensor file does not belong to this program; recompile)"
    )


def test_sidecar_with_wrong_element_type(saved: Path) -> None:
    rewrite_sidecar(saved, w=np.zeros((2, 3), np.float64), q=np.array([1, -1], np.int8))
    assert load_error(saved) == (
        f"{saved}.npz: error: tensor 'w' has element type f64, the program declares f32"
        " (the tensor file does not belong to this program; recompile)"
    )


def test_sidecar_missing_a_tensor(saved: Path) -> None:
    rewrite_sidecar(saved, w=np.arange(6, dtype=np.float32).reshape(2, 3))
    assert load_error(saved) == f"{saved}.npz: error: tensor 'q' is missing (recompile the model)"


def test_sidecar_holding_a_pickled_object_array(saved: Path) -> None:
    payload = np.array([{"run": "code"}, None], dtype=object)
    rewrite_sidecar(saved, w=payload, q=np.array([1, -1], np.int8))
    assert load_error(saved) == (
        f"{saved}.npz: error: the tensor file holds pickled objects, which xbarc never loads"
        " (recompile the model to get a clean tensor file)"
    )


def test_truncated_sidecar(saved: Path) -> None:
    sidecar = sidecar_path(saved)
    data = sidecar.read_bytes()
    sidecar.write_bytes(data[: len(data) // 2])
    assert load_error(saved) == (
        f"{saved}.npz: error: not a readable tensor file (not a zip archive) (recompile the model)"
    )


def test_sidecar_that_is_a_single_npy_file(saved: Path) -> None:
    with open(sidecar_path(saved), "wb") as handle:  # a path would get `.npy` appended
        np.save(handle, np.arange(6, dtype=np.float32))
    assert load_error(saved) == (
        f"{saved}.npz: error: not a readable tensor file (not a zip archive) (recompile the model)"
    )


def test_sidecar_with_a_truncated_member(saved: Path) -> None:
    sidecar = sidecar_path(saved)
    with zipfile.ZipFile(sidecar, "w") as archive:
        archive.writestr("w.npy", np.lib.format.magic(1, 0) + b"\x10\x00{'descr'")
        archive.writestr("q.npy", b"")
    message = load_error(saved)
    assert message.startswith(f"{saved}.npz: error: not a readable tensor file")


def test_loading_verifies_and_points_at_the_broken_statement(tmp_path: Path) -> None:
    program = with_tensors(
        Program(make_hardware(2, 4, 4)),
        {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "q": np.array([1, -1], np.int8)},
    )
    path = tmp_path / "p.xbar"
    save_program(path, program)
    text = path.read_text("utf-8").replace("tile t4x4 rows=4", "tile t4x4 rows=0")
    path.write_text(text, "utf-8")
    line = 1 + next(i for i, t in enumerate(text.splitlines()) if "tile t4x4" in t)
    message = load_error(path)
    assert message.startswith(f"{path}:{line}:3: error: ")  # the tile type's own line
    assert "t4x4" in message
    assert load_program(path, verify=False).hardware.tile_types[0].rows == 0


# --- writing program files ---------------------------------------------------------------


def test_saving_a_tensor_without_data_writes_nothing(tmp_path: Path) -> None:
    program = with_tensors(Program(make_hardware(1)), {"w": np.ones(2, np.float32)})
    hollow = Program(program.hardware, tensors=program.tensors)
    with pytest.raises(XbarcError) as caught:
        save_program(tmp_path / "p.xbar", hollow)
    assert str(caught.value) == (
        "error: tensor @w is declared but the program holds no data for it"
    )
    assert list(tmp_path.iterdir()) == []


def test_saving_data_that_disagrees_with_its_declaration_writes_nothing(tmp_path: Path) -> None:
    program = with_tensors(Program(make_hardware(1)), {"w": np.ones(2, np.float32)})
    wrong = with_tensors(program, {"w": np.ones(3, np.float32)})
    wrong = Program(program.hardware, tensors=program.tensors, store=wrong.store)
    with pytest.raises(XbarcError) as caught:
        save_program(tmp_path / "p.xbar", wrong)
    assert str(caught.value) == "error: tensor @w holds shape [3] but is declared [2]"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_keeps_the_old_files_and_leaves_no_temporaries(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {path.name: path.read_bytes() for path in saved.parent.iterdir()}

    def disk_full(handle, store: object) -> None:
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(program_io, "write_npz", disk_full)
    with pytest.raises(XbarcError) as caught:
        save_program(saved, Program(make_hardware(3)))
    assert str(caught.value) == f"error: cannot write {saved}: No space left on device"
    after = {path.name: path.read_bytes() for path in saved.parent.iterdir()}
    assert after == before


def test_saving_into_a_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "p.xbar"
    with pytest.raises(XbarcError) as caught:
        save_program(path, Program(make_hardware(1)))
    assert str(caught.value) == (
        f"error: cannot write the program {path}: the folder {path.parent} does not exist"
        " (create it first)"
    )
    assert not path.parent.exists()


def test_unreadable_program_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.xbar"
    path.write_text("xbar 2\n", "utf-8")

    real_open = os.open

    def refuse(name, *args, **kwargs):
        if os.fspath(name) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)  # chmod would not stop root
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    assert str(caught.value) == f"error: cannot read program file {path}: Permission denied"
