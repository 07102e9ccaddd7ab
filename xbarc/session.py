"""`xbarc.InferenceSession`: run a compiled program the way onnxruntime runs a model.

    session = xbarc.InferenceSession("model.xbar", noise="quant")
    (logits,) = session.run(None, {"x": batch})
    noisy = xbarc.InferenceSession("model.xbar", noise="rram", seed=3, overrides=["adc_bits=6"])

`noise` is a profile name (ideal, quant, rram, pcm), the path of a profile TOML file, or
`NoiseSettings`; `seed` derives the chip, time and read seeds (or give `Seeds`). Each run
draws fresh read noise, keyed by the batch's number (`run(..., batch=k)`; by default the
runs before it): the same seeds and batch number give the same bits, in any process.
`noisy_layers` limits device and read noise to those crossbar layers (the rest run as
`quant`).

Inputs are checked before anything runs: every input named, no unknown names, the
declared element type, the declared shape (the batch dimension, the first, may differ,
unless the program was compiled for one batch size: `batch=fixed`), and no NaN or
infinity (a crossbar has no way to represent them; clean the data first). A batch of 0
samples gives empty outputs of onnxruntime's shapes in every profile.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Program
from xbarc.ir.types import NUMPY_DTYPES, TensorType
from xbarc.ir.verifier import ACCUMULATOR_BITS, accumulator_bits
from xbarc.runtime.noise import NoiseSettings, Seeds, load_profile

ReadObserver = Callable[[str, np.ndarray, np.ndarray], None]


@dataclass(frozen=True, slots=True)
class NodeArg:
    """Name, shape and element type of an input or output, like onnxruntime's NodeArg."""

    name: str
    shape: list[int | None] | None
    type: str


class InferenceSession:
    """A compiled program loaded, programmed onto a simulated chip, ready to run."""

    def __init__(
        self,
        program: str | os.PathLike | Program,
        noise: str | os.PathLike | NoiseSettings = "ideal",
        seed: int | Seeds = 0,
        overrides: Sequence[str] = (),
        noisy_layers: Sequence[str] | None = None,
    ):
        from xbarc.runtime.executor import Executor

        if isinstance(program, Program):
            self.program = program
        else:
            from xbarc.ir.io import load_program

            self.program = load_program(program)
        settings = noise if isinstance(noise, NoiseSettings) else load_profile(noise, overrides)
        self.seeds = seed if isinstance(seed, Seeds) else Seeds.derive(seed)
        self.seed_number = None if isinstance(seed, Seeds) else seed
        layers = None if noisy_layers is None else frozenset(noisy_layers)
        self._executor = Executor(self.program, settings, self.seeds, layers)
        self.settings = self._executor.settings  # what the run uses, hardware fields filled
        check_accumulator(self.program, self.settings)
        self._empty = None  # the executor of empty batches, made when one comes
        self._types = self.program.value_types()

    @property
    def adc_levels(self) -> int:
        """The ADC's codes a side over a read's full scale; 0 where reads are not converted
        (`ideal`) or converted without loss (`adc_bits = "exact"`)."""
        return self._executor.adc_levels if self.settings.quantized else 0

    def observe_reads(self, observer: ReadObserver | None) -> None:
        """Call `observer(layer, sums, full_scales)` with every batch of read sums before
        the ADC converts them (sums [M, P]: M read columns over P patches; full_scales
        int64 [M]), in quantized profiles; None stops. An observer costs run time: none
        is set unless asked for (`xbarc run` and `eval` set one for their ADC report). A
        callable takes exact reads read by read; a `runtime.read_spread.ReadSpread` keeps
        the fast read paths, which count its sample themselves (its figures the same)."""
        self._executor.on_read_sums = observer

    def get_inputs(self) -> list[NodeArg]:
        return [node_arg(i.name, i.type) for i in self.program.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [node_arg(name, self._types.get(name)) for name in self.program.outputs]

    def run(
        self,
        output_names: Sequence[str] | None,
        feeds: Mapping[str, np.ndarray],
        batch: int | None = None,
    ) -> list[np.ndarray]:
        """The requested outputs (all when `output_names` is None) for one batch. `batch`:
        the batch's number in a data set, which keys its read noise (default: the batches
        this session ran before), so that batch k of an eval draws the same noise in
        whichever process runs it."""
        wanted = list(output_names) if output_names else list(self.program.outputs)
        unknown = [name for name in wanted if name not in self.program.outputs]
        if unknown:
            raise XbarcError(
                f"unknown output {unknown[0]!r}",
                hint=f"the outputs are {', '.join(self.program.outputs)}",
            )
        checked = check_feeds(self.program, feeds)
        if self.settings.quantized and empty_batch(checked):
            results = self._empty_batch_executor().run(checked)
        else:
            results = self._executor.run(checked, batch)
        return [results[name] for name in wanted]

    def _empty_batch_executor(self):
        """The executor of empty batches in quantized profiles: `ideal`'s, which runs the
        network on onnxruntime and so gives its outputs' shapes (0 samples in, 0 out).
        With no sample there is nothing to quantize or to make noisy, and the chip's
        executor keeps its draws for the batches that have samples."""
        from xbarc.runtime.executor import Executor

        if self._empty is None:
            self._empty = Executor(self.program, NoiseSettings(), self.seeds)
        return self._empty


def check_accumulator(program: Program, settings: NoiseSettings) -> None:
    """Converter bits of a profile (`--set adc_bits=24 --set dac_bits=24`) that, with the
    program's weight bits over its widest layer, could overflow the runtime's int64 sums
    of exact reads: refused, as the verifier refuses them in the program's own hardware."""
    if not settings.quantized or not isinstance(settings.adc_bits, int):
        return
    dac_bits = settings.dac_bits or 0
    needed, weight_bits, rows = accumulator_bits(program, settings.adc_bits, dac_bits)
    if needed > ACCUMULATOR_BITS:
        raise XbarcError(
            f"adc_bits = {settings.adc_bits} and dac_bits = {dac_bits} with {weight_bits}-bit "
            f"weights over {rows} rows need a {needed}-bit accumulator, more than the "
            f"runtime's {ACCUMULATOR_BITS}",
            hint="give fewer converter bits (--set adc_bits=N, --set dac_bits=N)",
        )


def empty_batch(feeds: Mapping[str, np.ndarray]) -> bool:
    """Whether the feeds hold no sample: every input with a batch axis has 0 along it."""
    batched = [value for value in feeds.values() if value.ndim >= 1]
    return bool(batched) and all(value.shape[0] == 0 for value in batched)


def node_arg(name: str, tensor_type: TensorType | None) -> NodeArg:
    if tensor_type is None:
        return NodeArg(name, None, "unknown")
    shape = None if tensor_type.shape is None else list(tensor_type.shape)
    return NodeArg(name, shape, tensor_type.dtype)


def check_feeds(program: Program, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds as arrays of the declared types, or a one-line error saying what is wrong."""
    declared = {i.name: i for i in program.inputs}
    names = ", ".join(declared) or "(none)"
    for name in feeds:
        if name not in declared:
            raise XbarcError(f"unknown input {name!r}", hint=f"the program's inputs are {names}")
    missing = [name for name in declared if name not in feeds]
    if missing:
        raise XbarcError(f"input {missing[0]!r} is missing", hint=f"the inputs are {names}")
    checked = {}
    for name, graph_input in declared.items():
        value = np.asarray(feeds[name])
        checked[name] = check_feed(name, value, graph_input.type)
        if graph_input.fixed_batch:
            check_batch(name, value, graph_input.type)
    return checked


def check_batch(name: str, value: np.ndarray, tensor_type: TensorType) -> None:
    """Refuse a batch size other than the compiled one, for a program compiled for one."""
    compiled = tensor_type.static_shape()
    if value.shape[:1] == compiled[:1]:
        return
    shown = "x".join(map(str, compiled))
    wanted = "x".join(map(str, (value.shape[0], *compiled[1:])))
    raise XbarcError(
        f"input {name!r} has batch {value.shape[0]}, but the program was compiled for "
        f"{shown} and its model fixes the batch size",
        hint=f"feed batches of {compiled[0]}; for batches of {value.shape[0]}, export the "
        f"model with a symbolic batch dimension and compile with --input-shape {name}={wanted}",
    )


def check_feed(name: str, value: np.ndarray, tensor_type: TensorType) -> np.ndarray:
    expected = NUMPY_DTYPES.get(tensor_type.dtype)
    if expected is not None and value.dtype != expected:
        raise XbarcError(
            f"input {name!r} is {value.dtype}, the program expects {tensor_type.dtype}",
            hint=f"convert it, e.g. x.astype(np.{expected})",
        )
    if tensor_type.shape is not None:
        want = list(tensor_type.shape)
        got = list(value.shape)
        same_rank = len(want) == len(got)
        same_dims = same_rank and all(
            w is None or w == g for i, (w, g) in enumerate(zip(want, got, strict=True)) if i > 0
        )
        if not same_dims:
            shown = "x".join("?" if d is None else str(d) for d in want)
            raise XbarcError(
                f"input {name!r} has shape {'x'.join(map(str, got)) or 'scalar'}, "
                f"the program expects {shown}",
                hint="only the first (batch) dimension may differ",
            )
    if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
        raise XbarcError(
            f"input {name!r} holds NaN or infinite values",
            hint="crossbars cannot represent them; clean the data first",
        )
    return value
