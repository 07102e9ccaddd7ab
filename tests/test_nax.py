"""Per-layer tile sizes (NAX): chips of several tile types through tile, allocate, the
runtime and the cost model; the nax pass's tables, error proxy and search; the command
line's options and errors; inspect's view."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.onnx_models import save
from tests.test_runtime import models, quant_layer_reference
from xbarc.cli import main
from xbarc.compiler import (
    CompileOptions,
    compile_onnx,
    default_pipeline,
    guard_uniform,
    retiled,
    uniform_tile_sizes,
)
from xbarc.cost import program_cost, used_tiles_area_mm2
from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware, TileType, make_hardware
from xbarc.ir.geometry import layer_patches
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.verifier import verify
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.passes.nax import Nax
from xbarc.passes.naxsel.proxy import ErrorShape, NoiseNumbers, error_terms
from xbarc.passes.naxsel.search import select, totals
from xbarc.passes.naxsel.tables import (
    LayerCosts,
    WriteModel,
    fixed_costs,
    layer_costs,
    layer_shapes,
)
from xbarc.report import format_report, report
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import noise_settings

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"
SIZES = ((4, 4), (8, 8), (16, 16))
DIGITS_SIZES = ((32, 32), (64, 64), (128, 128), (256, 256))
QUANTIZE = "quantize{weight-bits=8,cell-bits=2}"


def chip(sizes=SIZES, count: int = 1000) -> Hardware:
    types = tuple(TileType(f"t{r}x{c}", r, c, count) for r, c in sizes)
    return replace(make_hardware(count), tile_types=types)


def mixed(model, tmp_path, sizes=SIZES, tiles: int = 1000):
    """`model` quantized on a chip of `sizes`, its arrays dealt the tile types in turn,
    then tiled and allocated: a program whose layers sit on different tile sizes."""
    path = save(model, tmp_path, "model.onnx")
    options = CompileOptions(tiles=tiles, tile_sizes=sizes, pipeline=QUANTIZE)
    program = compile_onnx(path, options)
    names = [t.name for t in program.hardware.tile_types]
    arrays = tuple(
        replace(array, tile_type=names[index % len(names)])
        for index, array in enumerate(program.arrays)
    )
    program = replace(program, arrays=arrays)
    return run_pipeline(program, parse_pipeline(f"tile,allocate{{tiles={tiles}}}"))


# --- chips of several tile types --------------------------------------------------------


@pytest.mark.parametrize("adc_bits", [0, 8, 4])
@pytest.mark.parametrize("model_name", ["cnn", "matmul", "conv transpose"])
def test_mixed_sizes_run_bit_exactly_in_quant(model_name, adc_bits, tmp_path):
    """Each layer on its own tile size: quant equals the numpy reference, block by block,
    each read's ADC full scale from the rows its block drives."""
    model, feeds = models()[model_name]
    program = mixed(model, tmp_path)
    types = {block.tile_type for block in program.blocks}
    if len(program.arrays) > 1:
        assert len(types) > 1
    executor = Executor(program, noise_settings("quant", adc_bits=adc_bits or "exact"))
    values = executor.run_all(feeds)
    for layer in program.layers():
        want = quant_layer_reference(program, layer, values[layer.input], adc_bits)
        np.testing.assert_array_equal(values[layer.output], want, err_msg=layer.name)


def test_a_layer_on_a_size_reads_as_at_that_size_alone(tmp_path):
    """In quant, a layer's output on a mixed chip is bit for bit its output on a chip of
    its tile size only."""
    model, feeds = models()["cnn"]
    program = mixed(model, tmp_path)
    settings = noise_settings("quant", adc_bits=6)
    values = Executor(program, settings).run_all(feeds)
    path = save(model, tmp_path, "alone.onnx")
    for layer in program.layers():
        array = program.weights_of(layer.name)
        tile = program.hardware.tile_type(array.tile_type)
        options = CompileOptions(tiles=1000, tile_rows=tile.rows, tile_cols=tile.cols)
        alone = compile_onnx(path, replace(options, pipeline=f"{QUANTIZE},tile,allocate"))
        got = Executor(alone, settings).run_layer(alone.layer(layer.name), values[layer.input])
        np.testing.assert_array_equal(values[layer.output], got)


def test_tile_places_each_array_on_its_type_and_allocate_counts_per_type(tmp_path):
    model, _ = models()["cnn"]
    program = mixed(model, tmp_path, tiles=2)
    hardware = program.hardware
    assert [t.count for t in hardware.tile_types] == [2, 2, 2]
    for block in program.blocks:
        assert block.tile_type == program.array(block.array).tile_type
    vtiles = sorted({block.vtile for block in program.blocks})
    assert vtiles == list(range(len(vtiles)))  # numbered across the types
    placed = {block.vtile: block.tile_type for block in program.blocks}
    for phase in program.phases:
        assert len(phase.writes) <= 6
        for write in phase.writes:  # each vtile on a tile of its own type
            assert hardware.tile_type_of(write.tile).name == placed[write.vtile]
    assert len(program.phases) > 1  # two tiles of each type do not hold the model


def test_a_cycle_lasts_its_tile_types_cycle(tmp_path):
    """The cost model charges a cycle its own tile types' cycle time: a slower type
    slows only the layers on it."""
    model, _ = models()["cnn"]
    program = mixed(model, tmp_path)
    patches = {
        layer.name: layer_patches(layer, program.value_types()) for layer in program.layers()
    }
    base = program_cost(program, patches)
    slow = replace(program.hardware.cost, adc_rate_gsps=program.hardware.cost.adc_rate_gsps)
    first = program.hardware.tile_types[0]
    # a type whose ADCs serve more columns than it has: its cycle is the ADC's, not longer
    narrower = replace(program.hardware, adc=replace(program.hardware.adc, cols_per_adc=256))
    slower = program_cost(replace(program, hardware=replace(narrower, cost=slow)), patches)
    on_first = {
        array.layer for array in program.arrays if array.tile_type == first.name and array.layer
    }
    for before, after in zip(base.layers, slower.layers, strict=True):
        assert after.latency_ns == pytest.approx(2 * before.latency_ns)  # 256 / 128 columns
    assert on_first  # the mix has layers on the first type


def test_used_area_counts_the_written_tiles_of_each_type(tmp_path):
    """Used area on a mixed chip: the tiles the phases write, each with the periphery of
    its own type, and the rest of what the program occupies, which no tile type
    changes."""
    model, _ = models()["cnn"]
    program = mixed(model, tmp_path)
    hardware = program.hardware
    summary = report(program)
    written = {write.tile for phase in program.phases for write in phase.writes}
    assert len({hardware.tile_type_of(t).name for t in written}) > 1
    tiles_mm2 = sum(tile_area(hardware, hardware.tile_type_of(t)) for t in written)
    assert used_tiles_area_mm2(program) == pytest.approx(tiles_mm2, rel=1e-12)
    rest = summary.used_area_mm2 - tiles_mm2
    assert rest > 0
    assert summary.used_area_mm2 < summary.area_mm2  # a fraction of a chip of 3000 tiles
    assert summary.edap_used == pytest.approx(summary.edp * summary.used_area_mm2)


def tile_area(hardware, tile_type) -> float:
    from xbarc.hardware import unit_costs

    return unit_costs(hardware, tile_type).tile_area_um2 * 1e-6


# --- the IR -----------------------------------------------------------------------------


def test_tile_type_round_trips_and_the_verifier_checks_it(tmp_path):
    model, _ = models()["matmul"]
    program = mixed(model, tmp_path)
    text = print_program(program)
    assert "tile_type=t4x4" in text
    assert parse_program(text, program.store).program == program
    bad = replace(program, arrays=(replace(program.arrays[0], tile_type="t5x5"),))
    with pytest.raises(XbarcError, match="tile_type=t5x5 is not a tile type"):
        verify(bad)
    moved = replace(program, arrays=(replace(program.arrays[0], tile_type="t16x16"),))
    with pytest.raises(XbarcError, match="has tile_type=t16x16"):
        verify(moved)


# --- the tables, the proxy, the search --------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (128, 128), (256, 256)])
@pytest.mark.parametrize("fixture", ["resnet", "mobilenet"])
def test_tables_count_what_the_cost_model_charges(fixture, size):
    """The pass's analytic tables give each layer the tiles, energy and latency the cost
    model charges the compiled program; with the program's fixed part, the used area
    (within a scale multiplier's rounding)."""
    options = CompileOptions(
        tiles=4096, tile_rows=size[0], tile_cols=size[1], input_shapes={"x": (1, 1, 8, 8)}
    )
    program = compile_onnx(DIGITS / f"{fixture}.onnx", options)
    summary = report(program)
    patches = {
        layer.name: layer_patches(layer, program.value_types()) for layer in program.layers()
    }
    charged = program_cost(program, patches)
    cost = {layer.name: layer for layer in charged.layers}
    tile_type = program.hardware.tile_types[0]
    by_layer = {layer.name: layer for layer in summary.layers}
    shapes = layer_shapes(program)
    area = fixed_costs(program, shapes).area_um2
    for shape in shapes:
        layer = program.array(shape.name).layer
        figures = layer_costs(shape, program.hardware, tile_type)
        assert figures.tiles == by_layer[layer].tiles
        assert figures.energy_pj == pytest.approx(cost[layer].energy_pj, rel=1e-9)
        assert figures.latency_ns == pytest.approx(cost[layer].latency_ns, rel=1e-9)
        area += figures.area_um2
    multiplier_mm2 = program.hardware.cost.scale_multiplier_area_um2 * 1e-6
    assert area * 1e-6 == pytest.approx(charged.used_area_mm2, abs=multiplier_mm2)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 2048),
    cols=st.integers(1, 512),
    cell_bits=st.integers(1, 4),
    density=st.floats(0.01, 1.0),
    nonzero=st.floats(0.05, 1.0),
    wire=st.floats(0.0, 10.0),
)
def test_proxy_grows_with_rows(rows, cols, cell_bits, density, nonzero, wire):
    """The ADC and IR drop terms never fall as the tile's rows grow (square tiles 32 to
    1024), nor does the total without read and output noise (which fewer partial sums
    and coarser ADC steps can lower)."""
    hardware = make_hardware(1)
    slices = tuple((shift, cell_bits, nonzero) for shift in range(0, 7, cell_bits))
    shape = ErrorShape("a", 1, rows, cols, slices + slices, level_power=rows * 100.0)
    numbers = NoiseNumbers(
        read_sigma=0.0, output_noise=0.0, wire_resistance=wire, input_density=density
    )
    previous = None
    for size in (32, 64, 128, 256, 512, 1024):
        terms = error_terms(shape, hardware, TileType("t", size, size, 1), numbers)
        if previous is not None:
            assert terms.adc >= previous.adc * (1 - 1e-12)
            assert terms.ir_drop >= previous.ir_drop * (1 - 1e-12)
            assert terms.total(numbers) >= previous.total(numbers) * (1 - 1e-12)
        previous = terms


def test_output_noise_accumulates_over_row_blocks():
    hardware = make_hardware(1)
    shape = ErrorShape("a", 1, 1024, 64, ((0, 2, 0.5), (2, 2, 0.5)), level_power=1e4)
    numbers = NoiseNumbers(read_sigma=0.0, output_noise=0.05, input_density=1.0)
    noise = [
        error_terms(shape, hardware, TileType("t", size, size, 1), numbers).noise
        for size in (32, 128, 1024)
    ]
    assert noise[0] > noise[1] > noise[2]
    assert noise[0] / noise[2] == pytest.approx(32, rel=0.01)  # 32 reads against one


def random_tables(seed: int, layers: int, types: int):
    rng = np.random.default_rng(seed)
    costs = [
        [
            LayerCosts(
                int(rng.integers(1, 5)),
                float(rng.uniform(1, 10)),
                float(rng.uniform(1, 10)),
                float(rng.uniform(1, 10)),
            )
            for _ in range(types)
        ]
        for _ in range(layers)
    ]
    errors = [[float(rng.uniform(0.1, 1)) for _ in range(types)] for _ in range(layers)]
    return costs, errors


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("budget", [0.0, 0.1, 0.5, 100.0])
def test_search_keeps_the_bound_and_beats_every_uniform_choice(seed, budget):
    """The choice meets the error bound, is no worse than any uniform choice within it,
    and is a local optimum: no single layer's move lowers the EDAP within the bound; on
    these small tables, within 20 % of the brute-force optimum."""
    costs, errors = random_tables(seed, layers=5, types=3)
    capacities = [1000] * 3
    selection = select(costs, errors, capacities, budget)
    assert selection.totals.error <= selection.bound * (1 + 1e-9)
    for uniform in selection.uniform:
        if uniform.error <= selection.bound:
            assert selection.totals.edap <= uniform.edap * (1 + 1e-9)
    choice = list(selection.choice)
    for layer, t in product(range(5), range(3)):
        moved = choice.copy()
        moved[layer] = t
        trial = totals(moved, costs, errors)
        if trial.error <= selection.bound:
            assert trial.edap >= selection.totals.edap * (1 - 1e-9)
    best = min(
        (totals(c, costs, errors) for c in product(range(3), repeat=5)),
        key=lambda t: t.edap if t.error <= selection.bound * (1 + 1e-12) else np.inf,
    )
    assert selection.totals.edap <= 1.2 * best.edap


def test_search_respects_tile_counts():
    costs, errors = random_tables(3, layers=6, types=2)
    free = select(costs, errors, [10**6, 10**6], 100.0)
    used = sum(costs[layer][t].tiles for layer, t in enumerate(free.choice) if t == 1)
    assert used > 0
    capped = select(costs, errors, [10**6, used - 1], 100.0)
    used_capped = sum(costs[layer][t].tiles for layer, t in enumerate(capped.choice) if t == 1)
    assert used_capped <= used - 1
    assert capped.totals.edap >= free.totals.edap


@pytest.mark.parametrize("seed", range(12))
def test_search_prefers_a_mix_that_fits_the_tile_counts(seed):
    """No uniform choice fits the counts but some mix does: the search finds a fitting
    mix (brute force says whether one exists within the bound) and charges a mix beyond
    the counts its writes; on a chip where nothing fits, it still keeps the bound."""
    costs, errors = random_tables(seed, layers=6, types=3)
    writes = WriteModel(energy_pj=50.0, row_ns=1.0, tile_area_um2=(1.0, 1.0, 1.0))
    needs = [sum(row[t].tiles for row in costs) for t in range(3)]
    capacities = [max(1, n // 2) for n in needs]  # no uniform choice fits
    selection = select(costs, errors, capacities, 100.0, writes)
    assert all(u.excess > 0 and u.write_energy_pj == 50.0 for u in selection.uniform)
    fits = [
        choice
        for choice in product(range(3), repeat=6)
        if all(
            sum(costs[layer][t].tiles for layer, t in enumerate(choice) if t == kind) <= cap
            for kind, cap in enumerate(capacities)
        )
    ]
    if fits:
        assert selection.totals.excess == 0 and selection.totals.write_energy_pj == 0.0
        best = min(totals(c, costs, errors).edap for c in fits)
        assert selection.totals.edap <= 1.2 * best
    tiny = select(costs, errors, [1, 1, 1], 0.1, writes)
    assert tiny.totals.excess > 0 and tiny.totals.error <= tiny.bound * (1 + 1e-9)
    assert tiny.totals.edap <= min(u.edap for u in tiny.uniform if u.error <= tiny.bound)


def test_selection_is_deterministic_and_fast_enough_to_repeat():
    options = CompileOptions(
        tiles=4096, tile_sizes=DIGITS_SIZES, input_shapes={"x": (1, 1, 8, 8)}, pipeline=QUANTIZE
    )
    program = compile_onnx(DIGITS / "resnet.onnx", options)
    first = Nax().select(program)
    again = Nax().select(compile_onnx(DIGITS / "resnet.onnx", options))
    assert first == again
    assert Nax().apply(program) == Nax().apply(program)
    assert first.totals.error <= first.bound


# --- the compiler and the command line --------------------------------------------------


def test_default_pipeline_with_several_sizes_runs_nax_with_the_profiles_noise():
    options = CompileOptions(tiles=64, tile_sizes=((32, 32), (64, 64)), nax_budget=0.5)
    pipeline = default_pipeline(options)
    assert "nax{budget=0.5,read-sigma=0.01,output-noise=0.04,wire-resistance=0}" in pipeline
    assert pipeline.endswith(",tile{mapping=dense},allocate{tiles=64}")
    pcm = default_pipeline(replace(options, nax_noise="quant"))
    assert "read-sigma=0,output-noise=0" in pcm
    one = default_pipeline(CompileOptions())
    assert "nax" not in one


def test_compile_with_several_sizes_gives_layers_several_types():
    options = CompileOptions(
        tiles=4096, tile_sizes=DIGITS_SIZES, input_shapes={"x": (1, 1, 8, 8)}, nax_budget=100
    )
    program = compile_onnx(DIGITS / "resnet.onnx", options)
    kinds = {block.tile_type for block in program.blocks}
    assert len(kinds) > 1
    summary = report(program)
    uniform = [report(retiled(program, t.name)) for t in program.hardware.tile_types]
    assert summary.edap_used < min(u.edap_used for u in uniform)


def nax_stages(fixture: str, tiles: int):
    """A digits fixture on a chip of the four sizes with `tiles` of each: the compiler's
    nax pass, the quantized program it takes, and the passes after it."""
    options = CompileOptions(tiles=tiles, tile_sizes=DIGITS_SIZES, input_shapes={"x": (1, 1, 8, 8)})
    passes = parse_pipeline(default_pipeline(options)).passes
    at = next(index for index, p in enumerate(passes) if isinstance(p, Nax))
    quantized = run_pipeline(
        compile_onnx(DIGITS / f"{fixture}.onnx", options, emit="graph"), passes[:at]
    )
    return options, passes[at], quantized, passes[at + 1 :]


@pytest.mark.parametrize("tiles", [16, 64, 128, 4096])
@pytest.mark.parametrize("fixture", ["resnet", "lenet", "mlp", "mobilenet"])
def test_nax_never_loses_to_a_uniform_size_within_the_budget(fixture, tiles):
    """The written program's EDAP on used area is at most every uniform size's within
    the error budget (re-tiled by the code inspect's table uses), and the search's
    estimate of its mix agrees with the cost model: within 1 % in one phase (the tables
    leave out only the digital ops, about an add per activation: 0.1 % here), within
    15 % in several (the allocator's phases are estimated on average: where it cuts a
    layer, so reads it again, and which tiles a later layer reuses; 11 % at most on
    these fixtures). Whether the mix fits in one phase, the search knows exactly."""
    options, nax, quantized, after = nax_stages(fixture, tiles)
    program = compile_onnx(DIGITS / f"{fixture}.onnx", options)
    mine = report(program).edap_used
    uniform = {u.tile_type: u.edap_used for u in uniform_tile_sizes(program)}
    within = nax.within_budget(quantized)
    assert within and set(within) <= set(uniform)
    for name in within:
        assert mine <= uniform[name] * (1 + 1e-9), name
    selection = nax.select(quantized)
    chosen = report(run_pipeline(nax.apply(quantized), after))
    assert (selection.totals.excess == 0) == (chosen.phases == 1)
    tolerance = 0.01 if chosen.phases == 1 else 0.15
    assert selection.totals.edap * 1e-6 == pytest.approx(chosen.edap_used, rel=tolerance)


def every_layer_on_the_largest(self, program):
    """A nax pass that loses: every layer on 256x256 (resnet: 1.6x 128x128's EDAP)."""
    arrays = tuple(
        replace(a, tile_type="t256x256") if a.kind == "weights" else a for a in program.arrays
    )
    return replace(program, arrays=arrays)


def test_the_guard_writes_the_uniform_size_the_mix_loses_to(monkeypatch, tmp_path, capsys):
    """A choice that loses to a uniform size within the budget: the compiler writes the
    uniform size of least EDAP within the budget instead and says so in one line of the
    compile report; inspect's table then shows the written program as that size."""
    options, nax, quantized, after = nax_stages("resnet", 4096)
    losing = run_pipeline(every_layer_on_the_largest(nax, quantized), after)
    guarded, note = guard_uniform(losing, nax)
    uniform = {u.tile_type: u.edap_used for u in uniform_tile_sizes(losing)}
    best = min(nax.within_budget(quantized), key=lambda name: uniform[name])
    assert best != "t256x256" and uniform[best] < report(losing).edap_used
    assert {block.tile_type for block in guarded.blocks} == {best}
    assert report(guarded).edap_used == pytest.approx(uniform[best], rel=1e-12)
    assert note is not None and f"every layer on {best}" in note
    assert guard_uniform(guarded, nax) == (guarded, None)  # nothing left to beat

    monkeypatch.setattr(Nax, "apply", every_layer_on_the_largest)
    output = tmp_path / "resnet.xbar"
    status = main([
        "compile", str(DIGITS / "resnet.onnx"), "--input-shape", "x=1x1x8x8",
        "--tile-size", "32x32,64x64,128x128,256x256", "--tiles", "4096", "-o", str(output),
    ])  # fmt: skip
    assert status == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("nax:")]
    assert lines == [note]
    assert main(["inspect", str(output), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {layer["tile_type"] for layer in data["layers"]} == {best}
    assert data["totals"]["edap_used"] == pytest.approx(uniform[best], rel=1e-9)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--tile-size", "32x32,6x"], "--tile-size '6x' is not ROWSxCOLS"),
        (["--tile-size", "32x32,,64x64"], "has an empty size"),
        (["--tile-size", "32x32,32x32"], "lists 32x32 twice"),
        (["--tile-size", "32x32,64x64", "--nax-budget", "-1"], "--nax-budget -1 is out of range"),
        (["--tile-size", "32x32,64x64", "--nax-budget", "1e9"], "is out of range"),
        (["--tile-size", "32x32,64x64", "--nax-budget", "nan"], "is out of range"),
        (["--nax-budget", "0.5"], "--nax-budget weighs per-layer tile sizes"),
        (["--nax-noise", "pcm"], "--nax-noise weighs per-layer tile sizes"),
        (["--nax-check", "x.npz"], "--nax-check compares per-layer tile sizes"),
        (
            ["--tile-size", "32x32,64x64", "--pipeline", "quantize,nax,tile,allocate",
             "--nax-budget", "1"],
            "--nax-budget has no effect with --pipeline",
        ),
        (["--pipeline", "quantize,nax,tile,allocate"], "the chip has one (128x128)"),
        (["--tile-size", "32x32,64x64", "--nax-noise", "nope"], "nope"),
    ],
)  # fmt: skip
def test_bad_nax_options_are_one_line_errors(options, message, tmp_path, capsys):
    shape = ("--input-shape", "x=1x1x8x8")
    output = tmp_path / "m.xbar"
    status = main(["compile", str(DIGITS / "mlp.onnx"), *shape, "-o", str(output), *options])
    captured = capsys.readouterr()
    assert status != 0
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert message in lines[0]
    assert not output.exists()


def test_inspect_shows_each_layers_type_and_every_uniform_size(tmp_path, capsys):
    output = tmp_path / "resnet.xbar"
    status = main([
        "compile", str(DIGITS / "resnet.onnx"), "--input-shape", "x=1x1x8x8",
        "--tile-size", "32x32,64x64,128x128,256x256", "--tiles", "4096", "-o", str(output),
    ])  # fmt: skip
    assert status == 0
    capsys.readouterr()
    assert main(["inspect", str(output)]) == 0
    text = capsys.readouterr().out
    assert "tile type" in text.splitlines()[1]
    assert main(["inspect", str(output), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    types = {layer["tile_type"] for layer in data["layers"]}
    assert types <= {"t32x32", "t64x64", "t128x128", "t256x256"} and len(types) > 1
    for layer in data["layers"]:  # the column shows each layer's type
        line = next(line for line in text.splitlines() if line.startswith(layer["name"][:28]))
        assert line.split()[-1] == layer["tile_type"]
    uniform = {entry["tile_type"]: entry for entry in data["uniform"]}
    assert set(uniform) == {"t32x32", "t64x64", "t128x128", "t256x256"}
    mine = data["totals"]["edap_used"]
    assert mine == pytest.approx(
        data["totals"]["energy_uj"] * 1e6 * data["totals"]["latency_us"] * 1e3
        * data["totals"]["used_area_mm2"], rel=1e-6
    )  # fmt: skip
    for name, entry in uniform.items():
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert f"{entry['edap_used']:.4g}" in line
        assert f"{mine / entry['edap_used'] - 1:+.1%}" in line


def test_format_report_has_no_tile_type_column_on_one_type(tmp_path):
    model, _ = models()["matmul"]
    path = save(model, tmp_path, "m.onnx")
    summary = report(compile_onnx(path, CompileOptions(tiles=10)))
    assert "tile type" not in format_report(summary)
    assert summary.layers[0].tile_type == "t128x128"
