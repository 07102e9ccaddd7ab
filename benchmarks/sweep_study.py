"""Seed 000's study through `xbarc sweep`: dense vs sparse vs squeeze across tile sizes.

    python benchmarks/sweep_study.py [--models mlp,lenet,resnet,mobilenet] [--seeds 5]
                                     [--output DIR] [--record]

For each digits fixture (tests/fixtures/digits), dense and 90 % pruned, one sweep of
tile=32x32,64x64,128x128,256x256 x mapping=dense,sparse,squeeze under the `rram` profile
on the 360 held-out digits, `--seeds` chip seeds per point, 4096 tiles (one phase, as
benchmarks/noise_study.py compiles), through the Python API of `xbarc sweep`
(xbarc.sweep.run_sweep, the code the command runs). Prints and records (`--record`) the
accuracy mean +- std, crossbars and EDAP of every point, the Pareto-best points, and the
time it took against benchmarks/noise_study.py's 818 s; draws
benchmarks/figures/sweep_study.png (accuracy against tile size per mapping, a panel per
network) and benchmarks/figures/sweep_pareto.png (the 90 % pruned MLP's EDAP against
accuracy, from `xbarc sweep`'s own plot).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402

from xbarc.compiler import CompileOptions  # noqa: E402
from xbarc.sweep import Knob, SweepOptions, run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tests" / "fixtures" / "digits"
FIGURES = ROOT / "benchmarks" / "figures"
TILES = ("32x32", "64x64", "128x128", "256x256")
MAPPINGS = ("dense", "sparse", "squeeze")
NOISE_STUDY_SECONDS = 818  # benchmarks/RESULTS.md, "Accuracy under noise": the whole study
# noise_study.py's chip runs of 360 samples per model: tile sizes 2 x 4 x (1 quant + 5
# rram), ADC bits 7 quant + 6 x 5 rram, faults 5 x 5, programming noise 5 x 5
NOISE_STUDY_RUNS_PER_MODEL = 2 * 4 * 6 + 7 + 6 * 5 + 5 * 5 + 5 * 5


def study(model: str, seeds: int, output: Path) -> tuple[list[dict], float]:
    """One model's sweep: its points and the seconds it took."""
    options = SweepOptions(
        model=DIGITS / f"{model}.onnx",
        data=DIGITS / "digits_test.npz",
        labels="y",
        knobs=(Knob("tile", TILES), Knob("mapping", MAPPINGS)),
        output=output / model,
        seeds=seeds,
        noise="rram",
        base=CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)}),
        command=("benchmarks/sweep_study.py", model),
    )
    started = time.perf_counter()
    result = run_sweep(options)
    seconds = time.perf_counter() - started
    reused = f" ({result.reused} reused from an earlier run)" if result.reused else ""
    print(f"{model}: {len(result.points)} points{reused} in {seconds:.1f} s", flush=True)
    return result.points, seconds


def same_conditions(model: str = "lenet", seeds: int = 2) -> tuple[float, float]:
    """Seconds a chip run of `model` (128x128 dense, rram, 360 digits) takes through
    noise_study.py's hand-written loop and through `run_point` (sweep's path: compile,
    evaluate), measured back to back now: the fair comparison on a shared machine."""
    import noise_study

    from xbarc.runtime.noise import noise_settings
    from xbarc.sweep import PointTask, run_point

    x, y = noise_study.load_test_split()
    program = noise_study.compile_fixture(model, 128)
    noise_study.accuracy(program, noise_settings("rram"), 99, x, y)  # compile the kernels
    started = time.perf_counter()
    for seed in range(seeds):
        noise_study.accuracy(program, noise_settings("rram"), seed, x, y)
    by_hand = (time.perf_counter() - started) / seeds
    with tempfile.TemporaryDirectory() as folder:
        task = PointTask(
            index=0,
            knobs=(("tile", "128x128"),),
            key="same-conditions",
            program_key="same-conditions",
            options=CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)}),
            model=DIGITS / f"{model}.onnx",
            reference=DIGITS / f"{model}.onnx",
            data=DIGITS / "digits_test.npz",
            labels="y",
            noise="rram",
            overrides=(),
            seeds=seeds,
            samples=None,
            batch_size=None,
            programs=Path(folder),
        )
        started = time.perf_counter()
        run_point(task)
        through_sweep = (time.perf_counter() - started) / seeds
    return by_hand, through_sweep


def figure(points: dict[str, list[dict]], path: Path) -> bool:
    """Accuracy against tile size, a line per mapping, a panel per network (dense on the
    first row, 90 % pruned on the second); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    bases = list(dict.fromkeys(name.removesuffix("_p90") for name in points))
    fig, axes = plt.subplots(2, len(bases), figsize=(4.2 * len(bases), 7.2), squeeze=False)
    for column, base in enumerate(bases):
        for row, name in enumerate((base, f"{base}_p90")):
            axis = axes[row][column]
            for i, mapping in enumerate(MAPPINGS):
                series = [p for p in points.get(name, []) if p["knobs"]["mapping"] == mapping]
                axis.errorbar(
                    [TILES.index(p["knobs"]["tile"]) for p in series],
                    [100 * p["accuracy_mean"] for p in series],
                    yerr=[100 * p["accuracy_std"] for p in series],
                    marker="o",
                    capsize=3,
                    color=f"C{i}",
                    label=mapping,
                )
            axis.set_xticks(range(len(TILES)), TILES, fontsize=8)
            axis.set_ylim(0, 102)
            axis.grid(alpha=0.3)
            axis.set_title(f"{name} under rram", fontsize=10)
            if column == 0:
                axis.set_ylabel("accuracy % (mean +- std over chips)")
            if row == 1:
                axis.set_xlabel("tile size")
    axes[0][0].legend(fontsize=8, loc="lower left", title="mapping", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return True


def summary(
    points: dict[str, list[dict]],
    seeds: int,
    seconds: float,
    plotted: bool,
    load: tuple[float, float],
    per_run: tuple[float, float],
) -> str:
    runs = sum(p["seeds"] for model in points.values() for p in model)
    models = len({name.removesuffix("_p90") for name in points})
    baseline_runs = NOISE_STUDY_RUNS_PER_MODEL * 4
    lines = [
        "## Seed 000's study through `xbarc sweep` (`benchmarks/sweep_study.py`)",
        "",
        f"Held-out accuracy (360 digits) under `rram`, mean +- std over {seeds} chip seeds, "
        "for dense / sparse / squeeze mapping at 32x32 to 256x256 tiles (4096 tiles: one "
        "phase), each network dense and 90 % pruned; one `xbarc sweep` per network "
        "(`--grid tile=32x32,64x64,128x128,256x256 --grid mapping=dense,sparse,squeeze`). "
        "A cell: accuracy (crossbars used, EDAP in pJ x ns x mm^2 of the area the program "
        "occupies). Bold: on the sweep's Pareto front (lower EDAP, higher accuracy).",
        "",
        f"Time: {seconds:.0f} s for {sum(len(v) for v in points.values())} points and "
        f"{runs} chip runs of {models} networks x 2 ({seconds / runs:.2f} s a chip run), "
        f"against {NOISE_STUDY_SECONDS} s for `benchmarks/noise_study.py`'s {baseline_runs} "
        f"chip runs of 360 samples ({NOISE_STUDY_SECONDS / baseline_runs:.2f} s a run; that "
        "study also sweeps ADC bits, faults and programming noise at 128x128, dense mapping "
        f"only). The machine is shared: its load average was {load[0]:.1f} when the "
        f"study started and {load[1]:.1f} when it ended. Measured back to back after the "
        f"study, one chip run of the digits LeNet (128x128, dense, rram, 360 digits) takes "
        f"{per_run[0]:.2f} s through noise_study.py's hand-written loop and "
        f"{per_run[1]:.2f} s through sweep's `run_point` (which also compiles the program "
        "and runs the float reference); the wall times above differ from noise_study's by "
        "the work chosen (ResNet and MobileNet at 32x32 tiles, sparse and squeezed reads) "
        "and by the load.",
        "",
        "| network | mapping | " + " | ".join(TILES) + " |",
        "|---|---|" + "---:|" * len(TILES),
    ]
    for name, model_points in points.items():
        for mapping in MAPPINGS:
            cells = []
            for tile in TILES:
                (p,) = [
                    p
                    for p in model_points
                    if p["knobs"]["tile"] == tile and p["knobs"]["mapping"] == mapping
                ]
                text = (
                    f"{p['accuracy_mean']:.1%} +- {p['accuracy_std']:.1%} "
                    f"({p['crossbars']}, {p['edap_used']:.3g})"
                )
                cells.append(f"**{text}**" if p["pareto"] else text)
            lines.append(f"| {name} | {mapping} | " + " | ".join(cells) + " |")
    if plotted:
        lines += [
            "",
            "![accuracy against tile size per mapping](figures/sweep_study.png)",
        ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default="mlp,lenet,resnet,mobilenet",
        help="digits fixtures, comma-separated; each runs dense and 90 %% pruned "
        "(default mlp,lenet,resnet,mobilenet)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="chip seeds per point (default 5)")
    parser.add_argument(
        "--output",
        type=Path,
        help="keep the studies (CSV, JSON, plots, programs) in this folder (default: a "
        "temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    work = args.output or Path(tempfile.mkdtemp(prefix="sweep_study_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        points: dict[str, list[dict]] = {}
        seconds = 0.0
        load_before = os.getloadavg()[0]
        for base in args.models.split(","):
            for name in (base, f"{base}_p90"):
                points[name], took = study(name, args.seeds, work)
                seconds += took
        load_after = os.getloadavg()[0]
        per_run = same_conditions()
        plotted = figure(points, FIGURES / "sweep_study.png")
        pareto = work / "mlp_p90" / "pareto.png"
        if pareto.exists():
            shutil.copyfile(pareto, FIGURES / "sweep_pareto.png")
        text = summary(points, args.seeds, seconds, plotted, (load_before, load_after), per_run)
        print(text)
        record_if(args.record, "sweep_study", text)
    finally:
        if args.output is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
