"""The cost model: energy, latency and area of a compiled program, per layer and in total.

Figures come from the program's schedule and the hardware's `CostParams` (ISAAC numbers,
see xbarc/hardware.py). Per forward pass of the program's input shape:

- a layer reads P patches (unfolded input vectors), each fed as S input slices by the DAC;
  every cycle of its runs reads each tile it touches once per patch and input slice;
- crossbar read energy scales with tile cells (30 pJ for a 128x128 read); every column
  read is one ADC conversion (energy doubling per ADC bit, 1.56 pJ at 8 bits) plus a
  shift-and-add; every driven row is one DAC conversion;
- a compacted block gathers its rows and scatters its columns by index tables: every
  entry it uses is read from the eDRAM buffer once per patch (the input register then
  holds the gathered vector for all input slices), an entry of ceil(log2(extent)) bits
  for a table into `extent` rows or columns, at ISAAC's 17.2 pJ per 256-bit access;
- a layer with per-column weight scales multiplies each output column's result by its
  scale once per patch, after the shift-and-add: one 16-bit multiply (1.1 pJ, Horowitz,
  "Computing's energy problem", ISSCC 2014, 45 nm) and the scale's read from the eDRAM
  buffer (16 bits of a 17.2 pJ 256-bit access); a per-tensor scale folds into the next
  DAC's input scale and costs nothing here;
- a cycle lasts max(array read, the cols_per_adc conversions of one shared ADC);
- layers run one after another; writes (program-and-verify, row by row, tiles in
  parallel) are one-time programming for a one-phase program and recur every pass over
  the program when it has several phases;
- area: every physical tile with its ADCs, DACs and shift-and-add units; with column
  scales, their 16-bit values in the eDRAM buffer (ISAAC: 1.27 um^2 a byte) and one
  multiplier (830 um^2: Horowitz's 1640 um^2 at 45 nm scaled to 32 nm) per
  `input_slices` tiles: a tile finishes its columns once per input vector, every
  input_slices cycles, and a multiplier at the ADC's rate scales one tile's columns a
  cycle.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from xbarc.hardware import Hardware, TileType
from xbarc.ir.tile import Array, Block, Const, Cycle, IndexTable, Program

REFERENCE_CELLS = 128 * 128  # the array size the ISAAC figures are quoted for
REFERENCE_ADC_BITS = 8


@dataclass(frozen=True, slots=True)
class LayerCost:
    name: str
    macs: int
    conversions: int  # ADC conversions per forward pass
    read_energy_pj: float
    adc_energy_pj: float
    dac_energy_pj: float
    shift_add_energy_pj: float
    index_energy_pj: float  # reading the index tables of compacted blocks
    latency_ns: float
    scale_energy_pj: float = 0.0  # per-column scales: a multiply and a buffer read per output

    @property
    def energy_pj(self) -> float:
        return (
            self.read_energy_pj
            + self.adc_energy_pj
            + self.dac_energy_pj
            + self.shift_add_energy_pj
            + self.index_energy_pj
            + self.scale_energy_pj
        )


@dataclass(frozen=True, slots=True)
class ProgramCost:
    layers: tuple[LayerCost, ...]
    write_energy_pj: float  # all phases' writes, once
    write_latency_ns: float
    writes_per_pass: bool  # several phases: the writes recur on every pass
    area_mm2: float  # the chip's tiles and, with column scales, their buffer and multipliers
    column_scales: int = 0  # per-column weight scales the program stores
    scale_area_mm2: float = 0.0  # their buffer bytes and multipliers, part of area_mm2

    @property
    def compute_energy_pj(self) -> float:
        return sum(layer.energy_pj for layer in self.layers)

    @property
    def energy_pj(self) -> float:
        """Energy of one forward pass (writes included when they recur)."""
        writes = self.write_energy_pj if self.writes_per_pass else 0.0
        return self.compute_energy_pj + writes

    @property
    def latency_ns(self) -> float:
        writes = self.write_latency_ns if self.writes_per_pass else 0.0
        return sum(layer.latency_ns for layer in self.layers) + writes

    @property
    def edp(self) -> float:
        """Energy-delay product in pJ x ns."""
        return self.energy_pj * self.latency_ns

    @property
    def edap(self) -> float:
        """Energy-delay-area product in pJ x ns x mm^2."""
        return self.edp * self.area_mm2

    @property
    def tops_per_watt(self) -> float:
        macs = sum(layer.macs for layer in self.layers)
        return 2 * macs / self.energy_pj if self.energy_pj else 0.0  # ops/pJ == TOPS/W


def adc_energy_pj(hardware: Hardware) -> float:
    """Energy per conversion; doubles per bit (Walden figure of merit) from the 8-bit point."""
    return hardware.cost.adc_energy_pj * 2.0 ** (hardware.adc.bits - REFERENCE_ADC_BITS)


def cycle_ns(hardware: Hardware) -> float:
    conversions = hardware.adc.cols_per_adc / hardware.cost.adc_rate_gsps
    return max(hardware.cost.xbar_read_latency_ns, conversions)


def program_cost(program: Program, patches: dict[str, int]) -> ProgramCost:
    """Cost of `program`; `patches` gives each layer's input vectors per forward pass."""
    hardware = program.hardware
    cost = hardware.cost
    tile_types = {t.name: t for t in hardware.tile_types}
    blocks = program.blocks
    input_slices = hardware.dac.input_slices
    per_adc = adc_energy_pj(hardware)
    per_scale = scale_energy_per_output_pj(hardware)
    scales = column_scales(program)
    dac_pj = cost.dac_power_uw * cost.xbar_read_latency_ns * 1e-3  # uW x ns = fJ
    shift_add_pj = cost.shift_add_power_mw / cost.adc_rate_gsps  # mW x ns = pJ
    arrays = {array.name: array for array in program.arrays}

    reads: dict[str, float] = defaultdict(float)
    columns: dict[str, int] = defaultdict(int)
    rows: dict[str, int] = defaultdict(int)
    cycles: dict[str, int] = defaultdict(int)
    index_bits: dict[str, int] = defaultdict(int)
    for phase in program.phases:
        for run in phase.runs:
            cycles[run.layer] += len(run.cycles)
            for cycle in run.cycles:
                cycle_blocks = [blocks[index] for index in cycle.blocks]
                on_tile: dict[int, list[Block]] = defaultdict(list)
                for block in cycle_blocks:
                    on_tile[block.vtile].append(block)
                index_bits[run.layer] += table_bits(cycle, blocks, arrays)
                for tile_blocks in on_tile.values():
                    tile_type = tile_types[tile_blocks[0].tile_type]
                    reads[run.layer] += cost.xbar_read_energy_pj * tile_type.cells / REFERENCE_CELLS
                    columns[run.layer] += sum(len(b.cols) for b in tile_blocks)
                    rows[run.layer] += driven_rows(tile_blocks)

    layers = []
    for layer in program.layers():
        repeats = patches.get(layer.name, 0) * input_slices
        layers.append(
            LayerCost(
                name=layer.name,
                macs=patches.get(layer.name, 0) * layer.weight_count,
                conversions=repeats * columns[layer.name],
                read_energy_pj=repeats * reads[layer.name],
                adc_energy_pj=repeats * columns[layer.name] * per_adc,
                dac_energy_pj=repeats * rows[layer.name] * dac_pj,
                shift_add_energy_pj=repeats * columns[layer.name] * shift_add_pj,
                index_energy_pj=(
                    patches.get(layer.name, 0) * index_bits[layer.name] / 256 * cost.edram_access_pj
                ),
                latency_ns=repeats * cycles[layer.name] * cycle_ns(hardware),
                scale_energy_pj=(
                    patches.get(layer.name, 0) * scales.get(layer.name, 0) * per_scale
                ),
            )
        )
    write_energy, write_latency = write_cost(program)
    scale_area = scale_area_mm2(hardware, sum(scales.values()))
    return ProgramCost(
        layers=tuple(layers),
        write_energy_pj=write_energy,
        write_latency_ns=write_latency,
        writes_per_pass=len(program.phases) > 1,
        area_mm2=chip_area_mm2(hardware) + scale_area,
        column_scales=sum(scales.values()),
        scale_area_mm2=scale_area,
    )


def column_scales(program: Program) -> dict[str, int]:
    """Per layer, the per-column scales of its weights (groups x cols; none for a
    per-tensor scale): one digital multiply each per patch."""
    return {
        array.layer: array.groups * array.cols
        for array in program.arrays
        if array.kind == "weights" and array.layer is not None and isinstance(array.scale, Const)
    }


def scale_energy_per_output_pj(hardware: Hardware) -> float:
    """One column scale applied: its multiply and its share of a 256-bit buffer read."""
    cost = hardware.cost
    return cost.scale_multiply_energy_pj + cost.edram_access_pj * cost.scale_bits / 256


def scale_area_mm2(hardware: Hardware, scales: int) -> float:
    """The buffer bytes of `scales` column scales and, if any, one multiplier per
    `input_slices` physical tiles of the chip."""
    if scales == 0:
        return 0.0
    cost = hardware.cost
    multipliers = math.ceil(hardware.tile_count / hardware.dac.input_slices)
    buffer_um2 = scales * cost.scale_bits / 8 * cost.buffer_area_um2_per_byte
    return (buffer_um2 + multipliers * cost.scale_multiplier_area_um2) * 1e-6


def table_bits(cycle: Cycle, blocks: tuple[Block, ...], arrays: dict[str, Array]) -> int:
    """Bits of the index-table entries one cycle reads: the row-gather tables of its
    inputs and the column-scatter tables of its blocks, each distinct table once (slices
    of one column group share theirs), each entry wide enough to address its array's rows
    or columns."""
    tables: dict[IndexTable, int] = {}
    for read in cycle.reads:
        block = blocks[read.block]
        array = arrays[block.array]
        if isinstance(read.input.rows, IndexTable):
            tables[read.input.rows] = address_bits(array.rows)
        if isinstance(block.cols, IndexTable):
            tables[block.cols] = address_bits(array.cols)
    return sum(len(table) * bits for table, bits in tables.items())


def address_bits(extent: int) -> int:
    """Bits that address `extent` positions (at least one)."""
    return max(1, (extent - 1).bit_length())


def driven_rows(tile_blocks: list[Block]) -> int:
    """Rows a tile drives in one cycle: blocks that share an input share its rows."""
    return union_length({(b.row_offset, len(b.rows)) for b in tile_blocks})


def union_length(spans: set[tuple[int, int]]) -> int:
    """Length of the union of (start, length) intervals."""
    total = 0
    reached = -1
    for start, length in sorted(spans):
        stop = start + length
        if stop > reached:
            total += stop - max(start, reached)
            reached = stop
    return total


def write_cost(program: Program) -> tuple[float, float]:
    """(energy pJ, latency ns) of every phase's writes: program-and-verify, row by row."""
    cost = program.hardware.cost
    by_vtile: dict[int, list[Block]] = defaultdict(list)
    for block in program.blocks:
        by_vtile[block.vtile].append(block)
    row_ns = cost.write_pv_iterations * (cost.write_pulse_ns + cost.write_verify_ns)
    energy = 0.0
    latency = 0.0
    for phase in program.phases:
        slowest_tile_rows = 0
        for write in phase.writes:
            tile_blocks = by_vtile[write.vtile]
            cells = sum(b.cells for b in tile_blocks)
            energy += cells * cost.write_pv_iterations * cost.write_pulse_energy_pj
            written_rows = union_length({(b.row_offset, len(b.rows)) for b in tile_blocks})
            slowest_tile_rows = max(slowest_tile_rows, written_rows)
        latency += slowest_tile_rows * row_ns  # tiles are written in parallel
    return energy, latency


def tile_area_um2(hardware: Hardware, tile_type: TileType) -> float:
    cost = hardware.cost
    adcs = math.ceil(tile_type.cols / hardware.adc.cols_per_adc)
    adc_scale = 2.0 ** (hardware.adc.bits - REFERENCE_ADC_BITS)
    return (
        cost.xbar_area_um2 * tile_type.cells / REFERENCE_CELLS
        + adcs * cost.adc_area_um2 * adc_scale
        + tile_type.rows * cost.dac_area_um2
        + adcs * cost.shift_add_area_um2
    )


def chip_area_mm2(hardware: Hardware) -> float:
    return sum(t.count * tile_area_um2(hardware, t) for t in hardware.tile_types) * 1e-6
