"""Noisy reads of a layer: float reads of its noisy cells, read noise and the ADC in one kernel.

    noisy_read_accumulate(levels_in, columns, slice_bits, slices, sign, levels, low, noise, acc)
    # acc += the noisy read-out of every input slice of one sign's DAC levels

The read path of noisy profiles (`rram`, `pcm`, and the exact layers of an executor whose
other layers are noisy): instead of one float GEMM per read and input slice into a buffer
that `gaussian.add_noise` and the ADC kernel then read back, one kernel call per input
sign takes every read column of a layer, all groups and input slices at once. Per run of
patches (held in the cache) and per read, it cuts the read's input digits out of the
unfolded uint8 DAC levels (unfolded once per sign, not once per slice), adds the input
noise, sums the column's cells times the digits in float32 (rows in ascending order; a
row whose digits are all zero in the run adds exact zeros and is skipped), adds the read
and output noise and converts the sum as `adc.adc_accumulate` does. Digits of one bit
(1-bit DAC steps, no input noise, not pcm) in reads of SET_BIT_ROWS rows and
SET_BIT_COLUMNS columns or more, over runs of SET_BIT_PATCHES patches or more, are summed
over their set bits only (`add_set_bits`): each row's cells added to the sums of the
patches whose bit is set, rows ascending, so the same float32 sums as digit times cell
over every row (a zero digit adds an exact zero) at a sixth of the additions on the
digits fixtures (15 % of the bits set). Then

    code = clip(rint(float64(s) * levels / full_scale), low, levels)
    acc[target] += factor * significance * full_scale * code

(computed as a product by the reciprocal levels / full_scale, the rare products near a
rounding tie redone by the division: `convert_add`, the same codes to the bit)

where s = the column sum + sigma * z. sigma is the standard deviation of
`devices.read_noise_sigma`: additive, unit sqrt(output_noise^2 + (read_sigma /
digit_max)^2 sum x^2) with sum x^2 over the read's rows per patch (the read's columns
share it); pcm, unit sqrt(output_noise^2 + read_sigma^2 sum |W| x^2 / (cell_max
digit_max^2)) per column, the same structure as the read with |W| and x^2.

Draws: z is the standard normal of `gaussian` (noise format 3: 32-bit hashes and Box-Muller
in float32) of the call's key and the index (slice x columns + column) x patches + patch;
input noise, drawn when the profile has it, from a second key and the index (slice x rows +
row of the read's rows, read after read) x patches + patch. So every draw is a function of
the seeds, the batch, the read-out and its position: the same bits on any number of threads
and for any split of the work (the kernel runs in parallel over runs of patches and blocks
of output columns, never over a sum). A (read, slice) whose digits are zero on every patch
of the batch is not read (no noise, no conversion), as the read-by-read path skips it.

`noisy_read_accumulate_numpy` is the twin: the same float32 sums in the same order, the
same normals (float32 Box-Muller written as polynomials: the same bits in numpy, as
`gaussian`'s twin), the same float64 noise and conversion: equal to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xbarc.runtime import gaussian
from xbarc.runtime.gaussian import normals
from xbarc.runtime.kernels import (
    PARALLEL_WORK,
    backend,
    check_accumulator,
    numba_kernel,
    prange,
    use_threads,
)
from xbarc.runtime.kernels.bitplane import popcount
from xbarc.runtime.kernels.sparse_read import CHUNK, chunk_maxima

# Float reads of at least this many rows per read column (on average over a layer: whole
# tiles of 128 rows) run as onnxruntime's float GEMMs read by read (`reads.ReadOut`), not
# here, where each row is a pass over the patches: ResNet-50 at batch 1 (49 to 3136
# patches) took 16 s of CPU so against 27 s all here; the digits ResNet (reads of 72 to
# 128 rows, 360 images) 1.4 s here against 1.7 s read by read. With the set-bit sums
# (issue 18, round two; load 3-4 on 2 cores): ResNet-50 17.7 s of CPU so against 20.4 s
# all here (half its input bits set), SqueezeNet 1.97 s against 1.87 s: kept.
NOISY_TALL = 128

# Reads of 1-bit digits (no input noise) of at least SET_BIT_ROWS rows and SET_BIT_COLUMNS
# columns in a block sum their cells over the set bits only, row by row (`add_set_bits`:
# a row's cells added to the patches it drives); the others multiply every digit, column
# by column. Measured per layer on the digits fixtures (360 images, one thread, CPU time;
# set bits / every digit): reads of 128 rows 0.45-0.5 (ResNet), 72 rows x 128 columns
# 0.69 (LeNet); but 9 rows 1.1-1.6, and 64 rows x 16 columns a block (one run of
# patches split into 16 blocks) 1.3.
SET_BIT_ROWS = 24
SET_BIT_COLUMNS = 32
# ... and runs of at least this many patches: the set-bit sums copy the cells of every
# (read, slice) per run, which a run of a few patches (magika's 8 files) does not repay
SET_BIT_PATCHES = 128
# ... in groups of at most this many columns, whose patch-major sums (SET_BIT_GROUP x
# CHUNK float32, 128 kB) stay in the core's cache (512 columns at once, SqueezeNet's first
# layer, took 7.5 ns a conversion)
SET_BIT_GROUP = 64

# read-noise models, as the kernel numbers them
NO_READ_NOISE, ADDITIVE, PCM = 0, 1, 2


@dataclass(frozen=True)
class ReadNoise:
    """The noise a layer's reads get, in read units (levels x DAC digits): sigma = `unit`
    sqrt(`output_variance` + `coefficient` x (sum x^2, or sum |W| x^2 for pcm)); input
    noise of `input_sigma` digits per row. `key` and `input_key` key the draws."""

    unit: float
    output_variance: float
    model: int  # NO_READ_NOISE | ADDITIVE | PCM
    coefficient: float
    input_sigma: float
    key: int
    input_key: int


@dataclass
class NoisyColumns:
    """A layer's read columns for `noisy_read_accumulate`, its reads one after another.

    Read q drives the rows `rows[read_start[q]:read_start[q+1]]` (rows of the flat
    [groups x rows] unfolded input) onto its columns `read_columns[q]` to
    `read_columns[q+1]`; column m of read q holds the cells `cells[read_cells[q] + (m -
    read_columns[q]) x R_q + r]` (R_q the read's rows) and, for pcm, their magnitudes
    |G+| + |G-| in `magnitude` at the same places. Column m's code goes to row `target[m]`
    of the flat [groups x columns] accumulator with the signed significance `factor[m]`
    over `full_scale[m]`."""

    read_start: np.ndarray  # int64 [Q + 1]
    rows: np.ndarray  # int64 [sum R_q]
    read_columns: np.ndarray  # int64 [Q + 1]
    read_cells: np.ndarray  # int64 [Q]
    cells: np.ndarray  # float32 [sum M_q x R_q]
    magnitude: np.ndarray  # float32, as `cells` (pcm) or empty
    target: np.ndarray  # int64 [M]
    factor: np.ndarray  # int64 [M]
    full_scale: np.ndarray  # int64 [M]
    row_count: int  # rows of the unfolded input (groups x layer rows)
    target_count: int  # rows of the accumulator
    _blocks: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def columns(self) -> int:
        return len(self.target)

    def read_of(self) -> np.ndarray:
        """The read of each column, int64 [M]."""
        return np.repeat(np.arange(len(self.read_cells)), np.diff(self.read_columns))

    def blocks(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The columns split into `count` blocks of whole targets (contiguous ranges of
        target rows, so two blocks never add into the same row), each block's columns
        read by read: (start int64 [count + 1], columns int64 [M])."""
        found = self._blocks.get(count)
        if found is None:
            block = self.target * count // max(self.target_count, 1)
            order = np.lexsort((np.arange(self.columns), self.read_of(), block))
            start = np.searchsorted(block[order], np.arange(count + 1)).astype(np.int64)
            found = self._blocks[count] = (start, order.astype(np.int64))
        return found


def noisy_columns(reads, rows: int, cols: int, row_count: int, pcm: bool) -> NoisyColumns:
    """The read plans of a layer (`reads.ReadPlan`s, every group) as `NoisyColumns`:
    `rows` and `cols` the layer's rows and accumulator columns per group."""
    read_rows, cells, magnitude, targets, factors, full_scales = [], [], [], [], [], []
    read_start, read_columns, read_cells = [0], [0], []
    cell_count = 0
    for read in reads:
        source = read.group * rows + np.arange(rows, dtype=np.int64)[read.rows]
        read_rows.append(source)
        read_start.append(read_start[-1] + len(source))
        read_columns.append(read_columns[-1] + len(read.target))
        read_cells.append(cell_count)
        cell_count += read.cells_t.size
        cells.append(np.asarray(read.cells_t, np.float32).reshape(-1))
        if pcm:
            held = read.cells_t if read.magnitude_t is None else read.magnitude_t
            magnitude.append(np.abs(np.asarray(held, np.float32)).reshape(-1))
        targets.append(read.group * cols + read.target)
        factors.append(read.factor)
        full_scales.append(read.full_scale)

    def joined(parts, dtype):
        return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), dtype=dtype)

    return NoisyColumns(
        np.asarray(read_start, np.int64),
        joined(read_rows, np.int64),
        np.asarray(read_columns, np.int64),
        np.asarray(read_cells, np.int64),
        joined(cells, np.float32),
        joined(magnitude, np.float32),
        joined(targets, np.int64),
        joined(factors, np.int64),
        joined(full_scales, np.int64),
        row_count,
        max(1, (max((r.group for r in reads), default=0) + 1) * cols),
    )


def active_reads(levels_in: np.ndarray, columns: NoisyColumns, slice_bits: int, slices: int):
    """uint8 [Q, slices]: whether read q's digits of slice j are non-zero on some patch."""
    ored = np.bitwise_or.reduce(levels_in, axis=1) if levels_in.size else np.zeros(0, np.uint8)
    mask = (1 << slice_bits) - 1
    active = np.zeros((len(columns.read_cells), slices), np.uint8)
    for q in range(len(columns.read_cells)):
        rows = columns.rows[columns.read_start[q] : columns.read_start[q + 1]]
        bits = int(np.bitwise_or.reduce(ored[rows])) if len(rows) else 0
        for j in range(slices):
            active[q, j] = (bits >> (j * slice_bits)) & mask != 0
    return active


def noisy_read_accumulate(
    levels_in: np.ndarray,
    columns: NoisyColumns,
    slice_bits: int,
    slices: int,
    sign: int,
    levels: int,
    signed: bool,
    noise: ReadNoise | None,
    acc: np.ndarray,
    convert: bool = True,
) -> None:
    """acc += the noisy ADC read-out of every column of `columns` driven by each slice.

    `levels_in` uint8 [rows, P]: the unfolded DAC levels of one sign's magnitude, groups
    flattened into rows; slice j < `slices` drives the digits (levels_in >> j x
    slice_bits) & (2^slice_bits - 1) with the significance sign x 2^(j x slice_bits).
    `levels` > 0 ADC levels (a `signed` ADC clips codes at -levels, else at 0); `noise`:
    the read's noise (None: exact reads of the cells, no draws). `acc` int64 [outputs, P].
    `convert` False (benchmarks/rram_floor.py: the cost of the sums alone): the sums only,
    no draws, no conversion, `acc` left as it is (the Numba kernel; the twin ignores it)."""
    _check(levels_in, columns, slice_bits, slices, sign, levels, acc)
    if not columns.columns:
        return
    active = active_reads(levels_in, columns, slice_bits, slices)
    if backend() == "numpy":
        _numpy(levels_in, columns, active, slice_bits, slices, sign, levels, signed, noise, acc)
        return
    patches = levels_in.shape[1]
    chunks = -(-patches // CHUNK)
    # enough tasks for every core when the patches are few (ResNet-50 at batch 1: 49 of
    # them in its last layers); the split does not change a bit of the result
    count = int(min(max(1, -(-16 // chunks)), columns.target_count))
    block_start, block_columns = columns.blocks(count)
    maxima = chunk_maxima(levels_in)
    use_threads(PARALLEL_WORK)
    settings = noise or ReadNoise(1.0, 0.0, NO_READ_NOISE, 0.0, 0.0, 0, 0)
    noisy_read_accumulate_numba(
        levels_in,
        maxima,
        active,
        columns.read_start,
        columns.rows,
        columns.read_columns,
        columns.read_cells,
        columns.cells,
        columns.magnitude if len(columns.magnitude) else columns.cells,
        columns.target,
        columns.factor,
        columns.full_scale,
        block_start,
        block_columns,
        np.int32(slice_bits),
        int(slices),
        np.int64(sign),
        np.float64(levels),
        -np.float64(levels) if signed else 0.0,
        noise is not None,
        np.float64(settings.unit),
        np.float64(settings.output_variance),
        int(settings.model),
        np.float64(settings.coefficient),
        np.float64(settings.input_sigma),
        np.uint64(settings.key % 2**64),
        np.uint64(settings.input_key % 2**64),
        CHUNK,
        acc,
        convert,
    )


def _numpy(levels_in, columns, active, slice_bits, slices, sign, levels, signed, noise, acc):
    """The twin: per read and slice, the same float32 sums row by row, float64 noise and
    conversion."""
    patches = levels_in.shape[1]
    total_columns, total_rows = columns.columns, len(columns.rows)
    top = np.float64(levels)
    low = -top if signed else 0.0
    for j in range(slices):
        shift = j * slice_bits
        digits_all = ((levels_in.astype(np.int32) >> shift) & ((1 << slice_bits) - 1)).astype(
            np.float32
        )
        for q in range(len(columns.read_cells)):
            if not active[q, j]:
                continue
            first_row, last_row = columns.read_start[q], columns.read_start[q + 1]
            first, last = columns.read_columns[q], columns.read_columns[q + 1]
            count, width = last - first, last_row - first_row
            drive = digits_all[columns.rows[first_row:last_row]]
            if noise is not None and noise.input_sigma > 0:
                index = (j * total_rows + np.arange(first_row, last_row))[:, None] * patches
                z = gaussian.standard_normals_at(noise.input_key, index + np.arange(patches))
                drive = (drive.astype(np.float64) + noise.input_sigma * z).astype(np.float32)
            start = columns.read_cells[q]
            cells = columns.cells[start : start + count * width].reshape(count, width)
            sums = np.zeros((count, patches), np.float32)
            for r in range(width):
                sums += cells[:, r : r + 1] * drive[r]
            values = sums.astype(np.float64)
            if noise is not None:
                squares = drive.astype(np.float64) ** 2
                if noise.model == PCM:
                    held = columns.magnitude[start : start + count * width].reshape(count, width)
                    weighted = np.zeros((count, patches))
                    for r in range(width):
                        weighted += held[:, r : r + 1].astype(np.float64) * squares[r]
                    variance = noise.output_variance + noise.coefficient * weighted
                else:
                    summed = np.zeros(patches)
                    for r in range(width):
                        summed += squares[r]
                    coefficient = noise.coefficient if noise.model == ADDITIVE else 0.0
                    variance = (noise.output_variance + coefficient * summed)[None, :]
                sigma = noise.unit * np.sqrt(variance)
                index = (j * total_columns + np.arange(first, last))[:, None] * patches
                z = gaussian.standard_normals_at(noise.key, index + np.arange(patches))
                values = values + sigma * z
            full_scale = columns.full_scale[first:last]
            codes = np.clip(np.rint(values * top / full_scale[:, None]), low, top)
            step = columns.factor[first:last] * (sign << shift) * full_scale
            np.add.at(acc, columns.target[first:last], step[:, None] * codes.astype(np.int64))


def observe_noisy_reads(
    levels_in: np.ndarray,
    columns: NoisyColumns,
    slice_bits: int,
    slices: int,
    noise: ReadNoise | None,
    observer,
) -> None:
    """Call `observer(sums [M_q, P] float32, full_scales [M_q])` with the values each read
    and slice of `noisy_read_accumulate` converts (its noise drawn again from the same
    keys; the sums of the cells by a float32 GEMM, so equal to the kernel's up to their
    last bits): what an observer of the partial sums (the ADC report) measures. The
    result is the kernel's: observing a run does not change its bits."""
    from xbarc.runtime.kernels import gemm

    active = active_reads(levels_in, columns, slice_bits, slices)
    patches = levels_in.shape[1]
    total_columns, total_rows = columns.columns, len(columns.rows)
    mask = (1 << slice_bits) - 1
    for j in range(slices):
        for q in range(len(columns.read_cells)):
            if not active[q, j]:
                continue
            first_row, last_row = columns.read_start[q], columns.read_start[q + 1]
            first, last = columns.read_columns[q], columns.read_columns[q + 1]
            count, width = last - first, last_row - first_row
            levels = levels_in[columns.rows[first_row:last_row]]  # the read's rows only
            drive = ((levels >> (j * slice_bits)) & mask).astype(np.float32)
            if noise is not None and noise.input_sigma > 0:
                start = (j * total_rows + first_row) * patches
                z = gaussian.normals_range(noise.input_key, start, width * patches)
                noisy = drive.astype(np.float64) + noise.input_sigma * z.reshape(width, patches)
                drive = noisy.astype(np.float32)
            start = columns.read_cells[q]
            cells = columns.cells[start : start + count * width].reshape(count, width)
            sums = np.empty((count, patches), np.float32)
            gemm.float_matmul(cells, drive, sums)
            values = sums.astype(np.float64)
            if noise is not None:
                squares = drive.astype(np.float64) ** 2
                if noise.model == PCM:
                    held = columns.magnitude[start : start + count * width].reshape(count, width)
                    spread = noise.coefficient * (held.astype(np.float64) @ squares)
                elif noise.model == ADDITIVE:
                    spread = noise.coefficient * squares.sum(axis=0)[None, :]
                else:
                    spread = np.zeros((1, patches))
                sigma = noise.unit * np.sqrt(noise.output_variance + spread)
                z = gaussian.normals_range(
                    noise.key, (j * total_columns + first) * patches, count * patches
                )
                values = values + sigma * z.reshape(count, patches)
            observer(values.astype(np.float32), columns.full_scale[first:last])


def _check(levels_in, columns: NoisyColumns, slice_bits, slices, sign, levels, acc) -> None:
    if levels_in.dtype != np.uint8 or levels_in.ndim != 2 or not levels_in.flags.c_contiguous:
        raise ValueError(
            f"noisy_read_accumulate: levels are {levels_in.dtype} {levels_in.shape}; "
            "expected C-contiguous uint8 [rows, P]"
        )
    check_accumulator("noisy_read_accumulate", acc, levels_in.shape[1])
    if not 1 <= slice_bits <= 8 or not 0 <= (slices - 1) * slice_bits < 8 or sign not in (1, -1):
        raise ValueError(
            f"noisy_read_accumulate: {slices} slices of {slice_bits} bits, sign {sign}"
        )
    if levels < 1:
        raise ValueError(
            "noisy_read_accumulate: the ADC needs levels (a lossless one sums integers)"
        )
    if columns.row_count > levels_in.shape[0] or (
        len(columns.rows) and columns.rows.max() >= levels_in.shape[0]
    ):
        raise ValueError("noisy_read_accumulate: reads of rows beyond the levels' rows")
    if columns.target_count > acc.shape[0]:
        raise ValueError("noisy_read_accumulate: targets beyond the accumulator's rows")


# ---------------------------------------------------------------------------------------
# Numba kernel, compiled on first use


# pack_digits: the bits of 8 levels at once (one 64-bit word of bytes): bit 0 of each byte
# masked, then a multiply by SPREAD gathers the 8 bits into the top byte, byte b at bit b
BYTE_BITS = np.uint64(0x0101010101010101)
SPREAD = np.uint64(0x0102040810204080)


@numba_kernel(inline="always")
def pack_digits(source, line, length, shift, bits):
    """Bit `shift` of the `length` levels `source[line:line + length]` (one row, a run of
    patches), 64 patches a word: patch i at bit i % 64 of `bits[i // 64]`."""
    for w in range((length + 63) // 64):
        word = np.uint64(0)
        start = line + np.uint64(w * 64)
        here = min(64, length - w * 64)
        for t in range(here // 8):
            at = start + np.uint64(8 * t)
            eight = np.uint64(0)
            for b in range(8):
                eight |= np.uint64(source[at + np.uint64(b)]) << np.uint64(8 * b)
            eight = (eight >> np.uint64(shift)) & BYTE_BITS
            word |= ((eight * SPREAD) >> np.uint64(56)) << np.uint64(8 * t)
        for b in range(here - here % 8, here):
            digit = np.uint64((np.int32(source[start + np.uint64(b)]) >> shift) & np.int32(1))
            word |= digit << np.uint64(b)
        bits[w] = word


@numba_kernel(inline="always")
def add_set_bits(bits, words, cells_row, count, sums):
    """sums[i * count + k] += cells_row[k] for each patch i whose bit is set in `bits` (as
    `pack_digits` packs them): a row's cells added to the sums of the patches it drives
    with digit 1. Rows added in ascending order give each sum the float32 sum over all
    rows of the cell times its 0/1 digit, to the bit (a zero digit adds an exact zero).
    Consecutive additions go to different patches, so they do not wait on each other."""
    for w in range(words):
        word = bits[w]
        while word != np.uint64(0):
            low = word & (~word + np.uint64(1))
            i = np.uint64(w * 64) + popcount(low - np.uint64(1))
            word ^= low
            into = i * np.uint64(count)
            for k in range(count):
                sums[into + np.uint64(k)] += cells_row[k]


# The quotient of a sum by the ADC's step, as a product by the reciprocal levels / full
# scale, is within a few ulp (2^-52 relative each) of the division `adc.adc_accumulate`
# rounds; the two round to different codes only near a tie k + 1/2. Products whose distance
# to their rounding is at least 1/2 - (levels + 2) x TIE_MARGIN (within a margin far
# wider than the error of any quotient that is not clipped) are converted again by the
# division, so every code is the division's to the bit.
TIE_MARGIN = 2.0**-44


@numba_kernel(inline="always")
def convert_add(column, sigma, z, noisy, at, dest, line):
    """dest[line + i] += step x clip(rint(value x top / scale), low, top), i < `length`, the
    ADC's code of each value = float64(column[i]) (+ sigma[i] x z[offset + i] if `noisy`)
    as `adc.adc_accumulate` converts it, to the bit: one product by the reciprocal a
    conversion (a division costs several), then the rare products near a rounding tie
    corrected by the division's code, in a second pass over the values. `at`: (offset,
    length, top, low, scale, step)."""
    offset, length, top, low, scale, step = at
    reciprocal = top / scale
    edge = 0.5 - (top + 2.0) * TIE_MARGIN
    near = 0
    if noisy:
        for i in range(length):
            quotient = (np.float64(column[i]) + sigma[i] * np.float64(z[offset + i])) * reciprocal
            rounded = np.rint(quotient)
            near += abs(quotient - rounded) >= edge
            dest[line + np.uint64(i)] += step * np.int64(min(max(rounded, low), top))
    else:
        for i in range(length):
            quotient = np.float64(column[i]) * reciprocal
            rounded = np.rint(quotient)
            near += abs(quotient - rounded) >= edge
            dest[line + np.uint64(i)] += step * np.int64(min(max(rounded, low), top))
    if near:
        for i in range(length):
            value = np.float64(column[i])
            if noisy:
                value = value + sigma[i] * np.float64(z[offset + i])
            quotient = value * reciprocal
            rounded = np.rint(quotient)
            if abs(quotient - rounded) >= edge:
                fast = np.int64(min(max(rounded, low), top))
                exact = np.int64(min(max(np.rint(value * top / scale), low), top))
                dest[line + np.uint64(i)] += step * (exact - fast)


@numba_kernel(parallel=True, error_model="numpy")
def noisy_read_accumulate_numba(
    levels_in,
    maxima,
    active,
    read_start,
    rows,
    read_columns,
    read_cells,
    cells,
    magnitude,
    target,
    factor,
    full_scale,
    block_start,
    block_columns,
    slice_bits,
    slices,
    sign,
    top,
    low,
    noisy,
    unit,
    output_variance,
    model,
    coefficient,
    input_sigma,
    key,
    input_key,
    chunk,
    acc,
    convert,
):
    """`noisy_read_accumulate` on checked arguments; `maxima` per run of `chunk` patches,
    `active` [Q, slices], the columns split into blocks of whole targets."""
    patches = levels_in.shape[1]
    source = levels_in.reshape(-1)
    dest = acc.reshape(-1)
    mask = np.int32((1 << slice_bits) - 1)
    chunks = maxima.shape[1]
    blocks = len(block_start) - 1
    total_columns = np.uint64(len(target))
    total_rows = np.uint64(len(rows))
    span = np.uint64(patches)
    longest = 0
    widest = 0
    for q in range(len(read_cells)):
        longest = max(longest, read_start[q + 1] - read_start[q])
        widest = max(widest, read_columns[q + 1] - read_columns[q])
    input_noise = noisy and input_sigma > 0.0
    # digits of one bit without input noise: sums over the set bits only (`set_bit_sums`)
    binary = slice_bits == 1 and not input_noise and not (noisy and model == 2)
    # One task per (run of patches, block of targets): no two tasks add into the same
    # row and patch of `acc`; each column's sums, noise and codes are computed whole in
    # one task, so the split changes nothing. A read's digits are cut once per task and
    # slice into `drive` (float32 [rows, chunk]) and shared by its columns in the block.
    for task in prange(chunks * blocks):
        run = task // blocks
        block = task % blocks
        first = run * chunk
        length = min(first + chunk, patches) - first
        drive = np.empty(max(longest, 1) * chunk, dtype=np.float32)
        used = np.empty(max(longest, 1), dtype=np.int64)
        sums = np.empty(chunk, dtype=np.float32)
        sigma = np.empty(chunk, dtype=np.float64)
        weighted = np.empty(chunk, dtype=np.float64)
        set_count = np.empty(chunk, dtype=np.int32)
        z = np.empty(chunk + 2, dtype=np.float32)
        wide = np.empty(chunk // 2 + 2, dtype=np.float32)
        turn = np.empty(chunk // 2 + 2, dtype=np.float32)
        exponents = np.empty(chunk // 2 + 2, dtype=np.float32)
        bits = np.empty(longest * ((chunk + 63) // 64) if binary else 0, dtype=np.uint64)
        cells_t = np.empty(longest * SET_BIT_GROUP if binary else 0, dtype=np.float32)
        block_sums = np.empty(SET_BIT_GROUP * 64 if binary else 0, dtype=np.float32)
        group_sums = np.empty(SET_BIT_GROUP * chunk if binary else 0, dtype=np.float32)
        for j in range(slices):
            shift = np.int32(j * slice_bits)
            lowest = np.uint8(1 << shift)
            significance = sign << shift
            index = block_start[block]
            stop_block = block_start[block + 1]
            while index < stop_block:
                q = 0
                m0 = block_columns[index]
                # the read of column m0: the last q with read_columns[q] <= m0
                lo = 0
                hi = len(read_cells) - 1
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if read_columns[mid] <= m0:
                        lo = mid
                    else:
                        hi = mid - 1
                q = lo
                end = index
                while (
                    end < stop_block and read_columns[q] <= block_columns[end] < read_columns[q + 1]
                ):
                    end += 1
                width = read_start[q + 1] - read_start[q]
                if active[q, j] == 0:
                    index = end
                    continue
                columns_here = end - index
                set_bits = (
                    binary
                    and columns_here >= SET_BIT_COLUMNS
                    and width >= SET_BIT_ROWS
                    and length >= SET_BIT_PATCHES
                )
                live = 0  # set_bits: the rows with a set bit in the run, packed in `bits`
                if set_bits:
                    words = (length + 63) // 64
                    for i in range(length):
                        set_count[i] = 0
                    for r in range(width):
                        row = rows[read_start[q] + r]
                        if maxima[row, run] < lowest:  # the bit is zero on the whole run
                            continue
                        line = np.uint64(row) * span + np.uint64(first)
                        pack_digits(source, line, length, shift, bits[live * words :])
                        used[live] = r
                        live += 1
                        if noisy and model == 1:  # sum x^2 over the rows: a count of set bits
                            for i in range(length):
                                level = np.int32(source[line + np.uint64(i)])
                                set_count[i] += (level >> shift) & np.int32(1)
                    if noisy:  # sigma shared by the read's columns (the count exact in float64)
                        for i in range(length):
                            spread = coefficient * np.float64(set_count[i])
                            sigma[i] = unit * np.sqrt(output_variance + spread)
                # the read's digits in this run of patches; rows all zero here skipped
                # (they add exact zeros), unless input noise makes them non-zero
                count = 0
                for r in range(width if not set_bits else 0):
                    row = rows[read_start[q] + r]
                    if not input_noise and maxima[row, run] < lowest:
                        continue
                    used[count] = r
                    line = np.uint64(row) * span + np.uint64(first)
                    into = np.uint64(count * chunk)
                    for i in range(length):
                        at = np.uint64(i)
                        drive[into + at] = np.float32((np.int32(source[line + at]) >> shift) & mask)
                    if input_noise:
                        position = (np.uint64(j) * total_rows + np.uint64(read_start[q] + r)) * span
                        offset = normals(
                            input_key, position + np.uint64(first), length, z, wide, turn, exponents
                        )
                        for i in range(length):
                            at = np.uint64(i)
                            noise = input_sigma * np.float64(z[offset + i])
                            drive[into + at] = np.float32(np.float64(drive[into + at]) + noise)
                    count += 1
                if noisy and model != 2 and not set_bits:  # sigma shared by the read's columns
                    for i in range(length):
                        weighted[i] = 0.0
                    if model == 1:
                        for a in range(count):
                            into = np.uint64(a * chunk)
                            for i in range(length):
                                value = np.float64(drive[into + np.uint64(i)])
                                weighted[i] += value * value
                    for i in range(length):
                        sigma[i] = unit * np.sqrt(output_variance + coefficient * weighted[i])
                group = SET_BIT_GROUP if set_bits else columns_here
                for group_start in range(index, end, group):
                    group_end = min(group_start + group, end)
                    if set_bits:
                        # the group's sums, patch-major in `block_sums` [length, group_count]
                        group_count = group_end - group_start
                        for k in range(group_count):  # the group's cells, transposed
                            m = block_columns[group_start + k]
                            cell0 = np.uint64(read_cells[q] + (m - read_columns[q]) * width)
                            for a in range(live):
                                cells_t[a * group_count + k] = cells[cell0 + np.uint64(used[a])]
                        # 64 patches at a time, their sums patch-major in `block_sums`
                        # [64, group_count] (16 kB: in the core's first-level cache while
                        # every live row adds into it), then column-major in `group_sums`
                        # [group_count, chunk] for the conversion
                        for w in range(words):
                            for x in range(64 * group_count):
                                block_sums[x] = np.float32(0.0)
                            for a in range(live):
                                cells_row = cells_t[a * group_count : (a + 1) * group_count]
                                add_set_bits(
                                    bits[a * words + w :], 1, cells_row, group_count, block_sums
                                )
                            here = min(64, length - w * 64)
                            for k in range(group_count):
                                into = k * chunk + w * 64
                                for i in range(here):
                                    group_sums[into + i] = block_sums[i * group_count + k]
                    for e in range(group_start, group_end):
                        m = block_columns[e]
                        cell0 = np.uint64(read_cells[q] + (m - read_columns[q]) * width)
                        column = sums
                        if set_bits:
                            k = (e - group_start) * chunk
                            column = group_sums[k : k + length]
                        else:
                            for i in range(length):
                                sums[i] = np.float32(0.0)
                        for a in range(count):
                            weight = cells[cell0 + np.uint64(used[a])]
                            into = np.uint64(a * chunk)
                            for i in range(length):
                                sums[i] += weight * drive[into + np.uint64(i)]
                        if noisy and model == 2:
                            for i in range(length):
                                weighted[i] = 0.0
                            for a in range(count):
                                held = np.float64(magnitude[cell0 + np.uint64(used[a])])
                                into = np.uint64(a * chunk)
                                for i in range(length):
                                    value = np.float64(drive[into + np.uint64(i)])
                                    weighted[i] += held * (value * value)
                            for i in range(length):
                                sigma[i] = unit * np.sqrt(
                                    output_variance + coefficient * weighted[i]
                                )
                        step = factor[m] * significance * full_scale[m]
                        scale = np.float64(full_scale[m])
                        line = np.uint64(target[m]) * span + np.uint64(first)
                        if not convert:  # the sums only; reading one keeps them computed
                            last = column[length - 1]
                            dest[line] += np.int64(last != last)  # 0: a sum is never NaN
                            continue
                        offset = 0
                        if noisy:
                            position = (np.uint64(j) * total_columns + np.uint64(m)) * span
                            offset = normals(
                                key, position + np.uint64(first), length, z, wide, turn, exponents
                            )
                        at = (offset, length, top, low, scale, step)
                        convert_add(column, sigma, z, noisy, at, dest, line)
                index = end
