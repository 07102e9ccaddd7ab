"""What the bounds on sizes read from files (issue 15, xbarc/limits.py) cost loading a big
program: parse time of the text and full load time (text, sidecar, verifier).

    python benchmarks/load_limits.py --json before.json        # in a checkout before the bounds
    python benchmarks/load_limits.py --before before.json --record   # here: prints, records

Each model is compiled once (`--tiles 128`, 128x128 tiles) into a temporary folder; each
figure is the CPU time of this process (not wall time: the machine may be shared), the
best of `--repeat` loads.
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import onnx

MODELS = ("resnet50", "bvlc_alexnet")


def light_model(name: str) -> pathlib.Path:
    return pathlib.Path(onnx.__file__).parent / "backend/test/data/light" / f"light_{name}.onnx"


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()  # the previous load's program is garbage: free it outside the timing
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return min(times)


def measure(folder: pathlib.Path, repeat: int) -> dict[str, dict[str, float]]:
    from xbarc.ir.io import load_program, load_program_text

    figures = {}
    for name in MODELS:
        program = folder / f"{name}.xbar"
        if not program.exists():
            command = [sys.executable, "-m", "xbarc", "compile", str(light_model(name))]
            subprocess.run([*command, "--tiles", "128", "-o", str(program)], check=True)
        figures[name] = {
            "text_mb": program.stat().st_size / 1e6,
            "sidecar_mb": pathlib.Path(f"{program}.npz").stat().st_size / 1e6,
            "parse_s": best_of(repeat, lambda p=program: load_program_text(p)),
            "load_s": best_of(repeat, lambda p=program: load_program(p)),
        }
    return figures


def table(after: dict, before: dict | None) -> str:
    lines = [
        "| model | text MB | sidecar MB | before: parse CPU s | before: load CPU s"
        " | after: parse CPU s | after: load CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, now in after.items():
        old = (before or {}).get(name, {})
        lines.append(
            f"| {name} | {now['text_mb']:.1f} | {now['sidecar_mb']:.1f}"
            f" | {old.get('parse_s', float('nan')):.2f} | {old.get('load_s', float('nan')):.2f}"
            f" | {now['parse_s']:.2f} | {now['load_s']:.2f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="loads per program; the best is kept (default 3)"
    )
    parser.add_argument("--json", type=pathlib.Path, help="write the figures here and stop")
    parser.add_argument("--before", type=pathlib.Path, help="figures of the code before")
    parser.add_argument("--folder", type=pathlib.Path, help="keep the compiled programs here")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure(args.folder or pathlib.Path(scratch), args.repeat)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
        return
    before = json.loads(args.before.read_text()) if args.before else None
    body = (
        "## Loading a big program with every size bounded (`benchmarks/load_limits.py`)\n\n"
        "Light models compiled with `--tiles 128`, 128x128 tiles; best of"
        f" {args.repeat} loads in one process, CPU time. Parse: the text alone"
        " (`load_program_text`); load: text, sidecar (each member's declared size and"
        " .npy header checked before it is inflated, then its digest) and the verifier."
        " Before: the code without the bounds (git revision `c93bf8d`).\n\n"
    )
    body += table(figures, before)
    print(body)
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from results import record_if

    record_if(args.record, "load_limits", body)


if __name__ == "__main__":
    main()
