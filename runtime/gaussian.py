"""Counter-based Gaussian noise, the same bits on any number of threads.

    add_noise(out, sigma, rows, key)   # out[m, p] += sigma[rows[m], p] * z(key, m * P + p)

Each normal z is a pure function of a 64-bit key and the element's index: the splitmix64
hash of the two gives the random bits, Marsaglia and Tsang's ziggurat (128 layers) turns
them into a standard normal, and the rare draws outside the ziggurat's rectangles (about
1 %) hash again with an attempt counter. So a read's noise does not depend on how the work
is split between threads, and `Seeds` stay reproducible across processes. (numpy's
generators are sequential; Numba's are per thread.) The Numba kernel runs in parallel;
`add_noise_numpy` is its vectorized twin (equal up to the last bit of the libm `exp` and
`log` in the rare slow path).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from xbarc.runtime import kernels

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
ATTEMPT = np.uint64(0xD1B54A32D192ED03)  # another odd constant, for redraws
R = 3.442619855899  # start of the ziggurat's tail
LAYERS = 128


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia and Tsang's tables for 32-bit draws: kn (acceptance bounds), wn (widths
    over 2^31), fn (density at the layer edges)."""
    m1 = 2147483648.0
    v = 9.91256303526217e-3
    kn = np.zeros(LAYERS, np.int64)
    wn = np.zeros(LAYERS)
    fn = np.zeros(LAYERS)
    dn = tn = R
    q = v / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[LAYERS - 1] = dn / m1
    fn[0] = 1.0
    fn[LAYERS - 1] = math.exp(-0.5 * dn * dn)
    for i in range(LAYERS - 2, 0, -1):
        dn = math.sqrt(-2.0 * math.log(v / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


KN, WN, FN = _tables()


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
    _numba()(out, sigma, rows, np.uint64(key % 2**64), KN, WN, FN)


def stream_key(seed: int, counter: int) -> int:
    """The key of the `counter`-th draw of the stream `seed` (a hash of both)."""
    value = np.array([(seed + counter * int(ATTEMPT)) % 2**64], np.uint64)
    with np.errstate(over="ignore"):
        return int(_mix(_mix(value))[0])


def standard_normals(key: int, count: int) -> np.ndarray:
    """The normals z(key, 0..count-1) of `add_noise`, in float64 (numpy twin)."""
    return _normals_numpy(np.uint64(key % 2**64), np.arange(count))


def add_noise_numpy(out: np.ndarray, sigma: np.ndarray, rows: np.ndarray, key: int) -> None:
    count, patches = out.shape
    z = _normals_numpy(np.uint64(key % 2**64), np.arange(count * patches)).reshape(count, -1)
    out[...] = out + sigma[rows] * z  # summed in float64, rounded once, as the kernel does


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(h: np.ndarray) -> np.ndarray:
    """(0, 1] from the top 53 bits of a hash."""
    return ((h >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / 9007199254740992.0)


def _normals_numpy(key: np.uint64, index: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        base = key + index.astype(np.uint64) * GOLDEN
        h = _mix(base)
    hz = (h & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32).astype(np.int64)
    iz = ((h >> np.uint64(32)) & np.uint64(LAYERS - 1)).astype(np.int64)
    z = hz * WN[iz]
    slow = np.flatnonzero(np.abs(hz) >= KN[iz])
    for at in slow:  # about 1 %: the scalar algorithm, as the Numba kernel runs it
        z[at] = _slow_normal(int(base[at]), int(hz[at]), int(iz[at]))
    return z


def _slow_normal(base: int, hz: int, iz: int) -> float:
    attempt = 0

    def draw() -> int:
        nonlocal attempt
        attempt += 1
        value = (base + attempt * int(ATTEMPT)) % 2**64
        return int(_mix(np.array([value], np.uint64))[0])

    while True:
        x = hz * WN[iz]
        if iz == 0:  # the tail beyond R
            while True:
                x = -math.log(_uniform(np.array([draw()], np.uint64))[0]) / R
                y = -math.log(_uniform(np.array([draw()], np.uint64))[0])
                if y + y >= x * x:
                    break
            return R + x if hz > 0 else -R - x
        u = _uniform(np.array([draw()], np.uint64))[0]
        if FN[iz] + u * (FN[iz - 1] - FN[iz]) < math.exp(-0.5 * x * x):
            return x
        h = draw()
        hz = int(np.array([h & 0xFFFFFFFF], np.uint64).astype(np.uint32).view(np.int32)[0])
        iz = (h >> 32) & (LAYERS - 1)
        if abs(hz) < KN[iz]:
            return hz * WN[iz]


@functools.cache
def _numba():
    import numba
    from numba import prange

    jit = numba.njit(cache=True)
    inline = numba.njit(cache=True, inline="always")

    @inline
    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    @inline
    def uniform(h):
        return (np.float64(h >> np.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)

    @jit
    def slow_normal(base, hz, iz, kn, wn, fn):
        attempt = np.uint64(0)
        while True:
            x = hz * wn[iz]
            if iz == 0:
                while True:
                    attempt += np.uint64(1)
                    x = -math.log(uniform(mix(base + attempt * ATTEMPT))) / R
                    attempt += np.uint64(1)
                    y = -math.log(uniform(mix(base + attempt * ATTEMPT)))
                    if y + y >= x * x:
                        break
                return R + x if hz > 0 else -R - x
            attempt += np.uint64(1)
            u = uniform(mix(base + attempt * ATTEMPT))
            if fn[iz] + u * (fn[iz - 1] - fn[iz]) < math.exp(-0.5 * x * x):
                return x
            attempt += np.uint64(1)
            h = mix(base + attempt * ATTEMPT)
            hz = np.int64(np.int32(np.uint32(h & np.uint64(0xFFFFFFFF))))
            iz = np.int64((h >> np.uint64(32)) & np.uint64(LAYERS - 1))
            if abs(hz) < kn[iz]:
                return hz * wn[iz]

    @numba.njit(cache=True, parallel=True)
    def add_noise_kernel(out, sigma, rows, key, kn, wn, fn):
        count, patches = out.shape
        for m in prange(count):
            s = rows[m]
            for p in range(patches):
                base = key + np.uint64(m * patches + p) * GOLDEN
                h = mix(base)
                hz = np.int64(np.int32(np.uint32(h & np.uint64(0xFFFFFFFF))))
                iz = np.int64((h >> np.uint64(32)) & np.uint64(LAYERS - 1))
                fast = abs(hz) < kn[iz]  # about 99 % of draws
                z = hz * wn[iz] if fast else slow_normal(base, hz, iz, kn, wn, fn)
                out[m, p] += sigma[s, p] * z

    return add_noise_kernel
