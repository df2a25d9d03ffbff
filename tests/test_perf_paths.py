"""The fast paths give the same answers as the plain ones (no timings are asserted here).

- faster-coco-eval and pycocotools agree to 1e-4 (synthetic detections always; real ones with ../shared);
- the pipelined accuracy pass returns exactly the detections of the serial loop;
- (the compiled NMS and candidate scan are checked in tests/test_nms.py).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.data.coco import load_dataset
from harness.measure.evaluate import METRIC_NAMES, CocoEvaluator, available_backends
from harness.measure.pipeline import accuracy_pass
from harness.profiles import load_profile
from harness.targets import get_target
from harness.targets.timing import LoopRule
from tests.tinymodel import tiny_ort_setup, write_tiny_profile


def _need_both_evaluators():
    missing = {"faster-coco-eval", "pycocotools"} - set(available_backends())
    if missing:
        pytest.skip(f"needs both COCO evaluators; not installed: {', '.join(sorted(missing))}")


def _assert_same_metrics(results: list[dict], image_ids: list[int], ann: dict) -> dict:
    fast = CocoEvaluator(ann, "faster-coco-eval").evaluate(results, image_ids)
    ref = CocoEvaluator(ann, "pycocotools").evaluate(results, image_ids)
    for name in METRIC_NAMES:
        assert fast[name] == pytest.approx(ref[name], abs=1e-4), name
    assert fast["per_class_ap"].keys() == ref["per_class_ap"].keys()
    for cls, ap in ref["per_class_ap"].items():
        assert fast["per_class_ap"][cls] == pytest.approx(ap, abs=1e-4), cls
    return ref


# ------------------------------------------------------------------ faster-coco-eval == pycocotools

def _synthetic_coco(seed: int = 3):
    """Ground truth over 3 categories in all COCO area ranges (one crowd box), and detections that
    hit, miss, duplicate and mislabel it with spread-out scores."""
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": f"c{cid}"} for cid in (1, 4, 9)]
    images, anns, results = [], [], []
    for i in range(25):
        image_id = 1000 + i
        width, height = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": width, "height": height})
        for _ in range(int(rng.integers(0, 7))):
            side = float(rng.choice([12.0, 50.0, 140.0])) * rng.uniform(0.7, 1.3)
            w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            x, y = rng.uniform(0, max(1.0, width - w)), rng.uniform(0, max(1.0, height - h))
            cid = int(rng.choice([1, 4, 9]))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cid, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(len(anns) == 5)})
            for _ in range(int(rng.integers(0, 3))):  # jittered hits and duplicates
                jit = rng.normal(0, side * 0.12, 4)
                results.append({"image_id": image_id, "bbox": [x + jit[0], y + jit[1], max(1.0, w + jit[2]),
                                                               max(1.0, h + jit[3])],
                                "category_id": cid if rng.random() > 0.15 else int(rng.choice([1, 4, 9])),
                                "score": round(float(rng.uniform(0.05, 1.0)), 5)})
        for _ in range(int(rng.integers(0, 4))):  # false positives
            w, h = rng.uniform(5, 150, 2)
            results.append({"image_id": image_id, "category_id": int(rng.choice([1, 4, 9])),
                            "bbox": [float(rng.uniform(0, width - 5)), float(rng.uniform(0, height - 5)), w, h],
                            "score": round(float(rng.uniform(0.05, 0.9)), 5)})
    return {"images": images, "annotations": anns, "categories": categories}, results


def test_faster_coco_eval_matches_pycocotools_on_synthetic_detections():
    _need_both_evaluators()
    ann, results = _synthetic_coco()
    ids = [img["id"] for img in ann["images"]]
    metrics = _assert_same_metrics(results, ids, ann)
    assert 0.05 < metrics["map"] < 0.95  # a case with real hits and misses, not a degenerate 0 or 1
    _assert_same_metrics(results, ids[:10], ann)  # a subset of images, as --limit evaluates


@pytest.mark.slow
def test_faster_coco_eval_matches_pycocotools_on_real_detections(coco_tiny, nanodet_m_320):
    _need_both_evaluators()
    ok, why = get_target("ort").availability()
    if not ok:
        pytest.skip(why)
    images_dir, ann_path = coco_tiny
    dataset = load_dataset(images_dir, ann_path)
    profile = load_profile("nanodet-m-320")
    target = get_target("ort")(nanodet_m_320, profile, {})
    target.load(1)
    passed = accuracy_pass(target, dataset.images, 1, profile)
    target.close()
    assert len(passed.detections) > 1000
    metrics = _assert_same_metrics(passed.detections, passed.counted, dataset.ann)
    assert metrics["map"] > 0.1


# ------------------------------------------------------------------ pipelined pass == serial loop

class _StreamingOrt:
    """Wraps an ort target and adds an infer_stream that holds results back and releases them in
    bursts of three, as an async runtime with requests in flight does."""

    def __init__(self, inner):
        self._inner = inner
        self.padded_batch = inner.padded_batch
        self.streamed = 0

    def infer(self, batch, extras=None):
        return self._inner.infer(batch, extras)

    def infer_stream(self, items, depth=None):
        held = []
        for tensor, tag, extras in items:
            held.append((tag, self._inner.infer(tensor, extras)))
            if len(held) == 3:
                time.sleep(0.001)
                for tag_, outputs in held:
                    self.streamed += 1
                    yield tag_, outputs, 0.0
                held = []
        for tag_, outputs in held:
            self.streamed += 1
            yield tag_, outputs, 0.0


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_pipelined_pass_equals_serial_loop_tiny_model(tmp_path, batch):
    images_dir, ann_path, model, profile = tiny_ort_setup(tmp_path, count=11)
    dataset = load_dataset(images_dir, ann_path)
    target = get_target("ort")(model, profile, {})
    target.load(batch)
    serial = accuracy_pass(target, dataset.images, batch, profile, pipelined=False)
    piped = accuracy_pass(target, dataset.images, batch, profile, workers=3, decode_ahead=1)
    streaming = _StreamingOrt(target)
    streamed = accuracy_pass(streaming, dataset.images, batch, profile)
    assert serial.detections, "the tiny model should detect something"
    for other in (piped, streamed):
        assert other.detections == serial.detections
        assert other.counted == serial.counted == [i for i, _ in dataset.images]
        assert other.failed == serial.failed == []
    assert streaming.streamed == -(-len(dataset.images) // batch)
    for name in ("preprocess", "infer", "decode"):
        assert piped.clock.seconds[name] > 0


def test_pipelined_pass_records_bad_images_like_serial(tmp_path):
    images_dir, ann_path, model, profile = tiny_ort_setup(tmp_path, count=7)
    dataset = load_dataset(images_dir, ann_path)
    # broken after the up-front check (which would refuse it): the pass itself must record it
    (images_dir / "img_003.jpg").write_bytes(b"not a jpeg")
    target = get_target("ort")(model, profile, {})
    target.load(2)
    seen = []
    serial = accuracy_pass(target, dataset.images, 2, profile, skip_bad=True, pipelined=False)
    piped = accuracy_pass(target, dataset.images, 2, profile, skip_bad=True, advance=lambda n=1: seen.append(n))
    assert piped.detections == serial.detections and piped.counted == serial.counted
    assert piped.failed == serial.failed and len(piped.failed) == 1 and "img_003" in piped.failed[0]
    assert sum(seen) == len(dataset.images)


def test_pipelined_pass_surfaces_decode_errors(tmp_path):
    images_dir, ann_path, model, profile = tiny_ort_setup(tmp_path, count=5)
    wrong = load_profile(write_tiny_profile(tmp_path / "wrong.toml", classes=3))
    target = get_target("ort")(model, profile, {})
    target.load(1)
    from harness.core.errors import HarnessError

    with pytest.raises(HarnessError):
        accuracy_pass(target, load_dataset(images_dir, ann_path).images, 1, wrong)


def _ov_target(model, profile_name):
    ok, why = get_target("ov").availability()
    if not ok:
        pytest.skip(why)
    target = get_target("ov")(model, load_profile(profile_name), {})
    target.load(1)
    return target


def test_pipelined_pass_equals_serial_loop_openvino_async(coco_tiny, nanodet_m_320):
    """OpenVINO's infer_stream (async requests in flight) against the synchronous serial loop."""
    images_dir, ann_path = coco_tiny
    dataset = load_dataset(images_dir, ann_path)
    target = _ov_target(nanodet_m_320, "nanodet-m-320")
    images = dataset.images[:24]
    serial = accuracy_pass(target, images, 1, target.profile, pipelined=False)
    piped = accuracy_pass(target, images, 1, target.profile)
    target.close()
    assert piped.detections == serial.detections and piped.counted == serial.counted


def test_openvino_benchmark_and_stream_shapes(nanodet_m_320):
    target = _ov_target(nanodet_m_320, "nanodet-m-320")
    x = np.zeros(target.profile.input.shape(1), np.float32)
    stats = target.benchmark(x, LoopRule.fixed(0.2, 4))
    assert stats.images == len(stats.latencies_ms) and stats.images % stats.concurrency == 0
    assert all(lat > 0 for lat in stats.latencies_ms)
    expected = target.infer(x)
    out = list(target.infer_stream(((x, k, None) for k in range(5)), depth=2))
    assert [tag for tag, _, _ in out] == list(range(5))
    for _, outputs, seconds in out:
        assert seconds > 0 and len(outputs) == len(expected)
        for a, b in zip(outputs, expected):
            np.testing.assert_array_equal(a, b)
    target.close()


# ------------------------------------------------------------------ category chunks == one COCOeval

def _one_cocoeval(backend: str, ann: dict, results: list[dict], image_ids) -> tuple[list[float], np.ndarray]:
    """COCOeval as its own documentation runs it: every category at once, then summarize()."""
    import contextlib
    import copy
    import io

    from harness.measure.evaluate import _backend

    _, coco_cls, eval_cls = _backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = copy.deepcopy(ann)
        gt.createIndex()
        ev = eval_cls(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats[:6]], np.asarray(ev.eval["precision"])


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
@pytest.mark.parametrize("chunk", [1, 2, 8])
def test_category_chunks_give_cocoevals_numbers(monkeypatch, backend, chunk):
    """The chunked evaluation (its memory stays flat with dataset size) gives what one COCOeval over
    every category gives, for the six figures and per class; a compact result array gives the same."""
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    import harness.measure.evaluate as evaluate
    from harness.decode.types import COCO_ARRAY_COLUMNS

    monkeypatch.setattr(evaluate, "CATEGORY_CHUNK", chunk)
    ann, results = _synthetic_coco()
    ann["categories"].append({"id": 12, "name": "c12"})  # a category with no detection and no box
    ids = [img["id"] for img in ann["images"]]
    stats, precision = _one_cocoeval(backend, ann, results, ids)
    got = CocoEvaluator(ann, backend).evaluate(results, ids)
    expected = {k: (None if v < 0 else v) for k, v in zip(METRIC_NAMES, stats)}
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12) if expected[name] is not None \
            else got[name] is None, name
    for k, cat in enumerate(sorted(c["id"] for c in ann["categories"])):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        assert got["per_class_ap"].get(f"c{cat}") == (pytest.approx(float(p.mean()), abs=1e-12) if p.size else None)
    rows = np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in results])
    assert len(COCO_ARRAY_COLUMNS) == rows.shape[1]
    assert CocoEvaluator(ann, backend).evaluate(rows, ids) == got


def test_compact_result_array_holds_the_result_dicts():
    from harness.decode.types import Detections, coco_dicts, to_coco_array, to_coco_results

    rng = np.random.default_rng(1)
    boxes = np.sort(rng.uniform(0, 500, (40, 4)).astype(np.float32).reshape(40, 2, 2), axis=1).reshape(40, 4)
    boxes = boxes[:, [0, 2, 1, 3]]  # x1, y1, x2, y2 with x1 <= x2, y1 <= y2
    dets = Detections(boxes=boxes, scores=rng.uniform(0, 1, 40).astype(np.float32),
                      labels=rng.integers(0, 80, 40))
    category_ids = list(range(1, 81))
    assert coco_dicts(to_coco_array(dets, 123, category_ids)) == to_coco_results(dets, 123, category_ids)
