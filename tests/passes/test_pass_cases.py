"""Golden tests of the passes, text in and text out, run through `xbarc opt` (README.md).

Each input `tests/passes/<folder>/<name>.xbar` starts with its cases as `# RUN:` lines:

    # RUN: xbarc opt %s --pipeline "tile{rows=4,cols=4}" > dense_4x4.out.xbar
    # RUN: xbarc opt %s --pipeline "tile{rows=0}" 2> rows_0.err

`%s` is the input; `>` names the file holding the exact program text the command prints
(it must succeed), `2>` the file holding the exact one-line error (it must fail with exit
status 1, no traceback, nothing on stdout). Commands run in the input's folder, so errors
name the input by its file name.

    XBARC_UPDATE_GOLDEN=1 python -m pytest tests/passes -p no:cacheprovider

rewrites the inputs' digests and sidecars (tests/passes/make_inputs.py), every expected
file, and removes expected files no RUN line names; read the diff before committing it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.passes.make_inputs import INPUTS, made_input, write_inputs
from xbarc.cli import EXIT_USER_ERROR, main

HERE = Path(__file__).parent
UPDATE = os.environ.get("XBARC_UPDATE_GOLDEN") == "1"
RUN_LINE = re.compile(r"^# RUN:(.*)$", re.MULTILINE)
EXPECTED_SUFFIXES = (".out.xbar", ".err")


@dataclass(frozen=True)
class Case:
    """One RUN line: `xbarc opt ARGS > expected` or `xbarc opt ARGS 2> expected`."""

    input: Path
    args: tuple[str, ...]  # after `xbarc`, with %s replaced by the input's file name
    fails: bool  # `2>`: the command must fail, with the expected text on stderr
    expected: Path

    @property
    def name(self) -> str:
        return f"{self.input.parent.name}/{self.expected.name}"


def inputs() -> list[Path]:
    return sorted(
        path
        for path in HERE.glob("*/*.xbar")
        if not any(path.name.endswith(suffix) for suffix in EXPECTED_SUFFIXES)
    )


def read_cases(path: Path) -> list[Case]:
    cases = []
    for line in RUN_LINE.findall(path.read_text()):
        words = shlex.split(line)
        if words[:2] != ["xbarc", "opt"] or len(words) < 4 or words[-2] not in (">", "2>"):
            raise ValueError(f"{path}: a RUN line reads `xbarc opt ... > FILE` or `2> FILE`")
        args = tuple(path.name if word == "%s" else word for word in words[1:-2])
        expected = path.parent / words[-1]
        if not expected.name.endswith(".out.xbar" if words[-2] == ">" else ".err"):
            raise ValueError(f"{path}: `>` writes NAME.out.xbar, `2>` writes NAME.err")
        cases.append(Case(path, args, words[-2] == "2>", expected))
    return cases


CASES = [case for path in inputs() for case in read_cases(path)]


@pytest.fixture(scope="module", autouse=True)
def fresh_inputs() -> None:
    if UPDATE:
        write_inputs()


def run_opt(case: Case, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(case.input.parent)
    status = main(list(case.args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case: Case, capsys, monkeypatch):
    status, out, err = run_opt(case, capsys, monkeypatch)
    produced = err if case.fails else out
    if UPDATE:
        case.expected.write_text(produced)
    if case.fails:
        assert status == EXIT_USER_ERROR, f"expected an error, got status {status}:\n{out}"
        assert out == ""
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    else:
        assert status == 0, err
    assert produced == case.expected.read_text()


def test_cases_cover_every_pass_and_name_distinct_files():
    folders = {case.input.parent.name for case in CASES}
    assert {"quantize", "tile", "allocate", "pipeline"} <= folders
    expected = [case.expected for case in CASES]
    assert len(expected) == len(set(expected)), "two RUN lines write the same file"
    for folder in folders:
        kinds = {case.fails for case in CASES if case.input.parent.name == folder}
        assert kinds == {False, True}, f"{folder}: cases of results and of errors both"


def test_every_expected_file_has_a_run_line():
    named = {case.expected for case in CASES}
    stale = [
        path
        for suffix in EXPECTED_SUFFIXES
        for path in HERE.glob(f"*/*{suffix}")
        if path not in named
    ]
    if UPDATE:
        for path in stale:
            path.unlink()
        return
    assert not stale, f"expected files no RUN line names (XBARC_UPDATE_GOLDEN=1 removes): {stale}"


def test_inputs_are_made_by_make_inputs():
    """Each input's digests and sidecar are what tests/passes/make_inputs.py makes."""
    assert sorted(INPUTS) == [path.relative_to(HERE).as_posix() for path in inputs()]
    for name in INPUTS:
        text, sidecar = made_input(name)
        path = HERE / name
        assert path.read_text() == text, f"{name}: run python -m tests.passes.make_inputs"
        assert Path(f"{path}.npz").read_bytes() == sidecar, f"{name}.npz: run make_inputs"


@pytest.mark.parametrize("name", ["tile/dense_4x4.out.xbar", "tile/offset_squeeze.err"])
def test_a_real_process_prints_the_same(name):
    """The installed entry point behaves as `main` does in-process (output, error, exit)."""
    case = next(case for case in CASES if case.name == name)
    finished = subprocess.run(
        [sys.executable, "-m", "xbarc", *case.args],
        cwd=case.input.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
    )
    assert finished.returncode == (EXIT_USER_ERROR if case.fails else 0), finished.stderr
    produced = finished.stderr if case.fails else finished.stdout
    assert produced == case.expected.read_text()
