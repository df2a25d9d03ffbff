"""A target defined in this file and registered at test time gets rows, report, fidelity and sensitivity
scoring from every command, with no other file changed: everything the commands need of a target is
declared on its class (harness.targets.base.Target: Options, time_covers, figures, stage_split,
reference_rank, runs_qdq_onnx, packages), and no report file names a target.

The toy runs the model with a plain ONNX Runtime session, so its detections must equal the `ort` target's
(an independent path to the same numbers: no harness session code, no threads, no IO binding).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.data.annotations import load_annotations
from harness.data.coco import load_dataset
from harness.model.onnx_model import inspect_onnx
from harness.profiles import load_profile
from harness.targets import TARGETS, target_names
from harness.targets.base import StageSplit, Target
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

SIZE, STRIDES = 64, (8, 16, 32)


@dataclass(frozen=True)
class ToyOptions:
    threads: int | None = None


class ToyTarget(Target):
    name = "toy"
    description = "a plain ONNX Runtime session, defined in a test"
    time_covers = "session.run of one batch (test-only target)"
    Options = ToyOptions
    figures = {"toy_calls": "session.run calls the timing loop made",
               "toy_run_ms_p50": "median session.run time of the timing loop, ms"}
    stage_split = StageSplit(title="Toy time per stage", caption="Toy time per call", stages=(("toy_run_ms_p50", "run"),),
                             columns=(("toy_run_ms_p50", "run ms p50"),), note="toy: session.run only",
                             figures=("toy_run_ms_p50",))
    runs_qdq_onnx = True
    packages = ("onnxruntime",)

    def load(self, batch: int) -> None:
        options = ort.SessionOptions()
        if self.options.threads:
            options.intra_op_num_threads = self.options.threads
        self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        first = self._session.get_inputs()[0]
        self.check_input(tuple(first.shape), self.profile.input.numpy_dtype, batch)
        self._input = first.name
        self.batch = batch
        self.precision = self.resolve_precision(inspect_onnx(self.model_path).precision, None)

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        return self._session.run(None, {self._input: batch, **(extras or {})})

    def benchmark(self, batch, rule, extras=None, capture: int = 0):
        stats = super().benchmark(batch, rule, extras, capture)
        stats.extra["toy_calls"] = len(stats.latencies_ms)
        stats.extra["toy_run_ms_p50"] = float(np.median(stats.latencies_ms))
        return stats

    def close(self) -> None:
        self._session = None

    def describe(self) -> dict:
        return {"runtime": f"onnxruntime {ort.__version__} (toy)"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    TARGETS.register("toy", ToyTarget)
    root = tmp_path_factory.mktemp("toy")
    model = write_tiny_model(root / "tiny.onnx", size=SIZE, strides=STRIDES, weight_std=0.5, seed=3)
    profile = write_tiny_profile(root / "tiny.toml", size=SIZE, strides=list(STRIDES))
    images, ann = write_tiny_dataset(root / "ds", count=8)
    try:
        yield {"root": root, "model": model, "profile": profile, "images": images, "ann": ann}
    finally:
        TARGETS.unregister("toy")


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_run_report_and_fidelity_of_a_target_defined_here(toy):
    out = toy["root"] / "run"
    cli("run", "-t", "ort,toy", "-m", toy["model"], "--profile", toy["profile"], "--data", toy["images"], "--ann",
        toy["ann"], "--bs", "1", "--threads", "1", "--seconds", "0.1", "--max-seconds", "0.1", "--warmup", "0.05",
        "--save-detections", "--out", out)
    doc = json.loads((out / "results.json").read_text())
    rows = {r["target"]: r for r in doc["rows"]}
    toy_row, ort_row = rows["toy"], rows["ort"]
    assert toy_row["status"] == "ok" and toy_row["map"] is not None and toy_row["map"] > 0
    assert toy_row["map"] == ort_row["map"] and toy_row["detections"] == ort_row["detections"]
    assert toy_row["toy_calls"] == toy_row["bench"]["iterations"]  # its declared figure, in the row
    assert toy_row["time_covers"] == ToyTarget.time_covers and toy_row["identity"]["options"] == {"threads": 1}
    assert toy_row["identity"]["model_sha256"] == ort_row["identity"]["model_sha256"]
    assert "onnxruntime" in doc["env"]["packages"]
    assert sorted(toy_row) == sorted(set(ort_row) | {"toy_calls", "toy_run_ms_p50"})  # the same fields, plus its figures
    run_page = (out / "report.md").read_text()
    split = run_page.split("Toy time per call:", 1)[1]  # its declared stage split, in the run's report
    assert f"| {toy_row['toy_run_ms_p50']:.3f} |" in split.split("toy: session.run only")[0] and "| ort" not in split

    cli("report", out, "--out", toy["root"] / "report.md")
    page = (toy["root"] / "report.md").read_text()
    assert "toy" in page and "## Toy time per stage" in page
    cli("report", out, "--format", "csv", "--out", toy["root"] / "report.csv")
    assert "toy_run_ms_p50" in (toy["root"] / "report.csv").read_text().splitlines()[0]
    exported = toy["root"] / "fidelity.json"
    cli("report", out, "--fidelity", "--format", "json", "--out", exported)
    record = next(r for r in json.loads(exported.read_text()) if r["target"] == "toy")
    assert record["fidelity_dmap"] == 0 and record["fidelity_agreement"] == 1
    cli("report", out, "--fidelity", "--reference", "toy:fp32", "--format", "json", "--out", exported)
    record = next(r for r in json.loads(exported.read_text()) if r["target"] == "ort")
    assert record["fidelity"]["reference"]["target"] == "toy"


def test_sensitivity_scores_on_a_target_defined_here(toy):
    from harness.sensitivity.run import SensitivityRequest, check_request
    from harness.sensitivity.scoring import Scorer
    from harness.sensitivity.search import SearchSettings

    profile = load_profile(toy["profile"])
    check_request(SensitivityRequest(model=toy["model"], profile=profile, calib=toy["images"], data=toy["images"],
                                     ann=toy["ann"], out=toy["root"] / "sens", settings=SearchSettings(target="toy")))
    images = list(load_dataset(toy["images"], toy["ann"]).images)
    ann = load_annotations(toy["ann"])
    scored = {name: Scorer(name, profile, images, ann, 100, 0.05).measure(toy["model"], bench=True)
              for name in ("ort", "toy")}
    assert scored["toy"].map == scored["ort"].map and scored["toy"].map > 0
    assert scored["toy"].fps > 0


class DriftingToy(ToyTarget):
    """Its timing loop computes something else than infer() (the loop check's case)."""

    name = "toy-drift"

    def benchmark(self, batch, rule, extras=None, capture: int = 0):
        stats = super().benchmark(batch, rule, extras, capture)
        stats.captured = [[o + 1 for o in outputs] for outputs in stats.captured]
        return stats


def test_sensitivity_gives_no_img_s_for_a_loop_that_differs_from_infer(toy):
    """A variant's img/s comes from run's timing step, loop check included: a loop whose outputs differ from
    infer() on the same batch gives no img/s, its mAP stays."""
    from harness.sensitivity.scoring import Scorer

    profile = load_profile(toy["profile"])
    images = list(load_dataset(toy["images"], toy["ann"]).images)
    TARGETS.register("toy-drift", DriftingToy)
    try:
        scored = {name: Scorer(name, profile, images, load_annotations(toy["ann"]), 100, 0.05).measure(toy["model"],
                                                                                                     bench=True)
                  for name in ("toy", "toy-drift")}
    finally:
        TARGETS.unregister("toy-drift")
    assert scored["toy"].fps > 0 and scored["toy-drift"].fps is None
    assert scored["toy-drift"].map == scored["toy"].map > 0


REPORT_FILES = sorted((Path(__file__).resolve().parent.parent / "harness" / "report").glob("*.py"))


def target_names_in(source: str, names) -> list[str]:
    """Registered target names written in a module's string constants (docstrings and messages included)."""
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w-])")
    return [m.group(0) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) for m in pattern.finditer(node.value)]


def test_no_report_file_names_a_target():
    """What a report shows per target (figures, stage split, reference) comes from the target's declarations."""
    assert REPORT_FILES and target_names_in('x = "the trt split (ort-cuda too)"', ["trt", "ort", "ort-cuda"]) == \
        ["trt", "ort-cuda"]  # the check can fail, and ort-cuda is not read as ort
    found = {path.name: target_names_in(path.read_text(encoding="utf-8"), target_names()) for path in REPORT_FILES}
    assert {name: hits for name, hits in found.items() if hits} == {}
