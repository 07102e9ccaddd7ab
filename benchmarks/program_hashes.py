"""Hash the printed programs of a corpus of compiles, to prove a refactor changes no output.

    python benchmarks/program_hashes.py [--light] [--ref REF | --baseline JSON] [--json OUT]

Compiles every digits fixture (tests/fixtures/digits/) at 32x32 and 128x128 tiles under
dense, sparse and squeezed mappings with several packings, column-group widths and
budgets (the chosen widths on chips that do and do not fit the model), and with `--light`
also the nine onnx light models at 128x128 tiles (dense, sparse, squeezed) and two of them
with trained-like weights pruned to 90 %, and prints the sha256 of each printed program
(whose tensor lines carry the tensors' own sha256).

With `--schedule` it hashes instead what the compile decided, in a form every version of
the text format shares: the chip, the tensors (with their digests), the arrays, every
block's placement, and every phase's writes and runs with each cycle's blocks in order.
That proves a change of the text format (or of how references are written) left the
crossbars, blocks, phases and cycles as they were.

With `--ref REF` it also exports the git revision REF (`git archive`) to a temporary
folder, hashes the same corpus there in a fresh process, and lists every case whose
program differs; the exit status is 1 if any does. `--baseline JSON` compares against
hashes written earlier with `--json`. A tinygrad habit: a refactor proves
"no output change" by regenerating a model corpus and diffing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"
sys.path.insert(0, str(Path(__file__).parent))
from compile_light import LIGHT  # noqa: E402
from light_models import LIGHT_MODELS  # noqa: E402

TRAINED_LIKE = ("squeezenet", "shufflenet")

# (label, CompileOptions fields): every variant the tile pass distinguishes
DIGITS_VARIANTS: tuple[tuple[str, dict], ...] = (
    ("dense", {}),
    ("dense-separate", {"pipeline_tile": "groups=separate"}),
    ("dense-packed", {"pack": "layer"}),
    ("sparse", {"mapping": "sparse"}),
    ("sparse-tiles-16", {"mapping": "sparse", "tiles": 16}),
    ("sparse-tiles-4", {"mapping": "sparse", "tiles": 4}),
    ("sparse-g8", {"mapping": "sparse", "group_cols": 8}),
    ("sparse-g4-reorder", {"mapping": "sparse", "group_cols": 4, "reorder_cols": True}),
    ("sparse-g1", {"mapping": "sparse", "group_cols": 1}),
    ("sparse-model", {"mapping": "sparse", "pack": "model"}),
    ("sparse-auto-tiles-24", {"mapping": "sparse", "pack": "auto", "tiles": 24}),
    ("sparse-off", {"mapping": "sparse", "pack": "off", "group_cols": 16}),
    ("squeeze", {"mapping": "squeeze", "cell_bits": 1}),
    ("squeeze-tiles-16", {"mapping": "squeeze", "cell_bits": 1, "tiles": 16}),
    ("squeeze-g8-reorder", {"mapping": "squeeze", "cell_bits": 1, "group_cols": 8,
                            "reorder_cols": True}),
    ("squeeze-auto-tiles-32", {"mapping": "squeeze", "cell_bits": 1, "pack": "auto",
                               "tiles": 32}),
)  # fmt: skip
LIGHT_VARIANTS: tuple[tuple[str, dict], ...] = (
    ("dense", {}),
    ("sparse-auto", {"mapping": "sparse", "pack": "auto"}),
    ("squeeze", {"mapping": "squeeze", "cell_bits": 1}),
)


def compile_hash(model: Path, fields: dict, tile: int, input_shapes: dict) -> str:
    from xbarc.compiler import CompileOptions, compile_onnx, default_pipeline
    from xbarc.ir.printer import print_program

    fields = dict(fields)
    extra_tile = fields.pop("pipeline_tile", None)
    options = CompileOptions(
        tiles=fields.pop("tiles", 128),
        tile_rows=tile,
        tile_cols=tile,
        input_shapes=input_shapes,
        **fields,
    )
    if extra_tile is not None:
        pipeline = default_pipeline(options).replace("tile{", "tile{" + extra_tile + ",")
        options = CompileOptions(**{**_fields(options), "pipeline": pipeline})
    program = compile_onnx(model, options)
    text = schedule_text(program) if SCHEDULE_ONLY else print_program(program)
    return hashlib.sha256(text.encode()).hexdigest()


SCHEDULE_ONLY = os.environ.get("XBARC_HASHES_SCHEDULE") == "1"


def schedule_text(program) -> str:
    """The program's decisions, through attributes every format version has (a cycle's
    `blocks` are its reads' blocks since version 2)."""
    arrays = [
        (a.name, a.kind, a.groups, a.rows, a.cols, a.weight_bits, a.encoding, a.scale,
         a.values, a.levels, a.slices, a.group_cols)
        for a in program.arrays
    ]  # fmt: skip
    phases = [
        (
            phase.index,
            [(write.vtile, write.tile) for write in phase.writes],
            [(run.layer, [tuple(cycle.blocks) for cycle in run.cycles]) for run in phase.runs],
        )
        for phase in program.phases
    ]
    parts = (program.hardware, program.tensors, arrays, program.blocks, phases)
    return repr(parts)


def _fields(options) -> dict:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}


def corpus_hashes(light: bool) -> dict[str, str]:
    """case -> sha256 of its printed program, compiled by the xbarc this process imports."""
    hashes = {}
    for model in sorted(DIGITS.glob("*.onnx")):
        for tile in (32, 128):
            for label, fields in DIGITS_VARIANTS:
                case = f"{model.stem} {tile}x{tile} {label}"
                hashes[case] = compile_hash(model, fields, tile, {"x": (1, 1, 8, 8)})
    if not light:
        return hashes
    for name in LIGHT_MODELS:
        for label, fields in LIGHT_VARIANTS:
            hashes[f"{name} 128x128 {label}"] = compile_hash(
                LIGHT / f"light_{name}.onnx", fields, 128, {}
            )
    sys.path.insert(0, str(Path(__file__).parent))
    from trained_like import trained_like

    with tempfile.TemporaryDirectory() as folder:
        for name in TRAINED_LIKE:
            path = Path(folder) / f"{name}_p90.onnx"
            onnx.save(trained_like(onnx.load(LIGHT / f"light_{name}.onnx"), 0, 0.9), path)
            for label, fields in LIGHT_VARIANTS:
                for tiles in (128, 4096):
                    case = f"{name} trained-like p90 128x128 tiles-{tiles} {label}"
                    hashes[case] = compile_hash(path, {**fields, "tiles": tiles}, 128, {})
    return hashes


def hashes_at(ref: str, light: bool) -> dict[str, str]:
    """The corpus hashes of git revision `ref`, compiled in a fresh process from an export."""
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(folder, filter="tar")
        command = [sys.executable, str(Path(__file__).resolve()), "--json", "-"]
        if light:
            command.append("--light")
        # this script, run from the current tree, imports the exported xbarc
        environment = {**os.environ, "XBARC_HASHES_ROOT": folder}
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        if done.returncode != 0:
            raise SystemExit(f"hashing {ref} failed:\n{done.stderr}")
        return json.loads(done.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--light", action="store_true", help="also the onnx light models")
    parser.add_argument("--ref", help="compare against this git revision")
    parser.add_argument("--baseline", help="compare against hashes saved with --json")
    parser.add_argument("--json", help="write the hashes as JSON here (- for stdout)")
    parser.add_argument(
        "--schedule", action="store_true", help="hash the decisions, not the printed text"
    )
    parser.add_argument("--record", action="store_true", help="record the comparison in RESULTS.md")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.schedule:  # for this process and the one hashing --ref
        os.environ["XBARC_HASHES_SCHEDULE"] = "1"
        global SCHEDULE_ONLY
        SCHEDULE_ONLY = True
    root = Path(os.environ.get("XBARC_HASHES_ROOT", ROOT))
    started = time.perf_counter()
    sys.path.insert(0, str(root))  # the tree's own xbarc, not an installed one
    import xbarc

    if not Path(xbarc.__file__).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"imported {xbarc.__file__}, not the xbarc of {root}")
    hashes = corpus_hashes(args.light)
    if args.json == "-":
        print(json.dumps(hashes, indent=1))
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(hashes, indent=1))
    elapsed = time.perf_counter() - started
    print(f"{len(hashes)} programs hashed in {elapsed:.0f} s")
    if args.ref is not None:
        before, against = hashes_at(args.ref, args.light), args.ref
    elif args.baseline is not None:
        before, against = json.loads(Path(args.baseline).read_text()), args.baseline
    else:
        return 0
    changed = sorted(case for case in hashes if before.get(case) != hashes[case])
    for case in changed:
        print(f"changed: {case}")
    print(f"{len(changed)} of {len(hashes)} programs differ from {against}")
    if args.record:
        record_comparison(hashes, changed, against, args.schedule)
    else:
        print("(not recorded: run again with --record to write them to RESULTS.md)")
    return 1 if changed else 0


def record_comparison(hashes: dict[str, str], changed: list[str], against: str, schedule: bool):
    """RESULTS.md: how many programs of each variant differ from the other revision."""
    from results import record

    def variant(case: str) -> str:
        return case.rsplit(" ", 1)[-1]

    counts: dict[str, list[int]] = {}
    for case in hashes:
        counts.setdefault(variant(case), [0, 0])[0] += 1
    for case in changed:
        counts[variant(case)][1] += 1
    what = "schedules (chip, tensors, arrays, blocks, writes, cycles)" if schedule else "texts"
    rows = "\n".join(f"| {name} | {total} | {differ} |" for name, (total, differ) in counts.items())
    body = (
        "## Programs against another revision (`benchmarks/program_hashes.py`)\n\n"
        f"Compared: the printed {what} of {len(hashes)} compiles (the digits fixtures at "
        f"32x32 and 128x128 under each variant; the light models and two trained-like 90 %-"
        f"pruned ones at 128x128) with those of `{against}`: {len(changed)} differ.\n\n"
        "| variant | programs | differ |\n|---|---:|---:|\n" + rows
    )
    record("program_hashes", body)


if __name__ == "__main__":
    sys.exit(main())
