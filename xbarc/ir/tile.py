"""The tile IR: a compiled program for a tiled crossbar chip, as immutable values.

A `Program` is read top to bottom the way the chip runs it:

- `hardware`: the chip (tile types, cells, converters, cost constants);
- `tensors`: declarations of the constants kept in the `.npz` sidecar (name, type, hash);
- the **graph**: `inputs`, `ops` in execution order (crossbar layers and digital ops),
  `outputs`; this alone is the graph IR that `--emit graph` prints;
- `arrays`: quantized weight matrices, each cut into `slices` of cell width;
- `blocks`: rectangles of one slice placed on a virtual tile at a row/column offset;
- `combines`: layers computed by basis combination (BasisN) instead of their own array;
- `phases`: programming epochs that write virtual tiles onto physical tiles, then run the
  layers whose blocks they hold, one `Cycle` (one read per tile, each `Read` naming a
  block and the input `Segment` it drives) at a time.

Passes rebuild programs with `dataclasses.replace`; nothing here mutates. Tensor data lives
in a `TensorStore` beside the program: equality of programs compares declarations, whose
content hash stands for the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from xbarc.hardware import Hardware
from xbarc.ir.tensors import TensorStore, digest, element_type
from xbarc.ir.types import TensorType

FORMAT_VERSION = 2  # 2: cycles list their reads, each with the input it drives

LayerKind = Literal["conv", "conv_transpose", "gemm", "matmul"]
LAYER_KINDS: tuple[str, ...] = ("conv", "conv_transpose", "gemm", "matmul")
Polarity = Literal["+", "-"]
# the control-flow ops that hold regions, and the names of their regions
REGION_NAMES: dict[str, tuple[str, ...]] = {
    "If": ("then_branch", "else_branch"),
    "Loop": ("body",),
    "Scan": ("body",),
}


# --- constants and operands -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorDecl:
    """A constant tensor stored in the sidecar under `name`, with its sha256 digest."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str

    @property
    def size(self) -> int:
        size = 1
        for dim in self.shape:
            size *= dim
        return size


@dataclass(frozen=True, slots=True)
class Value:
    """An activation: the output of an op or a graph input (printed `%name`)."""

    name: str


@dataclass(frozen=True, slots=True)
class Const:
    """A constant tensor of the sidecar (printed `@name`)."""

    name: str


Operand = Value | Const | None  # None is an omitted optional ONNX input (printed `_`)


# --- graph ops ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribute:
    """An ONNX attribute carried verbatim.

    `kind` is the ONNX attribute type name in lower case (`int`, `float`, `string`, `ints`,
    `floats`, `strings`, `tensor`) or `proto` for anything else (graphs, sparse tensors,
    type protos), whose serialized AttributeProto bytes sit in the sidecar as a u8 tensor.
    `tensor` and `proto` values are `Const` references.
    """

    name: str
    kind: str
    value: int | float | str | tuple[int, ...] | tuple[float, ...] | tuple[str, ...] | Const


@dataclass(frozen=True, slots=True)
class NotMapped:
    """Work a crossbar could do that stays digital: why (the frontend's decision, see
    `xbarc/frontend/mapping.py`) and its multiply-accumulates per run at the compiled
    shapes (None: unknown)."""

    reason: str
    macs: int | None


@dataclass(frozen=True, slots=True)
class DigitalOp:
    """A non-crossbar ONNX node, executed by the host. An output name "" is an unused slot.
    `not_mapped` is set on ops that carry work a crossbar could do (a MatMul of two
    activations, a ConvInteger, an Einsum...).

    A control-flow op (If, Loop, Scan) holds its subgraphs as `regions` (not as proto
    attributes): the host decides which region runs and how often, and the region's own
    ops (crossbar layers among them) run in a scope that sees the enclosing values."""

    name: str
    op_type: str
    domain: str
    opset: int
    inputs: tuple[Operand, ...]
    outputs: tuple[str, ...]
    output_types: tuple[TensorType | None, ...]
    attributes: tuple[Attribute, ...] = ()
    not_mapped: NotMapped | None = None
    regions: tuple[Region, ...] = ()

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Region:
    """A subgraph of a control-flow op: `name` is the ONNX attribute it stands for
    (`then_branch`, `else_branch`, `body`), `inputs` its formal inputs (a Loop body's
    iteration number, condition and carried values; a Scan body's state and scan
    slices; none for If branches), `ops` in execution order, `outputs` the values it
    returns (its own, an enclosing scope's, or a formal input). Its ops may read any value
    of the enclosing scopes defined before the op holding the region."""

    name: str
    inputs: tuple[GraphInput, ...]
    ops: tuple[Op, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConvGeometry:
    """How a convolution unfolds its input. `pads` is begins then ends, per spatial axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    output_padding: tuple[int, ...] = ()  # ConvTranspose only


@dataclass(frozen=True, slots=True)
class CrossbarLayer:
    """An op whose weights go on crossbars: y = unfold(x) @ W[g] + bias, per group g.

    `weight` is an f32 constant of shape [groups, rows, cols]: rows are the unfolded inputs
    of a group (Cin/g * prod(kernel), channel-major im2col order; Cin/g for ConvTranspose,
    K for Gemm/MatMul), cols its outputs (Cout/g; Cout/g * prod(kernel) for ConvTranspose,
    whose outputs are then folded back by col2im). `bias` has one value per output channel.
    """

    name: str
    kind: LayerKind
    input: str
    output: str
    output_type: TensorType
    weight: str
    bias: str | None
    groups: int
    rows: int
    cols: int
    geometry: ConvGeometry | None = None
    source: str = ""  # the ONNX node(s) it came from, for messages

    @property
    def weight_count(self) -> int:
        return self.groups * self.rows * self.cols


Op = CrossbarLayer | DigitalOp


def all_ops(ops: tuple[Op, ...]) -> Iterator[Op]:
    """`ops` and, after each control-flow op, the ops of its regions (depth first)."""
    for op in ops:
        yield op
        if isinstance(op, DigitalOp):
            for region in op.regions:
                yield from all_ops(region.ops)


def op_reads(op: Op) -> list[str]:
    """The values `op` reads: its operands and, for a control-flow op, the enclosing
    values its regions read."""
    if isinstance(op, CrossbarLayer):
        return [op.input]
    names = [operand.name for operand in op.inputs if isinstance(operand, Value)]
    for region in op.regions:
        names.extend(sorted(region_outer_reads(region)))
    return names


def op_results(op: Op) -> tuple[str, ...]:
    """The values `op` defines ("" for unused slots)."""
    return (op.output,) if isinstance(op, CrossbarLayer) else op.outputs


def region_outer_reads(region: Region) -> set[str]:
    """Values a region reads from enclosing scopes (used but not defined inside it)."""
    defined = {graph_input.name for graph_input in region.inputs}
    used: set[str] = set()
    for op in region.ops:
        used |= {name for name in op_reads(op) if name not in defined}
        defined |= set(op_results(op))
    used |= {name for name in region.outputs if name not in defined}
    return used


# --- quantized arrays, slices and blocks -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slice:
    """Cells holding bits [shift, shift+bits) of the magnitude of one polarity of an array.

    Differential encoding: `+` cells hold the positive part, `-` cells the negative part.
    Offset encoding: the single polarity `+` holds level + 2^(weight_bits-1).
    The periphery adds slice outputs weighted by (+1 or -1) * 2^shift.
    """

    index: int
    polarity: Polarity
    shift: int
    bits: int


@dataclass(frozen=True, slots=True)
class Array:
    """A quantized logical weight matrix: integer `levels` [groups, rows, cols] and a scale.

    The real weight is level * scale, where `scale` is a float (per tensor) or a constant
    of shape [groups, cols] (per column). `values` is the float matrix it quantizes. A
    `weights` array holds the weights of crossbar layer `layer` (an explicit reference:
    the two names need not be equal); a `basis` array holds BasisN basis vectors as
    columns instead, and names no layer; it may be placed `copies` times (each copy whole,
    on tiles of its own), so that several input segments are read against it in one cycle.
    `tile_type`, when set (by the nax pass), names the hardware tile type the tile pass
    places its blocks on: a chip with several tile sizes gives each layer its own.
    """

    name: str
    kind: Literal["weights", "basis"]
    groups: int
    rows: int
    cols: int
    weight_bits: int
    encoding: Literal["differential", "offset"]
    scale: float | Const
    values: str
    levels: str
    slices: tuple[Slice, ...]
    group_cols: int | None = None
    layer: str | None = None  # the crossbar layer whose weights a `weights` array holds
    copies: int = 1  # a `basis` array is placed this many times, on disjoint tiles
    tile_type: str | None = None  # the tile type its blocks go on (NAX's choice); None: the
    # tile pass's


@dataclass(frozen=True, slots=True)
class Span:
    """The contiguous index range [start, stop)."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class IndexTable:
    """An explicit, strictly increasing index list held in the sidecar: entries
    start .. start+count-1 of the i32 vector `tensor` (one vector may hold the tables of
    many blocks)."""

    tensor: str
    count: int
    start: int = 0

    def __len__(self) -> int:
        return self.count

    @property
    def stop(self) -> int:
        return self.start + self.count

    def entries(self, store) -> np.ndarray:
        return store[self.tensor][self.start : self.stop]


Indices = Span | IndexTable


@dataclass(frozen=True, slots=True)
class Block:
    """Rows x cols of one slice of one group of an array, placed on virtual tile `vtile`
    (of type `tile_type`) with its first row at `row_offset` and first column at
    `col_offset`. Blocks are numbered 0..n-1 in program order (printed `b<index>`)."""

    index: int
    array: str
    slice: int
    group: int
    rows: Indices
    cols: Indices
    tile_type: str
    vtile: int
    row_offset: int
    col_offset: int

    @property
    def cells(self) -> int:
        return len(self.rows) * len(self.cols)


MAX_COEF_BITS = 16  # the widest coefficients a combine unit multiplies (int16 tables)


@dataclass(frozen=True, slots=True)
class BasisCombine:
    """Layer `layer` computed from basis responses (BasisN): its weight column n over input
    segment s (rows [s*segment_rows, (s+1)*segment_rows)) is sum_k coef[g, s, k, n] *
    basis[:, k] * scale; `coefficients` is an integer constant [groups, segments, K, cols]
    of `coef_bits` bits."""

    layer: str
    basis: str
    segment_rows: int
    coefficients: str
    coef_bits: int
    scale: float | Const


# --- calibration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerRange:
    """Calibrated converter ranges of one crossbar layer."""

    layer: str
    input_range: float  # DAC full scale: the layer input's |x| at the percentile
    adc_range: float  # ADC full scale as a fraction of the largest sum a read can produce


@dataclass(frozen=True, slots=True)
class Calibration:
    """Converter ranges measured on calibration data (`xbarc calibrate`): the given
    percentile of |input| and of read sums over `samples` samples."""

    percentile: float
    samples: int
    layers: tuple[LayerRange, ...]

    def of(self, layer: str) -> LayerRange | None:
        for entry in self.layers:
            if entry.layer == layer:
                return entry
        return None


# --- schedule ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TileWrite:
    """Program virtual tile `vtile` onto physical tile `tile` (erasing what it held)."""

    vtile: int
    tile: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Input rows `rows` of group `group` of a layer's unfolded input vector (printed
    `g<group>[start:stop]` or `g<group> @table[start:stop]`): what a read drives onto the
    rows of a block, entry i onto the block's row i."""

    group: int
    rows: Indices


@dataclass(frozen=True, slots=True)
class Read:
    """One read of block `block` in a cycle, with `input` driven on its rows, for every
    unfolded input vector (patch) of the running layer. A block of the layer's own array
    reads the input rows its weights multiply (`own_input`); a basis block (BasisN) may
    be read against any segment of the layer's input, in several cycles."""

    block: int
    input: Segment


@dataclass(frozen=True, slots=True)
class Cycle:
    """Reads done together in one array cycle for every unfolded input vector (patch).

    Each tile does one read per cycle, with one input vector on its rows: reads of one
    tile in a cycle never sense the same columns, and drive the same rows only with the
    same input segment at the same offset."""

    reads: tuple[Read, ...]

    @property
    def blocks(self) -> tuple[int, ...]:
        """The blocks read, in read order."""
        return tuple(read.block for read in self.reads)


def own_input(block: Block) -> Segment:
    """The input a block of a layer's own array reads: the rows its weights multiply."""
    return Segment(block.group, block.rows)


@dataclass(frozen=True, slots=True)
class LayerRun:
    """The part of a layer's work done in one phase: its cycles, looped over all patches
    of the whole batch. Partial sums carry over to the layer's next run; the layer's
    output is final after its last run."""

    layer: str
    cycles: tuple[Cycle, ...]


@dataclass(frozen=True, slots=True)
class Phase:
    """A programming epoch: write tiles, then run layers (batch-major)."""

    index: int
    writes: tuple[TileWrite, ...]
    runs: tuple[LayerRun, ...]


class ChipState:
    """What the physical tiles hold as the phases' writes are applied in order: a tile
    keeps what was last written to it (later phases may read it there), and a vtile lives
    on one tile at a time, so writing it elsewhere moves it."""

    def __init__(self) -> None:
        self.vtile_on: dict[int, int] = {}  # physical tile -> the vtile it holds
        self.tile_of: dict[int, int] = {}  # vtile -> the physical tile holding it

    def write(self, vtile: int, tile: int) -> None:
        moved_from = self.tile_of.pop(vtile, None)
        if moved_from is not None:
            del self.vtile_on[moved_from]
        overwritten = self.vtile_on.get(tile)
        if overwritten is not None:
            del self.tile_of[overwritten]
        self.vtile_on[tile] = vtile
        self.tile_of[vtile] = tile


# --- the program -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphInput:
    """A program input. Its leading dimension is the batch: a run may feed any batch size
    unless `fixed_batch` (the model fixes it; see `xbarc/frontend/batch.py`)."""

    name: str
    type: TensorType
    fixed_batch: bool = False


@dataclass(frozen=True)
class Program:
    """A whole compiled (or partly compiled) program. See the module docstring."""

    hardware: Hardware
    tensors: tuple[TensorDecl, ...] = ()
    inputs: tuple[GraphInput, ...] = ()
    ops: tuple[Op, ...] = ()
    outputs: tuple[str, ...] = ()
    arrays: tuple[Array, ...] = ()
    blocks: tuple[Block, ...] = ()
    combines: tuple[BasisCombine, ...] = ()
    calibration: Calibration | None = None
    phases: tuple[Phase, ...] = ()
    store: TensorStore = field(default_factory=TensorStore, compare=False, repr=False)

    def layers(self) -> Iterator[CrossbarLayer]:
        """Every crossbar layer, those inside control-flow regions included."""
        for op in all_ops(self.ops):
            if isinstance(op, CrossbarLayer):
                yield op

    def value_types(self) -> dict[str, TensorType]:
        """The type of every graph input and op result, where the program records it
        (inside regions too: value names are unique in the whole program)."""
        types = {graph_input.name: graph_input.type for graph_input in self.inputs}
        for op in all_ops(self.ops):
            if isinstance(op, DigitalOp):
                for region in op.regions:
                    types.update((i.name, i.type) for i in region.inputs)
            if isinstance(op, CrossbarLayer):
                types[op.output] = op.output_type
                continue
            for output, output_type in zip(op.outputs, op.output_types, strict=True):
                if output and output_type is not None:
                    types[output] = output_type
        return types

    def layer(self, name: str) -> CrossbarLayer:
        for layer in self.layers():
            if layer.name == name:
                return layer
        raise KeyError(name)

    def array(self, name: str) -> Array:
        for array in self.arrays:
            if array.name == name:
                return array
        raise KeyError(name)

    def weights_of(self, layer: str) -> Array | None:
        """The `weights` array holding crossbar layer `layer`'s weights, if quantized."""
        for array in self.arrays:
            if array.kind == "weights" and array.layer == layer:
                return array
        return None

    def arrays_read_by(self) -> dict[str, tuple[str, ...]]:
        """Crossbar layer -> the arrays its runs read: the basis it is combined from
        (BasisN), else its own weights."""
        reads: dict[str, tuple[str, ...]] = {layer.name: () for layer in self.layers()}
        for array in self.arrays:
            if array.kind == "weights" and array.layer in reads:
                reads[array.layer] = (array.name,)
        for combine in self.combines:
            if combine.layer in reads:
                reads[combine.layer] = (combine.basis,)
        return reads

    def tensor(self, name: str) -> TensorDecl:
        for decl in self.tensors:
            if decl.name == name:
                return decl
        raise KeyError(name)

    @property
    def vtile_count(self) -> int:
        return 1 + max((b.vtile for b in self.blocks), default=-1)


def with_tensors(program: Program, arrays: dict[str, np.ndarray]) -> Program:
    """`program` with the tensors `arrays` added (or replaced), declarations included."""
    decls = {decl.name: decl for decl in program.tensors}
    for name, data in arrays.items():
        decls[name] = TensorDecl(name, element_type(data), tuple(data.shape), digest(data))
    return replace(program, tensors=tuple(decls.values()), store=program.store.with_tensors(arrays))


def without_unused_tensors(program: Program, used: set[str]) -> Program:
    """`program` keeping only the tensors named in `used`."""
    kept = tuple(decl for decl in program.tensors if decl.name in used)
    return replace(program, tensors=kept, store=program.store.only(used))
