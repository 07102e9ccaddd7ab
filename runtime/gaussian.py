"""Counter-based Gaussian noise, the same bits on any number of threads.

    add_noise(out, sigma, rows, key)   # out[m, p] += sigma[rows[m], p] * z(key, m * P + p)

Each normal z is a pure function of a 64-bit key and the element's index (noise format 3):
normals come in pairs, z(key, 2k) and z(key, 2k + 1), by the Box-Muller transform in
float32 from two 32-bit hashes of the pair number k:
- blocks of 1024 pairs share a 64-bit base, the splitmix64 hash of (key, k >> 10) (one
  64-bit hash per block, so the per-pair work is 32-bit: 16 lanes of AVX-512, 8 of AVX2,
  where 64-bit multiplies are slow or emulated); a and b are its low and high halves;
- with t = (k mod 1024) * 0x9E3779B9 (mod 2^32), h1 = mix32(a + t) and h2 = mix32(b + t),
  mix32 Wellons' lowbias32 (x ^= x >> 16; x *= 0x21F0AAAD; x ^= x >> 15;
  x *= 0x735A2D97; x ^= x >> 15; a bijection with strong avalanche);
- radius r = sqrt(-2 ln u), u = (2 (h1 >> 8) + 1) / 2^25 (h1's top 24 bits), the logarithm
  from u's float32 exponent and mantissa m in [sqrt 1/2, sqrt 2): ln m = f + f^2 Q(f),
  f = m - 1, Q of degree 5 (absolute error under 1e-6);
- angle phi = (h2's low 24 bits + 1/2) pi / 2^26 in (0, pi/4), cos and sin by their Taylor
  terms (to phi^8 and phi^7: error under 4e-7); h2's bit 29 swaps them, bits 31 and 30 give
  the two signs (together a uniform angle in [0, 2 pi));
- (z0, z1) = (r cos, r sin) with those swaps and signs.
So a draw is a fixed sequence of 32-bit integer operations and float32 +, -, x and sqrt
(no division, table, branch or rejection loop): it vectorizes, and numpy computes the
same bits. |z| is at most sqrt(50 ln 2) = 5.89 (u >= 2^-25): the tails beyond it
(probability 3.9e-9) are cut. A read's noise does not depend on how the work is split
between threads, and `Seeds` stay reproducible across processes. (numpy's generators are
sequential; Numba's are per thread.)

History. Format 1, until issue 18: a Marsaglia-Tsang ziggurat in float64, about 4 ns a
draw (its table lookups and slow draws do not vectorize). Format 2 (issue 18): one
splitmix64 hash per pair and polynomials accurate to float32's last bit (the logarithm
through a division), 0.8-1 ns a draw on one thread of this AVX-512 machine, 1.3 ns with
AVX2 only. Format 3 (issue 18, third round): the 32-bit hashes, the angle reduced to an
octant and shorter polynomials (errors of 1e-6, far below what any statistic of the noise
can see) take 1.4-1.6x less time: 0.55-0.6 ns a draw on AVX-512, 0.8 on AVX2
(`benchmarks/normal_speed.py` keeps format 2 to measure against). Every noisy output
changed with each format, with the same statistics.
"""

from __future__ import annotations

import math

import numpy as np

from xbarc.runtime import kernels
from xbarc.runtime.kernels import numba_kernel, prange

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
ATTEMPT = np.uint64(0xD1B54A32D192ED03)  # another odd constant, for stream keys
BLOCK_BITS = 10  # pairs per 64-bit base: 2^BLOCK_BITS
WEYL = np.uint32(0x9E3779B9)  # the pair's step within its block (2^32 / golden ratio)
MIX1 = np.uint32(0x21F0AAAD)  # lowbias32's multipliers
MIX2 = np.uint32(0x735A2D97)
F32 = np.float32
TWO_LN2 = F32(2 * math.log(2.0))
# ln(1 + f) = f + f^2 Q(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]: Q's coefficients, the
# highest power first (a least-squares fit at Chebyshev nodes, rounded to float32)
LOG_TERMS = (
    F32(0.12282627),
    F32(-0.18482634),
    F32(0.20346346),
    F32(-0.24932815),
    F32(0.33324924),
    F32(-0.5000041),
)
SQRT_HALF_BITS = np.int32(0x3F3504F3)  # float32 sqrt(1/2)'s bits
# the angle: (h2 & 0xFFFFFF) * ANGLE_STEP + ANGLE_HALF, in (0, pi/4)
ANGLE_STEP = F32(math.pi / 2**26)
ANGLE_HALF = F32(math.pi / 2**27)
# cos y = 1 + y^2 C(y^2), sin y = y + y^3 S(y^2): Taylor terms, the highest first
COS_TERMS = tuple(F32((-1) ** k / math.factorial(2 * k)) for k in range(4, 0, -1))
SIN_TERMS = tuple(F32((-1) ** k / math.factorial(2 * k + 1)) for k in range(3, 0, -1))


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
    unused = np.empty(1, np.float32)  # `normals`' format-2 scratch
    offset = normals(np.uint64(key % 2**64), np.uint64(first), count, out, unused, unused, unused)
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


def _mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32 (uint32 arithmetic wraps)."""
    x = x ^ (x >> np.uint32(16))
    x = x * MIX1
    x = x ^ (x >> np.uint32(15))
    x = x * MIX2
    return x ^ (x >> np.uint32(15))


def transform_numpy(h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, ...]:
    """The radius sqrt(-2 ln u) of hashes `h1` and the cosine and sine of the octant's angle
    of hashes `h2` (uint32 arrays), float32: `block_numba`'s operations."""
    wide = ((h1 >> np.uint32(7)) | np.uint32(1)).astype(np.int32).astype(F32)
    bits = wide.view(np.int32) - SQRT_HALF_BITS  # wide = m 2^exponent, m in [sqrt .5, sqrt 2)
    exponent = (bits >> np.int32(23)).astype(F32)
    f = ((bits & np.int32(0x7FFFFF)) + SQRT_HALF_BITS).view(F32) - F32(1.0)
    q = np.full_like(f, LOG_TERMS[0])
    for term in LOG_TERMS[1:]:
        q = q * f + term
    ln_m = f + f * f * q
    radius = np.sqrt((F32(25.0) - exponent) * TWO_LN2 - F32(2.0) * ln_m)
    angle = (h2 & np.uint32(0xFFFFFF)).astype(np.int32).astype(F32) * ANGLE_STEP + ANGLE_HALF
    y2 = angle * angle
    c = np.full_like(y2, COS_TERMS[0])
    for term in COS_TERMS[1:]:
        c = c * y2 + term
    cosine = c * y2 + F32(1.0)
    s = np.full_like(y2, SIN_TERMS[0])
    for term in SIN_TERMS[1:]:
        s = s * y2 + term
    sine = s * y2 * angle + angle
    return radius, cosine, sine


def _normals_numpy(key: np.uint64, index: np.ndarray) -> np.ndarray:
    """z(key, index) for a 1-D array of indices, float32: `pairs_numba`'s operations."""
    pair = index.astype(np.uint64) >> np.uint64(1)
    with np.errstate(over="ignore"):
        base = _mix(key + (pair >> np.uint64(BLOCK_BITS)) * GOLDEN)
        low = (base & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        high = (base >> np.uint64(32)).astype(np.uint32)
        step = (pair & np.uint64(2**BLOCK_BITS - 1)).astype(np.uint32) * WEYL
        h1 = _mix32(low + step)
        h2 = _mix32(high + step)
    radius, cosine, sine = transform_numpy(h1, h2)
    swap = (h2 & np.uint32(1 << 29)) != 0
    first = np.where(swap, sine, cosine).view(np.int32) ^ (h2 & np.uint32(1 << 31)).view(np.int32)
    second = np.where(swap, cosine, sine).view(np.int32) ^ (
        (h2 << np.uint32(1)) & np.uint32(1 << 31)
    ).view(np.int32)
    odd = (index & 1) == 1
    return radius * np.where(odd, second, first).view(F32)


# ---------------------------------------------------------------------------------------
# Numba kernels, compiled on first use (error_model="numpy": a division that cannot fail
# need not be checked, so the loops vectorize).


@numba_kernel(inline="always")
def mix_numba(z):
    """splitmix64's finalizer (uint64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba_kernel(inline="always")
def mix32_numba(x):
    """lowbias32 (uint32)."""
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * MIX1)
    x = np.uint32(x ^ (x >> np.uint32(15)))
    x = np.uint32(x * MIX2)
    return np.uint32(x ^ (x >> np.uint32(15)))


@numba_kernel(error_model="numpy")
def block_numba(low, high, first, count, out):
    """out[2i], out[2i + 1] = the pair of normals of pair `first` + i of a block whose base
    halves are `low` and `high`, i < `count` (a loop of its own: it vectorizes)."""
    for i in range(count):
        step = np.uint32(np.uint32(first + np.uint32(i)) * WEYL)
        h1 = mix32_numba(np.uint32(low + step))
        h2 = mix32_numba(np.uint32(high + step))
        wide = np.float32(np.int32((h1 >> np.uint32(7)) | np.uint32(1)))
        bits = np.int32(wide.view(np.int32) - SQRT_HALF_BITS)  # m 2^exponent, m in [.71, 1.41)
        exponent = np.float32(bits >> np.int32(23))
        mantissa = np.int32((bits & np.int32(0x7FFFFF)) + SQRT_HALF_BITS).view(np.float32)
        f = mantissa - np.float32(1.0)
        q = LOG_TERMS[0]
        for j in range(1, len(LOG_TERMS)):
            q = q * f + LOG_TERMS[j]
        ln_m = f + f * f * q
        radius = np.sqrt((np.float32(25.0) - exponent) * TWO_LN2 - np.float32(2.0) * ln_m)
        angle = np.float32(np.int32(h2 & np.uint32(0xFFFFFF))) * ANGLE_STEP + ANGLE_HALF
        y2 = angle * angle
        c = COS_TERMS[0]
        for j in range(1, len(COS_TERMS)):
            c = c * y2 + COS_TERMS[j]
        cosine = c * y2 + np.float32(1.0)
        s = SIN_TERMS[0]
        for j in range(1, len(SIN_TERMS)):
            s = s * y2 + SIN_TERMS[j]
        sine = s * y2 * angle + angle
        swap = (h2 & np.uint32(1 << 29)) != np.uint32(0)
        one = sine if swap else cosine
        two = cosine if swap else sine
        sign1 = np.int32(h2 & np.uint32(1 << 31))
        sign2 = np.int32((h2 << np.uint32(1)) & np.uint32(1 << 31))
        out[2 * i] = radius * np.int32(np.float32(one).view(np.int32) ^ sign1).view(np.float32)
        out[2 * i + 1] = radius * np.int32(np.float32(two).view(np.int32) ^ sign2).view(np.float32)


@numba_kernel()
def pairs_numba(key, first_pair, count, out):
    """out[2i], out[2i + 1] = the pair of normals of (`key`, `first_pair` + i), i <
    `count`: one `block_numba` call per block of pairs."""
    done = 0
    while done < count:
        pair = first_pair + np.uint64(done)
        first = np.uint32(pair & np.uint64(2**BLOCK_BITS - 1))
        run = min(count - done, 2**BLOCK_BITS - np.int64(first))
        base = mix_numba(key + (pair >> np.uint64(BLOCK_BITS)) * GOLDEN)
        low = np.uint32(base & np.uint64(0xFFFFFFFF))
        high = np.uint32(base >> np.uint64(32))
        block_numba(low, high, first, run, out[2 * done : 2 * (done + run)])
        done += run


@numba_kernel()
def normals(key, first, count, out, wide, turn, exponents):
    """The normals of (`key`, `first` + i), i < `count`, into `out` (float32, at least
    `count` + 2) from `out[offset]` on; returns the offset (0 or 1). `wide`, `turn`,
    `exponents`: format 2's scratch, unused since format 3 (kept: the callers' signature)."""
    if count <= 0:
        return 0
    first_pair = first >> np.uint64(1)
    last_pair = (first + np.uint64(count - 1)) >> np.uint64(1)
    pairs_numba(key, first_pair, np.int64(last_pair - first_pair) + 1, out)
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
        unused = np.empty(1, dtype=np.float32)  # `normals`' format-2 scratch
        offset = normals(key, np.uint64(start), stop - start, z, unused, unused, unused)
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
