"""Shared fixtures: the real network topologies that ship with the onnx package."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

# progress lines come after XBARC_PROGRESS_INTERVAL seconds (5) of work, to stderr: on a
# slow machine they would land in the stderr tests compare. The tests of progress itself
# (test_progress.py) set their own interval.
os.environ.setdefault("XBARC_PROGRESS_INTERVAL", "86400")

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


# the three whose fully connected layers hold 60 to 140 M weights: a minute or more each
# through the whole runtime, so their end-to-end tests run with the slow tests
HEAVY_LIGHT_MODELS = ("bvlc_alexnet", "vgg19", "zfnet512")


def light_model_params() -> list:
    """LIGHT_MODELS as test parameters, the heavy ones marked slow."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in HEAVY_LIGHT_MODELS else name
        for name in LIGHT_MODELS
    ]


def light_model(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


@pytest.fixture
def resnet50() -> Path:
    return light_model("resnet50")
