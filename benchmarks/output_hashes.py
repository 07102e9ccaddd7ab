"""Fingerprint the runtime's outputs: a sha256 of every value a fixed set of programs computes.

    python benchmarks/output_hashes.py                       # write output_hashes.json
    python benchmarks/output_hashes.py --check output_hashes.json   # exit 1 on any change

A refactor of the runtime that claims "outputs unchanged" runs this before and after: every
hash must be equal. The programs: the digits fixtures (tests/fixtures/digits) compiled with
the default dense pipeline, bit-sliced (`cell_bits=1`), squeezed (`mapping=squeeze` on a
pruned model), with offset encoding and per-column scales, in several phases (few
`--tiles`); a small model of grouped, padded, strided and transposed convolutions; and one
light onnx model (SqueezeNet). Each runs under `ideal`, `quant` and `rram` seed 3 (plus a
few settings that take other paths: the differential ADC, the dynamic ADC range,
calibrated ranges, `pcm` read noise, a lossless ADC), on fixed inputs. Every value of the
graph is hashed (`Executor.run_all`), and the outputs of `Executor.run` (which lets
digital ops overwrite their inputs) too.

Float results depend on the machine's GEMM kernels, so the hashes are a record of one
machine, compared on that machine; the test suite holds the runtime to its semantics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

SMALL_TILES = {"tile_rows": 32, "tile_cols": 32}
DIGITS_SAMPLES = 48
INPUT_SHAPES = {
    "convolutions": {"x": (3, 4, 9, 9)},
    "squeezenet": {},
}  # the digits models: {"x": (DIGITS_SAMPLES, 1, 8, 8)}

# name -> (model, compile options)
PROGRAMS: dict[str, tuple[str, CompileOptions]] = {
    "mlp dense": ("mlp", CompileOptions()),
    "mlp offset per-column": ("mlp", CompileOptions(encoding="offset", scale="column")),
    "lenet dense": ("lenet", CompileOptions()),
    "lenet bit-sliced": ("lenet", CompileOptions(cell_bits=1)),
    "lenet_p90 squeeze": ("lenet_p90", CompileOptions(mapping="squeeze", **SMALL_TILES)),
    "mlp_p80 sparse": ("mlp_p80", CompileOptions(mapping="sparse", **SMALL_TILES)),
    "resnet phased": ("resnet", CompileOptions(tiles=3)),
    "mobilenet unsliced": ("mobilenet", CompileOptions(cell_bits=8)),
    "convolutions": ("convolutions", CompileOptions(**SMALL_TILES)),
    "squeezenet": ("squeezenet", CompileOptions()),
}

# name -> (profile, settings changes, seed)
RUNS: dict[str, tuple[str, dict, int]] = {
    "ideal": ("ideal", {}, 0),
    "quant": ("quant", {}, 0),
    "rram seed 3": ("rram", {}, 3),
}
# more settings on the digits programs only (they take other paths through the reads)
EXTRA_RUNS: dict[str, tuple[str, dict, int]] = {
    "quant exact ADC": ("quant", {"adc_bits": "exact"}, 0),
    "quant dynamic ADC": ("quant", {"adc_bits": 6, "adc_range": "dynamic"}, 0),
    "rram differential ADC": ("rram", {"adc_placement": "differential"}, 3),
    "pcm seed 5": ("pcm", {}, 5),
}

# grouped, strided, dilated and padded convolutions, a transposed one, a 1-D one, a Gemm
CONVOLUTIONS = """
<ir_version: 8, opset_import: ["" : 17]>
convolutions (float[N,4,9,9] x) => (float[N,5] y)
<float[8,2,3,3] w1, float[8] b1, float[8,1,3,3] w2, float[8,3,3,3] w3, float[3] b3,
 float[6,3,2] w4, float[36,5] w5>
{
  c1 = Conv <group = 2, strides = [2, 1], pads = [1, 2, 0, 1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <group = 8, dilations = [2, 2], pads = [2, 2, 2, 2]> (r1, w2)
  c3 = ConvTranspose <strides = [2, 2], pads = [1, 0, 0, 1], output_padding = [1, 1]>
       (c2, w3, b3)
  p = AveragePool <kernel_shape = [4, 4], strides = [4, 4]> (c3)
  flat = Reshape (p, shape)
  c4 = Conv <strides = [2], pads = [1, 1]> (flat, w4)
  f = Flatten (c4)
  y = MatMul (f, w5)
}
"""


def convolutions_model(folder: Path) -> Path:
    rng = np.random.default_rng(11)
    weights = {
        "w1": (8, 2, 3, 3),
        "b1": (8,),
        "w2": (8, 1, 3, 3),
        "w3": (8, 3, 3, 3),
        "b3": (3,),
        "w4": (6, 3, 2),
        "w5": (36, 5),
    }
    model = onnx.parser.parse_model(CONVOLUTIONS)
    for name, shape in weights.items():
        array = rng.standard_normal(shape).astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([0, 3, -1], np.int64), "shape")
    )
    path = folder / "convolutions.onnx"
    onnx.save(model, path)
    return path


def model_path(name: str, folder: Path) -> Path:
    if name == "convolutions":
        return convolutions_model(folder)
    if name == "squeezenet":
        return LIGHT / "light_squeezenet.onnx"
    return DIGITS / f"{name}.onnx"


def feeds_for(program: Program, model: str) -> dict[str, np.ndarray]:
    if model == "squeezenet":
        return {program.inputs[0].name: random((1, 3, 224, 224), 0)}
    if model == "convolutions":
        return {"x": random(INPUT_SHAPES[model]["x"], 1)}
    return {"x": np.load(DIGITS / "digits_test.npz")["x"][:DIGITS_SAMPLES]}


def random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()


def hashes_of(program: Program, feeds: dict[str, np.ndarray], run: tuple) -> dict[str, str]:
    profile, changes, seed = run
    settings = noise_settings(profile, **changes)
    values = Executor(program, settings, Seeds.derive(seed)).run_all(feeds)
    hashes = {f"value {name}": digest(value) for name, value in values.items()}
    outputs = Executor(program, settings, Seeds.derive(seed)).run(feeds)
    hashes.update({f"output {name}": digest(value) for name, value in outputs.items()})
    return hashes


def compute() -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for program_name, (model, options) in PROGRAMS.items():
            started = time.perf_counter()
            shapes = INPUT_SHAPES.get(model, {"x": (DIGITS_SAMPLES, 1, 8, 8)})
            options = replace(options, input_shapes=shapes)
            program = compile_onnx(model_path(model, Path(folder)), options)
            feeds = feeds_for(program, model)
            runs = dict(RUNS)
            if model not in ("squeezenet", "convolutions"):
                runs.update(EXTRA_RUNS)
            for run_name, run in runs.items():
                if options.encoding == "offset" and "differential" in run_name:
                    continue  # a differential ADC senses differential pairs only
                results[f"{program_name} / {run_name}"] = hashes_of(program, feeds, run)
            if program_name == "lenet dense":  # calibrated converter ranges
                calibrated = calibrate(program, feeds, percentile=99.0)
                changes = {"input_range": "calibrated", "adc_range": "calibrated"}
                for profile, seed in (("quant", 0), ("rram", 3)):
                    key = f"{program_name} / {profile} calibrated"
                    results[key] = hashes_of(calibrated, feeds, (profile, changes, seed))
            print(f"{program_name:<24} {time.perf_counter() - started:6.1f} s", flush=True)
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "output_hashes.json",
        help="where to write the hashes (default benchmarks/output_hashes.json)",
    )
    parser.add_argument("--check", type=Path, help="compare with this file instead")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    results = compute()
    count = sum(len(hashes) for hashes in results.values())
    if args.check is None:
        args.output.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"{count} hashes of {len(results)} runs written to {args.output}")
        return
    expected = json.loads(args.check.read_text())
    changed = [
        f"{run}: {name}"
        for run in sorted(set(expected) | set(results))
        for name in sorted(set(expected.get(run, {})) | set(results.get(run, {})))
        if expected.get(run, {}).get(name) != results.get(run, {}).get(name)
    ]
    for line in changed:
        print(f"changed: {line}")
    print(f"{count} hashes of {len(results)} runs: {len(changed)} differ from {args.check}")
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
