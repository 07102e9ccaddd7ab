"""What a basis combine (BasisN) means for a layer's weights: the one statement of the
formula that the basis pass fits, the weight report measures and the ideal runtime uses.

    W[g, s*L + r, n] = coef_scale[g, n] * sum_k coef[g, s, k, n] * basis[r, k]

for r < min(L, rows - s*L): the rows beyond the layer's last row in its last segment do
not exist (a read drives zeros there).
"""

from __future__ import annotations

import numpy as np

from xbarc.ir.tile import BasisCombine, Const, Program


def combined_weight(
    coefficients: np.ndarray, scale: np.ndarray | float, basis: np.ndarray, rows: int
) -> np.ndarray:
    """The weights [G, rows, N] that coefficients [G, S, K, N] (times `scale`, a number or
    [G, N]) make of `basis` [L, K], in float64."""
    groups, segments, _, cols = coefficients.shape
    length = basis.shape[0]
    segment_weights = np.einsum(
        "gskn,lk->gsln", coefficients.astype(np.float64), basis.astype(np.float64)
    )
    weight = segment_weights.reshape(groups, segments * length, cols)[:, :rows]
    if isinstance(scale, np.ndarray):
        return weight * scale.astype(np.float64)[:, None, :]
    return weight * float(scale)


def program_combined_weight(program: Program, combine: BasisCombine) -> np.ndarray:
    """A combined layer's weights [G, rows, N] from the program's basis values (levels x
    scale, as the basis pass writes them) and its coefficient table."""
    store = program.store
    basis = store[program.array(combine.basis).values][0]
    scale = store[combine.scale.name] if isinstance(combine.scale, Const) else float(combine.scale)
    rows = program.layer(combine.layer).rows
    return combined_weight(store[combine.coefficients], scale, basis, rows)
