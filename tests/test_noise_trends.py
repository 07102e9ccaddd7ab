"""Accuracy of a trained network under noise moves the way the physics says: down as
programming noise and stuck cells grow, back up toward `quant` as the ADC gains bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings

DIGITS = Path(__file__).parent / "fixtures" / "digits"
SEEDS = 3


@pytest.fixture(scope="module")
def lenet():
    options = CompileOptions(tiles=4096, input_shapes={"x": (1, 1, 8, 8)})
    program = compile_onnx(DIGITS / "lenet.onnx", options)
    with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as npz:
        return program, npz["x"][:180], npz["y"][:180]


def mean_accuracy(lenet, **changes) -> float:
    program, x, y = lenet
    profile = changes.pop("profile", "rram")
    accuracies = []
    for seed in range(SEEDS if profile == "rram" else 1):
        executor = Executor(program, noise_settings(profile, **changes), Seeds.derive(seed))
        (logits,) = executor.run({"x": x}).values()
        accuracies.append(float((logits.argmax(-1) == y).mean()))
    return float(np.mean(accuracies))


def test_accuracy_falls_as_faults_and_programming_noise_grow(lenet):
    quiet = {"read_noise": "none", "output_noise": 0.0}
    faults = [mean_accuracy(lenet, p_sa0=p, p_sa1=p, **quiet) for p in (0.0, 0.01, 0.05)]
    assert faults[0] > faults[1] > faults[2]
    noise = [mean_accuracy(lenet, programming_scale=s, **quiet) for s in (0.0, 2.0, 6.0)]
    assert noise[0] > noise[1] > noise[2]


def test_accuracy_recovers_toward_quant_as_adc_bits_grow(lenet):
    ceiling = mean_accuracy(lenet, profile="quant")
    by_bits = [mean_accuracy(lenet, adc_bits=b, programming="none", p_sa0=0.0, p_sa1=0.0)
               for b in (3, 5, 8)]  # fmt: skip
    assert by_bits[0] < by_bits[1] <= by_bits[2] + 0.02
    assert by_bits[2] > ceiling - 0.1
