"""The executor: program a simulated chip with a compiled program and run its schedule.

    Executor(program, load_profile("rram"), Seeds.derive(3)).run({"x": batch}) -> {"y": result}

Programming walks the phases: each write erases a physical tile and sets the cells of
every block on the written virtual tile from its slice of the array. Each layer run of a
phase is then read off the programmed tiles (never from the weights directly, so a mapping
bug shows up as a wrong answer). In `quant` it becomes *read plans*: the blocks of the run
grouped by the input they read (same group and source rows), with their cells side by
side and, per read column, the output column, the slice's signed significance and the
ADC full scale.

Settings (`noise.NoiseSettings`, from a profile):
- `ideal`: no quantization. Cells hold the real magnitude w/scale cut into the same
  slices (integer digits, the fraction in the least significant slice), inputs are not
  converted, the ADC is transparent. Reads are then linear, so the cells a layer's runs
  read (every block, at its gathered rows and scattered columns, from the tiles as each
  phase programmed them) are summed by significance into one effective matrix per group,
  and the network runs with those matrices as one onnxruntime model (`effective.py`).
- `quant`: cells hold the integer slice levels; inputs are quantized symmetrically to the
  DAC's bits (range: the layer input's largest magnitude in the batch, an oracle, or the
  calibrated or a fixed range) and fed bit-serially, `slice_bits` at a time, positive and
  negative parts apart; every read goes through the ADC (`bits` over the read's full
  scale: fixed, calibrated or the read's own largest sum; or lossless with
  `adc_bits="exact"`), and partial sums are accumulated as exact integers before
  dequantization. Deterministic.
- noisy profiles (`rram`, `pcm`): `quant` on a chip whose tiles are programmed through
  the device models (`devices.Chip`: conductances, programming noise, stuck cells, drift)
  and whose reads add input, read and output noise, all from the seeds. Reads then run
  in float32.

In `quant`, layers run in graph order, each over all its runs in phase order (phases are
batch-major: the whole batch passes each programming); digital ops run on the host in
between. A read is one GEMM over the whole batch: the read's cells [columns, rows] times
the input's DAC digits [rows, batch x patches], as an exact integer GEMM (uint8 cells,
int8 digits) where onnxruntime's integer kernel is exact on the machine, else in float32
(exact too: the sums stay below 2^24). Partial sums of many reads wait in a buffer and pass
through the ADC kernel together; integer sums do not depend on their order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.ir.cells import slice_cells
from xbarc.ir.geometry import conv_output_spatial
from xbarc.ir.tile import (
    Array,
    Block,
    ChipState,
    Const,
    CrossbarLayer,
    DigitalOp,
    Indices,
    LayerRange,
    Program,
    Span,
    Value,
)
from xbarc.runtime import gaussian, kernels
from xbarc.runtime.devices import Chip, read_noise_sigma
from xbarc.runtime.effective import IdealGraph
from xbarc.runtime.noise import NoiseSettings, Seeds

Memory = Callable[[tuple[int, ...]], np.ndarray]  # a float32 buffer of the given shape


@dataclass
class ReadPlan:
    """Quant: the blocks of one run that read the same input (rows of one group), their
    cells side by side."""

    group: int
    rows: slice | np.ndarray  # source rows of the unfolded input
    cells_t: np.ndarray  # [M, len(rows)]: the read columns' cells, one row each (uint8 for
    # integer reads, else float32)
    target: np.ndarray  # int64 [M]: output column of each read column
    factor: np.ndarray  # int64 [M]: signed significance of the slice each column holds
    full_scale: np.ndarray  # int64 [M]: the ADC full scale, the largest sum of the read
    offset_columns: slice | np.ndarray | None  # output columns with the offset correction
    # differential sensing: each column's cells |G+| + |G-| (for PCM-style read noise)
    magnitude_t: np.ndarray | None = None


@dataclass
class LayerPlan:
    """Quant: one run of a layer, its reads one per input they take."""

    layer: CrossbarLayer
    array: Array
    reads: list[ReadPlan] = field(default_factory=list)


def row_indices(indices: Indices, store) -> slice | np.ndarray:
    if isinstance(indices, Span):
        return slice(indices.start, indices.stop)
    return np.asarray(indices.entries(store), dtype=np.int64)


def index_array(indices: Indices, store) -> np.ndarray:
    if isinstance(indices, Span):
        return np.arange(indices.start, indices.stop, dtype=np.int64)
    return np.asarray(indices.entries(store), dtype=np.int64)


class Executor:
    """Runs one compiled program; programming happens once, at construction."""

    def __init__(
        self,
        program: Program,
        settings: NoiseSettings | None = None,
        seeds: Seeds | None = None,
        noisy_layers: frozenset[str] | None = None,
    ):
        """`noisy_layers`: the crossbar layers that get the profile's device and read
        noise (None: all); the others run as `quant` (for per-layer sensitivity)."""
        self.program = program
        self.noisy_layers = noisy_layers
        # the fields a profile leaves to the hardware (bits, ADC range) filled in from it
        self.settings = settings = (settings or NoiseSettings()).resolved(program.hardware)
        self.seeds = seeds or Seeds.derive(0)
        if not program.phases and any(True for _ in program.layers()):
            raise XbarcError(
                "the program has no schedule (no phases)",
                hint="compile it through the allocate pass (the default pipeline does)",
            )
        if settings.reads_noisy and not settings.quantized:
            raise XbarcError(
                f"profile {settings.profile!r}: input, read and output noise need "
                "quantized = true (they act on the DAC's and ADC's signals)",
                hint='start the profile from quant (base = "quant")',
            )
        hardware = program.hardware
        assert settings.dac_bits is not None and settings.adc_bits is not None  # resolved
        self.dac_bits: int = settings.dac_bits
        adc_bits = settings.adc_bits
        self.adc_levels = 0 if isinstance(adc_bits, str) else 2**adc_bits - 1  # "exact": 0
        self.differential_adc = settings.quantized and settings.adc_placement == "differential"
        if self.differential_adc:
            self._check_differential(adc_bits)
            if isinstance(adc_bits, int):  # a signed ADC: as many levels either side of 0
                self.adc_levels = 2 ** (adc_bits - 1) - 1
        if self.adc_levels == 0 and (settings.cells_noisy or settings.reads_noisy):
            raise XbarcError(
                f'profile {settings.profile!r}: a lossless ADC (adc_bits = "exact") sums '
                "exact integers, which noisy cells and reads do not give",
                hint="give the ADC bits, e.g. --set adc_bits=8",
            )
        self.adc_range = settings.adc_range
        self._check_calibration()
        self._chip = None
        if settings.cells_noisy:
            cell = hardware.cell
            self._chip = Chip(settings, self.seeds, cell.bits, cell.g_min_us, cell.g_max_us)
        self.layer_reads_noisy = False  # whether the layer being read gets read noise
        # calibration's hook: called with (layer, read sums [M, P], ADC full scales [M])
        # before each batch of reads passes through the ADC
        self.on_read_sums: Callable[[str, np.ndarray, np.ndarray], None] | None = None
        self._reads = 0  # noisy reads so far: each one's draws are keyed by its number
        self.cell_max = 2**hardware.cell.bits - 1
        self.digit_max = min(2**hardware.dac.slice_bits, 2 ** (self.dac_bits - 1)) - 1
        # quant: element types of a read's cells, DAC digits and partial sums
        self.cell_type, self.digit_type, self.sum_type = self._read_types()
        self.plans, matrices = self._program_chip()
        self._ideal: IdealGraph | None = None
        # quant: memory reused from layer to layer (the inputs' slices, unfolded, the
        # partial sums of reads, an accumulator): fresh arrays would take their page
        # faults in the kernels' threads, where they cost ~20x more than a memset here
        self._workspace: dict[Hashable, np.ndarray] = {}
        self._sole_consumer = sole_consumers(program)
        if not self.settings.quantized:
            self.effective_weights = {
                name: self._dequantized(program.array(name), matrix)
                for name, matrix in matrices.items()
            }
            self._ideal = IdealGraph(program, self.effective_weights)

    def _read_types(self) -> tuple[type, type, type]:
        """The element types of quantized reads (cells, DAC digits, partial sums), the
        fastest exact ones: integer GEMMs for cells of at most 8 bits (uint8) and DAC steps
        of at most 7 bits (int8) where the machine's integer kernel is exact, else float32
        while the largest sum of a read stays below 2^24, else float64. Noisy cells or reads
        are not integers: float32 (float64 as before). (`ideal` reads no cells this way:
        float32, without probing the integer kernel.)"""
        settings = self.settings
        if not settings.quantized:
            return np.float32, np.float32, np.float32
        hardware = self.program.hardware
        digit_bits = min(hardware.dac.slice_bits, self.dac_bits - 1)
        cell_bits = max((s.bits for a in self.program.arrays for s in a.slices), default=0)
        # noisy cells and reads are real numbers, differential reads signed: neither is a
        # uint8 x int8 GEMM
        integer = not (
            settings.cells_noisy or settings.reads_noisy or settings.adc_placement == "differential"
        )
        if integer and cell_bits <= 8 and digit_bits <= 7 and kernels.integer_matmul_exact():
            return np.uint8, np.int8, np.int32
        rows = max(tile_type.rows for tile_type in hardware.tile_types)
        if (2**digit_bits - 1) * (2**cell_bits - 1) * rows < 2**24:
            return np.float32, np.float32, np.float32
        return np.float64, np.float64, np.float64

    def _check_differential(self, adc_bits) -> None:
        if isinstance(adc_bits, int) and adc_bits < 2:
            raise XbarcError(
                'adc_placement = "differential" needs a signed ADC of at least 2 bits',
                hint="--set adc_bits=2 or more",
            )
        offset = [array.name for array in self.program.arrays if array.encoding == "offset"]
        if offset:
            raise XbarcError(
                f'adc_placement = "differential" senses differential pairs, but array '
                f"@{offset[0]} uses offset encoding",
                hint="compile with --encoding differential, or keep adc_placement=polarity",
            )

    def _calibrated(self, layer: str) -> LayerRange | None:
        calibration = self.program.calibration
        return None if calibration is None else calibration.of(layer)

    def _check_calibration(self) -> None:
        """Calibrated converter ranges need the program's calibration for every layer."""
        wanted = [
            what
            for what, mode in (
                ("input_range", self.settings.input_range),
                ("adc_range", self.adc_range),
            )
            if mode == "calibrated"
        ]
        if not wanted or not self.settings.quantized:
            return
        calibration = self.program.calibration
        missing = [
            layer.name
            for layer in self.program.layers()
            if calibration is None or calibration.of(layer.name) is None
        ]
        if missing:
            raise XbarcError(
                f'{wanted[0]} = "calibrated", but the program has no calibrated range for '
                f"layer @{missing[0]}",
                hint="run xbarc calibrate PROGRAM --data SAMPLES.npz first",
            )

    # --- programming ----------------------------------------------------------------------

    def _is_noisy(self, layer: str) -> bool:
        return self.noisy_layers is None or layer in self.noisy_layers

    def _program_noisy(self, tile: int, state: np.ndarray, blocks: list[Block]) -> None:
        """Program `tile` to `state` through the device models, in place; the blocks of
        layers outside `noisy_layers` keep their targets."""
        assert self._chip is not None
        targets = state.copy()
        state[...] = self._chip.program(tile, targets)
        for block in blocks:
            if not self._is_noisy(block.array):
                programmed_region(state, block)[...] = programmed_region(targets, block)

    def _program_chip(self) -> tuple[dict[str, list[LayerPlan]], dict[str, np.ndarray]]:
        """Write every phase's tiles and read each run off them: `quant` takes its read
        plans, `ideal` adds what it reads into each layer's matrix (in level units)."""
        program = self.program
        hardware = program.hardware
        arrays = {array.name: array for array in program.arrays}
        blocks_on: dict[int, list[Block]] = defaultdict(list)
        for block in program.blocks:
            blocks_on[block.vtile].append(block)
        tiles: dict[int, np.ndarray] = {}
        block_cells = BlockCells(program, self.settings.quantized)
        plans: dict[str, list[LayerPlan]] = defaultdict(list)
        matrices: dict[str, np.ndarray] = {}
        chip = ChipState()  # later phases may read tiles where earlier ones left them
        where = chip.tile_of
        for phase in program.phases:
            for write in phase.writes:
                chip.write(write.vtile, write.tile)
                tile_type = hardware.tile_type_of(write.tile)
                state = tiles.get(write.tile)
                if state is None:
                    state = np.zeros((tile_type.rows, tile_type.cols), dtype=np.float32)
                    tiles[write.tile] = state
                state[...] = 0.0  # programming erases the tile
                for block in blocks_on[write.vtile]:
                    programmed_region(state, block)[...] = block_cells.cells(block)
                if self._chip is not None:
                    self._program_noisy(write.tile, state, blocks_on[write.vtile])
            for run in phase.runs:
                layer = program.layer(run.layer)
                array = arrays[layer.name]
                run_blocks = [program.blocks[i] for cycle in run.cycles for i in cycle.blocks]
                if self.settings.quantized:
                    reads = self._read_plans(array, run_blocks, tiles, where)
                    plans[layer.name].append(LayerPlan(layer, array, reads))
                    continue
                matrix = matrices.get(layer.name)
                if matrix is None:
                    shape = (array.groups, array.rows, array.cols)
                    matrix = matrices[layer.name] = np.zeros(shape, dtype=np.float32)
                self._add_reads(matrix, array, run_blocks, tiles, where)
        return plans, matrices

    def _read_plans(
        self, array: Array, blocks: list[Block], tiles: dict[int, np.ndarray], where
    ) -> list[ReadPlan]:
        """One read plan per input a run's blocks read (a group and its source rows):
        every block's cells side by side, each read column keeping its own slice."""
        store = self.program.store
        max_input = 2**self.program.hardware.dac.slice_bits - 1
        by_input: dict[tuple, list[Block]] = defaultdict(list)
        for block in blocks:
            by_input[(block.group, block.rows)].append(block)
        reads = []
        for (group, rows), members in by_input.items():
            targets, factors, full_scales, offset_columns = [], [], [], []
            for block in members:
                piece = array.slices[block.slice]
                columns = index_array(block.cols, store)
                sign = 1 if piece.polarity == "+" else -1
                largest = max_input * (2**piece.bits - 1) * len(block.rows)
                calibrated = self._calibrated(array.name)
                if self.adc_range == "calibrated" and calibrated is not None:
                    largest = max(1, math.ceil(calibrated.adc_range * largest))
                targets.append(columns)
                factors.append(np.full(len(columns), sign * 2**piece.shift, dtype=np.int64))
                full_scales.append(np.full(len(columns), largest, dtype=np.int64))
                if array.encoding == "offset" and piece.shift == 0:
                    offset_columns.append(columns)
            regions = [programmed_region(tiles[where[b.vtile]], b) for b in members]
            reads.append(
                ReadPlan(
                    group,
                    row_indices(rows, store),
                    np.ascontiguousarray(
                        np.concatenate(regions, axis=1).T,
                        dtype=self.cell_type,
                    ),
                    np.concatenate(targets),
                    np.concatenate(factors),
                    np.concatenate(full_scales),
                    as_slice(np.unique(np.concatenate(offset_columns))) if offset_columns else None,
                )
            )
        if self.differential_adc:
            reads = [differential(read) for read in reads]
        return reads

    def _add_reads(
        self, matrix: np.ndarray, array: Array, blocks: list[Block], tiles, where
    ) -> None:
        """Ideal reads are linear, so the partial sums of a layer's runs add up to one
        matrix per group: each block's programmed cells times its slice's signed
        significance, added at its rows and columns (the offset of offset encoding is taken
        off where the digital correction would take it off)."""
        store = self.program.store
        offset = 2.0 ** (array.weight_bits - 1)
        for block in blocks:
            piece = array.slices[block.slice]
            significance = (1 if piece.polarity == "+" else -1) * 2.0**piece.shift
            region = programmed_region(tiles[where[block.vtile]], block) * significance
            if array.encoding == "offset" and piece.shift == 0:
                region = region - offset
            rows = row_indices(block.rows, store)
            cols = as_slice(index_array(block.cols, store))
            if isinstance(rows, slice) and isinstance(cols, slice):
                matrix[block.group, rows, cols] += region
            else:
                matrix[block.group][np.ix_(np.r_[rows], np.r_[cols])] += region

    # --- running --------------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All graph outputs for one batch of inputs."""
        outputs = self.program.outputs
        if self._ideal is not None:
            return dict(zip(outputs, self._ideal.run(feeds, outputs), strict=True))
        values = self._run_graph(feeds, donate=True)
        return {name: values[name] for name in outputs}

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every value of the graph (inputs, layer and op results) for one batch."""
        return self._run_graph(feeds, donate=False)

    def _run_graph(self, feeds: dict[str, np.ndarray], donate: bool) -> dict[str, np.ndarray]:
        """The values of the graph for one batch. With `donate`, digital ops may overwrite
        an input that nothing else reads (a layer's output going into a Relu), so values
        other than the outputs may be clobbered."""
        values: dict[str, np.ndarray] = dict(feeds)
        if self._ideal is not None:
            names = [
                name
                for op in self.program.ops
                for name in ((op.output,) if isinstance(op, CrossbarLayer) else op.outputs)
                if name and name not in values
            ]
            values.update(zip(names, self._ideal.run(feeds, names), strict=True))
            return values
        store = self.program.store
        owned: set[str] = set()  # values whose arrays are ours alone: safe to overwrite
        for op in self.program.ops:
            if isinstance(op, CrossbarLayer):
                values[op.output] = self.run_layer(op, values[op.input])
                owned.add(op.output)
                continue
            donated_names = {
                index: operand.name
                for index, operand in enumerate(op.inputs)
                if donate
                and isinstance(operand, Value)
                and operand.name in owned
                and self._sole_consumer.get(operand.name) == id(op)
            }
            results = run_digital_op(op, values, store, frozenset(donated_names))
            for name, result in zip(op.outputs, results, strict=True):
                if name:
                    values[name] = result
                    # a result written into a donated buffer is ours too
                    if any(result is values[donor] for donor in donated_names.values()):
                        owned.add(name)
        return values

    def run_layer(self, layer: CrossbarLayer, x: np.ndarray) -> np.ndarray:
        """One crossbar layer on its input, read by read (`quant`)."""
        self.layer_reads_noisy = self.settings.reads_noisy and self._is_noisy(layer.name)
        x = np.asarray(x, dtype=np.float32)
        plans = self.plans.get(layer.name, [])
        if not plans:
            raise XbarcError(f"layer @{layer.name} has no runs in the schedule")
        columns, restore = layer_columns(layer, x.shape)
        accumulated = self._accumulate_quantized(plans, columns, x)
        return self._plus_bias(layer, restore(accumulated))

    def _plus_bias(self, layer: CrossbarLayer, result: np.ndarray) -> np.ndarray:
        """The result with the layer's bias added (in place: the result is ours)."""
        result = result.astype(np.float32, copy=False)
        if layer.bias is not None:
            bias = self.program.store[layer.bias]
            shape = (1, -1) + (1,) * (result.ndim - 2) if layer.geometry else (-1,)
            result += bias.reshape(shape)
        return result

    def _accumulate_quantized(self, plans, columns, x: np.ndarray) -> np.ndarray:
        """Integer accumulation of bit-serial reads through the ADC, [groups, cols, P].

        The DAC's full scale is the largest input magnitude; inputs are quantized before
        they are unfolded (the padding quantizes to zero either way). Integer sums do not
        depend on their order, so reads are taken group by group and their partial sums
        buffered, to pass through the ADC kernel many reads at a time."""
        array = plans[0].array
        slice_bits = self.program.hardware.dac.slice_bits
        digit_max = self.digit_max
        input_scale, inputs = self._dac_inputs(plans[0].layer.name, columns, x)
        if inputs:
            groups, _, patches = inputs[0][1][0].shape
        else:  # an all-zero input: nothing to read
            groups, _, patches = columns(x).shape
        adc_unit = self.adc_levels or 1
        offset = 2 ** (array.weight_bits - 1)
        reads = [read for plan in plans for read in plan.reads]
        scale = self.weight_scale(array)
        if not isinstance(scale, np.ndarray):
            scale = np.full((groups, array.cols), scale)
        result = kernels.touched((groups, array.cols, patches), np.float32)
        for group in range(groups):
            acc = self.workspace("accumulator", (array.cols, patches), np.int64)
            acc.fill(0)
            readout = ReadOut(self, acc, plans[0].layer.name)
            corrections: dict[tuple | bytes, tuple[slice | np.ndarray, np.ndarray]] = {}
            for sign, unfolded in inputs:
                for read in reads:
                    if read.group != group:
                        continue
                    for j, bits in enumerate(unfolded):
                        driven = bits[group, read.rows]  # [rows, P]
                        significance = sign << (j * slice_bits)
                        if read.offset_columns is not None:
                            # the digital offset correction needs the input sums
                            sums = driven.sum(axis=0, dtype=sum_type(driven, digit_max))
                            if not sums.any():
                                continue
                            key = index_key(read.offset_columns)
                            total = corrections.setdefault(
                                key, (read.offset_columns, np.zeros(patches, np.int64))
                            )[1]
                            total += significance * sums.astype(np.int64)
                        elif not driven.any():
                            continue
                        readout.add(read, driven, read.factor * significance)
            readout.flush()
            for offset_columns, total in corrections.values():
                acc[offset_columns] -= offset * adc_unit * total
            column_scale = scale[group].astype(np.float64)
            kernels.dequantize(acc, adc_unit, input_scale, column_scale, result[group])
        return result

    def _dac_inputs(self, layer: str, columns, x: np.ndarray) -> tuple[float, list]:
        """The DAC's scale for `x` and its slices, unfolded: [(sign, [columns of slice j,
        least significant first, [groups, rows, P]])] for the signs that occur. The full
        scale is the batch's largest |x| (`dynamic`, an oracle), the layer's calibrated
        range (inputs beyond it clip) or a fixed number."""
        mode = self.settings.input_range
        if mode == "dynamic":
            peak = max(float(x.max()), -float(x.min())) if x.size else 0.0
        elif mode == "calibrated":
            calibrated = self._calibrated(layer)
            assert calibrated is not None  # checked at construction
            peak = calibrated.input_range
        else:
            peak = float(mode)
        input_scale = peak / (2 ** (self.dac_bits - 1) - 1) if peak > 0 else 1.0
        slice_bits = self.program.hardware.dac.slice_bits
        count = -(-(self.dac_bits - 1) // slice_bits)
        digits = self.digit_type
        planes = self.workspace("input slices", (2, count, *x.shape), digits)
        nonzero = kernels.dac_planes(x, input_scale, self.dac_bits, slice_bits, count, out=planes)
        inputs = []
        for sign, part, present in zip((1, -1), planes, nonzero, strict=True):
            if present:  # e.g. no negative inputs after a ReLU: those reads are skipped
                unfolded = [
                    columns(plane, lambda shape, key=(sign, j): self.workspace(key, shape, digits))
                    for j, plane in enumerate(part)
                ]
                inputs.append((sign, unfolded))
        return input_scale, inputs

    def analog_read(
        self,
        cells_t: np.ndarray,
        driven: np.ndarray,
        out: np.ndarray,
        magnitude_t: np.ndarray | None = None,
    ) -> np.ndarray:
        """out = cells_t @ driven as the analog read gives it, the DAC's output with input
        noise; returns the standard deviation of the read and output noise each column sum
        gets before the ADC (`devices.read_noise_sigma`, [1, P] or [M, P]), which the
        read-out draws for many reads at once. Every draw is keyed by the read seed and a
        count of draws in the executor's life (`gaussian`): the same seeds and runs give
        the same bits on any thread count."""
        settings = self.settings
        if settings.input_noise > 0:
            noisy = self.workspace("noisy drive", driven.shape, np.float32)
            noisy[...] = driven
            sigma_in = np.full((1, driven.shape[1]), settings.input_noise * self.digit_max)
            gaussian.add_noise(noisy, sigma_in, key=self.next_read_key())
            driven = noisy
        kernels.float_matmul(cells_t, driven, out)
        magnitude = cells_t if magnitude_t is None else magnitude_t
        return read_noise_sigma(settings, driven, magnitude, self.cell_max, self.digit_max)

    def next_read_key(self) -> int:
        self._reads += 1
        return gaussian.stream_key(self.seeds.read, self._reads)

    def workspace(self, name: Hashable, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """An array of `shape` in the memory kept under `name`, grown when too small; its
        contents are whatever was left there."""
        size = math.prod(shape)
        buffer = self._workspace.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._workspace[name] = kernels.touched((size,), dtype)
        return buffer[:size].reshape(shape)

    def _dequantized(self, array: Array, matrix: np.ndarray) -> np.ndarray:
        """An ideal layer's matrix times the array's scale: float32 [groups, rows, cols]."""
        scale = self.weight_scale(array)
        if isinstance(scale, np.ndarray):  # per column: [groups, cols]
            scale = scale[:, None, :]
        return matrix * scale

    def weight_scale(self, array: Array) -> np.ndarray | float:
        """The array's dequantization scale: a number, or one per column as [groups, cols]."""
        if isinstance(array.scale, Const):
            return self.program.store[array.scale.name]
        return array.scale


# Partial sums buffered before they pass through the ADC together (float32 values: 4 MB,
# so that they are still in the cache).
READOUT_BUDGET = 1 << 20


class ReadOut:
    """Reads of one group whose partial sums wait in the executor's scratch buffer to pass
    through the ADC in one kernel call (a parallel kernel launch costs as much as reading
    out a small read)."""

    def __init__(self, executor: Executor, acc: np.ndarray, layer: str):
        self.executor = executor
        self.acc = acc
        self.layer = layer
        self.used = 0
        self.columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.sigmas: list[tuple[np.ndarray, int]] = []  # noisy reads: (sigma, columns)
        self.dtype = executor.sum_type

    def add(self, read: ReadPlan, driven: np.ndarray, factor: np.ndarray) -> None:
        """Read `driven` [rows, P] through `read`'s cells, with its columns' factors."""
        executor = self.executor
        size = len(read.target) * driven.shape[1]
        if self.used and self.used + size > READOUT_BUDGET:
            self.flush()
        room = (max(READOUT_BUDGET, size),)
        buffer = executor.workspace("partial sums", room, self.dtype)
        partial = buffer[self.used : self.used + size].reshape(len(read.target), -1)
        if executor.cell_type == np.uint8:  # integer reads
            kernels.integer_matmul(read.cells_t, np.ascontiguousarray(driven), partial)
        elif executor.layer_reads_noisy:
            sigma = executor.analog_read(read.cells_t, driven, partial, read.magnitude_t)
            self.sigmas.append((sigma, len(read.target)))
        else:  # float reads of integers, exact in any order (sums below 2^24 or 2^53)
            kernels.float_matmul(read.cells_t, driven, partial)
        self.columns.append((read.target, factor, read.full_scale))
        self.used += size

    def flush(self) -> None:
        if not self.used:
            return
        executor = self.executor
        targets, factors, full_scales = (
            np.concatenate(parts) for parts in zip(*self.columns, strict=True)
        )
        buffer = executor.workspace("partial sums", (self.used,), self.dtype)
        partial = buffer.reshape(len(targets), -1)
        if self.sigmas:  # the reads' noise, drawn for all of them in one kernel call
            sigma, rows = stacked_sigmas(self.sigmas)
            gaussian.add_noise(partial, sigma, rows, key=executor.next_read_key())
        if executor.adc_range == "dynamic":  # an oracle: each read's own largest sum
            start = 0
            full_scales = full_scales.copy()
            for target, _, _ in self.columns:
                stop = start + len(target)
                full_scales[start:stop] = max(1, math.ceil(float(partial[start:stop].max())))
                start = stop
        if executor.on_read_sums is not None:
            executor.on_read_sums(self.layer, partial, full_scales)
        kernels.adc_accumulate(
            partial,
            targets,
            factors,
            full_scales,
            executor.adc_levels,
            self.acc,
            signed=executor.differential_adc,
        )
        self.used = 0
        self.columns = []
        self.sigmas = []


def stacked_sigmas(sigmas: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The sigmas of consecutive reads (each [1, P], shared by the read's columns, or one
    row per column) as one array of distinct rows, and the row each read column uses."""
    rows, index, count = [], [], 0
    for sigma, columns in sigmas:
        rows.append(sigma)
        if len(sigma) == 1:
            index.append(np.full(columns, count, dtype=np.int64))
        else:
            index.append(np.arange(count, count + columns, dtype=np.int64))
        count += len(sigma)
    return np.concatenate(rows), np.concatenate(index)


class BlockCells:
    """The values a block's cells are programmed to, per profile.

    `quant`: the slice's bits of the integer level. `ideal`: the same bits plus the rest of
    the real weight, v - level (at most half a level), added to the least significant slice
    that holds the weight (a compacted program may hold only some slices of a weight), so
    the cells still sum to v exactly; a weight with no cell at all (a zero level dropped by
    sparse mapping) loses what is below half a level. The slices of one weight block come
    one after another, so the block's weights are kept from one slice to the next."""

    def __init__(self, program: Program, quantized: bool):
        self.program = program
        self.store = program.store
        self.quantized = quantized
        self.arrays = {array.name: array for array in program.arrays}
        self._last: tuple | None = None
        self._weights: tuple | None = None
        self._lowest: dict[str, LowestSlices] = {}

    def cells(self, block: Block) -> np.ndarray:
        array = self.arrays[block.array]
        piece = array.slices[block.slice]
        levels, rest = self.weights(array, block)
        cells = slice_cells(levels, piece, array.weight_bits, array.encoding).astype(np.float32)
        if rest is not None:  # ideal: the rest of each weight, in its home slice
            home, remainder = rest
            takes = home[piece.polarity] == piece.shift
            sign = 1.0 if piece.polarity == "+" else -1.0
            cells[takes] += (sign / 2**piece.shift * remainder[takes]).astype(np.float32)
        return cells

    def weights(self, array: Array, block: Block):
        """The block's integer levels and, in ideal, where each weight's rest goes (per
        polarity, the shift of the slice that takes it, -1 for none) and the rest itself
        (v - level, v the real weight over the scale); computed once for the slices of
        one weight block."""
        key = (block.array, block.group, block.rows, block.cols)
        if key == self._last and self._weights is not None:
            return self._weights
        rows = row_indices(block.rows, self.store)  # a slice where it can: a view
        cols = index_array(block.cols, self.store)
        levels = self.store[array.levels][block.group][rows][:, cols].astype(np.int64)
        rest = None
        if not self.quantized:
            values = self.store[array.values][block.group][rows][:, cols].astype(np.float64)
            scale = array.scale
            if isinstance(scale, Const):
                values = values / self.store[scale.name][block.group][cols].astype(np.float64)
            else:
                values = values / np.float64(scale)
            lowest = self._lowest.get(array.name)
            if lowest is None:
                lowest = self._lowest[array.name] = LowestSlices(self.program, array)
            remainder = values - levels
            rest = (lowest.home(block.group, rows, cols, levels, remainder), remainder)
        self._last, self._weights = key, (levels, rest)
        return self._weights


class LowestSlices:
    """Per weight of an array, the shift of the least significant slice of each polarity
    that a block holds (-1: none), for the rest of an ideal weight to go to."""

    def __init__(self, program: Program, array: Array):
        store = program.store
        self.array = array
        self.full: dict[str, int] = {}  # polarity -> lowest shift, when blocks hold every weight
        self.maps: dict[str, np.ndarray] = {}
        polarities = sorted({piece.polarity for piece in array.slices})
        blocks = [b for b in program.blocks if b.array == array.name]
        covered = {piece.index: 0 for piece in array.slices}
        for block in blocks:
            covered[block.slice] += len(block.rows) * len(block.cols)
        total = array.groups * array.rows * array.cols
        if all(count >= total for count in covered.values()):  # dense: scalars will do
            for polarity in polarities:
                shifts = [p.shift for p in array.slices if p.polarity == polarity]
                self.full[polarity] = min(shifts)
            return
        none = np.iinfo(np.int16).max
        for polarity in polarities:
            self.maps[polarity] = np.full((array.groups, array.rows, array.cols), none, np.int16)
        for block in blocks:
            piece = array.slices[block.slice]
            region = np.ix_(index_array(block.rows, store), index_array(block.cols, store))
            target = self.maps[piece.polarity][block.group]
            target[region] = np.minimum(target[region], piece.shift)
        for lowest in self.maps.values():
            lowest[lowest == none] = -1

    def home(self, group, rows, cols, levels, remainder) -> dict[str, np.ndarray]:
        """Per polarity, the shift of the slice that takes each weight's remainder (-1
        where that polarity does not take it): + for positive weights, - for negative
        ones, else whichever the weight has a slice of."""
        shape = levels.shape
        lowest = {}
        for polarity in ("+", "-"):
            if polarity in self.full:
                lowest[polarity] = np.full(shape, self.full[polarity])
            elif polarity in self.maps:
                lowest[polarity] = self.maps[polarity][group][rows][:, cols]
            else:
                lowest[polarity] = np.full(shape, -1)
        plus_first = (levels > 0) | ((levels == 0) & (remainder >= 0))
        has_plus, has_minus = lowest["+"] >= 0, lowest["-"] >= 0
        to_plus = (plus_first & has_plus) | (~plus_first & ~has_minus & has_plus)
        to_minus = ~to_plus & has_minus
        return {
            "+": np.where(to_plus, lowest["+"], -1),
            "-": np.where(to_minus, lowest["-"], -1),
        }


def differential(read: ReadPlan) -> ReadPlan:
    """`read` sensed differentially: each + column and the - column of the same output and
    significance become one signed column, their cells' difference (the currents subtract
    before the ADC); a column without its partner stays as it is."""
    dtype = read.cells_t.dtype  # float: signed differences (float64 for large sums)
    partner: dict[tuple[int, int], int] = {}
    for m, (target, factor) in enumerate(zip(read.target, read.factor, strict=True)):
        if factor < 0:
            partner[(int(target), int(-factor))] = m
    rows, magnitudes, keep = [], [], []
    paired = set()
    for m, (target, factor) in enumerate(zip(read.target, read.factor, strict=True)):
        if factor < 0:
            continue
        other = partner.get((int(target), int(factor)))
        cells = read.cells_t[m]
        if other is None:
            rows.append(cells)
            magnitudes.append(np.abs(cells))
        else:
            paired.add(other)
            opposite = read.cells_t[other]
            rows.append(cells - opposite)
            magnitudes.append(np.abs(cells) + np.abs(opposite))
        keep.append(m)
    for m in range(len(read.target)):
        if read.factor[m] < 0 and m not in paired:  # a - column alone
            rows.append(read.cells_t[m])
            magnitudes.append(np.abs(rows[-1]))
            keep.append(m)
    order = np.asarray(keep, dtype=np.int64)
    return ReadPlan(
        read.group,
        read.rows,
        np.ascontiguousarray(np.stack(rows), dtype=dtype),
        read.target[order],
        read.factor[order],
        read.full_scale[order],
        read.offset_columns,
        np.ascontiguousarray(np.stack(magnitudes), dtype=dtype),
    )


def programmed_region(state: np.ndarray, block: Block) -> np.ndarray:
    """The cells of a programmed tile that hold `block`."""
    return state[
        block.row_offset : block.row_offset + len(block.rows),
        block.col_offset : block.col_offset + len(block.cols),
    ]


def sum_type(driven: np.ndarray, digit_max: int) -> type:
    """The narrowest exact type for column sums of `driven` [rows, P] (digits of at most
    `digit_max`): narrow sums are the fast ones."""
    if driven.dtype.kind == "f":
        return driven.dtype.type  # exact: float32 reads keep every sum below 2^24
    return np.int16 if driven.shape[0] * digit_max < 2**15 else np.int32


def index_key(selection: slice | np.ndarray) -> tuple | bytes:
    """A dictionary key for a slice (from `as_slice`) or an index array."""
    if isinstance(selection, slice):
        return (selection.start, selection.stop)
    return selection.tobytes()


def as_slice(columns: np.ndarray) -> np.ndarray | slice:
    """A run of consecutive columns as a slice (a view instead of a fancy-index copy)."""
    if len(columns) and columns[-1] - columns[0] == len(columns) - 1:
        return slice(int(columns[0]), int(columns[-1]) + 1)
    return columns


def layer_columns(layer: CrossbarLayer, shape: tuple[int, ...]):
    """How a layer's input of `shape` drives the crossbar rows: a function from an array of
    that shape to its columns [groups, rows, P] (one column per patch, P = batch x pixels;
    where they are not a view of the input, they go into `memory(shape)` if given), and the
    function that lays the accumulated [groups, cols, P] out as the layer's output."""
    geometry = layer.geometry
    groups = layer.groups
    if layer.kind == "conv":
        assert geometry is not None
        batch = shape[0]
        out_spatial = conv_output_spatial(
            shape[2:], geometry.kernel, geometry.strides, geometry.pads, geometry.dilations
        )
        pointwise = all(k == 1 for k in geometry.kernel) and all(s == 1 for s in geometry.strides)

        def unfold(x: np.ndarray, memory: Memory | None = None) -> np.ndarray:
            if pointwise and not any(geometry.pads):  # the input planes (a view at batch 1)
                return channels_first(x, groups)
            shape = (groups, layer.rows, batch * math.prod(out_spatial))
            return kernels.unfold(
                x,
                geometry.kernel,
                geometry.strides,
                geometry.pads,
                geometry.dilations,
                groups,
                out=None if memory is None else memory(shape),
            )

        def image(acc: np.ndarray) -> np.ndarray:
            planes = acc.reshape(groups, layer.cols, batch, -1).transpose(2, 0, 1, 3)
            return planes.reshape(batch, groups * layer.cols, *out_spatial)

        return unfold, image
    if layer.kind == "conv_transpose":
        assert geometry is not None
        batch, in_spatial = shape[0], shape[2:]
        cout_per_group = layer.cols // math.prod(geometry.kernel)

        def fold(acc: np.ndarray) -> np.ndarray:
            return kernels.fold(
                np.ascontiguousarray(acc, dtype=np.float32),
                batch,
                in_spatial,
                cout_per_group,
                geometry.kernel,
                geometry.strides,
                geometry.pads,
                geometry.dilations,
                geometry.output_padding or (0,) * len(geometry.kernel),
                groups,
            )

        return lambda x, memory=None: channels_first(x, groups), fold
    # Gemm / MatMul: each row of the input is one patch
    leading, features = shape[:-1], shape[-1]

    def rows(acc: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(acc[0].T).reshape(*leading, acc.shape[1])

    return lambda x, memory=None: x.reshape(-1, features).T[None], rows


def channels_first(x: np.ndarray, groups: int) -> np.ndarray:
    """[N, C, *spatial] -> [groups, C/groups, N*pixels]: a view at batch 1, else a copy."""
    batch, channels = x.shape[:2]
    planes = x.reshape(batch, groups, channels // groups, -1).transpose(1, 2, 0, 3)
    return planes.reshape(groups, channels // groups, -1)


def sole_consumers(program: Program) -> dict[str, int]:
    """Values read by exactly one op, once, and not graph outputs: id of that op. Such a
    value's array can be handed to its consumer to overwrite (no view of it can outlive it)."""
    readers: dict[str, list[int]] = defaultdict(list)
    for op in program.ops:
        names = (
            [op.input]
            if isinstance(op, CrossbarLayer)
            else [operand.name for operand in op.inputs if isinstance(operand, Value)]
        )
        for name in names:
            readers[name].append(id(op))
    outputs = set(program.outputs)
    return {name: ops[0] for name, ops in readers.items() if len(ops) == 1 and name not in outputs}


def run_digital_op(
    op: DigitalOp, values: dict[str, np.ndarray], store, donated: frozenset[int] = frozenset()
) -> list:
    from xbarc.runtime.digital import run_digital

    inputs: list[np.ndarray | None] = []
    for operand in op.inputs:
        if operand is None:
            inputs.append(None)
        elif isinstance(operand, Value):
            inputs.append(values[operand.name])
        else:
            inputs.append(store[operand.name])
    return run_digital(op, inputs, lambda name: store[name], donated=donated)
