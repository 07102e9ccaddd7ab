"""Bit-plane reads: exact integer sums of bit-serial reads as AND + popcount, converted while hot.

    pack_inputs(levels_in, columns, plane0, planes, packed, flags)   # once per sign and run
    bitplane_accumulate(packed, flags, columns, slice_bits, acc)     # acc += every read-out

With DAC digits of one bit (or a few) and cells of c bits, a read column's sum for input
bit plane j is sum_b 2^b popcount(X_j & C_b) over packed 64-bit words: X_j the plane's bits
of the rows the read drives (one word per 64 rows, per patch), C_b bit b of the column's
cell levels. The sum of a DAC slice of `slice_bits` planes adds its planes' sums times 2^a.
The result is today's integer sum exactly, so it passes through the same ADC conversion
and gives the same bits as `sparse_read_accumulate` and the integer GEMMs of `ReadOut`.

`pack_inputs` packs each distinct input segment of a layer (a group and its source rows)
once per layer run, from the unfolded uint8 DAC levels of one sign, into `packed` uint64
[plane, word, P] (patches contiguous, so the kernel's loops over patches vectorize: Zen 4
has VPOPCNTQ: `popcount` is LLVM's ctpop), and sets `flags` [plane,
word, run of CHUNK patches] where a word holds a set bit: a zero word of a run (the high
planes of most inputs) is skipped. The cells' planes are packed once per layer
(`BitplaneColumns`, built by `xbarc.runtime.bitplane.bitplane_columns`).

`bitplane_accumulate` converts each sum in the pass that makes it, as `adc.adc_accumulate`
does: code = clip(rint(float64(s) * levels / full_scale), 0, levels) in float64, then
acc[target] += factor x significance x full_scale x code (factor: the column's signed
significance). A column of full scale 0 adds factor x significance x s: a
lossless ADC, or the digital offset correction of offset encoding (a column of ones: the
input sums). The conversion is computed, not looked up: a code table per full scale
(one gather per sum) cost 0.6-0.9 ns a sum against 0.3 ns for the vectorized float64
division (Zen 4, 256 patches, 4 popcounts a sum: 0.3 ns without any conversion). Where
a column's every possible sum converts alike (`adc_reciprocals`, checked one by one), it
is a product with levels / full scale instead, and the faithful default's columns
(slices of one bit, at most two words) sum their codes x steps in float64 (exact below
2^53, checked): 10-50 % less time than the integer division on the digits fixtures.
Those columns of one word and cell planes 0 and 1 run four at a time per target and word
(`ColumnQuads`): one load of the input word and one update of the totals for four
conversions; where the four's cells lie on the word's first 32 rows and every sum they
can make converts alike in float32 (`narrow_quads`, checked sum by sum, and their codes x
steps below 2^24), the sums, conversions and their total are float32 on 32-bit words, 16
patches a 512-bit vector where float64 takes 8 (the digits MobileNet's pointwise layers:
0.29 ns a conversion on one thread before, 0.19-0.21 after). `bitplane_finish` writes a
whole layer's output itself: each task's totals dequantized as `fused.dequantize_items`
does it (plus the float32 bias), into the image items first, with no accumulator. The
numpy twins (`*_numpy`) compute the same with `np.bitwise_count`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xbarc.runtime.kernels import (
    PARALLEL_WORK,
    NumbaKernel,
    backend,
    check_accumulator,
    import_numba,
    numba_kernel,
    prange,
    use_threads,
)
from xbarc.runtime.kernels.adc import adc_accumulate_numpy
from xbarc.runtime.kernels.fused import dequantize_items

# Patches per run: the unit of the zero skip, of a task's accumulators and of the packed
# input a task reads.
CHUNK = 256
WORD = 64


@dataclass(frozen=True)
class BitplaneColumns:
    """A layer's read columns as bit planes of their cells, against its input segments.

    Segment s drives the flat rows `segment_rows[segment_start[s]:segment_start[s+1]]` of
    the unfolded input [groups x rows, P], packed into words `segment_word[s]` to
    `segment_word[s+1]` (64 rows a word, the last one padded with zero bits). Column m
    reads segment `column_segment[m]`: bit b of its cells, word w, is
    `cells[cell_start[m] + b * words + w]` for b < `cell_planes[m]`; its converted sums
    are converted over `full_scale[m]` (0: not converted) and go to output row
    `target[m]` times `factor[m]` (the signed significance of its slice) times the full
    scale where converted. `order[runs[k]:runs[k+1]]` are the columns of one target.
    The kernel reads the cells as terms (`cell_terms`): column m's are
    `term_start[m]:term_start[m+1]`, each a packed input word `term_word` (of all
    segments' words) with the cells' planes b and b + 1 on it (`term_low`, `term_high`,
    not both zero) and b (`term_shift`)."""

    segment_start: np.ndarray  # int64 [S + 1]
    segment_rows: np.ndarray  # int64 [rows of all segments]
    segment_word: np.ndarray  # int64 [S + 1]
    column_segment: np.ndarray  # int64 [M]
    cell_start: np.ndarray  # int64 [M]
    cell_planes: np.ndarray  # int64 [M]
    cells: np.ndarray  # uint64 [cell words]
    factor: np.ndarray  # int64 [M]
    full_scale: np.ndarray  # int64 [M]
    target: np.ndarray  # int64 [M]
    order: np.ndarray  # int64 [M]: columns sorted by target (stable)
    runs: np.ndarray  # int64 [targets + 1]
    row_count: int  # flat input rows the segments reach (largest + 1)
    target_count: int  # outputs the columns reach (largest target + 1)
    term_start: np.ndarray  # int64 [M + 1]
    term_word: np.ndarray  # int64 [terms]
    term_low: np.ndarray  # uint64 [terms]
    term_high: np.ndarray  # uint64 [terms]
    term_shift: np.ndarray  # uint64 [terms]
    slice_bits: int  # input bit planes a DAC slice sums
    levels: int  # ADC levels (0: lossless)
    magic: np.ndarray  # int64 [M]: the integer conversion's multiplier (0: by division)
    exponent: np.ndarray  # int64 [M]: ... and shift (`adc_divisors`)
    reciprocal: np.ndarray  # float64 [M]: levels / full scale where a product by it
    # rounds as the division for every sum of the column (0: not; `adc_reciprocals`)
    float_total: float  # the most one slice of significance 1 adds to a target, in codes
    quads: ColumnQuads  # the faithful default's columns four at a time (`column_quads`)

    @property
    def words(self) -> int:
        return int(self.segment_word[-1])

    @property
    def word_segment(self) -> np.ndarray:
        """The segment of each packed word, int64 [words]."""
        return np.repeat(
            np.arange(len(self.segment_word) - 1, dtype=np.int64), np.diff(self.segment_word)
        )

    @classmethod
    def of(
        cls,
        segments: list[np.ndarray],
        column_segment: np.ndarray,
        cell_planes: np.ndarray,
        cells: np.ndarray,
        factor: np.ndarray,
        full_scale: np.ndarray,
        target: np.ndarray,
        slice_bits: int,
        levels: int,
    ) -> BitplaneColumns:
        """From the segments' flat rows and the columns' packed cell planes, one after the
        other (`cells` uint64: column m's [cell_planes[m], words of its segment] row-major),
        for DAC slices of `slice_bits` planes and `levels` ADC levels."""
        lengths = np.array([len(rows) for rows in segments], dtype=np.int64)
        segment_start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        segment_word = np.concatenate([[0], np.cumsum(-(-lengths // WORD))]).astype(np.int64)
        column_segment = np.ascontiguousarray(column_segment, dtype=np.int64)
        cell_planes = np.ascontiguousarray(cell_planes, dtype=np.int64)
        words = segment_word[column_segment + 1] - segment_word[column_segment]
        sizes = cell_planes * words
        target = np.ascontiguousarray(target, dtype=np.int64)
        order = np.argsort(target, kind="stable").astype(np.int64)
        runs = np.flatnonzero(np.diff(target[order], prepend=-1, append=-1)).astype(np.int64)
        if not len(target):
            runs = np.zeros(1, dtype=np.int64)
        rows = np.concatenate(segments).astype(np.int64) if segments else np.zeros(0, np.int64)
        cell_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        flat = np.ascontiguousarray(cells, dtype=np.uint64)
        if len(flat) != sizes.sum():
            raise ValueError(f"BitplaneColumns: {len(flat)} cell words for {sizes.sum()}")
        terms = cell_terms(segment_word, column_segment, cell_start, cell_planes, flat)
        full_scale = np.ascontiguousarray(full_scale, dtype=np.int64)
        magic, exponent = adc_divisors(terms[0], terms[4], full_scale, slice_bits, levels)
        largest = largest_sums(terms[0], terms[4], slice_bits)
        reciprocal = adc_reciprocals(largest, full_scale, levels)
        factor = np.ascontiguousarray(factor, dtype=np.int64)
        # per target, sum of |factor| x full scale x levels over its converted columns
        spans = np.abs(factor).astype(np.float64) * full_scale * levels
        float_total = float(np.bincount(target, spans).max(initial=0)) if len(target) else 0.0
        quads = column_quads(
            order, runs, terms, factor * full_scale, reciprocal, slice_bits, levels
        )
        return cls(
            segment_start,
            rows,
            segment_word,
            column_segment,
            cell_start[: len(column_segment)],
            cell_planes,
            flat,
            factor,
            full_scale,
            target,
            order,
            runs,
            int(rows.max()) + 1 if len(rows) else 0,
            int(target.max()) + 1 if len(target) else 0,
            *terms,
            int(slice_bits),
            int(levels),
            magic,
            exponent,
            reciprocal,
            float_total,
            quads,
        )


@dataclass(frozen=True)
class ColumnQuads:
    """Columns of the faithful default's loop (`bitplane_accumulate_numba`: one DAC bit a
    slice, one term of cell planes 0 and 1 on one packed word, converted by the product
    with `reciprocal`) in fours on one target and word: the kernel loads each input word
    once for the four and adds their four codes x steps to its float64 totals at once,
    where one column at a time loads the word and the totals four times. Quad g reads
    word `word[g]` with masks `low[g]`, `high[g]` (uint64 [Q, 4]), converts by
    `ratio[g]` and adds code x `step[g]` (factor x full scale, float64) x the slice's
    significance; a column that pads a quad has masks, ratio and step 0 (it adds 0).
    `clips[g]`: whether a code of the quad can exceed the ADC's levels (then clipped).
    Quads `start[k]:start[k+1]` are those of target run k (`BitplaneColumns.runs`);
    `member[m]`: column m is in a quad (the per-column loop skips it)."""

    start: np.ndarray  # int64 [targets + 1]
    word: np.ndarray  # int64 [Q]
    low: np.ndarray  # uint64 [Q, 4]
    high: np.ndarray  # uint64 [Q, 4]
    ratio: np.ndarray  # float64 [Q, 4]
    step: np.ndarray  # float64 [Q, 4]
    clips: np.ndarray  # uint8 [Q]
    member: np.ndarray  # uint8 [M]
    narrow: np.ndarray  # uint8 [Q]: converted in float32 (`narrow_quads`)
    ratio32: np.ndarray  # float32 [Q, 4]: the ratios in float32, where narrow
    step32: np.ndarray  # float32 [Q, 4]: the steps in float32, where narrow

    def none(self) -> ColumnQuads:
        """No quads: every column on its own (when the float64 totals would be inexact)."""
        return ColumnQuads(
            np.zeros_like(self.start),
            self.word[:0],
            self.low[:0],
            self.high[:0],
            self.ratio[:0],
            self.step[:0],
            self.clips[:0],
            np.zeros_like(self.member),
            self.narrow[:0],
            self.ratio32[:0],
            self.step32[:0],
        )


# A target's last columns on a word form a quad of their own from this many (padded to
# four); fewer take the per-column loop (a padded column costs nearly a column's work).
QUAD_LEAST = 3


def column_quads(
    order: np.ndarray,
    runs: np.ndarray,
    terms: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    step: np.ndarray,
    reciprocal: np.ndarray,
    slice_bits: int,
    levels: int,
) -> ColumnQuads:
    """The columns of each target (run k of `order`) that the faithful default's loop
    converts (one DAC bit a slice, a single term on cell planes 0 and 1, a reciprocal),
    grouped by their word in fours (`ColumnQuads`); `step` int64 [M]: factor x full
    scale."""
    term_start, term_word, term_low, term_high, term_shift = terms
    count = len(term_start) - 1
    one_term = np.diff(term_start) == 1
    first = np.minimum(term_start[:-1], max(len(term_word) - 1, 0))
    eligible = one_term & (reciprocal > 0) & (slice_bits == 1)
    if len(term_word):
        eligible &= term_shift[first] == 0
    else:
        eligible[:] = False
    quads: list[np.ndarray] = []
    start = [0]
    for k in range(len(runs) - 1):
        chosen = [m for m in order[runs[k] : runs[k + 1]] if eligible[m]]
        words = term_word[first[chosen]] if chosen else np.zeros(0, np.int64)
        for word in np.unique(words):
            on_word = np.asarray(chosen)[words == word]
            for at in range(0, len(on_word), 4):
                four = on_word[at : at + 4]
                if len(four) >= QUAD_LEAST:
                    quads.append(np.concatenate([four, np.full(4 - len(four), -1)]))
        start.append(len(quads))
    members = np.array(quads, dtype=np.int64).reshape(-1, 4)
    real = members >= 0
    at = first[np.maximum(members, 0)]
    low = np.where(real, term_low[at] if len(term_low) else 0, 0).astype(np.uint64)
    high = np.where(real, term_high[at] if len(term_high) else 0, 0).astype(np.uint64)
    ratio = np.where(real, reciprocal[np.maximum(members, 0)], 0.0)
    largest = np.bitwise_count(low).astype(np.int64) + 2 * np.bitwise_count(high)
    member = np.zeros(count, dtype=np.uint8)
    member[members[real]] = 1
    steps = np.where(real, step[np.maximum(members, 0)], 0).astype(np.float64)
    narrow, ratio32 = narrow_quads(low, high, ratio, largest, steps, levels)
    return ColumnQuads(
        np.array(start, dtype=np.int64),
        np.array([term_word[first[row[0]]] for row in members], dtype=np.int64),
        low,
        high,
        ratio,
        steps,
        (np.rint(largest * ratio) > levels).any(axis=1).astype(np.uint8),
        member,
        narrow,
        ratio32,
        steps.astype(np.float32),
    )


def narrow_quads(
    low: np.ndarray,
    high: np.ndarray,
    ratio: np.ndarray,
    largest: np.ndarray,
    step: np.ndarray,
    levels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Which quads the kernel converts in float32, 16 patches a vector where float64 takes
    8: those whose cells lie on the word's first 32 rows (the sums are popcounts of 32-bit
    words), whose every sum s up to the column's `largest` converts alike
    (rint(float32(s) x float32(ratio)) equals rint(float64(s) x ratio), clipped at the
    levels: checked, each one) and whose four codes x steps (factor x full scale) add up
    exactly in float32 (below 2^24). Returns (narrow uint8 [Q], float32 ratios [Q, 4])."""
    ratio32 = ratio.astype(np.float32)
    narrow = ((low | high) >> np.uint64(32) == 0).all(axis=1)
    top = np.float64(levels)
    codes = np.minimum(np.rint(largest * ratio), top)
    narrow &= (np.abs(step) * codes).sum(axis=1) < 2**24
    for value in np.unique(ratio[narrow]):
        chosen = narrow[:, None] & (ratio == value)
        sums = np.arange(int(largest[chosen].max(initial=0)) + 1)
        wide = np.minimum(np.rint(sums.astype(np.float64) * value), top)
        single = np.minimum(np.rint(sums.astype(np.float32) * np.float32(value)), np.float32(top))
        differ = np.flatnonzero(wide != single)
        first = differ[0] if len(differ) else len(sums)  # the first sum that differs
        narrow &= ~(chosen & (largest >= first)).any(axis=1)
    return narrow.astype(np.uint8), ratio32


def largest_sums(term_start: np.ndarray, term_shift: np.ndarray, slice_bits: int) -> np.ndarray:
    """A bound on each column's sums of one DAC slice: a term adds at most (64 + 2 x 64)
    << (shift + a) over the slice's planes a. int64 [M]."""
    largest_term = (192 * (2**slice_bits - 1)) << term_shift.astype(np.int64)
    if not len(largest_term):
        return np.zeros(len(term_start) - 1, dtype=np.int64)
    return np.add.reduceat(largest_term, term_start[:-1]).astype(np.int64)


# Sums up to which `adc_reciprocals` checks a column's conversion, every one of them.
RECIPROCAL_SUMS = 1 << 16


def adc_reciprocals(largest: np.ndarray, full_scale: np.ndarray, levels: int) -> np.ndarray:
    """Per column, r = levels / full_scale (float64) where rint(s * r) equals the ADC's
    rint(s * levels / full_scale) (both float64, half to even) for every sum s from 0 to
    the column's `largest` (checked, each one): a multiplication where the conversion
    divides, the same codes. They differ only where s x levels / full_scale is an exact
    tie and r is not exact (full scale 22 at 255 levels: 11 x r rounds up). 0 where a
    column keeps the division (not converted, sums beyond RECIPROCAL_SUMS, or a
    difference)."""
    reciprocal = np.zeros(len(full_scale), dtype=np.float64)
    if not levels:
        return reciprocal
    checked = (full_scale > 0) & (largest <= RECIPROCAL_SUMS)
    for value in np.unique(full_scale[checked]):
        chosen = checked & (full_scale == value)
        sums = np.arange(int(largest[chosen].max()) + 1, dtype=np.float64)
        ratio = np.float64(levels) / np.float64(value)
        differ = np.flatnonzero(np.rint(sums * levels / value) != np.rint(sums * ratio))
        first = differ[0] if len(differ) else len(sums)  # the first sum that differs
        reciprocal[chosen & (largest < first)] = ratio
    return reciprocal


def adc_divisors(
    term_start: np.ndarray,
    term_shift: np.ndarray,
    full_scale: np.ndarray,
    slice_bits: int,
    levels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the conversion rint(s * levels / full_scale) as integers where that is
    exact: with n = 2 s levels + full_scale and d = 2 full_scale, rint (half to even) is
    floor(n / d), less 1 at an odd tie (n a multiple of d); floor(n / d) = (n * magic) >>
    exponent for every n up to the column's largest, magic = ceil(2^exponent / d) and
    2^exponent > (largest n) x d. Returns (magic, exponent), magic 0 where a column keeps
    the float64 division (not converted, or sums too large for int64)."""
    count = len(full_scale)
    magic = np.zeros(count, dtype=np.int64)
    exponent = np.zeros(count, dtype=np.int64)
    if not count or not levels:
        return magic, exponent
    largest = largest_sums(term_start, term_shift, slice_bits)
    most = largest * (2 * levels) + full_scale
    divisor = 2 * full_scale
    exact = (full_scale > 0) & (most < 2**30) & (divisor < 2**30)
    product = np.where(exact, most * divisor, 0)
    for bit in range(63):  # exponent = bit length of product
        exponent += (product >> bit) > 0
    magic = np.where(exact, ((np.int64(1) << exponent) + divisor - 1) // np.maximum(divisor, 1), 0)
    magic[most > (2**62) // np.maximum(magic, 1)] = 0
    return magic.astype(np.int64), exponent


def cell_terms(
    segment_word: np.ndarray,
    column_segment: np.ndarray,
    cell_start: np.ndarray,
    cell_planes: np.ndarray,
    cells: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The columns' cells as the kernel reads them: per column, per pair of cell planes
    (b, b + 1) and word w of its segment where either plane has a set bit, the term (the
    segment's word w of all words, plane b's word, plane b + 1's word or 0, b). Returns
    (term_start [M + 1], term_word, term_low, term_high, term_shift)."""
    words = segment_word[column_segment + 1] - segment_word[column_segment]
    pairs = (cell_planes + 1) // 2
    counts = pairs * words
    column = np.repeat(np.arange(len(column_segment)), counts)
    local = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    pair, word = local // words[column], local % words[column]
    at = cell_start[column] + 2 * pair * words[column] + word
    low = cells[at] if len(at) else np.zeros(0, np.uint64)
    has_high = 2 * pair + 1 < cell_planes[column]
    high = np.where(has_high, cells[np.where(has_high, at + words[column], 0)], np.uint64(0))
    kept = (low | high) != 0
    per_column = np.bincount(column[kept], minlength=len(column_segment))
    return (
        np.concatenate([[0], np.cumsum(per_column)]).astype(np.int64),
        (segment_word[column_segment[column]] + word)[kept].astype(np.int64),
        low[kept].astype(np.uint64),
        high[kept].astype(np.uint64),
        (2 * pair[kept]).astype(np.uint64),
    )


def pack_bits(levels: np.ndarray, planes: int) -> np.ndarray:
    """Bit planes of non-negative integers [n, ...] packed along the first axis: uint64
    [planes, ceil(n / 64), ...], bit i of word w of plane b = bit b of levels[64 w + i]."""
    levels = np.asarray(levels, dtype=np.uint64)
    count = levels.shape[0]
    words = -(-count // WORD)
    padded = np.zeros((words * WORD, *levels.shape[1:]), dtype=np.uint64)
    padded[:count] = levels
    padded = padded.reshape(words, WORD, *levels.shape[1:])
    place = (np.arange(WORD, dtype=np.uint64)).reshape((1, WORD) + (1,) * (levels.ndim - 1))
    out = np.empty((planes, words, *levels.shape[1:]), dtype=np.uint64)
    for b in range(planes):
        bits = (padded >> np.uint64(b)) & np.uint64(1)
        out[b] = np.bitwise_or.reduce(bits << place, axis=1)
    return out


def runs_of(patches: int) -> int:
    return -(-patches // CHUNK)


def pack_inputs(
    levels_in: np.ndarray,
    columns: BitplaneColumns,
    plane0: int,
    planes: int,
    packed: np.ndarray,
    flags: np.ndarray,
) -> None:
    """Pack bits 0 to `planes` - 1 of `levels_in` uint8 [rows, P] (one sign's unfolded DAC
    levels, groups flattened into rows) for every segment of `columns` into planes
    `plane0`... of `packed` uint64 [planes, words, P], and set `flags` uint8 [planes,
    words, runs of CHUNK patches] to whether each word holds a set bit in the run."""
    _check_pack(levels_in, columns, plane0, planes, packed, flags)
    if backend() == "numpy":
        pack_inputs_numpy(levels_in, columns, plane0, planes, packed, flags)
        return
    use_threads(packed[0].size * planes)
    pack_inputs_numba(
        levels_in,
        columns.segment_start,
        columns.segment_rows,
        columns.segment_word,
        columns.word_segment,
        int(plane0),
        int(planes),
        CHUNK,
        packed,
        flags,
    )


def pack_inputs_numpy(levels_in, columns, plane0, planes, packed, flags) -> None:
    _check_pack(levels_in, columns, plane0, planes, packed, flags)
    patches = levels_in.shape[1]
    runs = runs_of(patches)
    for s in range(len(columns.segment_word) - 1):
        rows = columns.segment_rows[columns.segment_start[s] : columns.segment_start[s + 1]]
        words = slice(columns.segment_word[s], columns.segment_word[s + 1])
        packed[plane0 : plane0 + planes, words] = pack_bits(levels_in[rows], planes)
    padded = np.zeros((planes, columns.words, runs * CHUNK), dtype=np.uint64)
    padded[..., :patches] = packed[plane0 : plane0 + planes]
    reduced = np.bitwise_or.reduce(padded.reshape(planes, columns.words, runs, CHUNK), axis=3)
    flags[plane0 : plane0 + planes] = reduced != 0


def _check_pack(levels_in, columns, plane0, planes, packed, flags) -> None:
    if levels_in.dtype != np.uint8 or levels_in.ndim != 2 or not levels_in.flags.c_contiguous:
        raise ValueError(
            f"pack_inputs: levels are {levels_in.dtype} {levels_in.shape}; "
            "expected C-contiguous uint8 [rows, P]"
        )
    patches = levels_in.shape[1]
    if (
        packed.dtype != np.uint64
        or packed.ndim != 3
        or packed.shape[1:] != (columns.words, patches)
        or not packed.flags.c_contiguous
    ):
        raise ValueError(
            f"pack_inputs: packed is {packed.dtype} {packed.shape}; expected C-contiguous "
            f"uint64 (planes, {columns.words}, {patches})"
        )
    if flags.dtype != np.uint8 or flags.shape != (
        packed.shape[0],
        columns.words,
        runs_of(patches),
    ):
        raise ValueError(f"pack_inputs: flags are {flags.dtype} {flags.shape}")
    if not (plane0 >= 0 and 1 <= planes <= 8 and plane0 + planes <= packed.shape[0]):
        raise ValueError(f"pack_inputs: planes {plane0} to {plane0 + planes - 1}")
    if columns.row_count > levels_in.shape[0]:
        raise ValueError("pack_inputs: segments on rows beyond the levels' rows")


def bitplane_accumulate(
    packed: np.ndarray,
    flags: np.ndarray,
    columns: BitplaneColumns,
    slice_plane: np.ndarray,
    significance: np.ndarray,
    acc: np.ndarray,
) -> None:
    """acc += the read-out of every column of `columns` for every DAC slice q: its sum
    over the packed input planes slice_plane[q] + a (a < columns.slice_bits, bit weight
    2^a), converted over columns.levels ADC levels, times factor[m] x significance[q] (int64
    [slices] both: e.g. planes 0, 1, ..., 7 with significances 1, 2, ..., 128 for the
    1-bit slices of positive inputs, 8, ... with -1, ... for the negative ones; a sign
    without inputs is left out). `flags` (from `pack_inputs`) skips zero words; a sum
    that reads no set bit is 0 and converts to code 0, so it is skipped too."""
    _check_accumulate(packed, flags, columns, slice_plane, significance, acc)
    if backend() == "numpy":
        bitplane_accumulate_numpy(packed, flags, columns, slice_plane, significance, acc)
        return
    _run_kernel(packed, flags, columns, slice_plane, significance, acc, None)


def bitplane_finish(
    packed: np.ndarray,
    flags: np.ndarray,
    columns: BitplaneColumns,
    slice_plane: np.ndarray,
    significance: np.ndarray,
    unit: int,
    input_scale: float,
    column_scale: np.ndarray,
    out: np.ndarray,
    bias: np.ndarray | None = None,
) -> None:
    """`bitplane_accumulate` into a zero accumulator, then `fused.dequantize_items` of it
    into `out` (float32 [items, outputs, pixels] C-contiguous, the layer's image items
    first; `column_scale` float64 [outputs]), in one pass: each task converts its target's
    totals for its run of patches while they are in the cache and writes them dequantized
    (float32(float64(total) / unit x input_scale x column_scale[t]): the same operations,
    the same bits), with no accumulator filled, added to and read back. Outputs no column
    reaches are the dequantized zero. `bias` (float32 [outputs], optional): added to each
    output in float32 in the same pass, as the layer's bias after the dequantization."""
    items, count, pixels = out.shape
    patches = packed.shape[2]
    if (
        out.dtype != np.float32
        or not out.flags.c_contiguous
        or items * pixels != patches
        or column_scale.shape != (count,)
        or columns.target_count > count
        or not (bias is None or (bias.dtype == np.float32 and bias.shape == (count,)))
    ):
        raise ValueError(
            f"bitplane_finish: out {out.dtype} {out.shape}, column scales "
            f"{column_scale.shape} for {patches} patches and {columns.target_count} targets"
        )
    column_scale = np.ascontiguousarray(column_scale, dtype=np.float64)
    if backend() == "numpy":
        acc = np.zeros((count, patches), dtype=np.int64)
        bitplane_accumulate_numpy(packed, flags, columns, slice_plane, significance, acc)
        dequantize_items(acc, unit, input_scale, column_scale, out)
        if bias is not None:
            out += bias[None, :, None]
        return
    _check_accumulate(packed, flags, columns, slice_plane, significance, None)
    finish = finishing(columns.target, unit, input_scale, column_scale, out, bias)
    _run_kernel(packed, flags, columns, slice_plane, significance, None, finish)


def finishing(target, unit, input_scale, column_scale, out, bias) -> tuple:
    """The finishing arguments of a kernel that writes `out` dequantized (`bitplane_finish`,
    `depthwise.depthwise_finish`); first writes the outputs no `target` reaches: the
    dequantized zero, as `dequantize_items` makes it, plus the bias."""
    count = out.shape[1]
    reached = np.zeros(count, dtype=bool)
    reached[target] = True
    if not reached.all():
        zero = (np.float64(0) / unit * np.float64(input_scale) * column_scale).astype(np.float32)
        if bias is not None:
            zero += bias
        out[:, ~reached, :] = zero[~reached][None, :, None]
    added = np.zeros(count, np.float32) if bias is None else np.ascontiguousarray(bias)
    return (np.float64(unit), np.float64(input_scale), column_scale, out, bias is not None, added)


def _run_kernel(packed, flags, columns, slice_plane, significance, acc, finish) -> None:
    """`bitplane_accumulate_numba` into `acc` (int64, added to) or, with `finish` (unit,
    input scale, column scales, out), dequantized into `out` (`bitplane_finish`)."""
    reciprocal = columns.reciprocal
    quads = columns.quads
    if columns.float_total * float(np.abs(significance).sum()) >= 2**53:
        reciprocal = np.zeros_like(reciprocal)  # float64 totals would be inexact
        quads = quads.none()
    use_threads(PARALLEL_WORK)
    bitplane_accumulate_numba(
        packed,
        flags,
        columns.term_start,
        columns.term_word,
        columns.term_low,
        columns.term_high,
        columns.term_shift,
        columns.factor,
        columns.full_scale,
        columns.magic,
        columns.exponent,
        reciprocal,
        columns.levels,
        columns.order,
        columns.runs,
        columns.target,
        slice_plane,
        significance,
        columns.slice_bits,
        CHUNK,
        quads.start,
        quads.word,
        quads.low,
        quads.high,
        quads.ratio,
        quads.step,
        quads.clips,
        quads.member,
        quads.narrow,
        quads.ratio32,
        quads.step32,
        np.zeros((1, 1), dtype=np.int64) if acc is None else acc,
        finish is not None,
        *(finish if finish is not None else EMPTY_FINISH),
    )


# `bitplane_accumulate_numba`'s finishing arguments when it adds into an accumulator
EMPTY_FINISH = (
    np.float64(1),
    np.float64(1),
    np.zeros(1),
    np.zeros((1, 1, 1), np.float32),
    False,
    np.zeros(1, np.float32),
)


def slice_sums_numpy(
    packed: np.ndarray, columns: BitplaneColumns, chosen: np.ndarray, slice_bits: int, plane: int
) -> np.ndarray:
    """The sums int64 [len(chosen), P] of the columns `chosen` (all on one segment) for the
    DAC slice of packed planes `plane`..., from the packed planes (numpy)."""
    s = columns.column_segment[chosen[0]]
    first, last = columns.segment_word[s], columns.segment_word[s + 1]
    words = last - first
    sums = np.zeros((len(chosen), packed.shape[2]), dtype=np.int64)
    for a in range(slice_bits):
        bits = packed[plane + a, first:last]  # [words, P]
        for b in range(int(columns.cell_planes[chosen].max())):
            has = columns.cell_planes[chosen] > b
            at = columns.cell_start[chosen] + b * words
            for w in range(words):
                cells = np.where(has, columns.cells[np.where(has, at + w, 0)], np.uint64(0))
                counts = np.bitwise_count(bits[w][None, :] & cells[:, None])
                sums += counts.astype(np.int64) << (a + b)
    return sums


def bitplane_accumulate_numpy(packed, flags, columns, slice_plane, significance, acc) -> None:
    _check_accumulate(packed, flags, columns, slice_plane, significance, acc)
    slice_bits, levels = columns.slice_bits, columns.levels
    # a word whose flag is clear is not read (an absent sign's planes are never packed)
    read = np.repeat(flags != 0, CHUNK, axis=2)[..., : packed.shape[2]]
    packed = np.where(read, packed, np.uint64(0))
    for s in np.unique(columns.column_segment):
        chosen = np.flatnonzero(columns.column_segment == s)
        converted = columns.full_scale[chosen] > 0
        for q in range(len(significance)):
            sums = slice_sums_numpy(packed, columns, chosen, slice_bits, slice_plane[q])
            factor = columns.factor[chosen] * significance[q]
            for kept, adc_levels in ((converted, levels), (~converted, 0)):
                if kept.any():
                    adc_accumulate_numpy(
                        sums[kept],
                        columns.target[chosen][kept],
                        factor[kept],
                        columns.full_scale[chosen][kept],
                        adc_levels,
                        acc,
                    )


def _check_accumulate(packed, flags, columns, slice_plane, significance, acc) -> None:
    slice_bits = columns.slice_bits
    if packed.dtype != np.uint64 or packed.ndim != 3 or not packed.flags.c_contiguous:
        raise ValueError(f"bitplane_accumulate: packed is {packed.dtype} {packed.shape}")
    planes, words, patches = packed.shape
    if words != columns.words or flags.shape != (planes, words, runs_of(patches)):
        raise ValueError(
            f"bitplane_accumulate: packed {packed.shape} and flags {flags.shape} do not "
            f"fit {columns.words} words"
        )
    if (
        significance.dtype != np.int64
        or significance.ndim != 1
        or slice_plane.dtype != np.int64
        or slice_plane.shape != significance.shape
        or not 1 <= slice_bits <= 8
        or (
            len(slice_plane)
            and not 0 <= slice_plane.min() <= slice_plane.max() <= planes - slice_bits
        )
    ):
        raise ValueError(
            f"bitplane_accumulate: {len(significance)} slices of {slice_bits} bits over "
            f"{planes} planes"
        )
    if acc is None:  # `bitplane_finish`: no accumulator
        return
    check_accumulator("bitplane_accumulate", acc, patches)
    if columns.target_count > acc.shape[0]:
        raise ValueError("bitplane_accumulate: targets beyond the accumulator's rows")


# ---------------------------------------------------------------------------------------
# Numba kernels, compiled on first use


class Popcount(NumbaKernel):
    """popcount(x): the set bits of uint64 `x`, as LLVM's ctpop intrinsic in a kernel (one
    VPOPCNTQ for 8 patches on AVX-512; a SWAR popcount was recognised as ctpop in some
    loops and not in others, which then ran 3x slower), `int.bit_count` in Python."""

    def __init__(self) -> None:
        super().__init__(lambda x: int(x).bit_count(), {})

    def __call__(self, x: Any) -> Any:
        return np.uint64(int(x).bit_count())

    def compiled(self) -> Any:
        if self._compiled is None:
            import_numba()
            from numba.core import types
            from numba.extending import intrinsic

            @intrinsic
            def ctpop(typingctx, x):
                signature = types.uint64(types.uint64)
                return signature, lambda context, builder, sig, args: builder.ctpop(args[0])

            self._compiled = ctpop
        return self._compiled


popcount = Popcount()


class Popcount32(NumbaKernel):
    """popcount32(x): the set bits of uint32 `x` (LLVM's ctpop: VPOPCNTD, 16 lanes)."""

    def __init__(self) -> None:
        super().__init__(lambda x: int(x).bit_count(), {})

    def __call__(self, x: Any) -> Any:
        return np.uint32(int(x).bit_count())

    def compiled(self) -> Any:
        if self._compiled is None:
            import_numba()
            from numba.core import types
            from numba.extending import intrinsic

            @intrinsic
            def ctpop32(typingctx, x):
                signature = types.uint32(types.uint32)
                return signature, lambda context, builder, sig, args: builder.ctpop(args[0])

            self._compiled = ctpop32
        return self._compiled


popcount32 = Popcount32()


@numba_kernel(parallel=True)
def pack_inputs_numba(
    levels_in,
    segment_start,
    segment_rows,
    segment_word,
    word_segment,
    plane0,
    planes,
    chunk,
    packed,
    flags,
):
    """`pack_inputs` on checked arguments."""
    patches = levels_in.shape[1]
    words = packed.shape[1]
    source = levels_in.reshape(-1)
    dest = packed.reshape(-1)
    runs = (patches + chunk - 1) // chunk
    # One task per (word, run of patches): its 64 rows' levels over the run read from L1,
    # every loop over patches contiguous (it vectorizes). Eight rows at a time take 2.2x
    # less CPU than bit by bit (the digits ResNet's and LeNet's packing: 9.7 ms against
    # 21.2, one thread).
    for task in prange(words * runs):
        word = task // runs
        run = task % runs
        first = run * chunk
        length = min(first + chunk, patches) - first
        s = word_segment[word]
        low = segment_start[s] + (word - segment_word[s]) * 64
        high = min(low + 64, segment_start[s + 1])
        bits = np.zeros((8, chunk), dtype=np.uint64)
        whole = (high - low) // 8
        # Eight rows at a time: their levels side by side in a word (a byte each), the 8 x
        # 8 bit matrix transposed in place (byte j then holds bit j of the eight rows),
        # each byte put into its plane's word: a fifth of the operations of bit by bit.
        for group in range(whole):
            at = low + 8 * group
            r0 = np.uint64(segment_rows[at] * patches + first)
            r1 = np.uint64(segment_rows[at + 1] * patches + first)
            r2 = np.uint64(segment_rows[at + 2] * patches + first)
            r3 = np.uint64(segment_rows[at + 3] * patches + first)
            r4 = np.uint64(segment_rows[at + 4] * patches + first)
            r5 = np.uint64(segment_rows[at + 5] * patches + first)
            r6 = np.uint64(segment_rows[at + 6] * patches + first)
            r7 = np.uint64(segment_rows[at + 7] * patches + first)
            place = np.uint64(8 * group)
            for p in range(length):
                i = np.uint64(p)
                x = (
                    np.uint64(source[r0 + i])
                    | (np.uint64(source[r1 + i]) << np.uint64(8))
                    | (np.uint64(source[r2 + i]) << np.uint64(16))
                    | (np.uint64(source[r3 + i]) << np.uint64(24))
                    | (np.uint64(source[r4 + i]) << np.uint64(32))
                    | (np.uint64(source[r5 + i]) << np.uint64(40))
                    | (np.uint64(source[r6 + i]) << np.uint64(48))
                    | (np.uint64(source[r7 + i]) << np.uint64(56))
                )
                t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
                x = x ^ t ^ (t << np.uint64(7))
                t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
                x = x ^ t ^ (t << np.uint64(14))
                t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
                x = x ^ t ^ (t << np.uint64(28))
                byte = np.uint64(0xFF)
                bits[0, p] |= (x & byte) << place
                bits[1, p] |= ((x >> np.uint64(8)) & byte) << place
                bits[2, p] |= ((x >> np.uint64(16)) & byte) << place
                bits[3, p] |= ((x >> np.uint64(24)) & byte) << place
                bits[4, p] |= ((x >> np.uint64(32)) & byte) << place
                bits[5, p] |= ((x >> np.uint64(40)) & byte) << place
                bits[6, p] |= ((x >> np.uint64(48)) & byte) << place
                bits[7, p] |= (x >> np.uint64(56)) << place
        for i in range(8 * whole, high - low):  # the rows past the last eight, bit by bit
            line = np.uint64(segment_rows[low + i] * patches + first)
            place = np.uint64(i)
            for j in range(planes):
                shift = np.uint64(j)
                for p in range(length):
                    level = np.uint64(source[line + np.uint64(p)])
                    bits[j, p] |= ((level >> shift) & np.uint64(1)) << place
        for j in range(planes):
            into = np.uint64(((plane0 + j) * words + word) * patches + first)
            seen = np.uint64(0)
            for p in range(length):
                dest[into + np.uint64(p)] = bits[j, p]
                seen |= bits[j, p]
            flags[plane0 + j, word, run] = 1 if seen != 0 else 0


@numba_kernel(inline="always")
def narrow_quad(words32, length, low, high, ratio, step, top, clips, weight, floated):
    """floated[i] += weight x the four codes x steps of a narrow quad (`narrow_quads`) on
    the 32-bit input words words32[i], i < `length`: sums, conversions and their sum in
    float32 (exact: checked), 16 patches a vector where float64 takes 8."""
    mask = np.uint64(0xFFFFFFFF)
    low0, low1 = np.uint32(low[0] & mask), np.uint32(low[1] & mask)
    low2, low3 = np.uint32(low[2] & mask), np.uint32(low[3] & mask)
    high0, high1 = np.uint32(high[0] & mask), np.uint32(high[1] & mask)
    high2, high3 = np.uint32(high[2] & mask), np.uint32(high[3] & mask)
    r0, r1, r2, r3 = ratio[0], ratio[1], ratio[2], ratio[3]
    s0, s1, s2, s3 = step[0], step[1], step[2], step[3]
    if clips:
        for i in range(length):
            x = words32[i]
            c0 = min(np.rint(np.float32(narrow_sum(x, low0, high0)) * r0), top)
            c1 = min(np.rint(np.float32(narrow_sum(x, low1, high1)) * r1), top)
            c2 = min(np.rint(np.float32(narrow_sum(x, low2, high2)) * r2), top)
            c3 = min(np.rint(np.float32(narrow_sum(x, low3, high3)) * r3), top)
            floated[i] += np.float64((s0 * c0 + s1 * c1) + (s2 * c2 + s3 * c3)) * weight
        return
    for i in range(length):
        x = words32[i]
        c0 = np.rint(np.float32(narrow_sum(x, low0, high0)) * r0)
        c1 = np.rint(np.float32(narrow_sum(x, low1, high1)) * r1)
        c2 = np.rint(np.float32(narrow_sum(x, low2, high2)) * r2)
        c3 = np.rint(np.float32(narrow_sum(x, low3, high3)) * r3)
        floated[i] += np.float64((s0 * c0 + s1 * c1) + (s2 * c2 + s3 * c3)) * weight


@numba_kernel(inline="always")
def narrow_sum(x, low, high):
    """A column's sum on the 32-bit input word `x` with cell planes `low`, `high` (int32)."""
    return np.int32(popcount32(x & low) + (popcount32(x & high) << np.uint32(1)))


@numba_kernel(inline="always")
def quad_sum(x, low, high):
    """A column's sum on input word `x` with cell planes 0 and 1 `low`, `high` (int64)."""
    return np.int64(popcount(x & low) + (popcount(x & high) << np.uint64(1)))


@numba_kernel(parallel=True)
def bitplane_accumulate_numba(
    packed,
    flags,
    term_start,
    term_word,
    term_low,
    term_high,
    term_shift,
    factor,
    full_scale,
    magic_of,
    exponent_of,
    reciprocal_of,
    levels,
    order,
    runs,
    target,
    slice_plane,
    significance,
    slice_bits,
    chunk,
    quad_start,
    quad_word,
    quad_low,
    quad_high,
    quad_ratio,
    quad_step,
    quad_clips,
    quad_member,
    quad_narrow,
    quad_ratio32,
    quad_step32,
    acc,
    finish,
    unit,
    input_scale,
    column_scale,
    out,
    has_bias,
    bias,
):
    """`bitplane_accumulate` on checked arguments; the quad_* arrays: `ColumnQuads`.
    With `finish`, `bitplane_finish`: the totals dequantized into `out` (`acc` unused)."""
    top = np.float64(levels)
    planes, words_total, patches = packed.shape
    source = packed.reshape(-1)
    dest = acc.reshape(-1)
    slices = len(significance)
    chunks = flags.shape[2]
    targets = len(runs) - 1
    longest = 0  # the most terms (word, pair of cell planes, input plane) of a slice's sum
    for m in range(len(term_start) - 1):
        longest = max(longest, (term_start[m + 1] - term_start[m]) * slice_bits)
    one = np.uint64(1)
    low_half = np.uint64(0xFFFFFFFF)
    # One task per (run of patches, target), as `sparse_read_accumulate_numba`: the
    # columns of one target stay in one task (no races on `acc`), their converted sums
    # gathered in the task's own buffer and added to `acc` once; consecutive tasks (one
    # thread's) take the same run of patches, whose packed planes stay in the cache.
    # A slice's sum adds terms (popcount(x & low) + 2 popcount(x & high)) << shift, x a
    # word of an input plane, low and high two planes of the column's cells on it (one
    # load for both), over the non-zero words; two terms at a time in one pass over the
    # patches. Up to two terms (128 rows of 2-bit cells, 1-bit digits: the faithful
    # default) the same pass converts the sums, else a pass over their buffer does.
    for task in prange(targets * chunks):
        k = task % targets
        run = task // targets
        first = run * chunk
        length = min(first + chunk, patches) - first
        sums = np.zeros(chunk, dtype=np.int64)
        total = np.zeros(chunk, dtype=np.int64)
        lines = np.empty(longest + 2, dtype=np.uint64)
        lows = np.zeros(longest + 2, dtype=np.uint64)
        highs = np.zeros(longest + 2, dtype=np.uint64)
        shifts = np.zeros(longest + 2, dtype=np.uint64)
        touched = False
        floated = np.zeros(chunk, dtype=np.float64)  # codes x steps by reciprocal, exact
        any_floated = False
        words32 = np.empty(chunk, dtype=np.uint32)
        for q in range(slices):
            # four columns of the faithful default's loop on one word at a time: each
            # input word loaded once for the four, their codes x steps added to the totals
            # at once (integers below 2^53: exact in any order, the same bits)
            j = slice_plane[q]
            weight = np.float64(significance[q])
            narrowed = -1  # the word whose low halves `words32` holds
            for g in range(quad_start[k], quad_start[k + 1]):
                word = quad_word[g]
                if flags[j, word, run] == 0:
                    continue
                touched = True
                any_floated = True
                line = np.uint64((j * words_total + word) * patches + first)
                if quad_narrow[g]:
                    if narrowed != word:  # 32-bit words: 16 patches a vector
                        for i in range(length):
                            words32[i] = np.uint32(source[line + np.uint64(i)] & low_half)
                        narrowed = word
                    narrow_quad(
                        words32,
                        length,
                        quad_low[g],
                        quad_high[g],
                        quad_ratio32[g],
                        quad_step32[g],
                        np.float32(top),
                        quad_clips[g] != 0,
                        weight,
                        floated,
                    )
                    continue
                low0, low1 = quad_low[g, 0], quad_low[g, 1]
                low2, low3 = quad_low[g, 2], quad_low[g, 3]
                high0, high1 = quad_high[g, 0], quad_high[g, 1]
                high2, high3 = quad_high[g, 2], quad_high[g, 3]
                r0, r1 = quad_ratio[g, 0], quad_ratio[g, 1]
                r2, r3 = quad_ratio[g, 2], quad_ratio[g, 3]
                s0, s1 = quad_step[g, 0] * weight, quad_step[g, 1] * weight
                s2, s3 = quad_step[g, 2] * weight, quad_step[g, 3] * weight
                if quad_clips[g] == 0:  # no code can exceed the levels: no clip
                    for i in range(length):
                        x = source[line + np.uint64(i)]
                        c0 = np.rint(np.float64(quad_sum(x, low0, high0)) * r0)
                        c1 = np.rint(np.float64(quad_sum(x, low1, high1)) * r1)
                        c2 = np.rint(np.float64(quad_sum(x, low2, high2)) * r2)
                        c3 = np.rint(np.float64(quad_sum(x, low3, high3)) * r3)
                        floated[i] += (s0 * c0 + s1 * c1) + (s2 * c2 + s3 * c3)
                    continue
                for i in range(length):
                    x = source[line + np.uint64(i)]
                    c0 = min(np.rint(np.float64(quad_sum(x, low0, high0)) * r0), top)
                    c1 = min(np.rint(np.float64(quad_sum(x, low1, high1)) * r1), top)
                    c2 = min(np.rint(np.float64(quad_sum(x, low2, high2)) * r2), top)
                    c3 = min(np.rint(np.float64(quad_sum(x, low3, high3)) * r3), top)
                    floated[i] += (s0 * c0 + s1 * c1) + (s2 * c2 + s3 * c3)
        for index in range(runs[k], runs[k + 1]):
            m = order[index]
            if quad_member[m]:
                continue
            # the conversion as integers where exact (`adc_divisors`): 10 % faster than
            # the float64 division, the same bits
            fs = full_scale[m]
            divisor = 2 * fs
            twice_levels = np.int64(2 * levels)
            magic = magic_of[m]
            exponent = exponent_of[m]
            first_term = term_start[m]
            count = term_start[m + 1] - first_term
            ratio = reciprocal_of[m]
            if slice_bits == 1 and count <= 2 and ratio > 0:
                # the faithful default's columns (128 rows of 2-bit cells: two terms), read
                # without staging their terms, converted by a product with the reciprocal
                # (`adc_reciprocals`: the same codes; 15-45 % faster than the integer
                # division by `magic`), the codes times their steps summed in float64
                # (exact: integers below 2^53, checked by the caller)
                second = first_term + count - 1
                word0, word1 = term_word[first_term], term_word[second]
                shift0, shift1 = term_shift[first_term], term_shift[second]
                for q in range(slices):
                    j = slice_plane[q]
                    on0 = flags[j, word0, run] != 0
                    on1 = count == 2 and flags[j, word1, run] != 0
                    if not (on0 or on1):
                        continue
                    touched = True
                    low0 = term_low[first_term] if on0 else np.uint64(0)
                    high0 = term_high[first_term] if on0 else np.uint64(0)
                    low1 = term_low[second] if on1 else np.uint64(0)
                    high1 = term_high[second] if on1 else np.uint64(0)
                    line0 = np.uint64((j * words_total + word0) * patches + first)
                    line1 = np.uint64((j * words_total + word1) * patches + first)
                    step = np.float64(factor[m] * significance[q] * fs)
                    any_floated = True
                    if not (on0 and on1):
                        # one word (reads of at most 64 rows, or the other word's bits all
                        # zero in this run): half the loads and popcounts
                        line = line0 if on0 else line1
                        low, high = low0 | low1, high0 | high1
                        shift = shift0 if on0 else shift1
                        if shift == 0:  # 2-bit cells: one pair of planes a word
                            for i in range(length):
                                x = source[line + np.uint64(i)]
                                sum1 = popcount(x & low) + (popcount(x & high) << one)
                                code = min(np.rint(np.float64(np.int64(sum1)) * ratio), top)
                                floated[i] += step * code
                            continue
                        for i in range(length):
                            x = source[line + np.uint64(i)]
                            sum1 = (popcount(x & low) + (popcount(x & high) << one)) << shift
                            code = min(np.rint(np.float64(np.int64(sum1)) * ratio), top)
                            floated[i] += step * code
                        continue
                    if shift0 == 0 and shift1 == 0:  # 2-bit cells: one pair of planes a word
                        for i in range(length):
                            at = np.uint64(i)
                            x0 = source[line0 + at]
                            x1 = source[line1 + at]
                            ones = popcount(x0 & low0) + popcount(x1 & low1)
                            twos = popcount(x0 & high0) + popcount(x1 & high1)
                            sum2 = ones + (twos << one)
                            code = min(np.rint(np.float64(np.int64(sum2)) * ratio), top)
                            floated[i] += step * code
                        continue
                    for i in range(length):
                        at = np.uint64(i)
                        x0 = source[line0 + at]
                        x1 = source[line1 + at]
                        sum2 = ((popcount(x0 & low0) + (popcount(x0 & high0) << one)) << shift0) + (
                            (popcount(x1 & low1) + (popcount(x1 & high1) << one)) << shift1
                        )
                        code = min(np.rint(np.float64(np.int64(sum2)) * ratio), top)
                        floated[i] += step * code
                continue
            for q in range(slices):
                terms = 0
                for a in range(slice_bits):
                    j = slice_plane[q] + a
                    for t in range(term_start[m], term_start[m + 1]):
                        word = term_word[t]
                        if flags[j, word, run] != 0:
                            lines[terms] = np.uint64((j * words_total + word) * patches + first)
                            lows[terms] = term_low[t]
                            highs[terms] = term_high[t]
                            shifts[terms] = term_shift[t] + np.uint64(a)
                            terms += 1
                if terms == 0:
                    continue  # every sum is 0, so is every code
                touched = True
                if terms % 2:  # pad to two: masks 0
                    lines[terms] = lines[0]
                    lows[terms] = 0
                    highs[terms] = 0
                    shifts[terms] = 0
                step = factor[m] * significance[q]
                scale = np.float64(full_scale[m])
                if scale > 0:
                    step *= full_scale[m]
                if terms <= 2 and magic > 0:  # the common case, in one pass
                    line0, low0, high0, shift0 = lines[0], lows[0], highs[0], shifts[0]
                    line1, low1, high1, shift1 = lines[1], lows[1], highs[1], shifts[1]
                    for i in range(length):
                        at = np.uint64(i)
                        x0 = source[line0 + at]
                        x1 = source[line1 + at]
                        sum2 = ((popcount(x0 & low0) + (popcount(x0 & high0) << one)) << shift0) + (
                            (popcount(x1 & low1) + (popcount(x1 & high1) << one)) << shift1
                        )
                        # rint(s * levels / full scale), half to even, by integers
                        numerator = np.int64(sum2) * twice_levels + fs
                        quotient = (numerator * magic) >> exponent
                        tie = np.int64(numerator - quotient * divisor == 0)
                        code = quotient - (tie & quotient & 1)
                        total[i] += step * min(code, levels)
                    continue
                if terms <= 2 and scale > 0:
                    line0, low0, high0, shift0 = lines[0], lows[0], highs[0], shifts[0]
                    line1, low1, high1, shift1 = lines[1], lows[1], highs[1], shifts[1]
                    for i in range(length):
                        at = np.uint64(i)
                        x0 = source[line0 + at]
                        x1 = source[line1 + at]
                        sum2 = ((popcount(x0 & low0) + (popcount(x0 & high0) << one)) << shift0) + (
                            (popcount(x1 & low1) + (popcount(x1 & high1) << one)) << shift1
                        )
                        code = np.rint(np.float64(np.int64(sum2)) * top / scale)
                        total[i] += step * np.int64(min(max(code, 0.0), top))
                    continue
                for i in range(length):
                    sums[i] = 0
                for g in range(0, terms, 2):
                    line0, low0, high0, shift0 = lines[g], lows[g], highs[g], shifts[g]
                    line1, low1, high1 = lines[g + 1], lows[g + 1], highs[g + 1]
                    shift1 = shifts[g + 1]
                    for i in range(length):
                        at = np.uint64(i)
                        x0 = source[line0 + at]
                        x1 = source[line1 + at]
                        sums[i] += np.int64(
                            ((popcount(x0 & low0) + (popcount(x0 & high0) << one)) << shift0)
                            + ((popcount(x1 & low1) + (popcount(x1 & high1) << one)) << shift1)
                        )
                if scale == 0:  # not converted
                    for i in range(length):
                        total[i] += step * sums[i]
                    continue
                for i in range(length):
                    code = np.rint(np.float64(sums[i]) * top / scale)
                    total[i] += step * np.int64(min(max(code, 0.0), top))
        if any_floated:
            for i in range(length):
                total[i] += np.int64(floated[i])
        if finish:  # every (target, run) once: written, touched or not
            t = target[order[runs[k]]]
            scale = column_scale[t]
            _, count, pixels = out.shape
            image = out.reshape(-1)
            item = first // pixels
            pixel = first - item * pixels
            i = 0
            while i < length:  # the run's patches item by item
                span = min(pixels - pixel, length - i)
                into = np.uint64((item * count + t) * pixels + pixel)
                if has_bias:
                    added = bias[t]
                    for e in range(span):
                        value = np.float64(total[i + e]) / unit * input_scale * scale
                        image[into + np.uint64(e)] = np.float32(value) + added
                else:
                    for e in range(span):
                        value = np.float64(total[i + e]) / unit * input_scale * scale
                        image[into + np.uint64(e)] = np.float32(value)
                i += span
                item += 1
                pixel = 0
        elif touched:
            into = np.uint64(target[order[runs[k]]] * patches + first)
            for i in range(length):
                dest[into + np.uint64(i)] += total[i]
