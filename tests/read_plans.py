"""Random integer reads of one layer (`ReadPlan`s), shared by the property tests of the
read kernels that convert integer sums: bit planes (test_bitplane.py) and depthwise
tables (test_depthwise.py). Each test draws its own bounds (rows a read may span, cell
bits, the DAC's digit) and its own inputs; the reads are drawn here, one way for both."""

from __future__ import annotations

import numpy as np

from xbarc.runtime.reads import ReadPlan, as_slice


def random_reads(
    rng: np.random.Generator,
    count: int,
    groups: int,
    rows: int,
    cols: int,
    cell_bits: int,
    densities: tuple[float, ...],
    top_digit: int = 1,
    offset: int = 0,
) -> list[ReadPlan]:
    """`count` reads of a layer of `groups` groups of `rows` rows and `cols` columns: each
    of some rows of its group, a slice or a gather table (sorted, so reads share rows);
    cells of `cell_bits` bits, set with a density drawn from `densities`, a fifth of the
    columns all zero; repeated targets; signed power-of-two factors; full scales from 1
    to one above the largest sum of a `top_digit` input (codes clip); with an ADC offset
    (`offset` > 0), half of the reads correct one or two columns."""
    reads = []
    for _ in range(count):
        group = int(rng.integers(groups))
        length = int(rng.integers(1, rows + 1))
        if rng.random() < 0.5:  # a run of rows: a slice
            begin = int(rng.integers(0, rows - length + 1))
            source: slice | np.ndarray = slice(begin, begin + length)
        else:  # a gather table
            source = np.sort(rng.choice(rows, size=length, replace=False)).astype(np.int64)
        columns = int(rng.integers(1, 8))
        density = rng.choice(densities)
        cells_t = rng.integers(0, 2**cell_bits, (columns, length)) * (
            rng.random((columns, length)) < density
        )
        cells_t[rng.random(columns) < 0.2] = 0  # columns that read nothing
        largest = top_digit * max(1, int(cells_t.sum(axis=1).max(initial=0)))
        offset_columns = None
        if offset and rng.random() < 0.5:
            offset_columns = as_slice(np.unique(rng.integers(0, cols, size=2)))
        reads.append(
            ReadPlan(
                group,
                source,
                cells_t.astype(np.uint8),
                rng.integers(0, cols, size=columns).astype(np.int64),
                rng.choice([-1, 1], size=columns) * 2 ** rng.integers(0, 7, size=columns),
                rng.integers(1, largest + 2, size=columns).astype(np.int64),
                offset_columns,
            )
        )
    return reads
