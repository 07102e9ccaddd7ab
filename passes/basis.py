"""basis: compute layers from one global basis programmed once (BasisN, seed 001).

    weights arrays of the layers  ->  one `basis` array (L x K, placed `copies` times)
                                      + a `combine` per layer (q-bit coefficients)

Every combined layer's weight columns are cut into segments of L rows (im2col order);
one basis B of K vectors of length L, shared by all layers, is learned from all segments
(truncated SVD of the stacked segments, each layer normalised so that no layer owns the
basis); B is quantized and sliced like any weights; each segment is then expressed over
the quantized basis Bq by least squares, and the coefficients quantized to q bits with a
scale per output column:

    W[g, s*L + r, n] ~= coef_scale[g, n] * sum_k coef[g, s, k, n] * Bq[r, k]

At run time the tiles produce each input segment's responses to the K basis vectors and a
digital combine unit applies the coefficients, so the chip is written once whatever the
network. The basis is placed as many times as the tile budget holds (`copies`): R copies
read R segments in one cycle. `fit=identity` (K = L unit vectors) is the lossless
reference: its coefficients are the layers' own levels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.hardware import TileType
from xbarc.ir.cells import make_slices
from xbarc.ir.tile import (
    MAX_COEF_BITS,
    Array,
    BasisCombine,
    Const,
    CrossbarLayer,
    Program,
    with_tensors,
    without_unused_tensors,
)
from xbarc.passes.tiling.dense import dense_pieces
from xbarc.passes.tiling.packing import Packer

FITS = ("svd", "identity")


@dataclass(frozen=True, slots=True)
class Basis:
    """Replace the layers' own weights by combinations of one shared basis."""

    name: ClassVar[str] = "basis"
    segment_rows: int | None = None  # L; default: the rows of the chip's tiles
    k: int | None = None  # basis vectors; default: min(L, what one copy fits on the budget)
    coef_bits: int = 8  # q
    fit: str = "svd"  # svd | identity
    keep: str = ""  # layers stored directly on their own arrays: NAME;NAME
    copies: int | None = None  # default: as many as the budget holds

    def apply(self, program: Program) -> Program:
        arrays = {array.layer: array for array in program.arrays if array.kind == "weights"}
        layers = [layer for layer in program.layers() if layer.name in arrays]
        if not layers:
            raise XbarcError("basis needs quantized arrays", hint="run quantize before basis")
        kept = self.kept_layers(layers)
        combined = [layer for layer in layers if layer.name not in kept]
        tile_type = program.hardware.tile_types[0]
        length = self.segment_rows or tile_type.rows
        self.check(length)
        weight_bits = arrays[combined[0].name].weight_bits if combined else 8
        slices = make_slices(weight_bits, program.hardware.cell.bits, program.hardware.encoding)
        available = program.hardware.tile_count - sum(
            dense_tiles(arrays[name], tile_type) for name in kept
        )
        k = self.basis_size(length, len(slices), tile_type, available)
        basis_name = free_name("basis", {a.name for a in program.arrays})
        basis, levels, column_scale = self.learn(program, combined, length, k, weight_bits)
        tensors: dict[str, np.ndarray] = {
            f"{basis_name}.values": basis[None],
            f"{basis_name}.levels": levels[None],
        }
        scale: float | Const = 1.0
        if column_scale is not None:
            tensors[f"{basis_name}.scale"] = column_scale
            scale = Const(f"{basis_name}.scale")
        basis_array = Array(
            name=basis_name,
            kind="basis",
            groups=1,
            rows=length,
            cols=k,
            weight_bits=weight_bits,
            encoding=program.hardware.encoding,
            scale=scale,
            values=f"{basis_name}.values",
            levels=f"{basis_name}.levels",
            slices=slices,
        )
        per_copy = copy_tiles(basis_array, tile_type)
        if per_copy > available:
            raise XbarcError(
                f"basis: one copy of a {length}x{k} basis needs {per_copy} tiles but "
                f"{max(available, 0)} of the {program.hardware.tile_count} are left "
                "beside the kept layers",
                hint="give more tiles (--tiles), fewer basis vectors (k=) or keep fewer layers",
            )
        copies = self.copies or available // per_copy
        if copies * per_copy > available:
            raise XbarcError(
                f"basis: copies={copies} need {copies * per_copy} tiles but "
                f"{available} are left beside the kept layers",
                hint=f"at most {available // per_copy} copies fit",
            )
        basis_array = replace(basis_array, copies=copies)
        combines = []
        for layer in combined:
            coef, coef_scale = self.coefficients(program, layer, basis, length)
            tensors[f"{layer.name}.coef"] = coef
            tensors[f"{layer.name}.coef_scale"] = coef_scale
            combines.append(
                BasisCombine(
                    layer=layer.name,
                    basis=basis_name,
                    segment_rows=length,
                    coefficients=f"{layer.name}.coef",
                    coef_bits=self.coef_bits,
                    scale=Const(f"{layer.name}.coef_scale"),
                )
            )
        dropped = {layer.name for layer in combined}
        kept_arrays = tuple(a for a in program.arrays if a.layer not in dropped)
        program = with_tensors(program, tensors)
        program = replace(
            program,
            arrays=(*kept_arrays, basis_array),
            combines=tuple(combines),
            blocks=(),
            phases=(),
        )
        return without_unused_tensors(program, used_tensors(program, dropped, arrays))

    def check(self, length: int) -> None:
        if self.fit not in FITS:
            raise XbarcError(f"basis: unknown fit {self.fit!r}", hint=f"use {' or '.join(FITS)}")
        if length < 1:
            raise XbarcError(f"basis: segment-rows must be at least 1, got {length}")
        if not 2 <= self.coef_bits <= MAX_COEF_BITS:
            raise XbarcError(
                f"basis: coef-bits={self.coef_bits} is out of range",
                hint=f"give 2 to {MAX_COEF_BITS} bits",
            )
        if self.copies is not None and self.copies < 1:
            raise XbarcError(f"basis: copies must be at least 1, got {self.copies}")

    def kept_layers(self, layers: list[CrossbarLayer]) -> set[str]:
        names = {name.strip() for name in self.keep.split(";") if name.strip()}
        unknown = names - {layer.name for layer in layers}
        if unknown:
            raise XbarcError(
                f"basis: keep names no crossbar layer {sorted(unknown)[0]!r}",
                hint="name layers as `xbarc inspect` lists them, separated by ';'",
            )
        return names

    def basis_size(self, length: int, slices: int, tile_type: TileType, available: int) -> int:
        """K: as given, else as many vectors as fit (at most L): one copy of the basis
        takes ceil(L / R) row bands of K columns per slice, packed onto the tiles."""
        if self.fit == "identity":
            if self.k not in (None, length):
                raise XbarcError(
                    f"basis: fit=identity has k = segment-rows = {length}, not {self.k}"
                )
            return length
        if self.k is not None:
            if not 1 <= self.k <= length:
                raise XbarcError(
                    f"basis: k={self.k} is out of range",
                    hint=f"give 1 to segment-rows ({length}) basis vectors",
                )
            return self.k
        bands = -(-length // tile_type.rows)
        columns = max(available, 0) // bands * tile_type.cols // slices
        return max(1, min(length, columns))

    def learn(
        self, program: Program, layers: list[CrossbarLayer], length: int, k: int, bits: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The quantized basis Bq (f32 [L, K]), its levels and its scale per vector
        (f32 [1, K]; None: 1 for all, the identity's)."""
        if self.fit == "identity":
            return np.eye(length, dtype=np.float32), np.eye(length, dtype=np.int8), None
        gram = np.zeros((length, length))
        for layer in layers:
            segments = layer_segments(program.store[layer.weight], length)
            norm = np.sqrt(np.mean(segments**2)) or 1.0
            flat = segments.transpose(0, 1, 3, 2).reshape(-1, length) / norm
            gram += flat.T @ flat / len(flat)
        values, vectors = np.linalg.eigh(gram)
        order = np.argsort(values)[::-1][:k]
        basis = vectors[:, order]
        basis *= np.where(basis.sum(axis=0) < 0, -1.0, 1.0)  # a sign convention: stable output
        limit = 2 ** (bits - 1) - 1
        scale = np.abs(basis).max(axis=0) / limit
        levels = np.rint(basis / scale).astype(np.int8 if bits <= 8 else np.int16)
        scale32 = scale.astype(np.float32)[None]
        return (levels * scale32).astype(np.float32), levels, scale32

    def coefficients(
        self, program: Program, layer: CrossbarLayer, basis: np.ndarray, length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """q-bit coefficients [G, S, K, N] of the layer over Bq and their scale [G, N]."""
        segments = layer_segments(program.store[layer.weight], length)  # [G, S, L, N]
        groups, count, _, cols = segments.shape
        solved = np.zeros((groups, count, basis.shape[1], cols))
        full = np.linalg.pinv(basis.astype(np.float64))  # [K, L]
        solved[:, : layer.rows // length] = full @ segments[:, : layer.rows // length]
        rows = layer.rows % length
        if rows:  # the last segment holds only the layer's last rows
            last = np.linalg.pinv(basis[:rows].astype(np.float64))
            solved[:, -1] = last @ segments[:, -1, :rows]
        limit = 2 ** (self.coef_bits - 1) - 1
        peak = np.abs(solved).max(axis=(1, 2))  # [G, N]
        scale = np.where(peak > 0, peak / limit, 1.0)
        coef = np.rint(solved / scale[:, None, None, :])
        dtype = np.int8 if self.coef_bits <= 8 else np.int16
        return coef.astype(dtype), scale.astype(np.float32)


def layer_segments(weight: np.ndarray, length: int) -> np.ndarray:
    """A [G, rows, N] weight as [G, S, L, N] segments of L rows (the last zero-padded)."""
    groups, rows, cols = weight.shape
    count = -(-rows // length)
    padded = np.zeros((groups, count * length, cols))
    padded[:, :rows] = weight
    return padded.reshape(groups, count, length, cols)


def dense_tiles(array: Array, tile_type: TileType) -> int:
    """Tiles a layer kept on its own array takes when mapped dense, a block per tile."""
    return len(dense_pieces(array, tile_type))


def copy_tiles(basis: Array, tile_type: TileType) -> int:
    """Tiles one copy of the basis takes, packed as the tile pass packs it."""
    packer = Packer(tile_type, keep_blocks=False)
    packer.place_all(dense_pieces(basis, tile_type), 0, packed=True)
    return packer.vtiles


def free_name(name: str, taken: set[str]) -> str:
    candidate, suffix = name, 1
    while candidate in taken:
        candidate, suffix = f"{name}.{suffix}", suffix + 1
    return candidate


def used_tensors(program: Program, dropped: set[str], arrays: dict) -> set[str]:
    """Every tensor but the levels and scales of the arrays the combined layers dropped
    (their float weights stay: the graph names them)."""
    unused = set()
    for name in dropped:
        array = arrays[name]
        unused.add(array.levels)
        if isinstance(array.scale, Const):
            unused.add(array.scale.name)
    return {decl.name for decl in program.tensors} - unused
