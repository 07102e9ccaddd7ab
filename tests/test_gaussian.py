"""Counter-based Gaussian noise: the standard normal's statistics, the numpy twin, and the
same bits whatever the thread count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xbarc.runtime import gaussian, kernels

COUNT = 1 << 20


@pytest.fixture
def numpy_backend():
    kernels.set_backend("numpy")
    yield
    kernels.set_backend("numba")


def draws(key: int, shape=(16, COUNT // 16), sigma=None) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    gaussian.add_noise(out, np.ones((1, shape[1])) if sigma is None else sigma, key=key)
    return out.astype(np.float64)


def test_standard_normal_moments_and_tails():
    z = draws(11).ravel()
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    kurtosis = np.mean(z**4) / z.var() ** 2 - 3
    assert abs(kurtosis) < 5 * math.sqrt(24 / n)
    for k in (1.0, 2.0, 3.0, 3.5, 4.0):  # the tail beyond the ziggurat's base too
        p = math.erfc(k / math.sqrt(2))
        assert abs(np.mean(np.abs(z) > k) - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-6
    # symmetric, and no value repeats a neighbour's
    assert abs(np.mean(z > 0) - 0.5) < 5 * math.sqrt(0.25 / n)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / math.sqrt(n)


def test_keys_give_independent_streams_and_sigma_scales():
    a, b = draws(1).ravel(), draws(2).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
    assert np.array_equal(draws(1).ravel(), a)
    sigma = np.linspace(0.5, 2.0, 16)[:, None] * np.ones((1, 4096))
    scaled = draws(3, (16, 4096), sigma)
    unit = draws(3, (16, 4096))
    assert np.allclose(scaled, (sigma * unit).astype(np.float32), rtol=1e-6)


def test_rows_pick_sigma_rows():
    sigma = np.array([[1.0] * 64, [3.0] * 64])
    rows = np.array([1, 0, 1])
    picked = np.zeros((3, 64), np.float32)
    gaussian.add_noise(picked, sigma, rows, key=9)
    unit = np.zeros((3, 64), np.float32)
    gaussian.add_noise(unit, np.ones((1, 64)), key=9)
    assert np.allclose(picked, unit * np.array([[3.0], [1.0], [3.0]]), rtol=1e-6)
    with pytest.raises(ValueError, match="rows must pick"):
        gaussian.add_noise(picked, sigma, np.array([0, 1, 2]), key=9)


def test_numpy_twin_gives_the_same_bits(numpy_backend):
    twin = draws(7, (8, 40_000))
    kernels.set_backend("numba")
    assert np.array_equal(draws(7, (8, 40_000)), twin)
    assert np.array_equal(gaussian.standard_normals(7, 320_000).astype(np.float32), twin.ravel())


def test_same_bits_on_one_thread(monkeypatch):
    import numba

    many = draws(5)
    monkeypatch.setattr(kernels, "use_threads", lambda work: numba.set_num_threads(1))
    try:
        assert np.array_equal(draws(5), many)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_stream_keys_differ():
    keys = {gaussian.stream_key(42, counter) for counter in range(1000)}
    assert len(keys) == 1000 and gaussian.stream_key(42, 1) != gaussian.stream_key(43, 1)
