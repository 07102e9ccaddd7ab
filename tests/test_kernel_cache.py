"""Numba's on-disk cache of a kernel follows the kernels it calls: Numba checks the stamp of
the caller's own file only, so `NumbaKernel` names the cache after a digest of its callees'
sources (`callee_digest`); an edited callee must not leave a caller running its old code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CALLER = """
from xbarc.runtime.kernels import numba_kernel
from callee import inner


@numba_kernel()
def outer(x):
    return inner(x) * 10
"""

CALLEE = """
from xbarc.runtime.kernels import numba_kernel


@numba_kernel()
def inner(x):
    return x + {step}
"""


def run_outer(folder: Path) -> tuple[int, str, str]:
    """outer(1), its callee digest and inner's (a fresh process, caches on disk)."""
    script = (
        "from caller import outer\nfrom callee import inner\n"
        "print(outer(1), repr(outer.callee_digest()), repr(inner.callee_digest()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env={"PYTHONPATH": f"{folder}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    value, outer_digest, inner_digest = done.stdout.split()
    return int(value), outer_digest, inner_digest


def test_a_caller_runs_the_new_code_of_an_edited_callee(tmp_path):
    (tmp_path / "caller.py").write_text(textwrap.dedent(CALLER))
    (tmp_path / "callee.py").write_text(textwrap.dedent(CALLEE.format(step=1)))
    first, digest, leaf = run_outer(tmp_path)
    assert first == 20
    assert leaf == "''"  # a kernel that calls none keeps Numba's own name
    assert any((tmp_path / "__pycache__").glob("*.nbi"))  # cached on disk
    # a longer file: Numba's own check of the callee's cache (its file's modification time
    # and size) sees the edit even within the file system's time resolution
    (tmp_path / "callee.py").write_text(textwrap.dedent(CALLEE.format(step=10)))
    second, changed, _ = run_outer(tmp_path)
    assert second == 110
    assert changed != digest
    again, same, _ = run_outer(tmp_path)  # unchanged sources: the same cache name
    assert (again, same) == (110, changed)
