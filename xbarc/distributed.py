"""Where independent pieces of work run: in this process, or on Dask workers.

    with distributed.engine(EngineOptions(workers=2)) as pool:
        for index, result in pool.map(run_point, points):
            ...

`map` calls a picklable module-level function on every item and yields `(index, result)`
pairs as the results arrive (in any order on several workers). Every item carries its own
seeds, so a result never depends on which worker computed it or on how many there are.
`check(options)` validates the options before any work starts.

This first version runs everything in this process; the Dask engine (local worker
processes, or an existing cluster at `scheduler`) plugs in behind the same `map`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xbarc.diagnostics import XbarcError


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """`workers`: local worker processes (None or 1: this process); `scheduler`: the
    address of an existing Dask scheduler (then `workers` is ignored)."""

    workers: int | None = None
    scheduler: str | None = None


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """`--workers N` and `--scheduler ADDRESS` on a subcommand (eval, sweep)."""
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="spread the work over N local worker processes (a Dask LocalCluster on "
        "127.0.0.1, one thread each; default 1: this process, no Dask); results do not "
        "depend on N",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the work on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (started "
        "with `dask scheduler` and `dask worker ADDRESS`, each worker able to import xbarc)",
    )


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options of parsed arguments (`add_engine_options`)."""
    return EngineOptions(workers=args.workers, scheduler=args.scheduler)


def check(options: EngineOptions) -> None:
    """A one-line error for options that cannot work, before any work starts."""
    if options.workers is not None and options.workers < 1:
        raise XbarcError(f"--workers must be at least 1, got {options.workers}")


class SerialEngine:
    """Runs every item in this process, in order."""

    workers = 1

    def map(
        self, function: Callable[[Any], Any], items: Iterable[Any]
    ) -> Iterator[tuple[int, Any]]:
        for index, item in enumerate(items):
            yield index, function(item)


@contextmanager
def engine(options: EngineOptions) -> Iterator[SerialEngine]:
    """The engine `options` ask for, open for the `with` block."""
    check(options)
    yield SerialEngine()
