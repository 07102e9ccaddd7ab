"""The Dask engine (xbarc/distributed.py) and `xbarc eval --workers N | --scheduler ADDRESS`:
the same results as one process, bit for bit, and one-line errors for options that cannot
work, before any work starts.

One LocalCluster of two single-threaded worker processes on 127.0.0.1 serves the module
(`--scheduler`); `--workers 2` starts and closes its own, as a user's eval does.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import operator
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from xbarc import distributed
from xbarc.cli import main
from xbarc.diagnostics import XbarcError
from xbarc.distributed import EngineOptions
from xbarc.runtime.noise import check_seed
from xbarc.session import InferenceSession

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster on loopback whose workers import this checkout's xbarc."""
    import logging

    from distributed import LocalCluster

    env = {"PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # no dashboard; the scheduler's few HTTP routes (health, metrics) on a free port,
        # not on 8787 (taken by another cluster, it would print a warning)
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.CRITICAL,
        env=env,
    ) as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lenet")
    program = folder / "lenet.xbar"
    arguments = ["compile", str(DIGITS / "lenet.onnx"), "--input-shape", "x=1x1x8x8"]
    assert main([*arguments, "-o", str(program), "-q"]) == 0
    return program


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the engine -------------------------------------------------------------------------


def test_dask_engine_maps_like_the_serial_engine(cluster):
    items = list(range(12))
    with distributed.engine(EngineOptions()) as serial:
        assert isinstance(serial, distributed.SerialEngine)
        expected = list(serial.map(operator.neg, items))
        shared_expected = list(serial.map(operator.sub, items, shared=100))
    with distributed.engine(EngineOptions(scheduler=cluster)) as pool:
        assert isinstance(pool, distributed.DaskEngine)
        assert pool.workers == 2
        got = list(pool.map(operator.neg, items))
        shared_got = list(pool.map(operator.sub, items, shared=100))
        # equal items are separate tasks, each with its own index
        repeated = sorted(pool.map(operator.neg, [5, 5, 5]))
        repeated_shared = sorted(pool.map(operator.sub, [5, 5], shared=1))
    assert expected == [(i, -i) for i in items]
    assert sorted(got) == expected
    assert shared_expected == [(i, 100 - i) for i in items]
    assert sorted(shared_got) == shared_expected
    assert repeated == [(0, -5), (1, -5), (2, -5)]
    assert repeated_shared == [(0, -4), (1, -4)]


def test_local_workers_start_run_this_xbarc_and_close():
    """--workers 2: a LocalCluster of two processes on 127.0.0.1, which import this
    checkout's xbarc (checked by the engine), closed with the `with` block."""
    with distributed.engine(EngineOptions(workers=2)) as pool:
        assert isinstance(pool, distributed.DaskEngine) and pool.workers == 2
        assert sorted(pool.map(check_seed, [7, 8, 9])) == [(0, 7), (1, 8), (2, 9)]
        addresses = list(pool.client.scheduler_info()["workers"])
        client = pool.client
    assert all(address.startswith("tcp://127.0.0.1:") for address in addresses)
    assert client.status == "closed"


def test_worker_side_user_error_is_one_line(cluster):
    """An XbarcError raised in a worker comes back as itself: hint included, one line."""
    with distributed.engine(EngineOptions(scheduler=cluster)) as pool:
        with pytest.raises(XbarcError) as caught:
            list(pool.map(check_seed, [1, 2, -1, 3]))
        # the engine still works after a failed map
        assert sorted(pool.map(check_seed, [4, 5])) == [(0, 4), (1, 5)]
    assert str(caught.value) == (
        f"error: --seed -1 is not a seed (give a whole number from 0 to {2**64 - 1})"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EngineOptions(workers=0), "--workers must be at least 1, got 0"),
        (EngineOptions(workers=-3), "--workers must be at least 1, got -3"),
        (EngineOptions(scheduler="nonsense"), "'nonsense' is not a scheduler address"),
        (EngineOptions(scheduler="udp://1.2.3.4:8786"), "is not a scheduler address"),
        (EngineOptions(scheduler="tcp://127.0.0.1:99999"), "port 99999 is not a port"),
        (EngineOptions(workers=2, scheduler="tcp://127.0.0.1:8786"), "give one"),
    ],
)
def test_engine_options_that_cannot_work(options, message):
    with pytest.raises(XbarcError, match=message):
        distributed.check(options)


def test_scheduler_address_forms():
    assert distributed.scheduler_host("tcp://127.0.0.1:8786") == ("127.0.0.1", 8786)
    assert distributed.scheduler_host("10.0.0.5:8786") == ("10.0.0.5", 8786)
    assert distributed.scheduler_host("tls://[::1]:9000") == ("::1", 9000)


def test_unreachable_scheduler_is_checked_first():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(XbarcError, match="cannot reach a Dask scheduler there"):
        distributed.check(EngineOptions(scheduler=address))


# --- read noise keyed by the batch ------------------------------------------------------


def test_a_batchs_read_noise_depends_on_its_number_only(lenet):
    """Batch 2 run alone on a fresh chip gives the bits it gives after batches 0 and 1;
    another batch number draws other noise."""
    x = np.load(DIGITS / "digits_test.npz")["x"][:30]
    parts = [x[:10], x[10:20], x[20:]]
    in_order = InferenceSession(lenet, noise="rram", seed=4)
    results = [in_order.run(None, {"x": part})[0] for part in parts]
    alone = InferenceSession(lenet, noise="rram", seed=4)
    assert np.array_equal(alone.run(None, {"x": parts[2]}, batch=2)[0], results[2])
    other = InferenceSession(lenet, noise="rram", seed=4)
    assert not np.array_equal(other.run(None, {"x": parts[2]}, batch=5)[0], results[2])
    # the default number counts on from the last one given
    assert np.array_equal(alone.run(None, {"x": parts[0]}, batch=0)[0], results[0])
    assert np.array_equal(alone.run(None, {"x": parts[1]})[0], results[1])


# --- xbarc eval on workers --------------------------------------------------------------


def eval_json(program: Path, *extra: str) -> dict:
    """`xbarc eval --json` of the LeNet under rram, 2 chip seeds, 4 batches of 16."""
    arguments = [
        "eval",
        str(program),
        "--reference",
        str(DIGITS / "lenet.onnx"),
        "--data",
        str(DIGITS / "digits_test.npz"),
        "--labels",
        "y",
        "--samples",
        "64",
        "--batch-size",
        "16",
        "--noise",
        "rram",
        "--seeds",
        "2",
        "--json",
        "-q",
        *extra,
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(arguments) == 0
    return json.loads(printed.getvalue())


@pytest.fixture(scope="module")
def in_process(lenet) -> dict:
    """The eval's report in this process."""
    return eval_json(lenet)


def test_eval_on_a_cluster_equals_one_process(lenet, cluster, in_process):
    """The report (errors, SNR, accuracy per seed, the ADC spread of every read) is the
    same bit for bit in this process and on a cluster (and with --workers 1: this
    process)."""
    here = in_process
    assert here["batch_size"] == 16 and len(here["instances"]) == 2
    assert here["instances"][0]["accuracy"] != here["instances"][1]["accuracy"]
    assert here["adc"] is not None
    assert eval_json(lenet, "--workers", "1") == here
    assert eval_json(lenet, "--scheduler", cluster) == here


@pytest.mark.slow  # two fresh worker processes load the Numba kernels: 10 to 20 s
def test_eval_on_two_local_workers_equals_one_process(lenet, in_process):
    """--workers 2 starts its own LocalCluster, runs the eval on it and closes it."""
    assert eval_json(lenet, "--workers", "2") == in_process


def test_eval_sensitivity_on_workers_equals_one_process(lenet, cluster):
    """--sensitivity's passes (each layer alone noisy, on each seed) on a cluster."""
    sensitivity = eval_json(lenet, "--sensitivity")
    assert len(sensitivity["sensitivity"]) == 4
    assert eval_json(lenet, "--sensitivity", "--scheduler", cluster) == sensitivity


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "error: --workers must be at least 1, got 0"),
        (["--scheduler", "tcp://127.0.0.1:PORT"], "cannot reach a Dask scheduler there"),
        (["--scheduler", "here"], "error: --scheduler 'here' is not a scheduler address"),
    ],
)
def test_eval_engine_errors_before_any_work(lenet, tmp_path, capsys, extra, message):
    """One line on stderr, nothing on stdout, and before the data is even read (the data
    file does not exist: its error would come first otherwise)."""
    extra = [item.replace("PORT", str(free_port())) for item in extra]
    missing = tmp_path / "missing.npz"
    arguments = ["eval", str(lenet), "--reference", str(DIGITS / "lenet.onnx")]
    code = main([*arguments, "--data", str(missing), *extra, "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert not os.path.exists(missing)


# --- xbarc sweep on workers -------------------------------------------------------------

SWEEP_GRID = (
    ("tile", ("32x32", "64x64", "128x128", "256x256")),
    ("mapping", ("dense", "sparse", "squeeze")),
    ("adc_bits", ("6", "8")),
)


def sweep_figures(output: Path, grid, samples: int, *extra: str) -> list[dict]:
    """The CSV rows of a sweep of the pruned digits MLP under rram, seeds 0 and 1, without
    their timings."""
    from xbarc.sweep import TIMING_COLUMNS

    arguments = ["sweep", str(DIGITS / "mlp_p90.onnx"), "--input-shape", "x=1x1x8x8"]
    arguments += ["--data", str(DIGITS / "digits_test.npz"), "--labels", "y"]
    arguments += ["--samples", str(samples), "--seeds", "2", "-o", str(output), "-q"]
    for name, values in grid:
        arguments += ["--grid", f"{name}={','.join(values)}"]
    assert main([*arguments, *extra]) == 0
    with open(output / "sweep.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def test_small_sweep_on_a_cluster_equals_one_process(cluster, tmp_path, capsys):
    grid = (("tile", ("32x32", "64x64")), ("adc_bits", ("4", "8")))
    here = sweep_figures(tmp_path / "here", grid, 30)
    assert len(here) == 4 and len({row["accuracy_mean"] for row in here}) > 1
    assert sweep_figures(tmp_path / "cluster", grid, 30, "--scheduler", cluster) == here


@pytest.mark.slow
def test_sweep_identical_on_one_two_workers_and_a_cluster(cluster, tmp_path, capsys):
    """The 24-point sweep of the acceptance: the same numbers with --workers 1, --workers 2
    and a LocalCluster."""
    one = sweep_figures(tmp_path / "one", SWEEP_GRID, 60, "--workers", "1")
    assert len(one) == 24
    assert sweep_figures(tmp_path / "two", SWEEP_GRID, 60, "--workers", "2") == one
    assert sweep_figures(tmp_path / "cluster", SWEEP_GRID, 60, "--scheduler", cluster) == one


def test_dask_is_imported_only_for_workers(lenet):
    """`xbarc --help` and an eval without --workers or --scheduler do not import Dask
    (it costs start-up time)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from xbarc.cli import main\n"
        "main(sys.argv[1:])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]\n"
        "print('loaded:', loaded, file=sys.stderr)\n"
    )
    arguments = ["eval", str(lenet), "--reference", str(DIGITS / "lenet.onnx")]
    arguments += ["--data", str(DIGITS / "digits_test.npz"), "--samples", "8", "-q"]
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "samples in batches of" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "loaded: []"
