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

from harness.errors import HarnessError
from harness.row import METRIC_NAMES


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


class CocoEvaluator:
    """Holds the ground truth once; evaluates any number of result lists against it."""

    def __init__(self, ann_data: dict, backend: str = "auto"):
        self.backend, self._coco_cls, self._eval_cls = _backend(backend)
        gt = self._coco_cls()
        gt.dataset = copy.deepcopy(ann_data)
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        self.gt = gt
        self.category_names = {c["id"]: c["name"] for c in ann_data.get("categories", [])}

    def evaluate(self, results: list[dict], image_ids: list[int]) -> dict:
        """AP metrics (0..1) over image_ids, plus per-class AP keyed by category name. A metric with
        no ground truth to score (pycocotools' -1, e.g. map_small on data without small objects) is None."""
        if not results:
            return self._no_detections(image_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds keys to each dict but leaves "bbox" alone: shallow copies keep the
            # caller's dicts clean at a tenth of a deepcopy's cost.
            dt = self.gt.loadRes([dict(r) for r in results])
            ev = self._eval_cls(self.gt, dt, "bbox")
            ev.params.imgIds = sorted(int(i) for i in image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(s) for s in ev.stats[:6]]
        metrics = {k: (None if v < 0 else v) for k, v in zip(METRIC_NAMES, stats)}
        precision = np.asarray(ev.eval["precision"])  # [T, R, K, A, M]
        per_class = {}
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
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
