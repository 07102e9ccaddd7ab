"""Sweep throughput on Dask: points per minute of a 24-point sweep on 1 and 2 workers.

    python benchmarks/sweep_throughput.py [--model lenet] [--samples 360] [--seeds 2]
                                          [--workers 1,2] [--record]

The sweep: a digits fixture (tests/fixtures/digits) over tile=32x32,64x64,128x128,256x256
x mapping=dense,sparse,squeeze x adc_bits=6,8 under `rram`, `--seeds` chip seeds per point,
through the code `xbarc sweep` runs (xbarc.sweep.plan and run_point, on xbarc.distributed's
engine), each worker count from an empty study folder (every point compiled and
evaluated). Where the time goes, per worker count:

- start: opening the engine (1: nothing; N > 1: a LocalCluster of N worker processes);
- warm-up: each worker's first run of a program under `rram` (importing xbarc and loading
  or compiling the Numba kernels), one task per worker, in parallel;
- work: the 24 points (compile + eval), with the sum of the points' own compile and eval
  seconds (CPU-bound work in the workers; their sum over the work's wall time is the
  parallelism achieved) and the CPU seconds of the engine's processes a point;
- again: the same 24 points into another folder on the same workers, whose kernels are
  all loaded by now (the rate of a long sweep).

Points per minute are given over the work alone (a long sweep's rate) and end to end
(start + warm-up + work: what a 24-point sweep costs from a cold start). The machine's
load average is printed beside them: on a shared machine, other processes take cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402

from xbarc import distributed  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.distributed import EngineOptions  # noqa: E402
from xbarc.sweep import Knob, SweepOptions, plan, run_point  # noqa: E402

DIGITS = ROOT / "tests" / "fixtures" / "digits"
GRID = (
    Knob("tile", ("32x32", "64x64", "128x128", "256x256")),
    Knob("mapping", ("dense", "sparse", "squeeze")),
    Knob("adc_bits", ("6", "8")),
)


def warm_up(program, number: int) -> tuple[int, float]:
    """A worker's first run of a program under rram: (its process id, seconds)."""
    import numpy as np

    from xbarc.session import InferenceSession

    started = time.perf_counter()
    session = InferenceSession(program, noise="rram", seed=number)
    session.run(None, {"x": np.zeros((4, 1, 8, 8), np.float32)})
    return os.getpid(), time.perf_counter() - started


def cpu_seconds(pool) -> float:
    """The CPU seconds the engine's processes have used so far (this one's on 1 worker)."""
    if isinstance(pool, distributed.DaskEngine):
        return sum(pool.client.run(time.process_time).values())
    return time.process_time()


def measure(model: str, samples: int, seeds: int, workers: int, folder: Path) -> dict:
    """One sweep from an empty folder on `workers` workers: its timings."""
    options = SweepOptions(
        model=DIGITS / f"{model}.onnx",
        data=DIGITS / "digits_test.npz",
        labels="y",
        knobs=GRID,
        output=folder,
        seeds=seeds,
        noise="rram",
        base=CompileOptions(input_shapes={"x": (1, 1, 8, 8)}),
        samples=samples,
        engine=EngineOptions(workers=workers),
    )
    tasks = plan(options)
    # the same points again, into another folder: every kernel each worker needs is loaded
    again = plan(dataclasses.replace(options, output=folder.with_name(f"{folder.name}-again")))
    lenet = compile_onnx(DIGITS / "lenet.onnx", CompileOptions(input_shapes={"x": (1, 1, 8, 8)}))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with distributed.engine(options.engine) as pool:
        opened = time.perf_counter()
        warm = dict(result for _, result in pool.map(warm_up, range(workers), shared=lenet))
        warmed = time.perf_counter()
        cpu = cpu_seconds(pool)
        records = [record for _, record in pool.map(run_point, tasks)]
        done = time.perf_counter()
        cpu = cpu_seconds(pool) - cpu
        closed = time.perf_counter()
        cpu_again = cpu_seconds(pool)
        list(pool.map(run_point, again))
        steady = time.perf_counter() - closed
        cpu_again = cpu_seconds(pool) - cpu_again
    closed = time.perf_counter() - steady
    return {
        "workers": workers,
        "points": len(records),
        "start": opened - started,
        "warm": sorted(warm.values()),
        "warm_wall": warmed - opened,
        "work": done - warmed,
        "close": closed - done,
        "compile": sum(record["compile_seconds"] for record in records),
        "eval": sum(record["eval_seconds"] for record in records),
        "total": closed - started,
        "cpu": cpu,
        "steady": steady,
        "cpu_steady": cpu_again,
        "load": (load + os.getloadavg()[0]) / 2,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| workers | start s | warm-up s per worker | work s (compile + eval in the workers) "
        "| CPU s a point | points/min, work | points/min, end to end "
        "| again: work s, CPU s a point, points/min | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        warm = ", ".join(f"{seconds:.1f}" for seconds in row["warm"])
        lines.append(
            f"| {row['workers']} | {row['start']:.1f} | {warm} | {row['work']:.1f} "
            f"({row['compile']:.1f} + {row['eval']:.1f}) "
            f"| {row['cpu'] / row['points']:.2f} "
            f"| {row['points'] / row['work'] * 60:.0f} "
            f"| {row['points'] / row['total'] * 60:.0f} "
            f"| {row['steady']:.1f}, {row['cpu_steady'] / row['points']:.2f}, "
            f"{row['points'] / row['steady'] * 60:.0f} | {row['load']:.1f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="lenet", help="digits fixture swept (tests/fixtures/digits; lenet)"
    )
    parser.add_argument(
        "--samples", type=int, default=360, help="held-out digits per point (360: all)"
    )
    parser.add_argument("--seeds", type=int, default=2, help="chip seeds per point (2)")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to time, comma-separated (1,2)"
    )
    parser.add_argument(
        "--numba-threads",
        type=int,
        default=1,
        help="Numba threads in each worker process of a LocalCluster (1, as xbarc starts "
        "them; 1 worker is this process, with Numba's default)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the table to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    distributed.WORKER_ENVIRONMENT["NUMBA_NUM_THREADS"] = str(args.numba_threads)
    counts = [int(text) for text in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for workers in counts:
            row = measure(
                args.model, args.samples, args.seeds, workers, Path(folder) / str(workers)
            )
            print(table([row]).splitlines()[-1], flush=True)
            rows.append(row)
    body = [
        f"`python benchmarks/sweep_throughput.py --model {args.model} --samples {args.samples} "
        f"--seeds {args.seeds}`: a 24-point sweep (tile x mapping x adc_bits) of the digits "
        f"{args.model} under rram, {args.seeds} chip seeds x {args.samples} samples a point, "
        "every point compiled and evaluated, on 1 worker (this process, no Dask) and on a "
        f"LocalCluster of single-threaded worker processes (Numba on {args.numba_threads} "
        "thread(s) in each).",
        "",
        table(rows),
    ]
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        ratio = first["work"] / last["work"]
        steady = first["steady"] / last["steady"]
        whole = first["total"] / last["total"]
        body += [
            "",
            f"{last['workers']} workers against {first['workers']}: {ratio:.2f}x the points per "
            f"minute over the work, {steady:.2f}x again (kernels loaded), {whole:.2f}x end to "
            "end. The CPU seconds the points took "
            f"(compile + eval): {first['compile'] + first['eval']:.1f} s on 1 worker, "
            f"{last['compile'] + last['eval']:.1f} s over {last['workers']}.",
            "",
            "The load average counts the machine's runnable processes: above its "
            f"{os.cpu_count()} cores, the workers share the cores with other processes "
            "and cannot get more CPU than one process does, so the rates above are those "
            "of this machine at that load. The CPU seconds a point say what each point "
            "costs whatever the load: on idle cores, the workers would run at about "
            f"{last['workers']} x {first['cpu_steady'] / first['points']:.2f} / "
            f"{last['cpu_steady'] / last['points']:.2f} = "
            f"{last['workers'] * first['cpu_steady'] / last['cpu_steady']:.2f}x the rate of "
            "one process once their kernels are loaded (an estimate from the CPU seconds, "
            "not a measurement: the workers' extra CPU a point is Dask's own work and "
            "their thread pools sharing the cores).",
        ]
    text = "\n".join(body)
    print(text)
    record_if(args.record, "sweep throughput", text)


if __name__ == "__main__":
    main()
