"""What `xbarc inspect` reports: how a program lands on the chip, per layer and in total.

All figures are derived from the program itself (blocks, phases, value shapes), never
stored: weights, slices, blocks, virtual and physical tiles, cell utilization, the phases
a layer runs in, cells written per pass over the program, array cycles per forward pass
(and what they would be without packing, every block on a tile of its own), and the
periphery a sparse mapping adds: its column-group width, the entries of its index tables
and the energy of reading them, and the ADC conversions per forward pass.

How much of the model is mapped: the multiply-accumulates (MACs) per forward pass of the
crossbar layers (patches x rows x cols x groups) against those of the work left digital,
which the frontend records on each such op with its reason (`DigitalOp.not_mapped`);
`mapping_warnings` names those ops when they hold a large share of the work, or when the
program has no crossbar layer at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from xbarc.cost import ProgramCost, coefficient_tables, cycle_ns, program_cost
from xbarc.diagnostics import XbarcError
from xbarc.ir.geometry import layer_patches
from xbarc.ir.tile import Block, CrossbarLayer, DigitalOp, IndexTable, Program, all_ops


@dataclass(frozen=True, slots=True)
class LayerReport:
    name: str
    kind: str
    groups: int
    rows: int
    cols: int
    weights: int
    slices: int
    blocks: int
    vtiles: int
    tiles: int
    cells_used: int
    cells_available: int
    utilization: float
    phases: str
    cell_writes: int
    patches: int
    cycles: int
    cycles_unpacked: int  # with every block on a tile of its own
    group_cols: int | None
    index_entries: int
    conversions: int
    energy_nj: float
    latency_us: float
    macs: int  # multiply-accumulates per forward pass
    # a layer combined from basis responses (BasisN):
    combined: bool = False
    segments: int = 0  # input segments per patch (groups x segments), each a basis read
    combine_macs: int = 0  # the digital combine's, per forward pass
    combine_energy_nj: float = 0.0  # its MACs and coefficient reads, part of energy_nj
    combine_bound: bool = False  # the combine, not the reads, sets the layer's pace
    tile_type: str = ""  # the tile type(s) its blocks sit on ("t64x64"; "" before tile)


@dataclass(frozen=True, slots=True)
class BasisReport:
    """A basis array (BasisN) and the layers combined from it: the basis on its tiles,
    the coefficient tables, and the digital combine unit's work and cost."""

    array: str
    segment_rows: int  # L
    basis_cols: int  # K
    weight_bits: int
    slices: int
    copies: int
    tiles: int  # physical tiles holding the basis (all copies)
    cell_writes: int  # the basis's cells, written once at deployment in a one-phase program
    combined_layers: int
    kept_layers: tuple[str, ...]  # crossbar layers stored with their own weights
    coef_bits: tuple[int, ...]  # the layers' q, distinct values
    coefficient_entries: int
    coefficient_bits: int  # as stored (dense, or the non-zeros with their index)
    coefficient_nonzeros: int
    combine_macs: int
    combine_mac_energy_uj: float
    coefficient_energy_uj: float
    combine_busy_us: float  # the combine unit's busy time, overlapped with the reads
    combine_bound_layers: int  # layers whose pace the combine sets
    combine_lanes: int
    combine_area_mm2: float  # lanes and coefficient tables, part of area_mm2

    @property
    def combine_energy_uj(self) -> float:
        return self.combine_mac_energy_uj + self.coefficient_energy_uj


@dataclass(frozen=True, slots=True)
class DigitalWork:
    """An op doing work a crossbar could do, left digital: why, and its MACs per forward
    pass (None: unknown)."""

    name: str
    op_type: str
    reason: str
    macs: int | None


@dataclass(frozen=True, slots=True)
class UniformSize:
    """The program with every layer on one tile type: its figures per forward pass."""

    tile_type: str
    energy_uj: float
    latency_us: float
    used_area_mm2: float
    edap_used: float
    phases: int


@dataclass(frozen=True, slots=True)
class ProgramReport:
    tile_types: str
    tile_budget: int
    layers: tuple[LayerReport, ...]
    digital_ops: int
    weights: int
    blocks: int
    vtiles: int
    tiles: int
    cells_used: int
    cells_available: int
    utilization: float
    phases: int
    cell_writes: int
    cycles: int
    cycles_unpacked: int
    index_entries: int
    conversions: int
    index_energy_uj: float  # reading the index tables, part of energy_uj
    energy_uj: float
    latency_us: float
    write_energy_uj: float
    write_latency_us: float
    writes_per_pass: bool
    area_mm2: float
    edap: float
    tops_per_watt: float
    column_scales: int  # per-column weight scales, each applied once per output
    scale_energy_uj: float  # applying them, part of energy_uj
    scale_area_mm2: float  # storing them and their multipliers, part of area_mm2
    crossbar_macs: int = 0
    digital_macs: int = 0  # of the digital work whose size is known
    digital_work: tuple[DigitalWork, ...] = ()
    deployment_cell_writes: int = 0  # written once before the first inference (one phase)
    cell_writes_per_inference: int = 0  # written again on every inference (several phases)
    edp: float = 0.0  # energy x latency per forward pass, pJ x ns
    basis: tuple[BasisReport, ...] = ()  # BasisN programs: their basis arrays
    # the energy per forward pass by what it pays for (their sum with index_energy_uj,
    # scale_energy_uj, the combine's and the recurring writes is energy_uj)
    read_energy_uj: float = 0.0
    adc_energy_uj: float = 0.0
    dac_energy_uj: float = 0.0
    shift_add_energy_uj: float = 0.0
    buffer_energy_uj: float = 0.0  # the layers' activations in and out of the buffer
    digital_op_energy_uj: float = 0.0  # the digital ops between the layers
    used_area_mm2: float = 0.0  # what the program occupies (xbarc/cost.py)
    edap_used: float = 0.0  # energy x latency x used area
    # a chip of several tile types: the same program at each uniform size (re-tiled by
    # the compiler, `compiler.uniform_tile_sizes`), its EDAP against the chosen mix's
    uniform: tuple[UniformSize, ...] = ()

    @property
    def mapped_share(self) -> float:
        """The share of the known MACs done on crossbars (0 when there are none)."""
        total = self.crossbar_macs + self.digital_macs
        return self.crossbar_macs / total if total else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data["totals"] = {key: data.pop(key) for key in TOTAL_KEYS}
        for basis, entry in zip(self.basis, data["basis"], strict=True):
            entry["combine_energy_uj"] = basis.combine_energy_uj
        data["mapping"] = {
            "crossbar_layers": len(self.layers),
            "crossbar_macs": data.pop("crossbar_macs"),
            "digital_macs": data.pop("digital_macs"),
            "mapped_share": self.mapped_share,
            "digital_work": data.pop("digital_work"),
            "warnings": mapping_warnings(self),
        }
        return data


TOTAL_KEYS = (
    "weights",
    "blocks",
    "vtiles",
    "tiles",
    "cells_used",
    "cells_available",
    "utilization",
    "phases",
    "cell_writes",
    "cycles",
    "cycles_unpacked",
    "index_entries",
    "conversions",
    "index_energy_uj",
    "energy_uj",
    "latency_us",
    "write_energy_uj",
    "write_latency_us",
    "writes_per_pass",
    "area_mm2",
    "edap",
    "tops_per_watt",
    "column_scales",
    "scale_energy_uj",
    "scale_area_mm2",
    "deployment_cell_writes",
    "cell_writes_per_inference",
    "edp",
    "read_energy_uj",
    "adc_energy_uj",
    "dac_energy_uj",
    "shift_add_energy_uj",
    "buffer_energy_uj",
    "digital_op_energy_uj",
    "used_area_mm2",
    "edap_used",
)


def report(program: Program) -> ProgramReport:
    hardware = program.hardware
    tile_cells = {t.name: t.cells for t in hardware.tile_types}
    types = program.value_types()
    vtile_cells = {b.vtile: tile_cells[b.tile_type] for b in program.blocks}
    blocks_by_array: dict[str, list] = defaultdict(list)
    for block in program.blocks:
        blocks_by_array[block.array].append(block)
    block_cells_on_vtile: dict[int, list] = defaultdict(list)
    for block in program.blocks:
        block_cells_on_vtile[block.vtile].append(block)

    writes_by_array: dict[str, int] = defaultdict(int)
    tiles_by_array: dict[str, set[int]] = defaultdict(set)
    phases_by_layer: dict[str, list[int]] = defaultdict(list)
    cycles_by_layer: dict[str, int] = defaultdict(int)
    runs_by_layer: dict[str, int] = defaultdict(int)
    for phase in program.phases:
        for write in phase.writes:
            for block in block_cells_on_vtile[write.vtile]:
                writes_by_array[block.array] += block.cells
                tiles_by_array[block.array].add(write.tile)
        for run in phase.runs:
            phases_by_layer[run.layer].append(phase.index)
            cycles_by_layer[run.layer] += len(run.cycles)
            runs_by_layer[run.layer] += 1

    input_slices = hardware.dac.input_slices
    patches_by_layer = {layer.name: layer_patches(layer, types) for layer in program.layers()}
    cost = program_cost(program, patches_by_layer)
    layer_costs = {c.name: c for c in cost.layers}
    segments_by_layer = combined_segments(program)
    layers = []
    for layer in program.layers():
        array = program.weights_of(layer.name)
        array_name = array.name if array is not None else ""
        blocks = blocks_by_array.get(array_name, [])
        vtiles = {b.vtile for b in blocks}
        cells_used = sum(b.cells for b in blocks)
        cells_available = sum(vtile_cells[v] for v in vtiles)
        patches = patches_by_layer[layer.name]
        layers.append(
            LayerReport(
                name=layer.name,
                kind=layer.kind,
                groups=layer.groups,
                rows=layer.rows,
                cols=layer.cols,
                weights=layer.weight_count,
                slices=len(array.slices) if array else 0,
                blocks=len(blocks),
                vtiles=len(vtiles),
                tiles=len(tiles_by_array[array_name]),
                cells_used=cells_used,
                cells_available=cells_available,
                utilization=cells_used / cells_available if cells_available else 0.0,
                phases=phase_ranges(phases_by_layer[layer.name]),
                cell_writes=writes_by_array[array_name],
                patches=patches,
                cycles=patches * cycles_by_layer[layer.name] * input_slices,
                cycles_unpacked=patches * runs_by_layer[layer.name] * input_slices,
                group_cols=array.group_cols if array else None,
                index_entries=index_entries(blocks),
                conversions=layer_costs[layer.name].conversions,
                energy_nj=layer_costs[layer.name].energy_pj * 1e-3,
                latency_us=layer_costs[layer.name].latency_ns * 1e-3,
                macs=patches * layer.rows * layer.cols * layer.groups,
                combined=layer.name in segments_by_layer,
                segments=segments_by_layer.get(layer.name, 0),
                combine_macs=layer_costs[layer.name].combine_macs,
                combine_energy_nj=layer_costs[layer.name].combine_energy_pj * 1e-3,
                combine_bound=(
                    layer_costs[layer.name].combine_latency_ns
                    > patches * cycles_by_layer[layer.name] * input_slices * cycle_ns(hardware)
                ),
                tile_type="+".join(
                    t.name for t in hardware.tile_types if t.name in {b.tile_type for b in blocks}
                ),
            )
        )
    digital_work = tuple(
        DigitalWork(op.name, op.op_type, op.not_mapped.reason, op.not_mapped.macs)
        for op in all_ops(program.ops)
        if isinstance(op, DigitalOp) and op.not_mapped is not None
    )
    all_vtiles = {b.vtile for b in program.blocks}
    cells_used = sum(b.cells for b in program.blocks)
    cells_available = sum(vtile_cells[v] for v in all_vtiles)
    used_tiles = {w.tile for phase in program.phases for w in phase.writes}
    return ProgramReport(
        tile_types=", ".join(f"{t.name} x{t.count}" for t in hardware.tile_types),
        tile_budget=hardware.tile_count,
        layers=tuple(layers),
        digital_ops=sum(1 for op in all_ops(program.ops) if not isinstance(op, CrossbarLayer)),
        weights=sum(r.weights for r in layers),
        blocks=len(program.blocks),
        vtiles=len(all_vtiles),
        tiles=len(used_tiles),
        cells_used=cells_used,
        cells_available=cells_available,
        utilization=cells_used / cells_available if cells_available else 0.0,
        phases=len(program.phases),
        cell_writes=sum(writes_by_array.values()),
        cycles=sum(r.cycles for r in layers),
        cycles_unpacked=sum(r.cycles_unpacked for r in layers),
        index_entries=sum(r.index_entries for r in layers),
        conversions=sum(r.conversions for r in layers),
        index_energy_uj=sum(layer.index_energy_pj for layer in cost.layers) * 1e-6,
        energy_uj=cost.energy_pj * 1e-6,
        latency_us=cost.latency_ns * 1e-3,
        write_energy_uj=cost.write_energy_pj * 1e-6,
        write_latency_us=cost.write_latency_ns * 1e-3,
        writes_per_pass=cost.writes_per_pass,
        area_mm2=cost.area_mm2,
        edap=cost.edap,
        tops_per_watt=cost.tops_per_watt,
        column_scales=cost.column_scales,
        scale_energy_uj=sum(layer.scale_energy_pj for layer in cost.layers) * 1e-6,
        scale_area_mm2=cost.scale_area_mm2,
        crossbar_macs=sum(r.macs for r in layers),
        digital_macs=sum(work.macs or 0 for work in digital_work),
        digital_work=digital_work,
        deployment_cell_writes=cost.deployment_cell_writes,
        cell_writes_per_inference=cost.cell_writes_per_inference,
        edp=cost.edp,
        basis=basis_reports(program, tuple(layers), cost, writes_by_array, tiles_by_array),
        read_energy_uj=sum(layer.read_energy_pj for layer in cost.layers) * 1e-6,
        adc_energy_uj=sum(layer.adc_energy_pj for layer in cost.layers) * 1e-6,
        dac_energy_uj=sum(layer.dac_energy_pj for layer in cost.layers) * 1e-6,
        shift_add_energy_uj=sum(layer.shift_add_energy_pj for layer in cost.layers) * 1e-6,
        buffer_energy_uj=sum(layer.buffer_energy_pj for layer in cost.layers) * 1e-6,
        digital_op_energy_uj=cost.digital_op_energy_pj * 1e-6,
        used_area_mm2=cost.used_area_mm2,
        edap_used=cost.edap_used,
    )


def combined_segments(program: Program) -> dict[str, int]:
    """Combined layer -> its input segments per patch (groups x segments of its
    coefficient table)."""
    result = {}
    for combine in program.combines:
        groups, segments = program.tensor(combine.coefficients).shape[:2]
        result[combine.layer] = int(groups) * int(segments)
    return result


def basis_reports(
    program: Program,
    layers: tuple[LayerReport, ...],
    cost: ProgramCost,
    writes_by_array: dict[str, int],
    tiles_by_array: dict[str, set[int]],
) -> tuple[BasisReport, ...]:
    """One report per basis array: the basis, its combined layers' coefficient tables
    and the combine unit's work on them."""
    tables = {table.layer: table for table in coefficient_tables(program)}
    layer_costs = {c.name: c for c in cost.layers}
    by_name = {layer.name: layer for layer in layers}
    combined = {combine.layer for combine in program.combines}
    kept = tuple(layer.name for layer in layers if layer.name not in combined)
    result = []
    for array in program.arrays:
        if array.kind != "basis":
            continue
        names = [c.layer for c in program.combines if c.basis == array.name]
        mine = [tables[name] for name in names]
        costs = [layer_costs[name] for name in names]
        result.append(
            BasisReport(
                array=array.name,
                segment_rows=array.rows,
                basis_cols=array.cols,
                weight_bits=array.weight_bits,
                slices=len(array.slices),
                copies=array.copies,
                tiles=len(tiles_by_array[array.name]),
                cell_writes=writes_by_array[array.name],
                combined_layers=len(names),
                kept_layers=kept,
                coef_bits=tuple(sorted({table.bits for table in mine})),
                coefficient_entries=sum(table.entries for table in mine),
                coefficient_bits=sum(table.stored_bits for table in mine),
                coefficient_nonzeros=sum(table.nonzeros for table in mine),
                combine_macs=sum(c.combine_macs for c in costs),
                combine_mac_energy_uj=sum(c.combine_mac_energy_pj for c in costs) * 1e-6,
                coefficient_energy_uj=sum(c.coefficient_energy_pj for c in costs) * 1e-6,
                combine_busy_us=sum(c.combine_latency_ns for c in costs) * 1e-3,
                combine_bound_layers=sum(1 for name in names if by_name[name].combine_bound),
                combine_lanes=program.hardware.cost.combine_lanes,
                combine_area_mm2=cost.combine_area_mm2,
            )
        )
    return tuple(result)


def index_entries(blocks: list[Block]) -> int:
    """Entries of the distinct index tables the blocks gather rows and scatter columns by."""
    tables = {
        indices
        for block in blocks
        for indices in (block.rows, block.cols)
        if isinstance(indices, IndexTable)
    }
    return sum(table.count for table in tables)


def phase_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    if not indices:
        return "-"
    parts: list[str] = []
    start = previous = indices[0]
    for index in indices[1:] + [None]:  # type: ignore[list-item]
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    return ",".join(parts)


def format_report(result: ProgramReport) -> str:
    """The per-layer table and the totals, as fixed-width text. Programs with sparse or
    squeezed layers get three more columns: column-group width, index-table entries, and
    ADC conversions per forward pass."""
    sparse = any(layer.group_cols is not None for layer in result.layers)
    several = "," in result.tile_types  # a chip of several tile types: each layer's
    header = (
        f"{'layer':<28} {'kind':<8} {'matrix':>16} {'weights':>10} {'slices':>6} "
        f"{'blocks':>7} {'vtiles':>7} {'tiles':>6} {'util':>6} {'phases':>9} "
        f"{'cell writes':>12} {'cycles':>12} {'energy nJ':>11} {'latency us':>11}"
    )
    if sparse:
        header += f" {'col group':>9} {'index':>8} {'conversions':>13}"
    if several:
        header += f" {'tile type':>14}"
    lines = [
        f"chip: {result.tile_types} ({result.tile_budget} tiles)",
        header,
        "-" * len(header),
    ]
    for layer in result.layers:
        matrix = f"{layer.rows}x{layer.cols}" + (f"x{layer.groups}g" if layer.groups > 1 else "")
        line = (
            f"{_clip(layer.name, 28):<28} {layer.kind:<8} {matrix:>16} {layer.weights:>10} "
            f"{layer.slices:>6} {layer.blocks:>7} {layer.vtiles:>7} {layer.tiles:>6} "
            f"{layer.utilization:>6.1%} {_clip(layer.phases, 9):>9} {layer.cell_writes:>12} "
            f"{layer.cycles:>12} {layer.energy_nj:>11.1f} {layer.latency_us:>11.2f}"
        )
        if sparse:
            group = "-" if layer.group_cols is None else str(layer.group_cols)
            line += f" {group:>9} {layer.index_entries:>8} {layer.conversions:>13}"
        if several:
            line += f" {layer.tile_type or '-':>14}"
        lines.append(line)
    lines.append("-" * len(header))
    total = (
        f"{'total':<28} {'':<8} {'':>16} {result.weights:>10} {'':>6} {result.blocks:>7} "
        f"{result.vtiles:>7} {result.tiles:>6} {result.utilization:>6.1%} "
        f"{result.phases:>9} {result.cell_writes:>12} {result.cycles:>12} "
        f"{result.energy_uj * 1e3:>11.1f} {result.latency_us:>11.2f}"
    )
    if sparse:
        total += f" {'':>9} {result.index_entries:>8} {result.conversions:>13}"
    lines.append(total)
    lines.append("")
    lines.append(
        f"{len(result.layers)} crossbar layers, {result.digital_ops} digital ops; "
        f"{result.weights} weights in {result.cells_used} cells on {result.vtiles} virtual "
        f"tiles ({result.utilization:.1%} of their cells); {result.phases} phase(s) on "
        f"{result.tiles} physical tiles; {result.cell_writes} cell writes per pass over "
        f"the program; {result.cycles} array cycles per forward pass"
    )
    if result.blocks != result.vtiles:
        lines.append(
            f"packing: {result.blocks} blocks share {result.vtiles} virtual tiles; with a "
            f"tile per block they would take {result.blocks} tiles and "
            f"{result.cycles_unpacked} cycles per forward pass (against {result.cycles})"
        )
    if sparse:
        lines.append(
            f"sparse periphery: {result.index_entries} index-table entries gather rows and "
            f"scatter columns, read from the buffer for {result.index_energy_uj * 1e3:.1f} nJ "
            f"per forward pass; {result.conversions} ADC conversions per forward pass"
        )
    lines.append(mapping_line(result))
    lines.extend(f"  {work_line(work)}" for work in result.digital_work)
    if result.column_scales:
        lines.append(
            f"column scales: {result.column_scales} per-column weight scales applied after the "
            f"ADC, {result.scale_energy_uj * 1e3:.2f} nJ per forward pass (a multiply and a "
            f"buffer read per output) and {result.scale_area_mm2:.4f} mm^2 (their buffer and "
            "multipliers), both included below"
        )
    for basis in result.basis:
        lines.extend(basis_lines(result, basis))
    writes = "every pass (several phases)" if result.writes_per_pass else "once (one phase)"
    lines.append(
        f"per forward pass: energy {result.energy_uj:.3f} uJ, latency {result.latency_us:.2f} us, "
        f"{result.tops_per_watt:.2f} TOPS/W; chip area {result.area_mm2:.3f} mm^2; "
        f"EDAP {result.edap:.4g} pJ*ns*mm^2; writes {result.write_energy_uj:.3f} uJ and "
        f"{result.write_latency_us:.2f} us, paid {writes}"
    )
    lines.append(energy_breakdown_line(result))
    lines.append(
        f"cell writes: {result.deployment_cell_writes} at deployment, "
        f"{result.cell_writes_per_inference} per inference; {result.cycles} array cycles per "
        f"inference; EDP {result.edp:.4g} pJ*ns"
    )
    lines.extend(uniform_lines(result))
    return "\n".join(lines)


def uniform_lines(result: ProgramReport) -> list[str]:
    """The chosen mix of tile types against every uniform size, on used area."""
    if not result.uniform:
        return []
    lines = [
        "",
        "tile sizes: this program against every layer on one tile type (EDAP on used area)",
        f"{'tile type':<14} {'energy uJ':>10} {'latency us':>11} {'used mm^2':>10} "
        f"{'phases':>6} {'EDAP pJ*ns*mm^2':>16} {'mix vs it':>10}",
    ]
    rows = [("chosen mix", result.energy_uj, result.latency_us, result.used_area_mm2,
             result.phases, result.edap_used)]  # fmt: skip
    rows += [
        (u.tile_type, u.energy_uj, u.latency_us, u.used_area_mm2, u.phases, u.edap_used)
        for u in result.uniform
    ]
    for name, energy, latency, area, phases, edap in rows:
        change = f"{result.edap_used / edap - 1:+.1%}" if edap and name != "chosen mix" else ""
        lines.append(
            f"{name:<14} {energy:>10.4f} {latency:>11.2f} {area:>10.4f} {phases:>6} "
            f"{edap:>16.4g} {change:>10}"
        )
    best = min(result.uniform, key=lambda u: u.edap_used)
    lines.append(
        f"best uniform size {best.tile_type}: the chosen mix's EDAP is "
        f"{result.edap_used / best.edap_used - 1:+.1%} against it"
        if best.edap_used
        else "no uniform size has a cost"
    )
    return lines


def basis_lines(result: ProgramReport, basis: BasisReport) -> list[str]:
    """A basis program's basis, coefficient tables, combined layers (segments, array
    cycles, combine MACs and energy per inference, which stage sets the pace) and the
    combine unit's share of the energy and area."""
    copies = f"{basis.copies} cop{'y' if basis.copies == 1 else 'ies'}"
    written = (
        "at deployment, none per inference"
        if not result.writes_per_pass
        else ("on every inference (several phases)")
    )
    q = "/".join(str(bits) for bits in basis.coef_bits) or "-"
    kept = ", ".join(basis.kept_layers) if basis.kept_layers else "none"
    share = basis.combine_energy_uj / result.energy_uj if result.energy_uj else 0.0
    area_share = basis.combine_area_mm2 / result.area_mm2 if result.area_mm2 else 0.0
    nonzero = (
        basis.coefficient_nonzeros / basis.coefficient_entries if basis.coefficient_entries else 0.0
    )
    lines = [
        "",
        f"basis @{basis.array}: K={basis.basis_cols} vectors of L={basis.segment_rows} rows, "
        f"{basis.weight_bits}-bit levels in {basis.slices} slices; {copies} on {basis.tiles} "
        f"physical tiles, {basis.cell_writes} cells written {written}",
        f"coefficients: {basis.combined_layers} combined layers (kept with their own weights: "
        f"{kept}), q={q} bits; {basis.coefficient_entries} entries, "
        f"{basis.coefficient_nonzeros} non-zero ({nonzero:.1%}), {basis.coefficient_bits} bits "
        f"stored ({format_bytes(basis.coefficient_bits / 8)})",
    ]
    header = (
        f"  {'combined layer':<28} {'segments':>8} {'cycles':>12} {'combine MACs':>14} "
        f"{'combine nJ':>11} {'pace set by':>11}"
    )
    lines.append(header)
    for layer in result.layers:
        if not layer.combined:
            continue
        pace = "combine" if layer.combine_bound else "reads"
        lines.append(
            f"  {_clip(layer.name, 28):<28} {layer.segments:>8} {layer.cycles:>12} "
            f"{layer.combine_macs:>14} {layer.combine_energy_nj:>11.1f} {pace:>11}"
        )
    lines.append(
        f"combine unit: {basis.combine_lanes} MAC lanes; {format_macs(basis.combine_macs)} per "
        f"forward pass, {basis.combine_energy_uj:.4g} uJ ({share:.1%} of the energy: MACs "
        f"{basis.combine_mac_energy_uj:.4g} uJ, coefficient reads "
        f"{basis.coefficient_energy_uj:.4g} uJ); busy {basis.combine_busy_us:.4g} us, pipelined "
        f"with the reads, setting the pace of {basis.combine_bound_layers} of "
        f"{basis.combined_layers} layers; {basis.combine_area_mm2:.4f} mm^2 of lanes and "
        f"tables ({area_share:.1%} of the area)"
    )
    return lines


# --- how much of the model is mapped ----------------------------------------------------

# compile and inspect warn when more than this share of the known MACs stays digital
DIGITAL_SHARE_WARNING = 0.10
LISTED_OPS = 10  # ops named in a warning, the largest first


# --- compare-mappings: the written program and programs that differ from it in one thing

COMPARED_FIGURES = (
    "blocks",
    "vtiles",
    "cells_used",
    "utilization",
    "phases",
    "cell_writes",
    "cycles",
    "conversions",
    "index_entries",
    "energy_uj",
)


def comparison_row(
    differs: str, mapping: str, packing: str, program: Program, result: ProgramReport
) -> dict:
    """One row of `compile --compare-mappings`: how the program differs from the written
    one ("" for the written one itself), its mapping, cell bits and packing, its column
    groups, and the figures `inspect` reports for it (`result` is `report(program)`)."""
    return {
        "differs": differs,
        "mapping": mapping,
        "cell_bits": cell_bits_of(program),
        "packing": packing,
        "group_cols": group_cols_of(program),
        **{key: getattr(result, key) for key in COMPARED_FIGURES},
    }


def cell_bits_of(program: Program) -> int | None:
    """The widest slice of the program's weight arrays (None: no arrays)."""
    return max((s.bits for array in program.arrays for s in array.slices), default=None)


def group_cols_of(program: Program) -> str:
    """The column-group widths of the program's arrays: "8", "4-16", or "-" (dense)."""
    widths = sorted({array.group_cols for array in program.arrays if array.group_cols})
    if not widths:
        return "-"
    return str(widths[0]) if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"


def format_mapping_comparison(rows: list[dict]) -> str:
    """The rows side by side, the written program first; an alternative that could not be
    compiled shows its error."""
    written = rows[0]["vtiles"]
    lines = [
        "the written program and programs that differ from it in one thing:",
        f"{'differs from the written':<25} {'mapping':>8} {'cell bits':>9} {'packing':>8} "
        f"{'group cols':>10} {'blocks':>7} {'crossbars':>9} {'vs written':>10} "
        f"{'cells used':>10} {'utilization':>11} {'phases':>6} {'cycles/inf':>10} "
        f"{'ADC conv/inf':>12} {'index entries':>13} {'energy uJ/inf':>13}",
    ]
    for row in rows:
        label = row["differs"] or "(written)"
        if "error" in row:
            lines.append(f"{label:<25} cannot compile: {row['error']}")
            continue
        versus = f"{row['vtiles'] / written:.2f}x" if written else "-"
        bits = "-" if row["cell_bits"] is None else str(row["cell_bits"])
        lines.append(
            f"{label:<25} {row['mapping']:>8} {bits:>9} {row['packing']:>8} "
            f"{row['group_cols']:>10} {row['blocks']:>7} {row['vtiles']:>9} {versus:>10} "
            f"{row['cells_used']:>10} {row['utilization']:>11.1%} {row['phases']:>6} "
            f"{row['cycles']:>10} {row['conversions']:>12} {row['index_entries']:>13} "
            f"{row['energy_uj']:>13.3f}"
        )
    return "\n".join(lines)


def mapping_line(result: ProgramReport) -> str:
    """One line: the crossbar layers, their MACs and their share of the work."""
    unknown = sum(1 for work in result.digital_work if work.macs is None)
    text = (
        f"mapped: {len(result.layers)} crossbar layers do {format_macs(result.crossbar_macs)} "
        f"per forward pass ({result.mapped_share:.1%} of the work)"
    )
    if not result.digital_work:
        return text
    text += (
        f"; {format_macs(result.digital_macs)} stay digital on {len(result.digital_work)} "
        f"op{'s' if len(result.digital_work) != 1 else ''} that could be crossbar work"
    )
    if unknown:
        text += f" ({unknown} of unknown size)"
    return text


def work_line(work: DigitalWork) -> str:
    size = "? MAC" if work.macs is None else format_macs(work.macs)
    return f"{work.name} ({work.op_type}, {size}): {work.reason}"


def mapping_warnings(result: ProgramReport) -> list[str]:
    """Warnings when no crossbar layer is left, when a large share of the work stays
    digital, or work of unknown size (a Loop of unknown trip count): the ops, the largest
    first, with the reason for each."""
    work = result.digital_work
    unknown = sum(1 for w in work if w.macs is None)
    large = 1 - result.mapped_share > DIGITAL_SHARE_WARNING
    if result.layers and not (work and large) and not unknown:
        return []
    if not result.layers:
        head = "warning: the program has no crossbar layers: the whole model runs digitally"
        if not work:
            head += " (it has no Conv, ConvTranspose, Gemm or MatMul to map)"
    elif large:
        head = (
            f"warning: {1 - result.mapped_share:.1%} of the work stays digital "
            f"({format_macs(result.digital_macs)} of "
            f"{format_macs(result.digital_macs + result.crossbar_macs)})"
        )
    else:
        head = (
            f"warning: work of unknown size stays digital on {unknown} "
            f"op{'s' if unknown != 1 else ''}, next to {format_macs(result.crossbar_macs)} "
            "on crossbars"
        )
    ranked = sorted(work, key=lambda w: -1 if w.macs is None else w.macs, reverse=True)
    lines = [head + (":" if work else "")]
    lines.extend(f"warning:   {work_line(w)}" for w in ranked[:LISTED_OPS])
    if len(ranked) > LISTED_OPS:
        rest = ranked[LISTED_OPS:]
        lines.append(
            f"warning:   ... and {len(rest)} more ops "
            f"({format_macs(sum(w.macs or 0 for w in rest))})"
        )
    return lines


def format_macs(macs: int) -> str:
    for unit, size in (("GMAC", 1e9), ("MMAC", 1e6), ("kMAC", 1e3)):
        if macs >= size:
            return f"{macs / size:.2f} {unit}"
    return f"{macs} MAC"


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} bytes"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


# --- per virtual tile ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TileReport:
    """One virtual tile: where it is written, what it holds and how often it is read."""

    vtile: int
    tile_type: str
    placements: tuple[tuple[int, int], ...]  # (phase, physical tile) of each write
    blocks: int
    cells_used: int
    cells: int
    reads: int  # cycles that read it, per input vector of the layers reading it
    arrays: tuple[tuple[str, int], ...]  # (array, its blocks here), in program order

    @property
    def utilization(self) -> float:
        return self.cells_used / self.cells if self.cells else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data["placements"] = [{"phase": p, "tile": t} for p, t in self.placements]
        data["arrays"] = [{"array": a, "blocks": n} for a, n in self.arrays]
        data["utilization"] = self.utilization
        return data


def tile_reports(program: Program) -> list[TileReport]:
    """Every virtual tile of `program`, in vtile order."""
    tile_cells = {t.name: t.cells for t in program.hardware.tile_types}
    on_vtile: dict[int, list[Block]] = defaultdict(list)
    for block in program.blocks:
        on_vtile[block.vtile].append(block)
    placements: dict[int, list[tuple[int, int]]] = defaultdict(list)
    reads: dict[int, int] = defaultdict(int)
    for phase in program.phases:
        for write in phase.writes:
            placements[write.vtile].append((phase.index, write.tile))
        for run in phase.runs:
            for cycle in run.cycles:
                for vtile in {program.blocks[i].vtile for i in cycle.blocks}:
                    reads[vtile] += 1
    result = []
    for vtile in sorted(on_vtile):
        blocks = on_vtile[vtile]
        arrays: dict[str, int] = {}
        for block in blocks:
            arrays[block.array] = arrays.get(block.array, 0) + 1
        result.append(
            TileReport(
                vtile=vtile,
                tile_type=blocks[0].tile_type,
                placements=tuple(placements[vtile]),
                blocks=len(blocks),
                cells_used=sum(b.cells for b in blocks),
                cells=tile_cells[blocks[0].tile_type],
                reads=reads[vtile],
                arrays=tuple(arrays.items()),
            )
        )
    return result


def format_tile_reports(tiles: list[TileReport]) -> str:
    """One line per virtual tile: type, (phase:tile) of its writes, blocks, cells,
    utilization, reads per input vector, and the arrays (layers) it holds."""
    header = (
        f"{'vtile':>7} {'type':<10} {'written (phase:tile)':<22} {'blocks':>6} {'cells':>7} "
        f"{'util':>6} {'reads':>6}  arrays (blocks)"
    )
    lines = [header, "-" * len(header)]
    for tile in tiles:
        written = ",".join(f"{phase}:t{where}" for phase, where in tile.placements) or "-"
        arrays = ", ".join(f"@{name} ({count})" for name, count in tile.arrays)
        lines.append(
            f"{'v' + str(tile.vtile):>7} {tile.tile_type:<10} {_clip(written, 22):<22} "
            f"{tile.blocks:>6} {tile.cells_used:>7} {tile.utilization:>6.1%} {tile.reads:>6}  "
            f"{arrays}"
        )
    shared = sum(1 for tile in tiles if len(tile.arrays) > 1)
    lines.append("")
    lines.append(
        f"{len(tiles)} virtual tiles, {shared} holding blocks of several layers; reads: the "
        "cycles that read a tile for one input vector of its layers"
    )
    return "\n".join(lines)


LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def tile_map(program: Program, vtile: int, width: int = 64, height: int = 32) -> str:
    """Where the blocks of `vtile` sit on its cells, drawn in at most `width` x `height`
    characters (each standing for a patch of cells, marked by the block holding most of
    its cells, '.' where no block is), then a legend of the blocks."""
    blocks = [b for b in program.blocks if b.vtile == vtile]
    if not blocks:
        hint = f"virtual tiles are numbered up to v{program.vtile_count - 1}"
        raise XbarcError(f"the program has no virtual tile v{vtile}", hint=hint)
    tile_type = program.hardware.tile_type(blocks[0].tile_type)
    rows_per_char = -(-tile_type.rows // height)
    cols_per_char = -(-tile_type.cols // width)
    grid = np.full((tile_type.rows, tile_type.cols), -1, dtype=np.int64)
    for position, block in enumerate(blocks):
        grid[
            block.row_offset : block.row_offset + len(block.rows),
            block.col_offset : block.col_offset + len(block.cols),
        ] = position
    label = {p: LABELS[p] if p < len(LABELS) else "#" for p in range(len(blocks))}
    lines = [
        f"v{vtile}: {tile_type.name}, {tile_type.rows}x{tile_type.cols} cells, one character "
        f"per {rows_per_char}x{cols_per_char} cells"
    ]
    for row in range(0, tile_type.rows, rows_per_char):
        chars = []
        for col in range(0, tile_type.cols, cols_per_char):
            patch = grid[row : row + rows_per_char, col : col + cols_per_char].ravel()
            held = patch[patch >= 0]
            chars.append(label[int(np.bincount(held).argmax())] if held.size else ".")
        lines.append("  " + "".join(chars))
    arrays = {array.name: array for array in program.arrays}
    for position, block in enumerate(blocks):
        piece = arrays[block.array].slices[block.slice]
        rows = "table" if isinstance(block.rows, IndexTable) else "range"
        cols = "table" if isinstance(block.cols, IndexTable) else "range"
        lines.append(
            f"  {label[position]} b{block.index} @{block.array} slice {block.slice} "
            f"({piece.polarity}, shift {piece.shift}) group {block.group}: "
            f"{len(block.rows)} rows ({rows}) x {len(block.cols)} cols ({cols}) "
            f"at {block.row_offset},{block.col_offset}"
        )
    return "\n".join(lines)


def energy_breakdown_line(result: ProgramReport) -> str:
    """What the energy of a forward pass pays for, and the area the program occupies."""
    combine = sum(basis.combine_energy_uj for basis in result.basis)
    writes = result.write_energy_uj if result.writes_per_pass else 0.0
    parts = (
        ("arrays", result.read_energy_uj),
        ("ADC", result.adc_energy_uj),
        ("DAC", result.dac_energy_uj),
        ("shift-add", result.shift_add_energy_uj),
        ("buffer", result.buffer_energy_uj),
        ("index tables", result.index_energy_uj),
        ("column scales", result.scale_energy_uj),
        ("combine", combine),
        ("digital ops", result.digital_op_energy_uj),
        ("writes", writes),
    )
    shares = ", ".join(
        f"{label} {value * 1e3:.4g} nJ ({value / result.energy_uj:.1%})"
        for label, value in parts
        if value and result.energy_uj
    )
    return (
        f"energy by part: {shares or 'none'}; used area {result.used_area_mm2:.4f} mm^2 "
        f"(the tiles written, buffer, digital units), EDAP over it {result.edap_used:.4g} "
        "pJ*ns*mm^2"
    )
