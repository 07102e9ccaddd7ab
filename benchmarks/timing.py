"""What the benchmark scripts time with: best-of-N wall and CPU seconds, the load average."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def best_time(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `function`, each the best of `repeat`
    runs after a warm-up: the CPU time, summed over the threads, moves less than the wall
    time when other work shares the cores."""
    function()  # warm up
    walls, cpus = [], []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def load() -> str:
    """The load averages over 1, 5 and 15 minutes, as "a / b / c"."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())
