"""Element types and tensor types shared by the graph IR and the tile IR.

Element types use short names (`f32`, `i64`, ...) in text; each maps to an ONNX
`TensorProto` data type and, where numpy has one, a numpy dtype.

The ONNX codes are fixed numbers of onnx.proto (`TensorProto.DataType`), written here
rather than read from `onnx`, whose import (ml_dtypes) costs half a second that loading
and inspecting a program does not need; a test checks them against onnx.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# short name -> ONNX data type (TensorProto.FLOAT, FLOAT16, ...)
ONNX_DTYPES: dict[str, int] = {
    "f32": 1,  # FLOAT
    "f16": 10,  # FLOAT16
    "f64": 11,  # DOUBLE
    "bf16": 16,  # BFLOAT16
    "i8": 3,  # INT8
    "i16": 5,  # INT16
    "i32": 6,  # INT32
    "i64": 7,  # INT64
    "u8": 2,  # UINT8
    "u16": 4,  # UINT16
    "u32": 12,  # UINT32
    "u64": 13,  # UINT64
    "bool": 9,  # BOOL
    "str": 8,  # STRING
    "c64": 14,  # COMPLEX64
    "c128": 15,  # COMPLEX128
}
DTYPE_OF_ONNX: dict[int, str] = {code: name for name, code in ONNX_DTYPES.items()}

# short name -> numpy dtype, for the types a `.npz` sidecar can hold without pickling
NUMPY_DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "f64": np.dtype(np.float64),
    "i8": np.dtype(np.int8),
    "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "u8": np.dtype(np.uint8),
    "u16": np.dtype(np.uint16),
    "u32": np.dtype(np.uint32),
    "u64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "c64": np.dtype(np.complex64),
    "c128": np.dtype(np.complex128),
}


def dtype_name(dtype: np.dtype) -> str:
    """The short name of a numpy dtype; strings of any width are `str`."""
    if dtype.kind == "U":
        return "str"
    for name, candidate in NUMPY_DTYPES.items():
        if candidate == dtype:
            return name
    raise ValueError(f"no xbarc element type for numpy dtype {dtype}")


def onnx_dtype_name(code: int) -> str:
    """The short name of an ONNX data type, or `onnx<code>` for exotic ones (float8, int4...)."""
    return DTYPE_OF_ONNX.get(code, f"onnx{code}")


@dataclass(frozen=True, slots=True)
class TensorType:
    """Element type and shape. A dim of None is unknown; a shape of None is unknown rank."""

    dtype: str
    shape: tuple[int | None, ...] | None

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)

    def static_shape(self) -> tuple[int, ...]:
        assert self.shape is not None and all(d is not None for d in self.shape)
        return tuple(int(d) for d in self.shape)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype}[*]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"
