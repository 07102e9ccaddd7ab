"""The layout of each array on tiles: its column-group width and whether it is packed.

    Arrays, the chip's tile budget  ->  a Layout (group width, packed) per array

Wider column groups keep more zero cells and unpacked blocks take more tiles; narrower
groups and packed tiles give a tile more inputs to read one after another: more cycles.
`choose_layouts` settles that trade-off per array where the tile pass's options leave it
open, from each candidate's footprint after packing (`Footprints`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xbarc.hardware import TileType
from xbarc.ir.geometry import layer_patches
from xbarc.ir.schedule import assign_cycles
from xbarc.ir.tile import Array, Block, CrossbarLayer, Program
from xbarc.passes.tiling.compaction import Compactor
from xbarc.passes.tiling.packing import Packer, tiles_bound

# "close to the fewest tiles": a layer that cannot be made to fit takes the fastest layout
# within this fraction of its fewest tiles found, and the search for the fewest skips
# layouts that could not beat the best found by more than it. Both together keep a model
# within (1 + TOLERANCE)^2 of its fewest crossbars (8.2 %).
TOLERANCE = 0.04


def group_widths(tile_cols: int) -> list[int]:
    """The widths the automatic choice tries, widest first: the tile's width, halved down
    to one column (where packing many narrow groups can take the fewest tiles)."""
    widths = [tile_cols]
    while widths[-1] > 1:
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


Place = Callable[[Array, Layout, Packer], list[Block]]


class Footprints:
    """Each array's tiles and cycles under a layout, measured by placing it (`tiles`, and
    `fit` with the cycles too, once per array and layout), and lower bounds on its tiles
    from the sizes of its pieces alone (`bound`, `least`), cheap enough to skip layouts
    that cannot pay off."""

    def __init__(
        self, program: Program, tile_type: TileType, place: Place, compactor: Compactor | None
    ):
        self.tile_type = tile_type
        self.place = place
        self.compactor = compactor
        self.layers = {layer.name: layer for layer in program.layers()}
        self.types = program.value_types()
        self.fits: dict[tuple[str, int | None, bool], Fit] = {}
        self.measured: dict[tuple[str, int | None, bool], int] = {}  # tiles, when known
        self.bounds: dict[tuple[str, int | None, bool], int] = {}
        self.least_tiles: dict[str, int] = {}

    def tiles(self, array: Array, layout: Layout) -> int:
        """The tiles `array` takes under `layout`, without counting its cycles (ordering
        blocks into cycles costs more than placing them, on narrow groups)."""
        key = self._key(array, layout)
        if key not in self.measured:
            self.place(array, layout, packer := Packer(self.tile_type, keep_blocks=False))
            self.measured[key] = packer.vtiles
        return self.measured[key]

    def fit(self, array: Array, layout: Layout) -> Fit:
        key = self._key(array, layout)
        if key not in self.fits:
            blocks = self.place(array, layout, packer := Packer(self.tile_type))
            layer: CrossbarLayer | None = self.layers.get(array.layer or "")
            reads = max(1, layer_patches(layer, self.types)) if layer is not None else 1
            self.fits[key] = Fit(packer.vtiles, len(assign_cycles(blocks)) * reads)
            self.measured[key] = packer.vtiles
        return self.fits[key]

    def least(self, array: Array) -> int:
        """A lower bound on the tiles of every layout of `array`: its non-zero cells, as
        one-column groups keep, packed without a gap (0, no bound, for dense arrays)."""
        if self.compactor is None:
            return 0
        if array.name not in self.least_tiles:
            cells = self.compactor.least_cells(array)
            self.least_tiles[array.name] = -(-cells // (self.tile_type.rows * self.tile_type.cols))
        return self.least_tiles[array.name]

    def bound(self, array: Array, layout: Layout) -> int:
        """A lower bound on the tiles `array` takes under `layout`: the tiles themselves
        once measured; else, for compacted arrays, from the rows and columns each column
        group keeps (see `tiles_bound`); 0 (no bound) for dense ones."""
        key = self._key(array, layout)
        if key in self.measured:
            return self.measured[key]
        if self.compactor is None or layout.group_cols is None:
            return 0
        if key not in self.bounds:
            self.bounds[key] = self._bound(array, layout)
        return self.bounds[key]

    def _bound(self, array: Array, layout: Layout) -> int:
        assert self.compactor is not None and layout.group_cols is not None
        rows = self.tile_type.rows
        heights, widths, counts = [], [], []
        for kept in self.compactor.kept(array, layout.group_cols):
            full, rest = np.divmod(kept.rows, rows)
            heights += [np.full(full.shape, rows), rest]
            widths += [kept.cols, kept.cols]
            counts += [full * kept.copies, (rest > 0) * kept.copies]
        flat = [np.concatenate([part.ravel() for part in parts]) for parts in (heights, widths)]
        count = np.concatenate([part.ravel() for part in counts])
        return tiles_bound(flat[0], flat[1], count, self.tile_type, layout.packed)

    @staticmethod
    def _key(array: Array, layout: Layout) -> tuple[str, int | None, bool]:
        """Column groups at least as wide as the array cut it the same way."""
        width = None if layout.group_cols is None else min(layout.group_cols, array.cols)
        return array.name, width, layout.packed


def choose_layouts(
    program: Program,
    tile_type: TileType,
    widths: list[int | None],
    packings: list[bool],
    place: Place,
    compactor: Compactor | None,
) -> dict[str, Layout]:
    """Each array's layout when the options leave a choice of column-group width (`widths`,
    widest first) or of packing (`packings`, unpacked first). Wider groups keep more zero
    cells and packing fewer blocks per tile take more tiles; narrower groups and packed
    tiles give a tile more inputs to read one after another: more cycles, mostly (a
    tile's cycles depend on how its blocks happen to pack, so not always), and narrower
    groups more index tables. From each layout's footprint after packing:

    - when the model can fit the chip's tiles in one phase, the fastest way it does: a
      tile per block where that fits (every read in one cycle), else the fewest cycles
      per inference within the tile budget, over every layer's layouts at once
      (`fastest_within`, exact for the measured footprints);
    - else, as the model is reprogrammed in phases whatever the layout, each layer's
      fewest tiles (fewer phases, fewer writes), or close to them: the fastest layout
      within TOLERANCE of the fewest (`near_fewest`). Lower bounds on the tiles spare
      measuring the layouts that cannot pay off, so a large model that cannot fit is
      laid out at about the cost of the layout it gets.

    Each array's tiles are counted packed on tiles of its own, as `pack=layer` and
    `pack=auto` place them (`pack=model` may end up with fewer)."""

    options = [Layout(width, packed) for width in widths for packed in packings]
    footprints = Footprints(program, tile_type, place, compactor)
    arrays = program.arrays
    budget = tile_type.count
    fastest = options[0]
    if not fastest.packed and sum(footprints.tiles(a, fastest) for a in arrays) <= budget:
        return {array.name: fastest for array in arrays}  # a tile per block: one cycle a read
    if sum(footprints.least(array) for array in arrays) <= budget:
        fewest = sum(min(footprints.tiles(array, layout) for layout in options) for array in arrays)
        if fewest <= budget:  # only now count cycles, which cost more than tiles to measure
            fits = [[footprints.fit(array, layout) for layout in options] for array in arrays]
            chosen = fastest_within(fits, budget)
            return {a.name: options[index] for a, index in zip(arrays, chosen, strict=True)}
    return {array.name: near_fewest(footprints, array, options) for array in arrays}


def near_fewest(footprints: Footprints, array: Array, options: list[Layout]) -> Layout:
    """The fastest layout of `array` within TOLERANCE of the fewest tiles found. The search
    for the fewest measures the layouts most promising first (lowest bound) and stops when
    no other could beat the best found by more than TOLERANCE; then the layouts are taken
    fastest first until one is within TOLERANCE of it."""
    fewest = footprints.tiles(array, options[0])
    if footprints.least(array) * (1 + TOLERANCE) >= fewest:
        return options[0]  # no layout could beat the fastest by more than TOLERANCE
    for layout in sorted(options, key=lambda layout: footprints.bound(array, layout)):
        if footprints.bound(array, layout) * (1 + TOLERANCE) >= fewest:
            break
        fewest = min(fewest, footprints.tiles(array, layout))
    within = fewest * (1 + TOLERANCE)
    for layout in options:
        if footprints.bound(array, layout) > within:
            continue  # cannot be within: spare measuring it
        if footprints.tiles(array, layout) <= within:
            return layout
    raise AssertionError("the layout with the fewest tiles is within the tolerance")


def fastest_within(choices: list[list[Fit]], budget: int) -> list[int]:
    """Which of its `choices` each layer takes for the fewest cycles in all with at most
    `budget` tiles in all, then the fewest tiles (a multiple-choice knapsack, solved
    exactly by dynamic programming over the tiles used; the first choice wins a tie).
    Some choice of each must fit together."""
    never = np.iinfo(np.int64).max // 4
    # cost[t]: the least cycles x (budget + 1) + tiles of the layers so far on at most t
    # tiles, as their tiles never add up to more than the budget: cycles first, then tiles
    cost = np.zeros(budget + 1, dtype=np.int64)
    picks = []
    for fits in choices:
        candidates = np.full((len(fits), budget + 1), never, dtype=np.int64)
        for index, fit in enumerate(fits):
            if fit.tiles <= budget:
                own = fit.cycles * (budget + 1) + fit.tiles
                candidates[index, fit.tiles :] = cost[: budget + 1 - fit.tiles] + own
        picks.append(np.argmin(candidates, axis=0).astype(np.uint8))
        cost = np.minimum(candidates.min(axis=0), never)
    chosen = []
    tiles = budget
    for fits, pick in zip(reversed(choices), reversed(picks), strict=True):
        index = int(pick[tiles])
        chosen.append(index)
        tiles -= fits[index].tiles
    return chosen[::-1]
