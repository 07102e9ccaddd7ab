"""Accuracy under device noise on the trained digits fixtures (seed 000's methodology).

    python benchmarks/noise_study.py [--seeds 5] [--models lenet,mlp,...] [--record] [--replot]

Every point is the held-out accuracy (tests/fixtures/digits/digits_test.npz, 360 images)
as mean +- std over `--seeds` chip instances of the `rram` profile, with one knob moved
at a time from the base point (128x128 tiles, the rram defaults, 8-bit ADC):
- tile size 32, 64, 128, 256, for the dense and the 90 %-pruned networks;
- ADC bits 2 to 8, then a lossless ADC (`quant` at that point is the noise-free ceiling);
- stuck-at fault rate (p_sa0 = p_sa1) 0 to 3 %;
- programming-noise scale 0 to 4 (times the Wan et al. RRAM fit).
Programs use the compiler's defaults (8-bit weights in 2-bit cells, differential pairs).
Writes benchmarks/noise_study.csv, plots benchmarks/noise_study.png (with matplotlib),
and a summary in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "digits"
CSV = HERE / "noise_study.csv"
PLOT = HERE / "noise_study.png"

TILE_SIZES = (32, 64, 128, 256)
ADC_BITS = (2, 3, 4, 5, 6, 8, "exact")
FAULT_RATES = (0.0, 0.001, 0.003, 0.01, 0.03)
PROGRAMMING_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)


def load_test_split() -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURES / "digits_test.npz", allow_pickle=False) as npz:
        return npz["x"], npz["y"]


def accuracy(program, settings, seed: int, x: np.ndarray, y: np.ndarray) -> float:
    name = program.inputs[0].name
    logits = Executor(program, settings, Seeds.derive(seed)).run({name: x})
    (values,) = logits.values()
    return float((values.reshape(len(y), -1).argmax(-1) == y).mean())


def point(program, settings, seeds: int, x, y) -> tuple[float, float]:
    values = [accuracy(program, settings, seed, x, y) for seed in range(seeds)]
    return float(np.mean(values)), float(np.std(values))


def compile_fixture(name: str, tile: int):
    options = CompileOptions(
        tiles=4096, tile_rows=tile, tile_cols=tile, input_shapes={"x": (1, 1, 8, 8)}
    )
    return compile_onnx(FIXTURES / f"{name}.onnx", options)


def study(models: list[str], seeds: int) -> list[dict]:
    x, y = load_test_split()
    rows: list[dict] = []

    def add(model: str, sweep: str, value, profile: str, settings, program) -> None:
        started = time.perf_counter()
        mean, std = point(program, settings, seeds if profile != "quant" else 1, x, y)
        rows.append(
            {
                "model": model,
                "sweep": sweep,
                "value": value,
                "profile": profile,
                "accuracy_mean": round(mean, 4),
                "accuracy_std": round(std, 4),
                "seeds": seeds if profile != "quant" else 1,
            }
        )
        print(
            f"{model:<14} {sweep:<18} {value!s:>6} {profile:<6} {mean:7.2%} +- {std:6.2%}"
            f"  ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )

    for model in models:
        for pruned in (model, f"{model}_p90"):
            for tile in TILE_SIZES:
                program = compile_fixture(pruned, tile)
                add(pruned, "tile size", tile, "quant", noise_settings("quant"), program)
                add(pruned, "tile size", tile, "rram", noise_settings("rram"), program)
        program = compile_fixture(model, 128)
        for bits in ADC_BITS:
            add(model, "adc bits", bits, "quant", noise_settings("quant", adc_bits=bits), program)
            if bits != "exact":  # noise needs a finite ADC
                add(model, "adc bits", bits, "rram", noise_settings("rram", adc_bits=bits), program)
        for rate in FAULT_RATES:
            settings = noise_settings("rram", p_sa0=rate, p_sa1=rate)
            add(model, "fault rate", rate, "rram", settings, program)
        for scale in PROGRAMMING_SCALES:
            settings = noise_settings("rram", programming_scale=scale)
            add(model, "programming scale", scale, "rram", settings, program)
    return rows


def write_csv(rows: list[dict]) -> None:
    with open(CSV, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict]) -> bool:
    """Four panels, one per sweep, each model in its own colour (dashed: 90 % pruned);
    False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sweeps = ["tile size", "adc bits", "fault rate", "programming scale"]
    bases = list(dict.fromkeys(r["model"].removesuffix("_p90") for r in rows))
    colours = {base: f"C{i}" for i, base in enumerate(bases)}
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    for axis, sweep in zip(axes, sweeps, strict=True):
        chosen = [r for r in rows if r["sweep"] == sweep and r["profile"] == "rram"]
        for model in dict.fromkeys(r["model"] for r in chosen):
            series = [r for r in chosen if r["model"] == model]
            axis.errorbar(
                range(len(series)),
                [float(r["accuracy_mean"]) for r in series],
                yerr=[float(r["accuracy_std"]) for r in series],
                marker="o",
                capsize=3,
                color=colours[model.removesuffix("_p90")],
                linestyle="--" if model.endswith("_p90") else "-",
                label=model,
            )
            axis.set_xticks(range(len(series)), [str(r["value"]) for r in series])
        axis.set_title(f"rram: accuracy vs {sweep}")
        axis.set_xlabel(sweep)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("held-out accuracy (mean +- std over chips)")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    return True


def summary(rows: list[dict], seeds: int, seconds: float, plotted: bool) -> str:
    def cell(model, sweep, value, profile="rram") -> str:
        for r in rows:
            if (r["model"], r["sweep"], str(r["value"]), r["profile"]) == (
                model,
                sweep,
                str(value),
                profile,
            ):
                return f"{r['accuracy_mean']:.1%} +- {r['accuracy_std']:.1%}"
        return "-"

    plotted_note = ", plotted in `benchmarks/noise_study.png`" if plotted else ""
    lines = [
        "## Accuracy under noise on the digits fixtures (`benchmarks/noise_study.py`)",
        "",
        f"Held-out accuracy (360 digits) under the `rram` profile, mean +- std over {seeds} "
        "chip instances; one knob moved at a time from 128x128 tiles, 8-bit ADC and the rram "
        "defaults (Wan et al. programming noise, 0.1 %/0.1 % stuck cells, read and output "
        "noise). `quant` is the noise-free quantized program. All points in "
        f"`benchmarks/noise_study.csv`{plotted_note}; the study took {seconds:.0f} s.",
        "",
        "| model | quant | rram | tiles 32 | 64 | 256 | 90 % pruned: 32 | 128 | 256 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    models = list(dict.fromkeys(r["model"] for r in rows if not r["model"].endswith("_p90")))
    for m in models:
        lines.append(
            f"| {m} | {cell(m, 'tile size', 128, 'quant')} | {cell(m, 'tile size', 128)} | "
            f"{cell(m, 'tile size', 32)} | {cell(m, 'tile size', 64)} | "
            f"{cell(m, 'tile size', 256)} | {cell(m + '_p90', 'tile size', 32)} | "
            f"{cell(m + '_p90', 'tile size', 128)} | {cell(m + '_p90', 'tile size', 256)} |"
        )
    for sweep, values, label in (
        ("adc bits", ADC_BITS[:-1], "ADC bits"),
        ("fault rate", FAULT_RATES, "p_sa0 = p_sa1"),
        ("programming scale", PROGRAMMING_SCALES, "programming noise x"),
    ):
        lines += [
            "",
            "| model | " + " | ".join(f"{label} {v}" for v in values) + " |",
            "|---|" + "---:|" * len(values),
        ]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(cell(m, sweep, v) for v in values) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=5, help="rram chip instances per point (default 5)"
    )
    parser.add_argument(
        "--models",
        default="mlp,lenet,resnet,mobilenet",
        help="digits fixtures, comma-separated (default mlp,lenet,resnet,mobilenet)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    parser.add_argument("--replot", action="store_true", help="redraw the PNG from the CSV")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.replot:
        with open(CSV, newline="") as stream:
            plot(list(csv.DictReader(stream)))
        return
    started = time.perf_counter()
    rows = study(args.models.split(","), args.seeds)
    seconds = time.perf_counter() - started
    write_csv(rows)
    plotted = plot(rows)
    text = summary(rows, args.seeds, seconds, plotted)
    print(text)
    record_if(args.record, "noise_study", text)


if __name__ == "__main__":
    main()
