"""The structure of a COCO instances json, checked before any work: the evaluators index it by id and
trust every bbox, so a duplicate id, a string bbox or a box of an unlisted image would surface only
after the whole timing and accuracy pass (a traceback, or a silently different mAP). `area` is
required as COCO defines it: pycocotools' COCOeval reads it (KeyError without it) while
faster-coco-eval fills it in, so without it the two evaluators would not score the same file."""

from __future__ import annotations

import math
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.fileio import input_file
from harness.core.jsonfile import read_json_object

REQUIRED = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "category_id", "bbox", "area"),
            "categories": ("id", "name")}


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entry(key: str, index: int, item) -> str:
    ident = item.get("id") if isinstance(item, dict) else None
    return f"{key}[{index}]" + (f" (id {ident!r})" if ident is not None else "")


def annotation_problems(data: dict) -> list[str]:
    """Every structural problem, each as 'images[3] (id 7): what is wrong'."""
    problems: list[str] = []
    for key, fields in REQUIRED.items():
        if not isinstance(data[key], list):
            problems.append(f"'{key}' is {type(data[key]).__name__}, expected a list")
            continue
        seen: dict = {}
        for index, item in enumerate(data[key]):
            where = _entry(key, index, item)
            if not isinstance(item, dict):
                problems.append(f"{where} is {type(item).__name__}, expected an object")
                continue
            absent = [f for f in fields if f not in item]
            if absent:
                problems.append(f"{where} lacks {', '.join(absent)}")
                continue
            if not _is_id(item["id"]):
                problems.append(f"{where}: id {item['id']!r} is not an integer")
            elif item["id"] in seen:
                problems.append(f"{where}: id {item['id']} repeats {key}[{seen[item['id']]}]")
            else:
                seen[item["id"]] = index
    if problems:
        return problems  # the cross-checks below need well-formed lists
    names: dict = {}
    for index, image in enumerate(data["images"]):
        name = image["file_name"]
        where = _entry("images", index, image)
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: file_name {name!r} is not a file name")
        elif name in names:
            problems.append(f"{where}: file_name {name!r} repeats images[{names[name]}]")
        else:
            names[name] = index
    for index, category in enumerate(data["categories"]):
        if not isinstance(category["name"], str):
            problems.append(f"{_entry('categories', index, category)}: name {category['name']!r} is not a string")
    image_ids = {image["id"] for image in data["images"]}
    category_ids = {category["id"] for category in data["categories"]}
    for index, ann in enumerate(data["annotations"]):
        where = _entry("annotations", index, ann)
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            problems.append(f"{where}: bbox {box!r} is not 4 finite numbers [x, y, width, height]")
        elif box[2] < 0 or box[3] < 0:
            problems.append(f"{where}: bbox {box!r} has a negative width or height")
        if ann["image_id"] not in image_ids:
            problems.append(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in category_ids:
            problems.append(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
        if not (_is_number(ann["area"]) and ann["area"] >= 0):
            problems.append(f"{where}: area {ann['area']!r} is not a finite number >= 0")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            problems.append(f"{where}: iscrowd {ann['iscrowd']!r} is not 0 or 1")
    return problems


def check_annotations(data: dict, path: Path) -> None:
    """One line naming the file, the first bad entry and what is wrong (and how many more)."""
    problems = annotation_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise HarnessError(f"annotation file {path}: {problems[0]}{more}")


def load_annotations(path: str | Path) -> dict:
    """Read a COCO instances json with checks that name the file and what is wrong."""
    path = input_file(path, "annotation file")
    # bbox evaluation reads no polygon; they are most of a COCO file's memory, dropped as it is parsed
    data = read_json_object(path, "annotation file", "a COCO object with images, annotations, categories",
                            drop=("segmentation",))
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise HarnessError(f"annotation file {path}: not COCO instances json, missing key(s) {', '.join(missing)}")
    check_annotations(data, path)
    return data
