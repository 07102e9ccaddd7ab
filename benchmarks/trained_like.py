"""Give the onnx light models trained-like weights, so mappings that look at the weights
(sparse, squeezed) see what they would see on a trained network.

    python benchmarks/trained_like.py light_resnet50 out.onnx [--seed 0] [--pruning 0.9]

The light models ship their topology only: every weight is one constant (a
ConstantOfShape node). Here each Conv, Gemm and MatMul weight becomes a Constant drawn
from the distribution stated in `draw_weights`; other constants (biases, batch norm) stay
as they are. `--pruning p` then zeroes the fraction p of smallest-magnitude weights of
each layer, as unstructured magnitude pruning does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def draw_weights(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Laplace-distributed weights (trained weights are peaked at zero with heavy tails)
    with He initialisation's standard deviation sqrt(2 / fan-in), times a log-normal
    scale per output channel (sigma 0.5), as trained layers' channels differ in gain.
    Axis 0 is the output channel (Conv's [Cout, Cin/g, k...]; Gemm and MatMul weights are
    taken as [out, in] too, which only matters for the per-channel scale)."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    spread = np.sqrt(1.0 / fan_in)  # Laplace scale b: std = b * sqrt(2)
    weights = rng.laplace(0.0, spread, size=shape)
    gains = rng.lognormal(0.0, 0.5, size=(shape[0],) + (1,) * (len(shape) - 1))
    return (weights * gains).astype(np.float32)


def prune(weights: np.ndarray, fraction: float) -> np.ndarray:
    """Zero the `fraction` of smallest-magnitude weights."""
    if fraction <= 0:
        return weights
    threshold = np.quantile(np.abs(weights), fraction)
    return np.where(np.abs(weights) <= threshold, 0.0, weights).astype(np.float32)


def trained_like(model: onnx.ModelProto, seed: int, pruning: float = 0.0) -> onnx.ModelProto:
    """A copy of `model` whose crossbar weights are drawn from `draw_weights`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the input
    graph = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    rng = np.random.default_rng(seed)
    replaced: set[str] = set()
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        name = node.input[1]
        producer = producers.get(name)
        if name in replaced or producer is None or producer.op_type != "ConstantOfShape":
            continue
        shape = tuple(int(d) for d in shapes[producer.input[0]])
        weights = prune(draw_weights(shape, rng), pruning)
        constant = onnx.helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(weights, name)
        )
        producer.CopyFrom(constant)  # in place: the graph keeps its order
        replaced.add(name)
    if not replaced:
        raise SystemExit("no ConstantOfShape weights found: is this an onnx light model?")
    return model


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a light model's name (light_resnet50) or .onnx path")
    parser.add_argument(
        "output", type=Path, help="where to write the model with trained-like weights (.onnx)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight draws (default 0)")
    parser.add_argument(
        "--pruning",
        type=float,
        default=0.0,
        help="fraction of each layer's smallest-magnitude weights set to zero (default 0)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    source = Path(args.model)
    if not source.exists():
        source = LIGHT / f"{args.model}.onnx"
    onnx.save(trained_like(onnx.load(source), args.seed, args.pruning), args.output)


if __name__ == "__main__":
    main()
