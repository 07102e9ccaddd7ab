"""Reading and writing user files safely.

Reading: every file xbarc reads (a program, its sidecar, a profile, a model, data) may be
hostile or simply the wrong thing: a folder, a device such as /dev/zero, a named pipe that
never ends. `read_regular_file` reads one only when it is a regular file no larger than
the limit its kind allows; `check_regular_file` checks the same for files another library
opens itself (onnx, numpy).

Writing: every writer checks its outputs first with `check_outputs` (a regular file or a
new one, in an existing folder, never one of its inputs), then writes each file whole
beside its target and renames it into place (`write_file_atomically`, or `stage_file` and
`StagedFile.place` for the two files of a program, see xbarc.ir.io): a process killed at
any instant leaves the old file or the new one, never a mix, and the temporaries of a
killed run are removed by the next save or load of the same file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xbarc.diagnostics import XbarcError

PathLike = str | os.PathLike[str]


def read_regular_file(path: PathLike, what: str, limit: int) -> bytes:
    """The bytes of the regular file at `path`, refusing anything else or more than `limit`
    bytes; `what` names the file in errors ("program file", "noise profile", ...)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise XbarcError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise XbarcError(f"{path} is a folder, not a {what}") from None
    except OSError as error:
        raise XbarcError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        _check_regular(path, what, info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise XbarcError(
                f"{what} {path} is {info.st_size} bytes, more than xbarc reads ({limit})"
            )
        try:
            data = handle.read(info.st_size + 1)  # not limit + 1: read() allocates it
        except OSError as error:
            raise XbarcError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if len(data) > info.st_size:
        raise XbarcError(f"{what} {path} grew while xbarc read it", hint="read it again")
    return data


def check_regular_file(path: PathLike, what: str) -> Path:
    """`path` when it names an existing regular file (through symlinks), else an error."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise XbarcError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise XbarcError(f"cannot read {what} {path}: {error.strerror or error}") from None
    _check_regular(path, what, info.st_mode)
    return path


def _check_regular(path: Path, what: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise XbarcError(f"{path} is a folder, not a {what}")
    kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
    if stat.S_ISFIFO(mode):
        kind = "a named pipe"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    raise XbarcError(f"{path} is {kind}, not a {what}", hint="give the path of a file")


# --- writing ------------------------------------------------------------------------------
#
# An output is never written in place: the new content goes to an anonymous file in the
# target's folder (O_TMPFILE; where the file system lacks it, a named temporary
# `.NAME.<pid>.<token>.tmp`), is flushed to disk, and only then linked into place with
# one atomic rename. A process killed at any instant leaves the old file or the new one,
# plus at most a named temporary whose pid says it is stale (`remove_stale_temporaries`).


def check_outputs(
    outputs: Sequence[tuple[PathLike, str]], *, inputs: Sequence[tuple[PathLike, str]]
) -> None:
    """Refuse to write any of `outputs` ((path, what it is)) when it exists and is not a
    regular file (after following symbolic links), when its folder is missing, or when it
    is one of `inputs` ((path, what it is)): the same file by inode, so hard links and
    symbolic links count. Nothing is written before every check has passed."""
    for output, what in outputs:
        output = Path(output)
        target = output_target(output)
        folder = target.parent
        if not folder.exists():
            raise XbarcError(
                f"cannot write the {what} {output}: the folder {folder} does not exist",
                hint="create it first",
            )
        if not folder.is_dir():
            raise XbarcError(f"cannot write the {what} {output}: {folder} is not a folder")
        try:
            info = os.stat(output)
        except FileNotFoundError:
            continue  # a new file (or a symbolic link to one)
        except OSError as error:
            raise XbarcError(
                f"cannot write the {what} {output}: {error.strerror or error}"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            _check_regular(output, what, info.st_mode)
        for source, source_what in inputs:
            if _same_file(info, source):
                same = "" if Path(source) == output else f" {source}"
                raise XbarcError(
                    f"refusing to write the {what} {output}: it is the {source_what}{same}",
                    hint="give -o another path",
                )


def _same_file(info: os.stat_result, path: PathLike) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (other.st_dev, other.st_ino)


def output_target(path: PathLike) -> Path:
    """The file that writing `path` replaces: `path` itself, or the file a symbolic link
    there points to (the link is kept, its target written)."""
    path = Path(path)
    if not path.is_symlink():
        return path
    return Path(os.path.realpath(path))


def write_file_atomically(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` (through a symbolic link, to its target) with `write(handle)`, all or
    nothing: the old file stays until the new one is complete on disk. A path that is not
    a regular file (a device, a pipe, a folder) is refused."""
    check_outputs([(path, "file")], inputs=[])
    target = output_target(path)
    staged = stage_file(target.parent, target.name, keep_mode_of=target, write=write)
    try:
        staged.place(target)
    finally:
        staged.discard()
    fsync_folder(target.parent)
    remove_stale_temporaries(target.parent, target.name)


@dataclass
class StagedFile:
    """A complete new file, on disk but not yet in its folder: open and anonymous
    (`fd`, linked by `place`), or a named temporary (`name`, renamed by `place`)."""

    folder: Path
    base: str  # temporaries are named after the file they become
    fd: int | None
    name: Path | None
    identity: tuple[int, int] = (0, 0)  # (device, inode): to tell whether it was placed

    def is_at(self, target: Path) -> bool:
        """Whether `target` is this file now (it was placed there)."""
        try:
            info = os.stat(target)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def place(self, target: Path) -> None:
        """Put the file at `target` (in the same folder), replacing what was there."""
        if self.name is not None:
            os.replace(self.name, target)
            self.name = None
            return
        assert self.fd is not None
        linked = self.folder / temporary_name(self.base)
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the anonymous file; Python
        # only passes that flag given a folder descriptor (plain link() gives EXDEV)
        folder = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.link(f"/proc/self/fd/{self.fd}", linked.name, dst_dir_fd=folder)
        finally:
            os.close(folder)
        try:
            os.replace(linked, target)
        except BaseException:
            _unlink_quietly(linked)
            raise

    def discard(self) -> None:
        """Close and forget the file: an anonymous one vanishes, a named one is removed
        unless it was placed."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.name is not None:
            _unlink_quietly(self.name)
            self.name = None


def stage_file(
    folder: Path, base: str, *, keep_mode_of: Path, write: Callable[[BinaryIO], object]
) -> StagedFile:
    """A new file in `folder` holding what `write(handle)` wrote, flushed to disk: with
    the mode of `keep_mode_of` when that exists, else 0o666 less the umask. Removed
    again on any error."""
    try:
        mode = stat.S_IMODE(os.stat(keep_mode_of).st_mode)
    except OSError:
        mode = None
    staged = _new_file(folder, base)
    try:
        assert staged.fd is not None
        if mode is not None:
            os.fchmod(staged.fd, mode)
        info = os.fstat(staged.fd)
        staged.identity = (info.st_dev, info.st_ino)
        with os.fdopen(os.dup(staged.fd), "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if staged.name is not None:  # named: nothing more to do with the descriptor
            os.close(staged.fd)
            staged.fd = None
    except BaseException:
        staged.discard()
        raise
    return staged


def _new_file(folder: Path, base: str) -> StagedFile:
    anonymous = getattr(os, "O_TMPFILE", None)
    # placing an anonymous file links /proc/self/fd/N: without /proc, named temporaries
    if anonymous is not None and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.open(folder, anonymous | os.O_WRONLY | os.O_CLOEXEC, 0o666)
            return StagedFile(folder, base, fd, None)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    name = folder / temporary_name(base)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    return StagedFile(folder, base, fd, name)


def temporary_name(base: str) -> str:
    """A fresh temporary name for a file becoming `base`, with our pid so that another
    process can tell a killed run's leftovers from a live one's."""
    return f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp"


def pending_name(base: str) -> str:
    """A fresh name for a complete file waiting to replace `base` (see xbarc.ir.io)."""
    return f".{base}.pending-{os.getpid()}-{secrets.token_hex(6)}"


def pending_files(folder: Path, base: str) -> list[tuple[Path, int]]:
    """The files waiting to replace `base` in `folder`, with their writers' pids."""
    return _named_with_pid(folder, re.compile(rf"\.{re.escape(base)}\.pending-(\d+)-[0-9a-f]+"))


def remove_stale_temporaries(folder: Path, base: str) -> None:
    """Remove the temporaries of `base` in `folder` whose writer has died (a killed run);
    a live writer's are kept. Errors (a read-only folder) are ignored: they only cost space."""
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-zA-Z_]+\.tmp")
    for path, pid in _named_with_pid(folder, pattern):
        if not pid_alive(pid):
            _unlink_quietly(path)


def _named_with_pid(folder: Path, pattern: re.Pattern[str]) -> list[tuple[Path, int]]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match is not None:
            found.append((folder / name, int(match.group(1))))
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (ours counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's process: alive
    return True


def fsync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (where the system allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    """Remove `path` if we can; a file already gone or a read-only folder is fine."""
    _unlink_quietly(path)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# --- TOML files that may start from another (`base = ...`) -------------------------------


@dataclass(frozen=True, slots=True)
class TomlKind:
    """What a kind of TOML file is called in errors, and its bounds: noise profiles and
    hardware files are both small tables that may start from another file."""

    name: str  # "noise profile", "hardware file": read_regular_file's `what`
    missing: str  # "no such noise profile file"
    family: str  # "profile", "hardware": "profile bases form a cycle"
    max_bytes: int
    max_structure: int  # '.', '[' and '{' a file may hold (tomllib's cost grows with them)
    shape: str  # what a file of the kind looks like, for the hint when it is far bigger
    start_hint: str  # how to end a chain of bases that is too long
    shipped_folder: Path  # the files that ship with xbarc, found by name
    shipped: tuple[str, ...]  # their names ("rram", "isaac")
    unknown: str  # "unknown noise profile": a name that is neither shipped nor a path
    shipped_hint: str  # "use one of ideal, quant, rram, pcm, or the path of a .toml file"
    max_bases: int = 32  # a longer chain is a mistake, or a file built to exhaust us


def read_toml_file(path: Path, kind: TomlKind) -> dict:
    """The table of the TOML file at `path`: a regular file of at most `kind.max_bytes`
    of UTF-8, flat enough (`kind.max_structure`) for tomllib to parse in bounded time and
    recursion. Every problem is one XbarcError naming the file."""
    import tomllib

    if not os.path.lexists(path):
        raise XbarcError(kind.missing, where=path)
    data = read_regular_file(path, kind.name, kind.max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise XbarcError(
            f"not UTF-8 text (byte {error.start} is {data[error.start]:#04x})",
            where=path,
            hint=f"save the {kind.name} as UTF-8",
        ) from None
    check_toml_structure(text, path, kind)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise XbarcError(f"not valid TOML: {error}", where=path) from None
    except RecursionError:
        message = f"tables or arrays nested too deeply for a {kind.name}"
        raise XbarcError(message, where=path) from None


def check_toml_structure(text: str, where: str | os.PathLike, kind: TomlKind) -> None:
    """Refuse TOML text with more keys, tables and arrays than a file of `kind` holds,
    before tomllib spends quadratic time or its recursion on them."""
    count = sum(text.count(mark) for mark in ".[{")
    if count > kind.max_structure:
        raise XbarcError(
            f"{count} '.', '[' and '{{' characters: more keys, tables or arrays than a "
            f"{kind.name} holds (at most {kind.max_structure})",
            where=where,
            hint=f"a {kind.name} is {kind.shape}",
        )


def toml_path(name: str, folder: Path | None, kind: TomlKind) -> Path:
    """The file of `name`: a shipped one, or a path (relative to `folder`, the folder of
    the file that names it as its base, else to the working folder)."""
    if name in kind.shipped:
        return kind.shipped_folder / f"{name}.toml"
    if name.endswith(".toml") or os.sep in name or (os.altsep and os.altsep in name):
        path = Path(name)
        return path if folder is None or path.is_absolute() else folder / path
    raise XbarcError(f"{kind.unknown} {name!r}", hint=kind.shipped_hint)


def read_toml_chain(name: str | os.PathLike, kind: TomlKind) -> list[tuple[dict, Path]]:
    """The tables of the file `name` (see `toml_path`) and of the files it starts from
    (`base = ...`), the deepest base first, each with its path and without its `base`
    key. A cycle, a base that is not a name, a missing base or a chain longer than
    `kind.max_bases` is one error naming the file that says so."""
    chain: list[tuple[dict, Path]] = []
    seen: list[str] = []
    path = toml_path(os.fspath(name), None, kind)
    while True:
        real = os.path.realpath(path)
        if real in seen:
            raise XbarcError(f"{kind.family} bases form a cycle", where=path)
        seen.append(real)
        table = read_toml_file(path, kind)
        base = table.pop("base", None)
        chain.append((table, path))
        if base is None:
            return chain[::-1]
        if not isinstance(base, str):
            raise XbarcError(f"base must be a {kind.family} name or a path", where=path)
        if len(seen) > kind.max_bases:
            raise XbarcError(
                f"base = {base!r}: more than {kind.max_bases} {kind.family} bases in a chain",
                where=path,
                hint=kind.start_hint,
            )
        try:
            based = toml_path(base, path.parent, kind)
        except XbarcError as error:
            message = f"base = {base!r}: {error.message}"
            raise XbarcError(message, where=path, hint=error.hint) from None
        if not os.path.lexists(based):
            raise XbarcError(f"base = {base!r}: {kind.missing} {based}", where=path)
        path = based
