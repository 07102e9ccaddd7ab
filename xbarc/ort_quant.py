"""The anchor for `quant`: onnxruntime's own static int8 quantization of a float model.

    quantize_int8(model, {"x": samples}) -> the QDQ model onnxruntime runs in int8

What a user of onnxruntime would do to get an int8 model: `quant_pre_process` (shape
inference and onnxruntime's graph optimizations, which fold BatchNorm into the Conv
before it, as xbarc's frontend does), then `quantize_static` in QDQ format with
per-channel symmetric int8 weights and int8 activations whose ranges come from MinMax
calibration over the given samples. xbarc's `quant` profile is held to at least this
accuracy (README, benchmarks/quant_anchor.py, tests/test_weight_quant.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx

from xbarc.diagnostics import XbarcError


def quantize_int8(
    model: onnx.ModelProto,
    calibration: Mapping[str, np.ndarray],
    *,
    per_channel: bool = True,
) -> onnx.ModelProto:
    """`model` quantized by onnxruntime.quantization.quantize_static (QDQ, int8 weights,
    symmetric, per output channel unless `per_channel` is false; int8 activations, MinMax
    calibration). `calibration` holds one array per model input, samples first; they are
    fed one sample per run (batch 1), or in runs of the model's fixed batch size. The
    input model is never modified; intermediate files live in a temporary directory."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    feeds = list(calibration_batches(model, calibration))
    with tempfile.TemporaryDirectory(prefix="xbarc-ort-int8-") as folder:
        source = Path(folder) / "float.onnx"
        prepared = Path(folder) / "prepared.onnx"
        target = Path(folder) / "int8.onnx"
        onnx.save(model, source)  # the caller's proto is only serialized, never changed
        prepare(source, prepared)
        quantize_static(
            str(prepared),
            str(target),
            ListReader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True},
        )
        return onnx.load(target)


def prepare(source: Path, target: Path) -> None:
    """onnxruntime's recommended pre-processing; without symbolic shape inference where
    that fails (it does not know every op), and as is where even that fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=skip_symbolic)
            return
        except Exception:  # onnxruntime's pre-processing raises many kinds; try less
            continue
    target.write_bytes(source.read_bytes())


def calibration_batches(
    model: onnx.ModelProto, calibration: Mapping[str, np.ndarray]
) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of the calibration runs: per run, one sample of each input (or as many
    as the model's fixed batch dimension asks)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    missing = [i.name for i in inputs if i.name not in calibration]
    if missing:
        raise XbarcError(
            f"the calibration data has no array named {missing[0]!r}",
            hint=f"name the arrays after the model's inputs ({', '.join(i.name for i in inputs)})",
        )
    counts = {len(calibration[i.name]) for i in inputs}
    if len(counts) != 1 or 0 in counts:
        raise XbarcError("the calibration arrays must hold the same, non-zero number of samples")
    samples = counts.pop()
    batch = fixed_batch(inputs[0]) if inputs else 1
    for start in range(0, samples - batch + 1, batch):
        yield {i.name: np.asarray(calibration[i.name][start : start + batch]) for i in inputs}


def fixed_batch(value_info: onnx.ValueInfoProto) -> int:
    """The model's batch size where its first dimension is a number, else 1."""
    dims = value_info.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return 1


class ListReader:
    """onnxruntime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
