"""basis: compute layers from one global basis programmed once (BasisN, seed 001).

    weights arrays of the layers  ->  one `basis` array (L x K, placed `copies` times)
                                      + a `combine` per layer (q-bit coefficients)

Every combined layer's weight columns are cut into segments of L rows (im2col order);
one basis B of K vectors of length L, shared by all layers, is learnt from all segments
with no retraining (`fit`: svd, the default, k-means or identity; each layer normalised
so that no layer owns the basis); B is quantized and sliced like any weights; each
segment is then expressed over the QUANTIZED basis Bq (least squares, or OMP with at most
`terms` = m vectors), and the coefficients quantized to q bits with a scale per output
column:

    W[g, s*L + r, n] ~= coef_scale[g, n] * sum_k coef[g, s, k, n] * Bq[r, k]

`objective=outputs` (compile --calibration-data) fits each layer's whole columns to its
calibration inputs' Gram matrix (`<layer>.input_gram`, attached by xbarc/basis_data.py):
the output error, not the weight error, is minimised; the Gram tensors leave the program.
At run time the tiles produce each input segment's responses to the K basis vectors and a
digital combine unit applies the coefficients, so the chip is written once whatever the
network. The basis is placed as many times as the tile budget holds (`copies`): R copies
read R segments in one cycle. Layers in `keep` stay on their own arrays. `fit=identity`
(K = L unit vectors) is the lossless reference: with q >= the weight bits, its
coefficients are the layers' own levels and scales.

The algorithms live in passes/basisn/: `budget` (options against the chip), `fit` (the
basis and the coefficients), `build` (the arrays, combines and tensors emitted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import CrossbarLayer, Program, with_tensors, without_unused_tensors
from xbarc.passes.basisn.budget import check_choices, plan_basis
from xbarc.passes.basisn.build import FitSettings, build_basis, input_grams
from xbarc.passes.basisn.fit import gram_tensor_name


@dataclass(frozen=True, slots=True)
class Basis:
    """Replace the layers' own weights by combinations of one shared basis."""

    name: ClassVar[str] = "basis"
    segment_rows: int | None = None  # L; default: the rows of the chip's tiles
    k: int | None = None  # basis vectors; default: min(L, what one copy fits on the budget)
    coef_bits: int = 8  # q, 2..16
    terms: int | None = None  # m: at most this many basis vectors per segment (default K)
    fit: str = "svd"  # svd | kmeans | identity
    objective: str = "weights"  # weights | outputs (needs calibration data)
    keep: str = ""  # layers stored directly on their own arrays: NAME;NAME
    copies: int | None = None  # default: as many as the budget holds
    seed: int = 0  # fit=kmeans: its seed

    def apply(self, program: Program) -> Program:
        check_choices(self.fit, self.objective, self.coef_bits)
        plan = plan_basis(
            program, self.keep, self.segment_rows, self.k, self.terms, self.copies, self.fit
        )
        grams = input_grams(program, plan.combined)
        # layers inside control-flow regions have no calibration inputs: they keep the
        # weight fit; a program whose top-level layers have none lacks the data
        top_level = {op.name for op in program.ops if isinstance(op, CrossbarLayer)}
        lacking = any(layer.name in top_level for layer in plan.combined) and not grams
        if self.objective == "outputs" and lacking:
            raise XbarcError(
                "basis{objective}=outputs needs the layers' calibration inputs, and the "
                "program has none",
                hint="compile with --strategy basis --calibration-data X.npz, or use "
                "objective=weights",
            )
        gram_names = {gram_tensor_name(layer.name) for layer in program.layers()}
        if not plan.combined:  # every layer kept: nothing to combine
            used = {decl.name for decl in program.tensors} - gram_names
            return without_unused_tensors(program, used)
        settings = FitSettings(self.fit, self.coef_bits, self.terms, self.objective, self.seed)
        result = build_basis(program, plan.combined, plan.segment_rows, plan.k, settings, grams)
        combined = {layer.name for layer in plan.combined}
        kept_arrays = tuple(a for a in program.arrays if a.layer not in combined)
        program = with_tensors(program, result.tensors)
        program = replace(
            program,
            arrays=(*kept_arrays, replace(result.array, copies=plan.copies)),
            combines=result.combines,
            blocks=(),
            phases=(),
        )
        used = {decl.name for decl in program.tensors} - result.dropped - gram_names
        return without_unused_tensors(program, used)
