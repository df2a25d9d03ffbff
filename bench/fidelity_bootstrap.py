"""How long the paired ΔmAP bootstrap interval takes, next to one COCOeval run (issue #16).

Per round, back to back on the same detections:
  A. one COCO evaluation by the harness's evaluator (harness.measure.evaluate: faster-coco-eval when installed)
  B. one pycocotools COCOeval run (evaluate + accumulate + summarize)
  C. the interval as `harness report --fidelity` computes it: pycocotools per-image matches of both rows
     (harness.fidelity.cocomatch) + the weighted re-accumulation over B resamples (harness.fidelity.bootstrap)
  D. the naive way for comparison: COCOeval (A's evaluator) on literally resampled datasets, both rows,
     for a few resamples, extrapolated to B resamples (printed as an extrapolation)
Rounds interleave the contenders; medians and per-round ratios are printed. Speed on a shared
machine only means something as a ratio measured together.

Usage: python bench/fidelity_bootstrap.py --ref REF.detections.json.gz --cand CAND.detections.json.gz \
           --ann instances.json [--resamples 1000] [--rounds 3] [--naive 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.data.annotations import load_annotations
from harness.fidelity.bootstrap import AREAS, paired_bootstrap, resample_weights  # noqa: E402
from harness.fidelity.cocomatch import coco_matches, ground_truth, run_cocoeval  # noqa: E402
from harness.fidelity.weighted import summary_stats  # noqa: E402
from harness.measure.artifacts import read_detections  # noqa: E402
from harness.measure.evaluate import CocoEvaluator  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def pycocotools_once(ann: dict, dets: list[dict], ids) -> None:
    ev = run_cocoeval(ground_truth(ann), dets, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()


def resampled(ann: dict, dets: list[dict], weights: np.ndarray) -> tuple[dict, list[dict], list[int]]:
    """The dataset with image n repeated weights[n] times (new ids), as a naive bootstrap would build it."""
    ids = sorted(img["id"] for img in ann["images"])
    info = {img["id"]: img for img in ann["images"]}
    anns_by, dets_by = {}, {}
    for a in ann["annotations"]:
        anns_by.setdefault(a["image_id"], []).append(a)
    for d in dets:
        dets_by.setdefault(d["image_id"], []).append(d)
    images, anns, out, top = [], [], [], int(weights.max()) + 1
    for n, image_id in enumerate(ids):
        for c in range(int(weights[n])):
            new = n * top + c + 1
            images.append({**info[image_id], "id": new})
            for a in anns_by.get(image_id, []):
                anns.append({**a, "id": len(anns) + 1, "image_id": new})
            out += [{**d, "image_id": new} for d in dets_by.get(image_id, [])]
    return {"images": images, "annotations": anns, "categories": ann["categories"]}, out, [i["id"] for i in images]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, type=Path)
    ap.add_argument("--cand", required=True, type=Path)
    ap.add_argument("--ann", required=True, type=Path)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--naive", type=int, default=10, help="resamples timed for the naive extrapolation (D)")
    args = ap.parse_args()

    full_ann = load_annotations(args.ann)
    ref, cand = read_detections(args.ref), read_detections(args.cand)
    ids = sorted(ref.images)
    ann = {**full_ann, "images": [im for im in full_ann["images"] if im["id"] in ref.images]}
    evaluator = CocoEvaluator(ann)
    warm = time.perf_counter()
    summary_stats(coco_matches(ann, ref.detections[:50], ids, AREAS), np.ones((1, len(ids)), np.int64))
    print(f"first weighted call in this process (numba compile or cache load, + one small extraction): "
          f"{time.perf_counter() - warm:.2f} s")
    print(f"{len(ids)} images, {len(ref.detections)} / {len(cand.detections)} detections, B = {args.resamples}, "
          f"evaluator A = {evaluator.backend}")

    rows = []
    for r in range(args.rounds):
        a, _ = timed(lambda: evaluator.evaluate(cand.detections, ids))
        b, _ = timed(lambda: pycocotools_once(ann, cand.detections, ids))

        def interval():
            gt = ground_truth(ann)  # what the report builds once per annotation file
            return paired_bootstrap(coco_matches(gt, ref.detections, ids, AREAS),
                                    coco_matches(gt, cand.detections, ids, AREAS), args.resamples)

        c, result = timed(interval)
        weights = resample_weights(len(ids), args.naive, seed=r)
        d0 = time.perf_counter()
        for w in weights:
            for dets in (ref.detections, cand.detections):
                dup_ann, dup_dets, dup_ids = resampled(ann, dets, w)
                CocoEvaluator(dup_ann).evaluate(dup_dets, dup_ids)
        d = (time.perf_counter() - d0) / args.naive * args.resamples
        rows.append((a, b, c, d))
        lo, hi = result.interval["map"]
        print(f"round {r + 1}: A {a:.3f} s  B {b:.3f} s  C {c:.2f} s  D~ {d:.0f} s (extrapolated)   "
              f"C/A {c / a:.1f}x  C/B {c / b:.1f}x  D/C {d / c:.0f}x   "
              f"ΔmAP {result.delta['map']:+.4f} [{lo:+.4f}, {hi:+.4f}] {result.verdict}")
    med = [statistics.median(col) for col in zip(*rows)]
    ratios = [statistics.median(row[2] / row[i] for row in rows) for i in (0, 1)]
    naive = statistics.median(row[3] / row[2] for row in rows)
    print(f"median: A {med[0]:.3f} s, B {med[1]:.3f} s, C (interval) {med[2]:.2f} s, D (naive, extrapolated) "
          f"{med[3]:.0f} s; per-round C/A {ratios[0]:.1f}x, C/B {ratios[1]:.1f}x, D/C {naive:.0f}x")


if __name__ == "__main__":
    main()
