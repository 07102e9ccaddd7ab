"""Programming a chip seed once: `devices.programming_memo` gives every executor of the same
program, settings and seeds the cells of the first one's programming, to the bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.runtime import devices
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings

DIGITS = Path(__file__).parent / "fixtures" / "digits"


def test_the_memo_programs_each_chip_once_and_changes_no_bit(monkeypatch):
    x = np.load(DIGITS / "digits_test.npz")["x"][:16]
    program = compile_onnx(DIGITS / "lenet.onnx", CompileOptions(input_shapes={"x": (16, 1, 8, 8)}))
    settings = noise_settings("rram")
    layers = [None] + [frozenset({layer.name}) for layer in program.layers()]

    def outputs(seed: int) -> list[np.ndarray]:
        return [
            Executor(program, settings, Seeds.derive(seed), chosen).run({"x": x})["logits"]
            for chosen in layers
        ]

    alone = [outputs(seed) for seed in (0, 1)]
    computed = []
    original = devices.Chip._program

    def counted(chip, tile, count, levels):
        computed.append((chip.seeds, tile, count))
        return original(chip, tile, count, levels)

    monkeypatch.setattr(devices.Chip, "_program", counted)
    with devices.programming_memo():
        memoized = [outputs(seed) for seed in (0, 1)]
    writes = sum(len(phase.writes) for phase in program.phases)
    assert len(computed) == 2 * writes  # once per chip seed, not once per executor
    assert len(set(computed)) == len(computed)
    for mine, theirs in zip(memoized, alone, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))
    assert not np.array_equal(alone[0][0], alone[1][0])  # the seeds do differ
    with devices.programming_memo():
        pass
    assert not devices._MEMO  # closed: nothing kept
