"""Make the tensors of the golden inputs in tests/passes and write them beside each input.

An input's text (`tests/passes/<pass>/<name>.xbar`) is written by hand; it only declares
its tensors (element type, shape, sha256), so their values are made here, by name. For
every input listed in INPUTS this script writes the sidecar `<name>.xbar.npz` and puts
each tensor's sha256 (and the current format version) into the text:

    python -m tests.passes.make_inputs    (from the repository root)

`XBARC_UPDATE_GOLDEN=1 python -m pytest tests/passes` runs it before it regenerates the
expected outputs, and the golden tests fail when an input is out of date with this file.

To add an input: write its text with any placeholder digest (`sha256=0`), add a function
that returns its tensors to INPUTS, and run the script. Weights are written as levels
times a scale, so a quantized input's text can state its scale exactly.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xbarc.ir.tensors import digest, element_type, write_npz
from xbarc.ir.tile import FORMAT_VERSION

HERE = Path(__file__).parent
Tensors = dict[str, np.ndarray]


def weights(levels, scale: float) -> np.ndarray:
    """f32 weights that quantize exactly to `levels` at `scale`."""
    return (np.asarray(levels, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def levels(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.int8)


def normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random f32 weights rounded to two decimals, so they print and read back plainly."""
    return np.round(np.random.default_rng(seed).normal(size=shape), 2).astype(np.float32)


def small_integers(seed: int, shape: tuple[int, ...], largest: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-largest, largest + 1, size=shape).astype(np.int8)


# --- quantize: graph-level programs --------------------------------------------------


def quantize_layers() -> Tensors:
    return {
        "conv.w": normal(1, (2, 9, 2)),
        "fc.w": normal(2, (1, 4, 3)),
        "fc.b": np.array([0.1, -0.2, 0.3], dtype=np.float32),
    }


def quantize_outliers() -> Tensors:
    fc = normal(19, (1, 16, 3)) / 2
    fc[0, 5, 0] = 6.0  # one outlier: clip=max spends the levels on it, mse and percentile do not
    return {"fc.w": fc.astype(np.float32), "fc2.w": normal(20, (1, 3, 2))}


# --- tile: quantized programs ----------------------------------------------------------


def tile_mlp() -> Tensors:
    fc0 = small_integers(3, (1, 10, 6), largest=3)
    fc1 = small_integers(4, (1, 6, 3), largest=3)
    return {
        "fc0.w": weights(fc0, 0.5),
        "fc0.levels": fc0,
        "fc1.w": weights(fc1, 0.25),
        "fc1.levels": fc1,
    }


def tile_depthwise() -> Tensors:
    dw = small_integers(5, (4, 9, 1), largest=3)
    return {"dw.w": weights(dw, 0.5), "dw.levels": dw}


# 75 % of the weights pruned: columns 0 and 2 use rows 0-1, columns 1 and 3 rows 2-3 (so
# reordering pairs 0 with 2 and 1 with 3), columns 4-5 rows 4-6, columns 6-7 and row 7
# nothing. Magnitudes 1 and 2 set one bit each, so bit planes are sparser than weights.
PRUNED_FC0 = [
    [1, 0, -1, 0, 0, 0, 0, 0],
    [2, 0, 3, 0, 0, 0, 0, 0],
    [0, -1, 0, 1, 0, 0, 0, 0],
    [0, 1, 0, -2, 0, 0, 0, 0],
    [0, 0, 0, 0, 3, 0, 0, 0],
    [0, 0, 0, 0, 0, -3, 0, 0],
    [0, 0, 0, 0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
]
PRUNED_FC1 = [[1, 0], [0, 0], [0, -2], [0, 0], [3, 0], [0, 0], [0, 1], [0, 0]]


def tile_pruned() -> Tensors:
    fc0 = levels([PRUNED_FC0])
    fc1 = levels([PRUNED_FC1])
    return {
        "fc0.w": weights(fc0, 0.5),
        "fc0.levels": fc0,
        "fc1.w": weights(fc1, 0.25),
        "fc1.levels": fc1,
    }


def tile_offset() -> Tensors:
    fc = small_integers(6, (1, 6, 5), largest=3)
    return {"fc.w": weights(fc, 0.5), "fc.levels": fc}


def tile_two_types() -> Tensors:
    fc = small_integers(7, (1, 10, 6), largest=3)
    return {"fc.w": weights(fc, 0.5), "fc.levels": fc}


def tile_unquantized() -> Tensors:
    return {"fc.w": normal(8, (1, 6, 4))}


# --- allocate: tiled programs ----------------------------------------------------------


def allocate_mlp() -> Tensors:
    fc0 = small_integers(9, (1, 6, 4), largest=3)
    fc1 = small_integers(10, (1, 4, 2), largest=3)
    return {
        "fc0.w": weights(fc0, 0.5),
        "fc0.levels": fc0,
        "fc1.w": weights(fc1, 0.25),
        "fc1.levels": fc1,
    }


def allocate_shared() -> Tensors:
    a = small_integers(11, (1, 4, 6), largest=1)
    b = small_integers(12, (1, 4, 6), largest=1)
    return {"a.w": weights(a, 0.5), "a.levels": a, "b.w": weights(b, 0.5), "b.levels": b}


def allocate_cycles() -> Tensors:
    l_levels = small_integers(13, (1, 8, 2), largest=1)
    m_levels = small_integers(14, (1, 4, 4), largest=1)
    m_levels[:, :2, 2:] = 0  # m's blocks cover only its two diagonal 2x2 quarters
    m_levels[:, 2:, :2] = 0
    n_levels = small_integers(15, (1, 4, 4), largest=1)
    p_levels = small_integers(16, (1, 4, 2), largest=1)
    tensors: Tensors = {}
    for name, layer_levels in (("l", l_levels), ("m", m_levels), ("n", n_levels), ("p", p_levels)):
        tensors[f"{name}.w"] = weights(layer_levels, 0.5)
        tensors[f"{name}.levels"] = layer_levels
    return tensors


def allocate_two_types() -> Tensors:
    fc0 = small_integers(17, (1, 8, 8), largest=3)
    fc1 = small_integers(18, (1, 8, 2), largest=3)
    return {
        "fc0.w": weights(fc0, 0.5),
        "fc0.levels": fc0,
        "fc1.w": weights(fc1, 0.25),
        "fc1.levels": fc1,
    }


# --- pipeline: whole pipelines on a frontend's output ------------------------------------


def pipeline_small_cnn() -> Tensors:
    """The tensors the frontend makes of tests/golden/small_cnn.onnxtxt (BatchNorm folded)."""
    import tempfile

    import onnx
    import onnx.parser

    from xbarc.compiler import compile_onnx

    model_text = (HERE.parent / "golden" / "small_cnn.onnxtxt").read_text()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small_cnn.onnx"
        onnx.save(onnx.parser.parse_model(model_text), path)
        program = compile_onnx(path, emit="graph")
    return dict(program.store)


# --- basis: graph-level programs (the pipelines quantize first) -----------------------


def basis_layers() -> Tensors:
    return {
        "conv.w": normal(21, (2, 9, 2)),
        "fc.w": normal(22, (1, 12, 3)),
        "fc.b": np.array([0.1, -0.2, 0.3], dtype=np.float32),
        "reps": np.array([1, 3], dtype=np.int64),
    }


def input_gram(seed: int, groups: int, rows: int) -> np.ndarray:
    """XtX of 32 inputs whose rows have very different energies (f64 [G, rows, rows])."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups, 32, rows)) * np.linspace(0.1, 2.0, rows)
    return np.round(x.transpose(0, 2, 1) @ x, 3)


def basis_calibrated() -> Tensors:
    return {
        **basis_layers(),
        "conv.input_gram": input_gram(23, 2, 9),
        "fc.input_gram": input_gram(24, 1, 12),
    }


def nax_mlp() -> Tensors:
    tensors: Tensors = {}
    for index, (rows, cols) in enumerate(((16, 12), (12, 6), (6, 2))):
        fc = small_integers(20 + index, (1, rows, cols), largest=3)
        tensors[f"fc{index}.w"] = weights(fc, 0.5)
        tensors[f"fc{index}.levels"] = fc
    return tensors


def nax_one_type() -> Tensors:
    fc = small_integers(23, (1, 6, 2), largest=3)
    return {"fc.w": weights(fc, 0.5), "fc.levels": fc}


INPUTS: dict[str, Callable[[], Tensors]] = {
    "quantize/layers.xbar": quantize_layers,
    "quantize/outliers.xbar": quantize_outliers,
    "tile/mlp.xbar": tile_mlp,
    "tile/depthwise.xbar": tile_depthwise,
    "tile/pruned.xbar": tile_pruned,
    "tile/offset.xbar": tile_offset,
    "tile/two_types.xbar": tile_two_types,
    "tile/unquantized.xbar": tile_unquantized,
    "allocate/mlp.xbar": allocate_mlp,
    "allocate/shared.xbar": allocate_shared,
    "allocate/cycles.xbar": allocate_cycles,
    "allocate/two_types.xbar": allocate_two_types,
    "nax/mlp.xbar": nax_mlp,
    "nax/one_type.xbar": nax_one_type,
    "pipeline/small_cnn.xbar": pipeline_small_cnn,
    "basis/layers.xbar": basis_layers,
    "basis/calibrated.xbar": basis_calibrated,
}

_HEADER = re.compile(r"^xbar [0-9]+$", re.MULTILINE)
_DECLARATION = re.compile(
    r"^(?P<head>\s*@(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-/]*)\s*:\s*"
    r"(?P<dtype>[a-z0-9]+)\[(?P<shape>[0-9,]*)\]\s+sha256=)(?P<digest>\S*)",
    re.MULTILINE,
)


def made_input(name: str) -> tuple[str, bytes]:
    """The text of input `name` with its digests and format version filled in, and the
    bytes of its sidecar."""
    path = HERE / name
    tensors = INPUTS[name]()
    text = _HEADER.sub(f"xbar {FORMAT_VERSION}", path.read_text(), count=1)
    declared: list[str] = []

    def with_digest(match: re.Match[str]) -> str:
        tensor = match["name"]
        declared.append(tensor)
        if tensor not in tensors:
            raise SystemExit(f"{path}: tensor @{tensor} is declared but INPUTS makes no value")
        value = tensors[tensor]
        shape = tuple(int(d) for d in match["shape"].split(",") if d)
        if element_type(value) != match["dtype"] or value.shape != shape:
            raise SystemExit(
                f"{path}: tensor @{tensor} is declared {match['dtype']}{list(shape)} but "
                f"INPUTS makes {element_type(value)}{list(value.shape)}"
            )
        return match["head"] + digest(value)

    text = _DECLARATION.sub(with_digest, text)
    unused = sorted(set(tensors) - set(declared))
    if unused:
        raise SystemExit(f"{path}: INPUTS makes tensors the text does not declare: {unused}")
    sidecar = io.BytesIO()
    write_npz(sidecar, {tensor: tensors[tensor] for tensor in declared})
    return text, sidecar.getvalue()


def write_inputs() -> list[str]:
    """Write every input's digests and sidecar; the names of the files that changed."""
    changed = []
    for name in INPUTS:
        text, sidecar = made_input(name)
        path = HERE / name
        sidecar_path = Path(f"{path}.npz")
        if path.read_text() != text:
            path.write_text(text)
            changed.append(name)
        if not sidecar_path.exists() or sidecar_path.read_bytes() != sidecar:
            sidecar_path.write_bytes(sidecar)
            changed.append(f"{name}.npz")
    return changed


if __name__ == "__main__":
    written = write_inputs()
    print(
        f"{len(INPUTS)} inputs, {len(written)} files written"
        + "".join(f"\n  {name}" for name in written)
    )
