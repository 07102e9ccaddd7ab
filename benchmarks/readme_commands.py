"""Wall time of every command of the README, run as a new user runs them: pasted in order
from the root of a fresh copy of the repository, in one shell (tests/readme_session.py).

    python benchmarks/readme_commands.py [--samples 360] [--no-prompts] [--cold] [--record]

SAMPLES is the README's own (360, every held-out digit) unless --samples says otherwise.
The `$` commands of the README's text blocks (the ResNet-50 runs of minutes that the
README's test leaves out) run too, where they stand, unless --no-prompts: the times the
README quotes for them come from here. The repository's Numba caches are copied in
unless --cold (then the kernels compile as in a fresh clone).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from results import record_if  # noqa: E402

from tests.readme_session import (  # noqa: E402
    copy_numba_caches,
    copy_tracked_files,
    failure_message,
    readme_blocks,
    readme_text,
    run_session,
    session_steps,
)

COMMENT = re.compile(r"\s{2,}# .*$")  # a comment after a command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples",
        default="360",
        help="SAMPLES for the README's evals and calibrations (default 360, the README's own)",
    )
    parser.add_argument(
        "--no-prompts",
        action="store_true",
        help="leave out the `$` commands of text blocks (the ResNet-50 runs of minutes)",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start without the repository's Numba caches (the kernels compile first)",
    )
    parser.add_argument(
        "--record", action="store_true", help="write the figures to benchmarks/RESULTS.md"
    )
    return parser


def without_comment(line: str) -> str:
    """`line` without a trailing comment: `#` two spaces or more after the command, outside
    quotes (as the README writes them)."""
    match = COMMENT.search(line)
    if match is None:
        return line
    before = line[: match.start()]
    if before.count('"') % 2 or before.count("'") % 2:
        return line
    return before


def shown(command: str) -> str:
    """One table cell: the command on one line without its trailing comments, `|`
    escaped."""
    lines = [without_comment(line) for line in command.replace("\\\n", "\n").splitlines()]
    return " ".join(" ".join(lines).split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    steps = session_steps(readme_blocks(readme_text()), prompts=not args.no_prompts)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "repo"
        copy_tracked_files(copy)
        if not args.cold:
            copy_numba_caches(copy)
        result = run_session(steps, copy, Path(folder) / "logs", args.samples)
    if result.failed is not None:
        print(failure_message(steps, result), file=sys.stderr)
        return 1
    lines = [
        f"Every command of README.md in order, pasted from the root of a fresh copy of the "
        f"repository in one bash session (`benchmarks/readme_commands.py`), SAMPLES="
        f"{args.samples}, Numba's caches {'left out' if args.cold else 'copied in'}"
        f"{'' if args.no_prompts else ', the `$` commands of text blocks included'}. Wall "
        "seconds of each command (the process's start-up included).",
        "",
        "| README line | command | wall s |",
        "|---:|---|---:|",
    ]
    for step, seconds in zip(steps, result.seconds, strict=True):
        command = "(python block)" if step.language == "python" else shown(step.text)
        lines.append(f"| {step.line} | `{command}` | {seconds:.1f} |")
    lines += [
        "",
        f"Total {sum(result.seconds):.0f} s for {len(steps)} commands. Load average (1 min) "
        f"before and after: {load_before:.1f} and {os.getloadavg()[0]:.1f} (2 cores, shared).",
    ]
    body = "\n".join(lines)
    print(body)
    record_if(args.record, "readme_commands", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
