"""Array kernels of the runtime, and what they share: the backend switch, lazy Numba, threads.

Kernels take arrays and numbers, never IR objects. Each module holds one concern, every
Numba kernel a module-level function (suffix `_numba`) beside its numpy twin (suffix
`_numpy`) and the public function that checks the arguments and dispatches to one of them:
- `im2col`: `unfold` (im2col) and `fold` (col2im), the patch geometry of convolutions;
- `dac`: the DAC's input levels and their bit slices (`dac_planes`);
- `adc`: the ADC read-out of crossbar columns (`adc_accumulate`) and `dequantize`;
- `gemm`: exact integer and float GEMMs on onnxruntime (no Numba);
- `sparse_read`: exact integer reads of a layer's non-zero cells, every read column and
  input slice at once, converted as they are summed (`sparse_read_accumulate`: GEMM and
  ADC in one).
`set_backend` chooses the backend of every module at once; tests hold the two to
bit-identical results. Numba is imported on the first call of a Numba kernel
(`numba_kernel`), so importing the runtime stays cheap; compiled code is cached on disk
next to the kernel's module, under a name that carries a digest of the source files of the
kernels it calls (`NumbaKernel.callee_digest`): Numba checks only the caller's own file, so
without it a kernel would keep calling the old code of a callee edited since. Threads:
`XBARC_THREADS=N` (default: all the cores this process may use) caps the parallel Numba
kernels (`use_threads`) and the onnxruntime sessions of the GEMMs (`gemm.py`) and of the
ideal chip (`effective.py`); `thread_count()` reads it. Hot loops index with unsigned
integers where it matters: Numba wraps negative signed indices, which blocks vectorization.

Layouts ("columns": one row per crossbar row, one column per patch). A crossbar layer
computes, per group g, `y[g] = W[g]^T @ columns[g]`, one GEMM for the whole batch:
- `unfold` gives `[groups, C/groups*prod(kernel), N*prod(out)]`: row `(c, k0, k1, ...)`
  (channel in group, then kernel taps, row-major), column `n*prod(out) + output pixel`;
- for ConvTranspose, the rows are the input channels, `[groups, C/groups, N*prod(in)]`,
  and `fold` adds the products `[groups, cout_per_group*prod(kernel), N*prod(in)]` into
  the output image (col2im);
- `adc_accumulate` reads out products `[read columns, P]` into `[outputs, P]`.
Patches run along the last, contiguous axis, so per-column work (ADC, accumulation)
vectorizes over them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xbarc.diagnostics import XbarcError

BACKENDS = ("numba", "numpy")
_backend = "numba"


def set_backend(name: str) -> None:
    """Make the public kernels run on `name`: "numba" (the default) or "numpy"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {BACKENDS}")
    _backend = name


def backend() -> str:
    return _backend


def touched(shape: tuple[int, ...], dtype: npt.DTypeLike, fill: float = 0) -> np.ndarray:
    """A new array filled on the calling thread. Parallel kernels write their outputs from
    several threads, and a fresh allocation's first-touch page faults taken there cost
    ~20x more than one memset here (5 ms instead of 0.2 ms for 1.4 MB on 2 cores)."""
    return np.full(shape, fill, dtype=dtype)


def check_accumulator(kernel: str, acc: np.ndarray, patches: int) -> None:
    """Raise ValueError unless `acc` is the writable C-contiguous int64 [outputs, `patches`]
    accumulator that `kernel`'s ADC read-out adds its codes into."""
    if (
        acc.dtype != np.int64
        or acc.ndim != 2
        or acc.shape[1] != patches
        or not (acc.flags.writeable and acc.flags.c_contiguous)
    ):
        raise ValueError(
            f"{kernel}: acc is {acc.dtype} {acc.shape}; expected writable "
            f"C-contiguous int64 (outputs, {patches})"
        )


# Work (output elements) below which a copying kernel runs on the calling thread alone.
# Measured (benchmarks/parallel_work.py, RESULTS "Parallel work threshold"): with the other
# core free, a second thread pays from ~64 k elements on (dequantize_items 1.5x, the pool
# rows 1.6x there, the 2x2 pool 1.6x at 123 k), and a launch costs microseconds
# (GOMP_SPINCOUNT below), not the 0.2 ms of the workqueue layer; with the other core
# busy, a second thread loses at every size (up to 10x on the smallest kernels). 2^18:
# the quiet gain where it is largest (1.7-2x from 250 k on: on the digits LeNet the gather
# of the second conv, the first conv's dequantize and pool), the many small kernels kept
# out of the busy loss. The ADC read-out, the costliest kernel per element, always runs in
# parallel.
PARALLEL_WORK = 1 << 18


THREADS_VARIABLE = "XBARC_THREADS"


def thread_count() -> int:
    """The threads the runtime may use: `XBARC_THREADS` (a whole number from 1) if set, else
    every core this process may run on. Read at each call, so a process can change it
    between runs; onnxruntime sessions take it when they are made (the first run of each)."""
    return _thread_count(os.environ.get(THREADS_VARIABLE, ""))


@functools.lru_cache(maxsize=16)
def _thread_count(value: str) -> int:
    """`thread_count` for the variable's text (cached: every kernel launch asks)."""
    value = value.strip()
    if not value:
        return available_cores()
    if not value.isdigit() or int(value) < 1:
        raise XbarcError(
            f"{THREADS_VARIABLE}={value!r} is not a thread count",
            hint=f"set {THREADS_VARIABLE} to a whole number from 1, e.g. {THREADS_VARIABLE}=1 "
            f"for one thread, or unset it to use all {available_cores()} cores",
        )
    return int(value)


@functools.cache
def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def use_threads(work: int) -> None:
    """Set the threads of the next Numba kernel, which produces `work` elements: one below
    PARALLEL_WORK, else `thread_count()` (at most the NUMBA_NUM_THREADS that Numba started
    with). This is Numba's setting for the calling thread: it stays in effect after the
    kernel. Numba is told only when the count changes (`_launch.threads` remembers it per
    calling thread): setting it costs ~1.5 us, and a LeNet run launches ~17 kernels. Code
    that calls `numba.set_num_threads` itself should call `forget_threads()` after."""
    threads = 1 if work < PARALLEL_WORK else parallel_threads()
    if getattr(_launch, "threads", 0) != threads:
        import_numba().set_num_threads(threads)
        _launch.threads = threads


def parallel_threads() -> int:
    """The threads of a parallel kernel: `thread_count()`, at most the NUMBA_NUM_THREADS
    Numba started with."""
    return min(thread_count(), import_numba().config.NUMBA_NUM_THREADS)


def forget_threads() -> None:
    """Make the next `use_threads` of the calling thread set Numba's threads whatever it
    last set (for code that set them behind its back)."""
    _launch.threads = 0


_launch = threading.local()  # per Python thread: the threads `use_threads` last set


def import_numba() -> Any:
    """The numba module, imported on first use with the runtime's threading settings."""
    # Threading layer: Numba's default choice (TBB if installed, else OpenMP), but GNU
    # OpenMP's threads must not keep spinning after a kernel: they starve the BLAS threads
    # of the GEMMs that follow (ResNet-50 ran 4x slower on 2 cores). A short spin keeps
    # launches at ~2 us (the `workqueue` layer takes ~140 us per launch). The variable is
    # read when OpenMP starts, at the first parallel launch.
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    import numba

    return numba


class NumbaKernel:
    """A module-level kernel compiled with `numba.njit(cache=True, **options)` on its first
    call. Its module names `prange` (a plain `range` until then) and may call other Numba
    kernels; both are bound to their Numba versions at compile time."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]):
        self.function = function
        self.options = options
        self._compiled: Any = None
        self._source_digest: str | None = None
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any) -> Any:
        compiled = self._compiled if self._compiled is not None else self.compiled()
        return compiled(*args)

    def compiled(self) -> Any:
        """The Numba dispatcher (compiled, or loaded from the on-disk cache, once)."""
        if self._compiled is not None:
            return self._compiled
        numba = import_numba()
        function = self.function
        # the module's globals as Numba must see them: numba.prange, and the kernels this
        # one calls compiled (only those: the module's others may not be compiled yet)
        names = dict(function.__globals__)
        names["prange"] = numba.prange
        for name, callee in self.callees().items():
            names[name] = callee.compiled()
        twin = types.FunctionType(function.__code__, names, function.__name__)
        # names the on-disk cache's files: Numba checks the stamp of this kernel's file only,
        # so the name changes with the sources of the kernels it calls
        digest = self.callee_digest()
        twin.__qualname__ = function.__qualname__ + (f"_{digest}" if digest else "")
        self._compiled = numba.njit(cache=True, **self.options)(twin)
        return self._compiled

    def callees(self) -> dict[str, NumbaKernel]:
        """The Numba kernels this one calls, by their global names in its module."""
        names = self.function.__globals__
        found = {name: names.get(name) for name in self.function.__code__.co_names}
        return {name: kernel for name, kernel in found.items() if isinstance(kernel, NumbaKernel)}

    def source_digest(self) -> str:
        """A digest of this kernel's module file and, through `callee_digest`, of every
        kernel it calls, directly or not."""
        if self._source_digest is None:
            digest = hashlib.sha256(Path(inspect.getfile(self.function)).read_bytes())
            digest.update(self.callee_digest().encode())
            self._source_digest = digest.hexdigest()[:12]
        return self._source_digest

    def callee_digest(self) -> str:
        """A digest of the kernels this one calls ("" when it calls none)."""
        callees = self.callees()
        if not callees:
            return ""
        digest = hashlib.sha256()
        for callee in callees.values():
            digest.update(callee.source_digest().encode())
        return digest.hexdigest()[:12]


def numba_kernel(**options: Any) -> Callable[[Callable[..., Any]], NumbaKernel]:
    """Decorate a module-level function as a Numba kernel, compiled on its first call with
    these options of `numba.njit` (e.g. parallel=True)."""
    return lambda function: NumbaKernel(function, options)


prange = range  # what `for task in prange(...)` means in a kernel run as plain Python
