"""Later rows of one run reuse the first row's resized images: same detections, no file reads."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.data.coco import load_dataset
from harness.measure.canvases import CanvasCache
from harness.measure.pipeline import accuracy_pass
from harness.targets import get_target
from tests.tinymodel import tiny_ort_setup


@pytest.fixture
def tiny(tmp_path):
    return tiny_ort_setup(tmp_path, count=9)


def test_second_pass_reads_no_file_and_detects_the_same(tiny):
    images_dir, ann_path, model, profile = tiny
    dataset = load_dataset(images_dir, ann_path)
    target = get_target("ort")(model, profile, {})
    target.load(2)
    cache = CanvasCache()
    store = cache.store_for(profile.input, len(dataset.images))
    first = accuracy_pass(target, dataset.images, 2, profile, canvases=store)
    assert len(store) == len(dataset.images)
    shutil.rmtree(images_dir)  # the next pass can only succeed from the cache
    again = accuracy_pass(target, dataset.images, 2, profile, canvases=cache.store_for(profile.input, len(dataset.images)))
    plain = accuracy_pass(target, dataset.images, 2, profile, pipelined=False, canvases=store)
    assert first.detections and again.detections == first.detections == plain.detections
    assert again.counted == first.counted == [i for i, _ in dataset.images]


def test_over_budget_or_other_geometry_gets_no_shared_store(tiny):
    _, _, _, profile = tiny
    spec = profile.input
    one = spec.width * spec.height * 3
    cache = CanvasCache(budget_bytes=10 * one)
    assert cache.store_for(spec, 11) is None  # 11 canvases do not fit 10
    store = cache.store_for(spec, 10)
    assert store is not None and cache.store_for(spec, 10) is store
    wider = type(spec)(**{**spec.__dict__, "width": spec.width * 2})
    assert cache.store_for(wider, 1) is None  # the budget is spent
    normalised = type(spec)(**{**spec.__dict__, "mean": (1.0, 2.0, 3.0)})
    assert cache.store_for(normalised, 10) is store  # mean/std apply after the canvas


def test_run_notes_reuse_and_keeps_map(tiny, tmp_path):
    images_dir, ann_path, model, profile = tiny
    args = ["run", "--target", "ort", "--model", str(model), "--profile", profile.source,
            "--data", str(images_dir), "--ann", str(ann_path), "--bs", "1,2", "--seconds", "0.2",
            "--max-seconds", "0.2", "--warmup", "0.1"]
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "cached")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "cached" / "results.json").read_text())["rows"]
    assert not any("reused the resized images" in n for n in rows[0]["notes"])
    assert any("reused the resized images" in n for n in rows[1]["notes"])
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "plain"), "--no-image-cache"])
    assert result.exit_code == 0, result.output
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())["rows"]
    assert [r["map"] for r in plain] == [r["map"] for r in rows]
    assert not any("reused" in n for r in plain for n in r["notes"])


def test_one_command_checks_each_image_once_across_targets(tiny, tmp_path, monkeypatch):
    """`run -t ort,ov` runs the runner twice; the dataset (strict decode of every image) is loaded once."""
    import harness.data.coco as coco

    images_dir, ann_path, model, profile = tiny
    checked = []
    real_check = coco.check_image_file
    monkeypatch.setattr(coco, "check_image_file", lambda path: checked.append(path) or real_check(path))
    args = ["run", "--target", "ort,ov", "--model", str(model), "--profile", profile.source, "--data", str(images_dir),
            "--ann", str(ann_path), "--bs", "1", "--seconds", "0.1", "--max-seconds", "0.1", "--warmup", "0.05",
            "--out", str(tmp_path / "two")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "two" / "results.json").read_text())["rows"]
    assert [r["target"] for r in rows] == ["ort", "ov"] and rows[0]["map"] == rows[1]["map"]
    assert sorted(checked) == sorted(images_dir.glob("*.jpg"))  # each file once, not once per target
