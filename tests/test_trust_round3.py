"""Issue 30 (trust, round 3): each class of failure reproduced on its real input, then checked
against its one rule. Data loss (one output-folder protocol, --overwrite by manifest), interrupts,
silent wrong numbers, bounds, full disk, paths, regressions, report inputs, messages."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from harness.core.folders import MANIFEST_FILE, OWN_FILES
from harness.data.synthetic import generate_dataset
from tests.test_cli_errors import assert_one_line_error, cli, run_args
from tests.tinymodel import write_tiny_convnet, write_tiny_profile

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under folder (bookkeeping files aside) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name not in OWN_FILES}


@pytest.fixture
def q(tmp_path):
    images, _ = generate_dataset(tmp_path / "calib", num_images=4, seed=9, split="calib")
    (tmp_path / "models").mkdir()
    return {"model": write_tiny_convnet(tmp_path / "models" / "conv.onnx"),
            "profile": write_tiny_profile(tmp_path / "tiny.toml"), "calib": images, "root": tmp_path}


def quantize(q, out, *extra):
    return cli("quantize", "-m", q["model"], "-p", q["profile"], "--calib", q["calib"], "--out", out, *extra)


# ---------------------------------------------------------------- data loss: one protocol, a manifest

def test_quantize_into_the_source_models_folder_with_overwrite_keeps_every_input(q):
    folder = q["model"].parent
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    result = quantize(q, folder, "--overwrite")
    assert result.exit_code == 0, result.output
    after = snapshot(folder)
    assert {k: after[k] for k in before} == before  # the source model and the user's file untouched
    assert {"model.qdq.onnx", "quant.json"} <= set(after)
    again = quantize(q, folder, "--overwrite")  # replaces its own files, still nothing of the user's
    assert again.exit_code == 0, again.output
    assert {k: snapshot(folder)[k] for k in before} == before


def test_quantize_never_replaces_a_users_file_of_the_same_name(q):
    out = q["root"] / "out"
    out.mkdir()
    (out / "model.qdq.onnx").write_bytes(b"the user's own file")
    assert_one_line_error(quantize(q, out, "--overwrite"), "model.qdq.onnx exists and was not written by the harness")
    assert (out / "model.qdq.onnx").read_bytes() == b"the user's own file"


def test_quantize_out_dot_works(q):
    here = q["root"] / "here"
    here.mkdir()
    cwd = os.getcwd()
    os.chdir(here)
    try:
        result = quantize(q, ".")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert (here / "model.qdq.onnx").is_file() and (here / "quant.json").is_file()


def test_quantize_aimed_at_a_running_runs_folder_is_refused_and_deletes_nothing(q, tiny):
    out = tiny["root"] / "out"
    assert cli(*run_args(tiny)).exit_code == 0
    before = snapshot(out)
    code = ("import sys, time; from harness.measure.results import ResultsStore; "
            f"s = ResultsStore({str(out)!r}, env={{}}, resume=True); print('ready', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert_one_line_error(quantize(q, out, "--overwrite"), "is in use by another harness command")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert snapshot(out) == before


def test_overwrite_of_a_run_removes_only_what_the_harness_wrote(tiny):
    out = tiny["root"] / "out"
    assert cli(*run_args(tiny, **{"--save-detections": True})).exit_code == 0
    (out / "mine.txt").write_text("keep")
    (out / "artifacts" / "mine.json").write_text("keep")
    listed = [json.loads(line)["name"] for line in (out / MANIFEST_FILE).read_text().splitlines()]
    assert "results.json" in listed and "artifacts" in listed
    assert cli(*run_args(tiny, **{"--overwrite": True})).exit_code == 0
    assert (out / "mine.txt").read_text() == "keep" and (out / "artifacts" / "mine.json").read_text() == "keep"
    assert not list((out / "artifacts").glob("*.detections.json.gz"))  # the old row's file went with its row


def test_preprocess_overwrite_keeps_a_users_bin_file(npu_setup):
    npu, out = npu_setup
    (out / "calibration.bin").write_bytes(b"user data")
    result = cli("preprocess", "-p", npu["profile"], "--data", npu["images"], "--ann", npu["ann"], "--format", "bin",
                 "--out", out, "--model", npu["model"], "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "calibration.bin").read_bytes() == b"user data"


@pytest.fixture
def npu_setup(tmp_path):
    from tests.test_npu import TINY_PROFILE, build_tiny_dataset, build_tiny_model

    images, ann = build_tiny_dataset(tmp_path / "data", count=4)
    (tmp_path / "tiny.toml").write_text(TINY_PROFILE)
    npu = {"images": images, "ann": ann, "model": build_tiny_model(tmp_path / "tiny.onnx"),
           "profile": tmp_path / "tiny.toml"}
    out = tmp_path / "prep"
    result = cli("preprocess", "-p", npu["profile"], "--data", images, "--ann", ann, "--format", "bin",
                 "--out", out, "--model", npu["model"])
    assert result.exit_code == 0, result.output
    return npu, out


def test_sensitivity_overwrite_keeps_a_users_file(tmp_path):
    from harness.core.folders import OutputFolder

    out = tmp_path / "sens"
    with OutputFolder(out) as folder:
        from harness.core.fileio import atomic_write_text

        atomic_write_text(out / "variants.jsonl", "x\n")
        (out / "precious.onnx").write_bytes(b"model")
        assert [p.name for p in folder.foreign()] == ["precious.onnx"]
        assert folder.clear() == ["variants.jsonl"]
    assert (out / "precious.onnx").read_bytes() == b"model"


def test_a_write_through_a_symlinked_folder_is_refused(tiny, tmp_path):
    out = tiny["root"] / "out"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out.mkdir()
    (out / "artifacts").symlink_to(outside)
    result = cli(*run_args(tiny, **{"--save-detections": True}))
    assert result.exit_code == 2
    assert "artifacts is a symlink" in result.stderr and "Traceback" not in result.output
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------- interrupts

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_targets_and_a_second_one_end_cleanly(tiny, sig):
    out = tiny["root"] / "killed"
    cmd = [sys.executable, "-m", "harness", *map(str, run_args(tiny, **{"--target": "ort,ov", "--bs": "1,2",
                                                                        "--out": out}))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    results = out / "results.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and json.loads(results.read_text())["rows"]):
        time.sleep(0.02)
    proc.send_signal(sig)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C while the first unwinds
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 0), err  # 0: the signal came after the last row
    assert "Traceback" not in err and "terminate called" not in err and "Exception ignored" not in err, err
    rows = json.loads(results.read_text())["rows"]
    assert rows and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]


def test_a_failure_after_an_interrupt_is_not_recorded(tmp_path):
    from harness.core import interrupts
    from harness.measure.results import ResultsStore
    from harness.measure.row import failed_row

    previous = interrupts.install()
    try:
        with ResultsStore(tmp_path / "o", env={}) as store:
            interrupts._received = signal.SIGINT  # as the handler sets it
            with pytest.raises(KeyboardInterrupt):
                store.add(failed_row("ov", 1, "openvino is not installed"))
            assert store.rows == []
    finally:
        interrupts._received = None
        interrupts.restore(previous, finished=False)


def test_interrupt_message_of_a_command_without_resume(q, monkeypatch):
    import harness.quant.run as quant_run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(quant_run, "_quantize", interrupted)
    result = quantize(q, q["root"] / "qo")
    assert result.exit_code == 130
    assert "--resume" not in result.stderr and "interrupted" in result.stderr


# ---------------------------------------------------------------- silent wrong numbers

def _scaled_model(src: Path, dst: Path, factor: float) -> Path:
    """tiny.onnx with every output multiplied by factor (scores of 140, logits-like ranges)."""
    model = onnx.load(str(src))
    graph = model.graph
    for out in graph.output:
        for node in graph.node:
            node.output[:] = [o + "_raw" if o == out.name else o for o in node.output]
        graph.node.append(helper.make_node("Mul", [out.name + "_raw", "k"], [out.name]))
    graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "k"))
    onnx.save(model, str(dst))
    return dst


def test_scores_outside_0_1_are_refused_before_timing(tiny):
    model = _scaled_model(tiny["model"], tiny["root"] / "x140.onnx", 140.0)
    result = cli(*run_args(tiny, **{"--model": model}))
    assert_one_line_error(result, "do not fit: detection scores range from", "outside [0, 1]")


def test_resume_refuses_images_replaced_under_the_same_names(tiny):
    assert cli(*run_args(tiny)).exit_code == 0
    images = sorted(Path(tiny["images"]).glob("*.jpg"))
    a, b = images[0], images[1]
    pixels_a, pixels_b = cv2.imread(str(a)), cv2.imread(str(b))
    if pixels_a.shape == pixels_b.shape:  # same names and sizes, other pixels
        cv2.imwrite(str(a), pixels_b)
        cv2.imwrite(str(b), pixels_a)
    else:
        cv2.imwrite(str(a), 255 - pixels_a)
    result = cli(*run_args(tiny, **{"--resume": True, "--bs": "1,2"}))
    assert_one_line_error(result, "dataset differs", "image_bytes_sha256")


def test_fidelity_gate_refuses_an_empty_or_deeply_nested_expression():
    from harness.core.errors import HarnessError
    from harness.fidelity.gate import parse_gate

    with pytest.raises(HarnessError, match="empty expression"):
        parse_gate("")
    with pytest.raises(HarnessError, match="nested deeper"):
        parse_gate("(" * 5000 + "dmap<0" + ")" * 5000)
    assert str(parse_gate("(" * 10 + "dmap<0" + ")" * 10)) == "dmap<0"
    result = cli("report", ".", "--fidelity", "--fail-if", "")
    assert_one_line_error(result, "empty expression")


def test_fidelity_refuses_detection_files_swapped_between_rows(tiny):
    out = tiny["root"] / "out"
    result = cli(*run_args(tiny, **{"--target": "ort,ov", "--save-detections": True}))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    a, b = (out / r["artifacts"]["detections"] for r in data["rows"])
    docs = [json.loads(gzip.decompress(p.read_bytes())) for p in (a, b)]
    docs[1]["detections"] = docs[1]["detections"][:-1]  # another row's file: same images, other detections
    b.write_bytes(gzip.compress(json.dumps(docs[1]).encode()))
    result = cli("report", out, "--fidelity", "--out", tiny["root"] / "f.md")
    assert_one_line_error(result, "is not the file this row saved")


def test_calibration_of_identical_or_flat_images(q):
    calib = q["root"] / "flat"
    calib.mkdir()
    black = np.zeros((48, 64, 3), np.uint8)
    for i in range(3):
        cv2.imwrite(str(calib / f"c{i}.png"), black)
    assert_one_line_error(cli("quantize", "-m", q["model"], "-p", q["profile"], "--calib", calib, "--out",
                              q["root"] / "o1"), "all 3 images have the same pixels")
    shutil.copy(next(Path(q["calib"]).glob("*.jpg")), calib / "real.jpg")
    result = cli("quantize", "-m", q["model"], "-p", q["profile"], "--calib", calib, "--out", q["root"] / "o2")
    assert result.exit_code == 0, result.output
    assert "warning: 3 of 4 calibration image(s) are one flat colour" in result.stderr


def test_calibration_identity_covers_content(tmp_path):
    from harness.quant.calib_data import calibration_images

    rng = np.random.default_rng(3)
    for i in range(2):  # BMP: the size depends on the dimensions only
        cv2.imwrite(str(tmp_path / f"c{i}.bmp"), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    before = calibration_images(tmp_path, 2).identity()
    size = (tmp_path / "c0.bmp").stat().st_size
    cv2.imwrite(str(tmp_path / "c0.bmp"), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    assert (tmp_path / "c0.bmp").stat().st_size == size  # same names, same sizes, other pixels
    assert calibration_images(tmp_path, 2).identity()["sha256"] != before["sha256"]


# ---------------------------------------------------------------- bounds

@pytest.mark.parametrize("flags, fragment", [
    ({"--target": ","}, "--target ',': expected comma-separated names"),
    ({"--bs": "1.5"}, "--bs '1.5': expected comma-separated positive integers"),
    ({"--bs": "1_0"}, "--bs '1_0': expected comma-separated positive integers"),
    ({"--bs": "1,01"}, "a batch size is given twice"),
    ({"--bs": "100000"}, "batch sizes above 4096 are refused"),
    ({"--bs": "512"}, "--bs 512: larger than the 6 image(s) of the dataset"),
    ({"--threads": "100000"}, "--threads '100000': at most 1024"),
    ({"--streams": "100000"}, "--streams '100000': at most 1024"),
])
def test_flags_out_of_bounds_are_one_line(tiny, flags, fragment):
    result = cli(*run_args(tiny, **flags))
    assert_one_line_error(result, fragment)
    assert not (tiny["root"] / "out" / "results.json").exists()


def test_memory_is_checked_before_allocating():
    from harness.core.bounds import check_batch_memory
    from harness.core.errors import HarnessError

    with pytest.raises(HarnessError, match=r"one batch of input \(4096, 3, 640, 640\) is 18.8 GiB, x 3 in flight "
                                           r"= 56.2 GiB, more than half the 8.0 GiB"):
        check_batch_memory((4096, 3, 640, 640), 4, 3, "--bs 4096", available=8 << 30)
    assert check_batch_memory((1, 3, 64, 64), 4, 3, "--bs 1", available=8 << 30) == 3 * 64 * 64 * 4


# ---------------------------------------------------------------- full disk



def _fill_once_locked(disk: Path, out: Path) -> threading.Thread:
    """Fill the disk as soon as the command holds its lock (after the 64 KiB probe passed)."""
    def fill():
        deadline = time.time() + 60
        while time.time() < deadline and not (out / ".harness.lock").exists():
            time.sleep(0.002)
        try:
            with open(disk / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError:
            pass

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


def test_quantize_on_a_full_disk_is_one_line_and_leaves_nothing_half_written(q, small_disk):
    disk = small_disk("256k")
    filler = _fill_once_locked(disk, disk / "quant")
    result = quantize(q, disk / "quant")
    filler.join(timeout=60)
    assert_one_line_error(result, "No space left on device")
    left = [p for p in (disk / "quant").rglob("*") if p.name not in OWN_FILES]
    assert left == [], left  # no half model, no staging folder, no temp file


# ---------------------------------------------------------------- regressions

def test_model_as_an_openvino_ir_folder_and_a_folder_named_like_a_file(tiny):
    import openvino as ov

    ir = tiny["root"] / "ir"
    ir.mkdir()
    ov.save_model(ov.convert_model(str(tiny["model"])), str(ir / "model.xml"))
    result = cli(*run_args(tiny, **{"--target": "ov", "--model": ir}))
    assert result.exit_code == 0, result.output
    row = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"][0]
    assert row["model"].endswith("model.xml") and row["status"] == "ok"
    fake = tiny["root"] / "x.onnx"
    fake.mkdir()
    assert_one_line_error(cli(*run_args(tiny, **{"--model": fake, "--out": tiny["root"] / "o2"})),
                          "x.onnx: a folder holding no model")


def test_fifo_as_model_or_annotations_is_named_as_such(tiny):
    fifo = tiny["root"] / "pipe.onnx"
    os.mkfifo(fifo)
    assert_one_line_error(cli(*run_args(tiny, **{"--model": fifo})), "not a regular file (a FIFO)")
    assert_one_line_error(cli(*run_args(tiny, **{"--ann": fifo, "--out": tiny["root"] / "o2"})),
                          "annotation file", "not a regular file (a FIFO)")


def test_non_utf8_file_name_is_no_traceback(tiny):
    name = os.fsdecode(b"r\xe9sultats")
    result = cli(*run_args(tiny, **{"--out": tiny["root"] / name}))
    assert result.exit_code == 0, (result.output, result.exception)


# ---------------------------------------------------------------- report inputs

@pytest.mark.parametrize("field, value, fragment", [
    ("map", "NaN", "field 'map' = nan"),
    ("fps", "Infinity", "field 'fps' = inf"),
    ("fps", "1e308", "field 'fps' = 1e+308"),
    ("bs", '"four"', "field 'bs' = 'four'"),
    ("notes", "5", "field 'notes' = 5"),
    ("per_class_ap", '{"person": "high"}', "per_class_ap"),
])
def test_report_validates_rows_on_load_and_names_the_field(tiny, field, value, fragment):
    out = tiny["root"] / "out"
    assert cli(*run_args(tiny)).exit_code == 0
    text = (out / "results.json").read_text()
    data = json.loads(text)
    data["rows"][0][field] = "@@"
    (out / "results.json").write_text(json.dumps(data).replace('"@@"', value))
    assert_one_line_error(cli("report", out, "--out", tiny["root"] / "r.md"), "row 1", fragment)


def test_results_are_strict_json(tmp_path):
    from harness.measure.results import ResultsStore
    from harness.measure.row import ResultRow

    with ResultsStore(tmp_path / "o", env={"x": float("inf")}) as store:
        store.add(ResultRow(target="ort", bs=1, fps=float("nan")))
    text = (tmp_path / "o" / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_notes_given_as_one_string_stay_one_note():
    from harness.measure.row import ResultRow

    assert ResultRow.from_dict({"target": "ort", "bs": 1, "notes": "one note", "schema": 3}).notes == ["one note"]


# ---------------------------------------------------------------- messages

def test_printers_on_a_full_stdout_are_one_line():
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    for command in ("profiles", "targets"):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "harness", command], stdout=full, stderr=subprocess.PIPE,
                                  text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == ["error: cannot write to standard output (No space left on device); files written before it "
                         "are complete"], lines


def test_a_runtime_error_in_the_last_batch_is_a_failed_row(tiny, monkeypatch):
    """No bad input makes ONNX Runtime fail on the last batch only (a graph that needs batch 4 is padded
    to it), so the fault is injected where the runtime's error would surface: the real stream runs
    every batch but the last, which raises as onnxruntime does. The other target's rows stay."""
    from harness.targets.ort import OrtTarget

    real = OrtTarget.infer_stream

    def failing_last(self, items):
        items = list(items)
        yield from real(self, items[:-1])
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
                           "Conv node.\nStacktrace: ...")

    monkeypatch.setattr(OrtTarget, "infer_stream", failing_last)
    result = cli(*run_args(tiny, **{"--target": "ov,ort", "--bs": "4"}))
    assert_one_line_error(result, "1 of 2 row(s) failed; first: ort bs=4: the runtime failed: RuntimeError: "
                                  "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
    rows = {r["target"]: r for r in json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]}
    assert rows["ov"]["status"] == "ok" and rows["ort"]["status"] == "failed"
