"""What device noise costs at run time: `rram` against `quant` on the same program.

    python benchmarks/noise_cost.py [--repeat 3] [--record]

Programs use the compiler's defaults (8-bit weights in 2-bit cells, 128x128 tiles, 1-bit
DAC steps, 8-bit ADC): the digits fixtures at 360 images, SqueezeNet and ResNet-50 (light
models) at batch 1. Per program: the time per batch of `quant` and of `rram` (best of
--repeat after a warm-up run, the chip programmed before timing), their ratio in wall
and in CPU time, the CPU time the read noise costs (`rram` against `rram` with its read
and output noise off: the same noisy cells), and the time to program the rram chip; then
where a mobilenet `rram` run
spends its time (cProfile). Goal (issue 18): rram at most 1.5x quant.
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
from timing import best_time  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime.devices import programming_memo as MEMO  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
LIGHT = Path(onnxruntime.__file__).parent.parent / "onnx" / "backend" / "test" / "data" / "light"


def cases():
    """(name, program, feeds) of each benchmarked program."""
    with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as npz:
        digits = npz["x"]
    for name in ("lenet", "resnet", "mobilenet", "mlp"):
        options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
        program = compile_onnx(DIGITS / f"{name}.onnx", options)
        yield f"digits {name} ({len(digits)} images)", program, {"x": digits}
    for name in ("squeezenet", "resnet50"):
        path = LIGHT / f"light_{name}.onnx"
        program = compile_onnx(path, CompileOptions(tiles=4096))
        graph_input = program.inputs[0]
        shape = tuple(graph_input.type.shape)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        yield f"{name} (batch 1)", program, {graph_input.name: x}


def timed(function) -> tuple[object, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def sensitivity_programming(memo: bool, seeds: int = 10) -> tuple[float, float, int]:
    """(seconds programming chips, seconds in all, tiles programmed) of `xbarc eval --noise
    rram --seeds N --sensitivity` on the digits LeNet (360 images), with the programming
    memo (each chip seed programmed once) or without it (once per pass, as before)."""
    import contextlib
    import tempfile

    from xbarc import evaluate
    from xbarc.ir.io import save_program
    from xbarc.runtime import devices

    program = compile_onnx(
        DIGITS / "lenet.onnx", CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
    )
    spent = [0.0, 0]
    original, compute = devices.Chip.program, devices.Chip._program

    def timed_program(chip, tile, levels):
        started = time.perf_counter()
        result = original(chip, tile, levels)
        spent[0] += time.perf_counter() - started
        return result

    def counted(chip, tile, count, levels):
        spent[1] += 1
        return compute(chip, tile, count, levels)

    devices.Chip.program = timed_program  # type: ignore[method-assign]
    devices.Chip._program = counted  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "lenet.xbar"
            save_program(path, program)
            if not memo:
                devices.programming_memo = contextlib.nullcontext  # type: ignore[assignment]
            started = time.perf_counter()
            evaluate.evaluate(
                path,
                DIGITS / "lenet.onnx",
                DIGITS / "digits_test.npz",
                noise="rram",
                labels_key="y",
                instances=seeds,
                sensitivity=True,
            )
            total = time.perf_counter() - started
    finally:
        devices.Chip.program = original  # type: ignore[method-assign]
        devices.Chip._program = compute  # type: ignore[method-assign]
        devices.programming_memo = MEMO
    return spent[0], total, int(spent[1])


def profile_of(executor: Executor, feeds, rows: int = 8) -> str:
    """The functions one run spends the most time in (cProfile, own time)."""
    profiler = cProfile.Profile()
    profiler.enable()
    executor.run(feeds)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(rows)
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(line.replace(str(HERE.parent) + "/", "") for line in lines[start:])


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
    profile = ""
    quiet = noise_settings("rram", read_noise="none", output_noise=0.0, input_noise=0.0)
    for name, program, feeds in cases():
        quant = Executor(program, noise_settings("quant"))
        rram, programming_s = timed(
            lambda: Executor(program, noise_settings("rram"), Seeds.derive(0))  # noqa: B023
        )
        exact_reads = Executor(program, quiet, Seeds.derive(0))
        quant_s, quant_cpu = best_time(lambda: quant.run(feeds), args.repeat)  # noqa: B023
        rram_s, rram_cpu = best_time(lambda: rram.run(feeds), args.repeat)  # noqa: B023
        exact_s, exact_cpu = best_time(lambda: exact_reads.run(feeds), args.repeat)  # noqa: B023
        rows.append(
            (name, quant_s, rram_s, rram_cpu / quant_cpu, rram_cpu - exact_cpu, programming_s)
        )
        print(
            f"{name:<28} quant {quant_s:7.3f} s  rram {rram_s:7.3f} s  "
            f"({rram_s / quant_s:.2f}x, CPU {rram_cpu / quant_cpu:.2f}x; read noise "
            f"{rram_cpu - exact_cpu:.3f} s CPU, programming {programming_s:.3f} s)",
            flush=True,
        )
        if "mobilenet" in name:
            profile = profile_of(rram, feeds)
            print(profile)
    programming = {memo: sensitivity_programming(memo) for memo in (False, True)}
    for memo, (programming_s, total_s, count) in programming.items():
        print(
            f"eval --seeds 10 --sensitivity, LeNet, memo {'on' if memo else 'off'}: "
            f"{programming_s:.2f} s programming ({count} tile programmings) of {total_s:.2f} s"
        )
    lines = [
        "## Cost of device noise (`benchmarks/noise_cost.py`)",
        "",
        f"Time per batch, best of {args.repeat}: `quant` and `rram` on the same default "
        "program (8-bit weights in 2-bit cells, 128x128 tiles, 1-bit DAC steps, 8-bit ADC). "
        "`rram` reads each layer of reads shorter than 128 rows with one "
        "`noisy_read_accumulate` call per input sign (float32 sums of the noisy cells, "
        "over the set bits of 1-bit digits in reads of 24 rows and 32 columns or more, "
        "input/read/output noise from the counter-based Gaussian, format 3, and the ADC in "
        "one kernel), taller ones read by read (onnxruntime's float GEMMs, then the "
        "Gaussian and the ADC kernels). `rram / quant` compares wall times, `CPU` the "
        "processes' CPU times (both threads; steadier when other work shares the cores); "
        "`read noise` is the CPU time of `rram` minus `rram` with its read and output noise "
        "off (the same noisy cells): the Gaussians and sigmas; `programming` the rram "
        f"executor's construction. Load average at the end: {os.getloadavg()[0]:.1f} "
        "(2 cores shared with other work: compare the columns of one row).",
        "",
        "| program | quant s | rram s | rram / quant | CPU | read noise CPU s | programming s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, quant_s, rram_s, cpu_ratio, noise_s, programming_s in rows:
        lines.append(
            f"| {name} | {quant_s:.3f} | {rram_s:.3f} | {rram_s / quant_s:.2f}x "
            f"| {cpu_ratio:.2f}x | {noise_s:.3f} | {programming_s:.3f} |"
        )
    (off_s, off_total, off_count), (on_s, on_total, on_count) = (
        programming[False],
        programming[True],
    )
    lines += [
        "",
        "`xbarc eval --noise rram --seeds 10 --sensitivity` on the digits LeNet (360 "
        f"images): {off_s:.2f} s programming chips ({off_count} tile programmings) of "
        f"{off_total:.2f} s when every pass programs its chip; {on_s:.2f} s ({on_count}) "
        f"of {on_total:.2f} s with each chip seed programmed once (`devices."
        "programming_memo`, the same bits).",
        "",
        "Noise format 2 (issue 18): read noise is drawn inside `noisy_read_accumulate` "
        "(one key per layer read-out and input sign, the position of each conversion), "
        "each normal by a float32 Box-Muller transform of a splitmix64 hash (before: a "
        "float64 ziggurat), and the noisy cells' sums are float32 in a fixed row order; "
        "every `rram` and `pcm` output changed (`output_hashes.json`: 352 hashes of the "
        "26 noisy runs re-recorded; the 576 of the 37 `ideal` and `quant` runs unchanged). "
        "The set-bit sums (issue 18, round two) add the same float32 terms in the same "
        "order: no output changed (`output_hashes.py --check`: 0 of 964 differ). Noise "
        "format 3 (round three): each pair of normals from two 32-bit lowbias32 hashes "
        "within a block of 1024 pairs keyed by splitmix64, the angle reduced to an octant "
        "and shorter polynomials, 1.4-1.6x cheaper a draw (`benchmarks/normal_speed.py`); "
        "the 352 noisy hashes re-recorded again, the 576 others unchanged.",
        "",
        "Goal (issue 18): rram at most 1.5x quant. Where a digits mobilenet `rram` run "
        "spends its time (cProfile, own time):",
        "",
        "```",
        profile,
        "```",
    ]
    record_if(args.record, "noise_cost", "\n".join(lines))


if __name__ == "__main__":
    main()
