"""`harness sensitivity` wall time in one process and with its variants fanned out over 1 and 2 Ray workers.

Builds a search on the bundled demo detector (synthetic calibration and subset images, exclude mode, the
top --top-k nodes, no type groups), then runs it, each into a fresh --out and without the variant cache
(every run writes its Q/DQ files): locally, on a one-node cluster (1 CPU), on a two-node cluster (1 CPU
each), and on the two-node cluster with each variant in --shards shards; then the local search once more
with a warm variant cache, and the cluster runs once more each with the warm cache (no Q/DQ file written
on the head: the workers' scoring alone is what 1 and 2 workers share). Prints the wall times, their
ratios and whether the exclude.txt files agree. Run from the repository root (needs the `cluster` extra):

    python bench/cluster_sensitivity.py --top-k 8 --subset 24
    python bench/cluster_sensitivity.py --top-k 1 --subset 120 --shards 2
    python bench/cluster_sensitivity.py --coco ../shared/data/coco-tiny --model ../shared/models/nanodet-m-416.onnx \
        --profile nanodet-m-416 --top-k 8 --subset 64 --copies 4

With --coco (a folder holding val2017/ and annotations/instances_val2017.json) and --model/--profile, the
search runs on that model: its first 16 images (by file name) calibrate, the next --subset are scored
(calibration and scoring never share an image); --copies K lists each scored image K times under new ids,
a longer pass for timing (80 COCO images are too few to time a fleet by).
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


def start_cluster(nodes: int):
    from ray.cluster_utils import Cluster

    Path("/tmp/ray").mkdir(exist_ok=True)
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "temp_dir": tempfile.mkdtemp(prefix="rt",
                                                                                                 dir="/tmp")})
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def search(args, out: Path, address: str | None, *extra) -> float:
    command = [sys.executable, "-m", "harness", "sensitivity", *map(str, args), "--out", str(out), *map(str, extra)]
    if address:
        command += ["--cluster", address]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"search failed ({out}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, default=8, help="variants scored (exclude mode)")
    parser.add_argument("--subset", type=int, default=24, help="search-subset images")
    parser.add_argument("--shards", type=int, default=2, help="shards per variant in the last cluster run")
    parser.add_argument("--coco", type=Path, help="a COCO folder (val2017/, annotations/): real images instead of the demo's")
    parser.add_argument("--model", type=Path, help="with --coco: the ONNX model to search")
    parser.add_argument("--profile", help="with --coco: the model's profile")
    parser.add_argument("--copies", type=int, default=1,
                        help="with --coco: score each image this many times under new ids (a longer pass, for timing)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of all the runs, side by side; the medians are printed")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback cluster only
    os.environ["PYTHONPATH"] = str(ROOT)
    from harness.data.demo import DEMO_PROFILE, DEMO_SEED, demo_model_path
    from harness.data.synthetic import generate_dataset

    root = Path(tempfile.mkdtemp(prefix="sens-bench-"))
    if args.coco:
        if not (args.model and args.profile):
            raise SystemExit("--coco needs --model and --profile")
        files = sorted((args.coco / "val2017").glob("*.jpg"))
        if len(files) < 16 + args.subset:
            raise SystemExit(f"--coco {args.coco}: {len(files)} images, fewer than 16 to calibrate + --subset {args.subset}")
        calib, images = root / "calib", root / "val"
        calib.mkdir()
        images.mkdir()
        for f in files[:16]:
            (calib / f.name).symlink_to(f.resolve())
        full = json.loads((args.coco / "annotations" / "instances_val2017.json").read_text())
        by_name = {i["file_name"]: i for i in full["images"]}
        listed, annotations = [], []
        for copy in range(args.copies):  # each scored image `copies` times, under new ids (timing only)
            for f in files[16:16 + args.subset]:
                image = {**by_name[f.name], "id": by_name[f.name]["id"] + copy * 10**7,
                         "file_name": f"{copy}_{f.name}"}
                (images / image["file_name"]).symlink_to(f.resolve())
                listed.append(image)
                for a in full["annotations"]:
                    if a["image_id"] == by_name[f.name]["id"]:
                        annotations.append({**a, "image_id": image["id"], "id": len(annotations) + 1})
        ann = root / "instances.json"  # the scored images' annotations only
        ann.write_text(json.dumps({**full, "images": listed, "annotations": annotations}))
        model, profile, what = args.model, args.profile, args.model.name
    else:
        calib, _ = generate_dataset(root / "calib", num_images=16, seed=DEMO_SEED, split="calib")
        images, ann = generate_dataset(root / "val", num_images=args.subset, seed=DEMO_SEED, split="val")
        model, profile, what = demo_model_path(), DEMO_PROFILE, "demo model"
    scored = args.subset * (args.copies if args.coco else 1)
    flags = ["-m", model, "-p", profile, "--calib", calib, "--data", images, "--ann", ann,
             "--subset", scored, "--resamples", 200, "--bench-seconds", 0.2, "--mode", "exclude",
             "--top-k", args.top_k, "--no-type-groups", "--max-drop", 0.02]
    sharded = f"2 workers, {args.shards} shards"
    cache = root / "variant-cache"
    search(flags, root / "fill", None, "--variant-cache", cache)  # fills the cache (not timed)
    times: dict[str, list[float]] = {}
    lists = set()

    def timed(name: str, out: Path, address, *extra) -> None:
        if out.exists():
            shutil.rmtree(out)
        times.setdefault(name, []).append(search(flags, out, address, *extra))
        lists.add((out / "exclude.txt").read_text())

    for _ in range(args.repeats):  # each round runs every configuration once, so drift hits them alike
        timed("local", root / "local", None, "--no-variant-cache")
        timed("local, warm variant cache", root / "cached", None, "--variant-cache", cache)
        for nodes in (1, 2):
            cluster = start_cluster(nodes)
            try:
                timed(f"{nodes} worker(s)", root / f"workers{nodes}", cluster.address, "--no-variant-cache")
                # the Q/DQ files from the cache: what is left is the scoring the workers share
                timed(f"{nodes} worker(s), warm cache", root / f"warm{nodes}", cluster.address, "--variant-cache", cache)
                if nodes == 2:
                    timed(sharded, root / "sharded", cluster.address, "--no-variant-cache", "--shards", args.shards)
            finally:
                cluster.shutdown()
                Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"sensitivity search, {what}, {args.top_k} exclude variants on {scored} images, "
          f"median of {args.repeats} round(s):")
    for name, seconds in median.items():
        spread = f" (runs {', '.join(f'{v:.1f}' for v in times[name])})" if args.repeats > 1 else ""
        print(f"  {name:26s} {seconds:6.1f} s  {seconds / median['local']:.2f} x local{spread}")
    print(f"  2 workers vs 1: {median['1 worker(s)'] / median['2 worker(s)']:.2f} x faster; "
          f"2 workers with {args.shards} shards vs 1 worker: {median['1 worker(s)'] / median[sharded]:.2f} x")
    print(f"  with the variant cache warm (the head writes no Q/DQ file; the scoring is what is shared): "
          f"2 workers vs 1: {median['1 worker(s), warm cache'] / median['2 worker(s), warm cache']:.2f} x faster")
    print(f"  exclude.txt the same in every run: {len(lists) == 1}")


if __name__ == "__main__":
    main()
