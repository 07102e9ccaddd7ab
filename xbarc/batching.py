"""The batch size of `xbarc eval` and `xbarc calibrate` when the user gives none.

    choice = choose_batch(program, [settings], samples)   # BatchChoice
    choice.size, choice.describe()    # 360, "auto: ~0.11 MB a sample, 1 GiB budget"

A batch runs the simulator's kernels over all its samples at once: batch 1 pays the
Python of every layer and read per sample (the digits LeNet's 10-seed sensitivity eval
took 20 minutes at batch 1, seconds at 360). So the batch is as large as a memory
budget allows: the budget over the bytes one sample costs the runtime
(`xbarc.runtime.memory.sample_bytes`, an estimate from the program that leans high),
never more than the samples there are. The budget is 1 GiB, or half the memory the
system has available (/proc/meminfo MemAvailable) if that is less. A program whose
inputs take only the batch it was compiled for (`batch=fixed`) keeps that batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Program
from xbarc.runtime.noise import NoiseSettings

DEFAULT_BUDGET = 1 << 30  # bytes of batch-dependent memory a run may take
AVAILABLE_SHARE = 0.5  # of the system's available memory, where that is less
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True, slots=True)
class BatchChoice:
    """A batch size and where it came from: `given` (--batch-size), `fixed` (the
    program's compiled batch), `reference` (eval: the batch the reference ONNX model
    fixes), `whole` (calibration data of inputs without a batch axis: a sample a run) or
    `auto` (budget over the bytes of a sample)."""

    size: int
    how: str  # "given", "fixed", "reference", "whole" or "auto"
    sample_bytes: int = 0  # auto: the estimated bytes of one sample
    budget: int = 0  # auto: the memory budget in bytes

    def describe(self) -> str:
        """How the size was chosen, for the report line after "in batches of N"."""
        if self.how == "given":
            return "--batch-size"
        if self.how == "fixed":
            return "the program's fixed batch"
        if self.how == "reference":
            return "the reference model's fixed batch"
        if self.how == "whole":
            return "a sample a run: inputs without a batch axis"
        per_sample, budget = format_bytes(self.sample_bytes), format_bytes(self.budget)
        return f"auto: ~{per_sample} a sample, {budget} budget"


def choose_batch(
    program: Program,
    settings: Sequence[NoiseSettings],
    samples: int,
    batch_size: int | None = None,
    budget: int | None = None,
    copies: int = 1,
) -> BatchChoice:
    """The batch for `samples` samples of `program` run under each of `settings` (the
    costliest counts): `batch_size` if given (at least 1), else the program's fixed
    batch, else `budget` (default `memory_budget()`) over the bytes of a sample times
    `copies` (executors whose workspaces live at once), at least 1 and at most `samples`."""
    from xbarc.runtime.memory import sample_bytes

    if batch_size is not None:
        if batch_size < 1:
            raise XbarcError(f"--batch-size must be at least 1, got {batch_size}")
        return BatchChoice(batch_size, "given")
    fixed = fixed_batch(program)
    if fixed is not None:
        return BatchChoice(fixed, "fixed")
    budget = memory_budget() if budget is None else budget
    per_sample = copies * max(sample_bytes(program, s) for s in settings)
    size = max(1, min(samples, budget // per_sample))
    return BatchChoice(size, "auto", per_sample, budget)


def fixed_batch(program: Program) -> int | None:
    """The compiled batch size of a program whose inputs take no other (else None)."""
    for graph_input in program.inputs:
        if graph_input.fixed_batch:
            return graph_input.type.static_shape()[0]
    return None


def memory_budget() -> int:
    """1 GiB, or half the memory the system has available if that is less."""
    available = available_memory()
    if available is None:
        return DEFAULT_BUDGET
    return max(1, min(DEFAULT_BUDGET, int(available * AVAILABLE_SHARE)))


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none: not Linux)."""
    try:
        text = MEMINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def format_bytes(count: int) -> str:
    """`count` bytes for a person: whole GiB as "1 GiB", else MB with two or three
    significant digits ("0.11 MB", "24 MB", "512 MB")."""
    if count >= 1 << 30 and count % (1 << 30) == 0:
        return f"{count >> 30} GiB"
    megabytes = count / 1e6
    if megabytes >= 10:
        return f"{megabytes:.0f} MB"
    return f"{megabytes:.2g} MB"
