"""`xbarc eval`: run a compiled program and its float model side by side on a data set.

Per output: the largest absolute error, the relative error (largest absolute error over
the reference's largest magnitude), the signal-to-noise ratio in dB, top-1 agreement of
the last axis with the reference, and, given labels, the accuracy of both. In quantized
profiles, per crossbar layer, the bits of the ADC its reads use (`adc_report.py`), with a
warning and the fix where they use fewer than half.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xbarc import progress as xbarc_progress
from xbarc.diagnostics import XbarcError

if TYPE_CHECKING:
    from xbarc.adc_report import AdcUse
    from xbarc.distributed import EngineOptions
    from xbarc.ir.tile import Program
    from xbarc.runtime.noise import NoiseSettings
    from xbarc.runtime.read_spread import ReadSpread
    from xbarc.session import InferenceSession


@dataclass
class OutputStats:
    """Running sums for one output; `finish` turns them into the reported figures."""

    name: str
    max_abs_error: float = 0.0
    max_reference: float = 0.0
    signal: float = 0.0
    noise: float = 0.0
    agree: int = 0
    compared: int = 0

    def add(self, got: np.ndarray, want: np.ndarray) -> None:
        self.include(batch_figures(got, want))

    def include(self, batch: BatchFigures) -> None:
        """Add one batch's figures (in batch order: the sums are floats, so the order in
        which batches are added is the order of their additions, bit for bit)."""
        self.max_abs_error = max(self.max_abs_error, batch.max_abs_error)
        self.max_reference = max(self.max_reference, batch.max_reference)
        self.signal += batch.signal
        self.noise += batch.noise
        self.agree += batch.agree
        self.compared += batch.compared

    def finish(self) -> dict:
        if self.noise == 0:
            snr = math.inf
        elif self.signal == 0:
            snr = -math.inf
        else:
            snr = 10 * math.log10(self.signal / self.noise)
        relative = self.max_abs_error / self.max_reference if self.max_reference else 0.0
        return {
            "output": self.name,
            "max_abs_error": self.max_abs_error,
            "relative_error": relative,
            "snr_db": snr,
            "top1_agreement": self.agree / self.compared if self.compared else None,
        }


@dataclass(frozen=True, slots=True)
class BatchFigures:
    """What one batch of one output adds to its `OutputStats` (computed where the batch
    ran, on a worker or here, and added here in batch order)."""

    max_abs_error: float
    max_reference: float
    signal: float
    noise: float
    agree: int
    compared: int


def batch_figures(got: np.ndarray, want: np.ndarray) -> BatchFigures:
    difference = got.astype(np.float64) - want.astype(np.float64)
    agree = compared = 0
    if got.ndim >= 2 and got.shape[-1] >= 2:
        agree = int((got.argmax(-1) == want.argmax(-1)).sum())
        compared = int(np.prod(got.shape[:-1]))
    return BatchFigures(
        float(np.abs(difference).max(initial=0)),
        float(np.abs(want).max(initial=0)),
        float(np.square(want, dtype=np.float64).sum()),
        float(np.square(difference).sum()),
        agree,
        compared,
    )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The program's figures on one batch: per output, and the labelled samples it
    classified right (None without labels)."""

    figures: tuple[BatchFigures, ...]
    correct: int | None
    count: int


@dataclass
class EvalReport:
    """What `xbarc eval` found. With several chip instances, `outputs` pools the errors of
    all of them, `instances` has one row per instance and `accuracy` and `agreement` are
    their means (`summary`: mean, std, min and max over instances)."""

    program: str
    reference: str
    noise: str
    samples: int
    batch_size: int
    outputs: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the noise profile's effective fields
    seeds: dict = field(default_factory=dict)  # chip, time and read of the first instance
    accuracy: float | None = None
    reference_accuracy: float | None = None
    instances: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    sensitivity: list[dict] = field(default_factory=list)
    # the ADC's step against the read sums, measured on every instance's reads (quantized
    # profiles with ADC bits; None otherwise)
    adc: AdcUse | None = None
    # with --ort-int8: onnxruntime's static int8 quantization of the reference against the
    # reference, on the same samples ({"calibration": ..., "outputs": [...], "accuracy": ...})
    ort_int8: dict | None = None
    # how the batch size was chosen: "how" (given, fixed, reference or auto; batching.py),
    # the estimated bytes of a sample and the memory budget (auto), the "note" printed
    batching: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def load_data(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file (np.savez or np.savez_compressed), refusing pickled objects,
    a .npy file, and members whose declared size is absurd or more than their compressed
    bytes can hold, before inflating them (xbarc.ir.tensors.load_arrays)."""
    from xbarc.ir.tensors import load_arrays
    from xbarc.limits import MAX_DATA_BYTES

    if not Path(path).exists():
        raise XbarcError(f"data file {path} does not exist")
    return load_arrays(Path(path), "data file", MAX_DATA_BYTES)


def batches(
    data: Mapping[str, np.ndarray], input_names: list[str], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    samples = len(next(iter(data[n] for n in input_names)))
    for start in range(0, samples, batch_size):
        yield {name: data[name][start : start + batch_size] for name in input_names}


def first_samples(
    data: Mapping[str, np.ndarray], input_names: list[str], count: int
) -> dict[str, np.ndarray]:
    """The input arrays cut to their first `count` samples (eval --samples)."""
    return {name: data[name][:count] for name in input_names}


def model_inputs(data: Mapping[str, np.ndarray], input_names: list[str], where: Path) -> None:
    missing = [name for name in input_names if name not in data]
    if missing:
        raise XbarcError(
            f"the data has no array named {missing[0]!r}",
            where=where,
            hint=f"its arrays are {', '.join(data) or '(none)'}; name them after the "
            f"program's inputs ({', '.join(input_names)})",
        )
    counts = {len(data[name]) for name in input_names}
    if len(counts) != 1:
        raise XbarcError("the input arrays hold different numbers of samples", where=where)


@xbarc_progress.tracked("eval", unit="sample")
def evaluate(
    program_path: Path,
    reference_path: Path,
    data_path: Path,
    noise: str = "ideal",
    seed: int = 0,
    overrides: Sequence[str] = (),
    labels_key: str | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], object] | None = None,
    instances: int = 1,
    sensitivity: bool = False,
    ort_int8: bool = False,
    calibration_path: Path | None = None,
    samples: int | None = None,
    workers: EngineOptions | None = None,
) -> EvalReport:
    """Run the program on `instances` chip instances (seeds seed, seed + 1, ...) and the
    reference once; with `sensitivity`, also each crossbar layer alone noisy (the others
    as `quant`) on the same instances. `samples`: only the first that many samples of the
    data (all by default). `workers`: where the program runs (`xbarc.distributed`; default
    this process): on Dask workers, in chunks of whole batches, each batch's read noise
    keyed by its number, its figures added here in batch order, so that the report is
    the same bit for bit on any number of workers and in this process."""
    import onnxruntime

    from xbarc.adc_report import measured_adc, observe_reads
    from xbarc.batching import BatchChoice, choose_batch
    from xbarc.frontend.load import load_model
    from xbarc.session import InferenceSession

    check_instances(seed, instances)
    if workers is not None:
        from xbarc.distributed import check

        check(workers)  # an unreachable scheduler: an error before any work
    if samples is not None and samples < 1:
        raise XbarcError(f"--samples must be at least 1, got {samples}")
    session = InferenceSession(program_path, noise=noise, seed=seed, overrides=overrides)
    settings = session.settings
    if sensitivity and not (settings.cells_noisy or settings.reads_noisy):
        raise XbarcError(
            f"--sensitivity needs device or read noise; profile {settings.profile!r} has none",
            hint="e.g. --noise rram",
        )
    load_model(reference_path)  # the same checks and messages as compile
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings would garble our report
    # threads that sleep after a run: spinning ones take the cores from the simulator's
    # kernels that follow, and from the other workers of a Dask eval or sweep
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    reference = onnxruntime.InferenceSession(
        str(reference_path), options, providers=["CPUExecutionProvider"]
    )
    check_reference(session, reference, program_path, reference_path)
    data = load_data(data_path)
    input_names = [i.name for i in session.get_inputs()]
    model_inputs(data, input_names, data_path)
    available = len(data[input_names[0]]) if input_names else 0
    if available == 0:
        raise XbarcError(
            "the data holds no samples", where=data_path, hint="give at least one sample"
        )
    if batch_size is not None and batch_size < 1:
        raise XbarcError(f"--batch-size must be at least 1, got {batch_size}")
    labels = None
    if labels_key is not None:
        if labels_key not in data:
            raise XbarcError(f"the data has no array named {labels_key!r}", where=data_path)
        labels = check_labels(np.asarray(data[labels_key]), labels_key, available, data_path)
    if samples is None or samples >= available:
        samples = available
    else:
        data = first_samples(data, input_names, samples)
        labels = None if labels is None else labels[:samples]
    # the first instance's session and the one running live at once (more than one pass)
    copies = 2 if instances > 1 or sensitivity else 1
    choice = choose_batch(session.program, [settings], samples, batch_size, copies=copies)
    fixed = reference_batch(reference)
    if choice.how == "auto" and fixed is not None:  # onnxruntime runs it on no other batch
        choice = BatchChoice(fixed, "reference")
    size = choice.size
    outputs = [o.name for o in session.get_outputs()]
    feeds = list(batches(data, input_names, size))
    wanted = [run_reference(reference, outputs, batch, reference_path) for batch in feeds]

    truths = batch_labels(labels, feeds)
    # the passes over the data: each chip instance (its reads measured for the ADC report),
    # then, with --sensitivity, each crossbar layer alone noisy on each instance
    passes = [Pass(seed + k, None) for k in range(instances)]
    if sensitivity:
        passes += [
            Pass(seed + k, (layer.name,))
            for layer in session.program.layers()
            for k in range(instances)
        ]
    task = xbarc_progress.current()
    task.set_total(samples * len(passes))
    read_sums = observe_reads(session)

    def counted(count: int, number: int) -> None:
        task.update(count, item=f"seed {number}")
        if progress is not None:
            progress(count)

    if workers is None or is_serial(workers):

        def run_pass(one: Pass) -> list[BatchResult]:
            run = session if one == Pass(seed, None) else chip_session(session, one)
            run.observe_reads(read_sums if one.layers is None else None)
            results = []
            for index, batch in enumerate(zip(feeds, wanted, truths, strict=True)):
                results.append(run_batch(run, outputs, index, *batch))
                counted(results[-1].count, one.seed)
            run.observe_reads(None)
            return results

        # chip seed by chip seed (the whole chip noisy, then each layer alone on it), so
        # that each seed's chip is programmed once (`programming_memo`), results kept in
        # pass order
        from xbarc.runtime.devices import programming_memo

        by_seed = sorted(range(len(passes)), key=lambda number: (passes[number].seed, number))
        done: dict[int, list[BatchResult]] = {}
        with programming_memo():
            for number in by_seed:
                done[number] = run_pass(passes[number])
        per_pass = [done[number] for number in range(len(passes))]
    else:
        per_pass = distributed_passes(
            workers, session, passes, feeds, wanted, truths, read_sums, counted
        )

    pooled = {name: OutputStats(name) for name in outputs}
    labelled = labels is not None
    rows = [
        instance_row(one.seed, results, outputs, pooled, samples, labelled)
        for one, results in zip(passes[:instances], per_pass, strict=False)
    ]
    report = EvalReport(
        str(program_path),
        str(reference_path),
        settings.profile,
        samples,
        size,
        [stats.finish() for stats in pooled.values()],
        settings=asdict(settings),
        seeds=asdict(session.seeds),
        instances=rows,
        summary={key: spread([row[key] for row in rows]) for key in ("accuracy", "agreement")},
        batching={
            "how": choice.how,
            "sample_bytes": choice.sample_bytes,
            "budget": choice.budget,
            "note": choice.describe(),
        },
    )
    if read_sums is not None:
        report.adc = measured_adc(
            read_sums, settings, session.program, samples, program_path, instances
        )
    if ort_int8:
        calibration = data if calibration_path is None else load_data(calibration_path)
        model_inputs(calibration, input_names, calibration_path or data_path)
        report.ort_int8 = ort_int8_figures(
            reference_path,
            {name: calibration[name] for name in input_names},
            str(calibration_path or data_path),
            feeds,
            wanted,
            outputs,
            labels,
        )
    report.accuracy = report.summary["accuracy"]["mean"] if labels is not None else None
    if labels is not None and samples:
        predicted = [want[0].reshape(len(want[0]), -1).argmax(-1) for want in wanted]
        report.reference_accuracy = float(np.mean(np.concatenate(predicted) == labels[:samples]))
    if sensitivity:
        layer_passes = per_pass[instances:]
        for number, layer in enumerate(session.program.layers()):
            scratch = {name: OutputStats(name) for name in outputs}
            per_seed = [
                instance_row(seed + k, results, outputs, scratch, samples, labelled)
                for k, results in enumerate(
                    layer_passes[number * instances : (number + 1) * instances]
                )
            ]
            report.sensitivity.append(
                {
                    "layer": layer.name,
                    "source": layer.source,
                    **{
                        key: mean_of([row[key] for row in per_seed])
                        for key in ("relative_error", "snr_db", "agreement", "accuracy")
                    },
                }
            )
    return report


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass over the data: the chip instance of seed `seed`, with device and read
    noise in `layers` only (None: all, as the profile says)."""

    seed: int
    layers: tuple[str, ...] | None


def chip_session(session: InferenceSession, one: Pass) -> InferenceSession:
    """A session of `session`'s program and settings on the chip instance of `one`."""
    from xbarc.session import InferenceSession

    return InferenceSession(session.program, session.settings, one.seed, noisy_layers=one.layers)


def batch_labels(labels: np.ndarray | None, feeds: list[dict[str, np.ndarray]]) -> list:
    """Each batch's labels (None for every batch without labels)."""
    truths: list[np.ndarray | None] = []
    done = 0
    for batch in feeds:
        count = len(next(iter(batch.values())))
        truths.append(None if labels is None else labels[done : done + count])
        done += count
    return truths


def run_batch(
    run: InferenceSession,
    outputs: list[str],
    index: int,
    batch: dict[str, np.ndarray],
    theirs: list[np.ndarray],
    truth: np.ndarray | None,
) -> BatchResult:
    """The program's figures on batch number `index` (which keys its read noise) against
    the reference's outputs `theirs`."""
    got = run.run(outputs, batch, batch=index)
    count = len(next(iter(batch.values())))
    correct = None
    if truth is not None:
        correct = int((got[0].reshape(count, -1).argmax(-1) == truth).sum())
    figures = tuple(batch_figures(mine, want) for mine, want in zip(got, theirs, strict=True))
    return BatchResult(figures, correct, count)


def instance_row(
    seed: int,
    results: list[BatchResult],
    outputs: list[str],
    pooled: dict[str, OutputStats],
    samples: int,
    labelled: bool,
) -> dict:
    """The figures of one pass over the data from its batches' (in batch order), its
    errors also added into `pooled`."""
    stats = {name: OutputStats(name) for name in outputs}
    correct = 0
    for result in results:
        for name, figures in zip(outputs, result.figures, strict=True):
            stats[name].include(figures)
            pooled[name].include(figures)
        correct += result.correct or 0
    first = stats[outputs[0]].finish()
    return {
        "seed": seed,
        "accuracy": correct / samples if labelled and samples else None,
        "agreement": first["top1_agreement"],
        "relative_error": first["relative_error"],
        "snr_db": first["snr_db"],
    }


# --- eval on Dask workers (--workers N, --scheduler ADDRESS) -----------------------------

# tasks per worker a pass is split into at most (whole batches each): enough to keep every
# worker busy to the end, few enough that each task's chip is programmed for many batches
TASKS_PER_WORKER = 2


def is_serial(options: EngineOptions) -> bool:
    """Whether `options` run in this process (no Dask)."""
    return options.scheduler is None and (options.workers or 1) <= 1


@dataclass(frozen=True)
class EvalContext:
    """What every task of one eval needs, sent to each worker once: the program, the
    settings of its runs (hardware fields filled in), the outputs compared, and a token
    naming this eval (a worker keeps the chip of its last task under it)."""

    program: Program
    settings: NoiseSettings
    outputs: list[str]
    token: str


@dataclass(frozen=True)
class EvalChunk:
    """Consecutive batches of one pass, from batch number `first`: (feeds, the reference's
    outputs, labels or None) each. `observe`: measure the reads for the ADC report."""

    number: int  # the pass's position in the eval
    one: Pass
    first: int
    batches: tuple[tuple[dict[str, np.ndarray], list[np.ndarray], np.ndarray | None], ...]
    observe: bool


def distributed_passes(
    workers: EngineOptions,
    session: InferenceSession,
    passes: list[Pass],
    feeds: list[dict[str, np.ndarray]],
    wanted: list[list[np.ndarray]],
    truths: list,
    read_sums: ReadSpread | None,
    counted: Callable[[int, int], None],
) -> list[list[BatchResult]]:
    """Every pass's batch results, computed in chunks of whole batches on the engine
    `workers` asks for; the chunks' read sums merged into `read_sums` in pass and batch
    order (as one process adds them)."""
    import uuid

    from xbarc import distributed

    outputs = [arg.name for arg in session.get_outputs()]
    context = EvalContext(session.program, session.settings, outputs, uuid.uuid4().hex)
    labelled = tuple(zip(feeds, wanted, truths, strict=True))  # each batch with its answers
    with distributed.engine(workers) as pool:
        # a pass in as many chunks as keep every worker busy, at most one a batch
        chunk_count = min(len(feeds), -(-TASKS_PER_WORKER * pool.workers // len(passes)))
        size = -(-len(feeds) // max(chunk_count, 1))
        chunks = [
            EvalChunk(
                number,
                one,
                start,
                labelled[start : start + size],
                read_sums is not None and one.layers is None,
            )
            for number, one in enumerate(passes)
            for start in range(0, len(feeds), size)
        ]
        done: dict[int, tuple[list[BatchResult], ReadSpread | None]] = {}
        for index, result in pool.map(eval_chunk, chunks, shared=context):
            done[index] = result
            counted(sum(batch.count for batch in result[0]), chunks[index].one.seed)
    per_pass: list[list[BatchResult]] = [[] for _ in passes]
    for index, chunk in enumerate(chunks):
        results, spread = done[index]
        per_pass[chunk.number].extend(results)
        if read_sums is not None and spread is not None:
            read_sums.merge(spread)
    return per_pass


# the chip of the last task a worker ran: (token, pass) -> session
_CHIP: dict[tuple[str, Pass], InferenceSession] = {}


def eval_chunk(
    context: EvalContext, chunk: EvalChunk
) -> tuple[list[BatchResult], ReadSpread | None]:
    """One chunk's batch results on a worker (and its reads' spread, when observed)."""
    from xbarc.adc_report import observe_reads
    from xbarc.session import InferenceSession

    key = (context.token, chunk.one)
    run = _CHIP.get(key)
    if run is None:
        _CHIP.clear()  # one programmed chip a worker at a time: chips can be large
        run = _CHIP[key] = InferenceSession(
            context.program, context.settings, chunk.one.seed, noisy_layers=chunk.one.layers
        )
    spread = observe_reads(run) if chunk.observe else None
    if spread is None:
        run.observe_reads(None)
    try:
        results = [
            run_batch(run, context.outputs, chunk.first + offset, batch, theirs, truth)
            for offset, (batch, theirs, truth) in enumerate(chunk.batches)
        ]
    finally:
        run.observe_reads(None)
    return results, spread


# chip instances one eval may run (--seeds): each is a pass over the data
MAX_INSTANCES = 1 << 16


def check_instances(seed: int, instances: int) -> None:
    """--seed S --seeds N runs the seeds S .. S + N - 1: each must be a seed."""
    from xbarc.runtime.noise import MAX_SEED, check_seed

    check_seed(seed)
    if instances < 1:
        raise XbarcError(f"--seeds must be at least 1, got {instances}")
    if instances > MAX_INSTANCES:
        raise XbarcError(
            f"--seeds must be at most {MAX_INSTANCES}, got {instances}",
            hint="--seeds N runs N chip instances, one pass over the data each",
        )
    if seed + instances - 1 > MAX_SEED:
        raise XbarcError(
            f"--seed {seed} --seeds {instances} runs seeds past the last one ({MAX_SEED})",
            hint="start from a smaller --seed",
        )


def check_labels(labels: np.ndarray, key: str, samples: int, where: Path) -> np.ndarray:
    """The labels array if it holds one integer class index per sample, else a one-line
    error naming --labels."""
    if labels.ndim != 1:
        raise XbarcError(
            f"--labels {key}: one label per sample expected, got an array of shape "
            f"{list(labels.shape)}",
            where=where,
            hint="store one integer class index per sample (argmax of one-hot labels)",
        )
    if labels.dtype.kind not in "iu":
        raise XbarcError(
            f"--labels {key}: labels must be integer class indices, got {labels.dtype}",
            where=where,
            hint="store them as integers, e.g. labels.astype(np.int64)",
        )
    if len(labels) != samples:
        raise XbarcError(
            f"--labels {key}: {len(labels)} labels for {samples} samples",
            where=where,
            hint="give one label per sample of the inputs",
        )
    return labels


# onnxruntime's element types (NodeArg.type) as numpy's
ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}


def check_reference(session, reference, program_path: Path, reference_path: Path) -> None:
    """The reference model must take the program's inputs (names, element types, ranks
    and every fixed dimension after the batch) and give its outputs: else one line naming
    the input or output, as the program and the reference declare it."""
    from xbarc.ir.types import NUMPY_DTYPES

    theirs = {arg.name: arg for arg in reference.get_inputs()}
    for arg in session.get_inputs():
        other = theirs.get(arg.name)
        if other is None:
            raise XbarcError(
                f"the reference has no input {arg.name!r}, an input of {program_path}",
                where=reference_path,
                hint=f"its inputs are {', '.join(theirs) or '(none)'}: give the model the "
                "program was compiled from",
            )
        mine_dtype = NUMPY_DTYPES.get(arg.type)
        their_dtype = ORT_DTYPES.get(other.type)
        if mine_dtype is not None and their_dtype is not None and mine_dtype != their_dtype:
            raise XbarcError(
                f"input {arg.name!r} is {mine_dtype} in {program_path} but "
                f"{other.type.removeprefix('tensor(').rstrip(')')} in the reference",
                where=reference_path,
                hint="give the model the program was compiled from",
            )
        if not shapes_agree(arg.shape, other.shape):
            raise XbarcError(
                f"input {arg.name!r} has shape {format_shape(arg.shape)} in {program_path} "
                f"but {format_shape(other.shape)} in the reference",
                where=reference_path,
                hint="give the model the program was compiled from",
            )
    outputs = {arg.name for arg in reference.get_outputs()}
    for arg in session.get_outputs():
        if arg.name not in outputs:
            raise XbarcError(
                f"the reference has no output {arg.name!r}, an output of {program_path}",
                where=reference_path,
                hint=f"its outputs are {', '.join(sorted(outputs)) or '(none)'}",
            )


def reference_batch(reference) -> int | None:
    """The batch size the reference model fixes (its first input's first dimension, a
    number), or None where it takes any."""
    inputs = reference.get_inputs()
    shape = inputs[0].shape if inputs else None
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0]
    return None


def shapes_agree(mine: list | None, theirs: list | None) -> bool:
    """Whether two declared shapes can hold the same feeds: the same rank, and equal
    dimensions after the batch (the first) wherever both are numbers."""
    if mine is None or theirs is None:
        return True
    if len(mine) != len(theirs):
        return False
    return all(
        a == b
        for a, b in zip(mine[1:], theirs[1:], strict=True)
        if isinstance(a, int) and isinstance(b, int)
    )


def format_shape(shape: list | None) -> str:
    if shape is None:
        return "(unknown)"
    return "[" + ",".join("?" if dim is None else str(dim) for dim in shape) + "]"


def run_reference(reference, outputs: list[str], batch: dict, where: Path) -> list[np.ndarray]:
    """The reference's outputs on one batch; onnxruntime's refusal as a one-line error."""
    try:
        return reference.run(outputs, batch)
    except Exception as error:  # onnxruntime's own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        count = len(next(iter(batch.values()))) if batch else 0
        raise XbarcError(
            f"onnxruntime cannot run the reference on a batch of {count}: {first[:300]}",
            where=where,
            hint="a model with a fixed batch size needs --batch-size of that size",
        ) from None


def ort_int8_figures(
    reference_path: Path,
    calibration: Mapping[str, np.ndarray],
    calibration_name: str,
    feeds: list[dict[str, np.ndarray]],
    wanted: list[list[np.ndarray]],
    outputs: list[str],
    labels: np.ndarray | None,
) -> dict:
    """onnxruntime's static int8 quantization of the reference (xbarc/ort_quant.py),
    calibrated on `calibration`, run on `feeds` against the reference's outputs `wanted`:
    the same figures as the program's."""
    import onnx
    import onnxruntime

    from xbarc.ort_quant import quantize_int8

    quantized = quantize_int8(onnx.load(reference_path), calibration)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        quantized.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    stats = {name: OutputStats(name) for name in outputs}
    correct = done = 0
    for batch, theirs in zip(feeds, wanted, strict=True):
        got = session.run(outputs, batch)
        for name, mine, want in zip(outputs, got, theirs, strict=True):
            stats[name].add(mine, want)
        count = len(next(iter(batch.values())))
        if labels is not None:
            truth = labels[done : done + count]
            correct += int((got[0].reshape(count, -1).argmax(-1) == truth).sum())
        done += count
    return {
        "calibration": calibration_name,
        "calibration_samples": len(next(iter(calibration.values()))),
        "outputs": [figures.finish() for figures in stats.values()],
        "accuracy": correct / done if labels is not None and done else None,
    }


def spread(values: list) -> dict:
    """Mean, standard deviation, min and max of the values that are numbers."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return {"mean": None, "std": None, "min": None, "max": None}
    array = np.asarray(numbers, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def mean_of(values: list) -> float | None:
    """The mean of the values (SNRs in dB averaged as dB; an infinite one stays so)."""
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


CONVERTER_FIELDS = ("dac_bits", "adc_bits", "input_range", "adc_range", "adc_placement")


def profile_phrase(settings: dict) -> str:
    """What a profile simulates, in one phrase (from its fields, so that a user's file
    is described as well as the shipped ones)."""
    if not settings["quantized"]:
        return "the float model through the tiles: no converters, no device noise"
    if device_fields(settings):
        return "quantized as compiled, plus device noise"
    return "weights, DAC and ADC quantized as compiled; deterministic"


def device_fields(settings: dict) -> dict:
    """The device and read-noise fields that are on, with those that only refine them
    (a model's scale, drift's time and compensation): what noise.py and devices.py
    read. A profile without quantization has no device noise (the executor refuses it)."""
    if not settings["quantized"]:
        return {}
    on: list[str] = []
    if settings["programming"] != "none":
        on += ["programming", "programming_scale"]
        if settings["programming"] == "relative":
            on.append("programming_relative")
    on += [key for key in ("p_sa0", "p_sa1", "g_max_spread") if settings[key] > 0]
    if settings["drift"] != "none":
        on += ["drift", "t_inference", "t0", "drift_compensation"]
        if settings["drift"] == "constant":
            on += ["drift_nu", "drift_nu_std"]
    on += [key for key in ("wire_resistance", "input_noise") if settings[key] > 0]
    if settings["read_noise"] != "none":
        on += ["read_noise", "read_sigma"]
    if settings["output_noise"] > 0:
        on.append("output_noise")
    return {key: settings[key] for key in on}


def converter_fields(settings: dict) -> dict:
    """The converter fields of a quantized profile (none without quantization)."""
    return {key: settings[key] for key in CONVERTER_FIELDS} if settings["quantized"] else {}


def used_seeds(settings: dict, seeds: dict) -> dict:
    """The derived seeds something is drawn from: chip (programming noise, stuck cells,
    g_max spread), time (drift, after some time), read (input, read and output noise)."""
    if not settings["quantized"]:
        return {}
    used = {
        "chip": settings["programming"] != "none"
        or settings["p_sa0"] > 0
        or settings["p_sa1"] > 0
        or settings["g_max_spread"] > 0,
        "time": settings["drift"] != "none" and settings["t_inference"] > 0,
        "read": settings["input_noise"] > 0
        or settings["read_noise"] != "none"
        or settings["output_noise"] > 0,
    }
    return {key: value for key, value in seeds.items() if used.get(key)}


def settings_lines(settings: dict, seeds: dict, seed: int | None) -> list[str]:
    """The settings that apply to the profile, wrapped for a terminal: what the profile
    means, its converter fields when it quantizes, the device fields that are on, and
    the seeds only where something is drawn (`seed` the number they derive from)."""
    lines = [f"  {profile_phrase(settings)}"]
    for label, group in (
        ("converters", converter_fields(settings)),
        ("device", device_fields(settings)),
    ):
        if group:
            items = [f"{key}={setting_text(value)}" for key, value in group.items()]
            lines += wrapped(f"  {label}:", items)
    drawn = used_seeds(settings, seeds)
    if drawn:
        derived = ", ".join(f"{key} {value}" for key, value in drawn.items())
        number = "" if seed is None else f" {seed}"
        lines.append(f"  seed{number} ({derived})")
    return lines


def setting_text(value) -> str:
    """A field's value as `--set FIELD=VALUE` takes it: words bare, the rest as TOML."""
    from xbarc.runtime.noise import format_value

    return value if isinstance(value, str) else format_value(value)


def wrapped(label: str, items: list[str], width: int = 96) -> list[str]:
    """`label` and `items`, space-separated, in lines of at most `width` characters."""
    lines, line = [], label
    for item in items:
        if len(line) + len(item) + 1 > width:
            lines.append(line)
            line = "   "
        line += " " + item
    return [*lines, line]


def first_seed(report: EvalReport) -> int | None:
    """The seed the first chip instance's seeds derive from."""
    return report.instances[0]["seed"] if report.instances else None


def batch_note(report: EvalReport) -> str:
    """ " (auto: ~0.11 MB a sample, 1 GiB budget)": how the batch size was chosen."""
    note = report.batching.get("note")
    return f" ({note})" if note else ""


def format_eval(report: EvalReport) -> str:
    count = len(report.instances)
    lines = [
        f"{report.program} against {report.reference}: {report.samples} samples in batches "
        f"of {report.batch_size}{batch_note(report)}, noise profile {report.noise}",
        *settings_lines(report.settings, report.seeds, first_seed(report)),
        f"{'output':<32} {'max abs error':>14} {'relative':>10} {'SNR dB':>8} {'top-1 agree':>12}",
    ]
    for row in report.outputs:
        agreement = "-" if row["top1_agreement"] is None else f"{row['top1_agreement']:.2%}"
        lines.append(
            f"{row['output'][:32]:<32} {row['max_abs_error']:>14.4g} "
            f"{row['relative_error']:>10.3g} {row['snr_db']:>8.1f} {agreement:>12}"
        )
    if count > 1:
        first, last = report.instances[0]["seed"], report.instances[-1]["seed"]
        lines.append(f"over {count} chip instances (seeds {first}..{last}; errors pooled):")
        for key, label in (("accuracy", "accuracy"), ("agreement", "top-1 agreement")):
            figures = report.summary[key]
            if figures["mean"] is not None:
                lines.append(
                    f"  {label:<16} mean {figures['mean']:.2%}  std {figures['std']:.2%}  "
                    f"min {figures['min']:.2%}  max {figures['max']:.2%}"
                )
    if report.accuracy is not None:
        mean = " (mean over instances)" if count > 1 else ""
        lines.append(
            f"accuracy {report.accuracy:.2%}{mean} (reference {report.reference_accuracy:.2%})"
        )
    if report.ort_int8 is not None:
        int8 = report.ort_int8
        lines.append(
            "onnxruntime int8 (quantize_static, QDQ, per-channel symmetric int8 weights, "
            f"int8 activations calibrated (MinMax) on {int8['calibration_samples']} samples of "
            f"{int8['calibration']}) against the same reference:"
        )
        for row in int8["outputs"]:
            agreement = "-" if row["top1_agreement"] is None else f"{row['top1_agreement']:.2%}"
            lines.append(
                f"{row['output'][:32]:<32} {row['max_abs_error']:>14.4g} "
                f"{row['relative_error']:>10.3g} {row['snr_db']:>8.1f} {agreement:>12}"
            )
        if int8["accuracy"] is not None:
            lines.append(f"onnxruntime int8 accuracy {int8['accuracy']:.2%}")
    if report.sensitivity:
        over = f", mean over {count} instances" if count > 1 else ""
        lines.append(f"per-layer sensitivity (only that layer noisy, the rest quant{over}):")
        lines.append(
            f"  {'layer':<28} {'relative':>10} {'SNR dB':>8} {'top-1 agree':>12} {'accuracy':>9}"
        )
        for row in report.sensitivity:
            agreement = "-" if row["agreement"] is None else f"{row['agreement']:.2%}"
            accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
            lines.append(
                f"  {row['layer'][:28]:<28} {row['relative_error']:>10.3g} "
                f"{row['snr_db']:>8.1f} {agreement:>12} {accuracy:>9}"
            )
    if report.adc is not None:
        from xbarc.adc_report import format_adc

        lines.append(format_adc(report.adc))
    return "\n".join(lines)
