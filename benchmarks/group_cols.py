"""The default column groups of sparse and squeezed mappings against every uniform width.

    python benchmarks/group_cols.py [--repeat 3] [--record]

1. Every pruned digits fixture (50, 80, 90 %) at 32x32 and 128x128 tiles, `sparse`
   (2-bit cells) and `squeeze` (1-bit cells), compiled with the column groups chosen per
   layer (no `--group-cols`) and with each of `--group-cols` 1, 2, 4, 8, 16, 32, at four
   budgets: half the fewest crossbars any uniform width takes (cannot fit), that fewest
   (fits only at the best width), half way to the widest groups' crossbars, and 128.
   Issue 12's acceptance: where some uniform width fits in one phase, the default fits
   in no more cycles than the fastest that does; where none fits, the default takes at
   most 10 % more crossbars than the fewest.
2. ResNet-50 squeezed (1-bit cells) at `--tiles 128`, 128x128 tiles, in a fresh process
   (best of --repeat): the default against `--group-cols 128` (the widest groups, which
   the default took before when the model could not fit), with the shipped constant
   weights and trained-like ones (benchmarks/trained_like.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))  # this tree's xbarc, not an installed one
from compile_light import LIGHT, compile_once  # noqa: E402
from results import record_if  # noqa: E402
from trained_like import trained_like  # noqa: E402

from xbarc.compiler import CompileOptions, compare_group_cols  # noqa: E402

DIGITS = ROOT / "tests" / "fixtures" / "digits"
PRUNED = [f"{m}_p{p}" for m in ("mlp", "lenet", "resnet", "mobilenet") for p in (50, 80, 90)]
WIDTHS = (1, 2, 4, 8, 16, 32)


def options(tile: int, mapping: str, tiles: int) -> CompileOptions:
    return CompileOptions(
        tiles=tiles,
        tile_rows=tile,
        tile_cols=tile,
        input_shapes={"x": (1, 1, 8, 8)},
        mapping=mapping,
        cell_bits=1 if mapping == "squeeze" else 2,
    )


def verdict(default: dict, uniform: list[dict], tiles: int) -> tuple[str, bool]:
    """The reference the default is held against at `tiles`, and whether it meets it."""
    fitting = [row for row in uniform if row["crossbars"] <= tiles]
    if fitting:
        best = min(fitting, key=lambda row: row["cycles"])
        met = default["phases"] == 1 and default["cycles"] <= best["cycles"]
    else:
        best = min(uniform, key=lambda row: row["crossbars"])
        met = default["crossbars"] <= 1.1 * best["crossbars"]
    return f"{best['crossbars']}/{best['cycles']} (g={best['group_cols']})", met


def default_rows() -> tuple[list[str], int, int]:
    lines = [
        "",
        "Default column groups against the best uniform `--group-cols` (1 to 32): "
        "crossbars/cycles per inference, phases in brackets where more than one. "
        "Reference: the fastest uniform width that fits the budget in one phase, or, "
        "where none fits, the one with the fewest crossbars.",
        "",
        "| model | tiles | mapping | budget | default | reference | met |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    met_count = total = 0
    for model in PRUNED:
        for tile in (32, 128):
            for mapping in ("sparse", "squeeze"):
                path = DIGITS / f"{model}.onnx"
                uniform = compare_group_cols(path, options(tile, mapping, 1 << 20), WIDTHS)[1:]
                fewest = min(row["crossbars"] for row in uniform)
                widest = uniform[-1]["crossbars"]
                budgets = sorted({max(1, fewest // 2), fewest, (fewest + widest) // 2, 128})
                for budget in budgets:
                    chosen = compare_group_cols(path, options(tile, mapping, budget), ())[0]
                    reference, met = verdict(chosen, uniform, budget)
                    phases = f" [{chosen['phases']}]" if chosen["phases"] > 1 else ""
                    lines.append(
                        f"| {model} | {tile}x{tile} | {mapping} | {budget} | "
                        f"{chosen['crossbars']}/{chosen['cycles']}{phases} | {reference} | "
                        f"{'yes' if met else 'NO'} |"
                    )
                    print(lines[-1], flush=True)
                    met_count += met
                    total += 1
    return lines, met_count, total


def resnet50_rows(folder: Path, repeat: int) -> list[str]:
    trained = folder / "resnet50_trained_like.onnx"
    onnx.save(trained_like(onnx.load(LIGHT / "light_resnet50.onnx"), 0, 0.0), trained)
    lines = [
        "",
        f"ResNet-50 squeezed (1-bit cells), `--tiles 128`, 128x128 tiles (best of {repeat}, "
        "fresh process; compile s is load to written program). `--group-cols 128` is the "
        "program the default gave before, as the model cannot fit 128 tiles:",
        "",
        "| weights | column groups | compile s | blocks | crossbars | phases |",
        "|---|---|---:|---:|---:|---:|",
    ]
    squeeze = ("--tiles", "128", "--tile-size", "128x128", "--mapping", "squeeze")
    for label, model in (("constant (as shipped)", LIGHT / "light_resnet50.onnx"),
                         ("trained-like", trained)):  # fmt: skip
        for variant, extra in (("default", ()), ("--group-cols 128", ("--group-cols", "128"))):
            arguments = (*squeeze, "--cell-bits", "1", *extra)
            runs = [compile_once(model, folder, arguments) for _ in range(repeat)]
            best = min(run["compile_s"] for run in runs)
            summary = runs[0]["summary"]
            blocks = summary.split(" blocks on ")[0].rsplit(" ", 1)[-1]
            vtiles = summary.split(" blocks on ")[1].split(" ")[0]
            phases = summary.split(" phase(s)")[0].rsplit(" ", 1)[-1]
            lines.append(f"| {label} | {variant} | {best:.2f} | {blocks} | {vtiles} | {phases} |")
            print(lines[-1], flush=True)
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per compile time")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    started = time.perf_counter()
    lines = ["## Default column groups (`benchmarks/group_cols.py`)"]
    rows, met, total = default_rows()
    lines += rows
    lines += ["", f"Acceptance met in {met} of {total} cases."]
    with tempfile.TemporaryDirectory() as folder:
        lines += resnet50_rows(Path(folder), args.repeat)
    lines += ["", f"The benchmark took {time.perf_counter() - started:.0f} s."]
    record_if(args.record, "group_cols", "\n".join(lines))


if __name__ == "__main__":
    main()
