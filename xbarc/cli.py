"""The `xbarc` command line: compile ONNX models to tile programs and inspect them.

User errors print one line (`where: error: what (hint)`) and exit 1; usage errors exit 2;
a bug in xbarc itself says so, and shows its traceback only with XBARC_DEBUG=1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xbarc import __version__
from xbarc.diagnostics import XbarcError
from xbarc.distributed import add_engine_options, engine_options

if TYPE_CHECKING:
    from xbarc.adc_report import AdcUse
    from xbarc.compiler import CompileOptions

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    add_quiet_options(parser)
    args = parser.parse_args(argv)
    try:
        with showing_progress(not args.quiet):
            return int(args.handler(args) or 0)
    except XbarcError as error:
        print(f"xbarc: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("xbarc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug of ours: say so plainly
        if os.environ.get("XBARC_DEBUG"):
            raise
        print(
            f"xbarc: internal error: {type(error).__name__}: {error} "
            "(this is a bug in xbarc; rerun with XBARC_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def add_quiet_options(parser: argparse.ArgumentParser) -> None:
    """`-q/--quiet` on every subcommand: no progress output (reports and errors still
    print). Added once the parser is built, so that every subcommand has it, whoever adds
    one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument(
                    "-q",
                    "--quiet",
                    action="store_true",
                    help="no progress output on stderr (by default long work shows a bar on "
                    "a terminal, elsewhere a line every 5 s, XBARC_PROGRESS_INTERVAL seconds)",
                )


@contextlib.contextmanager
def showing_progress(shown: bool) -> Iterator[None]:
    """Progress of long work on stderr during the block (xbarc.progress), unless not
    `shown`; none after it (a library caller of `main` gets no display left running)."""
    from xbarc import progress

    if not shown:
        yield
        return
    progress.enable(sys.stderr)
    try:
        yield
    finally:
        progress.disable()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xbarc",
        description="Compile ONNX models to crossbar tile programs for RRAM in-memory computing.",
    )
    parser.add_argument("--version", action="version", version=f"xbarc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_parser = commands.add_parser(
        "compile",
        help="compile an ONNX model to a tile program (.xbar + .xbar.npz)",
        description="Lower an ONNX model to the tile IR, run the pass pipeline, and write "
        "the program text (.xbar) and its tensors (.xbar.npz).",
    )
    compile_parser.add_argument("model", type=Path, help="the ONNX model (.onnx)")
    compile_parser.add_argument(
        "--hw",
        default="isaac",
        metavar="NAME|FILE.toml",
        help="the chip: a preset (isaac: ISAAC, ISCA 2016, the default; puma: PUMA, ASPLOS "
        '2019) or a hardware file, which may start from one with base = "puma"',
    )
    compile_parser.add_argument(
        "--hw-set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one field of the chip after --hw and the options below, e.g. "
        "adc.bits=6, cell.bits=1, cost.adc_energy_pj=2.0, encoding=offset (repeatable)",
    )
    compile_parser.add_argument(
        "--tiles",
        type=int,
        default=None,
        help="physical crossbar tiles on the chip (default: the chip's, 128 for isaac)",
    )
    compile_parser.add_argument(
        "--tile-size",
        default=None,
        metavar="RxC[,RxC...]",
        help="tile rows x columns (default: the chip's, 128x128 for isaac); a comma list "
        "(32x32,64x64,128x128,256x256) gives a chip of several tile types, --tiles of each, "
        "and the nax pass picks each layer's",
    )
    compile_parser.add_argument(
        "--weight-bits", type=int, default=8, metavar="B", help="weight bits (default 8)"
    )
    compile_parser.add_argument(
        "--cell-bits",
        type=int,
        default=None,
        metavar="C",
        help="bits per RRAM cell (default: the chip's, 2 for isaac)",
    )
    compile_parser.add_argument(
        "--encoding",
        choices=("differential", "offset"),
        default=None,
        help="signed weights as differential pairs or with an offset (default: the chip's, "
        "differential for isaac)",
    )
    compile_parser.add_argument(
        "--scale",
        choices=("column", "tensor"),
        default="column",
        help="weight quantization scale per output column (applied digitally after the "
        "ADC, as real chips do) or one per layer (default column)",
    )
    compile_parser.add_argument(
        "--clip",
        action="append",
        default=[],
        metavar="MODE|LAYER=MODE",
        help="range of each weight scale: max (the largest |w|), percentile "
        "(--clip-percentile of |w|) or mse (the range of least squared weight error); "
        "LAYER=MODE sets one crossbar layer's (repeatable; default max)",
    )
    compile_parser.add_argument(
        "--clip-percentile",
        type=float,
        default=99.99,
        metavar="P",
        help="--clip percentile: the percentile of |w| a scale's range keeps (default 99.99)",
    )
    compile_parser.add_argument(
        "--mapping",
        choices=("dense", "sparse", "squeeze"),
        default="dense",
        help="dense: every block, zeros included; sparse: drop zero rows and columns per "
        "column group; squeeze: the same per bit slice (default dense)",
    )
    compile_parser.add_argument(
        "--group-cols",
        type=int,
        metavar="G",
        help="sparse/squeeze: adjacent columns sharing one row-gather table (default: "
        "chosen per layer, the widest with which the model fits the chip in one phase)",
    )
    compile_parser.add_argument(
        "--reorder-cols",
        action="store_true",
        help="sparse/squeeze: put columns that use the same rows into the same column group",
    )
    compile_parser.add_argument(
        "--pack",
        choices=("off", "layer", "model", "auto"),
        help="share tiles between blocks: off (a tile per block), layer (the blocks of one "
        "layer), model (of any layers), auto (per layer, only where the model needs it to "
        "fit the chip in one phase) (default: off for dense, layer for sparse/squeeze)",
    )
    compile_parser.add_argument(
        "--max-ones",
        type=int,
        metavar="M",
        help="bit-sparse quantization: at most M one bits per weight magnitude (SME); the "
        "weight error it causes is printed",
    )
    compile_parser.add_argument(
        "--strategy",
        choices=("reprogram", "basis"),
        default="reprogram",
        help="a model larger than the chip: reprogram (rewrite tiles in phases, default) or "
        "basis (BasisN: one global basis written once, layers combined from it digitally)",
    )
    compile_parser.add_argument(
        "--basis-k",
        type=int,
        metavar="K",
        help="basis: basis vectors (default: as many as fit the budget, at most the segment rows)",
    )
    compile_parser.add_argument(
        "--coef-bits",
        type=int,
        default=8,
        metavar="Q",
        help="basis: bits of each combine coefficient (default 8)",
    )
    compile_parser.add_argument(
        "--segment-rows",
        type=int,
        metavar="L",
        help="basis: rows of a weight segment (default: the tile rows)",
    )
    compile_parser.add_argument(
        "--basis-fit",
        choices=("svd", "kmeans", "identity"),
        default="svd",
        help="basis: how the basis is learned: svd (truncated SVD of all layers' segments, "
        "default), kmeans (seeded k-means of their directions) or identity (the K = L unit "
        "vectors: lossless reference)",
    )
    compile_parser.add_argument(
        "--basis-terms",
        type=int,
        metavar="M",
        help="basis: at most M basis vectors per segment, chosen by orthogonal matching "
        "pursuit (default: all K)",
    )
    compile_parser.add_argument(
        "--basis-copies",
        type=int,
        metavar="R",
        help="basis: copies of the basis on the chip, R segments read per cycle (default: "
        "as many as fit)",
    )
    compile_parser.add_argument(
        "--calibration-data",
        type=Path,
        metavar="X.npz",
        help="basis: samples (one array per model input, samples first, as for calibrate) "
        "on which each layer's coefficients minimise its output error instead of its "
        "weight error",
    )
    compile_parser.add_argument(
        "--basis-keep",
        action="append",
        default=[],
        metavar="LAYER",
        help="basis: a layer stored on its own array instead (repeatable)",
    )
    compile_parser.add_argument(
        "--compare-mappings",
        action="store_true",
        help="also print the written program's crossbars, cells, cycles, ADC conversions, "
        "index entries and energy beside programs that differ from it in one thing each: "
        "the other mappings, 1-bit cells (2-bit if it has 1-bit cells), no packing (or "
        "packing per layer)",
    )
    compile_parser.add_argument(
        "--compare-strategies",
        action="store_true",
        help="also compile the other --strategy at this --tiles budget and print both side by "
        "side: phases, tiles, cycles, writes and write-verify time and energy per inference, "
        "energy, latency, EDP, weight error (the program of --strategy is written)",
    )
    compile_parser.add_argument(
        "--nax-budget",
        type=float,
        metavar="B",
        help="several --tile-size: the allowed increase of NAX's error proxy over the most "
        "accurate uniform tile size (default 0.25: 25 %% more)",
    )
    compile_parser.add_argument(
        "--nax-noise",
        default="rram",
        metavar="PROFILE",
        help="several --tile-size: the noise profile (name or .toml) whose read noise, "
        "output noise and wire resistance NAX weighs (default rram)",
    )
    compile_parser.add_argument(
        "--nax-check",
        type=Path,
        metavar="DATA.npz",
        help="several --tile-size: simulate the chosen program and the uniform tile size of "
        "least EDAP on these samples under --nax-noise (chip seeds 0-2) and print both "
        "output errors against the float model",
    )
    compile_parser.add_argument(
        "--pipeline",
        metavar="PASSES",
        help="pass pipeline, e.g. 'quantize{weight-bits=8},tile{rows=128,cols=128},"
        "allocate{tiles=128}' (default: built from the options above)",
    )
    compile_parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="shape of a model input with symbolic dims, e.g. data=1x3x224x224 (repeatable)",
    )
    compile_parser.add_argument(
        "--emit",
        choices=("graph", "tile"),
        default="tile",
        help="stop after lowering (graph) or run the pipeline (tile, default)",
    )
    compile_parser.add_argument(
        "--print-ir-after-all", action="store_true", help="print the program after every pass"
    )
    compile_parser.add_argument(
        "-o", "--output", type=Path, help="output program (default: ./MODEL.xbar)"
    )
    compile_parser.add_argument(
        "--json",
        action="store_true",
        help="print the report (what was written, totals, weight error, column groups, "
        "packing, the comparisons asked for) as one JSON document; warnings stay on stderr",
    )
    compile_parser.set_defaults(handler=run_compile)

    opt_parser = commands.add_parser(
        "opt",
        help="run passes on a saved program (.xbar + .xbar.npz), like xdsl-opt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load a program, run the pass pipeline on it (verifying the program after\n"
        "every pass) and print the result, or write it with -o. Without --pipeline the\n"
        "program is only loaded, verified and printed again.",
        epilog="example:\n  xbarc compile model.onnx --emit graph -o model.xbar\n"
        "  xbarc opt model.xbar --pipeline 'quantize{weight-bits=4},tile{rows=32,cols=32,"
        "mapping=sparse}' -o sparse.xbar\n"
        "  xbarc opt sparse.xbar --pipeline 'allocate{tiles=16}'",
    )
    opt_parser.add_argument("program", type=Path, help="the input program (.xbar)")
    opt_parser.add_argument(
        "--pipeline",
        metavar="PASSES",
        help="pass pipeline, e.g. 'quantize{weight-bits=4},tile{rows=8,cols=8},"
        "allocate{tiles=4}' (passes: quantize, basis, tile, allocate)",
    )
    opt_parser.add_argument(
        "--print-ir-after-all",
        action="store_true",
        help="print the program after every pass (to stdout; without -o the last one is the "
        "result)",
    )
    opt_parser.add_argument(
        "-o",
        "--output",
        metavar="OUT.xbar",
        help="write the result here and its tensors to OUT.xbar.npz, atomically (may be the "
        "input itself); '-' or no -o prints the text only, to stdout",
    )
    opt_parser.set_defaults(handler=run_opt)

    inspect_parser = commands.add_parser(
        "inspect",
        help="show how a program lands on the chip, per layer and in total",
        description="Per layer: matrix shape, weights, slices, blocks, tiles, cell "
        "utilization, phases, cell writes and array cycles; then the totals. With --tiles, "
        "the same per virtual tile; with --tile V, a drawing of one tile's blocks; with "
        "--plot PNG, a picture of the chip (or with --layer NAME, of one layer's blocks).",
    )
    inspect_parser.add_argument("program", type=Path, help="a compiled program (.xbar)")
    inspect_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect_parser.add_argument(
        "--tiles",
        action="store_true",
        help="per virtual tile instead: where it is written, blocks, cells, utilization, "
        "reads and the layers it holds",
    )
    inspect_parser.add_argument(
        "--tile",
        metavar="V",
        help="draw where the blocks of virtual tile V (e.g. v3 or 3) sit on its cells",
    )
    inspect_parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="draw the chip instead of printing the report: every physical tile in every "
        "phase, coloured by the layer it holds and filled to its cell utilization (needs "
        'matplotlib: pip install -e ".[plots]")',
    )
    inspect_parser.add_argument(
        "--layer",
        metavar="NAME",
        help="with --plot: draw this crossbar layer's blocks on the cells of its tiles "
        "instead (NAME as inspect prints it)",
    )
    inspect_parser.set_defaults(handler=run_inspect)

    run_parser = commands.add_parser(
        "run",
        help="run a compiled program on inputs from an .npz file",
        description="Program a simulated chip with the program and run one batch.",
    )
    run_parser.add_argument("program", type=Path, help="a compiled program (.xbar)")
    run_parser.add_argument(
        "--input", type=Path, required=True, help=".npz with one array per program input"
    )
    run_parser.add_argument("-o", "--output", type=Path, help="write the outputs to this .npz")
    run_parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON document (warnings stay on stderr)",
    )
    add_noise_options(run_parser)
    run_parser.set_defaults(handler=run_run)

    calibrate_parser = commands.add_parser(
        "calibrate",
        help="measure converter ranges on calibration data and store them in the program",
        description="Run the program on calibration samples and store per layer the DAC "
        "input range and the ADC range (a percentile of what occurs) in its calibration "
        "section; runs use them with --set input_range=calibrated --set adc_range=calibrated.",
    )
    calibrate_parser.add_argument("program", type=Path, help="a compiled program (.xbar)")
    calibrate_parser.add_argument(
        "--data", type=Path, required=True, help=".npz with one array per input (samples first)"
    )
    calibrate_parser.add_argument(
        "--percentile", type=float, default=99.99, help="percentile kept (default 99.99)"
    )
    calibrate_parser.add_argument(
        "--samples", type=int, metavar="N", help="use the first N samples (default all)"
    )
    calibrate_parser.add_argument(
        "--batch-size",
        type=int,
        help="samples per run (default: as many as fit a memory budget of 1 GiB, or half "
        "the available memory if less, at most the samples; a program compiled for one batch "
        "size keeps it)",
    )
    calibrate_parser.add_argument(
        "-o", "--output", type=Path, help="write the calibrated program here (default: in place)"
    )
    calibrate_parser.set_defaults(handler=run_calibrate)

    eval_parser = commands.add_parser(
        "eval",
        help="compare a compiled program with its float model on a data set",
        description="Run the program and the reference ONNX model (onnxruntime) on every "
        "sample; report per output the error, SNR and top-1 agreement, and the accuracy "
        "against labels.",
    )
    eval_parser.add_argument("program", type=Path, help="a compiled program (.xbar)")
    eval_parser.add_argument("--reference", type=Path, required=True, help="the float ONNX model")
    eval_parser.add_argument(
        "--data", type=Path, required=True, help=".npz with one array per input (samples first)"
    )
    eval_parser.add_argument("--labels", metavar="KEY", help="array of integer labels in --data")
    eval_parser.add_argument(
        "--samples", type=int, metavar="N", help="use the first N samples of --data (default all)"
    )
    eval_parser.add_argument(
        "--batch-size",
        type=int,
        help="samples per run (default: as many as fit a memory budget of 1 GiB, or half the "
        "available memory if less, at most the samples; a program compiled for one batch size "
        "keeps it)",
    )
    eval_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_noise_options(eval_parser)
    eval_parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="chip instances to run (seeds --seed, --seed + 1, ...): accuracy and agreement "
        "as mean, std, min and max over them (default 1)",
    )
    eval_parser.add_argument(
        "--sensitivity",
        action="store_true",
        help="also run each crossbar layer alone noisy (the rest quant) and tabulate the "
        "error it adds (one more pass over the data per layer and instance)",
    )
    eval_parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also draw the accuracy (with --labels) and top-1 agreement of each chip "
        "instance, their mean and the float model's accuracy (one point per instance: use "
        '--seeds N for a distribution; needs matplotlib: pip install -e ".[plots]")',
    )
    eval_parser.add_argument(
        "--ort-int8",
        action="store_true",
        help="also quantize the reference with onnxruntime's static int8 quantization "
        "(per-channel weights, activations calibrated on the --data samples or "
        "--calibration) and report its error, SNR and top-1 agreement beside the program's",
    )
    eval_parser.add_argument(
        "--calibration",
        type=Path,
        metavar="NPZ",
        help="--ort-int8: calibrate onnxruntime's activation ranges on these samples "
        "(default: the --data samples)",
    )
    add_engine_options(eval_parser)
    eval_parser.set_defaults(handler=run_eval)
    add_sweep_parser(commands)
    return parser


def add_sweep_parser(commands) -> None:
    """`xbarc sweep`: the options of a design-space sweep (xbarc/sweep.py, imported only
    when it runs: `xbarc --help` stays fast)."""
    sweep_parser = commands.add_parser(
        "sweep",
        help="compile and evaluate every point of a grid of options (design-space sweep)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compile the model at every point of the product of the --grid options and\n"
        "evaluate each program on chip seeds 0..N-1: accuracy mean +- std, crossbars,\n"
        "cycles, writes, energy, latency, area and EDAP per point. Writes OUTPUT/sweep.csv,\n"
        "sweep.json, accuracy.png and pareto.png (with matplotlib), one JSON file per\n"
        "finished point (points/) and the compiled programs (programs/): run the same\n"
        "command again to resume a sweep that was stopped.",
        epilog="example:\n  xbarc sweep tests/fixtures/digits/mlp_p90.onnx --input-shape x=1x1x8x8 "
        "\\\n    --data tests/fixtures/digits/digits_test.npz --labels y \\\n"
        "    --grid tile=32x32,64x64,128x128 --grid mapping=dense,sparse --seeds 3 -o study",
    )
    sweep_parser.add_argument("model", type=Path, help="the ONNX model (.onnx)")
    sweep_parser.add_argument(
        "--data", type=Path, required=True, help=".npz with one array per input (samples first)"
    )
    sweep_parser.add_argument(
        "--labels", metavar="KEY", required=True, help="array of integer labels in --data"
    )
    sweep_parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KNOB=V1,V2,...",
        help="a knob and its values (repeatable; the grid is their product, the first knob "
        "varying slowest). Knobs: hw (a preset or hardware file), tile (RxC), tiles, "
        "weight_bits, cell_bits, encoding, scale, clip, mapping, group_cols, pack, "
        "max_ones, adc_bits and dac_bits (the "
        "chip's converters), hw.SECTION.FIELD (any field of the chip, as --hw-set) and "
        "noise.FIELD (any field of the noise profile, as --set)",
    )
    sweep_parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        metavar="N",
        help="chip seeds 0..N-1 per point (default 5; one where the profile draws nothing)",
    )
    sweep_parser.add_argument(
        "-o", "--output", type=Path, required=True, help="the study folder (created if needed)"
    )
    sweep_parser.add_argument(
        "--samples", type=int, metavar="N", help="use the first N samples of --data (default all)"
    )
    sweep_parser.add_argument(
        "--noise",
        default="rram",
        metavar="PROFILE",
        help="noise profile of every point: ideal, quant, rram, pcm or a .toml file (default rram)",
    )
    sweep_parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the noise profile at every point (repeatable)",
    )
    sweep_parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="shape of a model input with symbolic dims, e.g. x=1x1x8x8 (repeatable)",
    )
    sweep_parser.add_argument(
        "--hw",
        default="isaac",
        metavar="NAME|FILE.toml",
        help="the chip of every point: a preset (isaac, the default; puma) or a hardware file",
    )
    sweep_parser.add_argument(
        "--tiles", type=int, help="physical crossbar tiles on the chip (default: the chip's)"
    )
    sweep_parser.add_argument(
        "--hw-set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="change a field of the chip at every point, e.g. cost.adc_energy_pj=2.0 (repeatable)",
    )
    sweep_parser.add_argument(
        "--reference",
        type=Path,
        help="the float model accuracy and agreement are compared with (default: MODEL)",
    )
    sweep_parser.add_argument(
        "--batch-size", type=int, help="samples per run (default: chosen as eval chooses it)"
    )
    add_engine_options(sweep_parser)
    sweep_parser.add_argument(
        "--json", action="store_true", help="print sweep.json on stdout instead of the table"
    )
    sweep_parser.set_defaults(handler=run_sweep)


def add_noise_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--noise",
        default="ideal",
        metavar="PROFILE",
        help="ideal (the float model through the tiles), quant (weights, DAC and ADC "
        "quantized as compiled), rram, pcm (quant plus device noise), or a profile .toml "
        "file (default ideal)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the noise profile, e.g. --set adc_bits=6 (repeatable)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every random draw (chip, drift and read seeds derive from it; default 0)",
    )


def run_compile(args: argparse.Namespace) -> int:
    from xbarc.compiler import CompileOptions, compile_onnx
    from xbarc.ir.io import save_program
    from xbarc.ir.printer import print_program
    from xbarc.report import mapping_warnings, report

    started = time.perf_counter()
    check_compile_flags(args)
    sizes = parse_tile_sizes(args.tile_size) if args.tile_size is not None else ()
    rows, cols = sizes[0] if len(sizes) == 1 else (None, None)
    clip, clip_layers = parse_clips(args.clip)
    options = CompileOptions(
        hw=args.hw,
        hw_set=tuple(args.hw_set),
        tiles=args.tiles,
        tile_rows=rows,
        tile_cols=cols,
        weight_bits=args.weight_bits,
        cell_bits=args.cell_bits,
        encoding=args.encoding,
        scale=args.scale,
        clip=clip,
        clip_percentile=args.clip_percentile,
        clip_layers=clip_layers,
        max_ones=args.max_ones,
        mapping=args.mapping,
        group_cols=args.group_cols,
        pack=args.pack,
        reorder_cols=args.reorder_cols,
        strategy=args.strategy,
        basis_k=args.basis_k,
        coef_bits=args.coef_bits,
        segment_rows=args.segment_rows,
        basis_fit=args.basis_fit,
        basis_keep=tuple(args.basis_keep),
        basis_terms=args.basis_terms,
        basis_copies=args.basis_copies,
        calibration_data=args.calibration_data,
        pipeline=args.pipeline,
        input_shapes=dict(parse_input_shape(text) for text in args.input_shape),
        tile_sizes=sizes if len(sizes) > 1 else (),
        nax_budget=args.nax_budget,
        nax_noise=args.nax_noise,
    )
    from xbarc.compiler import build_hardware

    chip = build_hardware(options)  # every chip option checked before anything is compiled
    check_chip_size(args, chip.tile_types[0].rows, chip.tile_count)
    output = args.output or Path(args.model.stem + ".xbar")
    check_output(args.model, output, calibration_data=args.calibration_data)
    if args.nax_check is not None:
        check_nax_check(args.nax_check, options, chip)
    if args.compare_strategies:
        from xbarc.compiler import check_compare_strategies

        check_compare_strategies(options, args.emit)

    def print_after(pass_object, program) -> None:
        print(f"// ----- IR after {pass_object.name} -----")
        print(print_program(program))

    after_pass = print_after if args.print_ir_after_all else None
    notes: list[str] = []  # what the compiler decided after the passes (nax's guard)
    program = compile_onnx(args.model, options, emit=args.emit, after_pass=after_pass, notes=notes)
    from xbarc import progress

    with progress.task("write", total=2, unit="step", estimate=False) as task:
        task.describe(str(output))
        save_program(output, program)
        elapsed = time.perf_counter() - started
        task.update(1, item="report")
        summary = report(program)
        task.update(1)
    plain_error = None  # --max-ones: the weight error without it
    if args.max_ones is not None and program.arrays:
        from dataclasses import replace

        from xbarc.passes.quantize import weight_error

        plain = compile_onnx(args.model, replace(options, max_ones=None, mapping="dense"))
        plain_error = (weight_error(program), weight_error(plain))
    mappings = None
    if args.compare_mappings:
        mappings = compare_mappings(args.model, options, program, summary)
    strategies = None
    if args.compare_strategies:
        from xbarc.compiler import compare_strategies

        strategies = compare_strategies(args.model, options, program)
    if args.json:
        document = compile_json(args, output, elapsed, program, summary, plain_error)
        document["notes"] = notes
        document["compare_mappings"] = mappings
        document["compare_strategies"] = strategies
        print(json.dumps(finite_json(document), indent=2))
    else:
        print_compile(args, output, elapsed, program, summary, plain_error)
        for note in notes:
            print(note)
        if mappings is not None:
            from xbarc.report import format_mapping_comparison

            print(format_mapping_comparison(mappings))
            if args.group_cols is None:
                print(
                    "the compacted rows' column-group widths are chosen per layer for each row, "
                    "as compile chooses them (--group-cols fixes them for every row)"
                )
        if strategies is not None:
            from xbarc.compiler import format_strategies

            print(format_strategies(strategies, chip.tile_count))
    if args.nax_check is not None:
        print_nax_check(program, args, options)
    for line in mapping_warnings(summary):
        print(line, file=sys.stderr)
    return 0


def print_nax_check(program, args: argparse.Namespace, options) -> None:
    """--nax-check: the chosen program and the best uniform size, simulated."""
    from xbarc.compiler import nax_check

    rows = nax_check(program, args.nax_check, options.nax_noise)
    print(
        f"--nax-check on {args.nax_check} under {options.nax_noise} (chip seeds 0-2): output "
        "error against the float model (relative RMS), accuracy on its labels y"
    )
    for row in rows:
        accuracy = (
            f"accuracy {row['accuracy_mean']:.1%} +- {row['accuracy_std']:.1%}"
            if row["accuracy_mean"] is not None
            else "no labels"
        )
        print(
            f"  {row['program']:<12} error {row['error_mean']:.2%} +- {row['error_std']:.2%}, "
            f"{accuracy}"
        )


MAPPING_NAMES = {"dense": "dense blocks", "sparse": "sparse mapping", "squeeze": "squeezed"}


def mapping_variants(options: CompileOptions) -> list[tuple[str, CompileOptions]]:
    """(how it differs, its options) for each program `--compare-mappings` sets beside
    the written one: each other mapping, the other cell width (1-bit cells, or 2-bit for
    a program of 1-bit cells) and the other packing (none, or per layer for an unpacked
    program). Each differs from `options` in what it names only: the packing is given
    explicitly, since its default depends on the mapping."""
    from dataclasses import replace

    from xbarc.passes.tile import default_packing

    packing = options.pack or default_packing(options.mapping)
    written = replace(options, pack=packing)
    variants = [
        (MAPPING_NAMES[mapping], replace(written, mapping=mapping))
        for mapping in MAPPING_NAMES
        if mapping != options.mapping
    ]
    from xbarc.compiler import build_hardware

    current = (
        options.cell_bits if options.cell_bits is not None else build_hardware(options).cell.bits
    )
    cell_bits = 2 if current == 1 else 1
    variants.append((f"{cell_bits}-bit cells", replace(written, cell_bits=cell_bits)))
    if packing == "off":
        variants.append(("packed per layer", replace(written, pack="layer")))
    else:
        variants.append(("no packing", replace(written, pack="off")))
    return variants


def compare_mappings(model: Path, options: CompileOptions, program, summary) -> list[dict]:
    """`--compare-mappings`: the written program (`program`, `summary` its report) as the
    first row, then each of `mapping_variants` compiled (or the error that stopped it)."""
    from xbarc.compiler import compile_onnx
    from xbarc.passes.tile import default_packing
    from xbarc.report import comparison_row, report

    if options.pipeline is not None:
        raise XbarcError("--compare-mappings builds its own pipelines", hint="drop --pipeline")
    packing = options.pack or default_packing(options.mapping)
    rows = [comparison_row("", options.mapping, packing, program, summary)]
    for differs, variant in mapping_variants(options):
        try:
            compiled = compile_onnx(model, variant)
        except XbarcError as error:
            rows.append({"differs": differs, "error": error.message})
            continue
        rows.append(
            comparison_row(
                differs,
                variant.mapping,
                variant.pack or default_packing(variant.mapping),
                compiled,
                report(compiled),
            )
        )
    return rows


def check_compile_flags(args: argparse.Namespace) -> None:
    """Options that cannot go together, refused before anything is compiled or written."""
    if args.compare_mappings and args.pipeline is not None:
        raise XbarcError("--compare-mappings builds its own pipelines", hint="drop --pipeline")
    if args.json and args.print_ir_after_all:
        raise XbarcError(
            "--print-ir-after-all prints the program between passes, which is not JSON",
            hint="drop --json or --print-ir-after-all",
        )


def print_compile(args, output: Path, elapsed: float, program, summary, plain_error) -> None:
    """The text report of `compile`: what was written, the mapping, the weight error, the
    column groups and packing chosen."""
    from xbarc.report import mapping_line

    print(
        f"wrote {output} (+ {output.name}.npz) in {elapsed:.2f} s: "
        f"{len(summary.layers)} crossbar layers, {summary.weights} weights, "
        f"{summary.blocks} blocks on {summary.vtiles} virtual tiles, "
        f"{summary.phases} phase(s) on {summary.tile_budget} tiles, "
        f"{summary.cell_writes} cell writes "
        + ("on every inference" if summary.writes_per_pass else "once, at deployment")
    )
    print(mapping_line(summary))
    fixed = [graph_input for graph_input in program.inputs if graph_input.fixed_batch]
    if fixed:
        print(
            f"batch: the model fixes its batch size, so the program runs batches of "
            f"{fixed[0].type.static_shape()[0]} only ({', '.join(i.name for i in fixed)}: "
            "batch=fixed)"
        )
    if program.arrays:
        from xbarc.weight_report import summary_line, weight_errors

        print(summary_line(weight_errors(program)))
    if args.mapping != "dense" and args.pipeline is None and program.arrays:
        print(describe_group_cols(program, chosen=args.group_cols is None))
    if args.pack == "auto" and args.pipeline is None and program.arrays:
        print(describe_packing(summary))
    if plain_error is not None:
        print(
            f"at most {args.max_ones} one bits per weight: weight RMS error "
            f"{plain_error[0]:.2%} of the weights' RMS ({plain_error[1]:.2%} without)"
        )


def compile_json(args, output: Path, elapsed: float, program, summary, plain_error) -> dict:
    """`compile --json`: the files written, the program's totals, the weight error, the
    column groups and packing chosen (the comparisons are added by the caller)."""
    from collections import Counter
    from statistics import median

    from xbarc.batching import fixed_batch
    from xbarc.passes.tile import default_packing
    from xbarc.report import mapping_warnings
    from xbarc.weight_report import finite, weight_errors, worst

    errors = weight_errors(program)
    sqnr = sorted(error.sqnr_db for error in errors)
    compacted = args.mapping != "dense" and args.pipeline is None and bool(program.arrays)
    widths = Counter(array.group_cols for array in program.arrays if array.group_cols)
    packed = sum(1 for layer in summary.layers if layer.blocks > layer.vtiles)
    return {
        "model": str(args.model),
        "written": {"program": str(output), "tensors": f"{output}.npz"},
        "compile_seconds": elapsed,
        "emit": args.emit,
        "totals": {
            "crossbar_layers": len(summary.layers),
            "weights": summary.weights,
            "blocks": summary.blocks,
            "vtiles": summary.vtiles,
            "tiles": summary.tiles,
            "tile_budget": summary.tile_budget,
            "phases": summary.phases,
            "cell_writes": summary.cell_writes,
            "writes_per_pass": summary.writes_per_pass,
            "cycles": summary.cycles,
            "crossbar_macs": summary.crossbar_macs,
            "digital_macs": summary.digital_macs,
            "mapped_share": summary.mapped_share,
        },
        "fixed_batch": fixed_batch(program),
        "weight_error": {
            "layers": len(errors),
            "sqnr_median_db": finite(median(sqnr)) if sqnr else None,
            "worst": [error.to_json() for error in worst(errors)],
            "per_layer": [error.to_json() for error in errors],
        },
        "group_cols": {
            "widths": {str(width): count for width, count in sorted(widths.items())},
            "per_layer": {array.layer or array.name: array.group_cols for array in program.arrays},
            "chosen": args.group_cols is None,
        }
        if compacted
        else None,
        "packing": {
            "mode": args.pack or default_packing(args.mapping),
            "packed_layers": packed,
            "layers": len(summary.layers),
            "cycles": summary.cycles,
            "cycles_unpacked": summary.cycles_unpacked,
        }
        if args.pipeline is None and program.arrays
        else None,
        "max_ones": None
        if plain_error is None
        else {
            "max_ones": args.max_ones,
            "weight_rms_error": plain_error[0],
            "weight_rms_error_without": plain_error[1],
        },
        "warnings": mapping_warnings(summary),
    }


def describe_group_cols(program, chosen: bool) -> str:
    """The column-group widths of a sparse program's layers, and how they were chosen."""
    from collections import Counter

    from xbarc.passes.tiling.layouts import TOLERANCE

    widths = Counter(array.group_cols for array in program.arrays)
    parts = [
        f"{width} column{'s' if width != 1 else ''} in {count} layer{'s' if count != 1 else ''}"
        for width, count in sorted(widths.items(), key=lambda item: -(item[0] or 0))
    ]
    tiles = program.hardware.tile_count
    if not chosen:
        how = "as given by --group-cols"
    elif len(program.phases) <= 1:
        how = (
            "chosen per layer: the fewest cycles with which the model fits "
            f"{tiles} tiles in one phase; --group-cols sets them"
        )
    else:
        how = (
            f"chosen per layer for the fewest crossbars (within {TOLERANCE:.0%}), as the model "
            f"cannot fit {tiles} tiles in one phase with any; --group-cols sets them"
        )
    return f"column groups: {', '.join(parts)} ({how})"


def describe_packing(summary) -> str:
    """Which layers `pack=auto` packed, and what that costs in cycles."""
    packed = sum(1 for layer in summary.layers if layer.blocks > layer.vtiles)
    layers = len(summary.layers)
    if summary.phases > 1:
        how = (
            f"the model cannot fit {summary.tile_budget} tiles in one phase even packed, so "
            "every layer is"
        )
    else:
        how = f"only where needed to fit {summary.tile_budget} tiles in one phase"
    return (
        f"packing: {packed} of {layers} layer{'s' if layers != 1 else ''} share tiles "
        f"(chosen per layer, {how}); {summary.cycles} cycles per forward pass, "
        f"{summary.cycles_unpacked} with a tile per block"
    )


def run_opt(args: argparse.Namespace) -> int:
    from xbarc.ir.io import load_program, save_program
    from xbarc.ir.printer import print_program
    from xbarc.passes.manager import Pipeline, parse_pipeline, pass_spec, run_pipeline

    started = time.perf_counter()
    pipeline = parse_pipeline(args.pipeline) if args.pipeline is not None else Pipeline(())
    output = None if args.output in (None, "-") else Path(args.output)
    if output is not None:
        check_program_output(output, args.program)
    program = load_program(args.program)
    finished: list[object] = []  # the passes that ran, verified

    def after_pass(pass_object, result) -> None:
        finished.append(pass_object)
        if args.print_ir_after_all:
            print(f"// ----- IR after {pass_object.name} -----")
            print(print_program(result), end="")

    check_chip_options(program, pipeline.passes, args.program)
    try:
        program = run_pipeline(program, pipeline, after_pass=after_pass)
    except XbarcError as error:
        # a pass's own error knows neither the pass nor the program it was given
        failing = pass_spec(pipeline.passes[len(finished)])
        message = f"pass {failing}: {error.message}"
        raise XbarcError(message, where=error.where or args.program, hint=error.hint) from None
    if output is None:
        if not (args.print_ir_after_all and finished):  # else the last dump is the result
            print(print_program(program), end="")
        return 0
    save_program(output, program)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {output} (+ {output.name}.npz) in {elapsed:.2f} s after "
        f"{pipeline if finished else 'no passes'}: {len(program.arrays)} arrays, "
        f"{len(program.blocks)} blocks on {program.vtile_count} virtual tiles, "
        f"{len(program.phases)} phase(s)"
    )
    return 0


def check_chip_options(program, passes, path: Path) -> None:
    """The chip options of the passes (tile{rows,cols}, allocate{tiles}, ...) set the chip
    before any pass runs: try them one pass at a time first, so that a bad one is reported
    with the pass that names it."""
    from xbarc.passes.manager import pass_spec, target_chip

    hardware = program.hardware
    for pass_object in passes:
        try:
            hardware = target_chip(hardware, [pass_object])
        except XbarcError as error:
            message = f"pass {pass_spec(pass_object)}: {error.message}"
            raise XbarcError(message, where=path, hint=error.hint) from None


def check_program_output(output: Path, program: Path, data: Path | None = None) -> None:
    """A program written from `program` (by opt or calibrate, maybe in place, with `data`)
    goes to a regular file in an existing folder that is none of the inputs."""
    from xbarc.ir.io import check_program_output as check_outputs

    if output.suffix in (".npz", ".onnx"):
        raise XbarcError(
            f"refusing to write the program to {output}", hint="give -o a path ending in .xbar"
        )
    check_outputs(output, inputs=[(data, "data file")], rewrites=program)


def run_inspect(args: argparse.Namespace) -> int:
    from xbarc.adc_report import format_adc, inspect_adc
    from xbarc.ir.io import load_program
    from xbarc.report import (
        format_report,
        format_tile_reports,
        mapping_warnings,
        report,
        tile_map,
        tile_reports,
    )
    from xbarc.weight_report import format_weight_errors, weight_errors

    if args.plot is not None or args.layer is not None:
        return plot_inspect(args)
    program = load_program(args.program)
    if args.tile is not None:
        print(tile_map(program, vtile_number(args.tile)))
        return 0
    if args.tiles:
        tiles = tile_reports(program)
        if args.json:
            print(json.dumps([tile.to_json() for tile in tiles], indent=2))
        else:
            print(format_tile_reports(tiles))
        return 0
    from xbarc import progress

    with progress.task("inspect", total=3, unit="step", estimate=False) as task:
        task.describe("layers and tiles")
        result = report(program)
        if len(program.hardware.tile_types) > 1:
            from dataclasses import replace

            from xbarc.compiler import uniform_tile_sizes

            result = replace(result, uniform=uniform_tile_sizes(program))
        task.update(1, item="ADC")
        adc = inspect_adc(program, args.program)
        task.update(1, item="weight errors")
        errors = weight_errors(program)
        task.update(1)
    if args.json:
        data = result.to_json()
        add_adc_json(data, adc)
        add_weight_error_json(data, errors)
        print(json.dumps(data, indent=2))
    else:
        print(format_report(result))
        if errors:
            print()
            print(format_weight_errors(errors))
        print()
        print(format_adc(adc))
    for line in mapping_warnings(result):
        print(line, file=sys.stderr)
    print_warnings(adc)
    return 0


def plot_inspect(args: argparse.Namespace) -> int:
    """`inspect --plot PNG [--layer NAME]`: the chip picture, or one layer's blocks on its
    tiles, written atomically; every check (options, matplotlib, the output path, the
    layer's name) before anything is drawn or written."""
    from xbarc.ir.io import load_program, sidecar_path
    from xbarc.plots import (
        check_plot_path,
        chip_figure,
        layer_figure,
        require_matplotlib,
        save_figure,
    )

    if args.plot is None:
        raise XbarcError("--layer names the layer --plot draws", hint="add --plot layer.png")
    other = [
        flag
        for flag, given in (
            ("--json", args.json),
            ("--tiles", args.tiles),
            ("--tile", args.tile is not None),
        )
        if given
    ]
    if other:
        raise XbarcError(
            f"--plot draws a picture instead of the report: {other[0]} does not go with it",
            hint=f"leave out {other[0]}",
        )
    require_matplotlib()
    check_plot_path(
        args.plot,
        [(args.program, "program"), (sidecar_path(args.program), "program's tensor file")],
    )
    program = load_program(args.program)
    name = args.program.name
    if args.layer is not None:
        figure = layer_figure(program, args.layer, name)
        what = f"layer {args.layer}"
    else:
        figure = chip_figure(program, name)
        what = "the chip"
    save_figure(figure, args.plot)
    print(f"wrote {args.plot}: {what}")
    return 0


def add_adc_json(data: dict, adc: AdcUse) -> None:
    """The ADC figures in a JSON report: each layer's under its "adc" key, the ADC and the
    warnings under the report's."""
    figures = adc.to_json()
    by_layer = {row.pop("layer"): row for row in figures.pop("layers")}
    for layer in data["layers"]:
        layer["adc"] = by_layer[layer["name"]]
    data["adc"] = figures


def add_weight_error_json(data: dict, errors: list) -> None:
    """Each layer's weight error under its "weight_error" key (null for a layer with no
    quantized weights)."""
    by_layer = {error.layer: error.to_json() for error in errors}
    for layer in data["layers"]:
        row = by_layer.get(layer["name"])
        if row is not None:
            row.pop("layer")
        layer["weight_error"] = row


def print_warnings(adc: AdcUse) -> None:
    """The ADC's warnings and their fix on stderr (a JSON report on stdout stays JSON)."""
    from xbarc.adc_report import warning_lines

    for line in warning_lines(adc):
        print(line, file=sys.stderr)


def vtile_number(text: str) -> int:
    """'v3' or '3' -> 3."""
    number = parse_number(text[1:] if text.startswith("v") else text)
    if number is None:
        raise XbarcError(f"--tile {text!r} is not a virtual tile", hint="give it as v3 or 3")
    return number


def run_run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import numpy as np

    from xbarc.adc_report import format_adc, measured_adc, observe_reads
    from xbarc.evaluate import load_data, settings_lines
    from xbarc.ir.tensors import save_npz
    from xbarc.session import InferenceSession

    if args.output is not None:
        check_run_output(args)
    session = InferenceSession(
        args.program, noise=args.noise, seed=args.seed, overrides=args.overrides
    )
    feeds = load_data(args.input)
    outputs = session.get_outputs()
    spread = observe_reads(session)
    results = [np.asarray(value) for value in session.run(None, feeds)]
    samples = len(next(iter(feeds.values()))) if feeds else 0
    adc = None
    if spread is not None:
        adc = measured_adc(spread, session.settings, session.program, samples, args.program)
    if args.output is not None:
        save_npz(args.output, {arg.name: v for arg, v in zip(outputs, results, strict=True)})
    settings, seeds = asdict(session.settings), asdict(session.seeds)
    named = [(arg.name, value) for arg, value in zip(outputs, results, strict=True)]
    if args.json:
        document = run_json(args, settings, seeds, samples, named, adc)
        print(json.dumps(finite_json(document), indent=2))
    else:
        print(f"noise profile {session.settings.profile}")
        for line in settings_lines(settings, seeds, args.seed):
            print(line)
        for name, value in named:
            print(f"{name}: {value.dtype}{list(value.shape)} {summarize(value)}".rstrip())
            if is_classifier(value):
                for line in format_top_k(value):
                    print(line)
        if adc is not None:
            print(format_adc(adc))
        if args.output is not None:
            print(f"wrote {args.output}")
    if adc is not None:
        print_warnings(adc)
    return 0


def run_json(
    args: argparse.Namespace,
    settings: dict,
    seeds: dict,
    samples: int,
    named: list,
    adc: AdcUse | None,
) -> dict:
    """`run --json`: the profile, every effective setting and those that apply, the seeds
    something is drawn from, per output its figures (and top-k), the ADC report when
    measured, and the file written."""
    from xbarc.evaluate import converter_fields, device_fields, profile_phrase, used_seeds

    drawn = used_seeds(settings, seeds)
    return {
        "program": str(args.program),
        "profile": settings["profile"],
        "profile_means": profile_phrase(settings),
        "settings": settings,
        "applies": {"converters": converter_fields(settings), "device": device_fields(settings)},
        "seed": args.seed if drawn else None,
        "seeds": drawn,
        "samples": samples,
        "outputs": [output_json(name, value) for name, value in named],
        "adc": None if adc is None else adc.to_json(),
        "output_file": None if args.output is None else str(args.output),
    }


def output_json(name: str, value) -> dict:
    """One output's name, dtype, shape, min, max and mean (null where they do not apply),
    and its top-k per sample if it is classifier-shaped (else null)."""
    numeric = value.size > 0 and value.dtype.kind in "biuf"
    return {
        "name": name,
        "dtype": str(value.dtype),
        "shape": list(value.shape),
        "min": float(value.min()) if numeric else None,
        "max": float(value.max()) if numeric else None,
        "mean": float(value.mean()) if numeric else None,
        "top_k": top_k(value) if is_classifier(value) else None,
    }


TOP_K = 5  # classes shown per sample
TOP_K_SAMPLES = 5  # samples shown in the text report (the JSON has all)


def is_classifier(value) -> bool:
    """A float output of shape [N, C] or [N, C, 1, 1], N >= 1 and C >= 2: class scores."""
    if value.dtype.kind != "f" or value.ndim not in (2, 4) or value.shape[0] < 1:
        return False
    if value.ndim == 4 and value.shape[2:] != (1, 1):
        return False
    return value.shape[1] >= 2


def top_k(value, k: int = TOP_K) -> dict:
    """The k (or C if fewer) largest classes of each sample, the largest first (ties: the
    lower index first), with their values."""
    import numpy as np

    scores = value.reshape(value.shape[0], value.shape[1])
    count = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    return {
        "k": count,
        "classes": scores.shape[1],
        "samples": [
            {"classes": row.tolist(), "values": scores[i, row].tolist()}
            for i, row in enumerate(order)
        ],
    }


def format_top_k(value, shown: int = TOP_K_SAMPLES) -> list[str]:
    """The text lines of `top_k`: per sample `class (value)`, the first `shown` samples."""
    found = top_k(value)
    total = len(found["samples"])
    which = f"the first {shown} of {total} samples" if total > shown else "per sample"
    lines = [f"  top {found['k']} of {found['classes']} classes, {which} (class (value)):"]
    for number, row in enumerate(found["samples"][:shown]):
        pairs = zip(row["classes"], row["values"], strict=True)
        lines.append(f"    sample {number}: " + ", ".join(f"{c} ({v:.4g})" for c, v in pairs))
    return lines


def check_run_output(args: argparse.Namespace) -> None:
    """`run -o` writes a regular file in an existing folder that is none of the inputs."""
    from xbarc.files import check_outputs
    from xbarc.ir.io import sidecar_path

    check_outputs(
        [(args.output, "output file")],
        inputs=[
            (args.program, "program"),
            (sidecar_path(args.program), "program's tensor file"),
            (args.input, "input data"),
        ],
    )


def summarize(value) -> str:
    if value.size == 0 or value.dtype.kind not in "biuf":
        return ""
    flat = value.reshape(-1)
    return f"min {flat.min():.6g} max {flat.max():.6g} mean {flat.mean():.6g}"


def run_calibrate(args: argparse.Namespace) -> int:
    from xbarc.calibrate import calibrate, calibration_batch
    from xbarc.evaluate import load_data
    from xbarc.ir.io import load_program, save_program

    output = args.output or args.program
    check_program_output(output, args.program, args.data)
    program = load_program(args.program)
    data = load_data(args.data)
    choice = calibration_batch(program, data, args.samples, args.batch_size)
    calibrated = calibrate(
        program,
        data,
        percentile=args.percentile,
        samples=args.samples,
        batch_size=choice.size,
    )
    save_program(output, calibrated)
    assert calibrated.calibration is not None
    print(
        f"calibrated {len(calibrated.calibration.layers)} layers on "
        f"{calibrated.calibration.samples} samples at the {args.percentile:g}th percentile, "
        f"in batches of {choice.size} ({choice.describe()})"
    )
    print(f"{'layer':<32} {'input range':>12} {'ADC range':>10}")
    for entry in calibrated.calibration.layers:
        print(f"{entry.layer[:32]:<32} {entry.input_range:>12.4g} {entry.adc_range:>10.4g}")
    print(f"wrote {output}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from xbarc.evaluate import evaluate, format_eval

    if args.calibration is not None and not args.ort_int8:
        raise XbarcError(
            "--calibration is the calibration data of --ort-int8", hint="add --ort-int8"
        )

    if args.plot is not None:
        check_eval_plot(args)
    report = evaluate(
        args.program,
        args.reference,
        args.data,
        noise=args.noise,
        seed=args.seed,
        overrides=args.overrides,
        instances=args.seeds,
        sensitivity=args.sensitivity,
        labels_key=args.labels,
        batch_size=args.batch_size,
        samples=args.samples,
        ort_int8=args.ort_int8,
        calibration_path=args.calibration,
        workers=engine_options(args),
    )
    if args.json:
        print(json.dumps(finite_json(report.to_json()), indent=2))
    else:
        print(format_eval(report))
    if report.adc is not None:
        print_warnings(report.adc)
    if args.plot is not None:
        plot_eval(args, report)
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from xbarc.compiler import CompileOptions
    from xbarc.sweep import SweepOptions, format_sweep, parse_grid, run_sweep, sweep_document

    base = CompileOptions(
        hw=args.hw,
        tiles=args.tiles,
        input_shapes=dict(parse_input_shape(text) for text in args.input_shape),
        hw_set=tuple(args.hw_set),
    )
    options = SweepOptions(
        model=args.model,
        data=args.data,
        labels=args.labels,
        knobs=tuple(parse_grid(text) for text in args.grid),
        output=args.output,
        seeds=args.seeds,
        noise=args.noise,
        overrides=tuple(args.overrides),
        base=base,
        reference=args.reference,
        samples=args.samples,
        batch_size=args.batch_size,
        engine=engine_options(args),
        command=("xbarc", *sys.argv[1:]),
    )
    result = run_sweep(options)
    if args.json:
        print(json.dumps(finite_json(sweep_document(result)), indent=2))
    else:
        print(format_sweep(result))
    return 0


def check_eval_plot(args: argparse.Namespace) -> None:
    """`eval --plot PNG`: matplotlib and the output path, checked before the eval runs."""
    from xbarc.ir.io import sidecar_path
    from xbarc.plots import check_plot_path, require_matplotlib

    require_matplotlib()
    check_plot_path(
        args.plot,
        [
            (args.program, "program"),
            (sidecar_path(args.program), "program's tensor file"),
            (args.reference, "reference model"),
            (args.data, "data file"),
            (args.calibration, "calibration data"),
        ],
    )


def plot_eval(args: argparse.Namespace, report) -> None:
    """The accuracy and agreement of each chip instance of `report`, drawn to --plot."""
    from xbarc.plots import accuracy_figure, save_figure

    title = f"{args.program.name} in {report.noise}, {report.samples} samples"
    figure = accuracy_figure(report.instances, report.reference_accuracy, title)
    save_figure(figure, args.plot)
    # stderr: a --json report on stdout stays one JSON document
    print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)


def finite_json(value):
    """JSON has no infinity: write it as the strings "inf" and "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_json(item) for item in value]
    return value


def parse_clips(items: list[str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`--clip` items -> (the mode of every layer, (layer, mode) overrides): `mse`,
    `conv1=max`; the last plain mode wins."""
    from xbarc.passes.quantize import check_clip

    mode = "max"
    layers: dict[str, str] = {}
    for item in items:
        name, equals, value = item.rpartition("=")
        check_clip(value)
        if not equals:
            mode = value
            continue
        if not name or any(mark in name for mark in ",;{}"):
            raise XbarcError(
                f"--clip {item!r} does not name a layer the pipeline can carry",
                hint="give LAYER=MODE with the layer's name as xbarc inspect shows it "
                "(names with , ; { } cannot be given; use --pipeline)",
            )
        layers[name] = value
    return mode, tuple(layers.items())


# a whole number as options spell it: ASCII digits only (str.isdigit also takes
# superscripts such as '²', which int() then refuses), at most 18 of them (int() of a
# 5000-digit string is refused by Python itself)
NUMBER = re.compile(r"[0-9]{1,18}")


def parse_number(text: str) -> int | None:
    """`text` as a whole number, or None when it is not ASCII digits."""
    return int(text) if NUMBER.fullmatch(text) else None


def check_nax_check(path: Path, options, chip) -> None:
    """--nax-check simulates the chosen mix: refuse it on a chip of one size or without
    its data file, before anything is compiled."""
    if len(chip.tile_types) < 2:
        raise XbarcError(
            "--nax-check compares per-layer tile sizes, and the chip has one",
            hint="give several: --tile-size 32x32,64x64,128x128,256x256",
        )
    if options.pipeline is not None:
        raise XbarcError("--nax-check needs the default pipeline", hint="drop --pipeline")
    if not path.is_file():
        raise XbarcError(f"--nax-check {path}: no such file", hint="give a .npz of samples")


def parse_tile_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """--tile-size: one RxC, or a comma list of them (a chip of several tile types)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 1 and not all(parts):
        raise XbarcError(
            f"--tile-size {text!r} has an empty size", hint="e.g. --tile-size 32x32,64x64"
        )
    return tuple(parse_tile_size(part) for part in parts)


def parse_tile_size(text: str) -> tuple[int, int]:
    from xbarc.limits import MAX_TILE_CELLS, MAX_TILE_DIM

    rows_text, sep, cols_text = text.lower().partition("x")
    rows, cols = parse_number(rows_text), parse_number(cols_text)
    if not sep or rows is None or cols is None or rows < 1 or cols < 1:
        raise XbarcError(f"--tile-size {text!r} is not ROWSxCOLS", hint="e.g. --tile-size 128x128")
    if max(rows, cols) > MAX_TILE_DIM or rows * cols > MAX_TILE_CELLS:
        raise XbarcError(
            f"--tile-size {text}: xbarc supports tiles of at most {MAX_TILE_DIM} rows or "
            f"columns and {MAX_TILE_CELLS} cells",
            hint="real crossbars have 64 to 1024 rows and columns",
        )
    return rows, cols


MAX_INPUT_RANK = 32  # dimensions of an --input-shape


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    from xbarc.limits import MAX_TENSOR_BYTES

    name, sep, dims = text.rpartition("=")
    parts = [parse_number(part) for part in dims.replace(",", "x").split("x")]
    if not sep or not name or not all(part is not None and part > 0 for part in parts):
        raise XbarcError(
            f"--input-shape {text!r} is not NAME=DIMS",
            hint="e.g. --input-shape data=1x3x224x224",
        )
    shape = tuple(part for part in parts if part is not None)
    if len(shape) > MAX_INPUT_RANK or math.prod(shape) * 4 > MAX_TENSOR_BYTES:
        raise XbarcError(
            f"--input-shape {text!r}: xbarc supports inputs of at most {MAX_INPUT_RANK} "
            f"dimensions and {MAX_TENSOR_BYTES // 4} elements",
            hint="give the shape of one batch",
        )
    return name, shape


def check_chip_size(args: argparse.Namespace, rows: int, tiles: int) -> None:
    """--segment-rows within what the chip (`tiles` tiles of `rows` rows) can plan (a
    trillion segment rows would exhaust memory before any pass could refuse them); the
    chip's own sizes are checked as it is built."""
    from xbarc.limits import MAX_TILE_DIM, check_count

    if args.segment_rows is not None and args.segment_rows >= 1:
        most = min(MAX_TILE_DIM, rows * max(tiles, 1))
        check_count(
            "--segment-rows",
            args.segment_rows,
            most,
            hint=f"a segment must fit the chip's {tiles} tiles of {rows} rows",
        )


def check_output(model: Path, output: Path, calibration_data: Path | None = None) -> None:
    """The compiled program goes to a regular file in an existing folder, and neither its
    text nor its sidecar is the model or the calibration data."""
    from xbarc.ir.io import check_program_output as check_outputs

    if output.suffix == ".onnx":
        raise XbarcError(
            f"refusing to write the program to {output}", hint="give -o a path ending in .xbar"
        )
    check_outputs(output, inputs=[(model, "input model"), (calibration_data, "calibration data")])


if __name__ == "__main__":
    sys.exit(main())
