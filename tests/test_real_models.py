"""The task metrics of benchmarks/real_models.py, on inputs whose answers are known.

The benchmark's numbers are only as good as its pre- and post-processing: magika's byte
features, the PicoDet and DB box decoding, the detection matching, the VAD score and the
error against float. The run over a real model is slow and needs its wheel in the cache
(tests never download): it is marked slow and skipped without the wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("real_models", BENCHMARKS / "real_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_models"] = module
    spec.loader.exec_module(module)
    return module


real = load_benchmark()


def test_magika_features_strip_and_pad():
    data = b"  \n\tprint('hi')\n" + bytes(range(256)) + b"end \n\n"
    features = real.magika_features(data, beg=8, end=6, block=64, padding=256)
    assert features.shape == (1, 14) and features.dtype == np.int32
    # beg: the first block, leading whitespace stripped, first 8 bytes
    assert bytes(features[0, :8].tolist()) == b"print('h"
    # end: the last block, trailing whitespace stripped, last 6 bytes
    assert bytes(features[0, 11:].tolist()) == b"end"
    assert features[0, 8:11].tolist() == [253, 254, 255]


def test_magika_features_pad_short_files():
    features = real.magika_features(b" ab ", beg=4, end=4, block=16, padding=256)
    # head: lstrip -> "ab " then padded after; tail: rstrip -> " ab" padded before
    assert features[0, :4].tolist() == [ord("a"), ord("b"), ord(" "), 256]
    assert features[0, 4:].tolist() == [256, ord(" "), ord("a"), ord("b")]


# The digest of magika's pinned inputs (name, NUL, bytes, in order): an edit to one of
# them moves magika's rows in RESULTS.md, so it must be deliberate (re-record the table).
MAGIKA_INPUTS_SHA256 = "cfa05482fedd3f0ac754b5462ed5013491e5ec5b4b592b975af32de9233924f8"


def test_magika_inputs_are_small_pinned_files_of_the_repository():
    test, calibration = real.magika_files()
    assert len(test) == 8 and len(calibration) == 5 and not set(test) & set(calibration)
    digest = hashlib.sha256()
    for path in test + calibration:
        assert path.parent == BENCHMARKS / "data" / "magika"
        assert 0 < path.stat().st_size <= 4096, path.name
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert digest.hexdigest() == MAGIKA_INPUTS_SHA256
    # of different kinds: no two test files share an extension
    assert len({path.suffix for path in test}) == len(test)


def test_iou_and_box_matching():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    b = np.array([5.0, 0.0, 15.0, 10.0])
    assert real.iou(a, b) == pytest.approx(50 / 150)
    reference = [(0, 0.0, 0.0, 10.0, 10.0), (1, 20.0, 20.0, 30.0, 30.0)]
    text, kept = real.boxes_score(reference, reference)
    assert kept and "2 matched, mean IoU 1.000" in text
    shifted = [(0, 5.0, 0.0, 15.0, 10.0), (1, 20.0, 20.0, 30.0, 30.0)]
    text, kept = real.boxes_score(shifted, reference)
    assert not kept and "1 matched" in text and f"{(1 / 3 + 1) / 2:.3f}" in text
    relabeled = [(1, 0.0, 0.0, 10.0, 10.0), (1, 20.0, 20.0, 30.0, 30.0)]
    assert not real.boxes_score(relabeled, reference)[1]  # a box of another class
    assert not real.boxes_score(reference[:1], reference)[1]  # one missing


def test_db_boxes_find_and_grow_each_region():
    pytest.importorskip("scipy")
    probability = np.zeros((64, 96), np.float32)
    probability[10:20, 10:50] = 0.9
    probability[40:46, 60:90] = 0.8
    probability[55:57, 5:8] = 0.95  # dilated to 3x4, half of it 0: mean 0.475 < 0.5
    probability[30:34, 5:25] = 0.35  # above thresh (0.3), below box_thresh (0.5)
    expected = []
    for top, bottom, left, right in [(10, 20, 10, 50), (40, 46, 60, 90)]:
        # the 2x2 dilation adds a row above and a column to the left; unclip grows every
        # side by area * 1.6 / perimeter
        top, left = top - 1, left - 1
        area, perimeter = (bottom - top) * (right - left), 2 * (bottom - top + right - left)
        grow = area * 1.6 / perimeter
        expected.append((0, left - grow, top - grow, right + grow, bottom + grow))
    assert real.db_boxes(probability) == [pytest.approx(box, abs=1e-9) for box in expected]


def test_picodet_decodes_a_cell_and_its_distances():
    height = width = 64
    classes, bins = 3, 8
    scores, distributions = [], []
    for stride in (8, 16, 32, 64):
        cells = (height // stride) * (width // stride)
        scores.append(np.zeros((1, cells, classes), np.float32))
        distributions.append(np.full((1, cells, 4 * bins), -50.0, np.float32))
    # stride 8, cell (row 2, col 3): center (28, 20); sides at 1, 2, 3, 4 bins of 8 px
    cell = 2 * (width // 8) + 3
    scores[0][0, cell, 1] = 0.9
    for side, distance in enumerate((1, 2, 3, 4)):
        distributions[0][0, cell, side * bins + distance] = 50.0
    detections = real.picodet_boxes(scores + distributions, height, width)
    assert len(detections) == 1
    label, *box = detections[0]
    assert label == 1
    np.testing.assert_allclose(box, [28 - 8, 20 - 16, 28 + 24, 20 + 32], atol=1e-3)


def test_hard_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=np.float64)
    kept = real.hard_nms(boxes, np.array([0.6, 0.9, 0.7]), 0.5)
    assert [list(box) for box in kept] == [[1, 0, 11, 10], [20, 20, 30, 30]]


def test_vad_score_counts_frames_on_the_right_side():
    truth = np.array([0, 0, -1, 1, 1, 1, -1, 0])
    reference = np.array([0.1, 0.2, 0.5, 0.9, 0.8, 0.7, 0.5, 0.1])
    score = real.vad_score(truth)
    text, kept = score(reference, reference)
    assert kept and "speech 0.800 silence 0.133" in text and "frames right 100%" in text
    missed = np.array([0.1, 0.2, 0.5, 0.9, 0.3, 0.7, 0.5, 0.1])
    text, kept = score(missed, reference)
    assert not kept and "frames right 83%" in text


def test_output_error_scale_and_tolerance():
    want = [[np.array([1.0, -2.0, 4.0], np.float32)]]
    same = real.output_error(want, want)
    assert same == (0.0, True)
    near = [[np.array([1.0, -2.0, 4.0 + 3e-5], np.float32)]]
    error, close = real.output_error(near, want)
    assert error == pytest.approx(3e-5 / 4, rel=1e-2) and close
    far = [[np.array([1.0 + 1e-3, -2.0, 4.0], np.float32)]]
    assert not real.output_error(far, want)[1]
    assert real.output_error([[np.zeros(2, np.float32)]], want) == (math.inf, False)


@pytest.mark.slow
def test_magika_through_every_profile_when_cached():
    if not sorted((real.CACHE / "wheels").glob("magika-1.0.3-*.whl")):
        pytest.skip("the magika wheel is not in the cache (tests never download)")
    args = argparse.Namespace(
        profiles=list(real.PROFILES), det_side=480, scale=None, tiles=128, strategy="reprogram"
    )
    rows, header = real.run_model("magika", args)
    by_profile = {row.profile: row for row in rows}
    assert set(real.PROFILES) <= set(by_profile), header
    assert by_profile["ideal"].kept and by_profile["ideal"].note.startswith("within")
    # the pinned files' kinds, each told apart by float
    assert by_profile["float"].metric.split(" (")[0].split() == [
        "python",
        "markdown",
        "toml",
        "png",
        "csv",
        "json",
        "shell",
        "html",
    ]
