"""Output files (issue 15, Deliver 1 and 2): every writer refuses a path that is not a
regular file, that is one of its inputs (the same inode counts) or that sits in a missing
folder; writes are atomic, keep an existing file's mode, leave no temporary behind on an
error, and remove the stale temporaries of killed runs.

No test writes near a device node: the non-regular outputs are named pipes made here.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.test_cli import tiny_conv_model
from xbarc import files
from xbarc.cli import main
from xbarc.diagnostics import XbarcError
from xbarc.ir.io import load_program, save_program, sidecar_path
from xbarc.ir.printer import print_program


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_refused(status: int, err: str, *fragments: str) -> None:
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry of `folder`: its file type and, for regular files, its bytes."""
    entries = {}
    for entry in sorted(folder.iterdir()):
        info = entry.lstat()
        data = entry.read_bytes() if stat.S_ISREG(info.st_mode) else None
        entries[entry.name] = (stat.S_IFMT(info.st_mode), data)
    return entries


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(tiny_conv_model(), path)
    return path


@pytest.fixture
def program(tmp_path, model) -> Path:
    path = tmp_path / "p.xbar"
    assert main(["compile", str(model), "-o", str(path)]) == 0
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.npz"
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.savez(path, x=x)
    return path


def program_state(path: Path) -> tuple[str, dict[str, bytes]]:
    """What a program is: its printed text and its tensors' bytes."""
    loaded = load_program(path)
    return print_program(loaded), {k: np.asarray(v).tobytes() for k, v in loaded.store.items()}


# --- Deliver 1: outputs that are not regular files ---------------------------------------


def test_compile_onto_a_named_pipe_is_refused_and_keeps_it(tmp_path, model, capsys):
    """defect: `compile -o /dev/null` (as root) replaced the device node with a file."""
    fifo = tmp_path / "out.xbar"
    os.mkfifo(fifo)
    status, _, err = run_cli(capsys, "compile", model, "-o", fifo)
    assert_refused(status, err, str(fifo), "named pipe")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not sidecar_path(fifo).exists()


def test_compile_whose_sidecar_would_be_a_named_pipe_is_refused(tmp_path, model, capsys):
    fifo = tmp_path / "out.xbar.npz"
    os.mkfifo(fifo)
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "out.xbar")
    assert_refused(status, err, str(fifo), "named pipe")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not (tmp_path / "out.xbar").exists()


def test_run_output_onto_a_named_pipe_is_refused(tmp_path, program, data, capsys):
    fifo = tmp_path / "y.npz"
    os.mkfifo(fifo)
    status, _, err = run_cli(capsys, "run", program, "--input", data, "-o", fifo)
    assert_refused(status, err, str(fifo), "named pipe")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_outputs_onto_a_folder_are_refused(tmp_path, model, program, data, capsys):
    folder = tmp_path / "folder.xbar"
    folder.mkdir()
    status, _, err = run_cli(capsys, "compile", model, "-o", folder)
    assert_refused(status, err, str(folder), "folder")
    status, _, err = run_cli(capsys, "run", program, "--input", data, "-o", folder)
    assert_refused(status, err, str(folder), "folder")
    assert folder.is_dir() and not any(folder.iterdir())


# --- Deliver 1: outputs that are inputs --------------------------------------------------


def test_compile_program_whose_sidecar_is_the_model_is_refused(tmp_path, capsys):
    """defect: `compile m.xbar.npz -o m.xbar` overwrote the model with the sidecar."""
    model = tmp_path / "m.xbar.npz"
    onnx.save(tiny_conv_model(), model)
    before = model.read_bytes()
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "m.xbar")
    assert_refused(status, err, str(model), "input model")
    assert model.read_bytes() == before
    assert not (tmp_path / "m.xbar").exists()


def test_compile_onto_a_hard_link_of_the_model_is_refused(tmp_path, model, capsys):
    """the same inode counts as the same file, whatever its name."""
    before = model.read_bytes()
    os.link(model, tmp_path / "alias.xbar")
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "alias.xbar")
    assert_refused(status, err, "input model")
    os.link(model, tmp_path / "other.xbar.npz")
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "other.xbar")
    assert_refused(status, err, "input model")
    assert model.read_bytes() == before and (tmp_path / "alias.xbar").read_bytes() == before


def test_run_output_onto_the_programs_sidecar_is_refused(tmp_path, program, data, capsys):
    """defect: `run p.xbar -o p.xbar.npz` destroyed the program's sidecar."""
    before = program_state(program)
    for target in (sidecar_path(program), program, data):
        status, _, err = run_cli(capsys, "run", program, "--input", data, "-o", target)
        assert_refused(status, err, str(target))
    assert program_state(program) == before
    assert set(np.load(data)) == {"x"}


def test_calibrate_to_a_program_whose_sidecar_is_the_inputs_is_refused(
    tmp_path, program, data, capsys
):
    """defect: `calibrate p.xbar -o q.xbar` with q.xbar.npz being p's sidecar (a link)
    left p's text beside q's tensors."""
    before = program_state(program)
    os.symlink(sidecar_path(program), tmp_path / "q.xbar.npz")
    status, _, err = run_cli(
        capsys, "calibrate", program, "--data", data, "-o", tmp_path / "q.xbar"
    )
    assert_refused(status, err, "q.xbar.npz", str(sidecar_path(program)))
    os.link(sidecar_path(program), tmp_path / "r.xbar.npz")
    status, _, err = run_cli(
        capsys, "calibrate", program, "--data", data, "-o", tmp_path / "r.xbar"
    )
    assert_refused(status, err, "r.xbar.npz")
    assert program_state(program) == before


def test_opt_to_a_program_whose_sidecar_is_the_inputs_is_refused(tmp_path, program, capsys):
    before = program_state(program)
    os.symlink(sidecar_path(program), tmp_path / "q.xbar.npz")
    status, _, err = run_cli(capsys, "opt", program, "-o", tmp_path / "q.xbar")
    assert_refused(status, err, "q.xbar.npz")
    # the sidecar as the program's text
    status, _, err = run_cli(capsys, "opt", program, "-o", sidecar_path(program))
    assert_refused(status, err, str(sidecar_path(program)))
    assert program_state(program) == before


def test_calibrate_and_opt_in_place_still_work(tmp_path, program, data, capsys):
    status, _, err = run_cli(capsys, "calibrate", program, "--data", data)
    assert status == 0, err
    assert load_program(program).calibration is not None
    status, _, err = run_cli(capsys, "opt", program, "-o", program)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.onnx", "data.npz", "p.xbar", "p.xbar.npz"]
    )


def test_output_through_a_symlink_writes_its_target(tmp_path, model, capsys):
    real = tmp_path / "store"
    real.mkdir()
    (real / "m.xbar").write_text("old")
    (tmp_path / "m.xbar").symlink_to(real / "m.xbar")
    status, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "m.xbar")
    assert status == 0, err
    assert (tmp_path / "m.xbar").is_symlink()
    assert (real / "m.xbar").read_text().startswith("xbar ")
    load_program(tmp_path / "m.xbar")


# --- Deliver 1: missing folders ----------------------------------------------------------


def test_outputs_into_a_missing_folder_get_a_clear_error(tmp_path, model, program, data, capsys):
    missing = tmp_path / "nowhere"
    for args in (
        ("compile", model, "-o", missing / "m.xbar"),
        ("run", program, "--input", data, "-o", missing / "y.npz"),
        ("calibrate", program, "--data", data, "-o", missing / "q.xbar"),
        ("opt", program, "-o", missing / "q.xbar"),
    ):
        status, _, err = run_cli(capsys, *args)
        assert_refused(status, err, str(missing), "does not exist")
    assert not missing.exists()


# --- Deliver 1: modes --------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_outputs_get_the_umask_mode(tmp_path, model, data, capsys, umask_022):
    """defect: every output was 0600 (mkstemp's mode), whatever the umask."""
    out = tmp_path / "new.xbar"
    assert main(["compile", str(model), "-o", str(out)]) == 0
    assert mode(out) == 0o644 and mode(sidecar_path(out)) == 0o644
    assert main(["run", str(out), "--input", str(data), "-o", str(tmp_path / "y.npz")]) == 0
    assert mode(tmp_path / "y.npz") == 0o644


def test_existing_outputs_keep_their_mode(tmp_path, model, program, data, capsys, umask_022):
    os.chmod(program, 0o640)
    os.chmod(sidecar_path(program), 0o604)
    assert main(["compile", str(model), "-o", str(program), "--weight-bits", "4"]) == 0
    assert mode(program) == 0o640 and mode(sidecar_path(program)) == 0o604
    assert main(["calibrate", str(program), "--data", str(data)]) == 0
    assert mode(program) == 0o640 and mode(sidecar_path(program)) == 0o604
    out = tmp_path / "y.npz"
    out.write_bytes(b"")
    os.chmod(out, 0o600)
    assert main(["run", str(program), "--input", str(data), "-o", str(out)]) == 0
    assert mode(out) == 0o600 and set(np.load(out)) == {"y"}


# --- Deliver 2: nothing half-way, no temporaries -----------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("anonymous", [True, False], ids=["O_TMPFILE", "named"])
def test_a_failed_save_leaves_the_old_program_and_no_temporaries(
    tmp_path, program, monkeypatch, anonymous
):
    if not anonymous:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    before = program_state(program)
    listing = sorted(p.name for p in tmp_path.iterdir())
    new = load_program(program)
    monkeypatch.setattr("xbarc.ir.tensors.write_npz", disk_full)
    monkeypatch.setattr("xbarc.ir.io.write_npz", disk_full, raising=False)
    with pytest.raises(XbarcError, match="No space left"):
        save_program(program, new)
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert program_state(program) == before


@pytest.mark.parametrize("anonymous", [True, False], ids=["O_TMPFILE", "named"])
def test_a_failed_run_output_leaves_no_temporaries(
    tmp_path, program, data, monkeypatch, capsys, anonymous
):
    if not anonymous:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    listing = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr("xbarc.ir.tensors.write_npz", disk_full)
    status, _, err = run_cli(capsys, "run", program, "--input", data, "-o", tmp_path / "y.npz")
    assert_refused(status, err, "y.npz", "No space left")
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_a_save_interrupted_after_the_pending_sidecar_leaves_the_old_program(
    tmp_path, program, monkeypatch
):
    """an exception (here a KeyboardInterrupt) between placing the new sidecar and the
    new text: the old program is intact and nothing of the new one is left."""
    before = program_state(program)
    listing = sorted(p.name for p in tmp_path.iterdir())
    real_replace = os.replace

    def interrupted(src, dst, *args, **kwargs):
        if os.fspath(dst) == os.fspath(program):
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_program(program, load_program(program))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert program_state(program) == before


def test_a_reader_between_the_text_and_the_sidecar_gets_the_new_program(
    tmp_path, program, model, monkeypatch
):
    """a load right after the new text is in place rolls the pending sidecar forward;
    the save then finds it in place and completes."""
    new_path = tmp_path / "new" / "p.xbar"
    new_path.parent.mkdir()
    assert main(["compile", str(model), "-o", str(new_path), "--weight-bits", "4"]) == 0
    new = load_program(new_path)
    seen = []
    real_replace = os.replace

    def replace_then_read(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if os.fspath(dst) == os.fspath(program):
            seen.append(program_state(program))

    monkeypatch.setattr(os, "replace", replace_then_read)
    save_program(program, new)
    monkeypatch.undo()
    assert seen == [program_state(new_path)] == [program_state(program)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.onnx", "new", "p.xbar", "p.xbar.npz"]
    )


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_stale_temporaries_of_killed_runs_are_removed_by_the_next_save(tmp_path, program):
    """defect: a killed save left its temporaries (113-308 MB each) for ever."""
    pid = dead_pid()
    stale = [
        tmp_path / f".p.xbar.{pid}.a1b2c3.tmp",
        tmp_path / f".p.xbar.npz.{pid}.d4e5f6.tmp",
        tmp_path / f".p.xbar.npz.pending-{pid}-0a1b2c",
    ]
    for path in stale:
        path.write_bytes(b"half written")
    live = tmp_path / f".p.xbar.npz.{os.getpid()}.ffffff.tmp"  # a live writer's: kept
    live.write_bytes(b"being written")
    others = tmp_path / f".q.xbar.{pid}.a1b2c3.tmp"  # another program's: not ours to remove
    others.write_bytes(b"")
    save_program(program, load_program(program))
    assert not any(path.exists() for path in stale)
    assert live.exists() and others.exists()


def test_stale_temporaries_are_removed_by_the_next_load(tmp_path, program):
    pid = dead_pid()
    stale = tmp_path / f".p.xbar.npz.pending-{pid}-0a1b2c"
    stale.write_bytes(b"not a zip")
    temporary = tmp_path / f".p.xbar.{pid}.a1b2c3.tmp"
    temporary.write_bytes(b"")
    load_program(program)
    assert not stale.exists() and not temporary.exists()


def test_a_pending_sidecar_that_matches_the_text_is_rolled_forward(tmp_path, program, model):
    """the state after a kill between placing the new text and renaming its sidecar: the
    new text, the old sidecar and the new one pending. Loading gives the new program and
    puts its sidecar in place."""
    pid = dead_pid()
    new_path = tmp_path / "new" / "p.xbar"
    new_path.parent.mkdir()
    assert main(["compile", str(model), "-o", str(new_path), "--weight-bits", "4"]) == 0
    new = program_state(new_path)
    assert new != program_state(program)
    program.write_bytes(new_path.read_bytes())
    pending = tmp_path / f".p.xbar.npz.pending-{pid}-0a1b2c"
    pending.write_bytes(sidecar_path(new_path).read_bytes())
    assert program_state(program) == new
    assert not pending.exists()
    assert sidecar_path(program).read_bytes() == sidecar_path(new_path).read_bytes()


def test_a_pending_sidecar_is_used_but_kept_when_it_cannot_be_renamed(tmp_path, model, monkeypatch):
    """a read-only folder (simulated: root writes anywhere): the interrupted save's new
    program loads from its pending sidecar, which stays."""
    path = tmp_path / "p.xbar"
    assert main(["compile", str(model), "-o", str(path)]) == 0
    expected = program_state(path)
    pending = tmp_path / f".p.xbar.npz.pending-{dead_pid()}-0a1b2c"
    sidecar_path(path).rename(pending)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr(os, "unlink", read_only)
    assert program_state(path) == expected
    monkeypatch.undo()
    assert pending.exists() and not sidecar_path(path).exists()
    assert program_state(path) == expected  # now writable: rolled forward
    assert not pending.exists() and sidecar_path(path).exists()


# --- reading ----------------------------------------------------------------------------


def test_a_program_that_is_a_device_or_pipe_is_refused(tmp_path, capsys):
    """a program that is /dev/zero was read for ever; a pipe waited for a writer."""
    fifo = tmp_path / "p.xbar"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):
        status, _, err = run_cli(capsys, "inspect", path)
        assert_refused(status, err, str(path), "not a program file")


def test_the_api_never_replaces_a_named_pipe(tmp_path, program):
    fifo = tmp_path / "fifo.xbar"
    os.mkfifo(fifo)
    with pytest.raises(XbarcError, match="named pipe"):
        save_program(fifo, load_program(program))
    with pytest.raises(XbarcError, match="named pipe"):
        files.write_file_atomically(fifo, lambda handle: handle.write(b""))
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


# --- the helpers -------------------------------------------------------------------------


def test_write_file_atomically_replaces_whole_files_only(tmp_path):
    target = tmp_path / "f.bin"
    files.write_file_atomically(target, lambda handle: handle.write(b"one"))
    assert target.read_bytes() == b"one"

    def fails(handle):
        handle.write(b"half")
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError):
        files.write_file_atomically(target, fails)
    assert target.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("name", ["w\x00x", "w\udcff"])
def test_a_tensor_name_no_zip_can_hold_is_refused_when_written(name, tmp_path) -> None:
    """Issue 15 (verify's request): write_npz refuses a tensor name with a NUL or a lone
    surrogate (zipfile cut it at the NUL or raised UnicodeEncodeError) and leaves nothing."""
    from xbarc.ir.tensors import save_npz

    with pytest.raises(XbarcError, match="cannot hold"):
        save_npz(tmp_path / "out.npz", {name: np.zeros(2, np.float32)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["device", "pipe"])
def test_a_model_that_is_a_device_or_pipe_is_refused(kind, tmp_path, capsys) -> None:
    """`compile /dev/zero` read the device until memory ran out (a pipe waited forever):
    the model must be a regular file."""
    if kind == "device":
        model = Path("/dev/zero")
    else:
        model = tmp_path / "m.onnx"
        os.mkfifo(model)
    assert main(["compile", str(model), "-o", str(tmp_path / "p.xbar")]) == 1
    err = capsys.readouterr().err
    assert f"{model} is a" in err and "not a model file" in err
    assert not (tmp_path / "p.xbar").exists()
