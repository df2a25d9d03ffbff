"""A row's saved artefacts: its detections (gzip JSON) and the raw outputs of its first N images (npz).

One file of each kind per row, next to results.json, so `harness report --fidelity` can compare rows
long after the run. Written atomically (harness.core.fileio), so an interrupted run leaves no half file;
readers check everything they rely on and fail with one line naming the file.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_bytes, make_dirs, sha256_bytes, sha256_file
from harness.measure.row import ResultRow

DETECTIONS_FORMAT = "harness-detections/1"
OUTPUTS_FORMAT = "harness-outputs/1"
ARTIFACTS_DIR = "artifacts"


@dataclass
class SavedDetections:
    """COCO result dicts of one row and the images they cover (id -> file name, run order)."""

    images: dict[int, str]
    detections: list[dict]

    def by_image(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {i: [] for i in self.images}
        for det in self.detections:
            out[det["image_id"]].append(det)
        return out


@dataclass
class SavedOutputs:
    """Raw model outputs of the first images of one row: arrays[image][output], batch axis removed."""

    image_ids: list[int]
    file_names: list[str]
    output_names: list[str]
    arrays: list[list[np.ndarray]]


def artifact_stem(row: ResultRow) -> str:
    """A file-name-safe stem that tells rows of one results folder apart."""
    model = Path(str(row.model or "model")).stem
    text = f"{row.target}-{row.precision or 'fp32'}-bs{row.bs}-{model}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


# ------------------------------------------------------------------------------------------ detections

def write_detections(path: Path, images: dict[int, str], detections: list[dict] | np.ndarray) -> str:
    """gzip JSON: {"format", "images": [{"id", "file_name"}], "detections": [COCO result dicts]}; returns
    the written file's sha256. `detections` may be a compact array (harness.decode.types.to_coco_array):
    written as its dicts."""
    if isinstance(detections, np.ndarray):
        from harness.decode.types import coco_dicts

        detections = coco_dicts(detections)
    doc = {"format": DETECTIONS_FORMAT,
           "images": [{"id": int(i), "file_name": str(name)} for i, name in images.items()],
           "detections": detections}
    make_dirs(path.parent)
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    data = gzip.compress(text.encode("utf-8"), mtime=0)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def read_detections(path: Path) -> SavedDetections:
    path = Path(path)
    where = f"saved detections {path}"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        raise HarnessError(f"{where}: file not found (was the run made with --save-detections?)") from None
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{where}: not a gzip JSON file written by harness run ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != DETECTIONS_FORMAT:
        raise HarnessError(f"{where}: expected an object with format {DETECTIONS_FORMAT!r}")
    images, dets = doc.get("images"), doc.get("detections")
    if not isinstance(images, list) or not isinstance(dets, list):
        raise HarnessError(f"{where}: expected 'images' and 'detections' lists")
    try:
        image_map = {int(im["id"]): str(im["file_name"]) for im in images}
    except (TypeError, KeyError, ValueError):
        raise HarnessError(f"{where}: 'images' entries need an integer id and a file_name") from None
    if len(image_map) != len(images):
        raise HarnessError(f"{where}: 'images' lists an image id twice")
    for n, det in enumerate(dets):
        problem = _detection_problem(det, image_map)
        if problem:
            raise HarnessError(f"{where}: detection {n + 1} {problem}")
    return SavedDetections(image_map, dets)


def _detection_problem(det, images: dict) -> str:
    if not isinstance(det, dict):
        return "is not an object"
    if det.get("image_id") not in images:
        return f"has image_id {det.get('image_id')!r}, not one of the file's images"
    if not isinstance(det.get("category_id"), int):
        return "lacks an integer category_id"
    box = det.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        return "lacks a bbox of 4 numbers"
    if not isinstance(det.get("score"), (int, float)):
        return "lacks a numeric score"
    return ""


# ------------------------------------------------------------------------------------------ outputs

def _key(image: int, output: int) -> str:
    return f"img{image}_out{output}"


def write_outputs(path: Path, saved: SavedOutputs) -> str:
    """npz of plain arrays only (readable with allow_pickle=False): per-image outputs under
    img{i}_out{k}, plus image_ids, file_names and output_names."""
    arrays = {"format": np.array(OUTPUTS_FORMAT), "image_ids": np.asarray(saved.image_ids, np.int64),
              "file_names": np.asarray(saved.file_names, dtype=str),
              "output_names": np.asarray(saved.output_names, dtype=str)}
    for i, per_image in enumerate(saved.arrays):
        if len(per_image) != len(saved.output_names):
            raise ValueError(f"image {i}: {len(per_image)} outputs, expected {len(saved.output_names)}")
        for k, arr in enumerate(per_image):
            arr = np.asarray(arr)
            if arr.dtype == object:
                raise ValueError(f"image {i} output {k}: object arrays cannot be saved without pickle")
            arrays[_key(i, k)] = arr
    make_dirs(path.parent)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return sha256_bytes(buffer.getvalue())


def read_outputs(path: Path) -> SavedOutputs:
    path = Path(path)
    where = f"saved outputs {path}"
    if not path.is_file():
        raise HarnessError(f"{where}: file not found (was the run made with --save-outputs N?)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{where}: not an npz archive of plain arrays ({exc})") from None
    if str(data.get("format", "")) != OUTPUTS_FORMAT:
        raise HarnessError(f"{where}: expected an archive with format {OUTPUTS_FORMAT!r}")
    try:
        ids = [int(i) for i in data["image_ids"]]
        names = [str(n) for n in data["file_names"]]
        outputs = [str(n) for n in data["output_names"]]
    except KeyError as exc:
        raise HarnessError(f"{where}: lacks the {exc.args[0]} array") from None
    if len(names) != len(ids) or len(set(ids)) != len(ids):
        raise HarnessError(f"{where}: image_ids and file_names disagree (lengths or repeated ids)")
    expected = {_key(i, k) for i in range(len(ids)) for k in range(len(outputs))}
    present = set(data) - {"format", "image_ids", "file_names", "output_names"}
    if present != expected:
        missing = sorted(expected - present)[:3]
        extra = sorted(present - expected)[:3]
        raise HarnessError(f"{where}: arrays do not match {len(ids)} image(s) x {len(outputs)} output(s) "
                           f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
    arrays = [[data[_key(i, k)] for k in range(len(outputs))] for i in range(len(ids))]
    return SavedOutputs(ids, names, outputs, arrays)


# ------------------------------------------------------------------------------------------ a row's files

def save_row_artifacts(out_dir: Path, row: ResultRow, detections: list[dict] | None, images: dict[int, str],
                       outputs: SavedOutputs | None) -> dict[str, str]:
    """Write the row's files under out_dir/artifacts/; returns their paths relative to out_dir
    (what the row records as row["artifacts"])."""
    out_dir = Path(out_dir)
    stem = artifact_stem(row)
    written = {}
    try:
        if detections is not None:
            rel = Path(ARTIFACTS_DIR) / f"{stem}.detections.json.gz"
            written["detections_sha256"] = write_detections(out_dir / rel, images, detections)
            written["detections"] = rel.as_posix()
        if outputs is not None:
            rel = Path(ARTIFACTS_DIR) / f"{stem}.outputs.npz"
            written["outputs_sha256"] = write_outputs(out_dir / rel, outputs)
            written["outputs"] = rel.as_posix()
    except OSError as exc:
        raise HarnessError(f"cannot write the artefacts of row {stem} in {out_dir / ARTIFACTS_DIR} "
                           f"({exc.strerror or exc})") from None
    return written


def row_artifact_path(results_path: Path, row: ResultRow, kind: str) -> Path | None:
    """Where a row's saved `kind` ('detections' or 'outputs') lies, or None when it saved none. The
    path comes from a results.json, which is user input: it must resolve inside that file's folder
    (no absolute path, no '..', no link leading out), or it is refused with one line."""
    rel = row.artifacts.get(kind) if isinstance(row.artifacts, dict) else None
    if not rel:
        return None
    folder = Path(results_path).parent
    path = folder / str(rel)
    if (not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts
            or not path.resolve().is_relative_to(folder.resolve())):
        raise HarnessError(f"results file {results_path}: row {row.target} bs={row.bs} names its {kind} file "
                           f"{rel!r}, outside the results folder; refused")
    return path


def check_row_file(path: Path, row: ResultRow, kind: str, where: str) -> None:
    """The saved file is the one the row wrote: its sha256 where the row recorded one."""
    recorded = row.artifacts.get(f"{kind}_sha256") if isinstance(row.artifacts, dict) else None
    if recorded and sha256_file(path) != recorded:
        raise HarnessError(f"{where}: {path} is not the file this row saved (sha256 differs from the one recorded "
                           "in results.json); was it replaced or swapped with another row's?")


def check_row_detections(saved: SavedDetections, path: Path, row: ResultRow, where: str) -> None:
    """Saved detections belong to their row: the recorded hash, the row's image and detection counts."""
    check_row_file(path, row, "detections", where)
    if row.images and len(saved.images) != row.images:
        raise HarnessError(f"{where}: {path} covers {len(saved.images)} image(s), the row ran {row.images}; "
                           "it is another row's file")
    if row.detections and len(saved.detections) != row.detections:
        raise HarnessError(f"{where}: {path} holds {len(saved.detections)} detection(s), the row recorded "
                           f"{row.detections}; it is another row's file")


# ------------------------------------------------------------------------------------------ rows run elsewhere

ROW_KINDS = ("detections", "outputs")


def row_files(out_dir: Path, row: ResultRow) -> dict[str, bytes]:
    """The bytes of the files a row saved under out_dir (relative path -> bytes): what a row made on
    another host (run --cluster) carries back to the command's --out."""
    files = {}
    for kind in ROW_KINDS:
        path = row_artifact_path(Path(out_dir) / "results.json", row, kind)
        if path is not None:
            files[row.artifacts[kind]] = path.read_bytes()
    return files


def place_row_files(out_dir: Path, row: ResultRow, files: dict[str, bytes]) -> None:
    """Write a row's files, saved on another host, into out_dir as save_row_artifacts would have: each is
    one the row records (its path inside the folder, its sha256), written atomically (announced to the
    folder's manifest). A file missing or with another hash is refused with one line."""
    for kind in ROW_KINDS:
        path = row_artifact_path(Path(out_dir) / "results.json", row, kind)
        if path is None:
            continue
        rel = row.artifacts[kind]
        data = files.get(rel)
        if data is None or sha256_bytes(data) != row.artifacts.get(f"{kind}_sha256"):
            raise HarnessError(f"row {row.target} bs={row.bs}: its {kind} file {rel} did not come back intact from "
                               "the worker (missing, or its sha256 is not the one the row recorded)")
        try:
            make_dirs(path.parent)
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise HarnessError(f"cannot write the artefacts of row {artifact_stem(row)} in {path.parent} "
                               f"({exc.strerror or exc})") from None
