"""Counter-based Gaussian noise (format 3): the standard normal's statistics, the transform
against the formula, independence where the hashes could leave a weak spot, the numpy
twin, and the same bits whatever the thread count."""

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
    for k in (1.0, 2.0, 3.0, 3.5, 4.0):
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


def test_tails_to_five_sigma_in_proportion():
    """2^27 draws (in runs, as the kernels draw them): the share beyond 4, 4.5 and 5 sigma
    is the normal's, and nothing lies beyond the cut at sqrt(50 ln 2)."""
    runs, length = 32, 1 << 22
    limits = (4.0, 4.5, 5.0)
    beyond = np.zeros(len(limits))
    largest = 0.0
    for run in range(runs):
        z = np.abs(gaussian.normals_range(77, run * length + 3, length))
        beyond += [np.count_nonzero(z > k) for k in limits]
        largest = max(largest, float(z.max()))
    n = runs * length
    for k, count in zip(limits, beyond, strict=True):
        p = math.erfc(k / math.sqrt(2))
        assert abs(count - n * p) < 5 * math.sqrt(n * p) + 2, (k, count, n * p)
    assert 5.2 < largest <= math.sqrt(50 * math.log(2)) + 1e-5


def test_transform_against_the_formula():
    """r = sqrt(-2 ln u) and the octant's cos and sin, on a grid of the 2^24 hash values
    (both ends included), within 2e-6 of float64: the polynomials lose nothing a test
    of the statistics could see."""
    top = np.arange(0, 1 << 24, 61, dtype=np.uint32)
    top = np.concatenate([top, np.arange(4096, dtype=np.uint32), (1 << 24) - 1 - top[:4096]])
    # the hashes whose radius and angle take these values, through the twin's own code
    h1 = top << np.uint32(8)
    radius, cosine, sine = gaussian.transform_numpy(h1, top)
    u = ((2 * top.astype(np.float64) + 1).astype(np.float32)).astype(np.float64) / 2**25
    exact = np.sqrt(-2 * np.log(u))
    assert np.all(np.abs(radius - exact) <= 2e-6 * np.maximum(exact, 1e-3))
    angle = (top.astype(np.float64) + 0.5) * math.pi / 2**26
    assert np.abs(cosine - np.cos(angle)).max() < 5e-7
    assert np.abs(sine - np.sin(angle)).max() < 5e-7
    assert radius.max() == pytest.approx(math.sqrt(50 * math.log(2)), rel=1e-6)


def test_pairs_blocks_and_neighbouring_keys_are_independent():
    """Where format 3 could leave a weak spot: the two normals of a pair (radius and angle
    from two hashes of one counter), the next pair, the same counter a block (1024 pairs)
    on, and keys 1 apart (which splitmix64 mixes into unrelated bases)."""
    n = 1 << 22
    z = gaussian.normals_range(5, 0, n).astype(np.float64)
    bound = 5 / math.sqrt(n / 2)
    first, second = z[0::2], z[1::2]
    assert abs(np.corrcoef(first, second)[0, 1]) < bound
    assert abs(np.corrcoef(first**2, second**2)[0, 1]) < bound  # r and angle independent
    for lag in (1, 2, 3, 2048, 2049):
        assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1]) < 5 / math.sqrt(n - lag), lag
    assert abs(np.corrcoef(z[:-2048] ** 2, z[2048:] ** 2)[0, 1]) < 5 / math.sqrt(n - 2048)
    for key in (6, 1 << 32, 5 + (1 << 63)):
        other = gaussian.normals_range(key, 0, n).astype(np.float64)
        assert abs(np.corrcoef(z, other)[0, 1]) < 5 / math.sqrt(n), key
        assert abs(np.corrcoef(z**2, other**2)[0, 1]) < 5 / math.sqrt(n), key
    # the angle's quadrant is uniform: each sign pattern of a pair a quarter of the pairs
    quadrants = np.bincount((first > 0) * 2 + (second > 0), minlength=4) / (n / 2)
    assert np.all(np.abs(quadrants - 0.25) < 5 * math.sqrt(0.25 * 0.75 / (n / 2)))


@pytest.mark.parametrize("first, count", [(0, 1), (3, 2), (2045, 8), (2047, 2050), (1 << 40, 99)])
def test_runs_across_blocks_equal_the_twin(first, count):
    """`normals` from any index, across the blocks of 1024 pairs, gives the twin's bits."""
    kernel = gaussian.normals_range(13, first, count)
    twin = gaussian.standard_normals_at(13, np.arange(first, first + count, dtype=np.uint64))
    assert np.array_equal(kernel, twin.astype(np.float32))
