"""Progress of long work: a bar on a terminal, a line every few seconds anywhere else.

    progress.enable()                      # on stderr; the CLI does this, unless --quiet
    with progress.task("eval", total=3600, unit="sample") as task:
        for batch in batches:
            ...
            task.update(len(batch))

Nothing is shown unless enabled: a library user's `InferenceSession` prints nothing, and
`task` then hands out a task that does nothing (no lock, no clock), cheap enough to
update once per layer or batch in the runtime's loops (never per element).

One display, however deep the tasks nest (eval > programming the chip > run > a Loop's
iterations): the outermost open task's state, with each inner task's appended,

    eval: 1200/3600 samples (33%), 180 samples/s, 6.6 s elapsed, ETA 13 s | run: layer 40/120

- on a terminal (the stream's `isatty`): a tqdm bar with total, rate and ETA, drawn once
  the work has taken half a second and cleared when the outermost task ends;
- anywhere else (pipes, files, CI, a notebook's captured stderr): that line every
  `interval` seconds (5 by default; the environment variable XBARC_PROGRESS_INTERVAL
  overrides it), from a heartbeat thread, so that one long step (a 100 s image) still
  shows it is alive; and a last line when the outermost task ends, if it printed any.
  Work that ends within one interval prints nothing. Without a total: done and rate, no
  ETA.

Tasks are thread-safe (updates from any thread) and exception-safe (a task leaves the
display however its block ends). The first line is due one interval after the display
starts (the command's start), and outermost tasks that follow each other closely
(loading a program, programming the chip, running it) share one schedule, so that a
command that takes longer than an interval in several shorter steps still prints.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, ParamSpec, TypeVar

from xbarc.diagnostics import XbarcError

DEFAULT_INTERVAL = 5.0  # seconds between two lines when the stream is no terminal
INTERVAL_VARIABLE = "XBARC_PROGRESS_INTERVAL"
BAR_DELAY = 0.5  # seconds of work before a terminal bar appears (none for quick work)
BAR_REFRESH = 0.2  # seconds between two redraws of a terminal bar
POLL = 0.25  # the heartbeat's longest sleep: how late a line may come
# a terminal bar without rate and ETA, for tasks whose units differ in cost
PLAIN_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Task:
    """One piece of work being counted: `done` of `total` units (None: unknown), and the
    `item` in progress (a layer's name, a pass). `estimate`: whether a rate and an ETA
    mean something (units of like cost: samples, layers; not a compiler's stages)."""

    def __init__(
        self, display: Display, label: str, total: int | None, unit: str, estimate: bool = True
    ):
        self.display = display
        self.label = label
        self.total = total
        self.unit = unit
        self.estimate = estimate
        self.done = 0
        self.item: str | None = None
        self.started = 0.0  # on the display's clock, set when the task opens

    def update(self, count: int = 1, item: str | None = None) -> None:
        """`count` more units done; `item`: what is in progress now (kept until changed)."""
        with self.display.lock:
            self.done += count
            if item is not None:
                self.item = item

    def describe(self, item: str | None) -> None:
        """What is in progress now (None: nothing in particular)."""
        with self.display.lock:
            self.item = item

    def set_total(self, total: int | None) -> None:
        """The units the whole task has, once known."""
        with self.display.lock:
            self.total = total

    def __enter__(self) -> Task:
        self.display.open(self)
        _stack().append(self)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        stack = _stack()
        if self in stack:
            stack.remove(self)
        self.display.close(self, finished=kind is None)


class NullTask:
    """The task handed out while progress is disabled: every call does nothing."""

    label = ""
    total: int | None = None
    unit = ""
    estimate = False
    done = 0
    item: str | None = None

    def update(self, count: int = 1, item: str | None = None) -> None:
        pass

    def describe(self, item: str | None) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def __enter__(self) -> NullTask:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        pass


NULL_TASK = NullTask()
AnyTask = Task | NullTask


class Display:
    """Where progress goes: one stream, the open tasks (outermost first), and the
    heartbeat that draws them (`tick`). `clock` and `terminal` are parameters so that
    tests can drive a display by hand (`heartbeat=False`, `tick()` on a fake clock)."""

    def __init__(
        self,
        stream: IO[str],
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        terminal: bool | None = None,
        heartbeat: bool = True,
    ):
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.terminal = is_terminal(stream) if terminal is None else terminal
        self.lock = threading.Lock()
        self.tasks: list[Task] = []
        # lines are due one interval after the display starts (a command's start), then one
        # interval after the previous line; a task that starts after a pause of an interval
        # or more starts the schedule again (`_begin`)
        self.next_line = clock() + interval
        self.idle_since = clock()  # when the last outermost task ended
        self.printed = False  # whether the outermost task has printed a line
        self.bar: Any = None  # the terminal's tqdm bar of the outermost task
        self.broken = False  # the stream failed: stop writing to it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if heartbeat:
            self._thread = threading.Thread(target=self._beat, name="xbarc-progress", daemon=True)
            self._thread.start()

    def open(self, task: Task) -> None:
        with self.lock:
            now = self.clock()
            task.started = now
            self.tasks.append(task)
            if len(self.tasks) == 1:
                self._begin(now)

    def close(self, task: Task, finished: bool) -> None:
        with self.lock:
            if task not in self.tasks:
                return
            outermost = self.tasks[0] is task
            if outermost:
                self._end(task, finished)
            self.tasks.remove(task)
            if outermost and self.tasks:  # an inner task of another thread carries on
                self._begin(self.clock())

    def tick(self) -> None:
        """Draw the tasks now: redraw the bar on a terminal; elsewhere print a line when
        one is due."""
        with self.lock:
            if not self.tasks or self.broken:
                return
            now = self.clock()
            if self.terminal:
                try:
                    self._draw_bar(now)
                except (OSError, ValueError):  # a closed terminal: nothing more to draw
                    self.broken = True
            elif now >= self.next_line:
                self._write(format_line(self.tasks, now))
                self.printed = True
                self.next_line = now + self.interval

    def stop(self) -> None:
        """Stop the heartbeat (and clear a bar left by tasks still open)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self.lock:
            self._close_bar()

    # --- with the lock held ---------------------------------------------------------------

    def _begin(self, now: float) -> None:
        """A new outermost task: lines come one interval after it starts, unless the work
        before it (or the display's start) was less than an interval ago: that schedule
        carries on."""
        if now - self.idle_since >= self.interval:
            self.next_line = now + self.interval
        self.printed = False

    def _end(self, task: Task, finished: bool) -> None:
        now = self.clock()
        self.idle_since = now
        self._close_bar()
        if self.printed and not self.terminal and not self.broken:
            self._write(format_line([task], now, "done" if finished else "stopped"))
        self.printed = False

    def _draw_bar(self, now: float) -> None:
        outer = self.tasks[0]
        if self.bar is None:
            if now - outer.started < BAR_DELAY:
                return
            from tqdm import tqdm

            self.bar = tqdm(
                total=outer.total,
                desc=outer.label,
                unit=outer.unit,
                file=self.stream,
                leave=False,
                smoothing=0,  # the rate since the start, as the lines give it
                dynamic_ncols=True,
                delay=BAR_DELAY,  # drawn below, once its clock is the task's
                bar_format=None if outer.estimate else PLAIN_BAR,
            )
            self.bar.start_t -= now - outer.started  # the bar's clock from the task's start
        self.bar.total = outer.total
        self.bar.n = outer.done
        self.bar.set_description_str(labelled(outer), refresh=False)
        self.bar.set_postfix_str(" | ".join(inner_state(t) for t in self.tasks[1:]), refresh=False)
        self.bar.refresh()

    def _close_bar(self) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            try:
                bar.close()  # leave=False: the bar's line is cleared
            except (OSError, ValueError):
                self.broken = True

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: progress is not worth a crash
            self.broken = True

    def _beat(self) -> None:
        period = min(self.interval, BAR_REFRESH if self.terminal else POLL)
        while not self._stop.wait(period):
            self.tick()


# --- the module's display -------------------------------------------------------------------

_display: Display | None = None
_local = threading.local()


def _stack() -> list[Task]:
    """The tasks this thread opened, innermost last."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def enable(stream: IO[str] | None = None, interval: float | None = None) -> Display:
    """Show progress on `stream` (default: stderr) from now on, replacing any display: a
    bar if it is a terminal, else a line every `interval` seconds (default:
    XBARC_PROGRESS_INTERVAL, or 5)."""
    global _display
    if interval is None:
        interval = interval_from_environment()
    display = Display(sys.stderr if stream is None else stream, interval)
    previous, _display = _display, display
    if previous is not None:
        previous.stop()
    return display


def disable() -> None:
    """Show no progress (the default); tasks open now stop drawing."""
    global _display
    previous, _display = _display, None
    if previous is not None:
        previous.stop()


def enabled() -> bool:
    return _display is not None


def task(
    label: str, total: int | None = None, unit: str = "step", estimate: bool = True
) -> AnyTask:
    """A task to open with `with`: `label` names the work, `total` its units (None:
    unknown), `unit` what it counts, singular ("sample", "layer"); `estimate=False` for
    units of unlike cost (a compiler's stages): no rate, no ETA."""
    display = _display
    if display is None:
        return NULL_TASK
    return Task(display, label, total, unit, estimate)


def current() -> AnyTask:
    """The innermost task this thread has open (the null task if none)."""
    stack = _stack()
    return stack[-1] if stack else NULL_TASK


Params = ParamSpec("Params")
Result = TypeVar("Result")


def tracked(
    label: str, unit: str = "step"
) -> Callable[[Callable[Params, Result]], Callable[Params, Result]]:
    """A decorator: each call of the function is a task (the body sets its total and
    counts through `current()`)."""

    def decorate(function: Callable[Params, Result]) -> Callable[Params, Result]:
        @functools.wraps(function)
        def run(*args: Params.args, **kwargs: Params.kwargs) -> Result:
            with task(label, unit=unit):
                return function(*args, **kwargs)

        return run

    return decorate


def interval_from_environment() -> float:
    """XBARC_PROGRESS_INTERVAL in seconds, or the default 5."""
    text = os.environ.get(INTERVAL_VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise XbarcError(
            f"{INTERVAL_VARIABLE}={text!r} is not a number of seconds",
            hint=f"give a positive number, e.g. {INTERVAL_VARIABLE}=5, or unset it",
        )
    return value


def is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# --- the text -------------------------------------------------------------------------------


def format_line(tasks: list[Task], now: float, ending: str | None = None) -> str:
    """The outermost task's state and each inner task's: `eval: 1200/3600 samples (33%),
    180 samples/s, 6.6 s elapsed, ETA 13 s | run [conv2]: layer 40/120`. `ending` ("done",
    "stopped") replaces the ETA on a task's last line."""
    outer = tasks[0]
    elapsed = max(0.0, now - outer.started)
    parts = [count_text(outer.done, outer.total, outer.unit)]
    rate = outer.done / elapsed if elapsed > 0 and outer.estimate else 0.0
    if rate > 0:
        parts.append(rate_text(rate, outer.unit))
    parts.append(f"{duration_text(elapsed)} elapsed")
    if ending is not None:
        parts.append(ending)
    elif outer.total is not None and rate > 0 and outer.done <= outer.total:
        parts.append(f"ETA {duration_text((outer.total - outer.done) / rate)}")
    line = f"{labelled(outer)}: {', '.join(parts)}"
    return " | ".join([line, *(inner_state(task) for task in tasks[1:])])


def inner_state(task: Task) -> str:
    """An inner task in brief: `run [conv2]: layer 40/120`, or `Loop: iteration 3`."""
    count = f"{task.done}" if task.total is None else f"{task.done}/{task.total}"
    return f"{labelled(task)}: {task.unit} {count}"


def labelled(task: Task) -> str:
    return task.label if task.item is None else f"{task.label} [{task.item}]"


def count_text(done: int, total: int | None, unit: str) -> str:
    """`1200/3600 samples (33%)`; `1200 samples` without a total. The percentage is
    rounded down: 100% only when all is done."""
    if total is None:
        return f"{done} {plural(unit, done)}"
    percent = 100 * done // total if total > 0 else 100
    return f"{done}/{total} {plural(unit, total)} ({percent}%)"


def rate_text(rate: float, unit: str) -> str:
    """`180 samples/s`, `2.5 samples/s`; below one a second, the time of one: `12 s/sample`."""
    if rate >= 1:
        return f"{number_text(rate)} {plural(unit, 2)}/s"
    return f"{number_text(1 / rate)} s/{unit}"


def number_text(value: float) -> str:
    """Three significant digits, never an exponent: 180, 12.3, 2.5, 1234."""
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def duration_text(seconds: float) -> str:
    """`6.6 s`, `13 s`, `2 min 05 s`, `1 h 07 min`."""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def plural(unit: str, count: int) -> str:
    """`sample` -> `samples`, `pass` -> `passes` (one: the unit itself)."""
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")
