"""The floor of `rram` against `quant`: what each part of a noisy ADC conversion costs.

    python benchmarks/rram_floor.py [--fixtures resnet mobilenet] [--repeat 3] [--record]

On the digits fixtures (default program: 8-bit weights in 2-bit cells, 128x128 tiles,
1-bit DAC steps, 8-bit ADC; 360 images), per ADC conversion of `rram`'s noisy read kernel
(`noisy_read_accumulate`: every read column x active input slice x patch), all measured
in the same run, best of --repeat, wall time on the process's threads and CPU time:

- rram: the whole `rram` run;
- no noise: the same run, the kernel's reads without read or output noise (the same noisy
  cells: float sums and the ADC conversion, no normals and no sigma);
- sums: the same run, the kernel computing its float32 sums only (no conversion, so its
  outputs are wrong: a timing, nothing else);
- rest: the same run with the kernel skipped (unfold, pooling, the other layers);
- normals: `gaussian.normals` alone, as many draws as conversions, in runs of the kernel's
  CHUNK patches, on as many threads;
- quant: the whole `quant` run of the same program.

So rram - no noise is the noise (normals, sigma, the noisy addition), no noise - sums the
conversion, sums - rest the float sums, and rram / quant the acceptance ratio of issue 18
(at most 1.5). The last lines count the bit planes a fixed-point grid of the noisy
conductances would take (lever (a) of issue 18's round-two note) against quant's.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402
from timing import best_time  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime import executor as executor_module  # noqa: E402
from xbarc.runtime import gaussian  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.kernels import import_numba, noisy_read, thread_count  # noqa: E402
from xbarc.runtime.kernels.sparse_read import CHUNK  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
KERNEL = executor_module.noisy_read_accumulate


def kernel_variant(mode: str):
    """`noisy_read_accumulate` as the executor calls it, in one of the measured modes."""

    def variant(levels_in, columns, slice_bits, slices, sign, levels, signed, noise, acc):
        if mode == "rram":
            KERNEL(levels_in, columns, slice_bits, slices, sign, levels, signed, noise, acc)
        elif mode == "no noise":
            KERNEL(levels_in, columns, slice_bits, slices, sign, levels, signed, None, acc)
        elif mode == "sums":
            KERNEL(levels_in, columns, slice_bits, slices, sign, levels, signed, None, acc, False)

    return variant


def conversions(executor: Executor, feeds) -> tuple[int, float, float]:
    """The ADC conversions of the noisy kernel in one run (read columns x active input
    slices x patches, over every call), and the least and greatest noisy cell it read
    (levels of a cell, differential pairs as one signed cell)."""
    total = [0]
    low, high = [math.inf], [-math.inf]

    def counting(levels_in, columns, slice_bits, slices, sign, levels, signed, noise, acc):
        active = noisy_read.active_reads(levels_in, columns, slice_bits, slices)
        widths = np.diff(columns.read_columns)
        total[0] += int((active * widths[:, None]).sum()) * levels_in.shape[1]
        if len(columns.cells):
            low[0] = min(low[0], float(columns.cells.min()))
            high[0] = max(high[0], float(columns.cells.max()))
        KERNEL(levels_in, columns, slice_bits, slices, sign, levels, signed, noise, acc)

    executor_module.noisy_read_accumulate = counting
    try:
        executor.run(feeds)
    finally:
        executor_module.noisy_read_accumulate = KERNEL
    return total[0], low[0], high[0]


def normals_kernel():
    """A Numba kernel drawing `count` normals with `gaussian.normals` in runs of `chunk`,
    one task a run (as the noisy kernel draws them, one call per column and run)."""
    numba = import_numba()
    draw = gaussian.normals.compiled()

    @numba.njit(parallel=True)
    def many(key, count, chunk):
        runs = (count + chunk - 1) // chunk
        total = np.zeros(runs, dtype=np.float32)
        for run in numba.prange(runs):
            z = np.empty(chunk + 2, dtype=np.float32)
            wide = np.empty(chunk // 2 + 2, dtype=np.float32)
            turn = np.empty(chunk // 2 + 2, dtype=np.float32)
            exponents = np.empty(chunk // 2 + 2, dtype=np.float32)
            first = run * chunk
            length = min(chunk, count - first)
            offset = draw(key, np.uint64(first), length, z, wide, turn, exponents)
            total[run] = z[offset]  # keeps the draws
        return total

    return many


def measure(name: str, repeat: int, many) -> dict[str, float]:
    """Seconds per conversion (wall and CPU) of each part, for one digits fixture."""
    with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as npz:
        feeds = {"x": npz["x"]}
    options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
    program = compile_onnx(DIGITS / f"{name}.onnx", options)
    rram = Executor(program, noise_settings("rram"), Seeds.derive(0))
    quant = Executor(program, noise_settings("quant"))
    count, low, high = conversions(rram, feeds)
    figures = {"conversions": float(count), "low": low, "high": high}
    for mode in ("rram", "no noise", "sums", "rest"):
        executor_module.noisy_read_accumulate = kernel_variant(mode)
        try:
            wall, cpu = best_time(lambda: rram.run(feeds), repeat)  # noqa: B023
        finally:
            executor_module.noisy_read_accumulate = KERNEL
        figures[mode], figures[mode + " cpu"] = wall / count, cpu / count
    numba = import_numba()
    numba.set_num_threads(min(thread_count(), numba.config.NUMBA_NUM_THREADS))
    wall, cpu = best_time(lambda: many(np.uint64(7), count, CHUNK), repeat)
    figures["normals"], figures["normals cpu"] = wall / count, cpu / count
    wall, cpu = best_time(lambda: quant.run(feeds), repeat)
    figures["quant"], figures["quant cpu"] = wall / count, cpu / count
    return figures


def grid_planes(low: float, high: float, grid: int = 32) -> int:
    """The bit planes of a fixed-point grid of noisy conductances from `low` to `high`
    levels in steps of 1/`grid` level (exact integer sums by AND + popcount, as quant's
    2-bit cells take 2 planes), the offset -low held apart."""
    return max(1, math.ceil(math.log2((high - low) * grid + 1)))


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fixtures",
        nargs="+",
        default=["resnet", "mobilenet"],
        choices=["lenet", "resnet", "mobilenet", "mlp"],
        help="digits fixtures to measure (default: resnet mobilenet)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per part; the best is kept (default 3)"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


PARTS = ("rram", "no noise", "sums", "rest", "normals", "quant")


def main() -> None:
    args = build_parser().parse_args()
    many = normals_kernel()
    rows = []
    header = "| fixture | conversions | " + " | ".join(PARTS) + " | sums - rest | rram / quant |"
    rule = "|---|---:|" + "---:|" * (len(PARTS) + 2)
    measured = []
    for name in args.fixtures:
        f = measure(name, args.repeat, many)
        measured.append(f)

        def cell(part: str, kind: str, f=f) -> str:
            return f"{f[part + kind] * 1e9:.2f}"

        for kind, label in (("", "wall"), (" cpu", "CPU")):
            sums = (f["sums" + kind] - f["rest" + kind]) * 1e9
            ratio = f["rram" + kind] / f["quant" + kind]
            row = (
                f"| {name} ({label}) | {f['conversions'] / 1e6:.0f} M | "
                + " | ".join(cell(part, kind) for part in PARTS)
                + f" | {sums:.2f} | {ratio:.2f} |"
            )
            rows.append(row)
            print(row, flush=True)
    spans = [(f["low"], f["high"]) for f in measured]
    low, high = min(s[0] for s in spans), max(s[1] for s in spans)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    body = "\n".join(
        [
            "## The floor of rram / quant (`benchmarks/rram_floor.py`)",
            "",
            "Nanoseconds per ADC conversion of rram's noisy read kernel, digits fixtures at "
            f"360 images, best of {args.repeat}, all in one run; each fixture's first row "
            "wall time on the process's threads, its second the CPU time summed over them. "
            "`rram` the whole run; `no noise` the same run with the kernel's reads "
            "noiseless (the same noisy cells); `sums` the kernel's float32 sums only (no "
            "conversion); `rest` the run with the kernel skipped; `normals` "
            "`gaussian.normals` alone over as many draws; `quant` the whole quant run of the "
            f"same program. Load average at the end: {load}.",
            "",
            header,
            rule,
            *rows,
            "",
            f"The noisy cells read span {low:.2f} to {high:.2f} levels (2-bit cells: 0 to 3 "
            f"before programming noise, differential pairs as one signed cell): a fixed-point "
            f"grid of 1/32 level over that span takes {grid_planes(low, high)} bit planes "
            "a cell, against quant's 2.",
        ]
    )
    print(body.splitlines()[-1])
    record_if(args.record, "rram floor", body)


if __name__ == "__main__":
    main()
