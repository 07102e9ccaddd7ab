"""The basis pass' options against the program and the chip: which layers are combined,
L, K, q, m and how many copies of the basis fit the tile budget.

Tiles are counted as the tile pass places them (passes/tiling/): a kept layer (stored
directly, mapped dense) needs, per slice, one tile per R x C block of each group, or one
per chunk of groups side by side on a tile's diagonal; one copy of the basis (L x K, one
group) packs its slices side by side (shelf packing). The budget is
`program.hardware.tile_count`:

    K <= L, and one copy of L x K fits beside the kept layers
    copies x tiles per copy + kept tiles <= tiles

Defaults: L = the rows of the chip's first tile type; K = min(L, the columns one copy
can hold beside the kept layers); copies = as many as fit. Every refusal names its option
in one line (the pass writes nothing: it raises before returning a program).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xbarc.diagnostics import XbarcError
from xbarc.hardware import TileType
from xbarc.ir.tile import MAX_COEF_BITS, Array, CrossbarLayer, Program, Slice
from xbarc.limits import MAX_TILE_DIM
from xbarc.passes.basisn.fit import FIT_METHODS
from xbarc.passes.tiling.dense import dense_pieces, diagonal_fits
from xbarc.passes.tiling.packing import Packer

OBJECTIVES = ("weights", "outputs")
MIN_COEF_BITS = 2


@dataclass(frozen=True, slots=True)
class BasisPlan:
    """What the pass will build: the combined and the kept layers (graph order), the
    segment rows L, the basis vectors K, the copies of the basis, and the tiles each copy
    and the kept layers take (dense estimate)."""

    combined: tuple[CrossbarLayer, ...]
    kept: tuple[CrossbarLayer, ...]
    segment_rows: int
    k: int
    copies: int
    tiles_per_copy: int
    kept_tiles: int


def check_choices(fit: str, objective: str, coef_bits: int) -> None:
    if fit not in FIT_METHODS:
        raise XbarcError(
            f"basis{{fit}} (--basis-fit): unknown fit {fit!r}",
            hint=f"use {', '.join(FIT_METHODS)}",
        )
    if objective not in OBJECTIVES:
        raise XbarcError(
            f"basis{{objective}}: unknown objective {objective!r}",
            hint="use weights (the weight error) or outputs (the output error on calibration "
            "data: compile --calibration-data X.npz)",
        )
    if not MIN_COEF_BITS <= coef_bits <= MAX_COEF_BITS:
        raise XbarcError(
            f"basis{{coef-bits}} (--coef-bits) must be between {MIN_COEF_BITS} and "
            f"{MAX_COEF_BITS}, got {coef_bits}"
        )


def kept_layers(program: Program, keep: str) -> set[str]:
    """The layer names `keep` lists (`NAME;NAME`), each a crossbar layer of the program."""
    names = [layer.name for layer in program.layers()]
    kept = {item.strip() for item in keep.split(";") if item.strip()}
    for name in sorted(kept):
        if name not in names:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise XbarcError(
                f"basis{{keep}} (--basis-keep) names {name!r}, which is no crossbar layer of "
                "the program",
                hint=f"its layers are {shown or 'none'}: names as `xbarc inspect` shows them",
            )
    return kept


def dense_tiles(array: Array, tile_type: TileType) -> int:
    """Tiles the tile pass' dense mapping gives a kept array: a tile per block, or per
    chunk of groups on a tile's diagonal where the group matrix fits."""
    if diagonal_fits(array, tile_type, "diagonal"):
        per_tile = min(tile_type.rows // array.rows, tile_type.cols // array.cols)
        return len(array.slices) * math.ceil(array.groups / per_tile)
    return len(dense_pieces(array, tile_type))


def copy_tiles(rows: int, k: int, slices: tuple[Slice, ...], tile_type: TileType) -> int:
    """Tiles one copy of an L x K basis takes, its slices packed side by side as the tile
    pass packs them."""
    basis = Array("basis", "basis", 1, rows, k, 8, "differential", 1.0, "", "", slices)
    packer = Packer(tile_type, keep_blocks=False)
    packer.place_all(dense_pieces(basis, tile_type), 0, packed=True)
    return packer.vtiles


def widest_basis(rows: int, slices: tuple[Slice, ...], tile_type: TileType, tiles: int) -> int:
    """The most basis vectors (at most `rows`) whose one copy fits in `tiles` (0: none)."""
    low, high = 0, rows
    while low < high:  # copy_tiles grows with K: the largest K that fits
        middle = (low + high + 1) // 2
        if copy_tiles(rows, middle, slices, tile_type) <= tiles:
            low = middle
        else:
            high = middle - 1
    return low


def plan_basis(
    program: Program,
    keep: str,
    segment_rows: int | None,
    k: int | None,
    terms: int | None,
    copies: int | None,
    fit: str,
) -> BasisPlan:
    """The plan of a basis pass over `program`, or a one-line refusal naming the option."""
    hardware = program.hardware
    tile_type = hardware.tile_types[0]
    kept_names = kept_layers(program, keep)
    layers = list(program.layers())
    arrays = {layer.name: program.weights_of(layer.name) for layer in layers}
    missing = [name for name, array in arrays.items() if array is None]
    if missing or not layers:
        raise XbarcError(
            "basis needs quantized layers"
            + (f", and {missing[0]!r} has no weights array" if missing else ""),
            hint="run quantize before basis, e.g. --pipeline 'quantize,basis,tile,allocate'",
        )
    combined = tuple(layer for layer in layers if layer.name not in kept_names)
    kept = tuple(layer for layer in layers if layer.name in kept_names)
    slices = next(array.slices for array in arrays.values() if array is not None)
    rows = segment_rows if segment_rows is not None else tile_type.rows
    if rows < 1:
        raise XbarcError(f"basis{{segment-rows}} (--segment-rows) must be at least 1, got {rows}")
    longest = min(MAX_TILE_DIM, tile_type.rows * hardware.tile_count)
    if rows > longest:  # one basis vector would not fit on the whole chip
        raise XbarcError(
            f"basis{{segment-rows}} (--segment-rows) is {rows}, more than the chip's "
            f"{hardware.tile_count} tiles of {tile_type.rows} rows can hold in one column "
            f"(at most {longest})",
            hint="give shorter segments",
        )
    kept_tiles = sum(dense_tiles(array, tile_type) for array in kept_arrays(kept, arrays))
    if not combined:  # every layer kept: no basis to place
        return BasisPlan(combined, kept, rows, 0, 0, 0, kept_tiles)
    available = hardware.tile_count - kept_tiles
    widest = widest_basis(rows, slices, tile_type, available)
    if widest < 1:
        raise XbarcError(
            f"the tile budget of {hardware.tile_count} (--tiles, allocate{{tiles}}) is too "
            f"small for one copy of the basis: the kept layers take {kept_tiles} tiles and "
            f"one basis vector of {rows} rows needs {copy_tiles(rows, 1, slices, tile_type)}",
            hint="give more tiles, keep fewer layers with basis{keep}, use shorter segments "
            "with basis{segment-rows}, or fewer slices with --cell-bits",
        )
    if fit == "identity":
        k_value = rows if k is None else k
        if k_value != rows:
            raise XbarcError(
                f"basis{{k}} (--basis-k): fit=identity has K = segment rows = {rows} vectors, "
                f"got k={k}",
                hint="drop k, or use fit=svd or fit=kmeans",
            )
    else:
        k_value = min(rows, widest) if k is None else k
    if not 1 <= k_value <= rows:
        raise XbarcError(
            f"basis{{k}} (--basis-k) must be between 1 and the segment rows L = {rows}, "
            f"got {k_value}",
            hint="K basis vectors of L rows: more than L adds nothing",
        )
    if k_value > widest:
        raise XbarcError(
            f"K = {k_value} (basis{{k}}, --basis-k) does not fit the tile budget of "
            f"{hardware.tile_count} (--tiles, allocate{{tiles}}): one copy holds at most "
            f"{widest} basis vectors beside the kept layers",
            hint=f"use k <= {widest}, or give more tiles",
        )
    if terms is not None and not 1 <= terms <= k_value:
        raise XbarcError(
            f"basis{{terms}} (--basis-terms) must be between 1 and K = {k_value}, got {terms}",
            hint="m is the most basis vectors one segment's coefficients use",
        )
    tiles_per_copy = copy_tiles(rows, k_value, slices, tile_type)
    fitting = available // tiles_per_copy
    copy_count = fitting if copies is None else copies
    if not 1 <= copy_count <= fitting:
        raise XbarcError(
            f"basis{{copies}} (--basis-copies) must be between 1 and {fitting}, the copies "
            f"of {tiles_per_copy} tiles that fit the tile budget of {hardware.tile_count} "
            f"beside {kept_tiles} kept, got {copy_count}"
        )
    return BasisPlan(combined, kept, rows, k_value, copy_count, tiles_per_copy, kept_tiles)


def kept_arrays(kept, arrays: dict[str, Array | None]) -> list[Array]:
    return [array for layer in kept if (array := arrays[layer.name]) is not None]
