"""The executor: program a simulated chip with a compiled program and run its schedule.

    Executor(program, load_profile("rram"), Seeds.derive(3)).run({"x": batch}) -> {"y": result}

The interpreter: it walks the schedule and calls the modules that do the work, which
take arrays and numbers (the kernels) or the program's blocks (the rest):
- `chip`: programming walks the phases; each write erases a physical tile and sets the
  cells of every block on the written virtual tile (`ProgrammedTiles`);
- `reads`: each layer run of a phase is then read off the programmed tiles (never from the
  weights directly, so a mapping bug shows up as a wrong answer): *read plans* in `quant`
  (the blocks of the run grouped by the input they read, their cells side by side, and
  per read column the output column, signed significance and ADC full scale), one
  effective matrix per layer in `ideal`; and the read-out through the ADC (`ReadOut`);
- `patches`: a layer's input unfolded into the columns that drive the rows, and back;
- `kernels`: the array kernels (im2col, DAC, ADC, GEMMs), Numba beside numpy;
- `digital`: the digital ops between crossbar layers, on the host.

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
  in float32: one `noisy_read_accumulate` call per layer and input sign reads every read,
  slice and group off the sign's unfolded DAC levels, draws the noise of each conversion
  (keyed by the read seed, the batch, the read-out and the conversion's position, so the
  bits do not depend on the thread count) and converts it (`_accumulate_noisy`); the
  layers of a noisy chip left exact (`noisy_layers`) take the same kernel without draws,
  and give `quant`'s bits.

Layers combined from a basis (BasisN, `combine.py`) are read the same way, as a virtual
layer whose columns are the basis responses (s, k) of their input segments: the reads the
schedule names (each a basis block of one copy against one segment) through the DAC, the
cells and the ADC, then one batched float64 combine with the layer's coefficients instead
of the dequantization. In `ideal` the basis cells each segment read and the coefficients
make the layer's effective weights.

In `quant`, layers run in graph order, each over all its runs in phase order (phases are
batch-major: the whole batch passes each programming); digital ops run on the host in
between. A read is one GEMM over the whole batch: the read's cells [columns, rows] times
the input's DAC digits [rows, batch x patches], as an exact integer GEMM (uint8 cells,
int8 digits) where onnxruntime's integer kernel is exact on the machine, else in float32
(exact too: the sums stay below 2^24). Partial sums of many reads wait in a buffer and pass
through the ADC kernel together; integer sums do not depend on their order. Integer
reads whose ADC full scales are known before the read (not `dynamic`), without offset
correction and with no observer of the partial sums but a `ReadSpread` or `ReadFractions`,
take a faster way to the same bits:
one `sparse_read_accumulate` call per input sign sums each read column's non-zero cells
times their rows' digits, for every slice, read and group of the layer at once, and converts
each sum as it is made (no Python per read, no zero cell multiplied, no buffer of partial
sums). Bit-serial ones (DAC steps of at most 2 bits, the faithful default) take the bit
planes instead (`bitplane_accumulate`): each input segment packed once per run, 64 rows a
word and bit plane, and each read column's sum a weighted count of the bits set in both
an input word and its cells' bit planes (AND + popcount), converted in the same pass;
the sparse kernel stays for layers where it is measured faster (`prefers_sparse`).
Those of one input bit a step whose reads drive at most 10 rows (depthwise 3x3
convolutions, single-channel stems) look their read-outs up instead
(`depthwise_accumulate`): per input segment and output, a table of what its columns add
for every pattern of one input plane's bits on its rows, made once per layer, indexed
with patterns made straight from the layer's input. For a whole layer (no basis combine,
no ConvTranspose; for the tables, one sign of inputs present, as after a ReLU) both
kernels write the layer's output themselves (`bitplane_finish`, `depthwise_finish`):
dequantized as `dequantize_items` does it, items first (the Relu after it runs in place)
and with the layer's float32 bias added (`_fused_bias`), the same bits, with no int64
accumulator filled, added to and read back.
The other exact integer reads take the fused path where they can (`_accumulate_fused`): the
engine measured fastest for the layer's shape (`kernels/engines.toml`), the fused kernel
(`fused_read_accumulate`: the digits of each tile of patches gathered straight from the
layer's input, no unfolded copy, all reads converted while in the cache), one integer GEMM
per layer (`gemm_read_accumulate`: the digits gathered, onnxruntime's VNNI kernels, then
the ADC kernel), the sparse one or read by read; their output goes straight into the
layer's image layout (`_finish_items`). Under a `ReadSpread` observer (the ADC report of
`xbarc run` and `eval`) the bit-plane, sparse and fused paths stay: `observed_reads`
replays the batches of read sums `ReadOut` would have shown it and a side kernel counts
the sample it would have taken, from the layer's own packed planes or unfolded levels;
calibration's `ReadFractions` the same, every sum counted; any other observer of exact
reads takes them read by read.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Hashable

import numpy as np

from xbarc import progress
from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import (
    Array,
    Const,
    CrossbarLayer,
    DigitalOp,
    LayerRange,
    Op,
    Phase,
    Program,
    Region,
    Value,
    op_reads,
)
from xbarc.runtime import activation_kernels, gaussian
from xbarc.runtime.bitplane import bitplane_columns, prefers_sparse
from xbarc.runtime.chip import ProgrammedTiles
from xbarc.runtime.combine import (
    CombineTable,
    combine_responses,
    combine_table,
    combined_weights,
    response_targets,
)
from xbarc.runtime.control import run_control
from xbarc.runtime.depthwise import depthwise_columns
from xbarc.runtime.devices import Chip, read_noise_sigma, read_noise_terms
from xbarc.runtime.effective import IdealGraph, IdealLayers
from xbarc.runtime.kernels import adc, dac, engines, gemm, touched
from xbarc.runtime.kernels.bitplane import (
    BitplaneColumns,
    bitplane_accumulate,
    bitplane_finish,
    pack_inputs,
    runs_of,
)
from xbarc.runtime.kernels.depthwise import (
    DepthwiseColumns,
    depthwise_accumulate,
    depthwise_finish,
    one_entry_each,
)
from xbarc.runtime.kernels.fused import (
    FusedLayer,
    PatchGather,
    dequantize_items,
    fused_layer,
    fused_read_accumulate,
    gemm_read_accumulate,
    patch_gather,
)
from xbarc.runtime.kernels.noisy_read import (
    ADDITIVE,
    NO_READ_NOISE,
    NOISY_TALL,
    PCM,
    NoisyColumns,
    ReadNoise,
    noisy_columns,
    noisy_read_accumulate,
    observe_noisy_reads,
)
from xbarc.runtime.kernels.sparse_read import SparseColumns, sparse_read_accumulate
from xbarc.runtime.noise import NoiseSettings, Seeds
from xbarc.runtime.observed_reads import (
    ObservedCalls,
    ObservedLayer,
    count_bitplane,
    count_levels,
    observed_calls,
    observed_layer,
    segment_digits_bitplane,
    segment_digits_levels,
)
from xbarc.runtime.patches import layer_columns
from xbarc.runtime.read_spread import SAMPLE_EVERY, ReadFractions, ReadSpread
from xbarc.runtime.reads import (
    LayerPlan,
    ReadOut,
    ReadPlan,
    add_ideal_reads,
    index_key,
    read_plans,
    reads_sparsely,
    sparse_columns,
    sum_type,
)

# The read paths that count a `ReadSpread`'s or `ReadFractions`' sums beside their kernels
# (`_observe_bitplane`, `_observe_levels`); under such an observer any other path (but the
# noisy one) reads read by read.
OBSERVED_PATHS = frozenset({"bitplane", "sparse", "fused"})

# DAC steps of at most this many bits run as bit planes (`_bitplane_reads`).
BITPLANE_SLICE_BITS = 2


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
        self._device: Chip | None = None  # the device models that program noisy cells
        if settings.cells_noisy:
            cell = hardware.cell
            self._device = Chip(settings, self.seeds, cell.bits, cell.g_min_us, cell.g_max_us)
        self.layer_reads_noisy = False  # whether the layer being read gets read noise
        self._biased = False  # whether the layer being read had its bias added by its path
        # calibration's hook: called with (layer, read sums [M, P], ADC full scales [M])
        # before each batch of reads passes through the ADC
        self.on_read_sums: Callable[[str, np.ndarray, np.ndarray], None] | None = None
        # read noise is keyed by (read seed, the batch's number, the read-out's number in
        # the batch), so a batch draws the same noise in any process and after any others
        self._batch_key = 0  # the key of the batch being run (`start_batch`)
        self._reads = 0  # noisy read-outs of this batch so far
        self._batches = 0  # batches run so far: the number of the next one, by default
        self.cell_max = 2**hardware.cell.bits - 1
        self.digit_max = min(2**hardware.dac.slice_bits, 2 ** (self.dac_bits - 1)) - 1
        # quant: element types of a read's cells, DAC digits and partial sums
        self.cell_type, self.digit_type, self.sum_type = self._read_types()
        self._combines: dict[str, CombineTable] = {}  # BasisN: combined layer -> combine
        self.plans, matrices = self._program_chip()
        self._ideal: IdealGraph | None = None
        self._ideal_layers: IdealLayers | None = None
        # quant: memory reused from layer to layer (the inputs' slices, unfolded, the
        # partial sums of reads, an accumulator): fresh arrays would take their page
        # faults in the kernels' threads, where they cost ~20x more than a memset here
        self._workspace: dict[Hashable, np.ndarray] = {}
        self._sole_consumer = sole_consumers(program)
        # quant, integer reads: each layer's read columns in sparse form, built on its
        # first run (None: the layer is read read by read)
        self._sparse: dict[str, SparseColumns | None] = {}
        self._paths: dict[str, str] = {}  # quant: each layer's read path (`_read_path`)
        # a `ReadSpread` observer on the fast paths: each layer's reads as it sees them
        self._observed: dict[tuple[str, bool], ObservedLayer] = {}
        self._calls: dict[int, tuple[tuple, ObservedCalls]] = {}  # by id of the layout
        # quant, bit-serial integer reads: each layer's read columns as bit planes
        self._bitplane: dict[str, BitplaneColumns] = {}
        # quant, bit-serial reads of at most 10 rows: each layer's tables over input bit
        # patterns (None: taller reads), and its gather per input item shape
        self._depthwise: dict[str, DepthwiseColumns | None] = {}
        self._depthwise_gathers: dict[tuple[str, tuple[int, ...]], PatchGather] = {}
        # quant, exact integer reads on the fused path: each layer's read columns (None:
        # not fused), its gather per input item shape, and the engine per patch count
        self._fused: dict[str, SparseColumns | None] = {}
        self._fused_layers: dict[tuple[str, tuple[int, ...]], FusedLayer] = {}
        self.layer_engines: dict[tuple[str, int], str] = {}
        # noisy profiles: each layer's read columns for `noisy_read_accumulate`, built on
        # its first run (None: the layer is read read by read)
        self._noisy: dict[str, NoisyColumns | None] = {}
        if not self.settings.quantized:
            self.effective_weights = {
                layer: self._effective(layer, matrix) for layer, matrix in matrices.items()
            }
            if any(isinstance(op, DigitalOp) and op.regions for op in program.ops):
                # control flow runs on the host (a branch never taken need not even be
                # valid for these input shapes), each layer as a one-layer model
                self._ideal_layers = IdealLayers(self.effective_weights)
            else:
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
        if integer and cell_bits <= 8 and digit_bits <= 7 and gemm.integer_matmul_exact():
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

    def _adc_fraction(self, layer: str) -> float | None:
        """The ADC full scale of `layer`'s reads as a fraction of the largest sum a read
        can produce, when the profile takes the calibrated range (None: the largest sum)."""
        calibrated = self._calibrated(layer)
        if self.adc_range != "calibrated" or calibrated is None:
            return None
        return calibrated.adc_range

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

    def _program_chip(self) -> tuple[dict[str, list[LayerPlan]], dict[str, np.ndarray]]:
        """Write every phase's tiles and read each run off them: `quant` takes its read
        plans, `ideal` adds what it reads into each layer's matrix (in level units)."""
        program = self.program
        tiles = ProgrammedTiles(program, self.settings.quantized, self._device, self._is_noisy)
        max_input = 2**program.hardware.dac.slice_bits - 1
        plans: dict[str, list[LayerPlan]] = defaultdict(list)
        matrices: dict[str, np.ndarray] = {}
        writes = sum(len(phase.writes) for phase in program.phases)
        with progress.task("programming", total=writes, unit="tile write") as task:
            for number, phase in enumerate(program.phases):
                task.describe(f"phase {number + 1}/{len(program.phases)}")
                self._program_phase(phase, tiles, max_input, plans, matrices, task)
        return plans, matrices

    def _program_phase(
        self,
        phase: Phase,
        tiles: ProgrammedTiles,
        max_input: int,
        plans: dict[str, list[LayerPlan]],
        matrices: dict[str, np.ndarray],
        task: progress.AnyTask,
    ) -> None:
        """Write one phase's tiles (counting them in `task`) and read each of its runs
        off them, into `plans` (`quant`) or `matrices` (`ideal`)."""
        program = self.program
        tiles.write(phase.writes, task)
        for run in phase.runs:
            layer = program.layer(run.layer)
            array, combine = self._read_array(layer)
            run_reads = [
                (program.blocks[read.block], read.input)
                for cycle in run.cycles
                for read in cycle.reads
            ]
            if self.settings.quantized:
                reads = read_plans(
                    array,
                    run_reads,
                    tiles,
                    program.store,
                    max_input,
                    self._adc_fraction(layer.name),
                    self.cell_type,
                    self.differential_adc,
                    None if combine is None else response_targets(combine, program.store),
                    self._is_noisy(layer.name),
                )
                plans[layer.name].append(LayerPlan(layer, array, reads, combine))
                continue
            matrix = matrices.get(layer.name)
            if matrix is None:
                # a combined layer: the basis cells each of its segments reads
                cols = array.cols if combine is not None else layer.cols
                shape = (layer.groups, layer.rows, cols)
                matrix = matrices[layer.name] = np.zeros(shape, dtype=np.float64)
            add_ideal_reads(matrix, array, run_reads, tiles, program.store)

    # --- running --------------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
        """All graph outputs for one batch of inputs; `batch`: its number in the data set,
        which keys its read noise (default: the batches this executor ran before it)."""
        self.start_batch(batch)
        outputs = self.program.outputs
        if self._ideal is not None:
            return dict(zip(outputs, self._ideal.run(feeds, outputs), strict=True))
        values = self._run_graph(feeds, donate=True)
        return {name: values[name] for name in outputs}

    def run_all(
        self, feeds: dict[str, np.ndarray], batch: int | None = None
    ) -> dict[str, np.ndarray]:
        """Every value of the graph (inputs, layer and op results) for one batch; values
        inside regions as their last execution left them (none for a branch not taken)."""
        self.start_batch(batch)
        return self._run_graph(feeds, donate=False)

    def start_batch(self, batch: int | None) -> None:
        """Key the read noise of the batch about to run by its number (`batch`, or the
        batches run so far): read-out r of batch b draws from the key of (read seed, b, r),
        whatever ran before it and in whichever process."""
        number = self._batches if batch is None else batch
        if number < 0:
            raise ValueError(f"a batch number is at least 0, got {number}")
        self._batches = number + 1
        self._batch_key = gaussian.stream_key(self.seeds.read, number)
        self._reads = 0

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
        ops = self.program.ops
        steps = sum(1 for op in ops if isinstance(op, CrossbarLayer) or op.regions)
        with progress.task("run", total=steps, unit="layer") as task:
            self._run_ops(ops, values, donate, None if donate else values, task)
        return values

    def _run_ops(
        self,
        ops: tuple[Op, ...],
        values: dict[str, np.ndarray],
        donate: bool,
        collect: dict[str, np.ndarray] | None = None,
        task: progress.AnyTask = progress.NULL_TASK,
    ) -> None:
        """Run `ops` in order, adding their results to `values` (quant); the values made
        inside regions are added to `collect` too, when given. `task` counts the crossbar
        layers and control-flow ops run (those of the top level: regions count their
        iterations themselves)."""
        store = self.program.store
        owned: set[str] = set()  # values whose arrays are ours alone: safe to overwrite
        for op in ops:
            if isinstance(op, CrossbarLayer):
                task.describe(op.name)
                values[op.output] = self.run_layer(op, values[op.input])
                owned.add(op.output)
                task.update()
                continue
            if op.regions:
                task.describe(op.name)
                runner = self._region_runner(values, collect)
                outputs = run_control(op, operand_values(op, values, store), runner)
                for name, output in zip(op.outputs, outputs, strict=True):
                    if name and output is not None:
                        values[name] = output
                task.update()
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

    def _region_runner(self, enclosing: dict[str, np.ndarray], collect):
        """Runs a region of a control-flow op in a scope that sees `enclosing` (its
        values are never overwritten: regions donate nothing)."""

        def run_region(region: Region, bound) -> list[np.ndarray]:
            scope = dict(enclosing)
            scope.update(zip((i.name for i in region.inputs), bound, strict=True))
            self._run_ops(region.ops, scope, False, collect)
            if collect is not None:
                collect.update(scope)
            return [scope[name] for name in region.outputs]

        return run_region

    def run_layer(self, layer: CrossbarLayer, x: np.ndarray) -> np.ndarray:
        """One crossbar layer on its input, read by read (`quant`)."""
        if self._ideal_layers is not None:
            return self._ideal_layers.run(layer, self.program.store, x)
        self.layer_reads_noisy = self.settings.reads_noisy and self._is_noisy(layer.name)
        x = np.asarray(x, dtype=np.float32)
        plans = self.plans.get(layer.name, [])
        if not plans:
            raise XbarcError(f"layer @{layer.name} has no runs in the schedule")
        columns, restore = layer_columns(layer, x.shape)
        self._biased = False  # set by a path that adds the bias itself (`_fused_bias`)
        result = restore(self._accumulate_quantized(plans, columns, x))
        return result if self._biased else self._plus_bias(layer, result)

    def _fused_bias(self, layer: CrossbarLayer, outputs: int) -> np.ndarray | None:
        """The layer's float32 bias, one per of its `outputs`, for a kernel that adds it
        while it writes the output (as `_plus_bias` would: float32 + float32), which
        `run_layer` then leaves out; None: no bias, or one of another type or size
        (`_plus_bias` adds it)."""
        if layer.bias is None:
            return None
        bias = self.program.store[layer.bias]
        if bias.dtype != np.float32 or bias.size != outputs:
            return None
        self._biased = True
        return np.ascontiguousarray(bias.reshape(-1))

    def _plus_bias(self, layer: CrossbarLayer, result: np.ndarray) -> np.ndarray:
        """The result with the layer's bias added (in place: the result is ours)."""
        result = result.astype(np.float32, copy=False)
        if layer.bias is not None:
            bias = self.program.store[layer.bias]
            if (
                layer.geometry
                and result.ndim >= 2
                and bias.shape == result.shape[1:2]
                and bias.dtype == np.float32
                and result.flags.c_contiguous
                and result.flags.writeable
            ):
                activation_kernels.add_channel_bias(result, bias)  # 3x numpy's, same bits
                return result
            shape = (1, -1) + (1,) * (result.ndim - 2) if layer.geometry else (-1,)
            result += bias.reshape(shape)
        return result

    def _accumulate_quantized(self, plans, columns, x: np.ndarray) -> np.ndarray:
        """Integer accumulation of bit-serial reads through the ADC, [groups, cols, P],
        on the layer's read path (`_read_path`)."""
        path = self._read_path(plans)
        if path == "noisy":  # float reads of a noisy chip: all of them at once
            noisy = self._noisy[plans[0].layer.name]
            assert noisy is not None
            return self._accumulate_noisy(plans[0], noisy, columns, x)
        if path == "depthwise":  # short bit-serial reads: table lookups, all at once
            return self._accumulate_depthwise(plans, columns, x)
        if path == "bitplane":  # bit-serial integer reads: AND + popcount, all at once
            return self._accumulate_bitplane(plans, columns, x)
        if path == "sparse":  # integer reads: all groups, reads and columns at once
            sparse = self._sparse[plans[0].layer.name]
            assert sparse is not None
            return self._accumulate_sparse(plans, sparse, columns, x)
        if path == "fused":
            return self._accumulate_fused(plans, columns, x)
        return self._accumulate_by_read(plans, columns, x)

    def _read_path(self, plans: list[LayerPlan]) -> str:
        """How a layer's reads run: "noisy" (`noisy_read_accumulate`, float reads of a noisy
        chip), "depthwise" (`depthwise_accumulate`, bit-serial integer reads of one bit a
        step and at most 10 rows), "bitplane" (`bitplane_accumulate`, bit-serial integer
        reads), "fused"
        (`_accumulate_fused`: the engine the measured table names), "sparse"
        (`sparse_read_accumulate`, integer reads) or "by read" (`ReadOut`: one GEMM per read
        and input slice, the ADC kernel on the buffered partial sums; the way every read can
        take, and the only one an observer of exact partial sums other than a `ReadSpread`
        or a `ReadFractions` sees; an observer of noisy
        reads is shown them by `observe_noisy_reads`, so that it does not change their
        draws). Chosen on the layer's first run (`_choose_path`) and
        kept, except under an observer: a `ReadSpread` or `ReadFractions` keeps the fast
        paths (they count for it beside their kernels, `_observe_bitplane`,
        `_observe_levels`), any other observer of exact reads takes them read by read."""
        layer = plans[0].layer.name
        path = self._paths.get(layer)
        if path is None:
            path = self._paths[layer] = self._choose_path(plans)
        if self.on_read_sums is not None and path != "noisy":
            # noisy reads: the observer sees the values the noisy path converts (other
            # draws, read by read: an observer must not change a noisy run's bits)
            if path in OBSERVED_PATHS and self._spread() is not None:
                return path
            counted_as_fused = path == "depthwise" and self._fused_columns(plans) is not None
            if counted_as_fused and self._spread() is not None:
                return path
            return "by read"
        return path

    def _spread(self) -> ReadSpread | ReadFractions | None:
        """The observer of read sums where the fast paths count for it themselves
        (`observed_reads`): a `ReadSpread`, or a `ReadFractions` of sums that are never
        negative (not a differential ADC's); else None."""
        observer = self.on_read_sums
        if isinstance(observer, ReadSpread):
            return observer
        if isinstance(observer, ReadFractions) and not self.differential_adc:
            return observer
        return None

    def _observed_layout(self, plans: list[LayerPlan], bitplane: bool) -> ObservedLayer:
        """The layer's reads as an observer sees them, numbered as the bit-plane
        (`bitplane`) or the sparse kernel's columns (built on first use)."""
        layer = plans[0].layer
        key = (layer.name, bitplane)
        layout = self._observed.get(key)
        if layout is None:
            reads = [read for plan in plans for read in plan.reads]
            layout = self._observed[key] = observed_layer(
                reads,
                layer.rows,
                plans[0].columns,
                layer.groups,
                self.adc_levels,
                self.program.hardware.dac.slice_bits,
                bitplane,
            )
        return layout

    def _observe_bitplane(self, plans, packed, flags, bitplane, present, count, planes) -> None:
        """Count the read sums of a bit-plane layer run into the observer (`_spread`), as
        read by read (`observed_reads.count_bitplane`)."""
        spread = self._spread()
        assert spread is not None
        layout = self._observed_layout(plans, bitplane=True)
        slice_bits = self.program.hardware.dac.slice_bits
        nonzero = segment_digits_bitplane(flags, bitplane.segment_word, planes, count, slice_bits)
        calls = self._observed_calls(layout, present, count, nonzero, packed.shape[2])
        count_bitplane(packed, flags, bitplane, calls, planes, spread, plans[0].layer.name)

    def _observe_levels(self, plans, read_columns, levels, present, count) -> None:
        """Count the read sums of a sparse or fused layer run into the observer
        (`_spread`), as read by read, from each present sign's unfolded DAC levels `levels`
        uint8 [2, flat rows, P] (`observed_reads.count_levels`)."""
        spread = self._spread()
        assert spread is not None
        layout = self._observed_layout(plans, bitplane=False)
        slice_bits = self.program.hardware.dac.slice_bits
        signs = [part if there else None for part, there in zip(levels, present, strict=True)]
        nonzero = segment_digits_levels(signs, layout, count, slice_bits)
        calls = self._observed_calls(layout, present, count, nonzero, levels.shape[2])
        count_levels(levels, read_columns, calls, slice_bits, spread, plans[0].layer.name)

    def _observed_calls(self, layout, present, count, nonzero, patches) -> ObservedCalls:
        """`observed_calls` for a layer run, kept per layout for the next run with the same
        signs, slices, patches and non-zero slices (most batches of an eval)."""
        wanted = (present, count, patches, nonzero.tobytes(), type(self.on_read_sums))
        kept = self._calls.get(id(layout))
        if kept is not None and kept[0] == wanted:
            return kept[1]
        sampled = isinstance(self.on_read_sums, ReadSpread)
        calls = observed_calls(layout, present, count, nonzero, patches, SAMPLE_EVERY, sampled)
        self._calls[id(layout)] = (wanted, calls)
        return calls

    def _choose_path(self, plans: list[LayerPlan]) -> str:
        """The fastest exact way for a layer's reads (see `_read_path`)."""
        if self.settings.cells_noisy or self.settings.reads_noisy:
            # float reads (noisy cells or reads, or a layer of a noisy chip left exact)
            if noisy_reads_tall(plans):
                return "by read"
            return "noisy" if self._noisy_columns(plans) is not None else "by read"
        if self._bitplane_reads(plans):
            if self._depthwise_columns(plans) is not None:
                return "depthwise"
            layer = plans[0].layer.name
            reads = [read for plan in plans for read in plan.reads]
            if not prefers_sparse(reads, self._bitplane[layer]):
                return "bitplane"
            if self._sparse_columns(plans) is not None:
                return "sparse"
            return "bitplane"
        # fused: the remaining exact integer reads (unsliced cells, multi-bit DAC steps);
        # `_accumulate_fused` runs the engine the measured table names for their shape
        if self._fused_columns(plans) is not None:
            return "fused"
        if self._sparse_columns(plans) is not None:
            return "sparse"
        return "by read"

    def _accumulate_by_read(self, plans, columns, x: np.ndarray) -> np.ndarray:
        """`_accumulate_quantized` read by read: each read and input slice one GEMM, the
        partial sums of many reads converted together (`ReadOut`).

        The DAC's full scale is the largest input magnitude; inputs are quantized before
        they are unfolded (the padding quantizes to zero either way). Integer sums do not
        depend on their order, so reads are taken group by group and their partial sums
        buffered, to pass through the ADC kernel many reads at a time."""
        first = plans[0]
        array = first.array
        slice_bits = self.program.hardware.dac.slice_bits
        digit_max = self.digit_max
        input_scale, inputs = self._dac_inputs(first.layer.name, columns, x)
        if inputs:
            groups, _, patches = inputs[0][1][0].shape
        else:  # an all-zero input: nothing to read
            groups, _, patches = columns(x).shape
        adc_unit = self.adc_levels or 1
        offset = 2 ** (array.weight_bits - 1)
        reads_of: dict[int, list[ReadPlan]] = defaultdict(list)  # per group, in plan order
        for plan in plans:
            for read in plan.reads:
                reads_of[read.group].append(read)
        result = touched((groups, first.layer.cols, patches), np.float32)
        for group in range(groups):
            acc = self.workspace("accumulator", (first.columns, patches), np.int64)
            acc.fill(0)
            readout = ReadOut(self, acc, plans[0].layer.name)
            corrections: dict[tuple | bytes, tuple[slice | np.ndarray, np.ndarray]] = {}
            for sign, unfolded in inputs:
                for read in reads_of[group]:
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
            one = slice(group, group + 1)
            self._finish(first, one, acc[None], input_scale, result[one])
        return result

    def _finish(
        self, plan: LayerPlan, groups: slice, acc: np.ndarray, input_scale: float, out
    ) -> None:
        """The layer's output columns from its accumulators, [g, columns, P] int64 for the
        groups `groups`, into `out` float32 [g, cols, P]: dequantized (times the input's and
        the weights' scales), or, for a layer combined from a basis, the digital combine of
        its responses (`combine.combine_responses`)."""
        unit = self.adc_levels or 1
        if plan.combine is not None:
            combine_responses(plan.combine, groups, acc, unit, input_scale, out)
            return
        count, cols, patches = acc.shape
        scale = self.weight_scale(plan.array)
        if isinstance(scale, np.ndarray):
            column_scale = scale[groups].reshape(-1).astype(np.float64)
        else:
            column_scale = np.full(count * cols, scale, dtype=np.float64)
        adc.dequantize(
            acc.reshape(count * cols, patches),
            unit,
            input_scale,
            column_scale,
            out.reshape(count * cols, patches),
        )

    def _accumulate_sparse(self, plans: list[LayerPlan], sparse: SparseColumns, columns, x):
        """`_accumulate_quantized` for integer reads, with `sparse_read_accumulate`: each
        sign's DAC levels unfolded once, and all its slices read off them in one call."""
        plan = plans[0]
        slice_bits = self.program.hardware.dac.slice_bits
        bits, input_scale = self._dac_scale(plan.layer.name, x)
        count = -(-(bits - 1) // slice_bits)
        # each sign's levels whole: one "slice" of all bits - 1 magnitude bits (uint8)
        planes = self.workspace("input levels", (2, 1, *x.shape), np.uint8)
        present = dac.dac_planes(x, input_scale, bits, bits - 1, 1, out=planes)
        acc: np.ndarray | None = None
        observed = None  # each sign's unfolded levels, for a `ReadSpread` observer
        for index, (sign, part, nonzero) in enumerate(zip((1, -1), planes, present, strict=True)):
            if not nonzero:  # e.g. no negative inputs after a ReLU
                continue
            unfolded = columns(part[0], lambda shape: self.workspace("unfolded", shape, np.uint8))
            groups, _, patches = unfolded.shape
            levels_in = np.ascontiguousarray(unfolded).reshape(-1, patches)
            if acc is None:
                acc = self.workspace("accumulator", (groups * plan.columns, patches), np.int64)
                acc.fill(0)
            sparse_read_accumulate(levels_in, sparse, slice_bits, count, sign, self.adc_levels, acc)
            if self._spread() is not None:
                if observed is None:
                    shape = (2, *levels_in.shape)
                    observed = self.workspace(("observed", "levels"), shape, np.uint8)
                observed[index] = levels_in
        if acc is None:  # an all-zero input: nothing to read
            groups, _, patches = columns(x).shape
            return touched((groups, plan.layer.cols, patches), np.float32)
        if observed is not None:
            signs = (bool(present[0]), bool(present[1]))
            self._observe_levels(plans, sparse, observed, signs, count)
        result = touched((groups, plan.layer.cols, patches), np.float32)
        accumulated = acc.reshape(groups, plan.columns, patches)
        self._finish(plan, slice(0, groups), accumulated, input_scale, result)
        return result

    def _bitplane_reads(self, plans: list[LayerPlan]) -> bool:
        """Whether a layer's reads take `bitplane_accumulate`: exact integer reads (no
        noise, polarity ADC, cells and DAC levels of at most 8 bits) fed at most
        BITPLANE_SLICE_BITS bits a step, whose ADC full scales are known before the read
        (not `dynamic`); builds the layer's `BitplaneColumns` on its first call."""
        settings = self.settings
        hardware = self.program.hardware
        if (
            settings.cells_noisy
            or settings.reads_noisy
            or self.differential_adc
            or self.cell_max > 255
            or self.dac_bits > 8  # magnitudes of more than 8 bits: beyond uint8 levels
            or hardware.dac.slice_bits > BITPLANE_SLICE_BITS
            or self.adc_range == "dynamic"
        ):
            return False
        layer = plans[0].layer.name
        if layer not in self._bitplane:
            first = plans[0]
            self._bitplane[layer] = bitplane_columns(
                [read for plan in plans for read in plan.reads],
                first.layer.rows,
                first.columns,
                hardware.dac.slice_bits,
                self.adc_levels,
                2 ** (first.array.weight_bits - 1),
            )
        return True

    def _accumulate_bitplane(self, plans: list[LayerPlan], columns, x: np.ndarray):
        """`_accumulate_quantized` with `bitplane_accumulate`: each sign's DAC levels
        unfolded once and packed into bit planes per input segment, then every read
        column, slice and sign summed by AND + popcount and converted in one call."""
        plan = plans[0]
        bitplane = self._bitplane[plan.layer.name]
        slice_bits = self.program.hardware.dac.slice_bits
        bits, input_scale = self._dac_scale(plan.layer.name, x)
        count = -(-(bits - 1) // slice_bits)
        planes = count * slice_bits  # input bit planes per sign
        levels = self.workspace(("bitplane", "levels"), (2, 1, *x.shape), np.uint8)
        present = dac.dac_planes(x, input_scale, bits, bits - 1, 1, out=levels)
        packed = flags = None
        for sign, (part, nonzero) in enumerate(zip(levels, present, strict=True)):
            if not nonzero:  # e.g. no negative inputs after a ReLU
                continue
            memory = lambda shape: self.workspace(("bitplane", "unfolded"), shape, np.uint8)  # noqa: E731
            unfolded = columns(part[0], memory)
            groups, _, patches = unfolded.shape
            if packed is None or flags is None:
                shape = (2 * planes, bitplane.words, patches)
                packed = self.workspace(("bitplane", "packed"), shape, np.uint64)
                runs = (2 * planes, bitplane.words, runs_of(patches))
                flags = self.workspace(("bitplane", "flags"), runs, np.uint8)
                flags.fill(0)  # an absent sign's planes are skipped
            levels_in = np.ascontiguousarray(unfolded).reshape(-1, patches)
            pack_inputs(levels_in, bitplane, sign * planes, planes, packed, flags)
        if packed is None or flags is None:  # an all-zero input: nothing to read
            groups, _, patches = columns(x).shape
            return touched((groups, plan.layer.cols, patches), np.float32)
        slices = [  # (first packed plane, significance) of each slice of a present sign
            (index * planes + j * slice_bits, sign << (j * slice_bits))
            for index, sign in enumerate((1, -1))
            if present[index]
            for j in range(count)
        ]
        slice_plane, significance = np.array(slices, dtype=np.int64).T.copy()
        if self._spread() is not None:
            signs = (bool(present[0]), bool(present[1]))
            self._observe_bitplane(plans, packed, flags, bitplane, signs, count, planes)
        if self._items_first(plan):  # converted and dequantized in one pass
            items = x.shape[0] if plan.layer.geometry is not None else patches
            count_out = groups * plan.layer.cols
            image = touched((items, count_out, patches // items), np.float32)
            unit = self.adc_levels or 1
            column_scale = self._column_scale(plan, groups)
            bias = self._fused_bias(plan.layer, count_out)
            bitplane_finish(
                packed, flags, bitplane, slice_plane, significance, unit, input_scale,
                column_scale, image, bias,
            )  # fmt: skip
            return self._items_view(plan.layer, image, groups)
        acc = self.workspace(
            ("bitplane", "accumulator"), (groups * plan.columns, patches), np.int64
        )
        acc.fill(0)
        bitplane_accumulate(packed, flags, bitplane, slice_plane, significance, acc)
        return self._finish_layer(plan, groups, acc, input_scale, x)

    def _depthwise_columns(self, plans: list[LayerPlan]) -> DepthwiseColumns | None:
        """The layer's tables for `depthwise_accumulate` (built on its first call), for
        bit-serial reads (`_bitplane_reads`) of one input bit a step whose reads drive at
        most `depthwise.TABLE_ROWS` rows; None: other reads."""
        layer = plans[0].layer.name
        if layer not in self._depthwise:
            first = plans[0]
            columns = None
            if self.program.hardware.dac.slice_bits == 1:
                columns = depthwise_columns(
                    [read for plan in plans for read in plan.reads],
                    first.layer.rows,
                    first.columns,
                    self.adc_levels,
                    2 ** (first.array.weight_bits - 1),
                )
            self._depthwise[layer] = columns
        return self._depthwise[layer]

    def _accumulate_depthwise(self, plans: list[LayerPlan], columns, x: np.ndarray):
        """`_accumulate_quantized` with `depthwise_accumulate`: each sign's DAC levels
        looked up straight from the layer's input (no unfold), every segment, output and
        input plane in one call."""
        plan = plans[0]
        layer = plan.layer
        tables = self._depthwise[layer.name]
        assert tables is not None
        item = (1, x.shape[-1]) if layer.geometry is None else (1, *x.shape[1:])
        gather = self._depthwise_gathers.get((layer.name, item))
        if gather is None:  # the layer's own unfold of an item of its positions plus one
            image = math.prod(item)
            unfold, _ = layer_columns(layer, item)
            positions = np.arange(1, image + 1, dtype=np.float64).reshape(item)
            gather = patch_gather(np.asarray(unfold(positions)), image)
            self._depthwise_gathers[(layer.name, item)] = gather
        bits, input_scale = self._dac_scale(layer.name, x)
        levels = self.workspace(("depthwise", "levels"), (2, 1, *x.shape), np.uint8)
        present = dac.dac_planes(x, input_scale, bits, bits - 1, 1, out=levels)
        groups = gather.offsets.shape[0] // layer.rows
        patches = x.size // gather.image * gather.pixels
        if self._spread() is not None and any(present):
            # counted from the unfolded levels, as the fused kernel's columns number them
            read_columns = self._fused_columns(plans)
            assert read_columns is not None  # `_read_path` reads the layer by read otherwise
            self._observe_fused(plans, read_columns, columns, levels, present, bits - 1)
        if sum(present) == 1 and self._items_first(plan) and one_entry_each(tables):
            # one sign (after a ReLU): converted and dequantized in one pass
            index = 0 if present[0] else 1
            items = patches // gather.pixels
            image = touched((items, groups * layer.cols, gather.pixels), np.float32)
            column_scale = self._column_scale(plan, groups)
            unit = self.adc_levels or 1
            sign = 1 - 2 * index
            bias = self._fused_bias(layer, groups * layer.cols)
            depthwise_finish(
                levels[index][0], gather, tables, sign, unit, input_scale, column_scale, image,
                bias,
            )  # fmt: skip
            return self._items_view(layer, image, groups)
        outputs = (groups * plan.columns, patches)
        acc = self.workspace(("depthwise", "accumulator"), outputs, np.int64)
        acc.fill(0)
        for sign, part, nonzero in zip((1, -1), levels, present, strict=True):
            if nonzero:  # e.g. no negative inputs after a ReLU
                depthwise_accumulate(part[0], gather, tables, sign, acc)
        return self._finish_layer(plan, groups, acc, input_scale, x)

    def _noisy_columns(self, plans: list[LayerPlan]) -> NoisyColumns | None:
        """The layer's read columns for `noisy_read_accumulate`, where its reads allow it:
        float32 reads of DAC levels of at most 8 bits, ADC full scales known before the
        read (not `dynamic`), no offset correction. None: read by read (`ReadOut`)."""
        if self.cell_type is not np.float32 or self.dac_bits > 8 or self.adc_range == "dynamic":
            return None
        layer = plans[0].layer
        if layer.name not in self._noisy:
            reads = [read for plan in plans for read in plan.reads]
            noisy = None
            if all(read.offset_columns is None for read in reads):
                pcm = self.settings.read_noise == "pcm"
                row_count = layer.groups * layer.rows
                noisy = noisy_columns(reads, layer.rows, plans[0].columns, row_count, pcm)
            self._noisy[layer.name] = noisy
        return self._noisy[layer.name]

    def _accumulate_noisy(self, plan: LayerPlan, noisy: NoisyColumns, columns, x):
        """`_accumulate_quantized` on a noisy chip, with `noisy_read_accumulate`: each
        sign's DAC levels unfolded once, and all its slices read off them, with their
        noise, in one call."""
        slice_bits = self.program.hardware.dac.slice_bits
        bits, input_scale = self._dac_scale(plan.layer.name, x)
        count = -(-(bits - 1) // slice_bits)
        planes = self.workspace(("noise", "input levels"), (2, 1, *x.shape), np.uint8)
        present = dac.dac_planes(x, input_scale, bits, bits - 1, 1, out=planes)
        acc: np.ndarray | None = None
        for sign, part, nonzero in zip((1, -1), planes, present, strict=True):
            if not nonzero:  # e.g. no negative inputs after a ReLU
                continue
            unfolded = columns(
                part[0], lambda shape: self.workspace(("noise", "unfolded"), shape, np.uint8)
            )
            groups, _, patches = unfolded.shape
            levels_in = np.ascontiguousarray(unfolded).reshape(-1, patches)
            if acc is None:
                shape = (groups * plan.columns, patches)
                acc = self.workspace(("noise", "accumulator"), shape, np.int64)
                acc.fill(0)
            noise = self._read_noise()
            if self.on_read_sums is not None:
                observer = self.on_read_sums
                name = plan.layer.name
                observe_noisy_reads(
                    levels_in,
                    noisy,
                    slice_bits,
                    count,
                    noise,
                    lambda sums, scales: observer(name, sums, scales),  # noqa: B023
                )
            noisy_read_accumulate(
                levels_in,
                noisy,
                slice_bits,
                count,
                sign,
                self.adc_levels,
                self.differential_adc,
                noise,
                acc,
            )
        if acc is None:  # an all-zero input: nothing to read
            groups, _, patches = columns(x).shape
            return touched((groups, plan.layer.cols, patches), np.float32)
        result = touched((groups, plan.layer.cols, patches), np.float32)
        accumulated = acc.reshape(groups, plan.columns, patches)
        self._finish(plan, slice(0, groups), accumulated, input_scale, result)
        return result

    def _fused_columns(self, plans: list[LayerPlan]) -> SparseColumns | None:
        """The layer's read columns for `fused_read_accumulate`, where its reads allow it:
        exact integer reads (no device or read noise on this layer, cells that are
        integers), DAC levels of at most 8 bits, ADC full scales known before the read
        (not `dynamic`), no offset correction, and every sum below 2^24 (exact in the
        kernel's float32). None: another path."""
        layer = plans[0].layer.name
        if layer in self._fused:
            return self._fused[layer]
        settings = self.settings
        noisy = (settings.cells_noisy or settings.reads_noisy) and self._is_noisy(layer)
        reads = [read for plan in plans for read in plan.reads]
        columns = None
        if not (
            noisy
            or not settings.quantized
            or self.dac_bits > 8
            or self.adc_range == "dynamic"
            or any(read.offset_columns is not None for read in reads)
            or any(not np.array_equal(read.cells_t, np.rint(read.cells_t)) for read in reads)
        ):
            columns = sparse_columns(reads, plans[0].layer.rows, plans[0].columns)
            if engines.largest_sum(columns, 255) >= 2**24:
                columns = None
        self._fused[layer] = columns
        return columns

    def _accumulate_fused(self, plans, columns, x: np.ndarray) -> np.ndarray:
        """`_accumulate_quantized` for exact integer reads, on the engine the measured
        table (`engines.fastest`) names for the layer's shape: `fused_read_accumulate`
        (each sign's DAC levels read straight from the input, no unfold, one call for all
        slices, reads and groups), `gemm_read_accumulate` (the same on one integer GEMM per
        slice), `sparse_read_accumulate` or read by read."""
        plan = plans[0]
        layer = plan.layer
        read_columns = self._fused[layer.name]
        assert read_columns is not None
        fused = self._fused_layer(plan, read_columns, x)
        gather = fused.gather
        patches = x.size // gather.image * gather.pixels
        engine = self._fused_engine(plans, read_columns, patches)
        if engine == "sparse":
            return self._accumulate_sparse(plans, read_columns, columns, x)
        if engine == "by read":
            return self._accumulate_by_read(plans, columns, x)
        read_layer = fused_read_accumulate
        if engine == "gemm":
            read_layer = functools.partial(gemm_read_accumulate, workspace=self.workspace)
        slice_bits = self.program.hardware.dac.slice_bits
        bits, input_scale = self._dac_scale(layer.name, x)
        count = -(-(bits - 1) // slice_bits)
        # each sign's levels whole: one "slice" of all bits - 1 magnitude bits (uint8)
        planes = self.workspace(("fused", "levels"), (2, 1, *x.shape), np.uint8)
        present = dac.dac_planes(x, input_scale, bits, bits - 1, 1, out=planes)
        groups = gather.offsets.shape[0] // layer.rows
        acc = self.workspace(("fused", "accumulator"), (groups * plan.columns, patches), np.int64)
        acc.fill(0)
        for sign, part, nonzero in zip((1, -1), planes, present, strict=True):
            if nonzero:  # e.g. no negative inputs after a ReLU
                read_layer(
                    part[0],
                    fused,
                    slice_bits,
                    count,
                    sign,
                    self.adc_levels,
                    acc,
                    signed=self.differential_adc,
                )
        if self._spread() is not None and any(present):
            self._observe_fused(plans, read_columns, columns, planes, present, count)
        if plan.combine is not None or plan.columns != layer.cols or layer.kind == "conv_transpose":
            result = touched((groups, layer.cols, patches), np.float32)
            accumulated = acc.reshape(groups, plan.columns, patches)
            self._finish(plan, slice(0, groups), accumulated, input_scale, result)
            return result
        return self._finish_items(plan, groups, acc, input_scale, gather.pixels)

    def _finish_layer(
        self, plan: LayerPlan, groups: int, acc: np.ndarray, input_scale: float, x: np.ndarray
    ) -> np.ndarray:
        """The layer's output [groups, cols, P] from the accumulators `acc` int64
        [groups x plan columns, P] of a whole layer run on the input `x` (the bit-plane and
        depthwise paths): laid out items first (`_finish_items`) where the layer's output
        is its read columns as they are (no basis combine, no ConvTranspose fold), else
        `_finish` into [groups, cols, P]. Same values, same bits either way."""
        layer = plan.layer
        patches = acc.shape[1]
        if not self._items_first(plan):
            result = touched((groups, layer.cols, patches), np.float32)
            accumulated = acc.reshape(groups, plan.columns, patches)
            self._finish(plan, slice(0, groups), accumulated, input_scale, result)
            return result
        pixels = 1 if layer.geometry is None else patches // x.shape[0]
        return self._finish_items(plan, groups, acc, input_scale, pixels)

    @staticmethod
    def _items_first(plan: LayerPlan) -> bool:
        """Whether the layer's output is its read columns as they are (no basis combine,
        no ConvTranspose fold), so it can be written items first (`_finish_items`)."""
        layer = plan.layer
        return (
            plan.combine is None and plan.columns == layer.cols and layer.kind != "conv_transpose"
        )

    def _column_scale(self, plan: LayerPlan, groups: int) -> np.ndarray:
        """The weight scale of each of the layer's `groups` x cols outputs, float64."""
        scale = self.weight_scale(plan.array)
        if isinstance(scale, np.ndarray):
            return scale[:groups].reshape(-1).astype(np.float64)
        return np.full(groups * plan.layer.cols, scale, dtype=np.float64)

    @staticmethod
    def _items_view(layer: CrossbarLayer, image: np.ndarray, groups: int) -> np.ndarray:
        """The [groups, cols, P] view of a layer's output `image` [items, outputs,
        pixels] as `restore` (`patches.layer_columns`) takes it."""
        items, count, pixels = image.shape
        if layer.geometry is None:  # Gemm, MatMul: [1, cols, items]
            return image.reshape(items, count).T[None]
        return image.reshape(items, groups, layer.cols, pixels).transpose(1, 2, 0, 3)

    def _finish_items(
        self, plan: LayerPlan, groups: int, acc: np.ndarray, input_scale: float, pixels: int
    ) -> np.ndarray:
        """`_finish` of a whole layer (no basis combine) into an output laid out items
        first, as `restore` (`patches.layer_columns`) lays it out: the [groups, cols, P]
        it returns is a view of a C-contiguous [items, channels, pixels] image, so the
        layer's output is that image itself, not a transposed copy (the Relu after it then
        runs in place, the pool reads it in order). Same values, same bits."""
        count = groups * plan.layer.cols
        items = acc.shape[1] // pixels
        column_scale = self._column_scale(plan, groups)
        image = touched((items, count, pixels), np.float32)
        dequantize_items(acc, self.adc_levels or 1, input_scale, column_scale, image)
        return self._items_view(plan.layer, image, groups)

    def _observe_fused(self, plans, read_columns, columns, planes, present, count) -> None:
        """Count a fused layer run's read sums into the `ReadSpread` observer: the fused
        kernel reads the input without unfolding it, so each present sign's DAC levels
        `planes` [2, 1, ...] are unfolded here for the count (`_observe_levels`)."""
        observed = None
        for index, part in enumerate(planes):
            if not present[index]:
                continue
            memory = lambda shape: self.workspace(("observed", "unfolded"), shape, np.uint8)  # noqa: E731
            unfolded = columns(part[0], memory)
            levels_in = unfolded.reshape(-1, unfolded.shape[-1])
            if observed is None:
                shape = (2, *levels_in.shape)
                observed = self.workspace(("observed", "levels"), shape, np.uint8)
            observed[index] = levels_in
        assert observed is not None
        signs = (bool(present[0]), bool(present[1]))
        self._observe_levels(plans, read_columns, observed, signs, count)

    def _fused_layer(self, plan: LayerPlan, read_columns: SparseColumns, x) -> FusedLayer:
        """The layer's read columns with the gather of its input's item shape: the layer's
        own unfold of one item whose values are their positions plus one."""
        layer = plan.layer
        item = (1, x.shape[-1]) if layer.geometry is None else (1, *x.shape[1:])
        key = (layer.name, item)
        fused = self._fused_layers.get(key)
        if fused is None:
            image = math.prod(item)
            unfold, _ = layer_columns(layer, item)
            positions = np.arange(1, image + 1, dtype=np.float64).reshape(item)
            fused = fused_layer(read_columns, np.asarray(unfold(positions)), image)
            self._fused_layers[key] = fused
        return fused

    def _fused_engine(
        self, plans: list[LayerPlan], read_columns: SparseColumns, patches: int
    ) -> str:
        """The engine the measured table names for the layer's reads over `patches`
        (kept per layer and patch count in `self.layer_engines`): "fused", "gemm" (uint8
        cells and int8 digits on an exact integer GEMM), "sparse" (those, and not for a
        differential ADC: its codes are signed) or "by read"."""
        key = (plans[0].layer.name, patches)
        engine = self.layer_engines.get(key)
        if engine is None:
            allowed = ["fused", "by read"]
            if self.cell_type is np.uint8:  # uint8 cells, int8 digits, an exact integer GEMM
                allowed.append("gemm")
                if not self.differential_adc:
                    allowed.append("sparse")
            shape = self.read_shape(plans, read_columns, patches)
            engine = self.layer_engines[key] = engines.fastest(shape, allowed)
        return engine

    def read_shape(
        self, plans: list[LayerPlan], read_columns: SparseColumns, patches: int
    ) -> engines.ReadShape:
        """The shape of a layer's integer reads over `patches`, as the engines table
        measures it."""
        digit_bits = min(self.program.hardware.dac.slice_bits, self.dac_bits - 1)
        cells = sum(read.cells_t.size for plan in plans for read in plan.reads)
        slices = -(-(self.dac_bits - 1) // digit_bits)
        layer = plans[0].layer
        geometry = layer.geometry
        unfolds = (
            layer.kind == "conv"
            and geometry is not None
            and not (
                all(k == 1 for k in geometry.kernel)
                and all(s == 1 for s in geometry.strides)
                and not any(geometry.pads)
            )
        )  # else its columns are a view or a copy of the input (`patches.layer_columns`)
        return engines.read_shape(
            read_columns, cells, patches, digit_bits, slices, layer.groups * layer.rows, unfolds
        )

    def _read_noise(self) -> ReadNoise | None:
        """The noise of the next read-out of the layer being read (None: none), with the
        keys of its draws (`next_read_key`)."""
        if not self.layer_reads_noisy:
            return None
        settings = self.settings
        unit, output_variance, coefficient = read_noise_terms(
            settings, self.cell_max, self.digit_max
        )
        model = {"additive": ADDITIVE, "pcm": PCM}.get(settings.read_noise, NO_READ_NOISE)
        input_sigma = settings.input_noise * self.digit_max
        key = self.next_read_key()
        input_key = self.next_read_key() if input_sigma > 0 else 0
        return ReadNoise(unit, output_variance, model, coefficient, input_sigma, key, input_key)

    def _dac_scale(self, layer: str, x: np.ndarray) -> tuple[int, float]:
        """The DAC's bits for `x`, a sign included (as `dac.dac_planes` counts them), and
        the input value of one level: full scale over the largest magnitude level."""
        bits = self._dac_magnitude_bits(x, self.program.hardware.dac.slice_bits) + 1
        peak = self._input_peak(layer, x)
        return bits, peak / (2 ** (bits - 1) - 1) if peak > 0 else 1.0

    def _input_peak(self, layer: str, x: np.ndarray) -> float:
        """The DAC's full scale for `x`: the batch's largest |x| (`dynamic`, an oracle), the
        layer's calibrated range (inputs beyond it clip), or a fixed number."""
        mode = self.settings.input_range
        if mode == "dynamic":
            return max(float(x.max()), -float(x.min())) if x.size else 0.0
        if mode == "calibrated":
            calibrated = self._calibrated(layer)
            assert calibrated is not None  # checked at construction
            return calibrated.input_range
        return float(mode)

    def _sparse_columns(self, plans: list[LayerPlan]) -> SparseColumns | None:
        """The layer's read columns for `sparse_read_accumulate`, where its reads allow it:
        exact integer reads (no noise, polarity ADC) whose ADC full scales are known before
        the read (not `dynamic`), without the offset correction; and where that is the
        faster way (`reads_sparsely`). None: read by read (`ReadOut`)."""
        if (
            self.cell_type is not np.uint8
            or self.dac_bits > 8  # magnitudes of more than 8 bits: beyond uint8 levels
            or self.adc_range == "dynamic"
        ):
            return None
        layer = plans[0].layer.name
        if layer not in self._sparse:
            reads = [read for plan in plans for read in plan.reads]
            sparse = None
            if all(read.offset_columns is None for read in reads):
                sparse = sparse_columns(reads, plans[0].layer.rows, plans[0].columns)
                if not reads_sparsely(reads, sparse):
                    sparse = None
            self._sparse[layer] = sparse
        return self._sparse[layer]

    def _dac_inputs(self, layer: str, columns, x: np.ndarray) -> tuple[float, list]:
        """The DAC's scale for `x` and its slices, unfolded: [(sign, [columns of slice j,
        least significant first, [groups, rows, P]])] for the signs that occur, at the
        full scale `_input_peak` gives."""
        slice_bits = self.program.hardware.dac.slice_bits
        bits, input_scale = self._dac_scale(layer, x)
        count = -(-(bits - 1) // slice_bits)
        digits = self.digit_type
        planes = self.workspace("input slices", (2, count, *x.shape), digits)
        nonzero = dac.dac_planes(x, input_scale, bits, slice_bits, count, out=planes)
        inputs = []
        for sign, part, present in zip((1, -1), planes, nonzero, strict=True):
            if present:  # e.g. no negative inputs after a ReLU: those reads are skipped
                unfolded = [
                    columns(plane, lambda shape, key=(sign, j): self.workspace(key, shape, digits))
                    for j, plane in enumerate(part)
                ]
                inputs.append((sign, unfolded))
        return input_scale, inputs

    def _dac_magnitude_bits(self, x: np.ndarray, slice_bits: int) -> int:
        """The bits of |x| the DAC drives: all of its bits where `x` has no negative value
        (after a ReLU, an image: a sign bit would only halve the levels), else one less
        for the sign; the sign bit is kept where the extra bit would widen a slice's digit
        (slice_bits as wide as the magnitude)."""
        unsigned = x.size > 0 and float(x.min()) >= 0 and slice_bits <= self.dac_bits - 1
        return self.dac_bits if unsigned else self.dac_bits - 1

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
        read-out draws for many reads at once. Every draw is keyed by the read seed, the
        batch's number and a count of draws in the batch (`next_read_key`, `gaussian`): the
        same seeds and batch give the same bits on any thread count and in any process."""
        settings = self.settings
        if settings.input_noise > 0:
            noisy = self.workspace("noisy drive", driven.shape, np.float32)
            noisy[...] = driven
            sigma_in = np.full((1, driven.shape[1]), settings.input_noise * self.digit_max)
            gaussian.add_noise(noisy, sigma_in, key=self.next_read_key())
            driven = noisy
        gemm.float_matmul(cells_t, driven, out)
        magnitude = cells_t if magnitude_t is None else magnitude_t
        return read_noise_sigma(settings, driven, magnitude, self.cell_max, self.digit_max)

    def next_read_key(self) -> int:
        """The key of the next read-out's draws: (read seed, batch number, read-out)."""
        self._reads += 1
        return gaussian.stream_key(self._batch_key, self._reads)

    def workspace(self, name: Hashable, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """An array of `shape` in the memory kept under `name`, grown when too small; its
        contents are whatever was left there."""
        size = math.prod(shape)
        buffer = self._workspace.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._workspace[name] = touched((size,), dtype)
        return buffer[:size].reshape(shape)

    def _read_array(self, layer: CrossbarLayer) -> tuple[Array, CombineTable | None]:
        """The array a layer's runs read: its own weights, or the basis it is combined
        from (BasisN) with the combine that turns the basis responses into its outputs."""
        program = self.program
        for combine in program.combines:
            if combine.layer == layer.name:
                table = self._combines.get(layer.name)
                basis = program.array(combine.basis)
                if table is None:
                    table = combine_table(combine, basis, layer, program.store)
                    self._combines[layer.name] = table
                return basis, table
        array = program.weights_of(layer.name)
        if array is None:
            raise XbarcError(
                f"layer @{layer.name} is held by no weights array and combined from no basis",
                hint="compile the model through the quantize and tile passes",
            )
        return array, None

    def _effective(self, layer: str, matrix: np.ndarray) -> np.ndarray:
        """An ideal layer's effective weights float32 [groups, rows, cols] from what its
        reads read (float64, in levels): its own cells times the array's scale, or for a
        combined layer the combine of the basis cells each segment read."""
        table = self._combines.get(layer)
        if table is not None:
            return combined_weights(table, matrix)
        array = self.program.weights_of(layer)
        assert array is not None  # checked by _read_array
        return self._dequantized(array, matrix)

    def _dequantized(self, array: Array, matrix: np.ndarray) -> np.ndarray:
        """An ideal layer's matrix (float64, in levels) times the array's scale, rounded
        once: float32 [groups, rows, cols]."""
        scale = self.weight_scale(array)
        if isinstance(scale, np.ndarray):  # per column: [groups, cols]
            scale = scale[:, None, :].astype(np.float64)
        return (matrix * scale).astype(np.float32)

    def weight_scale(self, array: Array) -> np.ndarray | float:
        """The array's dequantization scale: a number, or one per column as [groups, cols]."""
        if isinstance(array.scale, Const):
            return self.program.store[array.scale.name]
        return array.scale


def noisy_reads_tall(plans: list[LayerPlan]) -> bool:
    """Whether a noisy layer's reads are tall enough (NOISY_TALL rows per read column on
    average) for the float GEMMs of `ReadOut`: a property of the program, never of the
    batch, so that a batch's bits do not depend on the batches before it."""
    reads = [read for plan in plans for read in plan.reads]
    cells = sum(read.cells_t.size for read in reads)
    columns = sum(len(read.target) for read in reads)
    return columns > 0 and cells / columns >= NOISY_TALL


def sole_consumers(program: Program) -> dict[str, int]:
    """Values read by exactly one op, once, and not graph outputs: id of that op. Such a
    value's array can be handed to its consumer to overwrite (no view of it can outlive it)."""
    readers: dict[str, list[int]] = defaultdict(list)
    for op in program.ops:
        for name in op_reads(op):  # a control-flow op reads what its regions read
            readers[name].append(id(op))
    outputs = set(program.outputs)
    return {name: ops[0] for name, ops in readers.items() if len(ops) == 1 and name not in outputs}


def run_digital_op(
    op: DigitalOp, values: dict[str, np.ndarray], store, donated: frozenset[int] = frozenset()
) -> list:
    from xbarc.runtime.digital import run_digital

    inputs = operand_values(op, values, store)
    return run_digital(op, inputs, lambda name: store[name], donated=donated)


def operand_values(op: DigitalOp, values: dict[str, np.ndarray], store) -> list:
    """The arrays of `op`'s operands: values, program tensors, None where omitted."""
    inputs: list[np.ndarray | None] = []
    for operand in op.inputs:
        if operand is None:
            inputs.append(None)
        elif isinstance(operand, Value):
            inputs.append(values[operand.name])
        else:
            inputs.append(store[operand.name])
    return inputs
