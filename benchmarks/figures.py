"""Draw the pictures the README shows, into benchmarks/figures/, with the xbarc commands a
user runs (printed as they run), and time each drawing.

    python benchmarks/figures.py            # rewrite benchmarks/figures/*.png
    python benchmarks/figures.py --record   # and the timings in benchmarks/RESULTS.md

The pictures: the chip of the squeezed, packed digits LeNet (lenet_p90 on 12 tiles of
32x32), one of its layers, the accuracy of the dense digits LeNet over 10 rram chips, and
the chip of onnx's light ResNet-50 at 128 tiles (99 phases). Needs matplotlib
(pip install -e ".[plots]").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "benchmarks" / "figures"
DIGITS = Path("tests/fixtures/digits")
RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
LIMIT = 300_000  # bytes a committed picture may take


def xbarc(*args: str) -> float:
    """Run `xbarc ARGS` from the repository root; its wall time in seconds."""
    print("$ xbarc " + " ".join(args), flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xbarc", *args], cwd=ROOT, check=True)
    return time.perf_counter() - started


def draw(folder: Path, work: Path) -> list[tuple[str, float, int]]:
    """Every picture: (file, seconds of the command that drew it, bytes)."""
    squeezed, dense, resnet = (
        work / "lenet_p90.xbar",
        work / "lenet.xbar",
        work / "light_resnet50.xbar",
    )
    shape = ["--input-shape", "x=1x1x8x8"]
    xbarc("compile", str(DIGITS / "lenet_p90.onnx"), "--tiles", "12", "--tile-size", "32x32",
          *shape, "--mapping", "squeeze", "-o", str(squeezed))  # fmt: skip
    xbarc("compile", str(DIGITS / "lenet.onnx"), *shape, "-o", str(dense))
    xbarc("compile", str(RESNET50), "--tiles", "128", "-o", str(resnet))
    commands = {
        "digits_chip.png": ["inspect", str(squeezed)],
        "digits_layer.png": ["inspect", str(squeezed), "--layer", "/7/Gemm"],
        "digits_accuracy.png": [
            "eval",
            str(dense),
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
            "--batch-size",
            "360",
        ],  # fmt: skip
        "resnet50_chip.png": ["inspect", str(resnet)],
    }
    results = []
    for name, args in commands.items():
        seconds = xbarc(*args, "--plot", str(folder / name))
        size = (folder / name).stat().st_size
        if size > LIMIT:
            raise SystemExit(f"{name} is {size} bytes, more than {LIMIT}: make it smaller")
        results.append((name, seconds, size))
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=FIGURES,
        help="folder of the pictures (default benchmarks/figures)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write the timings into benchmarks/RESULTS.md (section figures)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        results = draw(args.output.resolve(), Path(work))
    lines = [
        "| picture | command (load, report, draw, write) s | bytes |",
        "|---|---:|---:|",
        *(f"| `{name}` | {seconds:.1f} | {size} |" for name, seconds, size in results),
    ]
    body = "\n".join(lines)
    print(body)
    if args.record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from results import record

        record(
            "figures",
            "## Pictures (`python benchmarks/figures.py`)\n\n"
            "The wall time of each `xbarc inspect --plot` / `xbarc eval --plot` command that "
            "draws a picture of benchmarks/figures/ (the eval's includes its 10 chip "
            "instances), and the picture's size.\n\n" + body,
        )


if __name__ == "__main__":
    main()
