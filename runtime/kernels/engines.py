"""Which GEMM engine reads a layer's exact integer reads fastest: a table measured on the machine.

    shape = ReadShape(rows=128, columns=64, patches=8640, digit_bits=7, slices=1, density=0.5)
    fastest(shape, ["fused", "sparse", "by read"]) -> "fused"

Exact integer reads have several ways to the same bits, whose costs cross over with the
shape of the reads: the fused kernel (`fused.fused_read_accumulate`: no unfold, float32
multiply-adds over tiles of patches, converted while hot), one integer GEMM per layer
(`fused.gemm_read_accumulate`: the digits gathered without im2col, onnxruntime's
MatMulInteger, then the ADC kernel), the sparse kernel
(`sparse_read.sparse_read_accumulate`: non-zero cells times unfolded integer digits), and
read by read (onnxruntime's integer GEMM per read into a buffer, then the ADC kernel);
`blas` (numpy's float32 GEMM per read, then the ADC kernel) is measured for the record
(numpy's BLAS threads keep spinning after a product and take the cores from the Numba
kernels that follow, see `gemm.py`). `benchmarks/gemm_engines.py` measures them over a
grid of shapes and writes `engines.toml` (shipped with the package); `fastest` takes the
nearest measured shape and the engine fastest there among those the layer allows.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xbarc.runtime.kernels.fused import column_sums
from xbarc.runtime.kernels.sparse_read import SparseColumns

TABLE = Path(__file__).with_name("engines.toml")
ENGINES = ("fused", "gemm", "sparse", "by read", "blas")


@dataclass(frozen=True, slots=True)
class ReadShape:
    """What the cost of a layer's integer reads depends on."""

    rows: float  # rows a read drives (mean over the layer's read columns)
    columns: int  # read columns of the layer (all reads and groups)
    patches: int  # patches of the batch
    digit_bits: int  # bits of a DAC step
    slices: int  # DAC steps per input
    density: float  # non-zero cells / cells
    unfolded_rows: int = 0  # rows of the unfolded input (groups x rows): what im2col fills
    unfolds: bool = False  # whether the other engines unfold the input (im2col) first

    def distance(self, other: ReadShape) -> float:
        """How far apart two shapes are: sizes compared by ratio (log2), bits and steps
        by difference."""
        return (
            abs(math.log2(max(self.rows, 1) / max(other.rows, 1)))
            + abs(math.log2(max(self.columns, 1) / max(other.columns, 1)))
            + abs(math.log2(max(self.patches, 1) / max(other.patches, 1)))
            + abs(math.log2(max(self.density, 1e-3) / max(other.density, 1e-3)))
            + abs(self.digit_bits - other.digit_bits) / 2
            + abs(self.slices - other.slices)
            + abs(math.log2(max(self.unfolded_rows, 1) / max(other.unfolded_rows, 1)))
            + 4 * (self.unfolds != other.unfolds)
        )


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured shape: milliseconds per engine."""

    shape: ReadShape
    ms: dict[str, float]


def read_shape(
    read_columns: SparseColumns,
    cells: int,
    patches: int,
    digit_bits: int,
    slices: int,
    unfolded_rows: int,
    unfolds: bool,
) -> ReadShape:
    """The shape of a layer's reads: its read columns (`sparse_read.SparseColumns`, the
    all-zero ones left out), `cells` the cells its reads hold (zeros included)."""
    count = max(len(read_columns.target), 1)
    return ReadShape(
        rows=cells / count,
        columns=len(read_columns.target),
        patches=patches,
        digit_bits=digit_bits,
        slices=slices,
        density=len(read_columns.cells) / max(cells, 1),
        unfolded_rows=unfolded_rows,
        unfolds=unfolds,
    )


def largest_sum(read_columns: SparseColumns, digit_max: int) -> int:
    """The largest magnitude a read column's sum can reach with digits up to `digit_max`."""
    if not len(read_columns.target):
        return 0
    return int(column_sums(read_columns).max()) * digit_max


def fastest(shape: ReadShape, allowed: Sequence[str], table: Path | None = None) -> str:
    """The engine among `allowed` fastest at the measured shape nearest to `shape` (the
    first allowed one where the table is empty or measured none of them)."""
    measured = load_table(table or TABLE)
    candidates = [entry for entry in measured if any(name in entry.ms for name in allowed)]
    if not candidates:
        return allowed[0]
    nearest = min(candidates, key=lambda entry: shape.distance(entry.shape))
    timed = [(nearest.ms[name], name) for name in allowed if name in nearest.ms]
    return min(timed)[1]


@functools.cache
def load_table(path: Path) -> tuple[Measured, ...]:
    """The measured shapes of an engines table (`benchmarks/gemm_engines.py` writes it)."""
    with open(path, "rb") as file:
        data = tomllib.load(file)
    entries = []
    for entry in data.get("shape", []):
        ms = {str(name): float(value) for name, value in entry["ms"].items()}
        unknown = set(ms) - set(ENGINES)
        if unknown:
            raise ValueError(f"{path}: unknown engines {sorted(unknown)}")
        shape = ReadShape(
            rows=float(entry["rows"]),
            columns=int(entry["columns"]),
            patches=int(entry["patches"]),
            digit_bits=int(entry["digit_bits"]),
            slices=int(entry["slices"]),
            density=float(entry["density"]),
            unfolded_rows=int(entry.get("unfolded_rows", 0)),
            unfolds=bool(entry.get("unfolds", False)),
        )
        entries.append(Measured(shape, ms))
    return tuple(entries)
