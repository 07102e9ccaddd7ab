"""Wall time of the README's 10-seed sensitivity eval of the digits LeNet, with the batch
`xbarc eval` chooses (no --batch-size) and with one image a run (the old default).

    python benchmarks/eval_speed.py [--batch1-samples 36] [--record]

The command, run as a user runs it (a fresh `python -m xbarc` process, so start-up and
compile of the Numba kernels from their cache count):

    xbarc eval lenet.xbar --reference tests/fixtures/digits/lenet.onnx
        --data tests/fixtures/digits/digits_test.npz --labels y --noise rram --seeds 10
        --sensitivity

with lenet.xbar compiled by `xbarc compile tests/fixtures/digits/lenet.onnx --input-shape
x=1x1x8x8`. Issue 16's acceptance: under 2 minutes on this machine (at batch 1 it took
about 20). Batch 1 is timed on the first `--batch1-samples` images only (`--samples`) and
scaled to the 360, the start-up of the process taken off first and added back.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results import record_if  # noqa: E402

DIGITS = ROOT / "tests" / "fixtures" / "digits"
SAMPLES = 360


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch1-samples",
        type=int,
        default=36,
        help="images the batch-1 run takes, scaled to the 360 (default 36; 0 skips it)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def xbarc(*arguments: str) -> tuple[float, str]:
    """Wall seconds and stdout of `python -m xbarc ARGUMENTS` run from the repository."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "xbarc", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stdout


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        program = str(Path(folder) / "lenet.xbar")
        xbarc("compile", str(DIGITS / "lenet.onnx"), "--input-shape", "x=1x1x8x8", "-o", program)
        command = [
            "eval",
            program,
            "--reference",
            str(DIGITS / "lenet.onnx"),
            "--data",
            str(DIGITS / "digits_test.npz"),
            "--labels",
            "y",
            "--noise",
            "rram",
            "--seeds",
            "10",
            "--sensitivity",
        ]
        startup, _ = xbarc("--help")
        auto, report = xbarc(*command)
        first = report.splitlines()[0]
        lines = [
            "`xbarc eval` of the digits LeNet, `--noise rram --seeds 10 --sensitivity` on the "
            "360 held-out images, in a fresh process (`benchmarks/eval_speed.py`):",
            "",
            "| batch | wall s |",
            "|---|---|",
            f"| automatic ({first.split(': ', 1)[1].split(', noise')[0]}) | {auto:.1f} |",
        ]
        print(lines[-1], flush=True)
        count = args.batch1_samples
        if count > 0:
            seconds, _ = xbarc(*command, "--batch-size", "1", "--samples", str(count))
            scaled = startup + (seconds - startup) * SAMPLES / count
            lines.append(
                f"| 1 (the old default; {count} images took {seconds:.1f} s, scaled to "
                f"{SAMPLES}) | {scaled:.0f} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        f"Start-up of `python -m xbarc --help`: {startup:.1f} s. Load average (1 min) before "
        f"and after: {load_before:.1f} and {os.getloadavg()[0]:.1f}.",
    ]
    body = "\n".join(lines)
    print(body)
    record_if(args.record, "eval speed", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
