"""Sparse mapping and squeeze-out: compaction only removes zero cells, so with a lossless
ADC every mapping gives the same bits; on pruned networks it saves tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_models import parse, random, save
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import IndexTable
from xbarc.report import report
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import noise_settings

DIGITS = Path(__file__).parent / "fixtures" / "digits"
MATMUL = """
mm (float[4,40] x) => (float y)
{
  y = MatMul (x, w)
}
"""


def pipeline(mapping: str, tile: int, group_cols: int, encoding: str = "differential") -> str:
    return (
        f"quantize{{weight-bits=8,cell-bits=2,encoding={encoding}}},"
        f"tile{{rows={tile},cols={tile},mapping={mapping},group-cols={group_cols}}},"
        "allocate{tiles=6}"
    )


def tiles_of(program) -> int:
    return len({block.vtile for block in program.blocks})


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("tile, group_cols", [(8, 1), (8, 3), (16, 8), (16, 16)])
def test_mappings_compute_the_same_bits_with_a_lossless_adc(sparsity, tile, group_cols, tmp_path):
    rng = np.random.default_rng(int(sparsity * 10) + tile + group_cols)
    weights = random((40, 24), 3)
    weights[rng.random(weights.shape) < sparsity] = 0.0
    weights[:, 5] = 0.0  # an empty column
    weights[7] = 0.0  # an empty row
    path = save(parse(MATMUL, {"w": weights}), tmp_path)
    feeds = {"x": random((4, 40), 4)}
    exact = noise_settings("quant", adc_bits="exact")
    results, programs = {}, {}
    for mapping in ("dense", "sparse", "squeeze"):
        options = CompileOptions(pipeline=pipeline(mapping, tile, group_cols))
        programs[mapping] = program = compile_onnx(path, options)
        results[mapping] = Executor(program, exact).run(feeds)["y"]
    np.testing.assert_array_equal(results["sparse"], results["dense"])
    np.testing.assert_array_equal(results["squeeze"], results["dense"])
    assert any(isinstance(b.rows, IndexTable) for b in programs["sparse"].blocks)
    cells = {m: sum(len(b.rows) * len(b.cols) for b in p.blocks) for m, p in programs.items()}
    assert cells["squeeze"] < cells["sparse"] < cells["dense"]
    # a lossy ADC sees different sums per conversion: the results may differ, and do here
    lossy = noise_settings("quant", adc_bits=4)
    dense = Executor(programs["dense"], lossy).run(feeds)["y"]
    assert not np.array_equal(Executor(programs["squeeze"], lossy).run(feeds)["y"], dense)


def compile_digits(name: str, tile: int, mapping: str, extra: str = "", cell_bits: int = 2):
    options = CompileOptions(
        input_shapes={"x": (1, 1, 8, 8)},
        pipeline=f"quantize{{weight-bits=8,cell-bits={cell_bits}}},tile{{rows={tile},cols={tile},"
        f"mapping={mapping},group-cols=8{extra}}},allocate{{tiles=4096}}",
    )
    return compile_onnx(DIGITS / f"{name}.onnx", options)


@pytest.mark.parametrize("tile", [32, 128])
def test_sparse_mapping_halves_the_tiles_of_the_pruned_lenet(tile):
    dense = tiles_of(compile_digits("lenet_p90", tile, "dense"))
    sparse = tiles_of(compile_digits("lenet_p90", tile, "sparse"))
    assert sparse <= dense / 2


@pytest.mark.parametrize("cell_bits", [1, 2])
@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet", "mobilenet"])
def test_squeeze_out_saves_tiles_of_every_trained_fixture(name, cell_bits):
    sliced = tiles_of(compile_digits(name, 32, "dense", cell_bits=cell_bits))
    squeezed = tiles_of(compile_digits(name, 32, "squeeze", cell_bits=cell_bits))
    assert squeezed < sliced


def test_bad_mapping_options(tmp_path):
    path = save(parse(MATMUL, {"w": random((40, 24), 3)}), tmp_path)
    for text, message in [
        ("quantize,tile{mapping=scattered},allocate", "unknown mapping 'scattered'"),
        ("quantize,tile{mapping=sparse,group-cols=0},allocate", "group-cols must be at least 1"),
        (pipeline("sparse", 8, 4, encoding="offset"), "uses offset encoding"),
        ("quantize,tile{mapping=sparse,pack=tight},allocate", "unknown packing 'tight'"),
        ("quantize,tile{mapping=sparse,reorder=maybe},allocate", "must be bool, got 'maybe'"),
    ]:
        with pytest.raises(XbarcError, match=message):
            compile_onnx(path, CompileOptions(pipeline=text))


def test_compare_mappings(tmp_path, capsys):
    from xbarc.cli import main

    model = str(DIGITS / "lenet_p90.onnx")
    arguments = ["compile", model, "--input-shape", "x=1x1x8x8", "--tile-size", "32x32"]
    out = str(tmp_path / "lenet.xbar")
    assert main([*arguments, "--group-cols", "8", "--compare-mappings", "-o", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("differs from "))
    table = {line[:25].strip(): line[25:].split() for line in lines[header + 1 :]}
    assert list(table) == [
        "(written)",
        "sparse mapping",
        "squeezed",
        "1-bit cells",
        "packed per layer",
    ]
    # mapping, cell bits, packing: each row differs from the written one in what it names
    assert [row[:3] for row in table.values()] == [
        ["dense", "2", "off"],
        ["sparse", "2", "off"],
        ["squeeze", "2", "off"],
        ["dense", "1", "off"],
        ["dense", "2", "layer"],
    ]
    crossbars = {name: int(row[5]) for name, row in table.items()}
    assert crossbars["squeezed"] < crossbars["sparse mapping"]
    assert crossbars["1-bit cells"] > crossbars["(written)"] > crossbars["packed per layer"]
    dense = compile_digits("lenet_p90", 32, "dense")
    assert crossbars["(written)"] == tiles_of(dense)
    status = main([*arguments, "--compare-mappings", "--pipeline", "quantize,tile,allocate"])
    assert status == 1 and "builds its own pipelines" in capsys.readouterr().err


def test_max_ones_keeps_the_nearest_level_with_few_one_bits():
    from xbarc.passes.quantize import with_few_ones

    levels = np.arange(-127, 128).astype(np.int8)
    for m in (1, 2, 3, 7):
        got = with_few_ones(levels, m, 8)
        allowed = [v for v in range(128) if bin(v).count("1") <= m]
        for level, value in zip(levels.tolist(), got.tolist(), strict=True):
            assert bin(abs(value)).count("1") <= m and np.sign(value) == np.sign(level)
            best = min(abs(abs(level) - a) for a in allowed)
            assert abs(abs(level) - abs(value)) == best
    np.testing.assert_array_equal(with_few_ones(levels, 7, 8), levels)  # all bits: as is


def test_max_ones_trades_weight_error_for_crossbars(tmp_path):
    from xbarc.passes.quantize import weight_error

    def compiled(extra: str):
        options = CompileOptions(
            input_shapes={"x": (1, 1, 8, 8)},
            pipeline=f"quantize{{weight-bits=8,cell-bits=1{extra}}},"
            "tile{rows=32,cols=32,mapping=squeeze,group-cols=8},allocate{tiles=4096}",
        )
        return compile_onnx(DIGITS / "resnet.onnx", options)

    plain, three, two = compiled(""), compiled(",max-ones=3"), compiled(",max-ones=2")
    assert weight_error(plain) < weight_error(three) < weight_error(two)
    assert tiles_of(two) < tiles_of(three) < tiles_of(plain)
    path = save(parse(MATMUL, {"w": random((40, 24), 3)}), tmp_path)
    bad = [
        (",max-ones=0", "max-ones must be between 1 and 7"),
        (",max-ones=8", "max-ones must be between 1 and 7"),
        (",max-ones=2,encoding=offset", "needs differential encoding"),
    ]
    for extra, message in bad:
        with pytest.raises(XbarcError, match=message):
            compile_onnx(
                path, CompileOptions(pipeline=f"quantize{{weight-bits=8{extra}}},tile,allocate")
            )


@pytest.mark.parametrize("name", ["lenet_p90", "mlp_p80"])
def test_every_mapping_and_packing_of_a_pruned_fixture_gives_the_same_bits(name):
    with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as data:
        feeds = {"x": data["x"][:32]}
    exact = noise_settings("quant", adc_bits="exact")
    outputs = {}
    for cell_bits, mapping, extra in [
        (2, "dense", ""),
        (2, "dense", ",pack=layer"),
        (2, "sparse", ",group-cols=8"),
        (2, "sparse", ",group-cols=4,pack=model"),
        (1, "dense", ""),
        (1, "squeeze", ",group-cols=8"),
        (1, "squeeze", ",pack=model"),
        (1, "squeeze", ",group-cols=2,pack=off"),
        (1, "squeeze", ",group-cols=4,reorder=true"),
        (2, "sparse", ",group-cols=8,reorder=true,pack=model"),
        (1, "squeeze", ",pack=auto"),
        (2, "dense", ",pack=auto"),
    ]:
        options = CompileOptions(
            input_shapes={"x": (1, 1, 8, 8)},
            pipeline=f"quantize{{weight-bits=8,cell-bits={cell_bits}}},"
            f"tile{{rows=32,cols=32,mapping={mapping}{extra}}},allocate{{tiles=16}}",
        )
        program = compile_onnx(DIGITS / f"{name}.onnx", options)
        outputs[(cell_bits, mapping, extra)] = Executor(program, exact).run(feeds)
    reference = next(iter(outputs.values()))
    for variant, result in outputs.items():
        for key, value in result.items():
            np.testing.assert_array_equal(value, reference[key], err_msg=str(variant))


def test_first_fit_finds_the_first_bin_with_room():
    from xbarc.passes.tiling.packing import FirstFit

    rng = np.random.default_rng(5)
    bins = FirstFit()
    capacities: list[int] = []
    for _ in range(400):
        if not capacities or rng.random() < 0.3:
            capacities.append(int(rng.integers(0, 64)))
            assert bins.append(capacities[-1]) == len(capacities) - 1
        else:
            index = int(rng.integers(len(capacities)))
            capacities[index] = int(rng.integers(0, 64))
            bins.set(index, capacities[index])
        need = int(rng.integers(1, 70))
        expected = next((i for i, c in enumerate(capacities) if c >= need), None)
        assert bins.first(need) == expected


@pytest.mark.parametrize("pack", ["off", "layer", "model"])
def test_packed_blocks_stay_inside_their_tiles_and_never_overlap(pack):
    program = compile_digits("resnet_p80", 32, "squeeze", extra=f",pack={pack}")
    cells: dict[int, np.ndarray] = {}
    for block in program.blocks:
        grid = cells.setdefault(block.vtile, np.zeros((32, 32), dtype=int))
        rows = slice(block.row_offset, block.row_offset + len(block.rows))
        cols = slice(block.col_offset, block.col_offset + len(block.cols))
        assert rows.stop <= 32 and cols.stop <= 32
        grid[rows, cols] += 1
    assert max(grid.max() for grid in cells.values()) == 1
    arrays_on = {}
    for block in program.blocks:
        arrays_on.setdefault(block.vtile, set()).add(block.array)
    shared = sum(len(names) > 1 for names in arrays_on.values())
    if pack == "off":
        assert len(cells) == len(program.blocks)
    assert (shared > 0) == (pack == "model")


def test_packing_trades_tiles_for_cycles(tmp_path):
    from xbarc.report import report

    summaries = {
        pack: report(compile_digits("resnet_p90", 32, "squeeze", extra=f",pack={pack}"))
        for pack in ("off", "layer", "model")
    }
    assert summaries["model"].vtiles <= summaries["layer"].vtiles < summaries["off"].vtiles
    assert summaries["off"].vtiles == summaries["off"].blocks
    assert summaries["off"].cycles == summaries["off"].cycles_unpacked
    assert summaries["layer"].cycles > summaries["layer"].cycles_unpacked
    assert summaries["layer"].cycles_unpacked == summaries["off"].cycles


def test_default_group_cols_narrow_only_as_far_as_the_chip_needs(tmp_path, capsys):
    from xbarc.cli import main

    def compiled(tiles: int, group_cols: str = ""):
        options = CompileOptions(
            tiles=tiles,  # the chip the tile pass chooses the column groups for
            input_shapes={"x": (1, 1, 8, 8)},
            # one scale per tensor: the bit planes these choices were measured on
            pipeline="quantize{weight-bits=8,cell-bits=1,scale=tensor},"
            f"tile{{rows=32,cols=32,mapping=squeeze{group_cols}}},allocate",
        )
        return compile_onnx(DIGITS / "lenet_p90.onnx", options)

    roomy, tight, hopeless = compiled(4096), compiled(12), compiled(2)
    assert {a.group_cols for a in roomy.arrays} == {32}
    assert min(a.group_cols for a in tight.arrays) < 32
    assert tiles_of(tight) <= 12 < tiles_of(roomy)
    assert len(tight.phases) == 1 and len(hopeless.phases) > 1
    # reprogrammed whatever the groups: close to the fewest crossbars, not the widest groups
    narrowest = compiled(2, ",group-cols=1")
    assert tiles_of(hopeless) <= 1.1 * tiles_of(narrowest) < tiles_of(roomy) / 2
    # a pipeline's allocate{tiles=N} is the budget the tile pass plans for, too
    budgeted = compile_onnx(
        DIGITS / "lenet_p90.onnx",
        CompileOptions(
            tiles=4096,
            input_shapes={"x": (1, 1, 8, 8)},
            pipeline="quantize{weight-bits=8,cell-bits=1,scale=tensor},"
            "tile{rows=32,cols=32,mapping=squeeze},allocate{tiles=12}",
        ),
    )
    assert [a.group_cols for a in budgeted.arrays] == [a.group_cols for a in tight.arrays]
    assert budgeted.hardware.tile_count == 12 and len(budgeted.phases) == 1
    model = str(DIGITS / "lenet_p90.onnx")
    out = str(tmp_path / "lenet.xbar")
    arguments = ["compile", model, "--input-shape", "x=1x1x8x8", "--tile-size", "32x32"]
    assert main([*arguments, "--mapping", "squeeze", "--tiles", "12", "-o", out]) == 0
    printed = capsys.readouterr().out
    assert "column groups: 32 columns in" in printed and "fits 12 tiles in one phase" in printed
    assert main(["inspect", out]) == 0
    inspected = capsys.readouterr().out
    assert "col group" in inspected and "index-table entries" in inspected
    assert "with a tile per block they would take" in inspected


def test_reordering_groups_columns_that_use_the_same_rows(tmp_path):
    from xbarc.passes.tiling.compaction import similar_columns

    # columns 0, 2, 4, 6 use rows 0-9, columns 1, 3, 5, 7 rows 10-19
    weights = np.zeros((20, 8), dtype=np.float32)
    weights[:10, 0::2] = random((10, 4), 1)
    weights[10:, 1::2] = random((10, 4), 2)
    order = similar_columns(weights != 0, 4)
    assert sorted(order[:4]) in ([0, 2, 4, 6], [1, 3, 5, 7])
    assert sorted(order.tolist()) == list(range(8))
    path = save(parse(MATMUL.replace("float[4,40]", "float[4,20]"), {"w": weights}), tmp_path)
    feeds = {"x": random((4, 20), 4)}
    exact = noise_settings("quant", adc_bits="exact")
    cells, outputs = {}, {}
    for reorder in ("false", "true"):
        pipeline = (
            "quantize{weight-bits=8,cell-bits=2},"
            f"tile{{rows=32,cols=32,mapping=sparse,group-cols=4,reorder={reorder}}},allocate"
        )
        program = compile_onnx(path, CompileOptions(pipeline=pipeline))
        cells[reorder] = sum(block.cells for block in program.blocks)
        outputs[reorder] = Executor(program, exact).run(feeds)["y"]
    assert cells["true"] == cells["false"] // 2  # each group keeps 10 rows, not 20
    np.testing.assert_array_equal(outputs["true"], outputs["false"])


def test_auto_packing_packs_only_the_layers_the_chip_needs_packed(tmp_path, capsys):
    from xbarc.cli import main

    def compiled(tiles: int, pack: str):
        options = CompileOptions(
            input_shapes={"x": (1, 1, 8, 8)},
            # one scale per tensor: the bit planes these figures were measured on
            pipeline="quantize{weight-bits=8,cell-bits=1,scale=tensor},"
            f"tile{{rows=64,cols=64,mapping=squeeze,pack={pack}}},allocate{{tiles={tiles}}}",
        )
        return report(compile_onnx(DIGITS / "resnet_p90.onnx", options))

    roomy = compiled(4096, "auto")  # fits unpacked: every block on a tile of its own
    assert roomy.blocks == roomy.vtiles and roomy.cycles == compiled(4096, "off").cycles
    layer = compiled(64, "layer")
    auto = compiled(64, "auto")  # fits, but not unpacked: some layers packed, not all
    assert compiled(64, "off").phases > 1 and auto.phases == 1 and auto.vtiles <= 64
    shared = [r.blocks > r.vtiles for r in auto.layers]
    assert any(shared) and not all(shared)
    assert layer.cycles > auto.cycles > roomy.cycles
    hopeless = compiled(8, "auto")  # cannot fit in one phase: packed as pack=layer packs
    packed = compiled(8, "layer")
    assert (hopeless.vtiles, hopeless.cycles) == (packed.vtiles, packed.cycles)
    arguments = ["compile", str(DIGITS / "resnet_p90.onnx"), "--input-shape", "x=1x1x8x8"]
    arguments += ["--tile-size", "64x64", "--cell-bits", "1", "--mapping", "squeeze"]
    out = str(tmp_path / "resnet.xbar")
    assert main([*arguments, "--tiles", "64", "--pack", "auto", "-o", out]) == 0
    printed = capsys.readouterr().out
    assert f"packing: {sum(shared)} of 9 layers share tiles" in printed
    assert "only where needed to fit 64 tiles in one phase" in printed


def test_inspect_per_tile_shows_what_each_virtual_tile_holds(tmp_path, capsys):
    import json

    from xbarc.cli import main

    out = str(tmp_path / "lenet.xbar")
    arguments = ["compile", str(DIGITS / "lenet_p90.onnx"), "--input-shape", "x=1x1x8x8"]
    arguments += ["--tile-size", "32x32", "--tiles", "12", "--mapping", "squeeze"]
    assert main([*arguments, "--pack", "model", "-o", out]) == 0
    capsys.readouterr()
    from xbarc.ir.io import load_program

    program = load_program(out)
    assert main(["inspect", out, "--tiles", "--json"]) == 0
    tiles = json.loads(capsys.readouterr().out)
    assert [t["vtile"] for t in tiles] == sorted({b.vtile for b in program.blocks})
    for tile in tiles:
        held = [b for b in program.blocks if b.vtile == tile["vtile"]]
        assert tile["blocks"] == len(held) == sum(a["blocks"] for a in tile["arrays"])
        assert tile["cells_used"] == sum(len(b.rows) * len(b.cols) for b in held)
        writes = [
            {"phase": p.index, "tile": w.tile}
            for p in program.phases
            for w in p.writes
            if w.vtile == tile["vtile"]
        ]
        assert tile["placements"] == writes
    assert any(len(t["arrays"]) > 1 for t in tiles)  # packed across layers
    assert main(["inspect", out, "--tiles"]) == 0
    assert "holding blocks of several layers" in capsys.readouterr().out
    # the map of a 32x32 tile draws a character per cell: each block's label fills its cells
    vtile = tiles[0]["vtile"]
    assert main(["inspect", out, "--tile", f"v{vtile}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    grid = [line.strip() for line in lines[1:33]]
    legend = lines[33:]
    held = [b for b in program.blocks if b.vtile == vtile]
    assert len(grid) == 32 and all(len(row) == 32 for row in grid) and len(legend) == len(held)
    for entry, block in zip(legend, held, strict=True):
        label = entry.split()[0]
        assert f"b{block.index} " in entry
        assert sum(row.count(label) for row in grid) == len(block.rows) * len(block.cols)
        assert grid[block.row_offset][block.col_offset] == label
    assert main(["inspect", out, "--tile", "v999"]) == 1
    assert "has no virtual tile v999" in capsys.readouterr().err
    assert main(["inspect", out, "--tile", "x"]) == 1
    assert "is not a virtual tile" in capsys.readouterr().err
