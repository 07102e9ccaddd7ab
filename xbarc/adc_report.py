"""What the ADC does to a read: per crossbar layer, its step against the spread of read sums.

A read sums, on each column, cell levels times DAC digits (the unit of every figure here:
one cell level driven by one DAC step). The ADC converts that sum to one of `levels`
codes over its full scale, one code per *step* = full scale / levels. With the default
`fixed` range the full scale is the largest sum a read can produce (every cell at its top
level, every input digit at its top), which trained weights and real inputs come nowhere
near: reads whose sums span a few steps keep a few bits, whatever the ADC's resolution.
The trained digits ResNet pruned to 90 %, compiled unsliced (`--cell-bits 8`), keeps
87.2 % of its 98.1 % accuracy under `quant`, and 98.3 % with a calibrated ADC range.

The figure reported is *bits used* = log2(spread / step) (plus one for the sign of a
`differential` ADC), the spread being a high percentile of |sum|: how many of the ADC's
bits the reads' sums reach. Where a layer's reads use fewer than half of the ADC's bits,
a warning names the layer, and one more line says what fixes it.

- `xbarc inspect` (`inspect_adc`): the ADC step of each layer's tallest read for the
  program's hardware (bits, range mode) against the largest sum that read can produce,
  and, where the program is calibrated, against the calibrated spread (the calibration's
  percentile of the read sums, `xbarc calibrate`).
- `xbarc run` / `eval` (`observe_reads`, `measured_adc`): the spread measured on the
  run's own reads under the run's settings (bits, range, placement, noise): the 99.99th
  percentile, the one `xbarc calibrate` keeps, of |sum| / step over the layer's reads,
  each read by its own step (`runtime/read_spread.py`). A calibrated range then uses all
  the ADC's bits, by construction; a fixed one shows what calibrating would win.

Not measured: `ideal` (no ADC) and `adc_bits = "exact"` (no step): nothing to warn about.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from xbarc.calibrate import DEFAULT_PERCENTILE
from xbarc.ir.cells import largest_read_sum
from xbarc.ir.tile import Program
from xbarc.runtime.noise import NoiseSettings
from xbarc.runtime.read_spread import LayerSpread, ReadSpread

if TYPE_CHECKING:
    from xbarc.session import InferenceSession

SUM_UNIT = "cell levels x DAC digits"


@dataclass(frozen=True, slots=True)
class LayerAdcUse:
    """One crossbar layer's read sums against its ADC step, in read-sum units. None: not
    known here (inspect has no sums without a calibration; a run, no largest sum)."""

    layer: str
    step: float | None  # the ADC step of the layer's tallest read (None: one per read)
    spread_steps: float | None  # the spread of |sum| in steps (0.0: all reads sum to zero)
    bits_used: float | None  # log2(spread / step), + 1 for a signed ADC
    largest_sum: int | None = None  # the largest sum the tallest read can produce
    full_scale: float | None = None  # the ADC's full scale for that read
    spread: float | None = None  # |sum| at the percentile, for that read
    sums: int | None = None  # read sums the run produced
    counted: int | None = None  # of them, counted (a sample, where reads span many patches)
    zero: float | None = None  # the fraction of them exactly zero
    clipped: float | None = None  # the fraction beyond the full scale (the ADC saturates)


@dataclass(frozen=True, slots=True)
class AdcUse:
    """What the ADC does to the reads of a program's crossbar layers."""

    bits: int
    levels: int  # codes a side over the full scale
    signed: bool  # a differential ADC: as many codes either side of zero
    range: str  # fixed | calibrated | dynamic
    percentile: float | None  # the spread is this percentile of |sum| (None: not known)
    source: str  # where the spread comes from
    layers: tuple[LayerAdcUse, ...]
    warnings: tuple[str, ...]  # one per layer whose reads use fewer than half the bits
    fix: str | None  # what gives them more, where there are warnings

    def to_json(self) -> dict:
        return asdict(self)


def bits_used(spread_steps: float | None, signed: bool) -> float | None:
    """log2(spread / step), counting the sign bit of a signed ADC; None when unknown or
    when every read sums to zero (nothing to lose)."""
    if spread_steps is None or spread_steps <= 0:
        return None
    return math.log2(spread_steps) + (1 if signed else 0)


# --- inspect: from the program ------------------------------------------------------------


def largest_read_sums(program: Program) -> dict[str, int]:
    """Per crossbar layer, the largest sum its tallest read can produce: every input digit
    at its top (2^slice_bits - 1), every cell of the slice at its top level, over the
    block's rows (`largest_read_sum`, the executor's fixed ADC full scale). The reads of
    a basis (BasisN) belong to the layers combined from it."""
    top_digit = 2**program.hardware.dac.slice_bits - 1
    arrays = {array.name: array for array in program.arrays}
    readers: dict[str, list[str]] = {}  # array -> the layers whose runs read it
    for layer, read_arrays in program.arrays_read_by().items():
        for name in read_arrays:
            readers.setdefault(name, []).append(layer)
    largest: dict[str, int] = {}
    for block in program.blocks:
        array = arrays[block.array]
        read = largest_read_sum(top_digit, array.slices[block.slice], len(block.rows))
        for layer in readers.get(array.name, ()):
            largest[layer] = max(largest.get(layer, 0), read)
    return largest


def inspect_adc(program: Program, program_path: str | os.PathLike = "PROGRAM.xbar") -> AdcUse:
    """The ADC of the program's hardware against each layer's largest and, where the
    program is calibrated, calibrated read sums."""
    adc = program.hardware.adc
    levels = 2**adc.bits - 1
    calibration = program.calibration
    largest = largest_read_sums(program)
    layers = []
    for layer in program.layers():
        top = largest.get(layer.name)
        calibrated = None if calibration is None else calibration.of(layer.name)
        if top is None:  # no blocks read
            layers.append(LayerAdcUse(layer.name, None, None, None))
            continue
        full_scale: float | None = None
        if adc.range == "fixed":
            full_scale = top
        elif adc.range == "calibrated" and calibrated is not None:
            full_scale = max(1, math.ceil(calibrated.adc_range * top))  # as the executor
        step = None if full_scale is None else full_scale / levels
        spread = None if calibrated is None else calibrated.adc_range * top
        spread_steps = None if spread is None or step is None else spread / step
        layers.append(
            LayerAdcUse(
                layer.name,
                step,
                spread_steps,
                bits_used(spread_steps, signed=False),
                largest_sum=top,
                full_scale=full_scale,
                spread=spread,
            )
        )
    if calibration is None:
        percentile, source = None, "no calibration"
    else:
        percentile = calibration.percentile
        source = f"calibration on {calibration.samples} samples"
    use = AdcUse(adc.bits, levels, False, adc.range, percentile, source, tuple(layers), (), None)
    return with_warnings(use, program, program_path)


# --- run and eval: measured on the reads ------------------------------------------------------


def observe_reads(
    session: InferenceSession, percentile: float = DEFAULT_PERCENTILE
) -> ReadSpread | None:
    """A `ReadSpread` watching `session`'s reads, or None
    where reads have no ADC step to measure against: `ideal` (no ADC) and
    `adc_bits = "exact"` (lossless)."""
    levels = session.adc_levels
    if levels == 0:
        return None
    spread = ReadSpread(levels, percentile)
    session.observe_reads(spread)
    return spread


def measured_adc(
    spread: ReadSpread,
    settings: NoiseSettings,
    program: Program,
    samples: int,
    program_path: str | os.PathLike = "PROGRAM.xbar",
    instances: int = 1,
) -> AdcUse:
    """The ADC use a run measured on `samples` samples (on each of `instances` chip
    instances), in the program's layer order."""
    signed = settings.adc_placement == "differential"
    assert isinstance(settings.adc_bits, int) and settings.adc_range is not None  # resolved
    observed = {row.layer: row for row in spread.layers()}
    layers = tuple(
        measured_layer(observed[layer.name], signed)
        for layer in program.layers()
        if layer.name in observed
    )
    use = AdcUse(
        settings.adc_bits,
        spread.levels,
        signed,
        settings.adc_range,
        spread.percentile,
        f"measured on {samples} samples" + (f" x {instances} chips" if instances > 1 else ""),
        layers,
        (),
        None,
    )
    return with_warnings(use, program, program_path)


def measured_layer(row: LayerSpread, signed: bool) -> LayerAdcUse:
    return LayerAdcUse(
        row.layer,
        row.step,
        row.spread_steps,
        bits_used(row.spread_steps, signed),
        sums=row.sums,
        counted=row.counted,
        zero=row.zero,
        clipped=row.clipped,
    )


# --- warnings -----------------------------------------------------------------------------


def with_warnings(use: AdcUse, program: Program, program_path: str | os.PathLike) -> AdcUse:
    """`use` with a warning per layer whose reads use fewer than half the ADC's bits and,
    if there is one, the fix."""
    lines = tuple(
        f"layer @{layer.layer}: reads use {layer.bits_used:.1f} of the ADC's {use.bits} bits "
        f"({use.percentile:g} % of their sums stay below {layer.spread_steps:.3g} of its "
        f"{use.levels} steps)"
        for layer in use.layers
        if layer.bits_used is not None and layer.bits_used < use.bits / 2
    )
    fix = fix_line(use, program, program_path) if lines else None
    return replace(use, warnings=lines, fix=fix)


def fix_line(use: AdcUse, program: Program, program_path: str | os.PathLike) -> str:
    """What gives the reads more of the ADC's codes, for this program and range."""
    fixes = []
    if use.range != "calibrated":
        if program.calibration is None:
            fixes.append(
                f"calibrate the ADC range (xbarc calibrate {os.fspath(program_path)} --data "
                "SAMPLES.npz, then --set adc_range=calibrated)"
            )
        else:
            fixes.append("use the program's calibrated ADC range (--set adc_range=calibrated)")
    fewest = min(layer.bits_used for layer in use.layers if layer.bits_used is not None)
    wider = use.bits + math.ceil(use.bits - fewest)
    fixes.append(
        f"give the ADC {wider} bits (--set adc_bits={wider}: every layer's reads then reach "
        f"{use.bits} bits)"
    )
    cell_bits = program.hardware.cell.bits
    if cell_bits > 1:
        narrower = 2 if cell_bits > 2 else 1
        fixes.append(f"cut the weights into narrower slices (compile with --cell-bits {narrower})")
    return ", or ".join(fixes)


# --- text ---------------------------------------------------------------------------------


def format_adc(use: AdcUse) -> str:
    """The ADC section of a report: a header, one line per layer (inspect: largest sum,
    full scale, step, spread, spread in steps, bits used; run: step, spread in steps, bits
    used, zero and clipped sums)."""
    sign = ", signed" if use.signed else ""
    if use.percentile is None:
        spread = "spread of the read sums: not known without a calibration"
    else:
        spread = f"spread: the {use.percentile:g}th percentile of |sum| ({use.source})"
    lines = [
        f"ADC: {use.bits} bits ({use.levels} levels{sign}), range {use.range}; per layer, "
        f"its tallest read: step = full scale / {use.levels} (read sums in {SUM_UNIT})",
        f"{spread}; bits used = log2(spread / step)",
    ]
    measured = any(layer.sums is not None for layer in use.layers)
    if measured:
        header = (
            f"  {'layer':<28} {'step':>10} {'spread/step':>12} {'bits used':>11} "
            f"{'zero':>7} {'clipped':>8}"
        )
    else:
        header = (
            f"  {'layer':<28} {'largest sum':>12} {'full scale':>11} {'step':>10} "
            f"{'spread':>10} {'spread/step':>12} {'bits used':>11}"
        )
    lines.append(header)
    for layer in use.layers:
        used = "-" if layer.bits_used is None else f"{layer.bits_used:.1f} of {use.bits}"
        name = layer.layer if len(layer.layer) <= 28 else layer.layer[:27] + "~"
        if measured:
            lines.append(
                f"  {name:<28} {number(layer.step):>10} {number(layer.spread_steps):>12} "
                f"{used:>11} {percent(layer.zero):>7} {percent(layer.clipped):>8}"
            )
        else:
            lines.append(
                f"  {name:<28} {number(layer.largest_sum):>12} {number(layer.full_scale):>11} "
                f"{number(layer.step):>10} {number(layer.spread):>10} "
                f"{number(layer.spread_steps):>12} {used:>11}"
            )
    if use.percentile is None:
        lines.append(
            "  xbarc calibrate measures the spread; run and eval with a quantized profile "
            "(--noise quant) report it"
        )
    return "\n".join(lines)


def warning_lines(use: AdcUse) -> list[str]:
    """The warnings and the fix, for stderr."""
    lines = [f"xbarc: warning: {line}" for line in use.warnings]
    if use.fix is not None:
        lines.append(f"xbarc: fix: {use.fix}")
    return lines


def number(value: float | None) -> str:
    """An integer as it is (a sum, a full scale), other numbers to 4 digits."""
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"
