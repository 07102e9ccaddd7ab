"""VGG-8 on CIFAR-10 shapes against DNN+NeuroSim V1.4's reported energy efficiency.

    python benchmarks/vgg8_neurosim.py [--record] [--seed 0]

NeuroSim's VGG-8 (Inference_pytorch/models/VGG.py of github.com/neurosim/DNN_NeuroSim_V1.4):
conv 3->128, conv 128->128, max-pool, conv 128->256, conv 256->256, max-pool,
conv 256->512, conv 512->512, max-pool (3x3 kernels, 'same' padding, ReLU after each),
fc 8192->1024 with ReLU, fc 1024->10, on a 32x32x3 input: 616 M multiply-accumulates
(NeuroSim counts 1.23184e9 operations). The ONNX model is built here with onnx.helper,
with trained-like weights (benchmarks/trained_like.py's Laplace draw, seeded), and
compiled for benchmarks/data/neurosim_vgg8.toml: the chip at NeuroSim 1.4's release
settings (22 nm, 128x128 subarrays, 1-bit cells, 4-bit ADCs, 8-bit weights and
activations), starting from the isaac preset. Weights are quantized per layer (WAGE
mode's one scale per layer: --scale tensor). It is compiled twice: charging every row of
every read (xbarc's default) and at the input bit density NeuroSim's own VGG-8 traces
imply (`cost.input_bit_density`, see INPUT_BIT_DENSITY).

The figure compared: 23.94 TOPS/W, the energy efficiency NeuroSim 1.4 reports for this
VGG-8 with all 128 rows of a subarray read in parallel (Data/1.4_Release_test.csv of
commit 9e6742c, the V1.4 release test, July 2023: its TOPS/W column, with the post-layout
factor zeta; 20.06 TOPS/W with 64 rows in parallel). The target is within 2x.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402
from trained_like import draw_weights  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.report import ProgramReport, report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHIP = ROOT / "benchmarks" / "data" / "neurosim_vgg8.toml"
NEUROSIM_TOPS_PER_W = 23.94  # Data/1.4_Release_test.csv (9e6742c): 23.9369
NEUROSIM_OPS = 1.23184e9  # the same row: operations per image (2 x MACs)

# (out channels, max-pool after) of the six convolutions; then fc 8192->1024->10
CONVS = ((128, False), (128, True), (256, False), (256, True), (512, False), (512, True))


def vgg8(seed: int) -> onnx.ModelProto:
    """NeuroSim's VGG-8 as ONNX, weights drawn from `seed`."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    previous, channels = "x", 3

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    for index, (out_channels, pool) in enumerate(CONVS):
        weight = constant(f"conv{index}.w", draw_weights((out_channels, channels, 3, 3), rng))
        bias = constant(f"conv{index}.b", np.zeros(out_channels))
        nodes.append(
            helper.make_node(
                "Conv", [previous, weight, bias], [f"c{index}"], name=f"conv{index}",
                kernel_shape=[3, 3], pads=[1, 1, 1, 1],
            )
        )  # fmt: skip
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"relu{index}"))
        previous, channels = f"r{index}", out_channels
        if pool:
            nodes.append(
                helper.make_node(
                    "MaxPool", [previous], [f"p{index}"], name=f"pool{index}",
                    kernel_shape=[2, 2], strides=[2, 2],
                )
            )  # fmt: skip
            previous = f"p{index}"
    nodes.append(helper.make_node("Flatten", [previous], ["flat"], name="flatten", axis=1))
    fc0 = constant("fc0.w", draw_weights((1024, 8192), rng).T)
    fc1 = constant("fc1.w", draw_weights((10, 1024), rng).T)
    nodes.append(helper.make_node("MatMul", ["flat", fc0], ["f0"], name="fc0"))
    nodes.append(helper.make_node("Relu", ["f0"], ["h0"], name="relu_fc0"))
    nodes.append(helper.make_node("MatMul", ["h0", fc1], ["logits"], name="fc1"))
    graph = helper.make_graph(
        nodes,
        "vgg8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


# NeuroSim measured its VGG-8 input bits toggling at a rate of 0.18 (Param.cpp,
# "Recommended inputtoggle values ... VGG8-CIFAR10: 0.18", from real traces); were the
# bits independent with density p, 2 p (1 - p) = 0.18 gives p = 0.1: the share of input
# bits that drive a row (assumption: independence; correlated bits toggle less, so the
# true density may be higher)
INPUT_BIT_DENSITY = round((1 - (1 - 2 * 0.18) ** 0.5) / 2, 3)


def compile_vgg8(seed: int, hw_set: tuple[str, ...] = ()) -> tuple[ProgramReport, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vgg8.onnx"
        onnx.save(vgg8(seed), path)
        options = CompileOptions(hw=str(CHIP), weight_bits=8, scale="tensor", hw_set=hw_set)
        started = time.perf_counter()
        program = compile_onnx(path, options)
        elapsed = time.perf_counter() - started
    return report(program), elapsed


def summary_text(every_row: ProgramReport, active: ProgramReport, seconds: float) -> str:
    rows = (
        ("every row of every read charged (input_bit_density 1.0, xbarc's default)", every_row),
        (
            f"NeuroSim's VGG-8 input activity (--hw-set cost.input_bit_density="
            f"{INPUT_BIT_DENSITY})",
            active,
        ),
    )
    lines = [
        "VGG-8, CIFAR-10 shapes (1x3x32x32), trained-like weights, compiled for "
        "`benchmarks/data/neurosim_vgg8.toml` (the isaac preset at NeuroSim 1.4's settings: "
        "128x128 subarrays, 1-bit cells, 4-bit ADCs shared by 8 columns, offset encoding, "
        "8-bit weights and activations, NeuroSim's 2.23 ns clock, isaac's energies x 22/32 "
        "for 22 nm), dense mapping, one scale per layer. NeuroSim 1.4 reports "
        f"{NEUROSIM_TOPS_PER_W} TOPS/W for {NEUROSIM_OPS:.5g} operations per image "
        f"(xbarc counts {2 * every_row.crossbar_macs:.5g}).",
        "",
        "| xbarc charging | energy per image, uJ | TOPS/W | xbarc / NeuroSim |",
        "|---|---:|---:|---:|",
    ]
    for label, result in rows:
        ratio = result.tops_per_watt / NEUROSIM_TOPS_PER_W
        verdict = "within 2x" if 0.5 <= ratio <= 2.0 else "not within 2x"
        lines.append(
            f"| {label} | {result.energy_uj:.2f} | {result.tops_per_watt:.2f} | "
            f"{ratio:.2f} ({verdict}) |"
        )
    lines.append(
        f"| NeuroSim 1.4 (release test, 128 rows in parallel) | "
        f"{NEUROSIM_OPS / NEUROSIM_TOPS_PER_W * 1e-6:.2f} | {NEUROSIM_TOPS_PER_W:.2f} | |"
    )
    lines += [
        "",
        f"{every_row.tiles} subarrays of 128x128, {every_row.phases} phase(s); compile "
        f"{seconds:.1f} s.",
    ]
    return "\n".join(lines)


# NeuroSim's breakdown of the same row, uJ per image (dynamic energy by part, leakage)
NEUROSIM_ADC_UJ = 21.612
NEUROSIM_ACCUMULATION_UJ = 3.57428
NEUROSIM_OTHER_UJ = 16.8186  # decoders, mux, switch matrix, buffers, interconnect, ...
NEUROSIM_INTERCONNECT_UJ = 6.09182  # part of the above
NEUROSIM_BUFFER_UJ = 0.203455  # part of the above
NEUROSIM_LEAKAGE_UJ = 0.17702
NEUROSIM_ZETA = 1.22  # Param.cpp: post-layout energy increase, applied to the TOPS/W


def gap_text(every_row: ProgramReport, active: ProgramReport) -> str:
    """Where xbarc's energy and NeuroSim's differ, part by part."""

    def periphery(result: ProgramReport) -> float:
        return result.dac_energy_uj + result.shift_add_energy_uj

    def row(label: str, key, neurosim: str) -> str:
        return f"| {label} | {key(every_row):.2f} | {key(active):.2f} | {neurosim} |"

    return "\n".join(
        [
            f"| part, uJ per image | xbarc, density 1.0 | xbarc, density {INPUT_BIT_DENSITY} "
            "| NeuroSim 1.4 |",
            "|---|---:|---:|---:|",
            row("ADC", lambda r: r.adc_energy_uj, f"{NEUROSIM_ADC_UJ:.2f}"),
            row("arrays", lambda r: r.read_energy_uj, "(in other)"),
            row(
                "DAC + shift-and-add (NeuroSim: accumulation)",
                periphery,
                f"{NEUROSIM_ACCUMULATION_UJ:.2f}",
            ),
            row("buffer", lambda r: r.buffer_energy_uj, f"{NEUROSIM_BUFFER_UJ:.2f}"),
            row("digital ops", lambda r: r.digital_op_energy_uj, "(in other)"),
            f"| interconnect | - | - | {NEUROSIM_INTERCONNECT_UJ:.2f} |",
            "| other (NeuroSim: arrays, decoders, mux, switch matrix, buffers, interconnect, "
            f"pooling, activation) | - | - | {NEUROSIM_OTHER_UJ:.2f} |",
            f"| leakage | - | - | {NEUROSIM_LEAKAGE_UJ:.2f} |",
            row(
                f"total (NeuroSim: x zeta {NEUROSIM_ZETA})",
                lambda r: r.energy_uj,
                f"{NEUROSIM_OPS / NEUROSIM_TOPS_PER_W * 1e-6:.2f}",
            ),
            "",
            "The ADCs agree: the same 308 M conversions, 0.067 pJ each at 4 bits against "
            "NeuroSim's 0.070 pJ. The gap at density 1.0 is the arrays and the DACs: xbarc "
            "charges every 128x128 read a fixed 30 pJ (ISAAC's 0.3 mW array, about what "
            "NeuroSim's 100 kOhm / 1.7 MOhm cells draw at 0.55 V with half the rows on) and "
            "every row's DAC, whatever the input bits, while NeuroSim sums the cell currents "
            "of the actual input bits of its traces (ReLU activations are mostly zero bits). "
            f"With the input bit density {INPUT_BIT_DENSITY} derived from NeuroSim's measured "
            "toggle rate, the arrays and DACs cost that share. What remains: NeuroSim charges "
            "the interconnect, leakage, decoders and switch matrices, and the post-layout "
            "factor zeta, which xbarc does not model; xbarc charges ISAAC's shift-and-add per "
            f"column ({every_row.shift_add_energy_uj:.2f} uJ) where NeuroSim's accumulation "
            f"costs {NEUROSIM_ACCUMULATION_UJ:.2f} uJ in all.",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the trained-like weights (default 0)"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    every_row, seconds = compile_vgg8(args.seed)
    active, _ = compile_vgg8(args.seed, (f"cost.input_bit_density={INPUT_BIT_DENSITY}",))
    text = summary_text(every_row, active, seconds)
    gap = gap_text(every_row, active)
    print(text)
    print()
    print(gap)
    record_if(args.record, "vgg8_neurosim", f"{text}\n\n{gap}")


if __name__ == "__main__":
    main()
