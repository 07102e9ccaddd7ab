"""`xbarc sweep`: compile and evaluate every point of a design-space grid.

    xbarc sweep model.onnx --data d.npz --labels y --grid tile=64x64,128x128 \\
        --grid mapping=dense,sparse --grid adc_bits=6,8 --seeds 5 -o study/

The grid is the product of the `--grid KNOB=V1,V2,...` options, in the order given (the
first knob varies slowest). A knob is a compile option (`tile`, `mapping`, `cell_bits`,
...), a field of the chip (`adc_bits` is `hw.adc.bits`, `dac_bits` is `hw.dac.bits`, any
`hw.SECTION.FIELD`: cost and accuracy move together, since the runtime reads the chip's
converters) or a field of the noise profile (`noise.FIELD`, as `eval --set FIELD=...`).

Every point is checked before any work starts (its compile options, its chip and its noise
settings are built, nothing is compiled), then each is compiled (programs cached under
`study/programs/` by a content hash of the model, the point's compile options, its chip
and xbarc's version), evaluated on chip seeds 0..N-1 (one seed where the profile draws
nothing), and its figures written to `study/points/<hash>.json` the moment it finishes.
The point's hash covers everything its figures depend on (program, noise settings, data,
labels, samples, seeds, reference), so a rerun of the same command skips the points that
are done (a sweep killed half way resumes) and a changed command never reuses a stale one.
At the end: `sweep.csv` (a row per point), `sweep.json` (the command, the fixed options,
every point) and, with matplotlib, `accuracy.png` and `pareto.png`.

EDAP is the cost model's `ProgramCost.edap_used`: energy x latency x the area the program
occupies (the physical tiles it writes with their periphery, its scale and combine units,
an activation buffer and one set of digital units), not the area of the whole `--tiles`
budget: programs of different tile sizes compare fairly.

Points run through `xbarc.distributed` (this process, or Dask workers): a point is a
picklable `PointTask` carrying every path and option `run_point` needs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xbarc import __version__
from xbarc import progress as xbarc_progress
from xbarc.compiler import CompileOptions
from xbarc.diagnostics import XbarcError
from xbarc.distributed import EngineOptions

if TYPE_CHECKING:
    from xbarc.hardware import Hardware
    from xbarc.ir.tile import Program
    from xbarc.runtime.noise import NoiseSettings

# --- knobs ------------------------------------------------------------------------------

MAPPINGS = ("dense", "sparse", "squeeze")
ENCODINGS = ("differential", "offset")
PACKINGS = ("off", "layer", "model", "auto")
SCALES = ("column", "tensor")
CLIPS = ("max", "percentile", "mse")

# compile-option knobs: knob -> (CompileOptions field, kind); kind is "int" (a whole
# number >= 1), "tile" (RxC), "text" (checked where it is used) or the words it takes
COMPILE_KNOBS: dict[str, tuple[str, Any]] = {
    "hw": ("hw", "text"),  # a preset or a hardware file
    "tile": ("tile_rows", "tile"),
    "tiles": ("tiles", "int"),
    "weight_bits": ("weight_bits", "int"),
    "cell_bits": ("cell_bits", "int"),
    "encoding": ("encoding", ENCODINGS),
    "scale": ("scale", SCALES),
    "clip": ("clip", CLIPS),
    "mapping": ("mapping", MAPPINGS),
    "group_cols": ("group_cols", "int"),
    "pack": ("pack", PACKINGS),
    "max_ones": ("max_ones", "int"),
}
# short names of chip fields: knob -> hardware field (section.field)
HARDWARE_KNOBS = {"adc_bits": "adc.bits", "dac_bits": "dac.bits"}
KNOBS_HINT = (
    f"knobs: {', '.join([*COMPILE_KNOBS, *HARDWARE_KNOBS])}, hw.SECTION.FIELD (e.g. "
    "hw.cost.adc_energy_pj) or noise.FIELD (e.g. noise.read_sigma)"
)


@dataclass(frozen=True, slots=True)
class Knob:
    """One `--grid KNOB=V1,V2,...`: the knob's name and its values as given."""

    name: str
    values: tuple[str, ...]

    @property
    def target(self) -> str:
        """What the knob sets: the CompileOptions field, `hw.SECTION.FIELD` or
        `noise.FIELD` (two knobs with one target set the same thing)."""
        if self.name in COMPILE_KNOBS:
            return COMPILE_KNOBS[self.name][0]
        if self.name in HARDWARE_KNOBS:
            return "hw." + HARDWARE_KNOBS[self.name]
        return self.name


def parse_grid(text: str) -> Knob:
    """`KNOB=V1,V2,...` -> Knob, checking the spelling (values are checked per point)."""
    name, equals, values_text = text.partition("=")
    name = name.strip()
    values = tuple(value.strip() for value in values_text.split(","))
    if not equals or not name or not values_text.strip():
        raise XbarcError(
            f"--grid {text!r} is not KNOB=V1,V2,...", hint="e.g. --grid tile=64x64,128x128"
        )
    if not known_knob(name):
        raise XbarcError(f"--grid {text!r}: unknown knob {name!r}", hint=KNOBS_HINT)
    if any(not value for value in values):
        raise XbarcError(
            f"--grid {text!r}: an empty value", hint="separate values by single commas"
        )
    repeated = [value for value in values if values.count(value) > 1]
    if repeated:
        raise XbarcError(
            f"--grid {text!r}: value {repeated[0]!r} is given twice", hint="give each value once"
        )
    return Knob(name, values)


def known_knob(name: str) -> bool:
    if name in COMPILE_KNOBS or name in HARDWARE_KNOBS:
        return True
    if name.startswith("hw."):
        return name.count(".") == 2 or name == "hw.encoding"
    return name.startswith("noise.") and name.count(".") == 1 and len(name) > len("noise.")


def check_knobs(knobs: Sequence[Knob]) -> None:
    """At least one knob, and no two that set the same thing."""
    if not knobs:
        raise XbarcError("a sweep needs at least one --grid KNOB=V1,V2,...", hint=KNOBS_HINT)
    seen: dict[str, str] = {}
    for knob in knobs:
        if knob.target in seen:
            first = seen[knob.target]
            also = "" if first == knob.name else f" (as {first})"
            raise XbarcError(
                f"--grid {knob.name} is given twice{also}",
                hint="give every value of a knob in one --grid KNOB=V1,V2,...",
            )
        seen[knob.target] = knob.name


def grid_points(knobs: Sequence[Knob]) -> list[tuple[tuple[str, str], ...]]:
    """Every point of the grid as ((knob, value), ...), the first knob varying slowest."""
    names = [knob.name for knob in knobs]
    return [
        tuple(zip(names, values, strict=True))
        for values in itertools.product(*(knob.values for knob in knobs))
    ]


def knob_value(name: str, text: str) -> Any:
    """The value of compile knob `name` given as `text`, checked; a one-line error naming
    the knob and the value otherwise."""
    kind = COMPILE_KNOBS[name][1]
    if kind == "text":  # checked where it is used (a hardware file: made absolute for workers)
        return str(Path(text).absolute()) if text.endswith(".toml") else text
    if kind == "tile":
        rows, sep, cols = text.lower().partition("x")
        if not sep or not rows.isascii() or not cols.isascii():
            raise XbarcError(f"--grid {name}={text}: not ROWSxCOLS", hint="e.g. tile=128x128")
        if not (rows.isdigit() and cols.isdigit()) or len(rows) > 9 or len(cols) > 9:
            raise XbarcError(f"--grid {name}={text}: not ROWSxCOLS", hint="e.g. tile=128x128")
        return int(rows), int(cols)
    if kind == "int":
        if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
            raise XbarcError(
                f"--grid {name}={text}: expected a whole number of at least 1",
                hint=f"e.g. {name}=8",
            )
        return int(text)
    if text not in kind:
        raise XbarcError(f"--grid {name}={text}: unknown {name}", hint=f"use {', '.join(kind)}")
    return text


# --- the sweep's options and its points ----------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepOptions:
    """What `xbarc sweep` takes. `base` holds the fixed compile options (every point
    starts from it), `hw_set` and `overrides` the fixed chip and noise-profile changes;
    `command` is recorded in sweep.json."""

    model: Path
    data: Path
    labels: str
    knobs: tuple[Knob, ...]
    output: Path
    seeds: int = 5
    noise: str = "rram"
    overrides: tuple[str, ...] = ()
    base: CompileOptions = field(default_factory=CompileOptions)
    reference: Path | None = None
    samples: int | None = None
    batch_size: int | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    command: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PointTask:
    """One point, with every path and option a worker needs to run it (`run_point`)."""

    index: int
    knobs: tuple[tuple[str, str], ...]
    key: str  # the point's content hash: its result file is points/<key>.json
    program_key: str  # the compiled program's: programs/<program_key>.xbar
    options: CompileOptions
    model: Path
    reference: Path
    data: Path
    labels: str
    noise: str
    overrides: tuple[str, ...]
    seeds: int  # chip instances run: seeds 0..seeds-1 (1 where the profile draws nothing)
    samples: int | None
    batch_size: int | None
    programs: Path  # the program cache folder

    @property
    def program_path(self) -> Path:
        return self.programs / f"{self.program_key}.xbar"


def point_options(
    base: CompileOptions, overrides: tuple[str, ...], point: tuple[tuple[str, str], ...]
) -> tuple[CompileOptions, tuple[str, ...]]:
    """The compile options and the noise-profile overrides of one point: `base` and the
    fixed `overrides` with the point's knobs applied (chip knobs after the fixed
    --hw-set items, noise knobs after the fixed --set items)."""
    changes: dict[str, Any] = {}
    hw_set = list(base.hw_set)
    noise = list(overrides)
    for name, text in point:
        if name == "tile":
            changes["tile_rows"], changes["tile_cols"] = knob_value(name, text)
        elif name in COMPILE_KNOBS:
            changes[COMPILE_KNOBS[name][0]] = knob_value(name, text)
        elif name in HARDWARE_KNOBS:
            hw_set.append(f"{HARDWARE_KNOBS[name]}={text}")
        elif name.startswith("hw."):
            hw_set.append(f"{name.removeprefix('hw.')}={text}")
        else:
            noise.append(f"{name.removeprefix('noise.')}={text}")
    options = dataclasses.replace(base, **changes, hw_set=tuple(hw_set))
    return options, tuple(noise)


def point_hardware(options: CompileOptions) -> Hardware:
    """The chip `compile_onnx` builds from `options` (its preset or file, the chip options
    given, the hw_set items), with the pipeline's chip options applied: what checks cell
    bits against weight bits, tile sizes and budgets, converter widths; nothing is
    compiled."""
    from xbarc.compiler import build_hardware, check_pipeline_options, default_pipeline
    from xbarc.passes.manager import parse_pipeline, target_chip

    check_pipeline_options(options)
    hardware = build_hardware(options)
    pipeline = parse_pipeline(options.pipeline or default_pipeline(options))
    for pass_object in pipeline.passes:
        check = getattr(pass_object, "check", None)
        if check is not None:
            check()
    hardware = target_chip(hardware, pipeline.passes)
    if options.mapping != "dense" and hardware.encoding == "offset":
        raise XbarcError(
            f"mapping={options.mapping} drops zero cells, but offset encoding's zero weights "
            "are not zero cells",
            hint="sweep sparse and squeeze with encoding=differential",
        )
    return hardware


def check_settings(settings: NoiseSettings, hardware: Hardware) -> None:
    """What the runtime refuses when it programs the chip, found before any work: a
    differential ADC needs a signed ADC of at least 2 bits and differential pairs."""
    resolved = settings.resolved(hardware)
    if resolved.quantized and resolved.adc_placement == "differential":
        if isinstance(resolved.adc_bits, int) and resolved.adc_bits < 2:
            raise XbarcError(
                'adc_placement = "differential" needs a signed ADC of at least 2 bits, '
                f"got {resolved.adc_bits}",
                hint="sweep adc_bits from 2, or keep adc_placement=polarity",
            )
        if hardware.encoding == "offset":
            raise XbarcError(
                'adc_placement = "differential" senses differential pairs, but the chip '
                "uses offset encoding",
                hint="sweep encoding=differential only, or keep adc_placement=polarity",
            )


def describe(point: tuple[tuple[str, str], ...]) -> str:
    """`tile=64x64 mapping=sparse`: a point as its knobs."""
    return " ".join(f"{name}={value}" for name, value in point)


def digest(document: Any) -> str:
    """A short content hash of a JSON-able document (its canonical text)."""
    text = json.dumps(document, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def file_digest(path: Path, what: str) -> str:
    from xbarc.files import read_regular_file
    from xbarc.limits import MAX_DATA_BYTES

    return hashlib.sha256(read_regular_file(path, what, MAX_DATA_BYTES)).hexdigest()


def options_document(options: CompileOptions) -> dict:
    """The compile options as JSON (paths as text, shapes as lists)."""
    document = dataclasses.asdict(options)
    document["input_shapes"] = {k: list(v) for k, v in sorted(options.input_shapes.items())}
    return document


# --- checking everything before any work ------------------------------------------------


def check_fixed(options: SweepOptions) -> None:
    """Knobs that would silently override a fixed option (or be hidden by one)."""
    names = {knob.name for knob in options.knobs}
    targets = {knob.target: knob.name for knob in options.knobs}
    if "tiles" in names and options.base.tiles is not None:
        raise XbarcError("--grid tiles and --tiles both set the tile budget", hint="drop one")
    for item in options.base.hw_set:
        key = item.partition("=")[0].strip()
        if "hw." + key in targets:
            raise XbarcError(
                f"--grid {targets['hw.' + key]} and --hw-set {item} both set {key}",
                hint="drop one",
            )
    noise_fields = {item.partition("=")[0].strip(): item for item in options.overrides}
    for knob in options.knobs:
        if knob.name.startswith("noise.") and knob.name.removeprefix("noise.") in noise_fields:
            item = noise_fields[knob.name.removeprefix("noise.")]
            raise XbarcError(f"--grid {knob.name} and --set {item} both set it", hint="drop one")
    for name, field_name in (("adc_bits", "adc_bits"), ("dac_bits", "dac_bits")):
        if targets.get(f"hw.{HARDWARE_KNOBS[name]}") and field_name in noise_fields:
            raise XbarcError(
                f"--grid {targets['hw.' + HARDWARE_KNOBS[name]]} sets the chip's converter, "
                f"but --set {noise_fields[field_name]} overrides it in the simulation, so "
                "accuracy would not follow the knob",
                hint=f"drop --set {field_name}, or sweep noise.{field_name} (the simulated "
                "converter only, not the cost)",
            )


def check_data(options: SweepOptions) -> None:
    """The data has the model's inputs and integer labels, one per sample."""
    import numpy as np

    from xbarc.evaluate import check_labels, load_data, model_inputs
    from xbarc.frontend.load import load_model

    model = load_model(options.model)
    inputs = graph_inputs(model)
    if options.reference is not None:
        reference = load_model(options.reference)
        theirs = graph_inputs(reference)
        if sorted(theirs) != sorted(inputs):
            raise XbarcError(
                f"--reference takes inputs {', '.join(theirs) or '(none)'}, the model "
                f"{', '.join(inputs) or '(none)'}",
                where=options.reference,
                hint="give the float model the swept model was made from",
            )
        outputs = {value.name for value in reference.graph.output}
        missing = [value.name for value in model.graph.output if value.name not in outputs]
        if missing:
            raise XbarcError(
                f"--reference has no output {missing[0]!r}, an output of the model",
                where=options.reference,
                hint="give the float model the swept model was made from",
            )
    data = load_data(options.data)
    model_inputs(data, inputs, options.data)
    available = len(data[inputs[0]]) if inputs else 0
    if available == 0:
        raise XbarcError("the data holds no samples", where=options.data)
    if options.labels not in data:
        raise XbarcError(
            f"--labels {options.labels}: the data has no array named {options.labels!r}",
            where=options.data,
            hint=f"its arrays are {', '.join(data)}",
        )
    check_labels(np.asarray(data[options.labels]), options.labels, available, options.data)


def graph_inputs(model) -> list[str]:
    """The names of an ONNX model's inputs that are not initializers."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name not in initializers]


def check_output_folder(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise XbarcError(f"-o {output} is a file, not a folder", hint="give a folder for the study")
    if not output.exists() and not output.parent.is_dir():
        raise XbarcError(
            f"-o {output}: folder {output.parent} does not exist", hint="create it first"
        )


def plan(options: SweepOptions) -> list[PointTask]:
    """Every point's task, each checked (compile options, chip, noise settings), and the
    engine options: any error is one line naming the point, before anything is written."""
    from xbarc import distributed
    from xbarc.evaluate import check_instances
    from xbarc.runtime.noise import SHIPPED, load_profile

    check_knobs(options.knobs)
    check_fixed(options)
    check_output_folder(options.output)
    check_instances(0, options.seeds)
    if options.samples is not None and options.samples < 1:
        raise XbarcError(f"--samples must be at least 1, got {options.samples}")
    if options.batch_size is not None and options.batch_size < 1:
        raise XbarcError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.base.calibration_data is not None or options.base.strategy != "reprogram":
        raise XbarcError("sweep compiles with the reprogram strategy only", hint="drop --strategy")
    # the fixed options alone first, so that their errors do not name a grid point
    from xbarc.compiler import build_hardware

    build_hardware(options.base)
    load_profile(options.noise, options.overrides)
    check_data(options)
    reference = options.reference or options.model
    model_hash = file_digest(options.model, "model file")
    shared = {
        "data": file_digest(options.data, "data file"),
        "reference": file_digest(reference, "reference model"),
        "labels": options.labels,
        "samples": options.samples,
        "batch_size": options.batch_size,
    }
    # a profile file by its absolute path: a worker process may run in another folder
    noise = options.noise if options.noise in SHIPPED else str(Path(options.noise).absolute())
    tasks = []
    for index, point in enumerate(grid_points(options.knobs)):
        try:
            compile_options, overrides = point_options(options.base, options.overrides, point)
            hardware = point_hardware(compile_options)
            settings = load_profile(noise, overrides)
            check_settings(settings, hardware)
        except XbarcError as error:
            raise XbarcError(
                f"grid point {describe(point)}: {error.message}", hint=error.hint
            ) from None
        program_key = digest(
            {
                "model": model_hash,
                "options": options_document(compile_options),
                "hardware": dataclasses.asdict(hardware),
                "xbarc": __version__,
            }
        )
        seeds = options.seeds if settings.cells_noisy or settings.reads_noisy else 1
        key = digest(
            {
                "program": program_key,
                "noise": dataclasses.asdict(settings),
                "seeds": seeds,
                **shared,
            }
        )
        tasks.append(
            PointTask(
                index=index,
                knobs=point,
                key=key,
                program_key=program_key,
                options=compile_options,
                # absolute: a worker process may run in another folder
                model=options.model.absolute(),
                reference=reference.absolute(),
                data=options.data.absolute(),
                labels=options.labels,
                noise=noise,
                overrides=overrides,
                seeds=seeds,
                samples=options.samples,
                batch_size=options.batch_size,
                programs=options.output.absolute() / "programs",
            )
        )
    distributed.check(options.engine)
    return tasks


# --- one point ----------------------------------------------------------------------------


def run_point(task: PointTask) -> dict:
    """Compile the point's program (or load it from the cache), evaluate it on its seeds
    and measure it: the point's record (`POINT_COLUMNS` and the per-seed figures)."""
    from xbarc.compiler import compile_onnx
    from xbarc.evaluate import evaluate
    from xbarc.ir.io import load_program, save_program, sidecar_path

    started = time.perf_counter()
    path = task.program_path
    cached = path.exists() and sidecar_path(path).exists()
    try:
        if cached:
            program = load_program(path)
        else:
            task.programs.mkdir(parents=True, exist_ok=True)
            program = compile_onnx(task.model, task.options)
            save_program(path, program)
        compile_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = evaluate(
            path,
            task.reference,
            task.data,
            noise=task.noise,
            seed=0,
            overrides=task.overrides,
            labels_key=task.labels,
            instances=task.seeds,
            samples=task.samples,
            batch_size=task.batch_size,
        )
        eval_seconds = time.perf_counter() - started
    except XbarcError as error:
        raise XbarcError(
            f"grid point {describe(task.knobs)}: {error.message}",
            where=error.where,
            hint=error.hint,
        ) from None
    accuracy = report.summary["accuracy"]
    agreement = report.summary["agreement"]
    return {
        "index": task.index,
        "key": task.key,
        "program": task.program_key,
        "knobs": dict(task.knobs),
        "seeds": task.seeds,
        "accuracy_mean": accuracy["mean"],
        "accuracy_std": accuracy["std"],
        "accuracy_min": accuracy["min"],
        "accuracy_max": accuracy["max"],
        "agreement_mean": agreement["mean"],
        "agreement_std": agreement["std"],
        "reference_accuracy": report.reference_accuracy,
        **program_figures(program),
        "samples": report.samples,
        "per_seed": [
            {"seed": row["seed"], "accuracy": row["accuracy"], "agreement": row["agreement"]}
            for row in report.instances
        ],
        "compiled": not cached,
        "compile_seconds": compile_seconds,
        "eval_seconds": eval_seconds,
    }


def program_figures(program: Program) -> dict:
    """A program's cost figures per inference, as `xbarc inspect` reports them: physical
    tiles used (crossbars), virtual tiles, phases, cycles, cell writes, energy, latency,
    the chip's area, the area the program occupies and its EDAP on that area (the cost
    model's `used_area_mm2` and `edap_used`)."""
    from xbarc.report import report

    summary = report(program)
    return {
        "crossbars": summary.tiles,
        "vtiles": summary.vtiles,
        "phases": summary.phases,
        "cycles": summary.cycles,
        "cell_writes": summary.cell_writes,
        "energy_uj": summary.energy_uj,
        "latency_us": summary.latency_us,
        "area_mm2": summary.area_mm2,
        "used_area_mm2": summary.used_area_mm2,
        "edap_used": summary.edap_used,
    }


# --- the whole sweep ---------------------------------------------------------------------

# the CSV's columns after the knobs: figures (equal whatever runs them), then timings
FIGURE_COLUMNS = (
    "accuracy_mean",
    "accuracy_std",
    "accuracy_min",
    "accuracy_max",
    "agreement_mean",
    "agreement_std",
    "reference_accuracy",
    "seeds",
    "crossbars",
    "vtiles",
    "phases",
    "cycles",
    "cell_writes",
    "energy_uj",
    "latency_us",
    "area_mm2",
    "used_area_mm2",
    "edap_used",
    "pareto",
)
TIMING_COLUMNS = ("compile_seconds", "eval_seconds")


@dataclass
class SweepResult:
    """What a sweep did: every point's record in grid order, how many were reused from
    an earlier run, the files written and the time it took."""

    options: SweepOptions
    points: list[dict]
    reused: int
    seconds: float
    written: list[Path] = field(default_factory=list)

    @property
    def computed(self) -> int:
        return len(self.points) - self.reused


def point_path(output: Path, key: str) -> Path:
    return output / "points" / f"{key}.json"


def read_point(path: Path, task: PointTask) -> dict | None:
    """The record of a finished point, or None if there is none (or it is unreadable:
    then the point runs again)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != task.key:
        return None
    return record


def write_json(path: Path, document: Any) -> None:
    from xbarc.files import write_file_atomically

    text = json.dumps(finite(document), indent=2) + "\n"
    write_file_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def run_sweep(
    options: SweepOptions, on_point: Callable[[dict, bool], object] | None = None
) -> SweepResult:
    """Check everything, then run every point not done yet (through the engine), writing
    each as it finishes; then the CSV, the JSON and the plots. `on_point(record, reused)`
    sees each point as it is known."""
    from xbarc import distributed

    started = time.perf_counter()
    tasks = plan(options)
    (options.output / "points").mkdir(parents=True, exist_ok=True)
    records: dict[int, dict] = {}
    for task in tasks:
        record = read_point(point_path(options.output, task.key), task)
        if record is not None:
            records[task.index] = {**record, "index": task.index}
            if on_point is not None:
                on_point(record, True)
    reused = len(records)
    todo = [task for task in tasks if task.index not in records]
    total = sum(task.seeds for task in tasks)
    with xbarc_progress.task("sweep", total=total, unit="chip run") as bar:
        bar.update(sum(task.seeds for task in tasks if task.index in records))
        with distributed.engine(options.engine) as pool:
            for position, record in pool.map(run_point, todo):
                task = todo[position]
                write_json(point_path(options.output, task.key), record)
                records[task.index] = record
                bar.update(task.seeds, item=describe(task.knobs))
                if on_point is not None:
                    on_point(record, False)
    points = [records[task.index] for task in tasks]
    mark_pareto(points)
    result = SweepResult(options, points, reused, time.perf_counter() - started)
    write_outputs(result)
    return result


def mark_pareto(points: list[dict]) -> None:
    """Mark each point on the Pareto front of (lower EDAP, higher mean accuracy): no other
    point is at least as good in both and better in one."""
    for point in points:
        point["pareto"] = not any(
            other["edap_used"] <= point["edap_used"]
            and (other["accuracy_mean"] or 0) >= (point["accuracy_mean"] or 0)
            and (
                other["edap_used"] < point["edap_used"]
                or (other["accuracy_mean"] or 0) > (point["accuracy_mean"] or 0)
            )
            for other in points
        )


def csv_text(knobs: Sequence[Knob], points: Sequence[dict]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*(knob.name for knob in knobs), *FIGURE_COLUMNS, *TIMING_COLUMNS])
    for point in points:
        writer.writerow(
            [
                *(point["knobs"][knob.name] for knob in knobs),
                *(cell(point[column]) for column in (*FIGURE_COLUMNS, *TIMING_COLUMNS)),
            ]
        )
    return stream.getvalue()


def cell(value: Any) -> str:
    """A CSV cell: numbers as repr (round-trips exactly), None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def sweep_document(result: SweepResult) -> dict:
    options = result.options
    return {
        "command": list(options.command),
        "xbarc": __version__,
        "model": str(options.model),
        "reference": str(options.reference or options.model),
        "data": str(options.data),
        "labels": options.labels,
        "noise": options.noise,
        "seeds": options.seeds,
        "fixed": {
            "compile": options_document(options.base),
            "set": list(options.overrides),
            "samples": options.samples,
            "batch_size": options.batch_size,
        },
        "grid": [{"knob": knob.name, "values": list(knob.values)} for knob in options.knobs],
        "edap": "ProgramCost.edap_used: energy (pJ) x latency (ns) x the area the program "
        "occupies (mm^2, used_area_mm2), not the area of the whole tile budget",
        "points_reused": result.reused,
        "points_computed": result.computed,
        "seconds": result.seconds,
        "points": result.points,
    }


def write_outputs(result: SweepResult) -> None:
    """sweep.csv, sweep.json and, when matplotlib is there, accuracy.png and pareto.png."""
    from xbarc.files import write_file_atomically

    output = result.options.output
    text = csv_text(result.options.knobs, result.points)
    write_file_atomically(output / "sweep.csv", lambda handle: handle.write(text.encode()))
    write_json(output / "sweep.json", sweep_document(result))
    result.written = [output / "sweep.csv", output / "sweep.json"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    from xbarc.plots import save_figure, sweep_accuracy_figure, sweep_pareto_figure

    knobs = [(knob.name, list(knob.values)) for knob in result.options.knobs]
    title = f"{result.options.model.name}, {result.options.noise}"
    save_figure(sweep_accuracy_figure(result.points, knobs, title), output / "accuracy.png")
    save_figure(sweep_pareto_figure(result.points, knobs, title), output / "pareto.png")
    result.written += [output / "accuracy.png", output / "pareto.png"]


def finite(value: Any) -> Any:
    """JSON has no infinity or NaN: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


# --- the summary on stdout --------------------------------------------------------------


def format_sweep(result: SweepResult) -> str:
    """The table of every point (knobs, accuracy, crossbars, cycles, energy, latency,
    EDAP; * on the Pareto front) and what was written."""
    knobs = [knob.name for knob in result.options.knobs]
    widths = [max(len(name), *(len(p["knobs"][name]) for p in result.points)) for name in knobs]
    header = " ".join(f"{name:<{width}}" for name, width in zip(knobs, widths, strict=True))
    lines = [
        f"{header} {'accuracy':>17} {'crossbars':>9} {'cycles':>10} {'energy uJ':>10} "
        f"{'latency us':>10} {'EDAP':>10}"
    ]
    for point in result.points:
        values = " ".join(
            f"{point['knobs'][name]:<{width}}" for name, width in zip(knobs, widths, strict=True)
        )
        accuracy = (
            "-"
            if point["accuracy_mean"] is None
            else f"{point['accuracy_mean']:.2%} +- {point['accuracy_std']:.2%}"
        )
        lines.append(
            f"{values} {accuracy:>17} {point['crossbars']:>9} {point['cycles']:>10} "
            f"{point['energy_uj']:>10.4g} {point['latency_us']:>10.4g} "
            f"{point['edap_used']:>10.4g}{' *' if point['pareto'] else ''}"
        )
    seeds = result.options.seeds
    lines += [
        f"{len(result.points)} points ({result.computed} computed, {result.reused} reused from "
        f"an earlier run) in {result.seconds:.1f} s; accuracy: mean +- std over chip seeds "
        f"0..{seeds - 1} ({result.options.noise}); EDAP in pJ x ns x mm^2 of the area the "
        "program occupies; * on the Pareto front (lower EDAP, higher accuracy)",
        "wrote " + ", ".join(str(path) for path in result.written),
    ]
    return "\n".join(lines)
