"""What `xbarc inspect` reports: how a program lands on the chip, per layer and in total.

All figures are derived from the program itself (blocks, phases, value shapes), never
stored: weights, slices, blocks, virtual and physical tiles, cell utilization, the phases
a layer runs in, cells written per pass over the program, array cycles per forward pass
(and what they would be without packing, every block on a tile of its own), and the
periphery a sparse mapping adds: its column-group width, the entries of its index tables
and the energy of reading them, and the ADC conversions per forward pass.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass

from xbarc.cost import program_cost
from xbarc.ir.tile import Block, CrossbarLayer, IndexTable, Program
from xbarc.ir.types import TensorType


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

    def to_json(self) -> dict:
        data = asdict(self)
        data["totals"] = {key: data.pop(key) for key in TOTAL_KEYS}
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
    layers = []
    for layer in program.layers():
        blocks = blocks_by_array.get(layer.name, [])
        vtiles = {b.vtile for b in blocks}
        cells_used = sum(b.cells for b in blocks)
        cells_available = sum(vtile_cells[v] for v in vtiles)
        patches = patches_by_layer[layer.name]
        array = next((a for a in program.arrays if a.name == layer.name), None)
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
                tiles=len(tiles_by_array[layer.name]),
                cells_used=cells_used,
                cells_available=cells_available,
                utilization=cells_used / cells_available if cells_available else 0.0,
                phases=phase_ranges(phases_by_layer[layer.name]),
                cell_writes=writes_by_array[layer.name],
                patches=patches,
                cycles=patches * cycles_by_layer[layer.name] * input_slices,
                cycles_unpacked=patches * runs_by_layer[layer.name] * input_slices,
                group_cols=array.group_cols if array else None,
                index_entries=index_entries(blocks),
                conversions=layer_costs[layer.name].conversions,
                energy_nj=layer_costs[layer.name].energy_pj * 1e-3,
                latency_us=layer_costs[layer.name].latency_ns * 1e-3,
            )
        )
    all_vtiles = {b.vtile for b in program.blocks}
    cells_used = sum(b.cells for b in program.blocks)
    cells_available = sum(vtile_cells[v] for v in all_vtiles)
    used_tiles = {w.tile for phase in program.phases for w in phase.writes}
    return ProgramReport(
        tile_types=", ".join(f"{t.name} x{t.count}" for t in hardware.tile_types),
        tile_budget=hardware.tile_count,
        layers=tuple(layers),
        digital_ops=len(program.ops) - len(layers),
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
    )


def index_entries(blocks: list[Block]) -> int:
    """Entries of the distinct index tables the blocks gather rows and scatter columns by."""
    tables = {
        indices
        for block in blocks
        for indices in (block.rows, block.cols)
        if isinstance(indices, IndexTable)
    }
    return sum(table.count for table in tables)


def layer_patches(layer: CrossbarLayer, types: dict[str, TensorType]) -> int:
    """Input vectors the layer's crossbars read in one forward pass (0 if unknown)."""
    source = types.get(layer.input) if layer.kind == "conv_transpose" else layer.output_type
    if source is None or not source.is_static:
        return 0
    shape = source.static_shape()
    if layer.kind in ("conv", "conv_transpose"):
        return shape[0] * math.prod(shape[2:])
    return math.prod(shape[:-1])


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
    header = (
        f"{'layer':<28} {'kind':<8} {'matrix':>16} {'weights':>10} {'slices':>6} "
        f"{'blocks':>7} {'vtiles':>7} {'tiles':>6} {'util':>6} {'phases':>9} "
        f"{'cell writes':>12} {'cycles':>12} {'energy nJ':>11} {'latency us':>11}"
    )
    if sparse:
        header += f" {'col group':>9} {'index':>8} {'conversions':>13}"
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
    writes = "every pass (several phases)" if result.writes_per_pass else "once (one phase)"
    lines.append(
        f"per forward pass: energy {result.energy_uj:.3f} uJ, latency {result.latency_us:.2f} us, "
        f"{result.tops_per_watt:.2f} TOPS/W; chip area {result.area_mm2:.3f} mm^2; "
        f"EDAP {result.edap:.4g} pJ*ns*mm^2; writes {result.write_energy_uj:.3f} uJ and "
        f"{result.write_latency_us:.2f} us, paid {writes}"
    )
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"
