"""The anchor for `quant`: onnxruntime's own static int8 quantization of a float model.

    quantize_int8(model, {"x": samples}) -> the QDQ model onnxruntime runs in int8

What a user of onnxruntime would do to get an int8 model: `quant_pre_process` (shape
inference and onnxruntime's graph optimizations, which fold BatchNorm into the Conv
before it, as xbarc's frontend does), then `quantize_static` in QDQ format with
per-channel symmetric int8 weights and int8 activations whose ranges come from MinMax
calibration over the given samples. Where onnxruntime cannot run the result (some of
its fused nodes it cannot quantize), less pre-processing is tried (PREPARATIONS); the
result's metadata names the one taken (PREPARATION_KEY). xbarc's `quant` profile is held
to at least this accuracy (README, benchmarks/quant_anchor.py, tests/test_weight_quant.py).
"""

from __future__ import annotations

import contextlib
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
    failures = []
    with tempfile.TemporaryDirectory(prefix="xbarc-ort-int8-") as folder:
        source = Path(folder) / "float.onnx"
        onnx.save(model, source)  # the caller's proto is only serialized, never changed
        for preparation in PREPARATIONS:
            prepared = Path(folder) / f"prepared-{preparation}.onnx"
            target = Path(folder) / f"int8-{preparation}.onnx"
            try:
                # onnxruntime writes into the working folder where it pleases: its
                # symbolic shape inference, when it gives up, saves its model there as
                # sym_shape_infer_temp.onnx with the tensors in a <uuid>.data file beside
                # (onnxruntime/tools/symbolic_shape_infer.py, SymbolicShapeInference.
                # infer_shapes: onnx.save_model(..., save_as_external_data=True)). Run all
                # of it from the temporary folder, so that nothing lands in the user's.
                with contextlib.chdir(folder):
                    prepare(source, prepared, preparation)
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
                    check_loads(target)
            except Exception as error:  # onnxruntime raises many kinds: try the next way
                failures.append(f"{preparation}: {type(error).__name__}: {str(error)[:200]}")
                continue
            quantized = onnx.load(target)
            entry = quantized.metadata_props.add()
            entry.key, entry.value = PREPARATION_KEY, preparation
            return quantized
    raise XbarcError(
        "onnxruntime could not quantize the model to int8 (" + "; ".join(failures) + ")"
    )


# ways to prepare the model, tried in order until onnxruntime can run the int8 result:
# its recommended pre-processing (shape inference and graph optimizations, which fold
# BatchNorm into Conv), the same without symbolic shape inference (it does not know
# every op), without the optimizations (whose fused nodes it cannot always quantize),
# and the model as it is
PREPARATIONS = ("full", "no-symbolic-shapes", "no-optimization", "none")
PREPARATION_KEY = "xbarc.ort_int8.preparation"  # metadata: which of them the result took


def prepare(source: Path, target: Path, preparation: str) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if preparation == "none":
        target.write_bytes(source.read_bytes())
        return
    quant_pre_process(
        str(source),
        str(target),
        skip_optimization=preparation == "no-optimization",
        skip_symbolic_shape=preparation != "full",
    )


def check_loads(path: Path) -> None:
    """Raise if onnxruntime cannot build a session of the model at `path`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def calibration_batches(
    model: onnx.ModelProto, calibration: Mapping[str, np.ndarray]
) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of the calibration runs: per run, one sample of each input (or as many
    as the model's fixed batch dimension asks). An array with one axis more than its
    input holds whole inputs (`values[i]` is one run's), for inputs without a batch axis
    such as a scalar or a recurrent state."""
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
    whole = {i.name for i in inputs if np.ndim(calibration[i.name]) == rank(i) + 1}
    if whole:  # an input without a batch axis (a scalar, a recurrent state): one per run
        for index in range(samples):
            yield {
                i.name: np.asarray(
                    calibration[i.name][index]
                    if i.name in whole
                    else calibration[i.name][index : index + 1]
                )
                for i in inputs
            }
        return
    batch = fixed_batch(inputs[0]) if inputs else 1
    for start in range(0, samples - batch + 1, batch):
        yield {i.name: np.asarray(calibration[i.name][start : start + batch]) for i in inputs}


def rank(value_info: onnx.ValueInfoProto) -> int:
    return len(value_info.type.tensor_type.shape.dim)


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
