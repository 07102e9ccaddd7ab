"""Record benchmark figures in benchmarks/RESULTS.md, one marked section per script."""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it.\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def record(section: str, body: str) -> None:
    """Replace (or append) the section `section` of RESULTS.md with `body`."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- {section}: start -->", f"<!-- {section}: end -->"
    block = f"{start}\n{body.rstrip()}\n\n_Recorded {date.today()} on {machine()}._\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    RESULTS.write_text(text)


def record_if(wanted: bool, section: str, body: str) -> None:
    """`record` the section if the script was run with --record; else say how to (the
    figures have been printed: RESULTS.md is tracked, a plain run must not rewrite it)."""
    if wanted:
        record(section, body)
        print(f"recorded the {section!r} section of {RESULTS}")
    else:
        print(f"(not recorded: run again with --record to write them to {RESULTS.name})")
