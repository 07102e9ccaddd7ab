"""Save and load programs: `model.xbar` (the text) beside `model.xbar.npz` (its tensors).

Saving writes both files to temporary names in the target folder and renames them into
place only when both are complete, so a failure leaves no half-written program behind.
Loading reads the text, parses it, loads the sidecar, checking every declared tensor's
element type, shape and sha256 digest, and runs the verifier. Every problem is an
`XbarcError` that names the file (and line and column, for the text).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from xbarc.diagnostics import Location, XbarcError
from xbarc.ir.parser import ParsedProgram, parse_program
from xbarc.ir.printer import const_ref, print_program
from xbarc.ir.tensors import TensorStore, load_npz, write_npz
from xbarc.ir.tile import Program, TensorDecl
from xbarc.ir.types import NUMPY_DTYPES

PathLike = str | os.PathLike[str]


def sidecar_path(path: PathLike) -> Path:
    """The tensor file of the program at `path`: `path` + `.npz`."""
    return Path(os.fspath(path) + ".npz")


def save_program(path: PathLike, program: Program) -> None:
    """Write `program` to `path` and its declared tensors to `path.npz`, atomically."""
    path = Path(path)
    text = print_program(program)
    tensors = _declared_tensors(program)
    sidecar = sidecar_path(path)
    temporaries: list[Path] = []
    try:
        text_tmp = _temporary_beside(path, temporaries)
        sidecar_tmp = _temporary_beside(sidecar, temporaries)
        with open(text_tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        with open(sidecar_tmp, "wb") as handle:  # already a temporary file
            write_npz(handle, tensors)
        # the text goes last: should the process die in between, the old text meets the
        # new sidecar and loading reports the hash mismatch instead of mixing programs
        os.replace(sidecar_tmp, sidecar)
        os.replace(text_tmp, path)
    except OSError as error:
        raise XbarcError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def load_program_text(path: PathLike) -> ParsedProgram:
    """The program at `path` with where each entity was written, without its tensors."""
    return parse_program(_read_text(Path(path)), os.fspath(path))


def load_program(path: PathLike, *, verify: bool = True) -> Program:
    """The program at `path` with its tensors from `path.npz`, all checked; with `verify`
    (the default) also every invariant, errors pointing at `path:line:column`."""
    parsed = load_program_text(path)
    program = parsed.program
    if program.tensors:  # without tensors the sidecar is not needed and may be absent
        expected = {d.name: (d.dtype, d.shape, d.digest) for d in program.tensors}
        program = replace(program, store=load_npz(sidecar_path(path), expected))
    if verify:
        from xbarc.ir.verifier import verify as verify_program

        verify_program(program, parsed.locate)
    return program


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise XbarcError(f"program file {path} does not exist") from None
    except IsADirectoryError:
        raise XbarcError(f"{path} is a folder, not a program file") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise XbarcError(f"cannot read program file {path}: {reason}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        where = _byte_location(path, data, error.start)
        raise XbarcError(
            f"the program is not UTF-8 text (byte 0x{data[error.start]:02x})",
            where=where,
            hint="is this really an .xbar file?",
        ) from None


def _byte_location(path: Path, data: bytes, offset: int) -> Location:
    before = data[:offset]
    line = before.count(b"\n") + 1
    line_start = before.rfind(b"\n") + 1
    column = len(before[line_start:].decode("utf-8", errors="replace")) + 1
    return Location(str(path), line, column)


def _temporary_beside(path: Path, temporaries: list[Path]) -> Path:
    """A new empty file in `path`'s folder (so that renaming it onto `path` is atomic)."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporaries.append(Path(name))
    return Path(name)


def _declared_tensors(program: Program) -> TensorStore:
    """The store restricted to the declared tensors, each checked against its declaration."""
    arrays = {}
    for decl in program.tensors:
        if decl.name not in program.store:
            raise XbarcError(
                f"tensor {const_ref(decl.name)} is declared but the program holds no data for it"
            )
        data = program.store[decl.name]
        _check_declared(decl, tuple(data.shape), data.dtype)
        arrays[decl.name] = data
    return TensorStore(arrays)


def _check_declared(decl: TensorDecl, shape: tuple[int, ...], dtype: object) -> None:
    if shape != tuple(decl.shape):
        raise XbarcError(
            f"tensor {const_ref(decl.name)} holds shape {list(shape)}"
            f" but is declared {list(decl.shape)}"
        )
    expected = NUMPY_DTYPES.get(decl.dtype)
    if expected is not None and dtype != expected:
        raise XbarcError(
            f"tensor {const_ref(decl.name)} holds {dtype} but is declared {decl.dtype}"
        )
