"""Calibrate NAX's error proxy against the runtime's simulation, layer by layer.

    python benchmarks/nax_calibration.py [--samples 100] [--seeds 3] [--record]

For each trained digits fixture (tests/fixtures/digits) compiled at each uniform tile
size (32x32 .. 256x256), every crossbar layer is run on its own input (the float model's,
from an `ideal` run) three ways: `quant` with a lossless ADC (the reference), `quant`
(the fixed 8-bit ADC: the proxy's ADC term) and `quant` plus the rram profile's read and
output noise (the proxy's noise term; programming noise and stuck cells are left out:
they do not depend on the tile size, which is all the proxy is asked to rank). Each
measured noise-to-signal ratio (mean squared error over the reference's mean square) is
set beside the proxy's term for the same layer and size (`passes/naxsel/proxy.py`,
gains 1), and each gain is fitted as the geometric mean of measured / proxy. How well
the proxy tracks the simulation is the correlation of log proxy and log measurement over
all (layer, size) points, and per fixture whether the proxy ranks the sizes' summed
errors in the simulation's order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import record_if  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402
from xbarc.passes.naxsel.proxy import NoiseNumbers, error_shape, error_terms  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, load_profile  # noqa: E402

DIGITS = ROOT / "tests" / "fixtures" / "digits"
FIXTURES = ("resnet", "lenet", "mlp", "mobilenet")
SIZES = (32, 64, 128, 256)
NOISE_ONLY = ("programming=none", "p_sa0=0", "p_sa1=0")  # rram's read and output noise


def compile_uniform(model: Path, size: int) -> Program:
    options = CompileOptions(
        tiles=4096, tile_rows=size, tile_cols=size, input_shapes={"x": (1, 1, 8, 8)}
    )
    return compile_onnx(model, options)


def nsr(measured: np.ndarray, reference: np.ndarray) -> float:
    power = float(np.mean(np.square(reference, dtype=np.float64)))
    error = float(np.mean(np.square(measured.astype(np.float64) - reference)))
    return error / power if power else 0.0


def layer_points(program: Program, x: np.ndarray, seeds: int, numbers: NoiseNumbers) -> list[dict]:
    """Per crossbar layer: measured ADC and noise NSRs and the proxy's terms."""
    ideal = Executor(program, load_profile("ideal"))
    values = ideal.run_all({"x": x})
    exact = Executor(program, load_profile("quant", ["adc_bits=exact"]))
    adc = Executor(program, load_profile("quant"))
    noisy = [
        Executor(program, load_profile("rram", NOISE_ONLY), Seeds.derive(seed))
        for seed in range(seeds)
    ]
    points = []
    for layer in program.layers():
        source = values[layer.input]
        reference = exact.run_layer(layer, source).astype(np.float64)
        bias = 0.0
        if layer.bias is not None:  # the proxy weighs the crossbar sum, not the bias
            shape = [1] * reference.ndim
            shape[1 if layer.kind in ("conv", "conv_transpose") else -1] = -1
            bias = np.asarray(program.store[layer.bias], dtype=np.float64).reshape(shape)
        centred = reference - bias
        quantized = adc.run_layer(layer, source)
        measured_noise = (
            np.mean(
                [nsr(n.run_layer(layer, source) - quantized + reference, reference) for n in noisy]
            )
            * np.mean(np.square(reference))
            / max(np.mean(np.square(centred)), 1e-30)
        )
        array = program.weights_of(layer.name)
        assert array is not None
        tile_type = program.hardware.tile_types[0]
        terms = error_terms(error_shape(program, array), program.hardware, tile_type, numbers)
        points.append(
            {
                "layer": layer.name,
                "rows": layer.rows,
                "adc": nsr(quantized - bias, centred),
                "noise": float(measured_noise),
                "proxy_adc": terms.adc,
                "proxy_noise": terms.noise,
            }
        )
    return points


def gain(measured: list[float], proxy: list[float]) -> float:
    pairs = [(m, p) for m, p in zip(measured, proxy, strict=True) if m > 0 and p > 0]
    return float(np.exp(np.mean([np.log(m / p) for m, p in pairs]))) if pairs else 1.0


def log_correlation(measured: list[float], proxy: list[float]) -> float:
    pairs = np.array([(m, p) for m, p in zip(measured, proxy, strict=True) if m > 0 and p > 0])
    if len(pairs) < 3:
        return float("nan")
    return float(np.corrcoef(np.log(pairs[:, 0]), np.log(pairs[:, 1]))[0, 1])


def within_layers(rows: list[dict], measured, proxy) -> float:
    """The correlation of log measurement and log proxy once each layer's mean over the
    tile sizes is taken out: how well the proxy tracks what the tile size changes."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for row in rows:
        m, p = measured(row), proxy(row)
        if m > 0 and p > 0:
            groups.setdefault((row["fixture"], row["layer"]), []).append((np.log(m), np.log(p)))
    xs, ys = [], []
    for pairs in groups.values():
        if len(pairs) < 2:
            continue
        values = np.array(pairs)
        values -= values.mean(axis=0)
        xs += list(values[:, 0])
        ys += list(values[:, 1])
    if np.std(xs) == 0 or np.std(ys) == 0:
        return float("nan")
    return float(np.corrcoef(xs, ys)[0, 1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="test digits per layer run")
    parser.add_argument("--seeds", type=int, default=3, help="read-noise seeds per point")
    parser.add_argument(
        "--fixtures", nargs="*", default=list(FIXTURES), help="the digits fixtures measured"
    )
    parser.add_argument(
        "--density",
        type=float,
        default=NoiseNumbers().input_density,
        help="the proxy's input-density (the share of input bits that are one)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    numbers = NoiseNumbers(input_density=args.density)
    x = np.load(DIGITS / "digits_test.npz")["x"][: args.samples]
    rows = []
    for fixture in args.fixtures:
        for size in SIZES:
            program = compile_uniform(DIGITS / f"{fixture}.onnx", size)
            for point in layer_points(program, x, args.seeds, numbers):
                rows.append({"fixture": fixture, "size": size, **point})
            print(f"{fixture} {size}x{size}: {len(rows)} points", flush=True)
    adc_gain = gain([r["adc"] for r in rows], [r["proxy_adc"] for r in rows])
    noise_gain = gain([r["noise"] for r in rows], [r["proxy_noise"] for r in rows])
    adc_r = log_correlation([r["adc"] for r in rows], [r["proxy_adc"] for r in rows])
    noise_r = log_correlation([r["noise"] for r in rows], [r["proxy_noise"] for r in rows])
    total = [r["adc"] + r["noise"] for r in rows]
    fitted = [adc_gain * r["proxy_adc"] + noise_gain * r["proxy_noise"] for r in rows]
    total_r = log_correlation(total, fitted)
    adc_w = within_layers(rows, lambda r: r["adc"], lambda r: r["proxy_adc"])
    noise_w = within_layers(rows, lambda r: r["noise"], lambda r: r["proxy_noise"])
    total_w = within_layers(
        rows,
        lambda r: r["adc"] + r["noise"],
        lambda r: adc_gain * r["proxy_adc"] + noise_gain * r["proxy_noise"],
    )
    lines = [
        "## NAX error proxy against the simulation (`benchmarks/nax_calibration.py`)",
        "",
        f"Per crossbar layer of the digits fixtures ({', '.join(args.fixtures)}) at uniform "
        f"tile sizes {', '.join(f'{s}x{s}' for s in SIZES)}: the noise-to-signal ratio of the "
        f"layer's crossbar sum measured on {args.samples} test digits (the layer fed the float "
        f"model's input), against the proxy's term. ADC: `quant` (8-bit fixed range) against "
        f"a lossless ADC; noise: the rram profile's read and output noise (mean over "
        f"{args.seeds} read seeds; programming noise and stuck cells, which do not depend on "
        "the tile size, left out). Gains are the geometric means of measured / proxy; "
        "r is the correlation of log proxy (with its gain) and log measurement over all "
        f"{len(rows)} (layer, size) points; r within layers the same once each layer's "
        "mean over the sizes is taken out (how well the proxy follows what the tile size "
        f"changes, which is what NAX weighs). Proxy input-density {args.density:g}.",
        "",
        "| term | fitted gain | r (log-log) | r within layers |",
        "|---|---:|---:|---:|",
        f"| ADC (fixed range) | {adc_gain:.3g} | {adc_r:.3f} | {adc_w:.3f} |",
        f"| read + output noise | {noise_gain:.3g} | {noise_r:.3f} | {noise_w:.3f} |",
        f"| sum | - | {total_r:.3f} | {total_w:.3f} |",
        "",
        "Summed over each program's layers, measured (proxy with the gains):",
        "",
        "| fixture | " + " | ".join(f"{s}x{s}" for s in SIZES) + " | most accurate |",
        "|---|" + "---:|" * len(SIZES) + ":---:|",
    ]
    for fixture in args.fixtures:
        measured, predicted = [], []
        for size in SIZES:
            points = [r for r in rows if r["fixture"] == fixture and r["size"] == size]
            measured.append(sum(r["adc"] + r["noise"] for r in points))
            predicted.append(
                sum(adc_gain * r["proxy_adc"] + noise_gain * r["proxy_noise"] for r in points)
            )
        cells = [f"{m:.2e} ({p:.2e})" for m, p in zip(measured, predicted, strict=True)]
        best = f"{SIZES[int(np.argmin(measured))]} ({SIZES[int(np.argmin(predicted))]})"
        lines.append(f"| {fixture} | " + " | ".join(cells) + f" | {best} |")
    lines += [
        "",
        f"The nax pass's defaults carry these gains, rounded (adc-gain {adc_gain:.2g}, "
        f"noise-gain {noise_gain:.2g}).",
    ]
    body = "\n".join(lines)
    print(body)
    record_if(args.record, "nax calibration", body)


if __name__ == "__main__":
    main()
