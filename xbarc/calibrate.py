"""`xbarc calibrate`: converter ranges measured on calibration data, stored in the program.

    xbarc calibrate model.xbar --data calib.npz [--percentile 99.99] [--samples 256]

Two passes over the samples:
1. Input ranges: the program runs in `ideal`; each crossbar layer's DAC full scale is the
   chosen percentile of |x| over its inputs (an all-zero input gets 1.0).
2. ADC ranges: the program runs in `quant` with those input ranges and the fixed ADC
   range; each layer's ADC full scale is the percentile of its reads' sums as a fraction
   of the largest sum a read can produce (rounded up to 1/1024), so that the ADC's codes
   cover the sums that occur instead of the ones that could. Every read sum is counted
   (`runtime.read_spread.ReadFractions`), on the same fast read paths as a plain `quant`
   run (`runtime/observed_reads.py`).

The result is the program's `calibration` section (ir_spec/SPEC.md); runs use it with
`--set input_range=calibrated --set adc_range=calibrated`. Calibration is noise-free and
deterministic: the same data give the same ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from xbarc import progress as xbarc_progress
from xbarc.batching import BatchChoice, choose_batch
from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Calibration, LayerRange, Program
from xbarc.session import check_batch

DEFAULT_PERCENTILE = 99.99  # of |x| and of the read sums: what the ranges must hold
ADC_BINS = 1024  # resolution of the ADC range: 1/1024 of the largest sum
INPUT_SAMPLE = 1 << 21  # |x| values kept per layer for its percentile (a seeded subsample)


@xbarc_progress.tracked("calibrate", unit="sample")
def calibrate(
    program: Program,
    data: Mapping[str, np.ndarray],
    percentile: float = DEFAULT_PERCENTILE,
    samples: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> Program:
    """`program` with a calibration from the first `samples` samples of `data` (all by
    default): one array per program input, samples first. Batches of `batch_size`
    (default: `calibration_batch`, from the memory budget; the compiled batch of a
    program that runs no other, `batch=fixed`)."""
    from xbarc.runtime.executor import Executor
    from xbarc.runtime.noise import noise_settings
    from xbarc.runtime.read_spread import ReadFractions

    if not 0 < percentile <= 100:
        raise XbarcError(f"--percentile must be in (0, 100], got {percentile}")
    choice = calibration_batch(program, data, samples, batch_size)
    names = [graph_input.name for graph_input in program.inputs]
    if one_fixed_run(program, data):  # the data is exactly one run of a fixed-shape model
        count = len(data[names[0]])
        batches = [(count, {name: np.asarray(data[name]) for name in names})]
    else:
        count = calibration_count(program, data, samples)
        batches = calibration_batches(program, data, count, choice.size)
    for graph_input in program.inputs:
        for _, batch in batches if graph_input.fixed_batch else ():
            check_batch(graph_input.name, batch[graph_input.name], graph_input.type)
    layers = list(program.layers())
    task = xbarc_progress.current()  # two passes over the samples
    task.set_total(2 * sum(size for size, _ in batches))

    # 1. input ranges, from the float activations
    task.describe("input ranges")
    ideal = Executor(program)
    per_sample = max(1, INPUT_SAMPLE // count)
    magnitudes: dict[str, list[np.ndarray]] = {layer.name: [] for layer in layers}
    start = 0
    for size, batch in batches:
        values = ideal.run_all(batch)
        draws = [np.random.default_rng([0, start + j]) for j in range(size)]
        for layer in layers:
            if layer.input not in values:
                continue  # a layer in a branch these samples do not take
            magnitude = np.abs(np.asarray(values[layer.input], dtype=np.float32))
            magnitudes[layer.name].extend(subsample(magnitude, per_sample, draws))
        start += size
        task.update(size)
        if progress is not None:
            progress(size)
    input_ranges = {}
    for name, parts in magnitudes.items():
        value = float(np.percentile(np.concatenate(parts), percentile)) if parts else 0.0
        input_ranges[name] = value if value > 0 else 1.0

    # 2. ADC ranges, from the read sums of the quantized run with those input ranges
    staged = replace(
        program,
        calibration=Calibration(
            percentile,
            count,
            tuple(LayerRange(layer.name, input_ranges[layer.name], 1.0) for layer in layers),
        ),
    )
    quant = Executor(staged, noise_settings("quant", input_range="calibrated", adc_range="fixed"))
    # every read sum as a fraction of its full scale, in ADC_BINS bins (on the fast read
    # paths: they count the sums beside their kernels, `runtime/observed_reads.py`)
    fractions = ReadFractions(ADC_BINS)
    quant.on_read_sums = fractions
    task.describe("ADC ranges")
    for size, batch in batches:
        quant.run(batch)
        task.update(size)
        if progress is not None:
            progress(size)
    nothing = np.zeros(ADC_BINS, dtype=np.int64)  # a layer whose reads never ran
    ranges = tuple(
        LayerRange(
            layer.name,
            input_ranges[layer.name],
            adc_fraction(fractions.histograms.get(layer.name, nothing), percentile),
        )
        for layer in layers
    )
    return replace(program, calibration=Calibration(percentile, count, ranges))


def subsample(
    value: np.ndarray, per_sample: int, draws: list[np.random.Generator]
) -> list[np.ndarray]:
    """At most `per_sample` of each sample's values of a layer input (a batch of
    `len(draws)` samples), drawn by that sample's own generator (seeded by its index in the
    data): the calibration is then the same whatever the batch size, which `calibrate`
    chooses from the machine's memory. A value whose first axis is not the batch (a
    recurrent state) is subsampled as a whole, with the batch's first generator."""
    size = len(draws)
    if size > 1 and value.ndim > 0 and value.shape[0] == size:
        rows = value.reshape(size, -1)
    else:
        rows, draws, per_sample = value.reshape(1, -1), draws[:1], per_sample * size
    kept = []
    for row, draw in zip(rows, draws, strict=True):
        kept.append(draw.choice(row, per_sample, replace=False) if row.size > per_sample else row)
    return kept


def adc_fraction(histogram: np.ndarray, percentile: float) -> float:
    """The upper edge of the bin holding the percentile of the histogrammed fractions (1.0
    when nothing was read)."""
    total = int(histogram.sum())
    if total == 0:
        return 1.0
    needed = math.ceil(total * percentile / 100)
    index = int(np.searchsorted(np.cumsum(histogram), needed))
    return min(1.0, (index + 1) / len(histogram))


def calibration_batches(
    program: Program, data: Mapping[str, np.ndarray], count: int, batch_size: int
) -> list[tuple[int, dict[str, np.ndarray]]]:
    """The runs over the first `count` samples, each with the samples it holds: batches
    of `batch_size`; or, where an
    array has one axis more than its input (a scalar such as a sample rate, a recurrent
    state: inputs without a batch axis), one run per sample with `data[name][i]` whole."""
    whole = whole_inputs(program, data)
    names = [graph_input.name for graph_input in program.inputs]
    if whole:
        return [
            (
                1,
                {
                    name: np.asarray(
                        data[name][index] if name in whole else data[name][index : index + 1]
                    )
                    for name in names
                },
            )
            for index in range(count)
        ]
    return [
        (
            min(batch_size, count - start),
            {
                name: np.asarray(data[name][start : min(start + batch_size, count)])
                for name in names
            },
        )
        for start in range(0, count, batch_size)
    ]


def whole_inputs(program: Program, data: Mapping[str, np.ndarray]) -> set[str]:
    """The inputs whose arrays have one axis more than the input: one whole input per
    sample (a scalar such as a sample rate, a recurrent state: inputs without a batch
    axis)."""
    return {
        graph_input.name
        for graph_input in program.inputs
        if graph_input.type.shape is not None
        and np.ndim(data[graph_input.name]) == len(graph_input.type.shape) + 1
    }


def one_fixed_run(program: Program, data: Mapping[str, np.ndarray]) -> bool:
    """Whether every input of `program` has a fixed shape (the model fixes its batch) and
    the data holds exactly that shape for each: one run, whose inputs may disagree on
    their first axis (Silero VAD's sequence model: 77 chunks, and a state of batch 1)."""
    return all(
        graph_input.fixed_batch
        and graph_input.type.is_static
        and np.shape(data[graph_input.name]) == graph_input.type.static_shape()
        for graph_input in program.inputs
    )


def calibration_batch(
    program: Program,
    data: Mapping[str, np.ndarray],
    samples: int | None = None,
    batch_size: int | None = None,
) -> BatchChoice:
    """The batch size `calibrate` runs `samples` samples of `data` in (all by default):
    `batch_size` if given, else the program's fixed batch, else as many as the memory
    budget holds in the costlier of its two passes (`ideal`, then `quant`), at most the
    samples (`xbarc.batching`). Data that is exactly one run of a fixed-shape model runs
    as that one run; inputs without a batch axis run one sample at a time."""
    from xbarc.runtime.noise import noise_settings

    if samples is not None and samples < 1:
        raise XbarcError(f"--samples must be at least 1, got {samples}")
    if batch_size is not None and batch_size < 1:
        raise XbarcError(f"--batch-size must be at least 1, got {batch_size}")
    count = calibration_count(program, data, samples)
    if one_fixed_run(program, data):
        return BatchChoice(count, "fixed")
    if any(whole_inputs(program, data)):
        return BatchChoice(1, "whole")
    passes = [noise_settings("ideal"), noise_settings("quant", input_range="calibrated")]
    return choose_batch(program, passes, count, batch_size)


def calibration_count(program: Program, data: Mapping[str, np.ndarray], samples: int | None) -> int:
    """The samples calibration runs: the first `samples` of the data (all by default);
    a one-line error for data without the program's inputs or without samples."""
    names = [graph_input.name for graph_input in program.inputs]
    missing = [name for name in names if name not in data]
    if missing:
        raise XbarcError(
            f"the calibration data has no array named {missing[0]!r}",
            hint=f"name the arrays after the program's inputs ({', '.join(names)})",
        )
    if one_fixed_run(program, data):
        return len(data[names[0]])
    available = min(len(data[name]) for name in names)
    count = available if samples is None else min(samples, available)
    if count < 1:
        raise XbarcError("no calibration samples", hint="--samples and the data need at least 1")
    return count
