"""What device noise costs at run time: `rram` against `quant` on the same program.

    python benchmarks/noise_cost.py [--repeat 3] [--record]

Programs use the compiler's defaults (8-bit weights in 2-bit cells, 128x128 tiles, 1-bit
DAC steps). Per program: the time per batch of `quant` and of `rram` (best of --repeat,
the chip programmed once before timing), their ratio, and what the noisy run spends on
drawing read noise. Goal (issue 4): rram at most 1.3x quant.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime import gaussian  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

HERE = Path(__file__).parent
DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
LIGHT = Path(onnxruntime.__file__).parent.parent / "onnx" / "backend" / "test" / "data" / "light"


def cases():
    """(name, program, feeds) of each benchmarked program."""
    with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as npz:
        digits = npz["x"]
    for name in ("lenet", "resnet"):
        options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
        program = compile_onnx(DIGITS / f"{name}.onnx", options)
        yield f"digits {name} (360 images)", program, {"x": digits}
    for name in ("squeezenet", "resnet50"):
        path = LIGHT / f"light_{name}.onnx"
        program = compile_onnx(path, CompileOptions(tiles=4096))
        graph_input = program.inputs[0]
        shape = tuple(graph_input.type.shape)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        yield f"{name} (batch 1)", program, {graph_input.name: x}


def best_time(function, repeat: int) -> float:
    function()  # warm up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def noise_share(executor: Executor, feeds) -> float:
    """Seconds of one run spent in the Gaussian kernel."""
    spent = 0.0
    original = gaussian.add_noise

    def timed(*args, **keywords):
        nonlocal spent
        started = time.perf_counter()
        original(*args, **keywords)
        spent += time.perf_counter() - started

    gaussian.add_noise = timed
    try:
        executor.run(feeds)
    finally:
        gaussian.add_noise = original
    return spent


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per profile; the best is kept (default 3)"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    rows = []
    for name, program, feeds in cases():
        quant = Executor(program, noise_settings("quant"))
        rram = Executor(program, noise_settings("rram"), Seeds.derive(0))
        quant_s = best_time(lambda: quant.run(feeds), args.repeat)  # noqa: B023
        rram_s = best_time(lambda: rram.run(feeds), args.repeat)  # noqa: B023
        noise_s = noise_share(rram, feeds)
        rows.append((name, quant_s, rram_s, noise_s))
        print(
            f"{name:<28} quant {quant_s:7.3f} s  rram {rram_s:7.3f} s  "
            f"({rram_s / quant_s:.2f}x; drawing noise {noise_s:.3f} s)",
            flush=True,
        )
    lines = [
        "## Cost of device noise (`benchmarks/noise_cost.py`)",
        "",
        f"Time per batch, best of {args.repeat}: `quant` and `rram` on the same default "
        "program (8-bit weights in 2-bit cells, 128x128 tiles, 1-bit DAC steps). `rram` "
        "reads run in float32 (noisy cells are not integers) and every column of every "
        "read draws a Gaussian (read and output noise) from the counter-based kernel; "
        "`noise` is the time in that kernel.",
        "",
        "| program | quant s | rram s | rram / quant | noise s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, quant_s, rram_s, noise_s in rows:
        lines.append(
            f"| {name} | {quant_s:.3f} | {rram_s:.3f} | {rram_s / quant_s:.2f}x | {noise_s:.3f} |"
        )
    lines += ["", "Goal: rram at most 1.3x quant."]
    record_if(args.record, "noise_cost", "\n".join(lines))


if __name__ == "__main__":
    main()
