"""A target defined in this file and registered at test time gets rows, report, fidelity and sensitivity
scoring from every command, with no other file changed: everything the commands need of a target is
declared on its class (harness.targets.base.Target: Options, time_covers, figures, reference_rank,
runs_qdq_onnx, packages).

The toy runs the model with a plain ONNX Runtime session, so its detections must equal the `ort` target's
(an independent path to the same numbers: no harness session code, no threads, no IO binding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.data.annotations import load_annotations
from harness.data.coco import load_dataset
from harness.model.onnx_model import inspect_onnx
from harness.profiles import load_profile
from harness.targets import TARGETS
from harness.targets.base import Target
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
    figures = {"toy_calls": "session.run calls the timing loop made"}
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
    assert sorted(toy_row) == sorted(set(ort_row) | {"toy_calls"})  # the same row fields, plus its figure

    cli("report", out, "--out", toy["root"] / "report.md")
    assert "toy" in (toy["root"] / "report.md").read_text()
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
