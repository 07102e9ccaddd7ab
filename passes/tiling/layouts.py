"""The layout of each array on tiles: its column-group width and whether it is packed.

    Arrays, the chip's tile budget  ->  a Layout (group width, packed) per array

Wider column groups keep more zero cells and unpacked blocks take more tiles; narrower
groups and packed tiles give a tile more inputs to read one after another: more cycles.
`choose_layouts` settles that trade-off per array where the tile pass's options leave it
open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xbarc.hardware import TileType
from xbarc.ir.geometry import layer_patches
from xbarc.ir.tile import Array, Block, CrossbarLayer, Program
from xbarc.passes.allocate import assign_cycles
from xbarc.passes.tiling.compaction import Compactor
from xbarc.passes.tiling.packing import Packer

NARROWEST_GROUP = 8  # the narrowest column group the automatic choice tries


def group_widths(tile_cols: int) -> list[int]:
    """The widths the automatic choice tries, widest first: the tile's width, halved down
    to NARROWEST_GROUP columns."""
    widths = [tile_cols]
    while widths[-1] // 2 >= NARROWEST_GROUP:
        widths.append(widths[-1] // 2)
    return widths


@dataclass(frozen=True, slots=True)
class Layout:
    """How one array lands on tiles: its column-group width (compacted mappings; None
    for dense) and whether its blocks share tiles."""

    group_cols: int | None
    packed: bool


@dataclass(frozen=True, slots=True)
class Fit:
    """One array laid out on tiles of its own."""

    tiles: int
    cycles: int  # per inference: cycles per read x the input vectors read


def choose_layouts(
    program: Program,
    tile_type: TileType,
    widths: list[int | None],
    packings: list[bool],
    place: Callable[[Array, Layout, Packer], list[Block]],
    compactor: Compactor | None,
) -> dict[str, Layout]:
    """Each array's layout when the options leave a choice of column-group width (`widths`,
    widest first) or of packing (`packings`, unpacked first). Wider groups keep more zero
    cells and packing fewer blocks per tile take more tiles; narrower groups and packed
    tiles give a tile more inputs to read one after another: more cycles (and narrower
    groups more index tables). A tile saved costs about a cycle added, so:

    - the fastest layout (widest groups, one per tile width as in SME's squeeze-out,
      unpacked) when the model fits the chip's tiles in one phase with it;
    - the widest groups, packed, when it cannot fit even with the tightest layout (it is
      reprogrammed either way, and packed tiles take fewer phases);
    - otherwise tighter layouts until it fits, one layer at a time: each step in the layer
      that saves the most tiles per cycle it adds to an inference.

    Each array's tiles are counted packed on tiles of its own, so `pack=model` may end up
    with fewer."""

    budget = tile_type.count
    hopeless = {array.name: Layout(widths[0], packings[-1]) for array in program.arrays}
    if compactor is not None:
        least_cells = sum(compactor.least_cells(array) for array in program.arrays)
        if least_cells > budget * tile_type.rows * tile_type.cols:
            return hopeless  # even the non-zero weights alone need more tiles
    layers = {layer.name: layer for layer in program.layers()}
    types = program.value_types()
    options = [(k, p) for k in range(len(widths)) for p in range(len(packings))]
    fits: dict[tuple[str, int, int], Fit] = {}

    def fit(array: Array, option: tuple[int, int]) -> Fit:
        key = (array.name, *option)
        if key not in fits:
            layout = Layout(widths[option[0]], packings[option[1]])
            blocks = place(array, layout, packer := Packer(tile_type))
            layer: CrossbarLayer | None = layers.get(array.name)
            reads = max(1, layer_patches(layer, types)) if layer is not None else 1
            fits[key] = Fit(packer.vtiles, len(assign_cycles(blocks)) * reads)
        return fits[key]

    arrays = program.arrays
    if sum(fit(a, options[-1]).tiles for a in arrays) > budget:
        return hopeless
    choice = {array.name: options[0] for array in arrays}
    while sum(fit(a, choice[a.name]).tiles for a in arrays) > budget:
        steps = [
            (saved / max(fit(a, option).cycles - now.cycles, 0.5), a.name, option)
            for a in arrays
            for now in [fit(a, choice[a.name])]
            for option in options
            if option[0] >= choice[a.name][0] and option[1] >= choice[a.name][1]
            if (saved := now.tiles - fit(a, option).tiles) > 0
        ]
        _, name, option = max(steps)  # some step saves tiles, as the tightest layout fits
        choice[name] = option
    return {name: Layout(widths[k], packings[p]) for name, (k, p) in choice.items()}
