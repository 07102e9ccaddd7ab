"""The README runs as written: its commands, pasted in order from the repository's root.

A new user copies the README's blocks into a shell one after the other. These tests do
the same in a temporary copy of the repository's tracked files (tests/readme_session.py):
every ```sh block line by line and every ```python block through `python -`, in order,
in one bash session (`bash -e`). Only `sh` and `python` blocks run; a ```text block is
sample output, or a command the README shows without running it here (the test suite
itself, runs of minutes), written after a `$` prompt.

What the tests change, and nothing else:
- `pip install` lines are skipped: xbarc is installed in the test's environment, and the
  session runs the copy's xbarc (PYTHONPATH is the copy; the `xbarc` console script of
  this interpreter imports through it, which one test checks).
- The README sets `export SAMPLES=${SAMPLES:-360}` itself and passes `--samples $SAMPLES`
  to its evals and calibrations; the session sets SAMPLES=20 so that they stay short.
- The fast test (the first example) starts with the repository's Numba caches copied in;
  the slow one (the whole README) compiles the kernels as a fresh clone does.
"""

from __future__ import annotations

import argparse
import builtins
import re
import subprocess
import symtable
from pathlib import Path

import pytest

from tests.readme_session import (
    ROOT,
    Block,
    NoRepository,
    Step,
    blocks_through,
    copy_numba_caches,
    copy_tracked_files,
    failure_message,
    readme_blocks,
    readme_text,
    run_session,
    runnable_blocks,
    session_environment,
    session_steps,
    shell_commands,
)

SAMPLES = "20"  # the README's own default is 360: every held-out digit
FIRST_EXAMPLE = "A first example"  # the heading the fast test runs up to and including

# names a user cannot paste: files that exist nowhere, stand-ins for the user's own
PLACEHOLDERS = ("MODEL.onnx", "PROG.xbar", "test.npz", "calib.npz", "model.onnx", "model.xbar")
# an upper-case file name in a command is a stand-in too (MODEL.onnx, OUT.xbar, X.npz)
UPPER_CASE_FILE = re.compile(r"(?<![\w/.-])[A-Z][A-Z0-9_]*\.(?:onnx|xbar|npz|toml)\b")


def fresh_copy(destination: Path) -> Path:
    """The repository's tracked files in `destination` (skip without a git checkout)."""
    try:
        copy_tracked_files(destination)
    except NoRepository as error:
        pytest.skip(f"the README test copies the repository's tracked files: {error}")
    return destination


def run_or_fail(steps: list[Step], copy: Path, logs: Path) -> tuple[float, ...]:
    """Run `steps` in one session; fail naming the first command that failed."""
    result = run_session(steps, copy, logs, SAMPLES)
    if result.failed is not None:
        pytest.fail(failure_message(steps, result))
    return result.seconds


def undefined_names(source: str) -> set[str]:
    """Names `source` reads as globals that it never binds, imports or gets from builtins:
    the README's Python must run as written, with nothing left for the reader to define."""
    top = symtable.symtable(source, "<readme>", "exec")
    bound = {
        symbol.get_name()
        for symbol in top.get_symbols()
        if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()
    }
    read: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            reads_global = table is top or symbol.is_global()
            if reads_global and symbol.is_referenced():
                read.add(symbol.get_name())
    return read - bound - set(dir(builtins))


# --- the README's structure (fast) ---------------------------------------------------


def test_blocks_are_found_with_their_lines_and_sections():
    text = (
        "# A\n\n```sh\necho one \\\n  two\n# a comment\n\necho three\n```\n"
        "\n## B\n\n```text\n$ x\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(block.language, block.line, block.section) for block in blocks] == [
        ("sh", 4, "A"),
        ("text", 14, "B"),
    ]
    steps = shell_commands(blocks[0])
    assert [(step.text, step.line) for step in steps] == [
        ("echo one \\\n  two", 4),
        ("echo three", 8),
    ]
    assert [step.text for step in session_steps(blocks)] == ["echo one \\\n  two", "echo three"]
    # with prompts: the `$` lines of text blocks too, but never the test suite itself
    sample = "$ xbarc run a.xbar  # 9 s\nsample output\n$ python -m pytest -q\n"
    blocks.append(Block("text", sample, 20, "C"))
    assert [(step.text, step.line) for step in session_steps(blocks, prompts=True)][2:] == [
        ("x", 14),
        ("xbarc run a.xbar  # 9 s", 20),
    ]


def test_session_keeps_variables_and_names_the_failing_command(tmp_path):
    """One session: an export holds in later steps and in python blocks; the first
    failing command stops it and is named with its README line and its stderr."""
    steps = [
        Step("sh", "export GREETING=${GREETING:-hello}", 3),
        Step("sh", 'test "$GREETING" = hello', 4),
        Step("python", "import os\nassert os.environ['GREETING'] == 'hello'\n", 6),
        Step("sh", "echo broken >&2 && \\\n  exit 3", 9),
        Step("sh", "touch never-written", 12),
    ]
    (tmp_path / "work").mkdir()
    failed = run_session(steps, tmp_path / "work", tmp_path / "logs", SAMPLES)
    assert (failed.failed, failed.returncode, len(failed.seconds)) == (3, 3, 3)
    message = failure_message(steps, failed)
    assert message.startswith("README.md:9: exit status 3 from\necho broken")
    assert message.rstrip().endswith("broken")
    assert not (tmp_path / "work" / "never-written").exists()
    passed = run_session(steps[:3], tmp_path / "work", tmp_path / "logs again", SAMPLES)
    assert passed.failed is None and len(passed.seconds) == 3
    assert all(seconds >= 0 for seconds in passed.seconds)


def test_readme_blocks_are_marked_and_closed():
    blocks = readme_blocks(readme_text())
    assert blocks, "no fenced blocks found in README.md"
    unmarked = [block.line for block in blocks if not block.language]
    assert not unmarked, f"README.md: blocks without a language (sh, python or text) at {unmarked}"
    assert readme_text().count("```") == 2 * len(blocks), "a fence is not closed"


def test_undefined_names_catches_what_a_reader_would_have_to_fill_in():
    # the README's old snippet: `batch` was never defined
    old = (
        "import xbarc\n"
        'session = xbarc.InferenceSession("light_resnet50.xbar", noise="quant")\n'
        '(probabilities,) = session.run(None, {"gpu_0/data_0": batch})\n'
    )
    assert undefined_names(old) == {"batch"}
    assert undefined_names("import numpy as np\nx = np.zeros(3)\nprint(len(x))\n") == set()
    assert undefined_names("def f():\n    return y\n") == {"y"}


def test_readme_has_no_placeholders():
    text = readme_text()
    for name in PLACEHOLDERS:
        assert not re.search(rf"(?<![\w/.-]){re.escape(name)}\b", text), (
            f"README.md names {name}, a file a user does not have"
        )
    for match in re.finditer(r"(?<![\w/.-])my_chip\.toml", text):
        line = text.count("\n", 0, match.start()) + 1
        pytest.fail(f"README.md:{line}: my_chip.toml without its path (runtime/profiles/examples/)")
    for block in runnable_blocks(readme_blocks(text)):
        stand_ins = UPPER_CASE_FILE.findall(block.text)
        assert not stand_ins, f"README.md:{block.line}: stand-in file names {stand_ins}"
        if block.language == "python":
            undefined = undefined_names(block.text)
            assert not undefined, f"README.md:{block.line}: undefined names {sorted(undefined)}"


def test_readme_runs_small_through_samples():
    """The README sets SAMPLES itself, with its default, before any command uses it, and
    every eval and calibrate takes `--samples $SAMPLES` (the session's small batch)."""
    steps = session_steps(readme_blocks(readme_text()))
    texts = [step.text for step in steps]
    assert "export SAMPLES=${SAMPLES:-360}" in [text.split("#")[0].strip() for text in texts]
    defined = next(i for i, text in enumerate(texts) if text.startswith("export SAMPLES="))
    assert not any("$SAMPLES" in text for text in texts[:defined])
    for step in steps:
        words = step.text.split()
        if step.language == "sh" and words[:2] in (["xbarc", "eval"], ["xbarc", "calibrate"]):
            assert "--samples $SAMPLES" in step.text, (
                f"README.md:{step.line}: no --samples $SAMPLES"
            )


def test_the_example_profile_loads_as_documented():
    """runtime/profiles/examples/my_chip.toml is rram with the fields it says it changes,
    and its commented fields load too once uncommented."""
    from xbarc.runtime.noise import load_profile

    path = ROOT / "runtime" / "profiles" / "examples" / "my_chip.toml"
    rram, mine = load_profile("rram"), load_profile(path)
    assert (mine.adc_bits, mine.programming_scale, mine.p_sa0, mine.p_sa1) == (6, 0.5, 0.003, 0.0)
    assert (mine.programming, mine.read_sigma, mine.output_noise) == (
        rram.programming,
        rram.read_sigma,
        rram.output_noise,
    )
    uncommented = re.sub(r"^# (\w+ = )", r"\1", path.read_text(), flags=re.MULTILINE)
    every = path.parent / "my_chip_uncommented.toml"
    try:
        every.write_text(uncommented)
        loaded = load_profile(every)
    finally:
        every.unlink(missing_ok=True)
    assert (loaded.g_max_spread, loaded.wire_resistance) == (0.05, 1.0)
    assert (loaded.drift, loaded.drift_nu, loaded.t_inference) == ("constant", 0.05, 86400.0)


# --- the README, run -----------------------------------------------------------------


def test_copy_runs_its_own_xbarc(tmp_path):
    """In the session, `python` and the `xbarc` console script import the copy's xbarc,
    not the installed one, so the README runs what the copy holds."""
    fresh_copy(tmp_path / "repo")
    environment = session_environment(tmp_path / "repo", SAMPLES)
    where = "import xbarc, xbarc.runtime; print(xbarc.__file__); print(xbarc.runtime.__file__)"
    found = subprocess.run(
        ["python", "-c", where], env=environment, cwd=tmp_path, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    for line in found.stdout.splitlines():
        assert Path(line).resolve().is_relative_to((tmp_path / "repo").resolve()), line
    # the console script: the copy's package, marked here, says where it was imported from
    package = tmp_path / "repo" / "xbarc" / "__init__.py"
    marker = '\nimport os as _os\nif _os.environ.get("XBARC_README_MARK"):\n    print(__file__)\n'
    package.write_text(package.read_text() + marker)
    version = subprocess.run(
        ["xbarc", "--version"],
        env={**environment, "XBARC_README_MARK": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines()[0] == str(package), version.stdout


def test_readme_first_example_runs(tmp_path):
    """The set-up and the first example, as pasted: the default suite's share."""
    copy = fresh_copy(tmp_path / "repo")
    copy_numba_caches(copy)
    steps = session_steps(blocks_through(readme_blocks(readme_text()), FIRST_EXAMPLE))
    over_chips = [i for i, step in enumerate(steps) if "--seeds" in step.text]
    assert over_chips, "the first example has no eval over chip instances"
    run_or_fail(steps, copy, tmp_path / "logs")
    assert (copy / "lenet.xbar").is_file() and (copy / "lenet.xbar.npz").is_file()
    report = (tmp_path / "logs" / f"{over_chips[0]}.out").read_text()
    accuracy = re.search(r"accuracy (\d+\.\d+)% \(mean over instances\)", report)
    assert accuracy, report
    assert 10.0 < float(accuracy.group(1)) <= 100.0  # better than chance on 10 digits


@pytest.mark.slow
def test_readme_runs_verbatim(tmp_path):
    """Every sh and python block of the README, in order, in one session; afterwards the
    copy holds no file `git status` would list (outputs are named in .gitignore)."""
    copy = fresh_copy(tmp_path / "repo")
    tracked = {path for path in copy.rglob("*")}
    steps = session_steps(readme_blocks(readme_text()))
    run_or_fail(steps, copy, tmp_path / "logs")
    made = sorted(
        str(path.relative_to(copy))
        for path in copy.rglob("*")
        if path not in tracked and path.is_file() and "__pycache__" not in path.parts
    )
    assert made, "the README's commands wrote nothing"
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(made) + "\n",
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(set(made) - set(ignored)) == [], "README outputs not in .gitignore"


# options the README names that belong to other tools (`ruff format --check`, and
# `dask scheduler --port`, `dask worker --nworkers --nthreads` for a cluster)
OTHER_TOOLS_OPTIONS = {"--check", "--port", "--nworkers", "--nthreads"}
# the options a user meets first, each in one of the README's option tables
TABLED_OPTIONS = ("--json", "--quiet", "--plot", "--layer", "--samples", "--batch-size")


def long_option(name: str) -> re.Pattern[str]:
    """`name` as a whole option: `--tiles` matches neither `--tiles-x` nor `x--tiles`."""
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")


def subcommand_options() -> dict[str, list[list[str]]]:
    """Each xbarc subcommand's options, each as its option strings (`-o`, `--output`),
    from the parser as `xbarc.cli.main` builds it (`-q/--quiet` is added to the built one)."""
    from xbarc.cli import add_quiet_options, build_parser

    parser = build_parser()
    add_quiet_options(parser)
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return {
        name: [action.option_strings for action in command._actions if action.option_strings]
        for name, command in commands.choices.items()
    }


def test_readme_names_only_options_that_exist():
    """Every `--option` the README names is an option of an xbarc subcommand or of a
    benchmark script (a user who types it gets no 'unrecognized arguments')."""
    known = {
        name for options in subcommand_options().values() for strings in options for name in strings
    }
    scripts = "\n".join(path.read_text() for path in sorted((ROOT / "benchmarks").glob("*.py")))
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", readme_text()))
    unknown = sorted(
        name
        for name in named - known - OTHER_TOOLS_OPTIONS
        if f'"{name}"' not in scripts  # a benchmark script's add_argument("--models", ...)
    )
    assert not unknown, f"README.md names options no command has: {unknown}"


def test_readme_documents_every_option():
    """Every option of every subcommand appears in the README (itself or its short form),
    and the options a new user needs first are rows of its option tables."""
    text = readme_text()
    undocumented = sorted(
        f"{command} {strings[-1]}"
        for command, options in subcommand_options().items()
        for strings in options
        if "--help" not in strings and not any(long_option(name).search(text) for name in strings)
    )
    assert not undocumented, f"README.md never names {undocumented}"
    rows = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    untabled = [name for name in TABLED_OPTIONS if not long_option(name).search(rows)]
    assert not untabled, f"README.md's option tables have no row for {untabled}"
