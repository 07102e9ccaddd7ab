"""Regenerate the fuzz corpus of tests/test_fuzz.py (run from the repository root):

    python tests/fuzz_corpus/make_corpus.py

Two tiny ONNX models (a convolution network and a Loop around a MatMul), their inputs,
and three programs compiled from them (dense, sparse mapping, basis strategy): each a
few kilobytes, so that a fuzz loop reads them in milliseconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from onnx_models import parse, tanh_loop_model  # noqa: E402

from xbarc.cli import main  # noqa: E402

CNN = """
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N,1,4,4] x) => (float[N,3] y) {
  c = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, w1, b1)
  r = Relu (c)
  f = Flatten <axis = 1> (r)
  y = Gemm <transB = 1> (f, w2, b2)
}
"""


def main_corpus() -> None:
    rng = np.random.default_rng(15)
    cnn = parse(
        CNN,
        {
            "w1": (rng.standard_normal((2, 1, 3, 3)) * 0.5).astype(np.float32),
            "b1": (rng.standard_normal(2) * 0.1).astype(np.float32),
            "w2": (rng.standard_normal((3, 32)) * 0.3).astype(np.float32),
            "b2": (rng.standard_normal(3) * 0.1).astype(np.float32),
        },
    )
    onnx.save(cnn, HERE / "cnn.onnx")
    np.savez(HERE / "cnn_in.npz", x=rng.random((2, 1, 4, 4), dtype=np.float32))
    loop = tanh_loop_model((rng.standard_normal((4, 4)) * 0.5).astype(np.float32), trips=2)
    onnx.save(loop, HERE / "loop.onnx")
    state = (2, 4)
    np.savez(
        HERE / "loop_in.npz",
        x=rng.standard_normal(state).astype(np.float32),
        h0=rng.standard_normal(state).astype(np.float32),
    )
    small = ["--tiles", "4", "--tile-size", "8x8", "--input-shape", "x=1x1x4x4"]
    builds = {
        "cnn.xbar": ["cnn.onnx", *small],
        "cnn_sparse.xbar": ["cnn.onnx", *small, "--mapping", "sparse"],
        "cnn_basis.xbar": ["cnn.onnx", *small, "--strategy", "basis"],
        "loop.xbar": ["loop.onnx", "--tiles", "2", "--tile-size", "8x8"],
    }
    for program, (model, *options) in builds.items():
        code = main(["compile", str(HERE / model), *options, "-o", str(HERE / program)])
        if code != 0:
            raise SystemExit(f"{program} did not compile")


if __name__ == "__main__":
    main_corpus()
