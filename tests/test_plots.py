"""The pictures: `inspect --plot` (the chip), `inspect --plot --layer` (one layer's blocks)
and `eval --plot` (accuracy over chip instances).

Each picture is checked twice: the PNG the command writes (valid, of the figure's pixel
size), and the figure the same function builds, whose artists must say what the report
says: a square per physical tile per phase, fills of the report's utilization in one
colour per layer, blocks at their offsets in the program.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from xbarc import plots
from xbarc.cli import main
from xbarc.diagnostics import XbarcError
from xbarc.ir.io import load_program
from xbarc.report import report, tile_reports

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tests" / "fixtures" / "digits"
DIGITS_DATA = DIGITS / "digits_test.npz"
DIGITS_SHAPE = ["--input-shape", "x=1x1x8x8"]


def compile_digits(folder: Path, model: str, name: str, *options: str) -> Path:
    program = folder / f"{name}.xbar"
    assert main(["compile", str(DIGITS / model), *DIGITS_SHAPE, *options, "-o", str(program)]) == 0
    return program


@pytest.fixture(scope="module")
def squeezed(tmp_path_factory) -> Path:
    """The squeezed, packed digits LeNet (squeeze packs each layer's blocks by default)."""
    folder = tmp_path_factory.mktemp("squeezed")
    return compile_digits(
        folder, "lenet_p90.onnx", "lenet_p90", "--tiles", "12", "--tile-size", "32x32",
        "--mapping", "squeeze",
    )  # fmt: skip


@pytest.fixture(scope="module")
def model_packed(tmp_path_factory) -> Path:
    """The same packed across layers onto 4 tiles: one tile holds three layers."""
    folder = tmp_path_factory.mktemp("model_packed")
    return compile_digits(
        folder, "lenet_p90.onnx", "lenet_model", "--tiles", "4", "--tile-size", "32x32",
        "--mapping", "squeeze", "--pack", "model",
    )  # fmt: skip


@pytest.fixture(scope="module")
def dense_lenet(tmp_path_factory) -> Path:
    return compile_digits(tmp_path_factory.mktemp("dense"), "lenet.onnx", "lenet")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, after checking its signature, header and end."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def collection(figure, gid: str, axes_index: int = 0):
    axes = figure.axes[axes_index]
    found = [c for c in axes.collections if c.get_gid() == gid]
    assert len(found) == 1, f"one collection {gid!r} expected in axes {axes_index}"
    return found[0]


def boxes(paths) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) of each path."""
    result = []
    for path in paths:
        (x0, y0), (x1, y1) = path.vertices.min(axis=0), path.vertices.max(axis=0)
        result.append((float(x0), float(y0), float(x1), float(y1)))
    return result


def fills_by_tile(figure, axes_index: int = 0) -> dict[int, list[tuple[tuple, float]]]:
    """Physical tile (the tiles collection is in tile order) -> its fill bands as
    (RGBA, height as a share of the tile's side), bottom first."""
    squares = boxes(collection(figure, "tiles", axes_index).get_paths())
    fills = collection(figure, "fills", axes_index)
    colours = fills.get_facecolors()
    result: dict[int, list[tuple[tuple, float]]] = defaultdict(list)
    for (x0, y0, x1, y1), colour in zip(boxes(fills.get_paths()), colours, strict=True):
        inside = [
            tile
            for tile, (sx0, sy0, sx1, sy1) in enumerate(squares)
            if sx0 - 1e-9 <= x0 and x1 <= sx1 + 1e-9 and sy0 - 1e-9 <= y0 and y1 <= sy1 + 1e-9
        ]
        assert len(inside) == 1
        side = squares[inside[0]][3] - squares[inside[0]][1]
        result[inside[0]].append((tuple(np.round(colour, 6)), (y1 - y0) / side))
    return result


def layer_of_array(program) -> dict[str, str]:
    return {array.name: array.layer for array in program.arrays}


# --- the chip picture ------------------------------------------------------------------


def test_chip_picture_of_the_squeezed_packed_digits_program(squeezed, tmp_path, capsys):
    picture = tmp_path / "chip.png"
    assert main(["inspect", str(squeezed), "--plot", str(picture)]) == 0
    assert f"wrote {picture}" in capsys.readouterr().out

    program = load_program(squeezed)
    summary = report(program)
    tiles = tile_reports(program)
    assert summary.blocks > summary.vtiles  # packed: tiles hold several blocks
    figure = plots.chip_figure(program, squeezed.name)
    assert png_size(picture) == plots.pixel_size(figure)
    assert len(figure.axes) == summary.phases == 1

    # one square per physical tile, in tile order; the unwritten ones empty
    count = program.hardware.tile_count
    squares = collection(figure, "tiles")
    assert len(squares.get_paths()) == count == 12
    on_tile = {tile: report for report in tiles for _, tile in report.placements}
    assert sorted(on_tile) == list(range(10))
    fills = fills_by_tile(figure)
    assert sorted(fills) == sorted(on_tile)

    # fills: the report's utilization, one colour per layer, distinct across layers
    colour_of_layer: dict[str, set] = defaultdict(set)
    names = layer_of_array(program)
    for tile, bands in fills.items():
        held = on_tile[tile]
        assert sum(height for _, height in bands) == pytest.approx(held.utilization)
        assert len(bands) == len(held.arrays) == 1
        colour_of_layer[names[held.arrays[0][0]]].add(bands[0][0])
    assert all(len(colours) == 1 for colours in colour_of_layer.values())
    assert len({next(iter(c)) for c in colour_of_layer.values()}) == len(summary.layers) == 4
    used = sum(h.cells_used for h in on_tile.values()) / sum(h.cells for h in on_tile.values())
    assert used == pytest.approx(summary.utilization)

    # few tiles: each is numbered with its utilization
    texts = {text.get_text() for text in figure.axes[0].texts}
    for tile, held in on_tile.items():
        assert f"t{tile}\n{held.utilization:.0%}" in texts
    assert {"t10", "t11"} <= texts
    title = figure.get_suptitle()
    assert squeezed.name in title and "10 of 12 tiles" in title and "1 phase" in title
    assert f"{summary.utilization:.1%}" in title and str(summary.cell_writes) in title
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    by_cells = sorted(summary.layers, key=lambda layer: -layer.cells_used)
    assert legend[:4] == [layer.name for layer in by_cells]


def test_a_tile_shared_by_layers_is_split_and_hatched(model_packed):
    program = load_program(model_packed)
    tiles = tile_reports(program)
    shared = [tile for tile in tiles if len(tile.arrays) > 1]
    assert len(shared) == 1 and len(shared[0].arrays) == 3
    figure = plots.chip_figure(program, model_packed.name)
    (phase, tile), = shared[0].placements  # fmt: skip
    bands = fills_by_tile(figure)[tile]
    # a band per layer, its height the layer's share of the tile's cells
    names = layer_of_array(program)
    cells: dict[str, int] = defaultdict(int)
    for block in program.blocks:
        if block.vtile == shared[0].vtile:
            cells[names[block.array]] += block.cells
    assert [height for _, height in bands] == pytest.approx(
        [cells[names[array]] / shared[0].cells for array, _ in shared[0].arrays]
    )
    assert sum(height for _, height in bands) == pytest.approx(shared[0].utilization)
    assert len({colour for colour, _ in bands}) == 3
    hatched = collection(figure, "shared")
    squares = boxes(collection(figure, "tiles").get_paths())
    assert boxes(hatched.get_paths()) == [squares[tile]]
    assert hatched.get_hatch() == "///"


def test_chip_picture_of_resnet50_at_128_tiles(resnet50, tmp_path):
    """Many phases: one strip, a row per phase and a column per tile."""
    from xbarc.compiler import CompileOptions, compile_onnx

    program = compile_onnx(resnet50, CompileOptions(tiles=128))
    summary = report(program)
    tiles = tile_reports(program)
    figure = plots.chip_figure(program, "light_resnet50.xbar")
    picture = tmp_path / "resnet50.png"
    plots.save_figure(figure, picture)
    assert png_size(picture) == plots.pixel_size(figure)
    assert picture.stat().st_size < 300_000

    phases, count = summary.phases, program.hardware.tile_count
    assert phases > plots.MAX_PANELS and count == 128
    squares = collection(figure, "tiles")
    assert len(squares.get_paths()) == phases * count  # a square per tile per phase
    # the strip: phase p is the row phases - 1 - p, tile t the column t
    assert boxes(squares.get_paths())[:2] == [
        (0, phases - 1, 1, phases),
        (1, phases - 1, 2, phases),
    ]

    # the last phase: what each tile holds, by the report's placements
    last = phases - 1
    held = {}
    for tile_report in tiles:
        for phase, tile in tile_report.placements:
            if phase == last:
                held[tile] = tile_report
    fills = collection(figure, "fills")
    colours = fills.get_facecolors()
    colour_at = {}
    for (x0, y0, _, y1), colour in zip(boxes(fills.get_paths()), colours, strict=True):
        if y0 >= 0 and y1 <= 1 + 1e-9:  # the bottom row: the last phase
            colour_at.setdefault(int(round(x0)), []).append((colour, y1 - y0))
    for tile, tile_report in held.items():
        (colour, height), = colour_at[tile]  # fmt: skip
        assert colour[3] == 1.0  # written in this phase: not faded
        assert height == pytest.approx(tile_report.utilization)
    kept = set(range(count)) - set(held)
    assert kept  # the last phase writes only part of the chip
    assert all(colour_at[tile][0][0][3] == pytest.approx(plots.KEPT_ALPHA) for tile in kept)

    # legend: the 11 layers with the most cells in distinct colours, then "other"
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    by_cells = [layer.name for layer in sorted(summary.layers, key=lambda r: -r.cells_used)]
    assert legend[:11] == by_cells[:11]
    assert legend[11] == f"other ({len(summary.layers) - 11} layers)"
    colours_by_layer, others = plots.layer_colours(program, summary)
    assert others == len(summary.layers) - 11
    named = [colours_by_layer[name] for name in by_cells[:11]]
    assert len(set(named)) == 11 and not set(named) & set(plots.OTHER_GREYS)
    assert {colours_by_layer[name] for name in by_cells[11:]} == set(plots.OTHER_GREYS)


# --- one layer's blocks ------------------------------------------------------------------


def test_layer_picture_draws_the_blocks_where_the_program_puts_them(model_packed, tmp_path, capsys):
    picture = tmp_path / "layer.png"
    assert main(["inspect", str(model_packed), "--plot", str(picture), "--layer", "/7/Gemm"]) == 0
    program = load_program(model_packed)
    figure = plots.layer_figure(program, "/7/Gemm", model_packed.name)
    assert png_size(picture) == plots.pixel_size(figure)

    array = program.weights_of("/7/Gemm")
    assert array is not None
    vtiles = sorted({block.vtile for block in program.blocks if block.array == array.name})
    assert len(vtiles) == 2  # v0 shared with /0/Conv and /3/Conv, v1 its own
    drawn = {}
    for axes in figure.axes:
        for patch in axes.patches:
            gid = patch.get_gid()
            if gid and gid.startswith("block:"):
                drawn[int(gid.split(":")[1])] = (axes, patch)
    expected = [block for block in program.blocks if block.vtile in vtiles]
    assert sorted(drawn) == [block.index for block in expected]
    colours_of_bits: dict[tuple[int, int], set] = defaultdict(set)
    for block in expected:
        axes, patch = drawn[block.index]
        assert axes.get_title().startswith(f"v{block.vtile} ")
        assert patch.get_xy() == (block.col_offset, block.row_offset)
        assert patch.get_width() == len(block.cols)
        assert patch.get_height() == len(block.rows)
        grey = patch.get_facecolor()[:3] == pytest.approx((0x9A / 255,) * 3)
        assert grey == (block.array != array.name)
        if block.array == array.name:
            piece = array.slices[block.slice]
            colours_of_bits[piece.shift, piece.bits].add(patch.get_facecolor())
            negative = piece.polarity == "-"
            assert (patch.get_hatch() == "//") == negative
    # one colour per range of weight bits (both polarities), distinct across ranges
    assert all(len(colours) == 1 for colours in colours_of_bits.values())
    assert len({next(iter(c)) for c in colours_of_bits.values()}) == len(colours_of_bits) == 4
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend[:4] == ["bits 0-1", "bits 2-3", "bits 4-5", "bit 6"]


def test_a_combined_layer_is_drawn_on_its_basis_copies(tmp_path):
    """BasisN: a combined layer's weights are the basis's blocks, placed in copies."""
    path = compile_digits(
        tmp_path, "lenet.onnx", "basis", "--strategy", "basis", "--tiles", "16",
        "--tile-size", "32x32", "--basis-copies", "2",
    )  # fmt: skip
    program = load_program(path)
    (basis,) = [array for array in program.arrays if array.kind == "basis"]
    assert basis.copies == 2
    figure = plots.layer_figure(program, "/3/Conv", path.name)
    assert f"combined from basis @{basis.name}" in figure.get_suptitle()
    blocks = [block for block in program.blocks if block.array == basis.name]
    drawn = sorted({block.vtile for block in blocks})[: plots.MAX_LAYER_PANELS]
    gids = {p.get_gid() for axes in figure.axes for p in axes.patches if p.get_gid()}
    assert gids == {f"block:{block.index}" for block in blocks if block.vtile in drawn}
    labels = {text.get_text() for axes in figure.axes for text in axes.texts}
    copies = {label.split()[-1] for label in labels}
    assert copies == {"c0", "c1"}  # both copies of the basis, told apart
    chip = plots.chip_figure(program, path.name)
    legend = [text.get_text() for text in chip.legends[0].get_texts()]
    assert legend[0] == f"basis @{basis.name}"
    kept = [layer.name for layer in report(program).layers if not layer.combined]
    assert legend[1:] == [*kept, "empty tile"]  # the combined layers have no cells


def test_unknown_layer_lists_names_and_writes_nothing(squeezed, tmp_path, capsys):
    picture = tmp_path / "layer.png"
    assert main(["inspect", str(squeezed), "--plot", str(picture), "--layer", "conv9"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--layer 'conv9'" in error and "/0/Conv, /3/Conv, /7/Gemm, /9/Gemm" in error
    assert not picture.exists()


@pytest.mark.parametrize("layer", [None, "/0/Conv"])
def test_a_program_not_placed_on_the_chip_is_refused(tmp_path, capsys, layer):
    program = compile_digits(tmp_path, "lenet.onnx", "graph", "--emit", "graph")
    picture = tmp_path / "chip.png"
    extra = [] if layer is None else ["--layer", layer]
    assert main(["inspect", str(program), "--plot", str(picture), *extra]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--emit graph" in error
    assert not picture.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--layer", "/0/Conv"], "--layer names the layer --plot draws"),
        (["--plot", "chip.png", "--json"], "--json does not go with it"),
        (["--plot", "chip.png", "--tile", "v0"], "--tile does not go with it"),
        (["--plot", "chip.jpg"], "pictures are written as PNG"),
        (["--plot", "missing/chip.png"], "the folder"),
    ],
)
def test_plot_option_errors(squeezed, tmp_path, capsys, monkeypatch, extra, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", str(squeezed), *extra]) == 1
    error = capsys.readouterr().err
    assert needle in error and error.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_plot_never_overwrites_the_program(squeezed, tmp_path, capsys):
    """A .png path that is the program (a symbolic link to it) is refused, untouched."""
    link = tmp_path / "chip.png"
    link.symlink_to(squeezed)
    before = squeezed.read_bytes()
    assert main(["inspect", str(squeezed), "--plot", str(link)]) == 1
    assert "it is the program" in capsys.readouterr().err
    assert squeezed.read_bytes() == before


# --- eval over chip instances ------------------------------------------------------------


def eval_args(program: Path, *extra: str) -> list[str]:
    return [
        "eval", str(program), "--reference", str(DIGITS / "lenet.onnx"), "--data",
        str(DIGITS_DATA), "--labels", "y", "--batch-size", "360", *extra,
    ]  # fmt: skip


def test_eval_plot_draws_each_instance_the_mean_and_the_reference(dense_lenet, tmp_path, capsys):
    picture = tmp_path / "acc.png"
    args = eval_args(
        dense_lenet, "--noise", "rram", "--seeds", "5", "--json", "--plot", str(picture)
    )
    assert main(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout stays one JSON document
    assert f"wrote {picture}" in captured.err
    instances = result["instances"]
    assert len(instances) == 5
    figure = plots.accuracy_figure(instances, result["reference_accuracy"], "lenet")
    assert png_size(picture) == plots.pixel_size(figure)

    axes = figure.axes[0]
    for key in ("accuracy", "agreement"):
        (points,) = [c for c in axes.collections if c.get_gid() == f"points:{key}"]
        values = [100 * row[key] for row in instances]
        assert sorted(points.get_offsets()[:, 1]) == pytest.approx(sorted(values))
        (mean,) = [c for c in axes.collections if c.get_gid() == f"mean:{key}"]
        assert mean.get_segments()[0][0][1] == pytest.approx(np.mean(values))
        assert np.mean(values) == pytest.approx(100 * result["summary"][key]["mean"])
    (reference,) = [line for line in axes.lines if line.get_gid() == "reference"]
    assert reference.get_ydata()[0] == pytest.approx(100 * result["reference_accuracy"])
    assert [t.get_text() for t in axes.get_xticklabels()] == ["accuracy", "top-1 agreement"]


def test_eval_plot_of_one_instance_draws_one_point(dense_lenet, tmp_path, capsys):
    """Without --seeds: one chip instance, one point per measure, no box."""
    picture = tmp_path / "acc.png"
    assert main(eval_args(dense_lenet, "--noise", "rram", "--json", "--plot", str(picture))) == 0
    result = json.loads(capsys.readouterr().out)
    (instance,) = result["instances"]
    figure = plots.accuracy_figure(result["instances"], result["reference_accuracy"], "one")
    assert png_size(picture) == plots.pixel_size(figure)
    axes = figure.axes[0]
    (points,) = [c for c in axes.collections if c.get_gid() == "points:accuracy"]
    assert points.get_offsets().tolist() == [[0.0, pytest.approx(100 * instance["accuracy"])]]
    assert not [line for line in axes.lines if line.get_gid() != "reference"]  # no box
    assert "1 chip instance (--seeds N draws N)" in axes.get_title()


def test_eval_plot_with_nothing_to_draw():
    with pytest.raises(XbarcError, match="nothing to draw"):
        plots.accuracy_figure([{"accuracy": None, "agreement": None}], None, "x")


# --- without matplotlib ----------------------------------------------------------------------

NO_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; "  # `import matplotlib` raises ImportError
    "from xbarc.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("command", ["chip", "layer", "eval"])
def test_without_matplotlib_one_line_and_nothing_written(squeezed, dense_lenet, tmp_path, command):
    picture = tmp_path / "out.png"
    args = {
        "chip": ["inspect", str(squeezed), "--plot", str(picture)],
        "layer": ["inspect", str(squeezed), "--plot", str(picture), "--layer", "/0/Conv"],
        "eval": eval_args(dense_lenet, "--plot", str(picture)),
    }[command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", NO_MATPLOTLIB, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == ('xbarc: error: drawing needs matplotlib (pip install -e ".[plots]")\n')
    assert done.stdout == ""  # the eval did not run
    assert not picture.exists()
