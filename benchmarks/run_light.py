"""Time the runtime against onnxruntime on the same models, in the same run.

    python benchmarks/run_light.py [--models resnet50,squeezenet] [--repeat 5] [--no-record]

For each model: onnxruntime's time per batch, xbarc's `ideal` (8-bit, 2-bit cells, the
default sliced program) and `quant` with 8-bit DAC/ADC on 128x128 tiles (an unsliced
program: 8-bit cells, the whole input at once: `--cell-bits 8`, DAC slice of 8 bits), and
a bit-sliced `quant` run (2-bit cells, bit-serial inputs) whose rate is reported against
this machine's float32 GEMM rate on the same decomposed work (the GEMM shapes the
executor issues: every read of every input bit and weight slice). Programming the chip
happens once per session and is timed apart. Goals (issue 3): ideal at most 1.5x
onnxruntime, quant at most 3x, the bit-sliced run at least half the GEMM rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).parent))
from results import record  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.hardware import DacSpec  # noqa: E402
from xbarc.runtime.executor import Executor, RuntimeSettings, layer_columns  # noqa: E402

LIGHT = Path(onnxruntime.__file__).parent.parent / "onnx" / "backend" / "test" / "data" / "light"


def best_time(function, repeat: int) -> float:
    function()  # warm up (JIT, caches)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def gemm_rate(shapes: list[tuple[int, int, int]], repeat: int) -> float:
    """float32 FLOP/s of numpy's GEMM on the given (M, R, P) shapes: [M, R] @ [R, P]."""
    operands = [
        (np.random.rand(m, r).astype(np.float32), np.random.rand(r, p).astype(np.float32))
        for m, r, p in shapes
    ]
    flops = sum(2 * p * r * m for m, r, p in shapes)
    seconds = best_time(lambda: [a @ b for a, b in operands], repeat)
    return flops / seconds


def decomposed_shapes(executor: Executor, feeds) -> list[tuple[int, int, int]]:
    """The (read columns, rows, patches) of every GEMM the quantized run issues per input
    bit: each read's cells [M, rows] times its input columns [rows, N*P]."""
    values = executor.run_all(feeds)
    hardware = executor.program.hardware
    input_slices = -(-(executor.dac_bits - 1) // hardware.dac.slice_bits)
    shapes = []
    for layer in executor.program.layers():
        x = np.asarray(values[layer.input], dtype=np.float32)
        columns, _ = layer_columns(layer, x.shape)
        batch, _, _, pixels = columns(x).shape
        for plan in executor.plans[layer.name]:
            for read in plan.reads:
                columns_read, rows = read.cells_t.shape
                shapes.extend([(columns_read, rows, batch * pixels)] * input_slices)
    return shapes


def measure(name: str, repeat: int) -> tuple:
    path = LIGHT / f"light_{name}.onnx"
    reference = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_input = reference.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(graph_input.shape).astype(np.float32)
    feeds = {graph_input.name: x}
    ort_s = best_time(lambda: reference.run(None, feeds), repeat)

    sliced = compile_onnx(path, CompileOptions(tiles=128))
    started = time.perf_counter()
    ideal = Executor(sliced)
    program_s = time.perf_counter() - started
    ideal_s = best_time(lambda: ideal.run(feeds), repeat)

    whole = compile_onnx(path, CompileOptions(tiles=128, weight_bits=8, cell_bits=8))
    whole = replace(whole, hardware=replace(whole.hardware, dac=DacSpec(bits=8, slice_bits=8)))
    quant = Executor(whole, RuntimeSettings("quant"))
    quant_s = best_time(lambda: quant.run(feeds), repeat)

    bit_sliced = Executor(sliced, RuntimeSettings("quant"))
    sliced_s = best_time(lambda: bit_sliced.run(feeds), max(1, repeat // 2))
    shapes = decomposed_shapes(bit_sliced, feeds)
    flops = sum(2 * m * r * p for m, r, p in shapes)
    fraction = flops / sliced_s / gemm_rate(shapes, 1)
    print(
        f"{name:<14} onnxruntime {ort_s * 1e3:8.1f} ms  ideal {ideal_s * 1e3:8.1f} ms "
        f"({ideal_s / ort_s:.2f}x)  quant {quant_s * 1e3:8.1f} ms ({quant_s / ort_s:.2f}x)  "
        f"bit-sliced {sliced_s:6.2f} s at {fraction:.2f} of GEMM rate  "
        f"(programming {program_s:.2f} s)",
        flush=True,
    )
    return (name, ort_s, program_s, ideal_s, quant_s, sliced_s, fraction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,squeezenet,inception_v1")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = [measure(name, args.repeat) for name in args.models.split(",")]
    lines = [
        "## Runtime against onnxruntime (`benchmarks/run_light.py`)",
        "",
        f"Batch 1, best of {args.repeat}; ratios are against onnxruntime measured in the same "
        "run. `quant` runs an unsliced program (8-bit cells, 8-bit DAC in one step, 8-bit "
        "ADC); `bit-sliced` the default program (2-bit cells, bit-serial DAC), its rate given "
        "as a fraction of numpy's float32 GEMM rate on the same decomposed GEMM shapes.",
        "",
        "| model | onnxruntime ms | ideal ms | ideal / ort | quant ms | quant / ort | "
        "bit-sliced s | of GEMM rate | programming s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ort_s, program_s, ideal_s, quant_s, sliced_s, fraction in rows:
        lines.append(
            f"| {name} | {ort_s * 1e3:.1f} | {ideal_s * 1e3:.1f} | {ideal_s / ort_s:.2f} | "
            f"{quant_s * 1e3:.1f} | {quant_s / ort_s:.2f} | {sliced_s:.2f} | {fraction:.2f} | "
            f"{program_s:.2f} |"
        )
    lines += ["", "Goals: ideal <= 1.5x, quant <= 3x onnxruntime; bit-sliced >= 0.5 of GEMM rate."]
    if not args.no_record:
        record("run_light", "\n".join(lines))


if __name__ == "__main__":
    main()
