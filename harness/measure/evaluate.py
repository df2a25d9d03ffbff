"""COCO bbox evaluation: result dicts in, AP metrics out.

faster-coco-eval (C++, same algorithm) is used when installed, else pycocotools; both are the
reference implementations, so no metric code is written here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np

from harness.core.bounds import release_freed_memory
from harness.core.errors import HarnessError
from harness.measure.row import METRIC_NAMES


def available_backends() -> list[str]:
    names = []
    try:
        import faster_coco_eval  # noqa: F401

        names.append("faster-coco-eval")
    except ImportError:
        pass
    try:
        import pycocotools  # noqa: F401

        names.append("pycocotools")
    except ImportError:
        pass
    return names


def _backend(name: str):
    if name == "auto":
        backends = available_backends()
        if not backends:
            raise HarnessError("no COCO evaluator installed: pip install pycocotools (or faster-coco-eval)")
        name = backends[0]
    if name == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        logging.getLogger("faster_coco_eval").setLevel(logging.ERROR)
        return name, COCO, COCOeval_faster
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return name, COCO, COCOeval
    raise HarnessError(f"unknown evaluator {name!r}: use auto, faster-coco-eval or pycocotools")


def _by_category(results) -> dict:
    """category id -> its results (dicts, or rows of a compact array)."""
    if isinstance(results, np.ndarray):
        cats = results[:, 6].astype(np.int64)
        return {int(c): results[cats == c] for c in np.unique(cats)}
    out: dict[int, list[dict]] = {}
    for r in results:
        out.setdefault(int(r["category_id"]), []).append(r)
    return out


def _dicts(part) -> list[dict]:
    from harness.decode.types import coco_dicts

    return coco_dicts(part) if isinstance(part, np.ndarray) else part


CATEGORY_CHUNK = 8  # at most this many categories per COCOeval pass (CocoEvaluator.evaluate)


def category_chunks(cat_ids, detections: dict[int, int], size: int = CATEGORY_CHUNK) -> list[list[int]]:
    """The categories in groups for one COCOeval pass each: at most `size` categories with detections
    and at most as many detections as the category with the most (or a `size`-th of all, if more),
    so that the largest group, which sets the evaluation's peak memory, is that one category (COCO's
    person class holds about a third of the detections). Each group holds at least one category with
    detections (COCOeval cannot load an empty result list); categories without any join the group with
    the fewest detections."""
    cat_ids = sorted(int(c) for c in cat_ids)
    found = [c for c in cat_ids if detections.get(c, 0) > 0]
    if not found:
        return []
    budget = max(max(detections[c] for c in found), sum(detections[c] for c in found) / size)
    chunks, held = [[]], [0]
    for c in found:
        if chunks[-1] and (len(chunks[-1]) >= size or held[-1] + detections[c] > budget):
            chunks.append([])
            held.append(0)
        chunks[-1].append(c)
        held[-1] += detections[c]
    smallest = held.index(min(held))
    chunks[smallest] = sorted(chunks[smallest] + [c for c in cat_ids if detections.get(c, 0) == 0])
    return chunks


def summary_stats(precision: np.ndarray, iou_thrs, area_labels, max_dets) -> list[float]:
    """COCOeval.summarize's first six figures (AP, AP50, AP75, AP small/medium/large) from a
    precision array [T, R, K, A, M]: the mean of the entries above -1, -1 where there is none."""
    def mean(t_index, area: str) -> float:
        p = precision[:, :, :, list(area_labels).index(area), list(max_dets).index(max(max_dets))]
        if t_index is not None:
            p = p[t_index]
        p = p[p > -1]
        return float(np.mean(p)) if p.size else -1.0

    at = {round(float(t), 2): i for i, t in enumerate(iou_thrs)}
    return [mean(None, "all"), mean(at[0.5], "all"), mean(at[0.75], "all"), mean(None, "small"), mean(None, "medium"),
            mean(None, "large")]


class CocoEvaluator:
    """Holds the ground truth once; evaluates any number of result lists against it."""

    def __init__(self, ann_data: dict, backend: str = "auto"):
        self.backend, self._coco_cls, self._eval_cls = _backend(backend)
        gt = self._coco_cls()
        # bbox evaluation reads no polygon: copies of the annotations without them (load_annotations
        # already drops them; other callers may not), as they scaled every run's memory with its images
        gt.dataset = {**{k: copy.deepcopy(v) for k, v in ann_data.items() if k != "annotations"},
                      "annotations": [{k: copy.deepcopy(v) for k, v in a.items() if k != "segmentation"}
                                      for a in ann_data["annotations"]]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        self.gt = gt
        self.category_names = {c["id"]: c["name"] for c in ann_data.get("categories", [])}

    def evaluate(self, results: list[dict] | np.ndarray, image_ids: list[int]) -> dict:
        """AP metrics (0..1) over image_ids, plus per-class AP keyed by category name. A metric with
        no ground truth to score (pycocotools' -1, e.g. map_small on data without small objects) is None.

        COCOeval keeps a record per image x category x area range until it accumulates, which grew
        a 1280-image run by ~0.3 MiB per image. Categories are independent in COCO AP (each has its own
        precision curve; the summary means are over categories), so COCOeval runs on CATEGORY_CHUNK
        categories at a time and the precision arrays are joined along the category axis: the same
        numbers, at a fraction of the peak memory. The six summary figures are then COCOeval.summarize's
        means over the joined array (summary_stats). `results` may be a compact array
        (harness.decode.types.to_coco_array): its dicts are made one chunk at a time."""
        if len(results) == 0:
            return self._no_detections(image_ids)
        by_category = _by_category(results)
        precision, cat_ids, params = [], [], None
        for chunk in category_chunks(self.gt.getCatIds(), {c: len(part) for c, part in by_category.items()}):
            with contextlib.redirect_stdout(io.StringIO()):
                # loadRes adds keys to each dict but leaves "bbox" alone: shallow copies keep the
                # caller's dicts clean at a tenth of a deepcopy's cost.
                dt = self.gt.loadRes([dict(r) for c in chunk for r in _dicts(by_category.get(c, ()))])
                ev = self._eval_cls(self.gt, dt, "bbox")
                ev.params.imgIds = sorted(int(i) for i in image_ids)
                ev.params.catIds = list(chunk)
                ev.evaluate()
                ev.accumulate()
            precision.append(np.asarray(ev.eval["precision"]))  # [T, R, K, A, M]
            cat_ids += list(chunk)
            params = ev.params
            del dt, ev
            release_freed_memory()  # each chunk's records freed: the next chunk reuses the pages, not new ones
        joined = np.concatenate(precision, axis=2)
        stats = summary_stats(joined, params.iouThrs, params.areaRngLbl, params.maxDets)
        metrics = {k: (None if v < 0 else v) for k, v in zip(METRIC_NAMES, stats)}
        per_class = {}
        for k, cat_id in enumerate(cat_ids):
            p = joined[:, :, k, 0, -1]
            p = p[p > -1]
            if p.size:
                per_class[self.category_names.get(cat_id, str(cat_id))] = float(p.mean())
        metrics["per_class_ap"] = per_class
        return metrics

    def _no_detections(self, image_ids: list[int]) -> dict:
        """No detections at all: AP is 0 where there is ground truth to miss, undefined (None) where
        there is none, as COCOeval reports it (it cannot be run on an empty result list)."""
        wanted = {int(i) for i in image_ids}
        areas = [float(a.get("area", 0.0)) for a in self.gt.dataset["annotations"]
                 if int(a["image_id"]) in wanted and not a.get("iscrowd", 0)]
        ranges = {"map_small": (0, 32 ** 2), "map_medium": (32 ** 2, 96 ** 2), "map_large": (96 ** 2, 1e10)}
        metrics: dict = {k: (0.0 if areas else None) for k in ("map", "map50", "map75")}
        for key, (low, high) in ranges.items():
            metrics[key] = 0.0 if any(low <= a <= high for a in areas) else None
        metrics["per_class_ap"] = {}
        return metrics
