"""Save and load programs: `model.xbar` (the text) beside `model.xbar.npz` (its tensors).

The text declares every tensor with its element type, shape and sha256 digest, so a text
and a sidecar *match* when the sidecar holds every declared tensor with that digest.
Loading reads the text (a regular file, bounded), parses it, loads the matching sidecar,
checking every tensor, and runs the verifier. Every problem is an `XbarcError` that names
the file (and line and column, for the text).

Saving never leaves a mismatched pair, even if the process is killed at any instant
(`xbarc.files` holds the file operations):

1. both new files are written whole, as anonymous files (O_TMPFILE, or named temporaries
   `.P.xbar.<pid>.<token>.tmp` where the file system lacks it) in their folders, and
   flushed to disk;
2. the new sidecar is linked in under a pending name, `.P.xbar.npz.pending-<pid>-<token>`:
   the old text still matches the old sidecar;
3. the new text is renamed onto `P.xbar`: it does not match `P.xbar.npz` but matches the
   pending sidecar, which the loader then uses;
4. the pending sidecar is renamed onto `P.xbar.npz` (a reader may have done it already).

Recovery, run by every load: when `P.xbar.npz` does not match the text, a pending sidecar
that does is used and renamed into place (when the folder is writable). Pending sidecars
and temporaries whose writer (the pid in their name) has died are removed by the next
load or save; a live writer's are left alone. A symbolic link at `P.xbar` or
`P.xbar.npz` is followed: the file it points to is replaced, the link kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from xbarc import limits, progress
from xbarc.diagnostics import Location, XbarcError
from xbarc.files import (
    StagedFile,
    check_outputs,
    fsync_folder,
    output_target,
    pending_files,
    pending_name,
    pid_alive,
    read_regular_file,
    remove_stale_temporaries,
    stage_file,
    unlink_quietly,
)
from xbarc.ir.parser import ParsedProgram, parse_program
from xbarc.ir.printer import const_ref, print_program
from xbarc.ir.tensors import TensorStore, load_npz, write_npz
from xbarc.ir.tile import Program, TensorDecl
from xbarc.ir.types import NUMPY_DTYPES

PathLike = str | os.PathLike[str]


def sidecar_path(path: PathLike) -> Path:
    """The tensor file of the program at `path`: `path` + `.npz`."""
    return Path(os.fspath(path) + ".npz")


def check_program_output(
    output: PathLike,
    *,
    inputs: Sequence[tuple[PathLike | None, str]] = (),
    rewrites: PathLike | None = None,
) -> None:
    """Refuse to save a program at `output` when its text or sidecar is not a regular file,
    sits in a missing folder or is one of `inputs` ((path or None, what it is)); with
    `rewrites` (the program being read), saving over that same program is allowed."""
    output = Path(output)
    outputs = [(output, "program"), (sidecar_path(output), "program's tensor file")]
    given = [(Path(path), what) for path, what in inputs if path is not None]
    if rewrites is not None:
        if _same_program(output, Path(rewrites)):
            check_outputs(outputs, inputs=[])
            return
        given += [(Path(rewrites), "program"), (sidecar_path(rewrites), "program's tensor file")]
    check_outputs(outputs, inputs=given)


def _same_program(a: Path, b: Path) -> bool:
    def same(x: Path, y: Path) -> bool:
        if x == y:
            return True
        try:
            return os.path.samefile(x, y)
        except OSError:
            return False

    return same(a, b) and same(sidecar_path(a), sidecar_path(b))


def save_program(path: PathLike, program: Program) -> None:
    """Write `program` to `path` and its declared tensors to `path.npz`: after a kill at
    any instant, loading `path` gives the old program or the new one (see the module)."""
    path = Path(path)
    # never replace a device, pipe or folder, whoever calls (the CLI checked its inputs)
    check_outputs([(path, "program"), (sidecar_path(path), "program's tensor file")], inputs=[])
    text = print_program(program).encode("utf-8")
    tensors = _declared_tensors(program)
    text_target = output_target(path)
    sidecar_target = output_target(sidecar_path(path))
    staged: list[StagedFile] = []
    pending: Path | None = None
    try:
        new_sidecar = stage_file(
            sidecar_target.parent,
            sidecar_target.name,
            keep_mode_of=sidecar_target,
            write=lambda handle: write_npz(handle, tensors),
        )
        staged.append(new_sidecar)
        new_text = stage_file(
            text_target.parent,
            text_target.name,
            keep_mode_of=text_target,
            write=lambda handle: handle.write(text),
        )
        staged.append(new_text)
        pending = sidecar_target.parent / pending_name(sidecar_target.name)
        new_sidecar.place(pending)
        fsync_folder(sidecar_target.parent)  # the pending sidecar is on disk before the text
        new_text.place(text_target)
        try:
            os.replace(pending, sidecar_target)
        except FileNotFoundError:
            # a reader found the new text and put its sidecar in place; anything else
            # (another process removed it) must not pass silently
            if not new_sidecar.is_at(sidecar_target):
                raise XbarcError(
                    f"the new tensor file of {path} was removed while it was saved",
                    hint="save the program again",
                ) from None
    except OSError as error:
        raise XbarcError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if pending is not None and not (len(staged) == 2 and staged[1].is_at(text_target)):
            unlink_quietly(pending)  # the old text is still in place: so must its sidecar
        for file in staged:
            file.discard()
    fsync_folder(text_target.parent)
    if sidecar_target.parent != text_target.parent:
        fsync_folder(sidecar_target.parent)
    _remove_stale(text_target, sidecar_target)


def load_program_text(path: PathLike) -> ParsedProgram:
    """The program at `path` with where each entity was written, without its tensors."""
    return parse_program(_read_text(Path(path)), os.fspath(path))


def load_program(path: PathLike, *, verify: bool = True) -> Program:
    """The program at `path` with its tensors from `path.npz` (or from a pending sidecar
    of an interrupted save, see the module), all checked; with `verify` (the default)
    also every invariant, errors pointing at `path:line:column`."""
    with progress.task("load", total=2 + verify, unit="step", estimate=False) as task:
        task.describe(f"{Path(path).name}: text")
        try:
            parsed = load_program_text(path)
        except XbarcError:
            if not os.path.lexists(path):  # a first save killed before its text was in place
                _remove_stale(output_target(path), output_target(sidecar_path(path)))
            raise
        program = parsed.program
        expected = {d.name: (d.dtype, d.shape, d.digest) for d in program.tensors}
        task.update(item=f"{Path(path).name}: tensors")
        store = _load_tensors(Path(path), expected)
        if program.tensors:  # without tensors the sidecar is not needed and may be absent
            program = replace(program, store=store)
        task.update(item=f"{Path(path).name}: verify")
        if verify:
            from xbarc.ir.verifier import verify as verify_program

            verify_program(program, parsed.locate)
            task.update()
    return program


def _load_tensors(path: Path, expected: dict[str, tuple[str, tuple[int, ...], str]]) -> TensorStore:
    """The tensors `expected` by the text at `path`: from its sidecar, or from a pending
    sidecar that matches the text when the sidecar does not (then renamed into place)."""
    text_target = output_target(path)
    sidecar = output_target(sidecar_path(path))
    pendings = pending_files(sidecar.parent, sidecar.name)
    _remove_stale(text_target, sidecar, pendings=False)
    if not pendings:
        return load_npz(sidecar_path(path), expected) if expected else TensorStore()
    store: TensorStore | None = TensorStore()
    error: XbarcError | None = None
    if expected:
        try:
            store = load_npz(sidecar_path(path), expected)
        except XbarcError as sidecar_error:
            store, error = None, sidecar_error
    for pending, pid in pendings:
        if store is None:
            try:
                store = load_npz(pending, expected)
            except XbarcError:
                pass
            else:
                try:
                    os.replace(pending, sidecar)  # roll the interrupted save forward
                    fsync_folder(sidecar.parent)
                except OSError:
                    pass  # a read-only folder: load from the pending sidecar
                continue
        if not pid_alive(pid):
            unlink_quietly(pending)  # a killed save's, never placed
    if store is None:
        assert error is not None
        raise error
    return store


def _remove_stale(text: Path, sidecar: Path, *, pendings: bool = True) -> None:
    """Remove the temporaries (and, with `pendings`, the pending sidecars: only right after
    a save, when the pair in place is known to match) of killed writers."""
    remove_stale_temporaries(text.parent, text.name)
    remove_stale_temporaries(sidecar.parent, sidecar.name)
    if pendings:
        for pending, pid in pending_files(sidecar.parent, sidecar.name):
            if not pid_alive(pid):
                unlink_quietly(pending)


def _read_text(path: Path) -> str:
    data = read_regular_file(path, "program file", limits.MAX_PROGRAM_TEXT_BYTES)
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
