"""Simulation speed: xbarc against onnxruntime and IBM's aihwkit-lightning (issue 18).

    python benchmarks/sim_speed.py [--repeats 3] [--lightning-python PATH] [--record]

Measures, in one run and on this checkout (the repository this script lives in):
1. matched settings on the trained digits CNN (tests/fixtures/digits/lenet.onnx, the 360
   test images repeated to --batch 540): onnxruntime float (= 1x), xbarc `quant` and
   aihwkit-lightning 2.1 at the same settings, and each one's accuracy on the labels.
   xbarc: 8-bit weights in 8-bit cells (`--cell-bits 8`), the 8-bit input in one DAC step
   (`--hw-set dac.slice_bits=8`), 8-bit ADC, 128x128 tiles, DAC and ADC ranges from
   `xbarc calibrate` on the 360 images (`--set input_range=calibrated --set
   adc_range=calibrated`). aihwkit-lightning runs benchmarks/lightning_side.py in its own
   environment (`bash benchmarks/setup_lightning.sh` makes it; --lightning-python to point
   elsewhere): skipped with a message when that environment is absent;
2. the faithful default (the compiler's defaults: 8-bit weights in 2-bit cells,
   differential, 1-bit DAC steps, 8-bit ADC over the full range) in `ideal`, `quant` and
   `rram` against onnxruntime on every digits fixture (dense and pruned), batch --batch;
3. the same on SqueezeNet (onnx's light_squeezenet) and ResNet-50 (light_resnet50 with
   trained-like weights from benchmarks/trained_like.py, seed 0), batch 1;
4. the scaling from 1 to 2 threads of `ideal`, `quant` and `rram` on the digits lenet and
   resnet (subprocesses with XBARC_THREADS=1 and 2);
5. where the time goes: the top functions (cProfile, own time) of one run per case.
Times are the best of --repeats runs after a warm-up run (the chip programmed, the kernels
compiled); the slowest cases (a run over --slow seconds) are timed once. onnxruntime,
aihwkit-lightning and the matched xbarc are timed on all the threads and on one (xbarc's
one in a subprocess with XBARC_THREADS=1), and the faster kept: on a busy machine their
thread pools can lose several times over; the matched xbarc and aihwkit-lightning are
timed over at least 10 runs. Every xbarc time
is `xbarc.InferenceSession.run`, so the script measures whatever read paths the runtime has.
`--record` writes the section "Simulation speed (benchmarks/sim_speed.py)" of RESULTS.md,
with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # this checkout's xbarc, not another installed one

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from results import record_if  # noqa: E402

import xbarc  # noqa: E402
from xbarc.calibrate import calibrate  # noqa: E402
from xbarc.compiler import CompileOptions, compile_onnx  # noqa: E402
from xbarc.ir.tile import Program  # noqa: E402
from xbarc.runtime.kernels import available_cores, thread_count  # noqa: E402

SECTION = "Simulation speed (benchmarks/sim_speed.py)"
DIGITS = ROOT / "tests" / "fixtures" / "digits"
DATA = DIGITS / "digits_test.npz"
LIGHT = Path(onnxruntime.__file__).parent.parent / "onnx" / "backend" / "test" / "data" / "light"
LIGHTNING_PYTHON = HERE / ".venv-lightning" / "bin" / "python"
DIGITS_MODELS = tuple(
    f"{name}{suffix}"
    for name in ("lenet", "resnet", "mobilenet", "mlp")
    for suffix in ("", "_p50", "_p80", "_p90")
)
PROFILES = ("ideal", "quant", "rram")
PARTS = ("matched", "digits", "imagenet", "scaling")
DIGITS_SHAPE = {"x": (1, 1, 8, 8)}
MATCHED = CompileOptions(
    cell_bits=8, hw_set=("dac.slice_bits=8",), tiles=4096, input_shapes=DIGITS_SHAPE
)
MATCHED_OVERRIDES = ("input_range=calibrated", "adc_range=calibrated")
FAITHFUL = CompileOptions(tiles=4096, input_shapes=DIGITS_SHAPE)
TOP_FUNCTIONS = 5
SCALING_FUNCTIONS = 4  # per scaling row, the heaviest functions on one thread and on two


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Timing:
    """The best of the timed runs (seconds), how many there were, and the last outputs."""

    seconds: float
    runs: int
    outputs: list = field(default_factory=list, repr=False)


def best_time(run: Callable[[], list], repeats: int, slow: float) -> Timing:
    """`run` once to warm up, then `repeats` times (once if the warm-up took over `slow`
    seconds); the best time."""
    started = time.perf_counter()
    outputs = run()
    if time.perf_counter() - started > slow:
        repeats = 1
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = run()
        times.append(time.perf_counter() - started)
    return Timing(min(times), len(times), outputs)


def ort_session(path: Path, threads: int):
    """onnxruntime's session of the float model on `threads` threads."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_ort(path: Path, feeds: dict, repeats: int) -> Timing:
    """The reference at its best: the faster of the runtime's threads and one thread
    (on a busy machine a second thread can cost more than it brings)."""
    timings = []
    for threads in sorted({thread_count(), 1}, reverse=True):
        run = functools.partial(ort_session(path, threads).run, None, feeds)
        timings.append(best_time(run, max(repeats, 20), slow=1e9))
    return min(timings, key=lambda timing: timing.seconds)


def time_xbarc(program: Program, profile: str, feeds: dict, args, overrides=()) -> Timing:
    session = xbarc.InferenceSession(program, profile, overrides=list(overrides))
    return best_time(lambda: session.run(None, feeds), args.repeats, args.slow)


def accuracy(outputs: list, labels: np.ndarray) -> float:
    return float((np.asarray(outputs[0]).argmax(axis=1) == labels).mean())


def profile_run(program: Program, profile: str, feeds: dict, overrides=()) -> list[str]:
    """The top functions by own time of one run (after a warm-up run): 'name 41%'."""
    session = xbarc.InferenceSession(program, profile, overrides=list(overrides))
    session.run(None, feeds)
    own = own_times(session, feeds)
    total = sum(own.values()) or 1.0
    top = sorted(own.items(), key=lambda item: item[1], reverse=True)[:TOP_FUNCTIONS]
    return [f"{name} {seconds / total:.0%}" for name, seconds in top]


def own_times(session, feeds: dict) -> dict[str, float]:
    """Seconds of own time per function in one run of `session` (cProfile)."""
    profiler = cProfile.Profile()
    profiler.enable()
    session.run(None, feeds)
    profiler.disable()
    own: dict[str, float] = {}
    for key, row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        name = function_name(key)
        own[name] = own.get(name, 0.0) + row[2]
    return own


def function_name(key: tuple[str, int, str]) -> str:
    """`module.function` of a cProfile key (file, line, name); built-ins as they are."""
    file, _, name = key
    if file == "~":
        name = name.strip("<>{}").replace("built-in method ", "")
        # onnxruntime.capi.onnxruntime_pybind11_state.run_with_iobinding: onnxruntime's run
        return f"onnxruntime {name.rsplit('.', 1)[-1]}" if "onnxruntime" in name else name
    return f"{Path(file).stem}.{name}"


# --- data and programs ------------------------------------------------------------------------


def digits_batch(batch: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The 360 test images repeated to `batch`, their labels, and the 360 images."""
    with np.load(DATA, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
    take = np.arange(batch) % len(x)
    return {"x": np.ascontiguousarray(x[take])}, y[take], x


def light_input(program: Program) -> dict:
    graph_input = program.inputs[0]
    shape = tuple(graph_input.type.shape)
    return {graph_input.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


# --- 1. matched settings against aihwkit-lightning ----------------------------------------------


def matched(args, log: Callable[[str], None]) -> dict:
    feeds, labels, images = digits_batch(args.batch)
    model = DIGITS / "lenet.onnx"
    row: dict = {"batch": args.batch}
    ort = time_ort(model, feeds, args.repeats)
    row["ort"] = ort.seconds
    row["ort_accuracy"] = accuracy(ort.outputs, labels)
    program = calibrate(compile_onnx(model, MATCHED), {"x": images})
    quant = time_xbarc(program, "quant", feeds, matched_repeats(args), MATCHED_OVERRIDES)
    row["quant"] = quant.seconds
    row["quant_threads"] = thread_count()
    row["quant_accuracy"] = accuracy(quant.outputs, labels)
    log(
        f"matched lenet batch {args.batch}: onnxruntime {ms(ort.seconds)} "
        f"({row['ort_accuracy']:.2%}), xbarc quant on {thread_count()} threads "
        f"{ms(quant.seconds)} ({quant.seconds / ort.seconds:.1f}x, {row['quant_accuracy']:.2%})"
    )
    if thread_count() > 1:
        # xbarc at its best too, as the peers are: on one thread as well (a subprocess with
        # XBARC_THREADS=1, so that onnxruntime's GEMM sessions take one thread too)
        single = matched_single_thread(args)
        if single["accuracy"] != row["quant_accuracy"]:
            raise SystemExit("sim_speed: one thread gave another accuracy than two")
        log(f"xbarc quant on 1 thread: {ms(single['seconds'])}")
        row["quant_other_threads"] = {1: single["seconds"]}
        if single["seconds"] < row["quant"]:
            row["quant_other_threads"] = {thread_count(): row["quant"]}
            row["quant"], row["quant_threads"] = single["seconds"], 1
    row["lightning"] = lightning(model, args, log)
    if args.profile:
        row["profile"] = profile_run(program, "quant", feeds, MATCHED_OVERRIDES)
    return row


def matched_repeats(args) -> argparse.Namespace:
    """`args` with at least 10 timed runs, as the peer is given (xbarc's run is short)."""
    return argparse.Namespace(**{**vars(args), "repeats": max(args.repeats, 10)})


def matched_single_thread(args) -> dict:
    """The matched xbarc timing of `matched_worker` in a subprocess on one thread."""
    command = [sys.executable, str(Path(__file__).resolve()), "--batch", str(args.batch)]
    command += ["--repeats", str(args.repeats), "--matched-worker"]
    env = {**os.environ, "XBARC_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"sim_speed: the 1-thread matched run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matched_worker(args) -> None:
    """Print, as JSON, the matched xbarc time and accuracy in this process (run with
    XBARC_THREADS=1 by `matched_single_thread`)."""
    feeds, labels, images = digits_batch(args.batch)
    program = calibrate(compile_onnx(DIGITS / "lenet.onnx", MATCHED), {"x": images})
    quant = time_xbarc(program, "quant", feeds, matched_repeats(args), MATCHED_OVERRIDES)
    print(json.dumps({"seconds": quant.seconds, "accuracy": accuracy(quant.outputs, labels)}))


def lightning(model: Path, args, log: Callable[[str], None]) -> dict | None:
    """benchmarks/lightning_side.py's report, run by the lightning environment's Python, or
    None (with the reason logged) where there is none or it fails."""
    python = Path(args.lightning_python)
    if not python.exists():
        log(
            f"aihwkit-lightning: skipped, no Python at {python} (make the environment with "
            "`bash benchmarks/setup_lightning.sh`, or give --lightning-python PATH)"
        )
        return None
    reports = []
    # torch on all the threads and on one: the peer at its best (torch's OpenMP threads
    # lose badly on a machine whose other cores are busy)
    for threads in sorted({thread_count(), 1}, reverse=True):
        command = [str(python), str(HERE / "lightning_side.py"), str(model), str(DATA)]
        command += ["--batch", str(args.batch), "--repeats", str(max(args.repeats, 10))]
        command += ["--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            log(f"aihwkit-lightning: failed ({done.returncode}): {done.stderr.strip()[-800:]}")
            return None
        report = json.loads(lines[-1])
        log(
            f"aihwkit-lightning {report['aihwkit_lightning']} (torch {report['torch']}, "
            f"{report['threads']} threads): {ms(report['seconds'])}, accuracy "
            f"{report['accuracy']:.2%}"
        )
        reports.append(report)
    best = min(reports, key=lambda report: report["seconds"])
    best["other_threads"] = {r["threads"]: r["seconds"] for r in reports if r is not best}
    return best


# --- 2. and 3. the faithful default against onnxruntime -----------------------------------------


def faithful(name: str, path: Path, program: Program, feeds: dict, labels, args, log) -> dict:
    row: dict = {"name": name, "batch": len(next(iter(feeds.values())))}
    row["ort"] = time_ort(path, feeds, args.repeats).seconds
    for profile in PROFILES:
        timing = time_xbarc(program, profile, feeds, args)
        row[profile] = timing.seconds
        row[f"{profile}_runs"] = timing.runs
        if labels is not None:
            row[f"{profile}_accuracy"] = accuracy(timing.outputs, labels)
    log(
        f"{name} batch {row['batch']}: onnxruntime {ms(row['ort'])}, "
        + ", ".join(f"{p} {times(row[p], row['ort'])}" for p in PROFILES)
    )
    if args.profile and row["quant"] < args.profile_limit:
        row["profile"] = {p: profile_run(program, p, feeds) for p in ("quant", "rram")}
    return row


def digits_rows(args, log) -> list[dict]:
    feeds, labels, _ = digits_batch(args.batch)
    rows = []
    for name in args.digits:
        path = DIGITS / f"{name}.onnx"
        rows.append(faithful(name, path, compile_onnx(path, FAITHFUL), feeds, labels, args, log))
    return rows


def imagenet_rows(args, log) -> list[dict]:
    import onnx
    from trained_like import trained_like

    rows = []
    with tempfile.TemporaryDirectory(prefix="sim_speed") as folder:
        resnet = Path(folder) / "resnet50_trained_like.onnx"
        onnx.save(trained_like(onnx.load(LIGHT / "light_resnet50.onnx"), seed=0), resnet)
        models = {"squeezenet": LIGHT / "light_squeezenet.onnx", "resnet50": resnet}
        for name in args.imagenet:
            program = compile_onnx(models[name], CompileOptions(tiles=4096))
            rows.append(
                faithful(name, models[name], program, light_input(program), None, args, log)
            )
    return rows


# --- 4. threads ---------------------------------------------------------------------------------


def scaling_rows(args, log) -> list[dict]:
    """Per model and profile, the time on 1 and on 2 threads (subprocesses of this script
    with XBARC_THREADS set) and the speed-up. The two alternate, --scaling-rounds times
    each, and each keeps its best: a change in the machine's load meanwhile then weighs on
    both alike."""
    runs: dict[int, dict] = {1: {}, 2: {}}
    for _ in range(args.scaling_rounds):
        for threads in (1, 2):
            command = [sys.executable, str(Path(__file__).resolve()), "--batch", str(args.batch)]
            command += ["--repeats", str(args.repeats), "--scaling-worker", ",".join(args.scaling)]
            env = {**os.environ, "XBARC_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                check=False,
                timeout=3600,
            )
            if done.returncode != 0:
                raise SystemExit(
                    f"sim_speed: the {threads}-thread run failed:\n{done.stderr[-2000:]}"
                )
            found = json.loads(done.stdout.strip().splitlines()[-1])
            for name, profiles in found.items():
                for profile, measured in profiles.items():
                    best = runs[threads].setdefault(name, {}).setdefault(profile, measured)
                    best["seconds"] = min(best["seconds"], measured["seconds"])
                    for function, seconds in measured["functions"].items():
                        known = best["functions"].get(function, seconds)
                        best["functions"][function] = min(known, seconds)
    rows = []
    for name in args.scaling:
        for profile in PROFILES:
            one, two = runs[1][name][profile], runs[2][name][profile]
            # the functions that take the most time on one thread, and what a second
            # thread makes of them (own time, cProfile, best of the rounds)
            heavy = sorted(one["functions"].items(), key=lambda item: item[1], reverse=True)
            functions = [
                (function, seconds, two["functions"].get(function))
                for function, seconds in heavy[:SCALING_FUNCTIONS]
            ]
            one, two = one["seconds"], two["seconds"]
            rows.append(
                {"name": name, "profile": profile, "one": one, "two": two, "functions": functions}
            )
            log(
                f"threads {name} {profile}: 1 thread {ms(one)}, 2 threads {ms(two)} "
                f"({one / two:.2f}x)"
            )
    return rows


def scaling_worker(names: list[str], args) -> None:
    """Print, as JSON, the time of each profile on each digits model in this process (run
    with XBARC_THREADS set by `scaling_rows`)."""
    feeds, _, _ = digits_batch(args.batch)
    found: dict = {}
    for name in names:
        program = compile_onnx(DIGITS / f"{name}.onnx", FAITHFUL)
        found[name] = {}
        for profile in PROFILES:
            session = xbarc.InferenceSession(program, profile)
            run = functools.partial(session.run, None, feeds)
            seconds = best_time(run, args.repeats, args.slow).seconds
            own = own_times(session, feeds)
            top = dict(sorted(own.items(), key=lambda item: item[1], reverse=True)[:12])
            found[name][profile] = {"seconds": seconds, "functions": top}
    print(json.dumps(found))


# --- report ---------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def times(seconds: float, reference: float) -> str:
    return f"{ms(seconds)} ({ratio(seconds / reference)})"


def ratio(value: float) -> str:
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def report(results: dict) -> str:
    lines = []
    match = results.get("matched")
    if match:
        reference = match["ort"]
        lines += [
            f"Matched settings, trained digits CNN (lenet), batch {match['batch']} (the 360 test "
            "images repeated): 8-bit weights per column in 8-bit cells, the 8-bit input in one "
            "DAC step, 8-bit ADC, 128-row tiles, DAC and ADC ranges calibrated on the 360 "
            "images at the 99.99th percentile; no noise. onnxruntime float = 1x (here and "
            "below: the faster of onnxruntime on all threads and on one).",
            "",
            "| engine | time | x onnxruntime | accuracy |",
            "|---|---:|---:|---:|",
            f"| onnxruntime float | {ms(reference)} | 1.0x | {match['ort_accuracy']:.2%} |",
            f"| xbarc `quant` ({match.get('quant_threads', thread_count())} threads) | "
            f"{ms(match['quant'])} | {match['quant'] / reference:.1f}x | "
            f"{match['quant_accuracy']:.2%} |",
        ]
        peer = match.get("lightning")
        if peer:
            lines += [
                f"| aihwkit-lightning {peer['aihwkit_lightning']} (torch {peer['torch']}, "
                f"{peer['threads']} threads) | {ms(peer['seconds'])} | "
                f"{peer['seconds'] / reference:.1f}x | {peer['accuracy']:.2%} |",
                "",
                f"xbarc `quant` is {peer['seconds'] / match['quant']:.2f}x faster than "
                f"aihwkit-lightning (target: at least 3x, accuracy at least as high). "
                f"aihwkit-lightning: the faster of torch on {thread_count()} threads and on 1"
                + "".join(
                    f" (on {threads}: {ms(seconds)})"
                    for threads, seconds in peer.get("other_threads", {}).items()
                )
                + f"; its own float torch model: {ms(peer['torch_float_seconds'])}. "
                f"xbarc likewise: the faster of {thread_count()} threads and 1"
                + "".join(
                    f" (on {threads}: {ms(seconds)})"
                    for threads, seconds in match.get("quant_other_threads", {}).items()
                )
                + f", best of {max(results['repeats'], 10)} runs.",
            ]
        else:
            lines += ["", "aihwkit-lightning: not measured (no environment; see above)."]
        if match.get("profile"):
            lines += ["", f"Where matched `quant` spends its time: {', '.join(match['profile'])}."]
        lines.append("")
    for key, title in (
        ("digits", "Faithful default (2-bit cells, 1-bit DAC steps, 8-bit ADC), digits fixtures"),
        ("imagenet", "Faithful default on SqueezeNet and ResNet-50 (trained-like), batch 1"),
    ):
        rows = results.get(key)
        if not rows:
            continue
        accuracy_columns = key == "digits"
        head = "| model | batch | onnxruntime | ideal | quant | rram | rram / quant |"
        rule = "|---|---:|---:|---:|---:|---:|---:|"
        if accuracy_columns:
            head += " quant acc | rram acc |"
            rule += "---:|---:|"
        lines += [f"{title} (x onnxruntime):", "", head, rule]
        for row in rows:
            cells = [
                row["name"],
                str(row["batch"]),
                ms(row["ort"]),
                *(times(row[p], row["ort"]) for p in PROFILES),
                f"{row['rram'] / row['quant']:.2f}",
            ]
            if accuracy_columns:
                cells += [f"{row['quant_accuracy']:.2%}", f"{row['rram_accuracy']:.2%}"]
            once = [p for p in PROFILES if row[f"{p}_runs"] == 1]
            if once:
                cells[0] += f" ({', '.join(once)} timed once)"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    scaling = results.get("scaling")
    if scaling:
        lines += [
            "Scaling from 1 to 2 threads (XBARC_THREADS), faithful default:",
            "",
            "| model | profile | 1 thread | 2 threads | speed-up | heaviest functions: 1 -> 2 "
            "threads (own time) |",
            "|---|---|---:|---:|---:|---|",
        ]
        for row in scaling:
            functions = ", ".join(
                f"{function} {ms(one)} -> {'?' if two is None else ms(two)}"
                for function, one, two in row["functions"]
            )
            lines.append(
                f"| {row['name']} | {row['profile']} | {ms(row['one'])} | {ms(row['two'])} | "
                f"{row['one'] / row['two']:.2f}x | {functions} |"
            )
        lines.append("")
    profiled = [
        (row["name"], profile, top)
        for key in ("digits", "imagenet")
        for row in results.get(key, [])
        for profile, top in row.get("profile", {}).items()
    ]
    if profiled:
        lines += [
            "Where the time goes (cProfile, own time of one run, top functions):",
            "",
            "| model | profile | top functions |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {profile} | {', '.join(top)} |" for name, profile, top in profiled]
        lines.append("")
    if results.get("busy"):
        lines.append(
            f"The machine was busy (1-minute load above its {available_cores()} cores at the "
            "start or the end): times "
            "are inflated and ratios move between runs; record on a quiet machine."
        )
    lines.append(
        f"Best of {results['repeats']} runs after a warm-up (a run over {results['slow']:g} s "
        f"timed once); {results['threads']} threads; load average {results['load_before']} "
        f"before, {results['load_after']} after; revision {results['revision']}."
    )
    return "\n".join(lines)


def revision() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT
    )
    return done.stdout.strip() or "unknown"


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per case, best taken (default 3)"
    )
    parser.add_argument(
        "--batch", type=int, default=540, help="digits images a run, the 360 repeated (default 540)"
    )
    parser.add_argument(
        "--slow",
        type=float,
        default=20.0,
        help="time once a case whose warm-up run takes longer, in seconds (default 20)",
    )
    parser.add_argument(
        "--lightning-python",
        default=str(LIGHTNING_PYTHON),
        help="the Python of the aihwkit-lightning environment (default "
        "benchmarks/.venv-lightning/bin/python, made by benchmarks/setup_lightning.sh)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="what to measure, comma-separated: matched, digits, imagenet, scaling (default all)",
    )
    parser.add_argument(
        "--digits",
        default=",".join(DIGITS_MODELS),
        help="digits fixtures of the faithful table (default all 16, dense and pruned)",
    )
    parser.add_argument(
        "--imagenet",
        default="squeezenet,resnet50",
        help="of squeezenet and resnet50, which to run (default both)",
    )
    parser.add_argument(
        "--scaling",
        default="lenet,resnet",
        help="digits fixtures of the 1 to 2 thread scaling (default lenet,resnet)",
    )
    parser.add_argument(
        "--scaling-rounds",
        type=int,
        default=2,
        help="thread scaling: alternate 1- and 2-thread runs this many times each (default 2)",
    )
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the profiles of where the time goes (one more run per case)",
    )
    parser.add_argument(
        "--profile-limit",
        type=float,
        default=60.0,
        help="profile only cases whose quant run takes less, in seconds (default 60)",
    )
    parser.add_argument(
        "--scaling-worker",
        metavar="MODELS",
        help="internal: time the profiles of these digits fixtures in this process and print "
        "JSON (the subprocesses of the thread scaling, run with XBARC_THREADS set)",
    )
    parser.add_argument(
        "--matched-worker",
        action="store_true",
        help="internal: time matched xbarc quant in this process and print JSON (the "
        "1-thread subprocess of the matched part, run with XBARC_THREADS=1)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.digits = [name for name in args.digits.split(",") if name]
    args.imagenet = [name for name in args.imagenet.split(",") if name]
    args.scaling = [name for name in args.scaling.split(",") if name]
    if args.scaling_worker:
        scaling_worker(args.scaling_worker.split(","), args)
        return
    if args.matched_worker:
        matched_worker(args)
        return
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        build_parser().error(f"--parts: unknown {', '.join(sorted(unknown))}; use {PARTS}")
    if args.record and parts != set(PARTS):
        build_parser().error("--record rewrites the whole RESULTS section: run every part")

    def log(line: str) -> None:
        print(line, flush=True)

    results: dict = {
        "repeats": args.repeats,
        "slow": args.slow,
        "threads": thread_count(),
        "load_before": load(),
        "revision": revision(),
    }
    log(f"xbarc from {Path(xbarc.__file__).parent} ({results['revision']}), load {load()}")
    first_load = os.getloadavg()[0]
    if "matched" in parts:
        results["matched"] = matched(args, log)
    if "digits" in parts:
        results["digits"] = digits_rows(args, log)
    if "imagenet" in parts:
        results["imagenet"] = imagenet_rows(args, log)
    if "scaling" in parts:
        results["scaling"] = scaling_rows(args, log)
    results["load_after"] = load()
    results["busy"] = max(first_load, os.getloadavg()[0]) > available_cores()
    body = report(results)
    print()
    print(body)
    record_if(args.record, SECTION, body)


if __name__ == "__main__":
    main()
