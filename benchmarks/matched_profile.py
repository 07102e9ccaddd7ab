"""Where the matched run's time goes: the digits LeNet in `quant` at matched settings, op by op.

    python benchmarks/matched_profile.py [--runs 100] [--record]

Builds the session `sim_speed.py --parts matched` times (8-bit weights in 8-bit cells, the
8-bit input in one DAC step, 8-bit ADC, calibrated ranges, batch 540) and times every op
of its program inside the run (the crossbar layers through `Executor.run_layer`, the
digital ops through `run_digital_op`), on one thread and on two (subprocesses with
XBARC_THREADS), alternating --rounds times. Per op: the best time over the runs, and the
engine that read each crossbar layer. The run's own best and median are printed beside
the sum of the ops' bests (what lies outside the ops: the run's bookkeeping). `--record`
writes the section "Matched run, op by op (benchmarks/matched_profile.py)" of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # this checkout's xbarc

from results import record_if  # noqa: E402
from timing import load  # noqa: E402

SECTION = "Matched run, op by op (benchmarks/matched_profile.py)"


def measure(runs: int) -> dict:
    """In this process: per op, its best seconds over `runs` runs; the runs' best and
    median; the layers' engines."""
    import numpy as np
    import sim_speed

    import xbarc
    from xbarc.calibrate import calibrate
    from xbarc.compiler import compile_onnx
    from xbarc.runtime import executor

    feeds, labels, images = sim_speed.digits_batch(540)
    model = sim_speed.DIGITS / "lenet.onnx"
    program = calibrate(compile_onnx(model, sim_speed.MATCHED), {"x": images})
    session = xbarc.InferenceSession(program, "quant", overrides=list(sim_speed.MATCHED_OVERRIDES))
    times: dict[str, list[float]] = defaultdict(list)
    run_layer = executor.Executor.run_layer
    run_op = executor.run_digital_op

    def timed_layer(self, layer, x):
        started = time.perf_counter()
        result = run_layer(self, layer, x)
        times[layer.name].append(time.perf_counter() - started)
        return result

    def timed_op(op, values, store, donated):
        started = time.perf_counter()
        result = run_op(op, values, store, donated)
        times[op.name].append(time.perf_counter() - started)
        return result

    executor.Executor.run_layer = timed_layer  # type: ignore[method-assign]
    executor.run_digital_op = timed_op
    try:
        session.run(None, feeds)  # warm-up: chip programmed, kernels compiled
        times.clear()
        totals = []
        for _ in range(runs):
            started = time.perf_counter()
            outputs = session.run(None, feeds)
            totals.append(time.perf_counter() - started)
    finally:
        executor.Executor.run_layer = run_layer  # type: ignore[method-assign]
        executor.run_digital_op = run_op
    kinds = {op.name: getattr(op, "op_type", "crossbar") for op in program.ops}
    engines = {name: engine for (name, _), engine in session._executor.layer_engines.items()}
    totals.sort()
    return {
        "ops": [
            {
                "name": name,
                "kind": kinds.get(name, "?"),
                "engine": engines.get(name, ""),
                "best": min(seconds),
            }
            for name, seconds in times.items()
        ],  # fmt: skip
        "best": totals[0],
        "median": totals[len(totals) // 2],
        "accuracy": float((np.asarray(outputs[0]).argmax(axis=1) == labels).mean()),
    }


def worker(threads: int, runs: int) -> dict:
    """`measure` in a subprocess with XBARC_THREADS=threads."""
    env = {**os.environ, "XBARC_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--runs", str(runs)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"matched_profile: the {threads}-thread run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(found: list[dict]) -> dict:
    """Per op and for the run, the best over the rounds."""
    first = found[0]
    ops = []
    for index, op in enumerate(first["ops"]):
        ops.append({**op, "best": min(round_["ops"][index]["best"] for round_ in found)})
    return {
        "ops": ops,
        "best": min(round_["best"] for round_ in found),
        "median": min(round_["median"] for round_ in found),
        "accuracy": first["accuracy"],
    }


def report(results: dict[int, dict], before: str, after: str) -> str:
    one, two = results[1], results[2]
    lines = [
        "The matched digits LeNet in `quant` (sim_speed's matched settings, batch 540), "
        "op by op: each op's best time inside the runs, on one thread and on two "
        f"(XBARC_THREADS); accuracy {one['accuracy']:.2%}.",
        "",
        "| op | kind | engine | 1 thread | 2 threads |",
        "|---|---|---|---:|---:|",
    ]
    for op, other in zip(one["ops"], two["ops"], strict=True):
        lines.append(
            f"| {op['name']} | {op['kind']} | {op['engine']} | {op['best'] * 1e3:.3f} ms | "
            f"{other['best'] * 1e3:.3f} ms |"
        )
    for label, key in (("sum of the ops' bests", None), ("run, best", "best")):
        cells = []
        for found in (one, two):
            seconds = sum(op["best"] for op in found["ops"]) if key is None else found[key]
            cells.append(f"{seconds * 1e3:.3f} ms")
        lines.append(f"| {label} | | | {cells[0]} | {cells[1]} |")
    lines.append(
        f"| run, median | | | {one['median'] * 1e3:.3f} ms | {two['median'] * 1e3:.3f} ms |"
    )
    lines += ["", f"Load average {before} before, {after} after."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="1- and 2-thread runs, alternating (default 2)"
    )
    parser.add_argument("--worker", action="store_true", help="internal: measure, print JSON")
    parser.add_argument("--record", action="store_true", help="write the figures to RESULTS.md")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.worker:
        print(json.dumps(measure(args.runs)))
        return
    before = load()
    print(f"load {before}")
    found: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for threads in (1, 2):
            found[threads].append(worker(threads, args.runs))
    body = report({threads: best_of(rounds) for threads, rounds in found.items()}, before, load())
    print()
    print(body)
    record_if(args.record, SECTION, body)


if __name__ == "__main__":
    main()
