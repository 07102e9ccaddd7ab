"""Observed runs: `xbarc run` / `eval`'s ADC report on the fast read paths.

    python benchmarks/observed_speed.py [--repeat 5] [--record]

`xbarc run` and `xbarc eval` observe every quantized run's read sums for their ADC report
(a `ReadSpread`, `xbarc/adc_report.observe_reads`). Until this change any observer sent
every exact layer read by read (one integer GEMM per read and DAC slice, the partial sums
through the histogram kernel); now a `ReadSpread` keeps the bit-plane, sparse and fused
paths, which count its sample beside their kernels (`runtime/observed_reads.py`), with the
same figures.

1. Per digits fixture (batch 360 of tests/fixtures/digits/digits_test.npz), the faithful
   default (`compile` defaults, tiles=4096) and `--cell-bits 8`, `quant`, the same
   program three ways in the same process, runs interleaved: unobserved; observed by a
   `ReadSpread` (now); observed read by read (before: the spread behind a plain callable,
   which still takes that way). The two observed runs must report the same figures and
   all three give the same bits (checked). Wall ms best of `--repeat`, CPU ms of that run
   in brackets (the machine is shared: the CPU time says what a quiet one would take).
2. `xbarc eval` on LeNet end to end (the README's command, `--noise quant`, all 360
   samples), as a subprocess: now, and before (the same command with the executor's
   `_spread` answering None, the old way). Wall seconds best of `--repeat`, including
   Python's start and Numba's cache loads.
3. `calibrate` (the API of `xbarc calibrate`) on the 360 samples, faithful default, in
   this process: now (every read sum counted beside the fast kernels, `ReadFractions`)
   and before (read by read); the same calibration (checked).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402
from xbarc.runtime.read_spread import ReadSpread  # noqa: E402

# Where an observed pass's time went (cProfile own time, 3 warm runs of the digits ResNet,
# faithful default, batch 360, load about 2; measured while writing observed_reads.py)
PROFILE = """\
Where the time went. Before, the digits ResNet's observed `quant` pass read every layer read
by read: per run 212 ms unfolding each DAC slice of each sign (`unfold_numba`), 139 ms in
onnxruntime's integer GEMMs (one per read and slice), 94 ms in the ADC kernel over the
buffered sums and 43 ms in the histogram kernel, against 137 ms for the whole unobserved
run. Now the bit-plane kernel runs as unobserved, and the side kernel that computes and
counts the sampled sums from the same packed planes (`read_spread_kernels.sampled_bitplane`:
AND + popcount of a sixteenth of the sums, then a table increment per sum) takes 19 ms of
CPU a run on one thread (17.7 M counted sums: about 1.1 ns each, nearly all of it the
counting; the sums themselves 0.4 ns); the replay of `ReadOut`'s batches (`observed_calls`)
is kept between batches of the same shape, and the rest (the slices' non-zero flags, the
tallies) is under 0.1 ms a layer. The counting is the floor: a table increment per counted
sum, four tables taking turns, unsigned indices (signed ones cost a wraparound test each:
3x). Small networks pay that per layer: the MLP (three layers, 2 ms a run) the most.
`calibrate` counts every sum of its second pass (no sample) the same way, binned as
fractions of the full scale: before, its observer's numpy (a float64 division, a clip and a
bincount per sum) was 60 to 70 % of a calibration."""

DIGITS = ROOT / "tests" / "fixtures" / "digits"
FIXTURES = ("lenet", "resnet", "mobilenet", "mlp")
BATCH = 360
# `xbarc eval` the old way: an observer of read sums sends every exact layer read by read
BEFORE = (
    "import sys; import xbarc.runtime.executor as e; e.Executor._spread = lambda self: None; "
    "from xbarc.cli import main; sys.exit(main(sys.argv[1:]))"
)


def counts(spread: ReadSpread) -> dict:
    return {
        layer: (c.histogram.tobytes(), c.sums, c.counted, c.clipped, c.full_scale)
        for layer, c in spread._layers.items()
    }


def program_table(repeat: int) -> tuple[list[str], list[float]]:
    """Part 1: the rows of the table, and the observed / unobserved ratios (now)."""
    feeds = {"x": np.load(DIGITS / "digits_test.npz")["x"][:BATCH]}
    rows, ratios = [], []
    for cell_bits in (None, 8):
        setting = "faithful default" if cell_bits is None else "--cell-bits 8"
        for name in FIXTURES:
            options = CompileOptions(
                tiles=4096, input_shapes={"x": (1, 1, 8, 8)}, cell_bits=cell_bits
            )
            program = compile_onnx(DIGITS / f"{name}.onnx", options)
            plain = Executor(program, noise_settings("quant"), Seeds.derive(0))
            now = Executor(program, noise_settings("quant"), Seeds.derive(0))
            before = Executor(program, noise_settings("quant"), Seeds.derive(0))
            now_spread = ReadSpread(now.adc_levels, 99.99)
            before_spread = ReadSpread(before.adc_levels, 99.99)
            now.on_read_sums = now_spread
            before.on_read_sums = lambda layer, sums, scales, s=before_spread: s(
                layer, sums, scales
            )
            outputs = [executor.run(feeds) for executor in (plain, now, before)]
            for output in program.outputs:
                for other in outputs[1:]:
                    np.testing.assert_array_equal(outputs[0][output], other[output])
            assert counts(now_spread) == counts(before_spread), name
            times = {"plain": [], "now": [], "before": []}
            for _ in range(repeat):  # interleaved: the machine's load moves them alike
                for key, executor in (("plain", plain), ("now", now), ("before", before)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    executor.run(feeds)
                    times[key].append((time.perf_counter() - wall, time.process_time() - cpu))
            best = {key: min(values) for key, values in times.items()}
            ratio = best["now"][0] / best["plain"][0]
            ratios.append(ratio)
            paths = "/".join(sorted(set(plain._paths.values())))
            cpu_ratio = best["now"][1] / best["plain"][1]
            rows.append(
                f"| {name} | {setting} | {paths} | {ms(best['plain'])} | {ms(best['now'])} | "
                f"{ms(best['before'])} | {ratio:.2f} ({cpu_ratio:.2f}) | "
                f"{best['before'][0] / best['plain'][0]:.2f} |"
            )
            print(rows[-1], flush=True)
    return rows, ratios


def ms(figure: tuple[float, float]) -> str:
    wall, cpu = figure
    return f"{wall * 1e3:.1f} ({cpu * 1e3:.0f})"


def eval_times(repeat: int) -> dict[str, tuple[float, float]]:
    """Part 2: `xbarc eval` on LeNet, (best wall seconds, CPU seconds of the child
    process, best) now and before."""
    with tempfile.TemporaryDirectory() as folder:
        program = Path(folder) / "lenet.xbar"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        compile_args = [
            "compile",
            str(DIGITS / "lenet.onnx"),
            "--tiles",
            "64",
            "--input-shape",
            "x=1x1x8x8",
            "-o",
            str(program),
        ]
        subprocess.run(
            [sys.executable, "-m", "xbarc", *compile_args], check=True, env=env, cwd=ROOT
        )
        args = [
            "eval",
            str(program),
            "--reference",
            str(DIGITS / "lenet.onnx"),
            "--data",
            str(DIGITS / "digits_test.npz"),
            "--labels",
            "y",
            "--noise",
            "quant",
            "--quiet",
        ]
        commands = {
            "now": [sys.executable, "-m", "xbarc", *args],
            "before": [sys.executable, "-c", BEFORE, *args],
        }
        reports = {}
        best = {key: (float("inf"), float("inf")) for key in commands}
        for _ in range(repeat + 1):  # the first: Numba's caches
            for key, command in commands.items():
                start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(
                    command, check=True, env=env, cwd=ROOT, capture_output=True, text=True
                )
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                wall = time.perf_counter() - start
                best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
                reports[key] = done.stdout
        assert reports["now"] == reports["before"], "the reports differ"
        return best


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (best taken)")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def calibrate_times(repeat: int) -> list[str]:
    """Part 3: one line per fixture, calibrate's seconds now and before."""
    from xbarc.calibrate import calibrate

    data = {"x": np.load(DIGITS / "digits_test.npz")["x"][:BATCH]}
    lines = []
    fast = Executor._spread
    for name in FIXTURES:
        options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
        program = compile_onnx(DIGITS / f"{name}.onnx", options)
        best = {"now": float("inf"), "before": float("inf")}
        found = {}
        calibrate(program, {"x": data["x"][:8]})  # Numba's caches
        for _ in range(max(1, repeat // 2)):
            for key in ("now", "before"):
                Executor._spread = fast if key == "now" else (lambda self: None)  # type: ignore[method-assign]
                start = time.perf_counter()
                found[key] = calibrate(program, data).calibration
                best[key] = min(best[key], time.perf_counter() - start)
        Executor._spread = fast  # type: ignore[method-assign]
        assert found["now"] == found["before"], name
        lines.append(
            f"| {name} | {best['now']:.2f} | {best['before']:.2f} | "
            f"{best['before'] / best['now']:.1f}x |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    args = build_parser().parse_args()
    load = os.getloadavg()[0]
    header = [
        "| fixture | program | paths | unobserved ms | observed now ms | observed before ms "
        "| now / unobserved (CPU) | before / unobserved |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    rows, ratios = program_table(args.repeat)
    times = eval_times(args.repeat)
    (now, now_cpu), (before, before_cpu) = times["now"], times["before"]
    calibration = calibrate_times(args.repeat)
    eval_line = (
        f"`xbarc eval` LeNet (360 samples, `--noise quant`, end to end, Python's start "
        f"included): {now:.2f} s wall ({now_cpu:.2f} s CPU) now, {before:.2f} s wall "
        f"({before_cpu:.2f} s CPU) before, the same report. Its quant pass is a few tens "
        "of ms of it: imports, the first kernel calls' cache loads and onnxruntime take "
        "the rest."
    )
    print(eval_line)
    body = "\n".join(
        [
            "## Observed runs",
            "",
            f"`python benchmarks/observed_speed.py --repeat {args.repeat} --record` (load "
            f"average {load:.1f} at the start). Wall ms best of {args.repeat}, CPU ms of "
            "that run in brackets; batch 360, `quant`; before: a `ReadSpread` read by read "
            "(how every observed run read before). Same bits and the same report figures "
            "either way (checked).",
            "",
            *header,
            *rows,
            "",
            f"Largest observed / unobserved now: {max(ratios):.2f} (target 1.15).",
            "",
            eval_line,
            "",
            PROFILE,
            "",
            "`calibrate` on the 360 samples (faithful default; the same calibration either way):",
            "",
            "| fixture | now s | before s | faster |",
            "|---|---:|---:|---:|",
            *calibration,
        ]
    )
    record_if(args.record, "observed_speed", body)


if __name__ == "__main__":
    main()
