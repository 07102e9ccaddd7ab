"""The pass manager sets the chip once, before any pass runs, and no pass may change it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest

from tests.programs import layers_program
from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Program
from xbarc.passes.manager import parse_pipeline, run_pipeline, target_chip


@pytest.fixture(scope="module")
def program() -> Program:
    rng = np.random.default_rng(0)
    return layers_program([rng.normal(size=(1, 40, 20)), rng.normal(size=(1, 20, 10))])


def test_every_pass_sees_the_chip_its_pipeline_names(program):
    pipeline = parse_pipeline(
        "quantize{cell-bits=1,encoding=offset},tile{rows=32,cols=16},allocate{tiles=7}"
    )
    chip = target_chip(program.hardware, pipeline.passes)
    assert (chip.cell.bits, chip.encoding) == (1, "offset")
    assert [(t.rows, t.cols, t.count) for t in chip.tile_types] == [(32, 16, 7)]
    seen = []
    result = run_pipeline(program, pipeline, lambda _, stage: seen.append(stage.hardware))
    assert seen == [chip, chip, chip]
    assert result.hardware == chip
    assert max(write.tile for phase in result.phases for write in phase.writes) < 7


@dataclass(frozen=True, slots=True)
class Rogue:
    """A broken pass: it rewrites the chip while it runs."""

    name: ClassVar[str] = "rogue"

    def apply(self, program: Program) -> Program:
        tile_type = replace(program.hardware.tile_types[0], count=1)
        return replace(program, hardware=replace(program.hardware, tile_types=(tile_type,)))


def test_a_pass_that_changes_the_chip_is_reported(program):
    with pytest.raises(XbarcError) as caught:
        run_pipeline(program, list(parse_pipeline("quantize").passes) + [Rogue()])
    assert str(caught.value) == (
        "error: internal error: pass rogue produced an invalid program: it changed the chip, "
        "which is set once before any pass runs (passes run before it: quantize) "
        "(please report this with the model)"
    )
