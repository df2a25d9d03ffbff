"""Leftovers of issue 30 (trust): decode's --bs checked against the files as run's --bs and emulate's
--batchsize are, and the batch-memory check counting the outputs of the batches in flight (the
model's declared output shapes), so a model with huge outputs is refused before anything is allocated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.core.bounds import check_batch_memory
from harness.core.errors import HarnessError
from harness.model.onnx_model import declared_output_bytes, inspect_onnx
from tests.test_cli_errors import assert_one_line_error, cli
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile


@pytest.fixture
def t(tmp_path):
    images, ann = write_tiny_dataset(tmp_path / "ds", count=3)
    return {"root": tmp_path, "images": images, "ann": ann, "model": write_tiny_model(tmp_path / "tiny.onnx"),
            "profile": write_tiny_profile(tmp_path / "tiny.toml")}


def _prepare(t, fmt: str, model: Path | None = None) -> Path:
    out = t["root"] / f"prep_{fmt}"
    result = cli("preprocess", "-p", t["profile"], "--data", t["images"], "--ann", t["ann"], "--format", fmt,
                 "--out", out, "--model", model or t["model"])
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------- decode --bs against the files

def test_decode_bs_larger_than_the_images_is_refused(t):
    prep = _prepare(t, "npz")
    outputs = t["root"] / "vamp_out"
    assert cli("emulate", "--runner", "vamp", "-m", t["model"], "--prep", prep, "--out", outputs).exit_code == 0
    decode = ["decode", "--npz", outputs, "--prep", prep, "--ann", t["ann"], "--out", t["root"] / "res"]
    assert_one_line_error(cli(*decode, "--bs", "8"),
                          f"--bs 8: larger than the 3 image(s) in {prep / 'prep.json'}", "use at most 3")
    assert not (t["root"] / "res" / "results.json").exists()
    result = cli(*decode, "--bs", "3")
    assert result.exit_code == 0, result.output
    rows = json.loads((t["root"] / "res" / "results.json").read_text())["rows"]
    assert [(r["bs"], r["images"]) for r in rows] == [(3, 3)]


def test_decode_notes_a_summary_batch_larger_than_the_images(t):
    """A fixed-batch-4 model on 3 images: the tool ran (and timed) padded batches; the row says so."""
    from harness.npu.decode_outputs import decode_run

    fixed = write_tiny_model(t["root"] / "fixed4.onnx", batch=4)
    prep = _prepare(t, "bin", fixed)
    outputs = t["root"] / "ais_out"
    result = cli("emulate", "--runner", "ais", "-m", fixed, "--prep", prep, "--out", outputs)
    assert result.exit_code == 0, result.output
    row = decode_run("ais", outputs, prep, t["ann"])
    assert row.bs == 4
    assert any("summary records batchsize 4, more than the 3 image(s)" in note for note in row.notes), row.notes


# ---------------------------------------------------------------- outputs in the memory check

def test_declared_output_bytes_are_what_the_model_returns_per_image(t):
    """Against the outputs ONNX Runtime really returns at batch 1 and 2, on a dynamic and a fixed-batch graph."""
    import onnxruntime as ort

    for path, batch in ((t["model"], 2), (write_tiny_model(t["root"] / "fixed2.onnx", batch=2), 2)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": np.zeros((batch, 3, 32, 32), np.float32)})
        assert declared_output_bytes(path) == sum(o.nbytes for o in got) // batch
        assert inspect_onnx(path).output_bytes_per_image()[1] == []


def test_outputs_of_undeclared_size_are_named_and_not_counted(t):
    model = onnx.load(str(t["model"]))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "rows"
    path = t["root"] / "symbolic.onnx"
    onnx.save(model, str(path))
    assert inspect_onnx(path).output_bytes_per_image() == (0, ["output"])
    assert declared_output_bytes(t["root"] / "model.tflite") == 0


def test_batch_memory_counts_the_outputs_in_flight():
    """Input alone fits; with outputs it does not: the figures are the sum, per batch and in flight."""
    shape, gib = (8, 3, 64, 64), 1 << 30
    per_input = 8 * 3 * 64 * 64 * 4
    assert check_batch_memory(shape, 4, 3, "--bs 8", available=gib) == per_input
    per_image = 16 << 20  # 16 MiB of outputs per image: 128 MiB a batch, x 3 in flight > half of 512 MiB
    assert per_input * 3 + 128 * (1 << 20) * 3 < gib // 2
    check_batch_memory(shape, 4, 3, "--bs 8", available=gib, output_bytes_per_image=per_image)
    with pytest.raises(HarnessError) as info:
        check_batch_memory(shape, 4, 3, "--bs 8", available=gib // 2, output_bytes_per_image=per_image,
                           outputs_in_flight=2)
    need = (per_input * 3 + 128 * (1 << 20) * 2) / (1 << 20)
    assert "its outputs (the model's declared shapes) 128.0 MiB, x 2 in flight" in str(info.value)
    assert f"= {need:.1f} MiB, more than half the 512.0 MiB" in str(info.value)


def _huge_outputs(t) -> Path:
    """The tiny model declaring an output of 2^28 x 2^10 float32 per image (1 TiB): refused before any
    allocation, on any machine (the graph itself never runs)."""
    model = onnx.load(str(t["model"]))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[1].dim_value, dims[2].dim_value = 1 << 28, 1 << 10
    path = t["root"] / "huge.onnx"
    onnx.save(model, str(path))
    return path


def test_run_bench_and_emulate_refuse_a_model_with_huge_outputs_before_allocating(t):
    huge = _huge_outputs(t)
    said = "its outputs (the model's declared shapes) 1.0 TiB"
    run = cli("run", "-t", "ort", "-m", huge, "-p", t["profile"], "--data", t["images"], "--ann", t["ann"],
              "--seconds", "0.1", "--max-seconds", "0.1", "--out", t["root"] / "run")
    assert_one_line_error(run, "--bs 1: one batch of input (1, 3, 32, 32)", said)
    assert not (t["root"] / "run" / "results.json").exists()
    bench = cli("bench", "-t", "ort", "-m", huge, "-p", t["profile"], "--seconds", "0.1", "--out", t["root"] / "bench")
    assert_one_line_error(bench, "--bs 1: one batch", said)
    prep = _prepare(t, "npz")
    emulate = cli("emulate", "--runner", "vamp", "-m", huge, "--prep", prep, "--out", t["root"] / "emu")
    assert_one_line_error(emulate, "--batchsize 1: one batch", said)


# ---------------------------------------------------------------- decode's memory with the number of images

def test_category_chunks_put_the_largest_category_alone():
    """COCO-like counts (person a third of all detections): person is its own pass, no pass holds more
    detections than it, every category is in exactly one pass, and each pass has detections."""
    from harness.measure.evaluate import category_chunks

    rng = np.random.default_rng(3)
    for trial in range(50):
        cats = list(range(1, 91))
        counts = {c: int(rng.integers(0, 300)) if rng.random() > 0.2 else 0 for c in cats}
        counts[1] = sum(counts.values()) // 2 + 1 if trial % 2 else counts[1]
        if not any(counts.values()):
            continue
        chunks = category_chunks(cats, counts, size=8)
        flat = [c for chunk in chunks for c in chunk]
        assert sorted(flat) == cats
        held = [sum(counts[c] for c in chunk) for chunk in chunks]
        biggest = max(counts.values())
        budget = max(biggest, sum(counts.values()) / 8)
        assert all(any(counts[c] for c in chunk) for chunk in chunks)
        assert all(len([c for c in chunk if counts[c]]) <= 8 for chunk in chunks)
        assert max(held) <= budget
        if trial % 2:  # person above half of all: alone in its pass
            assert [1] in [[c for c in chunk if counts[c]] for chunk in chunks]


def test_annotation_polygons_are_dropped_while_parsing(tmp_path):
    """The loaded file is what json.load gives without "segmentation", and no dict holds a polygon."""
    from harness.data.annotations import load_annotations

    images, ann = write_tiny_dataset(tmp_path / "ds", count=2)
    data = json.loads(ann.read_text())
    for box in data["annotations"]:
        box["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]
    data["annotations"][0]["segmentation"] = {"counts": "abc", "size": [4, 4]}  # RLE
    ann.write_text(json.dumps(data))
    loaded = load_annotations(ann)
    expected = json.loads(ann.read_text())
    for box in expected["annotations"]:
        del box["segmentation"]
    assert loaded == expected


def test_release_freed_memory_gives_freed_heap_pages_back():
    """glibc keeps freed small allocations in its heap; release_freed_memory (malloc_trim) returns the
    whole pages among them: RSS falls by most of what was freed."""
    from harness.core.bounds import _malloc_trim, release_freed_memory

    if _malloc_trim() is None:
        pytest.skip("this C library has no malloc_trim")

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]  # ~200 MB of malloc'd (not pymalloc) blocks
    kept = blocks[::32]
    del blocks
    before = rss()
    release_freed_memory()
    assert before - rss() > 100 << 20, (before, rss())
    assert len(kept) == 3125
