"""Noisy reads (`kernels/noisy_read.py`): exact cells against the ADC reference, the Numba
kernel against its numpy twin, the noise against its formula, the same bits on any number
of threads (in this process and in subprocesses), and the executor's noisy path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime import kernels
from xbarc.runtime.executor import Executor
from xbarc.runtime.kernels import noisy_read
from xbarc.runtime.kernels.adc import adc_accumulate_numpy
from xbarc.runtime.kernels.noisy_read import (
    ADDITIVE,
    NO_READ_NOISE,
    PCM,
    ReadNoise,
    noisy_columns,
    noisy_read_accumulate,
)
from xbarc.runtime.noise import Seeds, noise_settings
from xbarc.runtime.reads import ReadPlan

PROPERTY = settings(max_examples=40, deadline=None)
ROOT = Path(__file__).parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"


@pytest.fixture(params=kernels.BACKENDS)
def backend(request):
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend("numba")


@st.composite
def layer_reads(draw, exact: bool):
    """A layer's reads (random groups, rows as a range or a gather, columns, slices),
    its unfolded DAC levels of one sign, and the kernel's other arguments."""
    groups = draw(st.integers(1, 3))
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 4))
    patches = draw(st.sampled_from([1, 7, 64, 600]))  # 600: two runs of patches
    slice_bits = draw(st.sampled_from([1, 2, 4]))
    slices = draw(st.integers(1, 8 // slice_bits))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    reads = []
    for _ in range(draw(st.integers(1, 4))):
        group = int(rng.integers(groups))
        if rng.random() < 0.5:
            start = int(rng.integers(rows))
            selection: slice | np.ndarray = slice(start, int(rng.integers(start + 1, rows + 1)))
            width = selection.stop - selection.start
        else:
            width = int(rng.integers(1, rows + 1))
            selection = rng.choice(rows, width, replace=False).astype(np.int64)
        count = int(rng.integers(1, 6))
        if exact:
            cells = rng.integers(-3, 4, (count, width)).astype(np.float32)
        else:
            cells = rng.normal(1.0, 1.5, (count, width)).astype(np.float32)
        magnitude = np.abs(cells) + rng.random((count, width)).astype(np.float32)
        reads.append(
            ReadPlan(
                group,
                selection,
                cells,
                rng.integers(0, cols, count).astype(np.int64),
                rng.choice([-4, -1, 1, 2, 8], count).astype(np.int64),
                rng.integers(1, 3 * width * 2**slice_bits + 1, count).astype(np.int64),
                None,
                magnitude if rng.random() < 0.5 else None,
            )
        )
    top = 2 ** (slices * slice_bits)
    levels_in = rng.integers(0, top, (groups * rows, patches)).astype(np.uint8)
    levels_in[rng.random(levels_in.shape) < 0.6] = 0  # sparse digits, rows of zeros
    levels_in[rng.random(groups * rows) < 0.3] = 0
    arguments = {
        "slice_bits": slice_bits,
        "slices": slices,
        "sign": int(rng.choice([1, -1])),
        "levels": int(rng.choice([1, 7, 127, 255])),
        "signed": bool(rng.random() < 0.5),
    }
    return reads, rows, cols, groups, levels_in, arguments


def reference(reads, rows, cols, levels_in, slice_bits, slices, sign, levels, signed):
    """Exact integer reads through `adc_accumulate_numpy`, read by read and slice by slice."""
    acc = np.zeros(((max(r.group for r in reads) + 1) * cols, levels_in.shape[1]), np.int64)
    for j in range(slices):
        shift = j * slice_bits
        digits = (levels_in.astype(np.int64) >> shift) & ((1 << slice_bits) - 1)
        for read in reads:
            source = read.group * rows + np.arange(rows)[read.rows]
            sums = read.cells_t.astype(np.int64) @ digits[source]
            targets = read.group * cols + read.target
            factor = read.factor * (sign << shift)
            adc_accumulate_numpy(sums, targets, factor, read.full_scale, levels, acc, signed)
    return acc


def run_kernel(reads, rows, cols, groups, levels_in, arguments, noise, pcm=False):
    columns = noisy_columns(reads, rows, cols, groups * rows, pcm)
    acc = np.zeros((columns.target_count, levels_in.shape[1]), np.int64)
    noisy_read_accumulate(levels_in, columns, noise=noise, acc=acc, **arguments)
    return acc


@PROPERTY
@given(layer_reads(exact=True))
def test_exact_cells_read_as_the_adc_reference(case):
    reads, rows, cols, groups, levels_in, arguments = case
    expected = reference(reads, rows, cols, levels_in, **arguments)
    for name in kernels.BACKENDS:
        kernels.set_backend(name)
        try:
            acc = run_kernel(reads, rows, cols, groups, levels_in, arguments, None)
        finally:
            kernels.set_backend("numba")
        assert np.array_equal(acc, expected), name


noise_settings_of = st.builds(
    lambda model, output, read, input_sigma, key: ReadNoise(
        3.0, output**2, model, read, input_sigma, key, key + 1
    ),
    st.sampled_from([NO_READ_NOISE, ADDITIVE, PCM]),
    st.floats(0.0, 0.5),
    st.floats(0.0, 0.2),
    st.sampled_from([0.0, 0.05]),
    st.integers(0, 2**64 - 2),
)


@PROPERTY
@given(layer_reads(exact=False), noise_settings_of)
def test_numba_kernel_equals_its_numpy_twin(case, noise):
    reads, rows, cols, groups, levels_in, arguments = case
    pcm = noise.model == PCM
    fast = run_kernel(reads, rows, cols, groups, levels_in, arguments, noise, pcm)
    kernels.set_backend("numpy")
    try:
        twin = run_kernel(reads, rows, cols, groups, levels_in, arguments, noise, pcm)
    finally:
        kernels.set_backend("numba")
    assert np.array_equal(fast, twin)


@pytest.mark.parametrize("model", [None, NO_READ_NOISE, ADDITIVE])
def test_wide_reads_of_one_bit_digits_sum_their_set_bits_as_the_twin(model):
    """Reads of 1-bit digits of SET_BIT_ROWS rows and SET_BIT_COLUMNS columns or more sum
    their cells over the set bits, row by row (`add_set_bits`): the twin's bits, over 17
    runs of patches (one block of columns; the last, of 100 patches, digit by digit), rows
    of 70 (two packed words) and rows zero over a whole run."""
    rng = np.random.default_rng(11)
    width, patches, count = 70, 16 * 512 + 100, noisy_read.SET_BIT_COLUMNS + 5
    assert width >= noisy_read.SET_BIT_ROWS > 9  # the wide read by set bits, the other not
    reads = [
        ReadPlan(
            0,
            slice(0, width),
            rng.normal(0.5, 1.5, (count, width)).astype(np.float32),
            rng.integers(0, 8, count).astype(np.int64),
            rng.choice([-2, 1, 4], count).astype(np.int64),
            rng.integers(20, 200, count).astype(np.int64),
            None,
        ),
        ReadPlan(  # a narrow read beside it: the column-by-column sums
            0,
            rng.choice(width, 9, replace=False).astype(np.int64),
            rng.normal(0.5, 1.5, (3, 9)).astype(np.float32),
            np.array([1, 3, 5], np.int64),
            np.ones(3, np.int64),
            np.full(3, 30, np.int64),
            None,
        ),
    ]
    levels_in = rng.integers(0, 256, (width, patches)).astype(np.uint8)
    levels_in[rng.random(levels_in.shape) < 0.5] = 0
    levels_in[5, :512] = 0  # zero over the first run of patches
    levels_in[6] = 0
    noise = None if model is None else ReadNoise(3.0, 0.05, model, 0.002, 0.0, 99, 0)
    arguments = {"slice_bits": 1, "slices": 8, "sign": -1, "levels": 127, "signed": True}
    fast = run_kernel(reads, width, 8, 1, levels_in, arguments, noise)
    kernels.set_backend("numpy")
    try:
        twin = run_kernel(reads, width, 8, 1, levels_in, arguments, noise)
    finally:
        kernels.set_backend("numba")
    assert np.array_equal(fast, twin) and fast.any()


def converted(values, sigma, z, noisy, top, scale):
    """`convert_add`'s codes of float32 `values` (+ sigma x z[1:]), and whether they differ
    from the product's by the reciprocal somewhere (where its second pass is needed)."""
    low, step, line = -top, -12, 3
    exact = values.astype(np.float64) + (sigma * z[1:].astype(np.float64) if noisy else 0.0)
    codes = np.clip(np.rint(exact * top / scale), low, top).astype(np.int64)
    by_product = np.clip(np.rint(exact * (top / scale)), low, top).astype(np.int64)
    dest = np.full(len(values) + line, 5, np.int64)
    noisy_read.convert_add(
        values, sigma, z, noisy, (1, len(values), top, low, scale, step), dest, np.uint64(line)
    )
    assert np.array_equal(dest[line:], 5 + step * codes) and (dest[:line] == 5).all()
    return (codes != by_product).any()


@pytest.mark.parametrize("top", [1.0, 7.0, 127.0, 255.0])
def test_conversion_by_the_reciprocal_gives_the_codes_of_the_division(top):
    """`convert_add` multiplies by levels / full scale and redoes the products near a
    rounding tie by division: the codes of `clip(rint(value x top / scale))` to the bit.
    Exact ties k + 1/2 of float32 sums (full scales 2 x levels x m, m odd: the reciprocal
    inexact), noisy values a few ulp either side of every tie (the noise term sets them in
    float64), and random ones; the test checks that the product alone would differ."""
    rng = np.random.default_rng(int(top))
    ties = np.arange(-top - 2, top + 2) + 0.5
    needed = []
    for m in range(3, 60, 2):
        scale = 2 * top * m
        values = np.concatenate([ties * 2 * m, rng.normal(0, scale, 100)]).astype(np.float32)
        none = np.zeros(len(values))
        needed.append(
            converted(values, none, np.ones(len(values) + 1, np.float32), False, top, scale)
        )
    scale = float(rng.integers(3, 5000))
    near = np.repeat(ties * scale / top, 9)
    for ulps in range(-4, 5):  # each tie's value moved by -4 to 4 ulp: sigma x 1
        moved = near[ulps + 4 :: 9]
        for _ in range(abs(ulps)):
            moved = np.nextafter(moved, np.sign(ulps) * np.inf)
        near[ulps + 4 :: 9] = moved
    sigma = np.concatenate([near, rng.uniform(0, 2, 300)])
    values = np.concatenate([np.zeros(len(near)), rng.normal(0, scale, 300)]).astype(np.float32)
    z = np.concatenate([[0.0], np.ones(len(near)), rng.normal(size=300)]).astype(np.float32)
    needed.append(converted(values, sigma, z, True, top, scale))
    assert any(needed)  # the second pass is needed


@pytest.mark.parametrize("shift", [0, 3, 7])
def test_pack_digits_packs_bit_shift_of_each_level(shift):
    """`pack_digits` (8 levels a multiply): bit `shift` of patch i at bit i % 64 of word
    i // 64, for runs of any length (tails of 1-7 levels) from any offset."""
    rng = np.random.default_rng(shift)
    source = rng.integers(0, 256, 3000).astype(np.uint8)
    for line, length in [(0, 512), (5, 1), (13, 7), (1, 64), (100, 130), (999, 301)]:
        bits = np.zeros((length + 63) // 64, np.uint64)
        noisy_read.pack_digits(source, np.uint64(line), length, np.int32(shift), bits)
        digits = (source[line : line + length] >> shift) & 1
        padded = np.zeros(len(bits) * 64, np.uint8)
        padded[:length] = digits
        expected = np.packbits(padded, bitorder="little").view(np.uint64)
        assert np.array_equal(bits, expected)


def one_read(width: int, patches: int, cells: np.ndarray, magnitude=None) -> ReadPlan:
    count = len(cells)
    return ReadPlan(
        0,
        slice(0, width),
        cells.astype(np.float32),
        np.arange(count, dtype=np.int64),
        np.ones(count, np.int64),
        np.full(count, 1 << 20, np.int64),  # full scale = levels: a code is rint(sum)
        None,
        magnitude,
    )


@pytest.mark.parametrize("model", [ADDITIVE, PCM])
def test_noise_has_the_formula_sigma(backend, model):
    """A read of known sums through a fine ADC: the codes' mean is the sum and their
    variance sigma^2 (+ 1/12 for the rounding), sigma = unit sqrt(output variance +
    coefficient S), S = sum x^2 (additive) or sum |W| x^2 (pcm)."""
    width, patches = 9, 200_000 if backend == "numba" else 40_000
    levels_in = np.zeros((width, patches), np.uint8)
    levels_in[:5] = 1  # five rows driven with digit 1, four with 0
    cells = np.array([[2.0] * width, [0.5] * width])
    magnitude = np.abs(cells).astype(np.float32) * 2
    read = one_read(width, patches, cells, magnitude)
    noise = ReadNoise(3.0, 0.04**2 * 9, model, 0.3**2, 0.0, 12345, 0)
    columns = noisy_columns([read], width, 2, width, model == PCM)
    acc = np.zeros((2, patches), np.int64)
    levels = 1 << 20
    noisy_read_accumulate(levels_in, columns, 1, 1, 1, levels, True, noise, acc)
    codes = acc / levels  # factor 1 x full scale: acc = full_scale x code
    for column in range(2):
        total = cells[column, :5].sum()
        squares = 5.0 if model == ADDITIVE else magnitude[column, :5].sum()
        sigma = 3.0 * math.sqrt(0.04**2 * 9 + 0.3**2 * squares)
        n = patches
        assert abs(codes[column].mean() - total) < 5 * sigma / math.sqrt(n)
        variance = sigma**2 + 1 / 12
        assert abs(codes[column].var() - variance) < 5 * variance * math.sqrt(2 / n)
    assert abs(np.corrcoef(codes[0], codes[1])[0, 1]) < 5 / math.sqrt(patches)


def test_same_bits_on_one_thread(monkeypatch):
    import numba

    rng = np.random.default_rng(4)
    width, patches = 40, 3000
    cells = rng.normal(1.0, 1.0, (24, width)).astype(np.float32)
    read = ReadPlan(
        0,
        slice(0, width),
        cells,
        np.arange(24, dtype=np.int64) % 6,
        np.ones(24, np.int64),
        np.full(24, 40, np.int64),
        None,
    )
    levels_in = rng.integers(0, 256, (width, patches)).astype(np.uint8)
    noise = ReadNoise(3.0, 0.01, ADDITIVE, 0.001, 0.02, 77, 78)
    arguments = {"slice_bits": 1, "slices": 8, "sign": 1, "levels": 127, "signed": False}
    many = run_kernel([read], width, 6, 1, levels_in, arguments, noise)
    monkeypatch.setattr(noisy_read, "use_threads", lambda work: numba.set_num_threads(1))
    try:
        assert np.array_equal(run_kernel([read], width, 6, 1, levels_in, arguments, noise), many)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


# ---------------------------------------------------------------------------------------
# The executor's noisy path


@pytest.fixture(scope="module")
def lenet():
    x = np.load(DIGITS / "digits_test.npz")["x"][:24]
    options = CompileOptions(input_shapes={"x": (24, 1, 8, 8)})
    return compile_onnx(DIGITS / "lenet.onnx", options), {"x": x}


def test_layers_left_exact_on_a_noisy_chip_read_as_quant(lenet):
    """A noisy chip whose layers are all outside `noisy_layers` reads exact cells through
    the noisy path's float sums: the same bits as quant's integer reads."""
    program, feeds = lenet
    quant = Executor(program, noise_settings("quant")).run(feeds)
    executor = Executor(program, noise_settings("rram"), Seeds.derive(3), frozenset())
    exact = executor.run(feeds)
    assert set(executor._paths.values()) == {"noisy"}
    assert all(np.array_equal(quant[name], exact[name]) for name in quant)


@pytest.mark.parametrize(
    "profile, changes, path",
    [
        ("rram", {}, "noisy"),
        ("pcm", {}, "noisy"),
        ("rram", {"adc_placement": "differential", "input_noise": 0.01}, "noisy"),
        ("rram", {"adc_range": "dynamic"}, "by read"),  # full scales known only after
    ],
)
def test_noisy_profiles_give_the_bits_of_the_numpy_backend(lenet, profile, changes, path):
    program, feeds = lenet
    settings = noise_settings(profile, **changes)
    executor = Executor(program, settings, Seeds.derive(5))
    fast = executor.run(feeds)
    assert path in set(executor._paths.values())
    kernels.set_backend("numpy")
    try:
        twin = Executor(program, settings, Seeds.derive(5)).run(feeds)
    finally:
        kernels.set_backend("numba")
    assert all(np.array_equal(fast[name], twin[name]) for name in fast)


THREADS_SCRIPT = """
import hashlib, sys
import numpy as np
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings
digits = sys.argv[1]
x = np.load(digits + "/digits_test.npz")["x"][:120]
program = compile_onnx(digits + "/mobilenet.onnx", CompileOptions(input_shapes={"x": (1, 1, 8, 8)}))
for profile in ("rram", "pcm"):
    outputs = Executor(program, noise_settings(profile), Seeds.derive(7)).run({"x": x})
    print(profile, hashlib.sha256(b"".join(v.tobytes() for v in outputs.values())).hexdigest())
"""


def test_noisy_outputs_do_not_depend_on_the_thread_count():
    """The same noisy runs in processes of 1 and of 2 Numba threads: the same bits."""
    results = []
    for threads in ("1", "2"):
        environment = dict(os.environ, NUMBA_NUM_THREADS=threads)
        environment["PYTHONPATH"] = str(ROOT)
        done = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, str(DIGITS)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=environment,
            check=True,
        )
        results.append(done.stdout)
    assert results[0] == results[1] and results[0].count("\n") == 2


@pytest.mark.parametrize("profile", ["rram", "pcm"])
def test_an_observer_sees_every_noisy_read_and_changes_no_bit(lenet, profile):
    """`xbarc run` and `eval` observe the partial sums for their ADC report: the noisy
    path shows them the values it converts and gives the bits of an unobserved run."""
    program, feeds = lenet
    settings = noise_settings(profile)
    plain = Executor(program, settings, Seeds.derive(5)).run(feeds)
    executor = Executor(program, settings, Seeds.derive(5))
    seen: list[tuple[str, np.ndarray, np.ndarray]] = []
    executor.on_read_sums = lambda layer, sums, scales: seen.append((layer, sums, scales))
    observed = executor.run(feeds)
    assert all(np.array_equal(plain[name], observed[name]) for name in plain)
    assert "noisy" in set(executor._paths.values())
    assert {layer for layer, _, _ in seen} == set(executor.plans)
    for _, sums, scales in seen:
        assert sums.dtype == np.float32 and sums.shape[0] == len(scales) and sums.shape[1] > 0
        assert np.isfinite(sums).all() and (scales > 0).all()
