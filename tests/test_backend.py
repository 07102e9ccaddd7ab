"""ONNX conformance through onnx's own backend test runner, in the `ideal` profile.

Included: the node tests of the crossbar ops (Conv, ConvTranspose, Gemm, MatMul), of the
recurrent layers (LSTM, GRU, RNN: their W and R map onto crossbars) and of control flow
(If, Loop, Scan), the `pytorch-converted` and `pytorch-operator` suites, and the nine
light model tests. Every
excluded test is listed in EXCLUDED with the reason.
"""

from __future__ import annotations

import warnings

import onnx.backend.test
import pytest

import xbarc.backend
from tests.conftest import HEAVY_LIGHT_MODELS

INCLUDED = (
    r"^test_conv_",
    r"^test_convtranspose",
    r"^test_gemm_",
    r"^test_matmul_",
    r"^test_(lstm|gru|rnn|simple_rnn)_",
    r"^test_(if|loop|scan)",
    r"^test_range_(float|int32)_.*_expanded",  # a Loop (bfloat16 cannot cross into numpy)
    r"^test_(bvlc_alexnet|densenet121|inception_v1|inception_v2|resnet50|shufflenet"
    r"|squeezenet|vgg19|zfnet512)_",
)
PYTORCH_SUITES = ("pytorch-converted", "pytorch-operator")

# test name pattern -> why it is excluded
EXCLUDED: dict[str, str] = {
    r"^test_(if_seq|if_opt|loop13_seq|loop16_seq_none)_": "sequence and optional values: "
    "xbarc compiles and runs tensors only",
    r"^test_scan_sum_": "opset 8 Scan (a batch axis): the test feeds `initial` with rank 2 "
    "where the model declares rank 1, which compile refuses",
    r"^test_PReLU_[123]d_multiparam_": "opset 6 PRelu with a per-channel slope [C]: onnx's "
    "version converter keeps the slope shape when it lifts the model to opset 9, where the "
    "slope broadcasts from the last axis, and onnxruntime refuses the converted node",
}


def backend_tests() -> dict[str, type]:
    with warnings.catch_warnings():
        # onnx generates its node test cases on import, and some of them overflow casts
        # on purpose; those warnings are onnx's, not ours
        warnings.simplefilter("ignore", RuntimeWarning)
        runner = onnx.backend.test.BackendTest(xbarc.backend.XbarcBackend, __name__)
    for pattern in INCLUDED:
        runner.include(pattern)
    for suite in PYTORCH_SUITES:
        for case in onnx.backend.test.loader.load_model_tests(kind=suite):
            runner.include(f"^{case.name}_")
    for pattern in EXCLUDED:
        runner.exclude(pattern)
    return runner.test_cases


def mark_heavy_models_slow(cases: dict[str, type]) -> dict[str, type]:
    """The real-model tests of the heavy light networks run with the slow tests."""
    real_models = cases["OnnxBackendRealModelTest"]
    for name in HEAVY_LIGHT_MODELS:
        method = f"test_{name}_cpu"
        setattr(real_models, method, pytest.mark.slow(getattr(real_models, method)))
    return cases


globals().update(mark_heavy_models_slow(backend_tests()))


def test_the_suites_are_not_empty():
    cases = backend_tests()
    methods = [
        name
        for case in cases.values()
        for name in dir(case)
        if name.startswith("test_") and name.endswith("_cpu")
    ]
    assert len(methods) > 150
