"""The list a datalist-driven tool (VastAI vamp) was run with: which image each output file belongs to.

vamp writes output_NNNNNN.npz in the order of its datalist, one .npz path per line; the outputs name no
image. So the mapping is taken from that list (line n -> the image whose file stem the line names),
never guessed from an order: the vendor's image2npz.py writes its list in unsorted glob order, which
is not the harness's order. Anything that does not map one line to one image is refused.

Two ways to get the images' geometry:
- with the prep.json of `harness preprocess` (order_by_datalist): its per-image records, reordered;
- without one, for inputs made by the vendor's image2npz.py (prep_from_images): the original images'
  sizes (read from their headers) and the profile's device-side resize, as the VDSP applies it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from harness.core.errors import HarnessError, ImageError
from harness.images.imagefile import (
    IMAGE_SUFFIXES,
    SUFFIXES_TEXT,
    exif_orientation,
    header_problem,
    header_size,
    read_regular_file,
)
from harness.npu.prep import PREP_FILE, Prep, PrepFile, PrepImage


def read_datalist(path: str | Path) -> list[str]:
    """The stems named by a datalist, one per non-empty line, in order; duplicates refused."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"--datalist {path}: file not found (the list vamp was run with, one .npz path per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"--datalist {path}: cannot be read ({exc})") from None
    stems: list[str] = []
    first: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        stem = Path(text.replace("\\", "/")).stem
        if stem in first:
            raise HarnessError(f"--datalist {path} line {number}: {text!r} names the image {stem!r} again (line "
                               f"{first[stem]}); each output maps to one image, so a repeated image is refused")
        first[stem] = number
        stems.append(stem)
    if not stems:
        raise HarnessError(f"--datalist {path}: no lines (expected one .npz path per line)")
    return stems


def order_by_datalist(prep: Prep, datalist: str | Path) -> tuple[Prep, list[str]]:
    """prep's images in the datalist's order (a subset is allowed and noted); unknown stems refused."""
    stems = read_datalist(datalist)
    by_stem = {image.stem: image for image in prep.sidecar.images}
    unknown = [(i, s) for i, s in enumerate(stems) if s not in by_stem]
    if unknown:
        index, stem = unknown[0]
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise HarnessError(f"--datalist {datalist} line {index + 1}: {stem!r} matches no image in "
                           f"{prep.folder / PREP_FILE}{more}; decode with the prep folder the list was made from")
    images = tuple(by_stem[s] for s in stems)
    notes = [f"outputs mapped to images by --datalist {Path(datalist).name} ({len(stems)} lines)"]
    if len(stems) < len(by_stem):
        notes.append(f"the datalist covers {len(stems)} of the {len(by_stem)} images in {PREP_FILE}; "
                     f"mAP is over those {len(stems)}")
    return dataclasses.replace(prep, sidecar=dataclasses.replace(prep.sidecar, images=images)), notes


def _image_files(images_dir: Path) -> dict[str, Path]:
    if not images_dir.is_dir():
        raise HarnessError(f"image folder not found: {images_dir}")
    files: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in files:
            raise HarnessError(f"images {files[path.stem].name} and {path.name} in {images_dir} share the stem "
                               f"{path.stem!r}; a datalist names images by stem, so it cannot tell them apart")
        files[path.stem] = path
    return files


def prep_from_images(datalist: str | Path, images_dir: str | Path, ann: dict, ann_path: Path, profile) -> Prep:
    """A Prep for inputs made outside the harness (vendor image2npz.py: the unresized image as
    cv2.imread reads it): per datalist line, the image of that stem in images_dir, its id from the
    annotations, its size from its header and the profile's resize (what the device does)."""
    from harness.npu.vamp import device_meta, device_preprocess

    images_dir = Path(images_dir)
    stems = read_datalist(datalist)
    files = _image_files(images_dir)
    ids = {str(image["file_name"]): int(image["id"]) for image in ann["images"]}
    records = []
    for number, stem in enumerate(stems, 1):
        where = f"--datalist {datalist} line {number}"
        path = files.get(stem)
        if path is None:
            raise HarnessError(f"{where}: {stem!r} matches no image in {images_dir} ({SUFFIXES_TEXT})")
        if path.name not in ids:
            raise HarnessError(f"{where}: image {path.name} is not in {ann_path}")
        try:  # the file is read once: its checks, header size and EXIF tag all come from these bytes
            data = read_regular_file(path)
            problem = header_problem(data)
        except ImageError as exc:
            data, problem = b"", exc.reason
        size = None if problem else header_size(data)
        if problem or size is None:
            raise HarnessError(f"{where}: image {path}: {problem or 'no size in its header'}")
        orientation = exif_orientation(data)
        if orientation != 1:
            raise HarnessError(f"{where}: image {path.name} has EXIF orientation {orientation}: image2npz.py "
                               "(cv2.imread) rotates it, so its outputs cannot be mapped to the annotations' "
                               "pixels; make its input with `harness preprocess --format npz`")
        meta = device_meta(ids[path.name], path, size[0], size[1], profile.input)
        records.append(PrepImage(stem=stem, input_file=f"{stem}.npz", **meta.to_dict(),
                                 sha256=hashlib.sha256(data).hexdigest()))
    sidecar = PrepFile(harness_prep_version=1, format="npz", tool="vamp", profile=profile.to_dict(),
                       images=tuple(records), dataset=str(images_dir), annotations=str(ann_path),
                       device_preprocess=device_preprocess(profile.input))
    return Prep(Path(datalist).parent, sidecar, profile)
