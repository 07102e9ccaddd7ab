"""How far read sums reach into the ADC's range: per layer, a histogram of |sum| / step.

    spread = ReadSpread(levels=255, percentile=99.99)
    executor.on_read_sums = spread  # called with each batch of read sums before the ADC
    executor.run(batch)
    spread.layers()  # -> [LayerSpread(layer, sums, zero, step, spread_steps, clipped), ...]

A read's column sum s goes through an ADC of `levels` codes over the read's full scale F,
one code per step F / levels. What the ADC keeps of a read depends on |s| / step: a sum
of a few steps keeps a few bits, whatever the ADC's resolution. `ReadSpread` counts, per
crossbar layer, every sum's |s| / step (each read by its own step) into bins of an eighth
of an octave (at most 0.17 bit wide; exact zeros apart), and the sums beyond the full
scale (clipped), so that a run can say how many of the ADC's bits its reads use: log2 of
a high percentile of |s| / step.

The histogram kernel (Numba, compiled on first use; its numpy twin
`spread_histogram_numpy` runs under `kernels.set_backend("numpy")`) is all that the report
costs a run: one pass over the sums that the ADC kernel converts anyway (about 4 % of a
`quant` run of the digits ResNet), and nothing when no observer is set.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from xbarc.runtime import kernels

BINS_PER_BIT = 8  # per octave of |s| / step, evenly spaced within it
LOWEST_BITS = -8  # sums below 2^-8 steps share the first bin (they all convert to 0)
HIGHEST_BITS = 24  # far beyond any full scale: sums up there share the last bin
BINS = 1 + (HIGHEST_BITS - LOWEST_BITS) * BINS_PER_BIT  # bin 0: sums that are exactly zero


@dataclass(frozen=True, slots=True)
class LayerSpread:
    """The read sums of one crossbar layer against its ADC steps, over all it observed."""

    layer: str
    sums: int  # read sums observed (one per read column and patch)
    zero: float  # the fraction of them exactly zero (nothing to convert, nothing lost)
    step: float  # the ADC step of the layer's largest full scale, in read-sum units
    spread_steps: float  # the percentile of |sum| / step, the upper edge of its bin; 0.0
    # when at least that fraction of the sums is zero
    clipped: float  # the fraction beyond the full scale (the ADC saturates)


class ReadSpread:
    """A read-sum observer (`Executor.on_read_sums`) for an ADC of `levels` codes a side
    (a lossless ADC has no steps to count): per layer, the histogram of |sum| / step, the
    sums clipped and the largest full scale; `layers()` sums them up at `percentile`."""

    def __init__(self, levels: int, percentile: float):
        if levels < 1:
            raise ValueError("a lossless ADC has no steps to measure reads against")
        self.levels = levels
        self.percentile = percentile
        self._histograms: dict[str, np.ndarray] = {}
        self._clipped: dict[str, int] = {}
        self._full_scale: dict[str, int] = {}

    def __call__(self, layer: str, sums: np.ndarray, full_scales: np.ndarray) -> None:
        histogram = self._histograms.get(layer)
        if histogram is None:
            histogram = self._histograms[layer] = np.zeros(BINS, dtype=np.int64)
            self._clipped[layer] = 0
            self._full_scale[layer] = 0
        steps_per_unit = self.levels / full_scales.astype(np.float64)
        self._clipped[layer] += spread_histogram(sums, steps_per_unit, self.levels, histogram)
        self._full_scale[layer] = max(self._full_scale[layer], int(full_scales.max()))

    def layers(self) -> list[LayerSpread]:
        """Every layer observed so far, in the order its reads first came."""
        result = []
        for layer, histogram in self._histograms.items():
            total = int(histogram.sum())
            result.append(
                LayerSpread(
                    layer,
                    total,
                    int(histogram[0]) / total,
                    self._full_scale[layer] / self.levels,
                    percentile_steps(histogram, self.percentile),
                    self._clipped[layer] / total,
                )
            )
        return result


def percentile_steps(histogram: np.ndarray, percentile: float) -> float:
    """The upper edge, in steps, of the bin that holds the percentile of the counted sums
    (0.0 when it falls among the exact zeros or nothing was counted)."""
    total = int(histogram.sum())
    if total == 0:
        return 0.0
    needed = math.ceil(total * percentile / 100)
    index = int(np.searchsorted(np.cumsum(histogram), needed))
    if index == 0:
        return 0.0
    return bin_upper_edge(index)


def bin_upper_edge(index: int) -> float:
    """Where bin `index` (1 or more) ends, in steps: bin 1 + 8 (e - LOWEST_BITS) + j holds
    2^e (1 + j/8) <= v < 2^e (1 + (j + 1)/8), so a bin is at most 0.17 bits wide."""
    octave, eighth = divmod(index - 1, BINS_PER_BIT)
    return 2.0 ** (LOWEST_BITS + octave) * (1 + (eighth + 1) / BINS_PER_BIT)


def spread_histogram(
    sums: np.ndarray, steps_per_unit: np.ndarray, levels: int, histogram: np.ndarray
) -> int:
    """Count the sums [M, P] into `histogram` (int64 [BINS]) and return how many are
    beyond the full scale. Read column m's sums are in steps of 1 / steps_per_unit[m]
    (float64 [M], levels / full scale): v = |s| * steps_per_unit[m] in float64; v == 0
    counts in bin 0, else in the bin of its exponent and its three leading mantissa bits
    (`bin_upper_edge`; read off the float's bits, no logarithm), clamped to the bins;
    clipped: v > levels."""
    if sums.ndim != 2 or steps_per_unit.shape != (sums.shape[0],):
        raise ValueError(f"sums {sums.shape} need one step per row, got {steps_per_unit.shape}")
    if histogram.shape != (BINS,) or histogram.dtype != np.int64:
        raise ValueError(f"the histogram must be int64 [{BINS}]")
    if kernels.backend() == "numpy":
        return spread_histogram_numpy(sums, steps_per_unit, levels, histogram)
    compiled = _numba()
    integers = sums.dtype.kind in "iu"
    kernel = compiled.spread_histogram if integers else compiled.spread_histogram_float
    return int(kernel(np.ascontiguousarray(sums), steps_per_unit, float(levels), histogram))


# float64 bits >> MANTISSA_SHIFT: the biased exponent and the three leading mantissa bits
MANTISSA_SHIFT = 52 - 3
FIRST_BIN_KEY = (1023 + LOWEST_BITS) * BINS_PER_BIT  # the key of 2^LOWEST_BITS, bin 1


def spread_histogram_numpy(
    sums: np.ndarray, steps_per_unit: np.ndarray, levels: int, histogram: np.ndarray
) -> int:
    steps = np.abs(sums.astype(np.float64)) * steps_per_unit[:, None]
    keys = (steps.view(np.int64) >> MANTISSA_SHIFT) - FIRST_BIN_KEY + 1
    bins = np.where(steps == 0, 0, np.clip(keys, 1, BINS - 1))
    histogram += np.bincount(bins.reshape(-1), minlength=BINS)
    return int((steps > levels).sum())


# Integer sums are counted by value first (one table increment per sum, no branch), then
# the table's distinct values are binned; rows whose sums reach beyond this (wide DAC
# slices on tall tiles) are binned sum by sum.
VALUE_TABLE_LIMIT = 1 << 16


@functools.cache
def _numba() -> SimpleNamespace:
    """Compile (or load from the on-disk cache) the histogram kernel."""
    import numba

    @numba.njit(cache=True, inline="always")
    def count(steps, times, top, histogram):
        """Count `times` sums of `steps` steps; returns how many of them are clipped."""
        if steps == 0:
            histogram[0] += times
            return 0
        key = (np.float64(steps).view(np.int64) >> MANTISSA_SHIFT) - FIRST_BIN_KEY + 1
        histogram[min(max(key, 1), histogram.shape[0] - 1)] += times
        return times if steps > top else 0

    @numba.njit(cache=True)
    def spread_histogram_kernel(sums, steps_per_unit, top, histogram):
        # One thread: it must cost a small fraction of the GEMMs that made the sums, and
        # a branch per sum (most are zero after a ReLU and bit-serial inputs, the rest
        # scattered) cost 5 ns a sum where counting values first costs 1.5 ns.
        columns, patches = sums.shape
        clipped = 0
        for m in range(columns):
            row = sums[m]
            scale = steps_per_unit[m]
            largest = 0
            for p in range(patches):
                largest = max(largest, abs(np.int64(row[p])))
            if largest > VALUE_TABLE_LIMIT:
                for p in range(patches):
                    steps = abs(np.float64(row[p])) * scale
                    clipped += count(steps, 1, top, histogram)
                continue
            table = np.zeros(largest + 1, dtype=np.int64)
            for p in range(patches):
                table[abs(np.int64(row[p]))] += 1
            for value in range(largest + 1):
                if table[value]:
                    clipped += count(np.float64(value) * scale, table[value], top, histogram)
        return clipped

    @numba.njit(cache=True)
    def spread_histogram_float_kernel(sums, steps_per_unit, top, histogram):
        columns, patches = sums.shape
        clipped = 0
        for m in range(columns):
            scale = steps_per_unit[m]
            for p in range(patches):
                clipped += count(abs(np.float64(sums[m, p])) * scale, 1, top, histogram)
        return clipped

    return SimpleNamespace(
        spread_histogram=spread_histogram_kernel,
        spread_histogram_float=spread_histogram_float_kernel,
    )
