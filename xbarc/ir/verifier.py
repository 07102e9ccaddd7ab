"""The verifier: checks every invariant of a tile program and says where it breaks.

`verify(program, locate)` raises `XbarcError` for the first broken invariant; `locate`
maps an entity key such as ("block", 12) to its position in the text it was parsed from,
so that errors in a `.xbar` file carry file:line:column. The invariants are listed in
`ir_spec/SPEC.md`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable

import numpy as np

from xbarc.diagnostics import Location, XbarcError
from xbarc.hardware import CostParams
from xbarc.ir.cells import slice_cells
from xbarc.ir.schedule import ScheduledRead, cycle_clash
from xbarc.ir.tensors import member_name_ok
from xbarc.ir.tile import (
    LAYER_KINDS,
    MAX_COEF_BITS,
    REGION_NAMES,
    Array,
    Block,
    ChipState,
    Const,
    CrossbarLayer,
    DigitalOp,
    IndexTable,
    Indices,
    Op,
    Program,
    Read,
    Region,
    Segment,
    Span,
    Value,
    all_ops,
)
from xbarc.limits import MAX_TILE_CELLS, MAX_TILE_DIM, MAX_TILES

Locate = Callable[[tuple[Hashable, ...]], Location | None]

# What the runtime can run (xbarc/runtime: the DAC kernels take 2 to 32 input bits fed 1 to 8
# at a time, profiles set DAC and ADC bits up to 24; levels are stored as int8 or int16 and
# cut into cells by int32 shifts); the accumulator of a read is an exact int64.
MIN_DAC_BITS, MAX_DAC_BITS = 2, 24
MAX_ADC_BITS = 24
MAX_DAC_SLICE_BITS = 8
MAX_WEIGHT_BITS = 16
MAX_CELL_BITS = MAX_WEIGHT_BITS
ACCUMULATOR_BITS = 63  # int64 without its sign


def accumulator_bits(program: Program, adc_bits: int, dac_bits: int) -> tuple[int, int, int]:
    """The bits an exact read of `program`'s widest layer needs with these converters
    (0 without weights arrays), its weight bits and its rows."""
    weight_bits = max((a.weight_bits for a in program.arrays), default=0)
    rows = max((layer.rows for layer in program.layers()), default=1)
    if not weight_bits:
        return 0, 0, rows
    return adc_bits + dac_bits + weight_bits + max(rows - 1, 1).bit_length(), weight_bits, rows


# cost constants that divide another (a rate, a clock, a count of lanes): above zero
COST_DIVISORS = ("adc_rate_gsps", "digital_clock_ghz", "combine_lanes")
COUNT_CHUNK = 1 << 22  # cells of blocks counted at once when checking coverage


def verify(program: Program, locate: Locate | None = None, verified: Program | None = None) -> None:
    """Raise XbarcError at the first broken invariant of `program`. `verified`, a program
    that passed before (the one a pass started from), lets the checks of the parts that
    `program` still shares with it be skipped: its blocks, when the pass kept them."""
    _Verifier(program, locate or (lambda key: None), verified).run()


# ops whose (first) result has the element type of their first operand, and ops whose
# result is bool: a declared type that disagrees would make the host compute with values
# of another type than the text says (the runtime passes values through unchanged)
SAME_TYPE_OPS = frozenset(
    [
        "Identity",
        "Neg",
        "Abs",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Erf",
        "Elu",
        "Selu",
        "Softplus",
        "Sin",
        "Cos",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Clip",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Gather",
        "Expand",
        "Tile",
        "Pad",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Resize",
        "Split",
        "Dropout",
        "MatMul",
    ]
)
BOOL_OPS = frozenset(
    [
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "IsNaN",
        "IsInf",
    ]
)


class _Verifier:
    def __init__(self, program: Program, locate: Locate, verified: Program | None = None):
        self.program = program
        self.locate = locate
        self.verified = verified
        self.tensors = {decl.name: decl for decl in program.tensors}
        self.arrays = {array.name: array for array in program.arrays}
        self.vtile_types = {block.vtile: block.tile_type for block in program.blocks}
        self.tables_checked: set[tuple[IndexTable, int]] = set()
        self.value_types: dict | None = None
        self.dtypes: dict[str, str] = {}  # each value's declared element type
        self.vectors: dict[str, np.ndarray] = {}  # index tables as int64, for coverage
        self.steps: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def fail(self, key: tuple[Hashable, ...], message: str, hint: str = "") -> None:
        raise XbarcError(message, where=self.locate(key), hint=hint)

    def run(self) -> None:
        self.check_hardware()
        self.check_tensors()
        self.check_graph()
        self.check_arrays()
        self.check_accumulator()
        if not self.blocks_verified():
            self.check_blocks()
            self.check_coverage()
        self.check_combines()
        self.check_calibration()
        self.check_phases()

    # --- hardware and tensors -------------------------------------------------------------

    def check_hardware(self) -> None:
        hardware = self.program.hardware
        names = [t.name for t in hardware.tile_types]
        if not names:
            self.fail(("hardware", None), "the hardware declares no tile type")
        if len(set(names)) != len(names):
            self.fail(("hardware", None), f"duplicate tile type names in {names}")
        for tile_type in hardware.tile_types:
            where = ("tile_type", tile_type.name)
            if min(tile_type.rows, tile_type.cols, tile_type.count) < 1:
                self.fail(where, f"tile type {tile_type.name} has a zero size")
            if (
                max(tile_type.rows, tile_type.cols) > MAX_TILE_DIM
                or tile_type.cells > MAX_TILE_CELLS
            ):
                self.fail(
                    where,
                    f"tile type {tile_type.name} has {tile_type.rows} x {tile_type.cols} cells, "
                    f"more than xbarc supports ({MAX_TILE_DIM} a side, {MAX_TILE_CELLS} in all)",
                )
        if hardware.tile_count > MAX_TILES:
            self.fail(
                ("hardware", None),
                f"the chip has {hardware.tile_count} tiles, more than xbarc supports ({MAX_TILES})",
            )
        cell, dac, adc = hardware.cell, hardware.dac, hardware.adc
        where = ("hardware", "cell")
        if not 1 <= cell.bits <= MAX_CELL_BITS:
            self.fail(where, f"cell bits {cell.bits} is not within 1..{MAX_CELL_BITS}")
        if not (math.isfinite(cell.g_min_us) and cell.g_min_us >= 0):
            self.fail(where, f"cell g_min_us {cell.g_min_us} is not a finite number >= 0")
        if not math.isfinite(cell.g_max_us):
            self.fail(where, f"cell g_max_us {cell.g_max_us} is not a finite number")
        if not cell.g_min_us < cell.g_max_us:
            self.fail(
                where,
                f"cell g_min_us {cell.g_min_us} must be below g_max_us {cell.g_max_us}",
                hint="a cell's conductance range runs from g_min_us up to g_max_us",
            )
        where = ("hardware", "dac")
        if not MIN_DAC_BITS <= dac.bits <= MAX_DAC_BITS:
            self.fail(where, f"DAC bits {dac.bits} is not within {MIN_DAC_BITS}..{MAX_DAC_BITS}")
        if not 1 <= dac.slice_bits <= MAX_DAC_SLICE_BITS:
            self.fail(
                where, f"DAC slice_bits {dac.slice_bits} is not within 1..{MAX_DAC_SLICE_BITS}"
            )
        where = ("hardware", "adc")
        if not 1 <= adc.bits <= MAX_ADC_BITS:
            self.fail(where, f"ADC bits {adc.bits} is not within 1..{MAX_ADC_BITS}")
        if adc.cols_per_adc < 1:
            self.fail(where, f"ADC cols_per_adc={adc.cols_per_adc}: an ADC reads at least 1 column")
        self.check_costs(hardware.cost)

    def check_costs(self, cost: CostParams) -> None:
        """Every cost constant is a finite number, at least 0; those that divide, above 0."""
        for name in cost.__dataclass_fields__:
            value = getattr(cost, name)
            lowest = "above 0" if name in COST_DIVISORS else "at least 0"
            if not math.isfinite(value) or value < 0 or (value == 0 and name in COST_DIVISORS):
                self.fail(
                    ("hardware", "cost"),
                    f"cost {name}={value} is not a finite number {lowest}",
                )

    def check_accumulator(self) -> None:
        """An exact read accumulates `2^(shift + step * slice_bits) * code * full scale`,
        up to 2^(ADC bits + DAC bits + weight bits) per input row: over the rows of the
        widest layer it must fit the int64 accumulator."""
        hardware = self.program.hardware
        needed, weight_bits, rows = accumulator_bits(
            self.program, hardware.adc.bits, hardware.dac.bits
        )
        if needed > ACCUMULATOR_BITS:
            self.fail(
                ("hardware", "adc"),
                f"ADC bits {hardware.adc.bits} and DAC bits {hardware.dac.bits} with "
                f"{weight_bits}-bit weights over {rows} rows need a {needed}-bit accumulator, "
                f"more than the runtime's {ACCUMULATOR_BITS}",
                hint="use fewer converter or weight bits",
            )

    def check_tensors(self) -> None:
        if len(self.tensors) != len(self.program.tensors):
            seen: set[str] = set()
            for decl in self.program.tensors:
                if decl.name in seen:
                    self.fail(("tensor", decl.name), f"tensor @{decl.name} is declared twice")
                seen.add(decl.name)
        store = self.program.store
        for decl in self.program.tensors:
            if not member_name_ok(decl.name):
                self.fail(
                    ("tensor", decl.name),
                    f"tensor name {decl.name!r} holds a NUL or a lone surrogate, which the "
                    "sidecar (a zip member name) cannot hold",
                    hint="rename the tensor",
                )
            if any(d < 0 for d in decl.shape):
                self.fail(("tensor", decl.name), f"tensor @{decl.name} has a negative dimension")
            if decl.name not in store:
                continue  # structure-only programs carry no data
            data = store[decl.name]
            if tuple(data.shape) != decl.shape:
                self.fail(
                    ("tensor", decl.name),
                    f"tensor @{decl.name} holds shape {list(data.shape)}, "
                    f"declared {list(decl.shape)}",
                )

    def require_tensor(self, key: tuple[Hashable, ...], name: str, shape=None, dtype=None):
        decl = self.tensors.get(name)
        if decl is None:
            self.fail(key, f"@{name} is not a declared tensor")
            raise AssertionError  # unreachable: fail raises
        if shape is not None and decl.shape != tuple(shape):
            self.fail(key, f"tensor @{name} has shape {list(decl.shape)}, expected {list(shape)}")
        if dtype is not None and decl.dtype not in dtype:
            self.fail(key, f"tensor @{name} has element type {decl.dtype}, expected {dtype[0]}")
        return decl

    # --- graph ----------------------------------------------------------------------------

    def check_graph(self) -> None:
        defined: set[str] = set()
        for graph_input in self.program.inputs:
            if graph_input.name in defined:
                self.fail(("input", graph_input.name), f"input %{graph_input.name} twice")
            self.check_type(("input", graph_input.name), graph_input.name, graph_input.type)
            defined.add(graph_input.name)
            self.dtypes[graph_input.name] = graph_input.type.dtype
        self.everywhere = set(defined)  # every value defined so far, in any scope
        self.layer_names: set[str] = set()
        self.check_ops(self.program.ops, defined)
        for output in self.program.outputs:
            if output not in defined:
                self.fail(("output", output), f"output %{output} is never defined")

    def check_ops(self, ops: tuple[Op, ...], defined: set[str]) -> None:
        """Ops in order, each reading only values of `defined` (its scope, enclosing
        scopes included) and defining names unique in the whole program."""
        for op in ops:
            if isinstance(op, CrossbarLayer):
                self.check_layer(op, defined)
                if op.name in self.layer_names:
                    self.fail(("op", op.output), f"layer @{op.name} is defined twice")
                self.layer_names.add(op.name)
                self.check_type(("op", op.output), op.output, op.output_type)
                outputs: tuple[str, ...] = (op.output,)
                if op.output_type is not None:
                    self.dtypes[op.output] = op.output_type.dtype
            else:
                self.check_digital(op, defined)
                for output, output_type in zip(op.outputs, op.output_types, strict=False):
                    self.check_type(("op", output or op.name), output, output_type)
                    if output and output_type is not None:
                        self.dtypes[output] = output_type.dtype
                self.check_element_types(op)
                for region in op.regions:
                    self.check_region(op, region, defined)
                outputs = op.outputs
            for output in outputs:
                if not output:
                    continue
                if output in self.everywhere:
                    self.fail(("op", output), f"value %{output} is defined twice")
                self.everywhere.add(output)
                defined.add(output)

    def check_region(self, op: DigitalOp, region: Region, enclosing: set[str]) -> None:
        key = ("op", next((o for o in op.outputs if o), op.name))
        if op.op_type not in REGION_NAMES or region.name not in REGION_NAMES[op.op_type]:
            self.fail(key, f"op {op.op_type} cannot hold a region named {region.name!r}")
        self.check_signature(key, op, region)
        defined = set(enclosing)
        for graph_input in region.inputs:
            self.check_type(key, graph_input.name, graph_input.type)
            self.dtypes[graph_input.name] = graph_input.type.dtype
            if graph_input.name in self.everywhere:
                self.fail(key, f"region {region.name}: value %{graph_input.name} is defined twice")
            self.everywhere.add(graph_input.name)
            defined.add(graph_input.name)
        self.check_ops(region.ops, defined)
        for output in region.outputs:
            if output not in defined:
                self.fail(key, f"region {region.name} returns %{output}, which it cannot see")
        if op.op_type == "Loop" and region.outputs:
            condition = self.dtypes.get(region.outputs[0])
            if condition not in (None, "bool"):
                self.fail(key, f"region body of op Loop returns a {condition} condition, not bool")

    def check_signature(self, key: tuple[Hashable, ...], op: DigitalOp, region: Region) -> None:
        """A region takes and returns what its op passes and expects (the host zips them):
        If branches return the op's results; a Loop body takes the iteration number, the
        condition and the carried values and returns the condition, the carried values and
        the scan outputs; a Scan body takes the states and scan slices and returns the
        states and scan outputs."""
        if op.op_type == "If":
            takes, returns = 0, len(op.outputs)
        elif op.op_type == "Loop":
            takes, returns = len(op.inputs), 1 + len(op.outputs)
        elif op.op_type == "Scan":
            takes, returns = len(op.inputs), len(op.outputs)
        else:
            return
        if len(region.inputs) != takes or len(region.outputs) != returns:
            self.fail(
                key,
                f"region {region.name} of op {op.op_type} takes {len(region.inputs)} and "
                f"returns {len(region.outputs)} values; the op passes {takes} and expects "
                f"{returns}",
            )
        if op.op_type == "Loop" and len(region.inputs) >= 2:
            for position, want in ((0, "i64"), (1, "bool")):
                got = region.inputs[position].type.dtype
                if got != want:
                    self.fail(key, f"region body of op Loop: input {position} is {got}, not {want}")

    def check_element_types(self, op: DigitalOp) -> None:
        """The declared element type of a result where the op fixes it: ops that keep their
        first operand's type, comparisons and logic (bool), Cast (its `to`)."""
        if not op.outputs or not op.outputs[0] or op.output_types[0] is None or op.domain:
            return
        declared = op.output_types[0].dtype
        first = op.inputs[0] if op.inputs else None
        if op.op_type in SAME_TYPE_OPS and first is not None:
            want = self.operand_dtype(first)
        elif op.op_type in BOOL_OPS:
            want = "bool"
        else:
            return
        if want is not None and declared != want:
            self.fail(
                ("op", op.outputs[0]),
                f"op {op.op_type} returns {want}, but %{op.outputs[0]} is declared {declared}",
            )

    def operand_dtype(self, operand: Value | Const) -> str | None:
        if isinstance(operand, Value):
            return self.dtypes.get(operand.name)
        decl = self.tensors.get(operand.name)
        return None if decl is None else decl.dtype

    def check_layer(self, layer: CrossbarLayer, defined: set[str]) -> None:
        key = ("op", layer.output)
        if layer.kind not in LAYER_KINDS:
            self.fail(key, f"layer @{layer.name} has unknown kind {layer.kind!r}")
        if layer.input not in defined:
            self.fail(key, f"layer @{layer.name} reads %{layer.input} before it is defined")
        if min(layer.groups, layer.rows, layer.cols) < 1:
            self.fail(key, f"layer @{layer.name} has an empty weight matrix")
        shape = (layer.groups, layer.rows, layer.cols)
        self.require_tensor(key, layer.weight, shape, ("f32",))
        if layer.bias is not None:
            self.require_tensor(key, layer.bias, (output_channels(layer),), ("f32",))
        is_conv = layer.kind in ("conv", "conv_transpose")
        if is_conv != (layer.geometry is not None):
            self.fail(key, f"layer @{layer.name}: geometry must be given for convolutions only")
        if layer.geometry is not None:
            rank = len(layer.geometry.kernel)
            geometry = layer.geometry
            if (
                len(geometry.strides) != rank
                or len(geometry.dilations) != rank
                or len(geometry.pads) != 2 * rank
            ):
                self.fail(key, f"layer @{layer.name}: geometry fields disagree in rank")
            self.check_geometry(key, layer)
        for tensor in (layer.weight, layer.bias):
            if tensor is not None:
                self.require_finite(key, f"layer @{layer.name}", tensor)

    def check_type(self, key: tuple[Hashable, ...], name: str, value_type) -> None:
        shape = None if value_type is None else value_type.shape
        if shape is not None and any(d is not None and d < 0 for d in shape):
            self.fail(key, f"%{name} has a negative dimension in {list(value_type.shape)}")

    def check_geometry(self, key: tuple[Hashable, ...], layer: CrossbarLayer) -> None:
        """Kernel, strides and dilations at least 1, pads and output padding at least 0,
        and the kernel unfolding into the layer's rows (columns for ConvTranspose)."""
        geometry = layer.geometry
        assert geometry is not None
        subject = f"layer @{layer.name}"
        for what, values, lowest in (
            ("kernel", geometry.kernel, 1),
            ("strides", geometry.strides, 1),
            ("dilations", geometry.dilations, 1),
            ("pads", geometry.pads, 0),
            ("output_padding", geometry.output_padding, 0),
        ):
            if any(v < lowest for v in values):
                self.fail(key, f"{subject}: {what} {list(values)} must be at least {lowest}")
        if geometry.output_padding and len(geometry.output_padding) != len(geometry.kernel):
            self.fail(
                key, f"{subject}: output_padding {list(geometry.output_padding)} has the wrong rank"
            )
        kernel = math.prod(geometry.kernel)
        unfolded = layer.cols if layer.kind == "conv_transpose" else layer.rows
        channels = self.input_channels(layer)
        if unfolded % kernel or (
            layer.kind == "conv"
            and channels is not None
            and channels != layer.groups * (layer.rows // kernel)
        ):
            what = "cols" if layer.kind == "conv_transpose" else "rows"
            self.fail(
                key,
                f"{subject}: kernel {list(geometry.kernel)} does not unfold into its "
                f"{unfolded} {what}"
                + ("" if channels is None else f" ({channels} input channels)"),
            )

    def input_channels(self, layer: CrossbarLayer) -> int | None:
        """The channels of a layer's input where its type says (dimension 1)."""
        if self.value_types is None:
            self.value_types = self.program.value_types()
        value_type = self.value_types.get(layer.input)
        if value_type is None or value_type.shape is None or len(value_type.shape) < 2:
            return None
        return value_type.shape[1]

    def require_finite(
        self,
        key: tuple[Hashable, ...],
        subject: str,
        tensor: str,
        what: str = "",
        positive: bool = False,
    ) -> None:
        """The values of `tensor` (when the store holds it) are finite, and above 0 with
        `positive`."""
        data = self.program.store.get(tensor)
        if data is None or data.dtype.kind != "f" or not data.size:
            return
        bad = ~np.isfinite(data)
        if positive:
            bad |= ~(data > 0)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            wanted = "finite numbers above 0" if positive else "finite numbers"
            self.fail(
                key,
                f"{subject}: {what}@{tensor} holds {data[at]} at {list(at)}; it must hold {wanted}",
            )

    def check_digital(self, op: DigitalOp, defined: set[str]) -> None:
        key = ("op", next((o for o in op.outputs if o), op.name))
        if len(op.outputs) != len(op.output_types):
            self.fail(
                key, f"op {op.op_type}: {len(op.outputs)} outputs but {len(op.output_types)} types"
            )
        for operand in op.inputs:
            if isinstance(operand, Value) and operand.name not in defined:
                self.fail(key, f"op {op.op_type} reads %{operand.name} before it is defined")
            if isinstance(operand, Const):
                self.require_tensor(key, operand.name)
        for attribute in op.attributes:
            if isinstance(attribute.value, Const):
                self.require_tensor(key, attribute.value.name)

    # --- arrays and blocks ----------------------------------------------------------------

    def check_arrays(self) -> None:
        seen: set[str] = set()
        held: dict[str, str] = {}  # layer -> the weights array holding it
        layers = {layer.name: layer for layer in self.program.layers()}
        for array in self.program.arrays:
            key = ("array", array.name)
            if array.name in seen:
                self.fail(key, f"array @{array.name} is defined twice")
            seen.add(array.name)
            if array.kind == "weights":
                layer = layers.get(array.layer or "")
                if layer is None or array.layer is None:
                    self.fail(key, f"weights array @{array.name} names no crossbar layer")
                    continue
                if array.layer in held:
                    self.fail(
                        key,
                        f"@{array.layer}'s weights are held by two arrays, "
                        f"@{held[array.layer]} and @{array.name}",
                    )
                held[array.layer] = array.name
                if (layer.groups, layer.rows, layer.cols) != (
                    array.groups,
                    array.rows,
                    array.cols,
                ):
                    self.fail(key, f"array @{array.name} does not match its layer's shape")
            elif array.layer is not None:
                self.fail(
                    key,
                    f"basis array @{array.name} names layer @{array.layer}",
                    hint="a basis is shared through combines; only weights arrays hold a layer",
                )
            shape = (array.groups, array.rows, array.cols)
            self.require_tensor(key, array.values, shape, ("f32",))
            self.require_tensor(key, array.levels, shape, ("i8", "i16", "i32"))
            subject = f"array @{array.name}"
            self.require_finite(key, subject, array.values)
            if isinstance(array.scale, Const):
                self.require_tensor(key, array.scale.name, (array.groups, array.cols), ("f32",))
                self.require_finite(key, subject, array.scale.name, "scale ", positive=True)
            elif not (math.isfinite(array.scale) and array.scale > 0):
                self.fail(key, f"{subject}: scale {array.scale} is not a finite number above 0")
            if array.group_cols is not None and array.group_cols < 1:
                self.fail(key, f"array @{array.name}: group_cols must be at least 1")
            if array.copies < 1 or (array.copies > 1 and array.kind != "basis"):
                self.fail(
                    key,
                    f"array @{array.name}: copies={array.copies}",
                    hint="only a basis array is placed more than once (copies >= 1)",
                )
            if array.kind == "basis" and array.groups != 1:
                self.fail(key, f"basis array @{array.name} must have one group")
            if array.tile_type is not None:
                known = [t.name for t in self.program.hardware.tile_types]
                if array.tile_type not in known:
                    self.fail(
                        key,
                        f"array @{array.name}: tile_type={array.tile_type} is not a tile type "
                        "of the hardware",
                        hint=f"its tile types: {', '.join(known)}",
                    )
            self.check_slices(array)
            self.check_levels(array)

    def check_slices(self, array: Array) -> None:
        key = ("array", array.name)
        if not 2 <= array.weight_bits <= MAX_WEIGHT_BITS:
            self.fail(
                key,
                f"array @{array.name}: weight_bits={array.weight_bits} is not within "
                f"2..{MAX_WEIGHT_BITS}",
            )
        polarities = ("+", "-") if array.encoding == "differential" else ("+",)
        magnitude_bits = (
            array.weight_bits - 1 if array.encoding == "differential" else (array.weight_bits)
        )
        for position, piece in enumerate(array.slices):
            if piece.index != position:
                self.fail(key, f"array @{array.name}: slice {piece.index} is out of order")
            if piece.polarity not in polarities:
                self.fail(
                    key,
                    f"array @{array.name}: slice {piece.index} has polarity "
                    f"{piece.polarity} under {array.encoding} encoding",
                )
            if not 1 <= piece.bits <= self.program.hardware.cell.bits:
                self.fail(
                    key,
                    f"array @{array.name}: slice {piece.index} holds {piece.bits} "
                    f"bits but cells hold {self.program.hardware.cell.bits}",
                )
        for polarity in polarities:
            covered = sorted(
                (s.shift, s.shift + s.bits) for s in array.slices if s.polarity == polarity
            )
            expected_start = 0
            for start, stop in covered:
                if start != expected_start:
                    self.fail(
                        key,
                        f"array @{array.name}: {polarity} slices leave bits "
                        f"{expected_start}..{start - 1} uncovered or overlap",
                    )
                expected_start = stop
            if expected_start != magnitude_bits:
                self.fail(
                    key,
                    f"array @{array.name}: {polarity} slices cover "
                    f"{expected_start} of {magnitude_bits} magnitude bits",
                )

    def check_levels(self, array: Array) -> None:
        if array.levels not in self.program.store:
            return
        levels = self.program.store[array.levels]
        limit = 2 ** (array.weight_bits - 1) - 1
        # min and max, not np.abs: the magnitude of int8 -128 does not fit int8
        if levels.size and (int(levels.max()) > limit or int(levels.min()) < -limit):
            self.fail(
                ("array", array.name),
                f"array @{array.name}: levels exceed {array.weight_bits}-bit range +-{limit}",
            )

    def blocks_verified(self) -> bool:
        """Whether the blocks and everything they are checked against (arrays, tensors,
        tile shapes) are the very objects of the verified program."""
        before, now = self.verified, self.program
        if before is None:
            return False
        shapes = [(t.name, t.rows, t.cols) for t in now.hardware.tile_types]
        return (
            now.blocks is before.blocks
            and now.arrays is before.arrays
            and now.tensors is before.tensors
            and now.store is before.store
            and shapes == [(t.name, t.rows, t.cols) for t in before.hardware.tile_types]
        )

    def check_blocks(self) -> None:
        arrays = {array.name: array for array in self.program.arrays}
        vtile_types: dict[int, str] = {}  # first type seen per vtile
        cells_by_vtile: dict[int, list[Block]] = defaultdict(list)
        for position, block in enumerate(self.program.blocks):
            key = ("block", block.index)
            if block.index != position:
                self.fail(key, f"block b{block.index} is out of order (expected b{position})")
            array = arrays.get(block.array)
            if array is None:
                self.fail(key, f"block b{block.index} names no array @{block.array}")
                continue
            if not 0 <= block.slice < len(array.slices):
                self.fail(
                    key, f"block b{block.index}: array @{array.name} has no slice {block.slice}"
                )
            if not 0 <= block.group < array.groups:
                self.fail(
                    key, f"block b{block.index}: array @{array.name} has no group {block.group}"
                )
            subject = f"block b{block.index}"
            if array.kind == "basis" and not isinstance(block.rows, Span):
                self.fail(key, f"{subject}: a basis block holds a range of rows, not a table")
            self.check_indices(key, subject, "rows", block.rows, array.rows)
            self.check_indices(key, subject, "cols", block.cols, array.cols)
            if array.tile_type is not None and block.tile_type != array.tile_type:
                self.fail(
                    key,
                    f"block b{block.index} is on a {block.tile_type} tile, but its array "
                    f"@{array.name} has tile_type={array.tile_type}",
                )
            try:
                tile_type = self.program.hardware.tile_type(block.tile_type)
            except XbarcError as error:
                self.fail(key, f"block b{block.index}: {error.message}")
                continue
            if block.row_offset < 0 or block.row_offset + len(block.rows) > tile_type.rows:
                self.fail(
                    key,
                    f"block b{block.index}: rows {block.row_offset}.."
                    f"{block.row_offset + len(block.rows) - 1} exceed the "
                    f"{tile_type.rows} rows of {tile_type.name}",
                )
            if block.col_offset < 0 or block.col_offset + len(block.cols) > tile_type.cols:
                self.fail(
                    key,
                    f"block b{block.index}: columns {block.col_offset}.."
                    f"{block.col_offset + len(block.cols) - 1} exceed the "
                    f"{tile_type.cols} columns of {tile_type.name}",
                )
            known_type = vtile_types.setdefault(block.vtile, block.tile_type)
            if known_type != block.tile_type:
                self.fail(
                    key,
                    f"block b{block.index}: v{block.vtile} is a {known_type} tile, "
                    f"not {block.tile_type}",
                )
            cells_by_vtile[block.vtile].append(block)
        for blocks in cells_by_vtile.values():
            self.check_no_overlap(blocks)

    def check_coverage(self) -> None:
        """Blocks cover their array exactly (invariant 15): in each slice, every cell of
        every group lies in at most `copies` blocks (one for a weights array), and the
        cells on no tile add up to nothing: what their slices would have added, with the
        offset correction that offset encoding applies to the blocks of its shift-0 slice,
        is zero (a zero weight under differential encoding, which the sparse mappings
        drop). A cell left out, or placed twice, would change what the layer computes."""
        if not self.program.blocks:
            return  # not tiled yet: the arrays are on no tile at all
        parts: dict[tuple[str, int], list[Block]] = defaultdict(list)
        for block in self.program.blocks:
            parts[(block.array, block.slice)].append(block)
        store = self.program.store
        for array in self.program.arrays:
            tables = [
                i.tensor
                for piece in array.slices
                for b in parts.get((array.name, piece.index), ())
                for i in (b.rows, b.cols)
                if isinstance(i, IndexTable)
            ]
            if any(t not in store for t in tables):
                continue  # a structure-only program: the tables are not known
            self.check_array_coverage(array, parts, store.get(array.levels))

    def check_array_coverage(self, array: Array, parts, levels: np.ndarray | None) -> None:
        flat_levels = None if levels is None else levels.reshape(-1)
        # offset encoding: the cells each slice left out, what they would add, the slice
        left_out: list[tuple[np.ndarray, np.ndarray, int]] = []
        for piece in array.slices:
            blocks = parts.get((array.name, piece.index), [])
            if array.copies == 1 and _tile_the_array(blocks, array):
                continue  # a grid of row ranges by column ranges: each cell once
            count = self.cell_counts(array, piece.index, blocks)
            self.check_placed_once(array, piece.index, blocks, count)
            if flat_levels is None:
                continue  # without levels, which cells are zero is not known
            missing = np.flatnonzero(count.reshape(-1) < array.copies)
            if not len(missing):
                continue
            cells = slice_cells(flat_levels[missing], piece, array.weight_bits, array.encoding)
            if array.encoding == "differential":
                # a weight's cells all have its sign: the missing ones add up to nothing
                # only if each is zero
                bad = missing[cells != 0]
                if len(bad):
                    self.fail_left_out(array, piece.index, int(bad[0]), levels)
                continue
            value = cells.astype(np.int64) << piece.shift
            if piece.shift == 0:
                value -= 2 ** (array.weight_bits - 1)  # no offset correction either
            left_out.append((missing, value, piece.index))
        if not left_out:
            return
        cells, where, inverse = np.unique(
            np.concatenate([c for c, _, _ in left_out]), return_index=True, return_inverse=True
        )
        added = np.bincount(inverse, weights=np.concatenate([v for _, v, _ in left_out]))
        if added.any():  # exact: integers far below 2^53
            first = int(np.flatnonzero(added)[0])
            pieces = np.concatenate([np.full(len(c), p) for c, _, p in left_out])
            self.fail_left_out(array, int(pieces[where[first]]), int(cells[first]), levels)

    def fail_left_out(self, array: Array, piece: int, cell: int, levels) -> None:
        group, row, col = np.unravel_index(cell, (array.groups, array.rows, array.cols))
        self.fail(
            ("array", array.name),
            f"array @{array.name}: slice {piece} group {group} leaves row {row} column {col} "
            f"(level {levels[group, row, col]}) on no tile"
            + ("" if array.copies == 1 else f" in one of its {array.copies} copies"),
            hint="every weight that is not zero must be on a tile: recompile the model",
        )

    def cell_counts(self, array: Array, piece: int, blocks: list[Block]) -> np.ndarray:
        """How many of `blocks` hold each cell [groups, rows, cols] of `array` (saturating
        at the top of a small integer type above `copies`), counted a chunk of blocks at a
        time with whole-array numpy operations (squeezed arrays have hundreds of thousands
        of blocks)."""
        shape = (array.groups, array.rows, array.cols)
        dtype = np.uint8 if array.copies < 255 else np.int32
        top = np.iinfo(dtype).max
        count: np.ndarray = np.zeros(math.prod(shape), dtype)
        if not blocks:
            return count.reshape(shape)
        heights = np.array([len(b.rows) for b in blocks], np.int64)
        widths = np.array([len(b.cols) for b in blocks], np.int64)
        sizes = heights * widths
        ends = np.cumsum(sizes)
        if int(ends[-1]) <= COUNT_CHUNK:  # one go: exact counts
            flat = self.flat_cells(array, blocks, heights, widths)
            return np.bincount(flat, minlength=len(count)).reshape(shape)
        start = 0
        while start < len(blocks):  # chunks of about COUNT_CHUNK cells, at least one block
            stop = max(
                start + 1, int(np.searchsorted(ends, ends[start] - sizes[start] + COUNT_CHUNK))
            )
            flat = self.flat_cells(
                array, blocks[start:stop], heights[start:stop], widths[start:stop]
            )
            if len(count) <= 2 * COUNT_CHUNK:  # a small array: count every cell at once
                count = np.minimum(count + np.bincount(flat, minlength=len(count)), top)
                count = count.astype(dtype)
            else:
                cells, times = np.unique(flat, return_counts=True)
                count[cells] = np.minimum(count[cells] + times, top)
            start = stop
        return count.reshape(shape)

    def flat_cells(self, array: Array, blocks: list[Block], heights, widths) -> np.ndarray:
        """The flat indices [groups, rows, cols] of every cell of `blocks`."""
        sizes = heights * widths
        rows = self.concatenated([b.rows for b in blocks], heights)
        cols = self.concatenated([b.cols for b in blocks], widths)
        block = np.repeat(np.arange(len(blocks)), sizes)
        k = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        row = rows[(np.cumsum(heights) - heights)[block] + k // widths[block]]
        col = cols[(np.cumsum(widths) - widths)[block] + k % widths[block]]
        groups = np.array([b.group for b in blocks], np.int64)[block]
        return (groups * array.rows + row) * array.cols + col

    def concatenated(self, indices: list[Indices], lengths: np.ndarray) -> np.ndarray:
        """The entries of every span or table of `indices`, one after another."""
        tables = sorted({i.tensor for i in indices if isinstance(i, IndexTable)})
        pieces = [np.arange(max((i.stop for i in indices if isinstance(i, Span)), default=0))]
        base: dict[str | None, int] = {None: 0}  # where each source vector starts
        offset = len(pieces[0])
        for tensor in tables:
            base[tensor] = offset
            pieces.append(self.index_vector(tensor))
            offset += len(pieces[-1])
        starts = np.array(
            [i.start + base[i.tensor if isinstance(i, IndexTable) else None] for i in indices],
            np.int64,
        )
        if len(tables) == 1 and len(pieces[0]) == 0:  # one table vector: no copy
            vector = pieces[1]
        else:
            vector = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        firsts = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return vector[firsts + np.arange(int(lengths.sum()), dtype=np.int64)]

    def index_vector(self, tensor: str) -> np.ndarray:
        if tensor not in self.vectors:
            self.vectors[tensor] = np.asarray(self.program.store[tensor], np.int64).ravel()
        return self.vectors[tensor]

    def check_placed_once(self, array: Array, piece: int, blocks: list[Block], count) -> None:
        over = count > array.copies
        if not over.any():
            return
        group, row, col = (int(i) for i in np.argwhere(over)[0])
        holders = [b for b in blocks if b.group == group and self.holds(b, row, col)]
        times = "twice" if array.copies == 1 else f"{count[group, row, col]} times"
        self.fail(
            ("block", holders[-1].index),
            f"block b{holders[-1].index}: @{array.name} holds row {row} column {col} of "
            f"slice {piece} group {group} {times}"
            + ("" if array.copies == 1 else f" (copies={array.copies})"),
        )

    def cells_of(self, indices: Indices) -> slice | np.ndarray:
        if isinstance(indices, Span):
            return slice(indices.start, indices.stop)
        return np.asarray(indices.entries(self.program.store), dtype=np.int64)

    def holds(self, block: Block, row: int, col: int) -> bool:
        def inside(indices: Indices, at: int) -> bool:
            cells = self.cells_of(indices)
            if isinstance(cells, slice):
                return cells.start <= at < cells.stop
            return bool((cells == at).any())

        return inside(block.rows, row) and inside(block.cols, col)

    def check_indices(self, key, subject: str, what: str, indices: Indices, limit: int) -> None:
        if isinstance(indices, Span):
            if not 0 <= indices.start < indices.stop <= limit:
                self.fail(
                    key,
                    f"{subject}: {what} [{indices.start}:{indices.stop}] are not within 0..{limit}",
                )
            return
        if (indices, limit) in self.tables_checked:  # blocks share tables: check each once
            return
        self.tables_checked.add((indices, limit))
        decl = self.require_tensor(key, indices.tensor, None, ("i32",))
        if indices.count < 1 or indices.start < 0:
            self.fail(key, f"{subject}: {what} table is empty")
        if len(decl.shape) != 1 or indices.stop > decl.shape[0]:
            self.fail(
                key,
                f"{subject}: {what} table @{indices.tensor} has no entries "
                f"{indices.start}..{indices.stop - 1} (shape {list(decl.shape)})",
            )
        if indices.tensor in self.program.store and indices.count >= 1:
            vector, falls = self.table_steps(indices.tensor)
            first, last = vector[indices.start], vector[indices.stop - 1]
            if first < 0 or last >= limit or falls[indices.stop - 1] != falls[indices.start]:
                self.fail(
                    key,
                    f"{subject}: {what} table @{indices.tensor} must "
                    f"increase strictly within 0..{limit - 1}",
                )

    def table_steps(self, tensor: str) -> tuple[np.ndarray, np.ndarray]:
        """An index vector and, at each entry, how many steps before it do not increase:
        a run of entries increases strictly when that count is the same at both ends."""
        if tensor not in self.steps:
            vector = self.program.store[tensor].ravel()
            # steps in int64: an i32 step from 13 to -2^31 wraps round to a rise
            falls = np.concatenate(([0], np.cumsum(np.diff(vector.astype(np.int64)) <= 0)))
            self.steps[tensor] = (vector, falls)
        return self.steps[tensor]

    def check_no_overlap(self, blocks: list[Block]) -> None:
        """No cell of a virtual tile holds two blocks. Each block adds one to the cells of
        its rectangle on a grid of the tile (through its corners on a difference grid: time
        linear in the blocks and cells); only when some cell is taken twice is the culprit
        pair sought: the first block, by first row then column, whose rectangle holds such a
        cell, and the first block after it that overlaps it."""
        if len(blocks) < 2:
            return
        ordered = sorted(blocks, key=lambda b: (b.row_offset, b.col_offset))
        top, bottom, left, right = np.array(
            [
                (b.row_offset, b.row_offset + len(b.rows), b.col_offset, b.col_offset + len(b.cols))
                for b in ordered
            ]
        ).T
        taken = _rectangle_sums(top, bottom, left, right, np.ones(len(ordered), np.int32))
        if taken.max() <= 1:
            return
        twice = np.pad((taken > 1).cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
        shared = twice[bottom, right] - twice[top, right] - twice[bottom, left] + twice[top, left]
        position = int(np.argmax(shared > 0))
        first = ordered[position]
        for second in ordered[position + 1 :]:
            if _overlap(first.col_offset, len(first.cols), second.col_offset, len(second.cols)):
                self.fail(
                    ("block", second.index),
                    f"blocks b{first.index} and b{second.index} overlap on v{first.vtile}",
                )
        raise AssertionError("a cell taken twice lies in two blocks")

    def check_combines(self) -> None:
        arrays = {array.name: array for array in self.program.arrays}
        layers = {layer.name: layer for layer in self.program.layers()}
        combined: set[str] = set()
        for combine in self.program.combines:
            key = ("combine", combine.layer)
            layer = layers.get(combine.layer)
            basis = arrays.get(combine.basis)
            if layer is None:
                self.fail(key, f"combine names no crossbar layer @{combine.layer}")
                continue
            if basis is None or basis.kind != "basis":
                self.fail(key, f"combine @{combine.layer}: @{combine.basis} is no basis array")
                continue
            if combine.segment_rows != basis.rows:
                self.fail(
                    key,
                    f"combine @{combine.layer}: segments of {combine.segment_rows} "
                    f"rows but the basis has {basis.rows}",
                )
            if combine.layer in combined:
                self.fail(key, f"@{combine.layer} is combined twice")
            combined.add(combine.layer)
            if self.program.weights_of(combine.layer) is not None:
                self.fail(
                    key,
                    f"@{combine.layer} is both combined from a basis and held by its own array",
                )
            if not 2 <= combine.coef_bits <= MAX_COEF_BITS:
                self.fail(
                    key,
                    f"combine @{combine.layer}: coef_bits={combine.coef_bits} is not "
                    f"within 2..{MAX_COEF_BITS}",
                )
            segments = -(-layer.rows // combine.segment_rows)
            shape = (layer.groups, segments, basis.cols, layer.cols)
            self.require_tensor(key, combine.coefficients, shape, ("i8", "i16", "i32"))
            if isinstance(combine.scale, Const):
                self.require_tensor(key, combine.scale.name, (layer.groups, layer.cols), ("f32",))
                self.require_finite(key, f"combine @{combine.layer}", combine.scale.name, "scale ")
            elif not math.isfinite(combine.scale):
                self.fail(key, f"combine @{combine.layer}: scale {combine.scale} is not finite")
            if combine.coefficients in self.program.store:
                limit = 2 ** (combine.coef_bits - 1) - 1
                coefficients = self.program.store[combine.coefficients]
                if coefficients.size and (
                    int(coefficients.max()) > limit or int(coefficients.min()) < -limit
                ):
                    self.fail(
                        key,
                        f"combine @{combine.layer}: coefficients exceed the "
                        f"{combine.coef_bits}-bit range +-{limit}",
                    )

    # --- phases ---------------------------------------------------------------------------

    def check_calibration(self) -> None:
        calibration = self.program.calibration
        if calibration is None:
            return
        key = ("calibration", None)
        if not (0 < calibration.percentile <= 100):
            self.fail(key, f"calibration percentile {calibration.percentile} is not in (0, 100]")
        if calibration.samples < 1:
            self.fail(key, f"calibration from {calibration.samples} samples")
        layers = {layer.name for layer in self.program.layers()}
        for entry in calibration.layers:
            where = ("range", entry.layer)
            if entry.layer not in layers:
                self.fail(where, f"calibration names no crossbar layer @{entry.layer}")
            if not (math.isfinite(entry.input_range) and entry.input_range > 0):
                self.fail(where, f"@{entry.layer}: input_range {entry.input_range} is not > 0")
            if not (0 < entry.adc_range <= 1):
                self.fail(where, f"@{entry.layer}: adc_range {entry.adc_range} is not in (0, 1]")

    def check_phases(self) -> None:
        if not self.program.phases:
            return
        readers = self.block_readers()
        layers = {layer.name: layer for layer in self.program.layers()}
        order = {op.name: i for i, op in enumerate(all_ops(self.program.ops))}
        chip = ChipState()
        read_count: dict[tuple[str, int], int] = defaultdict(int)
        basis_reads: dict[tuple, int] = defaultdict(int)  # (layer, group, segment, position)
        last_layer_position = -1
        for position, phase in enumerate(self.program.phases):
            key = ("phase", phase.index)
            if phase.index != position:
                self.fail(key, f"phase {phase.index} is out of order (expected {position})")
            self.check_writes(key, phase.index, phase.writes, chip)
            for run_position, run in enumerate(phase.runs):
                run_key = ("run", phase.index, run_position)
                layer = layers.get(run.layer)
                if layer is None:
                    self.fail(run_key, f"phase {phase.index} runs unknown layer @{run.layer}")
                    continue
                if order[run.layer] < last_layer_position:
                    self.fail(run_key, f"phase {phase.index} runs @{run.layer} out of graph order")
                last_layer_position = order[run.layer]
                for cycle_position, cycle in enumerate(run.cycles):
                    where = (phase.index, run_position, cycle_position)
                    scheduled: list[ScheduledRead] = []
                    blocks_read: set[int] = set()
                    for read_position, read in enumerate(cycle.reads):
                        read_key = ("read", *where, read_position)
                        block = self.check_read(read_key, phase.index, layer, read, chip, readers)
                        if read.block in blocks_read:
                            self.fail(read_key, f"b{read.block} is read twice in one cycle")
                        blocks_read.add(read.block)
                        scheduled.append((block, read.input))
                        if self.arrays[block.array].kind == "basis":
                            offset = read.input.rows.start - block.rows.start  # type: ignore[union-attr]
                            segment = offset // self.arrays[block.array].rows
                            at = (block.slice, block.rows, block.cols)
                            basis_reads[(run.layer, read.input.group, segment, at)] += 1
                        else:
                            read_count[(run.layer, read.block)] += 1
                    self.check_cycle(("cycle", *where), scheduled)
        self.check_basis_coverage(basis_reads)
        for block in self.program.blocks:
            if self.arrays[block.array].kind == "basis":
                continue  # covered per input segment above
            for layer_name in readers.get(block.array, ()):
                count = read_count[(layer_name, block.index)]
                if count != 1:
                    self.fail(
                        ("block", block.index),
                        f"block b{block.index} is read {count} times by @{layer_name}, not once",
                    )

    def check_read(
        self,
        key,
        phase: int,
        layer: CrossbarLayer,
        read: Read,
        chip: ChipState,
        readers: dict[str, tuple[str, ...]],
    ) -> Block:
        """One read of a run of `layer`: its block is one the layer reads and is on the chip,
        and its input is a segment of the layer's input as long as the block's rows (for a
        block of the layer's own array, exactly the rows its weights multiply)."""
        blocks = self.program.blocks
        if not 0 <= read.block < len(blocks):
            self.fail(key, f"phase {phase} runs unknown block b{read.block}")
        block = blocks[read.block]
        if layer.name not in readers.get(block.array, ()):
            self.fail(key, f"@{layer.name} reads b{block.index}, which holds @{block.array}")
        if block.vtile not in chip.tile_of:
            self.fail(
                key,
                f"phase {phase} reads b{block.index} but v{block.vtile} is not on any tile then",
            )
        segment = read.input
        subject = f"the read of b{block.index}"
        if not 0 <= segment.group < layer.groups:
            self.fail(key, f"{subject}: @{layer.name} has no input group g{segment.group}")
        self.check_indices(key, subject, "input rows", segment.rows, layer.rows)
        if self.arrays[block.array].kind == "basis":
            self.check_basis_read(key, subject, layer, block, segment)
            return block
        if len(segment.rows) != len(block.rows):
            self.fail(
                key,
                f"{subject} drives {len(segment.rows)} input rows onto its {len(block.rows)} rows",
            )
        own = segment.group == block.group and segment.rows == block.rows  # own_input(block)
        if not own and self.arrays[block.array].layer == layer.name:
            self.fail(
                key,
                f"{subject} must drive the input rows its weights multiply: "
                f"g{block.group}{_indices_text(block.rows)}",
            )
        return block

    def check_basis_read(
        self, key, subject: str, layer: CrossbarLayer, block: Block, segment: Segment
    ) -> None:
        """A basis block is read against one input segment s of L rows: the rows
        s*L + its own rows, cut at the layer's last row (the rest driven with zeros)."""
        basis = self.arrays[block.array]
        if not isinstance(block.rows, Span) or not isinstance(segment.rows, Span):
            self.fail(key, f"{subject}: basis blocks and their inputs are row ranges")
        assert isinstance(block.rows, Span) and isinstance(segment.rows, Span)
        offset = segment.rows.start - block.rows.start
        expected = min(len(block.rows), layer.rows - segment.rows.start)
        if offset < 0 or offset % basis.rows or len(segment.rows) != expected:
            self.fail(
                key,
                f"{subject} drives input rows [{segment.rows.start}:{segment.rows.stop}], "
                f"not a segment of {basis.rows} rows of @{layer.name} matching its rows "
                f"[{block.rows.start}:{block.rows.stop}]",
            )

    def check_basis_coverage(self, basis_reads: dict[tuple, int]) -> None:
        """Every combined layer reads, for each group and input segment, every position of
        its basis (slice, rows, cols: one copy's block) exactly once, and no other."""
        positions: dict[str, set[tuple]] = defaultdict(set)
        for block in self.program.blocks:
            if self.arrays[block.array].kind == "basis":
                positions[block.array].add((block.slice, block.rows, block.cols))
        layers = {layer.name: layer for layer in self.program.layers()}
        expected: set[tuple] = set()
        for combine in self.program.combines:
            layer = layers.get(combine.layer)
            if layer is None or not self.program.phases:
                continue
            length = combine.segment_rows
            for s in range(-(-layer.rows // length)):
                rows = min(length, layer.rows - s * length)
                for position in positions.get(combine.basis, ()):
                    if position[1].start < rows:
                        for group in range(layer.groups):
                            expected.add((layer.name, group, s, position))
        for item, count in basis_reads.items():
            if item not in expected or count != 1:
                layer, group, s, (piece, rows, cols) = item
                self.fail(
                    ("combine", layer),
                    f"@{layer} reads basis slice {piece} rows{_indices_text(rows)} "
                    f"cols{_indices_text(cols)} against segment {s} of g{group} "
                    f"{count} times, not once",
                )
        missing = sorted(expected - basis_reads.keys(), key=str)
        if missing:
            layer, group, s, (piece, rows, cols) = missing[0]
            self.fail(
                ("combine", layer),
                f"@{layer} never reads basis slice {piece} rows{_indices_text(rows)} "
                f"cols{_indices_text(cols)} against segment {s} of g{group}",
            )

    def check_writes(self, key, phase: int, writes, chip: ChipState) -> None:
        """Apply one phase's writes to `chip`, checking each."""
        hardware = self.program.hardware
        tile_count = hardware.tile_count
        vtiles_written: set[int] = set()
        tiles_written: set[int] = set()
        for write in writes:
            if write.tile in tiles_written or write.vtile in vtiles_written:
                self.fail(
                    key,
                    f"phase {phase} writes v{write.vtile} -> t{write.tile} "
                    "but that tile or vtile is already written in this phase",
                )
            tiles_written.add(write.tile)
            vtiles_written.add(write.vtile)
            if not 0 <= write.tile < tile_count:
                self.fail(
                    key,
                    f"phase {phase}: tile t{write.tile} does not exist "
                    f"(the chip has {tile_count} tiles)",
                )
            vtype = self.vtile_type(write.vtile)
            if vtype is None:
                self.fail(key, f"phase {phase} writes v{write.vtile}, which holds no block")
            ptype = hardware.tile_type_of(write.tile).name
            if vtype != ptype:
                self.fail(
                    key,
                    f"phase {phase}: v{write.vtile} is a {vtype} tile but "
                    f"t{write.tile} is a {ptype} tile",
                )
            chip.write(write.vtile, write.tile)

    def block_readers(self) -> dict[str, tuple[str, ...]]:
        """array name -> the layers whose runs read its blocks."""
        readers: dict[str, list[str]] = defaultdict(list)
        for layer, arrays in self.program.arrays_read_by().items():
            for array in arrays:
                readers[array].append(layer)
        return {name: tuple(layers) for name, layers in readers.items()}

    def vtile_type(self, vtile: int) -> str | None:
        return self.vtile_types.get(vtile)

    def check_cycle(self, key, reads: list[ScheduledRead]) -> None:
        """One input vector per tile per cycle: `cycle_clash` finds two reads of one tile
        that sense the same columns or drive the same rows with different inputs."""
        by_vtile: dict[int, list[ScheduledRead]] = defaultdict(list)
        for block, segment in reads:
            by_vtile[block.vtile].append((block, segment))
        for tile_reads in by_vtile.values():
            if len(tile_reads) < 2:
                continue  # a read alone on its tile clashes with nothing
            clash = cycle_clash(tile_reads)
            if clash is not None:
                first, second = clash
                self.fail(
                    key,
                    f"b{first.index} and b{second.index} share "
                    f"v{first.vtile} in one cycle but need different inputs "
                    "on the same rows or read the same columns",
                )


def _tile_the_array(blocks: list[Block], array: Array) -> bool:
    """Whether `blocks` (one slice's) hold every cell of `array` exactly once because, in
    each group, they are the product of row ranges that partition the rows and column
    ranges that partition the columns, each pair once: how the dense mapping cuts an
    array. False only means "not shown this way" (the grid count then decides)."""
    rectangles: dict[int, set[tuple[int, int, int, int]]] = defaultdict(set)
    for block in blocks:
        rows, cols = block.rows, block.cols
        if not isinstance(rows, Span) or not isinstance(cols, Span):
            return False
        rectangle = (rows.start, rows.stop, cols.start, cols.stop)
        if rectangle in rectangles[block.group]:
            return False
        rectangles[block.group].add(rectangle)
    if len(rectangles) != array.groups:
        return False
    for group_rectangles in rectangles.values():
        row_ranges = sorted({(r[0], r[1]) for r in group_rectangles})
        col_ranges = sorted({(r[2], r[3]) for r in group_rectangles})
        if (
            not _partition(row_ranges, array.rows)
            or not _partition(col_ranges, array.cols)
            or len(group_rectangles) != len(row_ranges) * len(col_ranges)
        ):
            return False
    return True


def _partition(ranges: list[tuple[int, int]], size: int) -> bool:
    """Whether sorted, distinct `ranges` [start, stop) cut 0..size into consecutive pieces."""
    return (
        ranges[0][0] == 0
        and ranges[-1][1] == size
        and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    )


def _indices_text(indices: Indices) -> str:
    if isinstance(indices, Span):
        return f"[{indices.start}:{indices.stop}]"
    return f" @{indices.tensor}[{indices.start}:{indices.stop}]"


def _rectangle_sums(
    top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """A grid with each rectangle [top, bottom) x [left, right) adding its value to its cells,
    made from the rectangles' corners on a difference grid and two running sums."""
    corners = np.zeros((bottom.max() + 1, right.max() + 1), dtype=values.dtype)
    np.add.at(corners, (top, left), values)
    np.add.at(corners, (top, right), -values)
    np.add.at(corners, (bottom, left), -values)
    np.add.at(corners, (bottom, right), values)
    return corners.cumsum(axis=0).cumsum(axis=1)


def _overlap(start_a: int, length_a: int, start_b: int, length_b: int) -> bool:
    return start_a < start_b + length_b and start_b < start_a + length_a


def output_channels(layer: CrossbarLayer) -> int:
    """Output channels of a layer (ConvTranspose columns also carry the kernel positions)."""
    if layer.kind == "conv_transpose" and layer.geometry is not None:
        kernel_size = int(np.prod(layer.geometry.kernel))
        return layer.groups * layer.cols // kernel_size
    return layer.groups * layer.cols
