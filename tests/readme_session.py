"""Run the README's commands as a new user pastes them: in order, in one shell, from the
root of a fresh copy of the repository.

The README's ```sh blocks run line by line and its ```python blocks through `python -`,
in one bash session (`bash -e`), so that a variable a block exports holds in the next
and the first command that fails stops the run. A ```text block is sample output, or a
command the README shows without running it in the test (the test suite itself, runs of
minutes) after a `$` prompt: `session_steps(..., prompts=True)` takes those too (the
benchmark that times the README's commands runs them).

What the session changes, and nothing else: `pip install` lines are left out (xbarc is
installed), the copy's xbarc is imported (PYTHONPATH is the copy) and SAMPLES, which the
README sets itself with a default (`export SAMPLES=${SAMPLES:-360}`), is given.

Used by tests/test_readme.py and benchmarks/readme_commands.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = ("sh", "python")
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6} (.*)$", re.MULTILINE)
PYTHON_END = "XBARC_README_PYTHON_END"
PROMPT = "$ "
# a `$` command of the README that is not the README's to run: the tests run themselves
NOT_RUN = ("python -m pytest",)


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of the README: its language, its text, the README line its text
    starts on, and the heading it sits under."""

    language: str
    text: str
    line: int
    section: str


@dataclass(frozen=True, slots=True)
class Step:
    """One command of the session: a shell command (backslash continuations joined as
    bash joins them) or a whole python block, and the README line it starts on."""

    language: str
    text: str
    line: int


@dataclass(frozen=True, slots=True)
class SessionResult:
    """How a session ended: `failed` is the index of the step that stopped it (None when
    every step ran), with bash's exit status and that step's stderr; `seconds` holds the
    wall time of every step that finished."""

    failed: int | None
    returncode: int
    stderr: str
    seconds: tuple[float, ...]


class NoRepository(Exception):
    """The README session copies the repository's tracked files: it needs git and a
    checkout."""


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of `text`, in order."""
    headings = [(match.start(), match.group(1)) for match in HEADING.finditer(text)]
    blocks = []
    for match in FENCE.finditer(text):
        section = next((title for start, title in reversed(headings) if start < match.start()), "")
        line = text.count("\n", 0, match.start(2)) + 1
        blocks.append(Block(match.group(1), match.group(2), line, section))
    return blocks


def runnable_blocks(blocks: list[Block]) -> list[Block]:
    return [block for block in blocks if block.language in RUNNABLE]


def blocks_through(blocks: list[Block], heading: str) -> list[Block]:
    """The blocks up to the end of the first section whose heading starts with `heading`."""
    sections = [block.section for block in blocks]
    last = max(i for i, section in enumerate(sections) if section.startswith(heading))
    return blocks[: last + 1]


def shell_commands(block: Block) -> list[Step]:
    """The commands of a ```sh block: one per line, a line ending in a backslash joined
    with the next; blank and comment lines dropped."""
    steps: list[Step] = []
    pending: list[str] = []
    start = block.line
    for offset, line in enumerate(block.text.splitlines()):
        if not pending:
            start = block.line + offset
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        pending.append(line)
        if line.endswith("\\"):
            continue
        steps.append(Step("sh", "\n".join(pending), start))
        pending = []
    if pending:
        raise ValueError(f"README.md:{start}: a command ends in a backslash and nothing follows")
    return steps


def prompt_commands(block: Block) -> list[Step]:
    """The `$ command` lines of a ```text block, without the prompt."""
    return [
        Step("sh", line.removeprefix(PROMPT), block.line + offset)
        for offset, line in enumerate(block.text.splitlines())
        if line.startswith(PROMPT) and not line.removeprefix(PROMPT).startswith(NOT_RUN)
    ]


def is_pip_install(step: Step) -> bool:
    words = shlex.split(step.text, comments=True)
    return words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]


def session_steps(blocks: list[Block], prompts: bool = False) -> list[Step]:
    """The commands the session runs, in order: `pip install` lines left out; with
    `prompts`, the `$` commands of text blocks too."""
    steps: list[Step] = []
    for block in blocks:
        if block.language == "python":
            steps.append(Step("python", block.text, block.line))
        elif block.language == "sh":
            steps.extend(step for step in shell_commands(block) if not is_pip_install(step))
        elif block.language == "text" and prompts:
            steps.extend(prompt_commands(block))
    return steps


def session_script(steps: list[Step], logs: Path) -> str:
    """A bash script that runs `steps` verbatim, each with its stdout and stderr in
    `logs`/N.out and N.err and its start and end times in N.start and N.end, after
    writing its number N to `logs`/current: when `bash -e` stops at a failing command,
    `current` names it."""

    def path(name: str) -> str:
        return shlex.quote(str(logs / name))

    lines = ["set -o pipefail"]
    for number, step in enumerate(steps):
        out, err = path(f"{number}.out"), path(f"{number}.err")
        lines.append(f"echo {number} > {path('current')}")
        lines.append(f"echo $EPOCHREALTIME > {path(f'{number}.start')}")
        if step.language == "python":
            if PYTHON_END in step.text:
                raise ValueError(f"README.md:{step.line}: a python block holds {PYTHON_END}")
            lines.append(f"python - > {out} 2> {err} <<'{PYTHON_END}'")
            lines.append(step.text.rstrip("\n"))
            lines.append(PYTHON_END)
        else:
            # the braces keep the command in this shell (an export holds for the next)
            lines.append("{")
            lines.append(step.text)
            lines.append(f"}} > {out} 2> {err}")
        lines.append(f"echo $EPOCHREALTIME > {path(f'{number}.end')}")
    lines.append(f"echo done > {path('current')}")
    return "\n".join(lines) + "\n"


def copy_tracked_files(destination: Path) -> None:
    """The repository's tracked files (their working-tree contents, links as links) into
    `destination`: what a fresh clone holds."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        raise NoRepository(f"{ROOT} is not a git checkout (or git is missing)")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def copy_numba_caches(destination: Path) -> None:
    """Numba's on-disk caches of the kernels (`__pycache__/*.nbi, *.nbc`) into the copy,
    where they hold for the copied sources (keyed by their modification time and size,
    which the copy keeps): a session then measures the README, not the kernels'
    compilation (half a minute on 2 cores)."""
    for folder in {index.parent for index in ROOT.glob("**/__pycache__/*.nbi")}:
        target = destination / folder.relative_to(ROOT)
        if not target.parent.is_dir():
            continue
        target.mkdir(exist_ok=True)
        for cached in folder.glob("*.nb[ic]"):
            shutil.copy2(cached, target / cached.name)


def session_environment(copy: Path, samples: str) -> dict[str, str]:
    """The environment of the session: this interpreter's `python` and `xbarc` first on
    PATH, the copy's xbarc imported, SAMPLES given."""
    environment = dict(os.environ)
    bin_folder = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([bin_folder, environment.get("PATH", "")])
    environment["PYTHONPATH"] = str(copy)
    environment["SAMPLES"] = samples
    environment.pop("PYTHONSTARTUP", None)
    return environment


def run_session(steps: list[Step], copy: Path, logs: Path, samples: str) -> SessionResult:
    """Run `steps` in one bash session in `copy`, logs in `logs` (a new folder)."""
    logs.mkdir()
    script = logs / "session.sh"
    script.write_text(session_script(steps, logs))
    result = subprocess.run(
        ["bash", "-e", str(script)],
        cwd=copy,
        env=session_environment(copy, samples),
        capture_output=True,
        text=True,
    )
    seconds = []
    for number in range(len(steps)):
        start, end = logs / f"{number}.start", logs / f"{number}.end"
        if not end.exists():
            break
        seconds.append(float(end.read_text()) - float(start.read_text()))
    current = (logs / "current").read_text().strip() if (logs / "current").exists() else ""
    if result.returncode == 0 and current == "done":
        return SessionResult(None, 0, "", tuple(seconds))
    if not current.isdigit():
        return SessionResult(-1, result.returncode, result.stderr, tuple(seconds))
    stderr = (logs / f"{current}.err").read_text()
    return SessionResult(int(current), result.returncode, stderr, tuple(seconds))


def failure_message(steps: list[Step], result: SessionResult) -> str:
    """The failing command with its README line, exit status and the end of its stderr."""
    if result.failed is None:
        return ""
    if result.failed < 0:
        return f"the session stopped before its first command:\n{result.stderr}"
    step = steps[result.failed]
    return (
        f"README.md:{step.line}: exit status {result.returncode} from\n{step.text}\n"
        f"stderr (last 3000 characters):\n{result.stderr[-3000:]}"
    )
