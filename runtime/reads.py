"""Read plans: which programmed cells a layer's runs read, how, and their read-out through the ADC.

    plans = read_plans(array, run_reads, tiles, store, ...)    # quant: one per input read
    add_ideal_reads(matrix, array, run_reads, tiles, store)    # ideal: one matrix per layer

In `quant` a run becomes read plans: the blocks of the run's reads grouped by the input
they drive (same group and source rows), with their cells side by side and, per read column, the
output column (scatter), the slice's signed significance and the ADC full scale; the input
rows it drives are a slice or a gather table. A differential ADC senses each + column with
the - column of the same output and significance (`differential`). `ReadOut` buffers the
partial sums of many reads and passes them through the ADC kernel together.

In `ideal` reads are linear, so what a layer's runs read adds up to one effective matrix
per group (`add_ideal_reads`).

A layer combined from a basis (BasisN) is read the same way, as a virtual layer whose
columns are the basis responses (s, k) of its input segments (`combine.py`): a read of a
basis block against segment s fills columns s*K + k, through the same DAC, cells and ADC.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from xbarc.ir.cells import largest_read_sum
from xbarc.ir.tile import Array, Block, CrossbarLayer, Segment
from xbarc.runtime import gaussian
from xbarc.runtime.chip import ProgrammedTiles, index_array, row_indices
from xbarc.runtime.combine import CombineTable
from xbarc.runtime.kernels import adc, gemm
from xbarc.runtime.kernels.sparse_read import SparseColumns

# the accumulator columns a block's columns fill when read against a segment
Targets = Callable[[Block, Segment], np.ndarray]


@dataclass
class ReadPlan:
    """Quant: the blocks of one run that read the same input (rows of one group), their
    cells side by side."""

    group: int
    rows: slice | np.ndarray  # source rows of the unfolded input
    cells_t: np.ndarray  # [M, len(rows)]: the read columns' cells, one row each (uint8 for
    # integer reads, else float32)
    target: np.ndarray  # int64 [M]: output column of each read column
    factor: np.ndarray  # int64 [M]: signed significance of the slice each column holds
    full_scale: np.ndarray  # int64 [M]: the ADC full scale, the largest sum of the read
    offset_columns: slice | np.ndarray | None  # output columns with the offset correction
    # differential sensing: each column's cells |G+| + |G-| (for PCM-style read noise)
    magnitude_t: np.ndarray | None = None


@dataclass
class LayerPlan:
    """Quant: one run of a layer, its reads one per input they take. A layer combined
    from a basis (BasisN) reads the basis `array` into the response columns of its
    `combine` (s*K + k per group), which the combine unit turns into the layer's columns."""

    layer: CrossbarLayer
    array: Array
    reads: list[ReadPlan] = field(default_factory=list)
    combine: CombineTable | None = None

    @property
    def columns(self) -> int:
        """Accumulator columns per group: the array's, or the basis responses."""
        return self.array.cols if self.combine is None else self.combine.responses


def read_plans(
    array: Array,
    reads: Sequence[tuple[Block, Segment]],
    tiles: ProgrammedTiles,
    store,
    max_input: int,
    adc_fraction: float | None,
    cell_type: type,
    differential_adc: bool,
    targets: Targets | None = None,
    noisy: bool = True,
) -> list[ReadPlan]:
    """One read plan per input a run's reads drive (a group and its source rows): the
    cells of every block read with it side by side (as `cell_type`), each read column
    keeping its own slice. A read drives its segment's rows onto the block's first rows
    (a basis block read by a layer's last segment: fewer rows than the block, the rest
    driven with zeros). The ADC's full scale is the largest sum a read of the block's
    rows can produce (inputs of at most `max_input`), times `adc_fraction` if
    calibrated. `targets(block, segment)`: the accumulator column of each block column
    (default: the block's own columns of its array); `noisy`: read the noisy cells (a
    layer outside the noisy ones reads a shared basis as programmed without noise)."""
    by_input: dict[tuple, list[Block]] = defaultdict(list)
    for block, segment in reads:
        by_input[(segment.group, segment.rows)].append(block)
    plans = []
    for (group, rows), members in by_input.items():
        segment = Segment(group, rows)
        driven = len(rows)
        columns_of, factors, full_scales, offset_columns = [], [], [], []
        for block in members:
            piece = array.slices[block.slice]
            columns = index_array(block.cols, store) if targets is None else targets(block, segment)
            sign = 1 if piece.polarity == "+" else -1
            largest = largest_read_sum(max_input, piece, len(block.rows))
            if adc_fraction is not None:
                largest = max(1, math.ceil(adc_fraction * largest))
            columns_of.append(columns)
            factors.append(np.full(len(columns), sign * 2**piece.shift, dtype=np.int64))
            full_scales.append(np.full(len(columns), largest, dtype=np.int64))
            if array.encoding == "offset" and piece.shift == 0:
                offset_columns.append(columns)
        regions = [tiles.cells(block, noisy)[:driven] for block in members]
        plans.append(
            ReadPlan(
                group,
                row_indices(rows, store),
                np.ascontiguousarray(np.concatenate(regions, axis=1).T, dtype=cell_type),
                np.concatenate(columns_of),
                np.concatenate(factors),
                np.concatenate(full_scales),
                as_slice(np.unique(np.concatenate(offset_columns))) if offset_columns else None,
            )
        )
    if differential_adc:
        plans = [differential(plan) for plan in plans]
    return plans


def sparse_columns(reads: list[ReadPlan], rows: int, cols: int) -> SparseColumns:
    """The read columns of a layer's integer reads (every group) as one `SparseColumns`
    for `sparse_read_accumulate`: cells on the rows of the flat [groups x `rows`]
    unfolded input, codes into the flat [groups x `cols`] accumulator. Columns whose cells
    are all zero read zero and are left out."""
    counts, cell_rows, cells, targets, factors, full_scales = [], [], [], [], [], []
    for read in reads:
        source = np.arange(rows, dtype=np.int64)[read.rows]  # the rows the read drives
        column, position = np.nonzero(read.cells_t)
        per_column = np.bincount(column, minlength=len(read.target))
        kept = per_column > 0
        counts.append(per_column[kept])
        cell_rows.append(read.group * rows + source[position])
        cells.append(read.cells_t[column, position])
        targets.append(read.group * cols + read.target[kept])
        factors.append(read.factor[kept])
        full_scales.append(read.full_scale[kept])
    start = np.concatenate([[0], np.cumsum(np.concatenate(counts))]) if reads else np.zeros(1)
    return SparseColumns.of(
        start,
        *(
            np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            for parts in (cell_rows, cells, targets, factors, full_scales)
        ),
    )


# Reads of at least TALL rows whose cells are at least DENSE non-zero run faster as
# integer GEMMs (onnxruntime's VNNI kernels: 64 products an instruction) than as sums of
# their non-zero cells (`sparse_read_accumulate`, 16): measured on PP-OCR's detector, its
# 3x3 convolutions of 864 rows (128-row reads, 25 % non-zero) took half the CPU time read
# by read; layers of short or sparse reads (depthwise, pointwise of few channels) took 2
# to 20 times less sparsely.
TALL = 64
DENSE = 0.12


def reads_sparsely(reads: list[ReadPlan], columns: SparseColumns) -> bool:
    """Whether a layer's integer reads run faster through `sparse_read_accumulate` (one
    kernel call per input sign) than read by read (an integer GEMM each)."""
    cells = sum(read.cells_t.size for read in reads)
    read_columns = sum(len(read.target) for read in reads)
    if not cells:
        return True
    return cells / read_columns < TALL or len(columns.cells) / cells < DENSE


def add_ideal_reads(
    matrix: np.ndarray,
    array: Array,
    reads: Sequence[tuple[Block, Segment]],
    tiles: ProgrammedTiles,
    store,
) -> None:
    """Ideal reads are linear, so the partial sums of a layer's runs add up to one
    matrix per group: each block's programmed cells times its slice's signed
    significance, added at the rows of the input segment its read drives and at the
    block's columns (the offset of offset encoding is taken off where the digital
    correction would take it off). For a basis, `matrix` [groups, layer rows, K] collects
    the basis cells each segment was read against."""
    offset = 2.0 ** (array.weight_bits - 1)
    for block, segment in reads:
        piece = array.slices[block.slice]
        significance = (1 if piece.polarity == "+" else -1) * 2.0**piece.shift
        region = tiles.cells(block)[: len(segment.rows)] * significance
        if array.encoding == "offset" and piece.shift == 0:
            region = region - offset
        rows = row_indices(segment.rows, store)
        cols = as_slice(index_array(block.cols, store))
        if isinstance(rows, slice) and isinstance(cols, slice):
            matrix[segment.group, rows, cols] += region
        else:
            matrix[segment.group][np.ix_(np.r_[rows], np.r_[cols])] += region


def differential(read: ReadPlan) -> ReadPlan:
    """`read` sensed differentially: each + column and the - column of the same output and
    significance become one signed column, their cells' difference (the currents subtract
    before the ADC); a column without its partner stays as it is."""
    dtype = read.cells_t.dtype  # float: signed differences (float64 for large sums)
    partner: dict[tuple[int, int], int] = {}
    for m, (target, factor) in enumerate(zip(read.target, read.factor, strict=True)):
        if factor < 0:
            partner[(int(target), int(-factor))] = m
    rows, magnitudes, keep = [], [], []
    paired = set()
    for m, (target, factor) in enumerate(zip(read.target, read.factor, strict=True)):
        if factor < 0:
            continue
        other = partner.get((int(target), int(factor)))
        cells = read.cells_t[m]
        if other is None:
            rows.append(cells)
            magnitudes.append(np.abs(cells))
        else:
            paired.add(other)
            opposite = read.cells_t[other]
            rows.append(cells - opposite)
            magnitudes.append(np.abs(cells) + np.abs(opposite))
        keep.append(m)
    for m in range(len(read.target)):
        if read.factor[m] < 0 and m not in paired:  # a - column alone
            rows.append(read.cells_t[m])
            magnitudes.append(np.abs(rows[-1]))
            keep.append(m)
    order = np.asarray(keep, dtype=np.int64)
    return ReadPlan(
        read.group,
        read.rows,
        np.ascontiguousarray(np.stack(rows), dtype=dtype),
        read.target[order],
        read.factor[order],
        read.full_scale[order],
        read.offset_columns,
        np.ascontiguousarray(np.stack(magnitudes), dtype=dtype),
    )


class ReadContext(Protocol):
    """What the read-out needs of the executor that runs it: its memory, its converters'
    settings, and the read noise of the layer being read."""

    adc_levels: int
    adc_range: str | None  # resolved: fixed | calibrated | dynamic
    differential_adc: bool
    cell_type: type
    sum_type: type
    layer_reads_noisy: bool
    on_read_sums: Callable[[str, np.ndarray, np.ndarray], None] | None

    def workspace(self, name: Hashable, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray: ...

    def analog_read(
        self,
        cells_t: np.ndarray,
        driven: np.ndarray,
        out: np.ndarray,
        magnitude_t: np.ndarray | None = None,
    ) -> np.ndarray: ...

    def next_read_key(self) -> int: ...


# Partial sums buffered before they pass through the ADC together (float32 values: 4 MB,
# so that they are still in the cache).
READOUT_BUDGET = 1 << 20


class ReadOut:
    """Reads of one group whose partial sums wait in the executor's scratch buffer to pass
    through the ADC in one kernel call (a parallel kernel launch costs as much as reading
    out a small read)."""

    def __init__(self, executor: ReadContext, acc: np.ndarray, layer: str):
        self.executor = executor
        self.acc = acc
        self.layer = layer
        self.used = 0
        self.columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.sigmas: list[tuple[np.ndarray, int]] = []  # noisy reads: (sigma, columns)
        self.dtype = executor.sum_type

    def add(self, read: ReadPlan, driven: np.ndarray, factor: np.ndarray) -> None:
        """Read `driven` [rows, P] through `read`'s cells, with its columns' factors."""
        executor = self.executor
        size = len(read.target) * driven.shape[1]
        if self.used and self.used + size > READOUT_BUDGET:
            self.flush()
        room = (max(READOUT_BUDGET, size),)
        buffer = executor.workspace("partial sums", room, self.dtype)
        partial = buffer[self.used : self.used + size].reshape(len(read.target), -1)
        if executor.cell_type == np.uint8:  # integer reads
            gemm.integer_matmul(read.cells_t, np.ascontiguousarray(driven), partial)
        elif executor.layer_reads_noisy:
            sigma = executor.analog_read(read.cells_t, driven, partial, read.magnitude_t)
            self.sigmas.append((sigma, len(read.target)))
        else:  # float reads of integers, exact in any order (sums below 2^24 or 2^53)
            gemm.float_matmul(read.cells_t, driven, partial)
        self.columns.append((read.target, factor, read.full_scale))
        self.used += size

    def flush(self) -> None:
        if not self.used:
            return
        executor = self.executor
        targets, factors, full_scales = (
            np.concatenate(parts) for parts in zip(*self.columns, strict=True)
        )
        buffer = executor.workspace("partial sums", (self.used,), self.dtype)
        partial = buffer.reshape(len(targets), -1)
        if self.sigmas:  # the reads' noise, drawn for all of them in one kernel call
            sigma, rows = stacked_sigmas(self.sigmas)
            gaussian.add_noise(partial, sigma, rows, key=executor.next_read_key())
        if executor.adc_range == "dynamic":  # an oracle: each read's own largest sum
            start = 0
            full_scales = full_scales.copy()
            for target, _, _ in self.columns:
                stop = start + len(target)
                full_scales[start:stop] = max(1, math.ceil(float(partial[start:stop].max())))
                start = stop
        if executor.on_read_sums is not None:
            executor.on_read_sums(self.layer, partial, full_scales)
        adc.adc_accumulate(
            partial,
            targets,
            factors,
            full_scales,
            executor.adc_levels,
            self.acc,
            signed=executor.differential_adc,
        )
        self.used = 0
        self.columns = []
        self.sigmas = []


def stacked_sigmas(sigmas: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The sigmas of consecutive reads (each [1, P], shared by the read's columns, or one
    row per column) as one array of distinct rows, and the row each read column uses."""
    rows, index, count = [], [], 0
    for sigma, columns in sigmas:
        rows.append(sigma)
        if len(sigma) == 1:
            index.append(np.full(columns, count, dtype=np.int64))
        else:
            index.append(np.arange(count, count + columns, dtype=np.int64))
        count += len(sigma)
    return np.concatenate(rows), np.concatenate(index)


def sum_type(driven: np.ndarray, digit_max: int) -> type:
    """The narrowest exact type for column sums of `driven` [rows, P] (digits of at most
    `digit_max`): narrow sums are the fast ones."""
    if driven.dtype.kind == "f":
        return driven.dtype.type  # exact: float32 reads keep every sum below 2^24
    return np.int16 if driven.shape[0] * digit_max < 2**15 else np.int32


def index_key(selection: slice | np.ndarray) -> tuple | bytes:
    """A dictionary key for a slice (from `as_slice`) or an index array."""
    if isinstance(selection, slice):
        return (selection.start, selection.stop)
    return selection.tobytes()


def as_slice(columns: np.ndarray) -> np.ndarray | slice:
    """A run of consecutive columns as a slice (a view instead of a fancy-index copy)."""
    if len(columns) and columns[-1] - columns[0] == len(columns) - 1:
        return slice(int(columns[0]), int(columns[-1]) + 1)
    return columns
