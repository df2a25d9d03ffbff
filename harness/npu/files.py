"""Tensor files (.bin / .npy / .npz): read with checks that name the image and the file, write
deterministically. Nothing is guessed: a raw .bin needs a known shape and dtype, and .npz/.npy
files are never unpickled."""

from __future__ import annotations

import io
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same arrays always give the same bytes


def natural_key(name: str) -> list:
    """Sort key that orders img2 before img10, as ais_bench orders its --input files."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def shape_str(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez-compatible archive (stored, one `<key>.npy` per array) with fixed zip timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz, loaded with allow_pickle=False; `what` names the image for errors."""
    if not zipfile.is_zipfile(path):
        raise HarnessError(f"{what}: {path} is not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {}
            for key in data.files:
                try:
                    out[key] = data[key]
                except ValueError:
                    raise HarnessError(
                        f"{what}: {path} key {key!r} holds pickled Python objects; refused "
                        "(.npz files are loaded with allow_pickle=False)") from None
            return out
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise HarnessError(f"{what}: {path} is not a readable .npz ({exc})") from None


def load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise HarnessError(f"{what}: {path} is not a plain .npy array (pickled objects are refused)") from None
    except (OSError, EOFError) as exc:
        raise HarnessError(f"{what}: {path} is not a readable .npy ({exc})") from None


def check_array(array: np.ndarray, spec: dict | None, path: Path, what: str) -> np.ndarray:
    """Compare an array read from a self-describing file with the recorded output spec.

    The only tolerance is a leading batch dim of 1 present on one side and not the other (lossless).
    """
    if spec is None:
        return array
    dtype = np.dtype(spec["dtype"])
    if array.dtype != dtype:
        raise HarnessError(f"{what}: {path} holds dtype {array.dtype}, expected {dtype} "
                           f"(output {spec.get('name')!r} as recorded in prep.json/--model)")
    expected = tuple(spec["shape"])
    got = tuple(array.shape)
    if _shape_matches(got, expected):
        return array
    if got[:1] == (1,) and _shape_matches(got[1:], expected):
        return array[0]
    if expected[:1] == (1,) and _shape_matches(got, expected[1:]):
        return array[None]
    raise HarnessError(f"{what}: {path} has shape {shape_str(got)}, expected {shape_str(expected)} "
                       f"(output {spec.get('name')!r})")


def _shape_matches(got: tuple, expected: tuple) -> bool:
    return len(got) == len(expected) and all(e is None or g == e for g, e in zip(got, expected))


def read_bin(path: Path, spec: dict | None, what: str) -> np.ndarray:
    """A headerless .bin rebuilt with the recorded shape and dtype; its size must match exactly."""
    if spec is None:
        raise HarnessError(f"{what}: {path} is a raw .bin and no output shapes are known; "
                           "pass --model MODEL.onnx (or preprocess with --model), or run the tool with --outfmt NPY")
    shape = tuple(spec["shape"])
    if any(d is None for d in shape):
        raise HarnessError(f"{what}: {path} is a raw .bin but output {spec.get('name')!r} has dynamic shape "
                           f"{shape_str(shape)}; run the tool with --outfmt NPY")
    dtype = np.dtype(spec["dtype"])
    expected = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        kind = "truncated" if size < expected else "too large"
        raise HarnessError(f"{what}: {path} has {size} bytes, expected {expected} "
                           f"({shape_str(shape)} {dtype}, output {spec.get('name')!r}): {kind} or written for another model")
    return np.fromfile(path, dtype=dtype).reshape(shape)
