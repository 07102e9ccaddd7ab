"""BasisN's digital combine: a layer's outputs built from the responses of the shared basis.

    table = combine_table(combine, basis, layer, store)
    combine_responses(table, groups, acc, unit, input_scale, out)   # quant: y from responses
    combined_weights(table, basis_read)                              # ideal: effective W

A combined layer's weights are not on the chip: the chip holds one basis B (L rows x K
columns, levels times the basis scale), and every layer's weight column n over input
segment s (rows s*L .. s*L+L-1 of its unfolded input, group g) is

    W[g, s*L + r, n] = coef_scale[g, n] * sum_k coef[g, s, k, n] * Bq[r, k]

with integer coefficients `coef` [G, S, K, N] (ir_spec/SPEC.md, "Basis combine"). The
chip reads the responses r[g, s, k, p] = sum_r x[g, s*L + r, p] * Bq[r, k] of every
segment (through the DAC, the cells and the ADC, like any read: `reads.read_plans`, one
virtual column s*K + k per response), and the combine unit forms

    y[g, n, p] = coef_scale[g, n] * sum_{s,k} coef[g, s, k, n] * r[g, s, k, p]

digitally, in float64: one matrix product per layer and group, the basis scale folded into
the coefficient matrix once (`CombineTable.matrix`). With the responses still in
accumulator units (exact integers in `quant`), the order of operations is that of
`adc.dequantize` for a layer read directly, so a lossless basis (`fit=identity`) gives
the direct program's bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Array, BasisCombine, Block, Const, CrossbarLayer, Segment
from xbarc.runtime.chip import index_array
from xbarc.runtime.kernels import adc, gemm


@dataclass(frozen=True, slots=True)
class CombineTable:
    """One combined layer's combine: its coefficients with the basis scale folded in."""

    layer: str
    segment_rows: int  # L
    segments: int  # S = ceil(rows / L)
    basis_cols: int  # K
    rows: int  # the layer's rows per group
    matrix: np.ndarray  # float64 [G, N, S*K]: coef[g, s, k, n] * basis_scale[k]
    column_scale: np.ndarray  # float64 [G, N]: coef_scale

    @property
    def responses(self) -> int:
        """Response columns per group (s, k): the virtual columns the basis reads fill."""
        return self.segments * self.basis_cols


def combine_table(combine: BasisCombine, basis: Array, layer: CrossbarLayer, store) -> CombineTable:
    """The combine of `layer` from `basis`, its coefficients checked against the shapes
    the layer and the basis give (a mismatch is a broken program: one clear line)."""
    length, count = combine.segment_rows, basis.cols
    segments = math.ceil(layer.rows / length) if length > 0 else 0
    coef = np.asarray(store[combine.coefficients])
    expected = (layer.groups, segments, count, layer.cols)
    if length <= 0 or coef.shape != expected or coef.dtype.kind not in "iu":
        raise XbarcError(
            f"combine of layer @{combine.layer}: coefficients @{combine.coefficients} are "
            f"{coef.dtype} {list(coef.shape)}, expected integers {list(expected)} "
            f"(groups, segments of {length} rows, basis columns, columns)",
            hint="recompile the model with --strategy basis",
        )
    basis_scale = np.broadcast_to(
        np.asarray(
            store[basis.scale.name] if isinstance(basis.scale, Const) else basis.scale,
            dtype=np.float64,
        ).reshape(-1),
        (count,),
    )
    # [G, S, K, N] -> [G, N, S, K], each k times its basis column's scale
    matrix = coef.astype(np.float64).transpose(0, 3, 1, 2) * basis_scale
    if isinstance(combine.scale, Const):
        column_scale = np.asarray(store[combine.scale.name], dtype=np.float64)
    else:
        column_scale = np.full((layer.groups, layer.cols), float(combine.scale))
    column_scale = np.broadcast_to(column_scale, (layer.groups, layer.cols))
    return CombineTable(
        combine.layer,
        length,
        segments,
        count,
        layer.rows,
        np.ascontiguousarray(matrix.reshape(layer.groups, layer.cols, segments * count)),
        np.ascontiguousarray(column_scale),
    )


def response_targets(table: CombineTable, store) -> Callable[[Block, Segment], np.ndarray]:
    """For a read plan: the virtual columns s*K + k that a read of a basis block fills,
    s the segment its input rows lie in, k the block's basis columns."""

    def targets(block: Block, segment: Segment) -> np.ndarray:
        first = int(index_array(segment.rows, store)[0])
        return first // table.segment_rows * table.basis_cols + index_array(block.cols, store)

    return targets


# responses converted to float64 at a time by `combine_responses` (32 MB)
CHUNK = 1 << 22


def combine_responses(
    table: CombineTable,
    groups: slice,
    acc: np.ndarray,
    unit: int,
    input_scale: float,
    out: np.ndarray,
) -> None:
    """out[g, n, p] = float32((sum_j matrix[g, n, j] * acc[g, j, p]) / unit * input_scale
    * column_scale[g, n]) for the groups `groups` of the layer: `acc` [g, S*K, P] holds
    the responses in accumulator units (int64 exact integers, or float), `out` float32
    [g, N, P]. Batched float64 matrix products, a run of groups at a time."""
    matrix = table.matrix[groups]
    count = matrix.shape[0]
    if (
        acc.shape[:2] != (count, table.responses)
        or out.shape[:2] != matrix.shape[:2]
        or not out.flags.c_contiguous  # written through reshaped views
    ):
        raise ValueError(
            f"combine_responses: acc {acc.shape}, out {out.shape} for {count} groups of "
            f"{table.responses} responses"
        )
    column_scale = table.column_scale[groups]
    patches = acc.shape[2]
    # in runs of groups: the float64 copy of the responses stays small (depthwise layers
    # have many groups of K responses each)
    step = max(1, CHUNK // max(1, acc[0].size))
    for start in range(0, count, step):
        part = slice(start, start + step)
        responses = acc[part].astype(np.float64)
        values = np.empty((responses.shape[0], matrix.shape[1], patches), dtype=np.float64)
        products(matrix[part], responses, values)
        # scaled as the ADC's dequantization scales a layer's accumulators (same order)
        adc.dequantize(
            values.reshape(-1, patches),
            unit,
            input_scale,
            column_scale[part].reshape(-1),
            out[part].reshape(-1, patches),
        )


# layers of at most this many groups combine by one onnxruntime GEMM per group; more (a
# depthwise layer's many small groups) by numpy's einsum loop
GEMM_GROUPS = 8


def products(matrix: np.ndarray, responses: np.ndarray, out: np.ndarray) -> None:
    """out[g] = matrix[g] @ responses[g], float64 [g, N, S*K] @ [g, S*K, P]: a GEMM per
    group on onnxruntime (`gemm.float_matmul`, whose threads sleep after a product where
    numpy's BLAS threads spin and take the cores from the parallel kernels that follow),
    or numpy's single-threaded einsum loop for many small groups."""
    if len(matrix) <= GEMM_GROUPS:
        for group in range(len(matrix)):
            gemm.float_matmul(matrix[group], responses[group], out[group])
    else:
        np.einsum("gnk,gkp->gnp", matrix, responses, out=out)


def combined_weights(table: CombineTable, basis_read: np.ndarray) -> np.ndarray:
    """Ideal: the layer's effective weights float32 [G, rows, N] from the basis cells its
    reads read, `basis_read` float64 [G, rows, K] in basis levels (row s*L + r holds the
    basis row r as segment s read it): the formula of `xbarc.ir.basis`, with each
    segment's own basis; a product per segment (`products`), the last one shorter."""
    groups, rows, count = basis_read.shape
    length = table.segment_rows
    # [G, N, S, K] -> [G, S, K, N]: segment s's coefficients times the basis scales
    matrix = table.matrix.reshape(groups, -1, table.segments, count).transpose(0, 2, 3, 1)
    weights = np.empty((groups, rows, matrix.shape[-1]), dtype=np.float64)
    for segment in range(table.segments):
        band = slice(segment * length, min(rows, (segment + 1) * length))
        products(
            np.ascontiguousarray(basis_read[:, band]),
            np.ascontiguousarray(matrix[:, segment]),
            weights[:, band],  # each group's rows of the band: contiguous
        )
    weights *= table.column_scale[:, None, :]
    return weights.astype(np.float32)
