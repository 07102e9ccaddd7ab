"""The public compile API: ONNX model -> tile program, through a pass pipeline.

`compile_onnx("model.onnx", CompileOptions(tiles=128))` returns the program;
`xbarc.ir.io.save_program("model.xbar", program)` writes it with its tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbarc.diagnostics import XbarcError
from xbarc.frontend import import_onnx
from xbarc.hardware import make_hardware
from xbarc.ir.tile import Program
from xbarc.passes.manager import parse_pipeline, run_pipeline


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """What `xbarc compile` takes: the chip, the quantization, and the pipeline."""

    tiles: int = 128
    tile_rows: int = 128
    tile_cols: int = 128
    weight_bits: int = 8
    cell_bits: int = 2
    encoding: str = "differential"
    scale: str = "tensor"
    mapping: str = "dense"  # dense | sparse | squeeze (see passes/tile.py)
    group_cols: int | None = None  # sparse, squeeze: columns per column group (tile width)
    pipeline: str | None = None  # None: the default pipeline built from the options above
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def default_pipeline(options: CompileOptions) -> str:
    tile = f"rows={options.tile_rows},cols={options.tile_cols}"
    if options.mapping != "dense":
        tile += f",mapping={options.mapping}"
    if options.group_cols is not None:
        tile += f",group-cols={options.group_cols}"
    return (
        f"quantize{{weight-bits={options.weight_bits},cell-bits={options.cell_bits},"
        f"scale={options.scale},encoding={options.encoding}}},"
        f"tile{{{tile}}},"
        f"allocate{{tiles={options.tiles}}}"
    )


def compile_onnx(
    model_path: str | Path,
    options: CompileOptions | None = None,
    emit: str = "tile",
    after_pass: Callable[[Any, Program], None] | None = None,
) -> Program:
    """Import `model_path` and, unless `emit="graph"`, run the pipeline over it."""
    options = options or CompileOptions()
    if emit not in ("graph", "tile"):
        raise XbarcError(f"unknown --emit stage {emit!r}", hint="use graph or tile")
    hardware = make_hardware(
        options.tiles, options.tile_rows, options.tile_cols, options.cell_bits, options.encoding
    )
    pipeline = parse_pipeline(options.pipeline or default_pipeline(options))
    program = import_onnx(model_path, hardware, options.input_shapes or None)
    if emit == "graph":
        return program
    return run_pipeline(program, pipeline, after_pass)
