"""Moving averages of sensor readings, written as a small command-line tool.

The readings come one a line from a file or standard input; the tool prints the simple,
exponential and windowed median averages beside each reading.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Averages:
    """The three averages after one reading."""

    reading: float
    simple: float
    exponential: float
    median: float


def read_values(lines: Iterable[str]) -> Iterator[float]:
    """The numbers of `lines`, skipping blank lines and comments."""
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            yield float(text)
        except ValueError:
            raise SystemExit(f"line {number}: {text!r} is not a number") from None


def averages(values: Iterable[float], window: int, alpha: float) -> Iterator[Averages]:
    """Running averages over the last `window` values, the exponential one with `alpha`."""
    if window < 1:
        raise ValueError("window must be at least 1")
    recent: deque[float] = deque(maxlen=window)
    total = 0.0
    smoothed = None
    for value in values:
        if len(recent) == window:
            total -= recent[0]
        recent.append(value)
        total += value
        smoothed = value if smoothed is None else alpha * value + (1 - alpha) * smoothed
        yield Averages(value, total / len(recent), smoothed, statistics.median(recent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="readings, one a line (default: stdin)")
    parser.add_argument("--window", type=int, default=5, help="values in the window")
    parser.add_argument("--alpha", type=float, default=0.3, help="exponential weight")
    args = parser.parse_args(argv)
    source = open(args.file, encoding="utf-8") if args.file else sys.stdin
    with source:
        for row in averages(read_values(source), args.window, args.alpha):
            print(
                f"{row.reading:10.3f} {row.simple:10.3f} "
                f"{row.exponential:10.3f} {row.median:10.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
