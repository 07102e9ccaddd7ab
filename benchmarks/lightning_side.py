"""The aihwkit-lightning side of benchmarks/sim_speed.py's matched comparison.

Runs in the environment that benchmarks/setup_lightning.sh makes (torch CPU, aihwkit-lightning
2.1), never in xbarc's, and never imports xbarc. It rebuilds a trained digits model in torch
from the ONNX file's weights (the architectures of tests/fixtures/digits/train.py, whose
initializer names are the torch state_dict keys), converts it to aihwkit-lightning's analog
layers at the settings xbarc's matched program uses, calibrates both ranges on the data, and
times the forward pass:

    benchmarks/.venv-lightning/bin/python benchmarks/lightning_side.py \
        tests/fixtures/digits/lenet.onnx tests/fixtures/digits/digits_test.npz --batch 540

Matched settings (xbarc: `compile --cell-bits 8 --hw-set dac.slice_bits=8`, `calibrate`,
`eval --noise quant --set input_range=calibrated --set adc_range=calibrated`):
- weights: 8 bits per output channel, symmetric (`modifier.quantization_type =
  DISCRETIZE_PER_CHANNEL`, `res = 2**8 - 2`: +-127 steps of max|w| / 127, as xbarc's
  `--weight-bits 8 --scale column`), quantized once before the runs (`quantize_weights`);
- tiles of at most 128 rows (`mapping.max_input_size = 128`): a layer's inputs are cut into
  slices of 128, each slice read and converted on its own, as xbarc's 128-row tiles;
- DAC: 8-bit inputs (`forward.inp_res = 2**8 - 2`) inside a static input range per slice,
  calibrated on the data at the 99.99th percentile (`calibrate_input_ranges`,
  CACHE_QUANTILE, quantile 0.9999), as `xbarc calibrate`'s DAC input range;
- ADC: 8 bits (`forward.out_res = 2**8 - 2`) over +-`out_bound` x input range x max|w| of the
  slice; `out_bound` set per layer to the 99.99th percentile of |slice output| / (input range
  x max|w|) on the data, as `xbarc calibrate`'s ADC range (its percentile of the read sums);
- no noise (no output noise, no weight noise), eval mode, torch's default threads
  (--threads to change).
What stays different is each simulator's own convention: aihwkit-lightning's converters
are symmetric (+-127 steps), so non-negative inputs (after a ReLU) use 7 of the DAC's bits,
where xbarc drives them unsigned on all 8; its ADC range is per tile (input range x
out_bound x the slice's max|w|, out_bound calibrated per layer), where xbarc's is per layer
from the calibration.
It prints one JSON object: the timings, accuracy on the labels, and the settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# torch, onnx and aihwkit_lightning are imported inside the functions: xbarc's own
# environment (which imports this module for its --help test) has none of them.
EIGHT_BITS = 2**8 - 2  # aihwkit-lightning's resolution for 8 bits: +-127 steps
PERCENTILE = 99.99  # as xbarc calibrate's default
TILE_ROWS = 128


def make_lenet():
    """tests/fixtures/digits/train.py's make_lenet (copied: that script needs sklearn)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def make_mlp():
    """tests/fixtures/digits/train.py's make_mlp."""
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


MODELS = {"lenet": make_lenet, "mlp": make_mlp}


def torch_model(path: Path):
    """The float model of `path` (lenet or mlp of the digits fixtures) with its ONNX weights."""
    import onnx
    import torch
    from onnx import numpy_helper

    stem = path.stem
    if stem not in MODELS:
        raise SystemExit(
            f"lightning_side: no torch architecture for {path.name}; known: {sorted(MODELS)}"
        )
    model = MODELS[stem]()
    weights = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
        for t in onnx.load(str(path)).graph.initializer
    }
    model.load_state_dict(weights, strict=True)
    return model.eval()


def rpu_config():
    from aihwkit_lightning.simulator.configs import (
        TorchInferenceRPUConfig,
        WeightClipType,
        WeightModifierType,
        WeightNoiseInjectionType,
        WeightQuantizationType,
    )

    config = TorchInferenceRPUConfig()
    config.mapping.max_input_size = TILE_ROWS
    config.modifier.type = WeightModifierType.NONE
    config.modifier.noise_type = WeightNoiseInjectionType.NONE
    config.modifier.quantization_type = WeightQuantizationType.DISCRETIZE_PER_CHANNEL
    config.modifier.res = EIGHT_BITS
    config.clip.type = WeightClipType.NONE
    config.forward.out_noise = 0.0
    # the ranges are calibrated below: input range calibration needs unquantized inputs and
    # no range yet; the ADC needs an input range
    config.forward.inp_res = -1
    config.forward.out_res = -1
    config.forward.out_bound = 0.0
    config.pre_post.input_range.enable = False
    return config


def analog_model(model, calibration) -> tuple[object, dict]:
    """`model` (torch) on aihwkit-lightning's analog layers at the matched settings, both
    ranges calibrated on `calibration` (a tensor of inputs); also the ranges per layer."""
    import torch
    from aihwkit_lightning.inference.calibration import (
        InputRangeCalibrationType,
        calibrate_input_ranges,
    )
    from aihwkit_lightning.nn.conversion import convert_to_analog

    analog = convert_to_analog(model, rpu_config()).eval()
    layers = dict(analog.named_analog_layers())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Modified the rpu_config because quantize_weights..."
        for layer in layers.values():
            layer.quantize_weights()  # once, not on every forward
    calibrate_input_ranges(
        analog,
        InputRangeCalibrationType.CACHE_QUANTILE,
        iter([((calibration,), {})]),
        quantile=PERCENTILE / 100,
        max_samples=1_000_000,
        verbose=False,
    )
    for layer in layers.values():
        layer.rpu_config.forward.inp_res = EIGHT_BITS
    # the ADC range: capture each layer's input with the DAC on and the ADC off, then set
    # out_bound from the percentile of its slices' outputs in units of input range x max|w|
    inputs: dict[str, object] = {}
    hooks = [
        layer.register_forward_pre_hook(
            lambda mod, args, name=name: inputs.__setitem__(name, args[0])
        )
        for name, layer in layers.items()
    ]
    with torch.inference_mode():
        analog(calibration)
    for hook in hooks:
        hook.remove()
    ranges = {}
    for name, layer in layers.items():
        bound = out_bound(layer, inputs[name])
        layer.rpu_config.forward.out_bound = bound
        layer.rpu_config.forward.out_res = EIGHT_BITS
        ranges[name] = {
            "input_range": [round(float(v), 5) for v in layer.input_range.detach()],
            "out_bound": round(bound, 5),
            "tiles": list(layer.in_sizes),
        }
    return analog, ranges


def out_bound(layer, x) -> float:
    """The PERCENTILE of |slice output| / (input range x max|w| of the slice) over the
    layer's inputs `x`: the read sums each slice's ADC sees, as aihwkit-lightning's forward
    computes them."""
    import torch
    from torch import nn

    if hasattr(layer, "kernel_size"):  # AnalogConv2d: the patches its forward unfolds
        x = nn.functional.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        x = x.transpose(-1, -2)
    x = x.reshape(-1, x.shape[-1])
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    ratios = []
    start = 0
    with torch.inference_mode():
        for index, size in enumerate(layer.in_sizes):
            limit = layer.input_range[index].detach()
            step = 2 * limit / EIGHT_BITS
            xs = torch.round(torch.clamp(x[:, start : start + size], -limit, limit) / step) * step
            ws = weight[:, start : start + size]
            out = xs @ ws.T
            ratios.append((out.abs() / (limit * ws.abs().max())).flatten().numpy())
            start += size
    return float(np.percentile(np.concatenate(ratios), PERCENTILE))


def best_of(run, repeats: int) -> tuple[float, list[float]]:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), times


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a digits fixture .onnx (lenet or mlp)")
    parser.add_argument("data", type=Path, help=".npz with x [N,1,8,8] and y [N]")
    parser.add_argument(
        "--batch", type=int, default=540, help="images a run: the data repeated (default 540)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, best taken (default 5)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: torch's own, all cores)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = np.load(args.data)
    x_all, y_all = data["x"].astype(np.float32), data["y"].astype(np.int64)
    take = np.arange(args.batch) % len(x_all)
    x = torch.from_numpy(np.ascontiguousarray(x_all[take]))
    y = y_all[take]

    model = torch_model(args.model)
    calibration = torch.from_numpy(x_all)
    analog, ranges = analog_model(torch_model(args.model), calibration)

    def forward(net):
        with torch.inference_mode():
            return net(x)

    float_best, _ = best_of(lambda: forward(model), args.repeats)
    seconds, times = best_of(lambda: forward(analog), args.repeats)
    logits = forward(analog).numpy()
    import aihwkit_lightning

    report = {
        "model": args.model.name,
        "batch": args.batch,
        "seconds": seconds,
        "times": times,
        "torch_float_seconds": float_best,
        "accuracy": float((logits.argmax(1) == y).mean()),
        "float_accuracy": float((forward(model).numpy().argmax(1) == y).mean()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "aihwkit_lightning": aihwkit_lightning.__version__,
        "settings": {
            "weights": "8 bits per channel (DISCRETIZE_PER_CHANNEL, res 254), quantized once",
            "max_input_size": TILE_ROWS,
            "inp_res": EIGHT_BITS,
            "out_res": EIGHT_BITS,
            "input_range": f"CACHE_QUANTILE {PERCENTILE / 100}",
            "out_bound": f"per layer, {PERCENTILE} percentile of |slice out| / (range x max|w|)",
            "noise": "none",
        },
        "ranges": ranges,
    }
    json.dump(report, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
