"""An ONNX backend (`onnx.backend.base.Backend`) that compiles models with xbarc and runs
them on the simulated chip, so that onnx's own test runner can check xbarc:

    import onnx.backend.test, xbarc.backend
    tests = onnx.backend.test.BackendTest(xbarc.backend.XbarcBackend, __name__)

A model is compiled when it is first run, with the shapes of the inputs it is given.
Weights given as graph inputs (as onnx's node tests do) are bound as constants then:
every input that feeds the weight or bias operand of a Conv, ConvTranspose, Gemm or
MatMul directly. Compiled programs are cached per input shapes and bound weights.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper
from onnx.backend.base import Backend, BackendRep

WEIGHT_OPERANDS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (1,),
    # W, R, B, sequence_lens (and LSTM peepholes P): constants, so that the recurrent
    # matrices map (the rewrite needs the lengths known)
    "LSTM": (1, 2, 3, 4, 7),
    "GRU": (1, 2, 3, 4),
    "RNN": (1, 2, 3, 4),
}


def weight_inputs(model: ModelProto) -> set[str]:
    """Graph inputs that feed a weight or bias operand of a crossbar-capable node (or the
    sequence lengths of a recurrent one)."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - initializers
    found = set()
    for node in model.graph.node:
        for position in WEIGHT_OPERANDS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] in inputs:
                found.add(node.input[position])
    return found


class XbarcRep(BackendRep):
    """A model prepared for xbarc: compiled on first run, per input shapes and weights."""

    def __init__(self, model: ModelProto, noise: str = "ideal", pipeline: str | None = None):
        self.model = model
        self.noise = noise
        self.pipeline = pipeline
        initializers = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.bound = weight_inputs(model)
        self._sessions: dict[str, Any] = {}

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        weights = {name: feeds.pop(name) for name in sorted(self.bound)}
        key = self._key(feeds, weights)
        session = self._sessions.get(key)
        if session is None:
            session = self._compile(feeds, weights)
            self._sessions[key] = session
        return tuple(session.run(None, feeds))

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            return {name: np.asarray(value) for name, value in inputs.items()}
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        values = list(inputs)
        return {name: np.asarray(v) for name, v in zip(self.input_names, values, strict=False)}

    @staticmethod
    def _key(feeds: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]) -> str:
        digest = hashlib.sha256()
        for name in sorted(feeds):
            digest.update(f"{name}:{feeds[name].dtype}:{feeds[name].shape};".encode())
        for name in sorted(weights):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(weights[name]).tobytes())
        return digest.hexdigest()

    def _compile(self, feeds: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]):
        from xbarc.compiler import CompileOptions, compile_onnx
        from xbarc.session import InferenceSession

        model = ModelProto()
        model.CopyFrom(self.model)
        if model.ir_version >= 4:  # older IR versions list initializers as inputs too
            kept = [i for i in model.graph.input if i.name not in weights]
            del model.graph.input[:]
            model.graph.input.extend(kept)
        for name, value in weights.items():
            model.graph.initializer.append(numpy_helper.from_array(value, name))
        shapes = {name: tuple(value.shape) for name, value in feeds.items()}
        options = CompileOptions(pipeline=self.pipeline, input_shapes=shapes)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.onnx"
            onnx.save(model, path)
            program = compile_onnx(path, options)
        return InferenceSession(program, noise=self.noise)


class XbarcBackend(Backend):
    """The onnx backend interface over xbarc (CPU only: the chip is simulated)."""

    @classmethod
    def is_compatible(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> XbarcRep:
        super().prepare(model, device, **kwargs)
        return XbarcRep(model, noise=kwargs.get("noise", "ideal"), pipeline=kwargs.get("pipeline"))

    @classmethod
    def run_model(
        cls, model: ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):  # type: ignore[override]
        raise NotImplementedError("xbarc runs whole models; onnx's runner uses run_model")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = XbarcBackend.prepare
run_model = XbarcBackend.run_model
supports_device = XbarcBackend.supports_device
