"""Hardware presets and files: each preset's per-operation figures against its source,
user files built on a preset, `--hw`/`--hw-set` on compile, and their errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from xbarc.cli import main
from xbarc.compiler import CompileOptions, build_hardware, compile_onnx, default_pipeline
from xbarc.cost import program_cost
from xbarc.diagnostics import XbarcError
from xbarc.hardware import (
    AdcSpec,
    CellSpec,
    CostParams,
    DacSpec,
    make_hardware,
    unit_costs,
    with_overrides,
)
from xbarc.ir.io import load_program
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.presets import PRESET_DIR, PRESETS, load_hardware

ROOT = Path(__file__).resolve().parent.parent
LENET = Path(__file__).parent / "fixtures" / "digits" / "lenet.onnx"
LENET_SHAPE = ("--input-shape", "x=1x1x8x8")


def within_1_percent(value: float, source: float) -> bool:
    return value == pytest.approx(source, rel=0.01)


# --- the presets against their sources ---------------------------------------------------


def test_isaac_is_exactly_the_default_chip():
    """compile without --hw builds the chip xbarc always built: every program, golden
    text and cost figure stays the same."""
    assert load_hardware("isaac") == make_hardware(128)
    assert build_hardware(CompileOptions()) == make_hardware(128)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_sets_every_field_itself(preset):
    """No preset figure comes silently from a default of xbarc/hardware.py."""
    table = tomllib.loads((PRESET_DIR / f"{preset}.toml").read_text())
    assert "base" not in table
    for section, spec in (("cell", CellSpec), ("dac", DacSpec), ("adc", AdcSpec)):
        assert set(table[section]) == {f.name for f in fields(spec)}, section
    assert set(table["cost"]) == {f.name for f in fields(CostParams)}
    assert "encoding" in table and table["tile"]


def test_isaac_per_operation_figures_reproduce_table_6():
    """ISAAC (Shafiee et al., ISCA 2016) Table 6, per IMA: 8 crossbars 2.4 mW and
    0.0002 mm^2, 8 ADCs 16 mW and 0.0096 mm^2 at 1.28 GS/s, 8 x 128 DACs 4 mW and
    0.00017 mm^2, 4 shift-and-add units 0.2 mW and 0.00024 mm^2; a read cycle 100 ns."""
    hardware = load_hardware("isaac")
    units = unit_costs(hardware, hardware.tile_types[0])
    assert within_1_percent(units.read_energy_pj, 2.4 / 8 * 100)  # mW x ns = pJ: 30
    assert within_1_percent(units.conversion_energy_pj, 16 / 8 / 1.28)  # 1.5625 pJ
    assert within_1_percent(units.dac_energy_pj, 4 / 1024 * 100)  # 0.39 pJ a row
    assert within_1_percent(units.shift_add_energy_pj, 0.2 / 4 / 1.28)  # 0.039 pJ
    assert within_1_percent(units.cycle_ns, 128 / 1.28)  # 100 ns
    table_6_um2 = (0.0002 / 8 + 0.0096 / 8 + 0.00017 / 1024 * 128 + 0.00024 / 4) * 1e6
    assert within_1_percent(units.tile_area_um2, table_6_um2)
    cost = hardware.cost
    # eDRAM: 17.2 pJ per 256-bit access (puma-simulator's figure for ISAAC's 64 KB),
    # 64 KB in 0.083 mm^2
    assert within_1_percent(cost.edram_access_pj, 17.2)
    assert cost.buffer_access_bits == 256
    assert within_1_percent(cost.buffer_area_um2_per_byte, 0.083e6 / 65536)
    # Horowitz, ISSCC 2014, 45 nm: 16-bit float multiply 1.1 pJ, 8-bit multiply 0.2 pJ,
    # 32-bit add 0.1 pJ; areas x (32/45)^2
    assert within_1_percent(cost.scale_multiply_energy_pj, 1.1)
    assert within_1_percent(cost.scale_multiplier_area_um2, 1640 * (32 / 45) ** 2)
    assert within_1_percent(cost.combine_multiply_energy_pj, 0.2)
    assert within_1_percent(cost.combine_add_energy_pj, 0.1)
    assert within_1_percent(cost.digital_op_energy_pj, 0.1)
    assert within_1_percent(cost.combine_lane_area_um2, (282 + 137) * (32 / 45) ** 2)
    # digital units: 2 sigmoid units 0.0006 mm^2 and a max-pool unit 0.00024 mm^2
    assert within_1_percent(cost.digital_unit_area_um2, (0.0006 + 0.00024) * 1e6)
    assert within_1_percent(cost.digital_clock_ghz, 1.2)


def test_puma_per_operation_figures_reproduce_the_puma_simulator():
    """puma-simulator (Aayush-Ankit/puma-simulator a206f75) include/constants.py: the
    simulator charges every access its dynamic power (mW) for one 1 ns cycle, in pJ."""
    hardware = load_hardware("puma")
    units = unit_costs(hardware, hardware.tile_types[0])
    cycle_ns = 1.0
    xbar_ip_pow_mw = 1.37 * 2.0 - 1.04
    assert within_1_percent(units.read_energy_pj, 100.0 * xbar_ip_pow_mw)  # 170 pJ
    assert within_1_percent(units.conversion_energy_pj, 1.8 * cycle_ns)  # adc_pow_dyn['8']
    assert within_1_percent(units.dac_energy_pj, 0.00350625 * cycle_ns)  # dac_pow_dyn['1']
    assert within_1_percent(units.shift_add_energy_pj, (0.05 - 0.005) * cycle_ns)  # sna
    assert within_1_percent(units.cycle_ns, 100.0)  # adc_lat_dict['8'], xbar_ip_lat
    # xbar 2.5e-5, ADC 0.0012, DAC 1.67e-7 (x 128 rows), S+A 0.00006 mm^2
    tile_um2 = (2.5e-5 + 0.0012 + 1.67e-7 * 128 + 0.00006) * 1e6
    assert within_1_percent(units.tile_area_um2, tile_um2)
    cost = hardware.cost
    assert within_1_percent(cost.edram_access_pj, 17.2 / 2 * 2 * cycle_ns)  # 2-cycle access
    assert within_1_percent(cost.buffer_area_um2_per_byte, 0.086e6 / 65536)
    assert within_1_percent(cost.digital_op_energy_pj, 0.373 * 32 / 45 * cycle_ns)
    assert within_1_percent(cost.scale_multiply_energy_pj, 0.795 * 32 / 45 * cycle_ns)
    assert within_1_percent(cost.digital_unit_area_um2, (0.00567 * 32 / 45 + 0.0003) * 1e6)
    assert within_1_percent(cost.digital_clock_ghz, 1 / cycle_ns)
    # a whole-array write: xbar_wr_pow x xbar_wr_lat over 128 x 128 cells and 128 rows
    write_lat_ns = 351.0 * 1000 / 32
    write_pj = 676.0 * 1000 / 32 / (328.0 * 1000 / 32) * write_lat_ns
    per_cell = cost.write_pv_iterations * cost.write_pulse_energy_pj
    assert within_1_percent(per_cell * 128 * 128, write_pj)
    per_row_ns = cost.write_pv_iterations * (cost.write_pulse_ns + cost.write_verify_ns)
    assert within_1_percent(per_row_ns * 128, write_lat_ns)
    # organisation: 128x128 crossbars of 2-bit cells, 16-bit inputs fed 1 bit at a time,
    # 8-bit ADCs; a tile of 8 cores x 2 MVMUs x 8 crossbars
    assert (hardware.tile_types[0].rows, hardware.tile_types[0].cols) == (128, 128)
    assert hardware.tile_count == 8 * 2 * (16 // 2)
    assert (hardware.cell.bits, hardware.dac.bits, hardware.dac.slice_bits) == (2, 16, 1)
    assert hardware.adc.bits == 8


# --- user files ------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_user_file_starts_from_a_preset_and_overrides_fields(tmp_path):
    text = 'base = "puma"\n[adc]\nbits = 6\n[cost]\nadc_energy_pj = 2\n'
    chip = write(tmp_path / "chip.toml", text)
    hardware = load_hardware(str(chip))
    puma = load_hardware("puma")
    assert hardware.adc.bits == 6 and hardware.cost.adc_energy_pj == 2.0
    assert hardware.dac == puma.dac and hardware.tile_types == puma.tile_types
    assert hardware.cost.xbar_read_energy_pj == puma.cost.xbar_read_energy_pj


def test_a_user_file_starts_from_another_file_beside_it_and_replaces_the_tiles(tmp_path):
    (tmp_path / "chips").mkdir()
    write(tmp_path / "chips" / "small.toml", 'base = "isaac"\n[cell]\nbits = 1\n')
    text = 'base = "small.toml"\n[[tile]]\nrows = 64\ncols = 32\ncount = 4\n'
    chip = write(tmp_path / "chips" / "tiny.toml", text)
    hardware = load_hardware(str(chip))
    assert hardware.cell.bits == 1
    assert [(t.name, t.rows, t.cols, t.count) for t in hardware.tile_types] == [
        ("t64x32", 64, 32, 4)
    ]


def test_compile_options_override_the_preset_and_hw_set_comes_last():
    options = CompileOptions(
        hw="puma", tiles=16, tile_rows=64, tile_cols=64, cell_bits=1, hw_set=("cell.bits=4",)
    )
    hardware = build_hardware(options)
    assert [(t.rows, t.cols, t.count) for t in hardware.tile_types] == [(64, 64, 16)]
    assert hardware.cell.bits == 4  # --hw-set after --cell-bits
    assert hardware.dac.bits == 16  # the rest is PUMA's
    assert build_hardware(CompileOptions(hw="puma")) == load_hardware("puma")


def test_the_default_pipeline_names_only_the_chip_options_given():
    assert default_pipeline(CompileOptions()) == (
        "quantize{weight-bits=8,scale=column},tile{mapping=dense},allocate"
    )
    given = CompileOptions(tiles=8, tile_rows=64, tile_cols=32, cell_bits=1, encoding="offset")
    assert default_pipeline(given) == (
        "quantize{weight-bits=8,cell-bits=1,scale=column,encoding=offset},"
        "tile{rows=64,cols=32,mapping=dense},allocate{tiles=8}"
    )


# --- programs on a preset --------------------------------------------------------------


def test_a_puma_program_keeps_its_chip_and_round_trips(tmp_path, capsys):
    output = tmp_path / "lenet.xbar"
    assert main(["compile", str(LENET), *LENET_SHAPE, "--hw", "puma", "-o", str(output)]) == 0
    program = load_program(output)
    assert program.hardware == load_hardware("puma")  # not re-targeted by the passes
    text = print_program(program)
    parsed = parse_program(text).program
    assert parsed.hardware == program.hardware
    assert print_program(parsed) == text
    # opt and inspect take the chip from the program
    again = tmp_path / "again.xbar"
    assert main(["opt", str(output), "--pipeline", "allocate", "-o", str(again)]) == 0
    assert load_program(again).hardware == program.hardware
    capsys.readouterr()
    assert main(["inspect", str(output)]) == 0
    assert "per forward pass" in capsys.readouterr().out


def test_puma_charges_its_own_figures():
    """The same model on puma reads each array for 16 input bits at 170 pJ: more array
    energy per MAC than isaac's 8 bits at 30 pJ."""
    shapes = {"x": (1, 1, 8, 8)}
    isaac = compile_onnx(LENET, CompileOptions(input_shapes=shapes))
    puma = compile_onnx(LENET, CompileOptions(hw="puma", input_shapes=shapes))
    from xbarc.report import report

    isaac_report, puma_report = report(isaac), report(puma)
    assert puma_report.cycles == 2 * isaac_report.cycles  # 16 input slices against 8
    patches = {layer.name: layer.patches for layer in puma_report.layers}
    reads = sum(layer.read_energy_pj for layer in program_cost(puma, patches).layers)
    isaac_reads = sum(layer.read_energy_pj for layer in program_cost(isaac, patches).layers)
    assert reads == pytest.approx(isaac_reads * 2 * 170 / 30)


def test_old_program_files_without_the_new_cost_fields_still_load():
    golden = (ROOT / "tests" / "golden" / "small_cnn.graph.xbar").read_text()
    new_fields = ("buffer_access_bits=256 digital_op_energy_pj=0.1", "input_bit_density=1.0")
    assert all(field in golden for field in new_fields)
    lines = golden.splitlines()
    old = "\n".join(line for line in lines if not any(f in line for f in new_fields)) + "\n"
    program = parse_program(old).program
    assert program.hardware.cost == CostParams()
    assert print_program(program) == golden


def test_loading_a_preset_imports_neither_onnx_nor_numba():
    code = (
        "import sys; from xbarc.presets import load_hardware; load_hardware('puma'); "
        "print(sorted(m for m in ('onnx', 'numba', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- errors ----------------------------------------------------------------------------


BAD_FILES = [
    ('base = "isaac"\n[adc]\nbitz = 6\n', "adc.bitz: unknown field"),
    ('base = "isaac"\n[adc]\nbits = "six"\n', "adc.bits = 'six': expected a whole number"),
    ('base = "isaac"\n[adc]\nbits = 0\n', "adc.bits = 0: expected 1 to 64 bits"),
    ('base = "isaac"\n[cost]\nadc_energy_pj = -1.0\n', "expected a number of at least 0"),
    ('base = "isaac"\n[cost]\nadc_rate_gsps = 0\n', "adc_rate_gsps = 0: expected a number above"),
    ('base = "isaac"\n[cost]\nadc_energy_pj = true\n', "expected a number"),
    ('base = "isaac"\n[adc]\nrange = "wide"\n', "expected one of fixed, calibrated, dynamic"),
    ('base = "isaac"\nencoding = "twos"\n', "unknown signed encoding"),
    ('base = "isaac"\n[memory]\nsize = 1\n', "unknown hardware key 'memory'"),
    ('base = "isaac"\n[dac]\nslice_bits = 9\n', "dac.slice_bits (9) is above dac.bits (8)"),
    ('base = "isaac"\n[[tile]]\nrows = 0\ncols = 8\ncount = 1\n', "tile 1: rows = 0"),
    ('base = "isaac"\n[[tile]]\nrows = 8\ncols = 8\n', "tile 1: count is missing"),
    ('base = "nosuch"\n', "unknown hardware 'nosuch'"),
    ('base = "missing.toml"\n', "no such hardware file"),
    ("[adc\nbits = 6\n", "not valid TOML"),
    ("[adc]\nbits = 6\n", "the chip has no tile types"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_hardware_file_is_a_one_line_error_naming_the_file(tmp_path, text, message):
    chip = write(tmp_path / "bad.toml", text)
    with pytest.raises(XbarcError) as caught:
        load_hardware(str(chip))
    assert message in str(caught.value)
    assert str(chip) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.toml", 'base = "b.toml"\n')
    write(tmp_path / "b.toml", 'base = "a.toml"\n')
    with pytest.raises(XbarcError, match="hardware bases form a cycle"):
        load_hardware(str(tmp_path / "a.toml"))


def test_a_bad_hardware_file_fails_compile_before_anything_is_written(tmp_path, capsys):
    chip = write(tmp_path / "bad.toml", 'base = "puma"\n[adc]\nbits = 0\n')
    output = tmp_path / "out.xbar"
    code = main(["compile", str(LENET), *LENET_SHAPE, "--hw", str(chip), "-o", str(output)])
    assert code != 0
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "adc.bits = 0" in error and str(chip) in error
    assert not output.exists()


HW_SET_ERRORS = [
    ("memory.size=1", "unknown hardware field 'memory.size'"),
    ("adc.bitz=6", "adc has no field 'bitz'"),
    ("adc.bits=six", "expected a whole number"),
    ("cost.adc_energy_pj=cheap", "expected a number"),
    ("adc.bits=0", "adc.bits=0': expected 1 to 64 bits"),
    ("cost.xbar_read_latency_ns=0", "expected a number above 0"),
    ("cost.write_pulse_energy_pj=-1", "expected a number of at least 0"),
    ("cost.input_bit_density=0", "expected a share above 0 and at most 1"),
    ("cost.input_bit_density=1.5", "expected a share above 0 and at most 1"),
    ("adc.range=wide", "expected one of fixed, calibrated, dynamic"),
    ("dac.slice_bits=9", "dac.slice_bits (9) is above dac.bits (8)"),
    ("encoding=twos", "unknown signed encoding"),
    ("adc.bits", "expected section.field=value"),
]


@pytest.mark.parametrize(("item", "message"), HW_SET_ERRORS)
def test_hw_set_errors_name_the_item(item, message):
    with pytest.raises(XbarcError) as caught:
        with_overrides(load_hardware("isaac"), [item])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_hw_set_error_on_the_command_line(tmp_path, capsys):
    output = tmp_path / "out.xbar"
    args = ["compile", str(LENET), *LENET_SHAPE, "--hw-set", "adc.bits=0", "-o", str(output)]
    assert main(args) != 0
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--hw-set 'adc.bits=0'" in error
    assert not output.exists()


def test_an_unknown_preset_names_the_presets(tmp_path, capsys):
    output = tmp_path / "out.xbar"
    assert main(["compile", str(LENET), *LENET_SHAPE, "--hw", "tpu", "-o", str(output)]) != 0
    error = capsys.readouterr().err.strip()
    assert "unknown hardware 'tpu'" in error and "isaac, puma" in error


def test_the_neurosim_vgg8_file_holds_neurosim_14s_settings():
    """benchmarks/data/neurosim_vgg8.toml: DNN+NeuroSim V1.4's release test (128x128
    subarrays, 1-bit cells, levelOutput 16 = a 4-bit ADC per 8 columns, 8-bit inputs,
    offset weights with a dummy column, a 2.2312 ns clock) on the isaac preset."""
    hardware = load_hardware(str(ROOT / "benchmarks" / "data" / "neurosim_vgg8.toml"))
    tile = hardware.tile_types[0]
    assert (tile.rows, tile.cols, hardware.cell.bits) == (128, 128, 1)
    assert (hardware.adc.bits, hardware.adc.cols_per_adc) == (4, 8)
    assert (hardware.dac.bits, hardware.dac.slice_bits, hardware.encoding) == (8, 1, "offset")
    units = unit_costs(hardware, tile)
    assert within_1_percent(units.cycle_ns, 8 * 2.2312)
    # isaac's 8-bit conversion x 22/32, halved per bit down to 4 bits
    assert within_1_percent(units.conversion_energy_pj, 1.56 * 22 / 32 / 16)
    assert hardware.cost.xbar_read_energy_pj == load_hardware("isaac").cost.xbar_read_energy_pj


def test_hardware_files_are_regular_bounded_utf8_files(tmp_path):
    from xbarc.limits import MAX_HARDWARE_FILE_BYTES

    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(XbarcError, match="is a folder, not a hardware file"):
        load_hardware(str(folder))
    big = write(tmp_path / "big.toml", "#" * (MAX_HARDWARE_FILE_BYTES + 1))
    with pytest.raises(XbarcError, match="more than xbarc reads"):
        load_hardware(str(big))
    nested = write(tmp_path / "nested.toml", "x = " + "[" * 6000 + "]" * 6000 + "\n")
    with pytest.raises(XbarcError, match="more keys, tables or arrays than a hardware file"):
        load_hardware(str(nested))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'base = "isaac"\n# caf\xe9\n')
    with pytest.raises(XbarcError, match="not UTF-8 text"):
        load_hardware(str(latin))
