"""Mutation campaign: thousands of corrupted programs, sidecars and ONNX models through the CLI.

    python benchmarks/mutation_campaign.py [--mutants 2400] [--workers 2] [--record]
    python benchmarks/mutation_campaign.py --repro SEED:KIND:OPERATOR:N   # one mutant, kept

Seed programs are compiled at the start into a temporary folder from small committed
models (the digits MLP, LeNet and MobileNet of tests/fixtures/digits, a Loop model from
tests/onnx_models.py) with different strategies and mappings (reprogram dense, sparse,
squeeze, basis; one calibrated). Each mutant is one seeded change of one file: the
program text (`xbar`), its sidecar (`npz`, `tensor`) or an ONNX model (`onnx`); it is reproducible
from (seed program, kind, operator, number): the number seeds the operator's draws.
A `tensor` mutant changes the contents of one sidecar tensor and its digest in the text
to match (a hostile but consistent pair: it tests what the verifier and the runtime do
with the values, not the digest check).

Each mutant runs in a child forked from this process (xbarc imported once), with its
address space limited to 2 GB plus what the parent already maps, through the same code
as the command line, `xbarc.cli.main`:

- `xbar`, `npz`, `tensor`: `xbarc inspect P.xbar` (load, verify, report) and `xbarc run P.xbar
  --input x.npz --noise ideal -o y.npz` on the seed's committed input;
- `onnx`: `xbarc compile M.onnx` with the seed's options, then the same `inspect` and
  `run` on what it wrote; a model onnxruntime also runs is compared with onnxruntime.

Outcomes, per mutant: `rejected` (every command exit 0 or 1 with one line on stderr),
`accepted-same` (exit 0, outputs equal to the unmutated program's, bit for bit),
`accepted-explained` (exit 0, outputs differ, and the text says why: see below);
for ONNX, `accepted` (compiled and ran; equal to onnxruntime on the mutated model where
the seed's strategy computes the float model) and `accepted-ort-refuses` (onnxruntime
refuses the mutated model or the input, mostly input dims that `--input-shape` fixes
again); and the failures: `internal` (exit 3, any other exit code, an uncaught
exception, a signal, or a rejection whose message is not one line), `hang` (killed
after 60 s), `memory` (the child's ru_maxrss over 2 GB), `unexplained` (accepted,
outputs differ, and the text does not say why) and, for ONNX, `onnx-differs`
(compiled, and the ideal run differs from onnxruntime on the same mutated model by more
than float32 round-off).

The rule for "the text says why": both texts are parsed and printed again
(`xbarc.ir.printer.print_program`), so layout, comments and number spellings drop out.
In the two canonical texts every *value field* is masked: scales (`scale=` numbers),
conductances (`g_min_us`, `g_max_us`), cost numbers (every field of the `cost` line),
calibration numbers (`percentile`, `samples`, `input_range`, `adc_range`), float
attributes of digital ops (`:float=`, `:floats=`) and tensor digests (`sha256=`, the
contents of the sidecar). If the masked texts are equal, the mutant changed only values,
and a different output is explained. So is a change of what the text states the program
computes: an attribute of a digital op (`kernel_shape:ints=[2,1]` of a MaxPool: the
host runs the op as written) or which value the graph outputs (`output %x`); these are
masked in a second pass and counted as `semantics`. Anything else is structural: ranges, references,
indices, counts, shapes, bits, orders, deleted or duplicated lines; a structural change
that is accepted and changes the output is a verifier gap. A sidecar mutant leaves the
text as it is, so an accepted sidecar mutant must give the same output.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime  # noqa: F401  (imported once here, used by the children)
from onnx import helper, numpy_helper

# the xbarc of the folder this runs from when it holds one (a worktree), else this one's
ROOT = Path.cwd() if (Path.cwd() / "xbarc").is_dir() else Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from onnx_models import run_onnxruntime, tanh_loop_model  # noqa: E402

import xbarc.cli  # noqa: E402
import xbarc.compiler  # noqa: E402,F401
import xbarc.evaluate  # noqa: E402,F401
import xbarc.report  # noqa: E402,F401
import xbarc.session  # noqa: E402,F401
from xbarc.hardware import CostParams  # noqa: E402
from xbarc.ir.parser import parse_program  # noqa: E402
from xbarc.ir.printer import print_program  # noqa: E402
from xbarc.ir.tensors import digest, write_npz  # noqa: E402

DIGITS = ROOT / "tests" / "fixtures" / "digits"
TIMEOUT_S = 60.0
MEMORY_LIMIT = 2 << 30  # bytes of ru_maxrss that count as "over 2 GB"
FAILURES = ("internal", "hang", "memory", "unexplained", "onnx-differs")


# --- seed programs -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Seed:
    name: str
    model: str  # file name of the ONNX model in the work folder
    options: tuple[str, ...]  # compile options
    calibrate: bool = False
    exact: bool = True  # ideal runs equal the float model (not so for basis programs)


SEEDS = (
    Seed("mlp", "mlp.onnx", ("--input-shape", "x=1x1x8x8", "--tiles", "4", "--tile-size", "32x32")),
    Seed(
        "lenet_sparse",
        "lenet.onnx",
        (
            "--input-shape",
            "x=1x1x8x8",
            "--tiles",
            "8",
            "--tile-size",
            "32x32",
            "--mapping",
            "sparse",
        ),
    ),
    Seed(
        "mobilenet_squeeze",
        "mobilenet_p80.onnx",
        (
            "--input-shape",
            "x=1x1x8x8",
            "--tiles",
            "16",
            "--tile-size",
            "64x64",
            "--mapping",
            "squeeze",
        ),
    ),
    Seed(
        "mlp_basis",
        "mlp.onnx",
        (
            "--input-shape",
            "x=1x1x8x8",
            "--tiles",
            "4",
            "--tile-size",
            "32x32",
            "--strategy",
            "basis",
        ),
        exact=False,
    ),
    Seed(
        "lenet_calibrated",
        "lenet.onnx",
        (
            "--input-shape",
            "x=1x1x8x8",
            "--tiles",
            "64",
            "--tile-size",
            "64x64",
            "--scale",
            "tensor",
        ),
        calibrate=True,
    ),
    Seed("loop", "loop.onnx", ("--tiles", "4", "--tile-size", "8x8")),
)


def write_models(work: Path) -> None:
    """The seed ONNX models and inputs in `work`: digits fixtures and a Loop model."""
    for name in ("mlp.onnx", "lenet.onnx", "mobilenet_p80.onnx"):
        shutil.copyfile(DIGITS / name, work / name)
    weight = np.random.default_rng(15).standard_normal((6, 6)).astype(np.float32) * 0.5
    onnx.save(tanh_loop_model(weight), work / "loop.onnx")
    digits = np.load(DIGITS / "digits_test.npz")
    np.savez(work / "digits.npz", x=digits["x"][:3])
    rng = np.random.default_rng(16)
    np.savez(
        work / "loop_in.npz",
        x=rng.standard_normal((2, 6)).astype(np.float32),
        h0=rng.standard_normal((2, 6)).astype(np.float32),
    )


def input_of(seed: Seed, work: Path) -> Path:
    return work / ("loop_in.npz" if seed.model == "loop.onnx" else "digits.npz")


# --- mutation operators ------------------------------------------------------------------

NUMBER = re.compile(
    rb"(?<![A-Za-z0-9_.@%\-/])[+-]?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?(?![A-Za-z0-9_])"
)
SPAN = re.compile(rb"\[([0-9]+):([0-9]+)\]")
ID_RANGE = re.compile(rb"\b([bvt])([0-9]+)\.\.([bvt])([0-9]+)\b")
REFERENCE = re.compile(rb"[@%](?:[A-Za-z0-9_][A-Za-z0-9_.\-/]*|\"[^\"]*\")|\b[bvtg][0-9]+\b")
REPLACEMENTS = (
    b"0", b"-1", b"1", b"2147483648", b"2147483647", b"9223372036854775808",
    b"99999999999", b"nan", b"inf", b"-inf", b"1e308", b"-0.0", b"0.5",
)  # fmt: skip


def _pick(rng: random.Random, matches: list) -> re.Match | None:
    return rng.choice(matches) if matches else None


def _splice(data: bytes, start: int, end: int, new: bytes) -> bytes:
    return data[:start] + new + data[end:]


def text_number(data: bytes, rng: random.Random) -> bytes:
    match = _pick(rng, list(NUMBER.finditer(data)))
    if match is None:
        return data
    old = match.group()
    choices = list(REPLACEMENTS)
    if re.fullmatch(rb"[+-]?[0-9]+", old):
        value = int(old)
        choices += [str(value + 1).encode(), str(value - 1).encode(), str(value * 2).encode()]
    return _splice(data, match.start(), match.end(), rng.choice(choices))


def text_off_by_one(data: bytes, rng: random.Random) -> bytes:
    matches = [m for m in NUMBER.finditer(data) if re.fullmatch(rb"[0-9]+", m.group())]
    match = _pick(rng, matches)
    if match is None:
        return data
    value = int(match.group()) + rng.choice((-1, 1))
    return _splice(data, match.start(), match.end(), str(value).encode())


def text_swap_numbers(data: bytes, rng: random.Random) -> bytes:
    matches = list(NUMBER.finditer(data))
    if len(matches) < 2:
        return data
    first, second = sorted(rng.sample(matches, 2), key=lambda m: m.start())
    return (
        data[: first.start()]
        + second.group()
        + data[first.end() : second.start()]
        + first.group()
        + data[second.end() :]
    )


def text_range_end(data: bytes, rng: random.Random) -> bytes:
    matches = list(SPAN.finditer(data)) + list(ID_RANGE.finditer(data))
    match = _pick(rng, matches)
    if match is None:
        return data
    group = rng.choice((match.lastindex or 1, 1 if match.re is SPAN else 2))
    value = int(match.group(group))
    new = rng.choice((value + 1, value - 1, value * 2, 0, 99999999, value + 128))
    return _splice(data, match.start(group), match.end(group), str(new).encode())


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _meaningful(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith(b"#")]


def text_delete_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rng.choice(_meaningful(lines))]
    return b"\n".join(lines)


def text_duplicate_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    index = rng.choice(_meaningful(lines))
    lines.insert(index, lines[index])
    return b"\n".join(lines)


def text_swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    meaningful = _meaningful(lines)
    first = rng.choice(meaningful)
    near = [i for i in meaningful if i != first and abs(i - first) <= 8]
    second = rng.choice(near or meaningful)
    lines[first], lines[second] = lines[second], lines[first]
    return b"\n".join(lines)


def text_reference(data: bytes, rng: random.Random) -> bytes:
    matches = list(REFERENCE.finditer(data))
    match = _pick(rng, matches)
    if match is None:
        return data
    old = match.group()
    same_kind = [m.group() for m in matches if m.group()[:1] == old[:1] and m.group() != old]
    choices = same_kind[:50] + [old[:1] + b"nowhere", old[:1] + b"999", old + b"x"]
    return _splice(data, match.start(), match.end(), rng.choice(choices))


def text_truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def text_garbage(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    junk = rng.choice((b"\x00", b"{", b"}", b"\x00\x01\x1f", b'"', b"..", b"\\", b"\t# {"))
    if rng.random() < 0.5:
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return data[:at] + junk + data[at:]


def text_non_utf8(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xfe\xff")) + data[at:]


TEXT_OPERATORS = {
    "number": text_number,
    "off-by-one": text_off_by_one,
    "swap-numbers": text_swap_numbers,
    "range-end": text_range_end,
    "delete-line": text_delete_line,
    "duplicate-line": text_duplicate_line,
    "swap-lines": text_swap_lines,
    "reference": text_reference,
    "truncate": text_truncate,
    "garbage": text_garbage,
    "non-utf8": text_non_utf8,
}


def npz_flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


def npz_truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def npz_sizes(data: bytes, rng: random.Random) -> bytes:
    """Change the compressed or uncompressed size of a member in the central directory
    (and, half of the time, in its local header too)."""
    out = bytearray(data)
    central = [m.start() for m in re.finditer(rb"PK\x01\x02", data)]
    if not central:
        return npz_flip(data, rng)
    at = rng.choice(central)
    field = rng.choice((20, 24))  # compressed size, uncompressed size
    value = rng.choice(
        (0, 1, 0xFFFFFFFF, 1 << 31, struct.unpack_from("<I", out, at + field)[0] + 1)
    )
    struct.pack_into("<I", out, at + field, value)
    if rng.random() < 0.5:
        local = struct.unpack_from("<I", out, at + 42)[0]
        if out[local : local + 4] == b"PK\x03\x04":
            struct.pack_into("<I", out, local + field - 2, value)
    return bytes(out)


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _zip(members: list[tuple[str, bytes]], deflate: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


_BOMB_CACHE: dict[int, bytes] = {}
BOMB_ZEROS = (1 << 28, 1 << 30)  # bytes of zeros a bomb inflates to (tests use smaller ones)


def _deflated_zeros(size: int) -> bytes:
    if size not in _BOMB_CACHE:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk = bytes(1 << 20)
        parts = [compressor.compress(chunk) for _ in range(size >> 20)]
        _BOMB_CACHE[size] = b"".join(parts) + compressor.flush()
    return _BOMB_CACHE[size]


def _zip_raw_deflated(
    members: list[tuple[str, bytes]], bomb_name: str, header: bytes, zeros: int
) -> bytes:
    """A zip of `members` (stored) plus `bomb_name`: `header` then `zeros` zero bytes,
    deflated, its sizes declared truthfully in the zip headers."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            archive.writestr(name, content)
    body = buffer.getvalue()
    # append the bomb by hand: a local header, the raw deflate stream, a central directory
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = compressor.compress(header) + compressor.flush(zlib.Z_SYNC_FLUSH)
    stream += _deflated_zeros(zeros)
    crc = zlib.crc32(header)
    crc = zlib.crc32(bytes(zeros), crc) if zeros <= 1 << 26 else 0
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = archive.infolist()
    end = body.rfind(b"PK\x05\x06")
    central_start = struct.unpack_from("<I", body, end + 16)[0]
    local_part, central_part = body[:central_start], body[central_start:end]
    name = bomb_name.encode()
    size = len(header) + zeros
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0
    )
    offset = len(local_part)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(stream), size,
        len(name), 0, 0, 0, 0, 0, offset,
    )  # fmt: skip
    new_local = local_part + local + name + stream
    new_central = central_part + central + name
    eocd = struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        len(infos) + 1,
        len(infos) + 1,
        len(new_central),
        len(new_local),
        0,
    )
    return new_local + new_central + eocd


def npz_bomb(data: bytes, rng: random.Random) -> bytes:
    """Replace a member by a deflated bomb: its real name, a header either as declared
    or claiming a huge shape, and 256 MB or 1 GB of zeros."""
    members = _members(data)
    victim = rng.randrange(len(members))
    info, content = members[victim]
    others = [(i.filename, c) for j, (i, c) in enumerate(members) if j != victim]
    if rng.random() < 0.5 and content.startswith(b"\x93NUMPY"):
        header_len = struct.unpack_from("<H", content, 8)[0]
        header = content[: 10 + header_len]  # the declared header: more data than it says
    else:
        header = _npy_header("<f4", (rng.choice((1 << 28, 1 << 31, 1 << 40)),))
    zeros = rng.choice(BOMB_ZEROS)
    return _zip_raw_deflated(others, info.filename, header, zeros)


def npz_swap_members(data: bytes, rng: random.Random) -> bytes:
    members = _members(data)
    if len(members) < 2:
        return data
    i, j = rng.sample(range(len(members)), 2)
    names = [info.filename for info, _ in members]
    names[i], names[j] = names[j], names[i]
    return _zip([(name, content) for name, (_, content) in zip(names, members, strict=True)])


def npz_pickle(data: bytes, rng: random.Random) -> bytes:
    """Add a pickled object array as a member, or put one in place of a declared one."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)
    evil = buffer.getvalue()
    members = [(info.filename, content) for info, content in _members(data)]
    if rng.random() < 0.5:
        members.append(("evil.npy", evil))
    else:
        index = rng.randrange(len(members))
        members[index] = (members[index][0], evil)
    return _zip(members)


def npz_empty(data: bytes, rng: random.Random) -> bytes:
    return b""


def npz_member_bytes(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the zip with one member's data changed (a valid zip whose content no
    longer matches its digest), or its .npy header changed (dtype, shape, order)."""
    members = [(info.filename, bytearray(content)) for info, content in _members(data)]
    name, content = rng.choice(members)
    if content.startswith(b"\x93NUMPY") and rng.random() < 0.5:
        header_len = struct.unpack_from("<H", content, 8)[0]
        header = content[10 : 10 + header_len]
        swaps = [
            (b"'<f4'", b"'<f8'"),
            (b"'|i1'", b"'<i2'"),
            (b"False", b"True"),
            (b"'<f4'", b"'|O'"),
        ]
        swaps += [(b"(", b"(2, "), (b",)", b", 1)")]
        old, new = rng.choice(swaps)
        if old in header:
            header = header.replace(old, new, 1)
            header = header.rstrip(b"\n ")
            header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
            content[:] = (
                bytes(content[:8])
                + struct.pack("<H", len(header))
                + header
                + content[10 + header_len :]
            )
    elif len(content) > 128:
        at = rng.randrange(128, len(content))
        content[at] ^= 1 << rng.randrange(8)
    return _zip([(n, bytes(c)) for n, c in members])


NPZ_OPERATORS = {
    "flip": npz_flip,
    "truncate": npz_truncate,
    "zip-sizes": npz_sizes,
    "bomb": npz_bomb,
    "swap-members": npz_swap_members,
    "pickle": npz_pickle,
    "empty": npz_empty,
    "member-bytes": npz_member_bytes,
}


def _load_members(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _saved(store: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    write_npz(buffer, store)
    return buffer.getvalue()


def tensor_element(data: bytes, rng: random.Random) -> bytes:
    """One element of one tensor set to an extreme of its type (the text's digest is
    updated to match: see `redigest`)."""
    store = _load_members(data)
    name = rng.choice(sorted(store))
    array = store[name].copy()
    if array.size == 0:
        return data
    flat = array.reshape(-1)
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        choices = [info.min, info.max, 0, -1 if info.min < 0 else 1, array.size, info.max // 2]
        flat[rng.randrange(flat.size)] = min(rng.choice(choices), info.max)
    elif array.dtype.kind == "f":
        choices = [np.nan, np.inf, -np.inf, 0.0, 1e-30, 1e30, -float(np.abs(flat).max())]
        flat[rng.randrange(flat.size)] = rng.choice(choices)
    elif array.dtype.kind == "b":
        flat[rng.randrange(flat.size)] ^= True
    store[name] = array
    return _saved(store)


def tensor_whole(data: bytes, rng: random.Random) -> bytes:
    """One tensor zeroed, reversed, negated or shuffled (its digest updated to match)."""
    store = _load_members(data)
    name = rng.choice(sorted(store))
    array = store[name].copy()
    how = rng.choice(("zero", "reverse", "negate", "shuffle"))
    if how == "zero":
        array[...] = 0
    elif how == "reverse" and array.ndim:
        array = np.ascontiguousarray(array[::-1])
    elif how == "negate" and array.dtype.kind in "if":
        array = -array
    elif array.ndim:
        np.random.default_rng(rng.randrange(1 << 30)).shuffle(array.reshape(-1))
    store[name] = array
    return _saved(store)


TENSOR_OPERATORS = {"element": tensor_element, "whole": tensor_whole}


def redigest(text: bytes, before: bytes, after: bytes) -> bytes:
    """The program text with each declared digest of a tensor that changed between the
    sidecars `before` and `after` replaced by the new one."""
    old, new = _load_members(before), _load_members(after)
    for name in old:
        was, now = digest(old[name]), digest(new[name])
        if was != now:
            text = text.replace(was.encode(), now.encode())
    return text


def onnx_initializer_value(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    if not floats:
        return model
    tensor = rng.choice(floats)
    array = numpy_helper.to_array(tensor).copy()
    if array.size:
        array.reshape(-1)[rng.randrange(array.size)] = rng.choice((np.nan, np.inf, -np.inf, 1e38))
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return model


def _all_dims(model: onnx.ModelProto) -> list:
    dims = [d for value in model.graph.input for d in value.type.tensor_type.shape.dim]
    return dims


def onnx_dims(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    new = rng.choice((0, -1, -5, 1 << 40, 1 << 62, 3))
    if rng.random() < 0.5 and model.graph.initializer:
        tensor = rng.choice(list(model.graph.initializer))
        if tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] = new
            return model
    dims = _all_dims(model)
    if dims:
        rng.choice(dims).dim_value = new
    return model


GEOMETRY = ("kernel_shape", "strides", "pads", "dilations", "group", "axis", "transB", "alpha")


def onnx_attribute(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    attributes = [a for node in model.graph.node for a in node.attribute if a.name in GEOMETRY]
    if not attributes:
        node = rng.choice(list(model.graph.node))
        node.attribute.append(helper.make_attribute(rng.choice(GEOMETRY[:4]), [0, 0]))
        return model
    attribute = rng.choice(attributes)
    values = (0, -1, -3, 1 << 31, 1 << 62, 100, 2)
    if attribute.type == onnx.AttributeProto.INTS:
        if attribute.ints and rng.random() < 0.7:
            attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice(values)
        else:
            attribute.ints.append(rng.choice(values))
    elif attribute.type == onnx.AttributeProto.INT:
        attribute.i = rng.choice(values)
    elif attribute.type == onnx.AttributeProto.FLOAT:
        attribute.f = rng.choice((float("nan"), float("inf"), -1.0, 0.0))
    return model


OP_TYPES = (
    "Relu",
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Identity",
    "LSTM",
    "Foo",
    "Loop",
    "Flatten",
    "MaxPool",
)


def onnx_op_type(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    node = rng.choice(list(model.graph.node))
    node.op_type = rng.choice(OP_TYPES)
    return model


def onnx_remove_node(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    nodes = list(model.graph.node)
    index = rng.randrange(len(nodes))
    del model.graph.node[index]
    return model


def onnx_duplicate_node(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    nodes = list(model.graph.node)
    index = rng.randrange(len(nodes))
    copy = onnx.NodeProto()
    copy.CopyFrom(nodes[index])
    model.graph.node.insert(index + rng.choice((0, 1)), copy)
    return model


def onnx_edge(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    nodes = [n for n in model.graph.node if n.input]
    node = rng.choice(nodes)
    names = [o for n in model.graph.node for o in n.output] + [i.name for i in model.graph.input]
    names += [t.name for t in model.graph.initializer] + ["nowhere", ""]
    node.input[rng.randrange(len(node.input))] = rng.choice(names)
    return model


ONNX_MODEL_OPERATORS = {
    "init-value": onnx_initializer_value,
    "dims": onnx_dims,
    "attribute": onnx_attribute,
    "op-type": onnx_op_type,
    "remove-node": onnx_remove_node,
    "duplicate-node": onnx_duplicate_node,
    "edge": onnx_edge,
}


def onnx_operator(name: str):
    def apply(data: bytes, rng: random.Random) -> bytes:
        model = onnx.load_from_string(data)
        return ONNX_MODEL_OPERATORS[name](model, rng).SerializeToString()

    return apply


ONNX_OPERATORS = {name: onnx_operator(name) for name in ONNX_MODEL_OPERATORS}
ONNX_OPERATORS["truncate"] = npz_truncate
ONNX_OPERATORS["flip"] = npz_flip

OPERATORS = {
    "xbar": TEXT_OPERATORS,
    "npz": NPZ_OPERATORS,
    "tensor": TENSOR_OPERATORS,
    "onnx": ONNX_OPERATORS,
}


# --- running one case in a child -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    seed: str
    kind: str  # xbar | npz | onnx
    operator: str
    number: int

    @property
    def label(self) -> str:
        return f"{self.seed}:{self.kind}:{self.operator}:{self.number}"


VALUE_KEYS = {f.name for f in dataclasses.fields(CostParams)} | {
    "scale", "g_min_us", "g_max_us", "percentile", "samples", "input_range", "adc_range",
}  # fmt: skip
VALUE_FIELD = re.compile(
    r"\b(" + "|".join(sorted(VALUE_KEYS)) + r")=(?:[+-]?[0-9][0-9.e+\-]*|[+-]?inf|nan)(?![\w.])"
)
FLOAT_ATTRIBUTE = re.compile(r":(float|floats)=(\[[^\]]*\]|\S+)")
ATTRIBUTE = re.compile(r"^(\s*(?:attrs \{ )?[^\s:]+):(int|ints|float|floats|string|strings)=.*$")
GRAPH_OUTPUT = re.compile(r"^  output %.*$")
DIGEST = re.compile(r"sha256=[0-9a-f]+")


def masked(text: str) -> str:
    """A canonical program text with its value fields masked (the docstring's rule)."""
    text = VALUE_FIELD.sub(lambda m: f"{m.group(1)}=#", text)
    text = FLOAT_ATTRIBUTE.sub(lambda m: f":{m.group(1)}=#", text)
    return DIGEST.sub("sha256=#", text)


def semantics_masked(text: str) -> str:
    """`masked`, and also what a program states it computes: every attribute of a digital
    op (onnxruntime runs the op as its attributes say) and the graph's outputs."""
    lines = masked(text).splitlines()
    lines = [ATTRIBUTE.sub(lambda m: f"{m.group(1)}:{m.group(2)}=#", line) for line in lines]
    return "\n".join(GRAPH_OUTPUT.sub("  output %#", line) for line in lines)


def canonical(text: str) -> str:
    return print_program(parse_program(text, "mutant.xbar").program)


def classify(original: str, mutant: str) -> str:
    """`same` (equal canonical texts), `values` (only value fields differ), `semantics`
    (also digital op attributes or graph outputs) or `structural`."""
    before, after = canonical(original), canonical(mutant)
    if before == after:
        return "same"
    if masked(before) == masked(after):
        return "values"
    return "semantics" if semantics_masked(before) == semantics_masked(after) else "structural"


def outputs_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with np.load(path, allow_pickle=False) as archive:
        for name in sorted(archive.files):
            array = archive[name]
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def cli(argv: list[str], log: Path) -> tuple[int, str, int]:
    """Run `xbarc.cli.main(argv)` with stdout and stderr in files: (exit, first stderr
    line, stderr lines)."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    sys.stdout.flush()
    sys.stderr.flush()
    with (
        open(out, "w") as stdout,
        open(err, "w") as stderr,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        code = xbarc.cli.main(argv)
    lines = err.read_text(errors="replace").splitlines()
    errors = [line for line in lines if not line.startswith("warning")]
    return code, (errors[0] if errors else ""), len(errors)


def run_program(program: Path, seed: Seed, work: Path, folder: Path, result: dict) -> None:
    """inspect + run --noise ideal of `program` into `result`: each command's exit,
    first stderr line and line count; the outputs' hash."""
    result["commands"].append(["inspect", *cli(["inspect", str(program)], folder / "inspect")])
    output = folder / "y.npz"
    feeds = str(input_of(seed, work))
    argv = ["run", str(program), "--input", feeds, "--noise", "ideal", "-o", str(output)]
    result["commands"].append(["run", *cli(argv, folder / "run")])
    if result["commands"][-1][1] == 0:
        result["hash"] = outputs_hash(output)


def child(case: Case | None, seed: Seed, work: Path, folder: Path, data: bytes | None) -> dict:
    """The work of one case, in the forked child: the baseline (case None) or a mutant."""
    source = work / seed.name
    result: dict = {"commands": []}
    program = folder / "p.xbar"
    if case is None:
        run_program(source / "p.xbar", seed, work, folder, result)
    elif case.kind == "onnx":
        model = folder / "m.onnx"
        model.write_bytes(data or b"")
        argv = ["compile", str(model), *seed.options, "-o", str(program)]
        result["commands"].append(["compile", *cli(argv, folder / "compile")])
        if result["commands"][-1][1] == 0:
            run_program(program, seed, work, folder, result)
            if "hash" in result and seed.exact:
                result["onnx_differs"] = differs_from_onnxruntime(
                    model, folder / "y.npz", seed, work
                )
    else:
        if case.kind == "xbar":
            program.write_bytes(data or b"")
            os.link(source / "p.xbar.npz", folder / "p.xbar.npz")
        elif case.kind == "tensor":  # a tensor changed, its digest in the text too
            text, sidecar = (source / "p.xbar").read_bytes(), (source / "p.xbar.npz").read_bytes()
            program.write_bytes(redigest(text, sidecar, data or b""))
            (folder / "p.xbar.npz").write_bytes(data or b"")
        else:
            shutil.copyfile(source / "p.xbar", program)
            (folder / "p.xbar.npz").write_bytes(data or b"")
        run_program(program, seed, work, folder, result)
    return result


def differs_from_onnxruntime(model: Path, output: Path, seed: Seed, work: Path) -> bool | None:
    """Whether the ideal run's outputs differ from onnxruntime's on the same model (None:
    onnxruntime refuses the model)."""
    try:
        proto = onnx.load(model)
        with np.load(input_of(seed, work)) as archive:
            feeds = {name: archive[name] for name in archive.files}
        expected = run_onnxruntime(proto, feeds)
    except Exception:
        return None
    names = [o.name for o in proto.graph.output]
    with np.load(output) as archive:
        got = [archive[name] for name in names if name in archive.files]
    if len(got) != len(expected):
        return True
    for a, b in zip(got, expected, strict=True):
        if a.shape != b.shape:
            return True
        finite = np.abs(b[np.isfinite(b)])
        atol = 1e-4 * (1 + float(finite.max(initial=0)))
        if not np.allclose(a, b, rtol=1e-3, atol=atol, equal_nan=True):
            return True
    return False


def fork_case(
    case: Case | None, seed: Seed, work: Path, folder: Path, data: bytes | None, limit: int
) -> tuple[int, int]:
    """Fork a child for one case: (pid, read end of its result pipe)."""
    folder.mkdir(parents=True, exist_ok=True)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            result = child(case, seed, work, folder, data)
        except BaseException as error:  # noqa: BLE001  (reported, then counted)
            result = {"uncaught": f"{type(error).__name__}: {error}"[:300]}
            code = 4
        if case is not None and case.kind != "onnx" and "hash" in result:
            try:
                text = (work / seed.name / "p.xbar").read_text()
                result["change"] = classify(text, (folder / "p.xbar").read_bytes().decode("utf-8"))
            except BaseException as error:  # noqa: BLE001
                result["change"] = f"unclassified: {type(error).__name__}: {error}"[:200]
        os.write(write, json.dumps(result).encode())
        os.close(write)
        os._exit(code)
    os.close(write)
    return pid, read


def address_space() -> int:
    """Bytes this process maps now (VmSize): the child's limit is 2 GB more."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def run_cases(
    jobs: list[tuple[Case | None, Seed, Path, bytes | None]],
    work: Path,
    workers: int,
    report=None,
) -> list[dict]:
    """Run every job in forked children, `workers` at a time; each result with the
    child's exit status, signal, ru_maxrss and wall time."""
    limit = address_space() + MEMORY_LIMIT + (512 << 20)
    results: list[dict] = [{} for _ in jobs]
    running: dict[int, tuple[int, int, float, bytearray]] = {}
    pending = list(range(len(jobs)))
    pending.reverse()
    done = 0
    while pending or running:
        while pending and len(running) < workers:
            index = pending.pop()
            case, seed, folder, data = jobs[index]
            pid, read = fork_case(case, seed, work, folder, data, limit)
            os.set_blocking(read, False)
            running[pid] = (index, read, time.monotonic(), bytearray())
        time.sleep(0.005)
        for pid, (index, read, started, buffer) in list(running.items()):
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read, 65536):
                    buffer.extend(chunk)
            finished, status, usage = os.wait4(pid, os.WNOHANG)
            elapsed = time.monotonic() - started
            if finished == 0 and elapsed > TIMEOUT_S:
                os.kill(pid, signal.SIGKILL)
                finished, status, usage = os.wait4(pid, 0)
                results[index]["hang"] = True
            if finished == 0:
                continue
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read, 65536):
                    buffer.extend(chunk)
            os.close(read)
            del running[pid]
            result = results[index]
            with contextlib.suppress(ValueError):
                result.update(json.loads(buffer.decode() or "{}"))
            result["status"] = os.waitstatus_to_exitcode(status)
            result["maxrss"] = usage.ru_maxrss * 1024
            result["seconds"] = round(elapsed, 2)
            if report is not None:
                report(jobs[index][0], result)
            done += 1
            if done % 100 == 0:
                print(f"  {done}/{len(jobs)} done", flush=True)
    return results


# --- outcome of a case ---------------------------------------------------------------------


def outcome(result: dict, baseline: str | None, kind: str) -> str:
    if result.get("hang"):
        return "hang"
    if result.get("maxrss", 0) > MEMORY_LIMIT:
        return "memory"
    if result.get("status") != 0 or "uncaught" in result:
        return "internal"
    commands = result.get("commands", [])
    if any(code not in (0, 1) or (code == 1 and lines != 1) for _, code, _, lines in commands):
        return "internal"
    if any(code == 1 for _, code, _, _ in commands):
        return "rejected"
    if kind == "onnx":
        if "onnx_differs" in result and result["onnx_differs"] is None:
            return "accepted-ort-refuses"  # onnxruntime refuses the mutated model
        return "onnx-differs" if result.get("onnx_differs") else "accepted"
    if result.get("hash") == baseline:
        return "accepted-same"
    explained = result.get("change") in ("values", "semantics")
    return "accepted-explained" if explained else "unexplained"


def symptom(result: dict) -> str:
    if "uncaught" in result:
        return result["uncaught"]
    for name, code, line, lines in result.get("commands", []):
        if code not in (0, 1) or (code == 1 and lines != 1):
            return f"{name}: exit {code}, {lines} lines: {line}"
    if result.get("status"):
        return f"exit status {result['status']}"
    return f"{result.get('change', '')}"


# --- main ------------------------------------------------------------------------------------


def build_seeds(work: Path, workers: int) -> None:
    """Compile the seed programs (in forked children too, so that this process starts no
    thread pools before it forks)."""
    write_models(work)
    for seed in SEEDS:
        folder = work / seed.name
        folder.mkdir()
        argv = ["compile", str(work / seed.model), *seed.options, "-o", str(folder / "p.xbar")]
        pid = os.fork()
        if pid == 0:
            with (
                open(folder / "compile.log", "w") as log,
                contextlib.redirect_stdout(log),
                contextlib.redirect_stderr(log),
            ):
                code = xbarc.cli.main(argv)
                if code == 0 and seed.calibrate:
                    code = xbarc.cli.main(
                        ["calibrate", str(folder / "p.xbar"), "--data", str(input_of(seed, work))]
                    )
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"seed {seed.name} did not compile: {(folder / 'compile.log').read_text()}")


def warm_up(work: Path) -> None:
    """Parse, inspect and run every seed program once in this process, so that each
    child starts with the parser built and the kernels loaded (a child then takes tens
    of milliseconds, not a second)."""
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        for seed in SEEDS:
            program = str(work / seed.name / "p.xbar")
            xbarc.cli.main(["inspect", program])
            xbarc.cli.main(
                ["run", program, "--input", str(input_of(seed, work)), "--noise", "ideal"]
            )


def mutate(case: Case, work: Path) -> bytes:
    seed = next(s for s in SEEDS if s.name == case.seed)
    folder = work / seed.name
    source = {"xbar": folder / "p.xbar", "npz": folder / "p.xbar.npz"}.get(
        case.kind, work / seed.model
    )
    if case.kind == "tensor":
        source = folder / "p.xbar.npz"
    rng = random.Random(f"{case.label}")
    return OPERATORS[case.kind][case.operator](source.read_bytes(), rng)


def plan(total: int, master_seed: int) -> list[Case]:
    """`total` cases: 40 % program text, 20 % sidecar bytes, 15 % sidecar tensors (with
    their digests), 25 % ONNX; operators and seeds in turn."""
    cases: list[Case] = []
    shares = {"xbar": total * 2 // 5, "npz": total // 5, "tensor": total * 3 // 20}
    shares["onnx"] = total - sum(shares.values())
    for kind, count in shares.items():
        operators = sorted(OPERATORS[kind])
        seeds = (
            [s.name for s in SEEDS]
            if kind != "onnx"
            else sorted({s.name for s in SEEDS if not s.calibrate})
        )
        for i in range(count):
            operator = operators[i % len(operators)]
            seed = seeds[(i // len(operators)) % len(seeds)]
            cases.append(Case(seed, kind, operator, master_seed * 1_000_000 + i))
    random.Random(master_seed).shuffle(cases)  # every kind early in a long run
    return cases


def summarize(
    cases: list[Case], results: list[dict], baselines: dict[str, str]
) -> tuple[str, Counter, list[tuple[Case, str, dict]]]:
    per_operator: dict[tuple[str, str], Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    failures: list[tuple[Case, str, dict]] = []
    for case, result in zip(cases, results, strict=True):
        verdict = outcome(result, baselines.get(case.seed), case.kind)
        per_operator[(case.kind, case.operator)][verdict] += 1
        totals[verdict] += 1
        if verdict in FAILURES:
            failures.append((case, verdict, result))
    columns = [
        "rejected",
        "accepted-same",
        "accepted-explained",
        "accepted",
        "accepted-ort-refuses",
        *FAILURES,
    ]
    lines = [
        "| kind | operator | mutants | " + " | ".join(columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for (kind, operator), counts in sorted(per_operator.items()):
        cells = " | ".join(str(counts.get(c, 0)) for c in columns)
        lines.append(f"| {kind} | {operator} | {sum(counts.values())} | {cells} |")
    cells = " | ".join(f"**{totals.get(c, 0)}**" for c in columns)
    lines.append(f"| **all** | | **{sum(totals.values())}** | {cells} |")
    return "\n".join(lines), totals, failures


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_benchmarks_cli.py checks that every option has help)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=2400, help="mutants to run (default 2400)")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes running mutants at once (default 2)"
    )
    parser.add_argument("--seed", type=int, default=15, help="master seed of the mutant numbers")
    parser.add_argument("--kinds", default="xbar,npz,tensor,onnx", help="kinds of mutants to run")
    parser.add_argument(
        "--repro", metavar="SEED:KIND:OPERATOR:N", help="write one mutant and run it"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the work folder here (with --repro: the mutant)"
    )
    parser.add_argument("--record", action="store_true", help="record the counts in RESULTS.md")
    return parser


def main() -> int:
    args = build_parser().parse_args()

    work = Path(tempfile.mkdtemp(prefix="xbarc-mutants-"))
    try:
        started = time.monotonic()
        build_seeds(work, args.workers)
        seeds = {s.name: s for s in SEEDS}
        baseline_jobs = [(None, seed, work / seed.name / "baseline", None) for seed in SEEDS]
        baseline_results = run_cases(baseline_jobs, work, args.workers)
        baselines = {}
        warm_up(work)
        for seed, result in zip(SEEDS, baseline_results, strict=True):
            if "hash" not in result:
                sys.exit(f"seed {seed.name} does not run: {result}")
            baselines[seed.name] = result["hash"]
        if args.repro:
            name, kind, operator, number = args.repro.split(":")
            cases = [Case(name, kind, operator, int(number))]
        else:
            kinds = set(args.kinds.split(","))
            cases = [c for c in plan(args.mutants, args.seed) if c.kind in kinds]
        print(
            f"{len(SEEDS)} seed programs in {time.monotonic() - started:.1f} s;",
            f"{len(cases)} mutants",
            flush=True,
        )
        jobs = [
            (c, seeds[c.seed], work / "m" / str(i), mutate(c, work)) for i, c in enumerate(cases)
        ]

        def report(case: Case, result: dict) -> None:
            verdict = outcome(result, baselines.get(case.seed), case.kind)
            if verdict in FAILURES:
                print(f"{verdict}: {case.label}: {symptom(result)}", flush=True)

        results = run_cases(jobs, work, args.workers, report)
        table, totals, failures = summarize(cases, results, baselines)
        elapsed = time.monotonic() - started
        print(table)
        for case, verdict, result in failures:
            print(f"{verdict}: {case.label}: {symptom(result)}")
        if args.repro:
            print(json.dumps(results[0], indent=1))
        slowest = max((r.get("seconds", 0) for r in results), default=0)
        rss = max((r.get("maxrss", 0) for r in results), default=0)
        print(
            f"{len(cases)} mutants in {elapsed:.0f} s; slowest {slowest:.1f} s;",
            f"largest ru_maxrss {rss / 2**20:.0f} MB",
        )
        if args.record and not args.repro:
            record_results(table, totals, len(cases), elapsed, slowest, rss, failures)
        elif not args.repro:
            print("(not recorded: run again with --record to write them to RESULTS.md)")
        if args.keep:
            rows = [
                {"case": c.label, "outcome": outcome(r, baselines.get(c.seed), c.kind), **r}
                for c, r in zip(cases, results, strict=True)
            ]
            (work / "results.json").write_text(json.dumps(rows, indent=1))
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
            print(f"kept {args.keep}")
        return 1 if failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record_results(
    table: str, totals: Counter, count: int, elapsed: float, slowest: float, rss: int, failures
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from results import record

    failing = "\n".join(
        f"- {verdict}: `{case.label}`: {symptom(r)[:160]}" for case, verdict, r in failures[:40]
    )
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    seeds = ", ".join(s.name for s in SEEDS)
    body = f"""## Mutation campaign (`benchmarks/mutation_campaign.py`)

{count} mutants of {len(SEEDS)} seed programs ({seeds}), at revision `{revision}`: 40 %
program text, 20 % sidecar bytes, 15 % sidecar tensors with their digests updated, 25 %
ONNX models; each through `xbarc inspect` and `xbarc run --noise ideal` (ONNX: `xbarc
compile` first) in a child forked per mutant, limited to 2 GB over the parent and 60 s.
Operators: text {", ".join(TEXT_OPERATORS)}; sidecar {", ".join(NPZ_OPERATORS)};
tensors {", ".join(TENSOR_OPERATORS)}; ONNX {", ".join(ONNX_OPERATORS)}.

The rule for an accepted mutant whose ideal output differs from the seed's: it is
*explained* when its canonical text (parsed and printed again) differs from the seed's
only in value fields (scales, conductances, cost numbers, calibration numbers, float
attributes, tensor digests) or in what the text states the program computes (a digital
op's attributes, the graph's outputs); any other change (ranges, references, indices,
counts, shapes, bits, orders, deleted or duplicated lines) is *unexplained*: a verifier
gap. An accepted ONNX mutant must match onnxruntime on the same mutated model
(`onnx-differs` otherwise; `accepted-ort-refuses`: onnxruntime refuses the mutant or the
input, mostly input dims `--input-shape` fixes again).

{table}

Failures: internal {totals.get("internal", 0)}, hangs {totals.get("hang", 0)}, over 2 GB
{totals.get("memory", 0)}, unexplained {totals.get("unexplained", 0)}, ONNX differing
{totals.get("onnx-differs", 0)}. {count} mutants in {elapsed:.0f} s on 2 workers; slowest
mutant {slowest:.1f} s; largest ru_maxrss of a child {rss / 2**20:.0f} MB.
{failing}
"""
    record("mutation_campaign", body)


if __name__ == "__main__":
    raise SystemExit(main())
