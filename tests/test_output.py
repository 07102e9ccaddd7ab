"""What `run`, `compile` and `eval` print: JSON reports, the settings that apply to a
profile, top-k of classifier outputs, the `--compare-mappings` table."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from xbarc.cli import format_top_k, is_classifier, main, top_k
from xbarc.evaluate import settings_lines
from xbarc.runtime.noise import Seeds, noise_settings

DIGITS = Path(__file__).parent / "fixtures" / "digits"
SHAPE = ["--input-shape", "x=1x1x8x8"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """The digits LeNet compiled (dense), the first 12 test images, and its paths."""
    folder = tmp_path_factory.mktemp("digits")
    program = folder / "lenet.xbar"
    assert main(["compile", str(DIGITS / "lenet.onnx"), *SHAPE, "-o", str(program)]) == 0
    data = np.load(DIGITS / "digits_test.npz")
    inputs = folder / "x.npz"
    np.savez(inputs, x=data["x"][:12])
    labelled = folder / "xy.npz"
    np.savez(labelled, x=data["x"][:12], y=data["y"][:12])
    return {"folder": folder, "program": program, "inputs": inputs, "labelled": labelled}


def resolved(profile: str, **changes) -> dict:
    """A shipped profile's fields as a run on an 8-bit chip resolves them."""
    settings = noise_settings(profile, **changes)
    return dataclasses.asdict(
        dataclasses.replace(settings, dac_bits=8, adc_bits=8, adc_range="fixed")
    )


SEEDS = dataclasses.asdict(Seeds(chip=11, time=22, read=33))


def test_ideal_settings_are_one_phrase():
    assert settings_lines(resolved("ideal"), SEEDS, 0) == [
        "  the float model through the tiles: no converters, no device noise"
    ]


def test_quant_settings_are_the_converters_and_no_seed():
    assert settings_lines(resolved("quant"), SEEDS, 0) == [
        "  weights, DAC and ADC quantized as compiled; deterministic",
        "  converters: dac_bits=8 adc_bits=8 input_range=dynamic adc_range=fixed "
        "adc_placement=polarity",
    ]


def test_rram_settings_show_the_device_fields_that_are_on():
    lines = settings_lines(resolved("rram"), SEEDS, 7)
    assert lines[0] == "  quantized as compiled, plus device noise"
    assert lines[1].startswith("  converters: dac_bits=8")
    assert lines[2:] == [
        "  device: programming=rram programming_scale=1.0 p_sa0=0.001 p_sa1=0.001 "
        "read_noise=additive",
        "    read_sigma=0.01 output_noise=0.04",
        "  seed 7 (chip 11, read 33)",  # no drift: nothing is drawn from the time seed
    ]


def test_pcm_settings_show_drift_and_every_seed():
    text = "\n".join(settings_lines(resolved("pcm"), SEEDS, 0))
    assert "drift=pcm t_inference=3600.0 t0=20.0" in text
    assert "drift_compensation=true" in text
    for absent in ("p_sa0", "g_max_spread", "wire_resistance", "drift_nu", "input_noise"):
        assert absent not in text
    assert text.endswith("  seed 0 (chip 11, time 22, read 33)")


def test_device_fields_follow_what_the_models_read():
    settings = resolved(
        "quant",
        programming="relative",
        programming_relative=0.05,
        drift="constant",
        t_inference=0.0,
        wire_resistance=1.5,
    )
    text = " ".join(" ".join(settings_lines(settings, SEEDS, 0)).split())  # unwrapped
    assert "programming=relative" in text and "programming_relative=0.05" in text
    assert "drift_nu=0.0 drift_nu_std=0.0" in text and "wire_resistance=1.5" in text
    assert text.endswith(" seed 0 (chip 11)")  # drift at t = 0 draws nothing
    only_faults = settings_lines(resolved("quant", p_sa1=0.01), SEEDS, 5)
    assert only_faults[-2:] == ["  device: p_sa1=0.01", "  seed 5 (chip 11)"]


def test_run_text_shows_only_what_applies(digits, capsys):
    for profile, present, absent in (
        ("ideal", [], ["dac_bits", "seed", "programming", "ADC:"]),
        ("quant", ["dac_bits=8", "ADC:"], ["seed", "programming", "p_sa0"]),
        ("rram", ["p_sa0=0.001", "seed 3 (chip ", "read "], ["time ", "drift", "t0="]),
    ):
        command = ["run", str(digits["program"]), "--input", str(digits["inputs"])]
        assert main([*command, "--noise", profile, "--seed", "3"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"noise profile {profile}\n")
        for text in present:
            assert text in out, (profile, text)
        for text in absent:
            assert text not in out, (profile, text)


def top_lines(lines: list[str]) -> list[tuple[int, list[int], list[float]]]:
    """(sample, classes, values) from the `sample I: c (v), ...` lines of a text report."""
    rows = []
    for line in lines:
        if not line.startswith("    sample "):
            continue
        head, _, tail = line.strip().partition(": ")
        pairs = [pair.split(" (") for pair in tail.split(", ")]
        rows.append(
            (
                int(head.split()[1]),
                [int(c) for c, _ in pairs],
                [float(v.rstrip(")")) for _, v in pairs],
            )
        )
    return rows


def test_run_prints_the_top_5_classes_of_the_first_samples(digits, capsys):
    written = digits["folder"] / "top.npz"
    command = ["run", str(digits["program"]), "--input", str(digits["inputs"])]
    assert main([*command, "--noise", "quant", "-o", str(written)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  top 5 of 10 classes, the first 5 of 12 samples (class (value)):" in lines
    logits = np.load(written)["logits"]
    rows = top_lines(lines)
    assert [row[0] for row in rows] == [0, 1, 2, 3, 4]
    for sample, classes, values in rows:
        order = np.argsort(-logits[sample], kind="stable")[:5]
        assert classes == order.tolist()
        np.testing.assert_allclose(values, logits[sample][order], rtol=1e-3)


def test_top_k_of_a_few_classes_and_of_nchw_scores():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    found = top_k(scores)
    assert found["k"] == 4 and found["classes"] == 4
    for sample, row in enumerate(found["samples"]):
        assert row["classes"] == np.argsort(-scores[sample, :, 0, 0]).tolist()
        assert row["values"] == scores[sample, row["classes"], 0, 0].tolist()
    assert format_top_k(scores)[0] == "  top 4 of 4 classes, per sample (class (value)):"
    tied = np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 2.0]], dtype=np.float32)
    assert top_k(tied)["samples"][0]["classes"] == [1, 2, 4, 5, 6]  # ties: lower index first


@pytest.mark.parametrize(
    "shape, dtype, expected",
    [
        ((2, 10), np.float32, True),
        ((1, 2), np.float64, True),
        ((2, 10, 1, 1), np.float32, True),
        ((2, 1), np.float32, False),  # one class
        ((2, 10), np.int64, False),  # indices, not scores
        ((2, 10, 2, 2), np.float32, False),  # a feature map
        ((10,), np.float32, False),
        ((0, 10), np.float32, False),
        ((2, 3, 4), np.float32, False),
    ],
)
def test_classifier_shapes(shape, dtype, expected):
    assert is_classifier(np.zeros(shape, dtype=dtype)) is expected


def test_run_json_matches_the_outputs_written(digits, capsys):
    written = digits["folder"] / "y.npz"
    command = ["run", str(digits["program"]), "--input", str(digits["inputs"]), "--json"]
    assert main([*command, "--noise", "rram", "--seed", "4", "-o", str(written)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout is one JSON document, nothing else
    logits = np.load(written)["logits"]
    assert report["profile"] == "rram" and report["seed"] == 4 and report["samples"] == 12
    assert report["output_file"] == str(written)
    seeds = dataclasses.asdict(Seeds.derive(4))
    assert report["seeds"] == {"chip": seeds["chip"], "read": seeds["read"]}
    assert report["settings"]["drift"] == "none" and "drift" not in report["applies"]["device"]
    assert report["applies"]["device"]["p_sa0"] == 0.001
    assert report["applies"]["converters"]["adc_bits"] == 8
    (output,) = report["outputs"]
    assert (output["name"], output["dtype"], output["shape"]) == ("logits", "float32", [12, 10])
    assert output["min"] == pytest.approx(float(logits.min()))
    assert output["max"] == pytest.approx(float(logits.max()))
    assert output["mean"] == pytest.approx(float(logits.mean()), rel=1e-5)
    assert len(output["top_k"]["samples"]) == 12  # every sample, not only the first few
    for sample, row in enumerate(output["top_k"]["samples"]):
        assert row["classes"] == np.argsort(-logits[sample], kind="stable")[:5].tolist()
    layers = [row["layer"] for row in report["adc"]["layers"]]
    assert layers == ["/0/Conv", "/3/Conv", "/7/Gemm", "/9/Gemm"]
    assert "12 samples" in report["adc"]["source"] and report["adc"]["bits"] == 8


def test_run_json_of_ideal_has_no_seed_and_no_adc(digits, capsys):
    command = ["run", str(digits["program"]), "--input", str(digits["inputs"]), "--json"]
    assert main(command) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seed"] is None and report["seeds"] == {} and report["adc"] is None
    assert report["applies"] == {"converters": {}, "device": {}}
    assert report["settings"]["quantized"] is False and report["output_file"] is None


def inspect_json(program: Path, capsys) -> dict:
    assert main(["inspect", str(program), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compile_json_reports_what_was_written(digits, capsys):
    program = digits["folder"] / "squeezed.xbar"
    command = ["compile", str(DIGITS / "lenet_p90.onnx"), *SHAPE, "--tile-size", "32x32"]
    assert main([*command, "--mapping", "squeeze", "-o", str(program), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == {"program": str(program), "tensors": f"{program}.npz"}
    assert program.exists() and Path(f"{program}.npz").exists()
    inspected = inspect_json(program, capsys)
    totals = inspected["totals"]
    for key in ("weights", "blocks", "vtiles", "tiles", "phases", "cell_writes", "cycles"):
        assert report["totals"][key] == totals[key], key
    assert report["totals"]["crossbar_layers"] == len(inspected["layers"])
    assert report["totals"]["mapped_share"] == inspected["mapping"]["mapped_share"]
    by_layer = {layer["name"]: layer for layer in inspected["layers"]}
    assert report["group_cols"]["chosen"] is True
    assert report["group_cols"]["per_layer"] == {
        name: layer["group_cols"] for name, layer in by_layer.items()
    }
    assert [row["layer"] for row in report["weight_error"]["per_layer"]] == list(by_layer)
    for row in report["weight_error"]["per_layer"]:
        assert row["sqnr_db"] == pytest.approx(by_layer[row["layer"]]["weight_error"]["sqnr_db"])
    sqnr = sorted(row["sqnr_db"] for row in report["weight_error"]["per_layer"])
    assert report["weight_error"]["sqnr_median_db"] == pytest.approx(float(np.median(sqnr)))
    assert report["weight_error"]["worst"][0]["sqnr_db"] == sqnr[0]
    assert report["packing"]["mode"] == "layer"
    assert report["packing"]["cycles"] == totals["cycles"]
    assert report["compare_mappings"] is None and report["compare_strategies"] is None
    assert report["fixed_batch"] is None  # the digits programs run any batch


def test_compile_json_names_the_batch_a_model_fixes(tmp_path, capsys):
    from tests.conftest import light_model

    program = tmp_path / "resnet50.xbar"
    model = light_model("resnet50")  # its Reshape fixes the batch (1)
    assert main(["compile", str(model), "--tiles", "128", "-o", str(program), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (graph_input,) = onnx.load(str(model)).graph.input[:1]
    assert report["fixed_batch"] == graph_input.type.tensor_type.shape.dim[0].dim_value == 1


FIGURES = (
    "blocks",
    "vtiles",
    "cells_used",
    "utilization",
    "phases",
    "cell_writes",
    "cycles",
    "conversions",
    "index_entries",
    "energy_uj",
)


@pytest.mark.parametrize(
    "options, differs",
    [
        (
            ["--mapping", "squeeze"],
            ["", "dense blocks", "sparse mapping", "1-bit cells", "no packing"],
        ),
        (
            ["--cell-bits", "1", "--pack", "model"],
            ["", "sparse mapping", "squeezed", "2-bit cells", "no packing"],
        ),
    ],
)
def test_compare_mappings_starts_with_the_written_program(digits, capsys, options, differs):
    program = digits["folder"] / "compared.xbar"
    command = ["compile", str(DIGITS / "lenet_p90.onnx"), *SHAPE, "--tile-size", "32x32"]
    command += [*options, "-o", str(program), "--compare-mappings"]
    assert main([*command, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["compare_mappings"]
    totals = inspect_json(program, capsys)["totals"]
    assert [row["differs"] for row in rows] == differs
    written = rows[0]
    for key in FIGURES:
        assert written[key] == totals[key], key
    mapping = options[1] if options[0] == "--mapping" else "dense"
    cell_bits = 1 if "--cell-bits" in options else 2
    packing = {"squeeze": "layer", "dense": "model"}[mapping]
    assert (written["mapping"], written["cell_bits"], written["packing"]) == (
        mapping,
        cell_bits,
        packing,
    )
    for row in rows[1:]:  # each differs from the written program in what it names only
        changed = {key for key in ("mapping", "cell_bits", "packing") if row[key] != written[key]}
        expected = {
            "dense blocks": {"mapping"},
            "sparse mapping": {"mapping"},
            "squeezed": {"mapping"},
            "1-bit cells": {"cell_bits"},
            "2-bit cells": {"cell_bits"},
            "no packing": {"packing"},
        }[row["differs"]]
        assert changed == expected, row
    # the text table's first row: the same figures as inspect's totals
    assert main(command) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("differs from "))
    first = lines[header + 1].split()
    assert first[0] == "(written)"
    assert [int(first[5]), int(first[6]), int(first[8])] == [
        totals["blocks"],
        totals["vtiles"],
        totals["cells_used"],
    ]
    assert [int(first[10]), int(first[11]), int(first[12])] == [
        totals["phases"],
        totals["cycles"],
        totals["conversions"],
    ]
    assert float(first[14]) == pytest.approx(totals["energy_uj"], abs=5e-4)


def test_compile_json_refuses_printing_the_ir_and_writes_nothing(tmp_path, capsys):
    program = tmp_path / "p.xbar"
    command = ["compile", str(DIGITS / "lenet.onnx"), *SHAPE, "-o", str(program)]
    assert main([*command, "--json", "--print-ir-after-all"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "--print-ir-after-all" in captured.err
    assert "Traceback" not in captured.err and not program.exists()
    assert main([*command, "--compare-mappings", "--pipeline", "quantize,tile,allocate"]) == 1
    assert "builds its own pipelines" in capsys.readouterr().err and not program.exists()


def test_eval_shows_only_what_applies(digits, capsys):
    command = ["eval", str(digits["program"]), "--reference", str(DIGITS / "lenet.onnx")]
    command += ["--data", str(digits["labelled"]), "--labels", "y", "--batch-size", "12"]
    assert main(command) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  the float model through the tiles: no converters, no device noise"
    assert lines[2].startswith("output ")
    assert main([*command, "--noise", "pcm", "--seed", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["settings"]) >= {"p_sa0", "wire_resistance", "dac_bits"}  # everything
    assert set(report["seeds"]) == {"chip", "time", "read"}


# --- output files get 0666 less the umask -------------------------------------------------


def written_modes(folder: Path, digits: dict[str, Path]) -> dict[str, int]:
    """The mode of every file each writer creates anew in `folder`."""
    program = folder / "new.xbar"
    assert main(["compile", str(DIGITS / "lenet.onnx"), *SHAPE, "-o", str(program)]) == 0
    assert main(["opt", str(program), "-o", str(folder / "opt.xbar")]) == 0
    calibrated = folder / "cal.xbar"
    command = ["calibrate", str(program), "--data", str(digits["inputs"])]
    assert main([*command, "-o", str(calibrated)]) == 0
    outputs = folder / "y.npz"
    assert main(["run", str(program), "--input", str(digits["inputs"]), "-o", str(outputs)]) == 0
    files = [program, folder / "opt.xbar", calibrated]
    files = [*files, *(Path(f"{path}.npz") for path in files), outputs]
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_writer_honours_the_umask(digits, tmp_path, capsys, umask, expected):
    old = os.umask(umask)
    try:
        modes = written_modes(tmp_path, digits)
    finally:
        os.umask(old)
    capsys.readouterr()
    assert len(modes) == 7  # three programs, their sidecars, the run's outputs
    assert modes == dict.fromkeys(modes, expected)


# --- start-up: load only what is needed ---------------------------------------------------

HEAVY = ("onnx", "onnxruntime", "numba", "ml_dtypes", "scipy", "tqdm", "matplotlib")
LOADED = """
import sys
from xbarc.cli import main
try:
    sys.exit(main(sys.argv[1:]))
finally:  # also when argparse exits after --help
    heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
    print("LOADED", " ".join(heavy), file=sys.stderr)
"""


def loaded_modules(*arguments: str) -> list[str]:
    """The heavy packages a fresh `xbarc ARGUMENTS` process imports (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{LOADED}", *arguments],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.rsplit("LOADED", 1)[1].split()


def test_inspect_and_compile_help_import_no_onnx_onnxruntime_or_numba(digits):
    assert loaded_modules("inspect", str(digits["program"])) == []
    assert loaded_modules("inspect", str(digits["program"]), "--json") == []
    assert loaded_modules("inspect", str(digits["program"]), "--tiles") == []


def test_help_imports_no_onnx_onnxruntime_or_numba():
    for command in ("compile", "run", "eval", "inspect", "calibrate", "opt"):
        assert loaded_modules(command, "--help") == [], command


def test_onnx_type_codes_are_onnx_s():
    """xbarc.ir.types writes the codes of onnx.proto as numbers (importing onnx is slow)."""
    from onnx import TensorProto

    from xbarc.ir.types import ONNX_DTYPES

    names = {
        "f32": "FLOAT",
        "f16": "FLOAT16",
        "f64": "DOUBLE",
        "bf16": "BFLOAT16",
        "i8": "INT8",
        "i16": "INT16",
        "i32": "INT32",
        "i64": "INT64",
        "u8": "UINT8",
        "u16": "UINT16",
        "u32": "UINT32",
        "u64": "UINT64",
        "bool": "BOOL",
        "str": "STRING",
        "c64": "COMPLEX64",
        "c128": "COMPLEX128",
    }
    assert set(ONNX_DTYPES) == set(names)
    for short, code in ONNX_DTYPES.items():
        assert code == getattr(TensorProto, names[short]), short
