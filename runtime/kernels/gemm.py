"""GEMMs of crossbar reads on onnxruntime: exact uint8 x int8 products and float products.

    integer_matmul(cells, digits, out)   # after integer_matmul_exact() said it is exact here
    float_matmul(cells, inputs, out)

onnxruntime's sessions, unlike numpy's BLAS, let their threads sleep after a product, which
leaves the cores to the parallel Numba kernels that follow. The numpy backend multiplies
with numpy.
"""

from __future__ import annotations

import functools

import numpy as np

from xbarc.runtime.kernels import backend, thread_count


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
    if backend() == "numpy":
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
    options.intra_op_num_threads = thread_count()  # XBARC_THREADS
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
    if backend() == "numpy":
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
