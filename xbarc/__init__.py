"""xbarc: compile ONNX models to crossbar tile programs for RRAM in-memory computing.

`xbarc.InferenceSession` runs a compiled program like onnxruntime runs a model; it is
imported on first use so that the compiler and the command line start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from xbarc.session import InferenceSession


def __getattr__(name: str) -> Any:
    if name == "InferenceSession":
        from xbarc.session import InferenceSession

        return InferenceSession
    raise AttributeError(f"module 'xbarc' has no attribute {name!r}")


__all__ = ["InferenceSession", "__version__"]
