"""Time one 480x640 image through a text-detection CNN in `quant`, beside onnxruntime.

    python benchmarks/quant_speed.py [--model det.onnx] [--repeat 3] [--note TEXT] [--record]

The model is a stand-in built here, deterministically, with the structure of PP-OCR's
text detector (DBNet on MobileNetV3, about 1 M weights): a strided stem, inverted
residual blocks (1x1 expand, 3x3 or 5x5 depthwise, squeeze-excite, 1x1 project, each
convolution followed by BatchNormalization and HardSwish or ReLU), an FPN neck (1x1
laterals, nearest Resize upsampling, 3x3 smoothing, concatenation at 1/4 scale) and the
DB head (3x3 conv, two 2x2 ConvTranspose upsamplings, Sigmoid). `--model PATH` also runs
a real model (its first input at 1x3x480x640), e.g. PP-OCRv4's `ch_PP-OCRv4_det_infer.onnx`
from the rapidocr_onnxruntime wheel.

Each model is compiled with the default options and run on one image in `quant` (the
default profile: 8-bit weights in 2-bit cells, 8-bit DAC fed 1 bit at a time, 8-bit ADC)
through `xbarc.InferenceSession` (no read observer). Printed and recorded: compile and
programming time; the first run in this process (cold: it loads the Numba kernels, from
Numba's on-disk cache when it is there, or compiles them) and the best of `--repeat`
warm runs; onnxruntime's time on the same image in the same run, and the ratios; the
top functions of a profiled warm run (cProfile, by own time) and the slowest layers.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402

import xbarc  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import CrossbarLayer  # noqa: E402

SHAPE = (1, 3, 480, 640)
KERNELS = HERE.parent / "runtime" / "kernels"


class Builder:
    """An ONNX graph grown node by node, its weights drawn from one seeded generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights = 0
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def constant(self, kind: str, value: np.ndarray) -> str:
        name = self.name(kind)
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def conv(self, x: str, cin: int, cout: int, kernel: int, stride=1, groups=1, act="hs"):
        """Conv (no bias) + BatchNormalization + activation (hs: HardSwish, relu, none)."""
        fan_in = cin // groups * kernel * kernel
        w = self.rng.standard_normal((cout, cin // groups, kernel, kernel)) / np.sqrt(fan_in)
        self.weights += w.size
        y = self.node(
            "Conv",
            [x, self.constant("w", w)],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[kernel // 2] * 4,
            group=groups,
        )
        # BatchNorm statistics spread per channel, as trained networks' are (folded into
        # the weights, they give the channels' weights different ranges)
        gamma = self.rng.uniform(0.3, 2.0, cout)
        beta = self.rng.normal(0.0, 0.2, cout)
        mean = self.rng.normal(0.0, 0.2, cout)
        var = self.rng.uniform(0.2, 2.0, cout)
        y = self.node(
            "BatchNormalization",
            [y] + [self.constant("bn", v) for v in (gamma, beta, mean, var)],
            epsilon=1e-5,
        )
        if act == "hs":
            return self.node("HardSwish", [y])
        if act == "relu":
            return self.node("Relu", [y])
        return y

    def squeeze_excite(self, x: str, channels: int) -> str:
        pooled = self.node("GlobalAveragePool", [x])
        mid = max(8, channels // 4)
        w1 = self.rng.standard_normal((mid, channels, 1, 1)) / np.sqrt(channels)
        w2 = self.rng.standard_normal((channels, mid, 1, 1)) / np.sqrt(mid)
        self.weights += w1.size + w2.size
        h = self.node("Conv", [pooled, self.constant("w", w1), self.constant("b", np.zeros(mid))])
        h = self.node("Relu", [h])
        h = self.node("Conv", [h, self.constant("w", w2), self.constant("b", np.zeros(channels))])
        gate = self.node("HardSigmoid", [h], alpha=0.2, beta=0.5)
        return self.node("Mul", [x, gate])

    def block(self, x, cin, expand, cout, kernel, stride, se, act):
        """MobileNetV3's inverted residual block."""
        h = self.conv(x, cin, expand, 1, act=act)
        h = self.conv(h, expand, expand, kernel, stride, groups=expand, act=act)
        if se:
            h = self.squeeze_excite(h, expand)
        h = self.conv(h, expand, cout, 1, act="none")
        return self.node("Add", [x, h]) if stride == 1 and cin == cout else h

    def upsample(self, x: str, factor: int) -> str:
        scales = self.constant("scales", np.array([1, 1, factor, factor]))
        return self.node("Resize", [x, "", scales], mode="nearest")


# MobileNetV3-large, scale 0.5 (PP-OCR's det backbone): (kernel, expand, out, SE, act,
# stride); the outputs of the last block of each stride feed the neck
BLOCKS = [
    (3, 16, 16, False, "relu", 1),
    (3, 32, 24, False, "relu", 2),
    (3, 40, 24, False, "relu", 1),
    (5, 40, 40, True, "relu", 2),
    (5, 64, 40, True, "relu", 1),
    (5, 64, 40, True, "relu", 1),
    (3, 120, 80, False, "hs", 2),
    (3, 104, 80, False, "hs", 1),
    (3, 96, 80, False, "hs", 1),
    (3, 96, 80, False, "hs", 1),
    (3, 240, 112, True, "hs", 1),
    (3, 336, 112, True, "hs", 1),
    (5, 336, 160, True, "hs", 2),
    (5, 480, 160, True, "hs", 1),
    (5, 480, 160, True, "hs", 1),
]


def stand_in(path: Path, seed: int = 0) -> int:
    """Write the stand-in detector to `path`; returns its number of weights."""
    b = Builder(seed)
    x = b.conv("x", 3, 16, 3, stride=2)
    cin, stride, features = 16, 2, []
    for index, (kernel, expand, cout, se, act, step) in enumerate(BLOCKS):
        x = b.block(x, cin, expand, cout, kernel, step, se, act)
        cin, stride = cout, stride * step
        last_of_stride = index + 1 == len(BLOCKS) or BLOCKS[index + 1][5] == 2
        if last_of_stride and stride >= 4:
            features.append((x, cout))
    # DBFPN: laterals to 96 channels, top-down sums, 3x3 smoothing to 24, all at 1/4
    laterals = [b.conv(f, c, 96, 1, act="none") for f, c in features]
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        merged.insert(0, b.node("Add", [lateral, b.upsample(merged[0], 2)]))
    smoothed = [b.conv(m, 96, 24, 3, act="none") for m in merged]
    scaled = [s if i == 0 else b.upsample(s, 2**i) for i, s in enumerate(smoothed)]
    fused = b.node("Concat", scaled, axis=1)
    # DB head: probability map at full resolution
    h = b.conv(fused, 96, 24, 3, act="relu")
    w = b.rng.standard_normal((24, 24, 2, 2)) / np.sqrt(96)
    h = b.node("ConvTranspose", [h, b.constant("w", w)], kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Relu", [h])
    w2 = b.rng.standard_normal((24, 1, 2, 2)) / np.sqrt(96)
    b.weights += w.size + w2.size
    h = b.node("ConvTranspose", [h, b.constant("w", w2)], kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("Sigmoid", [h])
    graph = helper.make_graph(
        b.nodes,
        "det_stand_in",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 1, SHAPE[2], SHAPE[3]])],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return b.weights


def image(seed: int = 0) -> np.ndarray:
    """A deterministic 480x640 'page': smooth background, dark strokes, normalized as
    PP-OCR normalizes its input."""
    rng = np.random.default_rng(seed)
    page = np.full(SHAPE[2:], 0.9) + 0.05 * rng.standard_normal(SHAPE[2:])
    for _ in range(40):  # text-line-like dark bars
        row, col = rng.integers(0, SHAPE[2] - 12), rng.integers(0, SHAPE[3] - 200)
        page[row : row + rng.integers(6, 12), col : col + rng.integers(40, 200)] = 0.1
    rgb = np.stack([page] * 3)[None]
    return ((rgb - 0.5) / 0.5).astype(np.float32)


def best(function, repeat: int) -> float:
    return timed(function, repeat)[0]


def timed(function, repeat: int) -> tuple[float, float]:
    """The best wall-clock seconds of `repeat` calls, and the best CPU seconds (all the
    process's threads): on a machine others load, CPU time says more about the work."""
    walls, cpus = [], []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def layer_times(session, feeds) -> list[tuple[float, CrossbarLayer]]:
    """Seconds each crossbar layer's `quant` run takes, on its input of this image."""
    executor = session._executor
    values = executor.run_all(feeds)
    times = []
    for op in executor.program.ops:
        if isinstance(op, CrossbarLayer):
            x = values[op.input]
            times.append((best(lambda op=op, x=x: executor.run_layer(op, x), 1), op))
    return sorted(times, key=lambda item: -item[0])


def describe(layer: CrossbarLayer) -> str:
    kernel = "x".join(map(str, layer.geometry.kernel)) if layer.geometry else "-"
    kind = "depthwise" if layer.groups > 1 and layer.cols == 1 else layer.kind
    return f"{kind} {kernel}, {layer.groups} x {layer.rows}x{layer.cols}"


def measure(label: str, path: Path, repeat: int, profile_top: int) -> dict:
    reference = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = reference.get_inputs()[0].name
    feeds = {name: image()}
    reference.run(None, feeds)
    row: dict = {"model": label}
    started = time.perf_counter()
    program = compile_onnx(path, CompileOptions(input_shapes={name: SHAPE}))
    row["compile"] = time.perf_counter() - started
    row["layers"] = sum(1 for _ in program.layers())
    row["weights"] = sum(layer.rows * layer.cols * layer.groups for layer in program.layers())
    started = time.perf_counter()
    session = xbarc.InferenceSession(program, noise="quant")
    row["programming"] = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    (quant,) = session.run(None, feeds)[:1]
    row["cold"], row["cold cpu"] = time.perf_counter() - started, time.process_time() - cpu
    row["warm"], row["warm cpu"] = timed(lambda: session.run(None, feeds), repeat)
    row["ort"], row["ort cpu"] = timed(lambda: reference.run(None, feeds), max(5, repeat))
    (expected,) = reference.run(None, feeds)[:1]
    row["error"] = float(np.abs(quant - expected).max())
    profiler = cProfile.Profile()
    profiler.runcall(session.run, None, feeds)
    stats = pstats.Stats(profiler)
    functions = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    total = sum(entry[2] for _, entry in functions)
    row["profile"] = [
        (f"{Path(file).name}:{line}({function})", entry[2], entry[2] / total)
        for (file, line, function), entry in functions[:profile_top]
    ]
    row["slowest"] = [
        (seconds, layer.name, describe(layer)) for seconds, layer in layer_times(session, feeds)[:8]
    ]
    print(
        f"{label}: {row['layers']} crossbar layers, {row['weights']} weights; compile "
        f"{row['compile']:.2f} s, programming {row['programming']:.2f} s; quant cold "
        f"{row['cold']:.2f} s (CPU {row['cold cpu']:.2f} s), warm {row['warm']:.2f} s (CPU "
        f"{row['warm cpu']:.2f} s); onnxruntime {row['ort'] * 1e3:.1f} ms (CPU "
        f"{row['ort cpu'] * 1e3:.1f} ms); warm / onnxruntime {row['warm'] / row['ort']:.0f}x "
        f"(CPU {row['warm cpu'] / row['ort cpu']:.0f}x); max |quant - onnxruntime| "
        f"{row['error']:.3f}",
        flush=True,
    )
    print("  top functions of a warm run (own time):")
    for function, seconds, share in row["profile"]:
        print(f"    {seconds:7.3f} s {share:6.1%}  {function}")
    print("  slowest layers:")
    for seconds, layer, what in row["slowest"]:
        print(f"    {seconds * 1e3:7.1f} ms  {layer} ({what})")
    return row


def numba_cache_present() -> bool:
    return any((KERNELS / "__pycache__").glob("*.nbi"))


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="also run this ONNX model (a real detector)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="warm runs timed; the best is kept (default 3)"
    )
    parser.add_argument("--top", type=int, default=10, help="functions of the profile shown")
    parser.add_argument("--note", default="", help="a paragraph recorded with the figures")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    cached = numba_cache_present()
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "det_stand_in.onnx"
        weights = stand_in(path)
        print(f"stand-in: {weights} weights", flush=True)
        rows.append(measure("stand-in (DBNet, MobileNetV3)", path, args.repeat, args.top))
    if args.model:
        rows.append(measure(args.model.name, args.model, args.repeat, args.top))
    load = f"load average {load_before} before, {load_average()} after"
    print(f"Numba cache present at start: {cached}; {load}")
    lines = [
        "## `quant` speed on a text detector (`benchmarks/quant_speed.py`)",
        "",
        "One 1x3x480x640 image, default compile options, default `quant` profile, through "
        "`xbarc.InferenceSession` (no read observer). Cold: the first run in the process "
        f"(Numba's on-disk cache {'present' if cached else 'absent: kernels compiled'}); "
        f"warm: best of {args.repeat}. onnxruntime on the same image in the same run. "
        f"Machine shared: {load}.",
        "",
        "Wall-clock seconds, CPU seconds (all threads) in brackets.",
        "",
        "| model | crossbar layers | weights | compile s | programming s | quant cold s | "
        "quant warm s | onnxruntime ms | warm / onnxruntime |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['layers']} | {row['weights']} | {row['compile']:.2f} | "
            f"{row['programming']:.2f} | {row['cold']:.2f} ({row['cold cpu']:.2f}) | "
            f"{row['warm']:.2f} ({row['warm cpu']:.2f}) | {row['ort'] * 1e3:.1f} "
            f"({row['ort cpu'] * 1e3:.1f}) | {row['warm'] / row['ort']:.0f}x "
            f"({row['warm cpu'] / row['ort cpu']:.0f}x) |"
        )
    for row in rows:
        lines += ["", f"{row['model']}: top functions of a warm run (own time):", ""]
        lines += [f"- {s:.3f} s ({share:.0%}) `{f}`" for f, s, share in row["profile"]]
        lines += ["", "slowest layers:", ""]
        lines += [f"- {s * 1e3:.0f} ms `{name}` ({what})" for s, name, what in row["slowest"]]
    if args.note:
        lines += ["", args.note]
    record_if(args.record, "quant_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
