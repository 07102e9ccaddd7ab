"""Noise profiles and device models: profiles read and checked, each model's statistics
against its formula, and noisy runs reproducible from their seeds."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from tests.onnx_models import parse, random, save
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.diagnostics import XbarcError
from xbarc.ir.io import save_program
from xbarc.runtime import devices, gaussian
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import NoiseSettings, Seeds, load_profile, noise_settings

G_MIN, G_MAX = 2.5, 25.0
DRAWS = 200_000

# --- profiles -------------------------------------------------------------------------------


def test_shipped_profiles_read():
    assert load_profile("ideal") == NoiseSettings(profile="ideal")
    assert load_profile("quant") == NoiseSettings(profile="quant", quantized=True)
    rram = load_profile("rram")
    assert (rram.programming, rram.p_sa0, rram.p_sa1, rram.read_sigma) == ("rram", 1e-3, 1e-3, 0.01)
    pcm = load_profile("pcm")
    assert (pcm.drift, pcm.t_inference, pcm.drift_compensation) == ("pcm", 3600.0, True)
    assert rram.cells_noisy and rram.reads_noisy
    assert not load_profile("quant").cells_noisy and not load_profile("quant").reads_noisy


def test_overrides_and_user_files(tmp_path):
    settings = load_profile("rram", ["adc_bits=6", "p_sa0=0.01", "programming=pcm"])
    assert (settings.adc_bits, settings.p_sa0, settings.programming) == (6, 0.01, "pcm")
    assert load_profile("quant", ['adc_bits="exact"']).adc_bits == "exact"
    assert load_profile("quant", ["adc_bits=exact"]).adc_bits == "exact"
    user = tmp_path / "mine.toml"
    user.write_text('base = "rram"\np_sa1 = 0.02\n')
    mine = load_profile(user)
    assert (mine.profile, mine.p_sa1, mine.programming) == ("mine", 0.02, "rram")


@pytest.mark.parametrize(
    "override, message",
    [
        ("sigma_read=0.1", "unknown noise field 'sigma_read'"),
        ("read_sigma=-0.1", "read_sigma = -0.1: must be a finite number >= 0"),
        ("p_sa0=1.5", "p_sa0 = 1.5: a probability must be at most 1"),
        ("adc_bits=0", "adc_bits = 0: expected whole ADC bits from 1 to 24"),
        ("programming=gauss", "programming = 'gauss': expected one of none, relative"),
        ("quantized=1", "quantized = 1: expected true or false"),
        ("adc_bits", "expected field=value"),
    ],
)
def test_bad_fields_are_one_line_errors(override, message):
    with pytest.raises(XbarcError, match=message) as caught:
        load_profile("rram", [override])
    assert "\n" not in str(caught.value)


def test_bad_profile_files(tmp_path):
    with pytest.raises(XbarcError, match="unknown noise profile 'reram'"):
        load_profile("reram")
    broken = tmp_path / "broken.toml"
    broken.write_text("p_sa0 = \n")
    with pytest.raises(XbarcError, match=r"broken\.toml: error: not valid TOML"):
        load_profile(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text("p_sa0 = 0.6\np_sa1 = 0.6\n")
    with pytest.raises(XbarcError, match=r"bad\.toml: error: p_sa0 \+ p_sa1 is above 1"):
        load_profile(bad)
    with pytest.raises(XbarcError, match="no such noise profile file"):
        load_profile(tmp_path / "missing.toml")


def test_seeds_derive_independent_reproducible_streams():
    seeds = Seeds.derive(7)
    assert seeds == Seeds.derive(7) and seeds != Seeds.derive(8)
    assert len({seeds.chip, seeds.time, seeds.read}) == 3
    a = seeds.rng("chip", 3, 1).standard_normal(4)
    assert np.array_equal(a, seeds.rng("chip", 3, 1).standard_normal(4))
    assert not np.array_equal(a, seeds.rng("chip", 3, 2).standard_normal(4))


# --- device models against their formulas ------------------------------------------------------


def within(measured: float, expected: float, standard_error: float, sigmas: float = 5.0):
    assert abs(measured - expected) <= sigmas * standard_error, (measured, expected)


@pytest.mark.parametrize("model", ["relative", "rram", "pcm"])
@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_programming_noise_mean_and_variance(model, fraction):
    settings = NoiseSettings(programming=model, programming_relative=0.05, programming_scale=1.5)
    target = np.full(DRAWS, G_MIN + (G_MAX - G_MIN) * fraction)
    g = devices.program(target, settings, G_MIN, G_MAX, np.random.default_rng(1))
    x = target[0] / G_MAX
    if model == "relative":
        sigma = 1.5 * 0.05 * target[0]
    elif model == "rram":  # Wan et al. polynomial at 40 uS, scaled to g_max
        c = (0.348, 16.030, -43.853, 45.393, -16.815)
        sigma = 1.5 * sum(ci * x**i for i, ci in enumerate(c)) * G_MAX / 40.0
    else:
        c = (0.26348, 1.9650, -1.1731)
        sigma = 1.5 * sum(ci * x**i for i, ci in enumerate(c))
    assert sigma < target[0] / 4  # clipping at 0 is negligible here
    within(g.mean(), target[0], sigma / math.sqrt(DRAWS))
    # the sample standard deviation's standard error is about sigma / sqrt(2n)
    within(g.std(), sigma, sigma / math.sqrt(2 * DRAWS))


def test_programming_noise_never_gives_negative_conductance():
    settings = NoiseSettings(programming="relative", programming_relative=2.0)
    g = devices.program(np.full(10_000, 1.0), settings, 0.0, G_MAX, np.random.default_rng(2))
    assert g.min() == 0.0 and (g == 0).mean() > 0.2


def test_stuck_fault_rates_and_rails():
    settings = NoiseSettings(p_sa0=0.01, p_sa1=0.003)
    stuck = devices.stuck_cells(settings, (DRAWS,), np.random.default_rng(3))
    for code, p in ((1, 0.01), (2, 0.003)):
        within((stuck == code).mean(), p, math.sqrt(p * (1 - p) / DRAWS))
    target = np.full(DRAWS, 10.0)
    g = devices.program(target, settings, G_MIN, G_MAX, np.random.default_rng(4), stuck=stuck)
    assert np.all(g[stuck == 1] == G_MIN) and np.all(g[stuck == 2] == G_MAX)
    assert np.all(g[stuck == 0] == 10.0)


def test_device_to_device_g_max_spread():
    settings = NoiseSettings(g_max_spread=0.05)
    g_max = devices.device_g_max(settings, (DRAWS,), G_MIN, G_MAX, np.random.default_rng(5))
    within(g_max.mean(), G_MAX, 0.05 * G_MAX / math.sqrt(DRAWS))
    within(g_max.std(), 0.05 * G_MAX, 0.05 * G_MAX / math.sqrt(2 * DRAWS))


def test_drift_law():
    g = np.linspace(3.0, 25.0, 12)
    t, t0 = 3600.0, 20.0
    nu = np.full(12, 0.06)
    assert np.allclose(devices.drifted(g, nu, t, t0), g * ((t + t0) / t0) ** -0.06, rtol=1e-12)
    assert np.array_equal(devices.drifted(g, nu, 0.0, t0), g)
    # constant model: nu ~ |N(mean, std)|, a folded normal
    settings = NoiseSettings(drift="constant", drift_nu=0.05, drift_nu_std=0.02)
    nus = devices.drift_exponents(settings, np.full(DRAWS, 10.0), G_MAX, np.random.default_rng(6))
    mu, s = 0.05, 0.02
    folded = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * math.erf(
        mu / (s * math.sqrt(2))
    )
    assert nus.min() >= 0
    within(nus.mean(), folded, s / math.sqrt(DRAWS))


def test_pcm_drift_exponents_follow_the_fit():
    settings = NoiseSettings(drift="pcm")
    for x in (0.05, 0.5, 1.0):
        nus = devices.drift_exponents(
            settings, np.full(DRAWS, x * G_MAX), G_MAX, np.random.default_rng(7)
        )
        mu = min(max(-0.0155 * math.log(x) + 0.0244, 0.049), 0.1)
        s = min(max(-0.0125 * math.log(x) - 0.0059, 0.008), 0.045)
        folded = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * math.erf(
            mu / (s * math.sqrt(2))
        )
        within(nus.mean(), folded, s / math.sqrt(DRAWS))


def test_finite_levels_map_back_exactly():
    for bits in (1, 2, 4, 8):
        cell_max = 2**bits - 1
        levels = np.arange(cell_max + 1)
        g = devices.target_conductance(levels, cell_max, G_MIN, G_MAX)
        assert g[0] == G_MIN and g[-1] == G_MAX
        assert len(np.unique(g)) == 2**bits
        back = devices.effective_levels(g, cell_max, G_MIN, G_MAX)
        assert np.allclose(back, levels, atol=1e-4)


def test_drift_compensation_undoes_a_uniform_drift():
    settings = NoiseSettings(
        drift="constant", drift_nu=0.05, t_inference=1e4, drift_compensation=True
    )
    chip = devices.Chip(settings, Seeds.derive(0), 2, G_MIN, G_MAX)
    levels = np.random.default_rng(8).integers(0, 4, (16, 16)).astype(np.float32)
    # drift scales the whole conductance, g_min included; the compensation rescales the
    # read, so the levels come back but for the drifted baseline
    got = chip.program(0, levels)
    uncompensated = devices.Chip(
        NoiseSettings(drift="constant", drift_nu=0.05, t_inference=1e4),
        Seeds.derive(0),
        2,
        G_MIN,
        G_MAX,
    ).program(0, levels)
    assert np.abs(got - levels).max() < 1e-5
    assert np.abs(uncompensated - levels).max() > 0.1


def test_chip_redraws_programming_noise_but_keeps_its_faults():
    settings = NoiseSettings(programming="relative", programming_relative=0.02, p_sa0=0.05)
    chip = devices.Chip(settings, Seeds.derive(1), 2, G_MIN, G_MAX)
    levels = np.full((64, 64), 3.0, np.float32)
    first, second = chip.program(5, levels), chip.program(5, levels)
    assert not np.array_equal(first, second)
    assert np.array_equal(first == 0, second == 0)  # SA0 cells read as level 0 both times
    assert 0.02 < (first == 0).mean() < 0.08
    again = devices.Chip(settings, Seeds.derive(1), 2, G_MIN, G_MAX)
    assert np.array_equal(again.program(5, levels), first)


# --- noisy runs ---------------------------------------------------------------------------------

MLP = """
mlp (float[4,24] x) => (float y)
{
  h = Gemm (x, w1, b1)
  r = Relu (h)
  y = Gemm (r, w2, b2)
}
"""


@pytest.fixture(scope="module")
def mlp_program(tmp_path_factory):
    model = parse(
        MLP,
        {
            "w1": random((24, 40), 1),
            "b1": random((40,), 2),
            "w2": random((40, 10), 3),
            "b2": random((10,), 4),
        },
    )
    path = save(model, tmp_path_factory.mktemp("mlp"))
    return compile_onnx(path, CompileOptions(tiles=16, tile_rows=16, tile_cols=16))


def test_noisy_run_is_reproducible_and_seeded(mlp_program):
    x = {"x": random((4, 24), 5)}
    rram = load_profile("rram")
    first = Executor(mlp_program, rram, Seeds.derive(3)).run(x)["y"]
    again = Executor(mlp_program, rram, Seeds.derive(3)).run(x)["y"]
    other = Executor(mlp_program, rram, Seeds.derive(4)).run(x)["y"]
    quant = Executor(mlp_program, load_profile("quant")).run(x)["y"]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, quant)
    # noise, not garbage: still correlated with the quantized answer (2-bit slices of 8-bit
    # weights on 16x16 tiles make rram's relative error 0.24 to 0.41 over chip seeds 0-9)
    assert np.corrcoef(first.ravel(), quant.ravel())[0, 1] > 0.75


def test_read_noise_is_fresh_per_run_but_the_chip_is_not(mlp_program):
    x = {"x": random((4, 24), 5)}
    reads = Executor(mlp_program, noise_settings("quant", output_noise=0.05, adc_bits=12))
    assert not np.array_equal(reads.run(x)["y"], reads.run(x)["y"])
    cells = Executor(
        mlp_program, noise_settings("quant", programming="pcm", adc_bits=12), Seeds.derive(1)
    )
    assert np.array_equal(cells.run(x)["y"], cells.run(x)["y"])


def test_all_cells_stuck_at_g_min_leave_only_the_bias(mlp_program):
    x = {"x": random((4, 24), 5)}
    executor = Executor(mlp_program, noise_settings("quant", p_sa0=1.0))
    first = next(mlp_program.layers())
    bias = mlp_program.store[first.bias]
    assert np.array_equal(executor.run_all(x)[first.output], np.broadcast_to(bias, (4, 40)))


def test_differential_adc_needs_pairs_and_two_bits(mlp_program, tmp_path):
    with pytest.raises(XbarcError, match="signed ADC of at least 2 bits"):
        Executor(mlp_program, noise_settings("quant", adc_placement="differential", adc_bits=1))
    model = parse(MLP, {"w1": random((24, 40), 1), "b1": random((40,), 2),
                        "w2": random((40, 10), 3), "b2": random((10,), 4)})  # fmt: skip
    path = save(model, tmp_path)
    offset = compile_onnx(path, CompileOptions(tiles=16, encoding="offset"))
    with pytest.raises(XbarcError, match="uses offset encoding"):
        Executor(offset, noise_settings("quant", adc_placement="differential"))


def test_noise_needs_quantized_signals_and_a_finite_adc(mlp_program):
    with pytest.raises(XbarcError, match="need quantized = true"):
        Executor(mlp_program, noise_settings("ideal", output_noise=0.1))
    with pytest.raises(XbarcError, match="lossless ADC"):
        Executor(mlp_program, noise_settings("rram", adc_bits="exact"))


def test_rram_is_bit_identical_in_two_processes(mlp_program, tmp_path):
    program_path = tmp_path / "mlp.xbar"
    save_program(program_path, mlp_program)
    np.savez(tmp_path / "x.npz", x=random((4, 24), 5))
    script = (
        "import sys, numpy as np, xbarc\n"
        f"s = xbarc.InferenceSession({str(program_path)!r}, noise='rram', seed=11)\n"
        f"x = dict(np.load({str(tmp_path / 'x.npz')!r}))\n"
        "y = s.run(None, x)[0]\n"
        "sys.stdout.write(y.tobytes().hex())\n"
    )
    # both at once (the machine's two cores): the processes share nothing but the files
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for run in runs:
        out, err = run.communicate()
        assert run.returncode == 0, err[-2000:]
        outputs.append(out)
    assert outputs[0] == outputs[1] and outputs[0]


@pytest.mark.parametrize("model", ["none", "additive", "pcm"])
@pytest.mark.parametrize("input_noise", [0.0, 0.03])
def test_read_noise_statistics(mlp_program, model, input_noise):
    """Mean and variance of noisy reads over many draws against the formulas, in
    normalized units (one cell at g_max driven at full scale is 1): additive
    sigma |x|_2, pcm sigma sqrt(sum |W| x^2), output noise in quadrature, and input noise
    sigma_in through the weights, var = sigma_in^2 sum W^2."""
    settings = noise_settings(
        "quant", read_noise=model, read_sigma=0.02, output_noise=0.01, input_noise=input_noise
    )
    executor = Executor(mlp_program, settings)
    cell_max, digit_max = executor.cell_max, executor.digit_max
    rng = np.random.default_rng(9)
    cells = rng.integers(0, cell_max + 1, (3, 32)).astype(np.float32)
    drive = rng.integers(0, digit_max + 1, (32, 4)).astype(np.float32)
    exact = cells @ drive
    draws = 20_000  # each of the 4 input columns repeated: one read gives every draw
    wide = np.ascontiguousarray(np.repeat(drive, draws, axis=1))
    out = np.empty((3, 4 * draws), np.float32)
    sigma = executor.analog_read(cells, wide, out)
    gaussian.add_noise(out, sigma, key=executor.next_read_key())
    reads = out.reshape(3, 4, draws).transpose(2, 0, 1)  # [draw, column, input]
    w, x = cells / cell_max, drive / digit_max
    variance = np.full((3, 4), 0.01**2)
    if model == "additive":
        variance += (0.02**2 * (x**2).sum(axis=0))[None, :]
    elif model == "pcm":
        variance += 0.02**2 * (np.abs(w) @ x**2)
    variance += input_noise**2 * (w**2).sum(axis=1)[:, None]
    sigma = np.sqrt(variance) * cell_max * digit_max  # back to read units
    error = reads - exact
    assert np.all(np.abs(error.mean(axis=0)) <= 5 * sigma / math.sqrt(draws))
    assert np.all(np.abs(error.std(axis=0) - sigma) <= 5 * sigma / math.sqrt(2 * draws))


# --- IR drop ------------------------------------------------------------------------------------


def nodal_direct(g: np.ndarray, x: np.ndarray, r: float) -> np.ndarray:
    """Column currents of a tile by one dense solve of Kirchhoff's law at its 2 R C nodes
    (word-line nodes first, then bit-line nodes): the independent reference."""
    rows, cols = g.shape
    siemens, wire = g * 1e-6, 1.0 / r
    n = rows * cols
    matrix = np.zeros((2 * n, 2 * n))
    right = np.zeros(2 * n)

    def word(i, j):
        return i * cols + j

    def bit(i, j):
        return n + i * cols + j

    for i in range(rows):
        for j in range(cols):
            u, w, cell = word(i, j), bit(i, j), siemens[i, j]
            # word-line node: to its left neighbour (or the driver), its right one, the cell
            matrix[u, u] += wire + cell
            matrix[u, w] -= cell
            if j == 0:
                right[u] += wire * x[i]
            else:
                matrix[u, word(i, j - 1)] -= wire
            if j + 1 < cols:
                matrix[u, u] += wire
                matrix[u, word(i, j + 1)] -= wire
            # bit-line node: to the node above, below (or ground at the bottom), the cell
            matrix[w, w] += wire + cell
            matrix[w, u] -= cell
            if i + 1 < rows:
                matrix[w, bit(i + 1, j)] -= wire
            if i > 0:
                matrix[w, w] += wire
                matrix[w, bit(i - 1, j)] -= wire
    voltages = np.linalg.solve(matrix, right)
    return wire * voltages[n + (rows - 1) * cols : n + rows * cols] * 1e6


def test_nodal_solver_equals_a_direct_solve():
    rng = np.random.default_rng(10)
    g = rng.uniform(G_MIN, G_MAX, (6, 5))
    x = rng.uniform(0, 0.2, 6)
    want = nodal_direct(g, x, 5.0)
    assert np.allclose(devices.ir_drop_nodal(g, x, 5.0), want, rtol=1e-9, atol=0)
    assert np.all(want < x @ g)  # IR drop only ever loses current


@pytest.mark.parametrize("size, r", [(32, 1.0), (64, 1.0), (128, 0.5)])
def test_first_order_ir_drop_agrees_with_the_nodal_solver(size, r):
    """On random arrays whose IR drop stays under 10 % of the output, the first-order
    model's error is at most 10 % of the drop itself (it is of second order)."""
    rng = np.random.default_rng(size)
    for _ in range(3):
        g = rng.uniform(G_MIN, G_MAX, (size, size))
        x = rng.uniform(0, 0.2, size)
        ideal, nodal = x @ g, devices.ir_drop_nodal(g, x, r)
        first = x @ devices.ir_drop_first_order(g, r)
        drop = np.abs(ideal - nodal)
        assert drop.max() < 0.1 * np.abs(ideal).max()
        assert np.abs(first - nodal).max() <= 0.1 * drop.max()
        assert np.all(first < ideal)


def test_ir_drop_grows_with_distance_from_driver_and_sense_amplifier():
    g = np.full((64, 64), G_MAX)
    attenuation = 1 - devices.ir_drop_first_order(g, 1.0) / g
    assert attenuation[0, 0] < attenuation[0, -1]  # farther along the word line
    assert attenuation[-1, 0] < attenuation[0, 0]  # farther from the bit line's end
    assert attenuation.max() == attenuation[0, -1]


def test_ir_drop_in_a_run_is_deterministic_and_shrinks_the_weights(mlp_program):
    x = {"x": random((4, 24), 5)}
    settings = noise_settings("quant", wire_resistance=2.0, adc_bits=12)
    dropped = Executor(mlp_program, settings, Seeds.derive(1)).run_all(x)
    again = Executor(mlp_program, settings, Seeds.derive(2)).run_all(x)  # no random draw
    quant = Executor(mlp_program, noise_settings("quant", adc_bits=12)).run_all(x)
    first = next(mlp_program.layers())
    bias = mlp_program.store[first.bias]
    assert np.array_equal(dropped[first.output], again[first.output])
    # every cell conducts less, so both polarities shrink: the layer's response moves
    assert not np.array_equal(dropped[first.output], quant[first.output])
    shrink = np.abs(dropped[first.output] - bias).mean() / np.abs(quant[first.output] - bias).mean()
    assert 0.5 < shrink < 1.0
