"""A `ReadSpread`'s (or `ReadFractions`') view of a layer's reads on the fast paths.

    layout = observed_layer(reads, rows, cols, groups, levels, slice_bits, True)  # per layer
    calls = observed_calls(layout, present, slices, nonzero, patches, SAMPLE_EVERY)
    count_bitplane(packed, flags, bitplane, calls, planes, spread, layer)  # or count_levels

Read by read (`ReadOut`), an observer of read sums sees, group by group, the sums of each
read, input sign and DAC slice whose digits are not all zero, in batches of at most
READOUT_BUDGET sums, and `ReadSpread` samples each batch of more than SAMPLE_ABOVE sums
(read column m of the batch counts the runs of patches `PatchSample` gives it). The
figures it reports depend only on which sums it counts, how many it saw and the full
scales, not on the order: so the bit-plane, sparse and fused paths compute their outputs
as they do unobserved, `observed_calls` replays the batches `ReadOut` would have made
(which sums, which batch, which column of the batch), and a side kernel computes only the
counted sums from the layer's own input (quant is deterministic: the same input either
way) and bins them as `ReadSpread` does (`read_spread_kernels`): the same histogram,
clipped, counted and sums figures, for a sixteenth of the work where batches are sampled.

Calibration's `ReadFractions` counts every sum (no sample) as a fraction of its full scale:
the same replay, every entry on all its patches, binned its way (`read_spread.FRACTIONS`).

Bit-serial layers count from the packed bit planes of `bitplane_accumulate` (AND +
popcount, as it sums), the others from the unfolded uint8 DAC levels (the non-zero cells
of `SparseColumns` times the slice's digits). The kernels count sums by value first, four
tables taking turns (as `spread_histogram` does), and bin the distinct values where the
step changes. Any other observer (a user's callable) still takes the reads one by one, and
noisy reads keep `observe_noisy_reads`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbarc.runtime import kernels
from xbarc.runtime.read_spread import (
    BINS,
    FRACTIONS,
    SAMPLE_ABOVE,
    SAMPLE_RUN,
    STEPS,
    VALUE_TABLE_LIMIT,
    PatchSample,
    ReadFractions,
    ReadSpread,
    spread_histogram_numpy,
)
from xbarc.runtime.reads import READOUT_BUDGET, ReadPlan, index_key


@dataclass(frozen=True)
class ObservedLayer:
    """A layer's read columns in the order `ReadOut` shows them, and where each is in the
    fast kernel's columns. Read r (of all the layer's runs, in plan order) has the read
    columns `column_start[r]:column_start[r + 1]` and drives input segment `segment[r]`
    (a group and its rows: the flat rows `segment_rows[s]` of the unfolded input)."""

    group_reads: tuple[np.ndarray, ...]  # per group, its reads in plan order
    column_start: np.ndarray  # int64 [R + 1]
    segment: np.ndarray  # int64 [R]
    segment_rows: tuple[np.ndarray, ...]  # int64 flat rows of each segment
    kernel_column: np.ndarray  # int64 [C]: the column in the kernel's (-1: cells all zero)
    full_scale: np.ndarray  # int64 [C]
    steps: np.ndarray  # float64 [C]: ADC levels / full scale (`ReadSpread`'s steps per unit)
    bound: np.ndarray  # int64 [C]: the largest |sum| a column can read (its |cells| x top digit)


def observed_layer(
    reads: list[ReadPlan],
    rows: int,
    cols: int,
    groups: int,
    levels: int,
    slice_bits: int,
    offset_columns: bool,
) -> ObservedLayer:
    """The layout of a layer's `reads` (all runs, plan order) for an observer of an ADC of
    `levels` codes, DAC slices of `slice_bits` (`rows`, `cols`: the layer's per group):
    segments numbered in the order they first come (as
    `bitplane.bitplane_columns` numbers them), kernel columns as `bitplane_columns`
    (`offset_columns`: with a column of ones per offset-corrected output after each read's
    own) or `reads.sparse_columns` number them: each read's columns with a non-zero cell."""
    segment_of: dict[tuple, int] = {}
    segment_rows: list[np.ndarray] = []
    segment = np.zeros(len(reads), dtype=np.int64)
    kernel_column = []
    per_group: list[list[int]] = [[] for _ in range(groups)]
    next_column = 0
    for number, read in enumerate(reads):
        key = (read.group, index_key(read.rows))
        if key not in segment_of:
            segment_of[key] = len(segment_rows)
            segment_rows.append(read.group * rows + np.arange(rows, dtype=np.int64)[read.rows])
        segment[number] = segment_of[key]
        per_group[read.group].append(number)
        nonzero = np.any(np.asarray(read.cells_t) != 0, axis=1)
        column = np.full(len(nonzero), -1, dtype=np.int64)
        column[nonzero] = next_column + np.arange(int(nonzero.sum()), dtype=np.int64)
        next_column += int(nonzero.sum())
        if offset_columns and read.offset_columns is not None:
            next_column += len(np.arange(cols)[read.offset_columns])
        kernel_column.append(column)
    widths = np.array([len(read.target) for read in reads], dtype=np.int64)
    full_scale = (
        np.concatenate([read.full_scale for read in reads]).astype(np.int64)
        if reads
        else np.zeros(0, np.int64)
    )
    return ObservedLayer(
        tuple(np.array(numbers, dtype=np.int64) for numbers in per_group),
        np.concatenate([[0], np.cumsum(widths)]).astype(np.int64),
        segment,
        tuple(segment_rows),
        np.concatenate(kernel_column) if reads else np.zeros(0, np.int64),
        full_scale,
        levels / full_scale.astype(np.float64),
        np.concatenate(
            [np.abs(np.asarray(read.cells_t, dtype=np.int64)).sum(axis=1) for read in reads]
        )
        * ((1 << slice_bits) - 1)
        if reads
        else np.zeros(0, np.int64),
    )


@dataclass(frozen=True)
class ObservedCalls:
    """The read sums `ReadOut` shows an observer in one layer run, as entries: read
    column `column[e]` of the layout, for input sign `sign[e]` (0: positive, 1: negative)
    and DAC slice `slices[e]`, counted on the patches its place in its batch gives it
    (`turn[e]`: its column in the batch modulo `every[e]`, SAMPLE_EVERY where the batch
    is sampled, else 1: every patch)."""

    column: np.ndarray  # int64 [E]
    sign: np.ndarray  # int64 [E]
    slices: np.ndarray  # int64 [E]
    turn: np.ndarray  # int64 [E]
    every: np.ndarray  # int64 [E]
    patches: int
    full_scale: int  # the largest full scale among them (0: none)
    kernel_column: np.ndarray  # int64 [E]: the layout's `kernel_column` of each entry
    steps: np.ndarray  # float64 [E]
    bound: np.ndarray  # int64 [E]
    full_scales: np.ndarray  # float64 [E]

    @property
    def sums(self) -> int:
        return len(self.column) * self.patches


def observed_calls(
    layout: ObservedLayer,
    present: tuple[bool, bool],
    slices: int,
    nonzero: np.ndarray,
    patches: int,
    every: int,
    sampled: bool = True,
) -> ObservedCalls:
    """Replay `Executor._accumulate_by_read`'s reads for an observer: group by group, each
    present sign, each read of the group (plan order), each of `slices` DAC slices whose
    digits on the read's segment are not all zero (`nonzero` bool [2, slices, segments]),
    read sums gathered into batches of at most READOUT_BUDGET (`ReadOut.add`), a batch of
    more than SAMPLE_ABOVE sums sampled one column in `every` (`sampled`, as a `ReadSpread`
    samples; else every sum counted)."""
    blocks: list[tuple[int, int, int, int]] = []  # (read, sign, slice, column in batch)
    batch_of: list[int] = []  # each block's batch
    batch_columns: list[int] = []  # columns of each batch
    starts = layout.column_start
    for group in layout.group_reads:
        used = 0
        columns = 0
        opened = False
        for sign in (0, 1):
            if not present[sign]:
                continue
            for number in group.tolist():
                width = int(starts[number + 1] - starts[number])
                size = width * patches
                segment = layout.segment[number]
                for j in range(slices):
                    if not nonzero[sign, j, segment]:
                        continue
                    if used and used + size > READOUT_BUDGET:  # ReadOut flushes
                        batch_columns.append(columns)
                        used = columns = 0
                    blocks.append((number, sign, j, columns))
                    batch_of.append(len(batch_columns))
                    used += size
                    columns += width
                    opened = True
        if opened:  # the group's last batch (one of no sums is never shown: no entries)
            batch_columns.append(columns)
    if not blocks:
        empty = np.zeros(0, dtype=np.int64)
        return ObservedCalls(
            empty, empty, empty, empty, empty, patches, 0, empty, np.zeros(0), empty, np.zeros(0)
        )
    read, sign_of, slices_of, first = (
        np.array(part, dtype=np.int64) for part in zip(*blocks, strict=True)
    )
    widths = starts[read + 1] - starts[read]
    within = np.arange(int(widths.sum())) - np.repeat(np.cumsum(widths) - widths, widths)
    column = np.repeat(starts[read], widths) + within
    place = np.repeat(first, widths) + within  # column in its batch
    batches = np.array(batch_columns, dtype=np.int64)[np.array(batch_of, dtype=np.int64)]
    sampled_batch = batches * patches > SAMPLE_ABOVE if sampled else np.zeros(len(batches), bool)
    chosen = np.repeat(sampled_batch, widths)
    return ObservedCalls(
        column,
        np.repeat(sign_of, widths),
        np.repeat(slices_of, widths),
        np.where(chosen, place % every, 0),
        np.where(chosen, every, 1),
        patches,
        int(layout.full_scale[column].max(initial=0)),
        layout.kernel_column[column],
        layout.steps[column],
        layout.bound[column],
        layout.full_scale[column].astype(np.float64),
    )


def segment_digits_bitplane(
    flags: np.ndarray, segment_word: np.ndarray, planes: int, slices: int, slice_bits: int
) -> np.ndarray:
    """nonzero bool [2, slices, segments] from the packed planes' flags [2 x planes, words,
    runs] (`pack_inputs`): whether any digit of slice j of a sign is set on a segment."""
    words = flags.any(axis=2)  # [2 x planes, words]
    segments = np.logical_or.reduceat(words, segment_word[:-1], axis=1)
    per_sign = segments.reshape(2, planes, -1)[:, : slices * slice_bits]
    return np.asarray(per_sign.reshape(2, slices, slice_bits, -1).any(axis=2))


def segment_digits_levels(
    levels: list[np.ndarray | None], layout: ObservedLayer, slices: int, slice_bits: int
) -> np.ndarray:
    """nonzero bool [2, slices, segments] from each sign's unfolded DAC levels uint8
    [flat rows, P] (None: the sign is absent)."""
    nonzero = np.zeros((2, slices, len(layout.segment_rows)), dtype=bool)
    mask = (1 << slice_bits) - 1
    for sign, part in enumerate(levels):
        if part is None:
            continue
        rows = np.bitwise_or.reduce(part, axis=1).astype(np.int64)
        for s, flat in enumerate(layout.segment_rows):
            joined = int(np.bitwise_or.reduce(rows[flat])) if len(flat) else 0
            for j in range(slices):
                nonzero[sign, j, s] = (joined >> (j * slice_bits)) & mask != 0
    return nonzero


# Histograms of the side kernels: one per task (a run of entries), added up after; one
# task where the kernel runs on one thread (small work: a task's tables cost a flush).
TASKS = 8


Observer = ReadSpread | ReadFractions


@dataclass(frozen=True)
class Tally:
    """What a side kernel counts into, per task: the histogram, the clipped and counted
    sums, and four tables of sums by value as wide as the entries' largest bound up to
    VALUE_TABLE_LIMIT (wider sums are binned one by one; the zero pages left to the
    allocator: a task touches the few values its sums take); and how it bins them for
    the observer: `mode` (`read_spread.STEPS` or FRACTIONS) at `scales` [E] (the
    entries' steps per unit or full scales) over `top` (ADC levels, or the bins), on the
    patches of `sample`."""

    histograms: np.ndarray  # int64 [tasks, bins]
    clipped: np.ndarray  # int64 [tasks]
    counted: np.ndarray  # int64 [tasks]
    tables: np.ndarray  # int64 [tasks, 4 x stride]
    mode: int
    scales: np.ndarray  # float64 [E]
    top: float
    sample: PatchSample

    @classmethod
    def of(cls, calls: ObservedCalls, observer: Observer) -> Tally:
        """For the entries of `calls` and `observer`; sets the kernel's threads by their
        work."""
        if isinstance(observer, ReadSpread):
            mode, scales, top = STEPS, calls.steps, float(observer.levels)
            bins, sample = BINS, observer.sample(calls.patches)
        else:
            mode, scales, top = FRACTIONS, calls.full_scales, float(observer.bins)
            bins = observer.bins
            sample = PatchSample(np.zeros(1, dtype=np.int64), 1, SAMPLE_RUN)
        work = len(calls.column) * calls.patches // sample.every
        tasks = TASKS if work >= kernels.PARALLEL_WORK else 1
        if kernels.backend() != "numpy":
            kernels.use_threads(work)
        tabled = calls.bound[calls.bound <= VALUE_TABLE_LIMIT]
        stride = int(tabled.max(initial=0)) + 1
        return cls(
            np.zeros((tasks, bins), dtype=np.int64),
            np.zeros(tasks, dtype=np.int64),
            np.zeros(tasks, dtype=np.int64),
            np.zeros((tasks, 4 * stride), dtype=np.int64),
            mode,
            scales,
            top,
            sample,
        )

    def kernel_arguments(self, calls: ObservedCalls) -> tuple:
        """The side kernels' last arguments, the same for both (`sampled_bitplane`,
        `sampled_levels`): each entry's sample turn, weight, scale and bound, the sample,
        the binning, and what they count into."""
        return (
            calls.turn,
            calls.every,
            self.scales,
            calls.bound,
            self.sample.offsets,
            self.sample.run,
            self.mode,
            self.top,
            self.tables,
            self.histograms,
            self.clipped,
            self.counted,
        )

    def add_to(self, observer: Observer, layer: str, calls: ObservedCalls) -> None:
        histogram = self.histograms.sum(axis=0)
        if isinstance(observer, ReadFractions):
            observer.add_counts(layer, histogram)
            return
        observer.add_counts(
            layer,
            histogram,
            int(self.clipped.sum()),
            int(self.counted.sum()),
            calls.sums,
            calls.full_scale,
        )

    def count_numpy(self, sums: np.ndarray, calls: ObservedCalls) -> None:
        """Count each entry's sums [E, P] as the observer counts them in its batch (the
        numpy twins' way)."""
        if self.mode == FRACTIONS:
            fractions = ReadFractions(len(self.histograms[0]))
            fractions(LAYER, sums, calls.full_scales)
            self.histograms[0] += fractions.histograms.get(LAYER, 0)
            return
        everything = PatchSample.everything(calls.patches)
        for e in range(len(sums)):
            chosen = self.sample if calls.every[e] > 1 else everything
            one = np.zeros(BINS, dtype=np.int64)
            turned = shifted(chosen, int(calls.turn[e]))
            self.clipped[0] += spread_histogram_numpy(
                sums[e : e + 1], calls.steps[e : e + 1], int(self.top), one, turned
            )
            self.histograms[0] += one
            self.counted[0] += int(one.sum()) // chosen.every


LAYER = "-"  # the name the numpy twin's scratch observer counts under


def count_bitplane(
    packed: np.ndarray,
    flags: np.ndarray,
    columns,
    calls: ObservedCalls,
    planes: int,
    observer: Observer,
    layer: str,
) -> None:
    """Count the sums of `calls` into `observer` for `layer`, from the packed input planes
    of `bitplane_accumulate` (`planes` a sign) and its `BitplaneColumns`."""
    if not len(calls.column):
        return
    first_plane = calls.sign * planes + calls.slices * columns.slice_bits
    tally = Tally.of(calls, observer)
    if kernels.backend() == "numpy":
        tally.count_numpy(
            bitplane_sums_numpy(packed, columns, calls.kernel_column, first_plane), calls
        )
    else:
        from xbarc.runtime import read_spread_kernels as compiled
        from xbarc.runtime.kernels.bitplane import CHUNK

        compiled.sampled_bitplane(
            packed,
            flags,
            columns.term_start,
            columns.term_word,
            columns.term_low,
            columns.term_high,
            columns.term_shift,
            columns.slice_bits,
            CHUNK,
            calls.kernel_column,
            first_plane,
            *tally.kernel_arguments(calls),
        )
    tally.add_to(observer, layer, calls)


def count_levels(
    levels: np.ndarray,
    columns,
    calls: ObservedCalls,
    slice_bits: int,
    observer: Observer,
    layer: str,
) -> None:
    """Count the sums of `calls` into `observer` for `layer`, from each sign's unfolded DAC
    levels `levels` uint8 [2, flat rows, P] and the layer's `SparseColumns`."""
    if not len(calls.column):
        return
    shift = calls.slices * slice_bits
    tally = Tally.of(calls, observer)
    if kernels.backend() == "numpy":
        sums = levels_sums_numpy(
            levels, columns, calls.kernel_column, calls.sign, shift, slice_bits
        )
        tally.count_numpy(sums, calls)
    else:
        from xbarc.runtime import read_spread_kernels as compiled

        compiled.sampled_levels(
            np.ascontiguousarray(levels),
            columns.start,
            columns.rows,
            columns.cells,
            calls.kernel_column,
            calls.sign,
            shift,
            (1 << slice_bits) - 1,
            *tally.kernel_arguments(calls),
        )
    tally.add_to(observer, layer, calls)


def bitplane_sums_numpy(packed, columns, kernel_column, first_plane) -> np.ndarray:
    """Every sum of the entries, int64 [E, P], from the packed planes (the numpy twin's
    way: all of them, then the sample taken)."""
    sums = np.zeros((len(kernel_column), packed.shape[2]), dtype=np.int64)
    for e, (m, plane) in enumerate(zip(kernel_column.tolist(), first_plane.tolist(), strict=True)):
        if m < 0:
            continue
        s = columns.column_segment[m]
        first, last = columns.segment_word[s], columns.segment_word[s + 1]
        words = last - first
        for a in range(columns.slice_bits):
            bits = packed[plane + a, first:last]  # [words, P]
            for b in range(int(columns.cell_planes[m])):
                cells = columns.cells[columns.cell_start[m] + b * words + np.arange(words)]
                counts = np.bitwise_count(bits & cells[:, None]).astype(np.int64)
                sums[e] += counts.sum(axis=0) << (a + b)
    return sums


def levels_sums_numpy(levels, columns, kernel_column, sign, shift, slice_bits) -> np.ndarray:
    """Every sum of the entries, int64 [E, P], from the unfolded levels (numpy twin)."""
    sums = np.zeros((len(kernel_column), levels.shape[2]), dtype=np.int64)
    mask = (1 << slice_bits) - 1
    for e, m in enumerate(kernel_column.tolist()):
        if m < 0:
            continue
        cells = slice(columns.start[m], columns.start[m + 1])
        digits = (levels[sign[e], columns.rows[cells]].astype(np.int64) >> shift[e]) & mask
        sums[e] = columns.cells[cells].astype(np.int64) @ digits
    return sums


def shifted(sample: PatchSample, turn: int) -> PatchSample:
    """The sample as column `turn` of a batch sees it, for a batch of one column."""
    return PatchSample(sample.offsets + turn, sample.every, sample.run)
