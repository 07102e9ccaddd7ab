"""What each noise profile costs at run time, and the levers a user has to make runs faster.

    python benchmarks/profile_cost.py [--models lenet,resnet,resnet50] [--levers lenet,resnet]
        [--repeat 5] [--batch1-samples 36] [--record]

Per model, in one process: onnxruntime's time on the float model and xbarc's time per
batch in each profile (`ideal`, `quant`, `rram`, `pcm`, seed 0), each as milliseconds
per image and as a ratio to onnxruntime measured in the same run, with the time to
program the chip (building the session) apart. Programs use the compiler's defaults
(8-bit weights in 2-bit cells, 1-bit DAC steps, 8-bit ADC, 128 tiles of 128x128).

Models: the trained digits LeNet and ResNet (tests/fixtures/digits, compiled with
`--input-shape x=1x1x8x8`) on the 360 held-out images in one batch (the batch `xbarc
eval` chooses for them); onnx's light ResNet-50 (`--tiles 128`, fixed batch 1) on one
seeded random image, timed once (in `quant`, `rram` and `pcm` one image takes minutes).

Levers (`--levers`, in `quant` and `rram`): the batch (one image a run, over the first
`--batch1-samples` images, against the automatic batch), unsliced cells (compiled with
`--cell-bits 8`: a quarter of the reads), calibrated converter ranges (`xbarc calibrate`
on the same images, `--set input_range=calibrated --set adc_range=calibrated`), and a
lossless ADC (`--set adc_bits=exact`, quant only). Wall-clock times on a shared machine:
the best of `--repeat` runs after a warm-up (ResNet-50: one run), the least disturbed.
"""

from __future__ import annotations

import argparse
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
from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402

DIGITS = HERE.parent / "tests" / "fixtures" / "digits"
RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
PROFILES = ("ideal", "quant", "rram", "pcm")
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


def best_time(run: Callable[[], object], repeat: int) -> float:
    """The shortest wall time of `repeat` calls of `run`, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


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


def onnxruntime_time(model: Model, feeds: dict[str, np.ndarray], repeat: int) -> float:
    session = onnxruntime.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    return best_time(lambda: session.run(None, feeds), max(repeat, 5))


def timed_session(
    program: Program,
    profile: str,
    feeds: dict[str, np.ndarray],
    repeat: int,
    overrides: tuple[str, ...] = (),
    warm: bool = True,
) -> tuple[float, float]:
    """(seconds to program the chip, seconds per run on `feeds`)."""
    started = time.perf_counter()
    session = xbarc.InferenceSession(program, noise=profile, seed=0, overrides=list(overrides))
    programming = time.perf_counter() - started
    if warm:
        session.run(None, feeds)
    return programming, best_time(lambda: session.run(None, feeds), repeat)


def ratio(value: float) -> str:
    """A ratio as "0.63x", "7.4x" or "1,520x"."""
    return f"{value:.2g}x" if value < 10 else f"{value:,.0f}x"


def warm_kernels() -> None:
    """Load every profile's Numba kernels once (from Numba's cache), so that no timed
    first run pays for it."""
    program = compiled(MODELS["lenet"])
    x = model_feeds("lenet", MODELS["lenet"])["x"][:4]
    for profile in PROFILES:
        xbarc.InferenceSession(program, noise=profile).run(None, {"x": x})


def profile_rows(name: str, model: Model, repeat: int) -> list[str]:
    """One table row per model: onnxruntime and every profile, ms per image and ratio."""
    feeds = model_feeds(name, model)
    images = len(next(iter(feeds.values())))
    program = compiled(model)
    ort = onnxruntime_time(model, feeds, repeat)
    cells = []
    programming = []
    for profile in PROFILES:
        heavy_run = model.heavy and profile != "ideal"
        seconds_programming, seconds = timed_session(
            program,
            profile,
            feeds,
            1 if heavy_run else repeat,
            warm=not heavy_run,
        )
        programming.append(seconds_programming)
        cells.append(f"{1e3 * seconds / images:.3g} ({ratio(seconds / ort)})")
        print(f"{name} {profile}: {seconds:.3f} s a batch of {images}", flush=True)
    ort = min(ort, onnxruntime_time(model, feeds, repeat))  # the better of before and after
    return [
        f"| {name} | {images} | {1e3 * ort / images:.3g} | "
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
    heavy = model.heavy
    runs = 1 if heavy else repeat
    rows = []
    for profile in ("quant", "rram"):
        _, default = timed_session(program, profile, feeds, runs, warm=not heavy)
        per_image = default / images
        levers: list[tuple[str, float]] = []
        if not heavy and batch1 > 0:
            first = {key: value[:batch1] for key, value in feeds.items()}
            session = xbarc.InferenceSession(program, noise=profile, seed=0)
            one = [{key: value[i : i + 1] for key, value in first.items()} for i in range(batch1)]
            seconds = best_time(lambda: [session.run(None, f) for f in one], 1)  # noqa: B023
            levers.append((f"batch 1 (instead of {images})", seconds / batch1))
        _, seconds = timed_session(unsliced, profile, feeds, runs, warm=not heavy)
        levers.append(("--cell-bits 8 (unsliced cells)", seconds / images))
        _, seconds = timed_session(calibrated, profile, feeds, runs, CALIBRATED, warm=not heavy)
        levers.append(("calibrated ranges", seconds / images))
        if profile == "quant":
            _, seconds = timed_session(
                program, profile, feeds, runs, ("adc_bits=exact",), warm=not heavy
            )
            levers.append(("adc_bits=exact (lossless ADC)", seconds / images))
        _, seconds = timed_session(both, profile, feeds, runs, CALIBRATED, warm=not heavy)
        levers.append(("--cell-bits 8 and calibrated ranges", seconds / images))
        rows.append(
            f"| {name} | {profile} | default ({images} a batch) | {1e3 * per_image:.3g} | 1x |"
        )
        for label, seconds_per_image in levers:
            rows.append(
                f"| {name} | {profile} | {label} | {1e3 * seconds_per_image:.3g} | "
                f"{ratio(per_image / seconds_per_image)} |"
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
        + " | programming s |",
        "|---|---|---|" + "---|" * len(PROFILES) + "---|",
    ]
    for name in names:
        profiles += profile_rows(name, MODELS[name], args.repeat)
        print(profiles[-1], flush=True)
    levers = ["| model | profile | setting | ms/image | speed-up |", "|---|---|---|---|---|"]
    for name in lever_names:
        levers += lever_rows(name, MODELS[name], args.repeat, args.batch1_samples)
    body = "\n".join(
        [
            "Run time of each profile (`benchmarks/profile_cost.py`): milliseconds per image "
            "and the ratio to onnxruntime on the float model in the same run; programs "
            "compiled with the defaults (8-bit weights in 2-bit cells, 1-bit DAC steps, "
            "8-bit ADC, 128 tiles of 128x128); digits models on their 360 held-out images in "
            "one batch, light ResNet-50 (constant weights, fixed batch 1) on one image, "
            "timed once. Programming the chip (building the session) apart.",
            "",
            *profiles,
            "",
            "Levers (quant and rram; speed-up over the default row):",
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
