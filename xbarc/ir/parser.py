"""Parse the text format of the tile IR (`ir_spec/xbar.lark`, see SPEC.md) into a Program.

`parse_program(text, filename)` returns a `ParsedProgram`: the `Program` (with an empty
TensorStore; `xbarc.ir.io.load_program` adds the sidecar's tensors) and the line and
column where each entity was written, so that the verifier can point at `file:line:col`.

Lark parses LALR(1) and calls `_Builder` as it reduces each rule, so the dataclasses are
built in one pass with no parse tree in between: a 15,000-block program parses in about
a second. `_Builder` is stateless (one shared parser serves every call); checks that
span statements, such as duplicate names, run afterwards in `_assemble`. Every error,
syntax or meaning, is an `XbarcError` located at the offending token.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, cast

from lark import Lark, Token, Transformer
from lark import __version__ as lark_version
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.grammar import Rule
from lark.lark import PostLex
from lark.lexer import TerminalDef

from xbarc.diagnostics import Location, XbarcError
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
from xbarc.ir.printer import const_ref, format_name, value_ref
from xbarc.ir.tile import (
    FORMAT_VERSION,
    LAYER_KINDS,
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
    Operand,
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
)
from xbarc.ir.types import NUMPY_DTYPES, ONNX_DTYPES, TensorType
from xbarc.limits import (
    MAX_BITS,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_IDS,
    MAX_INT64,
    MAX_SCHEDULE_ENTRIES,
    MAX_TENSOR_BYTES,
    MAX_TILE_DIM,
    MAX_TILES,
)

Position = tuple[int, int]  # (line, column), both from 1
LocationKey = tuple[Any, ...]

ARRAY_KINDS: tuple[str, ...] = ("weights", "basis")
_EXOTIC_DTYPE = re.compile(r"onnx[0-9]+")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_COST_FIELD_IS_INT = {f.name: isinstance(f.default, int) for f in fields(CostParams)}


@dataclass(frozen=True, slots=True)
class ParsedProgram:
    """A parsed program and where its entities were written.

    `locations` maps keys to (line, column):
    ("hardware",) and ("hardware", None) for the section,
    ("hardware", "cell"|"encoding"|"dac"|"adc"|"cost"), ("tile_type", name),
    ("tensor", name), ("input", name), ("output", name),
    ("value", name): where an activation is defined (graph input or op result),
    ("op", index) for every op; ("op", name) for a layer's name and output and for each
    named result of a digital op, or its node name when it has none (the first statement
    wins when names clash); ("layer", name),
    ("array", name), ("slice", array, index), ("block", index), ("combine", layer),
    ("phase", index), ("write", phase, position), ("run", phase, position),
    ("cycle", phase, run position, cycle position),
    ("read", phase, run position, cycle position, read position).
    Every position is the statement's first token; `position`s in keys are 0-based
    indices into the phase's `writes`, `runs`, the run's `cycles` and the cycle's `reads`
    (a read's position is that of its group `b0..b3 <- g0[0:9]`).
    """

    program: Program
    locations: Mapping[LocationKey, Position]
    filename: str = "<string>"

    def location(self, *key: Any) -> Location:
        """Where entity `key` was written; the file alone when it is not known."""
        return self.locate(key) or Location(self.filename)

    def locate(self, key: LocationKey) -> Location | None:
        """Where entity `key` was written, or None (the verifier's `locate`)."""
        position = self.locations.get(key)
        if position is None:
            return None
        return Location(self.filename, *position)


def parse_program(text: str, filename: str = "<string>") -> ParsedProgram:
    """Parse `text` (the contents of `filename`) into a program with an empty store."""
    _check_version(text, filename)
    budget = _BUDGET.set(_Budget())
    try:
        statements = cast(list[Any], _parser().parse(text))  # `start` returns its children
        program, locations = _assemble(statements)
    except UnexpectedInput as error:
        raise _syntax_error(error, text, filename) from None
    except _BuildError as error:
        where = Location(filename, error.position[0], error.position[1])
        raise XbarcError(error.message, where=where, hint=error.hint) from None
    finally:
        _BUDGET.reset(budget)
    return ParsedProgram(program, locations, filename)


@dataclass(slots=True)
class _Budget:
    """What the text so far allows the rest to ask for, so that no range allocates more
    than the program can mean: a range of tiles is no longer than the chip (the hardware
    section comes first), a range of blocks no longer than the blocks section (which comes
    before the phases), and all tile writes and block reads together stay within
    MAX_SCHEDULE_ENTRIES. One per `parse_program` call (the parser itself is shared)."""

    tiles: int = 0  # physical tiles of the chip
    blocks: int = 0  # the highest block index + 1
    entries: int = 0  # tile writes and block reads expanded so far


_BUDGET: ContextVar[_Budget] = ContextVar("xbarc_parse_budget")


_HEADER = re.compile(r"(?:\s|#[^\n]*)*xbar[ \t]+([0-9]+)\b")


def _check_version(text: str, filename: str) -> None:
    """Refuse another format version before parsing: its syntax may differ, and "recompile"
    is more use than a syntax error in the middle of the file."""
    header = _HEADER.match(text)
    if header is None or header.group(1).lstrip("0") == str(FORMAT_VERSION):
        return  # no header: the parser reports what it expected
    line = text.count("\n", 0, header.start(1)) + 1
    column = header.start(1) - (text.rfind("\n", 0, header.start(1)) + 1) + 1
    raise XbarcError(
        f"format version {_shorten(header.group(1))} is not supported",
        where=Location(filename, line, column),
        hint=f"recompile the model with this xbarc: it reads version {FORMAT_VERSION}, in which "
        "every read of a cycle names its input",
    )


# --- the lark parser, built once ---------------------------------------------------------


# The LALR tables built from xbar.lark, shipped beside it as JSON (never a pickle): building
# them takes a quarter of a second, loading them a hundredth (what `xbarc inspect` of a small
# program costs). They are used only when they were built from this grammar text by this
# lark version; otherwise the parser is built from the grammar. tests/test_parser_tables.py
# checks that the shipped file is current (regenerate: `python -m xbarc.ir.parser`).
TABLES_FILE = "xbar_tables.json"
_LARK_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "maybe_placeholders": True,
}
# options that are objects of ours, given again when the tables are loaded
_RUNTIME_OPTIONS = ("postlex", "transformer", "lexer_callbacks", "edit_terminals", "tree_class")


@functools.cache
def _parser() -> Lark:
    grammar = _grammar()
    tables = _shipped_tables(grammar)
    if tables is not None:
        parser = Lark.__new__(Lark)
        return parser._load(tables, transformer=_Builder(), postlex=_NamesEverywhere())
    return _build_parser(grammar)


def _grammar() -> str:
    return resources.files("xbarc.ir_spec").joinpath("xbar.lark").read_text("utf-8")


def _build_parser(grammar: str) -> Lark:
    return Lark(grammar, transformer=_Builder(), postlex=_NamesEverywhere(), **_LARK_OPTIONS)


def _tables_key(grammar: str) -> dict[str, str]:
    """What the tables were built from: the grammar text and the lark version."""
    return {
        "grammar_sha256": hashlib.sha256(grammar.encode("utf-8")).hexdigest(),
        "lark": lark_version,
    }


def tables_json(grammar: str | None = None) -> str:
    """The parser's LALR tables as JSON text (lark's own serialization, which is what its
    pickle cache holds, minus the options that are objects of ours)."""
    grammar = _grammar() if grammar is None else grammar
    data, memo = _build_parser(grammar).memo_serialize([TerminalDef, Rule])
    data["options"] = {
        name: value for name, value in data["options"].items() if name not in _RUNTIME_OPTIONS
    }
    document = {"built_from": _tables_key(grammar), "data": data, "memo": memo}
    return json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"


def _shipped_tables(grammar: str) -> dict | None:
    """The shipped tables as lark's serialized dict, or None when absent or built from
    another grammar or lark version."""
    try:
        text = resources.files("xbarc.ir_spec").joinpath(TABLES_FILE).read_text("utf-8")
        document = json.loads(text, object_hook=_integer_keys)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("built_from") != _tables_key(grammar):
        return None
    return {"data": document["data"], "memo": document["memo"]}


def _integer_keys(mapping: dict) -> dict:
    """JSON writes every key as a string; lark's tables key states, tokens and memo entries
    by integers, and no other key of theirs is all digits."""
    return {int(key) if key.isdigit() else key: value for key, value in mapping.items()}


class _NamesEverywhere(PostLex):
    """Adds NAME to the terminals the contextual lexer tries in every parser state.

    Without it, a state that expects only keywords reads `integer` as the keyword `int`
    followed by `eger`. With it, the lexer reads the whole word; an exact keyword is
    still that keyword (lark retypes a NAME equal to a keyword the state accepts), and
    numbers, digests and b/v/t indices outrank NAME by priority.
    """

    always_accept = ("NAME",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        return stream


class _BuildError(Exception):
    """A meaning error found while building, located at a token; becomes an XbarcError."""

    def __init__(self, message: str, position: Position, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.position = position
        self.hint = hint


# --- tokens to values --------------------------------------------------------------------


def _position(token: Token) -> Position:
    return (token.line, token.column)  # type: ignore[return-value]


def _unquote(text: str) -> str:
    return json.loads(text) if text.startswith('"') else text


def _ref(token: Token) -> str:
    """The name in a `%name` or `@name` token."""
    return _unquote(token[1:])


def _index(token: Token) -> int:
    """The number in a `b3`, `g3`, `v3` or `t3` token, at most MAX_IDS."""
    return _bounded(token[1:], token, "index", MAX_IDS, shown=token)


def _int(token: Token, what: str, limit: int, minimum: int = 0) -> int:
    """The integer `token`, refused at the token outside minimum..limit: every count, size
    and index read from a program is checked here before anything is sized by it."""
    return _bounded(token, token, what, limit, minimum)


def _signed(token: Token, what: str) -> int:
    """An integer ONNX stores in 64 bits (attributes, opsets, counts of work)."""
    return _bounded(token, token, what, MAX_INT64, -MAX_INT64 - 1)


def _bounded(
    digits: str, token: Token, what: str, limit: int, minimum: int = 0, shown: str = ""
) -> int:
    """int(`digits`) (part of `token`) within minimum..limit; `shown` names it in errors.
    A number of more digits than any limit has is refused before int() reads it."""
    if len(digits) <= _MAX_DIGITS:
        value = int(digits)
    else:
        value = minimum - 1 if digits.startswith("-") else limit + 1
    if value > limit:
        message = f"{what} {_shorten(shown or digits)} is more than xbarc supports ({limit})"
        raise _BuildError(message, _position(token))
    if value < minimum:
        shown = _shorten(shown or digits)
        if minimum == 0:  # "negative dimension -1", "negative tile count -5"
            noun = what.removeprefix("the ").removeprefix("a ").removeprefix("an ")
            raise _BuildError(f"negative {noun} {shown}", _position(token))
        raise _BuildError(f"{what} {shown} is less than {minimum}", _position(token))
    return value


_MAX_DIGITS = 40  # int64 needs 20 characters with its sign: longer is never in range


def _shorten(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...{text[-6:]} ({len(text)} characters)"


def _number(token: Token) -> float:
    return float(token)


def _integer(token: Token, what: str) -> int:
    if token.type != "INT":
        raise _BuildError(f"{what} must be an integer, found {token}", _position(token))
    return _signed(token, what)


def _choice(token: Token, choices: tuple[str, ...], what: str) -> str:
    if token not in choices:
        hint = f"use {_one_of(choices)}"
        raise _BuildError(f"unknown {what} '{token}'", _position(token), hint=hint)
    return str(token)


def _one_of(words: Iterable[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    words = list(words)
    if len(words) < 2:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _dtype(token: Token) -> str:
    if token in ONNX_DTYPES or _EXOTIC_DTYPE.fullmatch(token):
        return str(token)
    hint = f"use {', '.join(ONNX_DTYPES)}, or onnx<code> for other ONNX types"
    raise _BuildError(f"unknown element type '{token}'", _position(token), hint=hint)


def _expand(token: Token) -> range:
    """`b3` -> range(3, 4); `b0..b7` -> range(0, 8)."""
    first, _, last = token.partition("..")
    start = _bounded(first[1:], token, "index", MAX_IDS, shown=first)
    stop = _bounded(last[1:], token, "index", MAX_IDS, shown=last) + 1 if last else start + 1
    if stop <= start:
        raise _BuildError(f"range {token} counts down; write it upward", _position(token))
    return range(start, stop)


def _spend(token: Token, indices: range, what: str, limit: int, have: str) -> range:
    """`indices` once checked against what the program has and the schedule's budget:
    a range longer than the `limit` of `what` the program has cannot name only real
    ones, and is refused before it is expanded."""
    if len(indices) > max(limit, 1):  # one index alone costs no more than its text
        raise _BuildError(
            f"{token} names {len(indices)} {what} but {have} {limit}",
            _position(token),
            hint=f"name only {what} that exist",
        )
    budget = _BUDGET.get()
    budget.entries += len(indices)
    if budget.entries > MAX_SCHEDULE_ENTRIES:
        raise _BuildError(
            f"the schedule has more than {MAX_SCHEDULE_ENTRIES} tile writes and block reads",
            _position(token),
            hint="more than xbarc supports; is this a real program?",
        )
    return indices


class _Builder(Transformer):
    """Rule callbacks, one per grammar rule: children in, values out.

    Statements come back as (value, position, ...) tuples for `_assemble` to place.
    """

    # --- shared pieces

    def name(self, children: list[Token]) -> Token:
        token = children[0]
        return Token.new_borrow_pos(token.type, _unquote(token), token)

    def number(self, children: list[Token]) -> Token:
        return children[0]

    def scale(self, children: list[Token]) -> float | Const:
        token = children[0]
        if token.type == "CONST":
            return Const(_ref(token))
        return _number(token)

    def int_list(self, children: list[Token | None]) -> tuple[int, ...]:
        # kernel, strides, pads, dilations: the verifier says which signs make sense
        return tuple(
            _int(token, "a geometry value", MAX_DIM, -MAX_DIM)
            for token in children
            if token is not None
        )

    def scalar_type(self, children: list[Token]) -> TensorType:
        return TensorType(_dtype(children[0]), ())

    def unranked_type(self, children: list[Token]) -> TensorType:
        return TensorType(_dtype(children[0]), None)

    def ranked_type(self, children: list[Token]) -> TensorType:
        dims = tuple(
            None if dim.type == "UNKNOWN" else _int(dim, "a dimension", MAX_DIM)
            for dim in children[1:]
        )
        _check_elements(children[0], tuple(dim for dim in dims if dim is not None))
        return TensorType(_dtype(children[0]), dims)

    # --- header and hardware

    def header(self, children: list[Token]) -> tuple[int, Position]:
        keyword, version = children  # checked by _check_version before parsing
        return _signed(version, "the format version"), _position(keyword)

    def tile_type(self, children: list[Token]) -> tuple[str, TileType, Position]:
        keyword, name, rows, cols, count = children
        sizes = (
            _int(rows, "the row count of a tile", MAX_TILE_DIM),
            _int(cols, "the column count of a tile", MAX_TILE_DIM),
            _int(count, "the tile count", MAX_TILES),
        )
        try:
            tile_type = TileType(str(name), *sizes)
        except XbarcError as error:  # too many cells
            raise _BuildError(error.message, _position(rows), error.hint) from None
        return "tile", tile_type, _position(keyword)

    def cell(self, children: list[Token]) -> tuple[str, CellSpec, Position]:
        keyword, bits, g_min, g_max = children
        cell_bits = _int(bits, "cell bits", MAX_BITS)
        return "cell", CellSpec(cell_bits, _number(g_min), _number(g_max)), _position(keyword)

    def encoding(self, children: list[Token]) -> tuple[str, str, Position]:
        keyword, encoding = children
        return "encoding", _choice(encoding, SIGNED_ENCODINGS, "encoding"), _position(keyword)

    def dac(self, children: list[Token]) -> tuple[str, DacSpec, Position]:
        keyword, bits, slice_bits = children
        spec = DacSpec(
            _int(bits, "DAC bits", MAX_BITS), _int(slice_bits, "DAC slice bits", MAX_BITS)
        )
        return "dac", spec, _position(keyword)

    def adc(self, children: list[Token]) -> tuple[str, AdcSpec, Position]:
        keyword, bits, adc_range, cols_per_adc = children
        adc_range_name = _choice(adc_range, ADC_RANGES, "ADC range")
        spec = AdcSpec(
            _int(bits, "ADC bits", MAX_BITS),
            adc_range_name,  # type: ignore[arg-type]
            _int(cols_per_adc, "cols_per_adc", MAX_TILE_DIM),
        )
        return "adc", spec, _position(keyword)

    def cost_field(self, children: list[Token]) -> tuple[Token, Token]:
        return children[0], children[1]

    def cost(self, children: list[Any]) -> tuple[str, CostParams, Position]:
        keyword, *entries = children
        values: dict[str, int | float] = {}
        for name, number in entries:
            is_int = _COST_FIELD_IS_INT.get(name)
            if is_int is None:
                hint = f"use {_one_of(_COST_FIELD_IS_INT)}"
                raise _BuildError(f"unknown cost parameter '{name}'", _position(name), hint)
            if name in values:
                raise _BuildError(f"cost parameter '{name}' is given twice", _position(name))
            values[str(name)] = _integer(number, name) if is_int else _number(number)
        return "cost", CostParams(**values), _position(keyword)  # type: ignore[arg-type]

    def hardware(self, children: list[Any]) -> tuple[Hardware, dict[LocationKey, Position]]:
        keyword, *items = children
        position = _position(keyword)
        locations: dict[LocationKey, Position] = {
            ("hardware",): position,
            ("hardware", None): position,
        }
        tile_types: list[TileType] = []
        parts: dict[str, Any] = {}
        for kind, value, item_position in items:
            if kind == "tile":
                key = ("tile_type", value.name)
                _define(locations, key, item_position, f"tile type {format_name(value.name)}")
                tile_types.append(value)
                continue
            _define(locations, ("hardware", kind), item_position, f"the '{kind}' line")
            parts[kind] = value
        try:
            hardware = Hardware(tuple(tile_types), **parts)
        except XbarcError as error:  # too many tiles in all
            raise _BuildError(error.message, position, error.hint) from None
        _BUDGET.get().tiles = hardware.tile_count
        return hardware, locations

    # --- tensors

    def tensor_decl(self, children: list[Any]) -> tuple[TensorDecl, Position]:
        name, tensor_type, digest = children
        position = _position(name)
        if not tensor_type.is_static:
            raise _BuildError(f"tensor {name} needs a known shape, got {tensor_type}", position)
        if not _HEX_DIGEST.fullmatch(digest):
            raise _BuildError(
                f"tensor {name} has a malformed sha256 digest",
                _position(digest),
                hint="a digest is 64 lowercase hex digits",
            )
        decl = TensorDecl(_ref(name), tensor_type.dtype, tensor_type.static_shape(), str(digest))
        _declared_bytes(decl, position)  # within MAX_TENSOR_BYTES
        return decl, position

    def tensors(self, children: list[Any]) -> tuple[str, list[tuple[TensorDecl, Position]]]:
        total = 0
        for decl, position in children[1:]:
            total += _declared_bytes(decl, position)
            if total > MAX_TENSOR_BYTES:
                raise _BuildError(
                    f"the tensors declared up to {const_ref(decl.name)} hold {total} bytes,"
                    f" more than xbarc loads ({MAX_TENSOR_BYTES})",
                    position,
                )
        return "tensors", children[1:]

    # --- graph

    def graph_input(self, children: list[Any]) -> tuple[str, GraphInput, Position]:
        keyword, name, tensor_type, _, fixed = children
        graph_input = GraphInput(_ref(name), tensor_type, fixed_batch=fixed is not None)
        return "input", graph_input, _position(keyword)

    def graph_output(self, children: list[Token]) -> tuple[str, str, Position]:
        keyword, name = children
        return "output", _ref(name), _position(keyword)

    def results(self, children: list[Token]) -> list[Token]:
        return children

    def operands(self, children: list[Token]) -> tuple[Operand, ...]:
        return tuple(_operand(token) for token in children)

    def op_types(self, children: list[Any]) -> tuple[TensorType | None, ...]:
        return tuple(None if isinstance(t, Token) else t for t in children)

    def op_name(self, children: list[Token | None]) -> tuple[str, str]:
        first, second = children
        if second is None:
            return "", str(first)
        return str(first), str(second)

    def geometry(self, children: list[Any]) -> ConvGeometry:
        kernel, strides, pads, dilations, output_padding = children
        return ConvGeometry(kernel, strides, pads, dilations, output_padding or ())

    def bias(self, children: list[Token]) -> str | None:
        token = children[0]
        return None if token.type == "NONE" else _ref(token)

    def layer(self, children: list[Any]) -> tuple[str, CrossbarLayer, Position]:
        (results, _, kind, name, layer_input, output_type, weight, bias,
         groups, rows, cols, geometry, source) = children  # fmt: skip
        position = _position(results[0])
        if len(results) != 1 or results[0].type != "VALUE":
            raise _BuildError("a crossbar layer has exactly one named result", position)
        layer = CrossbarLayer(
            name=_ref(name),
            kind=_choice(kind, LAYER_KINDS, "layer kind"),  # type: ignore[arg-type]
            input=_ref(layer_input),
            output=_ref(results[0]),
            output_type=output_type,
            weight=_ref(weight),
            bias=bias,
            groups=_int(groups, "the layer's groups", MAX_DIM),
            rows=_int(rows, "the layer's rows", MAX_DIM),
            cols=_int(cols, "the layer's cols", MAX_DIM),
            geometry=geometry,
            source="" if source is None else json.loads(source),
        )
        return "op", layer, position

    def digital_op(self, children: list[Any]) -> tuple[str, DigitalOp, Position, list[Any]]:
        (results, keyword, (domain, op_type), operands, op_types, opset, name, not_mapped,
         attributes) = children[:9]  # fmt: skip
        regions = children[9:]
        position = _position(results[0] if results else keyword)
        seen: set[str] = set()
        for region, region_position, _ in regions:
            if region.name in seen:
                raise _BuildError(f"region '{region.name}' is given twice", region_position)
            seen.add(region.name)
        op = DigitalOp(
            name="" if name is None else json.loads(name),
            op_type=op_type,
            domain=domain,
            opset=_signed(opset, "the opset"),
            inputs=operands or (),
            outputs=tuple("" if t.type == "OMITTED" else _ref(t) for t in results or ()),
            output_types=op_types or (),
            attributes=attributes or (),
            not_mapped=not_mapped,
            regions=tuple(region for region, _, _ in regions),
        )
        return "op", op, position, regions

    def region_input(self, children: list[Any]) -> tuple[str, GraphInput, Position]:
        value, value_type = children
        return "input", GraphInput(_ref(value), value_type), _position(value)

    def region(self, children: list[Any]) -> tuple[Region, Position, list[Any]]:
        keyword, name, *items = children
        items = [item for item in items if item is not None]
        region = Region(
            name=str(name),
            inputs=tuple(value for kind, value, *_ in items if kind == "input"),
            ops=tuple(value for kind, value, *_ in items if kind == "op"),
            outputs=tuple(value for kind, value, *_ in items if kind == "output"),
        )
        return region, _position(keyword), items

    def not_mapped(self, children: list[Token]) -> NotMapped:
        reason, macs = children
        count = None if macs.type == "UNKNOWN" else _signed(macs, "macs")
        return NotMapped(json.loads(reason), count)

    def attributes(self, children: list[tuple[Attribute, Token]]) -> tuple[Attribute, ...]:
        seen: set[str] = set()
        for attribute, name in children:
            if attribute.name in seen:
                raise _BuildError(f"attribute '{attribute.name}' is given twice", _position(name))
            seen.add(attribute.name)
        return tuple(attribute for attribute, _ in children)

    def attr_int(self, children: list[Token]) -> tuple[Attribute, Token]:
        return _attribute(children, "int", _signed(children[1], "an int attribute"))

    def attr_float(self, children: list[Token]) -> tuple[Attribute, Token]:
        return _attribute(children, "float", _number(children[1]))

    def attr_string(self, children: list[Token]) -> tuple[Attribute, Token]:
        return _attribute(children, "string", json.loads(children[1]))

    def attr_ints(self, children: list[Any]) -> tuple[Attribute, Token]:
        values = tuple(
            _signed(token, "an ints attribute's value")
            for token in children[1:]
            if token is not None
        )
        return _attribute(children, "ints", values)

    def attr_floats(self, children: list[Any]) -> tuple[Attribute, Token]:
        values = tuple(_number(token) for token in children[1:] if token is not None)
        return _attribute(children, "floats", values)

    def attr_strings(self, children: list[Any]) -> tuple[Attribute, Token]:
        values = tuple(json.loads(token) for token in children[1:] if token is not None)
        return _attribute(children, "strings", values)

    def attr_tensor(self, children: list[Token]) -> tuple[Attribute, Token]:
        return _attribute(children, "tensor", Const(_ref(children[1])))

    def attr_proto(self, children: list[Token]) -> tuple[Attribute, Token]:
        return _attribute(children, "proto", Const(_ref(children[1])))

    def graph(self, children: list[Any]) -> tuple[str, list[Any]]:
        return "graph", children[1:]

    # --- arrays

    def slice(self, children: list[Token]) -> tuple[Slice, Position]:
        keyword, index, polarity, shift, bits = children
        piece = Slice(
            _int(index, "a slice index", MAX_IDS),
            str(polarity),  # type: ignore[arg-type]
            _int(shift, "a slice's shift", MAX_BITS),
            _int(bits, "a slice's bits", MAX_BITS),
        )
        return piece, _position(keyword)

    def array(self, children: list[Any]) -> tuple[str, Array, Position, list[Any]]:
        (keyword, name, kind, layer, groups, rows, cols, weight_bits, encoding, scale,
         values, levels, group_cols, copies, tile_type, *slices) = children  # fmt: skip
        array = Array(
            name=_ref(name),
            kind=_choice(kind, ARRAY_KINDS, "array kind"),  # type: ignore[arg-type]
            groups=_int(groups, "the array's groups", MAX_DIM),
            rows=_int(rows, "the array's rows", MAX_DIM),
            cols=_int(cols, "the array's cols", MAX_DIM),
            weight_bits=_int(weight_bits, "weight_bits", MAX_BITS),
            encoding=_choice(encoding, SIGNED_ENCODINGS, "encoding"),  # type: ignore[arg-type]
            scale=scale,
            values=_ref(values),
            levels=_ref(levels),
            slices=tuple(piece for piece, _ in slices),
            group_cols=None if group_cols is None else _int(group_cols, "group_cols", MAX_DIM),
            layer=None if layer is None else _ref(layer),
            copies=1 if copies is None else _int(copies, "copies", MAX_IDS),
            tile_type=None if tile_type is None else str(tile_type),
        )
        return "array", array, _position(keyword), slices

    # --- blocks

    def span(self, children: list[Token]) -> Span:
        return Span(
            _int(children[0], "a row or column", MAX_DIM),
            _int(children[1], "a row or column", MAX_DIM),
        )

    def index_table(self, children: list[Token]) -> IndexTable:
        if len(children) == 2:  # @t[count]
            return IndexTable(_ref(children[0]), _int(children[1], "an index count", MAX_DIM))
        name, start, stop = children  # @t[start:stop]
        first = _int(start, "an index table position", MAX_DIM)
        return IndexTable(_ref(name), _int(stop, "an index table position", MAX_DIM) - first, first)

    def block(self, children: list[Any]) -> tuple[Block, Position]:
        name, array, piece, group, rows, cols, vtile, tile_type, row_offset, col_offset = children
        block = Block(
            index=_index(name),
            array=_ref(array),
            slice=_int(piece, "a slice index", MAX_IDS),
            group=_int(group, "a group", MAX_DIM),
            rows=rows,
            cols=cols,
            tile_type=str(tile_type),
            vtile=_index(vtile),
            row_offset=_int(row_offset, "a row offset", MAX_TILE_DIM),
            col_offset=_int(col_offset, "a column offset", MAX_TILE_DIM),
        )
        return block, _position(name)

    def blocks(self, children: list[Any]) -> tuple[str, list[tuple[Block, Position]]]:
        budget = _BUDGET.get()
        budget.blocks = max((block.index + 1 for block, _ in children[1:]), default=0)
        return "blocks", children[1:]

    # --- combines and phases

    def combine(self, children: list[Any]) -> tuple[str, BasisCombine, Position]:
        keyword, layer, basis, segment_rows, coefficients, coef_bits, scale = children
        combine = BasisCombine(
            layer=_ref(layer),
            basis=_ref(basis),
            segment_rows=_int(segment_rows, "segment_rows", MAX_DIM),
            coefficients=_ref(coefficients),
            coef_bits=_int(coef_bits, "coef_bits", MAX_BITS),
            scale=scale,
        )
        return "combine", combine, _position(keyword)

    def layer_range(self, children: list[Any]) -> tuple[LayerRange, Position]:
        layer, input_range, adc_range = children
        entry = LayerRange(_ref(layer), _number(input_range), _number(adc_range))
        return entry, _position(layer)

    def calibration(self, children: list[Any]) -> tuple[str, Calibration, Position, list]:
        keyword, percentile, samples, *ranges = children
        calibration = Calibration(
            _number(percentile), _signed(samples, "samples"), tuple(entry for entry, _ in ranges)
        )
        return "calibration", calibration, _position(keyword), ranges

    def write_entry(self, children: list[Token]) -> list[TileWrite]:
        vtiles, tiles = children
        vtile_range, tile_range = _expand(vtiles), _expand(tiles)
        if len(vtile_range) != len(tile_range):
            raise _BuildError(
                f"{vtiles} names {len(vtile_range)} virtual tiles but {tiles} names"
                f" {len(tile_range)} tiles",
                _position(vtiles),
                hint="the two ranges of a write pair up one to one",
            )
        _spend(tiles, tile_range, "tiles", _BUDGET.get().tiles, "the chip has")
        return [TileWrite(v, t) for v, t in zip(vtile_range, tile_range, strict=True)]

    def write(self, children: list[Any]) -> tuple[str, list[TileWrite], Position]:
        keyword, *entries = children
        return "write", [write for entry in entries for write in entry], _position(keyword)

    def reads(self, children: list[Any]) -> tuple[list[Read], Position]:
        *refs, group, rows = children
        segment = Segment(_index(group), rows)
        have = _BUDGET.get().blocks
        ranges = [_spend(ref, _expand(ref), "blocks", have, "the program has") for ref in refs]
        return [Read(i, segment) for indices in ranges for i in indices], _position(refs[0])

    def cycle(self, children: list[Any]) -> tuple[Cycle, Position, list[Position]]:
        keyword, *groups = children
        reads = [read for group in groups if group is not None for read in group[0]]
        positions = [
            position
            for group in groups
            if group is not None
            for position in [group[1]] * len(group[0])
        ]
        return Cycle(tuple(reads)), _position(keyword), positions

    def run(self, children: list[Any]) -> tuple[str, LayerRun, Position, list[Position]]:
        keyword, layer, *cycles = children
        run = LayerRun(_ref(layer), tuple(cycle for cycle, _, _ in cycles))
        return "run", run, _position(keyword), [located[1:] for located in cycles]

    def phase(self, children: list[Any]) -> tuple[str, Phase, Position, list[Any]]:
        keyword, index, *statements = children
        writes = [w for kind, value, *_ in statements if kind == "write" for w in value]
        runs = [value for kind, value, *_ in statements if kind == "run"]
        phase = Phase(_int(index, "a phase index", MAX_IDS), tuple(writes), tuple(runs))
        return "phase", phase, _position(keyword), statements

    def start(self, children: list[Any]) -> list[Any]:
        return children


def _check_elements(at: Token, dims: tuple[int, ...]) -> int:
    """The elements of a shape, refused (at `at`) beyond MAX_ELEMENTS."""
    count = 1
    for dim in dims:
        count *= dim
        if count > MAX_ELEMENTS:
            shape = ",".join(str(d) for d in dims)
            raise _BuildError(
                f"shape [{shape}] has more elements than xbarc supports ({MAX_ELEMENTS})",
                _position(at),
            )
    return count


def _declared_bytes(decl: TensorDecl, position: Position) -> int:
    """The bytes tensor `decl` takes (at least: exotic types count one a byte, strings
    four), refused beyond MAX_TENSOR_BYTES before any sidecar is opened."""
    numpy_type = NUMPY_DTYPES.get(decl.dtype)
    itemsize = numpy_type.itemsize if numpy_type is not None else 1
    elements = 1
    for dim in decl.shape:
        elements *= dim
    size = elements * (4 if decl.dtype == "str" else itemsize)
    if size > MAX_TENSOR_BYTES:
        raise _BuildError(
            f"tensor {const_ref(decl.name)} is declared with {size} bytes, more than xbarc"
            f" loads ({MAX_TENSOR_BYTES})",
            position,
        )
    return size


def _operand(token: Token) -> Operand:
    if token.type == "OMITTED":
        return None
    if token.type == "CONST":
        return Const(_ref(token))
    return Value(_ref(token))


def _attribute(children: list[Any], kind: str, value: Any) -> tuple[Attribute, Token]:
    name = children[0]
    return Attribute(str(name), kind, value), name


# --- assembling the statements into a program --------------------------------------------


def _define(
    locations: dict[LocationKey, Position], key: LocationKey, position: Position, what: str
) -> None:
    """Record where `key` is defined; a second definition is an error."""
    first = locations.get(key)
    if first is not None:
        raise _BuildError(
            f"{what} is defined twice (first at line {first[0]}, column {first[1]})", position
        )
    locations[key] = position


def _assemble(statements: list[Any]) -> tuple[Program, dict[LocationKey, Position]]:
    _, hardware_part, tensors_part, graph_part, *rest = statements
    hardware, locations = hardware_part
    tensors = _place_tensors(tensors_part, locations)
    inputs, ops, outputs = _place_graph(graph_part, locations)
    arrays: list[Array] = []
    blocks: list[Block] = []
    combines: list[BasisCombine] = []
    calibration: Calibration | None = None
    phases: list[Phase] = []
    for statement in rest:
        if statement is None:
            continue
        kind = statement[0]
        if kind == "array":
            arrays.append(_place_array(statement, locations))
        elif kind == "blocks":
            blocks.extend(_place_blocks(statement[1], locations))
        elif kind == "combine":
            _, combine, position = statement
            _define(locations, ("combine", combine.layer), position,
                    f"the combine of {const_ref(combine.layer)}")  # fmt: skip
            combines.append(combine)
        elif kind == "calibration":
            _, calibration, position, ranges = statement
            locations[("calibration", None)] = position
            for entry, entry_position in ranges:
                _define(locations, ("range", entry.layer), entry_position,
                        f"the range of {const_ref(entry.layer)}")  # fmt: skip
        else:
            phases.append(_place_phase(statement, locations))
    program = Program(
        hardware=hardware,
        tensors=tensors,
        inputs=inputs,
        ops=ops,
        outputs=outputs,
        arrays=tuple(arrays),
        blocks=tuple(blocks),
        combines=tuple(combines),
        calibration=calibration,
        phases=tuple(phases),
    )
    return program, locations


def _place_tensors(part: Any, locations: dict[LocationKey, Position]) -> tuple[TensorDecl, ...]:
    if part is None:
        return ()
    for decl, position in part[1]:
        _define(locations, ("tensor", decl.name), position, f"tensor {const_ref(decl.name)}")
    return tuple(decl for decl, _ in part[1])


def _place_graph(
    part: Any, locations: dict[LocationKey, Position]
) -> tuple[tuple[GraphInput, ...], tuple[Op, ...], tuple[str, ...]]:
    if part is None:
        return (), (), ()
    inputs: list[GraphInput] = []
    ops: list[Op] = []
    outputs: list[str] = []
    for kind, value, position, *regions in part[1]:
        if kind == "input":
            _define_value(locations, value.name, position)
            locations.setdefault(("input", value.name), position)
            inputs.append(value)
        elif kind == "output":
            locations.setdefault(("output", value), position)
            outputs.append(value)
        else:
            locations[("op", len(ops))] = position
            _place_op(value, position, locations, regions[0] if regions else [])
            ops.append(value)
    return tuple(inputs), tuple(ops), tuple(outputs)


def _define_value(locations: dict[LocationKey, Position], name: str, position: Position) -> None:
    _define(locations, ("value", name), position, f"value {value_ref(name)}")


def _place_op(op: Op, position: Position, locations: dict, regions: list[Any]) -> None:
    """Record where `op` (and the ops of its regions) define their names."""
    if isinstance(op, CrossbarLayer):
        _define(locations, ("layer", op.name), position, f"layer {const_ref(op.name)}")
        _define_value(locations, op.output, position)
        locations.setdefault(("op", op.output), position)
        locations.setdefault(("op", op.name), position)
        return
    for output in op.outputs:
        if output:
            _define_value(locations, output, position)
            locations.setdefault(("op", output), position)
    if not any(op.outputs):
        locations.setdefault(("op", op.name), position)
    for _, _, items in regions:
        for kind, value, item_position, *nested in items:
            if kind == "input":
                _define_value(locations, value.name, item_position)
            elif kind == "op":
                _place_op(value, item_position, locations, nested[0] if nested else [])


def _place_array(statement: Any, locations: dict[LocationKey, Position]) -> Array:
    _, array, position, slices = statement
    _define(locations, ("array", array.name), position, f"array {const_ref(array.name)}")
    for piece, slice_position in slices:
        key = ("slice", array.name, piece.index)
        _define(locations, key, slice_position, f"slice {piece.index} of this array")
    return array


def _place_blocks(
    located: Iterable[tuple[Block, Position]], locations: dict[LocationKey, Position]
) -> list[Block]:
    blocks = []
    for block, position in located:
        _define(locations, ("block", block.index), position, f"block b{block.index}")
        blocks.append(block)
    return blocks


def _place_phase(statement: Any, locations: dict[LocationKey, Position]) -> Phase:
    _, phase, position, statements = statement
    _define(locations, ("phase", phase.index), position, f"phase {phase.index}")
    write_count = run_count = 0
    for kind, value, statement_position, *extra in statements:
        if kind == "write":
            for _ in value:
                locations[("write", phase.index, write_count)] = statement_position
                write_count += 1
            continue
        locations[("run", phase.index, run_count)] = statement_position
        for cycle_index, (cycle_position, read_positions) in enumerate(extra[0]):
            locations[("cycle", phase.index, run_count, cycle_index)] = cycle_position
            for read_index, read_position in enumerate(read_positions):
                key = ("read", phase.index, run_count, cycle_index, read_index)
                locations[key] = read_position
        run_count += 1
    return phase


# --- syntax errors in plain words --------------------------------------------------------

_TERMINAL_WORDS = {
    "VALUE": "a value name (%x)",
    "CONST": "a constant name (@w)",
    "NAME": "a name",
    "STRING": 'a quoted string ("...")',
    "INT": "an integer",
    "FLOAT": "a number",
    "INF": "a number",
    "NAN": "a number",
    "HEX": "a sha256 digest",
    "BLOCK": "a block (b0)",
    "BLOCKS_RANGE": "a block or block range (b0..b7)",
    "GROUP": "an input group (g0)",
    "VTILE": "a virtual tile (v0)",
    "VTILES": "a virtual tile or range (v0..v7)",
    "TILES": "a physical tile or range (t0..t7)",
    "POLARITY": "'+' or '-'",
    "$END": "end of file",
}
_MAX_EXPECTED = 8


def _syntax_error(error: UnexpectedInput, text: str, filename: str) -> XbarcError:
    line, column = error.line, error.column
    position = error.pos_in_stream or 0
    character = text[position] if position < len(text) else ""
    if isinstance(error, UnexpectedToken) and error.token.type != "$END":
        found = _quote_found(str(error.token))
    elif isinstance(error, UnexpectedCharacters) and character == '"':
        found = "a string that is not closed on its line or holds a bad escape"
    elif isinstance(error, UnexpectedCharacters):
        found = _quote_found(character)
    else:
        found = "end of file"
        line, column = _end_position(text)
    message = f"found {found}, expected {_describe_expected(_expected_terminals(error))}"
    return XbarcError(message, where=Location(filename, line, column))


def _expected_terminals(error: UnexpectedInput) -> Iterable[str]:
    """The terminals the parser could take next.

    LALR merges states, so the terminals of the state the error happened in (lark's
    `expected`) include some that only fit elsewhere in the grammar; asking the
    interactive parser which ones it would really accept narrows them down.
    """
    fallback = getattr(error, "expected", None) or getattr(error, "allowed", None) or ()
    interactive = getattr(error, "interactive_parser", None)
    if interactive is None:
        return fallback
    return interactive.accepts() or fallback


def _end_position(text: str) -> Position:
    line = text.count("\n") + 1
    return line, len(text) - (text.rfind("\n") + 1) + 1


def _quote_found(text: str) -> str:
    if len(text) > 40:
        text = text[:37] + "..."
    return "'" + json.dumps(text, ensure_ascii=False)[1:-1] + "'"


def _describe_expected(names: Iterable[str]) -> str:
    words = sorted({_describe_terminal(name) for name in names})
    if not words:
        return "nothing more"
    if len(words) > _MAX_EXPECTED:
        return "one of " + ", ".join(words[:_MAX_EXPECTED]) + ", ..."
    return _one_of(words)


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        pattern = _parser().get_terminal(name).pattern
    except KeyError:
        return name
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name


if __name__ == "__main__":  # regenerate the shipped tables after changing xbar.lark
    import argparse
    from pathlib import Path

    argparse.ArgumentParser(
        prog="python -m xbarc.ir.parser",
        description=f"Rebuild ir_spec/{TABLES_FILE} from ir_spec/xbar.lark (lark numbers the "
        "states differently in each process: the file changes, what it parses does not).",
    ).parse_args()
    target = Path(__file__).resolve().parent.parent / "ir_spec" / TABLES_FILE
    target.write_text(tables_json(), encoding="utf-8")
    print(f"wrote {target}")
