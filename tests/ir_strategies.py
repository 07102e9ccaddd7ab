"""Hypothesis strategies for random, well-formed tile IR programs.

"Well-formed" means what the parser demands: names unique in their namespace (values,
layers, arrays, tensors, tile types, combines, calibration, blocks, phases, slices of an array,
attributes of an op) and every reference pointing at something of the right kind that
exists (ops read earlier values, blocks sit on declared tile types, runs name layers,
cycles name blocks). Numbers are not checked against the hardware: these programs
exercise the text format, not the verifier.

Every construct of the format appears: several tile types, both encodings, per-tensor
and per-column scales, spans and index tables, every attribute kind (empty lists too),
constant and omitted operands, several and unused ("") outputs, unknown dims and rank,
names that need quoting, inf/nan/-0.0/subnormal floats, combines, writes, runs, cycles.
"""

from __future__ import annotations

import operator
import re
import string
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from typing import Any

from hypothesis import strategies as st

from xbarc.hardware import (
    ADC_RANGES,
    SIGNED_ENCODINGS,
    AdcSpec,
    CellSpec,
    CostParams,
    DacSpec,
    Hardware,
    TileType,
)
from xbarc.ir.tile import (
    LAYER_KINDS,
    REGION_NAMES,
    Array,
    Attribute,
    BasisCombine,
    Block,
    Calibration,
    Const,
    ConvGeometry,
    CrossbarLayer,
    Cycle,
    DigitalOp,
    GraphInput,
    IndexTable,
    LayerRange,
    LayerRun,
    NotMapped,
    Op,
    Phase,
    Program,
    Read,
    Region,
    Segment,
    Slice,
    Span,
    TensorDecl,
    TileWrite,
    Value,
    all_ops,
)
from xbarc.ir.types import ONNX_DTYPES, TensorType
from xbarc.limits import MAX_BITS

Draw = Callable[[st.SearchStrategy[Any]], Any]

# Names that must be quoted, or look like they might need it but need not.
AWKWARD_NAMES = (
    "gpu_0/conv1_w_0",
    "gpu 0:data",
    'say "hi"',
    "back\\slash",
    "tab\tand\nnewline",
    "naïve",
    "日本語",
    "1x",
    "123",
    "_",
    "",
    "-lead",
    "rows",
    "tile",
    "none",
    "nan",
    "b0",
    "\x7f\u2028",
    "b3..b4",
    "\ud800",  # a lone surrogate: printed with \u escapes
)


def grammar_keywords() -> tuple[str, ...]:
    """The quoted words of the grammar (`tile`, `rows`, `source`, ...): names may equal
    them, and must still round-trip."""
    grammar = resources.files("xbarc.ir_spec").joinpath("xbar.lark").read_text("utf-8")
    grammar = re.sub(r"//[^\n]*", "", grammar)
    words = set(re.findall(r'"([A-Za-z0-9_][A-Za-z0-9_.\-/]*)"', grammar))
    return tuple(sorted(words))


KEYWORDS = grammar_keywords()
SPECIAL_FLOATS = (0.0, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 1e16, 0.1)

small_ints = st.integers(min_value=0, max_value=300)
bits = st.integers(min_value=0, max_value=MAX_BITS)  # the parser refuses more (xbarc.limits)
signed_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
any_floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats())


def words(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """A character of `first` then up to `max_rest` of `rest`: the regex
    `[first][rest]{0,max_rest}` (drawn as text: `st.from_regex` took a third of the round
    trip's time)."""
    return st.builds(operator.add, st.sampled_from(first), st.text(rest, max_size=max_rest))


LETTERS = string.ascii_letters + "_"
names = st.one_of(
    words(LETTERS, LETTERS + string.digits + ".-/", 10),
    words(string.digits, LETTERS + string.digits, 4),
    st.sampled_from(AWKWARD_NAMES),
    st.sampled_from(KEYWORDS),
    st.text(max_size=6),
)
strings = st.one_of(st.sampled_from(AWKWARD_NAMES), st.text(max_size=12))
dtypes = st.sampled_from((*ONNX_DTYPES, "onnx17", "onnx23"))
digests = st.text("0123456789abcdef", min_size=64, max_size=64)


def unique_names(min_size: int = 0, max_size: int = 6) -> st.SearchStrategy[list[str]]:
    return st.lists(names, min_size=min_size, max_size=max_size, unique=True)


# --- types and hardware ------------------------------------------------------------------


tensor_types = st.builds(
    TensorType,
    dtypes,
    st.one_of(
        st.none(),  # unknown rank
        st.lists(st.one_of(st.none(), small_ints), max_size=4).map(tuple),
    ),
)


@st.composite
def hardware(draw: Draw) -> Hardware:
    tile_names = draw(unique_names(min_size=1, max_size=3))
    tile_types = tuple(
        TileType(name, draw(small_ints), draw(small_ints), draw(small_ints)) for name in tile_names
    )
    cost = CostParams(
        **{
            name: draw(small_ints) if isinstance(default, int) else draw(any_floats)
            for name, default in vars_of(CostParams()).items()
        }
    )
    return Hardware(
        tile_types=tile_types,
        cell=CellSpec(draw(bits), draw(any_floats), draw(any_floats)),
        encoding=draw(st.sampled_from(SIGNED_ENCODINGS)),
        dac=DacSpec(draw(bits), draw(bits)),
        adc=AdcSpec(draw(bits), draw(st.sampled_from(ADC_RANGES)), draw(small_ints)),
        cost=cost,
    )


def vars_of(instance: Any) -> dict[str, Any]:
    return {name: getattr(instance, name) for name in instance.__dataclass_fields__}


# --- graph -------------------------------------------------------------------------------


def attribute_values(kind: str, const_names: list[str]) -> st.SearchStrategy[Any]:
    if kind == "int":
        return signed_ints
    if kind == "float":
        return any_floats
    if kind == "string":
        return strings
    if kind == "ints":
        return st.lists(signed_ints, max_size=4).map(tuple)
    if kind == "floats":
        return st.lists(any_floats, max_size=4).map(tuple)
    if kind == "strings":
        return st.lists(strings, max_size=3).map(tuple)
    return st.sampled_from(const_names or ["n.value"]).map(Const)


ATTRIBUTE_KINDS = ("int", "float", "string", "ints", "floats", "strings", "tensor", "proto")


@st.composite
def attributes(draw: Draw, const_names: list[str]) -> tuple[Attribute, ...]:
    result = []
    for name in draw(unique_names(max_size=5)):
        kind = draw(st.sampled_from(ATTRIBUTE_KINDS))
        result.append(Attribute(name, kind, draw(attribute_values(kind, const_names))))
    return tuple(result)


not_mapped = st.builds(NotMapped, strings, st.one_of(st.none(), st.integers(0, 2**62)))


@st.composite
def digital_op(
    draw: Draw, defined: list[str], new_names: list[str], const_names: list[str]
) -> DigitalOp:
    operand = st.one_of(
        st.sampled_from(defined).map(Value) if defined else st.nothing(),
        st.sampled_from(const_names).map(Const) if const_names else st.nothing(),
        st.none(),
    )
    outputs = [name if draw(st.booleans()) or not name else "" for name in new_names]
    if outputs and draw(st.integers(0, 4)) == 0:
        outputs.append("")  # a trailing unused slot
    return DigitalOp(
        name=draw(strings),
        op_type=draw(names),
        domain=draw(st.one_of(st.just(""), st.sampled_from(("com.microsoft", "ai.onnx.ml")))),
        opset=draw(small_ints),
        inputs=tuple(draw(st.lists(operand, max_size=4))),
        outputs=tuple(outputs),
        output_types=tuple(draw(st.lists(st.one_of(st.none(), tensor_types), max_size=3))),
        attributes=draw(attributes(const_names)),
        not_mapped=draw(st.one_of(st.none(), not_mapped)),
    )


geometries = st.builds(
    ConvGeometry,
    st.lists(small_ints, max_size=3).map(tuple),
    st.lists(small_ints, max_size=3).map(tuple),
    st.lists(small_ints, max_size=6).map(tuple),
    st.lists(small_ints, max_size=3).map(tuple),
    st.lists(small_ints, max_size=3).map(tuple),
)


@st.composite
def crossbar_layer(
    draw: Draw, name: str, defined: list[str], output: str, const_names: list[str]
) -> CrossbarLayer:
    const = st.sampled_from(const_names) if const_names else names
    return CrossbarLayer(
        name=name,
        kind=draw(st.sampled_from(LAYER_KINDS)),
        input=draw(st.sampled_from(defined)),
        output=output,
        output_type=draw(tensor_types),
        weight=draw(const),
        bias=draw(st.one_of(st.none(), const)),
        groups=draw(small_ints),
        rows=draw(small_ints),
        cols=draw(small_ints),
        geometry=draw(st.one_of(st.none(), geometries)),
        source=draw(strings),
    )


@st.composite
def control_op(
    draw: Draw,
    defined: list[str],
    results: list[str],
    pool: list[str],
    layer_names: list[str],
    const_names: list[str],
) -> DigitalOp:
    """An If, Loop or Scan whose regions define the names of `pool` (formal inputs and op
    results, crossbar layers among them, taking names from `layer_names`) and return
    values they can see."""
    op_type = draw(st.sampled_from(sorted(REGION_NAMES)))
    regions = []
    for region_name in REGION_NAMES[op_type]:
        take = draw(st.integers(0, len(pool)))
        own, pool = pool[:take], pool[take:]
        input_count = draw(st.integers(0, len(own)))
        inputs = tuple(GraphInput(name, draw(tensor_types)) for name in own[:input_count])
        scope = [*defined, *own[:input_count]]
        ops: list[Op] = []
        for name in own[input_count:]:
            if layer_names and draw(st.booleans()):
                ops.append(draw(crossbar_layer(layer_names.pop(0), scope, name, const_names)))
            else:
                ops.append(draw(digital_op(scope, [name], const_names)))
            scope.append(name)
        outputs = tuple(draw(st.lists(st.sampled_from(scope), max_size=2)))
        regions.append(Region(region_name, inputs, tuple(ops), outputs))
    base = draw(digital_op(defined, results, const_names))
    return replace(base, op_type=op_type, domain="", regions=tuple(regions))


@st.composite
def graph(
    draw: Draw, const_names: list[str]
) -> tuple[tuple[GraphInput, ...], tuple[Op, ...], tuple[str, ...]]:
    value_names = draw(unique_names(min_size=1, max_size=12))
    layer_names = draw(unique_names(max_size=4))
    input_count = draw(st.integers(1, min(2, len(value_names))))
    inputs = tuple(
        GraphInput(name, draw(tensor_types), fixed_batch=draw(st.booleans()))
        for name in value_names[:input_count]
    )
    defined = list(value_names[:input_count])
    fresh = list(value_names[input_count:])
    ops: list[Op] = []
    while fresh:
        if len(fresh) >= 2 and draw(st.integers(0, 3)) == 0:
            results, pool = fresh[:1], fresh[1:5]
            fresh = fresh[5:]
            ops.append(draw(control_op(defined, results, pool, layer_names, const_names)))
            defined.extend(name for name in ops[-1].outputs if name)
            continue
        if layer_names and draw(st.booleans()):
            output = fresh.pop(0)
            ops.append(draw(crossbar_layer(layer_names.pop(0), defined, output, const_names)))
            defined.append(output)
            continue
        take = draw(st.integers(1, min(3, len(fresh))))
        new_names, fresh = fresh[:take], fresh[take:]
        ops.append(draw(digital_op(defined, new_names, const_names)))
        defined.extend(name for name in ops[-1].outputs if name)
    if draw(st.booleans()):
        ops.append(draw(digital_op(defined, [], const_names)))  # an op with no results
    outputs = tuple(draw(st.lists(st.sampled_from(defined), max_size=3)))
    return inputs, tuple(ops), outputs


# --- arrays, blocks, combines, phases ----------------------------------------------------


def scales(const_names: list[str]) -> st.SearchStrategy[float | Const]:
    const = st.sampled_from(const_names).map(Const) if const_names else st.nothing()
    return st.one_of(any_floats, const)


@st.composite
def array(draw: Draw, name: str, const_names: list[str]) -> Array:
    const = st.sampled_from(const_names) if const_names else names
    slice_indices = draw(st.lists(small_ints, max_size=4, unique=True))
    return Array(
        name=name,
        kind=draw(st.sampled_from(("weights", "basis"))),
        groups=draw(small_ints),
        rows=draw(small_ints),
        cols=draw(small_ints),
        weight_bits=draw(bits),
        encoding=draw(st.sampled_from(SIGNED_ENCODINGS)),
        scale=draw(scales(const_names)),
        values=draw(const),
        levels=draw(const),
        slices=tuple(
            Slice(index, draw(st.sampled_from("+-")), draw(bits), draw(bits))
            for index in slice_indices
        ),
        group_cols=draw(st.none() | small_ints),
        layer=draw(st.none() | names),
        tile_type=draw(st.none() | names),
    )


def indices(const_names: list[str]) -> st.SearchStrategy[Span | IndexTable]:
    const = st.sampled_from(const_names) if const_names else names
    return st.one_of(
        st.tuples(small_ints, small_ints).map(lambda ends: Span(min(ends), max(ends))),
        st.builds(IndexTable, const, small_ints, small_ints),
    )


@st.composite
def block(
    draw: Draw, index: int, array_names: list[str], tile_names: list[str], consts: list[str]
) -> Block:
    return Block(
        index=index,
        array=draw(st.sampled_from(array_names) if array_names else names),
        slice=draw(small_ints),
        group=draw(small_ints),
        rows=draw(indices(consts)),
        cols=draw(indices(consts)),
        tile_type=draw(st.sampled_from(tile_names)),
        vtile=draw(small_ints),
        row_offset=draw(small_ints),
        col_offset=draw(small_ints),
    )


def runs_of_numbers(max_runs: int = 4) -> st.SearchStrategy[list[int]]:
    """Numbers that often count up by one, so that the printer compresses them."""
    run = st.tuples(small_ints, st.integers(1, 5)).map(lambda r: list(range(r[0], r[0] + r[1])))
    return st.lists(run, max_size=max_runs).map(lambda runs: [n for r in runs for n in r])


@st.composite
def cycle(draw: Draw, block_ids: st.SearchStrategy[list[int]], consts: list[str]) -> Cycle:
    """Reads in groups that share an input segment, as the printer groups them."""
    reads = []
    for ids in draw(st.lists(block_ids, max_size=3)):
        segment = Segment(draw(small_ints), draw(indices(consts)))
        reads += [Read(block, segment) for block in ids]
    return Cycle(tuple(reads))


@st.composite
def phase(
    draw: Draw,
    index: int,
    layer_names: list[str],
    block_count: int,
    consts: list[str],
    tile_count: int,
) -> Phase:
    """A phase whose writes name tiles of the chip and whose reads name blocks below
    `block_count` (the parser refuses ranges longer than the chip or the blocks)."""
    vtiles = draw(runs_of_numbers())
    tiles = draw(st.one_of(runs_of_numbers(), st.lists(small_ints, max_size=20)))
    tiles = [tile % tile_count for tile in tiles] if tile_count else []
    writes = tuple(TileWrite(v, t) for v, t in zip(vtiles, tiles, strict=False))
    block_ids = st.one_of(
        st.lists(st.integers(0, max(block_count - 1, 0)), max_size=6),
        runs_of_numbers(3).map(lambda ids: [i % block_count for i in ids]),
    )
    runs = []
    for layer in draw(st.lists(st.sampled_from(layer_names), max_size=3)) if layer_names else []:
        cycles = tuple(draw(st.lists(cycle(block_ids, consts), max_size=4)))
        runs.append(LayerRun(layer, cycles))
    return Phase(index, writes, tuple(runs))


@st.composite
def programs(draw: Draw) -> Program:
    """A random well-formed program (see the module docstring)."""
    chip = draw(hardware())
    tensor_names = draw(unique_names(max_size=6))
    tensors = tuple(
        TensorDecl(
            name,
            draw(dtypes),
            tuple(draw(st.lists(small_ints, max_size=3))),
            draw(digests),
        )
        for name in tensor_names
    )
    inputs, ops, outputs = draw(graph(tensor_names))
    layer_names = [op.name for op in all_ops(ops) if isinstance(op, CrossbarLayer)]
    array_names = draw(unique_names(max_size=3))
    arrays = tuple(draw(array(name, tensor_names)) for name in array_names)
    tile_names = [tile_type.name for tile_type in chip.tile_types]
    block_indices = draw(st.lists(small_ints, max_size=8, unique=True))
    blocks = tuple(
        draw(block(index, array_names, tile_names, tensor_names)) for index in block_indices
    )
    combine_layers = (
        draw(st.lists(st.sampled_from(layer_names), unique=True)) if layer_names else []
    )
    combines = tuple(
        BasisCombine(
            layer=layer,
            basis=draw(st.sampled_from(array_names) if array_names else names),
            segment_rows=draw(small_ints),
            coefficients=draw(st.sampled_from(tensor_names) if tensor_names else names),
            coef_bits=draw(bits),
            scale=draw(scales(tensor_names)),
        )
        for layer in combine_layers
    )
    calibration = None
    if draw(st.booleans()):
        ranged = draw(st.lists(st.sampled_from(layer_names), unique=True)) if layer_names else []
        calibration = Calibration(
            draw(any_floats),
            draw(small_ints),
            tuple(LayerRange(name, draw(any_floats), draw(any_floats)) for name in ranged),
        )
    phase_indices = draw(st.lists(small_ints, max_size=3, unique=True))
    block_limit = max(block_indices, default=0) + 1
    phases = tuple(
        draw(phase(index, layer_names, block_limit, tensor_names, chip.tile_count))
        for index in phase_indices
    )
    return Program(
        hardware=chip,
        tensors=tensors,
        inputs=inputs,
        ops=ops,
        outputs=outputs,
        arrays=arrays,
        blocks=blocks,
        combines=combines,
        calibration=calibration,
        phases=phases,
    )
