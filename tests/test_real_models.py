"""Real NanoDet exports from ../shared on real COCO images: both CPU targets, right numbers."""

import json
import re
from importlib import resources

import pytest

from harness.core.errors import HarnessError
from harness.measure.results import ResultsStore
from harness.measure.runner import RunConfig, run
from harness.profiles import load_profile
from harness.report import write_run_report
from tests.conftest import need_shared


def run_rows(tmp_path, target, model, profile, coco_tiny, bs=(1,), **options):
    images, ann = coco_tiny
    store = ResultsStore(tmp_path / f"{target}-{profile}", env={}, on_save=write_run_report)
    config = RunConfig(target=target, model=str(model), profile=load_profile(profile), images_dir=images,
                       ann_path=ann, batch_sizes=list(bs), options=options, bench_seconds=0.2, max_seconds=0.2,
                       warmup_seconds=0.1, min_iterations=2)
    return run(config, store)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nanodet-m-320", "nanodet-m-416"])
def test_ort_and_ov_agree_and_regression_pin_map_band(tmp_path, coco_tiny, name):
    model = need_shared("models", f"{name}.onnx")
    (ort_row,) = run_rows(tmp_path, "ort", model, name, coco_tiny)
    (ov_row,) = run_rows(tmp_path, "ov", model, name, coco_tiny)
    assert ort_row["images"] == ov_row["images"] == 80
    assert abs(ort_row["map"] - ov_row["map"]) <= 0.002
    # Regression pin (no port of NanoDet-m's own post-processing in tests/oracles.py yet): an independently
    # written NanoDet decoder gave about 0.26 (320) on coco-tiny; a wrong prior offset or colour order
    # costs 0.05-0.15, so this band catches those bugs.
    assert 0.24 <= ort_row["map"] <= 0.30
    saved = json.loads((tmp_path / f"ort-{name}" / "results.json").read_text())
    assert saved["rows"][0]["map"] == ort_row["map"]
    report = (tmp_path / f"ort-{name}" / "report.md").read_text()
    assert len(re.findall(r"\| ort \| fp32 \| throughput ×\d+ \| 1 \| 80 \|", report)) == 1


@pytest.mark.slow
def test_wrong_prior_offset_costs_map(tmp_path, coco_tiny):
    """The accuracy band above is meaningful: the same model with offset 0 loses a lot."""
    model = need_shared("models", "nanodet-m-320.onnx")
    builtin = resources.files("harness") / "profiles" / "nanodet-m-320.toml"
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(builtin.read_text().replace("prior_offset = 0.5", "prior_offset = 0.0"))
    (row,) = run_rows(tmp_path, "ort", model, str(wrong), coco_tiny)
    assert row["map"] < 0.22


@pytest.mark.slow
def test_int8_ir_runs_through_ov_with_its_profile(tmp_path, coco_tiny):
    """The int8 IR's row (harness pipeline and evaluator) against NanoDet-Plus's own decode of the same
    model's outputs (tests/oracles.py), scored by plain pycocotools."""
    from tests.test_real_families import harness_and_oracle_map, oracle_nanodet_plus

    model = need_shared("models", "nanodet-plus-m-320-int8-ov", "model.xml")
    (row,) = run_rows(tmp_path, "ov", model, "nanodet-plus-m-320-int8-ov", coco_tiny)
    assert row["precision"] == "int8" and row["images"] == 80
    _, upstream, _ = harness_and_oracle_map("ov", model, load_profile("nanodet-plus-m-320-int8-ov"), oracle_nanodet_plus,
                                            coco_tiny)
    assert upstream > 0.05  # the oracle itself saw detections: an empty comparison proves nothing
    assert row["map"] == pytest.approx(upstream, abs=0.003)


def test_fixed_batch_model_refuses_batch_4_with_advice(tmp_path, coco_tiny):
    model = need_shared("models", "nanodet-m-320.onnx")
    for target in ("ort", "ov"):
        with pytest.raises(HarnessError, match=r"fixed batch of 1 and cannot run batch 4.*\{bs\}"):
            run_rows(tmp_path / target, target, model, "nanodet-m-320", coco_tiny, bs=(4,))


def test_outputs_that_do_not_fit_profile_fail_before_timing(tmp_path, coco_tiny):
    model = need_shared("models", "nanodet-m-320.onnx")
    with pytest.raises(HarnessError, match="do not fit"):
        run_rows(tmp_path, "ort", model, "nanodet-plus-m-320", coco_tiny)
