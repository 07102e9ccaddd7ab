"""Symmetric linear quantization of weight matrices to signed integer levels and a scale.

One definition for every pass that quantizes a matrix for the cells: the quantize pass
(each layer's weights) and the basis pass (BasisN's basis vectors), so that both round,
clip and choose scales the same way.
"""

from __future__ import annotations

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.ir.cells import level_dtype

CLIP_MODES = ("max", "percentile", "mse")
DEFAULT_CLIP_PERCENTILE = 99.99
# clip=mse's candidate ranges, as ratios of the largest |w|: 1.00, 0.99, ..., 0.20
MSE_RATIOS = tuple(round(1 - k / 100, 2) for k in range(81))


def quantize_levels(
    weight: np.ndarray,
    weight_bits: int,
    per_column: bool,
    clip: str = "max",
    percentile: float = DEFAULT_CLIP_PERCENTILE,
) -> tuple[np.ndarray, float | np.ndarray]:
    """Symmetric quantization of a [groups, rows, cols] matrix to signed integer levels.

    Returns the levels and the scale: a float, or f32[groups, cols] per column. The scale
    is the clip range over the largest level, the range chosen per column (or for the
    whole tensor) by `clip` (see `clip_ranges`). A zero tensor or column gets scale 1 (its
    levels are all zero either way)."""
    columns = weight if per_column else weight.reshape(1, -1, 1)
    clip_range = clip_ranges(columns, weight_bits, clip, percentile)  # [groups, cols]
    scale = scales_of(clip_range, weight_bits)
    if per_column:
        return _levels(weight, scale[:, None, :], weight_bits), scale
    tensor_scale = float(scale[0, 0]) if scale.size else 1.0
    return _levels(weight, np.float32(tensor_scale), weight_bits), tensor_scale


def clip_ranges(columns: np.ndarray, weight_bits: int, clip: str, percentile: float) -> np.ndarray:
    """The clip range of each column of a [groups, rows, cols] matrix, f64[groups, cols]:
    - max: the largest |w| (nothing clips);
    - percentile: that percentile of |w| (numpy's linear interpolation), or the largest
      |w| where the percentile is 0 (a column of mostly zeros);
    - mse: the candidate `ratio x max|w|` (ratios MSE_RATIOS) whose quantized weights
      have the least squared error against the float weights, the largest ratio on a tie.
    """
    magnitude = np.abs(columns).astype(np.float64)
    if magnitude.shape[1] == 0:
        return np.zeros((magnitude.shape[0], magnitude.shape[2]))
    peak = magnitude.max(axis=1)
    if clip == "max":
        return peak
    if clip == "percentile":
        kept = np.percentile(magnitude, percentile, axis=1)
        return np.where(kept > 0, kept, peak)
    if clip == "mse":
        return peak * best_ratios(columns, peak, weight_bits)
    raise XbarcError(f"unknown clip mode {clip!r}", hint=f"use {' or '.join(CLIP_MODES)}")


def best_ratios(columns: np.ndarray, peak: np.ndarray, weight_bits: int) -> np.ndarray:
    """Per column, the ratio of MSE_RATIOS whose clip range `ratio x peak` gives the
    least squared quantization error (the first, i.e. largest, on a tie)."""
    best_error = np.full(peak.shape, np.inf)
    best = np.ones(peak.shape)
    for ratio in MSE_RATIOS:
        error = quantization_error(columns, scales_of(peak * ratio, weight_bits), weight_bits)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best = np.where(better, ratio, best)
    return best


def quantization_error(columns: np.ndarray, scale: np.ndarray, weight_bits: int) -> np.ndarray:
    """Per column, the squared error of `columns` quantized with the column scales."""
    levels = _levels(columns, scale[:, None, :], weight_bits)
    difference = levels * scale[:, None, :].astype(np.float64) - columns
    return np.square(difference).sum(axis=1)


def scales_of(clip_range: np.ndarray, weight_bits: int) -> np.ndarray:
    """f32 scales that map each clip range to the largest level (1 where it is 0)."""
    max_level = 2 ** (weight_bits - 1) - 1
    return np.where(clip_range > 0, clip_range / max_level, 1.0).astype(np.float32)


def _levels(weight: np.ndarray, divisor, weight_bits: int) -> np.ndarray:
    max_level = 2 ** (weight_bits - 1) - 1
    levels = np.rint(weight / divisor)
    np.clip(levels, -max_level, max_level, out=levels)
    return levels.astype(level_dtype(weight_bits))
