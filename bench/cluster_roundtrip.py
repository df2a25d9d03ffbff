"""What `harness roundtrip --cluster` costs over the same command run on one host, on a two-node Ray cluster
started on this machine.

The "vendor tool" is tests/vendor_tools.py (ais_bench's command line; ONNX Runtime writes the outputs).
The cluster's second node holds `device:ais`, so the files really move between two nodes' object stores
(on one machine: no network, but the same put/get/stream path). Each variant is the whole command (a
fresh `python -m harness roundtrip`: preprocess, the tool, decode), repeated:

- local: no --cluster, the tool runs on this host on the files in place;
- object store: --cluster, inputs and outputs through Ray's object store;
- shared dir: --cluster --shared-dir, the files through a folder both nodes see.

Run from the repository root (needs the `cluster` extra):

    python bench/cluster_roundtrip.py --images 50 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_cluster(store_mib: int):
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback cluster only
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    Path("/tmp/ray").mkdir(exist_ok=True)
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
    node = {"num_cpus": 1, "object_store_memory": store_mib * 1024 * 1024, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "temp_dir": tempfile.mkdtemp(prefix="rt", dir="/tmp")})
    cluster.add_node(**node, resources={"device:ais": 1})
    cluster.wait_for_nodes()
    return cluster


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def roundtrip(args: list[str], out: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", "roundtrip", *args, "--out", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"roundtrip failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["status"] == "ok", row
    return seconds, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="demo images (--limit)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store-mib", type=int, default=300, help="object store per node")
    args = parser.parse_args()
    import ray

    from harness.data.demo import DEMO_PROFILE, demo_dataset, demo_model_path

    images, ann, _ = demo_dataset()
    tool = f"{sys.executable} {ROOT / 'tests' / 'vendor_tools.py'} ais --model {{model}} --input {{input}} " \
           "--output {output} --batchsize {batchsize}"
    base = ["--runner", "ais", "-m", str(demo_model_path()), "-p", DEMO_PROFILE, "--data", str(images), "--ann",
            str(ann), "--limit", str(args.images), "--tool-command", tool]
    cluster = start_cluster(args.store_mib)
    work = Path(tempfile.mkdtemp(prefix="roundtrip-bench-"))
    try:
        variants = {"local": [], "object store": ["--cluster", cluster.address],
                    "shared dir": ["--cluster", cluster.address, "--shared-dir", "{shared}"]}
        results: dict[str, list[tuple[float, dict]]] = {name: [] for name in variants}
        sizes = {}
        for i in range(args.repeats):
            for name, extra in variants.items():
                out = work / f"{name.replace(' ', '-')}-{i}"
                shared = work / f"shared-{i}"
                results[name].append(roundtrip(base + [a.replace("{shared}", str(shared)) for a in extra], out))
                if name == "object store":
                    sizes = {"inputs": folder_bytes(out / "prep"), "outputs": folder_bytes(out / "device-bs1")}
        maps = {row["map"] for runs in results.values() for _, row in runs}
        print(f"Ray {ray.__version__}; {args.images} demo images, ais emulator, bs 1; tool on the second node; "
              f"inputs {sizes['inputs'] / 1e6:.1f} MB, outputs {sizes['outputs'] / 1e6:.1f} MB; "
              f"mAP {'the same in every run' if len(maps) == 1 else 'DIFFERS: ' + str(sorted(maps))}")
        local = statistics.median(s for s, _ in results["local"])
        print("| variant | command wall (median) | vs local | tool alone (median) | task on the node (median) |")
        print("|---|---|---|---|---|")
        for name, runs in results.items():
            wall = statistics.median(s for s, _ in runs)
            tool_s = statistics.median(r["device_tool"]["seconds"] for _, r in runs)
            span = ("-" if name == "local" else
                    f"{statistics.median(r['cluster']['finished'] - r['cluster']['started'] for _, r in runs):.2f} s")
            print(f"| {name} | {wall:.2f} s | {wall / local:.2f}x | {tool_s:.2f} s | {span} |")
    finally:
        cluster.shutdown()
        Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
