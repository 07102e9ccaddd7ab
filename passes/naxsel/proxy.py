"""The analytic error proxy: how much noise a layer's output gets on one tile type.

    ErrorShape (array shape, slices, sum of squared levels)  x  TileType  ->  NSR terms

A column's output is the sum, over its row blocks, cell slices and input slices, of one
read each; every read adds its own errors before the digital shift-and-add. In read
units (cell levels x DAC digits), a read of a block of r_b rows of a slice of c bits:

- ADC (fixed range): the full scale is the largest sum the read can produce,
  digit_max x (2^c - 1) x r_b, cut into 2^B - 1 steps; rounding adds step^2 / 12 to a
  read whose sum is not zero (zero sits on a code), which is 1 - (1 - d z)^r_b of them
  for input bits one at density d and a share z of the slice's cells non-zero. It grows
  with the rows a read drives: the term that makes large tiles less accurate;
- output noise: sigma_o = output_noise x (2^c - 1) x digit_max per read, the same on any
  tile, so it accumulates over the row blocks: the term that makes small tiles less
  accurate; read noise (additive, sigma |x|_2): (read_sigma x (2^c - 1))^2 times the
  driven digits' squares (input_rms per row). A read's noise costs sigma^2 where its sum
  is not zero; a zero sum sits on an ADC code and keeps only the noise that reaches half
  a step (`on_code`), so coarse steps (large tiles) hide the noise of idle reads;
- IR drop (first order, wire resistance per segment): a cell's current falls by about
  r_wire x g x (rows^2 + cols^2) / 3 (the currents of the wire segments between it and
  the driver and the sense amplifier), a relative error of the block's partial sum.

Each read's noise is weighted by its significance (2^shift of the slice, 2^(j x
slice_bits) of input slice j), and the sum is divided by the signal power of a column,
(input_rms x (2^D - 1))^2 x (the mean over columns of sum_i level_i^2): the layer's
noise-to-signal ratio (NSR). Gains (`adc_gain`, `noise_gain`) scale the terms as fitted
against the runtime's simulation (benchmarks/nax.py --calibrate). The program's proxy
is the sum of its layers' NSRs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xbarc.hardware import Hardware, TileType
from xbarc.ir.cells import slice_cells
from xbarc.ir.tile import Array, Program
from xbarc.passes.naxsel.tables import diagonal_per_tile, row_blocks


@dataclass(frozen=True, slots=True)
class NoiseNumbers:
    """The noise a chip's reads get (from a noise profile: the compiler reads them) and
    the proxy's calibrated gains."""

    read_sigma: float = 0.01  # additive read noise, sigma |x|_2 (rram profile)
    output_noise: float = 0.04  # per read, relative to one cell at g_max at full drive
    wire_resistance: float = 0.0  # ohms per wire segment (IR drop)
    input_rms: float = 0.25  # rms of a layer's input relative to the DAC's full scale
    input_density: float = 0.2  # the share of the DAC's input bits that are one
    adc_gain: float = 1.0  # calibration: scales the ADC term
    noise_gain: float = 1.0  # calibration: scales the read and output noise terms


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """What the proxy needs of one weights array."""

    name: str
    groups: int
    rows: int
    cols: int
    slices: tuple[tuple[int, int, float], ...]  # (shift, bits, share of non-zero cells)
    level_power: float  # mean over columns of sum_i level_i^2


@dataclass(frozen=True, slots=True)
class ErrorTerms:
    """A layer's noise-to-signal ratio on one tile type, term by term (gains not applied)."""

    adc: float
    noise: float  # read and output noise
    ir_drop: float

    def total(self, numbers: NoiseNumbers) -> float:
        return numbers.adc_gain * self.adc + numbers.noise_gain * self.noise + self.ir_drop


def on_code(sigma: float, step: float) -> float:
    """The error variance noise of `sigma` leaves on a sum that sits on an ADC code (a
    zero sum): none unless the noise reaches half a step, a whole step when it does."""
    if sigma == 0:
        return 0.0
    if step <= 2 * sigma:
        return sigma**2
    return step**2 * math.erfc(step / (2 * sigma * math.sqrt(2)))


def error_shape(program: Program, array: Array) -> ErrorShape:
    levels = np.asarray(program.store[array.levels])
    power = float(np.square(levels, dtype=np.float64).sum(axis=1).mean()) if levels.size else 0.0
    slices = tuple(
        (piece.shift, piece.bits, nonzero_share(levels, piece, array)) for piece in array.slices
    )
    return ErrorShape(array.name, array.groups, array.rows, array.cols, slices, power)


def error_terms(
    shape: ErrorShape, hardware: Hardware, tile_type: TileType, numbers: NoiseNumbers
) -> ErrorTerms:
    """The layer's NSR terms on tiles of `tile_type` (see the module docstring)."""
    digit_max = 2**hardware.dac.slice_bits - 1
    adc_levels = 2**hardware.adc.bits - 1
    input_weight = sum(
        4.0 ** (j * hardware.dac.slice_bits) for j in range(hardware.dac.input_slices)
    )
    if diagonal_per_tile(shape.groups, shape.rows, shape.cols, tile_type):
        blocks = [shape.rows]
    else:
        blocks = row_blocks(shape.rows, tile_type.rows)
    activity = numbers.input_rms
    adc = noise = 0.0
    for shift, bits, nonzero in shape.slices:
        cell_max = 2**bits - 1
        significance = 4.0**shift
        hit = numbers.input_density * nonzero  # a row adds to a read's sum this often
        for rows in blocks:
            step = digit_max * cell_max * rows / adc_levels
            sigma = math.sqrt(
                (numbers.output_noise * cell_max * digit_max) ** 2
                + (numbers.read_sigma * cell_max) ** 2 * activity * rows
            )
            busy = 1.0 - (1.0 - hit) ** rows  # the share of reads whose sum is not zero
            adc += significance * busy * step**2 / 12
            noise += significance * (busy * sigma**2 + (1 - busy) * on_code(sigma, step))
    signal = (activity * (2**hardware.dac.bits - 1)) ** 2 * max(shape.level_power, 1e-12)
    scale = input_weight / signal
    ir_drop = 0.0
    if numbers.wire_resistance > 0:
        g_mean = (hardware.cell.g_min_us + hardware.cell.g_max_us) / 2 * 1e-6  # siemens
        cols = min(shape.cols, tile_type.cols)
        drops = [numbers.wire_resistance * g_mean * (rows**2 + cols**2) / 3 for rows in blocks]
        ir_drop = float(np.mean(np.square(drops)))
    return ErrorTerms(adc * scale, noise * scale, ir_drop)


def nonzero_share(levels: np.ndarray, piece, array: Array) -> float:
    """The share of a slice's cells that hold a non-zero value."""
    if not levels.size:
        return 0.0
    cells = slice_cells(levels, piece, array.weight_bits, array.encoding)
    return float(np.count_nonzero(cells)) / cells.size
