"""ONNX frontend: load, check, infer shapes, fold constants and lower to the graph IR."""
