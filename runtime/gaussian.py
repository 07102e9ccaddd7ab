"""Counter-based Gaussian noise, the same bits on any number of threads.

    add_noise(out, sigma, rows, key)   # out[m, p] += sigma[rows[m], p] * z(key, m * P + p)

Each normal z is a pure function of a 64-bit key and the element's index: normals come in
pairs, z(key, 2k) and z(key, 2k + 1) from the splitmix64 hash of (key, k), by the
Box-Muller transform in float32: r = sqrt(-2 ln u), (z0, z1) = (r cos 2 pi v, r sin 2 pi
v), u from the hash's top 24 bits and v from its low 24 bits (u, v = (k + 1/2) / 2^24).
The logarithm, cosine and sine are polynomials written out here (an atanh series on the
mantissa, Taylor terms on an angle reduced to [0, pi/2]; accurate to float32's last bits),
so a draw is a fixed sequence of float32 +, -, x, / and sqrt: it vectorizes (no table, no
branch, no rejection loop; 16 lanes at a time) and numpy computes the same bits. |z| is at
most sqrt(50 ln 2) = 5.89 (u >= 2^-25): the tails beyond it (probability 3.9e-9) are cut.
So a read's noise does not depend on how the work is split between threads, and `Seeds`
stay reproducible across processes. (numpy's generators are sequential; Numba's are per
thread.)

Format 2 (issue 18): until then a Marsaglia-Tsang ziggurat in float64 turned each index's
hash into one normal; its table lookups do not vectorize and its slow draws (2.8 % of
them) cost as much as the rest, about 4 ns a draw against 0.8 ns now. Every noisy output
changed with the switch, with the same statistics.
"""

from __future__ import annotations

import math

import numpy as np

from xbarc.runtime import kernels
from xbarc.runtime.kernels import numba_kernel, prange

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
ATTEMPT = np.uint64(0xD1B54A32D192ED03)  # another odd constant, for stream keys
F32 = np.float32
LN2 = F32(math.log(2.0))
SQRT2 = F32(math.sqrt(2.0))
TWO_PI = F32(2 * math.pi)
# atanh series: ln m = 2 s (1 + s^2/3 + s^4/5 + ...), s = (m - 1) / (m + 1), |s| < 0.172
LOG_TERMS = tuple(F32(1.0 / k) for k in range(11, 0, -2))  # 1/11, 1/9, ..., 1
# cos y and sin y / y in powers of y^2, y in [0, pi/2]: highest term first
COS_TERMS = tuple(F32((-1) ** k / math.factorial(2 * k)) for k in range(7, -1, -1))
SIN_TERMS = tuple(F32((-1) ** k / math.factorial(2 * k + 1)) for k in range(6, -1, -1))


def add_noise(
    out: np.ndarray, sigma: np.ndarray, rows: np.ndarray | None = None, key: int = 0
) -> None:
    """out[m, p] += sigma[rows[m], p] * z (summed in float64, rounded once), z the standard
    normal of (key, m * P + p); `out` float32 or float64 [M, P] C-contiguous, `sigma` [R, P], `rows`
    int64 [M] (default: row m, or row 0 for all when R is 1)."""
    if (
        out.ndim != 2
        or out.dtype not in (np.float32, np.float64)
        or not out.flags.c_contiguous
        or sigma.ndim != 2
        or sigma.shape[1] != out.shape[1]
    ):
        raise ValueError(f"add_noise: out {out.dtype} {out.shape}, sigma {sigma.shape}")
    if rows is None:
        rows = np.arange(len(out)) if len(sigma) == len(out) else np.zeros(len(out), np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != (len(out),) or (rows.size and not 0 <= rows.min() <= rows.max() < len(sigma)):
        raise ValueError(f"add_noise: rows must pick one of {len(sigma)} sigma rows per row")
    sigma = np.ascontiguousarray(sigma, dtype=np.float64)
    if kernels.backend() == "numpy":
        add_noise_numpy(out, sigma, rows, key)
        return
    kernels.use_threads(kernels.PARALLEL_WORK)
    add_noise_numba(out, sigma, rows, np.uint64(key % 2**64))


def stream_key(seed: int, counter: int) -> int:
    """The key of the `counter`-th draw of the stream `seed` (a hash of both)."""
    value = np.array([(seed + counter * int(ATTEMPT)) % 2**64], np.uint64)
    with np.errstate(over="ignore"):
        return int(_mix(_mix(value))[0])


def standard_normals(key: int, count: int) -> np.ndarray:
    """The normals z(key, 0..count-1) of `add_noise`, in float64 (numpy twin)."""
    return _normals_numpy(np.uint64(key % 2**64), np.arange(count)).astype(np.float64)


def standard_normals_at(key: int, index: np.ndarray) -> np.ndarray:
    """The normals z(key, index) for an array of non-negative indices, in its shape
    (numpy twin)."""
    index = np.asarray(index)
    z = _normals_numpy(np.uint64(key % 2**64), index.reshape(-1))
    return z.astype(np.float64).reshape(index.shape)


def normals_range(key: int, first: int, count: int) -> np.ndarray:
    """The normals z(key, first .. first + count - 1), float32 (as the kernels draw them)."""
    if kernels.backend() == "numpy" or count <= 0:
        index = np.arange(first, first + max(count, 0), dtype=np.uint64)
        return _normals_numpy(np.uint64(key % 2**64), index)
    out = np.empty(count + 2, np.float32)
    scratch = [np.empty(count // 2 + 2, np.float32) for _ in range(3)]
    offset = normals(np.uint64(key % 2**64), np.uint64(first), count, out, *scratch)
    return out[offset : offset + count]


def add_noise_numpy(out: np.ndarray, sigma: np.ndarray, rows: np.ndarray, key: int) -> None:
    count, patches = out.shape
    z = _normals_numpy(np.uint64(key % 2**64), np.arange(count * patches)).reshape(count, -1)
    out[...] = out + sigma[rows] * z  # summed in float64, rounded once, as the kernel does


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _normals_numpy(key: np.uint64, index: np.ndarray) -> np.ndarray:
    """z(key, index) for a 1-D array of indices, float32: `pairs_numba`'s operations."""
    index = index.astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(key + (index >> np.uint64(1)) * GOLDEN)
    wide = ((h >> np.uint64(40)) * np.uint64(2) + np.uint64(1)).astype(F32)
    turn = (h & np.uint64(0xFFFFFF)).astype(F32) * F32(1.0 / 16777216.0) + F32(0.5 / 16777216.0)
    mantissa, exponent = np.frexp(wide)  # wide = mantissa 2^exponent, mantissa in [0.5, 1)
    mantissa = mantissa * F32(2.0)
    exponent = (exponent - 1).astype(F32)
    big = mantissa > SQRT2
    mantissa = np.where(big, mantissa * F32(0.5), mantissa)
    exponent = np.where(big, exponent + F32(1.0), exponent)
    s = (mantissa - F32(1.0)) / (mantissa + F32(1.0))
    s2 = s * s
    series = np.full_like(s, LOG_TERMS[0])
    for term in LOG_TERMS[1:]:
        series = series * s2 + term
    radius = np.sqrt(F32(-2.0) * (F32(2.0) * s * series + (exponent - F32(25.0)) * LN2))
    d = F32(0.5) - turn  # 2 pi v = pi - 2 pi d, d in (-1/2, 1/2)
    t = np.abs(d)
    far = t > F32(0.25)
    y = TWO_PI * np.where(far, F32(0.5) - t, t)
    y2 = y * y
    cosine = np.full_like(y, COS_TERMS[0])
    for term in COS_TERMS[1:]:
        cosine = cosine * y2 + term
    sine = np.full_like(y, SIN_TERMS[0])
    for term in SIN_TERMS[1:]:
        sine = sine * y2 + term
    sine = sine * y
    first = radius * np.where(far, cosine, -cosine)
    second = radius * np.where(d >= F32(0.0), sine, -sine)
    return np.where((index & np.uint64(1)) == 0, first, second)


# ---------------------------------------------------------------------------------------
# Numba kernels, compiled on first use (error_model="numpy": a division that cannot fail
# need not be checked, so the loops vectorize).


@numba_kernel(inline="always")
def mix_numba(z):
    """splitmix64's finalizer (uint64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba_kernel(error_model="numpy")
def pairs_numba(key, first_pair, count, out, wide, turn, exponents):
    """out[2i], out[2i + 1] = the pair of normals of (`key`, `first_pair` + i), i <
    `count`; `wide`, `turn`, `exponents` float32 scratch of at least `count`."""
    for k in range(count):
        h = mix_numba(key + (first_pair + np.uint64(k)) * GOLDEN)
        wide[k] = np.float32((h >> np.uint64(40)) * np.uint64(2) + np.uint64(1))
        turn[k] = np.float32(h & np.uint64(0xFFFFFF)) * np.float32(1.0 / 16777216.0) + np.float32(
            0.5 / 16777216.0
        )
    bits = wide.view(np.int32)
    for k in range(count):  # wide = mantissa 2^exponent, mantissa in [1, 2)
        b = bits[k]
        exponents[k] = np.float32((b >> 23) - 127)
        bits[k] = (b & np.int32(0x7FFFFF)) | np.int32(0x3F800000)
    for k in range(count):
        mantissa = wide[k]
        exponent = exponents[k]
        big = mantissa > SQRT2
        mantissa = mantissa * np.float32(0.5) if big else mantissa
        exponent = exponent + np.float32(1.0) if big else exponent
        s = (mantissa - np.float32(1.0)) / (mantissa + np.float32(1.0))
        s2 = s * s
        series = LOG_TERMS[0]
        for j in range(1, len(LOG_TERMS)):
            series = series * s2 + LOG_TERMS[j]
        log_u = np.float32(2.0) * s * series + (exponent - np.float32(25.0)) * LN2
        radius = np.sqrt(np.float32(-2.0) * log_u)
        d = np.float32(0.5) - turn[k]
        t = abs(d)
        far = t > np.float32(0.25)
        y = TWO_PI * (np.float32(0.5) - t if far else t)
        y2 = y * y
        cosine = COS_TERMS[0]
        for j in range(1, len(COS_TERMS)):
            cosine = cosine * y2 + COS_TERMS[j]
        sine = SIN_TERMS[0]
        for j in range(1, len(SIN_TERMS)):
            sine = sine * y2 + SIN_TERMS[j]
        sine = sine * y
        out[2 * k] = radius * (cosine if far else -cosine)
        out[2 * k + 1] = radius * (sine if d >= np.float32(0.0) else -sine)


@numba_kernel()
def normals(key, first, count, out, wide, turn, exponents):
    """The normals of (`key`, `first` + i), i < `count`, into `out` (float32, at least
    `count` + 2) from `out[offset]` on; returns the offset (0 or 1). Scratch: `wide`,
    `turn`, `exponents` float32 of at least `count` // 2 + 2."""
    if count <= 0:
        return 0
    first_pair = first >> np.uint64(1)
    last_pair = (first + np.uint64(count - 1)) >> np.uint64(1)
    pairs_numba(key, first_pair, np.int64(last_pair - first_pair) + 1, out, wide, turn, exponents)
    return np.int64(first & np.uint64(1))


# Draws per task of `add_noise_numba`: runs of the flat output, whatever its rows' length
# (a row of 49 patches, ResNet-50's last layers at batch 1, is too short a task).
NOISE_TASK = 4096


@numba_kernel(parallel=True)
def add_noise_numba(out, sigma, rows, key):
    """`add_noise` on checked arguments: one task per run of NOISE_TASK elements of the
    flat `out` (the normals of a run are consecutive indices: one `normals` call)."""
    count, patches = out.shape
    total = count * patches
    flat = out.reshape(-1)
    tasks = (total + NOISE_TASK - 1) // NOISE_TASK
    for task in prange(tasks):
        start = task * NOISE_TASK
        stop = min(start + NOISE_TASK, total)
        z = np.empty(NOISE_TASK + 2, dtype=np.float32)
        wide = np.empty(NOISE_TASK // 2 + 2, dtype=np.float32)
        turn = np.empty(NOISE_TASK // 2 + 2, dtype=np.float32)
        exponents = np.empty(NOISE_TASK // 2 + 2, dtype=np.float32)
        offset = normals(key, np.uint64(start), stop - start, z, wide, turn, exponents)
        at = start
        while at < stop:
            m = at // patches
            p = at - m * patches
            run = min(stop - at, patches - p)
            s = rows[m]
            base = offset + at - start
            for k in range(run):
                flat[at + k] += sigma[s, p + k] * np.float64(z[base + k])
            at += run
