"""No internal error on user input (issue 15, deliver 5): every bad option, profile, label
array or reference model is a one-line error naming the option or file (exit 1), and
every valid edge value runs.

Each test names the defect it pins down; each failed on c93bf8d with an internal error
(exit 3), a traceback-worthy crash, a silent wrong answer or a file left in the cwd.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.onnx_models import parse, random, run_onnxruntime
from tests.test_cli import tiny_conv_model
from xbarc.cli import main
from xbarc.diagnostics import XbarcError
from xbarc.runtime import devices
from xbarc.runtime.noise import NoiseSettings, Seeds, load_profile
from xbarc.session import InferenceSession

CLASSIFIER = """
classify (float[N,6] x) => (float p)
{
  h = Gemm (x, w1, b1)
  r = Relu (h)
  logits = Gemm (r, w2, b2)
  p = Softmax <axis = 1> (logits)
}
"""

# a convolution: the quantized runtime unfolds its input into patches per sample
CONV = """
convnet (float[N,1,6,6] x) => (float y)
{
  c = Conv <pads = [1, 1, 1, 1]> (x, w)
  r = Relu (c)
  f = Flatten (r)
  y = Gemm (f, w2)
}
"""


def one_error(capsys, status: int, *needles: str) -> str:
    """The single stderr line of a user error (exit 1) that names each of `needles`."""
    err = capsys.readouterr().err
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("classifier")
    weights = {"w1": random((6, 16), 1), "b1": random((16,), 2)}
    weights |= {"w2": random((16, 3), 3), "b2": random((3,), 4)}
    model = folder / "classifier.onnx"
    onnx.save(parse(CLASSIFIER, weights), model)
    program = folder / "classifier.xbar"
    arguments = ["compile", str(model), "--tiles", "4", "--input-shape", "x=4x6"]
    assert main([*arguments, "-o", str(program)]) == 0
    return model, program


@pytest.fixture(scope="module")
def convnet(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("convnet")
    weights = {"w": random((4, 1, 3, 3), 5), "w2": random((144, 3), 6)}
    model = folder / "convnet.onnx"
    onnx.save(parse(CONV, weights), model)
    program = folder / "convnet.xbar"
    arguments = ["compile", str(model), "--tiles", "8", "--input-shape", "x=1x1x6x6"]
    assert main([*arguments, "-o", str(program)]) == 0
    return model, program


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, x=random((8, 6), 7))
    return path


# --- device model: g_max spread ------------------------------------------------------------


def test_g_max_spread_with_stuck_cells_runs(classifier, data, tmp_path, capsys):
    """Defect: `--set g_max_spread=0.05` with rram crashed (TypeError in devices.program:
    a cell stuck at g_max was given the whole per-device g_max array). A valid spread
    runs, reproducibly, and changes the outputs."""
    _, program = classifier
    outputs = []
    for spread in ("0.05", "0.05", "0"):
        out = tmp_path / f"y{len(outputs)}.npz"
        run = ["run", str(program), "--input", str(data), "--noise", "rram", "--seed", "3"]
        assert main([*run, "--set", f"g_max_spread={spread}", "-o", str(out)]) == 0
        with np.load(out) as npz:
            outputs.append(npz["p"])
    capsys.readouterr()
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_cells_stuck_at_g_max_take_their_own_devices_g_max():
    """A cell stuck at g_max (SA1) conducts its own device's g_max: with a spread, the
    per-cell one."""
    settings = NoiseSettings(p_sa1=0.3, g_max_spread=0.1)
    rng = np.random.default_rng(0)
    shape = (64, 64)
    g_max = devices.device_g_max(settings, shape, 2.5, 25.0, rng)
    stuck = devices.stuck_cells(settings, shape, rng)
    target = devices.target_conductance(np.ones(shape), 3, 2.5, g_max)
    g = devices.program(target, settings, 2.5, g_max, rng, stuck=stuck)
    assert (stuck == 2).any()
    assert np.array_equal(g[stuck == 2], np.asarray(g_max)[stuck == 2])
    assert np.array_equal(g[stuck == 0], target[stuck == 0])  # no programming noise


@pytest.mark.parametrize("spread", ["1", "1.5", "1e300"])
def test_g_max_spread_of_a_whole_g_max_or_more_is_refused(classifier, data, capsys, spread):
    """A relative sigma of 100 % or more leaves no conductance range to speak of (and
    1e300 overflowed to infinite conductances): refused, naming the field."""
    _, program = classifier
    status = main(["run", str(program), "--input", str(data), "--set", f"g_max_spread={spread}"])
    one_error(capsys, status, "g_max_spread", "--set")


@pytest.mark.parametrize(
    "override",
    [
        "programming_scale=1e300",
        "programming_relative=1e300",
        "read_sigma=1e300",
        "input_noise=1e300",
        "output_noise=1e300",
        "wire_resistance=1e300",
        "t_inference=1e300",
        "drift_nu=1e300",
        "input_range=1e308",
    ],
)
def test_absurd_noise_magnitudes_are_refused(classifier, data, capsys, override):
    """Defect: a finite but absurd magnitude overflowed to infinite or NaN conductances and
    reads (NaN outputs or an internal error): each field has a ceiling."""
    _, program = classifier
    status = main(["run", str(program), "--input", str(data), "--noise", "rram", "--set", override])
    one_error(capsys, status, override.split("=")[0], "--set")


# --- empty batches ----------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["ideal", "quant", "rram", "pcm"])
def test_empty_batch_gives_empty_outputs_like_onnxruntime(convnet, noise):
    """Defect: a batch of 0 samples crashed quant/rram/pcm on a convolution (reshape of
    an empty patch matrix); it runs to empty outputs of onnxruntime's shapes."""
    model, program = convnet
    empty = np.zeros((0, 1, 6, 6), np.float32)
    (want,) = run_onnxruntime(onnx.load(model), {"x": empty})
    session = InferenceSession(program, noise=noise, seed=1)
    (got,) = session.run(None, {"x": empty})
    assert got.shape == want.shape == (0, 3) and got.dtype == want.dtype
    # and the empty run draws no noise: the next run is the one a fresh session gives
    x = random((2, 1, 6, 6), 8)
    fresh = InferenceSession(program, noise=noise, seed=1)
    assert np.array_equal(session.run(None, {"x": x})[0], fresh.run(None, {"x": x})[0])


def test_run_command_with_an_empty_batch(convnet, tmp_path, capsys):
    _, program = convnet
    inputs = tmp_path / "empty.npz"
    np.savez(inputs, x=np.zeros((0, 1, 6, 6), np.float32))
    out = tmp_path / "y.npz"
    run = ["run", str(program), "--input", str(inputs), "--noise", "rram", "-o", str(out)]
    assert main(run) == 0, capsys.readouterr().err
    with np.load(out) as npz:
        assert npz["y"].shape == (0, 3)


def test_eval_on_no_samples_is_refused(convnet, tmp_path, capsys):
    """eval over 0 samples has no figures to report (it printed 100 % agreement and an
    infinite SNR): a one-line error naming --data."""
    model, program = convnet
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 6, 6), np.float32))
    status = main(["eval", str(program), "--reference", str(model), "--data", str(empty)])
    one_error(capsys, status, "empty.npz", "no samples")


# --- seeds ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**64), str(10**40)])
def test_seed_out_of_range(classifier, data, capsys, seed):
    """Defect: `--seed -1` was an internal error (numpy's SeedSequence wants a
    non-negative number): seeds are 0 .. 2**64 - 1."""
    _, program = classifier
    status = main(["run", str(program), "--input", str(data), "--noise", "rram", "--seed", seed])
    one_error(capsys, status, "--seed")


def test_seed_range_includes_its_ends(classifier, data, capsys):
    _, program = classifier
    for seed in ("0", str(2**64 - 1)):
        run = ["run", str(program), "--input", str(data), "--noise", "rram", "--seed", seed]
        assert main(run) == 0
    capsys.readouterr()
    assert Seeds.derive(2**64 - 1) != Seeds.derive(0)
    with pytest.raises(XbarcError, match="seed"):
        InferenceSession(program, noise="rram", seed=-1)


def test_eval_seeds_past_the_last_seed(classifier, data, capsys):
    """--seed S --seeds N runs seeds S .. S + N - 1: the last one must be a seed too."""
    model, program = classifier
    arguments = ["eval", str(program), "--reference", str(model), "--data", str(data)]
    status = main([*arguments, "--noise", "rram", "--seed", str(2**64 - 1), "--seeds", "2"])
    one_error(capsys, status, "--seeds")


# --- labels and the reference model ------------------------------------------------------


@pytest.mark.parametrize(
    "labels, needle",
    [
        (np.arange(5) % 3, "5 labels for 8 samples"),
        (np.zeros((8, 3), np.int64), "one label per sample"),
        (np.zeros((8, 1), np.int64), "one label per sample"),
        (np.arange(8) * 0.5, "integer"),
        (np.array(["a"] * 8), "integer"),
        (np.array(3), "one label per sample"),
    ],
)
def test_labels_of_the_wrong_length_dtype_or_rank(classifier, tmp_path, capsys, labels, needle):
    """Defect: labels of another length or rank were an internal error (a broadcast
    failure), and float or string labels were silently compared with the class index."""
    model, program = classifier
    path = tmp_path / "labelled.npz"
    np.savez(path, x=random((8, 6), 7), y=labels)
    arguments = ["eval", str(program), "--reference", str(model), "--data", str(path)]
    status = main([*arguments, "--labels", "y"])
    one_error(capsys, status, "--labels y", needle)


def test_integer_labels_count(classifier, tmp_path, capsys):
    model, program = classifier
    path = tmp_path / "labelled.npz"
    x = random((8, 6), 7)
    (reference,) = run_onnxruntime(onnx.load(model), {"x": x})
    labels = reference.argmax(-1).astype(np.int32)
    labels[:2] = (labels[:2] + 1) % 3  # two wrong
    np.savez(path, x=x, y=labels)
    arguments = ["eval", str(program), "--reference", str(model), "--data", str(path)]
    assert main([*arguments, "--labels", "y", "--json"]) == 0
    assert '"reference_accuracy": 0.75' in capsys.readouterr().out


def other_model(folder: Path, text: str, weights: dict) -> Path:
    path = folder / "other.onnx"
    onnx.save(parse(text, weights), path)
    return path


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            "m (float[N,6] image) => (float p) { p = MatMul (image, w) }",
            "input 'x'",
        ),
        (
            "m (float[N,7] x) => (float p) { p = MatMul (x, w) }",
            "shape",
        ),
        (
            "m (double[N,6] x) => (double p) { p = MatMul (x, w) }",
            "double",
        ),
        (
            "m (float[N,6] x) => (float q) { q = MatMul (x, w) }",
            "output 'p'",
        ),
    ],
)
def test_reference_model_whose_inputs_differ(classifier, data, tmp_path, capsys, text, needle):
    """Defect: a reference model whose inputs or outputs differ from the program's (names,
    shapes, element types) was an internal error from onnxruntime: one line naming both."""
    _, program = classifier
    rows = 7 if "[N,7]" in text else 6
    dtype = np.float64 if "double" in text else np.float32
    reference = other_model(tmp_path, text, {"w": random((rows, 3), 9).astype(dtype)})
    status = main(["eval", str(program), "--reference", str(reference), "--data", str(data)])
    one_error(capsys, status, "other.onnx", needle)


# --- profile files ----------------------------------------------------------------------


def run_with_profile(program: Path, data: Path, profile: str) -> int:
    return main(["run", str(program), "--input", str(data), "--noise", profile])


def test_profile_that_is_a_folder(classifier, data, tmp_path, capsys):
    """Defect: a folder as --noise was an internal error (IsADirectoryError)."""
    _, program = classifier
    folder = tmp_path / "chip.toml"
    folder.mkdir()
    one_error(capsys, run_with_profile(program, data, str(folder)), "chip.toml", "folder")


def test_profile_that_is_a_device(classifier, data, capsys):
    """Defect: /dev/zero as --noise read without end until the machine ran out of memory."""
    _, program = classifier
    one_error(capsys, run_with_profile(program, data, "/dev/zero"), "/dev/zero", "device")


def test_profile_that_is_not_utf8(classifier, data, tmp_path, capsys):
    _, program = classifier
    path = tmp_path / "latin.toml"
    path.write_bytes("# caf\xe9\nquantized = true\n".encode("latin-1"))
    one_error(capsys, run_with_profile(program, data, str(path)), "latin.toml", "UTF-8")


@pytest.mark.parametrize(
    "text",
    ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 5000 + "1" + "}" * 5000],
    ids=["arrays", "inline-tables"],
)
def test_deeply_nested_profile(classifier, data, tmp_path, capsys, text):
    """Defect: deep nesting exhausted tomllib's recursion (RecursionError, exit 3)."""
    _, program = classifier
    path = tmp_path / "deep.toml"
    path.write_text(text)
    one_error(capsys, run_with_profile(program, data, str(path)), "deep.toml", "nested")


def write_chain(folder: Path, length: int) -> Path:
    """p0.toml based on p1.toml ... based on rram."""
    for index in range(length):
        base = f"p{index + 1}.toml" if index + 1 < length else "rram"
        (folder / f"p{index}.toml").write_text(f'base = "{base}"\n')
    return folder / "p0.toml"


def test_long_base_chain(classifier, data, tmp_path, capsys):
    """A chain of bases is followed up to 32 profiles deep (a longer one is refused, not
    followed until Python's recursion gives out)."""
    _, program = classifier
    assert run_with_profile(program, data, str(write_chain(tmp_path, 32))) == 0
    capsys.readouterr()
    deep = tmp_path / "deep"
    deep.mkdir()
    status = run_with_profile(program, data, str(write_chain(deep, 500)))
    one_error(capsys, status, "p32.toml", "32")


def test_cyclic_base_chain_spelled_differently(classifier, data, tmp_path, capsys):
    """A cycle through two spellings of the same file (`./a.toml`, `a.toml`, a symlink)
    is a cycle."""
    _, program = classifier
    (tmp_path / "a.toml").write_text('base = "./b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "link.toml"\n')
    (tmp_path / "link.toml").symlink_to(tmp_path / "a.toml")
    status = run_with_profile(program, data, str(tmp_path / "a.toml"))
    one_error(capsys, status, "cycle")


def test_relative_base_resolves_against_the_profiles_folder(tmp_path, monkeypatch):
    """Defect: `base = "common.toml"` was looked up in the current folder, not beside the
    profile that names it."""
    chips = tmp_path / "chips"
    (chips / "common").mkdir(parents=True)
    (chips / "common" / "base.toml").write_text('base = "rram"\nadc_bits = 5\n')
    (chips / "mine.toml").write_text('base = "common/base.toml"\np_sa0 = 0.01\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "common").mkdir()  # a decoy where the cwd would find it
    (elsewhere / "common" / "base.toml").write_text("adc_bits = 3\n")
    monkeypatch.chdir(elsewhere)
    settings = load_profile(chips / "mine.toml")
    assert (settings.adc_bits, settings.p_sa0, settings.programming) == (5, 0.01, "rram")


def test_missing_base_names_the_profile_and_the_path(tmp_path):
    (tmp_path / "mine.toml").write_text('base = "absent.toml"\n')
    with pytest.raises(XbarcError) as caught:
        load_profile(tmp_path / "mine.toml")
    text = str(caught.value)
    assert "mine.toml" in text and str(tmp_path / "absent.toml") in text


# --- --set ------------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["a=1\nb=2", "adc_bits=6\np_sa0=0.5", "adc_bits=6\r"])
def test_set_with_a_newline(classifier, data, capsys, override):
    """Defect: a newline inside --set printed a two-line error, or (`adc_bits=6\\np_sa0=0.5`)
    silently dropped the second line."""
    _, program = classifier
    status = main(["run", str(program), "--input", str(data), "--set", override])
    line = one_error(capsys, status, "--set")
    assert "\\n" in line or "\\r" in line  # shown escaped, on one line


@pytest.mark.parametrize(
    "override",
    ["adc_bits=[6]", "x.y=1", "adc_bits=" + "[" * 3000, "p={" + "a." * 30000 + "a=1}"],
    ids=["array", "dotted-field", "deep-array", "long-dotted-key"],
)
def test_set_values_that_are_not_one_value(classifier, data, capsys, override):
    """A value nested deeply (tomllib's recursion) or with a long dotted key (its
    quadratic time and memory) is refused before it is parsed."""
    _, program = classifier
    status = main(["run", str(program), "--input", str(data), "--set", override])
    one_error(capsys, status, "--set")


# --- option parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--tile-size", "²x²"], "--tile-size"),
        (["--tile-size", "١٢٨x١٢٨"], "--tile-size"),
        (["--tile-size", "0x128"], "--tile-size"),
        (["--tile-size", "16385x16"], "--tile-size"),
        (["--tile-size", "8192x8192"], "--tile-size"),
        (["--tile-size", "1" + "0" * 5000 + "x1"], "--tile-size"),
        (["--tiles", "1000000000000"], "--tiles"),
        (["--input-shape", "x=²x6"], "--input-shape"),
        (["--input-shape", "x=1x0"], "--input-shape"),
        (["--input-shape", "x=1x99999999999999"], "--input-shape"),
        (["--input-shape", "x=" + "x".join(["1"] * 100)], "--input-shape"),
        (["--strategy", "basis", "--segment-rows", "1000000000000"], "--segment-rows"),
        (
            ["--input-shape", "x=4x6", "--strategy", "basis", "--basis-copies", "10000000000"],
            "--basis-copies",
        ),
    ],
)
def test_compile_option_edge_values(classifier, tmp_path, capsys, extra, needle):
    """Defect: superscript digits passed str.isdigit and crashed int() (exit 3); a
    trillion tiles or an absurd tile size ran out of memory (MemoryError, exit 3)."""
    model, _ = classifier
    status = main(["compile", str(model), "-o", str(tmp_path / "p.xbar"), *extra])
    one_error(capsys, status, needle)
    assert not list(tmp_path.iterdir())  # nothing written


def test_inspect_tile_with_unicode_digits(classifier, capsys):
    _, program = classifier
    one_error(capsys, main(["inspect", str(program), "--tile", "v²"]), "--tile")
    one_error(capsys, main(["inspect", str(program), "--tile", "v99999"]), "v99999")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--samples", "0"], "--samples"),
        (["--samples", "-3"], "--samples"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--percentile", "0"], "--percentile"),
        (["--percentile", "101"], "--percentile"),
        (["--percentile", "nan"], "--percentile"),
    ],
)
def test_calibrate_option_edge_values(classifier, data, tmp_path, capsys, extra, needle):
    _, program = classifier
    out = tmp_path / "calibrated.xbar"
    status = main(["calibrate", str(program), "--data", str(data), "-o", str(out), *extra])
    one_error(capsys, status, needle)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--batch-size", "-1"], "--batch-size"),
        (["--seeds", "-2"], "--seeds"),
        (["--seeds", "1000000000000", "--noise", "rram"], "--seeds"),
    ],
)
def test_eval_option_edge_values(classifier, data, capsys, extra, needle):
    model, program = classifier
    arguments = ["eval", str(program), "--reference", str(model), "--data", str(data)]
    one_error(capsys, main([*arguments, *extra]), needle)


# --- onnxruntime's int8 quantization leaves the working folder alone ------------------------

# two batch dimensions that onnxruntime's symbolic shape inference cannot merge: it gives
# up and saves its model (sym_shape_infer_temp.onnx and a <uuid>.data file of its
# tensors) into the current folder
UNMERGEABLE = """
m (float[N,64] x, float[M,64] z) => (float y)
{
  h = MatMul (x, w)
  y = Add (h, z)
}
"""


def test_ort_int8_writes_nothing_into_the_working_folder(tmp_path, monkeypatch, capsys):
    """Defect: `eval --ort-int8` (onnxruntime's failed symbolic shape inference inside
    quant_pre_process) wrote `sym_shape_infer_temp.onnx` and a 3 MB `<uuid>.data` into the
    working folder (one was committed to the repository)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    model = folder / "m.onnx"
    onnx.save(parse(UNMERGEABLE, {"w": random((64, 64), 1)}), model)
    program = folder / "m.xbar"
    shapes = ["--input-shape", "x=1x64", "--input-shape", "z=1x64"]
    assert main(["compile", str(model), "--tiles", "4", *shapes, "-o", str(program)]) == 0
    data = folder / "data.npz"
    np.savez(data, x=random((4, 64), 2), z=random((4, 64), 3))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    arguments = ["eval", str(program), "--reference", str(model), "--data", str(data)]
    assert main([*arguments, "--ort-int8"]) == 0, capsys.readouterr().err
    assert "onnxruntime int8" in capsys.readouterr().out
    assert os.listdir(work) == []


# --- converter bits the runtime's int64 sums cannot hold ------------------------------------


def test_converter_bits_that_overflow_the_accumulator(tmp_path, capsys):
    """Request of verify: `--set adc_bits=24 --set dac_bits=24` with 8-bit weights over
    300 rows needs 24 + 24 + 8 + 9 = 65 bits of exact sum, more than int64 holds: refused
    in one line naming both fields (the verifier refuses the same in a program's own
    hardware); 16 + 16 bits (57) run."""
    model = tmp_path / "wide.onnx"
    onnx.save(
        parse("m (float[N,300] x) => (float y) { y = MatMul (x, w) }", {"w": random((300, 2), 1)}),
        model,
    )
    program = tmp_path / "wide.xbar"
    arguments = ["compile", str(model), "--tiles", "8", "--input-shape", "x=1x300"]
    assert main([*arguments, "-o", str(program)]) == 0
    data = tmp_path / "x.npz"
    np.savez(data, x=random((2, 300), 2))
    run = ["run", str(program), "--input", str(data), "--noise", "quant"]
    status = main([*run, "--set", "adc_bits=24", "--set", "dac_bits=24"])
    one_error(capsys, status, "adc_bits = 24", "dac_bits = 24", "65-bit")
    assert main([*run, "--set", "adc_bits=16", "--set", "dac_bits=16"]) == 0


def test_basis_segment_rows_longer_than_the_chip_through_a_pipeline(tmp_path, capsys) -> None:
    """Issue 15 finding: `basis{segment-rows=10**12}` in a --pipeline (the CLI option is
    capped, the pass option was not) ended in a MemoryError (exit 3)."""
    model = tmp_path / "m.onnx"
    onnx.save(tiny_conv_model(), model)
    pipeline = "quantize,basis{segment-rows=1000000000000},tile,allocate"
    argv = ["compile", str(model), "--tiles", "8", "-o", str(tmp_path / "o.xbar")]
    assert main([*argv, "--pipeline", pipeline]) == 1
    err = capsys.readouterr().err
    assert "segment-rows" in err and "at most" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.xbar").exists()
