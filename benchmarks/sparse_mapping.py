"""Crossbars and accuracy of dense, sparse and squeezed mappings on the digits fixtures.

    python benchmarks/sparse_mapping.py [--seeds 3] [--no-record]

1. Crossbars (virtual tiles) per mapping for every trained fixture and its pruned
   versions, at 32x32 and 128x128 tiles, column groups of 8: `dense` and `sparse` with the
   default 2-bit cells, `bit-sliced` (1-bit cells, dense) and `squeezed` (1-bit cells,
   each bit plane compacted), as `xbarc compile --compare-mappings` prints them.
2. Held-out accuracy under the `rram` profile (mean +- std over --seeds chips) of the
   dense, sparse and squeezed mappings (2-bit cells) at tile sizes 32 to 256: seed 000's
   question of whether compaction makes a network more or less sensitive to noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results import record  # noqa: E402

from xbarc.compiler import CompileOptions, compare_mappings, compile_onnx  # noqa: E402
from xbarc.runtime.executor import Executor  # noqa: E402
from xbarc.runtime.noise import Seeds, noise_settings  # noqa: E402

DIGITS = Path(__file__).parent.parent / "tests" / "fixtures" / "digits"
MODELS = ("mlp", "lenet", "resnet", "mobilenet")
ACCURACY_MODELS = ("lenet", "lenet_p90", "mlp_p90", "resnet_p90")
TILE_SIZES = (32, 64, 128, 256)


def options(tile: int, mapping: str = "dense") -> CompileOptions:
    return CompileOptions(
        tiles=4096,
        tile_rows=tile,
        tile_cols=tile,
        input_shapes={"x": (1, 1, 8, 8)},
        mapping=mapping,
        group_cols=8,
    )


def crossbar_rows() -> list[str]:
    lines = []
    for tile in (32, 128):
        lines += [
            "",
            f"{tile}x{tile} tiles, column groups of 8: crossbars (reduction against dense)",
            "",
            "| model | dense | sparse | bit-sliced | squeezed | squeezed vs bit-sliced |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for model in MODELS:
            for suffix in ("", "_p50", "_p80", "_p90"):
                name = model + suffix
                rows = {
                    row["mapping"]: row
                    for row in compare_mappings(DIGITS / f"{name}.onnx", options(tile))
                }
                dense = rows["dense"]["crossbars"]

                def cell(key: str, dense: int = dense, rows: dict = rows) -> str:
                    count = rows[key]["crossbars"]
                    return f"{count} ({dense / count:.2f}x)"

                squeeze_gain = rows["bit-sliced"]["crossbars"] / rows["squeezed"]["crossbars"]
                lines.append(
                    f"| {name} | {dense} | {cell('sparse')} | {cell('bit-sliced')} | "
                    f"{cell('squeezed')} | {squeeze_gain:.2f}x |"
                )
                print(lines[-1], flush=True)
    return lines


def accuracy_rows(seeds: int) -> list[str]:
    with np.load(DIGITS / "digits_test.npz", allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
    lines = [
        "",
        f"Held-out accuracy under `rram` (mean +- std over {seeds} chips), 2-bit cells:",
        "",
        "| model | mapping | " + " | ".join(f"{t}x{t}" for t in TILE_SIZES) + " |",
        "|---|---|" + "---:|" * len(TILE_SIZES),
    ]
    for name in ACCURACY_MODELS:
        for mapping in ("dense", "sparse", "squeeze"):
            cells = []
            for tile in TILE_SIZES:
                program = compile_onnx(DIGITS / f"{name}.onnx", options(tile, mapping))
                values = []
                for seed in range(seeds):
                    executor = Executor(program, noise_settings("rram"), Seeds.derive(seed))
                    (logits,) = executor.run({"x": x}).values()
                    values.append(float((logits.argmax(-1) == y).mean()))
                cells.append(f"{np.mean(values):.1%} +- {np.std(values):.1%}")
            lines.append(f"| {name} | {mapping} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = [
        "## Sparse mapping and squeeze-out on the digits fixtures (`benchmarks/sparse_mapping.py`)",
        "",
        "Crossbars are virtual tiles (the chip a program needs without reprogramming). "
        "For comparison, the SME paper cuts crossbars up to 8.7x on ResNet-50 and 2.1x on "
        "MobileNet-v2 on ImageNet (its abstract does not name the baseline mapping).",
    ]
    lines += crossbar_rows()
    lines += accuracy_rows(args.seeds)
    lines += ["", f"The benchmark took {time.perf_counter() - started:.0f} s."]
    if not args.no_record:
        record("sparse_mapping", "\n".join(lines))


if __name__ == "__main__":
    main()
