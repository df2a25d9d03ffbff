"""One model on the target runtime: mAP on the search subset, its COCO matches, and (when asked) img/s.

The harness's own accuracy pass does the work (preprocessing, the target's infer_stream, the
profile's decoder), with the subset's resized images kept in memory after the first pass
(harness.measure.canvases), so a variant costs its model load and inference. The matches
(harness.fidelity.cocomatch, on the "all" area range only) are what the paired bootstrap
re-weights: ΔmAP between two variants with a 95% interval in well under a second each.
Throughput is `harness run`'s own timing step (runner.measure: warm-up, the target's benchmark() loop and
the loop check) on one preprocessed subset image, short; a loop whose outputs differ from infer() gives no
img/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.progress import NullProgress
from harness.fidelity.bootstrap import AREAS, BootstrapResult, paired_bootstrap
from harness.fidelity.cocomatch import CocoMatches, coco_matches, ground_truth
from harness.fidelity.weighted import summary_stats
from harness.images.preprocess import prepare_batch
from harness.measure.canvases import CanvasCache
from harness.measure.pipeline import accuracy_pass
from harness.measure.runner import measure
from harness.model.extra_inputs import extra_inputs
from harness.targets import get_target

BATCH = 1


@dataclass(frozen=True)
class ShortLoop:
    """runner.measure's timing fields for a variant's img/s: a fixed loop of `bench_seconds`, at least 5 batches."""

    target: str
    bench_seconds: float
    warmup_seconds: float
    min_iterations: int = 5
    target_ci: float = 0.01

    @property
    def max_seconds(self) -> float:
        return self.bench_seconds


@dataclass
class Measured:
    map: float | None  # COCO AP over the subset (None: no ground truth to score)
    matches: CocoMatches
    detections: list[dict]
    fps: float | None  # images/s of the target's benchmark loop, when measured
    seconds: float  # wall time of the model load and the accuracy pass (the benchmark left out)


@dataclass(frozen=True)
class PairedDelta:
    """Candidate minus reference on the subset, with the paired bootstrap's interval."""

    delta: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, result: BootstrapResult) -> PairedDelta:
        low, high = result.interval["map"]
        return cls(result.delta["map"], low, high)


def map_of(matches: CocoMatches) -> float | None:
    stat = float(summary_stats(matches, np.ones((1, len(matches.image_ids)), np.int64))[0, 0])
    return stat if stat >= 0 else None


class Scorer:
    """Scores model files on one target over one image subset (the same images, in the same order)."""

    def __init__(self, target: str, profile, images: list[tuple[int, Path]], ann: dict, resamples: int,
                 bench_seconds: float, options=None):
        self.target_cls = get_target(target)
        ok, why = self.target_cls.availability()
        if not ok:
            raise HarnessError(f"target {target} cannot run here: {why}")
        self.target = target
        self.profile = profile
        self.images = list(images)
        self.image_ids = sorted(i for i, _ in self.images)
        self.gt = ground_truth(ann)
        self.resamples = resamples
        self.bench_seconds = bench_seconds
        self.options = options
        self.canvases = CanvasCache().store_for(profile.input, len(self.images))
        sample = prepare_batch(self.images[:BATCH], profile.input, BATCH, skip_bad=False)
        self.sample = sample.tensor
        self.sample_extras = extra_inputs(profile, sample.metas, BATCH) or None

    def measure(self, model_path: Path, bench: bool = False) -> Measured:
        start = time.perf_counter()
        target = self.target_cls(model_path, self.profile, self.options, (BATCH,))
        fps = None
        with target.loaded(BATCH):
            detections = self._pass(target, self.images)
            seconds = time.perf_counter() - start
            if bench:
                fps = self._bench(target)
        return self.score(detections, seconds, fps)

    def bench(self, model_path: Path) -> float | None:
        """img/s of the target's benchmark loop alone (for a pass made elsewhere, harness sensitivity --shards)."""
        target = self.target_cls(model_path, self.profile, self.options, (BATCH,))
        with target.loaded(BATCH):
            return self._bench(target)

    def _bench(self, target) -> float | None:
        """runner.measure (warm-up, the benchmark loop, the loop check); None when the loop's outputs differ."""
        reference = [np.array(o, copy=True) for o in target.infer(self.sample, self.sample_extras)]
        loop = ShortLoop(self.target, self.bench_seconds, min(0.5, self.bench_seconds))
        stats, _, loop_check = measure(target, self.sample, self.sample_extras, reference, loop, NullProgress(), BATCH)
        return stats.fps if loop_check["equal"] is not False else None

    def detect(self, model_path: Path, images: list[tuple[int, Path]]) -> tuple[list[dict], float]:
        """(detections, seconds) of `images` (a shard of the subset, in subset order): the part of
        measure() a cluster worker runs (harness.cluster.shards); score() joins the parts."""
        start = time.perf_counter()
        target = self.target_cls(model_path, self.profile, self.options, (BATCH,))
        with target.loaded(BATCH):
            detections = self._pass(target, images)
        return detections, time.perf_counter() - start

    def score(self, detections: list[dict], seconds: float, fps: float | None = None) -> Measured:
        """A pass over the whole subset (detections in subset order), scored."""
        matches = self.matches_of(detections)
        return Measured(map_of(matches), matches, detections, fps, seconds)

    def _pass(self, target, images) -> list[dict]:
        passed = accuracy_pass(target, images, BATCH, self.profile, canvases=self.canvases)
        if passed.failed:
            raise HarnessError(f"subset image {passed.failed[0].path}: {passed.failed[0].reason}")
        return passed.detections

    def matches_of(self, detections: list[dict]) -> CocoMatches:
        return coco_matches(self.gt, detections, self.image_ids, areas=AREAS)

    def compare(self, reference: CocoMatches, candidate: CocoMatches) -> PairedDelta:
        return PairedDelta.of(paired_bootstrap(reference, candidate, resamples=self.resamples))
