"""Compile the nine real network topologies that ship with onnx; print wall time and peak memory.

    python benchmarks/compile_light.py [--repeat 3] [--no-record]

Each model is compiled by the `xbarc compile` command in a fresh process (8-bit weights,
2-bit cells, differential pairs, 128x128 tiles, 128 tiles), so the figures include Python
start-up and imports. `compile s` is the time inside the process from loading the model to
the written program; `wall s` is the whole command; `peak MB` the process' peak resident
memory. Goal (issue 2): ResNet-50 within 2 s wall and 1 GB peak; VGG-19 must not run out
of memory. For scale: a published crossbar compiler needs about 4.6 s and 2.5 GB for
ResNet-50 while carrying no weights at all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).parent))
from results import record  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)

CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
from xbarc.cli import main
imported = time.perf_counter()
status = main(sys.argv[1:])
done = time.perf_counter()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"status": status, "compile_s": done - imported, "import_s": imported - started,
                  "peak_mb": peak_mb}), file=sys.stderr)
"""


OPTIONS = (
    "--tiles",
    "128",
    "--tile-size",
    "128x128",
    "--weight-bits",
    "8",
    "--cell-bits",
    "2",
    "--encoding",
    "differential",
)


def compile_once(model: Path, folder: Path, options: tuple[str, ...] = OPTIONS) -> dict:
    """`xbarc compile model` with `options` in a fresh process: its figures (see CHILD)."""
    output = folder / (model.stem + ".xbar")
    command = [sys.executable, "-c", CHILD, "compile", str(model), *options, "-o", str(output)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{model.name} failed:\n{finished.stderr}")
    figures = json.loads(finished.stderr.strip().splitlines()[-1])
    figures["wall_s"] = wall
    figures["summary"] = finished.stdout.strip()
    figures["program_mb"] = (output.stat().st_size + Path(f"{output}.npz").stat().st_size) / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per model; the best is kept")
    parser.add_argument("--no-record", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in MODELS:
            model = LIGHT / f"light_{name}.onnx"
            runs = [compile_once(model, Path(folder)) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["wall_s"])
            weights = best["summary"].split(" weights")[0].rsplit(" ", 1)[-1]
            rows.append((name, weights, best))
            print(
                f"{name:<14} weights {weights:>11}  wall {best['wall_s']:6.2f} s  "
                f"compile {best['compile_s']:6.2f} s  peak {best['peak_mb']:7.0f} MB  "
                f"program {best['program_mb']:7.1f} MB",
                flush=True,
            )
    lines = [
        "## Compile time and memory of the onnx light models (`benchmarks/compile_light.py`)",
        "",
        "8-bit weights, 2-bit cells, differential pairs, 128x128 tiles, `--tiles 128`; best of "
        f"{args.repeat} runs, each `xbarc compile` in a fresh process.",
        "",
        "| model | weights | wall s | compile s | peak MB | program MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, weights, best in rows:
        lines.append(
            f"| {name} | {weights} | {best['wall_s']:.2f} | {best['compile_s']:.2f} | "
            f"{best['peak_mb']:.0f} | {best['program_mb']:.1f} |"
        )
    resnet = next(best for name, _, best in rows if name == "resnet50")
    lines += [
        "",
        f"Goal: ResNet-50 within 2 s wall and 1 GB peak: measured {resnet['wall_s']:.2f} s and "
        f"{resnet['peak_mb']:.0f} MB ({resnet['wall_s'] / 4.6:.2f}x the time and "
        f"{resnet['peak_mb'] / 2560:.2f}x the memory of the published 4.6 s / 2.5 GB).",
    ]
    if not args.no_record:
        record("compile_light", "\n".join(lines))


if __name__ == "__main__":
    main()
