"""A COCO-style dataset on disk: the list of images to run, checked against the annotations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.fileio import sha256_file
from harness.data.annotations import load_annotations
from harness.images.imagefile import IMAGE_SUFFIXES, check_image_file


@dataclass
class Dataset:
    images: list[tuple[int, Path]]  # (image id, file) in annotation order
    ann_path: Path
    ann: dict
    skipped: list[str]  # files left out with --skip-bad-images (name: reason)
    #: sha256 of each image's bytes, in `images` order (read while the files are checked, so the run's
    #: identity covers the pixels: images replaced under the same names are another dataset)
    content: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(images_dir: str | Path, ann_path: str | Path, limit: int | None = None,
                 skip_bad: bool = False, workers: int = 2) -> Dataset:
    """Match annotation images to files in images_dir; missing, unexpected or bad files stop the run
    unless skip_bad, in which case they are recorded. Every image is checked (and JPEGs decoded
    strictly, in `workers` threads) before any work: see harness.images.imagefile.check_image_file."""
    images_dir, ann_path = Path(images_dir), Path(ann_path)
    if not images_dir.is_dir():
        raise HarnessError(f"image folder not found: {images_dir}")
    ann = load_annotations(ann_path)
    listed = {img["file_name"] for img in ann["images"]}
    on_disk = {p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = sorted(listed - on_disk)
    extra = sorted(on_disk - listed)
    problems = [f"{n}: listed in {ann_path.name} but not in {images_dir}" for n in missing]
    problems += [f"{n}: in {images_dir} but not in {ann_path.name}" for n in extra]
    if problems and not skip_bad:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise HarnessError(f"dataset mismatch ({len(problems)} file(s)): {shown} "
                           "(use --skip-bad-images to continue without them)")
    images = [(int(img["id"]), images_dir / img["file_name"]) for img in ann["images"] if img["file_name"] in on_disk]
    if limit:
        images = images[:limit]
    # Unreadable, truncated, oversized or corrupt files are found before any work starts, all at once.
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="image-check") as pool:
        checked = list(pool.map(_check_and_hash, [path for _, path in images]))
    reasons = [why for why, _ in checked]
    digests = {path: digest for (_, path), (_, digest) in zip(images, checked)}
    bad = [(path, why) for (_, path), why in zip(images, reasons) if why]
    if bad and not skip_bad:
        shown = "; ".join(f"{p.name}: {why}" for p, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise HarnessError(f"{len(bad)} bad image file(s) in {images_dir}: {shown} "
                           "(use --skip-bad-images to continue without them)")
    bad_paths = {p for p, _ in bad}
    images = [(i, p) for i, p in images if p not in bad_paths]
    problems += [f"{p.name}: {why}" for p, why in bad]
    if not images:
        raise HarnessError(f"no images to run: {images_dir} holds none of the images in {ann_path}")
    return Dataset(images, ann_path, ann, problems if skip_bad else [], [digests[p] for _, p in images])


def _check_and_hash(path: Path) -> tuple[str | None, str | None]:
    """(why the image cannot be used or None, sha256 of its bytes); the hash reads the file the check
    has just read, from the page cache."""
    why = check_image_file(path)
    return why, (None if why else sha256_file(path))


def check_categories(ann: dict, category_ids, profile_name: str, ann_path: Path) -> None:
    """Every annotated category must map to a profile class, or its boxes count as misses silently."""
    names = {int(c["id"]): c["name"] for c in ann["categories"]}
    used = {int(a["category_id"]) for a in ann["annotations"]}
    unmapped = sorted(used - set(category_ids))
    if unmapped:
        shown = ", ".join(f"{i} ({names.get(i, '?')})" for i in unmapped[:8])
        more = f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else ""
        raise HarnessError(
            f"{ann_path}: category id(s) {shown}{more} have boxes but no class in profile {profile_name} "
            f"(its ids: {list(category_ids)[:8]}...); fix [classes] category_ids in the profile"
        )


class DatasetCache:
    """The datasets of one command: `harness run -t ort,ov,trt` runs the runner once per target, and
    each would otherwise check (and strictly decode) every image again before its first row."""

    def __init__(self):
        self._loaded: dict[tuple, Dataset] = {}

    def load(self, images_dir: str | Path, ann_path: str | Path, limit: int | None = None,
             skip_bad: bool = False) -> Dataset:
        key = (str(images_dir), str(ann_path), limit, skip_bad)
        if key not in self._loaded:
            self._loaded[key] = load_dataset(images_dir, ann_path, limit, skip_bad)
        return self._loaded[key]
