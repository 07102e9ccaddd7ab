"""User-facing errors: one line that names where the problem is and what to do about it.

Every error a user can cause (a bad model, a bad option, a corrupt program file) is raised
as `XbarcError`; the CLI prints `str(error)` and exits non-zero, never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A position in a text file; line and column count from 1."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


class XbarcError(Exception):
    """An error caused by the user's input, reported as `where: error: what (hint)`."""

    def __init__(
        self, message: str, *, where: Location | str | os.PathLike | None = None, hint: str = ""
    ):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        prefix = f"{self.where}: error" if self.where is not None else "error"
        text = f"{prefix}: {self.message}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text

    def at(self, where: Location | str | os.PathLike) -> XbarcError:
        """The same error, located at `where` when it has no location yet."""
        if self.where is not None:
            return self
        return XbarcError(self.message, where=where, hint=self.hint)
