"""What one sample of a batch costs the runtime in memory, estimated from the program.

    sample_bytes(program, settings) -> bytes      # grows linearly with the batch

The batch size of `xbarc eval` and `xbarc calibrate` is a memory budget divided by this
(`xbarc/batching.py`). It counts what `executor.Executor` holds per sample of a batch:

- the activations: a run keeps every value of the graph until it ends (`values`);
- `quant` on the bit-plane path (the faithful default: `bitplane_path`), per crossbar
  layer: both signs' uint8 DAC levels, one sign's levels unfolded, both signs' packed bit
  planes (a 64-bit word per 64 rows, plane and position; reads of at most
  `depthwise.TABLE_ROWS` rows at 1-bit steps: a copy of one sign's levels, looked up in
  place) and the layer's float32 result,
  which its kernel writes dequantized (no accumulator but for a basis combine or a
  ConvTranspose);
- `quant` otherwise and the noisy profiles, per crossbar layer: the DAC's input slices (2 signs x
  slices x the input), the input unfolded into patches (2 signs x slices x groups x rows x
  output positions: im2col of a convolution), the int64 accumulator (groups x read columns
  x positions; for a layer combined from a basis its responses, G x S x K x P), and the
  layer's float32 result before and after it is laid out (a combined layer's float64
  copy of its responses and their products with the coefficients too), and the partial
  sums of a read (every slice of every column of the array reading the same input rows,
  times the patches) where they outgrow the read-out's fixed buffer. The executor keeps its
  workspace (slices, patches, accumulator) from layer to layer under one name each, so
  those count with the largest layer's size, once each;
- `ideal`: onnxruntime runs the network on the effective weights; its arena reuses
  activations, so the activations are counted once more for it.

Digits are one byte a slice where reads are exact integer GEMMs (uint8 cells, int8
digits), else four (float32: differential ADCs); the noisy read path of `rram` and `pcm`
unfolds each sign's uint8 levels whole, one byte a position for all slices (layers of
reads shorter than `noisy_read.NOISY_TALL` rows; taller ones are read read by read). The estimate
leans high: integer reads of sparse columns (`kernels/sparse_read.py`) unfold each
sign's levels once instead of slice by slice and buffer no partial sums.
The estimate is checked against tracemalloc's peak in tests/test_batching.py and
benchmarks/batch_memory.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xbarc.ir.geometry import conv_output_spatial
from xbarc.ir.tile import CrossbarLayer, Program
from xbarc.ir.types import NUMPY_DTYPES, TensorType
from xbarc.runtime.kernels.depthwise import TABLE_ROWS
from xbarc.runtime.kernels.noisy_read import NOISY_TALL
from xbarc.runtime.noise import NoiseSettings


@dataclass(frozen=True, slots=True)
class SampleCost:
    """Bytes per sample of a batch, by what holds them."""

    activations: int  # every value of the graph (and onnxruntime's copy in `ideal`)
    workspace: int  # quant: input slices, patches, accumulator and read buffer, the largest
    layer_output: int  # quant: the largest layer's float32 result, twice (and a combine's)

    @property
    def total(self) -> int:
        return self.activations + self.workspace + self.layer_output


def sample_bytes(program: Program, settings: NoiseSettings) -> int:
    """The bytes one more sample in a batch costs a run of `program` under `settings`
    (at least 1)."""
    return max(1, sample_cost(program, settings).total)


def sample_cost(program: Program, settings: NoiseSettings) -> SampleCost:
    """`sample_bytes` by what holds the bytes (see the module's docstring)."""
    types = program.value_types()
    activations = sum(per_sample_bytes(t) for t in types.values())
    if not settings.quantized:
        return SampleCost(2 * activations, 0, 0)
    resolved = settings.resolved(program.hardware)
    assert resolved.dac_bits is not None
    slice_bits = program.hardware.dac.slice_bits
    slices = -(-resolved.dac_bits // slice_bits)
    digit = 1 if integer_digits(program, resolved) else 4
    noisy_path = reads_noisy_path(program, resolved)
    tile_rows = max(tile_type.rows for tile_type in program.hardware.tile_types)
    slices_of = slices
    responses = basis_responses(program)
    read_columns = read_columns_per_group(program)
    bit_planes = bitplane_path(program, resolved)
    input_slices = patches = accumulator = reads = output = 0
    for layer in program.layers():
        input_type = types.get(layer.input)
        input_elements = 0 if input_type is None else per_sample_elements(input_type)
        positions = layer_positions(layer, input_type)
        columns = responses.get(layer.name, layer.cols)
        if bit_planes:
            # the bit-plane and depthwise paths: each sign's uint8 levels whole, one sign
            # unfolded at a time, both packed (64 rows a word, a word a plane); a whole
            # layer's output written by the kernel, no accumulator (`bitplane_finish`)
            input_slices = max(input_slices, 2 * input_elements)
            if slice_bits == 1 and layer.rows <= TABLE_ROWS:  # tables: levels read in place
                patches = max(patches, input_elements)  # (one sign's copy, padded)
            else:
                words = layer.groups * math.ceil(layer.rows / 64)
                unfolded = layer.groups * layer.rows * positions
                patches = max(patches, unfolded + 2 * slices_of * words * positions * 8)
            if layer.name in responses or layer.kind == "conv_transpose":
                accumulator = max(accumulator, layer.groups * columns * positions * 8)
            output = max(output, 2 * layer.groups * layer.cols * positions * 4)
            continue
        slices, digit_bytes, signs = slices_of, digit, 2
        if noisy_path and min(layer.rows, tile_rows) < NOISY_TALL:
            # the noisy read path: each sign's uint8 levels whole (not slice by slice),
            # one sign unfolded at a time
            slices, digit_bytes, signs = 1, 1, 1
        input_slices = max(input_slices, 2 * slices * input_elements * digit_bytes)
        patches = max(patches, signs * slices * layer.groups * layer.rows * positions * digit_bytes)
        accumulator = max(accumulator, layer.groups * columns * positions * 8)
        reads = max(reads, read_columns.get(layer.name, 0) * positions * 4)
        transient = 2 * layer.groups * layer.cols * positions * 4
        if layer.name in responses:  # the combine's float64 responses and products
            transient += layer.groups * (columns + layer.cols) * positions * 8
        output = max(output, transient)
    return SampleCost(activations, input_slices + patches + accumulator + reads, output)


def integer_digits(program: Program, settings: NoiseSettings) -> bool:
    """Whether reads are exact integer GEMMs on one-byte digits (the executor's
    `_read_types`): no noise, a polarity ADC, cells of at most 8 bits."""
    if settings.cells_noisy or settings.reads_noisy or settings.adc_placement == "differential":
        return False
    cell_bits = max((s.bits for a in program.arrays for s in a.slices), default=0)
    return cell_bits <= 8


def bitplane_path(program: Program, settings: NoiseSettings) -> bool:
    """Whether exact integer reads take the bit-plane and depthwise paths (the executor's
    `_bitplane_reads`): one-byte digits (`integer_digits`), DAC levels of at most 8 bits
    fed at most 2 bits a step, ADC full scales known before the read."""
    dac_bits = settings.dac_bits or program.hardware.dac.bits
    adc_range = settings.adc_range or program.hardware.adc.range
    return (
        integer_digits(program, settings)
        and dac_bits <= 8
        and program.hardware.dac.slice_bits <= 2
        and adc_range != "dynamic"
    )


def reads_noisy_path(program: Program, settings: NoiseSettings) -> bool:
    """Whether a noisy profile's reads take the executor's noisy path (`_noisy_columns`):
    DAC levels of at most 8 bits, ADC full scales known before the read, no offset
    encoding."""
    noisy = settings.cells_noisy or settings.reads_noisy
    offset = any(array.encoding == "offset" for array in program.arrays)
    dac_bits = settings.dac_bits or program.hardware.dac.bits
    adc_range = settings.adc_range or program.hardware.adc.range
    return noisy and not offset and dac_bits <= 8 and adc_range != "dynamic"


def basis_responses(program: Program) -> dict[str, int]:
    """Per layer combined from a basis (BasisN): its response columns per group, S x K."""
    responses = {}
    for combine in program.combines:
        layer = program.layer(combine.layer)
        segments = math.ceil(layer.rows / combine.segment_rows) if combine.segment_rows else 0
        responses[layer.name] = segments * program.array(combine.basis).cols
    return responses


def read_columns_per_group(program: Program) -> dict[str, int]:
    """Per layer, the most columns one read can drive at once: every slice of every column
    of its array (or of its basis) reading the same input rows. The partial sums of a read
    wait in the read-out buffer, which grows past its fixed size for reads of that many
    columns times the batch's patches."""
    columns = {}
    bases = {combine.layer: combine.basis for combine in program.combines}
    for layer in program.layers():
        name = bases.get(layer.name)
        array = program.array(name) if name is not None else program.weights_of(layer.name)
        if array is not None:
            columns[layer.name] = len(array.slices) * array.cols
    return columns


def layer_positions(layer: CrossbarLayer, input_type: TensorType | None) -> int:
    """The patches one sample drives through the layer: a convolution's output positions,
    a transposed convolution's input positions, a Gemm or MatMul's rows per sample."""
    shape = None if input_type is None else input_type.shape
    if shape is None or any(d is None for d in shape) or not shape:
        return 1
    dims = [int(d) for d in shape]  # type: ignore[arg-type]
    geometry = layer.geometry
    if layer.kind == "conv" and geometry is not None:
        out = conv_output_spatial(
            tuple(dims[2:]), geometry.kernel, geometry.strides, geometry.pads, geometry.dilations
        )
        return math.prod(out)
    if layer.kind == "conv_transpose":
        return math.prod(dims[2:])
    return math.prod(dims[1:-1])  # the leading axes after the batch


def per_sample_elements(value_type: TensorType) -> int:
    """Elements of one sample of a value: its shape after the first (batch) axis; unknown
    dims count as 1, a scalar as 1."""
    shape = value_type.shape
    if not shape:
        return 1
    return math.prod(1 if d is None else int(d) for d in shape[1:])


def per_sample_bytes(value_type: TensorType) -> int:
    dtype = NUMPY_DTYPES.get(value_type.dtype)
    return per_sample_elements(value_type) * (4 if dtype is None else dtype.itemsize)
