"""What each noise profile costs at run time, and the levers a user has to make runs faster.

    python benchmarks/profile_cost.py [--models lenet,resnet,resnet50] [--levers lenet,resnet]
        [--repeat 5] [--batch1-samples 36] [--record]

Per model, in one process: onnxruntime's time on the float model and xbarc's time per
batch in each profile (`ideal`, `quant`, `rram`, `pcm`, seed 0), each as milliseconds
per image and as a ratio to onnxruntime measured in the same run, with the time to
program the chip (building the session) apart; and `quant` and `rram` measuring every
read's sums for the ADC report, as `xbarc run` and `xbarc eval` run them. Programs use
the compiler's defaults (8-bit weights in 2-bit cells, 1-bit DAC steps, 8-bit ADC, 128
tiles of 128x128).

Models: the trained digits LeNet and ResNet (tests/fixtures/digits, compiled with
`--input-shape x=1x1x8x8`) on the 360 held-out images in one batch (the batch `xbarc
eval` chooses for them); onnx's light ResNet-50 (`--tiles 128`, fixed batch 1) on one
seeded random image, timed once (in `quant`, `rram` and `pcm` one image takes minutes).

Levers (`--levers`, in `quant` and `rram`): the batch (one image a run, over the first
`--batch1-samples` images, against the automatic batch), unsliced cells (compiled with
`--cell-bits 8`: a quarter of the reads), calibrated converter ranges (`xbarc calibrate`
on the same images, `--set input_range=calibrated --set adc_range=calibrated`), and a
lossless ADC (`--set adc_bits=exact`, quant only). Wall-clock times on a shared machine:
the best of `--repeat` rounds after a warm-up (ResNet-50's quantized runs: one), each
round running every setting once in turn, so that other work slows all settings alike.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402

import xbarc  # noqa: E402
from xbarc.adc_report import observe_reads  # noqa: E402
from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
PROFILES = ("ideal", "quant", "rram", "pcm")
# the quantized profiles as `xbarc run` and `eval` run them: measuring the reads' sums
REPORTED = ("quant", "rram")
CALIBRATED = ("input_range=calibrated", "adc_range=calibrated")


@dataclass(frozen=True)
class Model:
    """A model to time: its ONNX file, the input shape it is compiled for (None: its own),
    the chip's tiles, and whether a run is slow enough to time once."""

    path: Path
    input_shapes: dict[str, tuple[int, ...]]
    tiles: int
    heavy: bool


MODELS = {
    "lenet": Model(DIGITS / "lenet.onnx", {"x": (1, 1, 8, 8)}, 128, False),
    "resnet": Model(DIGITS / "resnet.onnx", {"x": (1, 1, 8, 8)}, 128, False),
    "resnet50": Model(RESNET50, {}, 128, True),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default="lenet,resnet,resnet50",
        help=f"models to time in every profile, comma-separated, from {', '.join(MODELS)} "
        "(default all; resnet50 takes about ten minutes)",
    )
    parser.add_argument(
        "--levers",
        default="lenet,resnet",
        help="models to time the levers on (batch, --cell-bits 8, calibrated ranges, exact "
        "ADC), comma-separated (default lenet,resnet; empty for none)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timed runs of the digits models after a warm-up; the best is kept (default 5)",
    )
    parser.add_argument(
        "--batch1-samples",
        type=int,
        default=36,
        help="images run one at a time for the batch lever (default 36)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the tables to benchmarks/RESULTS.md"
    )
    return parser


def model_feeds(name: str, model: Model) -> dict[str, np.ndarray]:
    """The digits held-out images, or one seeded random image of the model's input."""
    if not model.heavy:
        with np.load(DIGITS / "digits_test.npz") as data:
            return {"x": data["x"]}
    session = onnxruntime.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    rng = np.random.default_rng(0)
    return {graph_input.name: rng.random(graph_input.shape, dtype=np.float32)}


def compiled(model: Model, cell_bits: int = 2) -> Program:
    options = CompileOptions(
        tiles=model.tiles, cell_bits=cell_bits, input_shapes=model.input_shapes
    )
    return compile_onnx(model.path, options)


def interleaved_best(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """The shortest wall time of each run over `repeat` rounds that take every run once,
    in turn: a burst of load from other work slows one round of all settings alike rather
    than all rounds of one. The shortest CPU time of the process (all its threads) goes
    into CPU_SECONDS under the same label."""
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeat):
        for label, run in runs.items():
            started, cpu = time.perf_counter(), time.process_time()
            run()
            best[label] = min(best[label], time.perf_counter() - started)
            spent = time.process_time() - cpu
            CPU_SECONDS[label] = min(CPU_SECONDS.get(label, math.inf), spent)
    return best


# the shortest CPU time of each label `interleaved_best` timed (reset per table)
CPU_SECONDS: dict[str, float] = {}


def session_run(
    program: Program,
    profile: str,
    feeds: dict[str, np.ndarray],
    overrides: tuple[str, ...] = (),
    warm: bool = True,
    observed: bool = False,
) -> tuple[float, Callable[[], object]]:
    """(seconds to program the chip, a run of the programmed chip on `feeds`), after one
    warm-up run where `warm`; `observed`: measuring every read's sums for the ADC report,
    as `xbarc run` and `xbarc eval` do."""
    started = time.perf_counter()
    session = xbarc.InferenceSession(program, noise=profile, seed=0, overrides=list(overrides))
    programming = time.perf_counter() - started
    if observed:
        observe_reads(session)
    if warm:
        session.run(None, feeds)
    return programming, lambda: session.run(None, feeds)


def ratio(value: float) -> str:
    """A ratio as "0.63x", "7.4x" or "1,520x"."""
    return f"{value:.2g}x" if value < 10 else f"{value:,.0f}x"


def milliseconds(seconds: float) -> str:
    """Milliseconds with three significant digits, whole ones from 100 ("0.157", "6.67",
    "20,817")."""
    value = 1e3 * seconds
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def warm_kernels() -> None:
    """Load every profile's Numba kernels once (from Numba's cache), so that no timed
    first run pays for it."""
    program = compiled(MODELS["lenet"])
    x = model_feeds("lenet", MODELS["lenet"])["x"][:4]
    for profile in PROFILES:
        xbarc.InferenceSession(program, noise=profile).run(None, {"x": x})


def profile_rows(name: str, model: Model, repeat: int) -> list[str]:
    """One table row per model: onnxruntime and every profile, ms per image and ratio.
    A heavy model's quantized profiles run once, after the others."""
    feeds = model_feeds(name, model)
    images = len(next(iter(feeds.values())))
    program = compiled(model)
    reference = onnxruntime.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    reference.run(None, feeds)
    runs: dict[str, Callable[[], object]] = {"onnxruntime": lambda: reference.run(None, feeds)}
    programming = []
    columns = [*PROFILES, *(f"{profile} reported" for profile in REPORTED)]
    heavy = [column for column in columns if model.heavy and column != "ideal"]
    for column in columns:
        profile, _, reported = column.partition(" ")
        observed = bool(reported)
        if column not in heavy:
            seconds, runs[column] = session_run(program, profile, feeds, observed=observed)
            programming.append(seconds)
    best = interleaved_best(runs, repeat)
    for column in heavy:
        profile, _, reported = column.partition(" ")
        seconds, run = session_run(program, profile, feeds, warm=False, observed=bool(reported))
        programming.append(seconds)
        best[column] = interleaved_best({column: run}, 1)[column]
        print(f"{name} {column}: {best[column]:.1f} s a batch of {images}", flush=True)
    ort = best["onnxruntime"]
    cells = [f"{milliseconds(best[c] / images)} ({ratio(best[c] / ort)})" for c in columns]
    return [
        f"| {name} | {images} | {milliseconds(ort / images)} | "
        + " | ".join(cells)
        + f" | {min(programming):.2f} to {max(programming):.2f} |"
    ]


def lever_rows(name: str, model: Model, repeat: int, batch1: int) -> list[str]:
    """Per lever and profile (quant, rram): ms per image and the speed-up over the
    default (automatic batch, 2-bit cells, dynamic input and fixed ADC ranges)."""
    feeds = model_feeds(name, model)
    images = len(next(iter(feeds.values())))
    program = compiled(model)
    unsliced = compiled(model, cell_bits=8)
    calibrated = calibrate(program, feeds)
    both = calibrate(unsliced, feeds)
    warm = not model.heavy
    rows = []
    for profile in ("quant", "rram"):
        settings = [
            (f"default ({images} a batch)", program, ()),
            ("--cell-bits 8 (unsliced cells)", unsliced, ()),
            ("calibrated ranges", calibrated, CALIBRATED),
            ("--cell-bits 8 and calibrated ranges", both, CALIBRATED),
        ]
        if profile == "quant":
            settings.append(("adc_bits=exact (lossless ADC)", program, ("adc_bits=exact",)))
        runs = {
            label: session_run(chosen, profile, feeds, overrides, warm)[1]
            for label, chosen, overrides in settings
        }
        per_image = dict.fromkeys(runs, float(images))
        if not model.heavy and batch1 > 0:
            session = xbarc.InferenceSession(program, noise=profile, seed=0)
            one = [{key: value[i : i + 1] for key, value in feeds.items()} for i in range(batch1)]
            label = f"batch 1 (instead of {images})"
            runs[label] = lambda session=session, one=one: [session.run(None, f) for f in one]
            per_image[label] = float(batch1)
        CPU_SECONDS.clear()
        best = interleaved_best(runs, repeat if warm else 1)
        default = best[settings[0][0]] / images
        default_cpu = CPU_SECONDS[settings[0][0]] / images
        for label in runs:
            seconds = best[label] / per_image[label]
            cpu = CPU_SECONDS[label] / per_image[label]
            rows.append(
                f"| {name} | {profile} | {label} | {milliseconds(seconds)} | "
                f"{ratio(default / seconds)} | {milliseconds(cpu)} | {ratio(default_cpu / cpu)} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name for name in args.models.split(",") if name]
    lever_names = [name for name in args.levers.split(",") if name]
    unknown = [name for name in names + lever_names if name not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")
    load_before = os.getloadavg()[0]
    warm_kernels()
    profiles = [
        "| model | images a batch | onnxruntime ms/image | "
        + " | ".join(f"{profile} ms/image (x ort)" for profile in PROFILES)
        + " | "
        + " | ".join(f"{profile} with ADC report" for profile in REPORTED)
        + " | programming s |",
        "|---|---|---|" + "---|" * (len(PROFILES) + len(REPORTED)) + "---|",
    ]
    for name in names:
        profiles += profile_rows(name, MODELS[name], args.repeat)
        print(profiles[-1], flush=True)
    levers = [
        "| model | profile | setting | ms/image | speed-up | CPU ms/image | CPU speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in lever_names:
        levers += lever_rows(name, MODELS[name], args.repeat, args.batch1_samples)
    body = "\n".join(
        [
            "Run time of each profile (`benchmarks/profile_cost.py`): milliseconds per image "
            "and the ratio to onnxruntime on the float model in the same run; programs "
            "compiled with the defaults (8-bit weights in 2-bit cells, 1-bit DAC steps, "
            "8-bit ADC, 128 tiles of 128x128); digits models on their 360 held-out images in "
            "one batch, light ResNet-50 (constant weights, fixed batch 1) on one image, "
            "timed once. Programming the chip (building the session) apart. The profiles "
            "run as `xbarc.InferenceSession` runs them; `xbarc run` and `xbarc eval` also "
            "measure every read's sums for their ADC report (read by read, without the "
            "sparse kernel): the `with ADC report` columns.",
            "",
            *profiles,
            "",
            "Levers (quant and rram; speed-up over the default row, in wall time and in the "
            "process's CPU time, all threads: the steadier figure on a loaded machine):",
            "",
            *levers,
            "",
            f"Load average (1 min) before and after: {load_before:.1f} and "
            f"{os.getloadavg()[0]:.1f} (a shared machine: compare figures of one run).",
        ]
    )
    print(body)
    record_if(args.record, "profile cost", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
