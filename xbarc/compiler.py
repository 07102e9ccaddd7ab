"""The public compile API: ONNX model -> tile program, through a pass pipeline.

`compile_onnx("model.onnx", CompileOptions(tiles=128))` returns the program;
`xbarc.ir.io.save_program("model.xbar", program)` writes it with its tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xbarc import progress
from xbarc.diagnostics import XbarcError
from xbarc.frontend import import_onnx
from xbarc.hardware import Hardware, TileType, tile_type_name, with_chip_options, with_overrides
from xbarc.ir.tile import Program
from xbarc.passes.manager import parse_pipeline, run_pipeline

if TYPE_CHECKING:
    from xbarc.passes.nax import Nax


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """What `xbarc compile` takes: the chip, the quantization, and the pipeline."""

    # the chip: a preset (isaac, puma) or a hardware file (.toml); the four options after
    # it override the chip's when given (None: the chip's own)
    hw: str = "isaac"
    tiles: int | None = None
    tile_rows: int | None = None
    tile_cols: int | None = None
    weight_bits: int = 8
    cell_bits: int | None = None
    encoding: str | None = None
    scale: str = "column"  # column | tensor: one weight scale per output column or per layer
    clip: str = "max"  # max | percentile | mse: each scale's range (passes/quantize.py)
    clip_percentile: float = 99.99  # clip=percentile: the percentile of |w| kept
    clip_layers: tuple[tuple[str, str], ...] = ()  # (layer, clip mode): per-layer overrides
    max_ones: int | None = None  # at most this many one bits per weight (bit-sparse)
    mapping: str = "dense"  # dense | sparse | squeeze (see passes/tile.py)
    group_cols: int | None = None  # sparse, squeeze: columns per column group (None: chosen)
    pack: str | None = None  # off | layer | model | auto (None: off for dense, else layer)
    reorder_cols: bool = False  # sparse, squeeze: group columns by the rows they use
    strategy: str = "reprogram"  # reprogram | basis: how a model larger than the chip runs
    basis_k: int | None = None  # basis: vectors K (None: as many as fit, at most L)
    coef_bits: int = 8  # basis: coefficient bits q
    segment_rows: int | None = None  # basis: segment length L (None: the tile rows)
    basis_fit: str = "svd"  # basis: how the basis is learned (passes/basis.py)
    basis_keep: tuple[str, ...] = ()  # basis: layers stored on their own arrays
    basis_terms: int | None = None  # basis: at most m basis vectors per segment (None: K)
    basis_copies: int | None = None  # basis: copies of the basis (None: as many as fit)
    # basis: samples (.npz, one array per model input) for the data-aware fit
    calibration_data: Path | None = None
    pipeline: str | None = None  # None: the default pipeline built from the options above
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # the chip's converters, cells and cost constants: section.field=value (`adc.bits=6`),
    # applied in order after the options above (xbarc.hardware.with_overrides)
    hw_set: tuple[str, ...] = ()
    # a chip of several tile types (compile --tile-size 32x32,64x64,...), `tiles` of each;
    # empty: one type, tile_rows x tile_cols. With several, NAX picks each layer's type.
    tile_sizes: tuple[tuple[int, int], ...] = ()
    nax_budget: float | None = None  # nax{budget}: the allowed error increase (None: nax's)
    nax_noise: str = "rram"  # the noise profile whose read noise NAX weighs


def default_pipeline(options: CompileOptions, hardware: Hardware | None = None) -> str:
    """The pipeline the options build. The chip (build_hardware) already holds the tile
    size, budget, cell width and encoding: the passes name only those the user gave, so
    that they never re-target the chip to values nobody asked for. On a chip of several
    tile types (`hardware`, or `options.tile_sizes`) the nax pass picks each layer's."""
    several = len(options.tile_sizes) > 1 or (hardware is not None and len(hardware.tile_types) > 1)
    tile = f"mapping={options.mapping}"
    if options.tile_rows is not None and not several:
        tile = f"rows={options.tile_rows},cols={options.tile_cols},{tile}"
    if options.group_cols is not None and options.mapping != "dense":
        tile += f",group-cols={options.group_cols}"
    if options.pack is not None:
        tile += f",pack={options.pack}"
    if options.reorder_cols:
        tile += ",reorder=true"
    quantize = f"weight-bits={options.weight_bits}"
    if options.cell_bits is not None:
        quantize += f",cell-bits={options.cell_bits}"
    quantize += f",scale={options.scale}"
    if options.encoding is not None:
        quantize += f",encoding={options.encoding}"
    if options.clip != "max":
        quantize += f",clip={options.clip}"
    if options.clip_percentile != 99.99:
        quantize += f",clip-percentile={options.clip_percentile}"
    if options.clip_layers:
        quantize += ",clip-layers=" + ";".join(f"{n}={m}" for n, m in options.clip_layers)
    if options.max_ones is not None:
        quantize += f",max-ones={options.max_ones}"
    basis = f"basis{{{basis_options(options)}}}," if options.strategy == "basis" else ""
    nax = f"nax{{{nax_options(options)}}}," if several else ""
    allocate = f"allocate{{tiles={options.tiles}}}" if options.tiles is not None else "allocate"
    return f"quantize{{{quantize}}},{basis}{nax}tile{{{tile}}},{allocate}"


def nax_options(options: CompileOptions) -> str:
    """The nax pass's options in a pipeline: the budget, and the read noise of the
    profile `options.nax_noise` (the passes never read profiles: the compiler does)."""
    from xbarc.runtime.noise import load_profile

    settings = load_profile(options.nax_noise)
    read_sigma = settings.read_sigma if settings.read_noise != "none" else 0.0
    parts = [
        f"read-sigma={read_sigma:g}",
        f"output-noise={settings.output_noise:g}",
        f"wire-resistance={settings.wire_resistance:g}",
    ]
    if options.nax_budget is not None:
        parts.insert(0, f"budget={options.nax_budget:g}")
    return ",".join(parts)


def with_tile_sizes(
    hardware: Hardware, sizes: tuple[tuple[int, int], ...], tiles: int | None
) -> Hardware:
    """The chip with one tile type per size in `sizes` (in that order), `tiles` of each
    (None: as many as the chip's first type has); `hardware` as it is for fewer than two
    sizes."""
    if len(sizes) < 2:
        return hardware
    tiles = hardware.tile_types[0].count if tiles is None else tiles
    if len(set(sizes)) != len(sizes):
        repeated = next(size for size in sizes if sizes.count(size) > 1)
        raise XbarcError(
            f"--tile-size lists {repeated[0]}x{repeated[1]} twice", hint="give each size once"
        )
    types = tuple(TileType(tile_type_name(r, c), r, c, tiles) for r, c in sizes)
    return replace(hardware, tile_types=types)


def check_nax_options(options: CompileOptions, hardware: Hardware) -> None:
    """--nax-* options choose among several tile sizes: refuse them on a chip of one."""
    from xbarc.passes.nax import MAX_BUDGET

    budget = options.nax_budget
    if budget is not None and not 0.0 <= budget <= MAX_BUDGET:
        raise XbarcError(
            f"--nax-budget {budget:g} is out of range",
            hint=f"give the allowed increase of NAX's error proxy from 0 to {MAX_BUDGET:g}; "
            "0.25 allows 25 % above the most accurate uniform tile size",
        )
    defaults = CompileOptions()
    several = len(hardware.tile_types) > 1
    for field_name, flag in (("nax_budget", "--nax-budget"), ("nax_noise", "--nax-noise")):
        if getattr(options, field_name) != getattr(defaults, field_name) and not several:
            raise XbarcError(
                f"{flag} weighs per-layer tile sizes, and the chip has one",
                hint="give several: --tile-size 32x32,64x64,128x128,256x256",
            )


def build_hardware(options: CompileOptions) -> Hardware:
    """The chip `options` compile for: the preset or hardware file `options.hw`, then
    the chip options given (tiles, tile size, cell bits, encoding; several tile sizes:
    a type per size, `tiles` of each), then the `options.hw_set` items, in that order."""
    from xbarc.presets import load_hardware

    hardware = load_hardware(options.hw)
    several = len(options.tile_sizes) > 1  # --tile-size A,B,...: a type per size
    hardware = with_chip_options(
        hardware,
        tiles=None if several else options.tiles,
        tile_rows=None if several else options.tile_rows,
        tile_cols=None if several else options.tile_cols,
        cell_bits=options.cell_bits,
        encoding=options.encoding,
    )
    hardware = with_tile_sizes(hardware, options.tile_sizes, options.tiles)
    return with_overrides(hardware, options.hw_set)


STRATEGIES = ("reprogram", "basis")


def basis_options(options: CompileOptions) -> str:
    """The basis pass's options in a pipeline (`basis{...}`)."""
    parts = [f"coef-bits={options.coef_bits}", f"fit={options.basis_fit}"]
    if options.basis_k is not None:
        parts.append(f"k={options.basis_k}")
    if options.segment_rows is not None:
        parts.append(f"segment-rows={options.segment_rows}")
    if options.basis_keep:
        parts.append("keep=" + ";".join(options.basis_keep))
    if options.basis_terms is not None:
        parts.append(f"terms={options.basis_terms}")
    if options.basis_copies is not None:
        parts.append(f"copies={options.basis_copies}")
    if options.calibration_data is not None:
        parts.append("objective=outputs")
    return ",".join(parts)


def compile_onnx(
    model_path: str | Path,
    options: CompileOptions | None = None,
    emit: str = "tile",
    after_pass: Callable[[Any, Program], None] | None = None,
    notes: list[str] | None = None,
) -> Program:
    """Import `model_path` and, unless `emit="graph"`, run the pipeline over it. After a
    nax pass, `guard_uniform` keeps the promise that the mix never loses to a uniform
    tile size within the error budget; what it did is appended to `notes` (a line of the
    compile report)."""
    options = options or CompileOptions()
    if emit not in ("graph", "tile"):
        raise XbarcError(f"unknown --emit stage {emit!r}", hint="use graph or tile")
    check_pipeline_options(options)
    if options.strategy not in STRATEGIES:
        raise XbarcError(
            f"unknown strategy {options.strategy!r}", hint=f"use {' or '.join(STRATEGIES)}"
        )
    hardware = build_hardware(options)
    check_nax_options(options, hardware)
    pipeline = parse_pipeline(options.pipeline or default_pipeline(options, hardware))
    check_calibration_data(options, pipeline.passes)
    stages = 1 if emit == "graph" else 2 + (options.calibration_data is not None)
    with progress.task("compile", total=stages, unit="stage", estimate=False) as task:
        task.describe("import")
        program = import_onnx(model_path, hardware, options.input_shapes or None)
        task.update()
        if emit == "graph":
            return program
        if options.calibration_data is not None:
            from xbarc.basis_data import load_calibration_data, with_input_grams

            task.describe("calibration data")
            data = load_calibration_data(options.calibration_data, program)
            program = with_input_grams(program, data)
            task.update()
        task.describe("passes")
        program = run_pipeline(program, pipeline, after_pass)
        task.update()
    from xbarc.passes.nax import Nax

    nax = next((p for p in pipeline.passes if isinstance(p, Nax)), None)
    if nax is not None and program.blocks:
        program, note = guard_uniform(program, nax)
        if note is not None and notes is not None:
            notes.append(note)
    return program


def guard_uniform(program: Program, nax: Nax) -> tuple[Program, str | None]:
    """The nax pass's choice, or the uniform tile size of least EDAP on used area among
    those within its error budget where that is lower, with a line saying so (None:
    the choice stands). The search estimates the cost (passes/naxsel); this compares
    what the cost model charges, each uniform size re-tiled as inspect does
    (`retiled`), so a chip of several types never does worse than one size it could
    have used."""
    from xbarc.report import report

    untiled = replace(program, blocks=(), phases=())
    chosen = report(program).edap_used
    best: tuple[Program, float, str] | None = None
    for name in nax.within_budget(untiled):
        try:
            candidate = retiled(program, name)
        except XbarcError:  # the program cannot take this size alone (a basis too large)
            continue
        edap = report(candidate).edap_used
        if edap < chosen and (best is None or edap < best[1]):
            best = (candidate, edap, name)
    if best is None:
        return program, None
    candidate, edap, name = best
    return candidate, (
        f"nax: every layer on {name} instead of the chosen mix: EDAP {edap:.4g} against "
        f"{chosen:.4g} pJ*ns*mm^2 on used area ({edap / chosen - 1:+.1%}), within the error "
        "budget (the search's estimate missed it)"
    )


def check_calibration_data(options: CompileOptions, passes: tuple[Any, ...]) -> None:
    """--calibration-data feeds the basis pass' data-aware fit: refuse it where no basis
    pass would use it."""
    if options.calibration_data is None:
        return
    if options.pipeline is None and options.strategy != "basis":
        raise XbarcError(
            "--calibration-data fits BasisN's coefficients to the layers' inputs: it needs "
            "--strategy basis",
            hint="add --strategy basis, or drop --calibration-data",
        )
    uses = any(getattr(p, "name", "") == "basis" and p.objective == "outputs" for p in passes)
    if not uses:
        raise XbarcError(
            "--calibration-data has no effect with this --pipeline",
            hint="give the basis pass objective=outputs (basis{objective=outputs}) or drop "
            "--calibration-data",
        )


# options that only build the default pipeline: (field, flag, where a pipeline says it)
PIPELINE_OPTIONS = (
    ("weight_bits", "--weight-bits", "quantize{weight-bits=B}"),
    ("scale", "--scale", "quantize{scale=S}"),
    ("clip", "--clip", "quantize{clip=M}"),
    ("clip_percentile", "--clip-percentile", "quantize{clip-percentile=P}"),
    ("clip_layers", "--clip LAYER=MODE", "quantize{clip-layers=LAYER=MODE;...}"),
    ("max_ones", "--max-ones", "quantize{max-ones=M}"),
    ("mapping", "--mapping", "tile{mapping=M}"),
    ("group_cols", "--group-cols", "tile{group-cols=G}"),
    ("pack", "--pack", "tile{pack=P}"),
    ("reorder_cols", "--reorder-cols", "tile{reorder=true}"),
    ("strategy", "--strategy", "basis{...} before tile"),
    ("basis_k", "--basis-k", "basis{k=K}"),
    ("coef_bits", "--coef-bits", "basis{coef-bits=Q}"),
    ("segment_rows", "--segment-rows", "basis{segment-rows=L}"),
    ("basis_fit", "--basis-fit", "basis{fit=F}"),
    ("basis_keep", "--basis-keep", "basis{keep=LAYER;LAYER}"),
    ("basis_terms", "--basis-terms", "basis{terms=M}"),
    ("basis_copies", "--basis-copies", "basis{copies=R}"),
    ("nax_budget", "--nax-budget", "nax{budget=B}"),
    ("nax_noise", "--nax-noise", "nax{read-sigma=S,output-noise=N,wire-resistance=R}"),
)


def check_pipeline_options(options: CompileOptions) -> None:
    """With a pipeline given, the options that only build the default one would be
    silently ignored: refuse them, saying where the pipeline takes them. (The chip's
    options, --tiles, --tile-size, --cell-bits, --encoding, still describe the chip.)"""
    if options.pipeline is None:
        return
    defaults = CompileOptions()
    for field_name, flag, where in PIPELINE_OPTIONS:
        if getattr(options, field_name) != getattr(defaults, field_name):
            raise XbarcError(
                f"{flag} has no effect with --pipeline",
                hint=f"give it in the pipeline ({where}) or drop --pipeline",
            )


# (label, mapping, one-bit cells): seed 003's comparison, dense -> bit-sliced -> squeezed,
# with seed 000's sparse mapping at the program's own cell width between
COMPARED_MAPPINGS = (
    ("dense", "dense", False),
    ("sparse", "sparse", False),
    ("bit-sliced", "dense", True),
    ("squeezed", "squeeze", True),
)


def compare_mappings(model_path: str | Path, options: CompileOptions) -> list[dict]:
    """The crossbar cost of the model under each mapping of COMPARED_MAPPINGS, compiled
    from `options` (their pipeline is built from the options, so none may be given)."""
    from dataclasses import replace

    from xbarc.passes.tile import default_packing
    from xbarc.report import report

    if options.pipeline is not None:
        raise XbarcError("--compare-mappings builds its own pipelines", hint="drop --pipeline")
    rows = []
    for label, mapping, one_bit in COMPARED_MAPPINGS:
        variant = replace(options, mapping=mapping, cell_bits=1 if one_bit else options.cell_bits)
        summary = report(compile_onnx(model_path, variant))
        rows.append(
            {
                "mapping": label,
                "cell_bits": variant.cell_bits,
                "packing": variant.pack or default_packing(mapping),
                "blocks": summary.blocks,
                "crossbars": summary.vtiles,
                "cells": summary.cells_used,
                "utilization": summary.utilization,
                "cycles": summary.cycles,
                "conversions": summary.conversions,
                "index_entries": summary.index_entries,
                "energy_uj": summary.energy_uj,
            }
        )
    return rows


def compare_group_cols(
    model_path: str | Path, options: CompileOptions, widths: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
) -> list[dict]:
    """Crossbars, cycles per inference and phases of the model compiled from `options`
    with the column-group widths chosen per layer (`group_cols` None, the first row) and
    with each of `widths` for every layer: how close the default comes to the best."""
    from dataclasses import replace

    from xbarc.report import report

    if options.mapping == "dense":
        raise XbarcError("dense mapping has no column groups", hint="use sparse or squeeze")
    rows = []
    for group_cols in (None, *widths):
        summary = report(compile_onnx(model_path, replace(options, group_cols=group_cols)))
        rows.append(
            {
                "group_cols": group_cols,
                "crossbars": summary.vtiles,
                "cycles": summary.cycles,
                "phases": summary.phases,
            }
        )
    return rows


def check_compare_strategies(options: CompileOptions, emit: str) -> None:
    """--compare-strategies builds both strategies' pipelines from the options: refuse
    what it cannot honour before anything is compiled or written."""
    if options.pipeline is not None:
        raise XbarcError(
            "--compare-strategies builds its own pipelines",
            hint="drop --pipeline (--strategy picks the program written)",
        )
    if emit != "tile":
        raise XbarcError("--compare-strategies needs the tile program", hint="drop --emit graph")


def compare_strategies(
    model_path: str | Path, options: CompileOptions, compiled: Program | None = None
) -> list[dict]:
    """Each strategy of STRATEGIES compiled from `options` at its tile budget, as one row of
    figures per inference (`strategy_row`); `compiled`, if given, is the program of
    `options.strategy` already compiled. A strategy that cannot compile the model gives a
    row with its error instead."""
    from dataclasses import replace

    check_compare_strategies(options, "tile")
    rows = []
    for strategy in STRATEGIES:
        program = compiled if compiled is not None and strategy == options.strategy else None
        if program is None:
            try:
                variant = replace(options, strategy=strategy)
                if strategy != "basis":  # the basis options say nothing to the others
                    variant = replace(variant, calibration_data=None)
                program = compile_onnx(model_path, variant)
            except XbarcError as error:
                rows.append({"strategy": strategy, "error": error.message})
                continue
        rows.append(strategy_row(strategy, program))
    return rows


def strategy_row(strategy: str, program: Program) -> dict:
    """What one strategy costs per inference: phases, tiles, array cycles, the writes it
    pays on every inference (cells, program-and-verify time and energy) and once at
    deployment, energy, latency, EDP, the digital combine's share, and the weight error."""
    from xbarc.report import report
    from xbarc.weight_report import weight_errors

    summary = report(program)
    errors = [error.sqnr_db for error in weight_errors(program)]
    combine_uj = sum(basis.combine_energy_uj for basis in summary.basis)
    return {
        "strategy": strategy,
        "basis_k": sum(basis.basis_cols for basis in summary.basis),  # 0: no basis
        "copies": sum(basis.copies for basis in summary.basis),
        "phases": summary.phases,
        "tiles": summary.tiles,
        "cycles": summary.cycles,
        "deployment_cell_writes": summary.deployment_cell_writes,
        "cell_writes_per_inference": summary.cell_writes_per_inference,
        "write_latency_us": summary.write_latency_us if summary.writes_per_pass else 0.0,
        "write_energy_uj": summary.write_energy_uj if summary.writes_per_pass else 0.0,
        "energy_uj": summary.energy_uj,
        "latency_us": summary.latency_us,
        "edp": summary.edp,
        "combine_energy_uj": combine_uj,
        "area_mm2": summary.area_mm2,
        "sqnr_median_db": float(np.median(errors)) if errors else math.inf,
        "sqnr_worst_db": min(errors) if errors else math.inf,
    }


def format_strategies(rows: list[dict], tiles: int) -> str:
    """The strategies side by side, then basis against reprogram where both compiled."""
    header = (
        f"{'strategy':<10} {'phases':>6} {'tiles':>5} {'cycles/inference':>16} "
        f"{'writes/inference':>16} {'write us/inf':>12} {'write uJ/inf':>12} "
        f"{'energy uJ/inf':>13} {'latency us':>12} {'EDP pJ*ns':>10} {'combine uJ':>10} "
        f"{'weight SQNR dB':>14}"
    )
    lines = [f"strategies at {tiles} tiles (per inference; writes at deployment are not):", header]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['strategy']:<10} cannot compile: {row['error']}")
            continue
        sqnr = f"{row['sqnr_median_db']:.1f} ({row['sqnr_worst_db']:.1f})"
        lines.append(
            f"{row['strategy']:<10} {row['phases']:>6} {row['tiles']:>5} {row['cycles']:>16} "
            f"{row['cell_writes_per_inference']:>16} {row['write_latency_us']:>12.2f} "
            f"{row['write_energy_uj']:>12.3f} {row['energy_uj']:>13.3f} "
            f"{row['latency_us']:>12.2f} {row['edp']:>10.4g} {row['combine_energy_uj']:>10.3f} "
            f"{sqnr:>14}"
        )
    by_strategy = {row["strategy"]: row for row in rows if "error" not in row}
    if "reprogram" in by_strategy and "basis" in by_strategy:
        base, basis = by_strategy["reprogram"], by_strategy["basis"]
        lines.append(
            "basis / reprogram: "
            + ", ".join(
                f"{label} {ratio(basis[key], base[key])}"
                for label, key in (
                    ("cycles", "cycles"),
                    ("energy", "energy_uj"),
                    ("latency", "latency_us"),
                    ("EDP", "edp"),
                )
            )
            + f"; basis writes {basis['deployment_cell_writes']} cells once at deployment"
        )
    lines.append("weight SQNR: median over the crossbar layers (worst layer)")
    return "\n".join(lines)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2%}" if base else "-"


def uniform_tile_sizes(program: Program) -> tuple:
    """A program on a chip of several tile types re-tiled with every layer on each tile
    type in turn (`retiled`): each uniform size's figures (`report.UniformSize`), for
    inspect to set the chosen mix against. Empty for a chip of one type or a program not
    tiled."""
    from xbarc.report import UniformSize, report

    hardware = program.hardware
    if len(hardware.tile_types) < 2 or not program.blocks:
        return ()
    sizes = []
    for tile_type in hardware.tile_types:
        summary = report(retiled(program, tile_type.name))
        sizes.append(
            UniformSize(
                tile_type.name,
                summary.energy_uj,
                summary.latency_us,
                summary.used_area_mm2,
                summary.edap_used,
                summary.phases,
            )
        )
    return tuple(sizes)


def retiled(program: Program, tile_type: str) -> Program:
    """`program` with every weights array on `tile_type`: its quantized arrays through
    the tile and allocate passes again. The tile pass's options are not recorded in the
    program: arrays with column groups are re-tiled sparse (packed per layer), the rest
    dense."""
    mapping = "sparse" if any(a.group_cols is not None for a in program.arrays) else "dense"
    arrays = tuple(
        replace(a, tile_type=tile_type, group_cols=None) if a.kind == "weights" else a
        for a in program.arrays
    )
    uniform = replace(program, arrays=arrays, blocks=(), phases=())
    return run_pipeline(uniform, parse_pipeline(f"tile{{mapping={mapping}}},allocate"))


def nax_check(program: Program, data_path: Path, noise: str, seeds: int = 3) -> list[dict]:
    """--nax-check: the chosen program and the uniform size of least EDAP (used area)
    simulated on the samples of `data_path` under the profile `noise`, chip seeds
    0..seeds-1: each one's relative RMS error of the outputs against the float model (the
    `ideal` run), mean and spread over the seeds, and its accuracy where the data has
    labels `y` and the program one output of class scores."""
    from xbarc.evaluate import load_data
    from xbarc.session import InferenceSession

    data = load_data(data_path)
    missing = [i.name for i in program.inputs if i.name not in data]
    if missing:
        raise XbarcError(
            f"--nax-check {data_path}: no array {missing[0]!r} for the model's input",
            hint=f"the file holds {', '.join(sorted(data))}",
        )
    feeds = {graph_input.name: data[graph_input.name] for graph_input in program.inputs}
    labels = data.get("y")
    best = min(uniform_tile_sizes(program), key=lambda u: u.edap_used)
    rows = []
    for label, candidate in (("chosen mix", program), (best.tile_type, None)):
        candidate = candidate if candidate is not None else retiled(program, best.tile_type)
        reference = InferenceSession(candidate, "ideal").run(None, feeds)[0]
        errors, accuracies = [], []
        for seed in range(seeds):
            out = InferenceSession(candidate, noise, seed=seed).run(None, feeds)[0]
            diff = np.asarray(out, np.float64) - reference
            errors.append(float(np.sqrt(np.mean(diff**2) / max(np.mean(reference**2), 1e-30))))
            if labels is not None and out.ndim == 2 and len(out) == len(labels):
                accuracies.append(float(np.mean(np.argmax(out, axis=1) == labels)))
        rows.append(
            {
                "program": label,
                "error_mean": float(np.mean(errors)),
                "error_std": float(np.std(errors)),
                "accuracy_mean": float(np.mean(accuracies)) if accuracies else None,
                "accuracy_std": float(np.std(accuracies)) if accuracies else None,
            }
        )
    return rows
