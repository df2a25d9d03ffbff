"""Bad input ends in one line naming the problem (exit 2), never a traceback; nothing is lost."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from tests.tinymodel import write_tiny_profile


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def run_args(t, **over):
    args = {"--target": "ort", "--model": t["model"], "--profile": t["profile"], "--data": t["images"],
            "--ann": t["ann"], "--bs": "1", "--seconds": "0.1", "--max-seconds": "0.1", "--warmup": "0.05",
            "--out": t["root"] / "out"}
    args.update(over)
    flat = []
    for k, v in args.items():
        if v is None:
            continue
        flat += [k] if v is True else [k, v]
    return ["run", *flat]


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    # Progress bars may precede it; the error itself is the one last line.
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    err = lines[-1]
    for fragment in fragments:
        assert fragment in err, err


def test_tiny_run_succeeds_and_writes_results(tiny):
    result = cli(*run_args(tiny, **{"--bs": "1,4", "--target": "ort,ov"}))
    assert result.exit_code == 0, result.output
    rows = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert [(r["target"], r["bs"]) for r in rows] == [("ort", 1), ("ort", 4), ("ov", 1), ("ov", 4)]
    assert all(r["images"] == 6 for r in rows)
    assert rows[0]["map"] == pytest.approx(rows[2]["map"], abs=0.002)
    assert rows[1]["batch_mode"] == "dynamic"


def test_missing_model_file(tiny):
    assert_one_line_error(cli(*run_args(tiny, **{"--model": tiny["root"] / "nope.onnx"})), "model file not found", "nope.onnx")


def test_unknown_profile(tiny):
    assert_one_line_error(cli(*run_args(tiny, **{"--profile": "yolo-v99"})), "unknown profile 'yolo-v99'", "nanodet-m-320")


def test_unknown_target(tiny):
    assert_one_line_error(cli(*run_args(tiny, **{"--target": "tpu"})), "unknown target 'tpu'", "ort")


def test_bad_batch_sizes(tiny):
    assert_one_line_error(cli(*run_args(tiny, **{"--bs": "1,x"})), "--bs")


def test_outputs_that_do_not_fit_profile(tiny):
    wrong = write_tiny_profile(tiny["root"] / "wrong.toml", strides=[8, 16])
    assert_one_line_error(cli(*run_args(tiny, **{"--profile": wrong})), "do not fit", "output")


def test_input_that_does_not_fit_profile(tiny):
    wrong = write_tiny_profile(tiny["root"] / "wrong.toml", size=64)
    assert_one_line_error(cli(*run_args(tiny, **{"--profile": wrong})), "does not fit profile", "(3, 64, 64)")


def test_corrupt_model_file(tiny):
    bad = tiny["root"] / "corrupt.onnx"
    bad.write_bytes(os.urandom(2048))
    for target in ("ort", "ov"):
        assert_one_line_error(cli(*run_args(tiny, **{"--model": bad, "--target": target})), "corrupt.onnx")


def test_annotation_file_missing_not_json_not_coco(tiny):
    assert_one_line_error(cli(*run_args(tiny, **{"--ann": tiny["root"] / "none.json"})), "annotation file not found")
    garbage = tiny["root"] / "garbage.json"
    garbage.write_text("{not json")
    assert_one_line_error(cli(*run_args(tiny, **{"--ann": garbage})), "garbage.json", "not valid JSON")
    partial = tiny["root"] / "partial.json"
    partial.write_text(json.dumps({"images": []}))
    assert_one_line_error(cli(*run_args(tiny, **{"--ann": partial})), "partial.json", "annotations, categories")


def test_category_ids_the_profile_cannot_map(tiny):
    data = json.loads(tiny["ann"].read_text())
    data["categories"].append({"id": 42, "name": "alien"})
    data["annotations"][0]["category_id"] = 42
    tiny["ann"].write_text(json.dumps(data))
    assert_one_line_error(cli(*run_args(tiny)), "42 (alien)", "category_ids")


def test_truncated_and_missing_and_extra_images(tiny):
    images = tiny["images"]
    victim = images / "img_002.jpg"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert_one_line_error(cli(*run_args(tiny)), "img_002.jpg", "truncated JPEG", "--skip-bad-images")
    (images / "img_004.jpg").unlink()
    cv2.imwrite(str(images / "stray.jpg"), np.zeros((8, 8, 3), np.uint8))
    assert_one_line_error(cli(*run_args(tiny)), "img_004.jpg: listed in", "stray.jpg: in")
    result = cli(*run_args(tiny, **{"--skip-bad-images": True}))
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert row["images"] == 4  # 6 listed, one truncated, one missing; the stray is not listed
    assert len(row["skipped_images"]) == 3 and any("img_002.jpg" in s for s in row["skipped_images"])
    assert any("mAP is over the remaining 4" in n for n in row["notes"])
    assert "3 image(s) skipped" in (tiny["root"] / "out" / "report.md").read_text()


def test_undecodable_image(tiny):
    (tiny["images"] / "img_001.jpg").write_bytes(b"\xff\xd8this is not a jpeg\xff\xd9")
    assert_one_line_error(cli(*run_args(tiny)), "img_001.jpg", "cannot be decoded")


def test_existing_results_are_never_overwritten_silently(tiny):
    assert cli(*run_args(tiny)).exit_code == 0
    before = (tiny["root"] / "out" / "results.json").read_text()
    assert_one_line_error(cli(*run_args(tiny)), "already holds results", "--resume", "--overwrite")
    assert (tiny["root"] / "out" / "results.json").read_text() == before
    resumed = cli(*run_args(tiny, **{"--resume": True, "--bs": "1,2"}))
    assert resumed.exit_code == 0
    rows = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert [r["bs"] for r in rows] == [1, 2]
    assert rows[0] == json.loads(before)["rows"][0]  # the finished row was skipped, not re-run


def test_unwritable_out_fails_before_work(tiny):
    blocker = tiny["root"] / "a-file"
    blocker.write_text("x")
    assert_one_line_error(cli(*run_args(tiny, **{"--out": blocker / "sub"})), "not writable", "a-file")


@pytest.mark.slow
def test_interrupted_run_keeps_finished_rows(tiny):
    out = tiny["root"] / "killed"
    cmd = [sys.executable, "-m", "harness", *map(str, run_args(tiny, **{"--bs": "1,2,3,4,5,6", "--seconds": "1.5",
                                                                        "--max-seconds": "1.5", "--out": out}))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"
    deadline = time.time() + 300  # a loaded machine can take long to start and finish the first row
    while time.time() < deadline and not (results.exists() and json.loads(results.read_text())["rows"]):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    rows = json.loads(results.read_text())["rows"]
    assert 1 <= len(rows) < 6 and rows[0]["bs"] == 1
    resumed = subprocess.run(cmd + ["--resume", "--seconds", "0.1", "--max-seconds", "0.1"], capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(results.read_text())["rows"]
    assert [r["bs"] for r in final] == [1, 2, 3, 4, 5, 6]
    assert final[0] == rows[0]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real, nearly full filesystem: a 32 KiB tmpfs (needs root and mount rights)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk ({made.stderr.strip() or 'mount failed'})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_full_disk_fails_before_work(tiny, tiny_disk):
    result = cli(*run_args(tiny, **{"--out": tiny_disk / "out"}))
    assert_one_line_error(result, "not writable", "No space left on device")
    assert not (tiny_disk / "out" / "results.json").exists()


def test_failed_results_write_is_a_clear_error_and_keeps_finished_rows(tmp_path):
    from harness.core.errors import HarnessError
    from harness.measure.results import ResultsStore

    store = ResultsStore(tmp_path / "store", env={})
    store.add({"target": "ort", "model": "m", "profile": "p", "precision": "fp32", "bs": 1, "notes": []})
    before = store.path.read_text()
    moved = tmp_path / "moved"  # the output folder goes away under the run (an unmounted disk, say)
    store.out_dir.rename(moved)
    with pytest.raises(HarnessError, match="cannot write .*results.json"):
        store.add({"target": "ort", "model": "m", "profile": "p", "precision": "fp32", "bs": 2, "notes": []})
    assert (moved / "results.json").read_text() == before


@pytest.mark.parametrize("over,extra,fragments", [
    ({"--target": "ov", "--mode": "latency", "--hint": "THROUGHPUT"}, [],
     ("target ov: --mode: latency contradicts --hint THROUGHPUT",)),
    ({"--target": "ort", "--mode": "latency", "--streams": "2"}, [], ("target ort: --mode: latency contradicts --streams 2",)),
    ({"--target": "trt", "--mode": "throughput"}, ["-o", "timing=serial"],
     ("target trt: --mode: throughput contradicts -o timing= serial",)),
    ({"--mode": "fast"}, [], ("--mode", "'fast'", "latency", "throughput")),
    ({"--seconds": "5", "--max-seconds": "2"}, [], ("--max-seconds 2 is below --seconds 5",)),
    ({"--target-ci": "0"}, [], ("--target-ci 0", "between 0 and 1")),
])
def test_contradictory_or_impossible_timing_flags_are_one_line(tiny, over, extra, fragments):
    args = run_args(tiny, **over) + extra
    assert_one_line_error(cli(*args), *fragments)
    assert not (tiny["root"] / "out" / "results.json").exists()  # refused before anything ran
