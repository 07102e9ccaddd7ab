"""NAX (per-layer tile sizes) against the best uniform tile size.

    python benchmarks/nax.py [--seeds 10] [--budget 0.25] [--skip-large] [--record]

Digits fixtures (tests/fixtures/digits: resnet, lenet, mlp, mobilenet): each compiled at
every uniform tile size (32x32, 64x64, 128x128, 256x256) and with NAX choosing each
layer's size on a chip of all four, every chip large enough for one phase. For each:
EDAP on used area (the physical tiles the program writes, with their periphery: the
area programs of different tile sizes compare on), and accuracy on digits_test.npz (360
digits) under `quant` and under `rram` (mean +- std over chip seeds 0..N-1; rram's spread
across chips is large, see "Accuracy under noise") for NAX and the best uniform size,
the one of least EDAP.

Small chips: the same fixtures with NAX on 16, 64 and 128 tiles of each type (no uniform
size fits in one phase on most), against the uniform size of least EDAP within the budget.

ResNet-50 and DenseNet-121 (onnx's light models with trained-like weights,
benchmarks/trained_like.py): the nax pass's selection time, and EDAP of NAX and of each
uniform size by the cost model (full compiles), with the proxy's summed error (no
simulation: too large to run here).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import record_if  # noqa: E402
from benchmarks.trained_like import LIGHT, trained_like  # noqa: E402
from xbarc.compiler import (  # noqa: E402
    CompileOptions,
    compile_onnx,
    default_pipeline,
    guard_uniform,
    uniform_tile_sizes,
)
from xbarc.ir.tile import Program  # noqa: E402
from xbarc.passes.nax import Nax  # noqa: E402
from xbarc.report import report  # noqa: E402
from xbarc.session import InferenceSession  # noqa: E402

DIGITS = ROOT / "tests" / "fixtures" / "digits"
FIXTURES = ("resnet", "lenet", "mlp", "mobilenet")
SIZES = ((32, 32), (64, 64), (128, 128), (256, 256))
TILES = 4096  # of each type: every program in one phase
LARGE_TILES = 262_144  # of each type: the most xbarc allows on a chip of four types
QUANTIZE = "quantize{weight-bits=8,cell-bits=2,scale=column,encoding=differential}"


def label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def accuracy(program: Program, x: np.ndarray, y: np.ndarray, noise: str, seed: int) -> float:
    (logits,) = InferenceSession(program, noise, seed=seed).run(None, {"x": x})
    return float(np.mean(np.argmax(logits, axis=1) == y))


def digits_rows(seeds: int, budget: float) -> list[dict]:
    """Every fixture at every uniform size and with NAX: EDAP for all, accuracy (rram
    over `seeds` chips) for NAX and the best uniform size."""
    data = np.load(DIGITS / "digits_test.npz")
    x, y = data["x"], data["y"]
    base = CompileOptions(tiles=TILES, input_shapes={"x": (1, 1, 8, 8)})
    rows = []
    for fixture in FIXTURES:
        model = DIGITS / f"{fixture}.onnx"
        programs = {
            label(size): compile_onnx(model, replace(base, tile_rows=size[0], tile_cols=size[1]))
            for size in SIZES
        }
        programs["nax"] = compile_onnx(model, replace(base, tile_sizes=SIZES, nax_budget=budget))
        row: dict = {"fixture": fixture, "seeds": seeds}
        for name, program in programs.items():
            summary = report(program)
            row[name] = {
                "edap": summary.edap_used,
                "layers": [(layer.name, layer.tile_type) for layer in summary.layers],
            }
        row["best"] = min((label(s) for s in SIZES), key=lambda n: row[n]["edap"])
        for name in (row["best"], "nax"):
            program = programs[name]
            rram = [accuracy(program, x, y, "rram", seed) for seed in range(row["seeds"])]
            row[name]["quant"] = accuracy(program, x, y, "quant", 0)
            row[name]["rram_mean"] = float(np.mean(rram))
            row[name]["rram_std"] = float(np.std(rram))
            print(
                f"{fixture} {name}: EDAP {row[name]['edap']:.4g}, quant {row[name]['quant']:.1%},"
                f" rram {row[name]['rram_mean']:.1%} +- {row[name]['rram_std']:.1%}",
                flush=True,
            )
        rows.append(row)
    return rows


SMALL_TILES = (16, 64, 128)  # of each type: chips where the uniform sizes need phases


def small_chip_rows(budget: float) -> list[dict]:
    """Every digits fixture with NAX on chips of few tiles of each type: the written
    program's EDAP and phases against the uniform size of least EDAP within the budget
    (re-tiled as inspect does), and the compiler guard's line if it replaced the mix."""
    rows = []
    for fixture in FIXTURES:
        model = DIGITS / f"{fixture}.onnx"
        for tiles in SMALL_TILES:
            options = CompileOptions(
                tiles=tiles, tile_sizes=SIZES, nax_budget=budget, input_shapes={"x": (1, 1, 8, 8)}
            )
            notes: list[str] = []
            program = compile_onnx(model, options, notes=notes)
            stages = default_pipeline(options).split(",nax{")[0]  # the compiler's quantize
            quantized = compile_onnx(model, replace(options, pipeline=stages, nax_budget=None))
            within = Nax(budget=budget).within_budget(quantized)
            uniform = {u.tile_type: u for u in uniform_tile_sizes(program)}
            best = min(within, key=lambda name: uniform[name].edap_used)
            summary = report(program)
            rows.append(
                {
                    "fixture": fixture,
                    "tiles": tiles,
                    "edap": summary.edap_used,
                    "phases": summary.phases,
                    "best": best,
                    "best_edap": uniform[best].edap_used,
                    "best_phases": uniform[best].phases,
                    "guard": notes[0] if notes else "",
                }
            )
            print(rows[-1], flush=True)
    return rows


def large_rows(budget: float, folder: Path) -> list[dict]:
    rows = []
    for name in ("resnet50", "densenet121"):
        path = folder / f"{name}.onnx"
        onnx.save(trained_like(onnx.load(LIGHT / f"light_{name}.onnx"), 0, 0.0), path)
        options = CompileOptions(tiles=LARGE_TILES, tile_sizes=SIZES, nax_budget=budget)
        quantized = compile_onnx(path, replace(options, pipeline=QUANTIZE, nax_budget=None))
        started = time.perf_counter()
        selection = Nax(budget=budget).select(quantized)
        selection_s = time.perf_counter() - started
        row: dict = {"model": name, "selection_s": selection_s, "layers": len(selection.choice)}
        notes: list[str] = []
        programs = {"nax": compile_onnx(path, options, notes=notes)}
        # the compiler's guard against a uniform size of lower EDAP, timed on its own (on
        # the program it already checked: the same work, the program unchanged)
        started = time.perf_counter()
        guard_uniform(programs["nax"], Nax(budget=budget))
        row["guard_s"] = time.perf_counter() - started
        row["guard"] = notes[0] if notes else ""
        for size in SIZES:
            uniform = replace(options, tile_sizes=(), nax_budget=None)
            programs[label(size)] = compile_onnx(
                path, replace(uniform, tile_rows=size[0], tile_cols=size[1])
            )
        for key, program in programs.items():
            row[key] = report(program).edap_used
        row["proxy"] = {label(s): u.error for s, u in zip(SIZES, selection.uniform, strict=True)}
        row["proxy"]["nax"] = selection.totals.error
        row["bound"] = selection.bound
        counts = np.bincount(selection.choice, minlength=len(SIZES))
        row["mix"] = ", ".join(f"{label(s)}: {c}" for s, c in zip(SIZES, counts, strict=True) if c)
        print(f"{name}: selection {selection_s:.2f} s, {row}", flush=True)
        rows.append(row)
    return rows


def change(value: float, base: float) -> str:
    return f"{value / base - 1:+.1%}" if base else "-"


def body(
    digits: list[dict], small: list[dict], large: list[dict], seeds: int, budget: float
) -> str:
    lines = [
        "## NAX: per-layer tile sizes against the best uniform size (`benchmarks/nax.py`)",
        "",
        f"Digits fixtures: EDAP on used area (pJ x ns x mm^2 per inference) at each uniform "
        f"tile size and with the nax pass choosing each layer's size on a chip of all four "
        f"(`--tile-size 32x32,64x64,128x128,256x256 --nax-budget {budget:g}`, {TILES} tiles "
        f"of each: one phase); accuracy on digits_test.npz (360 digits), `quant` and `rram` "
        f"(mean +- std over chip seeds 0-{seeds - 1}). Best uniform: the size of least EDAP.",
        "",
        "| model | " + " | ".join(label(s) for s in SIZES) + " | NAX | NAX vs best |"
        " rram best uniform | rram NAX | quant best / NAX |",
        "|---|" + "---:|" * (len(SIZES) + 2) + "---:|---:|---:|",
    ]
    for row in digits:
        best, nax = row[row["best"]], row["nax"]
        edaps = " | ".join(f"{row[label(s)]['edap']:.3g}" for s in SIZES)
        lines.append(
            f"| {row['fixture']} | {edaps} | {nax['edap']:.3g} | "
            f"{change(nax['edap'], best['edap'])} vs {row['best']} | "
            f"{best['rram_mean']:.1%} +- {best['rram_std']:.1%} | "
            f"{nax['rram_mean']:.1%} +- {nax['rram_std']:.1%} | "
            f"{best['quant']:.1%} / {nax['quant']:.1%} |"
        )
    lines += ["", "Each layer's size as NAX chose it:", ""]
    for row in digits:
        chosen = ", ".join(f"{name} {kind}" for name, kind in row["nax"]["layers"])
        lines.append(f"- {row['fixture']}: {chosen}")
    if small:
        lines += [
            "",
            "Small chips (the same fixtures, "
            + ", ".join(str(t) for t in SMALL_TILES)
            + " tiles of each type: the uniform sizes need several phases, and pay their "
            "cell writes on every inference): the program compile writes against the uniform "
            "size of least EDAP within the budget (re-tiled as inspect's table does). A mix "
            "that fits in one phase is preferred; the compiler writes a uniform size instead "
            "where the cost model finds it cheaper (guard).",
            "",
            "| model | tiles of each | NAX EDAP | phases | best uniform within budget | its EDAP "
            "| phases | NAX vs it | guard |",
            "|---|---:|---:|---:|---|---:|---:|---:|---|",
        ]
        for row in small:
            lines.append(
                f"| {row['fixture']} | {row['tiles']} | {row['edap']:.4g} | {row['phases']} | "
                f"{row['best']} | {row['best_edap']:.4g} | {row['best_phases']} | "
                f"{change(row['edap'], row['best_edap'])} | "
                f"{'replaced the mix' if row['guard'] else '-'} |"
            )
    if large:
        lines += [
            "",
            "ResNet-50 and DenseNet-121 (light models, trained-like weights, 1x3x224x224): the "
            "nax pass's selection time (after quantize), the compiler's guard's time (the "
            "uniform sizes within the budget re-tiled and costed against the chosen mix, "
            "`compiler.guard_uniform`), EDAP by the cost model (full "
            "compiles), and the summed error proxy of each (the budget allows "
            f"{budget:.0%} over the most accurate uniform size).",
            "",
            "| model | layers | selection s | guard s | "
            + " | ".join(f"{label(s)} EDAP (proxy)" for s in SIZES)
            + " | NAX EDAP (proxy) | NAX mix |",
            "|---|---:|---:|---:|" + "---:|" * (len(SIZES) + 1) + "---|",
        ]
        for row in large:
            cells = " | ".join(f"{row[label(s)]:.3g} ({row['proxy'][label(s)]:.3f})" for s in SIZES)
            lines.append(
                f"| {row['model']} | {row['layers']} | {row['selection_s']:.2f} | "
                f"{row['guard_s']:.2f} | {cells} | "
                f"{row['nax']:.3g} ({row['proxy']['nax']:.3f}) | {row['mix']} |"
            )
        lines.append("")
        for row in large:
            within = [label(s) for s in SIZES if row["proxy"][label(s)] <= row["bound"]]
            best = min(within, key=lambda name: row[name])
            cheapest = min((label(s) for s in SIZES), key=lambda name: row[name])
            lines.append(
                f"- {row['model']}: NAX {change(row['nax'], row[best])} EDAP against {best}, "
                f"the best uniform size within the budget (proxy bound {row['bound']:.3f}); "
                f"{change(row['nax'], row[cheapest])} against {cheapest}, the least EDAP of "
                "any uniform size"
                + ("" if cheapest in within else ", whose proxy is over the budget")
                + (f"; the compiler's guard: {row['guard']}" if row["guard"] else "")
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="rram chip seeds")
    parser.add_argument(
        "--budget", type=float, default=Nax().budget, help="the nax pass's error budget"
    )
    parser.add_argument(
        "--skip-large", action="store_true", help="only the digits fixtures (no ResNet-50)"
    )
    parser.add_argument(
        "--digits-json",
        type=Path,
        help="reuse the digits figures saved in this file, or save them there when it is missing",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.digits_json is not None and args.digits_json.exists():
        digits = json.loads(args.digits_json.read_text())
    else:
        digits = digits_rows(args.seeds, args.budget)
        if args.digits_json is not None:
            args.digits_json.write_text(json.dumps(digits))
    large = []
    if not args.skip_large:
        with tempfile.TemporaryDirectory() as folder:
            large = large_rows(args.budget, Path(folder))
    small = small_chip_rows(args.budget)
    text = body(digits, small, large, args.seeds, args.budget)
    print(text)
    record_if(args.record, "nax", text)


if __name__ == "__main__":
    main()
