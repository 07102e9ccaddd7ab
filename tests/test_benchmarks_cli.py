"""Command lines: every option of every benchmark script and of every xbarc subcommand
says what it does, and benchmarks write the tracked benchmarks/RESULTS.md only when asked
(`--record`)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xbarc.cli import build_parser

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
# modules the scripts import, without a command line
HELPERS = {"results", "light_models", "timing"}
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in HELPERS)


# Run in a fresh interpreter: importing a script may change its process (an environment
# variable such as NUMBA_NUM_THREADS, sys.path, module names such as `results`).
DESCRIBE = """
import argparse, importlib.util, json, sys
from pathlib import Path
folder = Path(sys.argv[1])
sys.path[:0] = [str(folder), str(folder.parent)]
found = {}
for name in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    parser = module.build_parser()
    found[name] = [
        {
            "options": list(action.option_strings) or [action.dest],
            "help": action.help,
            "default": action.default if action.default is None or isinstance(
                action.default, (bool, int, float, str)) else repr(action.default),
            "store_true": isinstance(action, argparse._StoreTrueAction),
        }
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
    ]
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def script_options() -> dict[str, list[dict]]:
    """Per benchmark script, its parser's options as `build_parser()` declares them."""
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE, str(BENCHMARKS), *SCRIPTS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def options_without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and (not action.help or action.help == argparse.SUPPRESS)
    ]


def test_every_script_is_found():
    assert {"quant_speed", "run_light", "batch_memory", "profile_cost"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_options_have_help(script_options, name):
    missing = [
        "/".join(option["options"])
        for option in script_options[name]
        if not option["help"] or option["help"] == argparse.SUPPRESS
    ]
    assert missing == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmarks_record_only_when_asked(script_options, name):
    """A script that writes RESULTS.md (calls record or record_if) has --record, off by
    default, and no --no-record; a script that writes no RESULTS.md needs none."""
    source = (BENCHMARKS / f"{name}.py").read_text()
    options = {flag: option for option in script_options[name] for flag in option["options"]}
    assert "--no-record" not in options
    if re.search(r"\brecord(_if)?\(", source):
        assert "--record" in options, f"{name} writes RESULTS.md without --record"
        assert options["--record"]["store_true"] and options["--record"]["default"] is False


def load_results_module():
    """benchmarks/results.py (it changes nothing when imported)."""
    spec = importlib.util.spec_from_file_location("bench_results", BENCHMARKS / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_if_writes_only_with_record(tmp_path, monkeypatch, capsys):
    results = load_results_module()
    target = tmp_path / "RESULTS.md"
    monkeypatch.setattr(results, "RESULTS", target)
    results.record_if(False, "figures", "| a | b |")
    assert not target.exists()
    assert "not recorded: run again with --record" in capsys.readouterr().out
    results.record_if(True, "figures", "| a | b |")
    text = target.read_text()
    assert "<!-- figures: start -->\n| a | b |" in text and "<!-- figures: end -->" in text


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_cli_option_has_help():
    parser = build_parser()
    commands = subcommands(parser)
    assert {"compile", "opt", "inspect", "run", "calibrate", "eval"} <= set(commands)
    missing = {name: options_without_help(sub) for name, sub in commands.items()}
    assert {name: found for name, found in missing.items() if found} == {}
    assert options_without_help(parser) == []


def test_seed_help_states_its_default():
    """In every subcommand that has --seed."""
    seeds = [
        action
        for sub in subcommands(build_parser()).values()
        for action in sub._actions
        if "--seed" in action.option_strings
    ]
    assert len(seeds) >= 2  # run and eval
    for action in seeds:
        assert action.default == 0 and "default 0" in action.help


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_batch_size_help_states_the_budget(command):
    batch = next(
        action
        for action in subcommands(build_parser())[command]._actions
        if "--batch-size" in action.option_strings
    )
    assert batch.default is None and "1 GiB" in batch.help
