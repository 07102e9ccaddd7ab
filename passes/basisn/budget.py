"""The basis pass' options against the program and the chip: which layers are combined,
L, K, q, m and how many copies of the basis fit the tile budget.

Tiles are counted as the dense mapping places them (the tile pass' `mapping=dense` with
grouped layers on tile diagonals): a kept layer (stored directly) needs, per slice, one
tile per R x C block of each group, or one per chunk of groups side by side on a tile's
diagonal; one copy of the basis (L x K, one group) needs slices x ceil(L/R) x ceil(K/C).
The budget is `program.hardware.tile_count`:

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
from xbarc.ir.tile import Array, CrossbarLayer, Program
from xbarc.passes.basisn.fit import FIT_METHODS

OBJECTIVES = ("weights", "outputs")
MIN_COEF_BITS, MAX_COEF_BITS = 2, 16


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
        raise XbarcError(f"basis{{fit}}: unknown fit {fit!r}", hint=f"use {', '.join(FIT_METHODS)}")
    if objective not in OBJECTIVES:
        raise XbarcError(
            f"basis{{objective}}: unknown objective {objective!r}",
            hint="use weights (the weight error) or outputs (the output error on calibration "
            "data: compile --calibration-data X.npz)",
        )
    if not MIN_COEF_BITS <= coef_bits <= MAX_COEF_BITS:
        raise XbarcError(
            f"basis{{coef-bits}} must be between {MIN_COEF_BITS} and {MAX_COEF_BITS}, "
            f"got {coef_bits}"
        )


def kept_layers(program: Program, keep: str) -> set[str]:
    """The layer names `keep` lists (`NAME;NAME`), each a crossbar layer of the program."""
    names = [layer.name for layer in program.layers()]
    kept = {item.strip() for item in keep.split(";") if item.strip()}
    for name in sorted(kept):
        if name not in names:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise XbarcError(
                f"basis{{keep}} names {name!r}, which is no crossbar layer of the program",
                hint=f"its layers are {shown or '(none)'} (names as `xbarc inspect` shows them)",
            )
    return kept


def dense_tiles(array: Array, tile_type: TileType) -> int:
    """Tiles the dense mapping gives an array (groups on tile diagonals where they fit)."""
    slices = len(array.slices)
    if array.groups > 1 and array.rows <= tile_type.rows and array.cols <= tile_type.cols:
        per_tile = min(tile_type.rows // array.rows, tile_type.cols // array.cols)
        return slices * math.ceil(array.groups / per_tile)
    row_blocks = math.ceil(array.rows / tile_type.rows)
    col_blocks = math.ceil(array.cols / tile_type.cols)
    return slices * array.groups * row_blocks * col_blocks


def kept_arrays(kept, arrays: dict[str, Array | None]) -> list[Array]:
    return [array for layer in kept if (array := arrays[layer.name]) is not None]


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
    combined = tuple(layer for layer in layers if layer.name not in kept_names)
    kept = tuple(layer for layer in layers if layer.name in kept_names)
    arrays = {layer.name: program.weights_of(layer.name) for layer in layers}
    missing = [name for name, array in arrays.items() if array is None]
    if missing:
        raise XbarcError(
            f"basis needs quantized layers, and {missing[0]!r} has no weights array",
            hint="run quantize before basis (e.g. --pipeline 'quantize,basis,tile,allocate')",
        )
    some_array = next((a for a in arrays.values() if a is not None), None)
    slices = len(some_array.slices) if some_array is not None else 1
    rows = segment_rows if segment_rows is not None else tile_type.rows
    if rows < 1:
        raise XbarcError(f"basis{{segment-rows}} must be at least 1, got {rows}")
    kept_tiles = sum(dense_tiles(array, tile_type) for array in kept_arrays(kept, arrays))
    available = hardware.tile_count - kept_tiles
    row_blocks = math.ceil(rows / tile_type.rows)
    widest = tile_type.cols * max(available, 0) // (slices * row_blocks)
    if widest < 1:
        raise XbarcError(
            f"the tile budget ({hardware.tile_count}, --tiles) is too small for one copy of the "
            f"basis: "
            f"{kept_tiles} tiles hold the kept layers and one basis column of "
            f"{rows} rows needs {slices * row_blocks} more",
            hint="give more tiles, keep fewer layers (basis{keep}), shorter segments "
            "(basis{segment-rows}) or fewer slices (--cell-bits)",
        )
    if fit == "identity":
        k_value = rows if k is None else k
        if k_value != rows:
            raise XbarcError(
                f"basis{{k}}: fit=identity has K = segment rows = {rows} vectors, got k={k}",
                hint="drop k, or use fit=svd or fit=kmeans",
            )
    else:
        k_value = min(rows, widest) if k is None else k
    if not 1 <= k_value <= rows:
        raise XbarcError(
            f"basis{{k}} must be between 1 and the segment rows L = {rows}, got {k_value}",
            hint="K basis vectors of L rows: more than L adds nothing",
        )
    if k_value > widest:
        raise XbarcError(
            f"basis{{k}}={k_value} does not fit --tiles {hardware.tile_count}: one copy holds "
            f"at most {widest} basis vectors beside the kept layers",
            hint=f"use k <= {widest}, or give more tiles",
        )
    if terms is not None and not 1 <= terms <= k_value:
        raise XbarcError(
            f"basis{{terms}} must be between 1 and K = {k_value}, got {terms}",
            hint="m is the most basis vectors one segment's coefficients use",
        )
    tiles_per_copy = slices * row_blocks * math.ceil(k_value / tile_type.cols)
    fitting = available // tiles_per_copy
    copy_count = fitting if copies is None else copies
    if copy_count < 1 or copy_count > fitting:
        raise XbarcError(
            f"basis{{copies}} must be between 1 and {fitting} (copies of {tiles_per_copy} "
            f"tiles that fit --tiles {hardware.tile_count} beside {kept_tiles} kept), "
            f"got {copy_count}"
        )
    return BasisPlan(combined, kept, rows, k_value, copy_count, tiles_per_copy, kept_tiles)
