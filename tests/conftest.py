"""Shared fixtures: the real network topologies that ship with the onnx package."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

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


def light_model(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


@pytest.fixture
def resnet50() -> Path:
    return light_model("resnet50")
