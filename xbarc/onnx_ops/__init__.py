"""The semantics of ONNX ops in numpy: the one place they live.

Constant folding (`xbarc.frontend.fold`) and the runtime's digital ops
(`xbarc.runtime.digital`) both evaluate an op by looking up `SEMANTICS[op_type]` and
calling it on an `OpCall`, so that what a node computes at compile time is what it
computes at run time, and both match onnxruntime (tests/test_op_semantics.py checks every
op here through both paths against it). Each caller keeps only its policy: the folder
decides what may be folded and falls back to onnx's reference evaluator, the runtime
dispatches, donates buffers and falls back to onnxruntime, whenever a semantics function
raises `Unsupported` or the op has none.

The runtime may replace the window loop of a pool by a faster kernel with the same bits
(`pooling.max_pool` and `pooling.average_pool` take it as a parameter); it does not
redefine an op.

Layering: this package imports numpy and onnx only. The frontend and the runtime import it;
it never imports them, the passes or the IR.

    base.py           OpCall (what a semantics function sees), Unsupported, the registry
    elementwise.py    activations, Add/Sub/Mul/Div, Pow, Sum/Mean/Max/Min, MatMul
    layout.py         shape, layout and constant-making ops (Reshape, Slice, Gather, Cast...)
    pooling.py        MaxPool, AveragePool (window geometry, numpy twins), global pools
    normalization.py  BatchNormalization (inference), Softmax, LogSoftmax
    resize.py         Resize and Upsample
"""

from __future__ import annotations

from xbarc.onnx_ops import elementwise, layout, normalization, pooling, resize
from xbarc.onnx_ops.base import SEMANTICS, Array, OpCall, Semantics, Unsupported

__all__ = [
    "SEMANTICS",
    "Array",
    "OpCall",
    "Semantics",
    "Unsupported",
    "elementwise",
    "layout",
    "normalization",
    "pooling",
    "resize",
]
