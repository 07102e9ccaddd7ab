"""Device models: what a programmed RRAM/PCM cell conducts, and what a read adds.

Each function takes arrays, numbers and a numpy Generator, never IR objects; the executor
decides which tile and which seed (`noise.Seeds`). Conductances are in microsiemens.

Mapping (aihwkit's single pair, CrossSim): a cell at level L of `cell_max` targets
G = g_min + (g_max - g_min) L / cell_max. The periphery takes the g_min baseline off every
read (its contribution is known from the inputs, as the offset correction is), so a read
sees the *effective level* (G - g_min) / (g_max - g_min) * cell_max: L itself when the
cell holds its target.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np

from xbarc.runtime.noise import NoiseSettings

# sigma(G) polynomials in x = G / g_max, microsiemens at their reference g_max
# (aihwkit's ReRamWan2022NoiseModel at 1 s, and PCMLikeNoiseModel)
PROGRAMMING_POLYNOMIALS = {
    "rram": ((0.348, 16.030, -43.853, 45.393, -16.815), 40.0),
    "pcm": ((0.26348, 1.9650, -1.1731), 25.0),
}


def target_conductance(levels: np.ndarray, cell_max: int, g_min: float, g_max) -> np.ndarray:
    """G = g_min + (g_max - g_min) * levels / cell_max (g_max may be per cell)."""
    return g_min + (np.asarray(g_max) - g_min) * (np.asarray(levels, np.float64) / cell_max)


def effective_levels(g: np.ndarray, cell_max: int, g_min: float, g_max: float) -> np.ndarray:
    """What a read sees of conductances `g`, in level units of the nominal range."""
    return ((g - g_min) * (cell_max / (g_max - g_min))).astype(np.float32)


def programming_sigma(
    settings: NoiseSettings, g: np.ndarray, g_max: float | np.ndarray
) -> np.ndarray:
    """The standard deviation of programming a cell to target `g` (uS)."""
    model = settings.programming
    if model == "none":
        return np.zeros_like(g)
    if model == "relative":
        sigma = settings.programming_relative * np.abs(g)
    else:
        coefficients, reference = PROGRAMMING_POLYNOMIALS[model]
        x = g / g_max
        sigma = np.zeros_like(g)
        for coefficient in reversed(coefficients):  # Horner
            sigma = sigma * x + coefficient
        sigma = np.maximum(sigma, 0.0) * (g_max / reference)
    return settings.programming_scale * sigma


def device_g_max(
    settings: NoiseSettings, shape: tuple[int, ...], g_min: float, g_max: float, rng
) -> np.ndarray | float:
    """Each device's own g_max (device-to-device spread, a property of the chip): g_max
    (1 + g_max_spread xi), kept above g_min."""
    if settings.g_max_spread == 0:
        return g_max
    spread = g_max * (1.0 + settings.g_max_spread * rng.standard_normal(shape))
    return np.maximum(spread, g_min)


def stuck_cells(settings: NoiseSettings, shape: tuple[int, ...], rng) -> np.ndarray:
    """Per cell: 0 healthy, 1 stuck at g_min (SA0, probability p_sa0), 2 stuck at g_max
    (SA1, p_sa1): a property of the chip, the same at every programming."""
    u = rng.random(shape)
    state = np.zeros(shape, np.int8)
    state[u < settings.p_sa0] = 1
    state[(u >= settings.p_sa0) & (u < settings.p_sa0 + settings.p_sa1)] = 2
    return state


def program(
    target: np.ndarray,
    settings: NoiseSettings,
    g_min: float,
    g_max: float | np.ndarray,
    rng,
    *,
    stuck: np.ndarray | None = None,
) -> np.ndarray:
    """Programmed conductances for `target` (uS): Gaussian programming noise of
    `programming_sigma`, clipped at 0 (aihwkit), then the stuck cells at their rails.
    `g_max` is a number or, with a device-to-device spread, each cell's own (a cell
    stuck at g_max conducts its own device's)."""
    g = target + programming_sigma(settings, target, g_max) * rng.standard_normal(target.shape)
    np.maximum(g, 0.0, out=g)
    if stuck is not None:
        g[stuck == 1] = g_min
        g[stuck == 2] = np.broadcast_to(g_max, g.shape)[stuck == 2]
    return g


def drift_exponents(settings: NoiseSettings, target: np.ndarray, g_max: float, rng) -> np.ndarray:
    """Each cell's drift exponent nu >= 0: |N(drift_nu, drift_nu_std)| (`constant`), or
    aihwkit's PCM fit |N(mu(x), sigma(x))| with x = G_target / g_max,
    mu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1), sigma = clip(-0.0125 ln x - 0.0059,
    0.008, 0.045)."""
    if settings.drift == "constant":
        mean = np.full(target.shape, settings.drift_nu)
        std = np.full(target.shape, settings.drift_nu_std)
    else:
        x = np.maximum(np.abs(target / g_max), 1e-7)
        mean = np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1)
        std = np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045)
    return np.abs(mean + std * rng.standard_normal(target.shape))


def drifted(g: np.ndarray, nu: np.ndarray, t: float, t0: float) -> np.ndarray:
    """G(t) = G ((t + t0) / t0)^-nu, `t` seconds after programming."""
    return g * ((t + t0) / t0) ** (-nu)


def read_noise_sigma(
    settings: NoiseSettings,
    drive: np.ndarray,
    cells: np.ndarray,
    cell_max: int,
    digit_max: int,
) -> np.ndarray:
    """The standard deviation a read adds to each column sum before the ADC, in the
    read's units (levels x DAC digits): [1, P] (the same for every column) or [M, P].
    `drive` [rows, P] holds the DAC digits and `cells` [M, rows] the effective levels. In
    normalized units (weights |W| <= 1, inputs |x| <= 1, one cell at g_max driven at full
    scale = 1): additive: read_sigma |x|_2; pcm: read_sigma sqrt(sum |W| x^2); then
    output_noise, independent, added in quadrature."""
    unit, output_variance, coefficient = read_noise_terms(settings, cell_max, digit_max)
    variance = np.full((1, drive.shape[1]), output_variance)
    if settings.read_noise == "additive":
        squares = np.einsum("rp,rp->p", drive, drive).astype(np.float64)  # one pass
        variance = variance + coefficient * squares[None, :]
    elif settings.read_noise == "pcm":
        weighted = np.abs(cells) @ np.square(drive)  # sum |W| x^2, in level x digit^2 units
        variance = variance + coefficient * weighted.astype(np.float64)
    return unit * np.sqrt(variance)


def read_noise_terms(
    settings: NoiseSettings, cell_max: int, digit_max: int
) -> tuple[float, float, float]:
    """(unit, output variance, coefficient) of the read noise in read units: sigma =
    unit sqrt(output variance + coefficient S), S = sum x^2 over the read's rows
    (additive) or sum |W| x^2 (pcm; 0 for no read noise), per patch (and column)."""
    unit = float(cell_max * digit_max)  # one full cell at full drive, in read units
    coefficient = 0.0
    if settings.read_noise == "additive":
        coefficient = float(np.square(settings.read_sigma / digit_max))
    elif settings.read_noise == "pcm":
        coefficient = float(np.square(settings.read_sigma) / (cell_max * digit_max**2))
    return unit, float(np.square(settings.output_noise)), coefficient


class Chip:
    """The devices of one simulated chip: per physical tile, its stuck cells and g_max
    spread (drawn once from the chip seed), a fresh programming-noise draw at every
    programming of the tile (chip seed, keyed by tile and programming count), drift to
    `t_inference` (time seed, same keys) and first-order IR drop. Works in effective
    levels."""

    def __init__(self, settings: NoiseSettings, seeds, cell_bits: int, g_min: float, g_max: float):
        self.settings = settings
        self.seeds = seeds
        self.cell_max = 2**cell_bits - 1
        self.g_min = g_min
        self.g_max = g_max
        self._devices: dict[int, tuple[np.ndarray | None, np.ndarray | float]] = {}
        self._programmed: dict[int, int] = {}  # tile -> times programmed

    def devices(self, tile: int, shape: tuple[int, int]):
        """The tile's stuck cells (or None) and per-cell g_max."""
        found = self._devices.get(tile)
        if found is None:
            rng = self.seeds.rng("chip", tile, 0)
            settings = self.settings
            stuck = stuck_cells(settings, shape, rng) if settings.p_sa0 + settings.p_sa1 else None
            g_max = device_g_max(settings, shape, self.g_min, self.g_max, rng)
            found = self._devices[tile] = (stuck, g_max)
        return found

    def program(self, tile: int, levels: np.ndarray) -> np.ndarray:
        """Effective levels a read sees after programming `tile` to `levels` [rows, cols]
        (level units of cell_max, float) and letting it drift to t_inference; taken from
        the memo of `programming_memo` when one is open and holds them."""
        count = self._programmed.get(tile, 0) + 1
        self._programmed[tile] = count
        memo = _MEMO.get("open")
        if memo is None:
            return self._program(tile, count, levels)
        chip = (self.settings, self.seeds, self.cell_max, self.g_min, self.g_max)
        if memo.get("chip") != chip:  # one chip at a time: chips can be large
            memo.clear()
            memo["chip"] = chip
        key = (tile, count, levels.shape, hashlib.blake2b(levels.tobytes()).digest())
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._program(tile, count, levels)
            found.flags.writeable = False
        return found.copy()

    def _program(self, tile: int, count: int, levels: np.ndarray) -> np.ndarray:
        """`program` of the `count`-th programming of `tile`, computed."""
        settings = self.settings
        stuck, g_max = self.devices(tile, levels.shape)
        target = target_conductance(levels, self.cell_max, self.g_min, g_max)
        g = program(
            target, settings, self.g_min, g_max, self.seeds.rng("chip", tile, count), stuck=stuck
        )
        if settings.drift != "none" and settings.t_inference > 0:
            rng = self.seeds.rng("time", tile, count)
            nu = drift_exponents(settings, target, self.g_max, rng)
            programmed = g
            g = drifted(g, nu, settings.t_inference, settings.t0)
            if settings.drift_compensation:
                # a reference read of the whole tile (all rows driven) right after
                # programming and now: the periphery rescales by their ratio
                now = g.sum()
                if now > 0:
                    g = g * (programmed.sum() / now)
        if settings.wire_resistance > 0:
            g = ir_drop_first_order(g, settings.wire_resistance)
        return effective_levels(g, self.cell_max, self.g_min, self.g_max)


# The open memo of `programming_memo` ("open" -> {"chip": its key, (tile, count, shape,
# digest of the levels) -> effective levels}), if any.
_MEMO: dict[str, dict] = {}


@contextlib.contextmanager
def programming_memo() -> Iterator[None]:
    """Within it, each `Chip.program` result is kept (for the last chip's settings and
    seeds only) and given again to any chip that programs the same tile, the same time, to
    the same levels: programming is a function of those and the seeds, so the cells are
    the same bits. `eval --seeds N --sensitivity` programs each chip seed once instead of
    once per layer."""
    if "open" in _MEMO:  # nested: the outer one serves
        yield
        return
    _MEMO["open"] = {}
    try:
        yield
    finally:
        _MEMO.clear()


# --- IR drop ----------------------------------------------------------------------------
#
# A tile: rows (word lines) driven from the left at column 0, columns (bit lines) sensed at
# the bottom, below row R-1, at virtual ground; every wire segment between neighbouring
# cells (and from the driver or to the sense amplifier) has resistance r.


def ir_drop_first_order(g: np.ndarray, r: float) -> np.ndarray:
    """Effective conductances (same units as `g`, r in ohms, g in uS) of a tile under
    first-order IR drop: the cell currents of an ideal read, I = G x, flowing through the
    wires, lower each cell's voltage by r times the currents of the segments between it
    and the driver (word line) and between it and the sense amplifier (bit line). To
    first order the read stays linear in x, y_j = sum_i x_i G_ij (1 - r (A_ij + D_ij)),
    with A_ij = sum_j' G_ij' (min(j, j') + 1) and D_ij = sum_i' G_i'j (R - max(i, i')),
    so a tile's IR drop is one attenuation per cell, computed once per programming."""
    g = np.asarray(g, dtype=np.float64)
    rows, cols = g.shape
    siemens = g * 1e-6
    j = np.arange(cols)
    i = np.arange(rows)
    word = np.minimum(j[:, None], j[None, :]) + 1  # [j, j']
    bit = rows - np.maximum(i[:, None], i[None, :])  # [i, i']
    a = siemens @ word.T  # A_ij = sum_j' G_ij' (min(j, j') + 1)
    d = bit @ siemens  # D_ij = sum_i' (R - max(i, i')) G_i'j
    return g * (1.0 - r * (a + d))


def ir_drop_nodal(
    g: np.ndarray, x: np.ndarray, r: float, tolerance: float = 1e-12, sweeps: int = 10_000
) -> np.ndarray:
    """Column currents (uS x volts) of a tile with conductances `g` (uS) driven by `x`
    (volts, one per row), solving Kirchhoff's current law at every word-line and bit-line
    node: block Gauss-Seidel, each sweep solving every word line given the bit lines and
    then every bit line given the word lines (tridiagonal systems). The reference that
    validates `ir_drop_first_order`."""
    siemens = np.asarray(g, dtype=np.float64) * 1e-6
    x = np.asarray(x, dtype=np.float64)
    rows, cols = siemens.shape
    wire = 1.0 / r
    word = np.repeat(x[:, None], cols, axis=1)  # word-line node voltages [R, C]
    bit = np.zeros((rows, cols))  # bit-line node voltages [R, C]
    for _ in range(sweeps):
        # word line i: -w U[j-1] + (2w + G) U[j] - w U[j+1] = G W[j] (+ w x at j = 0);
        # the far end (j = C-1) is open: (w + G) U - w U[j-1]
        diagonal = 2 * wire + siemens
        diagonal[:, -1] -= wire
        right = siemens * bit
        right[:, 0] += wire * x
        new_word = _tridiagonal(diagonal, -wire, right, axis=1)
        # bit line j: the top end (i = 0) is open, the bottom one (below R-1) grounded
        diagonal = 2 * wire + siemens
        diagonal[0, :] -= wire
        new_bit = _tridiagonal(diagonal, -wire, siemens * new_word, axis=0)
        change = max(np.abs(new_word - word).max(), np.abs(new_bit - bit).max())
        word, bit = new_word, new_bit
        if change <= tolerance * max(1.0, float(np.abs(x).max())):
            break
    return wire * bit[-1] * 1e6  # the current into each sense amplifier, in uS x volts


def _tridiagonal(diagonal: np.ndarray, off: float, right: np.ndarray, axis: int) -> np.ndarray:
    """Solve the symmetric tridiagonal systems (constant off-diagonal `off`) along `axis`
    of [R, C] arrays, all at once (Thomas algorithm)."""
    if axis == 0:
        return _tridiagonal(diagonal.T, off, right.T, axis=1).T
    n = diagonal.shape[1]
    c = np.empty_like(diagonal)
    d = np.empty_like(right)
    c[:, 0] = off / diagonal[:, 0]
    d[:, 0] = right[:, 0] / diagonal[:, 0]
    for k in range(1, n):
        denominator = diagonal[:, k] - off * c[:, k - 1]
        c[:, k] = off / denominator
        d[:, k] = (right[:, k] - off * d[:, k - 1]) / denominator
    out = np.empty_like(right)
    out[:, -1] = d[:, -1]
    for k in range(n - 2, -1, -1):
        out[:, k] = d[:, k] - c[:, k] * out[:, k + 1]
    return out
