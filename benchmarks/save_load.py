"""Time saving and loading big programs: the atomic save (anonymous files, fsync of both
files and the folder, a pending sidecar; issue 15) against another revision's save.

    python benchmarks/save_load.py [--before TREE] [--repeats 5] [--models resnet50 vgg19]
        [--record]

compiles each onnx light model once, then times `save_program` and `load_program` of it
(the median of `--repeats` runs each) with this tree's xbarc and, with `--before`, with the
xbarc of another source tree (e.g. `git archive c93bf8d | tar -x -C /tmp/old`), each in its
own process, and prints the table (with `--record`, also in RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import record_if  # noqa: E402

# run in the tree being measured (its xbarc imported from the current folder)
WORKER = r"""
import json, os, statistics, sys, time
from xbarc.ir.io import load_program, save_program
source, folder, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
program = load_program(source)
target = os.path.join(folder, "p.xbar")
saves, loads = [], []
for _ in range(repeats):
    began = time.perf_counter()
    save_program(target, program)
    saves.append(time.perf_counter() - began)
    began = time.perf_counter()
    load_program(target)
    loads.append(time.perf_counter() - began)
print(json.dumps({"save": statistics.median(saves), "load": statistics.median(loads),
                  "bytes": os.path.getsize(target + ".npz")}))
"""


def measure(tree: Path, source: Path, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(source), folder, str(repeats)],
            cwd=tree,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a source tree of the revision to compare")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="saves and loads per model; the median is kept (default 5)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["resnet50", "vgg19"],
        help="light models to compile and time (default resnet50 vgg19)",
    )
    parser.add_argument("--note", default="", help="a sentence recorded under the table")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()

    import onnx

    from xbarc.compiler import CompileOptions, compile_onnx
    from xbarc.ir.io import save_program

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            source = Path(folder) / f"{name}.xbar"
            save_program(source, compile_onnx(light / f"light_{name}.onnx", CompileOptions()))
            after = measure(ROOT, source, args.repeats)
            before = measure(args.before, source, args.repeats) if args.before else None
            rows.append((name, after, before))
            print(name, "after", after, "before", before, flush=True)

    lines = [
        "## Saving and loading big programs (`benchmarks/save_load.py`)",
        "",
        "The median of "
        f"{args.repeats} saves and loads of a compiled program (default options), each in "
        "its own process. *Atomic*: anonymous files, both files and the folder flushed "
        "to disk, the sidecar through a pending name (issue 15); *before*: "
        + ("`--before` tree (temporary files renamed, no fsync)." if args.before else "none."),
        "",
        "| model | sidecar MB | save s (atomic) | load s (atomic) "
        "| save s (before) | load s (before) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, after, before in rows:
        old = (f"{before['save']:.3f} | {before['load']:.3f}") if before else "- | -"
        lines.append(
            f"| {name} | {after['bytes'] / 1e6:.1f} | {after['save']:.3f} | "
            f"{after['load']:.3f} | {old} |"
        )
    if args.note:
        lines += ["", args.note]
    body = "\n".join(lines)
    print(body)
    record_if(args.record, "save_load", body)


if __name__ == "__main__":
    main()
