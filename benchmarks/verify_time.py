"""Time the verifier on the biggest programs at hand, next to their compile time.

    python benchmarks/verify_time.py [--before REF] [--repeat 3] [--record]

ResNet-50 (the onnx light model) compiled dense (8-bit weights, 2-bit cells, 128x128
tiles, 128 tiles) and, with trained-like weights (benchmarks/trained_like.py), squeezed
(1-bit cells, the default column groups: hundreds of thousands of blocks). For each:
the compile time in this process, and the time of one `verify(program)` with every
tensor loaded, as `load_program` runs it (best of `--repeat`). With `--before REF` the
verifier of git revision REF (its xbarc/ir/verifier.py, loaded beside this one) is timed
on the same programs, for a before/after table. Issue 15 made the verifier check that
blocks cover their arrays exactly, which reads every cell of every slice: the verify
time must stay small next to the compile time.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).parent), str(ROOT)]  # this tree's xbarc, not an installed one
from light_models import LIGHT  # noqa: E402
from results import record_if  # noqa: E402
from trained_like import trained_like  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.verifier import verify  # noqa: E402


def verifier_of(ref: str, folder: Path):
    """The `verify` function of git revision `ref`'s xbarc/ir/verifier.py."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:xbarc/ir/verifier.py"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    path = folder / "verifier_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("verifier_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.verify


def best_time(function, program, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function(program)
        times.append(time.perf_counter() - started)
    return min(times)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision whose verifier to time as well")
    parser.add_argument(
        "--repeat", type=int, default=3, help="verifies per program; the best is kept (default 3)"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        trained = folder / "resnet50_trained_like.onnx"
        onnx.save(trained_like(onnx.load(LIGHT / "light_resnet50.onnx"), 0, 0.0), trained)
        cases = (
            ("dense", LIGHT / "light_resnet50.onnx", CompileOptions()),
            ("trained-like, squeezed", trained, CompileOptions(mapping="squeeze", cell_bits=1)),
        )
        before = verifier_of(args.before, folder) if args.before else None
        heading = "| ResNet-50 | blocks | cells in blocks | compile s |"
        rule = "|---|---:|---:|---:|"
        if before is not None:
            heading += f" verify s (`{args.before}`) |"
            rule += "---:|"
        heading += " verify s | verify / compile |"
        rule += "---:|---:|"
        lines = [heading, rule]
        print(heading, flush=True)
        for label, model, options in cases:
            started = time.perf_counter()
            program = compile_onnx(model, options)
            compile_s = time.perf_counter() - started
            cells = sum(len(b.rows) * len(b.cols) for b in program.blocks)
            row = f"| {label} | {len(program.blocks)} | {cells} | {compile_s:.2f} |"
            if before is not None:
                row += f" {best_time(before, program, args.repeat):.3f} |"
            after = best_time(verify, program, args.repeat)
            row += f" {after:.3f} | {after / compile_s:.1%} |"
            lines.append(row)
            print(row, flush=True)
    body = "\n".join(
        [
            "`python benchmarks/verify_time.py"
            + (f" --before {args.before}" if args.before else "")
            + "`: one `verify(program)` of ResNet-50 with its tensors (as `load_program`"
            " runs it), best of "
            f"{args.repeat}, next to the compile in the same process (which verifies after"
            " every pass). Dense: 8-bit weights, 2-bit cells, 128x128 tiles, 128 tiles;"
            " squeezed: trained-like weights, 1-bit cells.",
            "",
            *lines,
        ]
    )
    record_if(args.record, "verify_time", body)


if __name__ == "__main__":
    main()
