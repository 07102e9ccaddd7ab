"""Bounded resources (issue 15, Deliver 3): every size read from a file is checked against
the program and a limit (xbarc.limits) before anything is allocated.

Each case edits a small compiled program (or its sidecar, or a data file) the way a
corrupt or hostile file would, and checks that loading gives exit 1 with one line naming
the file (and line) instead of MemoryError, an internal error or a hang. Where the point
is "does not allocate", the loads run in one subprocess whose address space is capped at
2 GB (RLIMIT_AS), or in-process under tracemalloc.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import xbarc.ir.parser as parser_module
from xbarc.cli import main
from xbarc.diagnostics import XbarcError
from xbarc.evaluate import load_data
from xbarc.hardware import Hardware, TileType, make_hardware
from xbarc.ir.io import load_program
from xbarc.limits import MAX_TILE_CELLS, MAX_TILE_DIM, MAX_TILES

LENET = Path(__file__).parent / "fixtures" / "digits" / "lenet.onnx"
MEMORY_CAP = 2 << 30  # bytes of address space for the subprocess loads


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits LeNet compiled for 8 tiles: 32 blocks, 4 phases of `write v.. -> t..`."""
    folder = tmp_path_factory.mktemp("lenet")
    program = folder / "p.xbar"
    argv = ["compile", str(LENET), "--tiles", "8", "--input-shape", "x=1x1x8x8"]
    assert main([*argv, "-o", str(program)]) == 0
    return program


def mutant(compiled: Path, folder: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of the compiled program (and its sidecar) with `old` replaced by `new` once;
    returns its path and the line `new` is on."""
    text = compiled.read_text()
    assert text.count(old) >= 1, old
    edited = text.replace(old, new, 1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "p.xbar"
    path.write_text(edited)
    (folder / "p.xbar.npz").write_bytes(Path(f"{compiled}.npz").read_bytes())
    return path, edited[: edited.index(new)].count("\n") + 1


# --- program text: ranges, tile counts and sizes, shapes, huge numbers --------------------

# name -> (text in the compiled program, its replacement, a fragment of the error)
TEXT_CASES = {
    "virtual tile range of 10^8": (
        "write v0..v7 -> t0..t7",
        "write v0..v99999999 -> t0..t99999999",
        "index v99999999 is more than xbarc supports",
    ),
    "tile range longer than the chip": (
        "write v0..v7 -> t0..t7",
        "write v0..v9999999 -> t0..t9999999",
        "t0..t9999999 names 10000000 tiles but the chip has 8",
    ),
    "block range of 10^8": (
        "cycle b0..b7 <- g0[0:9]",
        "cycle b0..b99999999 <- g0[0:9]",
        "index b99999999 is more than xbarc supports",
    ),
    "block range longer than the blocks": (
        "cycle b0..b7 <- g0[0:9]",
        "cycle b0..b9999999 <- g0[0:9]",
        "b0..b9999999 names 10000000 blocks but the program has 32",
    ),
    "10^12 tiles in the chip header": (
        "count=8",
        "count=1000000000000",
        "the tile count 1000000000000 is more than xbarc supports",
    ),
    "10^8 x 10^8 tiles in the chip header": (
        "rows=128 cols=128 count=8",
        "rows=100000000 cols=100000000 count=8",
        "the row count of a tile 100000000 is more than xbarc supports",
    ),
    "a tile of more cells than MAX_TILE_CELLS": (
        "rows=128 cols=128 count=8",
        "rows=16384 cols=16384 count=8",
        "a 16384x16384 tile has 268435456 cells, more than xbarc supports",
    ),
    "tensor of 10^19 elements": (
        "f32[1,9,8]",
        "f32[99999999999,99999999]",
        "shape [99999999999,99999999] has more elements than xbarc supports",
    ),
    "negative dimension": ("f32[1,9,8]", "f32[-1,9,8]", "negative dimension -1"),
    "dimension of 5000 digits": (
        "f32[1,9,8]",
        "f32[" + "9" * 5000 + ",9,8]",
        "a dimension 9999999999...999999 (5000 characters) is more than xbarc supports",
    ),
    "tile count of 5000 digits": (
        "count=8",
        "count=" + "9" * 5000,
        "the tile count 9999999999...999999 (5000 characters) is more than xbarc supports",
    ),
    "ADC of 10^11 bits": (
        "adc bits=8",
        "adc bits=100000000000",
        "ADC bits 100000000000 is more than xbarc supports (64)",
    ),
    "int attribute beyond int64": (
        "ceil_mode:int=0",
        "ceil_mode:int=99999999999999999999999",
        "an int attribute 99999999999999999999999 is more than xbarc supports",
    ),
    "tensors declared beyond MAX_TENSOR_BYTES": (
        "f32[1,9,8]",
        "f32[65536,65536,8]",
        "is declared with 137438953472 bytes, more than xbarc loads",
    ),
}

LOAD_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from xbarc.cli import main
    results = {{}}
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = main(argv)
        except BaseException as error:  # MemoryError escaping even the CLI's handler
            status, err = -1, io.StringIO(f"escaped: {{type(error).__name__}}")
        results[argv[1]] = [status, err.getvalue()]
    print(json.dumps(results))
    """
)


def load_capped(
    paths: list[Path], timeout: float = 120, command: tuple[str, ...] = ("inspect",)
) -> dict[str, tuple[int, str]]:
    """`xbarc inspect PATH` (or `command[0] PATH command[1:]`) for each path, in one
    subprocess whose address space is capped at MEMORY_CAP bytes."""
    script = LOAD_SCRIPT.format(cap=MEMORY_CAP)
    argvs = [[command[0], str(path), *command[1:]] for path in paths]
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parent.parent,  # this worktree's xbarc
        env={**os.environ, "NUMBA_DISABLE_JIT": os.environ.get("NUMBA_DISABLE_JIT", "0")},
    )
    assert done.returncode == 0, done.stderr
    return {path: (status, err) for path, (status, err) in json.loads(done.stdout).items()}


@pytest.fixture(scope="module")
def text_results(
    compiled: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, str, Path, int]]:
    root = tmp_path_factory.mktemp("text_cases")
    cases = {}
    for index, (name, (old, new, _)) in enumerate(TEXT_CASES.items()):
        path, line = mutant(compiled, root / str(index), old, new)
        cases[name] = (path, line)
    results = load_capped([path for path, _ in cases.values()])
    return {name: (*results[str(path)], path, line) for name, (path, line) in cases.items()}


@pytest.mark.parametrize("name", list(TEXT_CASES))
def test_absurd_sizes_in_program_text_are_refused_at_their_line_without_allocating(
    name: str, text_results: dict[str, tuple[int, str, Path, int]]
) -> None:
    """Issue 15 Deliver 3: `v0..v99999999`, `b0..b99999999`, huge tile counts and sizes,
    absurd, negative or overflowing dimensions: exit 1 naming file:line, never MemoryError
    (exit 3) under a 2 GB address space."""
    status, err, path, line = text_results[name]
    lines = err.strip().splitlines()
    assert status == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"xbarc: {path}:{line}:"), lines[0]
    assert TEXT_CASES[name][2] in lines[0], lines[0]


def test_the_schedule_has_a_budget_of_writes_and_reads(
    compiled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges no longer than the blocks can still be repeated: all writes and reads of a
    program together stay within MAX_SCHEDULE_ENTRIES (here lowered to 40)."""
    load_program(compiled)  # 32 writes and 32 reads: within the real budget
    monkeypatch.setattr(parser_module, "MAX_SCHEDULE_ENTRIES", 40)
    with pytest.raises(XbarcError) as caught:
        load_program(compiled)
    message = str(caught.value)
    assert message.startswith(f"{compiled}:"), message
    assert "the schedule has more than 40 tile writes and block reads" in message


def test_a_real_program_still_loads(compiled: Path) -> None:
    """The limits sit far above real programs: the compiled LeNet loads unchanged."""
    program = load_program(compiled)
    assert len(program.blocks) == 32
    assert program.hardware.tile_count == 8


def test_a_run_refuses_to_program_more_cells_than_the_simulator_holds(
    compiled: Path, tmp_path: Path
) -> None:
    """Issue 15 Deliver 3 (runtime): the simulator keeps each written tile whole, so a chip
    header of 32 tiles of 4096x4096, each written once, asks for 2**29 cells (2 GB of
    float32): the run refuses before programming, not with MemoryError."""
    text = compiled.read_text()
    text = text.replace("rows=128 cols=128 count=8", "rows=4096 cols=4096 count=32")
    for phase in range(1, 4):
        first = 8 * phase
        text = text.replace(
            f"write v{first}..v{first + 7} -> t0..t7",
            f"write v{first}..v{first + 7} -> t{first}..t{first + 7}",
        )
    path = tmp_path / "p.xbar"
    path.write_text(text)
    (tmp_path / "p.xbar.npz").write_bytes(Path(f"{compiled}.npz").read_bytes())
    load_program(path)  # the program itself is valid
    np.savez(tmp_path / "x.npz", x=np.ones((1, 1, 8, 8), np.float32))
    command = ("run", "--input", str(tmp_path / "x.npz"), "--noise", "quant")
    status, err = load_capped([path], timeout=120, command=command)[str(path)]
    assert status == 1, err
    assert err.strip() == (
        "xbarc: error: the program writes 32 tiles of 536870912 cells in all, more than the"
        " simulator holds (134217728) (compile it for fewer or smaller tiles: --tiles,"
        " --tile-size)"
    )


# --- make_hardware and tile types: the backstop of --tiles and --tile-size -----------------


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ((1_000_000_000_000,), "--tiles is 1000000000000, more than xbarc supports"),
        ((8, 100_000, 100_000), "the row count of a tile is 100000, more than xbarc supports"),
        ((8, 8, MAX_TILE_DIM + 1), f"the column count of a tile is {MAX_TILE_DIM + 1}"),
        ((8, 8192, 8192), "a 8192x8192 tile has 67108864 cells, more than xbarc supports"),
    ],
)
def test_make_hardware_refuses_absurd_chips(arguments: tuple[int, ...], fragment: str) -> None:
    """Issue 15 Deliver 3: `--tiles 1000000000000` and absurd tile sizes get a clear error,
    not MemoryError, whatever path they come by."""
    with pytest.raises(XbarcError) as caught:
        make_hardware(*arguments)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("pipeline", "fragment"),
    [
        ("allocate{tiles=1000000000000}", "the tile count is 1000000000000, more than"),
        (
            "tile{rows=100000,cols=100000}",
            "the row count of a tile is 100000, more than xbarc supports",
        ),
    ],
)
def test_pass_options_that_describe_an_absurd_chip_are_refused(
    compiled: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pipeline: str,
    fragment: str,
) -> None:
    """`opt --pipeline "allocate{tiles=10^12}"` built the chip without a check (MemoryError):
    tile types refuse absurd sizes however they are built, and the error names the pass."""
    status = main(["opt", str(compiled), "--pipeline", pipeline, "-o", str(tmp_path / "o.xbar")])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1, err
    assert f"error: pass {pipeline}: {fragment}" in err
    assert not (tmp_path / "o.xbar").exists()


def test_tile_types_and_chips_refuse_absurd_sizes_however_built() -> None:
    with pytest.raises(XbarcError, match="the tile count is 1048577"):
        TileType("t", 128, 128, MAX_TILES + 1)
    with pytest.raises(XbarcError, match="cells, more than xbarc supports"):
        TileType("t", MAX_TILE_DIM, MAX_TILE_CELLS // MAX_TILE_DIM + 1, 1)
    half = TileType("t", 128, 128, MAX_TILES // 2 + 1)
    with pytest.raises(XbarcError, match="the chip's tile count is 1048578"):
        Hardware((half, TileType("u", 128, 128, MAX_TILES // 2 + 1)))
    assert make_hardware(MAX_TILES, 128, 128).tile_count == MAX_TILES


# --- the sidecar ---------------------------------------------------------------------------


def zeros_bomb(path: Path, member: str, megabytes: int, shape: tuple[int, ...]) -> None:
    """A zip whose deflated member holds an .npy header for f32 `shape` and `megabytes` MB
    of zeros: about a thousandth of that on disk."""
    archive = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
    with archive, archive.open(member, "w", force_zip64=True) as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        chunk = bytes(1 << 20)
        for _ in range(megabytes):
            handle.write(chunk)


def peak_bytes_of(action) -> tuple[BaseException | None, int]:
    """Run `action` under tracemalloc; the exception it raised and the peak allocation."""
    tracemalloc.start()
    try:
        action()
        raised = None
    except BaseException as error:  # noqa: BLE001 - the caller checks which
        raised = error
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return raised, peak


def test_a_deflated_sidecar_member_is_refused_before_it_is_inflated(
    compiled: Path, tmp_path: Path
) -> None:
    """Issue 15 Deliver 3: an 8 MB sidecar inflated to 8 GB. Here a 64 KB member that
    inflates to 64 MB, declared in the text as 72 floats: refused from its declared size
    before inflating (the peak allocation stays far below 64 MB)."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    zeros_bomb(tmp_path / "p.xbar.npz", "_0_Conv.weight.npy", 64, (16 << 20,))
    assert (tmp_path / "p.xbar.npz").stat().st_size < 200_000
    raised, peak = peak_bytes_of(lambda: load_program(path))
    assert isinstance(raised, XbarcError), raised
    assert "tensor '_0_Conv.weight' holds" in str(raised)
    assert "more than the program declares (288 bytes of data)" in str(raised)
    assert peak < 8 << 20, peak


def patch_central_sizes(path: Path, member: str, file_size: int) -> None:
    """Write `file_size` as `member`'s uncompressed size in the zip's central directory."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    start = 0
    while True:
        start = data.find(b"PK\x01\x02", start)
        assert start >= 0, "central directory entry not found"
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if bytes(data[start + 46 : start + 46 + name_length]) == name:
            break
        start += 4
    struct.pack_into("<I", data, start + 24, file_size)
    path.write_bytes(bytes(data))


def test_a_central_directory_claiming_gigabytes_is_refused(compiled: Path, tmp_path: Path) -> None:
    """A member whose central directory entry claims 4 GB from a few hundred stored bytes
    (a patched size) is refused before reading it."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    patch_central_sizes(tmp_path / "p.xbar.npz", "_0_Conv.weight.npy", 0xF000_0000)
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    message = str(caught.value)
    assert message.startswith(f"{path}.npz: error: tensor '_0_Conv.weight' claims 4026531840")
    assert "more than its" in message


def test_a_sidecar_whose_header_disagrees_with_the_text_is_refused(
    compiled: Path, tmp_path: Path
) -> None:
    """The .npy header must match the declaration before the data is read: a member whose
    header says 2 x 36 where the text declares [1,9,8] is refused at its header."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    sidecar = tmp_path / "p.xbar.npz"
    with zipfile.ZipFile(Path(f"{compiled}.npz")) as old, zipfile.ZipFile(sidecar, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "_0_Conv.weight.npy":
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.zeros((2, 36), np.float32))
                data = buffer.getvalue()
            new.writestr(info.filename, data)
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    assert str(caught.value) == (
        f"{sidecar}: error: tensor '_0_Conv.weight' has shape [2, 36], the program declares"
        " [1, 9, 8] (the tensor file does not belong to this program; recompile)"
    )


def test_a_sidecar_of_many_members_is_refused_before_its_directory_is_read(
    compiled: Path, tmp_path: Path
) -> None:
    """zipfile builds an object per central directory entry: a sidecar listing thousands
    of members for a program of 16 tensors is refused from its end record."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    with zipfile.ZipFile(tmp_path / "p.xbar.npz", "a") as archive:
        for index in range(2000):
            archive.writestr(f"extra{index}.npy", b"")
    with pytest.raises(XbarcError) as caught:
        load_program(path)
    assert str(caught.value).startswith(f"{path}.npz: error: the tensor file lists 2016 members")
    assert "more than xbarc reads (96 members)" in str(caught.value)


def test_a_sidecar_that_is_a_device_is_refused(compiled: Path, tmp_path: Path) -> None:
    """Issue 15 Deliver 3: `/dev/zero` as a sidecar is refused, not read (in a capped
    subprocess: reading it would take all memory)."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    (tmp_path / "p.xbar.npz").unlink()
    (tmp_path / "p.xbar.npz").symlink_to("/dev/zero")
    status, err = load_capped([path], timeout=60)[str(path)]
    assert status == 1, err
    assert err.strip().endswith(
        "p.xbar.npz is a device, not a tensor file (give the path of a file)"
    )


def test_a_sidecar_that_is_a_named_pipe_is_refused_without_waiting(
    compiled: Path, tmp_path: Path
) -> None:
    """Issue 15 Deliver 3: a FIFO as a sidecar is refused at once (opening it would wait
    for a writer forever); run in a subprocess so that a regression times out."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    (tmp_path / "p.xbar.npz").unlink()
    os.mkfifo(tmp_path / "p.xbar.npz")
    results = load_capped([path], timeout=60)
    status, err = results[str(path)]
    assert status == 1, err
    assert err.strip().endswith(
        "p.xbar.npz is a named pipe, not a tensor file (give the path of a file)"
    )


# --- data files (--input, --data) ------------------------------------------------------------


def test_a_npy_file_given_as_input_gets_a_clear_error(
    compiled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15 Deliver 5 (load_data's part): a `.npy` passed as `--input` is named, with
    what to give instead."""
    single = tmp_path / "x.npy"
    np.save(single, np.zeros((1, 1, 8, 8), np.float32))
    status = main(["run", str(compiled), "--input", str(single)])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1, err
    assert err == (
        f"xbarc: {single}: error: {single} is a .npy file (one array), not an .npz archive of"
        " named arrays (give an .npz file of named arrays: np.savez(PATH, name=array, ...))"
    )


def test_compressed_data_is_read(tmp_path: Path) -> None:
    """np.savez_compressed data is legitimate: it loads, equal to what was saved."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(5, 1, 8, 8)).astype(np.float32), "y": np.arange(5)}
    np.savez_compressed(tmp_path / "d.npz", **arrays)
    loaded = load_data(tmp_path / "d.npz")
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype


def test_a_data_member_claiming_more_than_its_bytes_hold_is_refused(tmp_path: Path) -> None:
    """A data member whose central directory claims 4 GB of a few hundred bytes is
    refused before inflating."""
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 4), np.float32))
    patch_central_sizes(tmp_path / "d.npz", "x.npy", 0xF000_0000)
    with pytest.raises(XbarcError, match="array 'x' claims 4026531840 bytes, more than its"):
        load_data(tmp_path / "d.npz")


def test_data_beyond_the_data_limit_is_refused_before_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compressed data whose members inflate past MAX_DATA_BYTES (here lowered to 16 MB)
    is refused from the declared sizes, before any is inflated."""
    import xbarc.limits

    monkeypatch.setattr(xbarc.limits, "MAX_DATA_BYTES", 16 << 20)
    zeros_bomb(tmp_path / "d.npz", "x.npy", 32, (8 << 20,))
    raised, peak = peak_bytes_of(lambda: load_data(tmp_path / "d.npz"))
    assert isinstance(raised, XbarcError), raised
    assert "the data file inflates to 33554560 bytes, more than xbarc reads (16777216)" in str(
        raised
    )
    assert peak < 8 << 20, peak


def test_data_that_is_a_device_is_refused(compiled: Path) -> None:
    """`--input /dev/zero` is refused, not read (in a capped subprocess)."""
    status, err = load_capped([compiled], timeout=60, command=("run", "--input", "/dev/zero"))[
        str(compiled)
    ]
    assert status == 1, err
    assert err.strip() == (
        "xbarc: error: /dev/zero is a device, not a data file (give the path of a file)"
    ), err


def test_pickled_data_is_never_loaded(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(XbarcError, match="the data file holds pickled objects"):
        load_data(tmp_path / "d.npz")


@pytest.mark.parametrize("version", [84, 640])
def test_a_sidecar_member_of_an_unknown_zip_version_is_a_clear_error(
    compiled: Path, tmp_path: Path, version: int
) -> None:
    """Issue 15 fuzz finding: a sidecar whose member needs a zip version zipfile does not
    implement ("zip file version 8.4") raised NotImplementedError (exit 3)."""
    path, _ = mutant(compiled, tmp_path, "xbar 2", "xbar 2")
    sidecar = tmp_path / "p.xbar.npz"
    data = bytearray(sidecar.read_bytes())
    for magic, offset in ((b"PK\x03\x04", 4), (b"PK\x01\x02", 6)):
        at = data.find(magic)
        data[at + offset : at + offset + 2] = version.to_bytes(2, "little")
    sidecar.write_bytes(bytes(data))
    with pytest.raises(XbarcError, match="not a readable tensor file") as raised:
        load_program(path)
    assert str(raised.value).startswith(f"{sidecar}: error:")
