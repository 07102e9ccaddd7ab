"""`xbarc.InferenceSession`, `xbarc run` and `xbarc eval`: results, reports and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import xbarc
from tests.onnx_models import parse, random, run_onnxruntime
from xbarc.cli import main
from xbarc.diagnostics import XbarcError

CLASSIFIER = """
classify (float[4,6] x) => (float p)
{
  h = Gemm (x, w1, b1)
  r = Relu (h)
  logits = Gemm (r, w2, b2)
  p = Softmax <axis = 1> (logits)
}
"""


@pytest.fixture(scope="module")
def model_and_program(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("classifier")
    weights = {"w1": random((6, 16), 1), "b1": random((16,), 2)}
    weights |= {"w2": random((16, 3), 3), "b2": random((3,), 4)}
    model_path = folder / "classifier.onnx"
    onnx.save(parse(CLASSIFIER, weights), model_path)
    program = folder / "classifier.xbar"
    assert main(["compile", str(model_path), "--tiles", "4", "-o", str(program)]) == 0
    return model_path, program


def test_session_runs_like_onnxruntime(model_and_program):
    model_path, program = model_and_program
    session = xbarc.InferenceSession(program)
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert session.get_inputs()[0].shape == [4, 6]
    assert [o.name for o in session.get_outputs()] == ["p"]
    x = random((4, 6), 9)
    (got,) = session.run(None, {"x": x})
    (want,) = run_onnxruntime(onnx.load(model_path), {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    (by_name,) = session.run(["p"], {"x": x})
    np.testing.assert_array_equal(by_name, got)


def test_batch_dimension_may_differ(model_and_program):
    _, program = model_and_program
    session = xbarc.InferenceSession(program)
    (got,) = session.run(None, {"x": random((10, 6), 3)})
    assert got.shape == (10, 3)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"x": np.zeros((4, 6), np.float32), "y": np.zeros(2, np.float32)}, "unknown input 'y'"),
        ({}, "input 'x' is missing"),
        ({"x": np.zeros((4, 5), np.float32)}, "has shape 4x5, the program expects 4x6"),
        ({"x": np.zeros((4, 6), np.float64)}, "is float64, the program expects f32"),
        ({"x": np.full((4, 6), np.nan, np.float32)}, "holds NaN or infinite values"),
    ],
)
def test_bad_feeds_are_refused(model_and_program, feeds, message):
    _, program = model_and_program
    session = xbarc.InferenceSession(program)
    with pytest.raises(XbarcError, match=message.replace("(", r"\(")):
        session.run(None, feeds)


def test_unknown_output_and_profile(model_and_program):
    _, program = model_and_program
    session = xbarc.InferenceSession(program)
    with pytest.raises(XbarcError, match="unknown output 'q'"):
        session.run(["q"], {"x": random((4, 6))})
    with pytest.raises(XbarcError, match="unknown noise profile 'reram'"):
        xbarc.InferenceSession(program, noise="reram")


def test_run_command_writes_outputs(model_and_program, tmp_path, capsys):
    model_path, program = model_and_program
    x = random((4, 6), 5)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=x)
    outputs = tmp_path / "y.npz"
    assert main(["run", str(program), "--input", str(inputs), "-o", str(outputs)]) == 0
    assert "p: float32[4, 3]" in capsys.readouterr().out
    with np.load(outputs) as npz:
        got = npz["p"]
    (want,) = run_onnxruntime(onnx.load(model_path), {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert main(["run", str(program), "--input", str(inputs), "--noise", "quant"]) == 0


def test_eval_reports_errors_agreement_and_accuracy(model_and_program, tmp_path, capsys):
    model_path, program = model_and_program
    data = tmp_path / "data.npz"
    x = random((12, 6), 6)
    (reference,) = run_onnxruntime(onnx.load(model_path), {"x": x[:4]})
    labels = np.random.default_rng(0).integers(0, 3, 12)
    np.savez(data, x=x, y=labels)
    arguments = ["eval", str(program), "--reference", str(model_path), "--data", str(data)]
    assert main([*arguments, "--labels", "y", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 12 and report["batch_size"] == 4
    (row,) = report["outputs"]
    assert row["output"] == "p"
    assert row["relative_error"] < 1e-4
    assert row["snr_db"] == "inf" or row["snr_db"] > 60
    assert row["top1_agreement"] == 1.0
    assert report["accuracy"] == report["reference_accuracy"]
    assert reference.shape == (4, 3)
    assert main([*arguments, "--noise", "quant"]) == 0
    text = capsys.readouterr().out
    assert "noise profile quant" in text and "top-1 agree" in text


@pytest.mark.parametrize(
    "arrays, extra, message",
    [
        ({"image": np.zeros((4, 6), np.float32)}, [], "the data has no array named 'x'"),
        ({"x": np.zeros((4, 6), np.float32)}, ["--labels", "y"], "no array named 'y'"),
        ({"x": np.zeros((4, 6), np.float32)}, ["--batch-size", "0"], "--batch-size"),
    ],
)
def test_eval_bad_input(model_and_program, tmp_path, capsys, arrays, extra, message):
    model_path, program = model_and_program
    data = tmp_path / "data.npz"
    np.savez(data, **arrays)
    status = main(
        ["eval", str(program), "--reference", str(model_path), "--data", str(data), *extra]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_bad_input_files(model_and_program, tmp_path, capsys):
    _, program = model_and_program
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    status = main(["run", str(program), "--input", str(pickled)])
    assert status == 1 and "pickled" in capsys.readouterr().err
    status = main(["run", str(program), "--input", str(tmp_path / "absent.npz")])
    assert status == 1 and "does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    status = main(["run", str(program), "--input", str(corrupt)])
    err = capsys.readouterr().err
    assert status == 1 and "corrupt.npz" in err and "Traceback" not in err


def test_run_program_with_tampered_tensors(model_and_program, tmp_path, capsys):
    _, program = model_and_program
    copy = tmp_path / "copy.xbar"
    copy.write_text(program.read_text())
    sidecar = Path(f"{program}.npz")
    with np.load(sidecar) as npz:
        arrays = {name: npz[name].copy() for name in npz.files}
    arrays["Gemm_0.weight"].flat[0] += 1
    np.savez(Path(f"{copy}.npz"), **arrays)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=random((4, 6)))
    status = main(["run", str(copy), "--input", str(inputs)])
    err = capsys.readouterr().err
    assert status == 1 and "does not match its hash" in err


def test_noise_profiles_from_the_command_line(model_and_program, tmp_path, capsys):
    model_path, program = model_and_program
    data = tmp_path / "data.npz"
    np.savez(data, x=random((8, 6), 7))
    run = ["run", str(program), "--input", str(data), "--noise", "rram", "--seed", "5"]
    outputs = []
    for _ in range(2):
        out = tmp_path / "y.npz"
        assert main([*run, "--set", "adc_bits=6", "-o", str(out)]) == 0
        text = capsys.readouterr().out
        assert "noise profile rram" in text and "adc_bits=6" in text and "p_sa0=0.001" in text
        with np.load(out) as npz:
            outputs.append(npz["p"])
    assert np.array_equal(outputs[0], outputs[1])
    arguments = ["eval", str(program), "--reference", str(model_path), "--data", str(data)]
    assert main([*arguments, "--noise", "pcm", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["noise"] == "pcm" and report["settings"]["drift"] == "pcm"
    assert set(report["seeds"]) == {"chip", "time", "read"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--noise", "reram"], "unknown noise profile 'reram'"),
        (["--noise", "rram", "--set", "p_sa1=2"], "p_sa1 = 2: a probability must be at most 1"),
        (["--noise", "rram", "--set", "read_sigma=-1"], "read_sigma = -1"),
        (["--noise", "quant", "--set", "adc_bits=0"], "adc_bits = 0"),
        (["--noise", "quant", "--set", "colour=red"], "unknown noise field 'colour'"),
    ],
)
def test_bad_noise_options(model_and_program, tmp_path, capsys, extra, message):
    _, program = model_and_program
    data = tmp_path / "data.npz"
    np.savez(data, x=random((4, 6), 7))
    status = main(["run", str(program), "--input", str(data), *extra])
    err = capsys.readouterr().err
    assert status == 1
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_eval_over_chip_instances_and_per_layer_sensitivity(model_and_program, tmp_path, capsys):
    model_path, program = model_and_program
    data = tmp_path / "data.npz"
    np.savez(data, x=random((16, 6), 8), y=np.random.default_rng(1).integers(0, 3, 16))
    arguments = ["eval", str(program), "--reference", str(model_path), "--data", str(data)]
    arguments += ["--labels", "y", "--json", "--seed", "4"]
    assert main([*arguments, "--noise", "quant"]) == 0
    quant = json.loads(capsys.readouterr().out)
    noisy = [*arguments, "--noise", "rram", "--set", "output_noise=0.2", "--seeds", "3"]
    assert main([*noisy, "--sensitivity"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["seed"] for row in report["instances"]] == [4, 5, 6]
    accuracies = [row["accuracy"] for row in report["instances"]]
    summary = report["summary"]["accuracy"]
    assert summary["mean"] == pytest.approx(np.mean(accuracies))
    assert summary["std"] == pytest.approx(np.std(accuracies))
    assert (summary["min"], summary["max"]) == (min(accuracies), max(accuracies))
    assert report["accuracy"] == pytest.approx(summary["mean"])
    # instances differ from each other and from quant; the same command gives the same bits
    errors = [row["relative_error"] for row in report["instances"]]
    assert len(set(errors)) == 3
    assert min(errors) > quant["instances"][0]["relative_error"]
    assert main([*noisy, "--sensitivity"]) == 0
    assert json.loads(capsys.readouterr().out) == report
    rows = report["sensitivity"]
    assert len(rows) == 2  # the two Gemm layers
    for row in rows:  # one noisy layer adds error to quant's
        assert quant["instances"][0]["relative_error"] < row["relative_error"]
    text_arguments = [a for a in noisy if a != "--json"]
    assert main([*text_arguments, "--sensitivity"]) == 0
    text = capsys.readouterr().out
    assert "over 3 chip instances (seeds 4..6" in text
    assert "per-layer sensitivity" in text and "accuracy" in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--noise", "quant", "--sensitivity"], "--sensitivity needs device or read noise"),
    ],
)
def test_eval_bad_instance_options(model_and_program, tmp_path, capsys, extra, message):
    model_path, program = model_and_program
    data = tmp_path / "data.npz"
    np.savez(data, x=random((4, 6), 8))
    status = main(
        ["eval", str(program), "--reference", str(model_path), "--data", str(data), *extra]
    )
    err = capsys.readouterr().err
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1
