"""A layer's short reads as tables over their input bit patterns, for `depthwise_accumulate`.

    columns = depthwise_columns(reads, rows, cols, levels, offset)   # None: reads too tall

Built once per layer, on its first run, from its read plans: each distinct input segment
(a group and its source rows, at most `TABLE_ROWS` of them) once, and for each output its
columns reach, the table of what they add for every pattern of one input bit plane on the
segment's rows (row i on bit i): the columns' sums of the pattern (the cells on its set
bits) converted and added as `adc.adc_accumulate_numpy` does, less the digital offset
correction of offset encoding (`offset` x unit x the pattern's input sum) on the reads'
`offset_columns`: exactly what the by-read reference adds for that plane at significance 1.
"""

from __future__ import annotations

import numpy as np

from xbarc.runtime.kernels.adc import adc_accumulate_numpy
from xbarc.runtime.kernels.depthwise import TABLE_ROWS, DepthwiseColumns
from xbarc.runtime.reads import ReadPlan, index_key


def depthwise_columns(
    reads: list[ReadPlan], rows: int, cols: int, levels: int, offset: int
) -> DepthwiseColumns | None:
    """The tables of a layer's integer reads of one input bit a step (every group):
    segments on the rows of the flat [groups x `rows`] unfolded input, outputs of the flat
    [groups x `cols`] accumulator, converted over `levels` ADC levels (0: lossless);
    `offset`: the offset of offset encoding (2^(weight bits - 1)). None where a read drives
    more than TABLE_ROWS rows (its table would not fit the cache)."""
    by_segment: dict[tuple, list[ReadPlan]] = {}
    for read in reads:
        by_segment.setdefault((read.group, index_key(read.rows)), []).append(read)
    segments: list[np.ndarray] = []
    entries: list[list[tuple[int, np.ndarray]]] = []
    unit = levels or 1
    for members in by_segment.values():
        group = members[0].group
        driven = np.arange(rows, dtype=np.int64)[members[0].rows]
        if len(driven) > TABLE_ROWS:
            return None
        patterns = np.arange(1 << len(driven), dtype=np.int64)
        bits = (patterns[None, :] >> np.arange(len(driven))[:, None]) & 1  # [rows, patterns]
        tables = np.zeros((cols, len(patterns)), dtype=np.int64)
        for read in members:
            partial = np.asarray(read.cells_t).astype(np.int64) @ bits
            adc_accumulate_numpy(partial, read.target, read.factor, read.full_scale, levels, tables)
            if read.offset_columns is not None:
                tables[read.offset_columns] -= offset * unit * bits.sum(axis=0)
        reached = np.flatnonzero(tables.any(axis=1))  # outputs it adds nothing to: left out
        segments.append(group * rows + driven)
        entries.append([(group * cols + int(t), tables[t]) for t in reached])
    return DepthwiseColumns.of(segments, entries)
