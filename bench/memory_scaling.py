"""Peak RSS of `harness run` and `harness decode` against dataset size (issue #27).

coco-tiny's 80 images are replicated under new ids (symlinks, annotations copied with new image and
box ids) into a temporary folder at 80, 320 and 1280 images; each command runs in its own process and
its peak RSS is that child's ru_maxrss (os.wait4). `decode` reads the outputs of `harness emulate
--runner ais` of the same images (prepared once per size, untimed). Prints one table row per size and
the growth per image between the smallest and largest size.

Usage: python bench/memory_scaling.py [--sizes 80,320,1280] [--model M --profile P] [--only run|decode]
(it measures the harness of the checkout it lives in: every child runs from that checkout's root)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def replicate(images_dir: Path, ann_path: Path, count: int, out: Path) -> tuple[Path, Path]:
    """`count` images: coco-tiny's repeated under new ids and file names (symlinks), boxes copied."""
    ann = json.loads(ann_path.read_text())
    images, boxes = [], []
    by_image: dict[int, list] = {}
    for box in ann["annotations"]:
        by_image.setdefault(box["image_id"], []).append(box)
    folder = out / "images"
    folder.mkdir(parents=True)
    for k in range(count):
        src = ann["images"][k % len(ann["images"])]
        copy = k // len(ann["images"])
        new_id = src["id"] + copy * 10_000_000
        name = f"{copy:03d}_{src['file_name']}"
        (folder / name).symlink_to((images_dir / src["file_name"]).resolve())
        images.append({**src, "id": new_id, "file_name": name})
        for box in by_image.get(src["id"], []):
            boxes.append({**box, "id": len(boxes) + 1, "image_id": new_id})
    out_ann = out / "instances.json"
    out_ann.write_text(json.dumps({**ann, "images": images, "annotations": boxes}))
    return folder, out_ann


def peak_rss_mib(args: list[str]) -> float:
    """Run `python -m harness ARGS` in a child; its peak RSS in MiB (Linux ru_maxrss is in KiB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"harness {' '.join(args[:1])} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="80,320,1280")
    parser.add_argument("--model", default=str(SHARED / "models" / "nanodet-m-320.onnx"))
    parser.add_argument("--profile", default="nanodet-m-320")
    parser.add_argument("--data", default=str(SHARED / "data" / "coco-tiny" / "val2017"))
    parser.add_argument("--ann", default=str(SHARED / "data" / "coco-tiny" / "annotations" / "instances_val2017.json"))
    parser.add_argument("--only", choices=("run", "decode"), default=None, help="measure one command (the other: -)")
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]
    print(f"# memory_scaling.py: {opts.profile} ({Path(opts.model).name}), ort for run, ais outputs for decode")
    print("| images | run peak RSS MiB | decode peak RSS MiB |")
    print("| ---: | ---: | ---: |")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # one unmeasured run first: numba compiles the decoders once and caches them on disk, so no
        # measured command pays (in memory) for compiling
        images, ann = replicate(Path(opts.data), Path(opts.ann), min(sizes), Path(tmp) / "warm-up")
        peak_rss_mib(["run", "-t", "ort", "-m", opts.model, "-p", opts.profile, "--data", str(images), "--ann", str(ann),
                      "--out", str(Path(tmp) / "warm-up" / "run"), "--seconds", "0.2", "--max-seconds", "0.2",
                      "--warmup", "0.1", "--limit", "8"])
        for size in sizes:
            root = Path(tmp) / str(size)
            images, ann = replicate(Path(opts.data), Path(opts.ann), size, root)
            run = decode = float("nan")
            if opts.only != "decode":
                run = peak_rss_mib(["run", "-t", "ort", "-m", opts.model, "-p", opts.profile, "--data", str(images),
                                    "--ann", str(ann), "--out", str(root / "run"), "--seconds", "0.5",
                                    "--max-seconds", "0.5", "--warmup", "0.2"])
            if opts.only != "run":
                prep, outs = root / "prep", root / "ais"
                for args in (["preprocess", "-p", opts.profile, "--data", str(images), "--ann", str(ann), "--format",
                              "bin", "--model", opts.model, "--out", str(prep)],
                             ["emulate", "--runner", "ais", "-m", opts.model, "--prep", str(prep), "--out", str(outs),
                              "--output-dirname", "out"]):
                    subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, check=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
                decode = peak_rss_mib(["decode", "--bin", str(outs / "out"), "--prep", str(prep), "--ann", str(ann),
                                       "--out", str(root / "decode")])
            results.append((size, run, decode))
            print(f"| {size} | {run:.0f} | {decode:.0f} |", flush=True)
    (first, run0, dec0), (last, run1, dec1) = results[0], results[-1]
    print(f"growth per image from {first} to {last} images: run {(run1 - run0) / (last - first) * 1024:.0f} KiB, "
          f"decode {(dec1 - dec0) / (last - first) * 1024:.0f} KiB")


if __name__ == "__main__":
    main()
