"""BasisN's fit without retraining: one global basis for every layer's weight segments,
and each layer's quantized coefficients over it.

    weights [G, rows, N] of every combined layer
      -> segments of L rows (im2col order, last one zero-padded)  [G, S, L, N]
      -> one basis B [L, K] learnt from all layers' segments (svd | kmeans | identity)
      -> Bq: B quantized to the array's weight bits (per-column scale), as the cells hold it
      -> per layer: coefficients C [G, S, K, N] against Bq (least squares, or OMP for at
         most m terms), quantized to q bits with a per-column scale [G, N]

so that W[g, s*L + r, n] ~= scale[g, n] * sum_k C[g, s, k, n] * Bq[r, k].

Learning: every layer's segments are divided by the layer's RMS weight, so a layer of
large weights does not own the basis; all-zero segments (pruned columns) teach nothing and
are left out. `svd` keeps the top K principal directions of the stacked segments (the
eigenvectors of their L x L second-moment matrix: the rank-K subspace of least squared
error, optimal for least-squares coefficients); `kmeans` is a seeded, sign-invariant
spherical k-means (a segment and its negation are one direction, since coefficients carry
the sign); `identity` is the K = L unit vectors: the lossless reference.

Coefficients are fitted against the QUANTIZED basis Bq, so the basis' own rounding is
compensated rather than added. Two objectives:
- weights: each segment's least-squares fit (only the rows the layer has, for the last
  segment), or OMP's at most m terms per (g, s, n);
- outputs (data-aware): with the Gram matrix XtX of the layer's unfolded calibration
  inputs, the whole column over all its segments at once minimises the layer's output
  error ||X W - X W_hat||^2 + ridge ||W - W_hat||^2 (a small ridge, relative to the mean
  input energy, keeps rows the data never drive close to their weights).
The coefficient scale of a column maps its largest |coefficient| to the top level (max:
nothing clips) at q >= 5, and at q <= 4 the range of least squared rounding error (the
quantize pass' clip=mse search), measured on the digits fixtures in `coef_scales`.
Rounding is to nearest for the weight objective, and sequential for the output objective
(GPTQ-style error feedback: each rounding's output error is pushed onto the coefficients
not rounded yet, through the inverse of the column's quadratic form), each column keeping
the nearest rounding where that errs less (alone, sequential rounding is slightly worse on
some columns at q >= 6): on the digits fixtures this lowers the output error at every q
measured, 1.3-2.8x at q = 3, 10-60 % at q = 4, under 5 % at q = 8
(benchmarks/basis_accuracy.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xbarc.ir.basis import combined_weight as ir_combined_weight
from xbarc.ir.cells import level_dtype
from xbarc.ir.levels import clip_ranges, quantize_levels, scales_of

FIT_METHODS = ("svd", "kmeans", "identity")
ROUNDINGS = ("nearest", "sequential")
DEFAULT_RIDGE = 1e-2  # output objective: ridge / mean input energy, GPTQ's damping scale
KMEANS_SAMPLES = 20_000  # segments kmeans learns from at most (a seeded subsample)
# segments per layer the svd's second moment sums at most (a seeded sample beyond):
# ResNet-50's 200 000 segments cost 3 s for a matrix that 8192 per layer estimate well
MOMENT_SAMPLES = 8192
KMEANS_ITERATIONS = 30
OMP_CHUNK = 4096  # (g, s, n) columns OMP works on at once, to bound memory
MSE_SCALE_BITS = 4  # coefficient scales: clip=mse at q <= 4, max above (see coef_scales)
# Coefficient size. With K < L, a short last segment sees only the first rows of the
# basis, nearly dependent there, and least squares cancels huge coefficients (7x the
# weights' norm in the digits LeNet's last layer at K = 32); programming noise on the
# basis then adds 7x its error. The weight fit drops directions below CONDITION_CUTOFF of
# the largest singular value, the output fit adds COEF_RIDGE x its mean curvature: on the
# digits fixtures at K = 32, the output error with 3 % Gaussian noise on the basis cells
# falls 1.5-2.3x for at most 0.01 more error without noise, and rram accuracy
# (benchmarks/basis_accuracy.py, 5 seeds) rose from 45-47 % to 78-79 % (LeNet), 16-17 %
# to 40-79 % (ResNet) and 46-47 % to 70-74 % (MobileNet).
CONDITION_CUTOFF = 0.1
COEF_RIDGE = 1e-3


def gram_tensor_name(layer: str) -> str:
    """The tensor holding XtX [G, rows, rows] of layer `layer`'s unfolded calibration
    inputs, attached before the basis pass (xbarc/basis_data.py) and dropped by it."""
    return f"{layer}.input_gram"


# --- segments ------------------------------------------------------------------------------


def segment_count(rows: int, segment_rows: int) -> int:
    """S = ceil(rows / L): the segments of a layer's weight columns."""
    return math.ceil(rows / segment_rows)


def segments(weight: np.ndarray, segment_rows: int) -> np.ndarray:
    """[G, rows, N] -> [G, S, L, N]: each column cut into segments of L rows in im2col
    order, the last one zero-padded."""
    groups, rows, cols = weight.shape
    count = segment_count(rows, segment_rows)
    padded = np.zeros((groups, count * segment_rows, cols), dtype=np.float64)
    padded[:, :rows] = weight
    return padded.reshape(groups, count, segment_rows, cols)


def layer_samples(weight: np.ndarray, segment_rows: int) -> np.ndarray:
    """A layer's non-zero segments as rows [M, L], divided by the layer's RMS weight."""
    parts = segments(weight, segment_rows).transpose(0, 1, 3, 2).reshape(-1, segment_rows)
    parts = parts[np.any(parts != 0, axis=1)]
    rms = math.sqrt(float(np.mean(np.square(weight, dtype=np.float64)))) if weight.size else 0.0
    return parts / rms if rms > 0 else parts


def layer_moment(weight: np.ndarray, segment_rows: int) -> np.ndarray:
    """sum of s s^T [L, L] over a layer's segments s, divided by its mean square weight:
    `layer_samples`' second moment, without stacking the samples (zero segments add 0);
    over MOMENT_SAMPLES of them, a seeded sample scaled to the whole."""
    parts = segments(weight, segment_rows)  # [G, S, L, N]
    mean_square = float(np.mean(np.square(weight, dtype=np.float64))) if weight.size else 0.0
    flat = parts.transpose(2, 0, 1, 3).reshape(segment_rows, -1)
    if flat.shape[1] > MOMENT_SAMPLES:  # a seeded sample of the segments, weighted up
        rng = np.random.default_rng(flat.shape[1])
        chosen = np.sort(rng.choice(flat.shape[1], MOMENT_SAMPLES, replace=False))
        moment = flat[:, chosen] @ flat[:, chosen].T * (flat.shape[1] / MOMENT_SAMPLES)
    else:
        moment = flat @ flat.T
    return moment / mean_square if mean_square > 0 else moment


# --- the basis -------------------------------------------------------------------------------


def learn_basis(
    weights: Sequence[np.ndarray], segment_rows: int, k: int, method: str = "svd", seed: int = 0
) -> np.ndarray:
    """The float basis [L, K] learnt from the segments of `weights` (each [G, rows, N])."""
    if method == "identity":
        if k != segment_rows:
            raise ValueError(f"the identity basis has K = L = {segment_rows} vectors, not {k}")
        return np.eye(segment_rows)
    if method == "svd":
        moment = np.zeros((segment_rows, segment_rows))
        for weight in weights:
            moment += layer_moment(weight, segment_rows)
        return svd_basis(moment, k)
    if method == "kmeans":
        rng = np.random.default_rng(seed)
        parts = [layer_samples(weight, segment_rows) for weight in weights]
        samples = np.concatenate(parts) if parts else np.zeros((0, segment_rows))
        if len(samples) > KMEANS_SAMPLES:
            samples = samples[np.sort(rng.choice(len(samples), KMEANS_SAMPLES, replace=False))]
        return kmeans_basis(samples, k, rng)
    raise ValueError(f"unknown fit method {method!r}")


def svd_basis(moment: np.ndarray, k: int) -> np.ndarray:
    """The K principal directions of segments with second-moment matrix `moment` [L, L]
    (the right singular vectors of the stacked segments), largest first, each signed so
    that its largest entry is positive (a deterministic sign)."""
    eigenvalues, vectors = np.linalg.eigh(moment)
    basis = vectors[:, np.argsort(eigenvalues, kind="stable")[::-1][:k]]
    return basis * _signs(basis)


def kmeans_basis(samples: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K unit directions clustering the samples [M, L] (spherical k-means, sign-invariant:
    a sample joins the centre of largest |cosine|, and a centre is the sign-aligned mean of
    its samples). Seeded k-means++ start; an empty cluster restarts at the sample its
    centres represent worst; too few samples leave the remaining centres on unit
    vectors."""
    segment_rows = samples.shape[1]
    norms = np.linalg.norm(samples, axis=1)
    directions = samples[norms > 0] / norms[norms > 0, None]
    centres = np.zeros((k, segment_rows))
    if len(directions) == 0:
        return np.eye(segment_rows)[:, :k]
    # k-means++: each next centre drawn with probability ~ the squared sine to the nearest
    centres[0] = directions[rng.integers(len(directions))]
    worst = np.maximum(1 - np.square(directions @ centres[0]), 0.0)
    for index in range(1, k):
        total = float(worst.sum())
        if total <= 1e-12:
            centres[index] = _unused_unit_vector(centres[:index])
            continue
        centres[index] = directions[rng.choice(len(directions), p=worst / total)]
        worst = np.minimum(worst, np.maximum(1 - np.square(directions @ centres[index]), 0.0))
    for _ in range(KMEANS_ITERATIONS):
        cosines = directions @ centres.T  # [M, K]
        owner = np.abs(cosines).argmax(axis=1)
        signs = np.sign(cosines[np.arange(len(directions)), owner])
        sums = np.zeros_like(centres)
        np.add.at(sums, owner, directions * signs[:, None])
        lengths = np.linalg.norm(sums, axis=1)
        fit = np.abs(cosines).max(axis=1)
        for empty in np.flatnonzero(lengths == 0):
            farthest = int(fit.argmin())
            sums[empty], lengths[empty] = directions[farthest], 1.0
            fit[farthest] = 1.0
        updated = sums / lengths[:, None]
        if np.allclose(updated, centres):
            break
        centres = updated
    basis = centres.T
    return basis * _signs(basis)


def _unused_unit_vector(centres: np.ndarray) -> np.ndarray:
    """The unit vector e_i least represented by `centres` (for degenerate data)."""
    index = int(np.abs(centres).sum(axis=0).argmin())
    return np.eye(centres.shape[1])[index]


def _signs(basis: np.ndarray) -> np.ndarray:
    """+1 or -1 per column: the sign of its entry of largest magnitude."""
    if basis.size == 0:
        return np.ones(basis.shape[1])
    picked = basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])]
    return np.where(picked < 0, -1.0, 1.0)


@dataclass(frozen=True)
class QuantizedBasis:
    """The basis as the cells hold it: integer levels [L, K] and a scale (a float, or f32
    [K] per column); `values` = levels x scale is Bq, what every read multiplies by."""

    levels: np.ndarray
    scale: float | np.ndarray

    @property
    def values(self) -> np.ndarray:
        """Bq, f32 [L, K]: the dequantized basis (what the `basis.values` tensor holds)."""
        return self.levels.astype(np.float32) * np.asarray(self.scale, dtype=np.float32)


def quantize_basis(basis: np.ndarray, weight_bits: int, method: str) -> QuantizedBasis:
    """The basis on `weight_bits`-bit cells: per-column symmetric quantization (the quantize
    pass' rounding, clip at the column's largest |entry|); the identity basis is stored as
    levels 1 with scale 1.0, exactly."""
    if method == "identity":
        return QuantizedBasis(np.rint(basis).astype(level_dtype(weight_bits)), 1.0)
    levels, scale = quantize_levels(basis[None].astype(np.float32), weight_bits, per_column=True)
    assert isinstance(scale, np.ndarray)
    return QuantizedBasis(levels[0], scale[0])


# --- coefficients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerFit:
    """A combined layer's coefficients: integer `levels` [G, S, K, N] of q bits and the
    per-column scale f32 [G, N]."""

    levels: np.ndarray
    scale: np.ndarray


def fit_layer(
    weight: np.ndarray,
    basis: np.ndarray,
    coef_bits: int,
    terms: int | None = None,
    gram: np.ndarray | None = None,
    ridge: float = DEFAULT_RIDGE,
    rounding: str | None = None,
) -> LayerFit:
    """Coefficients of `weight` [G, rows, N] over the quantized basis Bq = `basis` [L, K]:
    at most `terms` non-zeros per (g, s, n) (all K by default); with `gram` (XtX of the
    layer's unfolded inputs, [G, rows, rows]) the output error is minimised instead of the
    weight error. `rounding`: nearest or sequential (default: nearest for weights,
    sequential for outputs)."""
    k = basis.shape[1]
    terms = k if terms is None else terms
    rounding = rounding or ("sequential" if gram is not None else "nearest")
    bq = basis.astype(np.float64)
    if gram is None:
        return weight_fit(weight, bq, coef_bits, terms, rounding)
    return output_fit(weight, bq, coef_bits, terms, gram, ridge, rounding)


def weight_fit(
    weight: np.ndarray, bq: np.ndarray, coef_bits: int, terms: int, rounding: str
) -> LayerFit:
    """Least-squares (or OMP) coefficients of every segment on its own, then rounded."""
    segment_rows, k = bq.shape
    groups, rows, cols = weight.shape
    top = 2 ** (coef_bits - 1) - 1
    parts = segments(weight, segment_rows)  # [G, S, L, N]
    count = parts.shape[1]
    coef = np.zeros((groups, count, k, cols))
    mask = None if terms >= k else np.zeros(coef.shape, dtype=bool)
    for index in range(count):
        present = min(segment_rows, rows - index * segment_rows)
        atoms, target = bq[:present], parts[:, index, :present]  # [n, K], [G, n, N]
        if mask is None:
            coef[:, index] = pseudo_inverse(atoms) @ target
            continue
        flat = target.transpose(1, 0, 2).reshape(present, -1)
        chosen, values = omp(atoms, flat, terms)
        mask[:, index] = chosen.reshape(k, groups, cols).transpose(1, 0, 2)
        coef[:, index] = values.reshape(k, groups, cols).transpose(1, 0, 2)
    scale = coef_scales(coef.transpose(1, 2, 0, 3).reshape(count * k, groups * cols), coef_bits)
    scale = scale.reshape(groups, cols)
    if rounding == "nearest":
        levels = np.clip(np.rint(coef / scale[:, None, None, :]), -top, top)
    else:
        levels = np.zeros_like(coef)
        for index in range(count):
            present = min(segment_rows, rows - index * segment_rows)
            atoms = bq[:present]
            flat = coef[:, index].transpose(1, 0, 2).reshape(k, -1)  # [K, G*N]
            held = None if mask is None else mask[:, index].transpose(1, 0, 2).reshape(k, -1)
            rounded = round_sequential(flat, atoms.T @ atoms, scale.reshape(-1), top, held)
            levels[:, index] = rounded.reshape(k, groups, cols).transpose(1, 0, 2)
    if mask is not None:
        levels[~mask] = 0
    return LayerFit(levels.astype(level_dtype(coef_bits)), scale)


_INVERSES: dict[tuple[bytes, tuple[int, ...]], np.ndarray] = {}


def pseudo_inverse(atoms: np.ndarray) -> np.ndarray:
    """pinv(atoms) without the directions whose singular value is below CONDITION_CUTOFF
    of the largest, remembered for the last few bases (every layer's full segments share
    Bq, and most last segments share a few row counts). A full segment of a near-
    orthonormal basis loses nothing; a short last segment sees only the first rows of the
    basis vectors, which can be nearly dependent there: least squares then cancels huge
    coefficients, which rounding and the cells' noise no longer cancel."""
    key = (atoms.tobytes(), atoms.shape)
    inverse = _INVERSES.get(key)
    if inverse is None:
        if len(_INVERSES) >= 16:
            _INVERSES.clear()
        inverse = _INVERSES[key] = np.linalg.pinv(atoms, rcond=CONDITION_CUTOFF)
    return inverse


def output_fit(
    weight: np.ndarray,
    bq: np.ndarray,
    coef_bits: int,
    terms: int,
    gram: np.ndarray,
    ridge: float,
    rounding: str,
) -> LayerFit:
    """Coefficients of each group's whole columns minimising the output error on the
    inputs of Gram matrix `gram` (on OMP's supports when `terms` < K), then rounded."""
    segment_rows, k = bq.shape
    groups, rows, cols = weight.shape
    top = 2 ** (coef_bits - 1) - 1
    count = segment_count(rows, segment_rows)
    support = None
    if terms < k:
        support = np.zeros((groups, count, k, cols), dtype=bool)
        parts = segments(weight, segment_rows)
        for index in range(count):
            present = min(segment_rows, rows - index * segment_rows)
            flat = parts[:, index, :present].transpose(1, 0, 2).reshape(present, -1)
            chosen, _ = omp(bq[:present], flat, terms)
            support[:, index] = chosen.reshape(k, groups, cols).transpose(1, 0, 2)
    levels = np.zeros((groups, count, k, cols), dtype=np.int64)
    scale = np.ones((groups, cols), dtype=np.float32)
    for group in range(groups):
        hessian, rhs = output_system(weight[group], bq, gram[group], ridge)
        # the coefficients' own ridge: their noise and rounding grow with their size
        hessian += COEF_RIDGE * float(np.mean(np.diag(hessian))) * np.eye(len(hessian))
        mask = None if support is None else support[group].reshape(count * k, cols)
        coef = solve_columns(hessian, rhs, mask)  # [S*K, N]
        column_scale = coef_scales(coef, coef_bits)
        rounded = np.clip(np.rint(coef / column_scale), -top, top)
        if mask is not None:
            rounded[~mask] = 0
        if rounding == "sequential":
            sequential = round_sequential(coef, hessian, column_scale, top, mask)
            better = quadratic_error(sequential, coef, column_scale, hessian) < quadratic_error(
                rounded, coef, column_scale, hessian
            )
            rounded = np.where(better, sequential, rounded)
        levels[group] = rounded.reshape(count, k, cols)
        scale[group] = column_scale
    return LayerFit(levels.astype(level_dtype(coef_bits)), scale)


def output_system(
    weight: np.ndarray, bq: np.ndarray, gram: np.ndarray | None, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """The normal equations of one group's output error ||X (W - D C)||^2 + damping
    ||W - D C||^2, for XtX = `gram` [rows, rows] (None: the weight error alone, G = I):
    H = Dt (G + damping I) D [SK, SK] and Dt (G + damping I) W [SK, N], damping = `ridge`
    x the mean diagonal of G. Padding rows of the last segment carry nothing."""
    segment_rows, k = bq.shape
    rows, cols = weight.shape
    count = segment_count(rows, segment_rows)
    padded = count * segment_rows
    moment = np.zeros((padded, padded))
    if gram is None:
        moment[np.arange(rows), np.arange(rows)] = 1.0
    else:
        damping = ridge * float(np.mean(np.diag(gram))) if rows else 0.0
        moment[:rows, :rows] = gram
        moment[np.arange(rows), np.arange(rows)] += damping if damping > 0 else ridge
    target = np.zeros((padded, cols))
    target[:rows] = weight
    blocks = moment.reshape(count, segment_rows, count, segment_rows)
    hessian = np.einsum("rk,srtq,qj->sktj", bq, blocks, bq, optimize=True)
    rhs = np.einsum("rk,srn->skn", bq, (moment @ target).reshape(count, segment_rows, cols))
    return hessian.reshape(count * k, count * k), rhs.reshape(count * k, cols)


def solve_columns(hessian: np.ndarray, rhs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The least-squares coefficients H c = b of every column (minimum norm where H is
    singular: a basis vector the segment's rows cannot see gets 0); with `mask` [SK, N],
    each column only on its own support."""
    if mask is None:
        return np.linalg.pinv(hessian, rcond=1e-10, hermitian=True) @ rhs
    coef = np.zeros_like(rhs)
    for column in range(rhs.shape[1]):
        chosen = np.flatnonzero(mask[:, column])
        if chosen.size:
            sub = hessian[np.ix_(chosen, chosen)]
            coef[chosen, column] = (
                np.linalg.pinv(sub, rcond=1e-10, hermitian=True) @ rhs[chosen, column]
            )
    return coef


def coef_scales(coef: np.ndarray, coef_bits: int) -> np.ndarray:
    """Per column of `coef` [D, N], f32 [N]: the clip range over the top level (1 for a zero
    column). The range is the largest |coefficient| (max) from MSE_SCALE_BITS + 1 bits up;
    at fewer bits, the quantize pass' clip=mse range (the ratio of the largest |c| whose
    rounded coefficients err least), which lowers the digits fixtures' weight error by 5 to
    30 % at q <= 4 and by under 1 % above, where its 81 trial roundings are not worth it."""
    if coef_bits > MSE_SCALE_BITS:
        clip = clip_ranges(coef[None], coef_bits, "max", 100.0)
    else:
        clip = clip_ranges(coef[None], coef_bits, "mse", 100.0)
    return scales_of(clip, coef_bits)[0]


def quadratic_error(
    levels: np.ndarray, coef: np.ndarray, scale: np.ndarray, hessian: np.ndarray
) -> np.ndarray:
    """Per column [N]: (c_hat - c)^T H (c_hat - c), the output error a rounding adds to the
    least-squares optimum c (where the error's gradient vanishes on the support)."""
    difference = levels * scale.astype(np.float64) - coef
    return np.einsum("dn,de,en->n", difference, hessian, difference)


def round_sequential(
    coef: np.ndarray, hessian: np.ndarray, scale: np.ndarray, top: int, mask: np.ndarray | None
) -> np.ndarray:
    """Integer levels of `coef` [D, N] (columns with scales [N], in +-top) rounded one
    coefficient at a time, each rounding's error pushed onto the coefficients after it so
    that the quadratic form `hessian` [D, D] of the error grows least (GPTQ's update, with
    its Cholesky factor of H^-1); entries outside `mask` are held at 0."""
    size = len(hessian)
    damping = 1e-8 * max(float(np.mean(np.diag(hessian))), 1e-30)
    inverse = np.linalg.inv(hessian + damping * np.eye(size))
    factor = np.linalg.cholesky((inverse + inverse.T) / 2).T  # upper: H^-1 = Ut U
    work = coef.astype(np.float64).copy()
    levels = np.zeros_like(work)
    column_scale = scale.astype(np.float64)
    for index in range(size):
        level = np.clip(np.rint(work[index] / column_scale), -top, top)
        if mask is not None:
            level[~mask[index]] = 0
        levels[index] = level
        error = (work[index] - level * column_scale) / factor[index, index]
        work[index + 1 :] -= np.outer(factor[index, index + 1 :], error)
    return levels


def omp(atoms: np.ndarray, targets: np.ndarray, terms: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal matching pursuit for every column of `targets` [n, P] over `atoms`
    [n, K]: the picks, a boolean [K, P] with at most `terms` per column (fewer where the
    residual vanishes first), and the least-squares coefficients on them [K, P].

    Batch OMP: everything in coefficient space, from the atoms' Gram matrix A = BtB and
    the correlations BtY: an iteration solves t x t systems and updates the residual's
    correlations with one product A @ C."""
    k = atoms.shape[1]
    chosen = np.zeros((k, targets.shape[1]), dtype=bool)
    values = np.zeros((k, targets.shape[1]))
    gram = atoms.T @ atoms  # [K, K]
    norms = np.sqrt(np.diag(gram))
    inverse_norms = np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0.0)
    for start in range(0, targets.shape[1], OMP_CHUNK):
        target = targets[:, start : start + OMP_CHUNK]
        width = target.shape[1]
        columns = np.arange(width)
        initial = atoms.T @ target  # [K, P]: correlations of the targets
        energy = np.square(target).sum(axis=0)
        correlation = initial.copy()  # Bt r for the current residual r
        remaining = energy.copy()  # ||r||^2
        picks = np.zeros((0, width), dtype=np.int64)
        chunk_values = np.zeros((k, width))
        chunk_chosen = np.zeros((k, width), dtype=bool)
        for _ in range(min(terms, k)):
            live = remaining > 1e-12 * energy  # above round-off: not yet fit
            if not live.any():
                break
            score = np.abs(correlation) * inverse_norms[:, None]
            score[picks, columns[None, :]] = -1.0
            picks = np.vstack([picks, score.argmax(axis=0)])
            sub = gram[picks[:, None, :], picks[None, :, :]].transpose(2, 0, 1)  # [P, t, t]
            rhs = initial[picks, columns[None, :]].T  # [P, t]
            ridge = 1e-12 * np.trace(sub, axis1=1, axis2=2)[:, None, None] + 1e-300
            coef = np.linalg.solve(sub + ridge * np.eye(len(picks)), rhs[..., None])[..., 0]
            full = np.zeros((k, width))  # the coefficients scattered: one GEMM updates all
            full[picks, columns[None, :]] = coef.T
            correlation = initial - gram @ full
            remaining = np.where(live, energy - np.einsum("pt,pt->p", coef, rhs), 0.0)
            picked = np.zeros((k, width), dtype=bool)
            picked[picks, columns[None, :]] = True
            # a column fit exactly keeps the picks and coefficients it had then
            chunk_values = np.where(live, full, chunk_values)
            chunk_chosen = np.where(live, picked, chunk_chosen)
        values[:, start : start + width] = chunk_values
        chosen[:, start : start + width] = chunk_chosen
    return chosen, values


# --- what a fit gives back -------------------------------------------------------------------


def combined_weight(fit: LayerFit, basis_values: np.ndarray, rows: int) -> np.ndarray:
    """The weight [G, rows, N] the combine computes from a fit (xbarc/ir/basis.py):
    W[g, s*L + r, n] = scale[g, n] * sum_k levels[g, s, k, n] * Bq[r, k]."""
    return ir_combined_weight(fit.levels, fit.scale, basis_values, rows)


def relative_weight_error(weight: np.ndarray, approx: np.ndarray) -> float:
    """||W - W_hat|| / ||W|| (0 for a zero weight matched exactly)."""
    total = float(np.square(weight, dtype=np.float64).sum())
    error = float(np.square(weight.astype(np.float64) - approx).sum())
    return math.sqrt(error / total) if total else math.sqrt(error)


def relative_output_error(weight: np.ndarray, approx: np.ndarray, gram: np.ndarray) -> float:
    """||X (W - W_hat)|| / ||X W|| over the inputs whose Gram matrix is `gram` [G, R, R]."""
    difference = weight.astype(np.float64) - approx
    error = float(np.einsum("grn,grq,gqn->", difference, gram, difference))
    total = float(np.einsum("grn,grq,gqn->", weight, gram, weight.astype(np.float64)))
    return math.sqrt(max(error, 0.0) / total) if total > 0 else math.sqrt(max(error, 0.0))
