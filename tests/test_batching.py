"""Batch sizes are real: dynamic models run as asked, fixed ones are reshaped, padded or refused."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from harness.cli import main
from harness.measure.pipeline import iter_batches
from harness.profiles import load_profile
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile


@pytest.fixture
def tiny(tmp_path):
    images, ann = write_tiny_dataset(tmp_path / "ds", count=6)
    return tmp_path, write_tiny_profile(tmp_path / "tiny.toml"), images, ann


def run(tmp_path, model, profile, images, ann, bs, target="ort", out="out"):
    result = CliRunner().invoke(main, ["run", "-t", target, "-m", str(model), "-p", str(profile), "--data", str(images),
                                       "--ann", str(ann), "--bs", bs, "--seconds", "0.1", "--max-seconds", "0.1",
                                       "--warmup", "0.05", "--out", str(tmp_path / out)])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads((tmp_path / out / "results.json").read_text())["rows"]


@pytest.mark.slow
def test_per_batch_model_template_and_padding(tiny):
    tmp_path, profile, images, ann = tiny
    write_tiny_model(tmp_path / "tiny_bs1.onnx", batch=1)
    write_tiny_model(tmp_path / "tiny_bs4.onnx", batch=4)
    rows = run(tmp_path, tmp_path / "tiny_bs{bs}.onnx", profile, images, ann, "1,4")
    assert [r["model"].rsplit("/", 1)[1] for r in rows] == ["tiny_bs1.onnx", "tiny_bs4.onnx"]
    assert all(r["batch_mode"] == "per-batch model" and r["images"] == 6 for r in rows)
    assert any("last batch padded from 2 to 4" in n for n in rows[1]["notes"])
    assert rows[0]["map"] == pytest.approx(rows[1]["map"], abs=1e-6)


@pytest.mark.parametrize("target,note,mode", [("ort", "batch rewritten from 1 to 4", "rewritten"),
                                               ("ov", "reshaped from batch 1 to 4", "reshaped")])
def test_fixed_batch_one_graph_that_can_follow_is_reshaped(tiny, target, note, mode):
    """The tiny graph copies its batch (Reshape [0, C, -1]): OpenVINO's reshape follows; ONNX Runtime
    runs the checked batch rewrite, which has nothing to rewrite here but the declared batch."""
    tmp_path, profile, images, ann = tiny
    model = write_tiny_model(tmp_path / "fixed1.onnx", batch=1)
    rows = run(tmp_path, model, profile, images, ann, "1,4", target=target)
    assert any(note in n for n in rows[1]["notes"]), rows[1]["notes"]
    assert [r["batch_mode"] for r in rows] == ["fixed", mode]
    assert rows[0]["map"] == pytest.approx(rows[1]["map"], abs=1e-6)


@pytest.mark.parametrize("target", ["ort", "ov"])
def test_batch_one_constant_in_a_reshape_is_rewritten(tiny, target):
    """Batch 1 baked into the Reshape ([1, C, -1], as most exports do): neither runtime follows it by
    itself; both run the rewritten graph, with the same mAP and the check's difference in the row."""
    tmp_path, profile, images, ann = tiny
    model = write_tiny_model(tmp_path / "baked.onnx", batch=1)
    graph = onnx.load(str(model))
    shape = next(i for i in graph.graph.initializer if i.name == "shape")
    shape.CopyFrom(numpy_helper.from_array(np.array([1, 34, -1], np.int64), "shape"))
    onnx.save(graph, str(model))
    rows = run(tmp_path, model, profile, images, ann, "1,4", target=target)
    assert [r["batch_mode"] for r in rows] == ["fixed", "rewritten"]
    rewrite = rows[1]["batch_rewrite"]
    assert rewrite["nodes"] == 1 and rewrite["max_abs_diff"] <= 1e-4 and rewrite["checked_on"].endswith("real images")
    assert rows[0]["map"] == pytest.approx(rows[1]["map"], abs=1e-6)


def test_dynamic_model_runs_partial_last_batch_smaller(tiny):
    tmp_path, profile, images, ann = tiny
    model = write_tiny_model(tmp_path / "dyn.onnx")
    (row,) = run(tmp_path, model, profile, images, ann, "4")
    assert row["batch_mode"] == "dynamic" and row["images"] == 6
    assert not any("padded" in n for n in row["notes"])


def test_iter_batches_pads_only_when_asked(tiny):
    tmp_path, profile_path, images, ann = tiny
    spec = load_profile(profile_path).input
    items = [(i, p) for i, p in enumerate(sorted(images.iterdir()))]
    padded = list(iter_batches(items, 4, spec, pad=True))
    plain = list(iter_batches(items, 4, spec, pad=False))
    assert [b.tensor.shape[0] for b in padded] == [4, 4] and [len(b.metas) for b in padded] == [4, 2]
    assert [b.tensor.shape[0] for b in plain] == [4, 2]
    assert np.array_equal(padded[1].tensor[2], padded[1].tensor[1])  # padding repeats the last real image
    assert [m.image_id for b in plain for m in b.metas] == list(range(6))  # dataset order kept
