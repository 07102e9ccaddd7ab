"""Bit-plane and depthwise reads against earlier paths and onnxruntime, on the faithful default.

    python benchmarks/bitplane_speed.py [--repeat 3] [--resnet50 r50.onnx] [--record]

The faithful default: `xbarc compile` defaults (8-bit weights in 2-bit cells, differential
encoding, 128x128 tiles, the 8-bit DAC fed 1 bit a step, 8-bit ADC) with `tiles=4096`,
run in `quant`. For each digits fixture (batch 360 of tests/fixtures/digits/
digits_test.npz; all 16, dense and pruned, unless `--fixtures` names some) the same
program runs four ways in the same process: onnxruntime on the float model; `quant` as
it reads now (the depthwise tables and the bit planes where `_choose_path` takes them,
conversions by reciprocal where exact); `quant` as issue 18's first round left it ("round
one": no depthwise tables, every conversion by the integer division, `prefers_sparse`'s
rule at every DAC step; the bit-plane loops' other changes stay); and `quant` with
the bit-plane path switched off (the sparse kernel or integer GEMMs read by read: how
main read every layer before issue 18). All `quant` runs must give the same bits
(checked). Wall seconds best of `--repeat`, CPU seconds (all threads) of that run in
brackets: the machine is shared, and the CPU time says what a quiet machine would take.

`--resnet50 PATH` (a trained-like ResNet-50: `python benchmarks/trained_like.py
light_resnet50 PATH`) adds one random 1x3x224x224 image through the same default
program (warm runs; the sparse path is not timed there: over 100 s an image).

For each program, the bit-plane kernel's work per run is counted from its packed inputs
and cells: conversions (a read column's sum for one input bit plane and patch, each
converted by the ADC) and AND + popcount terms (a 64-row word against two cell planes),
with the kernel's time per conversion: the floor the faithful default's semantics set.
A profile of a warm run (cProfile, own time) closes each program.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402

import xbarc.runtime.executor as executor_module  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime import bitplane as rule  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.kernels import bitplane  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

# Where the targets stand (measured while writing the kernel; the tables above are this run)
FLOOR = """\
The floor. The faithful default's semantics convert every read column's sum for every
input bit and patch: a conversion costs the popcounts of its rows (a 64-row word against
two cell planes: 2 AND + popcount, one VPOPCNTQ per 8 patches) and the ADC code
(rint(s x levels / full scale), half to even) added into the output. A stand-alone loop of
exactly that (Zen 4, one thread, 256 patches, CPU time) takes 0.30 ns a conversion
without the ADC code, 0.55 with it as an integer multiply-shift, 0.62 with the float64
division, 0.6-0.9 with a code table per full scale (one gather a sum: slower, so the
kernel computes the code). Round one converted by the integer multiply-shift, at
0.65-0.8 ns of CPU a conversion in the executor; the kernel now multiplies by levels /
full scale where that gives every sum of the column the division's code (checked sum by
sum when the layer is first read) and adds the codes x steps in float64 (exact below
2^53), and a column on one word (reads of at most 64 rows) loads and popcounts one word,
not two: 0.54 ns of CPU a conversion for ResNet-50 (2.1 G conversions an image: 0.57 s
over 2 cores), 0.3-0.5 ns on the digits fixtures (the table above). Reads of at most 10
rows (the depthwise 3x3 convolutions and single-channel stems) convert nothing at run
time: their read-outs are tables over the 2^rows patterns of an input bit on their rows
(`depthwise_accumulate`), one lookup per output, input bit and patch where the bit planes
made 8 conversions (one per read column of an 8-bit weight in 2-bit cells,
differential). What is left of the digits MobileNet is its pointwise layers' 81 M
conversions (~25 ms of CPU, one thread), the tables (~9 ms), and the ReLUs on the
layers' outputs (~7 ms of CPU: a transposed view of the [channels, patches]
accumulator, which a contiguous copy does not make cheaper): ~48 ms of CPU a run, about
24 ms over 2 cores, against onnxruntime's 0.5-1.1 ms (it moves between runs)."""

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
FIXTURES = tuple(
    f"{model}{suffix}"
    for model in ("lenet", "resnet", "mobilenet", "mlp")
    for suffix in ("", "_p50", "_p80", "_p90")
)
BATCH = 360


def timed(run, repeat: int) -> tuple[float, float]:
    """Best wall seconds of `repeat` warm runs (after one), and that run's CPU seconds."""
    run()
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


class KernelWork:
    """Counts the bit-plane kernel's conversions and terms, and its time, per run."""

    def __init__(self) -> None:
        self.conversions = 0
        self.terms = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.original = executor_module.bitplane_accumulate

    def __enter__(self) -> KernelWork:
        def spy(packed, flags, columns, slice_plane, significance, acc):
            start, cpu = time.perf_counter(), time.process_time()
            self.original(packed, flags, columns, slice_plane, significance, acc)
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu
            self.count(packed, flags, columns, columns.slice_bits, slice_plane)

        executor_module.bitplane_accumulate = spy
        return self

    def __exit__(self, *_) -> None:
        executor_module.bitplane_accumulate = self.original

    def count(self, packed, flags, columns, slice_bits, slice_plane) -> None:
        patches = packed.shape[2]
        runs = flags.shape[2]
        lengths = np.minimum(bitplane.CHUNK, patches - np.arange(runs) * bitplane.CHUNK)
        if not len(columns.term_word):
            return
        per_term = flags[:, columns.term_word, :] != 0  # [planes, terms, runs]
        for plane in slice_plane:
            active = per_term[plane : plane + slice_bits].any(axis=0)  # [terms, runs]
            self.terms += int((per_term[plane : plane + slice_bits].sum(axis=0) @ lengths).sum())
            converted = np.maximum.reduceat(active, columns.term_start[:-1], axis=0)
            self.conversions += int((converted @ lengths).sum())


def no_reciprocals(largest: np.ndarray, full_scale: np.ndarray, levels: int) -> np.ndarray:
    """`bitplane.adc_reciprocals` as round one had it: none (every conversion divides)."""
    return np.zeros(len(full_scale), dtype=np.float64)


def round_one_prefers_sparse(reads, columns) -> bool:
    """`prefers_sparse` as round one had it: its rule at every DAC step."""
    read_columns = sum(len(read.target) for read in reads)
    nonzero = sum(int(np.count_nonzero(read.cells_t)) for read in reads)
    if not read_columns or not columns.words:
        return False
    shared = len(columns.target) / columns.words
    return nonzero / read_columns < rule.SPARSE_CELLS or shared < rule.SHARED_WORD


def quant_runs(program, feeds, repeat: int, variants: tuple[str, ...]):
    """(wall, cpu, outputs, executor) of each of `variants`: "now", "round one" (no
    depthwise tables, no conversions by reciprocal) and "sparse" (no bit planes)."""
    rows = []
    for variant in variants:
        executor = Executor(program, noise_settings("quant"), Seeds.derive(0))
        if variant == "sparse":
            executor._bitplane_reads = lambda plans: False  # type: ignore[method-assign]
        if variant == "round one":
            executor._depthwise_columns = lambda plans: None  # type: ignore[method-assign]
            bitplane.adc_reciprocals = no_reciprocals  # the columns are built on the first run
            executor_module.prefers_sparse = round_one_prefers_sparse
        outputs: dict = {}
        try:
            wall, cpu = timed(
                lambda executor=executor, outputs=outputs: outputs.update(executor.run(feeds)),
                repeat,
            )
        finally:
            bitplane.adc_reciprocals = RECIPROCALS
            executor_module.prefers_sparse = PREFERS_SPARSE
        rows.append((wall, cpu, dict(outputs), executor))
    return rows


RECIPROCALS = bitplane.adc_reciprocals
PREFERS_SPARSE = executor_module.prefers_sparse


def kernel_work(executor, feeds) -> KernelWork:
    with KernelWork() as work:
        executor.run(feeds)
    return work


def profile(executor, feeds, top: int = 8) -> list[str]:
    profiler = cProfile.Profile()
    profiler.enable()
    executor.run(feeds)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    entries = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]  # type: ignore[attr-defined]
    lines = []
    for (path, line, name), (_, _, own, _, _) in entries:
        where = f"{Path(path).name}:{line}({name})"
        lines.append(f"- {own:.3f} s ({own / total:.0%}) `{where}`")
    return lines


def onnxruntime_time(model: Path, feeds: dict, repeat: int) -> tuple[float, float]:
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (value,) = feeds.values()
    return timed(lambda: session.run(None, {name: value}), max(repeat, 5))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm runs timed (best taken)")
    parser.add_argument("--fixtures", nargs="*", default=list(FIXTURES), help="digits fixtures")
    parser.add_argument("--resnet50", type=Path, help="a trained-like ResNet-50 .onnx")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    load_before = os.getloadavg()
    x = np.load(DIGITS / "digits_test.npz")["x"][:BATCH].astype(np.float32)
    table = [
        "| program | onnxruntime ms | quant now ms | x onnxruntime | quant round one ms "
        "| x onnxruntime | speed-up | quant sparse path ms | x onnxruntime | speed-up "
        "| same bits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    work_table = [
        "| program | conversions a run | AND+popcount terms | kernel ms (CPU) "
        "| ns a conversion (CPU) | quiet 2 cores, kernel alone |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    profiles: list[str] = []
    programs = [
        (name, DIGITS / f"{name}.onnx", {"x": (1, 1, 8, 8)}, {"x": x}) for name in args.fixtures
    ]
    if args.resnet50 is not None:
        image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        session = onnxruntime.InferenceSession(
            str(args.resnet50), providers=["CPUExecutionProvider"]
        )
        programs.append(
            ("ResNet-50 (1 image)", args.resnet50, {}, {session.get_inputs()[0].name: image})
        )
    for name, model, shapes, feeds in programs:
        program = compile_onnx(model, CompileOptions(tiles=4096, input_shapes=shapes))
        ort_wall, ort_cpu = onnxruntime_time(model, feeds, args.repeat)
        both = not name.startswith("ResNet-50")
        variants = ("now", "round one", "sparse") if both else ("now", "round one")
        runs = quant_runs(program, feeds, args.repeat, variants)
        wall, cpu, outputs, executor = runs[0]
        paths = sorted(set(executor._paths.values()))
        row = (
            f"| {name} ({', '.join(paths)}) | {ort_wall * 1e3:.2f} ({ort_cpu * 1e3:.2f}) "
            f"| {wall * 1e3:.1f} ({cpu * 1e3:.1f}) | {wall / ort_wall:.0f}x ({cpu / ort_cpu:.0f}x) "
        )
        same = True
        for old_wall, old_cpu, old_outputs, _ in runs[1:]:
            same = same and all(np.array_equal(outputs[k], old_outputs[k]) for k in outputs)
            row += (
                f"| {old_wall * 1e3:.1f} ({old_cpu * 1e3:.1f}) | {old_wall / ort_wall:.0f}x "
                f"| {old_wall / wall:.2f}x ({old_cpu / cpu:.2f}x) "
            )
        if not both:
            row += "| - | - | - "
        row += f"| {'yes' if same else 'NO'} |"
        print(row, flush=True)
        table.append(row)
        work = kernel_work(executor, feeds)
        per = work.seconds / work.conversions * 1e9 if work.conversions else 0.0
        per_cpu = work.cpu_seconds / work.conversions * 1e9 if work.conversions else 0.0
        line = (
            f"| {name} | {work.conversions / 1e6:.1f} M | {work.terms / 1e6:.1f} M "
            f"| {work.seconds * 1e3:.1f} ({work.cpu_seconds * 1e3:.1f}) | {per:.2f} "
            f"({per_cpu:.2f}) | {work.cpu_seconds / 2 * 1e3:.1f} ms |"
        )
        print(line, flush=True)
        work_table.append(line)
        if name in ("resnet", "mobilenet") or not both:
            profiles += [
                f"\n{name}: top functions of a warm run (own time):\n",
                *profile(executor, feeds),
            ]
    load_after = os.getloadavg()
    load = (
        f"Machine shared: load average {' '.join(f'{v:.2f}' for v in load_before)} before, "
        f"{' '.join(f'{v:.2f}' for v in load_after)} after."
    )
    lines = [
        "## Bit-plane reads (`benchmarks/bitplane_speed.py`)",
        "",
        "The faithful default program (`xbarc compile` defaults, `tiles=4096`: 8-bit weights in "
        "2-bit cells, differential, 128x128 tiles, 8-bit DAC 1 bit a step, 8-bit ADC) in `quant`, "
        f"digits fixtures at batch {BATCH}: now (the depthwise tables for reads of at most 10 "
        "rows, the bit-plane path elsewhere: AND + popcount, the ADC in the same pass, by "
        "reciprocal where exact; `sparse` kept where `prefers_sparse` says: at 2-bit DAC steps) "
        "against round one (issue 18's first round: bit planes, conversions by integer "
        "division, depthwise and very sparse layers on the sparse kernel; the loops' smaller "
        "changes kept) and the bit-plane path off (main's paths before issue 18: the "
        "sparse kernel or integer GEMMs read by read), in the same process, and onnxruntime on "
        f"the float model. Wall ms best of {args.repeat} warm runs, CPU ms (all threads) of that "
        f"run in brackets; speed-up: that path's time over now's. {load}",
        "",
        *table,
        "",
        "Work of the bit-plane kernel per run: conversions (a read column's sum for one input "
        "bit plane and patch, through the ADC) and AND + popcount terms (a 64-row input word "
        "against two cell planes), the kernel's wall and CPU time (all threads), per "
        "conversion, and its CPU time over 2 cores (what a quiet machine would take).",
        "",
        *work_table,
        "",
        FLOOR,
        *profiles,
    ]
    print("\n".join(profiles))
    record_if(args.record, "bitplane_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
