"""Resize (every opset) and Upsample: nearest and linear, with onnxruntime's coordinate
arithmetic in float32 so that nearest neighbours round the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbarc.onnx_ops.base import Array, OpCall, Unsupported, int_list, normalize_axis, semantics

_F32 = np.float32


_COORDINATE_MODES = (
    "asymmetric",
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "align_corners",
    "half_pixel_symmetric",
)
_NEAREST_MODES = ("simple", "floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


def resize_source_coordinates(mode: str, output_size: int, input_size: int, scale: float) -> Array:
    """The input coordinate (float32, unclamped) each output position samples, computed in
    the order onnxruntime does so that nearest neighbours round the same way."""
    resized = np.arange(output_size, dtype=_F32)
    scale_f, output_f, input_f = _F32(scale), _F32(output_size), _F32(input_size)
    half = _F32(0.5)
    if mode == "asymmetric":
        return resized / scale_f
    if mode == "half_pixel":
        return (resized + half) / scale_f - half
    if mode == "pytorch_half_pixel":
        if output_size <= 1:
            return np.zeros(output_size, dtype=_F32)
        return (resized + half) / scale_f - half
    if mode == "tf_half_pixel_for_nn":
        return (resized + half) / scale_f
    if mode == "align_corners":
        if output_size == 1:
            return np.zeros(1, dtype=_F32)
        return resized * (input_f - _F32(1)) / (output_f - _F32(1))
    if mode == "half_pixel_symmetric":  # the offset in float32, the rest in double
        adjustment = output_f / (scale_f * input_f)
        offset = float(input_f / _F32(2) * (_F32(1) - adjustment))
        return (offset + (resized.astype(np.float64) + 0.5) / float(scale_f) - 0.5).astype(_F32)
    raise ValueError(f"unknown coordinate_transformation_mode {mode}")


_NEAR_TIE = 1e-5  # relative distance from a rounding tie that onnxruntime may round either way


def nearest_indices(coordinates: Array, nearest_mode: str, downsampling: bool, size: int) -> Array:
    """The input index each coordinate picks, clamped into [0, size)."""
    if nearest_mode == "simple":  # Resize-10 and Upsample
        picked = np.ceil(coordinates) if downsampling else np.trunc(coordinates)
    elif nearest_mode == "floor":
        picked = np.floor(coordinates)
    elif nearest_mode == "ceil":
        picked = np.ceil(coordinates)
    elif nearest_mode in ("round_prefer_floor", "round_prefer_ceil"):
        from_half = np.abs(coordinates - np.floor(coordinates) - _F32(0.5))
        near_tie = (from_half > 0) & (from_half <= _NEAR_TIE * np.maximum(1, np.abs(coordinates)))
        if near_tie.any():
            # onnxruntime rounds some coordinates a few ulps below a tie up, some not
            # (1/(2/7) picks 4, 3/(2/7) picks 10): leave those scales to it
            raise Unsupported
        halfway = coordinates == np.trunc(coordinates) + _F32(0.5)
        tie = (
            np.floor(coordinates) if nearest_mode == "round_prefer_floor" else np.ceil(coordinates)
        )
        picked = np.where(halfway, tie, np.round(coordinates))
    else:
        raise ValueError(f"unknown nearest_mode {nearest_mode}")
    return np.clip(picked.astype(np.int64), 0, size - 1)


def linear_weights(coordinates: Array, size: int) -> tuple[Array, Array, Array, Array]:
    """(low index, high index, low weight, high weight) for linear interpolation along one
    axis, with onnxruntime's clamping at the borders."""
    clamped = np.clip(coordinates, _F32(0), _F32(size - 1))
    low = np.minimum(clamped.astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    high_weight = np.abs(clamped - low.astype(_F32))
    low_weight = np.abs(clamped - high.astype(_F32))
    same = low == high
    low_weight[same] = high_weight[same] = _F32(0.5)
    return low, high, low_weight, high_weight


@dataclass(frozen=True, slots=True)
class ResizePlan:
    """What a Resize or Upsample does: per-axis float32 scales and output sizes, how output
    positions map back to input coordinates, and how nearest rounds them."""

    scales: list[float]
    sizes: list[int]
    coordinate_mode: str
    nearest_mode: str


def _resize_plan(call: OpCall, x: Array) -> ResizePlan:
    """The plan of a Resize (any opset) or Upsample on `x`, from `scales` or `sizes`."""
    scales_values: list[float] | None
    sizes_values: list[int] | None = None
    if call.op_type == "Upsample" and call.opset < 9:
        scales_values = call.floats_attr("scales")
    elif call.op_type == "Upsample" or call.opset < 11:
        scales_values = [float(v) for v in call.input(1).reshape(-1)]
    else:
        scales_input, sizes_input = call.optional(2), call.optional(3)
        scales_values = None
        if scales_input is not None and scales_input.size:
            scales_values = [float(v) for v in scales_input.reshape(-1)]
        if sizes_input is not None and sizes_input.size:
            sizes_values = int_list(sizes_input)
    policy = call.string_attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch" or call.int_attr("antialias", 0):
        raise Unsupported  # onnxruntime's own rules for aspect ratios and antialiasing
    axes = [normalize_axis(axis, x.ndim) for axis in call.ints_attr("axes") or range(x.ndim)]
    scales = [1.0] * x.ndim
    sizes = list(x.shape)
    for index, axis in enumerate(axes):
        size = x.shape[axis]
        if sizes_values is not None:
            sizes[axis] = sizes_values[index]
            scales[axis] = float(_F32(sizes[axis]) / _F32(size)) if size else 1.0
        elif scales_values is not None:
            scales[axis] = float(_F32(scales_values[index]))
            sizes[axis] = int(_F32(scales[axis]) * _F32(size))
        else:
            raise Unsupported
    if call.op_type == "Upsample" and any(scale < 1 for scale in scales):
        raise Unsupported  # Upsample refuses to shrink
    # before opset 11 there was one coordinate mode and one rounding rule
    legacy = call.op_type == "Upsample" or call.opset < 11
    mode = call.string_attr("coordinate_transformation_mode", "half_pixel")
    nearest = call.string_attr("nearest_mode", "round_prefer_floor")
    if legacy:
        mode, nearest = "asymmetric", "simple"
    if mode not in _COORDINATE_MODES or nearest not in _NEAREST_MODES:
        raise Unsupported  # tf_crop_and_resize reads the region of interest
    return ResizePlan(scales, sizes, mode, nearest)


def resize_nearest(x: Array, plan: ResizePlan) -> Array:
    """Nearest-neighbour resize: one gather of input indices per resized axis."""
    result = x
    for axis, (scale, size) in enumerate(zip(plan.scales, plan.sizes, strict=True)):
        if scale == 1 and size == x.shape[axis]:
            continue  # onnxruntime leaves unit-scale axes alone, even in tf_half_pixel_for_nn
        coordinates = resize_source_coordinates(plan.coordinate_mode, size, x.shape[axis], scale)
        picks = nearest_indices(coordinates, plan.nearest_mode, scale < 1, x.shape[axis])
        result = np.take(result, picks, axis=axis)
    return result


def resize_linear(x: Array, plan: ResizePlan) -> Array:
    """Linear interpolation along each resized axis, last axis first as onnxruntime does."""
    result = x
    for axis in reversed(range(x.ndim)):
        scale, size = plan.scales[axis], plan.sizes[axis]
        if scale == 1 and size == x.shape[axis]:
            continue  # onnxruntime samples a unit scale at integer positions
        coordinates = resize_source_coordinates(plan.coordinate_mode, size, x.shape[axis], scale)
        low, high, low_weight, high_weight = linear_weights(coordinates, x.shape[axis])
        shape = [1] * x.ndim
        shape[axis] = size
        low_weight = low_weight.astype(x.dtype).reshape(shape)
        high_weight = high_weight.astype(x.dtype).reshape(shape)
        result = np.take(result, low, axis=axis) * low_weight + (
            np.take(result, high, axis=axis) * high_weight
        )
    return result


@semantics("Resize", "Upsample")
def _resize(call: OpCall) -> list[Array | None]:
    x = call.input(0)
    plan = _resize_plan(call, x)
    mode = call.string_attr("mode", "nearest")
    if plan.sizes == list(x.shape):
        return [x]  # onnxruntime copies whatever the scales when the shape does not change
    if mode == "nearest":
        return [resize_nearest(x, plan)]
    # onnxruntime interpolates floats only on the two innermost axes of 2-D or 4-D inputs
    # (bilinear); other layouts go to its own kernels or errors
    outer_fixed = all(scale == 1 for scale in plan.scales[:-2])
    if mode != "linear" or x.dtype.kind != "f" or x.ndim not in (2, 4) or not outer_fixed:
        raise Unsupported
    return [resize_linear(x, plan)]
