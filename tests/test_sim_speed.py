"""benchmarks/sim_speed.py without the aihwkit-lightning environment: the comparison is
skipped with a message that says how to make it, and xbarc's side still runs and scores the
matched program on the digits labels. (Timings are printed, never asserted.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from xbarc.runtime import kernels

ROOT = Path(__file__).parent.parent


def test_matched_part_runs_and_skips_lightning_without_its_environment(tmp_path):
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    missing = tmp_path / "no-venv" / "bin" / "python"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sim_speed.py"), "--parts", "matched"]
        + ["--lightning-python", str(missing), "--repeats", "1", "--no-profile"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"aihwkit-lightning: skipped, no Python at {missing}" in out
    assert "bash benchmarks/setup_lightning.sh" in out
    assert "aihwkit-lightning: not measured" in out
    # the matched program keeps the float model's accuracy on the 540 labels (97.78 %)
    row = re.search(
        r"\| xbarc `quant` \([12] threads\) \| [\d.]+ ms \| [\d.]+x \| ([\d.]+)% \|", out
    )
    reference = re.search(r"\| onnxruntime float \| [\d.]+ ms \| 1\.0x \| ([\d.]+)% \|", out)
    assert row and reference, out
    assert float(row.group(1)) >= float(reference.group(1)) - 1.0 > 90
    if kernels.thread_count() > 1:  # timed on one thread too, in a subprocess, same accuracy
        assert re.search(r"xbarc quant on 1 thread: [\d.]+ ms", out), out
    assert results.read_bytes() == before  # no --record: RESULTS.md untouched
