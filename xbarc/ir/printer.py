"""Print a tile IR `Program` in the text format of `ir_spec/xbar.lark` (see SPEC.md).

The printer is total: it prints any program the data model can hold, valid or not, so
that a broken program can still be looked at; the verifier says what is wrong with it.
Output is deterministic and stable: `print(parse(print(p))) == print(p)`. Comments
(`# ...`) summarize sizes for the reader; the parser ignores them.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

from xbarc.hardware import CostParams, Hardware
from xbarc.ir.tile import (
    FORMAT_VERSION,
    Array,
    Attribute,
    BasisCombine,
    Block,
    Calibration,
    Const,
    CrossbarLayer,
    DigitalOp,
    Indices,
    Op,
    Operand,
    Phase,
    Program,
    Read,
    Region,
    Span,
    TensorDecl,
    TileWrite,
)
from xbarc.ir.types import TensorType

_BARE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
_LINE_WIDTH = 100  # soft: only attribute lists and cycles wrap at it
_WRITES_PER_LINE = 8
_COST_FIELDS_PER_LINE = 3
_COST_FIELD_IS_INT = {f.name: isinstance(f.default, int) for f in fields(CostParams)}


def print_program(program: Program) -> str:
    """The text of `program`, ending with a newline."""
    lines = [f"xbar {FORMAT_VERSION}"]
    _print_hardware(lines, program.hardware)
    if program.tensors:
        _print_tensors(lines, program.tensors)
    _print_graph(lines, program)
    blocks_per_array = Counter(block.array for block in program.blocks)
    for array in program.arrays:
        _print_array(lines, array, blocks_per_array[array.name])
    if program.blocks:
        _print_blocks(lines, program.blocks)
    if program.combines:
        lines.append("")
        lines.extend(_combine_line(combine) for combine in program.combines)
    if program.calibration is not None:
        _print_calibration(lines, program.calibration)
    cells_per_vtile = _cells_per_vtile(program.blocks)
    for phase in program.phases:
        _print_phase(lines, phase, cells_per_vtile)
    lines.append("")
    return "\n".join(lines)


# --- names, numbers and types ------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def format_name(name: str) -> str:
    """`name` bare when it is a plain identifier-like word, else as a quoted string."""
    if _BARE_NAME.fullmatch(name):
        return name
    return quote_string(name)


def quote_string(text: str) -> str:
    """`text` as a double-quoted string with JSON escapes (UTF-8 kept readable)."""
    quoted = json.dumps(text, ensure_ascii=False)
    try:
        quoted.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only \u escapes can carry it
        quoted = json.dumps(text)
    return quoted


def value_ref(name: str) -> str:
    """An activation as written in the text: `%name`."""
    return "%" + format_name(name)


def const_ref(name: str) -> str:
    """A constant, layer or array as written in the text: `@name`."""
    return "@" + format_name(name)


def format_float(number: float) -> str:
    """The shortest text that reads back as the same float (`inf`, `-inf`, `nan` bare)."""
    return repr(float(number))


def format_type(tensor_type: TensorType | None) -> str:
    """`f32[1,?,3]`, `f32[*]` for unknown rank, `?` when nothing is known."""
    if tensor_type is None:
        return "?"
    return str(tensor_type)


def _format_ints(numbers: Iterable[int]) -> str:
    return "[" + ",".join(str(int(n)) for n in numbers) + "]"


def _format_operand(operand: Operand) -> str:
    if operand is None:
        return "_"
    if isinstance(operand, Const):
        return const_ref(operand.name)
    return value_ref(operand.name)


def _format_scale(scale: float | Const) -> str:
    if isinstance(scale, Const):
        return const_ref(scale.name)
    return format_float(scale)


def _format_indices(indices: Indices) -> str:
    if isinstance(indices, Span):
        return f"[{indices.start}:{indices.stop}]"
    if indices.start == 0:
        return f"{const_ref(indices.tensor)}[{indices.count}]"
    return f"{const_ref(indices.tensor)}[{indices.start}:{indices.stop}]"


def consecutive_runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of numbers that each exceed the previous one by 1, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _format_run(prefix: str, first: int, last: int) -> str:
    if first == last:
        return f"{prefix}{first}"
    return f"{prefix}{first}..{prefix}{last}"


# --- sections ----------------------------------------------------------------------------


def _print_hardware(lines: list[str], hardware: Hardware) -> None:
    lines.append("hardware {")
    for tile_type in hardware.tile_types:
        lines.append(
            f"  tile {format_name(tile_type.name)} rows={tile_type.rows} cols={tile_type.cols}"
            f" count={tile_type.count}"
        )
    cell, dac, adc = hardware.cell, hardware.dac, hardware.adc
    lines.append(
        f"  cell bits={cell.bits} g_min_us={format_float(cell.g_min_us)}"
        f" g_max_us={format_float(cell.g_max_us)}"
    )
    lines.append(f"  encoding {hardware.encoding}")
    lines.append(f"  dac bits={dac.bits} slice_bits={dac.slice_bits}")
    lines.append(f"  adc bits={adc.bits} range={adc.range} cols_per_adc={adc.cols_per_adc}")
    lines.extend(_cost_lines(hardware.cost))
    lines.append("}")


def _cost_lines(cost: CostParams) -> list[str]:
    entries = []
    for name, is_int in _COST_FIELD_IS_INT.items():
        value = getattr(cost, name)
        entries.append(f"{name}={int(value) if is_int else format_float(value)}")
    lines = []
    for start in range(0, len(entries), _COST_FIELDS_PER_LINE):
        lead = "  cost " if start == 0 else "       "
        lines.append(lead + " ".join(entries[start : start + _COST_FIELDS_PER_LINE]))
    return lines


def _print_tensors(lines: list[str], tensors: Sequence[TensorDecl]) -> None:
    lines.append("")
    elements = sum(decl.size for decl in tensors)
    lines.append(f"tensors {{    # {_count(len(tensors), 'tensor')}, {_count(elements, 'element')}")
    for decl in tensors:
        lines.append(
            f"  {const_ref(decl.name)} : {decl.dtype}{_format_ints(decl.shape)}"
            f" sha256={decl.digest}"
        )
    lines.append("}")


def _print_graph(lines: list[str], program: Program) -> None:
    lines.append("")
    lines.append("graph {")
    for graph_input in program.inputs:
        fixed = " batch=fixed" if graph_input.fixed_batch else ""
        lines.append(
            f"  input {value_ref(graph_input.name)} : {format_type(graph_input.type)}{fixed}"
        )
    _print_ops(lines, program.ops)
    for output in program.outputs:
        lines.append(f"  output {value_ref(output)}")
    lines.append("}")


def _print_ops(lines: list[str], ops: Sequence[Op]) -> None:
    for op in ops:
        if isinstance(op, CrossbarLayer):
            _print_layer(lines, op)
        else:
            _print_digital_op(lines, op)


def _print_region(lines: list[str], region: Region) -> None:
    """A region inside its op's braces: its ops and outputs indented one level deeper."""
    inputs = ", ".join(f"{value_ref(i.name)} : {format_type(i.type)}" for i in region.inputs)
    lines.append(f"    region {format_name(region.name)} ({inputs}) {{")
    body: list[str] = []
    _print_ops(body, region.ops)
    body.extend(f"  output {value_ref(output)}" for output in region.outputs)
    lines.extend(f"    {line}" for line in body)
    lines.append("    }")


def _print_layer(lines: list[str], layer: CrossbarLayer) -> None:
    bias = "none" if layer.bias is None else const_ref(layer.bias)
    lines.append(
        f"  {value_ref(layer.output)} = xbar {layer.kind} {const_ref(layer.name)}"
        f" ({value_ref(layer.input)}) : {format_type(layer.output_type)} {{"
        f"    # {layer.weight_count} weights"
    )
    lines.append(
        f"    weight={const_ref(layer.weight)} bias={bias} groups={layer.groups}"
        f" rows={layer.rows} cols={layer.cols}"
    )
    geometry = layer.geometry
    if geometry is not None:
        lines.append(
            f"    kernel={_format_ints(geometry.kernel)} strides={_format_ints(geometry.strides)}"
            f" pads={_format_ints(geometry.pads)} dilations={_format_ints(geometry.dilations)}"
            f" output_padding={_format_ints(geometry.output_padding)}"
        )
    lines.append(f"    source={quote_string(layer.source)}")
    lines.append("  }")


def _print_digital_op(lines: list[str], op: DigitalOp) -> None:
    results = ", ".join("_" if name == "" else value_ref(name) for name in op.outputs)
    assign = f"{results} = " if op.outputs else ""
    op_name = format_name(op.op_type)
    if op.domain:
        op_name = f"{format_name(op.domain)}:{op_name}"
    operands = ", ".join(_format_operand(operand) for operand in op.inputs)
    types = ""
    if op.output_types:
        types = " : " + ", ".join(format_type(t) for t in op.output_types)
    head = f"  {assign}op {op_name} ({operands}){types} {{"
    fields_text = f"opset={op.opset} name={quote_string(op.name)}"
    if not op.attributes and not op.regions and op.not_mapped is None:
        lines.append(f"{head} {fields_text} }}")
        return
    lines.append(head)
    lines.append(f"    {fields_text}")
    if op.not_mapped is not None:
        macs = "?" if op.not_mapped.macs is None else str(op.not_mapped.macs)
        lines.append(f"    not_mapped={quote_string(op.not_mapped.reason)} macs={macs}")
    if op.attributes:
        attributes = [_format_attribute(attribute) for attribute in op.attributes]
        one_line = f"    attrs {{ {' '.join(attributes)} }}"
        if len(one_line) <= _LINE_WIDTH:
            lines.append(one_line)
        else:
            lines.append("    attrs {")
            lines.extend(f"      {attribute}" for attribute in attributes)
            lines.append("    }")
    for region in op.regions:
        _print_region(lines, region)
    lines.append("  }")


def _format_attribute(attribute: Attribute) -> str:
    kind = attribute.kind
    value: Any = attribute.value  # its type follows `kind`
    if kind == "int":
        text = str(int(value))
    elif kind == "float":
        text = format_float(value)
    elif kind == "string":
        text = quote_string(value)
    elif kind == "ints":
        text = _format_ints(value)
    elif kind == "floats":
        text = "[" + ",".join(format_float(x) for x in value) + "]"
    elif kind == "strings":
        text = "[" + ",".join(quote_string(x) for x in value) + "]"
    elif kind in ("tensor", "proto"):
        text = const_ref(value.name)
    else:
        raise ValueError(
            f"attribute {attribute.name!r} has kind {kind!r}, which the text format cannot hold"
        )
    return f"{format_name(attribute.name)}:{kind}={text}"


def _print_array(lines: list[str], array: Array, block_count: int) -> None:
    group_cols = "" if array.group_cols is None else f" group_cols={array.group_cols}"
    layer = "" if array.layer is None else f" layer={const_ref(array.layer)}"
    copies = "" if array.copies == 1 else f" copies={array.copies}"
    tile_type = "" if array.tile_type is None else f" tile_type={format_name(array.tile_type)}"
    lines.append("")
    lines.append(
        f"array {const_ref(array.name)} {array.kind}{layer} groups={array.groups}"
        f" rows={array.rows} cols={array.cols} weight_bits={array.weight_bits}"
        f" encoding={array.encoding}"
    )
    lines.append(
        f"      scale={_format_scale(array.scale)} values={const_ref(array.values)}"
        f" levels={const_ref(array.levels)}{group_cols}{copies}{tile_type}"
        f" {{    # {_count(block_count, 'block')}"
    )
    for piece in array.slices:
        lines.append(
            f"  slice {piece.index} {piece.polarity} shift={piece.shift} bits={piece.bits}"
        )
    lines.append("}")


def _print_blocks(lines: list[str], blocks: Sequence[Block]) -> None:
    vtiles = len({block.vtile for block in blocks})
    lines.append("")
    lines.append(
        f"blocks {{    # {_count(len(blocks), 'block')} on {_count(vtiles, 'virtual tile')}"
    )
    for block in blocks:
        lines.append(
            f"  b{block.index} = {const_ref(block.array)} slice {block.slice} group {block.group}"
            f" rows={_format_indices(block.rows)} cols={_format_indices(block.cols)}"
            f" on v{block.vtile}:{format_name(block.tile_type)}"
            f" at {block.row_offset},{block.col_offset}"
        )
    lines.append("}")


def _print_calibration(lines: list[str], calibration: Calibration) -> None:
    lines.append("")
    lines.append(
        f"calibration percentile={format_float(calibration.percentile)}"
        f" samples={calibration.samples} {{"
    )
    for entry in calibration.layers:
        lines.append(
            f"  {const_ref(entry.layer)} input_range={format_float(entry.input_range)}"
            f" adc_range={format_float(entry.adc_range)}"
        )
    lines.append("}")


def _combine_line(combine: BasisCombine) -> str:
    return (
        f"combine {const_ref(combine.layer)} basis={const_ref(combine.basis)}"
        f" segment_rows={combine.segment_rows} coefficients={const_ref(combine.coefficients)}"
        f" coef_bits={combine.coef_bits} scale={_format_scale(combine.scale)}"
    )


def _cells_per_vtile(blocks: Sequence[Block]) -> dict[int, int]:
    cells: dict[int, int] = {}
    for block in blocks:
        cells[block.vtile] = cells.get(block.vtile, 0) + _extent(block.rows) * _extent(block.cols)
    return cells


def _extent(indices: Indices) -> int:
    """len(indices), but never failing on a malformed (backward) span."""
    if isinstance(indices, Span):
        return max(indices.stop - indices.start, 0)
    return max(indices.count, 0)


def _print_phase(lines: list[str], phase: Phase, cells_per_vtile: dict[int, int]) -> None:
    cells = sum(cells_per_vtile.get(write.vtile, 0) for write in phase.writes)
    cycles = sum(len(run.cycles) for run in phase.runs)
    lines.append("")
    lines.append(
        f"# phase {phase.index}: {_count(len(phase.writes), 'tile')} written"
        f" ({_count(cells, 'cell')} in blocks), {_count(len(phase.runs), 'layer run')},"
        f" {_count(cycles, 'cycle')} per input vector"
    )
    lines.append(f"phase {phase.index} {{")
    entries = _write_entries(phase.writes)
    for start in range(0, len(entries), _WRITES_PER_LINE):
        lines.append("  write " + ", ".join(entries[start : start + _WRITES_PER_LINE]))
    for run in phase.runs:
        lines.append(f"  run {const_ref(run.layer)} {{")
        for cycle in run.cycles:
            groups = [_format_reads(group) for group in _by_input(cycle.reads)]
            lines.extend(_wrapped("    cycle", groups, "; "))
        lines.append("  }")
    lines.append("}")


def _wrapped(head: str, items: list[str], separator: str) -> list[str]:
    """`head item; item; ...`, continued on lines indented past `head` where a line would
    pass the line width (items are never split)."""
    lines = [head]
    for position, item in enumerate(items):
        text = item + (separator.rstrip() if position < len(items) - 1 else "")
        if len(lines[-1]) > len(head) and len(lines[-1]) + 1 + len(text) > _LINE_WIDTH:
            lines.append(" " * len(head))
        lines[-1] += " " + text
    return lines


def _by_input(reads: Sequence[Read]) -> list[list[Read]]:
    """Consecutive reads with the same input, grouped (printed as one `b.. <- g..`)."""
    groups: list[list[Read]] = []
    for read in reads:
        if groups and groups[-1][0].input == read.input:
            groups[-1].append(read)
        else:
            groups.append([read])
    return groups


def _format_reads(group: list[Read]) -> str:
    """`b0..b3, b7 <- g0[0:128]`: blocks read with one input segment."""
    blocks = ", ".join(
        _format_run("b", a, b) for a, b in consecutive_runs([r.block for r in group])
    )
    segment = group[0].input
    return f"{blocks} <- g{segment.group}{_format_segment_rows(segment.rows)}"


def _format_segment_rows(rows: Indices) -> str:
    text = _format_indices(rows)
    return text if isinstance(rows, Span) else " " + text


def _write_entries(writes: Sequence[TileWrite]) -> list[str]:
    """Pairwise runs: v0..v3 -> t4..t7 when both sides count up together."""
    runs: list[list[int]] = []  # [first vtile, first tile, length]
    for write in writes:
        if runs:
            first_vtile, first_tile, length = runs[-1]
            if write.vtile == first_vtile + length and write.tile == first_tile + length:
                runs[-1][2] += 1
                continue
        runs.append([write.vtile, write.tile, 1])
    return [
        f"{_format_run('v', v, v + n - 1)} -> {_format_run('t', t, t + n - 1)}" for v, t, n in runs
    ]
