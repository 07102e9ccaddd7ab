"""The tensor sidecar: constants of a program, saved as `.npz` and never pickled.

Each tensor is declared in the program text with its element type, shape and the sha256
digest of its bytes; loading checks all three. Element types numpy cannot store natively
(bfloat16, float8, ...) are kept as their raw bytes (u8) and reinterpreted on load.

Loading treats the file as hostile (`NpzReader`): a regular file only, the zip's member
count and directory size bounded before zipfile reads them, each member's declared size
checked against its declaration and its compressed bytes before anything is inflated, its
.npy header against the declaration before its data is read, and never numpy's loader
(which unpickles on request and trusts sizes). Data files (`load_arrays`) get the same
checks without a declaration, against a total limit.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.files import check_regular_file, write_file_atomically
from xbarc.ir.types import NUMPY_DTYPES, dtype_name, onnx_dtype_name
from xbarc.limits import MAX_DEFLATE_RATIO, MAX_NPY_HEADER_BYTES, MAX_TENSOR_BYTES

# what zipfile and zlib raise on a corrupt or unusual archive: a bad directory, an unknown
# version or compression method (NotImplementedError), an encrypted member (RuntimeError),
# a corrupt deflate stream (zlib.error), a short read
ZIP_READ_ERRORS = (
    OSError,
    zipfile.BadZipFile,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    struct.error,
)


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


def member_name_ok(name: str) -> bool:
    """Whether a tensor name can name a zip member (UTF-8, no NUL)."""
    if "\x00" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def write_npz(handle: BinaryIO, store: Mapping[str, np.ndarray]) -> None:
    """What np.savez writes, for any tensor names: np.savez takes the names `file` and
    `allow_pickle` as its own arguments (and silently drops a tensor named allow_pickle)."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in store.items():
            if not member_name_ok(name):
                raise XbarcError(
                    f"tensor name {name!r} holds a NUL or a lone surrogate, which a tensor "
                    "file (a zip member name) cannot hold",
                    hint="rename the tensor",
                )
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
    checking each; refuses pickled objects.

    Nothing is inflated or allocated before it is checked: the file must be a regular file
    (not /dev/zero or a pipe); each member's size in the zip's central directory must fit
    its declared element type and shape and what its compressed bytes can inflate to, and
    all of them MAX_TENSOR_BYTES; each .npy header must match the declaration. Only then is
    the member read, exactly that many bytes, and its digest checked."""
    path = Path(path)
    if not path.exists():
        raise XbarcError(
            f"tensor file {path} is missing",
            hint="keep the .xbar.npz next to its .xbar, or recompile",
        )
    arrays: dict[str, np.ndarray] = {}
    with NpzReader(path, "tensor file", RECOMPILE, max_members=2 * len(expected) + 64) as npz:
        members = {}
        for name, (dtype, shape, _) in expected.items():
            info = npz.member(name + ".npy", f"tensor {name!r}")
            members[name] = info
            npz.check_size(info, f"tensor {name!r}", _declared_bytes(dtype, shape))
        npz.check_total(members.values(), MAX_TENSOR_BYTES)
        for name, (dtype, shape, want_digest) in expected.items():
            data = npz.read(members[name], f"tensor {name!r}", _declaration_check(dtype, shape))
            arrays[name] = _check_tensor(path, name, data, dtype, shape, want_digest)
    return TensorStore(arrays)


RECOMPILE = "recompile the model"
NOT_THIS_PROGRAM = "the tensor file does not belong to this program; recompile"


def load_arrays(path: Path, what: str, limit: int) -> dict[str, np.ndarray]:
    """Every array of the .npz file at `path` (data: inputs, labels), refusing pickles, a
    .npy file, members that are not arrays, and more than `limit` bytes inflated in all,
    each checked before it is inflated (as `load_npz`). `what` names the file."""
    hint = "give an .npz file of named arrays: np.savez(PATH, name=array, ...)"
    with NpzReader(path, what, hint, max_members=MAX_DATA_MEMBERS, npy_hint=hint) as npz:
        infos = npz.infos()
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise XbarcError(
                    f"member {info.filename!r} is not a .npy array", where=path, hint=hint
                )
            npz.check_size(info, f"array {info.filename[:-4]!r}", None)
        npz.check_total(infos, limit)
        return {
            info.filename[:-4]: npz.read(info, f"array {info.filename[:-4]!r}") for info in infos
        }


MAX_DATA_MEMBERS = 1 << 12  # arrays of one data file
MAX_CENTRAL_ENTRY_BYTES = 4096  # one member's entry in a zip's central directory (its name)


HeaderCheck = Callable[[str, tuple[int, ...], np.dtype], None]


class NpzReader:
    """An .npz file opened for bounded reading: see `load_npz`. Errors name the file."""

    def __init__(self, path: Path, what: str, hint: str, *, max_members: int, npy_hint: str = ""):
        self.path = Path(path)
        self.npy_hint = npy_hint  # a .npy file where an .npz belongs: what to give instead
        self.what = what
        self.hint = hint
        self.max_members = max_members
        self._handle: BinaryIO | None = None
        self._archive: zipfile.ZipFile | None = None

    def __enter__(self) -> NpzReader:
        self._handle = _open_regular(self.path, self.what)
        try:
            self._archive = self._open_zip(self._handle)
        except BaseException:
            self._handle.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._archive is not None:
            self._archive.close()
        if self._handle is not None:
            self._handle.close()

    def fail(self, message: str, hint: str = "") -> XbarcError:
        return XbarcError(message, where=self.path, hint=hint or self.hint)

    def _open_zip(self, handle: BinaryIO) -> zipfile.ZipFile:
        if self.npy_hint and handle.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise self.fail(
                f"{self.path} is a .npy file (one array), not an .npz archive of named arrays",
                self.npy_hint,
            )
        handle.seek(0)
        try:
            directory = _zip_directory(handle)
            if directory is None:  # np.load would read other formats, or unpickle
                raise self.fail(f"not a readable {self.what} (not a zip archive)")
            entries, directory_bytes = directory
            # zipfile builds an object per entry of the directory, however many the end
            # record lists: bound both the count and the directory's size
            if entries > self.max_members or directory_bytes > (
                self.max_members * MAX_CENTRAL_ENTRY_BYTES
            ):
                raise self.fail(
                    f"the {self.what} lists {entries} members in {directory_bytes} bytes,"
                    f" more than xbarc reads ({self.max_members} members)"
                )
            return zipfile.ZipFile(handle)
        except ZIP_READ_ERRORS as error:
            raise self.fail(f"not a readable {self.what} ({error})") from None

    @property
    def archive(self) -> zipfile.ZipFile:
        assert self._archive is not None, "use NpzReader in a with statement"
        return self._archive

    def infos(self) -> list[zipfile.ZipInfo]:
        return self.archive.infolist()

    def member(self, name: str, what: str) -> zipfile.ZipInfo:
        try:
            return self.archive.getinfo(name)
        except KeyError:
            raise self.fail(f"{what} is missing") from None

    def check_size(self, info: zipfile.ZipInfo, what: str, data_bytes: int | None) -> None:
        """Refuse, before inflating, a member whose declared size does not fit `data_bytes`
        (the array it must hold; None: any), or that its compressed bytes cannot hold."""
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.fail(
                f"{what} is compressed with method {info.compress_type}, which xbarc does not read"
            )
        if info.compress_size > self.file_size:
            raise self.fail(f"{what} claims {info.compress_size} bytes, more than the file holds")
        most = info.compress_size
        if info.compress_type == zipfile.ZIP_DEFLATED:
            most = info.compress_size * MAX_DEFLATE_RATIO + MAX_NPY_HEADER_BYTES
        if info.file_size > most:
            raise self.fail(
                f"{what} claims {info.file_size} bytes, more than its {info.compress_size}"
                " stored bytes can hold (a corrupt or hostile file)"
            )
        if data_bytes is not None and info.file_size > data_bytes + MAX_NPY_HEADER_BYTES:
            raise self.fail(
                f"{what} holds {info.file_size} bytes, more than the program declares"
                f" ({data_bytes} bytes of data)",
                NOT_THIS_PROGRAM,
            )

    def check_total(self, infos: Iterable[zipfile.ZipInfo], limit: int) -> None:
        total = sum(info.file_size for info in infos)
        if total > limit:
            raise self.fail(
                f"the {self.what} inflates to {total} bytes, more than xbarc reads ({limit})"
            )

    @functools.cached_property
    def file_size(self) -> int:
        assert self._handle is not None
        return os.fstat(self._handle.fileno()).st_size

    def read(
        self, info: zipfile.ZipInfo, what: str, check: HeaderCheck | None = None
    ) -> np.ndarray:
        """The array of member `info` (sized by `check_size`): its .npy header read and
        checked (`check(what, shape, dtype)`), then exactly its bytes."""
        try:
            with self.archive.open(info) as member:
                shape, fortran, dtype = self._header(member, what)
                if check is not None:
                    check(what, shape, dtype)
                count = _elements(shape)
                size = member.tell() + count * dtype.itemsize
                if size > info.file_size:
                    raise self.fail(f"not a readable {self.what}: {what} is truncated")
                if size < info.file_size:
                    raise self.fail(f"{what} holds more bytes than its .npy header says")
                flat = np.empty(count, dtype)
                _read_into(member, flat.view(np.uint8), lambda: self.fail(f"{what} is truncated"))
                if member.read(1):
                    raise self.fail(f"{what} holds more bytes than its .npy header says")
        except XbarcError as error:
            raise error.at(self.path) from None
        except ZIP_READ_ERRORS as error:
            raise self.fail(f"not a readable {self.what}: {what} ({error})") from None
        return flat.reshape(shape, order="F" if fortran else "C")

    def _header(self, member: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(
                member, max_header_size=MAX_NPY_HEADER_BYTES
            )
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(
                member, max_header_size=MAX_NPY_HEADER_BYTES
            )
        else:
            raise self.fail(f"{what} is a .npy of version {version}, which xbarc does not read")
        shape, fortran, dtype = header
        if dtype.hasobject:
            raise self.fail(
                f"the {self.what} holds pickled objects, which xbarc never loads",
                "recompile the model to get a clean tensor file"
                if self.hint == RECOMPILE
                else "save arrays of numbers, not Python objects",
            )
        return tuple(shape), bool(fortran), dtype


NPY_MAGIC = b"\x93NUMPY"


def _open_regular(path: Path, what: str) -> BinaryIO:
    """`path` opened for reading when it is a regular file (checked on the open file, so
    that it cannot be swapped for a device or a pipe in between)."""
    check_regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise XbarcError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise XbarcError(f"{path} is not a regular file, not a {what}")
    return os.fdopen(fd, "rb")


def _zip_directory(handle: BinaryIO) -> tuple[int, int] | None:
    """The members a zip's end record lists and the bytes of its central directory (read
    before zipfile parses the directory, which costs memory per entry), or None when
    `handle` is not a zip."""
    end_record = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
    if end_record is None:
        return None
    entries = int(end_record[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]
    return entries, int(end_record[zipfile._ECD_SIZE])  # type: ignore[attr-defined]


def _read_into(member: IO[bytes], target: np.ndarray, truncated: Callable[[], XbarcError]) -> None:
    """Fill the bytes of `target` from `member`, a chunk at a time (no second copy)."""
    view = memoryview(target)  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        chunk = member.read(min(len(view) - done, READ_CHUNK_BYTES))
        if not chunk:
            raise truncated()
        view[done : done + len(chunk)] = chunk
        done += len(chunk)


READ_CHUNK_BYTES = 1 << 18  # as numpy reads (16 MB chunks: 40 % slower, fresh pages each)


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _storage_dtype(dtype: str) -> np.dtype | None:
    """The numpy type a tensor of element type `dtype` is stored as (exotic types: raw
    bytes), None for strings (stored as numpy unicode of any width)."""
    if dtype == "str":
        return None
    if dtype in NUMPY_DTYPES:
        return NUMPY_DTYPES[dtype]
    return np.dtype(np.uint8)


def _stored_shape(dtype: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if dtype in NUMPY_DTYPES or dtype == "str":
        return tuple(shape)
    return (_elements(shape) * _exotic_dtype(dtype).itemsize,)


def _declared_bytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """The data bytes of a declared tensor in the sidecar (None for strings: any width)."""
    storage = _storage_dtype(dtype)
    if storage is None:
        return None
    return _elements(_stored_shape(dtype, shape)) * storage.itemsize


def _declaration_check(dtype: str, shape: tuple[int, ...]) -> HeaderCheck:
    """Checks a member's .npy header against the declared element type and shape."""

    def check(what: str, stored_shape: tuple[int, ...], stored: np.dtype) -> None:
        storage = _storage_dtype(dtype)
        if (storage is None and stored.kind != "U") or (storage is not None and stored != storage):
            raise XbarcError(
                f"{what} has element type {_type_name(stored)}, the program declares {dtype}",
                hint=NOT_THIS_PROGRAM,
            )
        want = _stored_shape(dtype, shape)
        if stored_shape != want:
            raise XbarcError(
                f"{what} has shape {list(stored_shape)}, the program declares {list(want)}",
                hint=NOT_THIS_PROGRAM,
            )

    return check


def _type_name(dtype: np.dtype) -> str:
    try:
        return dtype_name(dtype)
    except ValueError:
        return str(dtype)


def _check_tensor(
    path: Path, name: str, data: np.ndarray, dtype: str, shape: tuple[int, ...], want: str
) -> np.ndarray:
    if dtype not in NUMPY_DTYPES and dtype != "str":
        data = _reinterpret(data, dtype, shape)
    if tuple(data.shape) != tuple(shape):
        raise XbarcError(
            f"tensor {name!r} has shape {list(data.shape)}, the program declares {list(shape)}",
            where=path,
            hint=NOT_THIS_PROGRAM,
        )
    got = element_type(data)
    if got != dtype:
        raise XbarcError(
            f"tensor {name!r} has element type {got}, the program declares {dtype}",
            where=path,
            hint=NOT_THIS_PROGRAM,
        )
    if digest(data) != want:
        raise XbarcError(
            f"tensor {name!r} does not match its hash in the program",
            where=path,
            hint="the tensor file was changed or belongs to another program; recompile",
        )
    return data


def _exotic_dtype(dtype: str) -> np.dtype:
    from onnx import helper

    code = int(dtype.removeprefix("onnx")) if dtype.startswith("onnx") else None
    if code is None:
        from xbarc.ir.types import ONNX_DTYPES

        code = ONNX_DTYPES[dtype]
    return np.dtype(helper.tensor_dtype_to_np_dtype(code))


def _reinterpret(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return raw.view(_exotic_dtype(dtype)).reshape(shape)
