"""BasisN against reprogramming: cycles, energy-delay product and cell writes per inference
at tile budgets of 16 to 256, compile times, and EDP and accuracy against K.

    python benchmarks/basis.py [--budgets 16,32,64,128,256] [--repeat 3] [--seeds 5]
                               [--models resnet50,densenet121,lenet,...] [--no-accuracy]
                               [--record]

Models: ResNet-50 and DenseNet-121 (the onnx light topologies with the trained-like
weights of benchmarks/trained_like.py, seed 0) on 128x128 tiles, and the trained digits
fixtures (MLP, LeNet, ResNet, MobileNet) on 32x32 tiles (on 128x128 tiles they need only
24 to 128 tiles, so most budgets would hold them whole). 8-bit weights on 2-bit cells,
differential pairs, per-column scales; basis with the default options (K as many as
fit, at most L = the tile rows; q = 8; copies as many as the budget holds). Each figure
is per inference (a forward pass of one sample) from the cost model (xbarc/cost.py):
reprogramming pays its program-and-verify writes on every inference, basis writes its
tiles once at deployment and pays the digital combine instead.

Then, on ResNet-50 at 128 tiles (the acceptance case, the paper's "below 1 %"), where
each strategy's time and energy go, term by term; how the ratio moves if the chip wrote
one tile at a time, or if the combine were never the bottleneck; and basis cycles and
EDP against K. Compile times: `xbarc compile` of ResNet-50 at `--tiles 128` with each
strategy, in a fresh process, best of --repeat. Finally a PNG of accuracy and EDP
against K on LeNet (accuracy from the fit's `benchmarks/basis_accuracy.py`:
`accuracy_against_k`, data-aware coefficients, quant and rram over --seeds chip seeds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).parent))
from compile_light import compile_once  # noqa: E402
from light_models import LIGHT  # noqa: E402
from results import record_if  # noqa: E402
from trained_like import trained_like  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx, strategy_row  # noqa: E402
from xbarc.cost import ProgramCost, cycle_ns, program_cost, union_length  # noqa: E402
from xbarc.diagnostics import XbarcError  # noqa: E402
from xbarc.ir.geometry import layer_patches  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402

HERE = Path(__file__).parent
DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
LIGHT_NETWORKS = ("resnet50", "densenet121")
DIGITS_MODELS = ("mlp", "lenet", "resnet", "mobilenet")
BUDGETS = (16, 32, 64, 128, 256)
DIGITS_TILE = 32
PAPER = "below 1 %"  # BasisN (seed 001): cycles per inference and EDP against reprogramming
ACCEPTANCE = 0.01
COMPILE_ACCEPTANCE = 3.0  # basis compile at most 3x reprogram's (ResNet-50, 128 tiles)
K_SWEEP = (8, 16, 32, 64, 128)
M_SWEEP = (16,)  # terms per segment with K = 128, where the pass has the option (OMP: ~3 min)
PLOT = HERE / "basis_k.png"
PLOT_MODEL, PLOT_TILE = "lenet", 128


def model_options(name: str, tiles: int) -> tuple[Path, CompileOptions]:
    """The model's file and its compile options at `tiles` tiles."""
    if name in DIGITS_MODELS:
        options = CompileOptions(
            tiles=tiles,
            tile_rows=DIGITS_TILE,
            tile_cols=DIGITS_TILE,
            input_shapes={"x": (1, 1, 8, 8)},
        )
        return DIGITS / f"{name}.onnx", options
    return trained_path(name), CompileOptions(tiles=tiles)


TRAINED: dict[str, Path] = {}


def trained_path(name: str) -> Path:
    """The light model `name` with trained-like weights, saved once per run."""
    if name not in TRAINED:
        folder = Path(tempfile.mkdtemp(prefix="xbarc-basis-"))
        path = folder / f"{name}.onnx"
        onnx.save(trained_like(onnx.load(LIGHT / f"light_{name}.onnx"), 0), path)
        TRAINED[name] = path
    return TRAINED[name]


def compile_both(path: Path, options: CompileOptions) -> dict[str, Program | str]:
    """Each strategy's program, or its error message."""
    programs: dict[str, Program | str] = {}
    for strategy in ("reprogram", "basis"):
        try:
            programs[strategy] = compile_onnx(path, replace(options, strategy=strategy))
        except XbarcError as error:
            programs[strategy] = error.message
    return programs


def ratio(value: float, base: float) -> str:
    return f"{value / base:.1%}" if base else "-"


# --- both strategies at every budget -----------------------------------------------------


def budget_rows(models: list[str], budgets: tuple[int, ...]) -> list[str]:
    lines = [
        "| model | tiles | reprogram phases | cell writes / inference (reprogram) | "
        "basis K x copies | basis cell writes (deployment; 0 / inference) | "
        "cycles: reprogram | basis | basis / reprogram | "
        "EDP pJ*ns: reprogram | basis | basis / reprogram | "
        "latency: basis / reprogram | energy: basis / reprogram | paper |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in models:
        for tiles in budgets:
            path, options = model_options(name, tiles)
            programs = compile_both(path, options)
            base = programs["reprogram"]
            basis = programs["basis"]
            if isinstance(base, str) or isinstance(basis, str):
                failed = base if isinstance(base, str) else basis
                lines.append(f"| {name} | {tiles} | cannot compile: {failed} |" + " |" * 12)
                print(lines[-1], flush=True)
                continue
            r, b = strategy_row("reprogram", base), strategy_row("basis", basis)
            assert b["cell_writes_per_inference"] == 0 and b["phases"] == 1
            lines.append(
                f"| {name} | {tiles} | {r['phases']} | {r['cell_writes_per_inference']} | "
                f"{b['basis_k']} x {b['copies']} | {b['deployment_cell_writes']} | "
                f"{r['cycles']} | {b['cycles']} | {ratio(b['cycles'], r['cycles'])} | "
                f"{r['edp']:.3g} | {b['edp']:.3g} | {ratio(b['edp'], r['edp'])} | "
                f"{ratio(b['latency_us'], r['latency_us'])} | "
                f"{ratio(b['energy_uj'], r['energy_uj'])} | {PAPER} |"
            )
            print(lines[-1], flush=True)
    return lines


# --- where the time and energy go (ResNet-50, 128 tiles) ---------------------------------


def cost_of(program: Program) -> ProgramCost:
    types = program.value_types()
    patches = {layer.name: layer_patches(layer, types) for layer in program.layers()}
    return program_cost(program, patches)


def energy_terms(cost: ProgramCost) -> dict[str, float]:
    """Energy per inference by term, in uJ."""
    layers = cost.layers
    terms = {
        "array reads": sum(layer.read_energy_pj for layer in layers),
        "ADC": sum(layer.adc_energy_pj for layer in layers),
        "DAC": sum(layer.dac_energy_pj for layer in layers),
        "shift-and-add": sum(layer.shift_add_energy_pj for layer in layers),
        "index tables": sum(layer.index_energy_pj for layer in layers),
        "scales (columns, basis responses)": sum(layer.scale_energy_pj for layer in layers),
        "combine MACs": sum(layer.combine_mac_energy_pj for layer in layers),
        "coefficient reads": sum(layer.coefficient_energy_pj for layer in layers),
        "writes (program-and-verify)": cost.write_energy_per_inference_pj,
    }
    return {key: value * 1e-6 for key, value in terms.items()}


def latency_terms(program: Program, cost: ProgramCost) -> dict[str, float]:
    """Latency per inference by term, in us: the array cycles, the time the combine adds
    where it is slower than the reads, and the writes."""
    inputs = program.hardware.dac.input_slices
    cycles: dict[str, int] = {}
    for phase in program.phases:
        for run in phase.runs:
            cycles[run.layer] = cycles.get(run.layer, 0) + len(run.cycles)
    types = program.value_types()
    reads = {
        layer.name: layer_patches(layer, types) * inputs * cycles.get(layer.name, 0)
        for layer in program.layers()
    }
    reads_ns = sum(reads.values()) * cycle_ns(program.hardware)
    layers_ns = sum(layer.latency_ns for layer in cost.layers)
    return {
        "array reads": reads_ns * 1e-3,
        "combine beyond the reads": (layers_ns - reads_ns) * 1e-3,
        "writes (program-and-verify)": cost.write_latency_per_inference_ns * 1e-3,
    }


def serial_write_ns(program: Program) -> float:
    """The writes' latency if the chip programmed one tile at a time (row by row)."""
    cost = program.hardware.cost
    row_ns = cost.write_pv_iterations * (cost.write_pulse_ns + cost.write_verify_ns)
    by_vtile: dict[int, set[tuple[int, int]]] = {}
    for block in program.blocks:
        by_vtile.setdefault(block.vtile, set()).add((block.row_offset, len(block.rows)))
    return sum(
        union_length(by_vtile[write.vtile]) * row_ns
        for phase in program.phases
        for write in phase.writes
    )


def coefficients_once_uj(program: Program, cost: ProgramCost) -> float:
    """The coefficient reads if every table were read once per inference."""
    types = program.value_types()
    patches = {layer.name: layer_patches(layer, types) for layer in program.layers()}
    return (
        sum(
            layer.coefficient_energy_pj / patches[layer.name]
            for layer in cost.layers
            if patches.get(layer.name)
        )
        * 1e-6
    )


def breakdown_rows(name: str = "resnet50", tiles: int = 128) -> tuple[list[str], dict]:
    path, options = model_options(name, tiles)
    programs = compile_both(path, options)
    base, basis = programs["reprogram"], programs["basis"]
    assert isinstance(base, Program) and isinstance(basis, Program)
    costs = {"reprogram": cost_of(base), "basis": cost_of(basis)}
    lines = ["| term | reprogram uJ | share | basis uJ | share |", "|---|---:|---:|---:|---:|"]
    energy = {key: energy_terms(cost) for key, cost in costs.items()}
    totals = {key: sum(terms.values()) for key, terms in energy.items()}
    for term in energy["reprogram"]:
        r, b = energy["reprogram"][term], energy["basis"][term]
        lines.append(
            f"| {term} | {r:.1f} | {r / totals['reprogram']:.1%} | {b:.1f} | "
            f"{b / totals['basis']:.1%} |"
        )
    lines.append(f"| **total** | **{totals['reprogram']:.1f}** | | **{totals['basis']:.1f}** | |")
    lines += ["", "| term | reprogram us | share | basis us | share |", "|---|---:|---:|---:|---:|"]
    latency = {
        "reprogram": latency_terms(base, costs["reprogram"]),
        "basis": latency_terms(basis, costs["basis"]),
    }
    spans = {key: sum(terms.values()) for key, terms in latency.items()}
    for term in latency["reprogram"]:
        r, b = latency["reprogram"][term], latency["basis"][term]
        lines.append(
            f"| {term} | {r:.1f} | {r / spans['reprogram']:.1%} | {b:.1f} | "
            f"{b / spans['basis']:.1%} |"
        )
    lines.append(f"| **total** | **{spans['reprogram']:.1f}** | | **{spans['basis']:.1f}** | |")
    figures = {
        "energy": totals,
        "latency": spans,
        "cycles": {"reprogram": strategy_row("r", base)["cycles"], "basis": 0},
        "serial_write_us": serial_write_ns(base) * 1e-3,
        "parallel_write_us": latency["reprogram"]["writes (program-and-verify)"],
        "combine_stall_us": latency["basis"]["combine beyond the reads"],
        "coefficient_uj": energy["basis"]["coefficient reads"],
        "coefficient_once_uj": coefficients_once_uj(basis, costs["basis"]),
        "energy_terms": energy,
        "latency_terms": latency,
        "phases": len(base.phases),
        "combine_gmac": costs["basis"].combine_macs * 1e-9,
    }
    figures["cycles"]["basis"] = strategy_row("b", basis)["cycles"]
    return lines, figures


def sensitivity_lines(figures: dict) -> list[str]:
    """How the EDP ratio moves with the two assumptions that matter most."""
    energy, latency = figures["energy"], figures["latency"]
    edp = energy["basis"] * latency["basis"] / (energy["reprogram"] * latency["reprogram"])
    serial = latency["reprogram"] - figures["parallel_write_us"] + figures["serial_write_us"]
    serial_edp = energy["basis"] * latency["basis"] / (energy["reprogram"] * serial)
    free = latency["basis"] - figures["combine_stall_us"]
    free_edp = energy["basis"] * free / (energy["reprogram"] * latency["reprogram"])
    reused = energy["basis"] - figures["coefficient_uj"] + figures["coefficient_once_uj"]
    reused_edp = reused * latency["basis"] / (energy["reprogram"] * latency["reprogram"])
    return [
        f"- as modelled (tiles written in parallel, row by row; {figures['parallel_write_us']:.0f}"
        f" us of writes per inference): basis EDP = {edp:.1%} of reprogramming's;",
        f"- if the chip wrote one tile at a time ({figures['serial_write_us']:.0f} us of writes "
        f"per inference): {serial_edp:.2%};",
        f"- if the combine unit never held the reads up (it adds "
        f"{figures['combine_stall_us']:.0f} us as modelled, 256 lanes): {free_edp:.1%};",
        f"- if each coefficient were read once per inference instead of once per patch "
        f"({figures['coefficient_once_uj']:.1f} uJ instead of {figures['coefficient_uj']:.0f}"
        f" uJ): {reused_edp:.1%}.",
    ]


def explanation(figures: dict) -> str:
    """Why the ratio lands where it does, from the breakdown's own figures."""
    energy, latency = figures["energy_terms"], figures["latency_terms"]
    writes = "writes (program-and-verify)"
    combine = energy["basis"]["combine MACs"] + energy["basis"]["coefficient reads"]
    write_time = latency["reprogram"][writes] / figures["latency"]["reprogram"]
    write_energy = energy["reprogram"][writes] / figures["energy"]["reprogram"]
    per_phase = figures["parallel_write_us"] / figures["phases"]
    return (
        f"Why: reprogramming's writes are {write_time:.0%} of its latency and "
        f"{write_energy:.0%} of its energy per inference: its {figures['phases']} phases each "
        f"program up to 128 tiles in parallel, row by row ({per_phase:.0f} us a phase),"
        f" while one inference at batch 1 reads the arrays for"
        f" {latency['reprogram']['array reads'] / 1000:.0f} ms (the early layers' thousands of"
        " patches). Basis removes the writes but reads every input segment of every patch, as"
        " reprogramming reads its blocks' rows: it saves the reads of output columns beyond K"
        " but converts all K responses of a segment even for layers with fewer columns, and"
        f" its digital combine takes {combine / figures['energy']['basis']:.0%} of its energy"
        f" ({figures['combine_gmac']:.2f} GMAC, as many as weights x patches when K = L and no"
        " coefficient is zero, and the tables read once per patch). The paper's figure needs"
        " writes that dominate the reprogrammed inference (see the one-tile-at-a-time line)"
        " and a combine much cheaper than the layer (few terms per segment)."
    )


def k_rows(name: str = "resnet50", tiles: int = 128, ks: tuple[int, ...] = K_SWEEP) -> list[str]:
    path, options = model_options(name, tiles)
    reprogram = strategy_row("reprogram", compile_onnx(path, options))
    lines = [
        "| K | copies | cycles | cycles / reprogram | energy uJ | combine uJ | EDP pJ*ns | "
        "EDP / reprogram | weight SQNR dB (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    settings: list[tuple[int, int | None]] = [(k, None) for k in ks]
    if "basis_terms" in CompileOptions.__dataclass_fields__:  # the fit's m option
        settings += [(ks[-1], terms) for terms in M_SWEEP]
    for k, terms in settings:
        variant = replace(options, strategy="basis", basis_k=k)
        if terms is not None:
            variant = replace(variant, basis_terms=terms)  # type: ignore[call-arg]
        row = strategy_row("basis", compile_onnx(path, variant))
        label = f"{k}, m = {terms}" if terms is not None else f"{k}"
        lines.append(
            f"| {label} | {row['copies']} | {row['cycles']} | "
            f"{ratio(row['cycles'], reprogram['cycles'])} | {row['energy_uj']:.0f} | "
            f"{row['combine_energy_uj']:.0f} | {row['edp']:.3g} | "
            f"{ratio(row['edp'], reprogram['edp'])} | {row['sqnr_median_db']:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


# --- compile times -----------------------------------------------------------------------


def compile_time_rows(repeat: int) -> tuple[list[str], float]:
    path = trained_path("resnet50")
    folder = Path(tempfile.mkdtemp(prefix="xbarc-basis-compile-"))
    lines = [
        "| strategy | compile s (best) | wall s | peak MB | vs reprogram |",
        "|---|---:|---:|---:|---:|",
    ]
    best: dict[str, float] = {}
    for strategy in ("reprogram", "basis"):
        options = ("--tiles", "128", "--strategy", strategy)
        runs = [compile_once(path, folder, options) for _ in range(repeat)]
        fastest = min(runs, key=lambda run: run["compile_s"])
        best[strategy] = fastest["compile_s"]
        lines.append(
            f"| {strategy} | {fastest['compile_s']:.2f} | {fastest['wall_s']:.2f} | "
            f"{fastest['peak_mb']:.0f} | {best[strategy] / best['reprogram']:.2f}x |"
        )
        print(lines[-1], flush=True)
    return lines, best["basis"] / best["reprogram"]


# --- accuracy and EDP against K ----------------------------------------------------------


def edp_against_k(model: str, tile: int, tiles: int, ks: tuple[int, ...]) -> list[dict]:
    """Basis EDP and cycles against K on a digits fixture, at the budget the accuracy
    sweep uses, with reprogramming's at that budget for reference."""
    options = CompileOptions(
        tiles=tiles, tile_rows=tile, tile_cols=tile, input_shapes={"x": (1, 1, 8, 8)}
    )
    path = DIGITS / f"{model}.onnx"
    reprogram = strategy_row("reprogram", compile_onnx(path, options))
    rows = []
    for k in (k for k in ks if k <= tile):
        program = compile_onnx(path, replace(options, strategy="basis", basis_k=k))
        row = strategy_row("basis", program)
        rows.append(
            {
                **row,
                "k": k,
                "reprogram_edp": reprogram["edp"],
                "reprogram_cycles": reprogram["cycles"],
            }
        )
    return rows


def accuracy_hook():
    """The fit's `benchmarks/basis_accuracy.py` (its `accuracy_against_k`, and the
    reprogrammed program's scores for reference), or None where that script is not there
    yet: the lead wires it by merging the fit's branch."""
    try:
        import basis_accuracy
    except ImportError:
        return None
    return basis_accuracy


def reprogram_scores(module, model: str, tile: int, tiles: int, seeds: int) -> dict | None:
    """quant and rram accuracy of the reprogrammed program at the same budget."""
    needed = ("load_split", "reprogram_program", "scores")
    if not all(hasattr(module, name) for name in needed):
        return None
    _, x, y = module.load_split()
    return module.scores(module.reprogram_program(model, tiles, tile), seeds, x, y)


def plot(
    edp: list[dict], accuracy: dict[str, dict[int, dict]], base: dict | None, path: Path, tiles: int
) -> bool:
    """Accuracy (quant of both fits, rram of the data-aware one, mean +- std) and EDP
    against K, reprogramming's beside them; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, left = plt.subplots(figsize=(7.5, 4.5))
    ks = [row["k"] for row in edp]
    right = left.twinx()
    right.plot(ks, [row["edp"] for row in edp], "s-", color="tab:red", label="basis EDP")
    right.axhline(edp[0]["reprogram_edp"], color="tab:red", ls=":", label="reprogram EDP")
    right.set_yscale("log")
    right.set_ylabel("EDP per inference (pJ x ns)", color="tab:red")
    if accuracy:
        for fit, style in (("weights", "o-"), ("outputs", "^-")):
            rows = accuracy.get(fit, {})
            kk = sorted(rows)
            left.plot(kk, [100 * rows[k]["quant"] for k in kk], style, label=f"quant, {fit} fit")
        rows = accuracy.get("outputs", {})
        kk = sorted(rows)
        left.errorbar(
            kk,
            [100 * rows[k]["rram_mean"] for k in kk],
            yerr=[100 * rows[k]["rram_std"] for k in kk],
            fmt="v--",
            capsize=3,
            label="rram, outputs fit (mean +- std)",
        )
        if base is not None:
            left.axhline(100 * base["quant"], color="tab:gray", ls="--", label="reprogram, quant")
        left.set_ylabel("top-1 accuracy on held-out digits (%)")
        left.legend(loc="lower right", fontsize=8)
    else:
        left.set_ylabel("accuracy: not measured")
    left.set_xscale("log", base=2)
    left.set_xlabel("basis vectors K")
    right.legend(loc="upper left", fontsize=8)
    left.set_title(f"BasisN on digits {PLOT_MODEL}: {tiles} tiles of {PLOT_TILE}x{PLOT_TILE}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def quarter_budget(model: str, tile: int) -> int:
    """A quarter of the tiles the dense mapping needs (the issue's accuracy budget)."""
    options = CompileOptions(
        tiles=1 << 16, tile_rows=tile, tile_cols=tile, input_shapes={"x": (1, 1, 8, 8)}
    )
    return max(1, compile_onnx(DIGITS / f"{model}.onnx", options).vtile_count // 4)


def percent(row: dict | None, key: str) -> str:
    return f"{100 * row[key]:.1f}" if row else "-"


def k_plot_lines(seeds: int, with_accuracy: bool) -> tuple[list[str], int]:
    tiles = quarter_budget(PLOT_MODEL, PLOT_TILE)
    edp = edp_against_k(PLOT_MODEL, PLOT_TILE, tiles, K_SWEEP)
    module = accuracy_hook() if with_accuracy else None
    accuracy: dict[str, dict[int, dict]] = {}
    base = None
    missing = (
        "benchmarks/basis_accuracy.py (the fit's `accuracy_against_k`) is not in this tree, "
        "or --no-accuracy was given"
    )
    if module is not None:
        try:
            rows = module.accuracy_against_k(PLOT_MODEL, PLOT_TILE, ks=K_SWEEP, seeds=seeds)
            base = reprogram_scores(module, PLOT_MODEL, PLOT_TILE, tiles, seeds)
        except XbarcError as error:  # e.g. a runtime that cannot run basis programs yet
            rows, missing = [], f"running the basis programs failed: {error.message}"
        for row in rows:
            accuracy.setdefault(row.get("fit", "outputs"), {})[row["k"]] = row
    lines = [
        "| K | copies | cycles | EDP pJ*ns | EDP / reprogram | quant %: weights fit | "
        "outputs fit | rram %, outputs fit (mean +- std) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in edp:
        weights = accuracy.get("weights", {}).get(row["k"])
        outputs = accuracy.get("outputs", {}).get(row["k"])
        rram = (
            f"{100 * outputs['rram_mean']:.1f} +- {100 * outputs['rram_std']:.1f}"
            if outputs
            else "-"
        )
        lines.append(
            f"| {row['k']} | {row['copies']} | {row['cycles']} | {row['edp']:.3g} | "
            f"{ratio(row['edp'], row['reprogram_edp'])} | {percent(weights, 'quant')} | "
            f"{percent(outputs, 'quant')} | {rram} |"
        )
        print(lines[-1], flush=True)
    if base is not None:
        lines.append(
            f"| reprogram | - | {edp[0]['reprogram_cycles']} | {edp[0]['reprogram_edp']:.3g} | "
            f"100% | {percent(base, 'quant')} | | {100 * base['rram_mean']:.1f} +- "
            f"{100 * base['rram_std']:.1f} |"
        )
    drawn = plot(edp, accuracy, base, PLOT, tiles)
    lines.append("")
    lines.append(
        (f"Plot: `benchmarks/{PLOT.name}`." if drawn else "No plot: matplotlib is missing.")
        + (
            f" Accuracy from `basis_accuracy.accuracy_against_k` at the same budget, rram "
            f"over {seeds} chip seeds."
            if accuracy
            else f" Accuracy not measured: {missing}."
        )
    )
    return lines, tiles


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budgets",
        default=",".join(map(str, BUDGETS)),
        help="tile budgets, comma-separated (default 16,32,64,128,256)",
    )
    parser.add_argument(
        "--models",
        default=",".join(LIGHT_NETWORKS + DIGITS_MODELS),
        help="models, comma-separated (default: ResNet-50, DenseNet-121 and the digits fixtures)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="compiles per compile time; the best is kept (default 3)",
    )
    parser.add_argument(
        "--seeds", type=int, default=5, help="rram chip instances per accuracy point (default 5)"
    )
    parser.add_argument(
        "--no-accuracy",
        action="store_true",
        help="skip the EDP and accuracy against K (the slow part)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    budgets = tuple(int(b) for b in args.budgets.split(","))
    started = time.perf_counter()

    table = budget_rows(args.models.split(","), budgets)
    breakdown, figures = breakdown_rows()
    for line in breakdown:
        print(line)
    sensitivity = sensitivity_lines(figures)
    print("\n".join(sensitivity))
    dense_breakdown, dense_figures = breakdown_rows("densenet121")
    dense_sensitivity = sensitivity_lines(dense_figures)
    sweep = k_rows()
    times, compile_ratio = compile_time_rows(args.repeat)
    k_plot, plot_tiles = k_plot_lines(args.seeds, not args.no_accuracy)
    cycles = figures["cycles"]["basis"] / figures["cycles"]["reprogram"]
    energy, latency = figures["energy"], figures["latency"]
    edp = energy["basis"] * latency["basis"] / (energy["reprogram"] * latency["reprogram"])
    verdict = "meets" if max(cycles, edp) <= ACCEPTANCE else "does not meet"
    compile_verdict = "meets" if compile_ratio <= COMPILE_ACCEPTANCE else "does not meet"
    text = "\n".join(
        [
            "## BasisN against reprogramming: cycles, EDP, writes (`benchmarks/basis.py`)",
            "",
            "Per inference (one sample), from the cost model: ISAAC's array, ADC and DAC "
            "figures; program-and-verify writes of 10 x (50 + 10) ns per row, tiles in "
            "parallel, 1 pJ per cell pulse; the digital combine at Horowitz's 45 nm 0.2 pJ "
            "(8 x 8-bit multiply) + 0.1 pJ (32-bit add) per MAC, 256 lanes at 1.2 GHz, its "
            "coefficient table read from the eDRAM buffer once per patch. ResNet-50 and "
            "DenseNet-121 with trained-like weights on 128x128 tiles; the digits fixtures on "
            f"{DIGITS_TILE}x{DIGITS_TILE} tiles. Basis: default options (svd, K as many as "
            "fit, q = 8). Every basis program has one phase and 0 cell writes per inference.",
            "",
            *table,
            "",
            f"### ResNet-50 at 128 tiles: {cycles:.1%} of the cycles and {edp:.1%} of the EDP "
            f"of reprogramming (paper: {PAPER}; acceptance: at most 1 %) -- {verdict} it",
            "",
            "Energy per inference by term:",
            "",
            *breakdown[: breakdown.index("")],
            "",
            "Latency per inference by term:",
            "",
            *breakdown[breakdown.index("") + 1 :],
            "",
            *sensitivity,
            "",
            explanation(figures),
            "",
            "### DenseNet-121 at 128 tiles",
            "",
            *dense_breakdown[: dense_breakdown.index("")],
            "",
            *dense_breakdown[dense_breakdown.index("") + 1 :],
            "",
            *dense_sensitivity,
            "",
            explanation(dense_figures),
            "",
            "### ResNet-50 at 128 tiles, basis against K (and m terms per segment)",
            "",
            "",
            *sweep,
            "",
            f"### Compile time: ResNet-50, `--tiles 128`, fresh process, best of {args.repeat}",
            "",
            *times,
            "",
            f"basis / reprogram = {compile_ratio:.2f}x (acceptance: at most "
            f"{COMPILE_ACCEPTANCE:.0f}x) -- {compile_verdict} it.",
            "",
            f"### Accuracy and EDP against K: digits {PLOT_MODEL}, {PLOT_TILE}x{PLOT_TILE} "
            f"tiles, {plot_tiles} tiles (a quarter of its dense mapping's)",
            "",
            *k_plot,
            "",
            f"{time.perf_counter() - started:.0f} s in all.",
        ]
    )
    print(text)
    record_if(args.record, "basis", text)


if __name__ == "__main__":
    main()
