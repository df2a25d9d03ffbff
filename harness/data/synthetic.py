"""Deterministic synthetic object-detection dataset (COCO format) for the bundled demo.

Images show a few shape classes drawn over a cluttered, noisy background and are written as
JPEG files next to a COCO ``instances`` json. The same ``(num_images, seed, split)`` always
produces byte-identical files, so the demo model can be evaluated without any download.

Design choices that make the data useful as a smoke test for a detection pipeline:

* two classes differ only by colour (``red_circle`` / ``blue_circle``), so feeding the model the
  wrong channel order costs mAP;
* image sizes vary and are never square, so a wrong letterbox mapping costs mAP;
* objects span COCO's small / medium / large area ranges, overlap a little, and are rotated;
* category ids are not contiguous from 0 (1, 3, 5, ...), so the class-index -> category-id map
  is exercised.

Only numpy and OpenCV are used.
"""

from __future__ import annotations

import json
import math
import pathlib
import zlib

import cv2
import numpy as np

__all__ = ["CATEGORY_IDS", "CLASS_NAMES", "generate_dataset", "generate_image"]

CLASS_NAMES: tuple[str, ...] = (
    "red_circle",
    "blue_circle",
    "square",
    "triangle",
    "cross",
    "ring",
)
CATEGORY_IDS: tuple[int, ...] = (1, 3, 5, 7, 9, 11)

_JPEG_QUALITY = 90
_MIN_W, _MAX_W = 240, 400
_MIN_H, _MAX_H = 180, 320


def _rng_for(seed: int, split: str, index: int) -> np.random.Generator:
    # One independent stream per image: generating N images gives the first N images of any
    # larger run with the same seed/split, and the split name changes every stream.
    key = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, key, index])
    )


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # low-frequency colour field
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 7))
    base = rng.uniform(30, 200, size=(gh, gw, 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    # mid-frequency texture
    th, tw = max(2, h // 12), max(2, w // 12)
    tex = rng.normal(0.0, float(rng.uniform(4, 18)), size=(th, tw, 3)).astype(
        np.float32
    )
    img += cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
    # distractors: lines, small ellipses/blobs, arcs
    for _ in range(int(rng.integers(2, 9))):
        kind = int(rng.integers(0, 3))
        color = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        if kind == 0:
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(2, 12)), int(rng.integers(1, 5)))
            cv2.ellipse(
                img, c, axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA
            )
        else:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            r = int(rng.integers(10, 60))
            a0 = float(rng.uniform(0, 360))
            cv2.ellipse(
                img,
                c,
                (r, r),
                0,
                a0,
                a0 + float(rng.uniform(30, 120)),
                color,
                2,
                cv2.LINE_AA,
            )
    return img


def _object_color(rng: np.random.Generator, cls: int, bg: np.ndarray) -> np.ndarray:
    if cls == 0:  # red in BGR order
        return np.array(
            [rng.uniform(0, 70), rng.uniform(0, 70), rng.uniform(180, 255)], np.float32
        )
    if cls == 1:  # blue in BGR order
        return np.array(
            [rng.uniform(180, 255), rng.uniform(0, 70), rng.uniform(0, 70)], np.float32
        )
    best, best_d = None, -1.0
    for _ in range(6):
        c = rng.uniform(0, 255, size=3).astype(np.float32)
        d = float(np.abs(c - bg).sum())
        if d > best_d:
            best, best_d = c, d
        if d > 150:
            break
    return best


def _rotated(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _draw_mask(
    rng: np.random.Generator,
    cls: int,
    cx: float,
    cy: float,
    sw: float,
    sh: float,
    h: int,
    w: int,
) -> np.ndarray:
    """Binary mask of one object of nominal box size (sw, sh) centred at (cx, cy)."""
    mask = np.zeros((h, w), np.uint8)
    angle = float(rng.uniform(0, 2 * math.pi))
    centre = (round(cx), round(cy))
    if cls in (0, 1):  # filled ellipse
        cv2.ellipse(
            mask, centre, (max(1, int(sw / 2)), max(1, int(sh / 2))), 0, 0, 360, 255, -1
        )
    elif cls == 5:  # ring
        ax = (max(2, int(sw / 2)), max(2, int(sh / 2)))
        thick = max(2, round(min(ax) * rng.uniform(0.2, 0.4)))
        cv2.ellipse(
            mask,
            centre,
            (ax[0] - thick // 2, ax[1] - thick // 2),
            0,
            0,
            360,
            255,
            thick,
        )
    elif cls == 2:  # square / rectangle, slightly rotated
        pts = np.array([[-sw, -sh], [sw, -sh], [sw, sh], [-sw, sh]], np.float64) / 2
        pts = _rotated(pts, float(rng.uniform(-0.3, 0.3))) + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    elif cls == 3:  # triangle, any rotation
        r = 0.5
        pts = np.array(
            [
                [r * math.cos(a), r * math.sin(a)]
                for a in (angle, angle + 2 * math.pi / 3, angle + 4 * math.pi / 3)
            ]
        )
        pts = pts * (sw, sh) + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    else:  # cross (plus sign), rotated
        t = float(rng.uniform(0.22, 0.36))
        a = 0.5
        pts = np.array(
            [
                [-t / 2, -a],
                [t / 2, -a],
                [t / 2, -t / 2],
                [a, -t / 2],
                [a, t / 2],
                [t / 2, t / 2],
                [t / 2, a],
                [-t / 2, a],
                [-t / 2, t / 2],
                [-a, t / 2],
                [-a, -t / 2],
                [-t / 2, -t / 2],
            ]
        )
        pts = _rotated(pts * (sw, sh), float(rng.uniform(-0.6, 0.6))) + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def generate_image(
    seed: int, split: str, index: int
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One BGR uint8 image and its objects as ``(class_index, [x, y, w, h])``."""
    rng = _rng_for(seed, split, index)
    w = int(rng.integers(_MIN_W, _MAX_W + 1))
    h = int(rng.integers(_MIN_H, _MAX_H + 1))
    if w == h:
        w += 1
    img = _background(rng, h, w)
    n_obj = int(rng.integers(1, 9))
    boxes: list[np.ndarray] = []
    objects: list[tuple[int, list[float]]] = []
    for _ in range(n_obj):
        for _attempt in range(10):
            cls = int(rng.integers(0, len(CLASS_NAMES)))
            bucket = rng.uniform()
            max_side = 0.85 * min(h, w)
            if bucket < 0.25:
                side = rng.uniform(20, 32)
            elif bucket < 0.75:
                side = math.exp(rng.uniform(math.log(32), math.log(96)))
            else:
                side = rng.uniform(96, max(97.0, max_side))
            side = min(side, max_side)
            aspect = math.exp(rng.uniform(-0.4, 0.4))
            sw, sh = side * math.sqrt(aspect), side / math.sqrt(aspect)
            if sw > w - 4 or sh > h - 4:
                continue
            cx = rng.uniform(sw / 2 + 2, w - sw / 2 - 2)
            cy = rng.uniform(sh / 2 + 2, h - sh / 2 - 2)
            mask = _draw_mask(rng, cls, cx, cy, sw, sh, h, w)
            ys, xs = np.nonzero(mask)
            if xs.size < 30:
                continue
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
            if any(_box_iou(box, b) > 0.3 for b in boxes):
                continue
            # objects drawn later occlude earlier ones; keep occlusion moderate
            if any(_cover(b, box) > 0.5 for b in boxes):
                continue
            bg = (
                img[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])]
                .reshape(-1, 3)
                .mean(0)
            )
            color = _object_color(rng, cls, bg)
            shade = rng.uniform(0.85, 1.0)
            x0, y0 = max(0, int(box[0]) - 2), max(0, int(box[1]) - 2)
            x1, y1 = min(w, int(box[2]) + 2), min(h, int(box[3]) + 2)
            m = (
                cv2.GaussianBlur(mask[y0:y1, x0:x1], (3, 3), 0).astype(np.float32)[
                    ..., None
                ]
                / 255.0
            )
            roi = img[y0:y1, x0:x1]
            img[y0:y1, x0:x1] = roi * (1 - m) + (color * shade) * m
            boxes.append(box)
            objects.append(
                (
                    cls,
                    [
                        float(box[0]),
                        float(box[1]),
                        float(box[2] - box[0]),
                        float(box[3] - box[1]),
                    ],
                )
            )
            break
    # sensor noise, slight blur
    img += rng.normal(0.0, float(rng.uniform(3, 10)), size=img.shape).astype(np.float32)
    if rng.uniform() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), objects


def _cover(old: np.ndarray, new: np.ndarray) -> float:
    """Fraction of box ``old`` covered by box ``new``."""
    ix = max(0.0, min(old[2], new[2]) - max(old[0], new[0]))
    iy = max(0.0, min(old[3], new[3]) - max(old[1], new[1]))
    area = (old[2] - old[0]) * (old[3] - old[1])
    return ix * iy / area if area > 0 else 0.0


def generate_dataset(
    out_dir, num_images: int, seed: int, split: str = "val"
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``num_images`` JPEGs and a COCO json under ``out_dir``.

    Layout: ``out_dir/images/<split>_000000.jpg`` ... and ``out_dir/instances_<split>.json``.
    Returns ``(images_dir, annotations_json_path)``. Same arguments => byte-identical files.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    out = pathlib.Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(num_images):
        img, objects = generate_image(seed, split, i)
        name = f"{split}_{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"could not encode synthetic image {name}")
        (images_dir / name).write_bytes(buf.tobytes())
        image_id = i + 1
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "width": int(img.shape[1]),
                "height": int(img.shape[0]),
            }
        )
        for cls, (x, y, bw, bh) in objects:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[cls],
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    coco = {
        "info": {
            "description": f"harness synthetic shapes, split={split}, seed={seed}, images={num_images}"
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": n, "supercategory": "shape"}
            for cid, n in zip(CATEGORY_IDS, CLASS_NAMES)
        ],
    }
    ann_path = out / f"instances_{split}.json"
    ann_path.write_text(
        json.dumps(coco, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return images_dir, ann_path
