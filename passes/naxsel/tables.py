"""Per-layer figures of one layer on one tile type, from the array's shape alone.

    LayerShape(groups, rows, cols, slices, patches)  x  TileType  ->  LayerCosts

No trial compile: the dense tiling is counted analytically (the tile pass's dense and
block-diagonal placements, a tile per block), and each count is charged through the
chip's per-operation figures (`xbarc.hardware.unit_costs`), as the cost model charges
them. Per forward pass, a layer of P patches fed as I input slices:

- reads: every tile it uses, once per patch and input slice, at the tile's read energy;
- conversions and shift-and-adds: every column of every block read;
- DAC drives: every row a tile drives (block-diagonal groups drive their own rows);
- latency: one cycle per patch and input slice (every block on a tile of its own, all
  read at once) of the tile type's cycle time;
- area: the tiles it uses, each with its converters and shift-and-add units (and, with
  column scales, a share of a scale multiplier: one per input_slices tiles);
- what the tile type does not change: its column scales (a multiply and a buffer read
  per output column per patch) and its traffic with the activation buffer (its unfolded
  inputs read and outputs written once per patch).

A mix that needs more virtual tiles of a type than the chip has of it runs in several
phases and writes its cells on every inference: `write_model` gives the search what the
cost model's `write_cost` charges for that (program-and-verify, row by row, tiles in
parallel) and the area of a physical tile of each type.

What every choice pays alike still weighs in the product E x L x A, so `fixed_costs`
gives the program's own part: the column scales' buffer bytes, the activation buffer
(the largest input plus output of a layer) and one set of digital units. The digital
ops' energy (about an add per activation) is left out. These follow the cost model
(xbarc/cost.py), which tests/test_nax.py checks them against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xbarc.hardware import Hardware, TileType, unit_costs
from xbarc.ir.tile import Array, Const, CrossbarLayer, Program
from xbarc.ir.types import TensorType


@dataclass(frozen=True, slots=True)
class LayerShape:
    """What the tables need of one crossbar layer's weights array."""

    name: str  # the array's
    groups: int
    rows: int
    cols: int
    slices: int  # slices of all polarities
    patches: int  # input vectors per forward pass
    scales: int = 0  # per-column weight scales (groups x cols), 0 for a per-tensor scale


@dataclass(frozen=True, slots=True)
class LayerCosts:
    """One layer on one tile type, per forward pass."""

    tiles: int
    energy_pj: float
    latency_ns: float
    area_um2: float
    row_work: int = 0  # its tiles x the tallest write on one (a phase's write time is its
    # tallest tile's, row by row)


@dataclass(frozen=True, slots=True)
class WriteModel:
    """What a mix beyond the tile counts pays (search.charged): all the program's cells
    written on every inference, a row's program-and-verify time, and the area of a
    physical tile of each type."""

    energy_pj: float  # every cell of every layer, program-and-verify
    row_ns: float  # one row written: the program-and-verify iterations
    tile_area_um2: tuple[float, ...]  # per tile type: a tile with its periphery


def write_model(shapes: list[LayerShape], hardware: Hardware) -> WriteModel:
    """`WriteModel` of these layers on this chip (xbarc/cost.py write_cost's terms)."""
    cost = hardware.cost
    cells = sum(s.groups * s.slices * s.rows * s.cols for s in shapes)
    scales = any(s.scales for s in shapes)
    areas = []
    for tile_type in hardware.tile_types:
        area = unit_costs(hardware, tile_type).tile_area_um2
        if scales:
            area += cost.scale_multiplier_area_um2 / hardware.dac.input_slices
        areas.append(area)
    return WriteModel(
        energy_pj=cells * cost.write_pv_iterations * cost.write_pulse_energy_pj,
        row_ns=cost.write_pv_iterations * (cost.write_pulse_ns + cost.write_verify_ns),
        tile_area_um2=tuple(areas),
    )


def layer_shapes(program: Program) -> list[LayerShape]:
    """The shape of every weights array that holds a crossbar layer, in array order."""
    types = program.value_types()
    layers = {layer.name: layer for layer in program.layers()}
    shapes = []
    for array in program.arrays:
        if array.kind != "weights" or array.layer not in layers:
            continue
        patches = patches_per_pass(layers[array.layer], types)
        shapes.append(shape_of(array, patches))
    return shapes


def shape_of(array: Array, patches: int) -> LayerShape:
    scales = array.groups * array.cols if isinstance(array.scale, Const) else 0
    return LayerShape(
        array.name, array.groups, array.rows, array.cols, len(array.slices), max(1, patches), scales
    )


def patches_per_pass(layer: CrossbarLayer, types: dict[str, TensorType]) -> int:
    """Input vectors the layer reads for one sample: its output's positions (its input's,
    for a transposed convolution), an unknown dimension counted as 1 (a batch left
    open)."""
    source = types.get(layer.input) if layer.kind == "conv_transpose" else layer.output_type
    if source is None or source.shape is None:
        return 1
    dims = [d if d is not None else 1 for d in source.shape]
    if not dims:
        return 1
    if layer.kind in ("conv", "conv_transpose"):
        return dims[0] * math.prod(dims[2:])
    return math.prod(dims[:-1])


def diagonal_per_tile(groups: int, rows: int, cols: int, tile_type: TileType) -> int:
    """Groups one tile holds on its diagonal (0: the layer is tiled dense), as the tile
    pass places grouped convolutions whose group matrix fits a tile."""
    if groups > 1 and rows <= tile_type.rows and cols <= tile_type.cols:
        return min(tile_type.rows // rows, tile_type.cols // cols)
    return 0


def row_blocks(rows: int, tile_rows: int) -> list[int]:
    """The rows of each block a column of `rows` rows is cut into on tiles of `tile_rows`."""
    full, rest = divmod(rows, tile_rows)
    return [tile_rows] * full + ([rest] if rest else [])


def layer_costs(shape: LayerShape, hardware: Hardware, tile_type: TileType) -> LayerCosts:
    """The layer's figures on tiles of `tile_type` (see the module docstring)."""
    units = unit_costs(hardware, tile_type)
    per_tile = diagonal_per_tile(shape.groups, shape.rows, shape.cols, tile_type)
    if per_tile:
        tiles = shape.slices * -(-shape.groups // per_tile)
        row_pieces = 1
        driven = shape.slices * shape.groups * shape.rows
    else:
        row_pieces = -(-shape.rows // tile_type.rows)
        col_pieces = -(-shape.cols // tile_type.cols)
        tiles = shape.groups * shape.slices * row_pieces * col_pieces
        driven = shape.groups * shape.slices * shape.rows * col_pieces
    conversions = shape.groups * shape.slices * row_pieces * shape.cols
    repeats = shape.patches * hardware.dac.input_slices
    cost = hardware.cost
    energy = repeats * (
        tiles * units.read_energy_pj
        + conversions * (units.conversion_energy_pj + units.shift_add_energy_pj)
        + driven * units.dac_energy_pj
    )
    scale_pj = cost.scale_multiply_energy_pj + cost.edram_access_pj * cost.scale_bits / (
        cost.buffer_access_bits
    )
    energy += shape.patches * shape.scales * scale_pj
    activations = shape.patches * shape.groups * (shape.rows + shape.cols)
    energy += activations * hardware.dac.bits / cost.buffer_access_bits * cost.edram_access_pj
    area = tiles * units.tile_area_um2
    if shape.scales:
        area += tiles * cost.scale_multiplier_area_um2 / hardware.dac.input_slices
    return LayerCosts(
        tiles=tiles,
        energy_pj=energy,
        latency_ns=repeats * units.cycle_ns,
        area_um2=area,
        row_work=tiles * (per_tile * shape.rows if per_tile else min(shape.rows, tile_type.rows)),
    )


def fixed_costs(program: Program, shapes: list[LayerShape]) -> LayerCosts:
    """What the program pays whatever the tile types (see the module docstring): no
    energy or latency counted here, the area of the column scales' bytes, the
    activation buffer and one set of digital units."""
    hardware = program.hardware
    cost = hardware.cost
    scales = sum(shape.scales for shape in shapes)
    byte_um2 = cost.buffer_area_um2_per_byte
    types = program.value_types()
    held = 0
    for layer in program.layers():
        held = max(held, size_of(types.get(layer.input)) + size_of(layer.output_type))
    area = scales * cost.scale_bits / 8 * byte_um2 + held * hardware.dac.bits / 8 * byte_um2
    return LayerCosts(0, 0.0, 0.0, area + cost.digital_unit_area_um2)


def size_of(tensor_type: TensorType | None) -> int:
    if tensor_type is None or not tensor_type.is_static:
        return 0
    return math.prod(tensor_type.static_shape())
