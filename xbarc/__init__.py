"""xbarc: compile ONNX models to crossbar tile programs for RRAM in-memory computing."""

__version__ = "0.1.0"
