"""Programming the chip (runtime/chip.py) on its own: what each phase's writes leave on the
physical tiles, with and without the device models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.programs import layers_program
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.runtime.chip import BlockCells, ProgrammedTiles, programmed_region
from xbarc.runtime.devices import Chip
from xbarc.runtime.noise import Seeds, noise_settings

PIPELINE = (
    "quantize{weight-bits=8,cell-bits=1},tile{rows=8,cols=8,mapping=squeeze,pack=model},"
    "allocate{tiles=3}"
)


@pytest.fixture(scope="module")
def phased():
    """Three pruned layers squeezed onto 8x8 tiles, three tiles: several phases, some of
    which read vtiles that earlier phases left on the chip."""
    rng = np.random.default_rng(8)
    weights = []
    for shape in [(1, 60, 20), (1, 20, 30), (1, 30, 10)]:
        weight = rng.normal(size=shape)
        weight[rng.random(shape) < 0.8] = 0.0
        weights.append(weight)
    program = run_pipeline(layers_program(weights), parse_pipeline(PIPELINE))
    assert len(program.phases) > 1
    return program


def read_blocks(program, phase):
    return [program.blocks[i] for run in phase.runs for c in run.cycles for i in c.blocks]


def test_each_phase_reads_its_blocks_cells_on_erased_tiles(phased):
    tiles = ProgrammedTiles(phased, quantized=True)
    targets = BlockCells(phased, quantized=True)
    kept = 0
    for phase in phased.phases:
        tiles.write(phase.writes)
        written = {write.vtile for write in phase.writes}
        for block in read_blocks(phased, phase):
            np.testing.assert_array_equal(tiles.cells(block), targets.cells(block))
            kept += block.vtile not in written
        for write in phase.writes:  # a write erases the tile: no cell of an earlier vtile
            state = tiles.state[write.tile].copy()
            for block in tiles.blocks_on[write.vtile]:
                programmed_region(state, block)[...] = 0
            assert not state.any()
    assert kept > 0  # some blocks were read where an earlier phase left them
    assert set(tiles.state) <= {0, 1, 2}


def test_device_models_program_only_the_noisy_layers(phased):
    settings = noise_settings("rram").resolved(phased.hardware)
    cell = phased.hardware.cell
    device = Chip(settings, Seeds.derive(3), cell.bits, cell.g_min_us, cell.g_max_us)
    quiet = phased.arrays[0].name
    tiles = ProgrammedTiles(phased, True, device, is_noisy=lambda layer: layer != quiet)
    targets = BlockCells(phased, quantized=True)
    changed = {True: 0, False: 0}
    for phase in phased.phases:
        tiles.write(phase.writes)
        for block in read_blocks(phased, phase):
            noisy = block.array != quiet
            same = np.array_equal(tiles.cells(block), targets.cells(block))
            assert same or noisy
            changed[noisy] += not same
    assert changed[True] > 0 and changed[False] == 0


@pytest.mark.parametrize("scale", ["tensor", "column"])
@pytest.mark.parametrize("encoding", ["differential", "offset"])
def test_ideal_reads_back_the_float_weights_bit_for_bit(scale, encoding):
    """`ideal` programs each weight's level plus its rest in float64 and rounds once, so
    the effective weights read back from the tiles (over phases) are the float weights,
    every bit: the ideal run is the folded float model, not an approximation of it."""
    from xbarc.runtime.executor import Executor

    rng = np.random.default_rng(9)
    spread = np.exp(rng.normal(scale=1.5, size=(1, 1, 20)))  # columns of unlike ranges
    weights = [rng.normal(size=(1, 60, 20)) * spread, rng.normal(size=(1, 20, 30))]
    pipeline = (
        f"quantize{{weight-bits=8,cell-bits=2,scale={scale},encoding={encoding}}},"
        "tile{rows=8,cols=8},allocate{tiles=3}"
    )
    program = run_pipeline(layers_program(weights), parse_pipeline(pipeline))
    assert len(program.phases) > 1
    executor = Executor(program)
    for layer in program.layers():
        want = program.store[layer.weight]
        got = executor.effective_weights[layer.name]
        assert got.dtype == want.dtype and np.array_equal(got, want)
