"""The weighted re-accumulation behind the ΔmAP bootstrap is exact, and the bootstrap behaves.

Exactness is checked against the real evaluators: with all weights 1 it must reproduce COCOeval's
stats[0:6] (pycocotools and faster-coco-eval), and with integer weights it must reproduce COCOeval
run on a dataset where those images are literally duplicated (new image ids, copied annotations and
detections). Detections are made from the ground truth with jitter, class flips, misses, false
positives and coarse scores (many ties, which is where a careless re-weighting goes wrong); the
ground truth is a generated set with crowd boxes and all three sizes, and ../shared coco-tiny.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io

import numpy as np
import pytest

from harness.data.annotations import load_annotations
from harness.fidelity.bootstrap import paired_bootstrap, resample_weights
from harness.fidelity.cocomatch import coco_matches, ground_truth, run_cocoeval
from harness.fidelity.weighted import summary_stats
from harness.measure.evaluate import CocoEvaluator
from tests.conftest import need_shared


def generated_annotations(images: int = 30, seed: int = 3) -> dict:
    """Images with 0-6 boxes of three categories, sizes from small to large, a few crowd boxes."""
    rng = np.random.default_rng(seed)
    imgs, anns = [], []
    for i in range(images):
        imgs.append({"id": 1000 + 7 * i, "file_name": f"g{i}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(0, 7))):
            side = float(rng.choice([12, 24, 48, 90, 200]))
            w, h = side * float(rng.uniform(0.6, 1.4)), side * float(rng.uniform(0.6, 1.4))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            anns.append({"id": len(anns) + 1, "image_id": 1000 + 7 * i, "category_id": int(rng.choice([1, 2, 5])),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.05)})
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5)]
    return {"images": imgs, "annotations": anns, "categories": cats}


def synthetic_detections(ann: dict, seed: int, quality: float = 0.8, decimals: int = 1) -> list[dict]:
    """Detections from the ground truth: jittered hits, wrong classes, misses, false positives;
    scores rounded to `decimals` so that many of them tie."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in ann["categories"]]
    dets = []
    for a in ann["annotations"]:
        if rng.random() > quality:
            continue
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() < 0.9 else int(rng.choice(cats))
        dets.append({"image_id": a["image_id"], "category_id": cat,
                     "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                     "score": round(float(rng.uniform(0.2, 1.0) * quality), decimals)})
    for img in ann["images"]:
        for _ in range(int(rng.integers(0, 4))):
            w, h = float(rng.uniform(8, 150)), float(rng.uniform(8, 150))
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cats)),
                         "bbox": [float(rng.uniform(0, 400)), float(rng.uniform(0, 300)), w, h],
                         "score": round(float(rng.uniform(0.0, 0.6)), decimals)})
    return dets


def pycocotools_stats(ann: dict, dets: list[dict], ids) -> np.ndarray:
    ev = run_cocoeval(ground_truth(ann), dets, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:6])


def faster_stats(ann: dict, dets: list[dict], ids) -> np.ndarray:
    fce = pytest.importorskip("faster_coco_eval", reason="faster-coco-eval not installed (pip install faster-coco-eval)")
    gt = fce.COCO()
    gt.dataset = copy.deepcopy(ann)
    gt.createIndex()
    ev = fce.COCOeval_faster(gt, gt.loadRes([dict(d) for d in dets]), "bbox", print_function=lambda *a: None)
    ev.params.imgIds = sorted(ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:6])


def duplicated(ann: dict, dets: list[dict], weights: np.ndarray) -> tuple[dict, list[dict]]:
    """The dataset where image n (in id order) appears weights[n] times: new ids, copies adjacent."""
    ids = sorted(img["id"] for img in ann["images"])
    top = int(weights.max()) + 1
    info = {img["id"]: img for img in ann["images"]}
    images, anns, out = [], [], []
    for n, image_id in enumerate(ids):
        for copy_no in range(int(weights[n])):
            new_id = n * top + copy_no + 1
            images.append({**info[image_id], "id": new_id})
            for a in ann["annotations"]:
                if a["image_id"] == image_id:
                    anns.append({**a, "id": len(anns) + 1, "image_id": new_id})
            out += [{**d, "image_id": new_id} for d in dets if d["image_id"] == image_id]
    return {"images": images, "annotations": anns, "categories": ann["categories"]}, out


@pytest.fixture(scope="module")
def coco_tiny_ann() -> dict:
    return load_annotations(need_shared("data", "coco-tiny", "annotations", "instances_val2017.json"))


@pytest.fixture(params=["generated", "coco-tiny"])
def ann(request) -> dict:
    return generated_annotations() if request.param == "generated" else request.getfixturevalue("coco_tiny_ann")


def test_all_weights_one_reproduce_cocoeval_stats(ann):
    dets = synthetic_detections(ann, seed=1)
    ids = [img["id"] for img in ann["images"]]
    matches = coco_matches(ann, dets, ids)
    ours = summary_stats(matches, np.ones((1, len(ids)), np.int64))[0]
    reference = pycocotools_stats(ann, dets, ids)
    assert reference[0] > 0.05  # a real, non-trivial evaluation
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, faster_stats(ann, dets, ids), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_integer_weights_equal_cocoeval_on_the_duplicated_dataset(ann, seed):
    dets = synthetic_detections(ann, seed=10 + seed)
    ids = sorted(img["id"] for img in ann["images"])
    matches = coco_matches(ann, dets, ids)
    weights = np.random.default_rng(seed).integers(0, 4, len(ids))
    dup_ann, dup_dets = duplicated(ann, dets, weights)
    dup_ids = [img["id"] for img in dup_ann["images"]]
    ours = summary_stats(matches, weights[None, :])[0]
    reference = pycocotools_stats(dup_ann, dup_dets, dup_ids)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, faster_stats(dup_ann, dup_dets, dup_ids), rtol=0, atol=1e-12)
    # The ties matter: repeating detection by detection instead of by (image, score) block differs,
    # so this test would catch a re-weighting that ignores how COCOeval orders tied copies.
    naive = dataclasses.replace(matches, block_start=np.arange(len(matches.det_image) + 1),
                                group_block_start=matches.det_start.copy())
    assert np.max(np.abs(summary_stats(naive, weights[None, :])[0] - reference)) > 1e-6


def test_matches_of_the_all_area_range_alone_give_the_same_ap():
    ann = generated_annotations()
    dets = synthetic_detections(ann, seed=6)
    ids = sorted(img["id"] for img in ann["images"])
    weights = np.random.default_rng(2).integers(0, 3, (5, len(ids)))
    full = summary_stats(coco_matches(ann, dets, ids), weights)
    only_all = summary_stats(coco_matches(ann, dets, ids, areas=("all",)), weights)
    np.testing.assert_array_equal(only_all[:, :3], full[:, :3])
    assert np.all(np.isnan(only_all[:, 3:])) and np.all(full[:, 3:] >= 0)


def test_weights_change_the_result_and_zero_weights_drop_images():
    ann = generated_annotations()
    dets = synthetic_detections(ann, seed=4)
    ids = sorted(img["id"] for img in ann["images"])
    matches = coco_matches(ann, dets, ids)
    half = np.array([1] * 15 + [0] * 15)
    kept = {"images": [im for im in ann["images"] if im["id"] in ids[:15]], "annotations": ann["annotations"],
            "categories": ann["categories"]}
    kept_ids = ids[:15]
    np.testing.assert_allclose(summary_stats(matches, half[None])[0],
                               pycocotools_stats(kept, [d for d in dets if d["image_id"] in kept_ids], kept_ids),
                               rtol=0, atol=1e-12)
    assert abs(summary_stats(matches, half[None])[0, 0] - summary_stats(matches, np.ones((1, 30), int))[0, 0]) > 1e-4


def test_resample_weights_are_seeded_multiplicities():
    w = resample_weights(80, 1000, seed=5)
    assert w.shape == (1000, 80) and np.all(w.sum(axis=1) == 80)
    np.testing.assert_array_equal(w, resample_weights(80, 1000, seed=5))
    assert not np.array_equal(w, resample_weights(80, 1000, seed=6))
    # each image is drawn with probability 1/80 per draw: mean multiplicity 1
    assert abs(w.mean() - 1.0) < 1e-12 and 0.9 < w.var() < 1.1


def test_paired_bootstrap_identical_rows_cannot_be_told_apart():
    ann = generated_annotations()
    dets = synthetic_detections(ann, seed=2)
    ids = [img["id"] for img in ann["images"]]
    m = coco_matches(ann, dets, ids)
    result = paired_bootstrap(m, m, resamples=200, seed=0)
    assert result.delta["map"] == 0.0 and result.interval["map"] == (0.0, 0.0)
    assert result.verdict == "cannot be told apart"


def test_paired_bootstrap_separates_a_much_worse_row_and_matches_the_evaluator():
    ann = generated_annotations(images=60)
    ids = [img["id"] for img in ann["images"]]
    good, bad = synthetic_detections(ann, seed=2, quality=0.95), synthetic_detections(ann, seed=3, quality=0.5)
    result = paired_bootstrap(coco_matches(ann, good, ids), coco_matches(ann, bad, ids), resamples=300, seed=1)
    lo, hi = result.interval["map"]
    assert lo <= result.delta["map"] <= hi < 0, (lo, result.delta["map"], hi)
    assert result.verdict == "differ"
    evaluator = CocoEvaluator(ann)
    expected = evaluator.evaluate(bad, ids)["map"] - evaluator.evaluate(good, ids)["map"]
    assert result.delta["map"] == pytest.approx(expected, abs=1e-12)
    again = paired_bootstrap(coco_matches(ann, good, ids), coco_matches(ann, bad, ids), resamples=300, seed=1)
    assert again.interval == result.interval
