"""Reading user files safely: regular files only, never more than a limit.

Every file xbarc reads (a program, its sidecar, a profile, a model, data) may be hostile
or simply the wrong thing: a folder, a device such as /dev/zero, a named pipe that never
ends. `read_regular_file` reads one only when it is a regular file no larger than the
limit its kind allows; `check_regular_file` checks the same for files another library
opens itself (onnx, numpy).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
            data = handle.read(limit + 1)
        except OSError as error:
            raise XbarcError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if len(data) > limit:  # grew while we read it
        raise XbarcError(f"{what} {path} is more than xbarc reads ({limit} bytes)")
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
