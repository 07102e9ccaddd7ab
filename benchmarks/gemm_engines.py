"""Measure the GEMM engines of exact integer reads over a grid of layer shapes; write the table.

    python benchmarks/gemm_engines.py [--quick] [--repeat 5] [--write] [--record]

Each shape is one crossbar layer (a Gemm of R inputs and C outputs, or a 3x3 convolution
of R/9 input channels on 8x8 images, or a depthwise 3x3 convolution of C channels) with
random weights (dense, or 90 % pruned), compiled
for a chip of c-bit cells and d-bit DAC steps (8/7: unsliced cells and the 7-bit magnitude
in one step; 4/4: two slices of each; 2/1: the faithful default), and run in `quant`
(calibrated-like fixed ranges: the ADC's full scale known before the read) on a batch of
P patches. The layer's reads run on each engine (`Executor._fused_engine` forced):
- `fused`: `fused.fused_read_accumulate` (no unfold; float32 sums over tiles of patches);
- `gemm`: `fused.gemm_read_accumulate` (the digits gathered, no im2col; one onnxruntime
  integer GEMM per layer and slice, then the ADC kernel);
- `sparse`: `sparse_read.sparse_read_accumulate` (unfolded levels, non-zero cells);
- `by read`: onnxruntime's integer GEMM per read, the ADC kernel on the buffered sums;
- `blas`: the same read by read with numpy's float32 GEMM (BLAS) instead.
Every engine's output is checked bit for bit against `by read`. Printed: the best of
`--repeat` runs of the layer per engine (ms) and the fastest. `--write` rewrites
`xbarc/runtime/kernels/engines.toml`, the table the executor chooses engines from
(`engines.fastest`: nearest measured shape); `--record` the RESULTS.md section.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import machine, record_if  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import CrossbarLayer  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.kernels import engines, gemm  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

TABLE = HERE.parent / "xbarc" / "runtime" / "kernels" / "engines.toml"
CHIPS = {  # digit bits: (cell bits, DAC slice bits)
    7: (8, 8),
    4: (4, 4),
    1: (2, 1),
}


def layer_model(kind: str, rows: int, cols: int, pruned: bool, seed: int):
    """A one-layer ONNX model: Gemm [rows -> cols] or a 3x3 Conv of rows/9 channels."""
    rng = np.random.default_rng(seed)
    if kind == "gemm":
        weights = rng.normal(size=(rows, cols)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w"], ["y"])
        shape = ["N", rows]
    elif kind == "conv":
        weights = rng.normal(size=(cols, rows // 9, 3, 3)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        shape = ["N", rows // 9, 8, 8]
    else:  # depthwise: `cols` channels, each its own group of 9 rows
        weights = rng.normal(size=(cols, 1, 3, 3)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=cols)
        shape = ["N", cols, 8, 8]
    if pruned:
        weights[rng.random(weights.shape) < 0.9] = 0
    graph = helper.make_graph(
        [node],
        kind,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def numpy_blas(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """`gemm.integer_matmul` on numpy's float32 GEMM: exact (sums below 2^24)."""
    np.matmul(a.astype(np.float32), b.astype(np.float32), out=out, casting="unsafe")


def run_engine(executor: Executor, engine: str, layer: CrossbarLayer, x: np.ndarray):
    """The layer's output on `executor`, whose reads take `engine` (blas: by read on
    numpy's GEMM, which the by-read reads call through the `gemm` module)."""
    saved = gemm.integer_matmul
    if engine == "blas":
        gemm.integer_matmul = numpy_blas
    try:
        return executor.run_layer(layer, x)
    finally:
        gemm.integer_matmul = saved


def measure(kind, rows, cols, digit_bits, pruned, patches, repeat, folder):
    """(ReadShape, {engine: ms}) of one layer shape."""
    cell_bits, slice_bits = CHIPS[digit_bits]
    model = layer_model(kind, rows, cols, pruned, seed=rows * 1000 + cols)
    path = Path(folder) / "layer.onnx"
    path.write_bytes(model.SerializeToString())
    channels = cols if kind == "depthwise" else rows // 9
    feature_shape = (1, rows) if kind == "gemm" else (1, channels, 8, 8)
    program = compile_onnx(
        path,
        CompileOptions(
            tiles=4096,
            cell_bits=cell_bits,
            hw_set=(f"dac.slice_bits={slice_bits}",),
            input_shapes={"x": feature_shape},
        ),
    )
    layer = next(op for op in program.ops if isinstance(op, CrossbarLayer))
    batch = patches if kind == "gemm" else max(1, patches // 64)
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(batch, *feature_shape[1:])), 0).astype(np.float32)
    settings = noise_settings("quant", input_range=4.0)
    times: dict[str, float] = {}
    outputs = {}
    shape = None
    executors = {}
    for engine in ("by read", "fused", "gemm", "sparse", "blas"):
        executor = executors[engine] = Executor(program, settings, Seeds.derive(0))
        executor._fused_engine = lambda *args, e=engine: "by read" if e == "blas" else e  # type: ignore[method-assign]
        # bit-serial reads (1-bit digits) take the bit-plane path first; the table is for
        # the layers that do not (`Executor._choose_path`)
        executor._bitplane_reads = lambda plans: False  # type: ignore[method-assign]
        outputs[engine] = run_engine(executor, engine, layer, x)
        if executor._paths[layer.name] != "fused":
            raise SystemExit(f"{kind} {rows}x{cols}: the layer's reads are not on the fused path")
        if shape is None:
            plans = executor.plans[layer.name]
            read_columns = executor._fused_columns(plans)
            assert read_columns is not None
            shape = executor.read_shape(plans, read_columns, batch * (1 if kind == "gemm" else 64))
    # the engines take turns, run after run: a change in the machine's load meanwhile
    # weighs on each of them alike (blas is measured for the record only: one run)
    for turn in range(repeat):
        for engine, executor in executors.items():
            if engine == "blas" and turn:
                continue
            started = time.perf_counter()
            run_engine(executor, engine, layer, x)
            seconds = (time.perf_counter() - started) * 1e3
            times[engine] = min(times.get(engine, seconds), seconds)
    for engine, output in outputs.items():
        if not np.array_equal(output, outputs["by read"]):
            raise SystemExit(f"engine {engine} differs from by read at {kind} {rows}x{cols}")
    assert shape is not None
    return shape, times


def grid(quick: bool):
    layers = [("gemm", 32, 16), ("gemm", 128, 64), ("gemm", 512, 128), ("conv", 9, 8)]
    layers += [("conv", 72, 16), ("conv", 288, 32), ("depthwise", 9, 32)]
    bits = [7, 4, 1]
    density = [False, True]
    patches = [1024, 8192]
    if quick:
        layers, bits, density, patches = layers[1:2] + layers[3:4], [7], [False], [4096]
    shapes = list(itertools.product(layers, bits, density, patches))
    if not quick:  # convolutions of digits-sized images at batch 540: ~35 k patches
        convs = [layer for layer in layers if layer[0] != "gemm"]
        shapes += list(itertools.product(convs, [7, 4], density, [32768]))
    return shapes


def table_text(rows) -> str:
    lines = [
        "# GEMM engines of exact integer reads: milliseconds per layer run (best of N),",
        f"# measured by benchmarks/gemm_engines.py on {date.today()}, {machine()},",
        f"# load average {os.getloadavg()[0]:.2f}. The executor takes the nearest shape",
        "# (engines.fastest). Rewrite with: python benchmarks/gemm_engines.py --write",
    ]
    for shape, times in rows:
        ms = ", ".join(f'"{name}" = {value:.3f}' for name, value in times.items())
        lines += [
            "",
            "[[shape]]",
            f"rows = {shape.rows:.1f}",
            f"columns = {shape.columns}",
            f"patches = {shape.patches}",
            f"digit_bits = {shape.digit_bits}",
            f"slices = {shape.slices}",
            f"density = {shape.density:.3f}",
            f"unfolded_rows = {shape.unfolded_rows}",
            f"unfolds = {'true' if shape.unfolds else 'false'}",
            f"ms = {{ {ms} }}",
        ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes (a smoke run)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per engine; the best is kept (default 5)"
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite xbarc/runtime/kernels/engines.toml"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    measured = []
    header = (
        f"| layer | digit bits | density | patches | read rows | read cols | unfolded rows | "
        f"{' | '.join(engines.ENGINES)} | fastest |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for (kind, rows, cols), digit_bits, pruned, patches in grid(args.quick):
            shape, times = measure(
                kind, rows, cols, digit_bits, pruned, patches, args.repeat, folder
            )
            measured.append((shape, times))
            fastest = min(times, key=lambda name: times[name])
            cells = " | ".join(f"{times[name]:.2f}" for name in engines.ENGINES)
            line = (
                f"| {kind} {rows}x{cols} | {digit_bits} x {shape.slices} | {shape.density:.2f} | "
                f"{shape.patches} | {shape.rows:.0f} | {shape.columns} | {shape.unfolded_rows} | "
                f"{cells} | {fastest} |"
            )
            lines.append(line)
            print(line, flush=True)
    wins = {
        name: sum(1 for _, t in measured if min(t, key=lambda n: t[n]) == name)
        for name in engines.ENGINES
    }
    summary = ", ".join(f"{name} {count}" for name, count in wins.items())
    print(f"fastest: {summary} (of {len(measured)} shapes)")
    if args.write:
        TABLE.write_text(table_text(measured))
        print(f"wrote {TABLE}")
    body = "\n".join(
        [
            "## GEMM engines of exact integer reads (benchmarks/gemm_engines.py)",
            "",
            "One crossbar layer per row, run in `quant` (fixed ranges) on each engine, best of "
            f"{args.repeat} runs in ms; every engine's output bit-identical to `by read`. "
            f"Load average {os.getloadavg()[0]:.2f} at the end. The executor's table "
            "(`xbarc/runtime/kernels/engines.toml`) is written from these figures "
            "(`--write`); `blas` is measured for the record (one run), not chosen.",
            "",
            *lines,
            "",
            f"Fastest: {summary} (of {len(measured)} shapes).",
        ]
    )
    record_if(args.record, "gemm_engines", body)


if __name__ == "__main__":
    main()
