"""Split a COCO image folder by image id into a calibration half and an evaluation half.

    python bench/split_coco.py --images ../shared/data/coco-tiny/val2017 \
        --ann ../shared/data/coco-tiny/annotations/instances_val2017.json --calib 40 --out /tmp/coco-split

writes OUT/calib/images (symlinks to the `--calib` images with the lowest ids, with OUT/calib/instances.json
for `harness sensitivity --data/--ann`) and OUT/eval/images + OUT/eval/instances.json (the other
images and only their annotations), so calibration, the sensitivity search and the final evaluation
never share an image (docs/quantize.md, docs/sensitivity.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_half(images: Path, ann: dict, keep: list[dict], out: Path) -> None:
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for image in keep:
        link = folder / image["file_name"]
        if not link.exists():
            link.symlink_to((images / image["file_name"]).resolve())
    ids = {image["id"] for image in keep}
    half = {**ann, "images": keep, "annotations": [a for a in ann["annotations"] if a["image_id"] in ids]}
    (out / "instances.json").write_text(json.dumps(half))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--ann", type=Path, required=True)
    parser.add_argument("--calib", type=int, required=True, help="images (lowest ids) for the calibration half")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ann = json.loads(args.ann.read_text())
    images = sorted(ann["images"], key=lambda image: image["id"])
    if not 0 < args.calib < len(images):
        raise SystemExit(f"--calib {args.calib}: expected 1..{len(images) - 1} ({len(images)} images)")
    write_half(args.images, ann, images[: args.calib], args.out / "calib")
    write_half(args.images, ann, images[args.calib:], args.out / "eval")
    print(f"{args.out / 'calib'}: {args.calib} images (ids {images[0]['id']}..{images[args.calib - 1]['id']}); "
          f"{args.out / 'eval'}: {len(images) - args.calib} images")


if __name__ == "__main__":
    main()
