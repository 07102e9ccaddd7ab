"""The cost model of basis programs (BasisN) against hand-computed figures: basis reads,
the digital combine (MACs, coefficient reads, pipelined latency), writes once at
deployment, and what inspect reports of them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.programs import layers_program
from xbarc.cost import program_cost
from xbarc.ir.cells import make_slices
from xbarc.ir.tile import (
    Array,
    BasisCombine,
    Block,
    Const,
    Cycle,
    LayerRun,
    Phase,
    Read,
    Segment,
    Span,
    TileWrite,
    with_tensors,
)
from xbarc.report import format_report, report
from xbarc.weight_report import weight_errors

ROWS, COLS, L, K = 200, 10, 128, 4  # two segments: 128 rows and 72


def basis_program(coefficients: np.ndarray, copies: int = 2):
    """fc0 (200 x 10) combined from a 128 x 4 basis placed `copies` times, each copy its
    8 slices on 8 tiles; segment s read by copy s % copies (one cycle with two copies,
    two cycles with one)."""
    program = layers_program([np.zeros((1, ROWS, COLS))], tiles=16)
    rng = np.random.default_rng(0)
    levels = rng.integers(-127, 128, size=(1, L, K)).astype(np.int8)
    slices = make_slices(8, 2, "differential")
    basis = Array(
        "basis", "basis", 1, L, K, 8, "differential", Const("basis.scale"), "basis.values",
        "basis.levels", slices, copies=copies,
    )  # fmt: skip
    blocks = tuple(
        Block(c * len(slices) + i, "basis", i, 0, Span(0, L), Span(0, K), "t128x128",
              c * len(slices) + i, 0, 0)
        for c in range(copies)
        for i in range(len(slices))
    )  # fmt: skip
    segments = [Segment(0, Span(0, L)), Segment(0, Span(L, ROWS))]
    reads_of = [
        tuple(Read(b.index, segment) for b in blocks[(s % copies) * 8 : (s % copies) * 8 + 8])
        for s, segment in enumerate(segments)
    ]
    cycles = (Cycle(reads_of[0] + reads_of[1]),) if copies == 2 else tuple(map(Cycle, reads_of))
    phase = Phase(0, tuple(TileWrite(v, v) for v in range(8 * copies)), (LayerRun("fc0", cycles),))
    combine = BasisCombine("fc0", "basis", L, "fc0.coef", 8, Const("fc0.coef_scale"))
    program = with_tensors(
        program,
        {
            "basis.levels": levels,
            "basis.values": levels.astype(np.float32) * 0.01,
            "basis.scale": np.full((1, K), 0.01, np.float32),
            "fc0.coef": coefficients,
            "fc0.coef_scale": np.full((1, COLS), 0.5, np.float32),
        },
    )
    return replace(program, arrays=(basis,), blocks=blocks, combines=(combine,), phases=(phase,))


def sparse_coefficients(nonzeros: int) -> np.ndarray:
    coefficients = np.zeros((1, 2, K, COLS), np.int8)
    coefficients.reshape(-1)[:nonzeros] = np.arange(1, nonzeros + 1) % 100 + 1
    return coefficients


def test_basis_reads_and_combine_by_hand():
    program = basis_program(sparse_coefficients(60))
    patches = 5
    layer = program_cost(program, {"fc0": patches}).layers[0]
    repeats = patches * 8  # 8 bit-serial input slices
    # one cycle: both copies' 8 tiles read, segment 0 drives 128 rows, segment 1 only 72
    assert layer.read_energy_pj == pytest.approx(repeats * 16 * 30.0)
    assert layer.conversions == repeats * 16 * K
    assert layer.dac_energy_pj == pytest.approx(repeats * (8 * 128 + 8 * 72) * 0.39)
    # the combine: one MAC per non-zero per patch, 8-bit x 8-bit multiply 0.2 + add 0.1 pJ
    assert layer.combine_macs == patches * 60
    assert layer.combine_mac_energy_pj == pytest.approx(patches * 60 * 0.3)
    # table: 80 entries dense (640 bits) or 60 non-zeros with a 2-bit k index (600 bits)
    assert layer.coefficient_energy_pj == pytest.approx(patches * 600 / 256 * 17.2)
    # scales: 10 coefficient scales per output and 2 x 4 basis-response scales, per patch
    assert layer.scale_energy_pj == pytest.approx(patches * (10 + 8) * (1.1 + 17.2 * 16 / 256))
    # pipelined: reads 800 ns a patch, combine ceil(60 / 256) cycles at 1.2 GHz
    combine_ns = 1 / 1.2
    assert layer.combine_latency_ns == pytest.approx(patches * combine_ns)
    assert layer.latency_ns == pytest.approx(800.0 + combine_ns + (patches - 1) * 800.0)


def test_one_copy_serializes_the_segments():
    program = basis_program(sparse_coefficients(60), copies=1)
    layer = program_cost(program, {"fc0": 1}).layers[0]
    assert layer.latency_ns == pytest.approx(2 * 800.0 + 1 / 1.2)
    assert layer.read_energy_pj == pytest.approx(8 * 16 * 30.0)  # the same reads, in turn


def test_combine_sets_the_pace_when_slower_than_the_reads():
    program = basis_program(sparse_coefficients(80))
    slow = replace(program.hardware.cost, combine_lanes=1, digital_clock_ghz=0.05)
    program = replace(program, hardware=replace(program.hardware, cost=slow))
    layer = program_cost(program, {"fc0": 3}).layers[0]
    combine_ns = 80 / 0.05  # 1600 ns a patch against 800 ns of reads
    assert layer.latency_ns == pytest.approx(800.0 + combine_ns + 2 * combine_ns)
    assert report(program).layers[0].combine_bound


def test_basis_written_once_at_deployment():
    cost = program_cost(basis_program(sparse_coefficients(60)), {"fc0": 1})
    assert not cost.writes_per_pass
    assert cost.deployment_cell_writes == 16 * L * K
    assert cost.cell_writes_per_inference == 0
    assert cost.energy_pj == pytest.approx(cost.compute_energy_pj)
    # the combine's area: 256 lanes of 212 um^2 and 600 bits of table at 1.27 um^2 a byte
    assert cost.combine_area_mm2 == pytest.approx((256 * 212.0 + 600 / 8 * 1.27) * 1e-6)


def test_inspect_reports_the_basis_and_the_combine():
    program = basis_program(sparse_coefficients(60))
    result = report(program)
    (basis,) = result.basis
    assert (basis.basis_cols, basis.segment_rows, basis.slices, basis.tiles) == (K, L, 8, 16)
    assert (basis.coefficient_entries, basis.coefficient_nonzeros) == (80, 60)
    assert basis.coefficient_bits == 600
    assert result.layers[0].combined and result.layers[0].segments == 2
    assert result.deployment_cell_writes == 16 * L * K
    assert result.cell_writes_per_inference == 0
    assert result.edp == pytest.approx(result.energy_uj * 1e6 * result.latency_us * 1e3)
    text = format_report(result)
    assert "coefficients: 1 combined layers (kept with their own weights: none), q=8 bits" in text
    assert f"cell writes: {16 * L * K} at deployment, 0 per inference" in text
    data = result.to_json()
    assert data["basis"][0]["combine_energy_uj"] == pytest.approx(basis.combine_energy_uj)
    assert data["totals"]["cell_writes_per_inference"] == 0


def test_weight_error_of_a_combined_layer_is_that_of_its_combined_weights():
    program = basis_program(sparse_coefficients(60))
    store = program.store
    basis = store["basis.values"][0].astype(np.float64)  # [L, K]
    coefficients = store["fc0.coef"].astype(np.float64)[0]  # [S, K, N]
    # the contract's formula, row by row: W[s*L + r, n] = 0.5 x sum_k coef[s, k, n] B[r, k]
    combined = np.zeros((ROWS, COLS))
    for row in range(ROWS):
        segment, offset = divmod(row, L)
        combined[row] = 0.5 * basis[offset] @ coefficients[segment]
    float_weights = combined + np.random.default_rng(1).normal(scale=0.01, size=combined.shape)
    program = with_tensors(program, {"fc0.w": float_weights[None].astype(np.float32)})
    (error,) = weight_errors(program)
    expected = np.sqrt(
        np.square(combined - program.store["fc0.w"][0]).sum()
        / np.square(program.store["fc0.w"][0].astype(np.float64)).sum()
    )
    assert (error.layer, error.scale, error.weight_bits) == ("fc0", "basis", 8)
    assert error.relative_rms == pytest.approx(expected, rel=1e-6)
    exact = with_tensors(program, {"fc0.w": combined[None]})
    assert weight_errors(exact)[0].relative_rms == pytest.approx(0.0, abs=1e-12)
