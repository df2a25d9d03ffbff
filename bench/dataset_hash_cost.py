"""What hashing the images' bytes (the dataset identity covers content) adds to the check every run
already does (regular file, markers, strict decode), per image, and extrapolated to COCO val2017's
5000 images. Both in one thread, best of N passes, files in the page cache as in a run.

Usage: python bench/dataset_hash_cost.py [--images DIR] [--passes 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.core.fileio import sha256_file  # noqa: E402
from harness.images.imagefile import check_image_file  # noqa: E402

COCO_VAL_IMAGES = 5000


def _best(fn, files, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for path in files:
            fn(path)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "coco-tiny")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images under {args.images}")
    check = _best(check_image_file, files, args.passes)
    digest = _best(sha256_file, files, args.passes)
    per_image = digest / len(files)
    print(f"{len(files)} images, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
    print(f"check {check / len(files) * 1e3:.2f} ms/image, hash {per_image * 1e3:.3f} ms/image "
          f"(hash/check = {digest / check:.3f})")
    print(f"hash of {COCO_VAL_IMAGES} images at this size: {per_image * COCO_VAL_IMAGES:.2f} s")


if __name__ == "__main__":
    main()
