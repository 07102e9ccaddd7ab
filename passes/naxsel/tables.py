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
- area: the tiles it uses, each with its converters and shift-and-add units.

The column scales (a multiply per output column per patch) do not depend on the tile
type and are left out: NAX compares tile types, and what every choice pays alike only
shifts every total by the same amount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xbarc.hardware import Hardware, TileType, unit_costs
from xbarc.ir.tile import Array, CrossbarLayer, Program
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


@dataclass(frozen=True, slots=True)
class LayerCosts:
    """One layer on one tile type, per forward pass."""

    tiles: int
    energy_pj: float
    latency_ns: float
    area_um2: float


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
    return LayerShape(
        array.name, array.groups, array.rows, array.cols, len(array.slices), max(1, patches)
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
    energy = repeats * (
        tiles * units.read_energy_pj
        + conversions * (units.conversion_energy_pj + units.shift_add_energy_pj)
        + driven * units.dac_energy_pj
    )
    return LayerCosts(
        tiles=tiles,
        energy_pj=energy,
        latency_ns=repeats * units.cycle_ns,
        area_um2=tiles * units.tile_area_um2,
    )
