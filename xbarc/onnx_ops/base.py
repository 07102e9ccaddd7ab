"""What a semantics function sees, the registry of them, and the helpers they share.

A semantics function takes an `OpCall` (one ONNX op applied to concrete numpy arrays, with
typed access to its attributes) and returns one array per output slot of the op (None for
a slot it does not produce). It raises `Unsupported` for an attribute combination or type
it does not implement, so that its caller can fall back; `ValueError` or `IndexError` for
inputs that are invalid under the ONNX spec.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

Array = np.ndarray
Semantics = Callable[["OpCall"], list[Array | None]]

SEMANTICS: dict[str, Semantics] = {}

RegisteredSemantics = TypeVar("RegisteredSemantics", bound=Semantics)


class Unsupported(Exception):
    """These semantics do not cover the op's attributes or types: the caller falls back
    (onnxruntime when running, onnx's reference evaluator when folding)."""


def semantics(*op_types: str) -> Callable[[RegisteredSemantics], RegisteredSemantics]:
    """Register the decorated function as the semantics of default-domain ops `op_types`."""

    def register(function: RegisteredSemantics) -> RegisteredSemantics:
        for op_type in op_types:
            SEMANTICS[op_type] = function
        return function

    return register


class OpCall(ABC):
    """One op applied to concrete inputs (aligned with the op's inputs, None for omitted
    ones). The folder and the runtime each say how their nodes hold attributes; the typed
    accessors below are the same for both."""

    __slots__ = ()

    inputs: Sequence[Array | None]

    @property
    @abstractmethod
    def op_type(self) -> str: ...

    @property
    @abstractmethod
    def opset(self) -> int:
        """The version of the default-domain opset the op belongs to."""

    @property
    @abstractmethod
    def outputs(self) -> Sequence[str]:
        """The op's output names; "" is an unused slot."""

    @abstractmethod
    def attribute(self, name: str) -> Any:
        """The plain value of attribute `name` (int, float, str, or a sequence of them),
        or None when the op does not have it."""

    @abstractmethod
    def tensor_attr(self, name: str) -> Array | None:
        """The array of tensor attribute `name`, or None when the op does not have it."""

    def out(self, shape: tuple[int, ...], dtype: np.dtype, among: Sequence[int] = (0,)) -> Array:
        """Where to write an elementwise result: a new array, unless the caller can give
        one of the inputs `among` to be overwritten (the runtime's buffer donation)."""
        return np.empty(shape, dtype)

    def input(self, index: int) -> Array:
        value = self.optional(index)
        if value is None:
            raise Unsupported  # a required input is missing: let the fallback report it
        return value

    def optional(self, index: int) -> Array | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def wants(self, index: int) -> bool:
        """Whether output `index` is used."""
        outputs = self.outputs
        return index < len(outputs) and bool(outputs[index])

    def int_attr(self, name: str, default: int) -> int:
        value = self.attribute(name)
        return default if value is None else int(value)

    def float_attr(self, name: str, default: float) -> float:
        """A float attribute rounded to float32, as ONNX stores it."""
        value = self.attribute(name)
        return float(np.float32(default if value is None else value))

    def string_attr(self, name: str, default: str) -> str:
        value = self.attribute(name)
        return default if value is None else str(value)

    def ints_attr(self, name: str) -> list[int] | None:
        value = self.attribute(name)
        return None if value is None else [int(v) for v in value]

    def floats_attr(self, name: str) -> list[float] | None:
        value = self.attribute(name)
        return None if value is None else [float(np.float32(v)) for v in value]


def int_list(values: Array) -> list[int]:
    return [int(v) for v in values.reshape(-1)]


def normalize_axis(axis: int, rank: int) -> int:
    """`axis` in [0, rank): negative axes count from the end."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis
