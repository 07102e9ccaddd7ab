"""Start-up time of the command line: `xbarc inspect` of a tiny program and `xbarc
compile --help`, each a fresh process, against `python -c pass` in the same run.

    python benchmarks/startup.py [--repeats 7] [--before TREE] [--record]

compiles the digits LeNet (tests/fixtures/digits/lenet.onnx) once, then runs each
command `--repeats` times as `python -m xbarc ...` with this tree's xbarc (and, with
`--before`, with the xbarc of another source tree, e.g. `git archive main | tar -x -C
/tmp/before`) and prints the median wall time of each, its ratio to `python -c pass`
(which says how loaded the machine is) and the median CPU time. With `--record` it
writes the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import record  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "digits" / "lenet.onnx"


def timed(command: list[str], tree: Path, repeats: int) -> tuple[float, float]:
    """The median wall time and CPU time (user + system) of `command` run `repeats`
    times in `tree` (its cwd, so that `python -m xbarc` imports that tree's xbarc). The
    CPU time hardly depends on what else the machine runs; the wall time does."""
    walls, cpus = [], []
    for _ in range(repeats):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(command, cwd=tree, check=True, capture_output=True)
        walls.append(time.perf_counter() - began)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def compile_program(folder: Path) -> Path:
    program = folder / "lenet.xbar"
    command = [sys.executable, "-m", "xbarc", "compile", str(MODEL)]
    command += ["--input-shape", "x=1x1x8x8", "-o", str(program)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return program


def commands(program: Path) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "python -c pass": [python, "-c", "pass"],
        "xbarc inspect (digits LeNet)": [python, "-m", "xbarc", "inspect", str(program)],
        "xbarc compile --help": [python, "-m", "xbarc", "compile", "--help"],
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="runs of each command; the median is shown (7)"
    )
    parser.add_argument(
        "--before", type=Path, help="a source tree of another revision, timed the same way"
    )
    parser.add_argument(
        "--record", action="store_true", help="write the table to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    trees = {"this tree": ROOT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    with tempfile.TemporaryDirectory() as folder:
        program = compile_program(Path(folder))
        figures = {
            label: {
                name: timed(command, tree, args.repeats)
                for name, command in commands(program).items()
            }
            for label, tree in trees.items()
        }
    lines = [
        "## Start-up time (`benchmarks/startup.py`)",
        "",
        f"Median of {args.repeats} fresh processes each: wall time and CPU time (user + "
        "system, which depends little on what else the machine runs) in seconds, and the "
        "wall time's ratio to `python -c pass` measured in the same run (the interpreter's "
        "own start-up). `inspect` loads the program (parsing its text with lark) and "
        "prints the report; in this tree neither command imports onnx, onnxruntime or "
        "numba (`tests/test_output.py` checks it).",
        "",
        "| tree | command | wall s | CPU s | wall / `python -c pass` |",
        "|---|---|---:|---:|---:|",
    ]
    for label, times in figures.items():
        baseline = times["python -c pass"][0]
        for name, (wall, cpu) in times.items():
            lines.append(f"| {label} | `{name}` | {wall:.3f} | {cpu:.3f} | {wall / baseline:.1f} |")
    print("\n".join(lines))
    if args.record:
        record("startup", "\n".join(lines))


if __name__ == "__main__":
    main()
