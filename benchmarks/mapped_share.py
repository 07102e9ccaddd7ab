"""How much of each model compile maps onto crossbars, and whether its program runs any batch.

    python benchmarks/mapped_share.py [--record]

For the nine onnx light models and the digits fixtures (at batch 1), the frontend's
program (`--emit graph`: the mapping is decided there): crossbar layers, their
multiply-accumulates per forward pass, the MACs left digital on ops that could be
crossbar work (with the reasons), the mapped share, whether the program runs any batch
size or only the compiled one (`batch=fixed`: the model fixes its batch, e.g. a constant
Reshape target [1, -1]), and the frontend's time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from light_models import LIGHT, LIGHT_MODELS  # noqa: E402
from results import record_if  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.report import format_macs, report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"
DIGITS_MODELS = ("mlp", "lenet", "resnet", "mobilenet")


def measure(path: Path, input_shapes: dict) -> dict:
    started = time.perf_counter()
    program = compile_onnx(path, CompileOptions(input_shapes=input_shapes), emit="graph")
    elapsed = time.perf_counter() - started
    summary = report(program)
    reasons = Counter(work.reason for work in summary.digital_work)
    return {
        "model": path.stem,
        "layers": len(summary.layers),
        "crossbar": summary.crossbar_macs,
        "digital": summary.digital_macs,
        "share": summary.mapped_share,
        "batch": "fixed" if any(i.fixed_batch for i in program.inputs) else "any",
        "reasons": "; ".join(f"{count} x {reason}" for reason, count in reasons.items()) or "-",
        "seconds": elapsed,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | crossbar layers | crossbar MACs | digital MACs | mapped share | batch "
        "| frontend s | digital work |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['layers']} | {format_macs(row['crossbar'])} "
            f"| {format_macs(row['digital'])} | {row['share']:.1%} | {row['batch']} "
            f"| {row['seconds']:.2f} | {row['reasons']} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    rows = [measure(LIGHT / f"light_{name}.onnx", {}) for name in LIGHT_MODELS]
    rows += [measure(DIGITS / f"{name}.onnx", {"x": (1, 1, 8, 8)}) for name in DIGITS_MODELS]
    text = table(rows)
    print(text)
    body = (
        "## Mapped share and batch (`benchmarks/mapped_share.py`)\n\n"
        "The frontend's program of each model at batch 1: crossbar layers and their "
        "multiply-accumulates per forward pass, the MACs left digital on ops that could be "
        "crossbar work, the share on crossbars, and whether the program runs any batch "
        "size (`any`) or only the compiled one (`fixed`: the model fixes its batch; the "
        "light models but densenet121 and squeezenet reshape to the constant [1, N] before "
        "their classifier).\n\n" + text
    )
    record_if(args.record, "mapped_share", body)


if __name__ == "__main__":
    main()
