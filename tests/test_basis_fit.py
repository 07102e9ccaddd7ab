"""BasisN's fit (xbarc/passes/basisn/fit.py) and its calibration Gram matrices
(xbarc/basis_data.py): reconstruction against K, q and m, the lossless identity basis, the
data-aware fit's output error on the digits fixtures' activations, and the Gram matrices
against an independent numpy reference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarc.basis_data import input_grams, load_calibration_data
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.diagnostics import XbarcError
from xbarc.ir.levels import quantize_levels
from xbarc.ir.tile import Const
from xbarc.passes.basisn import fit

DIGITS = Path(__file__).parent / "fixtures" / "digits"


def correlated_layers(seed: int, segment_rows: int) -> list[np.ndarray]:
    """Weights [G, rows, N] of a few layers whose columns share structure (a common
    low-dimensional source plus noise), of different sizes and magnitudes, one with rows
    that do not fill its last segment."""
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(segment_rows, 6))
    layers = []
    for groups, segments_, cols, magnitude, extra in ((1, 2, 12, 0.1, 0), (2, 1, 6, 5.0, 3)):
        rows = segments_ * segment_rows - extra
        mixed = source @ rng.normal(size=(6, groups * segments_ * cols))
        mixed += 0.3 * rng.normal(size=mixed.shape)
        weight = mixed.reshape(segment_rows, groups, segments_, cols).transpose(1, 2, 0, 3)
        layers.append(magnitude * weight.reshape(groups, segments_ * segment_rows, cols)[:, :rows])
    return layers


def total_error(layers, basis_values, coef_bits, terms=None) -> float:
    errors = []
    for weight in layers:
        layer_fit = fit.fit_layer(weight, basis_values, coef_bits, terms)
        approx = fit.combined_weight(layer_fit, basis_values, weight.shape[1])
        errors.append(fit.relative_weight_error(weight, approx))
    return float(np.mean(errors))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_reconstruction_error_falls_with_k(seed):
    """svd: the K principal directions are nested, so the error never grows with K."""
    segment_rows = 16
    layers = correlated_layers(seed, segment_rows)
    errors = []
    for k in (2, 4, 8, 16):
        basis = fit.quantize_basis(fit.learn_basis(layers, segment_rows, k, "svd"), 12, "svd")
        errors.append(total_error(layers, basis.values, coef_bits=12))
    assert all(later <= earlier + 1e-3 for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 0.01  # K = L spans every segment: only rounding is left
    assert errors[2] < 0.5 * errors[0]  # six shared directions: eight vectors hold most


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_kmeans_error_falls_with_k(seed):
    """k-means centres are not nested (and at K = L may be ill-conditioned, which
    amplifies rounding), so only the trend holds: 8 centres fit better than 2."""
    layers = correlated_layers(seed, 16)
    errors = []
    for k in (2, 8):
        learnt = fit.learn_basis(layers, 16, k, "kmeans", seed)
        errors.append(total_error(layers, fit.quantize_basis(learnt, 12, "kmeans").values, 12))
    assert errors[1] < errors[0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_reconstruction_error_falls_with_coefficient_bits(seed):
    segment_rows = 16
    layers = correlated_layers(seed, segment_rows)
    basis = fit.quantize_basis(fit.learn_basis(layers, segment_rows, 8, "svd"), 8, "svd").values
    errors = [total_error(layers, basis, q) for q in (2, 4, 7, 10, 16)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False))


def test_svd_basis_is_the_principal_subspace():
    """The float SVD basis is orthonormal and spans the top principal directions of the
    per-layer-normalised segments (independent reference: numpy's SVD of the stack)."""
    layers = correlated_layers(3, 16)
    basis = fit.learn_basis(layers, 16, 5, "svd")
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-10)
    stacked = np.concatenate([fit.layer_samples(w, 16) for w in layers])
    _, _, vt = np.linalg.svd(stacked, full_matrices=False)
    projector = vt[:5].T @ vt[:5]
    np.testing.assert_allclose(basis @ basis.T, projector, atol=1e-8)


def test_layers_are_normalised_before_learning():
    """Scaling one layer by 1000 does not change the basis (so it cannot own it)."""
    layers = correlated_layers(5, 16)
    scaled = [layers[0] * 1000.0, layers[1]]
    np.testing.assert_allclose(
        fit.learn_basis(layers, 16, 4, "svd"), fit.learn_basis(scaled, 16, 4, "svd"), atol=1e-9
    )


def test_kmeans_is_seeded():
    layers = correlated_layers(7, 16)
    first = fit.learn_basis(layers, 16, 6, "kmeans", seed=1)
    np.testing.assert_array_equal(first, fit.learn_basis(layers, 16, 6, "kmeans", seed=1))
    np.testing.assert_allclose(np.linalg.norm(first, axis=0), 1.0)


@pytest.mark.parametrize("weight_bits", [4, 8])
def test_identity_basis_reproduces_the_layers_levels(weight_bits):
    """Identity basis (levels 1, scale 1), q = the weight bits: the coefficients are the
    layer's quantized levels and the coefficient scales its per-column scales, exactly."""
    rng = np.random.default_rng(weight_bits)
    weight = rng.normal(size=(2, 37, 5)).astype(np.float32)  # 37 rows: a partial segment
    levels, scale = quantize_levels(weight, weight_bits, per_column=True)
    assert isinstance(scale, np.ndarray)
    quantized = levels * scale[:, None, :]
    basis = fit.quantize_basis(fit.learn_basis([weight], 16, 16, "identity"), 8, "identity")
    assert basis.scale == 1.0
    np.testing.assert_array_equal(basis.levels, np.eye(16))
    layer_fit = fit.fit_layer(quantized, basis.values, weight_bits)
    got = layer_fit.levels.reshape(2, 3 * 16, 5)[:, :37]
    np.testing.assert_array_equal(got, levels)
    assert not layer_fit.levels.reshape(2, 48, 5)[:, 37:].any()  # rows the layer lacks
    np.testing.assert_array_equal(layer_fit.scale, scale)


@pytest.mark.parametrize("terms", [1, 2, 3, 5])
def test_omp_keeps_at_most_m_terms(terms):
    layers = correlated_layers(11, 16)
    basis = fit.quantize_basis(fit.learn_basis(layers, 16, 8, "svd"), 8, "svd").values
    for weight in layers:
        layer_fit = fit.fit_layer(weight, basis, 8, terms=terms)
        per_segment = np.count_nonzero(layer_fit.levels, axis=2)  # [G, S, N]
        assert per_segment.max() <= terms
        assert per_segment.max() == terms  # these segments need every term they get


def test_omp_error_falls_with_m_and_matches_least_squares_at_k():
    layers = correlated_layers(13, 16)
    basis = fit.quantize_basis(fit.learn_basis(layers, 16, 8, "svd"), 8, "svd").values
    errors = [total_error(layers, basis, 16, terms) for terms in (1, 2, 4, 8)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] == pytest.approx(total_error(layers, basis, 16), rel=1e-3)


def test_omp_on_a_sparse_target_finds_its_atoms():
    """A segment built from atoms 2 and 5 of an orthonormal basis: OMP with m = 2 picks
    exactly those and reproduces it."""
    rng = np.random.default_rng(0)
    atoms, _ = np.linalg.qr(rng.normal(size=(12, 8)))
    target = (3.0 * atoms[:, 2] - 0.5 * atoms[:, 5])[:, None]
    chosen, values = fit.omp(atoms, target, 2)
    assert sorted(np.flatnonzero(chosen[:, 0])) == [2, 5]
    np.testing.assert_allclose(values[[2, 5], 0], [3.0, -0.5], atol=1e-10)


def test_combined_weight_follows_the_contract_formula():
    """W[g, s*L + r, n] = scale[g, n] * sum_k coef[g, s, k, n] * Bq[r, k], loop by loop."""
    rng = np.random.default_rng(2)
    groups, count, segment_rows, k, cols, rows = 2, 3, 4, 3, 2, 10
    levels = rng.integers(-7, 8, size=(groups, count, k, cols)).astype(np.int8)
    scale = rng.random((groups, cols)).astype(np.float32)
    basis = rng.normal(size=(segment_rows, k)).astype(np.float32)
    got = fit.combined_weight(fit.LayerFit(levels, scale), basis, rows)
    want = np.zeros((groups, rows, cols))
    for g in range(groups):
        for s in range(count):
            for r in range(segment_rows):
                if s * segment_rows + r >= rows:
                    continue
                for n in range(cols):
                    total = sum(float(levels[g, s, j, n]) * float(basis[r, j]) for j in range(k))
                    want[g, s * segment_rows + r, n] = float(scale[g, n]) * total
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --- calibration data and the data-aware fit ---------------------------------------------


@pytest.fixture(scope="module")
def lenet_grams():
    program = compile_onnx(
        DIGITS / "lenet.onnx", CompileOptions(input_shapes={"x": (1, 1, 8, 8)}), emit="graph"
    )
    data = load_calibration_data(DIGITS / "digits_test.npz", program)
    return program, input_grams(program, data, samples=160)


def test_data_aware_fit_lowers_the_output_error(lenet_grams):
    """On the digits LeNet's calibration activations, every layer's output error with
    the data-aware coefficients is below the weight-only fit's (K = 16 of 128: lossy)."""
    program, grams = lenet_grams
    layers = list(program.layers())
    weights = [program.store[layer.weight] for layer in layers]
    basis = fit.quantize_basis(fit.learn_basis(weights, 128, 16, "svd"), 8, "svd").values
    for layer, weight in zip(layers, weights, strict=True):
        gram = grams[layer.name]
        weight_only = fit.fit_layer(weight, basis, 8)
        data_aware = fit.fit_layer(weight, basis, 8, gram=gram)
        before = fit.relative_output_error(
            weight, fit.combined_weight(weight_only, basis, layer.rows), gram
        )
        after = fit.relative_output_error(
            weight, fit.combined_weight(data_aware, basis, layer.rows), gram
        )
        assert after < before, layer.name
        if before > 0.05:  # a lossy layer: the fit on its inputs recovers most of it
            assert after < 0.6 * before, (layer.name, before, after)


def test_sequential_rounding_lowers_the_output_error(lenet_grams):
    """GPTQ-style rounding of the data-aware coefficients at few bits: less output error
    than rounding each to nearest (summed over the layers)."""
    program, grams = lenet_grams
    layers = list(program.layers())
    weights = [program.store[layer.weight] for layer in layers]
    basis = fit.quantize_basis(fit.learn_basis(weights, 128, 32, "svd"), 8, "svd").values
    totals = {"nearest": 0.0, "sequential": 0.0}
    for layer, weight in zip(layers, weights, strict=True):
        for rounding in totals:
            layer_fit = fit.fit_layer(weight, basis, 4, gram=grams[layer.name], rounding=rounding)
            approx = fit.combined_weight(layer_fit, basis, layer.rows)
            totals[rounding] += fit.relative_output_error(weight, approx, grams[layer.name])
    assert totals["sequential"] < totals["nearest"]


def test_gram_of_the_first_layer_is_xtx():
    """The MLP's first Gemm reads the flattened image: its Gram matrix is X^T X of the
    samples (independent reference), summed over all of them."""
    program = compile_onnx(
        DIGITS / "mlp.onnx", CompileOptions(input_shapes={"x": (1, 1, 8, 8)}), emit="graph"
    )
    data = load_calibration_data(DIGITS / "digits_test.npz", program)
    grams = input_grams(program, data, samples=70)  # three batches, the last one partial
    first = next(iter(program.layers()))
    x = data["x"][:70].reshape(70, -1).astype(np.float64)
    np.testing.assert_allclose(grams[first.name][0], x.T @ x, rtol=1e-5, atol=1e-4)


def test_calibration_data_with_the_wrong_inputs_is_refused(tmp_path):
    program = compile_onnx(
        DIGITS / "mlp.onnx", CompileOptions(input_shapes={"x": (1, 1, 8, 8)}), emit="graph"
    )
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, images=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(XbarcError, match=r"--calibration-data .* no array named 'x'"):
        load_calibration_data(wrong_name, program)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, x=np.zeros((4, 64), np.float32))
    with pytest.raises(XbarcError, match=r"--calibration-data array 'x' has shape 4x64"):
        load_calibration_data(wrong_shape, program)


@pytest.mark.parametrize("coef_bits", [8, 12])
def test_identity_pass_stores_each_layer_as_its_levels(coef_bits):
    """The basis pass with fit=identity and q >= the weight bits: every combine's
    coefficients are its layer's quantized levels cut into segments, and its scale the
    layer's per-column scale, exactly (the lossless reference of the contract)."""
    options = CompileOptions(tiles=64, input_shapes={"x": (1, 1, 8, 8)})
    direct = compile_onnx(DIGITS / "lenet.onnx", options)
    basis = compile_onnx(
        DIGITS / "lenet.onnx",
        replace(options, strategy="basis", basis_fit="identity", coef_bits=coef_bits),
    )
    assert len(basis.combines) == len(list(direct.layers()))
    for combine in basis.combines:
        layer = basis.layer(combine.layer)
        array = direct.weights_of(layer.name)
        assert array is not None and isinstance(array.scale, Const)
        coef = basis.store[combine.coefficients]
        groups, count, k, cols = coef.shape
        assert combine.coef_bits == coef_bits and k == combine.segment_rows == 128
        unfolded = coef.reshape(groups, count * k, cols)
        np.testing.assert_array_equal(unfolded[:, : layer.rows], direct.store[array.levels])
        assert not unfolded[:, layer.rows :].any()
        assert isinstance(combine.scale, Const)
        np.testing.assert_array_equal(
            basis.store[combine.scale.name], direct.store[array.scale.name]
        )
    (basis_array,) = basis.arrays
    assert basis_array.scale == 1.0
    np.testing.assert_array_equal(basis.store[basis_array.levels][0], np.eye(128))


@pytest.mark.parametrize("objective", ["weights", "outputs"])
def test_short_last_segments_keep_coefficients_small(lenet_grams, objective):
    """K = 32 of L = 128: LeNet's last layer (32 rows) sees only the first 32 rows of the
    basis, nearly dependent there; unregularised least squares cancelled coefficients 7x
    the weights' norm. The fit keeps them within 1.5x in both objectives."""
    program, grams = lenet_grams
    layers = list(program.layers())
    weights = [program.store[layer.weight] for layer in layers]
    basis = fit.quantize_basis(fit.learn_basis(weights, 128, 32, "svd"), 8, "svd").values
    for layer, weight in zip(layers, weights, strict=True):
        gram = grams[layer.name] if objective == "outputs" else None
        layer_fit = fit.fit_layer(weight, basis, 8, gram=gram)
        coefficients = layer_fit.levels * layer_fit.scale[:, None, None, :].astype(np.float64)
        assert np.linalg.norm(coefficients) < 1.5 * np.linalg.norm(weight), layer.name
