"""How far read sums reach into the ADC's range: per layer, a histogram of |sum| / step.

    spread = ReadSpread(levels=255, percentile=99.99)
    executor.on_read_sums = spread  # called with each batch of read sums before the ADC
    executor.run(batch)
    spread.layers()  # -> [LayerSpread(layer, sums, counted, zero, step, spread_steps, ...)]

A read's column sum s goes through an ADC of `levels` codes over the read's full scale F,
one code per step F / levels. What the ADC keeps of a read depends on |s| / step: a sum
of a few steps keeps a few bits, whatever the ADC's resolution. `ReadSpread` counts, per
crossbar layer, the sums' |s| / step (each read by its own step) into bins of an eighth
of an octave (at most 0.17 bit wide; exact zeros apart), and the sums beyond the full
scale (clipped), so that a run can say how many of the ADC's bits its reads use: log2 of
a high percentile of |s| / step.

Read by read (`ReadOut`) it costs a run one pass of the histogram kernel (Numba,
`read_spread_kernels.py`; its numpy twin `spread_histogram_numpy` runs under
`kernels.set_backend("numpy")`) over the sums, on one thread, and nothing when no observer
is set. Batches of many sums are sampled (one in SAMPLE_EVERY, in runs of patches). On the
bit-plane, sparse and fused read paths the executor does not make the sums: it replays the
batches `ReadOut` would show and counts their sample beside its kernels
(`observed_reads.py`, `add_counts`), with the same figures (benchmarks/RESULTS.md,
"Observed runs", for the cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xbarc.runtime import kernels

BINS_PER_BIT = 8  # per octave of |s| / step, evenly spaced within it
LOWEST_BITS = -8  # sums below 2^-8 steps share the first bin (they all convert to 0)
HIGHEST_BITS = 24  # far beyond any full scale: sums up there share the last bin
BINS = 1 + (HIGHEST_BITS - LOWEST_BITS) * BINS_PER_BIT  # bin 0: sums that are exactly zero


# Batches of more read sums than this are sampled (`PatchSample`): in every stratum of
# SAMPLE_EVERY runs of SAMPLE_RUN consecutive patches, each read column counts one run,
# the next column the next run, and each counted sum stands for SAMPLE_EVERY. Every sum is
# as likely to be counted, the columns of one read together count every patch (a fixed
# stride would keep to some pixel columns of every image, one set of patches for all
# columns to some images), and runs keep the memory read to the sample's: counting is
# bound by memory, and patches taken one by one would touch every cache line.
SAMPLE_ABOVE = 1 << 16
SAMPLE_EVERY = 16
SAMPLE_RUN = 64


@dataclass(frozen=True)
class PatchSample:
    """The patches counted of a batch of read sums: in stratum k (`every` runs of `run`
    patches), read column m counts run (offsets[k] + m) % every, each sum for `every`."""

    offsets: np.ndarray  # int64, one per stratum
    every: int
    run: int

    @classmethod
    def everything(cls, patches: int) -> PatchSample:
        return cls(np.zeros(1, dtype=np.int64), 1, max(patches, 1))

    def patches(self, column: int, count: int) -> np.ndarray:
        """The patches read column `column` counts of `count`."""
        runs = np.arange(len(self.offsets)) * self.every + (self.offsets + column) % self.every
        chosen = (runs[:, None] * self.run + np.arange(self.run)).reshape(-1)
        return chosen[chosen < count]


@dataclass(frozen=True, slots=True)
class LayerSpread:
    """The read sums of one crossbar layer against its ADC steps, over all it observed."""

    layer: str
    sums: int  # read sums the layer produced (one per read column and patch)
    counted: int  # of them, counted into the histogram (a sample, where they are many)
    zero: float  # the fraction exactly zero (nothing to convert, nothing lost)
    step: float  # the ADC step of the layer's largest full scale, in read-sum units
    spread_steps: float  # the percentile of |sum| / step, the upper edge of its bin; 0.0
    # when at least that fraction of the sums is zero
    clipped: float  # the fraction beyond the full scale (the ADC saturates)
    # zero, clipped and spread_steps are figures of the counted sums. A layer that counted
    # none reports 0.0 for all three (and no bits used): counted == 0 says they are unknown.
    # Only a sampling threshold lowered below SAMPLE_EVERY * SAMPLE_RUN sums reaches it:
    # fewer than SAMPLE_EVERY columns whose runs all start beyond the batch's patches.


@dataclass
class LayerCounts:
    """What `ReadSpread` keeps of one layer's reads."""

    histogram: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    sums: int = 0
    counted: int = 0
    clipped: int = 0
    full_scale: int = 0


class ReadSpread:
    """A read-sum observer (`Executor.on_read_sums`) for an ADC of `levels` codes a side
    (a lossless ADC has no steps to count): per layer, the histogram of |sum| / step, the
    sums clipped and the largest full scale; `layers()` sums them up at `percentile`."""

    def __init__(self, levels: int, percentile: float):
        if levels < 1:
            raise ValueError("a lossless ADC has no steps to measure reads against")
        self.levels = levels
        self.percentile = percentile
        self._layers: dict[str, LayerCounts] = {}
        self._samples: dict[int, PatchSample] = {}

    def __call__(self, layer: str, sums: np.ndarray, full_scales: np.ndarray) -> None:
        counts = self._layers.get(layer)
        if counts is None:
            counts = self._layers[layer] = LayerCounts()
        counts.sums += sums.size
        counts.full_scale = max(counts.full_scale, int(full_scales.max()))
        steps_per_unit = self.levels / full_scales.astype(np.float64)
        sample = self.sample(sums.shape[1]) if sums.size > SAMPLE_ABOVE else None
        before = int(counts.histogram.sum())
        counts.clipped += spread_histogram(
            sums, steps_per_unit, self.levels, counts.histogram, sample
        )
        counts.counted += (int(counts.histogram.sum()) - before) // (sample.every if sample else 1)

    def add_counts(
        self,
        layer: str,
        histogram: np.ndarray,
        clipped: int,
        counted: int,
        sums: int,
        full_scale: int,
    ) -> None:
        """Add read sums counted elsewhere, as the calls that showed them would have
        counted them (`observed_reads`: the fast read paths count their sample beside the
        kernels): `histogram` int64 [BINS] (each counted sum for the sums it stands for),
        `clipped` of them, `counted` sums counted, `sums` seen, the largest full scale."""
        counts = self._layers.get(layer)
        if counts is None:
            counts = self._layers[layer] = LayerCounts()
        counts.histogram += histogram
        counts.clipped += clipped
        counts.counted += counted
        counts.sums += sums
        counts.full_scale = max(counts.full_scale, full_scale)

    def merge(self, other: ReadSpread) -> None:
        """Add what `other` counted (the reads of other batches, e.g. on a Dask worker):
        the counts are integers, so merging in batch order gives what one observer of
        all the batches gives, layers in the order their reads first came."""
        if (other.levels, other.percentile) != (self.levels, self.percentile):
            raise ValueError("read spreads of different ADCs or percentiles do not merge")
        for layer, theirs in other._layers.items():
            counts = self._layers.get(layer)
            if counts is None:
                counts = self._layers[layer] = LayerCounts()
            counts.histogram += theirs.histogram
            counts.sums += theirs.sums
            counts.counted += theirs.counted
            counts.clipped += theirs.clipped
            counts.full_scale = max(counts.full_scale, theirs.full_scale)

    def sample(self, patches: int) -> PatchSample:
        """The sample of a batch of read sums over `patches`, drawn once per patch count
        (seeded by it)."""
        sample = self._samples.get(patches)
        if sample is None:
            strata = -(-patches // (SAMPLE_RUN * SAMPLE_EVERY))
            offsets = np.random.default_rng(patches).integers(0, SAMPLE_EVERY, strata)
            sample = self._samples[patches] = PatchSample(offsets, SAMPLE_EVERY, SAMPLE_RUN)
        return sample

    def layers(self) -> list[LayerSpread]:
        """Every layer observed so far, in the order its reads first came."""
        result = []
        for layer, counts in self._layers.items():
            histogram = counts.histogram
            weighed = int(histogram.sum())  # the sums the counted ones stand for
            result.append(
                LayerSpread(
                    layer,
                    counts.sums,
                    counts.counted,
                    fraction(int(histogram[0]), weighed),
                    counts.full_scale / self.levels,
                    percentile_steps(histogram, self.percentile),
                    fraction(counts.clipped, weighed),
                )
            )
        return result


# How the side kernels of `observed_reads` bin a sum v of a column (read_spread_kernels):
STEPS = 0  # `ReadSpread`: v x steps per unit, in its bins of an eighth of an octave
FRACTIONS = 1  # `ReadFractions`: floor(v / full scale x bins), clipped to its bins


class ReadFractions:
    """A read-sum observer (`Executor.on_read_sums`) that counts every sum: per layer, the
    histogram of s / full scale over `bins` bins of [0, 1] (bin floor(s / F x bins),
    clipped to the first and the last). `xbarc calibrate` takes its ADC ranges from it.
    Like a `ReadSpread`, it keeps the fast read paths (`observed_reads`)."""

    def __init__(self, bins: int):
        self.bins = bins
        self.histograms: dict[str, np.ndarray] = {}

    def __call__(self, layer: str, sums: np.ndarray, full_scales: np.ndarray) -> None:
        fraction = sums / full_scales[:, None].astype(np.float64)
        bins = np.clip((fraction * self.bins).astype(np.int64), 0, self.bins - 1)
        self.add_counts(layer, np.bincount(bins.reshape(-1), minlength=self.bins))

    def add_counts(self, layer: str, histogram: np.ndarray) -> None:
        """Add sums counted elsewhere (`observed_reads`), int64 [bins]."""
        mine = self.histograms.get(layer)
        if mine is None:
            mine = self.histograms[layer] = np.zeros(self.bins, dtype=np.int64)
        mine += histogram


def fraction(part: int, whole: int) -> float:
    """part / whole; 0.0 for a layer that counted nothing (`LayerSpread`)."""
    return part / whole if whole else 0.0


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
    sums: np.ndarray,
    steps_per_unit: np.ndarray,
    levels: int,
    histogram: np.ndarray,
    sample: PatchSample | None = None,
) -> int:
    """Count the sums [M, P] (all, or the `sample` of them, each for `sample.every`) into
    `histogram` (int64 [BINS]) and return how many are beyond the full scale (counted the
    same way). Read column m's sums are in steps of 1 / steps_per_unit[m] (float64 [M],
    levels / full scale): v = |s| * steps_per_unit[m] in float64; v == 0 counts in bin 0,
    else in the bin of its exponent and its three leading mantissa bits
    (`bin_upper_edge`; read off the float's bits, no logarithm), clamped to the bins;
    clipped: v > levels."""
    if sums.ndim != 2 or steps_per_unit.shape != (sums.shape[0],):
        raise ValueError(f"sums {sums.shape} need one step per row, got {steps_per_unit.shape}")
    if histogram.shape != (BINS,) or histogram.dtype != np.int64:
        raise ValueError(f"the histogram must be int64 [{BINS}]")
    if sample is None:
        sample = PatchSample.everything(sums.shape[1])
    if kernels.backend() == "numpy":
        return spread_histogram_numpy(sums, steps_per_unit, levels, histogram, sample)
    from xbarc.runtime import read_spread_kernels as compiled

    integers = sums.dtype.kind in "iu"
    kernel = compiled.spread_histogram if integers else compiled.spread_histogram_float
    rows = np.ascontiguousarray(sums)
    arguments = (sample.offsets, sample.every, sample.run)
    return int(kernel(rows, steps_per_unit, float(levels), histogram, *arguments))


# float64 bits >> MANTISSA_SHIFT: the biased exponent and the three leading mantissa bits
MANTISSA_SHIFT = 52 - 3
FIRST_BIN_KEY = (1023 + LOWEST_BITS) * BINS_PER_BIT  # the key of 2^LOWEST_BITS, bin 1


def spread_histogram_numpy(
    sums: np.ndarray,
    steps_per_unit: np.ndarray,
    levels: int,
    histogram: np.ndarray,
    sample: PatchSample,
) -> int:
    clipped = 0
    for column, row in enumerate(sums):
        counted = row[sample.patches(column, len(row))]
        steps = np.abs(counted.astype(np.float64)) * steps_per_unit[column]
        keys = (steps.view(np.int64) >> MANTISSA_SHIFT) - FIRST_BIN_KEY + 1
        bins = np.where(steps == 0, 0, np.clip(keys, 1, BINS - 1))
        histogram += sample.every * np.bincount(bins, minlength=BINS)
        clipped += sample.every * int((steps > levels).sum())
    return clipped


# Integer sums are counted by value first (a table increment per sum, no branch), then
# the distinct values are binned; rows whose sums reach beyond this (wide DAC slices on
# tall tiles) are binned sum by sum.
VALUE_TABLE_LIMIT = 1 << 16
