"""Where independent pieces of work run: in this process, or on Dask workers.

    with distributed.engine(EngineOptions(workers=2)) as pool:
        for index, result in pool.map(run_point, points):
            ...

`map` calls a picklable module-level function on every item and yields `(index, result)`
pairs as the results arrive (in any order on several workers). Every item carries its own
seeds, so a result never depends on which worker computed it or on how many there are.
`map(function, items, shared=value)` calls `function(value, item)` instead: `value` (a
program, say) travels to each worker once, not once per item. `check(options)` validates
the options before any work starts (an unreachable scheduler included).

Engines: `workers` None or 1 runs everything in this process, in order (no Dask);
`workers` N > 1 starts a Dask `LocalCluster` of N worker processes on 127.0.0.1 (one
thread each, Numba single-threaded in each: one worker per core), closed with the `with`
block; `scheduler` connects to an existing cluster. Dask is imported only for those two,
so that `xbarc --help` and a plain eval start fast. A worker imports xbarc itself: it must
find the same code (a local cluster's workers inherit this process's `sys.path`; a
remote cluster's workers need xbarc installed at the same version).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from xbarc.diagnostics import XbarcError

# seconds to wait for a scheduler to answer (check and connect) and for a cluster to have a
# worker: an address that does not answer is an error, not a hang
CONNECT_TIMEOUT = 5.0
WORKER_TIMEOUT = 20.0
# address schemes a scheduler address may have (bare HOST:PORT means tcp)
SCHEMES = ("tcp", "tls")
# the environment of a local cluster's worker processes: one worker per core, each on one
# thread (Numba's parallel kernels and onnxruntime's GEMMs would otherwise each start a
# thread per core in every worker and fight over the cores)
WORKER_ENVIRONMENT = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "XBARC_THREADS": "1"}


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
    """A one-line error for options that cannot work, before any work starts: fewer than
    one worker, both options, a malformed scheduler address, or a scheduler that does not
    answer (a TCP connection, without Dask)."""
    if options.workers is not None and options.workers < 1:
        raise XbarcError(
            f"--workers must be at least 1, got {options.workers}",
            hint="1 runs in this process, N > 1 on N local worker processes",
        )
    if options.scheduler is None:
        return
    if options.workers is not None and options.workers > 1:
        raise XbarcError(
            "--workers and --scheduler: give one",
            hint="--workers N starts local workers; --scheduler ADDRESS uses a cluster's",
        )
    import socket

    host, port = scheduler_host(options.scheduler)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise XbarcError(
            f"--scheduler {options.scheduler}: cannot reach a Dask scheduler there ({reason})",
            hint="start one with `dask scheduler` (it prints its address) and workers with "
            "`dask worker ADDRESS`, or check the host and port",
        ) from None


def scheduler_host(address: str) -> tuple[str, int]:
    """(host, port) of a scheduler address `tcp://HOST:PORT`, `tls://HOST:PORT` or
    `HOST:PORT`; anything else is a one-line error."""
    scheme, separator, rest = address.partition("://")
    if not separator:
        scheme, rest = "tcp", address
    host, colon, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8786
    if scheme not in SCHEMES or not colon or not host or not port.isdigit():
        raise XbarcError(
            f"--scheduler {address!r} is not a scheduler address",
            hint="give tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786 (what `dask scheduler` prints)",
        )
    if not 0 < int(port) < 65536:
        raise XbarcError(f"--scheduler {address}: port {port} is not a port (1 to 65535)")
    return host, int(port)


class Engine(Protocol):
    """What `engine` yields: `workers` (how many work at once) and `map`."""

    workers: int

    def map(
        self, function: Callable[..., Any], items: Iterable[Any], shared: Any = None
    ) -> Iterator[tuple[int, Any]]: ...


class SerialEngine:
    """Runs every item in this process, in order."""

    workers = 1

    def map(
        self, function: Callable[..., Any], items: Iterable[Any], shared: Any = None
    ) -> Iterator[tuple[int, Any]]:
        for index, item in enumerate(items):
            yield index, (function(item) if shared is None else function(shared, item))


class DaskEngine:
    """Runs items as tasks on a Dask cluster through `client`; `workers` its workers."""

    def __init__(self, client: Any, workers: int):
        self.client = client
        self.workers = workers

    def map(
        self, function: Callable[..., Any], items: Iterable[Any], shared: Any = None
    ) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        items = list(items)
        if not items:
            return
        # pure=False: two equal items are two tasks (a pure key would merge them into one)
        if shared is None:
            futures = self.client.map(function, items, pure=False)
        else:
            [value] = self.client.scatter([shared], broadcast=True, hash=False)
            futures = self.client.map(
                call_shared, items, function=function, shared=value, pure=False
            )
        index = {future.key: number for number, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                yield index[future.key], task_result(future)
        finally:  # an error, Ctrl-C or a caller that stops early: drop the rest
            self.client.cancel(futures)


def call_shared(item: Any, function: Callable[[Any, Any], Any], shared: Any) -> Any:
    """`function(shared, item)` on a worker (`map(..., shared=...)`)."""
    return function(shared, item)


def task_result(future: Any) -> Any:
    """The result of a finished task; a worker that died on it as a one-line error (an
    XbarcError the task raised comes back as it is)."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise XbarcError(
            "a Dask worker died while running a task (out of memory?)",
            hint="give the workers more memory, or fewer samples a task (--batch-size)",
        ) from None


@contextmanager
def engine(options: EngineOptions) -> Iterator[Engine]:
    """The engine `options` ask for, open for the `with` block."""
    check(options)
    if options.scheduler is not None:
        with cluster_client(options.scheduler) as client:
            workers = worker_count(client, options.scheduler)
            check_same_code(client, f"--scheduler {options.scheduler}")
            yield DaskEngine(client, workers)
    elif options.workers is not None and options.workers > 1:
        with local_client(options.workers) as client:
            check_same_code(client, f"--workers {options.workers}")
            yield DaskEngine(client, options.workers)
    else:
        yield SerialEngine()


@contextmanager
def local_client(workers: int) -> Iterator[Any]:
    """A client of a new LocalCluster of `workers` single-threaded worker processes on
    127.0.0.1: no dashboard, no log lines (a failed task raises in `map`), closed at the end."""
    import logging

    from distributed import Client, LocalCluster

    environment = {**WORKER_ENVIRONMENT, "PYTHONPATH": worker_python_path()}
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # no dashboard; the scheduler's few HTTP routes (health, metrics) on a free port,
        # not on 8787 (taken by another cluster, it would print a warning)
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.CRITICAL,  # a task's error comes back to the caller
        env=environment,
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def worker_python_path() -> str:
    """PYTHONPATH of local workers: this process's, after the folder xbarc is imported
    from (so that they run the same code, an unpacked checkout included)."""
    import xbarc

    root = os.path.dirname(os.path.dirname(os.path.abspath(xbarc.__file__)))
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([root, inherited] if inherited else [root])


@contextmanager
def cluster_client(address: str) -> Iterator[Any]:
    """A client of the scheduler at `address`, closed at the end; no answer within
    CONNECT_TIMEOUT is a one-line error."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise XbarcError(
            f"--scheduler {address}: no Dask scheduler answers there ({error})",
            hint="start one with `dask scheduler`, or check the host and port",
        ) from None
    with client:
        yield client


def code_digest() -> str:
    """A sha256 of xbarc's Python sources (each file's path in the package and its
    bytes): two processes with the same digest run the same xbarc."""
    import hashlib

    import xbarc

    root = os.path.dirname(os.path.abspath(xbarc.__file__))
    digest = hashlib.sha256()
    found = []
    for folder, _, names in os.walk(root, followlinks=True):  # runtime, passes: links
        found += [os.path.join(folder, name) for name in names if name.endswith(".py")]
    for path in sorted(found):
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as stream:
            digest.update(stream.read())
    return digest.hexdigest()


def check_same_code(client: Any, where: str) -> None:
    """The cluster's scheduler and workers must run this xbarc (results would not be
    this process's, or tasks would not load): else a one-line error, before any work."""
    mine = code_digest()
    try:
        theirs = {"the scheduler": client.run_on_scheduler(code_digest)}
        theirs.update(client.run(code_digest))
    except Exception as error:  # their xbarc cannot even load the check
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise XbarcError(
            f"{where}: the cluster cannot run this xbarc ({type(error).__name__}: {reason[:200]})",
            hint="install the same xbarc on the scheduler and every worker (or start them "
            "with PYTHONPATH set to this checkout)",
        ) from None
    other = next((name for name, digest in theirs.items() if digest != mine), None)
    if other is not None:
        raise XbarcError(
            f"{where}: {other} runs another xbarc than this one",
            hint="install the same xbarc on the scheduler and every worker (or start them "
            "with PYTHONPATH set to this checkout)",
        )


def worker_count(client: Any, address: str) -> int:
    """The cluster's worker threads (tasks it runs at once), once it has a worker (else
    a one-line error)."""
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
    except TimeoutError:
        raise XbarcError(
            f"--scheduler {address}: the cluster has no workers",
            hint="start some with `dask worker ADDRESS`",
        ) from None
    return sum(client.nthreads().values())  # tasks that run at once
