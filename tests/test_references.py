"""Layers, arrays and blocks refer to each other by explicit reference: a program whose
arrays are named apart from their layers verifies, allocates, reports and runs exactly
like the one the quantize pass names after its layers."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest

from tests.programs import layers_program
from xbarc.ir.io import load_program, save_program
from xbarc.ir.tile import Program
from xbarc.ir.verifier import verify
from xbarc.passes.allocate import Allocate
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.report import report
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings


@pytest.fixture(scope="module")
def compiled() -> Program:
    rng = np.random.default_rng(0)
    program = layers_program(
        [rng.normal(size=(1, 40, 24)), rng.normal(size=(1, 24, 10))], tiles=3, tile_rows=16
    )
    pipeline = "quantize{weight-bits=6,cell-bits=2},tile{rows=16,cols=16},allocate{tiles=3}"
    return run_pipeline(program, parse_pipeline(pipeline))


def renamed(program: Program) -> Program:
    """`program` with every array renamed (its layer, blocks and tensors unchanged)."""
    names = {array.name: f"weights of {array.layer} #{i}" for i, array in enumerate(program.arrays)}
    arrays = tuple(replace(array, name=names[array.name]) for array in program.arrays)
    blocks = tuple(replace(block, array=names[block.array]) for block in program.blocks)
    return replace(program, arrays=arrays, blocks=blocks)


def test_arrays_named_apart_from_their_layers_verify_and_allocate_alike(compiled):
    assert [array.name for array in compiled.arrays] == ["fc0", "fc1"]  # as quantize names them
    assert len(compiled.phases) > 1  # the references must hold across reprogramming
    other = renamed(compiled)
    verify(other)
    assert other.weights_of("fc1") == other.arrays[1]
    assert Allocate().apply(other).phases == compiled.phases
    layers = [asdict(layer) for layer in report(compiled).layers]
    assert [asdict(layer) for layer in report(other).layers] == layers


def test_arrays_named_apart_from_their_layers_round_trip(compiled, tmp_path):
    other = renamed(compiled)
    save_program(tmp_path / "p.xbar", other)
    assert 'array @"weights of fc0 #0" weights layer=@fc0' in (tmp_path / "p.xbar").read_text()
    assert load_program(tmp_path / "p.xbar") == other


@pytest.mark.parametrize("profile", ["ideal", "quant", "rram"])
def test_arrays_named_apart_from_their_layers_compute_the_same_bits(compiled, profile):
    x = {"x": np.random.default_rng(1).normal(size=(3, 40)).astype(np.float32)}
    settings = noise_settings(profile)

    def run(program: Program, noisy: frozenset[str] | None = None) -> np.ndarray:
        return Executor(program, settings, Seeds.derive(3), noisy).run(x)["y1"]

    np.testing.assert_array_equal(run(renamed(compiled)), run(compiled))
    if profile == "rram":  # per-layer noise follows the layer, not the array's name
        only = frozenset({"fc1"})
        np.testing.assert_array_equal(run(renamed(compiled), only), run(compiled, only))
        assert not np.array_equal(run(compiled, only), run(compiled))


def test_a_layer_held_by_no_array_or_by_two_is_refused(compiled):
    orphan = replace(compiled.arrays[0], layer="nowhere")
    with pytest.raises(Exception, match="weights array @fc0 names no crossbar layer"):
        verify(replace(compiled, arrays=(orphan,) + compiled.arrays[1:]))
    twice = replace(compiled.arrays[1], layer="fc0")
    with pytest.raises(Exception, match="@fc0's weights are held by two arrays, @fc0 and @fc1"):
        verify(replace(compiled, arrays=(compiled.arrays[0], twice)))
