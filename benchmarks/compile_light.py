"""Compile the nine real network topologies that ship with onnx; print wall time and peak memory.

    python benchmarks/compile_light.py [--repeat 3] [--before REF] [--record]

Each model is compiled by the `xbarc compile` command in a fresh process (8-bit weights,
2-bit cells, differential pairs, 128x128 tiles, 128 tiles), so the figures include Python
start-up and imports. `compile s` is the time inside the process from loading the model to
the written program; `wall s` is the whole command; `peak MB` the process' peak resident
memory. Goal (issue 2): ResNet-50 within 2 s wall and 1 GB peak; VGG-19 must not run out
of memory. For scale: a published crossbar compiler needs about 4.6 s and 2.5 GB for
ResNet-50 while carrying no weights at all.

Then ResNet-50 with trained-like weights (benchmarks/trained_like.py) squeezed (1-bit
cells) at `--tiles 128`, with the default column groups (one column: hundreds of
thousands of blocks packed many to a tile) and with `--group-cols 128`, next to the dense
compile; with `--before REF` the same compiles of git revision REF too (exported with
`git archive`, run in a fresh process from there), for a before/after table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).parent))
from light_models import LIGHT, LIGHT_MODELS  # noqa: E402
from results import record_if  # noqa: E402
from trained_like import trained_like  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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


SQUEEZED = ("--tiles", "128", "--tile-size", "128x128", "--mapping", "squeeze", "--cell-bits", "1")


def compile_once(
    model: Path, folder: Path, options: tuple[str, ...] = OPTIONS, tree: Path = ROOT
) -> dict:
    """`xbarc compile model` with `options` in a fresh process, with the xbarc of source
    tree `tree`: its figures (see CHILD)."""
    output = folder / (model.stem + ".xbar")
    command = [sys.executable, "-c", CHILD, "compile", str(model), *options, "-o", str(output)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=tree)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{model.name} failed:\n{finished.stderr}")
    figures = json.loads(finished.stderr.strip().splitlines()[-1])
    figures["wall_s"] = wall
    figures["summary"] = finished.stdout.strip()
    figures["program_mb"] = (output.stat().st_size + Path(f"{output}.npz").stat().st_size) / 2**20
    return figures


def exported(ref: str, folder: Path) -> Path:
    """Git revision `ref` of this repository, exported into `folder`."""
    tree = folder / "before"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="tar")
    return tree


def squeezed_rows(folder: Path, repeat: int, before: str | None) -> list[str]:
    """Dense and squeezed ResNet-50 (trained-like weights) at 128 tiles: compile time and
    peak memory, of this tree and, with `before`, of that git revision."""
    trained = folder / "resnet50_trained_like.onnx"
    onnx.save(trained_like(onnx.load(LIGHT / "light_resnet50.onnx"), 0, 0.0), trained)
    cases = (
        ("dense (as above)", LIGHT / "light_resnet50.onnx", OPTIONS),
        ("trained-like, squeezed, default groups", trained, SQUEEZED),
        ("trained-like, squeezed, --group-cols 128", trained, (*SQUEEZED, "--group-cols", "128")),
    )
    trees = [("before", exported(before, folder))] if before else []
    trees.append(("after" if before else "this tree", ROOT))
    heading = "".join(f" {label}: compile s | {label}: peak MB |" for label, _ in trees)
    lines = [
        "",
        f"ResNet-50 at `--tiles 128`, 128x128 tiles, as above (best of {repeat}); squeezed: "
        "1-bit cells, trained-like weights (benchmarks/trained_like.py)"
        + (f"; before: git revision `{before}`" if before else "")
        + ":",
        "",
        f"| ResNet-50 | blocks |{heading}",
        "|---|---:|" + "---:|---:|" * len(trees),
    ]
    for label, model, options in cases:
        cells = []
        for _, tree in trees:
            runs = [compile_once(model, folder, options, tree) for _ in range(repeat)]
            best = min(runs, key=lambda r: r["compile_s"])
            cells += [f"{best['compile_s']:.2f}", f"{best['peak_mb']:.0f}"]
        blocks = best["summary"].split(" blocks on ")[0].rsplit(" ", 1)[-1]
        lines.append(f"| {label} | {blocks} | {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per model; the best is kept")
    parser.add_argument("--before", metavar="REF", help="also compile ResNet-50 at git REF")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in LIGHT_MODELS:
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
    with tempfile.TemporaryDirectory() as folder:
        lines += squeezed_rows(Path(folder), args.repeat, args.before)
    lines += [
        "",
        f"Load average of the machine ({os.cpu_count()} cores, shared) at the start and the "
        f"end: {load_before:.1f} and {os.getloadavg()[0]:.1f}; other work on it slows every "
        "figure alike, so compare figures of one run.",
    ]
    record_if(args.record, "compile_light", "\n".join(lines))


if __name__ == "__main__":
    main()
