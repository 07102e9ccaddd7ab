"""The tensor sidecar: constants of a program, saved as `.npz` and never pickled.

Each tensor is declared in the program text with its element type, shape and the sha256
digest of its bytes; loading checks all three. Element types numpy cannot store natively
(bfloat16, float8, ...) are kept as their raw bytes (u8) and reinterpreted on load.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.files import write_file_atomically
from xbarc.ir.types import NUMPY_DTYPES, dtype_name, onnx_dtype_name


def digest(array: np.ndarray) -> str:
    """sha256 of the C-order bytes of `array`."""
    data = np.asarray(array, order="C")
    if data.dtype.kind == "U":
        return hashlib.sha256(data.tobytes()).hexdigest()
    # bytes through a flat u8 view: memoryview casts fail on empty shapes and on dtypes
    # without a buffer format (bfloat16, float8)
    return hashlib.sha256(data.reshape(-1).view(np.uint8).data).hexdigest()


class TensorStore(Mapping[str, np.ndarray]):
    """An immutable name -> array mapping; `with_tensors` returns a new store."""

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, np.ndarray] | None = None):
        self._arrays: dict[str, np.ndarray] = dict(arrays or {})

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def with_tensors(self, arrays: Mapping[str, np.ndarray]) -> TensorStore:
        merged = dict(self._arrays)
        merged.update(arrays)
        return TensorStore(merged)

    def only(self, names: set[str]) -> TensorStore:
        return TensorStore({k: v for k, v in self._arrays.items() if k in names})


def element_type(array: np.ndarray) -> str:
    """The short element type name of an array (see xbarc.ir.types)."""
    try:
        return dtype_name(array.dtype)
    except ValueError:
        from onnx import helper  # exotic types (bfloat16, float8, ...) via ml_dtypes

        return onnx_dtype_name(helper.np_dtype_to_tensor_dtype(array.dtype))


def _storable(array: np.ndarray) -> np.ndarray:
    data = np.asarray(array, order="C")  # not ascontiguousarray: it turns scalars into [1]
    if data.dtype in NUMPY_DTYPES.values() or data.dtype.kind == "U":
        return data
    return data.reshape(-1).view(np.uint8)  # exotic: raw bytes


def save_npz(path: Path, store: Mapping[str, np.ndarray]) -> None:
    """Write all tensors of `store` to `path` atomically: the old file stays until the new
    one is complete on disk (check the path first with xbarc.files.check_outputs)."""
    try:
        write_file_atomically(path, lambda handle: write_npz(handle, store))
    except OSError as error:
        raise XbarcError(f"cannot write {path}: {error.strerror or error}") from None


def write_npz(handle: BinaryIO, store: Mapping[str, np.ndarray]) -> None:
    """What np.savez writes, for any tensor names: np.savez takes the names `file` and
    `allow_pickle` as its own arguments (and silently drops a tensor named allow_pickle)."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in store.items():
            array = _storable(array)
            if array.nbytes < SMALL_TENSOR_BYTES:  # one write, no seeking back
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                archive.writestr(_member_info(name + ".npy"), buffer.getvalue())
                continue
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


SMALL_TENSOR_BYTES = 1 << 20


def _member_info(name: str) -> zipfile.ZipInfo:
    """A stored (uncompressed) member with a fixed date, as `archive.open` writes it."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def load_npz(path: Path, expected: Mapping[str, tuple[str, tuple[int, ...], str]]) -> TensorStore:
    """Load the tensors named in `expected` (name -> (dtype, shape, digest)) from `path`,
    checking each; refuses pickled objects."""
    path = Path(path)
    if not path.exists():
        raise XbarcError(
            f"tensor file {path} is missing",
            hint="keep the .xbar.npz next to its .xbar, or recompile",
        )
    if not zipfile.is_zipfile(path):  # np.load would read a .npy or try to unpickle it
        raise XbarcError(
            "not a readable tensor file (not a zip archive)", where=path, hint="recompile the model"
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        # open the file ourselves: np.load leaks its own handle when the zip is corrupt
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            stored = set(npz.files)
            for name, (dtype, shape, want_digest) in expected.items():
                if name not in stored:
                    raise XbarcError(
                        f"tensor {name!r} is missing", where=path, hint="recompile the model"
                    )
                arrays[name] = _check_tensor(path, name, npz[name], dtype, shape, want_digest)
    except XbarcError:
        raise
    except ValueError as error:
        if "pickle" in str(error):
            raise XbarcError(
                "the tensor file holds pickled objects, which xbarc never loads",
                where=path,
                hint="recompile the model to get a clean tensor file",
            ) from None
        raise XbarcError(f"not a readable tensor file: {error}", where=path) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise XbarcError(
            f"not a readable tensor file ({error})", where=path, hint="recompile the model"
        ) from None
    return TensorStore(arrays)


def _check_tensor(
    path: Path, name: str, data: np.ndarray, dtype: str, shape: tuple[int, ...], want: str
) -> np.ndarray:
    if dtype not in NUMPY_DTYPES and dtype != "str":
        data = _reinterpret(data, dtype, shape)
    if tuple(data.shape) != tuple(shape):
        raise XbarcError(
            f"tensor {name!r} has shape {list(data.shape)}, the program declares {list(shape)}",
            where=path,
            hint="the tensor file does not belong to this program; recompile",
        )
    got = element_type(data)
    if got != dtype:
        raise XbarcError(
            f"tensor {name!r} has element type {got}, the program declares {dtype}",
            where=path,
            hint="the tensor file does not belong to this program; recompile",
        )
    if digest(data) != want:
        raise XbarcError(
            f"tensor {name!r} does not match its hash in the program",
            where=path,
            hint="the tensor file was changed or belongs to another program; recompile",
        )
    return data


def _reinterpret(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    from onnx import helper

    code = int(dtype.removeprefix("onnx")) if dtype.startswith("onnx") else None
    if code is None:
        from xbarc.ir.types import ONNX_DTYPES

        code = ONNX_DTYPES[dtype]
    np_dtype = helper.tensor_dtype_to_np_dtype(code)
    return raw.view(np_dtype).reshape(shape)
