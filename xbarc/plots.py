"""Pictures: how a program lands on the chip, one layer's blocks on its tiles, and the
spread of an eval over chip instances (`xbarc inspect --plot`, `xbarc eval --plot`).

The facts come from the report (`xbarc.report`: tile utilization, placements, totals);
this module only decides where each one goes on the page. Every drawing function builds
and returns a matplotlib `Figure` (tests read its artists: each tile, fill and block
patch carries a `gid` naming what it stands for), and `save_figure` writes it as a PNG
through `xbarc.files`, atomically. matplotlib is optional (`pip install -e ".[plots]"`):
it is imported inside the functions, on the Agg backend, and `require_matplotlib` says
plainly when it is missing, before anything is computed or written.

The chip picture: every physical tile a square, one panel per reprogramming phase (a
program of more than `MAX_PANELS` phases is one strip instead: a row per phase, a column
per tile). A tile is coloured by the layer it holds, its fill height the share of its
cells in use (split by layer on a tile several layers share, which is also hatched);
tiles kept from an earlier phase are faded, empty tiles light grey. The legend names the
`LEGEND_LAYERS` layers with the most cells; the rest are "other".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import ChipState, Program
from xbarc.report import ProgramReport, TileReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOTS_HINT = 'pip install -e ".[plots]"'
DPI = 100

# a qualitative palette of 12 colours told apart easily (tab10 without its grey, and three
# darker ones); grey is kept for "other", for the blocks of other layers and for empty cells
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#8c6d31",
    "#637939",
)
OTHER_COLOUR = "#9a9a9a"
OTHER_GREYS = ("#8f8f8f", "#bdbdbd")  # the layers beyond the legend's, alternating
EMPTY_COLOUR = "#eeeeee"
EDGE_COLOUR = "#555555"
LEGEND_LAYERS = len(PALETTE)  # legend entries for layers; beyond: LEGEND_LAYERS - 1 + other
KEPT_ALPHA = 0.35  # a tile kept from an earlier phase
MAX_PANELS = 6  # phases drawn as panels; more phases: one strip, a row per phase
PANELS_PER_ROW = 3
NUMBERED_TILES = 32  # print the utilization in each tile when a panel has at most this many
MAX_LAYER_PANELS = 12  # tiles drawn by the layer picture


def require_matplotlib() -> None:
    """Raise the one-line error when matplotlib is missing (before any work is done)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise XbarcError("drawing needs matplotlib", hint=PLOTS_HINT) from None


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches on the Agg canvas (no display, no pyplot
    state shared with the caller)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def pixel_size(figure: Figure) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `save_figure` writes."""
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)


def check_plot_path(path: Path, inputs: Sequence[tuple[Path | None, str]]) -> None:
    """`--plot PATH` names a .png that can be written and is none of `inputs`."""
    from xbarc.files import check_outputs

    if Path(path).suffix.lower() != ".png":
        raise XbarcError(f"--plot {path}: pictures are written as PNG", hint="give a .png path")
    check_outputs([(path, "picture")], inputs=[(p, what) for p, what in inputs if p is not None])


def save_figure(figure: Figure, path: Path) -> None:
    """Write `figure` to `path` as a PNG, all or nothing (no timestamp or version inside,
    so the same program gives the same bytes)."""
    from xbarc.files import write_file_atomically

    def write(handle) -> None:
        figure.savefig(handle, format="png", dpi=DPI, metadata={"Software": None})

    write_file_atomically(path, write)


# --- what each physical tile holds in each phase ---------------------------------------


@dataclass(frozen=True, slots=True)
class TileSlot:
    """Physical tile `tile` during phase `phase`: the virtual tile it holds (None: empty),
    whether this phase wrote it, the report of that virtual tile, and its cells per layer
    (label, cells) in the order the program places them."""

    phase: int
    tile: int
    vtile: int | None
    written: bool
    report: TileReport | None
    cells: tuple[tuple[str, int], ...]

    @property
    def utilization(self) -> float:
        return self.report.utilization if self.report is not None else 0.0


def array_labels(program: Program) -> dict[str, str]:
    """Array -> the name a picture gives it: its layer's name as `inspect` prints it, or
    `basis @NAME` for a basis array."""
    return {
        array.name: array.layer
        if array.kind == "weights" and array.layer
        else f"basis @{array.name}"
        for array in program.arrays
    }


def tile_slots(program: Program, tiles: Sequence[TileReport]) -> list[list[TileSlot]]:
    """Per phase, per physical tile, what the tile holds once the phase's writes are done
    (a tile keeps what was last written to it: `ChipState`)."""
    by_vtile = {tile.vtile: tile for tile in tiles}
    labels = array_labels(program)
    cells: dict[int, dict[str, int]] = defaultdict(dict)
    for block in program.blocks:
        label = labels[block.array]
        cells[block.vtile][label] = cells[block.vtile].get(label, 0) + block.cells
    state = ChipState()
    result = []
    for phase in program.phases:
        written = set()
        for write in phase.writes:
            state.write(write.vtile, write.tile)
            written.add(write.tile)
        row = []
        for tile in range(program.hardware.tile_count):
            vtile = state.vtile_on.get(tile)
            row.append(
                TileSlot(
                    phase=phase.index,
                    tile=tile,
                    vtile=vtile,
                    written=tile in written,
                    report=by_vtile.get(vtile) if vtile is not None else None,
                    cells=tuple(cells[vtile].items()) if vtile is not None else (),
                )
            )
        result.append(row)
    return result


def layer_colours(program: Program, result: ProgramReport) -> tuple[dict[str, str], int]:
    """Layer label -> its colour, for the layers with cells on the chip (a layer combined
    from a basis has none: its basis is drawn): up to `LEGEND_LAYERS` layers with the most
    cells take the palette's colours in order; when there are more, the
    `LEGEND_LAYERS - 1` largest do and the rest ("other") alternate between two greys in
    program order. Also: how many layers are "other"."""
    cells = {layer.name: layer.cells_used for layer in result.layers}
    labels = array_labels(program)
    for array in program.arrays:
        if array.kind == "basis":
            cells[labels[array.name]] = sum(
                block.cells for block in program.blocks if block.array == array.name
            )
    cells = {label: count for label, count in cells.items() if count}  # on the chip only
    ranked = sorted(cells, key=lambda label: -cells[label])  # stable: ties in program order
    named = ranked if len(ranked) <= LEGEND_LAYERS else ranked[: LEGEND_LAYERS - 1]
    colours = {label: PALETTE[i] for i, label in enumerate(named)}
    # the rest in two greys, alternating in program order: neighbours stay apart
    others = [label for label in cells if label not in colours]
    colours.update({label: OTHER_GREYS[i % 2] for i, label in enumerate(others)})
    return colours, len(others)


# --- the chip picture --------------------------------------------------------------------


def chip_figure(program: Program, name: str) -> Figure:
    """The chip: every physical tile in every phase, coloured by layer, filled to its
    utilization (see the module docstring)."""
    from xbarc.report import report, tile_reports

    require_matplotlib()
    check_placed(program)
    result = report(program)
    slots = tile_slots(program, tile_reports(program))
    colours, others = layer_colours(program, result)
    tile_count = program.hardware.tile_count
    if len(slots) <= MAX_PANELS:
        figure = draw_panels(slots, colours, tile_count)
    else:
        figure = draw_strip(slots, colours, tile_count)
    add_chip_legend(figure, colours, others, slots)
    figure.suptitle(chip_title(name, result), fontsize=11)
    return figure


def check_placed(program: Program) -> None:
    """A picture of the chip needs a program placed on it (phases writing tiles)."""
    if not program.phases or not program.blocks:
        raise XbarcError(
            "the program is not placed on the chip yet: no tile holds any of its weights",
            hint="draw a program compiled through the allocate pass (not --emit graph)",
        )


def chip_title(name: str, result: ProgramReport) -> str:
    phases = f"{result.phases} phase{'s' if result.phases != 1 else ''}"
    writes = "every inference" if result.writes_per_pass else "once, at deployment"
    return (
        f"{name}: {result.tiles} of {result.tile_budget} tiles ({result.tile_types}), {phases}\n"
        f"{result.utilization:.1%} of the used tiles' cells hold weights; "
        f"{result.cell_writes} cell writes, {writes}"
    )


def grid_columns(tiles: int) -> int:
    """Columns of a near-square grid of `tiles` squares, wider than tall: a divisor of
    `tiles` when one lies between sqrt(tiles) and twice that (no ragged last row)."""
    root = math.isqrt(tiles)
    start = root if root * root == tiles else root + 1
    for columns in range(start, 2 * start + 1):
        if tiles % columns == 0:
            return columns
    return start


def draw_panels(slots: list[list[TileSlot]], colours: dict[str, str], tile_count: int) -> Figure:
    """One panel per phase, each a grid of the physical tiles (t0 at the top left)."""
    columns = grid_columns(tile_count)
    rows = -(-tile_count // columns)
    per_row = min(len(slots), PANELS_PER_ROW)
    panel_rows = -(-len(slots) // per_row)
    panel_width = 4.0
    panel_height = max(1.2, panel_width * rows / columns)
    figure = new_figure(per_row * panel_width + 2.6, panel_rows * (panel_height + 0.5) + 1.0)
    numbered = tile_count <= NUMBERED_TILES
    for position, row in enumerate(slots):
        axes = figure.add_subplot(panel_rows, per_row, position + 1)
        places = [(slot.tile % columns, rows - 1 - slot.tile // columns) for slot in row]
        draw_tiles(axes, row, places, PANEL_TILE, colours, edges=True)
        if numbered:
            for slot, (x, y) in zip(row, places, strict=True):
                used = f"\n{slot.utilization:.0%}" if slot.vtile is not None else ""
                middle = PANEL_TILE / 2
                axes.text(x + middle, y + middle, f"t{slot.tile}{used}", ha="center",
                          va="center", fontsize=7)  # fmt: skip
        axes.set_xlim(-0.1, columns)
        axes.set_ylim(-0.1, rows)
        axes.set_aspect("equal")
        axes.set_axis_off()
        axes.set_title(f"phase {row[0].phase}", fontsize=10)
    return figure


def draw_strip(slots: list[list[TileSlot]], colours: dict[str, str], tile_count: int) -> Figure:
    """Many phases: one axes, a row per phase (the first at the top), a column per tile."""
    phases = len(slots)
    width = min(14.0, max(6.0, 0.09 * tile_count + 1.5))
    height = min(11.0, max(3.0, 0.09 * phases + 1.5))
    figure = new_figure(width + 2.6, height + 0.8)
    axes = figure.add_subplot(1, 1, 1)
    every = [slot for row in slots for slot in row]
    places = [(slot.tile, phases - 1 - y) for y, row in enumerate(slots) for slot in row]
    draw_tiles(axes, every, places, 1.0, colours, edges=False)
    axes.set_xlim(0, tile_count)
    axes.set_ylim(0, phases)
    axes.set_xlabel("physical tile")
    axes.set_ylabel("phase (the first at the top)")
    ticks = strip_ticks(phases)
    axes.set_yticks([phases - 1 - p + 0.5 for p in ticks], [str(p) for p in ticks])
    return figure


def strip_ticks(count: int) -> list[int]:
    """About ten evenly spaced tick positions over 0 .. count - 1, the last included."""
    step = max(1, round(count / 10))
    ticks = list(range(0, count, step))
    if ticks[-1] != count - 1:
        ticks.append(count - 1)
    return ticks


PANEL_TILE = 0.9  # a tile's side in a panel, where tiles are one unit apart


def draw_tiles(
    axes: Axes,
    slots: Sequence[TileSlot],
    places: Sequence[tuple[float, float]],
    size: float,
    colours: dict[str, str],
    edges: bool,
) -> None:
    """Each slot a square of side `size` with its lower left corner at its place: the
    squares in one collection (gid "tiles", in the order of `slots`), their fills from
    the bottom in another (gid "fills": a band per layer of height its share of the
    tile's cells, in the order of `slots` and then of `TileSlot.cells`; faded for a tile
    kept from an earlier phase), and the shared tiles' hatching in a third (gid "shared").
    Collections, not a patch each: ResNet-50 at 128 tiles has 12672 tiles in 99 phases."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    squares, fills, fill_colours, shared = [], [], [], []
    for slot, (x, y) in zip(slots, places, strict=True):
        squares.append(rectangle(x, y, size, size))
        if len(slot.cells) > 1:
            shared.append(squares[-1])
        if slot.report is None:
            continue
        bottom = y
        for label, cells in slot.cells:
            height = size * cells / slot.report.cells
            fills.append(rectangle(x, bottom, size, height))
            fill_colours.append(to_rgba(colours[label], 1.0 if slot.written else KEPT_ALPHA))
            bottom += height
    backgrounds = [EMPTY_COLOUR if slot.vtile is None else "white" for slot in slots]
    edge = EDGE_COLOUR if edges else "none"
    axes.add_collection(
        PolyCollection(
            squares, facecolors=backgrounds, edgecolors=edge, linewidths=0.6, gid="tiles"
        )
    )
    axes.add_collection(
        PolyCollection(fills, facecolors=fill_colours, edgecolors="none", gid="fills")
    )
    axes.add_collection(
        PolyCollection(
            shared,
            facecolors="none",
            edgecolors=EDGE_COLOUR,
            linewidths=0.6,
            hatch="///",
            gid="shared",
        )
    )


def rectangle(x: float, y: float, width: float, height: float) -> list[tuple[float, float]]:
    return [(x, y), (x + width, y), (x + width, y + height), (x, y + height)]


def add_chip_legend(
    figure: Figure, colours: dict[str, str], others: int, slots: list[list[TileSlot]]
) -> None:
    from matplotlib.patches import Patch

    named = [(label, colour) for label, colour in colours.items() if colour not in OTHER_GREYS]
    handles = [Patch(facecolor=colour, label=label) for label, colour in named]
    if others:
        handles.append(
            Patch(
                facecolor=OTHER_COLOUR, label=f"other ({others} layer{'s' if others > 1 else ''})"
            )
        )
    handles.append(Patch(facecolor=EMPTY_COLOUR, edgecolor=EDGE_COLOUR, label="empty tile"))
    if any(len(slot.cells) > 1 for row in slots for slot in row):
        handles.append(
            Patch(facecolor="white", edgecolor=EDGE_COLOUR, hatch="///", label="shared tile")
        )
    if any(slot.vtile is not None and not slot.written for row in slots for slot in row):
        handles.append(
            Patch(facecolor="#888888", alpha=KEPT_ALPHA, label="kept from a\nprevious phase")
        )
    figure.legend(
        handles=handles,
        loc="outside right center",
        fontsize=8,
        title="layer (most cells first)\nfill: share of cells used",
        title_fontsize=8,
        frameon=False,
    )


# --- one layer's blocks on its tiles ------------------------------------------------------


def layer_arrays(program: Program, layer: str) -> tuple[str, ...]:
    """The arrays layer `layer` reads (its own weights, or the basis it is combined
    from; none before quantization); an unknown name is an error listing a few known
    ones."""
    reads = program.arrays_read_by()
    if layer not in reads:
        names = list(reads)
        listed = ", ".join(names[:6]) + (f", ... ({len(names)} layers)" if len(names) > 6 else "")
        raise XbarcError(
            f"--layer {layer!r}: the program has no crossbar layer of that name",
            hint=f"its layers: {listed or 'none'} (as xbarc inspect prints them)",
        )
    return reads[layer]


def layer_figure(program: Program, layer: str, name: str) -> Figure:
    """Where the blocks of `layer`'s array sit on the cells of each virtual tile holding
    them: a rectangle per block at its row and column offsets (gid `block:INDEX`),
    coloured by the bits its slice holds, hatched for negative cells (the two polarities of
    a differential pair share a colour), labelled with the slice (and the
    copy of a basis placed several times); other layers' blocks grey."""
    from matplotlib.patches import Patch, Rectangle

    from xbarc.report import tile_reports

    require_matplotlib()
    check_placed(program)
    arrays = layer_arrays(program, layer)
    by_name = {array.name: array for array in program.arrays}
    mine = [block for block in program.blocks if block.array in arrays]
    if not mine:
        raise XbarcError(
            f"--layer {layer!r}: none of the layer's weights are on the chip",
            hint="draw a program compiled through the allocate pass (not --emit graph)",
        )
    vtiles = sorted({block.vtile for block in mine})
    drawn = vtiles[:MAX_LAYER_PANELS]
    placements = {tile.vtile: tile.placements for tile in tile_reports(program)}
    bit_ranges = sorted({(piece.shift, piece.bits) for a in arrays for piece in by_name[a].slices})
    copy_of = copy_numbers(mine)
    per_row = min(len(drawn), 4)
    panel_rows = -(-len(drawn) // per_row)
    tile_type = program.hardware.tile_type(mine[0].tile_type)
    aspect = tile_type.rows / tile_type.cols
    panel = 3.2
    figure = new_figure(per_row * panel + 2.4, panel_rows * (panel * aspect + 0.6) + 1.0)
    colour_map = figure_colormap("viridis", len(bit_ranges))
    for position, vtile in enumerate(drawn):
        axes = figure.add_subplot(panel_rows, per_row, position + 1)
        kind = program.hardware.tile_type(next(b for b in mine if b.vtile == vtile).tile_type)
        axes.add_patch(
            Rectangle((0, 0), kind.cols, kind.rows, facecolor=EMPTY_COLOUR, edgecolor=EDGE_COLOUR)
        )
        for block in program.blocks:
            if block.vtile != vtile:
                continue
            ours = block.array in arrays
            piece = by_name[block.array].slices[block.slice]
            axes.add_patch(
                Rectangle(
                    (block.col_offset, block.row_offset),
                    len(block.cols),
                    len(block.rows),
                    facecolor=(
                        colour_map(bit_ranges.index((piece.shift, piece.bits)))
                        if ours
                        else OTHER_COLOUR
                    ),
                    edgecolor="white",
                    linewidth=0.5,
                    hatch="//" if ours and piece.polarity == "-" else None,
                    gid=f"block:{block.index}",
                )
            )
            big = len(block.rows) >= kind.rows / 10 and len(block.cols) >= kind.cols / 10
            if ours and big:
                copy = f" c{copy_of[block.index]}" if by_name[block.array].copies > 1 else ""
                axes.text(
                    block.col_offset + len(block.cols) / 2,
                    block.row_offset + len(block.rows) / 2,
                    f"s{block.slice}{piece.polarity}{copy}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white",
                )
        axes.set_xlim(0, kind.cols)
        axes.set_ylim(kind.rows, 0)  # row 0 at the top, as `inspect --tile` draws it
        axes.set_aspect("equal")
        axes.tick_params(labelsize=6)
        where = ", ".join(f"t{tile} in phase {phase}" for phase, tile in placements[vtile][:2])
        more = " ..." if len(placements[vtile]) > 2 else ""
        axes.set_title(f"v{vtile} ({where}{more})", fontsize=8)
    handles = [
        Patch(facecolor=colour_map(position), label=bits_label(shift, bits))
        for position, (shift, bits) in enumerate(bit_ranges)
    ]
    handles.append(
        Patch(facecolor="white", edgecolor=EDGE_COLOUR, hatch="//", label="negative cells")
    )
    handles.append(Patch(facecolor=OTHER_COLOUR, label="other layers"))
    handles.append(Patch(facecolor=EMPTY_COLOUR, edgecolor=EDGE_COLOUR, label="unused cells"))
    figure.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    blocks_drawn = sum(1 for block in mine if block.vtile in set(drawn))
    note = (
        f"; the first {len(drawn)} of {len(vtiles)} tiles drawn ({blocks_drawn} blocks)"
        if len(drawn) < len(vtiles)
        else ""
    )
    basis = [a for a in arrays if by_name[a].kind == "basis"]
    through = f" (combined from basis @{basis[0]})" if basis else ""
    figure.suptitle(
        f"{name}: layer {layer}{through}, {len(mine)} blocks on {len(vtiles)} virtual "
        f"tile{'s' if len(vtiles) != 1 else ''} "
        f"({tile_type.rows}x{tile_type.cols} cells){note}",
        fontsize=10,
    )
    return figure


def bits_label(shift: int, bits: int) -> str:
    """The weight bits a slice holds: "bits 0-1", "bit 6"."""
    if bits == 1:
        return f"bit {shift}"
    return f"bits {shift}-{shift + bits - 1}"


def copy_numbers(blocks) -> dict[int, int]:
    """Block index -> which copy of its array it belongs to: the blocks holding the same
    cells of the same slice and group are copies 0, 1, ... in program order."""
    seen: dict[tuple, int] = defaultdict(int)
    result = {}
    for block in blocks:
        key = (block.array, block.slice, block.group, str(block.rows), str(block.cols))
        result[block.index] = seen[key]
        seen[key] += 1
    return result


def figure_colormap(name: str, count: int):
    """`count` evenly spaced colours of the colormap `name`, as a function of 0..count-1."""
    from matplotlib import colormaps

    colour_map = colormaps[name]
    return lambda index: colour_map(0.1 + 0.8 * index / max(1, count - 1))


# --- an eval over chip instances ----------------------------------------------------------


def accuracy_figure(
    instances: Sequence[Mapping[str, float | None]],
    reference_accuracy: float | None,
    title: str,
) -> Figure:
    """Accuracy (when labels were given) and top-1 agreement with the reference of each
    chip instance: one point per instance, a box over them from five instances on, their
    mean as a line; the reference's accuracy dashed. Errors when neither is known."""
    require_matplotlib()
    metrics = [
        (key, label)
        for key, label in (("accuracy", "accuracy"), ("agreement", "top-1 agreement"))
        if all(row.get(key) is not None for row in instances)
    ]
    if not metrics:
        raise XbarcError(
            "--plot: nothing to draw: no accuracy (no --labels) and no top-1 agreement "
            "(the first output is not classifier-shaped)",
            hint="give --labels KEY",
        )
    figure = new_figure(6.4, 4.4)
    axes = figure.add_subplot(1, 1, 1)
    count = len(instances)
    for position, (key, _) in enumerate(metrics):
        values = [100 * float(row[key]) for row in instances]  # type: ignore[arg-type]
        if count >= 5:
            axes.boxplot(
                values,
                positions=[position],
                widths=0.5,
                whis=(0, 100),  # whiskers at the smallest and the largest instance
                medianprops={"color": "#777777", "linewidth": 1},
            )
        offsets = [0.0] if count == 1 else [0.3 * (i / (count - 1) - 0.5) for i in range(count)]
        axes.scatter(
            [position + o for o in offsets],
            values,
            s=18,
            color=PALETTE[position],
            alpha=0.8,
            zorder=3,
            gid=f"points:{key}",
        )
        mean = sum(values) / count
        axes.hlines(
            mean,
            position - 0.3,
            position + 0.3,
            colors="black",
            linewidth=2,
            label="mean over instances" if position == 0 else "_nolegend_",
            gid=f"mean:{key}",
        )
        axes.annotate(f"{mean:.1f}%", (position + 0.32, mean), va="center", fontsize=8)
    if reference_accuracy is not None:
        axes.axhline(
            100 * reference_accuracy,
            color="#d62728",
            linestyle="--",
            linewidth=1,
            label=f"float model's accuracy {100 * reference_accuracy:.1f}%",
            gid="reference",
        )
    axes.set_xticks(range(len(metrics)), [label for _, label in metrics])
    axes.set_xlim(-0.6, len(metrics) - 0.4)
    axes.set_ylabel("% of samples")
    axes.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    instances_text = f"{count} chip instance{'s' if count != 1 else ''}"
    if count >= 5:
        instances_text += "; box: quartiles and median (grey), whiskers: min and max"
    if count == 1:
        instances_text += " (--seeds N draws N)"
    axes.set_title(f"{title}\n{instances_text}", fontsize=10)
    return figure


# --- xbarc sweep: accuracy against each knob, EDAP against accuracy ---------------------

LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def sweep_line_knob(knobs: Sequence[tuple[str, Sequence[str]]], swept: str) -> str | None:
    """The knob whose values get one line each in the panel of `swept`: `mapping` if it
    is swept (and is not `swept`), else the first other knob with several values."""
    others = [name for name, values in knobs if name != swept and len(values) > 1]
    if "mapping" in others:
        return "mapping"
    return others[0] if others else None


def sweep_accuracy_figure(
    points: Sequence[Mapping], knobs: Sequence[tuple[str, Sequence[str]]], title: str
) -> Figure:
    """Accuracy (mean +- std over chip seeds, error bars) against each knob with several
    values, a panel per knob: one colour per value of its line knob (`sweep_line_knob`),
    one line style per combination of the remaining knobs (each line is a set of points
    that differ in the panel's knob only)."""
    require_matplotlib()
    swept = [(name, list(values)) for name, values in knobs if len(values) > 1] or [
        (name, list(values)) for name, values in knobs
    ]
    columns = min(len(swept), 3)
    rows = -(-len(swept) // columns)
    figure = new_figure(5.2 * columns, 4.2 * rows + 0.6)
    for position, (name, values) in enumerate(swept):
        axes = figure.add_subplot(rows, columns, position + 1)
        colour_knob = sweep_line_knob(knobs, name)
        colours = {}
        if colour_knob is not None:
            colour_values = next(list(v) for k, v in knobs if k == colour_knob)
            colours = {value: PALETTE[i % len(PALETTE)] for i, value in enumerate(colour_values)}
        rest = [k for k, v in knobs if k not in (name, colour_knob) and len(v) > 1]
        lines: dict[tuple[str, ...], list[Mapping]] = defaultdict(list)
        for point in points:
            identity = tuple(point["knobs"][k] for k in (colour_knob, *rest) if k is not None)
            lines[identity].append(point)
        styles: dict[tuple[str, ...], int] = {}
        for identity, members in lines.items():
            members = sorted(members, key=lambda p: values.index(p["knobs"][name]))
            usable = [p for p in members if p["accuracy_mean"] is not None]
            if not usable:
                continue
            colour_value = identity[0] if colour_knob is not None else None
            rest_values = identity[1:] if colour_knob is not None else identity
            style = styles.setdefault(rest_values, len(styles))
            parts = [f"{colour_knob}={colour_value}"] if colour_knob is not None else []
            parts += [f"{k}={v}" for k, v in zip(rest, rest_values, strict=True)]
            bars = axes.errorbar(
                [values.index(p["knobs"][name]) for p in usable],
                [100 * p["accuracy_mean"] for p in usable],
                yerr=[100 * (p["accuracy_std"] or 0) for p in usable],
                color=colours.get(colour_value or "", PALETTE[0]),
                linestyle=LINE_STYLES[style % len(LINE_STYLES)],
                marker=MARKERS[style % len(MARKERS)],
                capsize=3,
                markersize=4,
                label=", ".join(parts) or "accuracy",
            )
            # the line through the means (the caps and bars are other artists)
            bars.lines[0].set_gid(f"line:{name}:{'|'.join(identity)}")
        axes.set_xticks(range(len(values)), values)
        axes.set_xlabel(name)
        axes.set_ylabel("accuracy % (mean +- std over chips)")
        axes.grid(alpha=0.3)
        axes.set_title(f"accuracy against {name}", fontsize=10)
        axes.legend(fontsize=6, loc="best")
    figure.suptitle(title, fontsize=11)
    return figure


def sweep_pareto_figure(
    points: Sequence[Mapping], knobs: Sequence[tuple[str, Sequence[str]]], title: str
) -> Figure:
    """EDAP (log scale) against mean accuracy, a marker per point coloured by its line
    knob's value (mapping when swept), the Pareto front (lower EDAP, higher accuracy;
    `point["pareto"]`) joined and ringed, each front point labelled with its knobs."""
    require_matplotlib()
    figure = new_figure(7.2, 5.2)
    axes = figure.add_subplot(1, 1, 1)
    names = [name for name, _ in knobs]
    colour_knob = "mapping" if "mapping" in names else (names[0] if names else None)
    colour_values = next((list(v) for k, v in knobs if k == colour_knob), [])
    usable = [p for p in points if p["accuracy_mean"] is not None and p["edap_used"] > 0]
    for i, value in enumerate(colour_values):
        members = [p for p in usable if p["knobs"][colour_knob] == value]
        axes.scatter(
            [100 * p["accuracy_mean"] for p in members],
            [p["edap_used"] for p in members],
            s=26,
            color=PALETTE[i % len(PALETTE)],
            label=f"{colour_knob}={value}",
            zorder=3,
            gid=f"points:{value}",
        )
    front = sorted((p for p in usable if p.get("pareto")), key=lambda p: p["accuracy_mean"])
    if front:
        axes.plot(
            [100 * p["accuracy_mean"] for p in front],
            [p["edap_used"] for p in front],
            color="black",
            linewidth=1,
            linestyle="--",
            marker="o",
            markersize=10,
            markerfacecolor="none",
            label="Pareto front (lower EDAP, higher accuracy)",
            zorder=4,
            gid="pareto",
        )
        right = max(p["accuracy_mean"] for p in front)
        for p in front:
            text = " ".join(f"{k}={v}" for k, v in p["knobs"].items() if k != colour_knob)
            last = p["accuracy_mean"] == right  # label the rightmost point on its left
            axes.annotate(
                text,
                (100 * p["accuracy_mean"], p["edap_used"]),
                fontsize=6,
                xytext=(-6 if last else 4, 4),
                textcoords="offset points",
                ha="right" if last else "left",
            )
    axes.set_yscale("log")
    axes.set_xlabel("accuracy % (mean over chip seeds)")
    axes.set_ylabel("EDAP, pJ x ns x mm^2 (area the program occupies)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7, loc="best")
    axes.set_title(f"{title}: EDAP against accuracy", fontsize=10)
    return figure
