"""Cell encoding: how integer weight levels become the cell values of slices.

One definition for the quantize pass (which cuts arrays into slices), the tile pass (which
drops zero cells) and the runtime (which programs them)."""

from __future__ import annotations

import numpy as np

from xbarc.ir.tile import Slice


def level_dtype(weight_bits: int) -> np.dtype:
    if weight_bits <= 8:
        return np.dtype(np.int8)
    return np.dtype(np.int16)


def make_slices(weight_bits: int, cell_bits: int, encoding: str) -> tuple[Slice, ...]:
    """Slices of cell width covering each polarity's magnitude bits, least significant first."""
    polarities: tuple[str, ...] = ("+", "-") if encoding == "differential" else ("+",)
    magnitude_bits = weight_bits - 1 if encoding == "differential" else weight_bits
    slices: list[Slice] = []
    for polarity in polarities:
        for shift in range(0, magnitude_bits, cell_bits):
            bits = min(cell_bits, magnitude_bits - shift)
            slices.append(Slice(len(slices), polarity, shift, bits))  # type: ignore[arg-type]
    return tuple(slices)


def slice_cells(levels: np.ndarray, piece: Slice, weight_bits: int, encoding: str) -> np.ndarray:
    """The cell values (0 .. 2^bits - 1) that slice `piece` holds for integer `levels`."""
    if encoding == "differential":
        magnitude = np.maximum(levels, 0) if piece.polarity == "+" else np.maximum(-levels, 0)
    else:
        magnitude = levels.astype(np.int32) + 2 ** (weight_bits - 1)
    return (magnitude.astype(np.int32) >> piece.shift) & ((1 << piece.bits) - 1)


def largest_read_sum(max_input: int, piece: Slice, rows: int) -> int:
    """The largest sum a read of `rows` rows of slice `piece` can produce: every input
    digit at `max_input`, every cell at its top level. The fixed ADC full scale."""
    return max_input * (2**piece.bits - 1) * rows
