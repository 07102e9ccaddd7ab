"""Batch sizes and sample counts of `xbarc eval` and `xbarc calibrate`: `--samples`, the
automatic batch size (xbarc/batching.py) and that neither changes the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from xbarc.cli import main

DIGITS = Path(__file__).parent / "fixtures" / "digits"
DATA = DIGITS / "digits_test.npz"


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> Path:
    """The trained digits LeNet compiled for batch 1 (its batch dim is symbolic)."""
    program = tmp_path_factory.mktemp("lenet") / "lenet.xbar"
    arguments = ["compile", str(DIGITS / "lenet.onnx"), "--input-shape", "x=1x1x8x8"]
    assert main([*arguments, "-o", str(program)]) == 0
    return program


def eval_json(capsys, program: Path, data: Path, *extra: str) -> dict:
    arguments = ["eval", str(program), "--reference", str(DIGITS / "lenet.onnx")]
    assert main([*arguments, "--data", str(data), "--labels", "y", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def reference_accuracy(count: int) -> float:
    """onnxruntime's accuracy of the float LeNet on the first `count` held-out samples."""
    with np.load(DATA) as npz:
        x, y = npz["x"][:count], npz["y"][:count]
    session = onnxruntime.InferenceSession(
        str(DIGITS / "lenet.onnx"), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {"x": x})
    return float(np.mean(logits.argmax(-1) == y))


# --- eval --samples ------------------------------------------------------------------------


def test_eval_samples_uses_the_first_samples(lenet, tmp_path, capsys):
    """--samples 40 reports on the first 40 samples: the same figures as a data file that
    holds only them, and the reference accuracy onnxruntime gives on them."""
    with np.load(DATA) as npz:
        first = tmp_path / "first40.npz"
        np.savez(first, x=npz["x"][:40], y=npz["y"][:40])
    cut = eval_json(capsys, lenet, DATA, "--samples", "40", "--noise", "quant")
    whole = eval_json(capsys, lenet, first, "--noise", "quant")
    assert cut["samples"] == 40
    assert cut["outputs"] == whole["outputs"]
    assert cut["accuracy"] == whole["accuracy"]
    assert cut["reference_accuracy"] == reference_accuracy(40)
    # more samples than the data holds: all of them, as calibrate --samples does
    assert eval_json(capsys, lenet, first, "--samples", "1000")["samples"] == 40


@pytest.mark.parametrize("value", ["0", "-3"])
def test_eval_samples_must_be_positive(lenet, capsys, value):
    arguments = ["eval", str(lenet), "--reference", str(DIGITS / "lenet.onnx")]
    assert main([*arguments, "--data", str(DATA), "--samples", value]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert "--samples must be at least 1" in line and "Traceback" not in captured.err
