"""The embedded default: bundled model + generated dataset give the mAP the README states."""

import json

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.data.demo import DEMO_IMAGES, demo_dataset, demo_model_path
from harness.data.synthetic import generate_dataset
from harness.measure.results import ResultsStore
from harness.measure.runner import RunConfig, run
from harness.profiles import load_profile

#: the demo's mAP as README.md and datasets/demo/README.md state it: a regression pin on the bundled model
#: (the READMEs must say what the demo prints); the rows' correctness is checked against demo_oracle_map
README_DEMO_MAP = 0.7814
#: harness mAP vs the independent computation (decoder, NMS and evaluator written apart)
ORACLE_TOLERANCE = 0.003


def test_generator_is_deterministic(tmp_path):
    a_images, a_ann = generate_dataset(tmp_path / "a", num_images=5, seed=3, split="val")
    b_images, b_ann = generate_dataset(tmp_path / "b", num_images=5, seed=3, split="val")
    assert a_ann.read_bytes() == b_ann.read_bytes()
    for f in sorted(a_images.iterdir()):
        assert f.read_bytes() == (b_images / f.name).read_bytes()
    c_images, c_ann = generate_dataset(tmp_path / "c", num_images=5, seed=4, split="val")
    assert c_ann.read_bytes() != a_ann.read_bytes()


@pytest.mark.slow
def test_demo_dataset_is_cached_and_complete(tmp_path):
    images, ann, reused = demo_dataset(tmp_path)
    assert not reused and len(json.loads(ann.read_text())["images"]) == DEMO_IMAGES
    assert len(list(images.iterdir())) == DEMO_IMAGES
    assert demo_dataset(tmp_path)[2] is True
    (ann.parent / ".complete").unlink()  # an interrupted generation is redone, never half-used
    assert demo_dataset(tmp_path)[2] is False


@pytest.mark.slow
def test_demo_cli_matches_an_independent_decode_and_the_readme(tmp_path, demo_data, demo_oracle_map, monkeypatch):
    """Every row's mAP agrees with demo_oracle_map (no harness code) within ORACLE_TOLERANCE; the READMEs'
    figure is a regression pin on the bundled model."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--seconds", "0.3", "--max-seconds", "0.3"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "report:" in result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["target"], r["bs"]) for r in rows] == [(t, b) for t in ("ort", "ov") for b in (1, 4, 8)]
    for row in rows:
        assert row["images"] == DEMO_IMAGES and row["batch_mode"] == "dynamic"
        assert row["map"] == pytest.approx(demo_oracle_map, abs=ORACLE_TOLERANCE)
        assert round(row["map"], 4) == README_DEMO_MAP  # regression pin: README.md states this figure
    # Batched runs are real: a batch of 8 takes longer per call than a batch of 1.
    by = {(r["target"], r["bs"]): r for r in rows}
    assert all(by[(t, 8)]["latency_ms_p50"] > by[(t, 1)]["latency_ms_p50"] for t in ("ort", "ov"))
    assert (out / "report.md").read_text().count("| 0.7814 |") == 6
    # the demo also writes the comparison page with its plots, and the table as CSV
    import pandas as pd

    for name in ("comparison.md", "comparison-throughput.png", "comparison-map-vs-throughput.png", "results.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6 and table["map"].round(4).eq(README_DEMO_MAP).all()
    assert "![" in (out / "comparison.md").read_text()


def test_demo_run_never_overwrites_previous_results(tmp_path, monkeypatch):
    from harness.data.demo import free_out_dir

    base = tmp_path / "demo"
    assert free_out_dir(base) == base
    base.mkdir()
    (base / "results.json").write_text("{}")
    assert free_out_dir(base) == tmp_path / "demo-2"


@pytest.mark.parametrize("section,change,limit", [("input", {"color": "rgb"}, 0.65),
                                                  ("decoder", {"prior_offset": 0.5}, 0.3)])
def test_wrong_preprocessing_or_decoding_costs_demo_map(tmp_path, demo_data, section, change, limit):
    """mAP moves when a detail breaks, so the accuracy checks above mean something."""
    import dataclasses

    images, ann = demo_data
    profile = load_profile("demo")
    if section == "input":
        broken = dataclasses.replace(profile, input=dataclasses.replace(profile.input, **change))
    else:
        params = dataclasses.replace(profile.decoder.params, **change)
        broken = dataclasses.replace(profile, decoder=dataclasses.replace(profile.decoder, params=params))
    config = RunConfig(target="ort", model=str(demo_model_path()), profile=broken, images_dir=images, ann_path=ann,
                       batch_sizes=[8], bench_seconds=0.1, max_seconds=0.1, warmup_seconds=0.05, min_iterations=2, limit=80)
    (row,) = run(config, ResultsStore(tmp_path / "out", env={}))
    assert row["map"] < limit
