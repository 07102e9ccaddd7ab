"""The faithful default against onnxruntime on the 16 digits fixtures, this checkout beside another.

    python benchmarks/mobile_speed.py [--base PATH] [--batches 360,540] [--rounds 3] [--record]

Issue 18 asks for the faithful default (`quant`, the compiler's defaults: 8-bit weights in
2-bit cells, differential, 1-bit DAC steps, 8-bit ADC over the full range) at most 40x
onnxruntime on the digits fixtures (batch 360-540); the MobileNets sat at 39-44x. This
script times every fixture at each batch (the 360 test images, repeated past 360) in
`quant` and in onnxruntime (float, the faster of all threads and one), in this checkout
and, with --base, in another checkout of the repository (e.g. `git worktree add
/tmp/base da9c2b4`): one subprocess per checkout and fixture, the two checkouts taking
turns fixture by fixture and round by round, so that both see the same load. A worker
compiles the fixture, runs it once (the chip programmed, the kernels compiled), then
times each batch best of --repeats runs (wall time, and the process CPU time of that
run: both threads' work, which a busy machine inflates less than the wall time). Each
checkout's figure is the best over --rounds rounds. onnxruntime runs the same model in
every worker, so its fastest run over all of them is both checkouts' reference. The
machine's load average is printed before and after. `--record` writes the section
"Faithful default on the MobileNets (benchmarks/mobile_speed.py)" of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]

from results import record_if  # noqa: E402

SECTION = "Faithful default on the MobileNets (benchmarks/mobile_speed.py)"
MODELS = tuple(
    f"{name}{suffix}"
    for name in ("mobilenet", "lenet", "resnet", "mlp")
    for suffix in ("", "_p50", "_p80", "_p90")
)

WORKER = r"""
import json, sys, time
import numpy as np
import onnxruntime
from pathlib import Path
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings

name, batches, repeats = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3])
digits = Path("tests/fixtures/digits")
images = np.load(digits / "digits_test.npz")["x"]
options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
program = compile_onnx(digits / f"{name}.onnx", options)
executor = Executor(program, noise_settings("quant"), Seeds.derive(0))


def best(run):
    run()
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        took = time.perf_counter() - start
        if took < wall:
            wall, cpu = took, time.process_time() - start_cpu
    return wall, cpu


sessions = []
for threads in (0, 1):
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = threads
    sessions.append(onnxruntime.InferenceSession(
        str(digits / f"{name}.onnx"), settings, providers=["CPUExecutionProvider"]))
result = {}
for batch in batches:
    x = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)
    ort = min(best(lambda s=s: s.run(None, {s.get_inputs()[0].name: x}))[0] for s in sessions)
    wall, cpu = best(lambda: executor.run({"x": x}))
    result[batch] = {"ort": ort, "quant": wall, "cpu": cpu}
print(json.dumps(result))
"""


def measure(tree: Path, name: str, batches: list[int], repeats: int) -> dict:
    """One worker in checkout `tree`: {batch: {"ort", "quant", "cpu"}} in seconds."""
    environment = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", WORKER, name, ",".join(map(str, batches)), str(repeats)],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return {int(batch): value for batch, value in json.loads(done.stdout).items()}


def revision(tree: Path) -> str:
    """The checkout's commit (short), or its directory's name outside git (an export)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else tree.name


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def keep_best(kept: dict, measured: dict) -> None:
    """Keep each batch's fastest `quant` run (with its CPU time) and fastest onnxruntime run
    over the rounds."""
    for batch, value in measured.items():
        best = kept.setdefault(batch, dict(value))
        if value["quant"] < best["quant"]:
            best["quant"], best["cpu"] = value["quant"], value["cpu"]
        best["ort"] = min(best["ort"], value["ort"])


def pool_onnxruntime(best: dict[str, dict[str, dict]]) -> None:
    """onnxruntime runs the same model whichever checkout's worker times it: the fastest
    of all its runs (every checkout, every round) is each one's reference, and its
    ratio is `quant` over that."""
    for name in next(iter(best.values())):
        for batch in next(iter(best.values()))[name]:
            fastest = min(runs[name][batch]["ort"] for runs in best.values())
            for runs in best.values():
                runs[name][batch]["ort"] = fastest
                runs[name][batch]["ratio"] = runs[name][batch]["quant"] / fastest


def report(trees: dict[str, Path], best: dict, batches: list[int], before: str) -> str:
    labels = list(trees)
    lines = [
        f"## {SECTION}",
        "",
        "The faithful default (`quant`, the compiler's defaults) against onnxruntime float "
        "on the digits fixtures, the checkouts taking turns fixture by fixture.",
        f"Load average before: {before}; after: {load()}. Batches {batches}; each figure "
        "the best of its rounds (wall time; CPU: the process's time in that run, both "
        "threads); x: against onnxruntime's fastest run of the fixture and batch, over "
        "every worker (it runs the same model in each).",
        "",
    ]
    header = "| fixture | batch | onnxruntime |"
    rule = "|---|---:|---:|"
    for label in labels:
        header += f" quant ({label}) | CPU ({label}) | x ({label}) |"
        rule += "---:|---:|---:|"
    lines += [header, rule]
    for name in best[labels[0]]:
        for batch in batches:
            row = f"| {name} | {batch} | {best[labels[0]][name][batch]['ort'] * 1e3:.2f} ms |"
            for label in labels:
                value = best[label][name][batch]
                row += (
                    f" {value['quant'] * 1e3:.1f} ms | {value['cpu'] * 1e3:.1f} ms |"
                    f" {value['ratio']:.1f}x |"
                )
            lines.append(row)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another checkout to time beside this one")
    parser.add_argument("--batches", default="360,540", help="batch sizes (default 360,540)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the fixtures")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per worker")
    parser.add_argument("--models", default=",".join(MODELS), help="digits fixtures")
    parser.add_argument("--record", action="store_true", help="write RESULTS.md's section")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    batches = [int(batch) for batch in args.batches.split(",")]
    trees = {revision(ROOT): ROOT}
    if args.base is not None:
        if not (args.base / "xbarc" / "__init__.py").is_file():
            parser.error(f"--base {args.base}: not a checkout of xbarc (no xbarc/__init__.py)")
        trees = {f"base {revision(args.base)}": args.base.resolve(), **trees}
    before = load()
    print(f"load average {before}", flush=True)
    best: dict[str, dict[str, dict]] = {label: {} for label in trees}
    started = time.perf_counter()
    for round_number in range(args.rounds):
        for name in args.models.split(","):
            for label, tree in trees.items():
                measured = measure(tree, name, batches, args.repeats)
                keep_best(best[label].setdefault(name, {}), measured)
                figures = ", ".join(
                    f"{batch}: {value['quant'] / value['ort']:.1f}x"
                    for batch, value in measured.items()
                )
                print(f"round {round_number + 1} {name} {label}: {figures}", flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")
    pool_onnxruntime(best)
    body = report(trees, best, batches, before)
    print(body)
    record_if(args.record, SECTION, body)


if __name__ == "__main__":
    main()
