"""What running a BasisN program costs the simulator: `--strategy basis` against `reprogram`.

    python benchmarks/basis_runtime.py [--tiles 128] [--repeat 3] [--models ...] [--record]

Each model is compiled twice for the same chip (`--tiles`, 128x128 tiles, the compiler's
defaults: 8-bit weights in 2-bit cells, 1-bit DAC steps, 8-bit ADC): `reprogram` (layers on
their own weights, phases that rewrite tiles) and `basis` (one basis written once, every
layer combined from it: K = the segment rows = 128 vectors by default). Per program: the
phases; the time to program the chip (building the executor: every phase's writes, read
plans off the programmed tiles); the time per batch of `quant` and of `rram` (best of
--repeat after a warm-up run, wall clock on a shared machine: the best run is the least
disturbed one) with the process CPU time of that run beside it; and, for the basis
program, the time of the digital combine (`combine_responses`) in the `quant` run.

A basis program reads, for every segment of L input rows, all K basis columns of every
weight slice: K x slices read columns per segment against the layer's own N x slices per
128-row block. The simulator's work follows the chip's: layers narrower than K (the digits
networks' 8 to 32 channels, the first convolutions) read more columns combined from the
basis than stored directly, layers wider than K fewer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # the xbarc of this checkout
from results import record_if  # noqa: E402

import xbarc.runtime.executor as executor_module  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

HERE = Path(__file__).parent
DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
LIGHT = Path(onnxruntime.__file__).parent.parent / "onnx" / "backend" / "test" / "data" / "light"
MODELS = ("lenet", "resnet", "squeezenet", "resnet50")


def model_case(name: str):
    """(label, model path, compile options, feeds) of a digits fixture or a light model."""
    if name in ("lenet", "resnet", "mobilenet", "mlp"):
        with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as npz:
            digits = npz["x"]
        shape = {"x": (1, 1, 8, 8)} if name != "mlp" else {}
        return f"digits {name} (360 images)", DIGITS / f"{name}.onnx", shape, {"x": digits}
    return f"{name} (batch 1)", LIGHT / f"light_{name}.onnx", {}, None


def best_run(executor: Executor, feeds, repeat: int) -> tuple[float, float]:
    """Wall and CPU seconds of the fastest of `repeat` runs, after one warm-up run."""
    executor.run(feeds)
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        executor.run(feeds)
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def combine_seconds(executor: Executor, feeds) -> float:
    """Seconds one run spends in the digital combine."""
    spent = 0.0
    original = executor_module.combine_responses

    def timed(*args, **keywords):
        nonlocal spent
        started = time.perf_counter()
        original(*args, **keywords)
        spent += time.perf_counter() - started

    executor_module.combine_responses = timed
    try:
        executor.run(feeds)
    finally:
        executor_module.combine_responses = original
    return spent


def measure(name: str, tiles: int, repeat: int) -> list[dict]:
    label, path, shapes, feeds = model_case(name)
    rows = []
    for strategy in ("reprogram", "basis"):
        options = CompileOptions(tiles=tiles, strategy=strategy, input_shapes=shapes)
        program = compile_onnx(path, options)
        if feeds is None:
            graph_input = program.inputs[0]
            shape = tuple(graph_input.type.shape)
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            feeds = {graph_input.name: x}
        row = {"model": label, "strategy": strategy, "phases": len(program.phases)}
        if program.combines:
            (basis,) = [array for array in program.arrays if array.kind == "basis"]
            row["basis"] = f"K={basis.cols}, L={basis.rows}, {basis.copies} copies"
        for profile in ("quant", "rram"):
            started = time.perf_counter()
            executor = Executor(program, noise_settings(profile), Seeds.derive(0))
            row[f"{profile} programming"] = time.perf_counter() - started
            row[profile], row[f"{profile} cpu"] = best_run(executor, feeds, repeat)
            if profile == "quant" and program.combines:
                row["combine"] = combine_seconds(executor, feeds)
        rows.append(row)
        print(
            f"{label:<28} {strategy:<9} phases {row['phases']:>3}  programming "
            f"{row['quant programming']:6.2f} s  quant {row['quant']:7.3f} s "
            f"(cpu {row['quant cpu']:6.2f})  rram {row['rram']:7.3f} s "
            f"(cpu {row['rram cpu']:6.2f})  combine {row.get('combine', 0):.3f} s",
            flush=True,
        )
    return rows


def table(rows: list[dict], tiles: int, repeat: int) -> str:
    lines = [
        "## Running BasisN programs (`benchmarks/basis_runtime.py`)",
        "",
        f"The same chip ({tiles} tiles of 128x128, 8-bit weights in 2-bit cells, 1-bit DAC "
        f"steps, 8-bit ADC) under both strategies; time per batch, best of {repeat} after a "
        "warm-up (wall clock on a 2-core machine shared with other jobs: CPU seconds of the "
        "same run beside it), `programming` the executor's construction (every phase's "
        "writes and read plans), `combine` the digital combine's share of the `quant` run. "
        "A basis program reads K x slices columns per input segment of L rows where a "
        "layer's own weights take N x slices per 128-row block: narrow layers cost more "
        "combined, wide ones less.",
        "",
        "| model | strategy | phases | programming s | quant s (cpu) | rram s (cpu) | "
        "basis / reprogram quant | rram | combine s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reprogram = {}
    for row in rows:
        if row["strategy"] == "reprogram":
            reprogram[row["model"]] = row
        base = reprogram[row["model"]]
        strategy = row["strategy"] + (f" ({row['basis']})" if "basis" in row else "")
        ratio_quant = ratio_rram = combine = "-"
        if row["strategy"] == "basis":
            ratio_quant = f"{row['quant'] / base['quant']:.2f}x"
            ratio_rram = f"{row['rram'] / base['rram']:.2f}x"
            combine = f"{row['combine']:.3f}"
        lines.append(
            f"| {row['model']} | {strategy} | {row['phases']} | "
            f"{row['quant programming']:.2f} | {row['quant']:.3f} ({row['quant cpu']:.2f}) | "
            f"{row['rram']:.3f} ({row['rram cpu']:.2f}) | {ratio_quant} | {ratio_rram} | "
            f"{combine} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=128, help="the chip's tiles (default 128)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs per batch after a warm-up; the best is kept (default 3)",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help="models, comma-separated (default all)"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    rows = []
    for name in args.models.split(","):
        rows.extend(measure(name, args.tiles, args.repeat))
    text = table(rows, args.tiles, args.repeat)
    print(text)
    record_if(args.record, "basis_runtime", text)


if __name__ == "__main__":
    main()
