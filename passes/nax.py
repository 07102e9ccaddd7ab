"""nax: choose each layer's tile type on a chip of several (NAX, seed 002).

    Arrays (no tile type)  ->  Arrays with `tile_type=t64x64`, ... (the tile pass obeys)

NAX (Negi et al., 2021) shows that a network mapped onto crossbars of different sizes,
each layer its own, beats any single size in energy x delay x area (EDAP) at the same
accuracy. On a chip offering several tile types (`compile --tile-size
32x32,64x64,128x128,256x256`), this pass picks each weights array's type:

- cost side (`naxsel/tables.py`): each layer's energy, latency, tiles and area per tile
  type, counted analytically from its array's shape and charged through the chip's
  per-operation figures (`xbarc.hardware.unit_costs`); no trial compile;
- accuracy side (`naxsel/proxy.py`): an analytic noise-to-signal ratio per layer and
  tile type that grows with the rows a read drives (the fixed ADC range's step, IR drop)
  and falls with fewer partial sums (output noise per read), from the noise numbers in
  the options (the compiler takes them from a noise profile, `rram` by default) and the
  gains fitted against the runtime's simulation (`benchmarks/nax.py --calibrate`);
- search (`naxsel/search.py`): coordinate descent over the layers from each uniform
  choice, minimising the program's EDAP with the summed proxy at most (1 + `budget`)
  times the most accurate uniform size's, a mix within the tile counts (one phase)
  preferred to any other, and a mix beyond them charged its writes on every inference.

A basis array (BasisN) keeps no tile type of its own. Run it after quantize and before
tile: `quantize,nax,tile,allocate` (the default pipeline on a chip of several types).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware
from xbarc.ir.tile import Program
from xbarc.passes.naxsel.proxy import NoiseNumbers, error_shape, error_terms
from xbarc.passes.naxsel.search import Selection, select
from xbarc.passes.naxsel.tables import fixed_costs, layer_costs, layer_shapes, write_model

MAX_BUDGET = 100.0  # the summed error at most 101 times the most accurate size's


@dataclass(frozen=True, slots=True)
class Nax:
    """Give every weights array the tile type that minimises the program's EDAP within
    the error budget."""

    name: ClassVar[str] = "nax"
    budget: float = 0.25  # allowed increase of the summed error proxy over the most
    # accurate uniform tile size's (0.25: 25 % more)
    read_sigma: float = 0.01  # the noise numbers of the chip's reads (a noise profile's)
    output_noise: float = 0.04
    wire_resistance: float = 0.0
    input_rms: float = 0.25  # a layer input's rms relative to the DAC's full scale
    input_density: float = 0.2  # the share of the DAC's input bits that are one
    # the proxy's gains, fitted against the runtime on the digits fixtures at input-density
    # 0.2 (benchmarks/nax_calibration.py, RESULTS.md "NAX error proxy")
    adc_gain: float = 0.3
    noise_gain: float = 2.9

    def apply(self, program: Program) -> Program:
        selection = self.select(program)
        names = [shape.name for shape in layer_shapes(program)]
        types = program.hardware.tile_types
        chosen = {name: types[t].name for name, t in zip(names, selection.choice, strict=True)}
        arrays = tuple(
            replace(a, tile_type=chosen[a.name]) if a.name in chosen else a for a in program.arrays
        )
        return replace(program, arrays=arrays)

    def select(self, program: Program) -> Selection:
        """The search's result on `program` (see naxsel/search.py)."""
        self.check(program.hardware)
        if program.blocks:
            raise XbarcError(
                "nax chooses tile types before the tile pass places blocks, and this "
                "program is already tiled",
                hint="run nax between quantize and tile: quantize,nax,tile,allocate",
            )
        if not program.arrays and any(True for _ in program.layers()):
            raise XbarcError("nax needs quantized arrays", hint="run quantize before nax")
        hardware = program.hardware
        shapes, costs, errors = self.tables(program)
        capacities = [t.count for t in hardware.tile_types]
        writes = write_model(shapes, hardware)
        selection = select(costs, errors, capacities, self.budget, writes)
        return replace(selection, choice=selection.choice[:-1])

    def tables(self, program: Program):
        """Each layer's shape, and its costs and error proxy on every tile type (one row
        more: what the program pays whatever the choice)."""
        hardware = program.hardware
        shapes = layer_shapes(program)
        arrays = {array.name: array for array in program.arrays}
        numbers = self.numbers()
        costs = [[layer_costs(shape, hardware, t) for t in hardware.tile_types] for shape in shapes]
        errors = []
        for shape in shapes:
            error = error_shape(program, arrays[shape.name])
            errors.append(
                [
                    error_terms(error, hardware, t, numbers).total(numbers)
                    for t in hardware.tile_types
                ]
            )
        # what every choice pays alike, as one more row the search cannot change
        fixed = fixed_costs(program, shapes)
        costs.append([fixed] * len(hardware.tile_types))
        errors.append([0.0] * len(hardware.tile_types))
        return shapes, costs, errors

    def within_budget(self, program: Program) -> tuple[str, ...]:
        """The tile types whose uniform choice keeps the summed error proxy within the
        search's bound, for the compiler's guard against a uniform size of lower EDAP
        (xbarc/compiler.py `guard_uniform`); `program` as nax takes it (not tiled)."""
        _, _, errors = self.tables(program)
        types = program.hardware.tile_types
        sums = [sum(row[t] for row in errors) for t in range(len(types))]
        bound = (1.0 + self.budget) * min(sums)
        return tuple(
            t.name for t, error in zip(types, sums, strict=True) if error <= bound * (1 + 1e-12)
        )

    def numbers(self) -> NoiseNumbers:
        return NoiseNumbers(
            self.read_sigma,
            self.output_noise,
            self.wire_resistance,
            self.input_rms,
            self.input_density,
            self.adc_gain,
            self.noise_gain,
        )

    def check(self, hardware: Hardware) -> None:
        if len(hardware.tile_types) < 2:
            only = hardware.tile_types[0]
            raise XbarcError(
                f"nax chooses among tile types, and the chip has one ({only.rows}x{only.cols})",
                hint="give several sizes: compile --tile-size 32x32,64x64,128x128,256x256",
            )
        if not 0.0 <= self.budget <= MAX_BUDGET:
            raise XbarcError(
                f"nax budget {self.budget} is out of range",
                hint=f"give the allowed increase of the error proxy from 0 to {MAX_BUDGET:g}; "
                "0.25 allows 25 % above the most accurate uniform tile size",
            )
        for option, value in (
            ("read-sigma", self.read_sigma),
            ("output-noise", self.output_noise),
            ("wire-resistance", self.wire_resistance),
            ("adc-gain", self.adc_gain),
            ("noise-gain", self.noise_gain),
        ):
            if not 0.0 <= value < float("inf"):
                raise XbarcError(f"nax {option} must be a finite number at least 0, got {value}")
        if not 0.0 < self.input_density <= 1.0:
            raise XbarcError(
                f"nax input-density must lie in (0, 1], got {self.input_density}",
                hint="the share of the DAC's input bits that are one",
            )
        if not 0.0 < self.input_rms <= 1.0:
            raise XbarcError(
                f"nax input-rms must lie in (0, 1], got {self.input_rms}",
                hint="the rms of a layer's input relative to the DAC's full scale",
            )
