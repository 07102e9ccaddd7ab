"""Hardware files: the chip as a TOML file, shipped presets and user files.

    hardware = load_hardware("puma")                 # a shipped preset
    hardware = load_hardware("my_chip.toml")         # a user file, by path

A hardware file gives the chip's tile types (`[[tile]]` tables of name, rows, cols,
count), its `encoding`, and the `[cell]`, `[dac]`, `[adc]` and `[cost]` tables of
`xbarc.hardware`'s CellSpec, DacSpec, AdcSpec and CostParams fields. Two presets ship in
`xbarc/hw/`: `isaac` (ISAAC, ISCA 2016: xbarc's default chip, exactly the defaults of
xbarc/hardware.py) and `puma` (PUMA, ASPLOS 2019, from its authors' simulator); every
constant there carries its unit in its name and its source beside it.

A file may start from a preset or from another file, `base = "puma"` or
`base = "other.toml"` (a relative path is found beside the file that names it), at most
32 deep, and then set only the fields it changes; a `[[tile]]` list replaces the
base's whole list. Every field is checked when the file is read: an unknown table or
field, a wrong type or a value out of range is a one-line error naming the file and the
field. Files are read as regular UTF-8 files of at most limits.MAX_HARDWARE_FILE_BYTES,
flat enough for tomllib to parse in bounded time. This module sits in the bottom room: it
imports nothing of xbarc but hardware, diagnostics, files and limits (and so no onnx or
numba: loading a chip is fast).
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from xbarc.diagnostics import XbarcError
from xbarc.files import TomlKind, read_toml_chain
from xbarc.hardware import (
    SIGNED_ENCODINGS,
    AdcSpec,
    CellSpec,
    CostParams,
    DacSpec,
    Hardware,
    TileType,
    chip_problem,
    field_problem,
    tile_type_name,
)
from xbarc.limits import MAX_HARDWARE_FILE_BYTES, MAX_TILE_DIM, MAX_TILES

PRESET_DIR = Path(__file__).parent / "hw"
PRESETS = ("isaac", "puma")
DEFAULT_PRESET = "isaac"

# '.', '[' and '{' in a hardware file (floats, tables, comments): the presets hold a few
# hundred; tens of thousands would cost tomllib quadratic time (dotted keys) or recursion
HARDWARE_FILES = TomlKind(
    name="hardware file",
    missing="no such hardware file",
    family="hardware",
    max_bytes=MAX_HARDWARE_FILE_BYTES,
    max_structure=5000,
    shape="a few tables of `field = value` lines",
    start_hint="start the file from a preset",
    shipped_folder=PRESET_DIR,
    shipped=PRESETS,
    unknown="unknown hardware",
    shipped_hint=f"use a preset ({', '.join(PRESETS)}) or the path of a .toml file",
)
MAX_TILE_TYPES = 64  # tile types of one chip

SECTIONS: dict[str, type] = {"cell": CellSpec, "dac": DacSpec, "adc": AdcSpec, "cost": CostParams}
TILE_FIELDS = ("name", "rows", "cols", "count")

HINT = "see the fields of xbarc/hw/isaac.toml"


def load_hardware(name: str | os.PathLike = DEFAULT_PRESET) -> Hardware:
    """The chip of a shipped preset (by name) or of a hardware file (by path)."""
    values, where = read_hardware_file(name)
    return build_hardware_values(values, where)


# the values of a file: {"tile": ([tables], origin), "encoding": (value, origin),
# (section, field): (value, origin)}, origin the file that set it
Values = dict[Any, tuple[Any, str]]


def read_hardware_file(name: str | os.PathLike) -> tuple[Values, str]:
    """Field values of a hardware file, with the file each was set in, following
    `base = ...` (a relative base is found beside the file that names it)."""
    values: Values = {}
    chain = read_toml_chain(name, HARDWARE_FILES)
    for table, path in chain:
        origin = str(path)
        for key, value in table.items():
            if key in ("tile", "encoding"):
                values[key] = (value, origin)
            elif key in SECTIONS:
                if not isinstance(value, dict):
                    raise XbarcError(f"{key} must be a table ([{key}])", where=path, hint=HINT)
                for field_name, field_value in value.items():
                    values[(key, field_name)] = (field_value, origin)
            else:
                known = ", ".join(["base", "encoding", "tile", *SECTIONS])
                raise XbarcError(
                    f"unknown hardware key {key!r}", where=path, hint=f"the keys are {known}"
                )
    return values, str(chain[-1][1])


def build_hardware_values(values: Values, where: str) -> Hardware:
    """The chip from checked values (see read_hardware_file)."""
    if "tile" not in values:
        raise XbarcError(
            "the chip has no tile types", where=where, hint="add [[tile]] tables or a base"
        )
    tiles, tiles_origin = values["tile"]
    tile_types = check_tiles(tiles, tiles_origin)
    parts: dict[str, Any] = {}
    if "encoding" in values:
        encoding, origin = values["encoding"]
        if encoding not in SIGNED_ENCODINGS:
            raise XbarcError(
                f"encoding = {encoding!r}: unknown signed encoding",
                where=origin,
                hint=f"use {' or '.join(SIGNED_ENCODINGS)}",
            )
        parts["encoding"] = encoding
    for section, spec in SECTIONS.items():
        known = {f.name: f for f in fields(spec)}
        checked = {}
        for key, (value, origin) in values.items():
            if not isinstance(key, tuple) or key[0] != section:
                continue
            name = key[1]
            if name not in known:
                raise XbarcError(
                    f"{section}.{name}: unknown field",
                    where=origin,
                    hint=f"{section} fields: {', '.join(known)}",
                )
            try:
                checked[name] = checked_value(section, name, value, known[name].default)
            except XbarcError as error:
                raise error.at(origin) from None
            problem = field_problem(section, name, checked[name])
            if problem:
                raise XbarcError(f"{section}.{name} = {value!r}: {problem}", where=origin)
        parts[section] = spec(**checked)
    hardware = Hardware(tuple(tile_types), **parts)
    problem = chip_problem(hardware)
    if problem:
        raise XbarcError(problem, where=where)
    return hardware


def check_tiles(tiles: object, origin: str) -> list[TileType]:
    """The [[tile]] tables as tile types, each field checked."""
    if not isinstance(tiles, list) or not tiles or not all(isinstance(t, dict) for t in tiles):
        raise XbarcError(
            "tile must be a list of [[tile]] tables", where=origin, hint="see xbarc/hw/isaac.toml"
        )
    if len(tiles) > MAX_TILE_TYPES:
        raise XbarcError(f"more than {MAX_TILE_TYPES} tile types", where=origin)
    result = []
    for index, table in enumerate(tiles):
        unknown = sorted(set(table) - set(TILE_FIELDS))
        if unknown:
            raise XbarcError(
                f"tile {index + 1}: unknown field {unknown[0]!r}",
                where=origin,
                hint=f"tile fields: {', '.join(TILE_FIELDS)}",
            )
        sizes = {}
        for name, limit in (("rows", MAX_TILE_DIM), ("cols", MAX_TILE_DIM), ("count", MAX_TILES)):
            if name not in table:
                raise XbarcError(f"tile {index + 1}: {name} is missing", where=origin)
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise XbarcError(
                    f"tile {index + 1}: {name} = {value!r}: expected a whole number from 1 to "
                    f"{limit}",
                    where=origin,
                )
            sizes[name] = value
        name = table.get("name", tile_type_name(sizes["rows"], sizes["cols"]))
        if not isinstance(name, str) or not name:
            raise XbarcError(f"tile {index + 1}: name must be a text", where=origin)
        try:
            result.append(TileType(name, sizes["rows"], sizes["cols"], sizes["count"]))
        except XbarcError as error:
            raise error.at(origin) from None
    names = [t.name for t in result]
    if len(set(names)) != len(names):
        raise XbarcError("two tile types share a name", where=origin, hint="name each one")
    return result


def checked_value(section: str, name: str, value: object, default: object) -> object:
    """`value` as the type of the field (whose default is `default`), or an error."""
    label = f"{section}.{name} = {value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise XbarcError(f"{label}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise XbarcError(f"{label}: expected a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise XbarcError(f"{label}: expected a number")
        if not math.isfinite(value):
            raise XbarcError(f"{label}: expected a finite number")
        return float(value)
    if not isinstance(value, str):
        raise XbarcError(f"{label}: expected a text")
    return value
