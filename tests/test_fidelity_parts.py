"""Fidelity building blocks on hand-built inputs with known answers: detection agreement (flip,
extra, missed), tensor errors (identical, known noise), the --fail-if parser, artefact files."""

from __future__ import annotations

import gzip
import json
import math
import re

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.decode.agreement import agreement, match_image
from harness.fidelity.gate import failing_comparisons, parse_gate
from harness.fidelity.tensors import tensor_errors
from harness.measure.artifacts import (
    SavedDetections,
    SavedOutputs,
    read_detections,
    read_outputs,
    write_detections,
    write_outputs,
)
from harness.measure.capture import split_per_image


def det(image_id, cat, box, score):
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


# ------------------------------------------------------------------------------------------ agreement

def test_agreement_counts_match_flip_extra_and_missed():
    ref = [det(1, 1, (0, 0, 10, 10), 0.9),      # matched by a shifted box of the same class
           det(1, 2, (50, 50, 20, 20), 0.8),    # candidate calls it class 3: a flip
           det(1, 1, (100, 100, 10, 10), 0.7),  # candidate misses it
           det(1, 1, (200, 200, 10, 10), 0.2)]  # below the score threshold: ignored
    cand = [det(1, 1, (1, 0, 10, 10), 0.85),
            det(1, 3, (50, 50, 20, 20), 0.8),
            det(1, 2, (300, 300, 15, 15), 0.6),  # nothing there in the reference: extra
            det(1, 2, (100, 100, 10, 10), 0.1)]  # the missed box, but not confident
    a = match_image(ref, cand, 1, "a.jpg")
    assert (a.reference, a.candidate, a.matched, a.missed, a.extra, a.flips) == (3, 3, 1, 2, 2, 1)
    assert a.ious == [pytest.approx(90 / 110)]  # 9x10 overlap, 110 union
    assert a.dscores == [pytest.approx(0.05)]


def test_agreement_pairs_highest_iou_first_and_summarises_images():
    # two reference boxes of one class; the candidate box overlaps both, the better one wins
    ref = [det(7, 1, (0, 0, 10, 10), 0.9), det(7, 1, (3, 0, 10, 10), 0.9), det(8, 1, (0, 0, 5, 5), 0.5)]
    cand = [det(7, 1, (3, 0, 10, 10), 0.9), det(8, 1, (0, 0, 5, 5), 0.5)]
    a = match_image(ref[:2], cand[:1], 7)
    assert a.matched == 1 and a.ious == [1.0] and a.missed == 1
    summary = agreement(SavedDetections({7: "x.jpg", 8: "y.jpg"}, ref), SavedDetections({7: "x.jpg", 8: "y.jpg"}, cand))
    assert (summary.reference, summary.matched, summary.missed, summary.extra) == (3, 2, 1, 0)
    assert summary.matched_fraction == pytest.approx(2 / 3)
    assert [w.file_name for w in summary.worst] == ["x.jpg"]


def test_agreement_of_identical_rows_is_complete():
    dets = [det(i, 1 + i % 2, (i, i, 20, 20), 0.5 + 0.01 * i) for i in range(5)]
    images = {i: f"{i}.jpg" for i in range(5)}
    a = agreement(SavedDetections(images, dets), SavedDetections(images, [dict(d) for d in dets]))
    assert a.matched_fraction == 1.0 and a.mean_iou == 1.0 and a.mean_abs_dscore == 0.0
    assert a.missed == a.extra == a.flips == 0 and a.worst == []


# ------------------------------------------------------------------------------------------ tensors

def outputs(arrays_per_image, ids=(1, 2)):
    return SavedOutputs(list(ids), [f"{i}.jpg" for i in ids], [f"out{k}" for k in range(len(arrays_per_image[0]))],
                        arrays_per_image)


def test_tensor_errors_identical_outputs():
    rng = np.random.default_rng(0)
    arrays = [[rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=3)] for _ in range(2)]
    errors = tensor_errors(outputs(arrays), outputs([[a.copy() for a in img] for img in arrays]))
    assert [e.sqnr_db for e in errors] == [math.inf, math.inf]
    assert all(e.cosine == pytest.approx(1.0, abs=1e-12) and e.max_abs == 0 and e.p99_abs == 0 for e in errors)


def test_tensor_errors_known_noise_gives_known_sqnr():
    rng = np.random.default_rng(1)
    ref = [[rng.normal(0, 1.0, 200_000)] for _ in range(2)]
    noise = [rng.normal(0, 0.1, 200_000) for _ in range(2)]  # noise power 1/100 of the signal: 20 dB
    cand = [[r[0] + n] for r, n in zip(ref, noise)]
    (e,) = tensor_errors(outputs(ref), outputs(cand))
    assert e.sqnr_db == pytest.approx(20.0, abs=0.05)
    assert e.cosine == pytest.approx(1 / math.sqrt(1.01), abs=1e-3)
    assert e.p99_abs == pytest.approx(0.1 * 2.5758, rel=0.02)  # |N(0, 0.1)| 99th percentile
    assert e.elements == 400_000


def test_tensor_errors_match_images_by_id_and_refuse_mismatches():
    a, b = np.arange(6.0).reshape(2, 3), np.ones(4)
    ref = outputs([[a, b], [a + 1, b]], ids=(1, 2))
    swapped = outputs([[a + 1, b], [a, b]], ids=(2, 1))
    assert tensor_errors(ref, swapped)[0].max_abs == 0.0
    with pytest.raises(HarnessError, match="different images"):
        tensor_errors(ref, outputs([[a, b], [a, b]], ids=(1, 3)))
    with pytest.raises(HarnessError, match=r"shape \(3, 2\).*vs \(2, 3\)"):
        tensor_errors(ref, outputs([[a.T, b], [a, b]]))


def test_split_per_image_handles_batch_axis_and_its_absence():
    batch = [np.arange(24.0).reshape(2, 3, 4), np.arange(2.0)]
    per = split_per_image(batch, rows=2, real=2)
    assert per[1][0].shape == (3, 4) and per[1][1] == 1.0
    single = split_per_image([np.zeros((1600, 80)), np.zeros((1, 10, 5))], rows=1, real=1)
    assert single[0][0].shape == (1600, 80) and single[0][1].shape == (10, 5)
    with pytest.raises(HarnessError, match="no batch axis of 4"):
        split_per_image([np.zeros((1600, 80))], rows=4, real=4)


# ------------------------------------------------------------------------------------------ gate

@pytest.mark.parametrize("text, figures, fails", [
    ("dmap<-0.01 or agreement<0.95", {"dmap": -0.02, "agreement": 0.99}, True),
    ("dmap<-0.01 or agreement<0.95", {"dmap": 0.0, "agreement": 0.99}, False),
    ("dmap<-0.01 or agreement<0.95", {"dmap": 0.0, "agreement": 0.90}, True),
    ("dmap < -0.01 and (extra>3 or flips >= 1)", {"dmap": -0.05, "extra": 2, "flips": 1}, True),
    ("dmap < -0.01 and (extra>3 or flips >= 1)", {"dmap": -0.05, "extra": 2, "flips": 0}, False),
    ("dmap<-0.01 or extra>3 and flips>=1", {"dmap": 0.0, "extra": 5, "flips": 0}, False),  # and binds tighter
    ("sqnr<30", {"sqnr": math.nan}, True),  # NaN fails the gate
    ("mean_iou<0.5", {"mean_iou": None}, True),  # so does an undefined figure (nothing paired)
    ("dmap<-0.01 and mean_iou<0.5", {"dmap": 0.0, "mean_iou": None}, False),
    ("dmap_lo<=-1e-2", {"dmap_lo": -0.01}, True),
    ("cosine != 1", {"cosine": 1.0}, False),
])
def test_gate_evaluates(text, figures, fails):
    assert parse_gate(text).holds(figures) is fails


@pytest.mark.parametrize("text, message", [
    ("dmap<-0.01 or bogus<1", "unknown figure 'bogus'"),
    ("dmap<", "expected a number"),
    ("dmap -0.01", "expected a comparison"),
    ("(dmap<0", "expected ')'"),
    ("dmap<0 agreement<1", "expected 'and', 'or' or the end"),
    ("__import__('os')", "cannot read"),
    ("or dmap<0", "expected a figure name"),
    ("dmap<0; rm -rf", "cannot read"),
    ("", "empty expression"),
])
def test_gate_refuses_bad_expressions_in_one_line(text, message):
    with pytest.raises(HarnessError, match=re.escape(message)) as info:
        parse_gate(text)
    assert "\n" not in str(info.value)


def test_gate_names_what_failed():
    tree = parse_gate("dmap<-0.01 or agreement<0.95")
    assert failing_comparisons(tree, {"dmap": -0.02, "agreement": 0.99}) == ["dmap=-0.02 < -0.01"]
    assert failing_comparisons(tree, {"dmap": None, "agreement": 0.99}) == ["dmap=undefined < -0.01"]


# ------------------------------------------------------------------------------------------ artefacts

def test_detections_round_trip_and_refusals(tmp_path):
    path = tmp_path / "d.json.gz"
    dets = [det(3, 1, (1.5, 2, 3, 4), 0.5)]
    write_detections(path, {3: "c.jpg", 4: "d.jpg"}, dets)
    saved = read_detections(path)
    assert saved.images == {3: "c.jpg", 4: "d.jpg"} and saved.detections == dets
    assert saved.by_image() == {3: dets, 4: []}
    with pytest.raises(HarnessError, match=f"saved detections {path.parent / 'none.gz'}: file not found"):
        read_detections(path.parent / "none.gz")
    (tmp_path / "plain.gz").write_text("not gzip")
    with pytest.raises(HarnessError, match="plain.gz: not a gzip JSON file"):
        read_detections(tmp_path / "plain.gz")
    with gzip.open(tmp_path / "bad.gz", "wt") as handle:
        json.dump({"format": "harness-detections/1", "images": [{"id": 3, "file_name": "c.jpg"}],
                   "detections": [det(9, 1, (0, 0, 1, 1), 0.5)]}, handle)
    with pytest.raises(HarnessError, match="bad.gz: detection 1 has image_id 9"):
        read_detections(tmp_path / "bad.gz")


def test_outputs_round_trip_without_pickle_and_refusals(tmp_path):
    path = tmp_path / "o.npz"
    arrays = [[np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)],
              [np.ones((2, 3), np.float32), np.array([3, 4], np.int64)]]
    write_outputs(path, SavedOutputs([10, 11], ["a.jpg", "b.jpg"], ["scores", "count"], arrays))
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert "img1_out0" in npz.files
    saved = read_outputs(path)
    assert saved.image_ids == [10, 11] and saved.file_names == ["a.jpg", "b.jpg"]
    assert saved.output_names == ["scores", "count"]
    np.testing.assert_array_equal(saved.arrays[1][0], arrays[1][0])
    assert saved.arrays[0][1].dtype == np.int64
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(HarnessError, match="other.npz: expected an archive with format"):
        read_outputs(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(HarnessError, match="junk.npz: not an npz archive"):
        read_outputs(tmp_path / "junk.npz")
    with np.load(path) as npz:
        partial = {k: npz[k] for k in npz.files if k != "img1_out1"}
    np.savez(tmp_path / "partial.npz", **partial)
    with pytest.raises(HarnessError, match=r"partial.npz: arrays do not match 2 image\(s\) x 2 output\(s\)"):
        read_outputs(tmp_path / "partial.npz")


# ------------------------------------------------------------------------------------------ pairing

def _large_boxes_only() -> dict:
    """Four images whose boxes are all large (area >= 96²): small and medium AP are undefined."""
    images = [{"id": i, "file_name": f"l{i}.jpg", "width": 640, "height": 480} for i in range(1, 5)]
    anns = [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [10.0 * i, 20.0, 200.0, 150.0],
             "area": 30000.0, "iscrowd": 0} for i in range(1, 5)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def test_failed_rows_are_never_references_and_are_listed(tmp_path):
    from dataclasses import dataclass

    from harness.fidelity.pairing import fidelity_report
    from harness.measure.row import ResultRow, failed_row

    ann = _large_boxes_only()
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(ann))
    names = {img["id"]: img["file_name"] for img in ann["images"]}
    dets = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in ann["annotations"]]
    write_detections(tmp_path / "ref.json.gz", names, dets)
    write_detections(tmp_path / "ov.json.gz", names, dets[1:])
    common = {"model": "m.onnx", "profile": "p", "annotations": str(ann_path)}
    rows = [ResultRow("ort", 1, artifacts={"detections": "ref.json.gz"}, **common),
            failed_row("ort", 2, "cannot run batch 2", precision="fp32", **common),
            ResultRow("ov", 2, artifacts={"detections": "ov.json.gz"}, **common)]

    @dataclass
    class Source:
        path: str
        rows: list

        def machine_of(self, row):
            return "here"

    report = fidelity_report([Source(str(tmp_path / "results.json"), rows)], fail_if="dmap<-0.5")
    [compared] = report.rows
    assert (compared.row.row.target, compared.reference.row.bs) == ("ov", 1)  # not the failed bs 2 ort row
    assert compared.bootstrap.delta["map"] < 0 and not compared.gate_failures
    [(skipped, why)] = report.not_compared
    assert skipped.row.bs == 2 and why == "the row is failed: cannot run batch 2"
    assert report.gate_failed  # a row that could not be compared fails the gate


# ------------------------------------------------------------------------------------------ undefined metrics


def test_delta_ap_leaves_out_sizes_without_ground_truth():
    from harness.fidelity.delta_ap import delta_ap
    from harness.measure.evaluate import CocoEvaluator

    ann = _large_boxes_only()
    ref = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in ann["annotations"]]
    cand = [det(a["image_id"], a["category_id"], [a["bbox"][0] + 40, *a["bbox"][1:]], 0.9) for a in ann["annotations"]]
    evaluator = CocoEvaluator(ann)
    assert evaluator.evaluate(ref, [1, 2, 3, 4])["map_small"] is None  # what the evaluator says, not assumed
    result = delta_ap(evaluator, ref, cand, [1, 2, 3, 4])
    assert list(result.per_size) == ["large"]
    assert result.per_size["large"].reference == pytest.approx(1.0) and result.per_size["large"].delta < 0
    assert delta_ap(evaluator, ref, [], [1, 2, 3, 4]).per_size["large"].candidate == 0.0  # no detections at all


def test_bootstrap_without_ground_truth_is_undefined_not_a_number():
    from harness.fidelity.bootstrap import paired_bootstrap
    from harness.fidelity.cocomatch import coco_matches

    ann = {**_large_boxes_only(), "annotations": []}
    dets = [det(1, 1, [10, 10, 50, 50], 0.8)]
    result = paired_bootstrap(coco_matches(ann, dets, [1, 2, 3, 4]), coco_matches(ann, [], [1, 2, 3, 4]),
                              resamples=20)
    assert result.reference["map"] is None and result.delta["map"] is None
    assert result.interval["map"] == (None, None) and result.verdict == "no interval"
    assert parse_gate("dmap<-0.01").holds({"dmap": result.delta["map"]})  # the gate does not let it pass
