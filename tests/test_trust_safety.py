"""Output folders are safe (issue 15): one command per --out (a real second process, a real crashed
holder), an unpredictable probe, no write through a symlink, names from prep.json and
--output-dirname kept inside their folders, a real full disk during preprocess/emulate leaves no
truncated file and ends in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.core.folders import OWN_FILES
from harness.measure.results import ResultsStore
from tests.test_cli_errors import assert_one_line_error, cli, run_args
from tests.test_npu import TINY_PROFILE, build_tiny_dataset, build_tiny_model

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- one command per --out

def test_second_store_on_the_same_out_fails_at_once(tmp_path):
    first = ResultsStore(tmp_path / "out", env={})
    with pytest.raises(HarnessError, match=r"output folder .*out is in use by another harness command \(pid "
                                           rf"{os.getpid()}: harness"):
        ResultsStore(tmp_path / "out", env={})
    first.close()
    ResultsStore(tmp_path / "out", env={}).close()  # released


def _holder(out: Path) -> subprocess.Popen:
    code = ("import sys, time; from harness.measure.results import ResultsStore; "
            f"s = ResultsStore({str(out)!r}, env={{}}); print('ready', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_run_on_an_out_held_by_another_process_and_after_it_crashed(tiny):
    out = tiny["root"] / "out"
    holder = _holder(out)
    try:
        started = time.monotonic()
        result = cli(*run_args(tiny))
        assert_one_line_error(result, f"is in use by another harness command (pid {holder.pid}:", "choose another --out")
        assert time.monotonic() - started < 30  # at once, not after the work
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
        holder.wait()
    assert (out / ".harness.lock").exists()  # the stale file is left behind...
    assert cli(*run_args(tiny)).exit_code == 0  # ...and does not block the next command


def test_preprocess_and_emulate_lock_their_out(tiny):
    out = tiny["root"] / "prep"
    holder = _holder(out)
    try:
        result = cli("preprocess", "-p", tiny["profile"], "--data", tiny["images"], "--ann", tiny["ann"],
                     "--format", "bin", "--out", out)
        assert_one_line_error(result, "is in use by another harness command", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- probe and symlinks

def test_probe_never_follows_a_planted_symlink(tiny):
    out = tiny["root"] / "out"
    out.mkdir()
    victim = tiny["root"] / "victim.txt"
    victim.write_text("precious")
    (out / ".write-probe").symlink_to(victim)  # the old fixed probe name
    assert cli(*run_args(tiny)).exit_code == 0
    assert victim.read_text() == "precious"
    assert not [p for p in out.iterdir() if p.name.startswith(".write-probe-")]  # the temp probe is gone


@pytest.mark.parametrize("name", ["results.json", "report.md"])
def test_results_files_that_are_symlinks_are_refused(tiny, name):
    out = tiny["root"] / "out"
    out.mkdir()
    victim = tiny["root"] / "victim.txt"
    victim.write_text("precious")
    (out / name).symlink_to(victim)
    assert_one_line_error(cli(*run_args(tiny)), f"{name} is a symlink", "refusing to write through it")
    assert victim.read_text() == "precious"


def test_report_out_that_is_a_symlink_is_refused(tiny):
    assert cli(*run_args(tiny)).exit_code == 0
    victim = tiny["root"] / "victim.md"
    victim.write_text("precious")
    page = tiny["root"] / "page.md"
    page.symlink_to(victim)
    assert_one_line_error(cli("report", tiny["root"] / "out", "--out", page), "page.md is a symlink")
    assert victim.read_text() == "precious"
    plot = tiny["root"] / "page2-throughput.png"
    plot.symlink_to(victim)
    assert_one_line_error(cli("report", tiny["root"] / "out", "--out", tiny["root"] / "page2.md"),
                          "page2-throughput.png is a symlink")
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------- names from prep.json, --output-dirname

@pytest.fixture
def npu(tmp_path):
    images, ann = build_tiny_dataset(tmp_path / "data", count=10)
    model = build_tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.toml").write_text(TINY_PROFILE)
    prep = tmp_path / "prep"
    result = cli("preprocess", "-p", tmp_path / "tiny.toml", "--data", images, "--ann", ann, "--format", "bin",
                 "--out", prep, "--model", model)
    assert result.exit_code == 0, result.output
    return {"root": tmp_path, "images": images, "ann": ann, "model": model, "prep": prep,
            "profile": tmp_path / "tiny.toml"}


@pytest.mark.parametrize("key,value", [("stem", "../evil"), ("stem", "/etc/evil"), ("input_file", "sub/img_0.bin"),
                                       ("input_file", "..")])
def test_prep_json_names_never_escape_the_prep_folder(npu, key, value):
    sidecar = npu["prep"] / "prep.json"
    data = json.loads(sidecar.read_text())
    data["images"][0][key] = value
    sidecar.write_text(json.dumps(data))
    result = cli("emulate", "--runner", "ais", "-m", npu["model"], "--prep", npu["prep"], "--out", npu["root"] / "o")
    assert_one_line_error(result, f"prep.json: images[0].{key} {value!r}: expected a plain file or folder name")


@pytest.mark.parametrize("name", ["../x", "/abs", "..", "a/b"])
def test_output_dirname_stays_under_out(npu, name):
    result = cli("emulate", "--runner", "ais", "-m", npu["model"], "--prep", npu["prep"], "--out", npu["root"] / "o",
                 "--output-dirname", name)
    assert_one_line_error(result, f"--output-dirname {name!r}: expected a plain file or folder name")
    assert not (npu["root"] / "x").exists()


# ---------------------------------------------------------------- a real full disk



def test_full_disk_during_preprocess(npu, small_disk):
    disk = small_disk("160k")  # the 64 KiB probe fits; 10 inputs of 48 KiB do not
    out = disk / "prep"
    result = cli("preprocess", "-p", npu["profile"], "--data", npu["images"], "--ann", npu["ann"], "--format", "bin",
                 "--out", out, "--model", npu["model"], "--workers", "1")
    assert_one_line_error(result, "cannot write", "No space left on device", "holds no prep.json")
    left = sorted(p for p in out.iterdir() if p.name not in OWN_FILES)
    assert left, "the disk filled before anything was written: the test proves nothing"
    assert all(p.suffix == ".bin" and p.stat().st_size == 64 * 64 * 3 * 4 for p in left), \
        [(p.name, p.stat().st_size) for p in left]  # no truncated file, no temp file, no prep.json


def test_full_disk_during_emulate(npu, small_disk):
    disk = small_disk("100k")
    (disk / "filler").write_bytes(b"\0" * (16 * 1024))  # about 84 KiB stay free: the 64 KiB probe fits,
    out = disk / "out"  # 10 outputs of 11424 bytes (12 KiB pages) do not
    result = cli("emulate", "--runner", "ais", "-m", npu["model"], "--prep", npu["prep"], "--out", out)
    assert_one_line_error(result, "cannot write", "No space left on device")
    written = [p for p in out.rglob("*.bin")]
    assert all(p.stat().st_size == 84 * 34 * 4 for p in written), [(p.name, p.stat().st_size) for p in written]
    assert not [p for p in out.rglob(".*") if p.name not in OWN_FILES]  # no temp file left
