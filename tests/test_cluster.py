"""`run --cluster` on a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster): one node
holds the `device:ov` resource, the other `device:ort`. Rows must equal the local run's, keep to their
node, never overlap on one device; a missing resource is refused up front and a killed worker is a
failed row. The cluster starts once for the module (~11 s, ~0.7 GB)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.data.demo import DEMO_PROFILE, demo_model_path
from tests.conftest import alive_nodes

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install '.[cluster]')")

ROOT = Path(__file__).resolve().parent.parent
IMAGES = "6"
QUICK = ["--seconds", "0.2", "--max-seconds", "0.3", "--warmup", "0", "--limit", IMAGES]
SAVE = ["--save-detections", "--save-outputs", "2"]
METRICS = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "per_class_ap", "detections", "images")


def test_ray_is_not_imported_without_cluster():
    """run without --cluster never loads Ray: the cluster module imports it only when connecting."""
    code = ("import sys, harness.cli.run, harness.cluster, harness.measure.runner; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0


#: the two nodes of conftest's `cluster` fixture (head first): one device each
RAY_NODES = ({"device:ov": 1}, {"device:ort": 1})


def harness_run(args, **popen):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def run_args(demo_data, out, targets="ov,ort", bs="1,4"):
    images, ann = demo_data
    return ["-t", targets, "--bs", bs, "-m", str(demo_model_path()), "-p", DEMO_PROFILE, "--data", str(images),
            "--ann", str(ann), "--out", str(out), *QUICK]


def finish(proc, timeout=120):
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


def rows_of(out) -> list[dict]:
    return json.loads((Path(out) / "results.json").read_text())["rows"]


class LocalRun:
    """The single-process run the cluster runs are compared with (ov, ort x bs 1, 4, files saved): started
    when the module's first test needs it, running beside that test's cluster run, waited for once."""

    def __init__(self, demo_data, out: Path):
        self.out = out
        self.proc = harness_run([*run_args(demo_data, out), *SAVE])
        self.finished = False

    def done(self) -> Path:
        if not self.finished:
            rc, output = finish(self.proc)
            assert rc == 0, output
            self.finished = True
        return self.out


@pytest.fixture(scope="module")
def local_run(demo_data, tmp_path_factory) -> LocalRun:
    run = LocalRun(demo_data, tmp_path_factory.mktemp("local") / "out")
    yield run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.communicate()


def assert_same_as_local(out: Path, local: Path) -> dict:
    """Every row's metrics, saved detections and saved outputs equal the local run's; the rows by key."""
    from harness.measure.artifacts import read_detections, read_outputs

    local_rows = {(r["target"], r["bs"]): r for r in rows_of(local)}
    rows = {(r["target"], r["bs"]): r for r in rows_of(out)}
    assert set(local_rows) == {("ov", 1), ("ov", 4), ("ort", 1), ("ort", 4)} and set(rows) <= set(local_rows)
    for key, row in rows.items():
        assert row["status"] == "ok", row
        assert {m: row[m] for m in METRICS} == {m: local_rows[key][m] for m in METRICS}, key
        assert row["images"] == int(IMAGES)
        mine, theirs = (read_detections(folder / r["artifacts"]["detections"])
                        for folder, r in ((out, row), (local, local_rows[key])))
        assert mine.images == theirs.images and mine.detections == theirs.detections, key
        assert row["artifacts"]["detections_sha256"] == local_rows[key]["artifacts"]["detections_sha256"]
        mine, theirs = (read_outputs(folder / r["artifacts"]["outputs"])
                        for folder, r in ((out, row), (local, local_rows[key])))
        assert mine.image_ids == theirs.image_ids and len(mine.arrays) == 2
        for a, b in zip(mine.arrays, theirs.arrays):
            assert all((x == y).all() for x, y in zip(a, b)), key
    listed = (out / ".harness-manifest.jsonl").read_text()  # the folder's own files: --overwrite removes them
    assert all(f'"{r["artifacts"][kind]}"' in listed for r in rows.values() for kind in ("detections", "outputs"))
    return rows


@needs_ray
@pytest.mark.slow
def test_rows_equal_local_run_on_their_nodes_without_overlap(cluster, demo_data, local_run, tmp_path):
    # one CPU a row: the ov rows could run side by side on either node but for their device resource
    rc, out = finish(harness_run([*run_args(demo_data, tmp_path / "cluster"), *SAVE, "--cluster", cluster.address,
                                  "-o", "device_cpus=1"]))
    assert rc == 0, out
    rows = assert_same_as_local(tmp_path / "cluster", local_run.done())  # the saved files came back from the workers
    assert len(rows) == 4
    # each target's rows ran on the node holding its device resource (independently: ray.nodes())
    node_of = {next(k for k in n["Resources"] if k.startswith("device:")): n["NodeID"]
               for n in alive_nodes(cluster.address)}
    for (target, _), row in rows.items():
        assert row["cluster"]["node_id"] == node_of[f"device:{target}"], row["cluster"]
        assert row["machine_state"] is not None and row["e2e_fps"] is not None
    report = (tmp_path / "cluster" / "report.md").read_text()
    for (target, bs), row in rows.items():
        assert f"- {target} bs={bs}: {row['cluster']['host']} ({row['cluster']['ip']}, node " \
               f"{row['cluster']['node_id'][:8]};" in report
    # two rows of one device never overlap in time
    spans = sorted((rows[("ov", bs)]["cluster"]["started"], rows[("ov", bs)]["cluster"]["finished"]) for bs in (1, 4))
    assert spans[0][1] <= spans[1][0], spans
    # --resume submits nothing: every row is there
    rc, out = finish(harness_run([*run_args(demo_data, tmp_path / "cluster"), "--cluster", cluster.address,
                                  "--resume"]))
    assert rc == 0 and out.count("skipped (--resume)") == 4, out
    assert {(r["target"], r["bs"]): r["cluster"] for r in rows_of(tmp_path / "cluster")} == \
        {k: r["cluster"] for k, r in rows.items()}


@needs_ray
@pytest.mark.slow
def test_sharded_accuracy_pass_equals_the_local_run_and_feeds_report_fidelity(cluster, demo_data, local_run,
                                                                               tmp_path):
    """--accuracy-shards 2: each row's pass in two shards on the workers, merged and scored once: the same
    detections and mAP as the single-process run; the saved files serve report --fidelity."""
    from tests.test_cli_errors import cli

    out = tmp_path / "sharded"
    rc, output = finish(harness_run([*run_args(demo_data, out, bs="4"), *SAVE, "--cluster", cluster.address,
                                     "--accuracy-shards", "2"]))
    assert rc == 0, output
    rows = assert_same_as_local(out, local_run.done())
    assert set(rows) == {("ov", 4), ("ort", 4)}
    nodes = {n["NodeID"] for n in alive_nodes(cluster.address)}
    for row in rows.values():
        shards = row["cluster"]["accuracy_shards"]
        assert [s["images"] for s in shards] == [4, 2], shards  # whole batches: 6 images at bs 4 -> 4 + 2
        assert {s["node_id"] for s in shards} <= nodes
        assert row["e2e_fps"] is None and all(v is None for v in row["stage_ms"].values())
        assert any(n.startswith("accuracy pass in 2 shard(s) on Ray workers") for n in row["notes"]), row["notes"]
    report = tmp_path / "fidelity.md"
    done = cli("report", out, "--fidelity", "--out", report)
    assert done.exit_code == 0, done.output
    section = report.read_text().split("## Fidelity against ort fp32", 1)[1]
    assert len([line for line in section.splitlines() if line.startswith("| ov ")]) == 1, section
    assert "Tensor error per output (2 saved images)" in section


@needs_ray
@pytest.mark.slow
def test_missing_resource_is_refused_up_front(cluster, demo_data, tmp_path):
    proc = harness_run([*run_args(demo_data, tmp_path / "out", targets="ov", bs="1"), "--cluster", cluster.address,
                        "-o", "device_resource=device:npu"])
    rc, out = finish(proc, timeout=90)
    lines = [line for line in out.splitlines() if line.strip()]
    assert rc == 2, out
    assert lines[-1].startswith("error: --cluster: no node has resource device:npu (target ov); nodes: ")
    assert "(device:ov, 2 CPU)" in lines[-1] and "(device:ort, 2 CPU)" in lines[-1], lines[-1]
    assert "Traceback" not in out
    assert not (tmp_path / "out" / "results.json").exists() or not rows_of(tmp_path / "out")
    # nothing left pending on the cluster: all of its CPUs are free again
    import ray

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        deadline = time.monotonic() + 10
        while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 4
    finally:
        ray.shutdown()


def _task_workers() -> list[int]:
    """pids of Ray workers running a harness row right now (Ray titles a busy worker `ray::<task name>`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("ray::harness "):
                found.append(int(entry.name))
    return found


@needs_ray
@pytest.mark.slow
def test_killed_worker_is_a_failed_row_and_the_sweep_goes_on(cluster, demo_data, tmp_path):
    args = run_args(demo_data, tmp_path / "out", bs="1")
    args[args.index("--seconds") + 1], args[args.index("--max-seconds") + 1] = "2", "2"
    proc = harness_run([*args, "--cluster", cluster.address])
    deadline, victims = time.monotonic() + 60, []
    while not victims and time.monotonic() < deadline and proc.poll() is None:
        victims = _task_workers()
        time.sleep(0.05)
    assert victims, "no worker ran a row"
    os.kill(victims[0], signal.SIGKILL)
    rc, out = finish(proc)
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 2, out
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("cluster worker failed: "), rows
    assert "WorkerCrashedError" in failed[0]["error"] or "died" in failed[0]["error"], failed[0]["error"]
    assert "--cluster: 2 row(s) submitted (device:ov x2 CPU, device:ort x2 CPU)" in out  # all of each node's CPUs
    assert [r["status"] for r in rows if r is not failed[0]] == ["ok"]
    assert rc != 0  # a failed row fails the command, as in a local run


@needs_ray
@pytest.mark.slow
def test_a_row_past_cluster_timeout_is_cancelled_and_failed(cluster, demo_data, tmp_path):
    """A row not back within --cluster-timeout is cancelled and becomes a failed row saying so, and the
    command ends; it is never waited on forever (harness.cluster.take_lost, shared with roundtrip)."""
    args = run_args(demo_data, tmp_path / "out", bs="1")
    args[args.index("--seconds") + 1], args[args.index("--max-seconds") + 1] = "30", "30"
    started = time.monotonic()
    rc, out = finish(harness_run([*args, "--cluster", cluster.address, "--cluster-timeout", "3"]))
    rows = rows_of(tmp_path / "out")
    assert [r["status"] for r in rows] == ["failed", "failed"], out
    assert {r["error"] for r in rows} == {"cluster worker failed: no result within --cluster-timeout; cancelled"}
    assert rc != 0 and time.monotonic() - started < 28  # cancelled, not left to finish their 30 s loops


def test_a_row_reserves_its_device_nodes_cpus_and_a_missing_resource_is_one_line():
    """plan_resources over node records as ray.nodes() returns them (no cluster needed)."""
    from harness.cluster import plan_resources
    from harness.core.errors import HarnessError

    nodes = [{"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 16.0, "device:ov": 1.0}},
             {"Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0, "device:ov": 1.0,
                                                                              "device:trt": 1.0, "GPU": 1.0}},
             {"Alive": False, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 4.0, "device:npu": 1.0}}]
    assert plan_resources(nodes, {"device:ov": "ov", "device:trt": "trt"}, None) == {"device:ov": 8.0,
                                                                                       "device:trt": 8.0}
    assert plan_resources(nodes, {"device:trt": "trt"}, 2.0) == {"device:trt": 2.0}
    with pytest.raises(HarnessError) as err:  # a dead node's resource does not count
        plan_resources(nodes, {"device:npu": "npu"}, None)
    assert str(err.value).startswith("--cluster: no node has resource device:npu (target npu); nodes: "
                                     "10.0.0.1 (device:ov, 16 CPU); 10.0.0.2 (device:ov, device:trt, 8 CPU).")
    with pytest.raises(HarnessError, match="device_cpus=9: the nodes with device:trt have 8 CPU"):
        plan_resources(nodes, {"device:trt": "trt"}, 9.0)


@needs_ray
@pytest.mark.slow
def test_sensitivity_variants_on_the_cluster_find_the_local_exclusion_list(cluster, tmp_path):
    """The hostile demo (tests/tinymodel.py): the variants and greedy steps scored on the cluster's workers,
    each in two shards of the subset, give the same mAP each and the same exclude.txt as the single-process
    search; the cluster search finds the local one's Q/DQ variants in the shared variant cache."""
    from harness.data.demo import DEMO_SEED
    from harness.data.synthetic import generate_dataset
    from harness.sensitivity.store import RESULTS_FILE, read_results
    from tests.test_cli_errors import cli
    from tests.tinymodel import HOSTILE_TARGET, write_hostile_demo

    calib, _ = generate_dataset(tmp_path / "calib", num_images=8, seed=DEMO_SEED, split="calib")
    images, ann = generate_dataset(tmp_path / "val", num_images=8, seed=DEMO_SEED, split="val")
    model = write_hostile_demo(tmp_path / "hostile.onnx")
    args = ["-m", model, "-p", DEMO_PROFILE, "--calib", calib, "--data", images, "--ann", ann, "--subset", 8,
            "--resamples", 100, "--bench-seconds", 0.1, "--mode", "include", "--top-k", 2, "--no-type-groups",
            "--max-drop", 0.02, "--variant-cache", tmp_path / "cache"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "harness", "sensitivity", *map(str, args)]
    local = cli("sensitivity", *args, "--out", tmp_path / "local")  # in this process: the cluster's is a subprocess
    assert local.exit_code == 0, (local.output, local.stderr)
    remote = subprocess.run([*command, "--out", str(tmp_path / "cluster"), "--cluster", cluster.address, "--shards", "2"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "Q/DQ variants: 0 written, " in remote.stdout, remote.stdout

    def scored(out, kind):
        return {r["key"]: r["map"] for r in read_results(out / RESULTS_FILE)[1] if r["kind"] == kind}

    assert len(scored(tmp_path / "local", "variant")) == 2
    assert scored(tmp_path / "cluster", "variant") == scored(tmp_path / "local", "variant")
    # the greedy restore's steps: their passes in shards too (their img/s measured on the command's host)
    assert len(scored(tmp_path / "local", "step")) >= 1
    assert scored(tmp_path / "cluster", "step") == scored(tmp_path / "local", "step")
    excluded = [(tmp_path / out / "exclude.txt").read_text() for out in ("local", "cluster")]
    assert excluded[0] == excluded[1] and HOSTILE_TARGET in excluded[0]


def test_a_rows_files_travel_whole_or_fail_the_row(tmp_path):
    """row_files / place_row_files, the path a cluster row's saved files take (no cluster needed): the
    bytes land in the command's folder as the worker wrote them; a damaged or missing file is one line."""
    import numpy as np

    from harness.core.errors import HarnessError
    from harness.core.folders import OutputFolder
    from harness.measure.artifacts import SavedOutputs, place_row_files, row_files, save_row_artifacts
    from harness.measure.row import ResultRow

    row = ResultRow("ov", 1, model="m.onnx", precision="fp32")
    detections = [{"image_id": 7, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    outputs = SavedOutputs([7], ["a.jpg"], ["out"], [[np.arange(6, dtype=np.float32).reshape(2, 3)]])
    row.artifacts = save_row_artifacts(tmp_path / "worker", row, detections, {7: "a.jpg"}, outputs)
    files = row_files(tmp_path / "worker", row)
    assert sorted(files) == sorted([row.artifacts["detections"], row.artifacts["outputs"]])
    with OutputFolder(tmp_path / "head") as folder:
        place_row_files(tmp_path / "head", row, files)
        assert all(f.split("/")[0] in folder.listed for f in files)  # in the manifest: --overwrite removes them
    for rel, data in files.items():
        assert (tmp_path / "head" / rel).read_bytes() == data == (tmp_path / "worker" / rel).read_bytes()
    damaged = {**files, row.artifacts["outputs"]: files[row.artifacts["outputs"]][:-1]}
    with pytest.raises(HarnessError, match="its outputs file artifacts/.* did not come back intact"):
        place_row_files(tmp_path / "again", row, damaged)
    with pytest.raises(HarnessError, match="its detections file .* did not come back intact"):
        place_row_files(tmp_path / "again", row, {})


@pytest.mark.parametrize("count,shards,bs", [(6, 2, 1), (6, 2, 4), (10, 3, 4), (3, 8, 1), (1, 2, 4), (17, 4, 2)])
def test_shards_are_contiguous_runs_of_whole_batches(count, shards, bs):
    """shard_images (no cluster needed): in order, every image once, each shard but the last a whole number
    of batches, so each batch is the single-process pass's; never an empty shard."""
    from harness.cluster.shards import shard_images

    images = [(100 + i, f"img{i}.jpg") for i in range(count)]
    parts = shard_images(images, shards, bs)
    assert [item for part in parts for item in part] == images
    assert 1 <= len(parts) <= min(shards, -(-count // bs)) and all(parts)
    assert all(len(part) % bs == 0 for part in parts[:-1])
    batches = [images[i:i + bs] for i in range(0, count, bs)]
    assert [part[i:i + bs] for part in parts for i in range(0, len(part), bs)] == batches


@needs_ray
@pytest.mark.slow
def test_an_untimed_worker_task_runs_its_runtime_on_the_cpus_it_was_given(cluster):
    """A one-CPU shard or variant task gets one request on one thread (litert: num_threads=1) unless the
    user set a count; without it, ONNX Runtime would run a request per core of the host in every task there
    (measured: two such tasks on a 2-core host each ran 1.7x slower, and 2 workers were no faster than 1)."""
    import ray

    from harness.cluster.shards import task_options
    from harness.targets import get_target

    def threads_in_task(target: str, given: dict) -> dict:
        cls = get_target(target)
        return dataclasses.asdict(task_options(cls, cls.parse_options(given) if given else None))

    ray.init(address=cluster.address)
    try:
        task = ray.remote(threads_in_task).options(num_cpus=1, max_retries=0)
        got = ray.get([task.remote("ort", {}), task.remote("ov", {}), task.remote("litert", {}),
                       task.remote("ort", {"threads": 2})], timeout=120)
    finally:
        ray.shutdown()
    assert [got[0]["threads"], got[1]["threads"], got[2]["num_threads"], got[3]["threads"]] == [1, 1, 1, 2]
    # one request in flight, not one per core of the host; a user's own thread count keeps its streams
    assert [got[0]["streams"], got[1]["streams"], got[2]["streams"], got[3]["streams"]] == [1, 1, 1, None]
    # outside a Ray task nothing is bounded
    assert task_options(get_target("ort"), None).threads is None
