"""onnxruntime's own static int8 quantization of a model: the anchor xbarc's `quant` is
measured against.

    int8 = quantize_int8(onnx.load("model.onnx"), {"x": calibration_batch})

QDQ format, int8 weights per output channel (or per tensor), int8 activations whose ranges
come from MinMax calibration over the samples of `calibration` (one array per model input,
samples first). A sample is `values[i:i+1]`, a batch of one, when the array has the
input's rank, and `values[i]` when it has one axis more (an input without a batch axis,
such as a scalar or a recurrent state). The work happens in a temporary folder, which is
removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx


def quantize_int8(
    model: onnx.ModelProto,
    calibration: Mapping[str, np.ndarray],
    *,
    per_channel: bool = True,
) -> onnx.ModelProto:
    """`model` quantized by `onnxruntime.quantization.quantize_static` (QDQ, int8 weights
    and activations, MinMax ranges over the calibration samples)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    counts = {len(np.asarray(values)) for values in calibration.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("calibration needs the same number (at least 1) of samples per input")
    (count,) = counts

    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in model.graph.input}

    def sample(name: str, index: int) -> np.ndarray:
        values = np.asarray(calibration[name])
        whole = values.ndim == ranks.get(name, values.ndim) + 1
        return np.asarray(values[index]) if whole else values[index : index + 1]

    class Samples(CalibrationDataReader):
        """One feed per calibration sample."""

        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, np.ndarray]] = iter(
                {name: sample(name, index) for name in calibration} for index in range(count)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="xbarc-ort-quant-") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        quantize_static(
            source,
            target,
            Samples(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return onnx.load(target)
