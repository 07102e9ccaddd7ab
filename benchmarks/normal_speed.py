"""What a standard normal costs: noise format 3 (`runtime/gaussian.py`) against format 2.

    python benchmarks/normal_speed.py [--draws 4194304] [--repeat 7] [--avx2] [--record]

One thread. Every noisy read-out draws one normal per ADC conversion (the digits ResNet
283 M a run in `rram`), through `gaussian.normals(key, first, count, out, ...)`; the noisy
read kernel asks for a run of at most 512 patches at a time (sparse_read.CHUNK). So the
draws are timed in calls of 512 (and of 511 from an odd index: the unaligned case), and as
one call of --draws, each the best of --repeat, the two formats taking turns in the same
process. Format 2 (one splitmix64 hash per pair, polynomials to float32's last bit) is
kept here, copied from gaussian.py before format 3, to measure against.

--avx2 also times both in a child process compiled for AVX2 only (Numba's CPU name
haswell, no AVX-512): this machine has AVX-512, the target machines of issue 18 may not.
Goal (issue 18, third round): 0.25 ns a draw or less on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the xbarc of this checkout, not an installed one
from results import record_if  # noqa: E402

from xbarc.runtime import gaussian  # noqa: E402
from xbarc.runtime.kernels import import_numba, numba_kernel  # noqa: E402

CALL = 512  # draws per call of the noisy read kernel (a run of patches)
AVX2_ONLY = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}

# ---------------------------------------------------------------------------------------
# Format 2, as gaussian.py drew it before format 3 (the same bits as its numpy twin then).

F32 = np.float32
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
LN2 = F32(math.log(2.0))
SQRT2 = F32(math.sqrt(2.0))
TWO_PI = F32(2 * math.pi)
LOG_TERMS = tuple(F32(1.0 / k) for k in range(11, 0, -2))
COS_TERMS = tuple(F32((-1) ** k / math.factorial(2 * k)) for k in range(7, -1, -1))
SIN_TERMS = tuple(F32((-1) ** k / math.factorial(2 * k + 1)) for k in range(6, -1, -1))


@numba_kernel(inline="always")
def format2_mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba_kernel(error_model="numpy")
def format2_pairs(key, first_pair, count, out, wide, turn, exponents):
    for k in range(count):
        h = format2_mix(key + (first_pair + np.uint64(k)) * GOLDEN)
        wide[k] = np.float32((h >> np.uint64(40)) * np.uint64(2) + np.uint64(1))
        turn[k] = np.float32(h & np.uint64(0xFFFFFF)) * np.float32(1.0 / 16777216.0) + np.float32(
            0.5 / 16777216.0
        )
    bits = wide.view(np.int32)
    for k in range(count):
        b = bits[k]
        exponents[k] = np.float32((b >> 23) - 127)
        bits[k] = (b & np.int32(0x7FFFFF)) | np.int32(0x3F800000)
    for k in range(count):
        mantissa = wide[k]
        exponent = exponents[k]
        big = mantissa > SQRT2
        mantissa = mantissa * np.float32(0.5) if big else mantissa
        exponent = exponent + np.float32(1.0) if big else exponent
        s = (mantissa - np.float32(1.0)) / (mantissa + np.float32(1.0))
        s2 = s * s
        series = LOG_TERMS[0]
        for j in range(1, len(LOG_TERMS)):
            series = series * s2 + LOG_TERMS[j]
        log_u = np.float32(2.0) * s * series + (exponent - np.float32(25.0)) * LN2
        radius = np.sqrt(np.float32(-2.0) * log_u)
        d = np.float32(0.5) - turn[k]
        t = abs(d)
        far = t > np.float32(0.25)
        y = TWO_PI * (np.float32(0.5) - t if far else t)
        y2 = y * y
        cosine = COS_TERMS[0]
        for j in range(1, len(COS_TERMS)):
            cosine = cosine * y2 + COS_TERMS[j]
        sine = SIN_TERMS[0]
        for j in range(1, len(SIN_TERMS)):
            sine = sine * y2 + SIN_TERMS[j]
        sine = sine * y
        out[2 * k] = radius * (cosine if far else -cosine)
        out[2 * k + 1] = radius * (sine if d >= np.float32(0.0) else -sine)


@numba_kernel()
def format2_normals(key, first, count, out, wide, turn, exponents):
    if count <= 0:
        return 0
    first_pair = first >> np.uint64(1)
    last_pair = (first + np.uint64(count - 1)) >> np.uint64(1)
    format2_pairs(key, first_pair, np.int64(last_pair - first_pair) + 1, out, wide, turn, exponents)
    return np.int64(first & np.uint64(1))


# ---------------------------------------------------------------------------------------


def timed_calls(normals, draws: int, length: int, first: int, repeat: int) -> float:
    """Best seconds of `draws` draws in calls of `length` from index `first`, each call
    through a compiled loop (no Python per call)."""
    numba = import_numba()

    @numba.njit
    def loop(normals, key, start, total, length, out, wide, turn, exponents):
        check = 0.0
        for at in range(start, start + total, length):
            offset = normals(key, np.uint64(at), length, out, wide, turn, exponents)
            check += out[offset]
        return check

    out = np.empty(length + 2, np.float32)
    scratch = [np.empty(length // 2 + 2, np.float32) for _ in range(3)]
    kernel = normals.compiled()
    args = (kernel, np.uint64(12345), first, draws, length, out, *scratch)
    loop(*args)
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        loop(*args)
        best = min(best, time.perf_counter() - started)
    return best


def measure(draws: int, repeat: int) -> list[dict]:
    """ns a draw of formats 2 and 3, per case, the two taking turns."""
    numba = import_numba()
    numba.set_num_threads(1)
    cases = [(f"calls of {CALL}", CALL, 0), (f"calls of {CALL - 1}, odd start", CALL - 1, 1)]
    cases.append((f"one call of {draws}", draws, 0))
    rows = []
    for name, length, first in cases:
        total = (draws // length) * length
        best = {"format 2": math.inf, "format 3": math.inf}
        for _ in range(3):  # turns, so a change of load hits both
            for label, normals in (("format 2", format2_normals), ("format 3", gaussian.normals)):
                seconds = timed_calls(normals, total, length, first, max(1, repeat // 3))
                best[label] = min(best[label], seconds / total * 1e9)
        rows.append({"case": name, **best})
    return rows


def host_isa() -> str:
    features = import_numba().config.CPU_FEATURES
    if features is None:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return "AVX-512" if "+avx512f" in features else "AVX2"


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1 << 22, help="draws per timing")
    parser.add_argument("--repeat", type=int, default=9, help="timings per case (best kept)")
    parser.add_argument(
        "--avx2", action="store_true", help="also time code compiled for AVX2 only (a child)"
    )
    parser.add_argument(
        "--child", action="store_true", help="print the figures as JSON (--avx2's child process)"
    )
    parser.add_argument("--record", action="store_true", help="write RESULTS.md's section")
    return parser


def table(rows: list[dict], isa: str) -> list[str]:
    lines = []
    for row in rows:
        old, new = row["format 2"], row["format 3"]
        lines.append(f"| {isa} | {row['case']} | {old:.3f} ns | {new:.3f} ns | {old / new:.2f}x |")
    return lines


def main() -> None:
    args = build_parser().parse_args()
    rows = measure(args.draws, args.repeat)
    if args.child:
        print(json.dumps(rows))
        return
    lines = [
        "| code | case | format 2 | format 3 | faster by |",
        "|---|---|---:|---:|---:|",
        *table(rows, f"{host_isa()} (this machine)"),
    ]
    if args.avx2:
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--draws", str(args.draws)]
            + ["--repeat", str(args.repeat)],
            env={**os.environ, **AVX2_ONLY},
            capture_output=True,
            text=True,
            check=True,
        )
        lines += table(json.loads(child.stdout.splitlines()[-1]), "AVX2 only")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print("\n".join(lines))
    print(f"load average {load}")
    body = "\n".join(
        [
            "### Standard normals, one thread (`benchmarks/normal_speed.py`)",
            "",
            f"ns a draw, best of {args.repeat} timings of {args.draws} draws, formats 2 and 3",
            "taking turns in one process; load average "
            + f"{load} (2 cores shared by other work).",
            "",
            *lines,
        ]
    )
    record_if(args.record, "normal speed", body)


if __name__ == "__main__":
    main()
