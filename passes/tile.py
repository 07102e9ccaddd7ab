"""tile: map every array slice onto virtual tiles, dense or sparse (seed 000, seed 003).

    Array(groups, rows, cols, slices)  ->  Blocks of at most R x C cells on virtual tiles

`mapping=dense` (seed 000's dense scheme): each slice of each group is cut into R x C
blocks, zeros included. Grouped and depthwise convolutions whose group matrix fits a tile
are placed block-diagonally: groups side by side on the diagonal of a tile, on disjoint
rows and columns, so one read serves them all (`groups=diagonal`, the default);
`groups=separate` gives every group its own blocks. Blocks are ordered by array, group,
row block, column block, then slice, so the slices of one weight block sit together.

`mapping=sparse` (pruning-aware, seed 000): the columns of each group are cut into column
groups of `group-cols` adjacent columns (with `reorder=true`, columns that use the same
rows grouped together, see `similar_columns`); each column group keeps only its columns that
hold a non-zero weight and the rows non-zero somewhere in them (a row-gather table and a
column-scatter table), cut into blocks of at most R rows; empty column groups take no
cells. `mapping=squeeze` (SME's squeeze-out, seed 003) compacts each slice (bit plane) on
its own, so the high-order planes, mostly zeros, shrink the most. Without `group-cols`,
each layer's group width is chosen by the tiles-versus-cycles trade-off (see
`choose_layouts`) and recorded on its array. Compaction only removes zero cells, so
with a lossless ADC every mapping computes the same sums.

`pack` places blocks on virtual tiles: `off` gives every block its own tile (dense's
default); `layer` (sparse's default) and `model` pack them by shelf first-fit (`Packer`),
the blocks of one layer or of the whole model sharing tiles; `auto` packs a layer only
where the model needs it to fit the chip in one phase (see `choose_layouts`). Blocks on
one tile that read different inputs take separate cycles: the allocate pass orders them,
inspect counts them.

On a chip of several tile types (`compile --tile-size 32x32,64x64,...`) each array goes on
the tile type chosen for it (`tile_type=`, set by the nax pass: each layer its own
crossbar size), or else on the type `rows`/`cols` name (the chip's first by default).
Each type's arrays are laid out and packed among themselves, and virtual tiles are
numbered across the types in order of first use.

A `basis` array (BasisN, see passes/basis.py) is always dense: each of its `copies` is
packed onto tiles of its own, so one input segment reads a whole copy in one cycle.

The pass is the shell; its algorithms live in passes/tiling/: `dense` (dense pieces and
block diagonals), `compaction` (column groups and index tables), `layouts` (the choice of
width and packing) and `packing` (shelf first-fit).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware, TileType, tile_type_name
from xbarc.ir.tile import Array, Block, Program, with_tensors
from xbarc.passes.tiling.compaction import Compactor
from xbarc.passes.tiling.dense import dense_pieces, diagonal_blocks, diagonal_fits
from xbarc.passes.tiling.layouts import Layout, choose_layouts, group_widths
from xbarc.passes.tiling.packing import Packer

MAPPINGS = ("dense", "sparse", "squeeze")
PACKINGS = ("off", "layer", "model", "auto")


@dataclass(frozen=True, slots=True)
class Tile:
    """Cut every array into tile-sized blocks on virtual tiles of one tile type.

    On a chip with one tile type, `rows`/`cols` set its size; with several, they pick one
    for the arrays that have no tile type of their own (`tile_type=`, see nax)."""

    name: ClassVar[str] = "tile"
    rows: int | None = None  # default: the first tile type of the hardware
    cols: int | None = None
    groups: str = "diagonal"  # diagonal | separate
    mapping: str = "dense"  # dense | sparse | squeeze
    group_cols: int | None = None  # sparse, squeeze: columns per group; default: per layer
    # (dense mapping ignores it)
    pack: str | None = None  # off | layer | model | auto; default: off for dense, else layer
    reorder: bool = False  # sparse, squeeze: group columns by the rows they use

    def target(self, hardware: Hardware) -> Hardware:
        """The chip with the tile size this pass names (on a chip of one tile type)."""
        return with_tile_size(hardware, self.rows, self.cols)

    def apply(self, program: Program) -> Program:
        self.check()
        if not program.arrays and any(True for _ in program.layers()):
            raise XbarcError("tile needs quantized arrays", hint="run quantize before tile")
        default = choose_tile_type(program.hardware, self.rows, self.cols)
        types = {
            array.name: array_tile_type(program.hardware, array, default)
            for array in program.arrays
        }
        pack = self.pack or default_packing(self.mapping)
        # the layers' own weights; a basis is dense and placed whole, once per copy
        weights = [a for a in program.arrays if a.kind == "weights"]
        if self.mapping != "dense":
            check_sparse_encoding(replace(program, arrays=tuple(weights)), self.mapping)
        compactors: dict[str, Compactor | None] = {}
        layouts: dict[str, Layout] = {}
        for tile_type in program.hardware.tile_types:  # each type's arrays laid out apart
            own = tuple(a for a in weights if types[a.name] == tile_type)
            if not own:
                continue
            part = replace(program, arrays=own)
            compactor = None
            if self.mapping != "dense":
                compactor = Compactor(part, tile_type, self.mapping == "squeeze", self.reorder)
            compactors[tile_type.name] = compactor
            layouts.update(
                array_layouts(part, tile_type, compactor, pack, self.group_cols, self.groups)
            )
        if self.mapping != "dense":
            arrays = tuple(
                replace(a, group_cols=layouts[a.name].group_cols) if a.name in layouts else a
                for a in program.arrays
            )
            program = replace(program, arrays=arrays)
        packers = {t.name: Packer(t) for t in program.hardware.tile_types}
        blocks: list[Block] = []
        tables: dict[str, np.ndarray] = {}
        for array in program.arrays:
            packer = packers[types[array.name].name]
            if array.kind == "basis":
                blocks += place_basis(array, packer, len(blocks))
                continue
            layout = layouts[array.name]
            compactor = compactors[packer.tile_type.name]
            placed, array_tables = place_array(
                array, layout, compactor, packer, len(blocks), self.groups
            )
            blocks += placed
            tables.update(array_tables)
            if pack != "model":
                packer.close()
        if len({block.tile_type for block in blocks}) > 1:
            blocks = numbered_vtiles(blocks)
        program = with_tensors(program, tables) if tables else program
        return replace(program, blocks=tuple(blocks), phases=())

    def check(self) -> None:
        for option, value, known in (
            ("group mapping", self.groups, ("diagonal", "separate")),
            ("mapping", self.mapping, MAPPINGS),
            ("packing", self.pack or "off", PACKINGS),
        ):
            if value not in known:
                raise XbarcError(f"unknown {option} {value!r}", hint=f"use {' or '.join(known)}")
        if self.group_cols is not None and self.group_cols < 1:
            raise XbarcError(f"group-cols must be at least 1, got {self.group_cols}")


def array_layouts(
    program: Program,
    tile_type: TileType,
    compactor: Compactor | None,
    pack: str,
    group_cols: int | None,
    groups: str,
) -> dict[str, Layout]:
    """Each array's column-group width and packing: as given, or chosen (see
    `choose_layouts`) where the options leave a choice."""
    if compactor is None:
        widths: list[int | None] = [None]
    elif group_cols is None:
        widths = list(group_widths(tile_type.cols))
    else:
        widths = [min(group_cols, tile_type.cols)]
    packings = [False, True] if pack == "auto" else [pack != "off"]
    if len(widths) == 1 and len(packings) == 1:
        return {array.name: Layout(widths[0], packings[0]) for array in program.arrays}

    def place(array: Array, layout: Layout, packer: Packer) -> list[Block]:
        return place_array(array, layout, compactor, packer, 0, groups)[0]

    return choose_layouts(program, tile_type, widths, packings, place, compactor)


def place_array(
    array: Array,
    layout: Layout,
    compactor: Compactor | None,
    packer: Packer,
    first_block: int,
    groups: str,
) -> tuple[list[Block], dict[str, np.ndarray]]:
    """The blocks of one array, numbered from `first_block`, and its index tables."""
    tile_type = packer.tile_type
    if compactor is None:
        if diagonal_fits(array, tile_type, groups):
            return diagonal_blocks(array, tile_type, first_block, packer), {}
        pieces = dense_pieces(array, tile_type)
        return packer.place_all(pieces, first_block, layout.packed), {}
    pieces, tables = compactor.pieces(array, layout.group_cols or tile_type.cols)
    return packer.place_all(pieces, first_block, layout.packed), tables


def place_basis(array: Array, packer: Packer, first_block: int) -> list[Block]:
    """A basis array's blocks, numbered from `first_block`: each of its `copies` dense and
    packed onto tiles of its own (copy after copy), so one input segment reads a whole
    copy in one cycle and different copies read different segments side by side."""
    blocks: list[Block] = []
    for _ in range(array.copies):
        packer.close()
        pieces = dense_pieces(array, packer.tile_type)
        blocks += packer.place_all(pieces, first_block + len(blocks), packed=True)
    packer.close()
    return blocks


def default_packing(mapping: str) -> str:
    """Dense blocks each take a tile of their own; compacted ones are packed per layer."""
    return "off" if mapping == "dense" else "layer"


def with_tile_size(hardware: Hardware, rows: int | None, cols: int | None) -> Hardware:
    """A one-type chip takes the size the pass asks for; a several-type chip must have it."""
    if len(hardware.tile_types) != 1 or (rows is None and cols is None):
        return hardware
    only = hardware.tile_types[0]
    rows = only.rows if rows is None else rows
    cols = only.cols if cols is None else cols
    if rows < 1 or cols < 1:
        raise XbarcError(f"tile size must be at least 1x1, got {rows}x{cols}")
    resized = TileType(tile_type_name(rows, cols), rows, cols, only.count)
    return replace(hardware, tile_types=(resized,))


def array_tile_type(hardware: Hardware, array: Array, default: TileType) -> TileType:
    """The tile type an array goes on: the one chosen for it (`tile_type=`, the nax pass),
    else the pass's."""
    return default if array.tile_type is None else hardware.tile_type(array.tile_type)


def numbered_vtiles(blocks: list[Block]) -> list[Block]:
    """Blocks placed by one packer per tile type, whose virtual tiles each packer numbered
    from 0, with virtual tiles numbered across the types in order of first use."""
    numbers: dict[tuple[str, int], int] = {}
    return [
        replace(block, vtile=numbers.setdefault((block.tile_type, block.vtile), len(numbers)))
        for block in blocks
    ]


def choose_tile_type(hardware: Hardware, rows: int | None, cols: int | None) -> TileType:
    if rows is None and cols is None:
        return hardware.tile_types[0]
    for tile_type in hardware.tile_types:
        if (rows is None or tile_type.rows == rows) and (cols is None or tile_type.cols == cols):
            return tile_type
    known = ", ".join(f"{t.rows}x{t.cols}" for t in hardware.tile_types)
    raise XbarcError(
        f"the hardware has no {rows}x{cols} tile type",
        hint=f"its tile types are {known}: ask for one of them with tile{{rows=R,cols=C}} "
        "or compile --tile-size RxC",
    )


def check_sparse_encoding(program: Program, mapping: str) -> None:
    offset = [a.name for a in program.arrays if a.encoding == "offset"]
    if offset:
        raise XbarcError(
            f"mapping={mapping} drops zero cells, but array @{offset[0]} uses "
            "offset encoding, whose zero weights are not zero cells",
            hint="quantize with differential encoding: quantize{encoding=differential} or "
            "compile --encoding differential",
        )
