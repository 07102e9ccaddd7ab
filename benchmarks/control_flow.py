"""Control flow and recurrent layers on a trained network: Silero VAD on the chip.

    python benchmarks/control_flow.py [--wheel silero_vad-6.2.3-py3-none-any.whl] [--record]

Silero VAD (pip package `silero-vad`, MIT) ships three ONNX exports of one network: an If
on the sample rate holding the whole 16 kHz and 8 kHz networks, LSTM included
(`silero_vad.onnx`); the 16 kHz network with small shape Ifs (`silero_vad_16k_op15.onnx`);
and one without an LSTM op, its cell written out in Gemms (`silero_vad_op18_ifless.onnx`,
still an If on the sample rate). The wheel is taken from --wheel, else from the cache
folder, else fetched once with `pip download` into it.

The input is a stream of 512-sample chunks at 16 kHz (each after the last 64 samples of
the chunk before, as silero_vad's wrapper feeds the model), the state carried from chunk
to chunk: 1 s of faint noise, 2 s of synthetic speech (syllables of a glottal pulse
train through vowel formants, opened by fricative bursts), 1 s of faint noise.
onnxruntime calls about 60 of the 125 chunks speech. Per export, weight precision and
profile: the crossbar layers, the largest difference of the speech probability from
onnxruntime's over the stream, the chunks whose decision (probability > 0.5) differs, and
the time per chunk.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).parent))
from results import record_if  # noqa: E402

from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

HERE = Path(__file__).parent
CACHE = HERE / ".cache"
WHEEL = "silero_vad-6.2.3-py3-none-any.whl"
EXPORTS = ("silero_vad.onnx", "silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx")
RATE, CHUNK, CONTEXT = 16000, 512, 64
# (weights, compile options, profiles run)
VARIANTS = (
    ("8-bit, per tensor", {}, ("ideal", "quant, lossless ADC", "quant", "rram (seed 0)")),
    ("8-bit, per column", {"scale": "column"}, ("quant, lossless ADC", "quant")),
    ("16-bit, per tensor", {"weight_bits": 16}, ("quant, lossless ADC", "quant")),
)
PROFILES = {
    "ideal": noise_settings("ideal"),
    "quant, lossless ADC": noise_settings("quant", adc_bits="exact"),
    "quant": noise_settings("quant"),
    "rram (seed 0)": noise_settings("rram"),
}


def wheel_path(given: str | None) -> Path:
    if given:
        return Path(given)
    cached = CACHE / WHEEL
    if not cached.exists():
        CACHE.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "silero-vad==6.2.3", "--no-deps"]
        subprocess.run([*command, "-d", str(CACHE)], check=True)
    return cached


def resonator(x: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    """A two-pole resonance (a formant) of `x`."""
    radius = np.exp(-np.pi * bandwidth / RATE)
    a1, a2 = -2 * radius * np.cos(2 * np.pi * frequency / RATE), radius * radius
    y = np.zeros_like(x)
    previous, before = 0.0, 0.0
    for i, value in enumerate(x):
        previous, before = (1 - radius) * value - a1 * previous - a2 * before, previous
        y[i] = previous
    return y


def synthetic_speech(rng: np.random.Generator, syllables: int = 8) -> np.ndarray:
    """Syllables of 0.25 s: a glottal pulse train (pitch gliding around 130 Hz) through the
    three formants of a random vowel, opened by a fricative burst."""
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)]
    size = RATE // 4
    t = np.arange(size) / RATE
    parts = []
    for k in range(syllables):
        pitch = 130 + 30 * np.sin(2 * np.pi * 1.5 * (k / 4 + t)) + rng.normal(0, 2)
        phase = np.cumsum(2 * np.pi * pitch / RATE)
        glottal = np.diff((np.mod(phase, 2 * np.pi) / (2 * np.pi)) ** 3, prepend=0)
        formants = vowels[rng.integers(len(vowels))]
        voiced = sum(resonator(glottal, f, 80 + 40 * i) for i, f in enumerate(formants))
        voiced *= np.clip(np.minimum(t / 0.03, (0.25 - t) / 0.05), 0, 1)
        burst = resonator(0.3 * rng.standard_normal(RATE // 25), 4000, 2000)
        voiced[: burst.size] += burst * np.abs(voiced).max()
        parts.append(voiced)
    speech = np.concatenate(parts)
    return 0.4 * speech / np.abs(speech).max()


def stream(seed: int = 0) -> np.ndarray:
    """4 s at 16 kHz: faint noise, 2 s of synthetic speech, faint noise."""
    rng = np.random.default_rng(seed)
    signal = np.concatenate([np.zeros(RATE), synthetic_speech(rng), np.zeros(RATE)])
    return (signal + 0.003 * rng.standard_normal(signal.size)).astype(np.float32)


def chunks(signal: np.ndarray) -> list[np.ndarray]:
    """The model's inputs: each chunk of 512 samples after the last 64 of the one before
    (zeros before the first), as silero_vad's own wrapper feeds it."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), signal])
    starts = range(CONTEXT, signal.size - CHUNK + 1 + CONTEXT, CHUNK)
    return [padded[i - CONTEXT : i + CHUNK][None] for i in starts]


def probabilities(run, pieces: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Speech probability per chunk, the state carried; and the seconds per chunk."""
    state = np.zeros((2, 1, 128), np.float32)
    rate = np.array(RATE, np.int64)
    found = []
    start = time.perf_counter()
    for piece in pieces:
        probability, state = run({"input": piece, "state": state, "sr": rate})
        found.append(float(np.asarray(probability).reshape(-1)[0]))
    return np.array(found), (time.perf_counter() - start) / len(pieces)


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help="the silero-vad wheel (default: cached download)")
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    folder = CACHE / "silero_vad"
    with zipfile.ZipFile(wheel_path(args.wheel)) as wheel:
        for export in EXPORTS:
            wheel.extract(f"silero_vad/data/{export}", folder)
    pieces = chunks(stream())
    shapes = {"input": (1, CONTEXT + CHUNK), "state": (2, 1, 128)}
    lines = [
        "Silero VAD 6.2.3 (`benchmarks/control_flow.py`): a stream of "
        f"{len(pieces)} chunks of {CHUNK} samples (noise, synthetic speech, noise), "
        "state carried; 2-bit cells, 128x128 tiles, `--tiles 512`. The default 8-bit "
        "weights with one scale per tensor lose the speech; one scale per column keeps "
        "it (0 to 2 of 125 decisions differ), as do 16-bit weights (1 to 4): the loss is "
        "the weight quantization's, not the mapping's (`ideal` is onnxruntime's answer).",
        "",
        "| export | weights | crossbar layers | profile | max abs diff of p(speech) from "
        "onnxruntime | decisions differing | s per chunk |",
        "|---|---|---|---|---|---|---|",
    ]
    for export in EXPORTS:
        path = folder / "silero_vad" / "data" / export
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want, ort_time = probabilities(lambda feeds, s=session: s.run(None, feeds), pieces)
        lines.append(
            f"| {export} | float | - | onnxruntime (p in {want.min():.3f}..{want.max():.3f}, "
            f"{int((want > 0.5).sum())} speech chunks) | - | - | {ort_time:.4f} |"
        )
        for variant, changes, profiles in VARIANTS:
            options = CompileOptions(tiles=512, input_shapes=shapes, **changes)
            program = compile_onnx(path, options)
            layers = sum(1 for _ in program.layers())
            for profile in profiles:
                executor = Executor(program, PROFILES[profile], Seeds.derive(0))

                def run(feeds, executor=executor, outputs=program.outputs):
                    result = executor.run(feeds)
                    return [result[name] for name in outputs]

                got, seconds = probabilities(run, pieces)
                differing = int(((got > 0.5) != (want > 0.5)).sum())
                row = f"| {export} | {variant} | {layers} | {profile} "
                row += f"| {np.abs(got - want).max():.2e} | {differing} of {len(pieces)} "
                lines.append(f"{row}| {seconds:.4f} |")
                print(lines[-1], flush=True)
    body = "\n".join(lines)
    print(body)
    record_if(args.record, "control_flow", body)


if __name__ == "__main__":
    main()
