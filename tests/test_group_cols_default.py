"""The default column groups of sparse and squeezed mappings, chosen per layer from each
layout's footprint after packing: the fastest layout that fits the chip in one phase when
one does, else close to the fewest crossbars (issue 12, item 5)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbarc.compiler import CompileOptions, compare_group_cols, compile_onnx
from xbarc.hardware import TileType
from xbarc.passes.tiling.compaction import Compactor
from xbarc.passes.tiling.layouts import Fit, Footprints, Layout, fastest_within, group_widths
from xbarc.passes.tiling.packing import Packer, tiles_bound

DIGITS = Path(__file__).parent / "fixtures" / "digits"
WIDTHS = (1, 2, 4, 8, 16, 32)  # the --group-cols the default is held against
ROOMY = 1 << 20


def options(tile: int, mapping: str, tiles: int) -> CompileOptions:
    return CompileOptions(
        tiles=tiles,
        tile_rows=tile,
        tile_cols=tile,
        input_shapes={"x": (1, 1, 8, 8)},
        mapping=mapping,
        cell_bits=1 if mapping == "squeeze" else 2,  # squeeze-out works on bit planes
    )


def uniform_widths(model: str, tile: int, mapping: str) -> list[dict]:
    """Crossbars, cycles and phases of `model` with every layer at each of WIDTHS."""
    return compare_group_cols(DIGITS / f"{model}.onnx", options(tile, mapping, ROOMY))[1:]


def default_at(model: str, tile: int, mapping: str, tiles: int) -> dict:
    rows = compare_group_cols(DIGITS / f"{model}.onnx", options(tile, mapping, tiles), ())
    return rows[0]


def shortfall(default: dict, uniform: list[dict], tiles: int) -> str | None:
    """What the default does worse than the acceptance allows, if anything: where some
    --group-cols fits `tiles` in one phase, the default must fit too, in no more cycles
    than the fastest that fits; where none does, it must take at most 10 % more crossbars
    than the fewest any takes."""
    fitting = [row for row in uniform if row["crossbars"] <= tiles]
    if fitting:
        fastest = min(fitting, key=lambda row: row["cycles"])
        if default["phases"] != 1 or default["cycles"] > fastest["cycles"]:
            return f"default {default} at {tiles} tiles, but {fastest} fits"
        return None
    fewest = min(uniform, key=lambda row: row["crossbars"])
    if default["crossbars"] > 1.1 * fewest["crossbars"]:
        return f"default {default} at {tiles} tiles, but {fewest} takes the fewest"
    return None


def test_a_chip_the_widest_groups_overflow_fits_in_one_phase():
    """The issue's case on the digits ResNet (90 % pruned): the chooser used to try no
    group narrower than 8 and, as even those overflowed 64 tiles of 32x32, fell back to
    the widest: 168 crossbars in 3 phases, where one-column groups take 27."""
    uniform = uniform_widths("resnet_p90", 32, "sparse")
    by_width = {row["group_cols"]: row for row in uniform}
    assert by_width[8]["crossbars"] > 64 >= by_width[1]["crossbars"]  # the setting holds
    default = default_at("resnet_p90", 32, "sparse", 64)
    assert default["phases"] == 1 and default["crossbars"] <= 64
    assert shortfall(default, uniform, 64) is None
    assert default["cycles"] < by_width[1]["cycles"]  # not merely the narrowest


def test_a_model_that_cannot_fit_takes_close_to_the_fewest_crossbars():
    uniform = uniform_widths("resnet_p90", 32, "squeeze")
    fewest = min(row["crossbars"] for row in uniform)
    default = default_at("resnet_p90", 32, "squeeze", fewest // 2)
    assert default["phases"] > 1
    assert default["crossbars"] <= 1.1 * fewest
    assert default["crossbars"] < uniform[-1]["crossbars"] / 2  # the widest take many more


def test_the_cli_says_how_the_groups_were_chosen(tmp_path, capsys):
    from xbarc.cli import main

    arguments = ["compile", str(DIGITS / "resnet_p90.onnx"), "--input-shape", "x=1x1x8x8"]
    arguments += ["--tile-size", "32x32", "--mapping", "sparse", "-o", str(tmp_path / "r.xbar")]
    assert main([*arguments, "--tiles", "64"]) == 0
    printed = capsys.readouterr().out
    assert "1 phase(s) on 64 tiles" in printed
    assert "the fewest cycles with which the model fits 64 tiles in one phase" in printed
    assert main([*arguments, "--tiles", "8"]) == 0
    printed = capsys.readouterr().out
    assert "chosen per layer for the fewest crossbars (within 4%)" in printed
    assert "cannot fit 8 tiles in one phase with any" in printed


def test_group_widths_halve_down_to_one_column():
    assert group_widths(32) == [32, 16, 8, 4, 2, 1]
    assert group_widths(128)[-3:] == [4, 2, 1]
    assert group_widths(100) == [100, 50, 25, 12, 6, 3, 1]


fits = st.builds(Fit, st.integers(1, 6), st.integers(1, 40))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(fits, min_size=1, max_size=4), min_size=1, max_size=4), st.data())
def test_fastest_within_finds_the_fewest_cycles_of_every_combination(choices, data):
    least = sum(min(fit.tiles for fit in layer) for layer in choices)
    most = sum(max(fit.tiles for fit in layer) for layer in choices)
    budget = data.draw(st.integers(least, most))
    chosen = fastest_within(choices, budget)
    picked = [layer[index] for layer, index in zip(choices, chosen, strict=True)]
    assert sum(fit.tiles for fit in picked) <= budget
    best = min(
        (sum(fit.cycles for fit in combination), sum(fit.tiles for fit in combination))
        for combination in itertools.product(*choices)
        if sum(fit.tiles for fit in combination) <= budget
    )
    assert (sum(fit.cycles for fit in picked), sum(fit.tiles for fit in picked)) == best


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 32), st.integers(1, 32)), min_size=1, max_size=60),
    st.booleans(),
)
def test_tiles_bound_never_exceeds_what_the_packer_takes(sizes, packed):
    tile_type = TileType("t32x32", 32, 32, 1)
    packer = Packer(tile_type)
    for height, width in sorted(sizes, key=lambda size: -size[0]):
        packer.place(height, width, packed)
    heights, widths = np.array(sizes).T
    bound = tiles_bound(heights, widths, np.ones(len(sizes), int), tile_type, packed)
    assert bound <= packer.vtiles
    if not packed:
        assert bound == packer.vtiles == len(sizes)


@pytest.mark.parametrize("mapping", ["sparse", "squeeze"])
def test_footprint_bounds_hold_for_every_layout(mapping):
    from xbarc.passes.tile import place_array

    pipeline = f"quantize{{weight-bits=8,cell-bits={1 if mapping == 'squeeze' else 2}}}"
    program = compile_onnx(
        DIGITS / "resnet_p80.onnx",
        replace(options(32, mapping, 64), pipeline=pipeline, mapping="dense"),  # quantize only
    )
    tile_type = TileType("t32x32", 32, 32, 64)
    compactor = Compactor(program, tile_type, mapping == "squeeze", False)

    def place(array, layout, packer):
        return place_array(array, layout, compactor, packer, 0, "diagonal")[0]

    footprints = Footprints(program, tile_type, place, compactor)
    tight = 0
    for array in program.arrays:
        for width in group_widths(32):
            for packed in (False, True):
                layout = Layout(width, packed)
                bound = footprints.bound(array, layout)  # before it is measured
                tiles = footprints.fit(array, layout).tiles
                assert footprints.least(array) <= bound <= tiles
                tight += bound == tiles
    assert tight > 0  # the bounds are not vacuous


PRUNED = [f"{model}_p{percent}" for model in ("mlp", "lenet", "resnet", "mobilenet")
          for percent in (50, 80, 90)]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mapping", ["sparse", "squeeze"])
@pytest.mark.parametrize("tile", [32, 128])
@pytest.mark.parametrize("model", PRUNED)
def test_the_default_matches_the_best_uniform_width(model, tile, mapping):
    """Issue 12's acceptance on every pruned digits fixture, at budgets that fit and that
    do not: half and one short of the fewest crossbars any --group-cols takes, that
    fewest, half way to the widest groups' crossbars, and 128."""
    uniform = uniform_widths(model, tile, mapping)
    fewest = min(row["crossbars"] for row in uniform)
    widest = max(uniform, key=lambda row: row["group_cols"])["crossbars"]
    budgets = sorted({max(1, fewest // 2), max(1, fewest - 1), fewest, (fewest + widest) // 2})
    budgets = sorted({*budgets, 128})
    problems = [shortfall(default_at(model, tile, mapping, b), uniform, b) for b in budgets]
    assert [problem for problem in problems if problem] == []
