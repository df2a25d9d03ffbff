"""`harness run --save-detections/--save-outputs` then `harness report --fidelity [--fail-if]`, end to end
on real runtimes: tiny ONNX detectors built here (always), nanodet-m-320 on coco-tiny (../shared)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from harness.cli import main
from harness.measure.artifacts import read_detections, read_outputs
from harness.targets import get_target
from tests.test_cli_errors import assert_one_line_error
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

SIZE, STRIDES = 64, (8, 16, 32)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def perturbed(src: Path, dst: Path, scale: float, seed: int = 0) -> Path:
    """The same model with noise of `scale` x each weight's spread added to every Conv weight."""
    model = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4:
            noisy = w + rng.normal(0, scale * float(w.std()), w.shape).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    for name in ("ort", "ov"):
        ok, why = get_target(name).availability()
        if not ok:
            pytest.skip(why)
    root = tmp_path_factory.mktemp("fid")
    model = write_tiny_model(root / "tiny.onnx", size=SIZE, strides=STRIDES, weight_std=0.5, seed=3)
    other = perturbed(model, root / "tiny-noisy.onnx", scale=0.6)
    profile = write_tiny_profile(root / "tiny.toml", size=SIZE, strides=list(STRIDES))
    images, ann = write_tiny_dataset(root / "ds", count=12)
    common = ["--profile", profile, "--data", images, "--ann", ann, "--seconds", "0.1", "--max-seconds", "0.1",
              "--warmup", "0.05"]
    runs = {"ref": root / "ref", "noisy": root / "noisy"}
    result = cli("run", "-t", "ort,ov", "-m", model, "--bs", "1,2", "--save-detections", "--save-outputs", "3",
                 "--out", runs["ref"], *common)
    assert result.exit_code == 0, result.output
    result = cli("run", "-t", "ov", "-m", other, "--bs", "1", "--save-detections", "--save-outputs", "3",
                 "--out", runs["noisy"], *common)
    assert result.exit_code == 0, result.output
    return {"root": root, "model": model, "profile": profile, "images": images, "ann": ann, "common": common, **runs}


def test_run_saves_one_detections_and_outputs_file_per_row(tiny):
    rows = json.loads((tiny["ref"] / "results.json").read_text())["rows"]
    assert [(r["target"], r["bs"]) for r in rows] == [("ort", 1), ("ort", 2), ("ov", 1), ("ov", 2)]
    paths = {(r["target"], r["bs"]): r["artifacts"] for r in rows}
    assert len({p["detections"] for p in paths.values()}) == 4
    for row in rows:
        saved = read_detections(tiny["ref"] / row["artifacts"]["detections"])
        assert len(saved.images) == row["images"] == 12
        assert len(saved.detections) == row["detections"] > 0
        out = read_outputs(tiny["ref"] / row["artifacts"]["outputs"])
        assert len(out.image_ids) == 3 and out.file_names == ["img_000.jpg", "img_001.jpg", "img_002.jpg"]
        assert [a.shape for a in out.arrays[0]] == [(8 * 8 + 4 * 4 + 2 * 2, 34)]  # batch axis removed
        assert out.output_names == ["output"]  # the graph's own name (Target.output_names)
    # bs 2 outputs are the bs 1 outputs (same preprocessing, per-image slices of the batch)
    one = read_outputs(tiny["ref"] / paths[("ort", 1)]["outputs"])
    two = read_outputs(tiny["ref"] / paths[("ort", 2)]["outputs"])
    np.testing.assert_allclose(two.arrays[2][0], one.arrays[2][0], atol=1e-5)


def test_report_fidelity_section_and_exports(tiny):
    out = tiny["root"] / "report.md"
    result = cli("report", tiny["ref"], tiny["noisy"], "--fidelity", "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    section = text.split("## Fidelity against ort fp32", 1)[1]
    table = [line for line in section.splitlines() if line.startswith("| ov ")]
    assert len(table) == 3  # ov bs 1, ov bs 2 and the noisy model's ov bs 1
    same = [line for line in table if "(tiny.onnx) | ort fp32 bs 1 (tiny.onnx)" in line]
    assert len(same) == 1 and "cannot be told apart" in same[0] and "| 1.000 | 0 | 0 | 0 |" in same[0]
    assert "ov fp32 bs 2 (tiny.onnx) | ort fp32 bs 2 (tiny.onnx)" in section  # same batch size preferred
    assert "Tensor error per output (3 saved images)" in section and "Images that disagree most" in section

    exported = tiny["root"] / "report.json"
    assert cli("report", tiny["ref"], tiny["noisy"], "--fidelity", "--format", "json", "--out", exported).exit_code == 0
    records = json.loads(exported.read_text())
    noisy = next(r for r in records if r["model"].endswith("tiny-noisy.onnx"))
    ref = next(r for r in records if r["target"] == "ort" and r["bs"] == 1)
    # ΔmAP from the saved detections equals the difference of the rows' own mAP (rounded to 5 places there)
    assert noisy["fidelity_dmap"] == pytest.approx(noisy["map"] - ref["map"], abs=2e-5)
    assert noisy["fidelity_dmap"] != 0 and noisy["fidelity_agreement"] < 1
    detail = noisy["fidelity"]
    assert detail["bootstrap"]["resamples"] == 1000 and detail["reference"]["bs"] == 1
    lo, hi = detail["bootstrap"]["interval"]["map"]
    assert lo <= detail["bootstrap"]["delta"]["map"] <= hi
    assert detail["tensors"]["outputs"][0]["sqnr_db"] < 40
    assert ref.get("fidelity_verdict") is None  # the reference row is not compared with itself


def test_fail_if_gate_exit_status(tiny):
    args = ["report", tiny["ref"], tiny["noisy"], "--fidelity", "--out", tiny["root"] / "gate.md"]
    failed = cli(*args, "--fail-if", "agreement<0.99 or dmap<-0.5")
    assert failed.exit_code == 3, failed.output
    assert "fidelity gate failed" in failed.stderr and "tiny-noisy.onnx" in failed.stderr
    assert "ov fp32 bs 1 (tiny.onnx)" not in failed.stderr.split("failed", 1)[1]  # the faithful rows pass
    assert re.search(r"Gate `--fail-if .*`: \*\*FAILED\*\*", (tiny["root"] / "gate.md").read_text())
    passed = cli(*args, "--fail-if", "dmap<-0.9 or sqnr<-100")
    assert passed.exit_code == 0, passed.output
    assert_one_line_error(cli(*args, "--fail-if", "dmap<<0"), "--fail-if 'dmap<<0': expected a number")
    assert_one_line_error(cli(*args, "--fail-if", "speed<1"), "unknown figure 'speed'")


def test_rows_without_saved_detections_are_listed_and_fail_a_gate(tiny):
    plain = tiny["root"] / "plain"  # a candidate run without --save-detections
    assert cli("run", "-t", "ov", "-m", tiny["model"], "--out", plain, *tiny["common"]).exit_code == 0
    out = tiny["root"] / "plain.md"
    assert cli("report", tiny["ref"], plain, "--fidelity", "--out", out).exit_code == 0
    assert f"- ov fp32 bs 1 (tiny.onnx) in {plain / 'results.json'}: no saved detections" in out.read_text()
    gated = cli("report", tiny["ref"], plain, "--fidelity", "--out", out, "--fail-if", "dmap<-0.9")
    assert gated.exit_code == 3, gated.output
    assert "not compared (no saved detections" in out.read_text()


def test_refusals_are_one_line(tiny):
    common = tiny["common"]
    bare = tiny["root"] / "bare"  # the reference saved nothing
    assert cli("run", "-t", "ort", "-m", tiny["model"], "--out", bare, *common).exit_code == 0
    assert cli("run", "-t", "ov", "-m", tiny["model"], "--out", bare, "--resume", "--save-detections",
               *common).exit_code == 0
    assert_one_line_error(cli("report", bare, "--fidelity", "--out", tiny["root"] / "r1.md"),
                          "reference row ort fp32 bs 1 (tiny.onnx)", "has no saved detections",
                          "--save-detections")
    fewer = tiny["root"] / "fewer"  # ran 8 of the 12 images
    assert cli("run", "-t", "ov", "-m", tiny["model"], "--out", fewer, "--limit", "8", "--save-detections",
               *common).exit_code == 0
    assert_one_line_error(cli("report", tiny["ref"], fewer, "--fidelity", "--out", tiny["root"] / "r2.md"),
                          "ran different images (8 vs 12")
    assert_one_line_error(cli("report", tiny["ref"], "--fidelity", "--reference", "trt:int8", "--out",
                              tiny["root"] / "r3.md"), "--reference trt:int8: no such row")
    assert_one_line_error(cli("report", tiny["ref"], "--fail-if", "dmap<0", "--out", tiny["root"] / "r4.md"),
                          "add --fidelity")


def test_output_names_of_onnx_and_openvino_ir(tiny, tmp_path):
    """The base default reads the ONNX graph; ov asks its compiled model, which also covers an .xml IR."""
    import openvino as ov

    from harness.profiles import load_profile

    profile = load_profile(str(tiny["profile"]))
    ir = tmp_path / "tiny.xml"
    ov.save_model(ov.Core().read_model(str(tiny["model"])), str(ir))
    for name, model in (("ort", tiny["model"]), ("ov", tiny["model"]), ("ov", ir)):
        with get_target(name)(model, profile).loaded(1) as target:
            assert target.output_names() == ["output"], (name, model)


def test_failed_rows_save_nothing_and_are_not_compared(tmp_path, coco_tiny, nanodet_m_320):
    """nanodet-m-320 has a fixed batch of 1: its bs 2 row fails and becomes a failed row, the sweep
    goes on; the report lists it as not compared and a gate fails on it."""
    images, ann = coco_tiny
    out = tmp_path / "sweep"
    result = cli("run", "-t", "ort", "-m", nanodet_m_320, "-p", "nanodet-m-320", "--data", images, "--ann", ann,
                 "--bs", "1,2", "--limit", "4", "--seconds", "0.1", "--max-seconds", "0.1", "--warmup", "0.05",
                 "--save-detections",
                 "--save-outputs", "2", "--out", out)
    assert result.exit_code == 2, result.output  # a failed row makes the run exit 2 (after saving the rest)
    rows = {r["bs"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows[1]["status"] == "ok"
    assert set(rows[1]["artifacts"]) == {"detections", "outputs", "detections_sha256", "outputs_sha256"}
    assert rows[2]["status"] == "failed" and rows[2]["artifacts"] == {}
    assert sorted(p.name for p in (out / "artifacts").iterdir()) == [
        "ort-fp32-bs1-nanodet-m-320.detections.json.gz", "ort-fp32-bs1-nanodet-m-320.outputs.npz"]
    page = tmp_path / "r.md"
    gated = cli("report", out, "--fidelity", "--out", page, "--fail-if", "dmap<-0.5")
    assert gated.exit_code == 3, gated.output
    assert "ort - bs 2 (nanodet-m-320.onnx)" in gated.stderr
    assert "ort - bs 2 (nanodet-m-320.onnx): not compared (the row is failed: model nanodet-m-320.onnx has a fixed batch" \
        in page.read_text()


@pytest.mark.slow
def test_nanodet_ort_and_ov_cannot_be_told_apart(tmp_path, coco_tiny, nanodet_m_320):
    images, ann = coco_tiny
    out = tmp_path / "n320"
    result = cli("run", "-t", "ort,ov", "-m", nanodet_m_320, "-p", "nanodet-m-320", "--data", images, "--ann", ann,
                 "--seconds", "0.2", "--max-seconds", "0.2", "--warmup", "0.1", "--save-detections", "--save-outputs", "2",
                 "--out", out)
    assert result.exit_code == 0, result.output
    exported = tmp_path / "r.json"
    result = cli("report", out, "--fidelity", "--format", "json", "--out", exported,
                 "--fail-if", "dmap_lo<-0.005 or agreement<0.99 or sqnr<60")
    assert result.exit_code == 0, result.output
    ov = next(r for r in json.loads(exported.read_text()) if r["target"] == "ov")
    assert ov["fidelity_verdict"] == "cannot be told apart" and ov["fidelity_gate"] == "pass"
    assert ov["fidelity"]["images"] == 80
    assert len(ov["fidelity"]["tensors"]["outputs"]) == 6
