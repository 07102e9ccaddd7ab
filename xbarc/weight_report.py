"""How far each crossbar layer's quantized weights are from its float weights.

    levels x scale  against  the float weights (after BatchNorm folding)

Per layer, from the program's arrays alone (for a layer combined from a basis, BasisN:
the weights its q-bit coefficients rebuild from the quantized basis, `weight_bits` then
being the coefficient bits and the scale `basis`): the relative RMS error (RMS of the error over
the RMS of the weights), the SQNR in dB (10 log10 of signal over error energy), the
lowest SQNR of any of its output columns (where one scale per tensor leaves a column of
small weights a handful of levels, this is what shows it) and the share of weights the
clip range cut. `xbarc compile` prints the worst layers; `xbarc inspect` every layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from xbarc.ir.basis import program_combined_weight
from xbarc.ir.tile import Const, Program


@dataclass(frozen=True, slots=True)
class LayerWeightError:
    layer: str
    weight_bits: int
    scale: str  # column | tensor | basis (combined from a basis: BasisN)
    relative_rms: float
    sqnr_db: float  # inf when the quantized weights are exact
    worst_column_sqnr_db: float  # the lowest over the non-zero output columns
    clipped: float  # share of the weights beyond the clip range (their level saturates)

    def to_json(self) -> dict:
        return {key: finite(value) for key, value in asdict(self).items()}


def weight_errors(program: Program) -> list[LayerWeightError]:
    """The weight error of every quantized crossbar layer, in program order."""
    store = program.store
    result = []
    for array in program.arrays:
        if array.kind != "weights" or array.layer is None:
            continue
        values = store[array.values].astype(np.float64)  # [groups, rows, cols]
        per_column = isinstance(array.scale, Const)
        scale = (
            store[array.scale.name].astype(np.float64)[:, None, :]
            if isinstance(array.scale, Const)
            else np.float64(array.scale)
        )
        levels = store[array.levels].astype(np.float64)
        difference = levels * scale - values
        signal = np.square(values).sum(axis=1)  # [groups, cols]
        noise = np.square(difference).sum(axis=1)
        top = 2 ** (array.weight_bits - 1) - 1
        beyond = np.abs(values) > (top + 0.5) * scale  # rounds past the largest level
        result.append(
            layer_error(
                array.layer,
                array.weight_bits,
                "column" if per_column else "tensor",
                signal,
                noise,
                float(beyond.mean()) if beyond.size else 0.0,
            )
        )
    for combine in program.combines:  # BasisN: the weights the coefficients rebuild
        values = store[program.layer(combine.layer).weight].astype(np.float64)
        difference = program_combined_weight(program, combine) - values
        signal = np.square(values).sum(axis=1)
        noise = np.square(difference).sum(axis=1)
        result.append(layer_error(combine.layer, combine.coef_bits, "basis", signal, noise, 0.0))
    order = {layer.name: position for position, layer in enumerate(program.layers())}
    return sorted(result, key=lambda error: order.get(error.layer, len(order)))


def layer_error(
    layer: str, bits: int, scale: str, signal: np.ndarray, noise: np.ndarray, clipped: float
) -> LayerWeightError:
    """A layer's error from its columns' signal and error energies ([groups, cols])."""
    return LayerWeightError(
        layer=layer,
        weight_bits=bits,
        scale=scale,
        relative_rms=math.sqrt(noise.sum() / signal.sum()) if signal.sum() else 0.0,
        sqnr_db=sqnr_db(float(signal.sum()), float(noise.sum())),
        worst_column_sqnr_db=worst_column_sqnr_db(signal, noise),
        clipped=clipped,
    )


def worst_column_sqnr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """The lowest SQNR over the columns with a non-zero weight (inf if none has noise)."""
    present = signal > 0
    if not present.any():
        return math.inf
    ratio = (noise[present] / signal[present]).max()
    return sqnr_db(1.0, float(ratio))


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise): inf for no noise, -inf for no signal."""
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def finite(value):
    """JSON has no infinity: "inf" and "-inf" stand for it."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def worst(errors: list[LayerWeightError], count: int = 3) -> list[LayerWeightError]:
    """The `count` layers of the lowest SQNR, worst first."""
    return sorted(errors, key=lambda error: error.sqnr_db)[:count]


def summary_line(errors: list[LayerWeightError], count: int = 3) -> str:
    """One line for `xbarc compile`: the weights' overall spread of SQNR and the worst
    layers, each with its worst column."""
    if not errors:
        return "weight error: no quantized crossbar layers"
    scales = sorted({error.scale for error in errors})
    bits = sorted({error.weight_bits for error in errors})
    median = float(np.median([error.sqnr_db for error in errors]))
    parts = [
        f"{error.layer} {error.sqnr_db:.1f} dB ({error.relative_rms:.2%} RMS, worst column "
        f"{error.worst_column_sqnr_db:.1f} dB)"
        for error in worst(errors, count)
    ]
    return (
        f"weight error ({'/'.join(map(str, bits))}-bit, scale per {'/'.join(scales)}): "
        f"SQNR median {median:.1f} dB over {len(errors)} layers; worst: {'; '.join(parts)}"
        " (xbarc inspect shows every layer)"
    )


def format_weight_errors(errors: list[LayerWeightError]) -> str:
    """A table for `xbarc inspect`: one line per layer."""
    header = (
        f"{'layer':<32} {'bits':>4} {'scale':>6} {'rel RMS':>8} {'SQNR dB':>8} "
        f"{'worst col dB':>12} {'clipped':>8}"
    )
    lines = ["weight error (levels x scale against the float weights):", header]
    for error in errors:
        name = error.layer if len(error.layer) <= 32 else error.layer[:31] + "~"
        lines.append(
            f"{name:<32} {error.weight_bits:>4} {error.scale:>6} {error.relative_rms:>8.2%} "
            f"{error.sqnr_db:>8.1f} {error.worst_column_sqnr_db:>12.1f} {error.clipped:>8.3%}"
        )
    return "\n".join(lines)
