"""Hardware description: tile types, cells, converters and the cost constants.

Every cost constant is a named field carrying its unit in the name and its source in the
comment beside it. Defaults are the ISAAC figures (Shafiee et al., ISCA 2016, Table 6) as
carried by PUMA and MNSIM, for 32 nm at 1.2 GHz: a 128x128 crossbar read takes 100 ns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from xbarc.diagnostics import XbarcError
from xbarc.limits import MAX_BITS, MAX_TILE_CELLS, MAX_TILE_DIM, MAX_TILES, check_count

SignedEncoding = Literal["differential", "offset"]
AdcRange = Literal["fixed", "calibrated", "dynamic"]
SIGNED_ENCODINGS: tuple[str, ...] = ("differential", "offset")
ADC_RANGES: tuple[str, ...] = ("fixed", "calibrated", "dynamic")


@dataclass(frozen=True, slots=True)
class TileType:
    """A kind of physical crossbar tile: `count` tiles of `rows` x `cols` cells."""

    name: str
    rows: int
    cols: int
    count: int

    def __post_init__(self) -> None:
        # every chip (options, program text, pass options) is built of tile types: refusing
        # absurd sizes here keeps them out of every allocation sized by a tile
        check_tile_size(self.rows, self.cols)
        check_count("the tile count", self.count, MAX_TILES, hint=TILES_HINT)

    @property
    def cells(self) -> int:
        return self.rows * self.cols


TILES_HINT = "give a chip of real size"


def check_tile_size(rows: int, cols: int) -> None:
    """Rows and columns of one crossbar within xbarc's limits (xbarc.limits)."""
    check_count("the row count of a tile", rows, MAX_TILE_DIM, hint=TILES_HINT)
    check_count("the column count of a tile", cols, MAX_TILE_DIM, hint=TILES_HINT)
    if rows * cols > MAX_TILE_CELLS:
        raise XbarcError(
            f"a {rows}x{cols} tile has {rows * cols} cells, more than xbarc supports"
            f" ({MAX_TILE_CELLS})",
            hint=TILES_HINT,
        )


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One RRAM cell: `bits` bits per cell, conductance range in microsiemens."""

    bits: int = 2
    g_min_us: float = 2.5  # on/off ratio 10 (aihwkit, CrossSim defaults)
    g_max_us: float = 25.0  # aihwkit single-pair default g_max

    @property
    def levels(self) -> int:
        return 2**self.bits


@dataclass(frozen=True, slots=True)
class DacSpec:
    """Input converter: `bits` of input resolution fed `slice_bits` at a time (bit-serial)."""

    bits: int = 8
    slice_bits: int = 1  # ISAAC streams inputs one bit per cycle

    @property
    def input_slices(self) -> int:
        return -(-self.bits // self.slice_bits)


@dataclass(frozen=True, slots=True)
class AdcSpec:
    """Output converter shared by `cols_per_adc` columns of a tile."""

    bits: int = 8
    range: AdcRange = "fixed"  # full scale = the largest partial sum a read can produce
    cols_per_adc: int = 128  # ISAAC: one 1.28 GS/s ADC reads a 128-column array in 100 ns


@dataclass(frozen=True, slots=True)
class CostParams:
    """Energy, latency and area constants (ISAAC Table 6 unless said otherwise)."""

    xbar_read_energy_pj: float = 30.0  # 128x128 array 0.3 mW x 100 ns
    xbar_read_latency_ns: float = 100.0  # one array read cycle
    xbar_area_um2: float = 25.0  # 8 arrays in 0.0002 mm^2
    adc_energy_pj: float = 1.56  # 8-bit ADC 2 mW at 1.28 GS/s
    adc_rate_gsps: float = 1.28
    adc_area_um2: float = 1200.0  # 8 ADCs in 0.0096 mm^2
    dac_power_uw: float = 3.9  # 1-bit DAC, 1024 in 4 mW
    dac_area_um2: float = 0.166  # 1024 DACs in 0.00017 mm^2
    shift_add_power_mw: float = 0.05  # 4 units in 0.2 mW
    shift_add_area_um2: float = 60.0  # 4 units in 0.00024 mm^2
    edram_access_pj: float = 17.2  # per 256-bit access (ISAAC eDRAM buffer)
    write_pulse_ns: float = 50.0  # assumption: program pulse
    write_verify_ns: float = 10.0  # assumption: verify read
    write_pv_iterations: int = 10  # assumption: program-and-verify iterations per row
    write_pulse_energy_pj: float = 1.0  # per cell pulse; published range 0.2 to 3.3 pJ
    # per-column weight scales, applied digitally to each column's result after the ADC:
    scale_multiply_energy_pj: float = 1.1  # 16-bit float multiply, 45 nm (Horowitz, ISSCC 2014)
    scale_multiplier_area_um2: float = 830.0  # the same: 1640 um^2 at 45 nm x (32/45)^2
    scale_bits: int = 16  # a stored column scale
    buffer_area_um2_per_byte: float = 1.27  # ISAAC eDRAM buffer: 64 KB in 0.083 mm^2
    # BasisN's digital combine unit: y[n] += coef[s, k, n] * r[s, k], one MAC per non-zero
    # coefficient per input vector; the coefficient tables sit in the eDRAM buffer above:
    combine_multiply_energy_pj: float = 0.2  # 8-bit x 8-bit int multiply, 45 nm (Horowitz,
    # ISSCC 2014); a q-bit coefficient x ADC-width response costs 0.2 x q x adc_bits / 64
    combine_add_energy_pj: float = 0.1  # 32-bit int add (the accumulator), 45 nm (Horowitz)
    combine_lanes: int = 256  # assumption: MACs the combine unit completes per clock cycle
    digital_clock_ghz: float = 1.2  # ISAAC's digital clock
    combine_lane_area_um2: float = 212.0  # Horowitz 45 nm: 8-bit multiply 282 + 32-bit add
    # 137 um^2, x (32/45)^2 to 32 nm
    # the activation buffer: edram_access_pj buys one access of this many bits; a layer
    # reads its unfolded inputs and writes its outputs there, dac.bits an activation
    buffer_access_bits: int = 256  # ISAAC's eDRAM buffer is read 256 bits at a time
    # digital ops (activations, pooling, residual adds...): one operation per element of
    # their activation inputs
    digital_op_energy_pj: float = 0.1  # 32-bit int add, 45 nm (Horowitz, ISSCC 2014)
    digital_unit_area_um2: float = 840.0  # ISAAC Table 6, a tile's 2 sigmoid units
    # (0.0006 mm^2) and its max-pool unit (0.00024 mm^2): one set per program
    # the share of input slices that are not zero: a DAC drives, and an array's cells
    # conduct, only on those rows; 1.0 charges every row of every read (ISAAC's figures)
    input_bit_density: float = 1.0


@dataclass(frozen=True, slots=True)
class Hardware:
    """The chip a program targets. Physical tile ids run over `tile_types` in order."""

    tile_types: tuple[TileType, ...]
    cell: CellSpec = field(default_factory=CellSpec)
    encoding: SignedEncoding = "differential"
    dac: DacSpec = field(default_factory=DacSpec)
    adc: AdcSpec = field(default_factory=AdcSpec)
    cost: CostParams = field(default_factory=CostParams)

    def __post_init__(self) -> None:
        check_count("the chip's tile count", self.tile_count, MAX_TILES, hint=TILES_HINT)

    def tile_type(self, name: str) -> TileType:
        for tile_type in self.tile_types:
            if tile_type.name == name:
                return tile_type
        known = ", ".join(t.name for t in self.tile_types)
        raise XbarcError(f"unknown tile type {name!r}", hint=f"known tile types: {known}")

    def tile_ids(self, name: str) -> range:
        """The physical tile ids of tile type `name`."""
        start = 0
        for tile_type in self.tile_types:
            if tile_type.name == name:
                return range(start, start + tile_type.count)
            start += tile_type.count
        raise XbarcError(f"unknown tile type {name!r}")

    def tile_type_of(self, tile_id: int) -> TileType:
        start = 0
        for tile_type in self.tile_types:
            if start <= tile_id < start + tile_type.count:
                return tile_type
            start += tile_type.count
        raise XbarcError(f"tile t{tile_id} does not exist (the chip has {start} tiles)")

    @property
    def tile_count(self) -> int:
        return sum(t.count for t in self.tile_types)


REFERENCE_CELLS = 128 * 128  # the array size ISAAC's read figures are quoted for
REFERENCE_ADC_BITS = 8  # the ADC resolution ISAAC's converter figures are quoted for


@dataclass(frozen=True, slots=True)
class UnitCosts:
    """The per-operation figures of one tile type on a chip: what each event the cost
    model counts is charged. `unit_costs(hardware, tile_type)` derives them from the
    chip's constants; the cost model (xbarc/cost.py) and the passes that weigh tile
    types (NAX) both charge through it."""

    read_energy_pj: float  # one read cycle of the whole array (at the input bit density)
    conversion_energy_pj: float  # one ADC conversion (one column of one read)
    dac_energy_pj: float  # one row driven for one read cycle (at the input bit density)
    shift_add_energy_pj: float  # one column's shift-and-add after its conversion
    cycle_ns: float  # one read cycle: the array read or its columns' conversions
    tile_area_um2: float  # the array with its ADCs, DACs and shift-and-add units


def unit_costs(hardware: Hardware, tile_type: TileType) -> UnitCosts:
    """Per-operation figures of `tile_type` on `hardware`: the read energy scales with
    the array's cells from the 128x128 reference, a conversion's energy and an ADC's area
    double per ADC bit (Walden figure of merit) from the 8-bit reference, a tile has one
    ADC and one shift-and-add unit per `cols_per_adc` columns and one DAC per row. The
    array and the DACs spend energy on the rows whose input slice is not zero: both scale
    with `input_bit_density` (1.0: every row)."""
    cost = hardware.cost
    density = cost.input_bit_density
    adc_scale = 2.0 ** (hardware.adc.bits - REFERENCE_ADC_BITS)
    adcs = -(-tile_type.cols // hardware.adc.cols_per_adc)
    conversions_ns = hardware.adc.cols_per_adc / cost.adc_rate_gsps
    return UnitCosts(
        read_energy_pj=cost.xbar_read_energy_pj * tile_type.cells / REFERENCE_CELLS * density,
        conversion_energy_pj=cost.adc_energy_pj * adc_scale,
        dac_energy_pj=cost.dac_power_uw * cost.xbar_read_latency_ns * 1e-3 * density,  # fJ
        shift_add_energy_pj=cost.shift_add_power_mw / cost.adc_rate_gsps,  # mW x ns = pJ
        cycle_ns=max(cost.xbar_read_latency_ns, conversions_ns),
        tile_area_um2=(
            cost.xbar_area_um2 * tile_type.cells / REFERENCE_CELLS
            + adcs * cost.adc_area_um2 * adc_scale
            + tile_type.rows * cost.dac_area_um2
            + adcs * cost.shift_add_area_um2
        ),
    )


def tile_type_name(rows: int, cols: int) -> str:
    """The conventional name of a rows x cols tile type, e.g. `t128x128`."""
    return f"t{rows}x{cols}"


def make_hardware(
    tiles: int,
    tile_rows: int = 128,
    tile_cols: int = 128,
    cell_bits: int = 2,
    encoding: str = "differential",
) -> Hardware:
    """A chip with one tile type, checking every number a user can get wrong."""
    check_positive("--tiles", tiles)
    check_positive("tile rows", tile_rows)
    check_positive("tile columns", tile_cols)
    check_positive("--cell-bits", cell_bits)
    check_count("--tiles", tiles, MAX_TILES, hint=TILES_HINT)
    check_count("--cell-bits", cell_bits, MAX_BITS)
    check_tile_size(tile_rows, tile_cols)
    if encoding not in SIGNED_ENCODINGS:
        raise XbarcError(
            f"unknown signed encoding {encoding!r}",
            hint="use differential or offset",
        )
    tile_type = TileType(tile_type_name(tile_rows, tile_cols), tile_rows, tile_cols, tiles)
    return Hardware(
        tile_types=(tile_type,),
        cell=CellSpec(bits=cell_bits),
        encoding=encoding,  # type: ignore[arg-type]
    )


def with_chip_options(
    hardware: Hardware,
    tiles: int | None = None,
    tile_rows: int | None = None,
    tile_cols: int | None = None,
    cell_bits: int | None = None,
    encoding: str | None = None,
) -> Hardware:
    """`hardware` with the chip options of compile that were given (None: the chip's
    own): `--tiles`, `--tile-size`, `--cell-bits`, `--encoding`, each checked as
    make_hardware checks it. The tile count and size apply to a chip of one tile type."""
    if tiles is not None or tile_rows is not None or tile_cols is not None:
        if len(hardware.tile_types) != 1:
            raise XbarcError(
                "--tiles and --tile-size set the tile type of a chip with one",
                hint="give each tile type's size and count in the hardware file",
            )
        only = hardware.tile_types[0]
        tiles = only.count if tiles is None else tiles
        tile_rows = only.rows if tile_rows is None else tile_rows
        tile_cols = only.cols if tile_cols is None else tile_cols
        check_positive("--tiles", tiles)
        check_positive("tile rows", tile_rows)
        check_positive("tile columns", tile_cols)
        check_count("--tiles", tiles, MAX_TILES, hint=TILES_HINT)
        check_tile_size(tile_rows, tile_cols)
        resized = (tile_rows, tile_cols) != (only.rows, only.cols)
        name = tile_type_name(tile_rows, tile_cols) if resized else only.name
        tile_type = TileType(name, tile_rows, tile_cols, tiles)
        hardware = dataclasses.replace(hardware, tile_types=(tile_type,))
    if cell_bits is not None:
        check_positive("--cell-bits", cell_bits)
        check_count("--cell-bits", cell_bits, MAX_BITS)
        hardware = dataclasses.replace(
            hardware, cell=dataclasses.replace(hardware.cell, bits=cell_bits)
        )
    if encoding is not None:
        if encoding not in SIGNED_ENCODINGS:
            raise XbarcError(
                f"unknown signed encoding {encoding!r}", hint="use differential or offset"
            )
        hardware = dataclasses.replace(hardware, encoding=encoding)  # type: ignore[arg-type]
    return hardware


def check_positive(what: str, value: int) -> None:
    if value < 1:
        raise XbarcError(f"{what} must be at least 1, got {value}")


def cost_field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(CostParams))


HARDWARE_SECTIONS = ("cell", "dac", "adc", "cost")

# fields whose value must be above 0 (times and rates divide); every other number of a
# section is at least 0, and every whole number at least 1
POSITIVE_FIELDS = frozenset(
    {
        ("cell", "g_max_us"),
        ("cost", "xbar_read_latency_ns"),
        ("cost", "adc_rate_gsps"),
        ("cost", "digital_clock_ghz"),
    }
)
BITS_FIELDS = frozenset(
    {
        ("cell", "bits"),
        ("dac", "bits"),
        ("dac", "slice_bits"),
        ("adc", "bits"),
        ("cost", "scale_bits"),
    }
)
FIELD_LIMITS = {("adc", "cols_per_adc"): MAX_TILE_DIM}
FRACTION_FIELDS = frozenset({("cost", "input_bit_density")})  # above 0, at most 1


def field_problem(section: str, name: str, value: object) -> str:
    """Why `value` (of the field's type) is out of range for field `section.name`, or "":
    bits from 1 to MAX_BITS, whole numbers at least 1, times and rates above 0, every
    other number at least 0."""
    if (section, name) == ("adc", "range"):
        return "" if value in ADC_RANGES else f"expected one of {', '.join(ADC_RANGES)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if (section, name) in BITS_FIELDS:
        return "" if 1 <= value <= MAX_BITS else f"expected 1 to {MAX_BITS} bits"
    limit = FIELD_LIMITS.get((section, name))
    if limit is not None and value > limit:
        return f"expected at most {limit}"
    if isinstance(value, int):
        return "" if value >= 1 else "expected a whole number of at least 1"
    if (section, name) in FRACTION_FIELDS:
        return "" if 0 < value <= 1 else "expected a share above 0 and at most 1"
    if (section, name) in POSITIVE_FIELDS:
        return "" if value > 0 else "expected a number above 0"
    return "" if value >= 0 else "expected a number of at least 0"


def chip_problem(hardware: Hardware) -> str:
    """What makes the chip's fields contradict each other, or ""."""
    if hardware.dac.slice_bits > hardware.dac.bits:
        return f"dac.slice_bits ({hardware.dac.slice_bits}) is above dac.bits ({hardware.dac.bits})"
    if hardware.cell.g_min_us >= hardware.cell.g_max_us:
        return (
            f"cell.g_min_us ({hardware.cell.g_min_us}) is not below cell.g_max_us "
            f"({hardware.cell.g_max_us})"
        )
    return ""


def with_overrides(hardware: Hardware, items: Sequence[str]) -> Hardware:
    """`hardware` with `section.field=value` items applied in order (`adc.bits=6`,
    `cell.bits=1`, `cost.adc_energy_pj=2.0`, `encoding=offset`): the `--hw-set` of
    compile and the hardware knobs of sweep. Every item is checked: an unknown section or
    field or a value of the wrong type is a one-line error naming the item."""
    for item in items:
        key, equals, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not equals or not key or not text:
            raise XbarcError(
                f"--hw-set {item!r}: expected section.field=value", hint="e.g. --hw-set adc.bits=6"
            )
        if key == "encoding":
            if text not in SIGNED_ENCODINGS:
                raise XbarcError(
                    f"--hw-set {item!r}: unknown signed encoding {text!r}",
                    hint="use differential or offset",
                )
            hardware = dataclasses.replace(hardware, encoding=text)  # type: ignore[arg-type]
            continue
        section, dot, name = key.partition(".")
        if not dot or section not in HARDWARE_SECTIONS:
            raise XbarcError(
                f"--hw-set {item!r}: unknown hardware field {key!r}",
                hint=f"name a field as section.field, sections: {', '.join(HARDWARE_SECTIONS)}"
                " (or encoding)",
            )
        spec = getattr(hardware, section)
        known = {f.name: f for f in fields(spec)}
        if name not in known:
            raise XbarcError(
                f"--hw-set {item!r}: {section} has no field {name!r}",
                hint=f"{section} fields: {', '.join(known)}",
            )
        value = _field_value(item, getattr(spec, name), text)
        problem = field_problem(section, name, value)
        if problem:
            raise XbarcError(f"--hw-set {item!r}: {problem}", hint=f"give {key} a value in range")
        hardware = dataclasses.replace(
            hardware, **{section: dataclasses.replace(spec, **{name: value})}
        )
    problem = chip_problem(hardware) if items else ""
    if problem:
        raise XbarcError(f"--hw-set: {problem}", hint="set the two fields consistently")
    return hardware


def _field_value(item: str, current: object, text: str) -> object:
    """`text` read as the type of the field's `current` value."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(text)
            return value
    except ValueError:
        expected = "a whole number" if isinstance(current, int) else "a number"
        raise XbarcError(f"--hw-set {item!r}: expected {expected}, got {text!r}") from None
    return text
