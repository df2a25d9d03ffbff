"""What `run --cluster` costs over a local run, on a two-node Ray cluster started on this machine.

Starts the same cluster as tests/test_cluster.py (one node with `device:ov`, one with `device:ort`, 1 CPU
each, ~100 MiB object store), then prints: the cluster's start time; the round trip of an empty task that
needs a device resource (one at a time, as rows are), on the driver's node and on the other node; and
one demo row (`ov`, bs 1, --limit 6, short timing loop) run locally and through the cluster, each
repeated, and the driver's connect alone. Run from the repository root (needs the `cluster` extra):

    python bench/cluster_overhead.py --tasks 50 --rows 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def start_cluster():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback cluster only
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                           os.environ.get("PYTHONPATH")) if p)
    Path("/tmp/ray").mkdir(exist_ok=True)
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "include_dashboard": False}
    start = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "resources": {"device:ov": 1},
                                                            "temp_dir": tempfile.mkdtemp(prefix="rt", dir="/tmp")})
    cluster.add_node(**node, resources={"device:ort": 1})
    cluster.wait_for_nodes()
    return cluster, time.perf_counter() - start


def empty_task_ms(ray, resource: str, count: int) -> list[float]:
    @ray.remote(max_retries=0)
    def empty():
        return None

    task = empty.options(resources={resource: 1}, num_cpus=1)
    ray.get(task.remote(), timeout=60)  # a worker started and warm
    times = []
    for _ in range(count):
        start = time.perf_counter()
        ray.get(task.remote(), timeout=60)
        times.append((time.perf_counter() - start) * 1000)
    return times


def row_seconds(address: str | None, repeats: int) -> list[float]:
    from harness import cluster as cluster_mod
    from harness.data.demo import DEMO_PROFILE, demo_dataset, demo_model_path
    from harness.measure import runner
    from harness.measure.envinfo import environment
    from harness.measure.results import ResultsStore
    from harness.profiles import load_profile
    from harness.targets import get_target

    images, ann, _ = demo_dataset()
    config = runner.RunConfig(target="ov", model=str(demo_model_path()), profile=load_profile(DEMO_PROFILE),
                              images_dir=images, ann_path=ann, batch_sizes=[1],
                              options=get_target("ov").parse_options({}), bench_seconds=0.2, max_seconds=0.3,
                              warmup_seconds=0.0, limit=6, keep_going=True)
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out, ResultsStore(out, environment()) as store:
            start = time.perf_counter()
            if address is None:
                runner.run(config, store)
            else:
                cluster_mod.run_rows(address, [config], store, {}, 600.0, say=lambda _: None)
            times.append(time.perf_counter() - start)
            assert store.rows and store.rows[0].ok, store.rows
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="empty tasks per node")
    parser.add_argument("--rows", type=int, default=3, help="repeats of the demo row, local and on the cluster")
    args = parser.parse_args()
    import ray

    cluster, started = start_cluster()
    try:
        print(f"two-node cluster started in {started:.1f} s (Ray {ray.__version__})")
        ray.init(address=cluster.address, log_to_driver=False)
        for resource, where in (("device:ov", "driver's node"), ("device:ort", "other node")):
            ms = empty_task_ms(ray, resource, args.tasks)
            print(f"empty task needing {resource} ({where}): median {statistics.median(ms):.1f} ms, "
                  f"max {max(ms):.1f} ms over {len(ms)}")
        ray.shutdown()
        from harness.cluster import connect

        connects = []
        for _ in range(args.rows):
            start = time.perf_counter()
            connect(cluster.address).shutdown()
            connects.append(time.perf_counter() - start)
        print(f"connect + disconnect (harness.cluster.connect): median {statistics.median(connects):.2f} s")
        local = row_seconds(None, args.rows)
        remote = row_seconds(cluster.address, args.rows)
        print(f"demo row ov bs=1 --limit 6: local median {statistics.median(local):.2f} s, through the cluster "
              f"median {statistics.median(remote):.2f} s (connect + fresh worker imports + task), ratio "
              f"{statistics.median(remote) / statistics.median(local):.2f}")
    finally:
        cluster.shutdown()
        Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
