"""The cost model: energy, latency and area of a compiled program, per layer and in total.

Figures come from the program's schedule and the hardware's `CostParams` (ISAAC numbers,
see xbarc/hardware.py). Per forward pass of the program's input shape:

- a layer reads P patches (unfolded input vectors), each fed as S input slices by the DAC;
  every cycle of its runs reads each tile it touches once per patch and input slice;
- crossbar read energy scales with tile cells (30 pJ for a 128x128 read); every column
  read is one ADC conversion (energy doubling per ADC bit, 1.56 pJ at 8 bits) plus a
  shift-and-add; every driven row is one DAC conversion; the array read and the DACs
  are charged at `input_bit_density`, the share of input slices that are not zero (1.0,
  the default: every row of every read);
- a compacted block gathers its rows and scatters its columns by index tables: every
  entry it uses is read from the eDRAM buffer once per patch (the input register then
  holds the gathered vector for all input slices), an entry of ceil(log2(extent)) bits
  for a table into `extent` rows or columns, at ISAAC's 17.2 pJ per 256-bit access;
- a layer with per-column weight scales multiplies each output column's result by its
  scale once per patch, after the shift-and-add: one 16-bit multiply (1.1 pJ, Horowitz,
  "Computing's energy problem", ISSCC 2014, 45 nm) and the scale's read from the eDRAM
  buffer (16 bits of a 17.2 pJ 256-bit access); a per-tensor scale folds into the next
  DAC's input scale and costs nothing here;
- activations live in the eDRAM buffer between layers: per patch, a layer reads its
  unfolded input vector once (groups x rows activations; the input register then holds
  it for all input slices) and writes its outputs once (groups x cols), each activation
  dac.bits wide, at edram_access_pj (ISAAC's 17.2 pJ) per buffer_access_bits (256);
- digital ops between the layers (activations, pooling, residual adds, softmax...): one
  element operation per element of each activation input, at digital_op_energy_pj
  (Horowitz's 32-bit add, 0.1 pJ at 45 nm); views (Reshape, Flatten...) cost nothing;
  ops inside a control-flow region count once; their time overlaps the reads and is not
  charged;
- a cycle lasts max(array read, the cols_per_adc conversions of one shared ADC);
- layers run one after another; writes (program-and-verify, row by row, tiles in
  parallel) are one-time programming for a one-phase program and recur every pass over
  the program when it has several phases;
- area: every physical tile with its ADCs, DACs and shift-and-add units; with column
  scales, their 16-bit values in the eDRAM buffer (ISAAC: 1.27 um^2 a byte) and one
  multiplier (830 um^2: Horowitz's 1640 um^2 at 45 nm scaled to 32 nm) per
  `input_slices` tiles: a tile finishes its columns once per input vector, every
  input_slices cycles, and a multiplier at the ADC's rate scales one tile's columns a
  cycle;
- used area (`used_area_mm2`, for EDAP between programs of different tile sizes): the
  physical tiles the program writes with their periphery, the column scales with one
  multiplier per input_slices of those tiles, the combine unit, an activation buffer
  holding the largest input plus output of one layer (dac.bits each, 1.27 um^2 a byte)
  and one set of digital units (digital_unit_area_um2); `edap_used` is
  energy x latency x used area. `area_mm2`, the whole chip's, is unchanged by the buffer
  and digital units.

A layer combined from basis responses (BasisN) reads the basis blocks its runs name, and
pays for them as above; then, per patch, the digital combine unit:

- does one multiply-accumulate per non-zero coefficient (nnz(coef) per patch): a q-bit
  coefficient times an ADC-width response (Horowitz's 8-bit x 8-bit 0.2 pJ, scaled by
  q x adc_bits / 64) and a 32-bit add (0.1 pJ); zero coefficients are skipped;
- reads the layer's whole coefficient table from the eDRAM buffer (17.2 pJ per 256 bits):
  one patch's responses are combined while the tiles read the next, so no coefficient
  stays in the unit from one patch to the next. The table is stored dense (q bits an
  entry) or, where that is smaller, as its non-zeros with their k index;
- scales every response by the basis column's scale (a per-column basis) and every output
  by its column's coefficient scale, like column scales above;
- takes ceil(nnz / combine_lanes) cycles of the digital clock per patch. It is pipelined
  with the reads: patch p is combined while the tiles read patch p + 1, so a layer of P
  patches takes t_read + t_combine + (P - 1) max(t_read, t_combine), where t_read and
  t_combine are one patch's (the slower stage sets the pace; the first read and the last
  combine do not overlap anything);
- area: combine_lanes multiply-add lanes, and the coefficient tables in the buffer.

Writes: a one-phase program writes its tiles once at deployment and never per inference;
a program of several phases writes every phase again on every inference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from xbarc.hardware import Hardware, TileType, unit_costs
from xbarc.ir.tile import (
    Array,
    Block,
    Const,
    CrossbarLayer,
    Cycle,
    DigitalOp,
    IndexTable,
    Program,
    Read,
    Value,
    all_ops,
)


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
    # a layer combined from basis responses (BasisN): its digital combine, per forward pass
    combine_macs: int = 0  # one per non-zero coefficient per patch
    combine_mac_energy_pj: float = 0.0
    coefficient_energy_pj: float = 0.0  # reading the coefficient table, once per patch
    combine_latency_ns: float = 0.0  # the combine unit's busy time (overlaps the reads)
    # the activation buffer: reading the unfolded inputs, writing the outputs
    buffer_energy_pj: float = 0.0

    @property
    def combine_energy_pj(self) -> float:
        return self.combine_mac_energy_pj + self.coefficient_energy_pj

    @property
    def energy_pj(self) -> float:
        return (
            self.read_energy_pj
            + self.adc_energy_pj
            + self.dac_energy_pj
            + self.shift_add_energy_pj
            + self.index_energy_pj
            + self.scale_energy_pj
            + self.combine_energy_pj
            + self.buffer_energy_pj
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
    cell_writes: int = 0  # all phases' writes, once
    coefficient_bits: int = 0  # BasisN coefficient tables as stored in the buffer
    combine_area_mm2: float = 0.0  # the combine unit's lanes and the tables, part of area_mm2
    # the digital ops between crossbar layers: their element operations and energy
    digital_ops: int = 0
    digital_op_energy_pj: float = 0.0
    # what the program occupies: the physical tiles it writes with their periphery, its
    # column scales and combine unit, the activation buffer and one set of digital units
    used_area_mm2: float = 0.0
    buffer_area_mm2: float = 0.0  # the activation buffer, part of used_area_mm2

    @property
    def deployment_cell_writes(self) -> int:
        """Cells written once, before the first inference: all of a one-phase program's."""
        return 0 if self.writes_per_pass else self.cell_writes

    @property
    def cell_writes_per_inference(self) -> int:
        """Cells written on every inference: all of a program of several phases."""
        return self.cell_writes if self.writes_per_pass else 0

    @property
    def write_energy_per_inference_pj(self) -> float:
        return self.write_energy_pj if self.writes_per_pass else 0.0

    @property
    def write_latency_per_inference_ns(self) -> float:
        return self.write_latency_ns if self.writes_per_pass else 0.0

    @property
    def combine_energy_pj(self) -> float:
        return sum(layer.combine_energy_pj for layer in self.layers)

    @property
    def combine_macs(self) -> int:
        return sum(layer.combine_macs for layer in self.layers)

    @property
    def compute_energy_pj(self) -> float:
        return sum(layer.energy_pj for layer in self.layers)

    @property
    def energy_pj(self) -> float:
        """Energy of one forward pass (digital ops, and writes when they recur, included)."""
        return (
            self.compute_energy_pj + self.digital_op_energy_pj + self.write_energy_per_inference_pj
        )

    @property
    def latency_ns(self) -> float:
        layers = sum(layer.latency_ns for layer in self.layers)
        return layers + self.write_latency_per_inference_ns

    @property
    def edp(self) -> float:
        """Energy-delay product in pJ x ns."""
        return self.energy_pj * self.latency_ns

    @property
    def edap(self) -> float:
        """Energy-delay-area product in pJ x ns x mm^2."""
        return self.edp * self.area_mm2

    @property
    def edap_used(self) -> float:
        """Energy-delay-area product over the area the program occupies (pJ x ns x mm^2):
        the fair figure between programs on chips of different tile sizes or budgets."""
        return self.edp * self.used_area_mm2

    @property
    def tops_per_watt(self) -> float:
        macs = sum(layer.macs for layer in self.layers)
        return 2 * macs / self.energy_pj if self.energy_pj else 0.0  # ops/pJ == TOPS/W


def adc_energy_pj(hardware: Hardware) -> float:
    """Energy per conversion; doubles per bit (Walden figure of merit) from the 8-bit point."""
    return unit_costs(hardware, hardware.tile_types[0]).conversion_energy_pj


def cycle_ns(hardware: Hardware) -> float:
    """One read cycle of the chip: its slowest tile type's."""
    return max(unit_costs(hardware, t).cycle_ns for t in hardware.tile_types)


def program_cost(program: Program, patches: dict[str, int]) -> ProgramCost:
    """Cost of `program`; `patches` gives each layer's input vectors per forward pass."""
    hardware = program.hardware
    cost = hardware.cost
    blocks = program.blocks
    input_slices = hardware.dac.input_slices
    per_adc = adc_energy_pj(hardware)
    per_scale = scale_energy_per_output_pj(hardware)
    scales = column_scales(program)
    multiplies = scale_multiplies(program)
    units = {t.name: unit_costs(hardware, t) for t in hardware.tile_types}
    dac_pj = units[hardware.tile_types[0].name].dac_energy_pj
    shift_add_pj = units[hardware.tile_types[0].name].shift_add_energy_pj
    arrays = {array.name: array for array in program.arrays}
    tables = {table.layer: table for table in coefficient_tables(program)}

    reads: dict[str, float] = defaultdict(float)
    columns: dict[str, int] = defaultdict(int)
    rows: dict[str, int] = defaultdict(int)
    cycles: dict[str, int] = defaultdict(int)
    cycles_ns: dict[str, float] = defaultdict(float)  # a cycle lasts its tile types' longest
    index_bits: dict[str, int] = defaultdict(int)
    for phase in program.phases:
        for run in phase.runs:
            cycles[run.layer] += len(run.cycles)
            for cycle in run.cycles:
                on_tile: dict[int, list[Read]] = defaultdict(list)
                for read in cycle.reads:
                    on_tile[blocks[read.block].vtile].append(read)
                kinds = {blocks[tile_reads[0].block].tile_type for tile_reads in on_tile.values()}
                cycles_ns[run.layer] += max((units[kind].cycle_ns for kind in kinds), default=0.0)
                index_bits[run.layer] += table_bits(cycle, blocks, arrays)
                for tile_reads in on_tile.values():
                    tile_blocks = [blocks[read.block] for read in tile_reads]
                    reads[run.layer] += units[tile_blocks[0].tile_type].read_energy_pj
                    columns[run.layer] += sum(len(b.cols) for b in tile_blocks)
                    rows[run.layer] += driven_rows(tile_reads, blocks)

    layers = []
    for layer in program.layers():
        layer_patches = patches.get(layer.name, 0)
        repeats = layer_patches * input_slices
        read_patch_ns = input_slices * cycles_ns[layer.name]
        table = tables.get(layer.name)
        combine = combine_cost(hardware, table, layer_patches, read_patch_ns)
        layers.append(
            LayerCost(
                name=layer.name,
                macs=layer_patches * layer.weight_count,
                conversions=repeats * columns[layer.name],
                read_energy_pj=repeats * reads[layer.name],
                adc_energy_pj=repeats * columns[layer.name] * per_adc,
                dac_energy_pj=repeats * rows[layer.name] * dac_pj,
                shift_add_energy_pj=repeats * columns[layer.name] * shift_add_pj,
                index_energy_pj=(
                    layer_patches
                    * index_bits[layer.name]
                    / cost.buffer_access_bits
                    * cost.edram_access_pj
                ),
                latency_ns=combine.latency_ns if table else layer_patches * read_patch_ns,
                scale_energy_pj=layer_patches * multiplies.get(layer.name, 0) * per_scale,
                combine_macs=combine.macs,
                combine_mac_energy_pj=combine.mac_energy_pj,
                coefficient_energy_pj=combine.coefficient_energy_pj,
                combine_latency_ns=combine.busy_ns,
                buffer_energy_pj=buffer_energy_pj(hardware, layer, layer_patches),
            )
        )
    write_energy, write_latency, cell_writes = write_cost(program)
    scale_area = scale_area_mm2(hardware, sum(scales.values()))
    coefficient_bits = sum(table.stored_bits for table in tables.values())
    combine_area = combine_area_mm2(hardware, coefficient_bits) if tables else 0.0
    types = program.value_types()
    digital = digital_op_elements(program, types)
    buffer_area = buffer_area_mm2(hardware, activation_buffer_elements(program, types))
    used_scale_area = scale_area_mm2(hardware, sum(scales.values()), len(used_tiles(program)))
    used_area = (
        used_tiles_area_mm2(program)
        + used_scale_area
        + combine_area
        + buffer_area
        + cost.digital_unit_area_um2 * 1e-6
    )
    return ProgramCost(
        layers=tuple(layers),
        write_energy_pj=write_energy,
        write_latency_ns=write_latency,
        writes_per_pass=len(program.phases) > 1,
        area_mm2=chip_area_mm2(hardware) + scale_area + combine_area,
        column_scales=sum(scales.values()),
        scale_area_mm2=scale_area,
        cell_writes=cell_writes,
        coefficient_bits=coefficient_bits,
        combine_area_mm2=combine_area,
        digital_ops=digital,
        digital_op_energy_pj=digital * cost.digital_op_energy_pj,
        used_area_mm2=used_area,
        buffer_area_mm2=buffer_area,
    )


# --- the activation buffer and the digital ops ------------------------------------------


def buffer_energy_pj(hardware: Hardware, layer: CrossbarLayer, patches: int) -> float:
    """A layer's traffic with the activation buffer per forward pass: every patch's
    unfolded input vector read once (groups x rows activations: the input register then
    holds it for all input slices) and its outputs written once (groups x cols), each
    activation dac.bits wide, at edram_access_pj per buffer_access_bits."""
    cost = hardware.cost
    elements = patches * layer.groups * (layer.rows + layer.cols)
    return elements * hardware.dac.bits / cost.buffer_access_bits * cost.edram_access_pj


# ops that only re-label or re-shape a tensor: no arithmetic on its elements
VIEW_OPS = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Dropout",
    }
)
CONTROL_OPS = frozenset({"If", "Loop", "Scan"})  # their regions' ops are counted instead


def digital_op_elements(program: Program, types: dict) -> int:
    """Element operations of the program's digital ops per forward pass: one per element
    of each activation input (an activation, a pooling window's compare or add, a
    residual add...) of every op but the views of VIEW_OPS; a control-flow op's region
    ops count once (a Loop's trip count is known only at run time). Inputs of unknown
    shape count nothing."""
    elements = 0
    for op in all_ops(program.ops):
        if not isinstance(op, DigitalOp) or op.op_type in VIEW_OPS | CONTROL_OPS:
            continue
        for operand in op.inputs:
            if isinstance(operand, Value):
                elements += static_size(types.get(operand.name))
    return elements


def static_size(tensor_type) -> int:
    """Elements of a tensor type of known shape (0 if unknown)."""
    if tensor_type is None or not tensor_type.is_static:
        return 0
    return math.prod(tensor_type.static_shape())


def activation_buffer_elements(program: Program, types: dict) -> int:
    """Activations the buffer must hold at once: the largest input plus output of one
    crossbar layer (layers run one after another)."""
    largest = 0
    for layer in program.layers():
        held = static_size(types.get(layer.input)) + static_size(layer.output_type)
        largest = max(largest, held)
    return largest


def buffer_area_mm2(hardware: Hardware, elements: int) -> float:
    """The activation buffer holding `elements` activations of dac.bits each."""
    cost = hardware.cost
    return elements * hardware.dac.bits / 8 * cost.buffer_area_um2_per_byte * 1e-6


def used_tiles(program: Program) -> set[int]:
    """The physical tiles some phase of the program writes."""
    return {write.tile for phase in program.phases for write in phase.writes}


def used_tiles_area_mm2(program: Program) -> float:
    """The physical tiles the program writes, each with its ADCs, DACs and shift-and-add."""
    hardware = program.hardware
    tiles = used_tiles(program)
    return sum(tile_area_um2(hardware, hardware.tile_type_of(tile)) for tile in tiles) * 1e-6


# --- the digital combine of BasisN ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoefficientTable:
    """The coefficients of one combined layer: [groups, segments, K, cols] entries of
    `bits` bits, `nonzeros` of them non-zero."""

    layer: str
    groups: int
    segments: int
    basis_cols: int  # K
    cols: int
    bits: int  # q
    nonzeros: int

    @property
    def entries(self) -> int:
        return self.groups * self.segments * self.basis_cols * self.cols

    @property
    def stored_bits(self) -> int:
        """Bits the buffer holds: every entry (dense), or, where that is smaller, each
        non-zero with the index of its basis vector (sparse)."""
        dense = self.entries * self.bits
        sparse = self.nonzeros * (self.bits + address_bits(self.basis_cols))
        return min(dense, sparse)


def coefficient_tables(program: Program) -> list[CoefficientTable]:
    """The coefficient table of every combined layer, in the program's combine order."""
    result = []
    for combine in program.combines:
        shape = program.tensor(combine.coefficients).shape
        groups, segments, basis_cols, cols = (int(extent) for extent in shape)
        nonzeros = int(np.count_nonzero(program.store[combine.coefficients]))
        result.append(
            CoefficientTable(
                combine.layer, groups, segments, basis_cols, cols, combine.coef_bits, nonzeros
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class CombineCost:
    macs: int = 0
    mac_energy_pj: float = 0.0
    coefficient_energy_pj: float = 0.0
    busy_ns: float = 0.0  # the combine unit's own time, all patches
    latency_ns: float = 0.0  # the layer's, reads and combine pipelined


def combine_energy_per_mac_pj(hardware: Hardware, coef_bits: int) -> float:
    """One multiply-accumulate: a coef_bits x adc-bits multiply (Horowitz's 8 x 8 figure,
    scaled by the product of the widths) and a 32-bit add."""
    cost = hardware.cost
    width = coef_bits * hardware.adc.bits / 64
    return cost.combine_multiply_energy_pj * width + cost.combine_add_energy_pj


def combine_cost(
    hardware: Hardware, table: CoefficientTable | None, patches: int, read_patch_ns: float
) -> CombineCost:
    """The combine of one layer over `patches` input vectors, each read in
    `read_patch_ns`: see the module docstring."""
    if table is None or patches == 0:
        return CombineCost()
    cost = hardware.cost
    combine_patch_ns = math.ceil(table.nonzeros / cost.combine_lanes) / cost.digital_clock_ghz
    return CombineCost(
        macs=patches * table.nonzeros,
        mac_energy_pj=patches * table.nonzeros * combine_energy_per_mac_pj(hardware, table.bits),
        coefficient_energy_pj=(
            patches * table.stored_bits / cost.buffer_access_bits * cost.edram_access_pj
        ),
        busy_ns=patches * combine_patch_ns,
        latency_ns=pipelined_ns(patches, read_patch_ns, combine_patch_ns),
    )


def pipelined_ns(items: int, first_ns: float, second_ns: float) -> float:
    """Time of `items` through two pipelined stages of `first_ns` and `second_ns` each."""
    if items == 0:
        return 0.0
    return first_ns + second_ns + (items - 1) * max(first_ns, second_ns)


def combine_area_mm2(hardware: Hardware, coefficient_bits: int) -> float:
    """The combine unit's lanes and the coefficient tables in the eDRAM buffer."""
    cost = hardware.cost
    lanes_um2 = cost.combine_lanes * cost.combine_lane_area_um2
    return (lanes_um2 + coefficient_bits / 8 * cost.buffer_area_um2_per_byte) * 1e-6


def column_scales(program: Program) -> dict[str, int]:
    """Per layer, the per-column weight scales it stores (groups x cols; none for a
    per-tensor scale): one digital multiply each per patch. A combined layer (BasisN)
    has its coefficient scales [groups, cols]; a per-column basis stores its K scales
    once (under the basis array's name)."""
    scales = {
        array.layer: array.groups * array.cols
        for array in program.arrays
        if array.kind == "weights" and array.layer is not None and isinstance(array.scale, Const)
    }
    for array in program.arrays:
        if array.kind == "basis" and isinstance(array.scale, Const):
            scales[array.name] = array.cols
    for combine in program.combines:
        if isinstance(combine.scale, Const):
            scales[combine.layer] = int(np.prod(program.tensor(combine.scale.name).shape))
    return scales


def scale_multiplies(program: Program) -> dict[str, int]:
    """Per layer, the scale multiplies of one patch: one per output column with a column
    scale, and for a layer combined from a per-column basis, one per basis response (every
    segment's K responses are scaled by their basis column's scale before the combine)."""
    layers = {layer.name for layer in program.layers()}
    multiplies = {name: count for name, count in column_scales(program).items() if name in layers}
    arrays = {array.name: array for array in program.arrays}
    for combine in program.combines:
        basis = arrays.get(combine.basis)
        if basis is None or not isinstance(basis.scale, Const):
            continue
        groups, segments, basis_cols, _ = program.tensor(combine.coefficients).shape
        responses = int(groups) * int(segments) * int(basis_cols)
        multiplies[combine.layer] = multiplies.get(combine.layer, 0) + responses
    return multiplies


def scale_energy_per_output_pj(hardware: Hardware) -> float:
    """One column scale applied: its multiply and its share of a 256-bit buffer read."""
    cost = hardware.cost
    return (
        cost.scale_multiply_energy_pj
        + cost.edram_access_pj * cost.scale_bits / cost.buffer_access_bits
    )


def scale_area_mm2(hardware: Hardware, scales: int, tiles: int | None = None) -> float:
    """The buffer bytes of `scales` column scales and, if any, one multiplier per
    `input_slices` physical tiles (`tiles`, default the chip's)."""
    if scales == 0:
        return 0.0
    cost = hardware.cost
    tiles = hardware.tile_count if tiles is None else tiles
    multipliers = math.ceil(tiles / hardware.dac.input_slices)
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


def driven_rows(tile_reads: list[Read], blocks: tuple[Block, ...]) -> int:
    """Rows a tile drives in one cycle: each read drives its input segment onto its
    block's rows from the block's first (a basis block read against a layer's last,
    shorter segment drives fewer rows than it has); reads that share an input share its
    rows."""
    spans = {(blocks[read.block].row_offset, len(read.input.rows)) for read in tile_reads}
    return union_length(spans)


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


def write_cost(program: Program) -> tuple[float, float, int]:
    """(energy pJ, latency ns, cells) of every phase's writes: program-and-verify, row by
    row, tiles in parallel."""
    cost = program.hardware.cost
    by_vtile: dict[int, list[Block]] = defaultdict(list)
    for block in program.blocks:
        by_vtile[block.vtile].append(block)
    row_ns = cost.write_pv_iterations * (cost.write_pulse_ns + cost.write_verify_ns)
    energy = 0.0
    latency = 0.0
    cells_written = 0
    for phase in program.phases:
        slowest_tile_rows = 0
        for write in phase.writes:
            tile_blocks = by_vtile[write.vtile]
            cells = sum(b.cells for b in tile_blocks)
            cells_written += cells
            energy += cells * cost.write_pv_iterations * cost.write_pulse_energy_pj
            written_rows = union_length({(b.row_offset, len(b.rows)) for b in tile_blocks})
            slowest_tile_rows = max(slowest_tile_rows, written_rows)
        latency += slowest_tile_rows * row_ns  # tiles are written in parallel
    return energy, latency, cells_written


def tile_area_um2(hardware: Hardware, tile_type: TileType) -> float:
    return unit_costs(hardware, tile_type).tile_area_um2


def chip_area_mm2(hardware: Hardware) -> float:
    return sum(t.count * tile_area_um2(hardware, t) for t in hardware.tile_types) * 1e-6
