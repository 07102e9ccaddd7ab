"""Fused integer reads: a layer's reads and their ADC conversion in one kernel call per input sign.

    layer = fused_layer(columns, unfolded_index, image)   # once per layer and input shape
    fused_read_accumulate(levels_in, layer, slice_bits, slices, sign, levels, acc)
    # acc += the read-out of every input slice of one sign's DAC levels

The path of exact integer `quant` reads that are tall and dense (unsliced cells, DAC steps
of several bits), where the bit-plane kernels do not apply. Instead of unfolding the whole
input (im2col, [rows, P]), one GEMM per read into a buffer of partial sums [read columns,
P] and the ADC kernel reading that buffer back, the kernel works on tiles of patches small
enough for the cache (a block of items x a block of their pixels): it copies the tile's
digits straight from the layer's input levels (an implicit im2col through a table of
offsets, `PatchGather`, from each slice's digits laid out as `digit_planes` says), sums
every read column of every read and group of the layer over the tile (float32
multiply-adds: the sums are exact integers below 2^24), and converts and accumulates each
sum while it is hot, exactly as `adc.adc_accumulate` does: code = clip(rint(float64(s) *
levels / full_scale), low, levels), acc[target] += factor x significance x full_scale x
code. Zero cells are skipped (the unused polarity of a differential pair is half the
cells) and so are the rows whose digits are all zero in the tile (the high slices of most
inputs). Nothing of size [read columns, P] or [rows, P] is written. `dequantize_items`
then writes the layer's output in its image layout, items first.

The numpy twin, `fused_read_accumulate_numpy`, unfolds the levels through the same table,
multiplies a dense copy of the cells and calls `adc.adc_accumulate_numpy`. Which layers
run on this kernel rather than the sparse one or read by read is measured (`engines.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xbarc.runtime.kernels import (
    PARALLEL_WORK,
    backend,
    check_accumulator,
    gemm,
    numba_kernel,
    prange,
    use_threads,
)
from xbarc.runtime.kernels.adc import adc_accumulate_numba, adc_accumulate_numpy
from xbarc.runtime.kernels.sparse_read import SparseColumns

Workspace = Callable[[str, tuple[int, ...], type], np.ndarray]  # a reusable buffer


@dataclass(frozen=True)
class PatchGather:
    """Where the digits of each patch come from: `offsets[row, pixel]` is the position, in
    one input item's `image` levels, of the level that drives flat unfolded `row` (groups
    x rows) at `pixel` (of `pixels` patches per item), or `image` where the row reads the
    padding (the kernel reads a zero placed there). Patch p is pixel p % pixels of item
    p // pixels."""

    offsets: np.ndarray  # int64 [flat rows, pixels]
    image: int
    pixels: int


@dataclass(frozen=True)
class FusedLayer:
    """A layer's read columns (`SparseColumns`, cells on the flat unfolded rows), the
    gather that feeds them, and each column's cells padded to a multiple of four (rows
    repeated with cell 0: the kernel sums four rows at a time)."""

    columns: SparseColumns
    gather: PatchGather
    quad_start: np.ndarray  # int64 [M + 1]
    quad_rows: np.ndarray  # int64 [sum of counts rounded up to 4]
    quad_cells: np.ndarray  # float32, likewise
    magnitudes: np.ndarray  # float64 [M]: each column's sum of |cells|
    # the reads (slice_bits, slices, levels) found exact (`check_exact`): a layer's every
    # run asks again, and the answer depends on these and the layer alone
    exact: set[tuple[int, int, int]] = field(default_factory=set, compare=False, repr=False)

    @functools.cached_property
    def dense_cells(self) -> np.ndarray:
        """The columns' cells as one dense matrix over the flat unfolded rows, uint8 [M,
        flat rows] (`gemm_read_accumulate`): made on first use. ValueError where a cell is
        not a level of 0 to 255."""
        cells = self.columns.cells
        if len(cells) and (cells.min() < 0 or cells.max() > 255):
            raise ValueError("gemm_read_accumulate: cells beyond 0..255 (uint8)")
        return np.ascontiguousarray(self.columns.dense(self.gather.offsets.shape[0]), np.uint8)

    @functools.cached_property
    def scales_positive(self) -> bool:
        """Whether every column's ADC full scale is positive (as `adc.adc_accumulate`
        requires of converted reads)."""
        return not len(self.columns.full_scale) or bool(self.columns.full_scale.min() > 0)

    @classmethod
    def of(cls, columns: SparseColumns, gather: PatchGather) -> FusedLayer:
        _check_layer(columns, gather)
        counts = np.diff(columns.start)
        padded = -(-counts // 4) * 4
        quad_start = np.concatenate([[0], np.cumsum(padded)]).astype(np.int64)
        quad_rows = np.zeros(int(quad_start[-1]), dtype=np.int64)
        quad_cells = np.zeros(int(quad_start[-1]), dtype=np.float32)
        column = np.repeat(np.arange(len(counts)), counts)
        at = quad_start[column] + np.arange(len(columns.cells)) - columns.start[column]
        quad_rows[at] = columns.rows  # the padding reads row 0, times 0
        quad_cells[at] = columns.cells
        return cls(columns, gather, quad_start, quad_rows, quad_cells, column_sums(columns))


def patch_gather(unfolded_index: np.ndarray, image: int) -> PatchGather:
    """The gather of a layer from its unfold of one input item whose levels are their own
    position plus one (`unfolded_index` [groups, rows, pixels], float64 or integer; 0 in
    the padding)."""
    groups, rows, pixels = unfolded_index.shape
    index = np.rint(unfolded_index.reshape(groups * rows, pixels)).astype(np.int64) - 1
    index[index < 0] = image  # the padding reads the zero after the item's levels
    return PatchGather(np.ascontiguousarray(index), int(image), int(pixels))


def fused_layer(columns: SparseColumns, unfolded_index: np.ndarray, image: int) -> FusedLayer:
    return FusedLayer.of(columns, patch_gather(unfolded_index, image))


# Bytes of a tile's digits (float32 [flat rows, tile patches]): they stay in the L2 cache
# while every read column of the layer sums over them.
TILE_BYTES = 1 << 17
TILE_PATCHES = (16, 2048)  # fewest and most patches a tile


TILE_TASKS = 8  # tiles a call is cut into at least (where the tiles stay >= 16 patches)


def tile_patches(flat_rows: int, patches: int) -> int:
    """Patches per tile: a multiple of 16 whose digits fill about TILE_BYTES, small enough
    that the call has TILE_TASKS tiles to share among the threads."""
    low, high = TILE_PATCHES
    tile = TILE_BYTES // (4 * max(flat_rows, 1)) // 16 * 16
    shared = -(-patches // TILE_TASKS // 16) * 16
    return int(min(max(tile, low), high, max(shared, low)))


def tile_shape(tile: int, items: int, pixels: int) -> tuple[int, int]:
    """A tile of about `tile` patches as (items, pixels of each): whole items where an
    item has fewer pixels than the tile, else a run of one item's pixels."""
    if pixels >= tile:
        return 1, tile
    return max(1, min(items, tile // pixels)), pixels


def fused_read_accumulate(
    levels_in: np.ndarray,
    layer: FusedLayer,
    slice_bits: int,
    slices: int,
    sign: int,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
    tile: int | None = None,
) -> None:
    """acc += the ADC read-out of every column of `layer` driven by each input slice.

    `levels_in` uint8: one sign's DAC levels (magnitudes) in the layout of the layer's
    input, items first (any shape whose size is items x `gather.image`); slice j <
    `slices` drives the digits (level >> shift) & (2^slice_bits - 1), shift = j x
    slice_bits, with the significance sign x 2^shift. Each column's sum s[p] = sum of cells
    x digits is converted as `adc.adc_accumulate` converts it (levels > 0: code =
    clip(rint(float64(s) * levels / full_scale), low, levels), low = -levels if `signed`
    else 0, acc[target] += factor * significance * full_scale * code; levels == 0: acc +=
    factor * significance * s). `acc` int64 [outputs, P], P = items x `gather.pixels`.
    Every sum must stay below 2^24 in magnitude (float32 exact) and what a slice adds to
    a target below 2^53 (float64 exact): checked, a ValueError where they would not."""
    gather = layer.gather
    columns = layer.columns
    _check(levels_in, layer, acc)
    if not 1 <= slice_bits <= 8 or not 0 <= (slices - 1) * slice_bits < 8 or sign not in (1, -1):
        raise ValueError(
            f"fused_read_accumulate: {slices} slices of {slice_bits} bits, sign {sign}"
        )
    if backend() == "numpy":
        fused_read_accumulate_numpy(levels_in, layer, slice_bits, slices, sign, levels, acc, signed)
        return
    check_exact(layer, slice_bits, slices, levels)
    items = levels_in.size // gather.image
    planes = digit_planes(levels_in, gather, slice_bits, slices)
    flat_rows = gather.offsets.shape[0]
    tile_items, tile_pixels = tile_shape(
        tile or tile_patches(flat_rows, acc.shape[1]), items, gather.pixels
    )
    use_threads(PARALLEL_WORK)
    fused_read_accumulate_numba(
        planes,
        gather.offsets,
        layer.quad_start,
        layer.quad_rows,
        layer.quad_cells,
        columns.order,
        columns.runs,
        columns.target,
        columns.factor,
        columns.full_scale,
        np.int32(slice_bits),
        np.int64(sign),
        int(levels),
        -float(levels) if signed else 0.0,
        tile_items,
        tile_pixels,
        acc,
    )


def gemm_read_accumulate(
    levels_in: np.ndarray,
    layer: FusedLayer,
    slice_bits: int,
    slices: int,
    sign: int,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
    workspace: Workspace | None = None,
) -> None:
    """`fused_read_accumulate` (same arguments, same bits) on one integer GEMM per input
    slice for the whole layer: the slice's digits gathered through the layer's offsets into
    int8 [flat rows, P] (`gather_digits_numba`: no im2col), onnxruntime's MatMulInteger
    with the layer's cells dense (`FusedLayer.dense_cells`, uint8) into exact int32 sums
    [M, P] (its VNNI kernels multiply-add bytes several times faster than the fused
    kernel's float32), then the ADC read-out `adc.adc_accumulate`. For cells of 0 to 255
    and digits of 0 to 127 on a machine whose integer GEMM is exact
    (`gemm.integer_matmul_exact`): a ValueError otherwise. The engines table says where it
    is the faster one (`engines.py`). `workspace(name, shape, dtype)` may lend the
    buffers of the digits and the sums (a fresh array's page faults cost more than its
    GEMM at digits sizes)."""
    gather = layer.gather
    columns = layer.columns
    _check(levels_in, layer, acc)
    if not 1 <= slice_bits <= 8 or not 0 <= (slices - 1) * slice_bits < 8 or sign not in (1, -1):
        raise ValueError(f"gemm_read_accumulate: {slices} slices of {slice_bits} bits, sign {sign}")
    if backend() == "numpy":
        fused_read_accumulate_numpy(levels_in, layer, slice_bits, slices, sign, levels, acc, signed)
        return
    if not gemm.integer_matmul_exact():
        raise ValueError("gemm_read_accumulate: this machine's integer GEMM is not exact")
    if levels < 0 or (levels and not layer.scales_positive):
        raise ValueError("gemm_read_accumulate: ADC levels below 0 or full scales not positive")
    cells = layer.dense_cells
    items = levels_in.size // gather.image
    lend = workspace or (lambda name, shape, dtype: np.empty(shape, dtype))
    padded = lend("gemm levels", (items, gather.image + 1), np.uint8)
    padded[:, : gather.image] = levels_in.reshape(items, gather.image)
    padded[:, gather.image] = 0  # the zero the padding reads
    largest = int(levels_in.max(initial=0))
    flat_rows = gather.offsets.shape[0]
    digits = lend("gemm digits", (flat_rows, acc.shape[1]), np.int8)
    partial = lend("gemm sums", (len(columns.target), acc.shape[1]), np.int32)
    mask = (1 << slice_bits) - 1
    for j in range(slices):
        shift = j * slice_bits
        if largest >> shift == 0:
            continue  # every digit is 0, so is every code
        if min(largest >> shift, mask) > 127:
            raise ValueError("gemm_read_accumulate: digits beyond 127 (int8)")
        use_threads(digits.size)
        gather_digits_numba(padded, gather.offsets, np.int32(shift), np.int32(mask), digits)
        gemm.integer_matmul(cells, digits, partial)
        # `adc.adc_accumulate`'s kernel on the layer's own columns by target (its checks
        # and sort ran once, when the layer was made: ~15 us a call at digits sizes)
        use_threads(PARALLEL_WORK)
        adc_accumulate_numba(
            partial,
            columns.order,
            columns.runs,
            columns.target,
            columns.factor * (sign << shift),
            columns.full_scale,
            int(levels),
            -float(levels) if signed else 0.0,
            acc,
        )


def digit_planes(
    levels_in: np.ndarray, gather: PatchGather, slice_bits: int, slices: int
) -> np.ndarray:
    """Each slice's digits as the kernel copies them, int32, with a zero after each
    item's levels (which the padding's offsets read): for a Gemm (one pixel an item),
    level-major [slices, image + 1, items], so that a tile copies each row's items in one
    run; for images, item-major [slices, items, image + 1], so that a tile gathers an
    item's patches from its own levels and lays them out as the item's pixels, which its
    read-out adds to `acc` in runs."""
    items = levels_in.size // gather.image
    whole = levels_in.reshape(items, gather.image)
    mask = (1 << slice_bits) - 1
    if gather.pixels == 1:
        planes = np.zeros((slices, gather.image + 1, items), dtype=np.int32)
        for j in range(slices):
            planes[j, : gather.image] = (whole.T >> (j * slice_bits)) & mask
        return planes
    planes = np.zeros((slices, items, gather.image + 1), dtype=np.int32)
    for j in range(slices):
        planes[j, :, : gather.image] = (whole >> (j * slice_bits)) & mask
    return planes


def check_exact(layer: FusedLayer, slice_bits: int, slices: int, levels: int) -> None:
    """Raise ValueError where the kernel's sums would be inexact: a column's sum beyond
    2^24 (float32) or what a slice adds to a target beyond 2^53 (float64); once per
    layer and reads (`FusedLayer.exact`)."""
    key = (slice_bits, slices, levels)
    if key in layer.exact:
        return
    if len(layer.columns.target) and layer.magnitudes.max() * (2**slice_bits - 1) >= 2**24:
        raise ValueError("fused_read_accumulate: sums beyond 2^24, inexact in float32")
    if largest_total(layer, slice_bits, slices, levels) >= 2**53:
        raise ValueError("fused_read_accumulate: sums beyond 2^53, inexact in float64")
    layer.exact.add(key)


def largest_total(layer: FusedLayer, slice_bits: int, slices: int, levels: int) -> float:
    """A bound on what one target's read columns add to it from one slice (the kernel
    sums those in float64, exact below 2^53): full scale x levels per column, or its
    largest sum (digits below 2^slice_bits) for a lossless ADC, times |factor| x the
    largest significance."""
    columns = layer.columns
    if not len(columns.target):
        return 0.0
    if levels:
        per_column = columns.full_scale.astype(np.float64) * levels
    else:
        per_column = layer.magnitudes * (2**slice_bits - 1)
    per_column = per_column * np.abs(columns.factor) * 2.0 ** ((slices - 1) * slice_bits)
    return float(np.bincount(columns.target, weights=per_column).max())


def column_sums(columns: SparseColumns) -> np.ndarray:
    """Each read column's sum of |cells|, float64 [M]."""
    running = np.concatenate([[0.0], np.cumsum(np.abs(columns.cells.astype(np.float64)))])
    return running[columns.start[1:]] - running[columns.start[:-1]]


def fused_read_accumulate_numpy(
    levels_in: np.ndarray,
    layer: FusedLayer,
    slice_bits: int,
    slices: int,
    sign: int,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
) -> None:
    _check(levels_in, layer, acc)
    unfolded = unfold_levels(levels_in, layer.gather)
    columns = layer.columns
    cells = columns.dense(unfolded.shape[0])
    for j in range(slices):
        shift = j * slice_bits
        digits = (unfolded >> shift) & ((1 << slice_bits) - 1)
        factor = columns.factor * (sign << shift)
        partial = cells @ digits
        adc_accumulate_numpy(
            partial, columns.target, factor, columns.full_scale, levels, acc, signed
        )


def dequantize_items(
    acc: np.ndarray, unit: int, input_scale: float, column_scale: np.ndarray, out: np.ndarray
) -> None:
    """`adc.dequantize` into the layout of a layer's output, items first: out[b, c, p] =
    float32(float64(acc[c, b x pixels + p]) / unit * input_scale * column_scale[c]), the
    operations in this order in float64; `acc` int64 [C, items x pixels], `column_scale`
    float64 [C], `out` float32 [items, C, pixels] C-contiguous. The ops after the layer
    (a bias, a Relu, a pool) then read it in order, and a Relu overwrites it in place
    instead of a new array."""
    items, count, pixels = out.shape
    if (
        acc.shape != (count, items * pixels)
        or column_scale.shape != (count,)
        or out.dtype != np.float32
        or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"dequantize_items: acc {acc.shape}, column scales {column_scale.shape}, "
            f"out {out.dtype} {out.shape}"
        )
    if backend() == "numpy":
        values = acc.astype(np.float64)
        values /= unit
        values *= input_scale
        values *= column_scale[:, None]
        out[...] = values.reshape(count, items, pixels).transpose(1, 0, 2)
        return
    use_threads(acc.size)
    dequantize_items_numba(acc, np.float64(unit), np.float64(input_scale), column_scale, out)


def unfold_levels(levels_in: np.ndarray, gather: PatchGather) -> np.ndarray:
    """The levels unfolded through `gather`: int64 [flat rows, items x pixels]."""
    items = levels_in.size // gather.image
    padded = np.zeros((items, gather.image + 1), dtype=np.int64)
    padded[:, : gather.image] = levels_in.reshape(items, gather.image)
    # [rows, items, pixels] -> [rows, items x pixels]
    return padded[:, gather.offsets].transpose(1, 0, 2).reshape(gather.offsets.shape[0], -1)


def _check(levels_in: np.ndarray, layer: FusedLayer, acc: np.ndarray) -> None:
    gather = layer.gather
    if levels_in.dtype != np.uint8 or not levels_in.flags.c_contiguous:
        raise ValueError(
            f"fused_read_accumulate: levels are {levels_in.dtype} {levels_in.shape}; "
            "expected C-contiguous uint8"
        )
    if gather.image <= 0 or levels_in.size % gather.image:
        raise ValueError(
            f"fused_read_accumulate: {levels_in.size} levels are not items of {gather.image}"
        )
    patches = levels_in.size // gather.image * gather.pixels
    check_accumulator("fused_read_accumulate", acc, patches)
    if layer.columns.target_count > acc.shape[0]:
        raise ValueError("fused_read_accumulate: targets beyond the accumulator's rows")


def _check_layer(columns: SparseColumns, gather: PatchGather) -> None:
    """What a layer must hold whatever it reads (checked when it is made)."""
    check_gather("fused_read_accumulate", gather, columns.row_count, "cells")


def check_gather(kernel: str, gather: PatchGather, row_count: int, what: str) -> None:
    """A gather that `kernel` may read through: int64 offsets [flat rows, pixels] within
    the item's levels (or its padding), for the `row_count` rows its `what` lie on."""
    offsets = gather.offsets
    if offsets.dtype != np.int64 or offsets.ndim != 2 or offsets.shape[1] != gather.pixels:
        raise ValueError(f"{kernel}: offsets {offsets.dtype} {offsets.shape}")
    if offsets.size and (offsets.min() < 0 or offsets.max() > gather.image):
        raise ValueError(f"{kernel}: offsets outside the item's levels")
    if row_count > offsets.shape[0]:
        raise ValueError(f"{kernel}: {what} on rows beyond the gather's rows")


# ---------------------------------------------------------------------------------------
# Numba kernel, compiled on first use


@numba_kernel(parallel=True)
def fused_read_accumulate_numba(
    planes,
    offsets,
    start,
    rows,
    cells,
    order,
    runs,
    target,
    factor,
    full_scale,
    slice_bits,
    sign,
    levels,
    low,
    tile_items,
    tile_pixels,
    acc,
):
    """`fused_read_accumulate` on checked arguments: `planes` int32 each slice's digits
    (`digit_planes`: [slices, image + 1, items] where a patch is an item's one pixel, else
    [slices, items, image + 1]); `start`, `rows`, `cells` (float32) the columns' cells in
    fours (`FusedLayer`); a task's tile `tile_items` items x `tile_pixels` of their pixels.
    No fastmath: the loops over patches vectorize without it (each patch's sum is its
    own), and it would let LLVM turn the conversion's division into a multiplication by a
    reciprocal (other bits)."""
    slices = planes.shape[0]
    flat_rows, pixels = offsets.shape
    per_pixel = pixels == 1  # the planes' layout (`digit_planes`)
    items = planes.shape[2] if per_pixel else planes.shape[1]
    width = planes.shape[1] if per_pixel else planes.shape[2]  # image + 1
    patches = acc.shape[1]
    source = planes.reshape(-1)
    gathers = offsets.reshape(-1)
    dest = acc.reshape(-1)
    top = np.float64(levels)
    item_blocks = (items + tile_items - 1) // tile_items
    pixel_blocks = (pixels + tile_pixels - 1) // tile_pixels
    tile = tile_items * tile_pixels
    targets = len(runs) - 1
    longest = 0
    for m in range(len(start) - 1):
        longest = max(longest, start[m + 1] - start[m])
    # One task per tile (a block of items x a block of their pixels): its digits [flat
    # rows, tile] copied once per slice, item-major (patch i of the tile is pixel i % q of
    # item i // q of the block), and kept in the cache while every read column sums over
    # them; the task owns its patches of `acc`, so tasks never race. Loops over patches run
    # over contiguous memory with unsigned flat indices, so they vectorize.
    for task in prange(item_blocks * pixel_blocks):
        first_item = task // pixel_blocks * tile_items
        first_pixel = task % pixel_blocks * tile_pixels
        n = min(tile_items, items - first_item)
        q = min(tile_pixels, pixels - first_pixel)
        length = n * q
        digits = np.empty(flat_rows * tile, dtype=np.float32)
        live = np.zeros(flat_rows, dtype=np.bool_)
        sums = np.empty(tile, dtype=np.float32)
        total = np.empty(tile, dtype=np.float64)  # exact: integers below 2^53 (checked)
        lines = np.empty(longest + 4, dtype=np.uint64)
        weights = np.zeros(longest + 4, dtype=np.float32)
        for j in range(slices):
            shift = np.int32(j * slice_bits)
            live_rows = 0
            for r in range(flat_rows):
                any_digit = np.int32(0)
                into = np.uint64(r * tile)
                if per_pixel:  # one run of items
                    read = np.uint64((j * width + offsets[r, 0]) * items + first_item)
                    for b in range(n):
                        digit = source[read + np.uint64(b)]
                        any_digit |= digit
                        digits[into + np.uint64(b)] = np.float32(digit)
                else:  # each item's patches gathered from its levels
                    row_offsets = np.uint64(r * pixels + first_pixel)
                    for b in range(n):
                        read = np.uint64((j * items + first_item + b) * width)
                        at = into + np.uint64(b * q)
                        for p in range(q):
                            level = gathers[row_offsets + np.uint64(p)]
                            digit = source[read + np.uint64(level)]
                            any_digit |= digit
                            digits[at + np.uint64(p)] = np.float32(digit)
                live[r] = any_digit != 0
                live_rows += any_digit != 0
            if live_rows == 0:
                continue  # every sum is 0, so is every code
            for k in range(targets):
                touched = False
                for i in range(length):
                    total[i] = 0
                for index in range(runs[k], runs[k + 1]):
                    m = order[index]
                    active = 0
                    if live_rows == flat_rows:  # every cell reads digits
                        for e in range(start[m], start[m + 1]):
                            lines[active] = np.uint64(rows[e] * tile)
                            weights[active] = cells[e]
                            active += 1
                    else:
                        for e in range(start[m], start[m + 1]):
                            if live[rows[e]] and cells[e] != 0:
                                lines[active] = np.uint64(rows[e] * tile)
                                weights[active] = cells[e]
                                active += 1
                        padded = (active + 3) // 4 * 4
                        for a in range(active, padded):  # weight 0
                            lines[a] = lines[0]
                            weights[a] = 0
                        active = padded
                    if active == 0:
                        continue  # every sum is 0, so is every code
                    touched = True
                    sum_rows(digits, lines, weights, active, length, sums)
                    weight = factor[m] * (sign << shift)
                    if levels == 0:
                        lossless = np.float64(weight)
                        for i in range(length):
                            total[i] += lossless * np.float64(sums[i])
                        continue
                    # the codes' contributions summed in float64, exact (integers below
                    # 2^53), and converted to int64 once per target
                    step = np.float64(weight * full_scale[m])
                    scale = np.float64(full_scale[m])
                    for i in range(length):
                        code = np.rint(np.float64(sums[i]) * top / scale)
                        total[i] += step * min(max(code, low), top)
                if touched:  # item b's pixels run on in acc
                    into = np.uint64(target[order[runs[k]]] * patches)
                    into += np.uint64(first_item * pixels + first_pixel)
                    for b in range(n):
                        at = into + np.uint64(b * pixels)
                        for p in range(q):
                            dest[at + np.uint64(p)] += np.int64(total[b * q + p])


@numba_kernel(parallel=True)
def gather_digits_numba(padded, offsets, shift, mask, digits):
    """`gemm_read_accumulate`'s digits: digits[r, b x pixels + p] = (padded[b, offsets[r,
    p]] >> shift) & mask, int8; `padded` uint8 [items, image + 1] (a zero last)."""
    items, width = padded.shape
    flat_rows, pixels = offsets.shape
    source = padded.reshape(-1)
    dest = digits.reshape(-1)
    for r in prange(flat_rows):
        row = np.uint64(r * items * pixels)
        for b in range(items):
            read = np.uint64(b * width)
            into = row + np.uint64(b * pixels)
            for p in range(pixels):
                level = source[read + np.uint64(offsets[r, p])]
                dest[into + np.uint64(p)] = np.int8((level >> shift) & mask)


@numba_kernel(parallel=True)
def dequantize_items_numba(acc, unit, input_scale, column_scale, out):
    """`dequantize_items` on checked arguments (`unit`, `input_scale` float64). The loops
    over patches read and write contiguous memory with unsigned flat indices, so the
    division vectorizes; where an item has one pixel (a Gemm), each column's values are
    computed in a row and then spread to the items."""
    items, count, pixels = out.shape
    patches = acc.shape[1]
    source = acc.reshape(-1)
    dest = out.reshape(-1)
    if pixels == 1:
        for c in prange(count):
            scale = column_scale[c]
            row = np.empty(items, dtype=np.float32)
            read = np.uint64(c * patches)
            for b in range(items):
                value = np.float64(source[read + np.uint64(b)]) / unit * input_scale * scale
                row[b] = np.float32(value)
            for b in range(items):
                dest[np.uint64(b * count + c)] = row[b]
        return
    for b in prange(items):
        for c in range(count):
            scale = column_scale[c]
            read = np.uint64(c * patches + b * pixels)
            into = np.uint64((b * count + c) * pixels)
            for p in range(pixels):
                value = np.float64(source[read + np.uint64(p)]) / unit * input_scale * scale
                dest[into + np.uint64(p)] = np.float32(value)


@numba_kernel(fastmath={"contract"})
def sum_rows(digits, lines, weights, active, length, sums):
    """sums[:length] = the sum over a < `active` (a multiple of four) of weights[a] x the
    digits at lines[a]: eight rows a pass over the sums (each pass loads and stores the
    sums once), the last four in a pass of their own. Multiply-adds may fuse (contract):
    every product and partial sum is an integer below 2^24, exact either way."""
    for i in range(length):
        sums[i] = 0
    eights = active // 8 * 8
    for a in range(0, eights, 8):
        c0, c1, c2, c3 = weights[a], weights[a + 1], weights[a + 2], weights[a + 3]
        c4, c5, c6, c7 = weights[a + 4], weights[a + 5], weights[a + 6], weights[a + 7]
        line0, line1, line2, line3 = lines[a], lines[a + 1], lines[a + 2], lines[a + 3]
        line4, line5, line6, line7 = lines[a + 4], lines[a + 5], lines[a + 6], lines[a + 7]
        for i in range(length):
            at = np.uint64(i)
            sums[i] += (
                c0 * digits[line0 + at]
                + c1 * digits[line1 + at]
                + c2 * digits[line2 + at]
                + c3 * digits[line3 + at]
                + c4 * digits[line4 + at]
                + c5 * digits[line5 + at]
                + c6 * digits[line6 + at]
                + c7 * digits[line7 + at]
            )
    if eights < active:
        a = eights
        c0, c1, c2, c3 = weights[a], weights[a + 1], weights[a + 2], weights[a + 3]
        line0, line1, line2, line3 = lines[a], lines[a + 1], lines[a + 2], lines[a + 3]
        for i in range(length):
            at = np.uint64(i)
            sums[i] += (
                c0 * digits[line0 + at]
                + c1 * digits[line1 + at]
                + c2 * digits[line2 + at]
                + c3 * digits[line3 + at]
            )
