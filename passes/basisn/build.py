"""What the basis pass emits (the contract of ir_spec/SPEC.md): one shared `basis` array
and a `BasisCombine` per combined layer, with their tensors.

    weights arrays of the combined layers  ->  Array(basis, L x K) + BasisCombine per layer
    tensors: basis.levels i[1, L, K], basis.values f32[1, L, K] (= levels x scale),
             basis.scale f32[1, K] (or scale 1.0 for the identity basis),
             <layer>.coef i8/i16[G, S, K, N], <layer>.coef_scale f32[G, N]

The combined layers' own levels and scales, and the calibration Gram matrices, leave the
program; kept layers keep their arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xbarc import progress
from xbarc.ir.cells import level_dtype, make_slices
from xbarc.ir.tile import Array, BasisCombine, Const, CrossbarLayer, Program
from xbarc.passes.basisn import fit as basis_fit

BASIS_NAME = "basis"


@dataclass(frozen=True, slots=True)
class FitSettings:
    """The pass' fit options: method, coefficient bits q, terms m (None: all K), objective
    (weights or outputs) and the k-means seed."""

    method: str
    coef_bits: int
    terms: int | None
    objective: str
    seed: int = 0


@dataclass(frozen=True)
class BasisResult:
    """The emitted pieces: the basis array (without its copies, set by the pass), the
    combines in graph order, the new tensors, and the tensors to drop."""

    array: Array
    combines: tuple[BasisCombine, ...]
    tensors: dict[str, np.ndarray]
    dropped: frozenset[str]


def free_name(program: Program, wanted: str = BASIS_NAME) -> str:
    """`wanted`, or `wanted_1`, `wanted_2`... if an array, layer or tensor prefix takes it."""
    taken = {array.name for array in program.arrays} | {layer.name for layer in program.layers()}
    tensors = {decl.name for decl in program.tensors}
    candidate, number = wanted, 0
    while candidate in taken or any(t.startswith(f"{candidate}.") for t in tensors):
        number += 1
        candidate = f"{wanted}_{number}"
    return candidate


def input_grams(program: Program, layers: Sequence[CrossbarLayer]) -> dict[str, np.ndarray]:
    """The calibration Gram matrices attached to the program, per layer that has one."""
    names = {decl.name for decl in program.tensors}
    return {
        layer.name: program.store[basis_fit.gram_tensor_name(layer.name)].astype(np.float64)
        for layer in layers
        if basis_fit.gram_tensor_name(layer.name) in names
    }


def build_basis(
    program: Program,
    combined: Sequence[CrossbarLayer],
    segment_rows: int,
    k: int,
    settings: FitSettings,
    grams: dict[str, np.ndarray],
) -> BasisResult:
    """Learn the basis from the combined layers' float weights, quantize it like the
    layers' arrays, and fit every layer's coefficients against it (progress: the
    learning, then each layer)."""
    weights = [np.asarray(program.store[layer.weight]) for layer in combined]
    with progress.task("basis", total=1 + len(combined), unit="step", estimate=False) as task:
        task.describe("learn")
        learnt = basis_fit.learn_basis(weights, segment_rows, k, settings.method, settings.seed)
        task.update()
        return fit_layers(
            program, combined, weights, learnt, segment_rows, k, settings, grams, task
        )


def fit_layers(
    program: Program,
    combined: Sequence[CrossbarLayer],
    weights: list[np.ndarray],
    learnt: np.ndarray,
    segment_rows: int,
    k: int,
    settings: FitSettings,
    grams: dict[str, np.ndarray],
    task: progress.AnyTask,
) -> BasisResult:
    """The basis array from the `learnt` basis (quantized like the layers' arrays) and
    every layer's coefficients against it, each layer counted in `task`."""
    arrays = {layer.name: program.weights_of(layer.name) for layer in combined}
    first = next(array for array in arrays.values() if array is not None)
    weight_bits = first.weight_bits
    hardware = program.hardware
    name = free_name(program)
    basis = basis_fit.quantize_basis(learnt, weight_bits, settings.method)
    values = basis.values
    tensors: dict[str, np.ndarray] = {
        f"{name}.levels": basis.levels[None],
        f"{name}.values": values[None].astype(np.float32),
    }
    scale: float | Const
    if isinstance(basis.scale, np.ndarray):
        tensors[f"{name}.scale"] = basis.scale[None].astype(np.float32)
        scale = Const(f"{name}.scale")
    else:
        scale = float(basis.scale)
    array = Array(
        name=name,
        kind="basis",
        groups=1,
        rows=segment_rows,
        cols=k,
        weight_bits=weight_bits,
        encoding=hardware.encoding,  # type: ignore[arg-type]
        scale=scale,
        values=f"{name}.values",
        levels=f"{name}.levels",
        slices=make_slices(weight_bits, hardware.cell.bits, hardware.encoding),
    )
    combines = []
    dropped: set[str] = set()
    for layer, weight in zip(combined, weights, strict=True):
        own = arrays[layer.name]
        assert own is not None
        gram = grams.get(layer.name) if settings.objective == "outputs" else None
        task.describe(layer.name)
        layer_fit = fit_one(program, layer, own, weight, values, settings, gram)
        task.update()
        tensors[f"{layer.name}.coef"] = layer_fit.levels
        tensors[f"{layer.name}.coef_scale"] = layer_fit.scale.astype(np.float32)
        combines.append(
            BasisCombine(
                layer=layer.name,
                basis=name,
                segment_rows=segment_rows,
                coefficients=f"{layer.name}.coef",
                coef_bits=settings.coef_bits,
                scale=Const(f"{layer.name}.coef_scale"),
            )
        )
        dropped.add(own.levels)
        if isinstance(own.scale, Const):
            dropped.add(own.scale.name)
    return BasisResult(array, tuple(combines), tensors, frozenset(dropped))


def fit_one(
    program: Program,
    layer: CrossbarLayer,
    own: Array,
    weight: np.ndarray,
    basis_values: np.ndarray,
    settings: FitSettings,
    gram: np.ndarray | None,
) -> basis_fit.LayerFit:
    """One layer's coefficients. The identity basis with q >= the layer's weight bits and
    every term allowed is the layer stored directly: its levels and scale, exactly."""
    segment_rows, k = basis_values.shape
    lossless = (
        settings.method == "identity"
        and settings.coef_bits >= own.weight_bits
        and (settings.terms is None or settings.terms >= k)
    )
    if lossless:
        return identity_fit(program, layer, own, segment_rows, settings.coef_bits)
    return basis_fit.fit_layer(weight, basis_values, settings.coef_bits, settings.terms, gram=gram)


def identity_fit(
    program: Program, layer: CrossbarLayer, own: Array, segment_rows: int, coef_bits: int
) -> basis_fit.LayerFit:
    """The layer's levels cut into segments as coefficients over the unit vectors, and its
    scale per column."""
    levels = np.asarray(program.store[own.levels])
    count = basis_fit.segment_count(layer.rows, segment_rows)
    coef = np.zeros((layer.groups, count * segment_rows, layer.cols), dtype=level_dtype(coef_bits))
    coef[:, : layer.rows] = levels
    coef = coef.reshape(layer.groups, count, segment_rows, layer.cols)
    if isinstance(own.scale, Const):
        scale = np.asarray(program.store[own.scale.name], dtype=np.float32)
    else:
        scale = np.full((layer.groups, layer.cols), own.scale, dtype=np.float32)
    return basis_fit.LayerFit(coef, scale)
