"""The memory one sample of a batch costs the runtime: measured against the estimate.

    python benchmarks/batch_memory.py [--models lenet,resnet,...] [--profiles quant,rram]
        [--batches 32,128] [--record]

`xbarc eval` and `xbarc calibrate` choose their batch size as a memory budget over
`xbarc.runtime.memory.sample_bytes(program, settings)`. This script measures what a
sample really costs: per program and profile, a fresh `xbarc.InferenceSession` runs one
batch of each size in `--batches` and the peak memory of the run is taken twice, as
tracemalloc's peak of Python and numpy allocations above the programmed chip, and as
the process's peak resident set (VmHWM, reset before the run through
/proc/self/clear_refs; it also sees onnxruntime's arena). The cost of a sample is the
slope between the two batch sizes (what one more sample adds); for a program that fixes
its batch (light ResNet-50) the run's peak at that batch over the batch instead.

Models: the digits networks of tests/fixtures/digits (mlp, lenet, resnet, mobilenet;
`lenet-squeeze`: LeNet pruned to 80 % compiled with `--mapping squeeze`; `resnet-basis`:
the ResNet with `--strategy basis` at 16 tiles) and `resnet50`, onnx's light ResNet-50
(fixed batch 1; in `quant` and `rram` one image takes minutes).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record  # noqa: E402

import xbarc  # noqa: E402
from xbarc.cli import main as xbarc_main  # noqa: E402
from xbarc.runtime.memory import sample_cost  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
MODELS = {
    # name: (model, compile options)
    "mlp": (DIGITS / "mlp.onnx", ["--input-shape", "x=1x1x8x8"]),
    "lenet": (DIGITS / "lenet.onnx", ["--input-shape", "x=1x1x8x8"]),
    "resnet": (DIGITS / "resnet.onnx", ["--input-shape", "x=1x1x8x8"]),
    "mobilenet": (DIGITS / "mobilenet.onnx", ["--input-shape", "x=1x1x8x8"]),
    "lenet-squeeze": (
        DIGITS / "lenet_p80.onnx",
        ["--input-shape", "x=1x1x8x8", "--mapping", "squeeze"],
    ),
    "resnet-basis": (
        DIGITS / "resnet.onnx",
        ["--input-shape", "x=1x1x8x8", "--strategy", "basis", "--tiles", "16"],
    ),
    "resnet50": (RESNET50, ["--tiles", "128"]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default="mlp,lenet,resnet,mobilenet,lenet-squeeze,resnet-basis,resnet50",
        help=f"comma-separated, from {', '.join(MODELS)} (default all; resnet50 runs only "
        "in ideal unless --slow)",
    )
    parser.add_argument(
        "--profiles",
        default="ideal,quant,rram",
        help="comma-separated noise profiles to measure (default ideal,quant,rram)",
    )
    parser.add_argument(
        "--batches",
        default="32,160",
        help="two batch sizes: the cost of a sample is the slope between them (default 32,160)",
    )
    parser.add_argument(
        "--slow",
        action="store_true",
        help="also run light ResNet-50 in the quantized profiles (minutes each)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the table to benchmarks/RESULTS.md"
    )
    return parser


def peak_rss() -> int:
    """The process's peak resident set since the last `reset_peak_rss`, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def run_peak(program: Path, profile: str, feeds: dict[str, np.ndarray]) -> tuple[int, int]:
    """(tracemalloc peak, resident peak) of one run of a fresh session on `feeds`, above
    what the session held before the run (its programmed chip)."""
    gc.collect()
    tracemalloc.start()
    session = xbarc.InferenceSession(program, noise=profile)
    gc.collect()
    traced_before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    rss_before = resident()
    reset_peak_rss()
    session.run(None, feeds)
    traced = tracemalloc.get_traced_memory()[1] - traced_before
    rss = peak_rss() - rss_before
    tracemalloc.stop()
    del session
    return traced, rss


def inputs_of(program: Path, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    session = xbarc.InferenceSession(program)
    rng = np.random.default_rng(seed)
    feeds = {}
    for graph_input in session.program.inputs:
        shape = graph_input.type.static_shape()
        feeds[graph_input.name] = rng.random((batch, *shape[1:]), dtype=np.float32)
    return feeds


def measure(program: Path, profile: str, batches: tuple[int, int]) -> dict:
    """Estimated and measured bytes a sample of `program` costs in `profile`."""
    session = xbarc.InferenceSession(program, noise=profile)
    fixed = any(graph_input.fixed_batch for graph_input in session.program.inputs)
    cost = sample_cost(session.program, session.settings)
    if fixed:
        size = session.program.inputs[0].type.static_shape()[0]
        feeds = inputs_of(program, size)
        session.run(None, feeds)  # warm: Numba kernels loaded
        traced, rss = run_peak(program, profile, feeds)
        return {"estimate": cost.total, "traced": traced / size, "rss": rss / size, "batch": size}
    small, large = batches
    session.run(None, inputs_of(program, small))  # warm: Numba kernels loaded
    traced_small, rss_small = run_peak(program, profile, inputs_of(program, small))
    traced_large, rss_large = run_peak(program, profile, inputs_of(program, large))
    return {
        "estimate": cost.total,
        "traced": (traced_large - traced_small) / (large - small),
        "rss": (rss_large - rss_small) / (large - small),
        "batch": f"{small}->{large}",
    }


def compile_model(name: str, folder: Path) -> Path:
    model, options = MODELS[name]
    program = folder / f"{name}.xbar"
    status = xbarc_main(["compile", str(model), *options, "-o", str(program)])
    if status != 0:
        raise SystemExit(f"compile of {name} failed")
    return program


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name for name in args.models.split(",") if name]
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown[0]!r}; choose from {', '.join(MODELS)}")
    profiles = [profile for profile in args.profiles.split(",") if profile]
    small, large = (int(b) for b in args.batches.split(","))
    rows = [
        "| program | profile | batch | estimate KB/sample | tracemalloc KB/sample | "
        "peak RSS KB/sample | measured / estimate |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            program = compile_model(name, Path(folder))
            for profile in profiles:
                if name == "resnet50" and profile != "ideal" and not args.slow:
                    continue
                figures = measure(program, profile, (small, large))
                measured = max(figures["traced"], figures["rss"])
                ratio = measured / figures["estimate"]
                row = (
                    f"| {name} | {profile} | {figures['batch']} | {figures['estimate'] / 1e3:.1f} "
                    f"| {figures['traced'] / 1e3:.1f} | {figures['rss'] / 1e3:.1f} | {ratio:.2f} |"
                )
                rows.append(row)
                print(row, flush=True)
    body = "\n".join(
        [
            "Bytes one sample of a batch costs the runtime (`benchmarks/batch_memory.py`): "
            "the estimate `xbarc.runtime.memory.sample_bytes` that eval and calibrate divide "
            "their memory budget by, against the measured slope of a run's peak between two "
            "batch sizes (tracemalloc: numpy and Python; peak RSS: everything, onnxruntime "
            "included); measured / estimate takes the larger of the two.",
            "",
            *rows,
        ]
    )
    if args.record:
        record("batch memory", body)
        print("recorded in benchmarks/RESULTS.md")
    else:
        print("(not recorded: add --record to write benchmarks/RESULTS.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
