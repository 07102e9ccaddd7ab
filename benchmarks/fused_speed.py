"""Matched settings on the digits CNNs: `quant` on the fused path against the paths before it.

    python benchmarks/fused_speed.py [lenet mobilenet ...] [--batch 540] [--repeat 7] [--record]

The matched settings of the comparison with aihwkit-lightning (benchmarks/sim_speed.py):
8-bit weights (per column, differential) unsliced in 8-bit cells, the 8-bit input in one
DAC step (`dac.slice_bits=8`), 8-bit ADC, 128x128 tiles, the DAC's and the ADC's ranges
calibrated (at the 99.99th percentile, on the 360 test images). Each model of
tests/fixtures/digits is compiled and calibrated so, and run on the test images repeated
to `--batch`; timed in the same run, best of `--repeat`: onnxruntime (float32, the 1x),
xbarc `quant` as before this path (each layer sparse or read by read, as main chose) and
now (the fused path, the engine per layer from `engines.toml`). The outputs of before and
now are checked bit for bit. Printed and recorded: the times and ratios, each layer's
engine and time, and the top functions of a profiled run (cProfile, by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402

from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import CrossbarLayer  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
MATCHED = CompileOptions(
    cell_bits=8, hw_set=("dac.slice_bits=8",), tiles=4096, input_shapes={"x": (1, 1, 8, 8)}
)


def best(run, repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved(runs, repeat: int) -> list[float]:
    """The best time of each of `runs`, taken in turns (a busy moment of a shared machine
    then slows all of them, not one)."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, taken in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            taken.append(time.perf_counter() - start)
    return [min(taken) for taken in times]


def before(executor: Executor) -> Executor:
    """`executor` choosing paths as before the fused path: sparse where main took it,
    else read by read."""

    def choose(plans):
        return "sparse" if executor._sparse_columns(plans) is not None else "by read"

    executor._choose_path = choose  # type: ignore[method-assign]
    return executor


def layer_times(executor: Executor, values: dict, repeat: int) -> list[str]:
    lines = []
    for op in executor.program.ops:
        if not isinstance(op, CrossbarLayer):
            continue
        x = values[op.input]
        seconds = best(lambda op=op, x=x: executor.run_layer(op, x), repeat)
        engines = sorted({e for (name, _), e in executor.layer_engines.items() if name == op.name})
        path = executor._paths.get(op.name, "?")
        shown = path if path != "fused" else f"fused: {', '.join(engines)}"
        lines.append(f"| {op.name} | {op.rows}x{op.cols} | {shown} | {seconds * 1e3:.2f} |")
    return lines


def profile(executor: Executor, feeds: dict, runs: int = 5) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        executor.run(feeds)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
    text = out.getvalue()
    keep = [line for line in text.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(keep) if line.lstrip().startswith("ncalls"))
    return "\n".join(keep[start:])


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=["lenet", "resnet", "mobilenet", "mlp"],
        help="digits fixtures to run (default: lenet resnet mobilenet mlp)",
    )
    parser.add_argument(
        "--batch", type=int, default=540, help="images a run (the 360 repeated; default 540)"
    )
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed runs of each; the best is kept (default 7)"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    images = np.load(DIGITS / "digits_test.npz")["x"]
    x = images[np.arange(args.batch) % len(images)]
    feeds = {"x": x}
    settings = noise_settings("quant", input_range="calibrated", adc_range="calibrated")
    rows = [
        "| model | onnxruntime | quant before | quant now | before / now | now vs onnxruntime |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    details = []
    for name in args.models:
        session = onnxruntime.InferenceSession(
            str(DIGITS / f"{name}.onnx"), providers=["CPUExecutionProvider"]
        )
        program = compile_onnx(DIGITS / f"{name}.onnx", MATCHED)
        program = calibrate(program, {"x": images})
        old = before(Executor(program, settings, Seeds.derive(0)))
        new = Executor(program, settings, Seeds.derive(0))
        if not np.array_equal(old.run(feeds)["logits"], new.run(feeds)["logits"]):
            raise SystemExit(f"{name}: the fused path's outputs differ from before")
        t_ort, t_old, t_new = interleaved(
            [
                lambda s=session: s.run(None, feeds),
                lambda e=old: e.run(feeds),
                lambda e=new: e.run(feeds),
            ],
            args.repeat,
        )
        row = (
            f"| {name} | {t_ort * 1e3:.2f} ms | {t_old * 1e3:.2f} ms ({t_old / t_ort:.1f}x) | "
            f"{t_new * 1e3:.2f} ms ({t_new / t_ort:.1f}x) | {t_old / t_new:.2f} | "
            f"{t_new / t_ort:.1f}x |"
        )
        rows.append(row)
        print(row, flush=True)
        values = new.run_all(feeds)
        layers = ["| layer | rows x cols | path | ms |", "|---|---|---|---:|"]
        layers += layer_times(new, values, args.repeat)
        details += [f"{name}, each layer now (best of {args.repeat}):", "", *layers, ""]
        if name == args.models[0]:
            details += [
                f"{name}, profile of 5 runs now (cProfile, by own time):",
                "",
                "```",
                profile(new, feeds),
                "```",
                "",
            ]
    print("\n".join(details))
    body = "\n".join(
        [
            "## Fused reads, matched settings (benchmarks/fused_speed.py)",
            "",
            "8-bit weights unsliced in 8-bit cells, the input in one 8-bit DAC step, 8-bit "
            "ADC, 128x128 tiles, calibrated DAC and ADC ranges (the matched settings of "
            f"sim_speed.py); the digits test images repeated to batch {args.batch}; best of "
            f"{args.repeat}, all in one run; load average {os.getloadavg()[0]:.2f} at the "
            "end (2 cores shared). Before: each layer sparse or read by read (main's rule); "
            "now: the fused path, each layer's engine from engines.toml. Outputs bit-identical.",
            "",
            *rows,
            "",
            *details,
        ]
    )
    record_if(args.record, "fused_speed", body)


if __name__ == "__main__":
    main()
