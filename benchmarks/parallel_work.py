"""Where a copying kernel starts to pay for its second thread: `kernels.PARALLEL_WORK`.

    python benchmarks/parallel_work.py [--repeats 40] [--record]

`use_threads(work)` runs a kernel on the calling thread alone below PARALLEL_WORK output
elements (taps for a pool) and on every thread (XBARC_THREADS) above it. This script times
the kernels that ask by their work, on one thread and on two, over batches of the digits
LeNet's shapes (60 to 2160 items: 30 k to 10 M elements): `unfold` of [N, 8, 8, 8] by 3x3
(im2col), MaxPool 2x2 by 2 (`pool_pairs`) and 3x3 by 2 padded (the row kernel), the gather
of the gemm engine (`gather_digits_numba`, [72, N x 16] int8), `dequantize_items` ([16, N
x 64]) and `dac_planes` ([N, 8, 8, 8] to uint8 levels). The thread counts alternate, twice
each, and each keeps its best of --repeats runs; the load average is printed beside.
`--record` writes the section "Parallel work threshold (benchmarks/parallel_work.py)" of
RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # this checkout's xbarc

import numpy as np  # noqa: E402
from results import record_if  # noqa: E402
from timing import load  # noqa: E402

from xbarc.onnx_ops.pooling import pool_axes  # noqa: E402
from xbarc.runtime import kernels, pool_kernels  # noqa: E402
from xbarc.runtime.kernels import dac, fused, im2col  # noqa: E402

SECTION = "Parallel work threshold (benchmarks/parallel_work.py)"
BATCHES = (60, 120, 240, 540, 1080, 2160)


def best(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def cases(items: int) -> dict[str, tuple[int, Callable[[], object]]]:
    """Per kernel: its work (as it tells `use_threads`) and a run of it on `items` items."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((items, 8, 8, 8)).astype(np.float32)
    columns = np.empty((1, 72, items * 64), np.float32)
    pairs = pool_axes([8, 8], [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], "NOTSET", False)
    rows = pool_axes([8, 8], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], "NOTSET", False)
    padded = rng.integers(0, 128, (items, 129), dtype=np.uint8)
    offsets = rng.integers(0, 129, (72, 16)).astype(np.int64)
    digits = np.empty((72, items * 16), np.int8)
    acc = rng.integers(-(10**6), 10**6, (16, items * 64))
    image = np.empty((items, 16, 64), np.float32)
    scale = rng.random(16)
    levels = np.empty((2, 1, *x.shape), np.uint8)

    def gather() -> None:
        kernels.use_threads(digits.size)  # as `gemm_read_accumulate` asks
        fused.gather_digits_numba(padded, offsets, np.int32(0), np.int32(255), digits)

    def unfold() -> None:
        im2col.unfold(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, out=columns)

    return {
        "unfold 3x3": (columns.size, unfold),
        "MaxPool 2x2 by 2": (items * 8 * 16 * 4, lambda: pool_kernels.max_pool_numba(x, pairs)),
        "MaxPool 3x3 by 2, padded": (
            items * 8 * 16 * 9,
            lambda: pool_kernels.max_pool_numba(x, rows),
        ),
        "gather_digits": (digits.size, gather),
        "dequantize_items": (
            acc.size,
            lambda: fused.dequantize_items(acc, 255, 0.01, scale, image),
        ),
        "dac_planes": (levels.size, lambda: dac.dac_planes(x, 0.01, 8, 7, 1, out=levels)),
    }


def measure(repeats: int) -> list[tuple[str, int, float, float]]:
    """(kernel, work, seconds on one thread, on two) per kernel and batch."""
    rows = []
    threshold = kernels.PARALLEL_WORK
    try:
        for items in BATCHES:
            for name, (work, run) in cases(items).items():
                found = {1: float("inf"), 2: float("inf")}
                for _ in range(2):
                    for threads in (1, 2):
                        # every kernel below the threshold: one thread; above it: two
                        kernels.PARALLEL_WORK = 1 << 62 if threads == 1 else 0
                        os.environ[kernels.THREADS_VARIABLE] = str(threads)
                        found[threads] = min(found[threads], best(run, repeats))
                rows.append((name, work, found[1], found[2]))
                print(
                    f"{name:26s} work {work:9d}: 1 thread {found[1] * 1e6:8.1f} us, 2 threads "
                    f"{found[2] * 1e6:8.1f} us ({found[1] / found[2]:.2f}x)",
                    flush=True,
                )
    finally:
        kernels.PARALLEL_WORK = threshold
        os.environ.pop(kernels.THREADS_VARIABLE, None)
    return rows


def report(rows: list[tuple[str, int, float, float]], before: str, after: str) -> str:
    lines = [
        "A copying kernel on one thread and on two (`use_threads`), by its work: output "
        "elements (taps for a pool); best of the runs, the thread counts alternating. "
        f"`kernels.PARALLEL_WORK` is {kernels.PARALLEL_WORK} "
        f"(2^{kernels.PARALLEL_WORK.bit_length() - 1}): a kernel of less work runs on the "
        "calling thread alone.",
        "",
        "| kernel | work | 1 thread | 2 threads | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, work, one, two in sorted(rows, key=lambda row: (row[0], row[1])):
        lines.append(
            f"| {name} | {work} | {one * 1e6:.1f} us | {two * 1e6:.1f} us | {one / two:.2f}x |"
        )
    lines += ["", f"Load average {before} before, {after} after."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="runs per case (default 40)")
    parser.add_argument("--record", action="store_true", help="write the figures to RESULTS.md")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    before = load()
    print(f"load {before}")
    rows = measure(args.repeats)
    body = report(rows, before, load())
    print()
    print(body)
    record_if(args.record, SECTION, body)


if __name__ == "__main__":
    main()
