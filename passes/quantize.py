"""quantize: float weight matrices -> integer levels cut into cell-width slices.

    CrossbarLayer(weight=W)  ->  CrossbarLayer + Array(levels=round(W/scale), slices)

Symmetric linear quantization to `weight-bits` bits: levels in +-(2^(B-1)-1), scale per
output column (default: real chips apply a digital scale to each column after the ADC, so
a column of small weights keeps its levels however large its neighbours are, as after
BatchNorm folding) or per tensor. The scale maps a clip range to the largest level:
- clip=max: the largest |w| (exact for outliers; nothing clips);
- clip=percentile: the `clip-percentile` percentile of |w| (default 99.99);
- clip=mse: the range (a ratio of the largest |w|, MSE_RATIOS) whose quantized weights
  have the least squared error;
per column, or over the tensor with scale=tensor. `clip-layers=NAME=MODE;NAME=MODE`
gives layers their own mode. Signed encoding:
- differential: G+ holds max(level, 0), G- holds max(-level, 0); each polarity's B-1
  magnitude bits are cut into slices of `cell-bits` bits (least significant first);
- offset: cells hold level + 2^(B-1) (B unsigned bits), cut the same way; the periphery
  subtracts 2^(B-1) * sum(inputs).

`max-ones=m` (SME's bit-sparse quantization, seed 003): each level's magnitude becomes the
nearest number with at most m one bits (the smaller one on a tie), so the bit planes hold
fewer ones and squeeze-out saves more crossbars; `weight_error` measures what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.hardware import SIGNED_ENCODINGS, Hardware
from xbarc.ir.cells import make_slices
from xbarc.ir.levels import CLIP_MODES, DEFAULT_CLIP_PERCENTILE, quantize_levels
from xbarc.ir.tile import Array, Const, Program, with_tensors

MAX_WEIGHT_BITS = 16
SCALE_MODES = ("column", "tensor")


@dataclass(frozen=True, slots=True)
class Quantize:
    """Quantize every crossbar layer's weights and slice them into cells."""

    name: ClassVar[str] = "quantize"
    weight_bits: int = 8
    cell_bits: int | None = None  # chip option: bits per cell (default: the chip's)
    scale: str = "column"  # column | tensor
    encoding: str | None = None  # chip option: signed encoding (default: the chip's)
    max_ones: int | None = None  # at most this many one bits per level's magnitude
    clip: str = "max"  # max | percentile | mse: how each scale's range is chosen
    clip_percentile: float = DEFAULT_CLIP_PERCENTILE  # clip=percentile: of |w|
    clip_layers: str = ""  # per-layer clip modes, NAME=MODE;NAME=MODE

    def target(self, hardware: Hardware) -> Hardware:
        """The chip with the cell width and signed encoding this pass names."""
        cell_bits = self.cell_bits if self.cell_bits is not None else hardware.cell.bits
        encoding = self.encoding if self.encoding is not None else hardware.encoding
        check_options(self.weight_bits, cell_bits, self.scale, encoding)
        cell = replace(hardware.cell, bits=cell_bits)
        return replace(hardware, cell=cell, encoding=encoding)  # type: ignore[arg-type]

    def apply(self, program: Program) -> Program:
        hardware = program.hardware
        cell_bits, encoding = hardware.cell.bits, hardware.encoding
        check_options(self.weight_bits, cell_bits, self.scale, encoding)
        check_max_ones(self.max_ones, self.weight_bits, encoding)
        clips = layer_clips(self.clip, self.clip_layers, self.clip_percentile, program)
        arrays: list[Array] = []
        tensors: dict[str, np.ndarray] = {}
        for layer in program.layers():
            weight = program.store[layer.weight]
            levels, scale = quantize_levels(
                weight,
                self.weight_bits,
                per_column=self.scale == "column",
                clip=clips[layer.name],
                percentile=self.clip_percentile,
            )
            if self.max_ones is not None:
                levels = with_few_ones(levels, self.max_ones, self.weight_bits)
            levels_name = f"{layer.name}.levels"
            tensors[levels_name] = levels
            if isinstance(scale, np.ndarray):
                scale_name = f"{layer.name}.scale"
                tensors[scale_name] = scale
                scale_ref: float | Const = Const(scale_name)
            else:
                scale_ref = scale
            arrays.append(
                Array(
                    name=layer.name,
                    kind="weights",
                    layer=layer.name,
                    groups=layer.groups,
                    rows=layer.rows,
                    cols=layer.cols,
                    weight_bits=self.weight_bits,
                    encoding=encoding,  # type: ignore[arg-type]
                    scale=scale_ref,
                    values=layer.weight,
                    levels=levels_name,
                    slices=make_slices(self.weight_bits, cell_bits, encoding),
                )
            )
        program = with_tensors(program, tensors)
        return replace(program, arrays=tuple(arrays), blocks=(), phases=())


def check_options(weight_bits: int, cell_bits: int, scale: str, encoding: str) -> None:
    if not 2 <= weight_bits <= MAX_WEIGHT_BITS:
        raise XbarcError(f"weight bits must be between 2 and {MAX_WEIGHT_BITS}, got {weight_bits}")
    if cell_bits < 1:
        raise XbarcError(f"cell bits must be at least 1, got {cell_bits}")
    if cell_bits > weight_bits:
        raise XbarcError(
            f"cell bits ({cell_bits}) exceed weight bits ({weight_bits})",
            hint="a cell cannot hold more bits than a weight has: lower quantize{cell-bits=N} "
            "or compile --cell-bits N",
        )
    if scale not in SCALE_MODES:
        raise XbarcError(f"unknown scale mode {scale!r}", hint="use column or tensor")
    if encoding not in SIGNED_ENCODINGS:
        raise XbarcError(f"unknown signed encoding {encoding!r}", hint="use differential or offset")


def layer_clips(clip: str, clip_layers: str, percentile: float, program: Program) -> dict[str, str]:
    """The clip mode of every crossbar layer: `clip`, or the mode `clip_layers` gives it
    (`NAME=MODE;NAME=MODE`, names as `xbarc inspect` shows them)."""
    check_clip(clip)
    if not 0 < percentile <= 100:
        raise XbarcError(f"clip-percentile must be in (0, 100], got {percentile}")
    names = [layer.name for layer in program.layers()]
    clips = dict.fromkeys(names, clip)
    for item in filter(None, (part.strip() for part in clip_layers.split(";"))):
        name, equals, mode = item.rpartition("=")
        if not equals or not name:
            raise XbarcError(
                f"clip-layers item {item!r} is not NAME=MODE",
                hint="e.g. clip-layers=conv1=max;fc=mse (compile: --clip conv1=max)",
            )
        if name not in clips:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise XbarcError(
                f"clip-layers names {name!r}, which is no crossbar layer of the program",
                hint=f"its layers are {shown or '(none)'}",
            )
        check_clip(mode)
        clips[name] = mode
    return clips


def check_clip(mode: str) -> None:
    if mode not in CLIP_MODES:
        raise XbarcError(f"unknown clip mode {mode!r}", hint=f"use {', '.join(CLIP_MODES)}")


def check_max_ones(max_ones: int | None, weight_bits: int, encoding: str) -> None:
    if max_ones is None:
        return
    if not 1 <= max_ones <= weight_bits - 1:
        raise XbarcError(
            f"max-ones must be between 1 and {weight_bits - 1} (the magnitude bits of "
            f"{weight_bits}-bit weights), got {max_ones}"
        )
    if encoding != "differential":
        raise XbarcError(
            "max-ones keeps few one bits per sign-magnitude weight, which needs "
            "differential encoding",
            hint="use quantize{encoding=differential} or compile --encoding differential",
        )


def with_few_ones(levels: np.ndarray, max_ones: int, weight_bits: int) -> np.ndarray:
    """`levels` with each magnitude replaced by the nearest number of at most `max_ones`
    one bits (the smaller on a tie), signs kept."""
    top = 2 ** (weight_bits - 1) - 1
    allowed = np.array([v for v in range(top + 1) if bin(v).count("1") <= max_ones])
    magnitudes = np.arange(top + 1)
    # nearest allowed value per magnitude: the first allowed value above, or the one below
    above = allowed[np.minimum(np.searchsorted(allowed, magnitudes), len(allowed) - 1)]
    below = allowed[np.maximum(np.searchsorted(allowed, magnitudes, side="right") - 1, 0)]
    nearest = np.where(above - magnitudes < magnitudes - below, above, below)
    magnitude = nearest[np.abs(levels.astype(np.int64))]
    return (np.sign(levels) * magnitude).astype(levels.dtype)


def weight_error(program: Program) -> float:
    """The quantized weights' RMS error relative to the float weights' RMS, over every
    array of the program."""
    error = total = 0.0
    for array in program.arrays:
        values = program.store[array.values].astype(np.float64)
        scale: float | np.ndarray = (
            program.store[array.scale.name][:, None, :].astype(np.float64)
            if isinstance(array.scale, Const)
            else array.scale
        )
        quantized = program.store[array.levels].astype(np.float64) * scale
        error += float(np.square(quantized - values).sum())
        total += float(np.square(values).sum())
    return float(np.sqrt(error / total)) if total else 0.0
