"""XBARC_THREADS: the runtime's threads, for the Numba kernels and the onnxruntime sessions.

`XBARC_THREADS=1` must really run one thread (every thread count the Numba kernels were
given, and the sessions' intra-op threads), and `quant` must give the same bits on one
thread as on two. Runs that set the variable are subprocesses: Numba and onnxruntime keep
their threads for the life of a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xbarc.diagnostics import XbarcError
from xbarc.runtime import kernels

ROOT = Path(__file__).parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"


def test_thread_count_defaults_to_the_cores(monkeypatch):
    monkeypatch.delenv("XBARC_THREADS", raising=False)
    assert kernels.thread_count() == kernels.available_cores() >= 1
    monkeypatch.setenv("XBARC_THREADS", " ")  # blank: as unset
    assert kernels.thread_count() == kernels.available_cores()


@pytest.mark.parametrize("value, expected", [("1", 1), ("2", 2), (" 3 ", 3), ("16", 16)])
def test_thread_count_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv("XBARC_THREADS", value)
    assert kernels.thread_count() == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2x"])
def test_a_bad_thread_count_is_a_user_error(monkeypatch, value):
    monkeypatch.setenv("XBARC_THREADS", value)
    with pytest.raises(XbarcError) as raised:
        kernels.thread_count()
    assert "XBARC_THREADS" in str(raised.value) and repr(value.strip()) in str(raised.value)
    assert "whole number from 1" in raised.value.hint


def test_use_threads_tells_numba_only_when_the_count_changes(monkeypatch):
    numba = kernels.import_numba()
    asked = []
    original = numba.set_num_threads

    def recording(threads):
        asked.append(threads)
        original(threads)

    monkeypatch.setattr(numba, "set_num_threads", recording)
    monkeypatch.setenv("XBARC_THREADS", "2")
    many = min(2, numba.config.NUMBA_NUM_THREADS)
    big = kernels.PARALLEL_WORK
    kernels.forget_threads()
    try:
        for work in (big, big + 5, 10, 0, big):
            kernels.use_threads(work)
            assert numba.get_num_threads() == (1 if work < big else many)
        monkeypatch.setenv("XBARC_THREADS", "1")  # a new count: told again
        kernels.use_threads(big)
        assert numba.get_num_threads() == 1
        kernels.forget_threads()  # after a caller set them itself: told again
        kernels.use_threads(0)
    finally:
        original(numba.config.NUMBA_NUM_THREADS)
        kernels.forget_threads()
    assert asked == [many, 1, many, 1, 1] if many > 1 else asked == [1, 1]


# Runs lenet (the digits fixture) in `quant` and `ideal` and reports, as JSON, every thread
# count the Numba kernels were set to, the intra-op threads of the onnxruntime sessions the
# runs made (the GEMMs' and the ideal chip's), and the quant output's bytes.
PROBE = """
import json, sys
import numpy as np
import numba
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime.kernels import gemm
from xbarc.session import InferenceSession

asked = []
original = numba.set_num_threads
def recording(n):
    asked.append(n)
    original(n)
numba.set_num_threads = recording

digits = sys.argv[1]
x = np.load(digits + "/digits_test.npz")["x"][:200]
options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
program = compile_onnx(digits + "/lenet.onnx", options)
(quant,) = InferenceSession(program, "quant").run(None, {"x": x})
ideal_session = InferenceSession(program, "ideal")
ideal_session.run(None, {"x": x})
ideal = ideal_session._executor._ideal
sessions = [gemm._integer_matmul_session(), gemm._matmul_session("float32")]
sessions += list(ideal._sessions.values())
print(json.dumps({
    "numba_threads": sorted(set(asked)),
    "numba_max": numba.config.NUMBA_NUM_THREADS,
    "session_threads": [s.get_session_options().intra_op_num_threads for s in sessions],
    "quant": quant.tobytes().hex(),
}))
"""


def probe(threads: str) -> dict:
    env = {**os.environ, "XBARC_THREADS": threads, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(DIGITS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_thread_runs_one_thread_and_the_same_bits_as_two():
    one, two = probe("1"), probe("2")
    assert one["numba_threads"] == [1]
    assert one["session_threads"] == [1, 1, 1]
    # two threads where Numba has them (a one-core machine starts Numba with one)
    assert max(two["numba_threads"]) == min(2, two["numba_max"])
    assert two["session_threads"] == [2, 2, 2]
    assert one["quant"] == two["quant"]
    assert np.isfinite(np.frombuffer(bytes.fromhex(one["quant"]), np.float32)).all()


def test_cli_reports_a_bad_thread_count_in_one_line(tmp_path):
    program = tmp_path / "lenet.xbar"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    compiled = subprocess.run(
        [sys.executable, "-m", "xbarc", "compile", str(DIGITS / "lenet.onnx"), "-q"]
        + ["--input-shape", "x=1x1x8x8", "--tiles", "4096", "-o", str(program)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.load(DIGITS / "digits_test.npz")["x"][:4])
    output = tmp_path / "out.npz"
    done = subprocess.run(
        [sys.executable, "-m", "xbarc", "run", str(program), "--input", str(inputs)]
        + ["--noise", "quant", "-q", "-o", str(output)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "XBARC_THREADS": "zero"},
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "XBARC_THREADS='zero'" in lines[0], done.stderr
    assert not output.exists()  # nothing written half-way
