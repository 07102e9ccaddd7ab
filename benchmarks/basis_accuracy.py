"""BasisN's accuracy on the trained digits fixtures: basis (weight-only and data-aware fit)
against reprogramming, at a quarter of the tiles the dense mapping needs.

    python benchmarks/basis_accuracy.py [--seeds 5] [--models lenet,resnet,mobilenet]
                                        [--tile 128] [--record]

For each fixture: the dense mapping's virtual tiles D at the tile size; the budget is
max(1, D // 4) tiles. Three programs at that budget:
- reprogram: today's pipeline (phases rewrite tiles);
- basis, weights: `basis{}` with the default options (fit=svd, K as many as fit, q = 8);
- basis, outputs: the same with the data-aware fit on calibration activations
  (`--calibration-data`, objective=outputs).
Accuracy is measured on the held-out digits (tests/fixtures/digits/digits_test.npz) in
`quant` and in `rram` (mean +- std over --seeds chip seeds). The first CALIBRATION
samples calibrate the data-aware fit and are left out of every accuracy, so no program
is scored on the samples it was fitted to.

The weight reconstruction table needs no runtime: the relative weight error
||W - W_hat|| / ||W|| over all crossbar layers of each fixture, and the relative output
error on the calibration activations, against K and q (svd basis, 8-bit basis cells).

`benchmarks/basis.py` (the cost half) calls `accuracy_rows`, `reconstruction_rows` and
`accuracy_against_k`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402

from xbarc.basis_data import input_grams, with_input_grams  # noqa: E402
from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402
from xbarc.passes.basisn import fit  # noqa: E402
from xbarc.passes.manager import parse_pipeline, run_pipeline  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "digits"
CNN_MODELS = ("lenet", "resnet", "mobilenet")
CALIBRATION = 120  # the first samples of the test split: calibration only, never scored
WEIGHT_BITS, CELL_BITS = 8, 2
KS = (4, 8, 16, 32, 64, 128)
SWEPT_KS = (16, 32, 64)  # the accuracy sweep against K (the reconstruction one takes KS)
QS = (2, 3, 4, 6, 8)
INPUT_SHAPE = {"x": (1, 1, 8, 8)}


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration images, scored images, their labels)."""
    with np.load(FIXTURES / "digits_test.npz", allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
    return x[:CALIBRATION], x[CALIBRATION:], y[CALIBRATION:]


def graph_program(model: str, tiles: int, tile: int) -> Program:
    options = CompileOptions(tiles=tiles, tile_rows=tile, tile_cols=tile, input_shapes=INPUT_SHAPE)
    return compile_onnx(FIXTURES / f"{model}.onnx", options, emit="graph")


def dense_tiles(model: str, tile: int) -> int:
    """Virtual tiles of the dense mapping (the tiles a one-phase program needs)."""
    options = CompileOptions(
        tiles=1 << 16, tile_rows=tile, tile_cols=tile, input_shapes=INPUT_SHAPE
    )
    return compile_onnx(FIXTURES / f"{model}.onnx", options).vtile_count


def quarter_budget(model: str, tile: int) -> int:
    return max(1, dense_tiles(model, tile) // 4)


def quantize_spec() -> str:
    return f"quantize{{weight-bits={WEIGHT_BITS},cell-bits={CELL_BITS}}}"


def reprogram_program(model: str, tiles: int, tile: int) -> Program:
    pipeline = f"{quantize_spec()},tile{{rows={tile},cols={tile}}},allocate{{tiles={tiles}}}"
    return run_pipeline(graph_program(model, tiles, tile), parse_pipeline(pipeline))


def basis_program(
    model: str,
    tiles: int,
    tile: int,
    calibration: np.ndarray | None = None,
    **options: object,
) -> Program:
    """The fixture compiled with `basis{options}` (kebab-case keys given with _); with
    `calibration` images, the data-aware fit (objective=outputs) on them."""
    program = graph_program(model, tiles, tile)
    settings = dict(options)
    if calibration is not None:
        program = with_input_grams(program, {"x": calibration}, samples=len(calibration))
        settings["objective"] = "outputs"
    basis = ",".join(f"{key.replace('_', '-')}={value}" for key, value in settings.items())
    pipeline = (
        f"{quantize_spec()},basis{{{basis}}},tile{{rows={tile},cols={tile}}},"
        f"allocate{{tiles={tiles}}}"
    )
    return run_pipeline(program, parse_pipeline(pipeline))


def accuracy(
    program: Program, profile: str, seed: int, x: np.ndarray, y: np.ndarray, **changes: object
) -> float:
    name = program.inputs[0].name
    settings = noise_settings(profile, **changes)
    logits = Executor(program, settings, Seeds.derive(seed)).run({name: x})
    (values,) = logits.values()
    return float((values.reshape(len(y), -1).argmax(-1) == y).mean())


def scores(program: Program, seeds: int, x: np.ndarray, y: np.ndarray) -> dict:
    """quant accuracy, and rram mean and std over `seeds` chip seeds."""
    noisy = [accuracy(program, "rram", seed, x, y) for seed in range(seeds)]
    return {
        "quant": accuracy(program, "quant", 0, x, y),
        "rram_mean": float(np.mean(noisy)),
        "rram_std": float(np.std(noisy)),
    }


def describe(program: Program) -> dict:
    """K, copies and phases of a compiled program (K and copies 0 without a basis)."""
    basis = next((a for a in program.arrays if a.kind == "basis"), None)
    return {
        "k": basis.cols if basis is not None else 0,
        "copies": getattr(basis, "copies", 1) if basis is not None else 0,
        "phases": len(program.phases),
    }


def accuracy_rows(models=CNN_MODELS, tile: int = 128, seeds: int = 5, log=print) -> list[dict]:
    """Per fixture, at a quarter of its dense tiles: reprogram, basis (weights) and basis
    (outputs), each with quant and rram accuracy."""
    calibration, x, y = load_split()
    rows = []
    for model in models:
        tiles = quarter_budget(model, tile)
        variants = {
            "reprogram": lambda m=model, t=tiles: reprogram_program(m, t, tile),
            "basis, weights": lambda m=model, t=tiles: basis_program(m, t, tile),
            "basis, outputs": lambda m=model, t=tiles: basis_program(m, t, tile, calibration),
        }
        for label, build in variants.items():
            started = time.perf_counter()
            program = build()
            row = {"model": model, "tiles": tiles, "program": label, **describe(program)}
            row.update(scores(program, seeds, x, y))
            rows.append(row)
            log(
                f"{model:<10} {tiles:>4} tiles  {label:<15} K={row['k']:<4} "
                f"quant {row['quant']:7.2%}  rram {row['rram_mean']:7.2%} +- "
                f"{row['rram_std']:5.2%}  ({time.perf_counter() - started:.1f} s)"
            )
    return rows


def accuracy_against_k(model: str, tile: int, ks=KS, seeds: int = 5, log=print) -> list[dict]:
    """Accuracy of the basis program against K at a quarter of the dense tiles (copies:
    as many as fit), weight-only and data-aware fits: quant, quant with converter ranges
    calibrated on the calibration images (`xbarc calibrate`), and rram."""
    calibration, x, y = load_split()
    tiles = quarter_budget(model, tile)
    rows = []
    for k in (k for k in ks if k <= tile):
        for label, data in (("weights", None), ("outputs", calibration)):
            program = basis_program(model, tiles, tile, data, k=k)
            calibrated = calibrate(program, {"x": calibration})
            quant_calibrated = accuracy(
                calibrated, "quant", 0, x, y, input_range="calibrated", adc_range="calibrated"
            )
            row = {"model": model, "k": k, "fit": label, "quant_calibrated": quant_calibrated}
            row.update(scores(program, seeds, x, y))
            rows.append(row)
            log(
                f"{model:<10} K={k:<4} {label:<8} quant {row['quant']:7.2%}  calibrated "
                f"{quant_calibrated:7.2%}  rram {row['rram_mean']:7.2%} +- {row['rram_std']:.2%}"
            )
    return rows


def fixture_weights(model: str, segment_rows: int, calibration: np.ndarray):
    """The fixture's crossbar layers, their float weights and their input Gram matrices on
    the calibration images."""
    program = graph_program(model, 1 << 16, segment_rows)
    layers = list(program.layers())
    weights = [np.asarray(program.store[layer.weight], dtype=np.float64) for layer in layers]
    grams = input_grams(program, {"x": calibration}, samples=len(calibration))
    return layers, weights, grams


def errors_of(layers, weights, grams, basis, q, objective, rounding=None) -> tuple[float, float]:
    """(relative weight error, relative output error on the calibration inputs) of all
    layers together, coefficients fitted with `objective` against `basis`."""
    totals = np.zeros(4)  # weight error, weight total, output error, output total
    for layer, weight in zip(layers, weights, strict=True):
        gram = grams[layer.name]
        layer_fit = fit.fit_layer(
            weight, basis, q, gram=gram if objective == "outputs" else None, rounding=rounding
        )
        difference = weight - fit.combined_weight(layer_fit, basis, layer.rows)
        totals += (
            np.square(difference).sum(),
            np.square(weight).sum(),
            np.einsum("grn,grq,gqn->", difference, gram, difference),
            np.einsum("grn,grq,gqn->", weight, gram, weight),
        )
    return math.sqrt(totals[0] / totals[1]), math.sqrt(max(totals[2], 0.0) / totals[3])


def quantized_basis(weights, segment_rows: int, k: int, method: str = "svd") -> np.ndarray:
    learnt = fit.learn_basis(weights, segment_rows, k, method)
    return fit.quantize_basis(learnt, WEIGHT_BITS, method).values


def reconstruction_rows(models=CNN_MODELS, segment_rows: int = 128, ks=KS, qs=QS) -> list[dict]:
    """Relative weight error and relative output error (calibration activations) of all
    crossbar layers of each fixture against K (q = 8) and q (K = 32), svd basis of 8-bit
    cells; weight-only and data-aware coefficients."""
    calibration, _, _ = load_split()
    rows = []
    for model in models:
        layers, weights, grams = fixture_weights(model, segment_rows, calibration)
        settings = [(k, 8) for k in ks if k <= segment_rows] + [(32, q) for q in qs if q != 8]
        for k, q in settings:
            basis = quantized_basis(weights, segment_rows, k)
            row: dict = {"model": model, "k": k, "q": q}
            for objective in ("weights", "outputs"):
                weight_error, output_error = errors_of(layers, weights, grams, basis, q, objective)
                row[f"{objective}_weight_error"] = weight_error
                row[f"{objective}_output_error"] = output_error
            rows.append(row)
    return rows


def method_rows(models=CNN_MODELS, segment_rows: int = 128, ks=(8, 16, 32, 64)) -> list[dict]:
    """Why svd is the default: the weight error of the svd and the k-means basis at the
    same K (q = 8, weight-only coefficients)."""
    calibration, _, _ = load_split()
    rows = []
    for model in models:
        layers, weights, grams = fixture_weights(model, segment_rows, calibration)
        for k in ks:
            row: dict = {"model": model, "k": k}
            for method in ("svd", "kmeans"):
                basis = quantized_basis(weights, segment_rows, k, method)
                row[method] = errors_of(layers, weights, grams, basis, 8, "weights")[0]
            rows.append(row)
    return rows


def rounding_rows(models=CNN_MODELS, segment_rows: int = 128, qs=(3, 4, 6, 8)) -> list[dict]:
    """Whether sequential (GPTQ-style) rounding of the data-aware coefficients helps: the
    output error with nearest and with sequential rounding (K = 32)."""
    calibration, _, _ = load_split()
    rows = []
    for model in models:
        layers, weights, grams = fixture_weights(model, segment_rows, calibration)
        basis = quantized_basis(weights, segment_rows, 32)
        for q in qs:
            row: dict = {"model": model, "q": q}
            for rounding in ("nearest", "sequential"):
                row[rounding] = errors_of(layers, weights, grams, basis, q, "outputs", rounding)[1]
            rows.append(row)
    return rows


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def accuracy_table(rows: list[dict], seeds: int) -> str:
    lines = [
        "| fixture | tiles | program | K | copies | phases | quant % | rram % (mean +- std) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['tiles']} | {row['program']} | {row['k'] or '-'} | "
            f"{row['copies'] or '-'} | {row['phases']} | {percent(row['quant'])} | "
            f"{percent(row['rram_mean'])} +- {percent(row['rram_std'])} |"
        )
    return "\n".join(lines)


def reconstruction_table(rows: list[dict]) -> str:
    lines = [
        "| fixture | K | q | weight error: weight fit | data-aware | "
        "output error: weight fit | data-aware |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['k']} | {row['q']} | "
            f"{row['weights_weight_error']:.4f} | {row['outputs_weight_error']:.4f} | "
            f"{row['weights_output_error']:.4f} | {row['outputs_output_error']:.4f} |"
        )
    return "\n".join(lines)


def method_table(rows: list[dict]) -> str:
    lines = ["| fixture | K | svd | k-means |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['k']} | {row['svd']:.4f} | {row['kmeans']:.4f} |")
    return "\n".join(lines)


def rounding_table(rows: list[dict]) -> str:
    lines = ["| fixture | q | nearest | sequential |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['q']} | {row['nearest']:.4f} | {row['sequential']:.4f} |"
        )
    return "\n".join(lines)


def against_k_table(rows: list[dict]) -> str:
    lines = [
        "| fixture | K | fit | quant % | quant, calibrated ranges % | rram % (mean +- std) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['k']} | {row['fit']} | {percent(row['quant'])} | "
            f"{percent(row['quant_calibrated'])} | {percent(row['rram_mean'])} +- "
            f"{percent(row['rram_std'])} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=5, help="rram chip instances per accuracy (default 5)"
    )
    parser.add_argument(
        "--models",
        default=",".join(CNN_MODELS),
        help="digits fixtures, comma-separated (default lenet,resnet,mobilenet)",
    )
    parser.add_argument(
        "--tile", type=int, default=128, help="rows and columns of a tile (default 128)"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    models = args.models.split(",")
    started = time.perf_counter()
    reconstruction = reconstruction_rows(models, args.tile)
    methods = method_rows(models, args.tile)
    roundings = rounding_rows(models, args.tile)
    print(reconstruction_table(reconstruction), method_table(methods), rounding_table(roundings))
    rows = accuracy_rows(models, args.tile, args.seeds)
    sweep = [
        row
        for model in models
        for row in accuracy_against_k(model, args.tile, SWEPT_KS, args.seeds)
    ]
    seconds = time.perf_counter() - started
    text = "\n\n".join(
        [
            f"## BasisN accuracy on the digits fixtures (`benchmarks/basis_accuracy.py`)\n\n"
            f"Tiles of {args.tile}x{args.tile}, {WEIGHT_BITS}-bit weights on {CELL_BITS}-bit "
            f"cells; budget = a quarter of the dense mapping's tiles. Scored on the "
            f"{360 - CALIBRATION} held-out digits after the first {CALIBRATION} (which "
            f"calibrate the data-aware fit); rram over {args.seeds} chip seeds. "
            f"{seconds:.0f} s.",
            accuracy_table(rows, args.seeds),
            "Against K at the same budget (copies: as many as fit); `quant, calibrated "
            "ranges` runs `xbarc calibrate` on the calibration images first and uses "
            "`--set input_range=calibrated --set adc_range=calibrated`.",
            against_k_table(sweep),
            "Weight reconstruction (svd basis on 8-bit cells, segments of "
            f"{args.tile} rows): relative weight error and relative output error on the "
            "calibration activations, against K (q = 8) and q (K = 32).",
            reconstruction_table(reconstruction),
            "The basis method: relative weight error of the svd and the k-means basis at "
            "the same K (q = 8, weight-only coefficients).",
            method_table(methods),
            "Rounding the data-aware coefficients (K = 32): relative output error with "
            "nearest and with sequential (GPTQ-style error feedback) rounding.",
            rounding_table(roundings),
        ]
    )
    print(text)
    record_if(args.record, "basis_accuracy", text)


if __name__ == "__main__":
    main()
