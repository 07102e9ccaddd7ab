"""Array kernels of the runtime: unfold (im2col), fold (col2im), DAC input slices, ADC read-out.

Kernels take arrays and numbers, never IR objects. Each public kernel dispatches to a Numba
implementation or to its numpy twin (same name with the suffix `_numpy`), chosen with
`set_backend`; tests hold the two to bit-identical results (`quantize_inputs` and
`bit_slices` are numpy only). Numba is imported on the first call of a Numba kernel, so
importing this module stays cheap; compiled code is cached on disk next to this file. Hot
loops index with unsigned integers where it matters: Numba wraps negative signed indices,
which blocks vectorization.

Layouts ("columns": one row per crossbar row, one column per patch). A crossbar layer
computes, per group g, `y[g] = W[g]^T @ columns[g]`, one GEMM for the whole batch:
- `unfold` gives `[groups, C/groups*prod(kernel), N*prod(out)]`: row `(c, k0, k1, ...)`
  (channel in group, then kernel taps, row-major), column `n*prod(out) + output pixel`;
- for ConvTranspose, the rows are the input channels, `[groups, C/groups, N*prod(in)]`,
  and `fold` adds the products `[groups, cout_per_group*prod(kernel), N*prod(in)]` into
  the output image (col2im);
- `adc_accumulate` reads out products `[read columns, P]` into `[outputs, P]`.
Patches run along the last, contiguous axis, so per-column work (ADC, accumulation)
vectorizes over them.

Spatial ranks 1 to 3 run through one rank-3 kernel: lower ranks get leading axes of size 1.
`pads` are ONNX ordered: all begins, then all ends.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import numpy.typing as npt

from xbarc.ir.geometry import conv_output_spatial, conv_transpose_output_spatial

BACKENDS = ("numba", "numpy")
KERNEL_RANK = 3
_backend = "numba"


def touched(shape: tuple[int, ...], dtype: npt.DTypeLike, fill: float = 0) -> np.ndarray:
    """A new array filled on the calling thread. Parallel kernels write their outputs from
    several threads, and a fresh allocation's first-touch page faults taken there cost
    ~20x more than one memset here (5 ms instead of 0.2 ms for 1.4 MB on 2 cores)."""
    return np.full(shape, fill, dtype=dtype)


# Work (output elements) below which a copying kernel runs on the calling thread alone:
# waking sleeping worker threads costs ~0.2 ms. The ADC read-out, the costliest kernel per
# element, always runs in parallel.
PARALLEL_WORK = 1 << 20


def _use_threads(work: int) -> None:
    """Set the threads of the next Numba kernel, which produces `work` elements: one below
    PARALLEL_WORK, else all that Numba was configured with (NUMBA_NUM_THREADS). This is
    Numba's setting for the calling thread: it stays in effect after the kernel."""
    import numba

    threads = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(1 if work < PARALLEL_WORK else threads)


def set_backend(name: str) -> None:
    """Make the public kernels run on `name`: "numba" (the default) or "numpy"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {BACKENDS}")
    _backend = name


def backend() -> str:
    return _backend


# ---------------------------------------------------------------------------------------
# Geometry


def _check_geometry(
    op: str,
    rank: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> None:
    if not 1 <= rank <= KERNEL_RANK:
        raise ValueError(f"{op}: {rank} spatial axes; 1 to {KERNEL_RANK} are supported")
    lengths = (len(kernel), len(strides), len(pads), len(dilations))
    if lengths != (rank, rank, 2 * rank, rank):
        raise ValueError(
            f"{op}: kernel, strides, pads, dilations have lengths {lengths}; "
            f"expected {(rank, rank, 2 * rank, rank)} for {rank} spatial axes"
        )
    if min(kernel) < 1 or min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise ValueError(
            f"{op}: kernel {tuple(kernel)}, strides {tuple(strides)} and dilations "
            f"{tuple(dilations)} must be positive and pads {tuple(pads)} non-negative"
        )


def lift(values: Sequence[int], fill: int) -> tuple[int, ...]:
    """Per-axis values for the rank-3 kernels: leading axes of size 1 get `fill`."""
    return (fill,) * (KERNEL_RANK - len(values)) + tuple(int(v) for v in values)


def _tap_sources(
    out_length: int, in_length: int, kernel: int, stride: int, dilation: int, pad_begin: int
) -> np.ndarray:
    """[out_length, kernel]: the input index whose product with tap t lands on output o
    of a transposed convolution (o = i*stride + t*dilation - pad_begin), or -1."""
    span = np.arange(out_length)[:, None] + pad_begin - np.arange(kernel)[None, :] * dilation
    source = span // stride
    lands = (span >= 0) & (span % stride == 0) & (source < in_length)
    return np.where(lands, source, -1)


def _lift_pads(pads: Sequence[int]) -> tuple[int, ...]:
    rank = len(pads) // 2
    return lift(pads[:rank], 0) + lift(pads[rank:], 0)


# ---------------------------------------------------------------------------------------
# Public kernels


def unfold(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    groups: int,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """im2col: x [N, C, *spatial] -> [groups, C/groups*prod(kernel), N*prod(out)], float32
    (int8 and float64 `x` keep their type: DAC digits).

    Row (channel in group, k0, k1, ...), column n*prod(out) + output pixel (row-major);
    positions in the padding read zero. `out`, a C-contiguous array of the result's shape
    and type, is filled and returned instead of a new array.
    """
    out_spatial = _check_unfold(x, kernel, strides, pads, dilations, groups)
    if _backend == "numpy":
        return unfold_numpy(x, kernel, strides, pads, dilations, groups, out=out)
    shape = _unfold_shape(x.shape, kernel, groups, out_spatial)
    dtype = unfold_dtype(x)
    out = _output_buffer("unfold", out, shape, dtype)
    x3 = np.ascontiguousarray(x, dtype=dtype).reshape(x.shape[:2] + lift(x.shape[2:], 1))
    _use_threads(out.size)
    _numba().unfold(
        x3,
        lift(kernel, 1),
        lift(strides, 1),
        _lift_pads(pads),
        lift(dilations, 1),
        lift(out_spatial, 1),
        out,
    )
    return out


def fold(
    columns: np.ndarray,
    batch: int,
    in_spatial: Sequence[int],
    cout_per_group: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
) -> np.ndarray:
    """col2im: [groups, cout_per_group*prod(kernel), N*prod(in)] -> y [N, Cout, *out].

    The product of input pixel i and kernel tap k lands on output i*stride + k*dilation -
    pad_begin per axis; products landing in the padding are dropped. Each output sums its
    products in increasing tap order (that order makes the two backends bit-identical).
    """
    geometry = (
        batch,
        in_spatial,
        cout_per_group,
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
    )
    if _backend == "numpy":
        return fold_numpy(columns, *geometry)
    out_spatial = _check_fold(columns, *geometry)
    axes = zip(
        lift(out_spatial, 1),
        lift(in_spatial, 1),
        lift(kernel, 1),
        lift(strides, 1),
        lift(dilations, 1),
        _lift_pads(pads)[:KERNEL_RANK],
        strict=True,
    )
    sources = tuple(_tap_sources(*axis) for axis in axes)
    y = touched((batch, groups * cout_per_group, *lift(out_spatial, 1)), np.float32)
    _use_threads(y.size * math.prod(kernel))
    _numba().fold(
        np.ascontiguousarray(columns, dtype=np.float32),
        int(batch),
        int(cout_per_group),
        lift(in_spatial, 1),
        sources,
        lift(out_spatial, 1),
        int(groups),
        y,
    )
    return y.reshape(batch, groups * cout_per_group, *out_spatial)


def adc_accumulate(
    partial: np.ndarray,
    target: np.ndarray,
    factor: np.ndarray,
    full_scale: np.ndarray,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
) -> None:
    """Quantized read-out of crossbar columns, added into `acc` in place.

    `partial` [M, P] holds the sums of M read columns over P patches (exact integers in
    `quant`). Per column m: code = clip(rint(partial * levels / full_scale[m]), low,
    levels) in float64 (half to even), low = -levels for a `signed` (differential) ADC
    else 0, then acc[target[m], p] += factor[m] * full_scale[m] * code, so acc / levels is
    the dequantized sum. levels == 0 is a lossless ADC: acc += factor[m] * partial.
    `target`, `factor`, `full_scale` are int64 [M]; `acc` is int64 [outputs, P]. The Numba
    kernel reads out the columns of one target together, in parallel over targets and runs
    of patches: one call for many reads costs one launch.
    """
    _check_adc(partial, target, factor, full_scale, levels, acc)
    if _backend == "numpy":
        adc_accumulate_numpy(partial, target, factor, full_scale, levels, acc, signed)
        return
    order = np.argsort(target, kind="stable")
    runs = np.flatnonzero(np.diff(target[order], prepend=-1, append=-1)).astype(np.int64)
    _use_threads(PARALLEL_WORK)  # conversions pay for a parallel launch at any size
    _numba().adc_accumulate(
        np.ascontiguousarray(partial),
        order,
        runs,
        target,
        factor,
        full_scale,
        int(levels),
        -float(levels) if signed else 0.0,
        acc,
    )


def integer_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b, exactly: `a` uint8 [M, K], `b` int8 [K, N], `out` int32 [M, N], all
    C-contiguous. Runs onnxruntime's MatMulInteger (its VNNI kernels take the work of a
    float32 GEMM in a third of the time); the numpy backend multiplies int64 copies. Check
    `integer_matmul_exact()` first: x86 kernels without VNNI saturate 16-bit sums."""
    m, k = a.shape
    if (
        a.dtype != np.uint8
        or b.dtype != np.int8
        or out.dtype != np.int32
        or b.shape[0] != k
        or out.shape != (m, b.shape[1])
        or not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous)
    ):
        raise ValueError(
            f"integer_matmul: {a.dtype} {a.shape} @ {b.dtype} {b.shape} -> {out.dtype} "
            f"{out.shape}; expected C-contiguous uint8 @ int8 -> int32"
        )
    if _backend == "numpy":
        np.matmul(a.astype(np.int64), b.astype(np.int64), out=out, casting="unsafe")
        return
    session = _integer_matmul_session()
    binding = session.io_binding()
    binding.bind_input("a", "cpu", 0, np.uint8, a.shape, a.ctypes.data)
    binding.bind_input("b", "cpu", 0, np.int8, b.shape, b.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.int32, out.shape, out.ctypes.data)
    session.run_with_iobinding(binding)


@functools.cache
def integer_matmul_exact() -> bool:
    """Whether `integer_matmul` is exact on this machine over the whole uint8 x int8 range
    (probed once: all-extreme operands, then random ones)."""
    rng = np.random.default_rng(0)
    cases = [
        (np.full((8, 256), 255, np.uint8), np.full((256, 8), 127, np.int8)),
        (np.full((8, 256), 255, np.uint8), np.full((256, 8), -128, np.int8)),
        (
            rng.integers(0, 256, (33, 129)).astype(np.uint8),
            rng.integers(-128, 128, (129, 17)).astype(np.int8),
        ),
    ]
    for a, b in cases:
        out = np.empty((a.shape[0], b.shape[1]), np.int32)
        integer_matmul(a, b, out)
        if not np.array_equal(out, a.astype(np.int64) @ b.astype(np.int64)):
            return False
    return True


@functools.cache
def _integer_matmul_session():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "integer_matmul",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [None, None]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [None, None]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return _quiet_session(model)


def _quiet_session(model):
    """An onnxruntime session for a one-node product whose threads do not spin after a
    product: they would take the cores from the parallel ADC kernel that follows
    (bit-sliced SqueezeNet: 0.34 s instead of 0.46 s)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def float_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b in float32 or float64 (all three of one type): onnxruntime's GEMM, whose
    threads sleep after a product; numpy's BLAS threads keep spinning and take the cores
    from the parallel kernels that follow (a noisy ResNet read-out ran 5x slower). The
    numpy backend uses numpy."""
    dtype = out.dtype
    if (
        dtype not in (np.float32, np.float64)
        or a.dtype != dtype
        or b.dtype != dtype
        or a.ndim != 2
        or b.ndim != 2
        or out.shape != (a.shape[0], b.shape[1])
        or a.shape[1] != b.shape[0]
        or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"float_matmul: {a.dtype} {a.shape} @ {b.dtype} {b.shape} -> {out.dtype} "
            f"{out.shape}; expected one float type, C-contiguous out"
        )
    if _backend == "numpy":
        np.matmul(a, b, out=out)
        return
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    session = _matmul_session(np.dtype(dtype).name)
    binding = session.io_binding()
    binding.bind_input("a", "cpu", 0, dtype, a.shape, a.ctypes.data)
    binding.bind_input("b", "cpu", 0, dtype, b.shape, b.ctypes.data)
    binding.bind_output("y", "cpu", 0, dtype, out.shape, out.ctypes.data)
    session.run_with_iobinding(binding)


@functools.cache
def _matmul_session(dtype: str):
    from onnx import TensorProto, helper

    element = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "float_matmul",
        [
            helper.make_tensor_value_info("a", element, [None, None]),
            helper.make_tensor_value_info("b", element, [None, None]),
        ],
        [helper.make_tensor_value_info("y", element, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return _quiet_session(model)


def quantize_inputs(x: np.ndarray, scale: float | np.ndarray, bits: int) -> np.ndarray:
    """Symmetric DAC levels: clip(rint(x / scale), -(2^(bits-1)-1), 2^(bits-1)-1) as int32."""
    if not 2 <= bits <= 32:
        raise ValueError(f"quantize_inputs: {bits} bits; expected 2 to 32")
    limit = 2 ** (bits - 1) - 1
    levels = np.divide(x, scale)
    np.rint(levels, out=levels)
    np.clip(levels, -limit, limit, out=levels)
    return levels.astype(np.int32)


def dac_planes(
    x: np.ndarray,
    scale: float,
    bits: int,
    slice_bits: int,
    count: int,
    *,
    out: np.ndarray | None = None,
) -> tuple[bool, bool]:
    """The DAC's input slices of `x`, in one pass, into `out` ([2, count, *x.shape],
    C-contiguous float32 or float64, or int8 for digits below 128): [0] the slices of the
    positive part of `quantize_inputs(x, scale, bits)`, [1] those of the negative part's
    magnitude (as `bit_slices`). Returns whether each part has a non-zero."""
    x = np.asarray(x, dtype=np.float32)
    if not 2 <= bits <= 32 or not 1 <= slice_bits <= 8 or count < 0:
        raise ValueError(f"dac_planes: {bits} bits in {count} slices of {slice_bits} bits")
    shape = (2, count, *x.shape)
    small = min(slice_bits, bits - 1) <= 7
    if (
        out is None
        or out.shape != shape
        or not (out.dtype in (np.float32, np.float64) or (out.dtype == np.int8 and small))
        or not out.flags.c_contiguous
    ):
        raise ValueError(f"dac_planes: out must be float32 {shape} (int8 for digits < 128)")
    if _backend == "numpy":
        return dac_planes_numpy(x, scale, bits, slice_bits, count, out=out)
    nonzero = np.zeros(2, np.int64)  # per sign: how many runs of values hold a non-zero
    _use_threads(out.size)
    _numba().dac_planes(
        np.ascontiguousarray(x).reshape(-1),
        np.float32(scale),
        np.float32(2 ** (bits - 1) - 1),
        int(slice_bits),
        out.reshape(2, count, x.size),
        nonzero,
    )
    return bool(nonzero[0]), bool(nonzero[1])


def dequantize(
    acc: np.ndarray, unit: int, input_scale: float, column_scale: np.ndarray, out: np.ndarray
) -> None:
    """out[c, p] = float32(float64(acc[c, p]) / unit * input_scale * column_scale[c]), the
    operations in this order in float64; `acc` int64 [C, P], `column_scale` float64 [C],
    `out` float32 [C, P]."""
    if acc.shape != out.shape or column_scale.shape != acc.shape[:1]:
        raise ValueError(
            f"dequantize: acc {acc.shape}, column scales {column_scale.shape}, out {out.shape}"
        )
    if _backend == "numpy":
        dequantize_numpy(acc, unit, input_scale, column_scale, out)
        return
    _use_threads(acc.size)
    _numba().dequantize(acc, np.float64(unit), np.float64(input_scale), column_scale, out)


# ---------------------------------------------------------------------------------------
# Argument checks shared by both backends


def _check_unfold(x, kernel, strides, pads, dilations, groups) -> tuple[int, ...]:
    rank = x.ndim - 2
    _check_geometry("unfold", rank, kernel, strides, pads, dilations)
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"unfold: {x.shape[1]} channels do not split into {groups} groups")
    out_spatial = conv_output_spatial(x.shape[2:], kernel, strides, pads, dilations)
    if min(out_spatial) < 1:
        raise ValueError(
            f"unfold: kernel {tuple(kernel)} with dilations {tuple(dilations)} does not fit "
            f"input {x.shape[2:]} padded by {tuple(pads)}"
        )
    return out_spatial


def _unfold_shape(x_shape, kernel, groups, out_spatial) -> tuple[int, int, int]:
    batch, channels = x_shape[:2]
    return (groups, channels // groups * math.prod(kernel), batch * math.prod(out_spatial))


def unfold_dtype(x: np.ndarray) -> np.dtype:
    """The element type `unfold` gives for `x`: int8 and float64 stay, the rest is float32."""
    return x.dtype if x.dtype in (np.int8, np.float64) else np.dtype(np.float32)


def _output_buffer(
    op: str, out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    if out is None:
        return touched(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"{op}: out is {out.dtype} {out.shape}; expected C-contiguous {dtype} {shape}"
        )
    return out


def _check_fold(
    columns,
    batch,
    in_spatial,
    cout_per_group,
    kernel,
    strides,
    pads,
    dilations,
    output_padding,
    groups,
) -> tuple[int, ...]:
    rank = len(in_spatial)
    _check_geometry("fold", rank, kernel, strides, pads, dilations)
    if len(output_padding) != rank or min(output_padding) < 0:
        raise ValueError(
            f"fold: output_padding {tuple(output_padding)} must be {rank} non-negative values"
        )
    expected = (groups, cout_per_group * math.prod(kernel), batch * math.prod(in_spatial))
    if columns.shape != expected:
        raise ValueError(f"fold: columns have shape {columns.shape}, expected {expected}")
    out_spatial = conv_transpose_output_spatial(
        in_spatial, kernel, strides, pads, dilations, output_padding
    )
    if min(out_spatial) < 1:
        raise ValueError(f"fold: pads {tuple(pads)} leave an empty output {out_spatial}")
    return out_spatial


def _check_bit_slices(levels_nonneg, slice_bits: int, count: int) -> np.ndarray:
    levels = np.asarray(levels_nonneg)
    if not 1 <= slice_bits <= 8 or count < 0:
        raise ValueError(
            f"bit_slices: {count} slices of {slice_bits} bits; expected widths of 1 to 8 bits"
        )
    if levels.dtype.kind not in "iu":
        raise ValueError(f"bit_slices: levels are {levels.dtype}; expected integers")
    if levels.size and levels.min() < 0:
        raise ValueError("bit_slices: levels must be non-negative; split signs first")
    return levels


def _check_adc(partial, target, factor, full_scale, levels, acc) -> None:
    if partial.ndim != 2:
        raise ValueError(f"adc_accumulate: partial sums of shape {partial.shape}; expected 2-D")
    columns, patches = partial.shape
    for name, array in (("target", target), ("factor", factor), ("full_scale", full_scale)):
        if array.shape != (columns,) or array.dtype != np.int64:
            raise ValueError(
                f"adc_accumulate: {name} is {array.dtype} {array.shape}; "
                f"expected int64 ({columns},)"
            )
    if (
        acc.dtype != np.int64
        or acc.ndim != 2
        or acc.shape[1] != patches
        or not (acc.flags.writeable and acc.flags.c_contiguous)
    ):
        raise ValueError(
            f"adc_accumulate: acc is {acc.dtype} {acc.shape}; "
            f"expected writable C-contiguous int64 (outputs, {patches})"
        )
    if columns and (target.min() < 0 or target.max() >= acc.shape[0]):
        raise ValueError(f"adc_accumulate: targets outside the {acc.shape[0]} output rows")
    if levels < 0:
        raise ValueError(f"adc_accumulate: {levels} ADC levels; expected >= 0")
    if levels and columns and full_scale.min() <= 0:
        raise ValueError("adc_accumulate: full scales must be positive")


# ---------------------------------------------------------------------------------------
# Numpy twins: the reference semantics


def unfold_numpy(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    groups: int,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    out_spatial = _check_unfold(x, kernel, strides, pads, dilations, groups)
    rank = x.ndim - 2
    batch, channels = x.shape[:2]
    dtype = unfold_dtype(x)
    padded = np.pad(
        np.asarray(x, dtype=dtype),
        [(0, 0), (0, 0)] + [(pads[a], pads[rank + a]) for a in range(rank)],
    )
    # taps [N, C, *kernel, *out]: one strided window of the padded input per kernel tap
    taps = np.empty((batch, channels, *kernel, *out_spatial), dtype=dtype)
    for tap in np.ndindex(*kernel):
        window = tuple(
            slice(
                tap[a] * dilations[a],
                tap[a] * dilations[a] + strides[a] * (out_spatial[a] - 1) + 1,
                strides[a],
            )
            for a in range(rank)
        )
        taps[(slice(None), slice(None), *tap)] = padded[(slice(None), slice(None), *window)]
    # [N, C, *kernel, *out] -> [groups, C/groups*K, N, P]
    shape = _unfold_shape(x.shape, kernel, groups, out_spatial)
    out = _output_buffer("unfold", out, shape, dtype)
    rows = taps.reshape(batch, groups, shape[1], -1).transpose(1, 2, 0, 3)
    out.reshape(groups, shape[1], batch, -1)[...] = rows
    return out


def fold_numpy(
    columns: np.ndarray,
    batch: int,
    in_spatial: Sequence[int],
    cout_per_group: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    groups: int,
) -> np.ndarray:
    out_spatial = _check_fold(
        columns,
        batch,
        in_spatial,
        cout_per_group,
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
    )
    rank = len(in_spatial)
    products = np.asarray(columns, dtype=np.float32).reshape(
        groups, cout_per_group, *kernel, batch, *in_spatial
    )
    # -> [N, groups, cout, *kernel, *in]
    products = np.moveaxis(products, 2 + rank, 0)
    # The canvas holds every product position i*stride + k*dilation; the output is the
    # canvas shifted by pad_begin (output_padding may reach past the last product).
    canvas_spatial = [
        max((in_spatial[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1,
            pads[a] + out_spatial[a])
        for a in range(rank)
    ]  # fmt: skip
    canvas = np.zeros((batch, groups, cout_per_group, *canvas_spatial), dtype=np.float32)
    for tap in np.ndindex(*kernel):
        window = tuple(
            slice(
                tap[a] * dilations[a],
                tap[a] * dilations[a] + strides[a] * (in_spatial[a] - 1) + 1,
                strides[a],
            )
            for a in range(rank)
        )
        canvas[(slice(None),) * 3 + window] += products[(slice(None),) * 3 + tap]
    crop = tuple(slice(pads[a], pads[a] + out_spatial[a]) for a in range(rank))
    image = canvas[(slice(None),) * 3 + crop]
    return np.ascontiguousarray(image).reshape(batch, groups * cout_per_group, *out_spatial)


def adc_accumulate_numpy(
    partial: np.ndarray,
    target: np.ndarray,
    factor: np.ndarray,
    full_scale: np.ndarray,
    levels: int,
    acc: np.ndarray,
    signed: bool = False,
) -> None:
    _check_adc(partial, target, factor, full_scale, levels, acc)
    if levels == 0:
        contributions = factor[:, None] * partial.astype(np.int64)
    else:
        codes = np.rint(partial.astype(np.float64) * levels / full_scale[:, None])
        np.clip(codes, -levels if signed else 0, levels, out=codes)
        contributions = (factor * full_scale)[:, None] * codes.astype(np.int64)
    # Sum the columns sharing a target, then add once per target (integer sums are exact).
    order = np.argsort(target, kind="stable")
    sorted_targets = target[order]
    starts = np.flatnonzero(np.diff(sorted_targets, prepend=-1))
    if not starts.size:
        return
    sums = np.add.reduceat(contributions[order], starts, axis=0)
    acc[sorted_targets[starts]] += sums


def dac_planes_numpy(
    x: np.ndarray, scale: float, bits: int, slice_bits: int, count: int, *, out: np.ndarray
) -> tuple[bool, bool]:
    levels = quantize_inputs(x, scale, bits)
    parts = (np.maximum(levels, 0), np.maximum(-levels, 0))
    for sign, part in enumerate(parts):
        out[sign] = bit_slices(part, slice_bits, count, out.dtype)
    return bool(parts[0].any()), bool(parts[1].any())


def dequantize_numpy(
    acc: np.ndarray, unit: int, input_scale: float, column_scale: np.ndarray, out: np.ndarray
) -> None:
    values = acc.astype(np.float64)
    values /= unit
    values *= input_scale
    values *= column_scale[:, None]
    out[...] = values


def bit_slices(
    levels_nonneg: np.ndarray, slice_bits: int, count: int, dtype: npt.DTypeLike = np.uint8
) -> np.ndarray:
    """Slices of non-negative integers, least significant first: [count, *levels.shape].

    Slice j is (v >> (j*slice_bits)) & (2^slice_bits - 1), stored as `dtype`. Numpy only:
    the reference of `dac_planes`, whose Numba kernel slices in the same pass.
    """
    levels = _check_bit_slices(levels_nonneg, slice_bits, count)
    shifts = (np.arange(count, dtype=levels.dtype) * slice_bits).reshape(
        (count,) + (1,) * levels.ndim
    )
    mask = (1 << slice_bits) - 1
    return ((levels[np.newaxis] >> shifts) & mask).astype(dtype)


# ---------------------------------------------------------------------------------------
# Numba implementations, compiled on first use


@functools.cache
def _numba() -> SimpleNamespace:
    """Compile (or load from the on-disk cache) the Numba kernels."""
    import os

    import numba
    from numba import prange

    # Threading layer: Numba's default choice (TBB if installed, else OpenMP), but GNU
    # OpenMP's threads must not keep spinning after a kernel: they starve the BLAS threads
    # of the GEMMs that follow (ResNet-50 ran 4x slower on 2 cores). A short spin keeps
    # launches at ~2 us (the `workqueue` layer takes ~140 us per launch). The variable is
    # read when OpenMP starts, at the first parallel launch.
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

    jit = numba.njit(cache=True, parallel=True)

    @jit
    def unfold_kernel(x, kernel, strides, pads, dilations, out_spatial, out):
        batch, channels, in_d, in_h, in_w = x.shape
        k_d, k_h, k_w = kernel
        s_d, s_h, s_w = strides
        d_d, d_h, d_w = dilations
        out_d, out_h, out_w = out_spatial
        groups, row_length, _ = out.shape
        pixels = out_d * out_h * out_w
        group_channels = channels // groups
        taps = k_d * k_h * k_w
        # Flat indices: array views would count references in the hot loop.
        source = x.reshape(-1)
        dest = out.reshape(-1)
        # One task per row of the result (image, channel, tap): a strided copy of the input
        # plane per output line, zeros where the tap reads the padding.
        for task in prange(batch * channels * taps):
            n = task // (channels * taps)
            c = task // taps % channels
            tap = task % taps
            t_d = tap // (k_h * k_w)
            t_h = tap // k_w % k_h
            t_w = tap % k_w
            g = c // group_channels
            row = (c % group_channels) * taps + tap
            first = ((g * row_length + row) * batch + n) * pixels
            plane = (n * channels + c) * in_d * in_h * in_w
            # output columns whose input column o_w*s_w + shift lies inside [0, in_w)
            shift = t_w * d_w - pads[2]
            inside_from = min(out_w, max(0, -(shift // s_w)))
            inside_to = max(inside_from, min(out_w, -((shift - in_w) // s_w)))
            for o_d in range(out_d):
                i_d = o_d * s_d - pads[0] + t_d * d_d
                for o_h in range(out_h):
                    i_h = o_h * s_h - pads[1] + t_h * d_h
                    at = first + (o_d * out_h + o_h) * out_w
                    if not (0 <= i_d < in_d and 0 <= i_h < in_h):
                        for o_w in range(out_w):
                            dest[at + o_w] = 0
                        continue
                    for o_w in range(inside_from):
                        dest[at + o_w] = 0
                    # unsigned indices: LLVM can then vectorize the gather
                    line = np.uint64(plane + (i_d * in_h + i_h) * in_w + shift)
                    for o_w in range(inside_from, inside_to):
                        dest[np.uint64(at + o_w)] = source[line + np.uint64(o_w * s_w)]
                    for o_w in range(inside_to, out_w):
                        dest[at + o_w] = 0

    @jit
    def fold_kernel(columns, batch, cout_per_group, in_spatial, sources, out_spatial, groups, y):
        in_d, in_h, in_w = in_spatial
        source_d, source_h, source_w = sources
        k_d, k_h, k_w = source_d.shape[1], source_h.shape[1], source_w.shape[1]
        out_d, out_h, out_w = out_spatial
        # Gather form of col2im: each output sums its products in increasing tap order,
        # like the numpy twin's loop over taps; one task per output row, so no races.
        for task in prange(batch * out_d * out_h):
            n = task // (out_d * out_h)
            o_d = task // out_h % out_d
            o_h = task % out_h
            for g in range(groups):
                for co in range(cout_per_group):
                    for o_w in range(out_w):
                        total = np.float32(0.0)
                        for t_d in range(k_d):
                            i_d = source_d[o_d, t_d]
                            if i_d < 0:
                                continue
                            for t_h in range(k_h):
                                i_h = source_h[o_h, t_h]
                                if i_h < 0:
                                    continue
                                pixel = ((n * in_d + i_d) * in_h + i_h) * in_w
                                row = ((co * k_d + t_d) * k_h + t_h) * k_w
                                for t_w in range(k_w):
                                    i_w = source_w[o_w, t_w]
                                    if i_w >= 0:
                                        total += columns[g, row + t_w, pixel + i_w]
                        y[n, g * cout_per_group + co, o_d, o_h, o_w] = total

    @jit
    def adc_accumulate_kernel(partial, order, runs, target, factor, full_scale, levels, low, acc):
        columns, patches = partial.shape
        source = partial.reshape(-1)
        dest = acc.reshape(-1)
        top = np.float64(levels)
        chunk = 512
        chunks = (patches + chunk - 1) // chunk
        targets = len(runs) - 1  # columns order[runs[k]:runs[k+1]] share one target
        # One task per (target, run of patches): the columns of one target stay in one
        # task (they would race otherwise) and their sums in one cache-resident run of
        # `acc`. The patch loop runs over contiguous memory with unsigned flat indices, so
        # it vectorizes.
        for task in prange(targets * chunks):
            k = task // chunks
            start = task % chunks * chunk
            length = min(start + chunk, patches) - start
            into = np.uint64(target[order[runs[k]]] * patches + start)
            for index in range(runs[k], runs[k + 1]):
                m = order[index]
                read = np.uint64(m * patches + start)
                if levels == 0:
                    for i in range(length):
                        at = np.uint64(i)
                        dest[into + at] += factor[m] * np.int64(source[read + at])
                    continue
                step = factor[m] * full_scale[m]
                scale = np.float64(full_scale[m])
                for i in range(length):
                    at = np.uint64(i)
                    code = np.rint(np.float64(source[read + at]) * top / scale)
                    dest[into + at] += step * np.int64(min(max(code, low), top))

    @jit
    def dac_planes_kernel(x, scale, limit, slice_bits, out, nonzero):
        _, count, size = out.shape
        mask = np.int32((1 << slice_bits) - 1)
        dest = out.reshape(-1)
        chunk = 16384
        chunks = (size + chunk - 1) // chunk
        flags = np.zeros((chunks, 2), np.int32)
        # Runs of consecutive values per task, flat unsigned indices, no reduction
        # variables across the parallel loop: the inner loop vectorizes.
        for task in prange(chunks):
            start = task * chunk
            stop = min(start + chunk, size)
            any_up = np.int32(0)
            any_down = np.int32(0)
            for j in range(count):
                shift = np.int32(j * slice_bits)
                up_row = np.uint64(j * size)
                down_row = np.uint64((count + j) * size)
                for i in range(start, stop):
                    at = np.uint64(i)
                    # float32 arithmetic, as numpy's x / scale with a float32 x
                    level = np.int32(min(max(np.rint(x[at] / scale), -limit), limit))
                    up = max(level, np.int32(0))
                    down = max(-level, np.int32(0))
                    any_up |= up
                    any_down |= down
                    dest[up_row + at] = (up >> shift) & mask
                    dest[down_row + at] = (down >> shift) & mask
            flags[task, 0] = any_up
            flags[task, 1] = any_down
        nonzero[0] = flags[:, 0].sum()
        nonzero[1] = flags[:, 1].sum()

    @jit
    def dequantize_kernel(acc, unit, input_scale, column_scale, out):
        columns, patches = acc.shape
        for c in prange(columns):
            scale = column_scale[c]
            for p in range(patches):
                out[c, p] = np.float32(np.float64(acc[c, p]) / unit * input_scale * scale)

    return SimpleNamespace(
        unfold=unfold_kernel,
        fold=fold_kernel,
        adc_accumulate=adc_accumulate_kernel,
        dac_planes=dac_planes_kernel,
        dequantize=dequantize_kernel,
    )
