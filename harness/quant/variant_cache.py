"""Q/DQ variants kept on disk by what they are made of, so a repeated or resumed search does not write
them again (harness sensitivity writes one per exclude/include variant and greedy step).

A variant is keyed by sha256 over: the fp32 model's sha256, the exclusion set (sorted node names), the
calibration's identity (its images' content digest and count, the method, and the sha256 of the ranges
it produced, keys sorted, which also covers the preprocessing that fed it) and what else changes the written bytes
(per-channel weights, the harness and ONNX Runtime versions). Change any of them and the key changes.

    <folder>/<key[:2]>/<key>.onnx    the Q/DQ model, written atomically
    <folder>/<key[:2]>/<key>.json    what the key was made of, and the model file's sha256

A hit is a model file whose sha256 is the one its .json records (a file cut short or replaced is
written again). The folder is cache_root()/variants unless given; nothing ever removes a variant: delete
the folder to free its space (each variant is about the size of the model).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness import __version__
from harness.core.fileio import atomic_write_text, make_dirs, sha256_file, sha256_json
from harness.quant.ort_backend import Calibration, write_qdq

CACHE_DIR = "variants"


def default_folder() -> Path:
    from harness.core.folders import cache_root

    return cache_root() / CACHE_DIR


def calibration_identity(cal: Calibration) -> dict:
    """What a calibration is, wherever its images live: their digest and count (or the TensorRT cache it
    came from), the method, and the sha256 of the ranges it produced."""
    images = {k: v for k, v in (cal.images or {}).items() if k != "folder"} or {"source": cal.source}
    return {"images": images, "method": cal.method, "ranges_sha256": ranges_sha256(cal.cache_path)}


def ranges_sha256(path: Path) -> str:
    """sha256 of the ranges file's content with its keys sorted: ONNX Runtime writes the tensors in set
    order, which differs from one process to the next (hash randomisation), the ranges do not."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return sha256_json(data)


def variant_key(model_sha256: str, excluded, calibration: dict, per_channel: bool = True,
                versions: dict | None = None) -> tuple[str, dict]:
    """(key, what it was made of) for one variant."""
    import onnxruntime

    parts = {"model_sha256": model_sha256, "excluded": sorted(excluded), "calibration": calibration,
             "per_channel": bool(per_channel),
             "versions": versions or {"harness": __version__, "onnxruntime": onnxruntime.__version__}}
    return sha256_json(parts), parts


class VariantCache:
    """The variants of one calibration of one model (per_channel fixed for the search)."""

    def __init__(self, folder: Path, model_sha256: str, cal: Calibration, per_channel: bool = True):
        self.folder = Path(folder)
        self.model_sha256 = model_sha256
        self.cal = cal
        self.per_channel = per_channel
        self.calibration = calibration_identity(cal)
        self.hits = 0
        self.writes = 0

    def path_for(self, excluded) -> tuple[Path, dict]:
        key, parts = variant_key(self.model_sha256, excluded, self.calibration, self.per_channel)
        return self.folder / key[:2] / f"{key}.onnx", parts

    def get(self, excluded) -> Path:
        """The variant's file: from the cache, or written now (and kept)."""
        path, parts = self.path_for(excluded)
        record = path.with_suffix(".json")
        if path.is_file() and record.is_file():
            try:
                recorded = json.loads(record.read_text(encoding="utf-8")).get("sha256")
            except (OSError, ValueError, AttributeError):
                recorded = None
            if recorded and recorded == sha256_file(path):
                self.hits += 1
                return path
        make_dirs(path.parent)
        write_qdq(self.cal, path, excluded, self.per_channel)
        atomic_write_text(record, json.dumps({**parts, "sha256": sha256_file(path)}, indent=1) + "\n")
        self.writes += 1
        return path


__all__ = ["CACHE_DIR", "default_folder", "calibration_identity", "variant_key", "VariantCache"]
