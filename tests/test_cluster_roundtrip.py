"""`harness roundtrip --cluster` on a real two-node Ray cluster on this machine (conftest's `cluster`): the
head holds `device:ais`, the other node `device:vamp`. The "vendor tools" are tests/vendor_tools.py (the
ais_bench / vamp command lines, outputs written by `harness emulate`'s code). Rows must equal the manual
preprocess -> emulate -> decode flow's; a failing tool is one line and a failed row; a missing resource is
refused before anything is prepared."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.data.demo import DEMO_PROFILE, demo_model_path
from harness.npu import FILE_TOOLS
from tests.conftest import alive_nodes

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="ray is not installed (pip install '.[cluster]')")]

#: the two nodes of conftest's `cluster` fixture (head first)
RAY_NODES = ({"device:ais": 1}, {"device:vamp": 1})
ROOT = Path(__file__).resolve().parent.parent
TOOLS = f"{sys.executable} {ROOT / 'tests' / 'vendor_tools.py'}"
AIS = f"{TOOLS} ais --model {{model}} --input {{input}} --output {{output}} --batchsize {{batchsize}}"
VAMP = (f"{TOOLS} vamp -m {{model}} --vdsp_params {{input}}/vdsp_params.json -b {{batchsize}} "
        "-s [3,{height},{width}] --datalist {datalist} --path_output {output}")
IMAGES = "4"
METRICS = ("map", "map50", "map75", "per_class_ap", "detections", "images", "status", "source", "identity")


def harness(*args, timeout=180) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    return done.returncode, done.stdout


def data_args(demo_data) -> list:
    images, ann = demo_data
    return ["-p", DEMO_PROFILE, "--data", images, "--ann", ann]


def rows_of(out) -> dict:
    return {r["bs"]: r for r in json.loads((Path(out) / "results.json").read_text())["rows"]}


def manual_flow(demo_data, tmp_path, runner: str, batch_sizes=(1,)) -> dict:
    """The manual way, in this process: preprocess once, then emulate (the device's part) and decode per
    batch size; the rows by batch size."""
    from click.testing import CliRunner

    from harness.cli import main

    def cli(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    tool = FILE_TOOLS.get(runner)
    model, prep = demo_model_path(), tmp_path / "prep"
    cli("preprocess", *data_args(demo_data), "--format", tool.input_format, "--model", model, "--out", prep,
        "--limit", IMAGES)
    rows = {}
    for bs in batch_sizes:
        outputs, results = tmp_path / f"device{bs}", tmp_path / f"results{bs}"
        cli("emulate", "--runner", runner, "-m", model, "--prep", prep, "--out", outputs, "--batchsize", bs)
        cli("decode", tool.decode_flag, outputs, "--prep", prep, "--ann", demo_data[1], "--out", results,
            "--save-detections", "--bs", bs)
        rows[bs] = rows_of(results)[bs] | {"folder": str(results)}
    return rows


def assert_same_rows(row: dict, manual: dict, out: Path) -> None:
    """Same metrics, identity and saved detections as the manual flow (only where the tool ran differs)."""
    from harness.measure.artifacts import read_detections

    assert row["status"] == "ok", row
    for key in METRICS:
        assert row[key] == manual[key], key
    mine, theirs = (read_detections(Path(folder) / r["artifacts"]["detections"])
                    for folder, r in ((out, row), (manual["folder"], manual)))
    assert mine.images == theirs.images and mine.detections == theirs.detections and mine.detections
    assert row["artifacts"]["detections_sha256"] == manual["artifacts"]["detections_sha256"]


def test_ais_through_the_object_store_equals_the_manual_flow(cluster, demo_data, tmp_path):
    manual = manual_flow(demo_data, tmp_path / "manual", "ais", (1, 2))
    out = tmp_path / "cluster"
    rc, said = harness("roundtrip", "--runner", "ais", "-m", demo_model_path(), *data_args(demo_data), "--limit", IMAGES,
                       "--bs", "1,2", "--tool-command", AIS, "--save-detections", "--out", out,
                       "--cluster", cluster.address)
    assert rc == 0, said
    assert "files through the object store" in said
    rows = rows_of(out)
    head = next(n["NodeID"] for n in alive_nodes(cluster.address) if "device:ais" in n["Resources"])
    for bs in (1, 2):
        assert_same_rows(rows[bs], manual[bs], out)
        assert rows[bs]["cluster"]["node_id"] == head  # the node holding device:ais ran the tool
        assert rows[bs]["device_tool"]["argv"][2:4] == ["ais", "--model"]
        assert rows[bs]["bs"] == bs and rows[bs]["latency_samples"] == {1: 4, 2: 2}[bs]  # the tool's own batches
    # --resume: nothing is prepared or submitted again
    rc, said = harness("roundtrip", "--runner", "ais", "-m", demo_model_path(), *data_args(demo_data), "--limit",
                       IMAGES, "--bs", "1,2", "--tool-command", AIS, "--out", out, "--cluster", cluster.address,
                       "--resume")
    assert rc == 0 and said.count("skipped (--resume)") == 2 and "submitted" not in said, said


def test_vamp_through_a_shared_dir_on_the_other_node_equals_the_manual_flow(cluster, demo_data, tmp_path):
    manual = manual_flow(demo_data, tmp_path / "manual", "vamp")[1]
    out, shared = tmp_path / "cluster", tmp_path / "shared"
    rc, said = harness("roundtrip", "--runner", "vamp", "-m", demo_model_path(), *data_args(demo_data), "--limit",
                       IMAGES, "--tool-command", VAMP, "--save-detections", "--out", out, "--cluster", cluster.address,
                       "--shared-dir", shared)
    assert rc == 0, said
    row = rows_of(out)[1]
    assert_same_rows(row, manual, out)
    other = next(n["NodeID"] for n in alive_nodes(cluster.address) if "device:vamp" in n["Resources"])
    assert row["cluster"]["node_id"] == other
    assert (shared / "device-bs1" / "output_000003.npz").is_file() and not (out / "device-bs1").exists()


def test_a_failing_tool_is_one_line_and_a_failed_row(cluster, demo_data, tmp_path):
    out = tmp_path / "out"
    broken = AIS.replace("{model}", str(tmp_path / "absent.onnx"))
    rc, said = harness("roundtrip", "--runner", "ais", "-m", demo_model_path(), *data_args(demo_data), "--limit",
                       IMAGES, "--tool-command", broken, "--out", out, "--cluster", cluster.address)
    assert rc == 2 and "Traceback" not in said, said
    row = rows_of(out)[1]
    assert row["status"] == "failed"
    assert row["error"].startswith("ais_bench on ") and " exited with status 1 after " in row["error"]
    assert row["error"].endswith(f"model file not found: {tmp_path / 'absent.onnx'}"), row["error"]
    assert said.strip().splitlines()[-1] == f"error: 1 of 1 row(s) failed; first: ascend bs=1: {row['error']}"


def _tools_with(marker: str) -> list[tuple[int, int]]:
    """(pid, parent pid) of the running tools (`python -c ...`) whose arguments end with marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if len(argv) > 2 and argv[1] == "-c" and marker in argv[2:]:
                    stat = (entry / "stat").read_text()
                    found.append((int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])))
            except OSError:
                continue
    return found


def test_a_killed_worker_is_a_failed_row_and_takes_its_tool_with_it(cluster, demo_data, tmp_path):
    """SIGKILL to the Ray worker running the tool: a failed row with Ray's reason, and the tool (which the
    worker can no longer stop) is gone too, so it cannot share the device with the next task."""
    import signal
    import time
    import uuid

    out, marker = tmp_path / "out", f"sleeping-tool-{uuid.uuid4().hex}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)' {{output}} {marker}"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "roundtrip", "--runner", "ais", "-m", demo_model_path(),
                             *map(str, data_args(demo_data)), "--limit", IMAGES, "--tool-command", sleeper, "--out",
                             str(out), "--cluster", cluster.address], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline, tools = time.monotonic() + 90, []
    while not tools and time.monotonic() < deadline and proc.poll() is None:
        tools = _tools_with(marker)
        time.sleep(0.1)
    assert tools, proc.communicate(timeout=30)[0]
    tool, worker = tools[0]
    assert Path(f"/proc/{worker}/cmdline").read_bytes().startswith(b"ray::harness ais_bench bs=1")
    os.kill(worker, signal.SIGKILL)
    said, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in said, said
    row = rows_of(out)[1]
    assert row["status"] == "failed" and row["error"].startswith("cluster worker failed: "), row
    deadline = time.monotonic() + 10
    while Path(f"/proc/{tool}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{tool}").exists(), "the tool outlived its worker"


def test_a_missing_device_resource_is_refused_before_anything_is_prepared(cluster, demo_data, tmp_path):
    out = tmp_path / "out"
    rc, said = harness("roundtrip", "--runner", "ais", "-m", demo_model_path(), *data_args(demo_data), "--limit",
                       IMAGES, "--tool-command", AIS, "--out", out, "--cluster", cluster.address,
                       "-o", "device_resource=device:ascend0")
    lines = [line for line in said.splitlines() if line.strip()]
    assert rc == 2 and "Traceback" not in said, said
    assert lines[-1].startswith("error: --cluster: no node has resource device:ascend0 (target ais); nodes: ")
    assert "(device:ais, 2 CPU)" in lines[-1] and "(device:vamp, 2 CPU)" in lines[-1], lines[-1]
    assert not (out / "prep").exists()  # refused before preprocessing
    assert not (out / "results.json").exists() or not rows_of(out)
