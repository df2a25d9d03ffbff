"""The Q/DQ variant cache (harness.quant.variant_cache): a variant is found again only when the model, the
exclusion set and the calibration are all the same; a search run twice writes no variant the second time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from harness.data.demo import DEMO_PROFILE, DEMO_SEED, demo_model_path
from harness.data.synthetic import generate_dataset
from harness.measure.identity import model_sha256
from harness.profiles import load_profile
from harness.quant import calibrate, write_qdq
from harness.quant.calib_data import calibration_images
from harness.quant.variant_cache import VariantCache, calibration_identity, variant_key
from tests.test_cli_errors import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def calibrations(tmp_path_factory):
    """Two calibrations of the demo model: 8 images, and 6 of the same images (other ranges)."""
    root = tmp_path_factory.mktemp("vcache")
    calib, _ = generate_dataset(root / "calib", num_images=8, seed=DEMO_SEED, split="calib")
    spec = load_profile(DEMO_PROFILE).input
    with calibrate(demo_model_path(), calibration_images(calib, 8), spec, "percentile") as eight, \
            calibrate(demo_model_path(), calibration_images(calib, 6), spec, "percentile") as six:
        yield {"root": root, "calib": calib, "eight": eight, "six": six, "sha": model_sha256(demo_model_path())}


def graph_of(path):
    model = onnx.load(str(path))
    return model.graph.SerializeToString()


def test_a_variant_is_written_once_then_found(calibrations, tmp_path):
    cal, sha = calibrations["eight"], calibrations["sha"]
    cache = VariantCache(tmp_path / "cache", sha, cal)
    first = cache.get(())
    assert (cache.writes, cache.hits) == (1, 0)
    mtime = first.stat().st_mtime_ns
    assert cache.get(()) == first and (cache.writes, cache.hits) == (1, 1)
    assert first.stat().st_mtime_ns == mtime  # not written again
    # the cached file is the model write_qdq writes for that exclusion set
    assert graph_of(first) == graph_of(write_qdq(cal, tmp_path / "direct.onnx", ()).path)
    # a new cache object over the same folder (a later search) finds it too
    later = VariantCache(tmp_path / "cache", sha, cal)
    assert later.get(()) == first and later.hits == 1 and later.writes == 0


def test_each_part_of_the_key_changes_it(calibrations, tmp_path):
    cal, sha = calibrations["eight"], calibrations["sha"]
    node = cal.placement.quantized[0]
    cache = VariantCache(tmp_path / "cache", sha, cal)
    base = cache.get(())
    # the exclusion set
    excluded = cache.get({node})
    assert excluded != base and cache.writes == 2 and cache.hits == 0
    assert cache.get([node]) == excluded and cache.hits == 1  # a set is a set, whatever its container
    # the model's sha256
    other_model = VariantCache(tmp_path / "cache", "0" * 64, cal)
    assert other_model.get(()) != base and other_model.writes == 1
    # the calibration (other images, so other ranges)
    other_cal = VariantCache(tmp_path / "cache", sha, calibrations["six"])
    assert calibration_identity(calibrations["six"]) != calibration_identity(cal)
    assert other_cal.get(()) != base and other_cal.writes == 1
    # each part of the calibration's identity alone: images, method, ranges
    identity = calibration_identity(cal)
    key = variant_key(sha, (), identity)[0]
    for part, value in (("images", {**identity["images"], "sha256": "1" * 64}), ("method", "minmax"),
                        ("ranges_sha256", "2" * 64)):
        assert variant_key(sha, (), {**identity, part: value})[0] != key, part
    assert variant_key(sha, (), identity, per_channel=False)[0] != key
    assert variant_key(sha, (), dict(reversed(identity.items())))[0] == key  # the same parts, another order


def test_a_damaged_cached_file_is_written_again(calibrations, tmp_path):
    cache = VariantCache(tmp_path / "cache", calibrations["sha"], calibrations["eight"])
    path = cache.get(())
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # cut short (a copy interrupted, a full disk)
    assert cache.get(()) == path and cache.writes == 2 and cache.hits == 0
    assert path.read_bytes() == good


@pytest.mark.slow
def test_a_repeated_search_writes_no_variant(calibrations, tmp_path):
    """The same search twice (into two folders, the second in a fresh process: another hash seed) with one
    cache: the second writes no Q/DQ file and finds the same variants and exclude.txt."""
    images, ann = generate_dataset(tmp_path / "val", num_images=6, seed=DEMO_SEED, split="val")
    args = ["sensitivity", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--calib", calibrations["calib"],
            "--calib-images", 8, "--data", images, "--ann", ann, "--subset", 6, "--resamples", 100,
            "--bench-seconds", 0.1, "--mode", "exclude", "--top-k", 2, "--no-type-groups",
            "--variant-cache", tmp_path / "cache"]
    first = cli(*args, "--out", tmp_path / "one")
    assert first.exit_code == 0, (first.output, first.stderr)
    second = subprocess.run([sys.executable, "-m", "harness", *map(str, args), "--out", str(tmp_path / "two")],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"},
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Q/DQ variants: 0 written, " in second.stdout, second.stdout
    assert (tmp_path / "one" / "exclude.txt").read_text() == (tmp_path / "two" / "exclude.txt").read_text()
    written = sorted(p.name for p in (tmp_path / "cache").rglob("*.onnx"))
    assert len(written) >= 3  # the all-int8 model and the two exclude variants (and any greedy step)
