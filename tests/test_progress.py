"""Progress of long work (xbarc/progress.py): the line and its figures on a fake clock,
nesting, the terminal bar, the hooks in the compiler and the runtime, and the command line
with stderr as a pipe (`XBARC_PROGRESS_INTERVAL` small), with and without --quiet."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import xbarc
from tests.conftest import light_model
from xbarc import progress
from xbarc.cli import main
from xbarc.diagnostics import XbarcError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tests" / "fixtures" / "digits"
LENET = DIGITS / "lenet.onnx"
DATA = DIGITS / "digits_test.npz"


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recording(progress.Display):
    """A display that also keeps (label, done, total, finished) of every task it closes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed: list[tuple[str, int, int | None, bool]] = []

    def close(self, task, finished):
        self.closed.append((task.label, task.done, task.total, finished))
        super().close(task, finished)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def install(monkeypatch, display: progress.Display) -> progress.Display:
    monkeypatch.setattr(progress, "_display", display)
    return display


def by_hand(monkeypatch, clock, terminal=False, interval=5.0, cls=progress.Display):
    """A display driven by `tick()` on the fake clock, no heartbeat thread."""
    stream = TerminalStream() if terminal else io.StringIO()
    display = cls(stream, interval, clock=clock, terminal=terminal, heartbeat=False)
    return install(monkeypatch, display)


def lines(display: progress.Display) -> list[str]:
    return display.stream.getvalue().splitlines()  # type: ignore[attr-defined]


# --- the line ------------------------------------------------------------------------------


def test_a_line_every_interval_with_count_rate_and_eta(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with progress.task("eval", total=3600, unit="sample") as task:
        clock.advance(4.0)
        task.update(1000)
        display.tick()  # before the first interval: nothing yet
        clock.advance(2.6)
        task.update(200)
        display.tick()
        clock.advance(1.0)
        display.tick()  # within the interval after that line: nothing
        clock.advance(5.0)
        task.update(1200)
        display.tick()
    assert lines(display) == [
        # 1200 in 6.6 s: 182 a second, 2400 left: 13 s
        "eval: 1200/3600 samples (33%), 182 samples/s, 6.6 s elapsed, ETA 13 s",
        # 2400 in 12.6 s: 190 a second, 1200 left: 6.3 s
        "eval: 2400/3600 samples (66%), 190 samples/s, 13 s elapsed, ETA 6.3 s",
        "eval: 2400/3600 samples (66%), 190 samples/s, 13 s elapsed, done",
    ]


def test_work_that_ends_within_the_interval_prints_nothing(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with progress.task("compile", total=2, unit="stage") as task:
        clock.advance(4.9)
        task.update(2)
        display.tick()
    clock.advance(60)
    display.tick()  # nothing open: nothing to say
    assert lines(display) == []


def test_unknown_total_slow_rate_and_the_item_in_progress(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with progress.task("run", unit="layer") as task:
        task.update(item="conv1")
        clock.advance(130)
        display.tick()
    assert lines(display) == [
        "run [conv1]: 1 layer, 130 s/layer, 2 min 10 s elapsed",
        "run [conv1]: 1 layer, 130 s/layer, 2 min 10 s elapsed, done",
    ]


def test_units_of_unlike_cost_get_no_rate_and_no_eta(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with progress.task("compile", total=2, unit="stage", estimate=False) as task:
        task.update(item="passes")
        clock.advance(6)
        display.tick()
    assert lines(display) == [
        "compile [passes]: 1/2 stages (50%), 6.0 s elapsed",
        "compile [passes]: 1/2 stages (50%), 6.0 s elapsed, done",
    ]


def test_nothing_done_yet_has_no_rate_and_no_eta(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with progress.task("programming", total=12608, unit="tile write"):
        clock.advance(5)
        display.tick()
    assert lines(display)[0] == "programming: 0/12608 tile writes (0%), 5.0 s elapsed"


@pytest.mark.parametrize(
    "seconds, text",
    [(0.04, "0.0 s"), (6.62, "6.6 s"), (9.96, "10 s"), (59.4, "59 s"), (59.6, "1 min 00 s")]
    + [(125, "2 min 05 s"), (3599.4, "59 min 59 s"), (4020, "1 h 07 min")],
)
def test_durations(seconds, text):
    assert progress.duration_text(seconds) == text


@pytest.mark.parametrize(
    "rate, text",
    [(180.4, "180 samples/s"), (12.34, "12.3 samples/s"), (1.0, "1 samples/s")]
    + [(0.4, "2.5 s/sample"), (0.001, "1000 s/sample")],
)
def test_rates(rate, text):
    assert progress.rate_text(rate, "sample") == text


def test_percentage_reaches_100_only_when_all_is_done():
    assert progress.count_text(3599, 3600, "sample") == "3599/3600 samples (99%)"
    assert progress.count_text(1, 1, "pass") == "1/1 pass (100%)"
    assert progress.count_text(2, 3, "pass") == "2/3 passes (66%)"
    assert progress.count_text(0, 0, "tile write") == "0/0 tile writes (100%)"


# --- nesting -------------------------------------------------------------------------------


def test_nested_tasks_share_one_line_the_inner_ones_appended(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with progress.task("eval", total=10, unit="sample") as outer:
        outer.update(3)
        with progress.task("programming", total=40, unit="tile write") as chip:
            chip.update(40)
        with progress.task("run", total=120, unit="layer") as run:
            run.update(40, item="conv2")
            with progress.task("Loop", total=None, unit="iteration") as loop:
                loop.update(7)
                clock.advance(6)
                display.tick()
            clock.advance(5)
            display.tick()
        clock.advance(5)
        display.tick()
    assert lines(display) == [
        # 3 samples in 6 s: 2 s each, 7 left
        "eval: 3/10 samples (30%), 2 s/sample, 6.0 s elapsed, ETA 14 s"
        " | run [conv2]: layer 40/120 | Loop: iteration 7",
        "eval: 3/10 samples (30%), 3.67 s/sample, 11 s elapsed, ETA 26 s"
        " | run [conv2]: layer 40/120",
        "eval: 3/10 samples (30%), 5.33 s/sample, 16 s elapsed, ETA 37 s",
        "eval: 3/10 samples (30%), 5.33 s/sample, 16 s elapsed, done",
    ]


def test_an_exception_ends_the_task_and_its_last_line_says_stopped(monkeypatch, clock):
    display = by_hand(monkeypatch, clock)
    with (
        pytest.raises(RuntimeError),
        progress.task("run", total=4, unit="layer") as task,
        progress.task("Loop", unit="iteration"),
    ):
        task.update(1)
        clock.advance(5)
        display.tick()
        raise RuntimeError("boom")
    assert display.tasks == [] and progress.current() is progress.NULL_TASK
    assert lines(display)[-1] == "run: 1/4 layers (25%), 5 s/layer, 5.0 s elapsed, stopped"
    clock.advance(10)
    display.tick()
    assert len(lines(display)) == 2


def test_tasks_that_follow_closely_keep_one_schedule(monkeypatch, clock):
    """Loading then running, 3 s each: one line at 5 s, in the second task; after a
    pause of more than an interval, a new task starts a new schedule."""
    display = by_hand(monkeypatch, clock)
    with progress.task("programming", total=1, unit="tile write") as task:
        clock.advance(3)
        task.update()
    clock.advance(0.2)
    with progress.task("run", total=2, unit="layer") as task:
        clock.advance(1.8)
        task.update()
        display.tick()
    clock.advance(30)
    with progress.task("run", total=2, unit="layer"):
        clock.advance(4)
        display.tick()
    assert lines(display) == [
        "run: 1/2 layers (50%), 1.8 s/layer, 1.8 s elapsed, ETA 1.8 s",
        "run: 1/2 layers (50%), 1.8 s/layer, 1.8 s elapsed, done",
    ]


def test_the_first_line_is_due_one_interval_after_the_display_starts(monkeypatch, clock):
    """The command's start: 3 s of start-up and loading without a task, then 2 s of work."""
    display = by_hand(monkeypatch, clock)
    clock.advance(3)
    with progress.task("run", total=4, unit="layer") as task:
        clock.advance(2)
        task.update()
        display.tick()
    assert lines(display)[0] == "run: 1/4 layers (25%), 2 s/layer, 2.0 s elapsed, ETA 6.0 s"


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stream_ends_the_lines_not_the_work(monkeypatch, clock):
    display = install(
        monkeypatch, progress.Display(ClosedPipe(), 5, clock=clock, terminal=False, heartbeat=False)
    )
    with progress.task("eval", total=2, unit="sample") as task:
        clock.advance(6)
        display.tick()  # the write fails: progress stops, the work goes on
        task.update(2)
        clock.advance(6)
        display.tick()
    assert display.broken and task.done == 2 and display.tasks == []


def test_updates_from_many_threads_all_count(monkeypatch, clock):
    by_hand(monkeypatch, clock)
    with progress.task("eval", total=80_000, unit="sample") as task:

        def work() -> None:
            for _ in range(10_000):
                task.update()

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert task.done == 80_000


def test_a_tracked_function_is_a_task_its_body_finds(monkeypatch, clock):
    display = by_hand(monkeypatch, clock, cls=Recording)

    @progress.tracked("calibrate", unit="sample")
    def work(samples: int) -> int:
        task = progress.current()
        task.set_total(2 * samples)
        task.update(2 * samples)
        return samples

    assert work(30) == 30 and work.__name__ == "work"
    assert display.closed == [("calibrate", 60, 60, True)]


def test_the_heartbeat_prints_while_the_work_sleeps_and_stops_with_disable(monkeypatch):
    """One long step (a sleep here) still gets lines: from the heartbeat thread."""
    import time

    install(monkeypatch, None)
    monkeypatch.setenv("XBARC_PROGRESS_INTERVAL", "0.01")
    stream = io.StringIO()
    display = progress.enable(stream)
    try:
        assert display.interval == 0.01 and not display.terminal
        with progress.task("run", total=1, unit="layer"):
            deadline = time.monotonic() + 60  # a liveness bound, not a speed test
            while "run: 0/1 layer (0%)" not in stream.getvalue():
                assert time.monotonic() < deadline, "the heartbeat printed nothing"
                time.sleep(0.01)
    finally:
        progress.disable()
    assert stream.getvalue().splitlines()[-1].endswith(" elapsed, done")
    assert not any(thread.name == "xbarc-progress" for thread in threading.enumerate())
    assert progress.task("x") is progress.NULL_TASK


# --- disabled ------------------------------------------------------------------------------


def test_disabled_progress_hands_out_one_task_that_does_nothing(monkeypatch):
    install(monkeypatch, None)
    task = progress.task("eval", total=10, unit="sample")
    assert task is progress.NULL_TASK and progress.current() is progress.NULL_TASK
    with task:
        task.update(5, item="x")
        task.set_total(3)
    assert task.done == 0 and task.total is None and task.item is None


def test_a_library_session_prints_nothing_and_starts_no_thread(monkeypatch, capsys, tmp_path):
    program = compiled_lenet(tmp_path)
    capsys.readouterr()
    install(monkeypatch, None)
    monkeypatch.setenv("XBARC_PROGRESS_INTERVAL", "0.001")  # were it enabled, it would print
    before = {thread.name for thread in threading.enumerate()}
    session = xbarc.InferenceSession(program, noise="quant")
    with np.load(DATA) as data:
        (logits,) = session.run(None, {"x": data["x"][:8]})
    assert logits.shape == (8, 10)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert "xbarc-progress" not in {thread.name for thread in threading.enumerate()} - before


# --- the terminal ----------------------------------------------------------------------------


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_total_and_eta_cleared_at_the_end(monkeypatch, clock):
    display = by_hand(monkeypatch, clock, terminal=True)
    with progress.task("eval", total=10, unit="sample") as task:
        task.update(3)
        display.tick()  # within half a second: no bar for quick work
        assert display.stream.getvalue() == ""  # type: ignore[attr-defined]
        clock.advance(6)
        with progress.task("run", total=4, unit="layer") as run:
            run.update(2, item="conv2")
            display.tick()
        drawn = display.stream.getvalue()  # type: ignore[attr-defined]
    text = display.stream.getvalue()  # type: ignore[attr-defined]
    assert "\n" not in text  # a bar redrawn in place, never lines
    assert re.search(r"eval: +30%\|.*\| 3/10 \[00:\d\d<00:\d\d, .*run \[conv2\]: layer 2/4", drawn)
    assert text.endswith("\r") and len(text) > len(drawn)  # cleared when the task ended


# --- the hooks -----------------------------------------------------------------------------


def compiled_lenet(tmp_path: Path) -> Path:
    program = tmp_path / "lenet.xbar"
    args = ["compile", str(LENET), "--input-shape", "x=1x1x8x8", "-o", str(program), "-q"]
    assert main(args) == 0
    return program


def test_a_session_counts_loading_every_tile_write_and_layer(monkeypatch, clock, tmp_path):
    program_path = compiled_lenet(tmp_path)
    display = by_hand(monkeypatch, clock, cls=Recording)
    session = xbarc.InferenceSession(program_path, noise="quant")
    program = session.program
    writes = sum(len(phase.writes) for phase in program.phases)
    layers = sum(1 for _ in program.layers())
    with np.load(DATA) as data:
        session.run(None, {"x": data["x"][:4]})
    assert display.closed == [
        ("load", 3, 3, True),  # text, tensors, verify
        ("programming", writes, writes, True),
        ("run", layers, layers, True),
    ]


def test_compile_counts_its_stages_steps_and_passes(monkeypatch, clock, tmp_path):
    from xbarc.compiler import CompileOptions, compile_onnx

    display = by_hand(monkeypatch, clock, cls=Recording)
    compile_onnx(LENET, CompileOptions(input_shapes={"x": (1, 1, 8, 8)}))
    assert display.closed == [
        ("import", 4, 4, True),
        ("passes", 3, 3, True),  # quantize, tile, allocate
        ("compile", 2, 2, True),
    ]


def test_the_basis_pass_counts_its_learning_and_each_layer(monkeypatch, clock):
    from xbarc.compiler import CompileOptions, compile_onnx

    display = by_hand(monkeypatch, clock, cls=Recording)
    options = CompileOptions(input_shapes={"x": (1, 1, 8, 8)}, strategy="basis", tiles=4)
    program = compile_onnx(LENET, options)
    combined = len(program.combines)
    assert combined >= 2
    assert ("basis", 1 + combined, 1 + combined, True) in display.closed
    assert ("passes", 4, 4, True) in display.closed  # quantize, basis, tile, allocate


def test_a_loop_counts_its_iterations(monkeypatch, clock, tmp_path):
    from tests.test_control_flow import compiled, feeds_for, recurrent_model

    model = recurrent_model("RNN")
    program = compiled(model, tmp_path)
    display = by_hand(monkeypatch, clock, cls=Recording)
    xbarc.InferenceSession(program, noise="quant").run(None, feeds_for(model))
    loops = [entry for entry in display.closed if entry[0] == "Loop"]
    assert loops == [("Loop", 5, 5, True)]  # 5 time steps
    (run,) = [entry for entry in display.closed if entry[0] == "run"]
    assert run[1] == run[2] and run[3]


def test_eval_counts_every_pass_over_the_data(monkeypatch, clock, tmp_path):
    """2 chip instances and each of LeNet's 4 layers alone noisy on both: 10 passes."""
    from xbarc.evaluate import evaluate

    program = compiled_lenet(tmp_path)
    data = small_data(tmp_path, 24)
    display = by_hand(monkeypatch, clock, cls=Recording)
    evaluate(program, LENET, data, noise="rram", instances=2, sensitivity=True, batch_size=12)
    assert display.closed[-1] == ("eval", 240, 240, True)
    runs = [entry for entry in display.closed if entry[0] == "run"]
    assert len(runs) == 20 and all(done == total == 4 for _, done, total, _ in runs)


def test_calibrate_counts_both_passes(monkeypatch, clock, tmp_path):
    from xbarc.calibrate import calibrate
    from xbarc.ir.io import load_program

    program = load_program(compiled_lenet(tmp_path))
    display = by_hand(monkeypatch, clock, cls=Recording)
    with np.load(DATA) as data:
        calibrate(program, {"x": data["x"][:50]}, batch_size=16)
    assert display.closed[-1] == ("calibrate", 100, 100, True)


def test_a_bad_interval_is_one_line_naming_the_variable(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XBARC_PROGRESS_INTERVAL", "soon")
    assert main(["inspect", str(compiled_lenet(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err == (
        "xbarc: error: XBARC_PROGRESS_INTERVAL='soon' is not a number of seconds (give a "
        "positive number, e.g. XBARC_PROGRESS_INTERVAL=5, or unset it)\n"
    )
    with pytest.raises(XbarcError):
        progress.interval_from_environment()
    monkeypatch.setenv("XBARC_PROGRESS_INTERVAL", "0.5")
    assert progress.interval_from_environment() == 0.5


# --- the command line, stderr a pipe ---------------------------------------------------------

# a progress line: `label [item]: done/total units (p%), ...` (the ETA or done at the end)
LINE = re.compile(r"^(\w+)(?: \[[^\]]*\])?: (\d+)/(\d+) [a-z ]+ \(\d+%\)")


def small_data(tmp_path: Path, samples: int) -> Path:
    path = tmp_path / f"digits_{samples}.npz"
    with np.load(DATA) as data:
        np.savez(path, x=data["x"][:samples], y=data["y"][:samples])
    return path


def xbarc_cli(*arguments, interval="0.02") -> subprocess.CompletedProcess:
    """`python -m xbarc ...` from the repository root, stdout and stderr pipes."""
    environment = {**os.environ, "XBARC_PROGRESS_INTERVAL": interval}
    done = subprocess.run(
        [sys.executable, "-m", "xbarc", *map(str, arguments)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done


def progress_lines(stderr: str, label: str) -> list[tuple[int, int]]:
    """(done, total) of the progress lines of `label` in stderr."""
    found = []
    for line in stderr.splitlines():
        match = LINE.match(line)
        if match and match.group(1) == label:
            found.append((int(match.group(2)), int(match.group(3))))
    return found


def assert_no_progress(text: str) -> None:
    assert not any(LINE.match(line) for line in text.splitlines()), text
    assert "elapsed" not in text


def quietly(monkeypatch, capsys, *arguments) -> tuple[str, str]:
    """`xbarc ... --quiet` in this process (no second start-up), with progress lines due
    every millisecond were they shown: stdout and stderr."""
    monkeypatch.setenv("XBARC_PROGRESS_INTERVAL", "0.001")
    capsys.readouterr()
    assert main([*map(str, arguments), "--quiet"]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("progress")
    path = folder / "lenet.xbar"
    args = ["compile", LENET, "--input-shape", "x=1x1x8x8", "--tiles", "16", "-o", path]
    xbarc_cli(*args, "-q")
    return path


def test_compile_of_resnet50_prints_progress_to_the_pipe(tmp_path, monkeypatch, capsys):
    output = tmp_path / "r50.xbar"
    done = xbarc_cli("compile", light_model("resnet50"), "-o", output)
    found = progress_lines(done.stderr, "compile")
    assert found and found[-1] == (2, 2), done.stderr
    assert all(total == 2 for _, total in found)
    assert re.search(r"\| passes \[(quantize|tile|allocate)\]: pass [0-3]/3", done.stderr)
    assert done.stdout.startswith(f"wrote {output}")
    assert_no_progress(done.stdout)
    out, err = quietly(monkeypatch, capsys, "compile", light_model("resnet50"), "-o", output)
    assert_no_progress(err)
    assert out.splitlines()[1:] == done.stdout.splitlines()[1:]  # the time aside


def test_run_in_quant_prints_progress_to_the_pipe(program, tmp_path, monkeypatch, capsys):
    inputs = tmp_path / "x.npz"
    with np.load(DATA) as data:
        np.savez(inputs, x=data["x"][:100])
    done = xbarc_cli("run", program, "--input", inputs, "--noise", "quant")
    found = progress_lines(done.stderr, "run")
    assert found and found[-1] == (4, 4) and all(total == 4 for _, total in found)
    assert done.stdout.startswith("noise profile quant")
    assert_no_progress(done.stdout)
    out, err = quietly(monkeypatch, capsys, "run", program, "--input", inputs, "--noise", "quant")
    assert_no_progress(err)
    assert out == done.stdout


def test_eval_over_seeds_prints_progress_and_json_stays_json(
    program, tmp_path, monkeypatch, capsys
):
    import json

    data = small_data(tmp_path, 60)
    common = ("eval", program, "--reference", LENET, "--data", data, "--labels", "y")
    common += ("--noise", "rram", "--seeds", "3", "--batch-size", "20", "--json")
    done = xbarc_cli(*common)
    found = progress_lines(done.stderr, "eval")
    assert found and found[-1] == (180, 180), done.stderr
    assert all(total == 180 for _, total in found)
    assert [done for done, _ in found] == sorted(done for done, _ in found)
    report = json.loads(done.stdout)
    assert len(report["instances"]) == 3
    out, err = quietly(monkeypatch, capsys, *common)
    assert_no_progress(err)
    assert json.loads(out) == report


def test_calibrate_prints_progress_to_the_pipe(program, tmp_path, monkeypatch, capsys):
    output = tmp_path / "calibrated.xbar"
    data = small_data(tmp_path, 100)
    done = xbarc_cli("calibrate", program, "--data", data, "--batch-size", "10", "-o", output)
    found = progress_lines(done.stderr, "calibrate")
    assert found and found[-1] == (200, 200), done.stderr
    assert done.stdout.startswith("calibrated 4 layers on 100 samples")
    assert_no_progress(done.stdout)
    out, err = quietly(
        monkeypatch,
        capsys,
        "calibrate",
        program,
        "--data",
        data,
        "--batch-size",
        "10",
        "-o",
        output,
    )
    assert_no_progress(err)
    assert out == done.stdout


def test_every_subcommand_takes_quiet(capsys):
    for command in ("compile", "opt", "inspect", "run", "calibrate", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "-q, --quiet" in capsys.readouterr().out
