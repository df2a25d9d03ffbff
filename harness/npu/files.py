"""Tensor files (.bin / .npy / .npz): read with checks that name the image and the file, write
deterministically. Nothing is guessed: a raw .bin needs a known shape and dtype, and .npz/.npy
files are never unpickled."""

from __future__ import annotations

import io
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, first_line
from harness.core.fileio import atomic_write_bytes

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same arrays always give the same bytes


def natural_key(name: str) -> list:
    """Sort key that orders img2 before img10, as ais_bench orders its --input files."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def shape_str(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez-compatible archive (stored, one `<key>.npy` per array) with fixed zip timestamps."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    return out.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """npz_bytes written atomically (a full disk leaves no half-written archive)."""
    atomic_write_bytes(path, npz_bytes(arrays), fsync=False)


# ---------------------------------------------------------------- reading: headers before data
#
# A .npy header declares shape and dtype; numpy allocates what it declares before reading. A 1 kB
# file declaring 3.6 TiB, or an npz member that inflates to gigabytes, is refused from its header
# and the zip directory: nothing is allocated or inflated before the declared size is checked
# against the file (or the member's uncompressed size) and the expected output spec.

#: without a recorded spec, one output of one image larger than this is refused as implausible
MAX_UNSPECIFIED_BYTES = 1 << 30


def _read_header(stream, path: Path, what: str) -> tuple[tuple, np.dtype, bool, int]:
    """(shape, dtype, fortran_order, header length) of a .npy stream positioned at its start."""
    try:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise HarnessError(f"{what}: {path} is not a readable .npy ({first_line(exc)})") from None
    return tuple(shape), dtype, fortran, stream.tell()


def _declared_bytes(shape: tuple, dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def check_declared(shape: tuple, dtype: np.dtype, spec: dict | None, path: Path, what: str) -> None:
    """The header's shape and dtype against the expected spec, and a plausibility cap where the spec
    does not fix the size (no spec, or dynamic dims)."""
    if dtype.hasobject:
        raise HarnessError(f"{what}: {path} holds pickled Python objects; refused (allow_pickle=False)")
    if spec is not None:
        _check_spec(shape, dtype, spec, path, what)
    if spec is None or any(d is None for d in spec["shape"]):
        size = _declared_bytes(shape, dtype)
        if size > MAX_UNSPECIFIED_BYTES:
            raise HarnessError(f"{what}: {path} declares {shape_str(shape)} {dtype} ({size} bytes), more than "
                               f"{MAX_UNSPECIFIED_BYTES} bytes for one image; refused before reading "
                               "(pass --model so the expected shapes are known)")


def _read_data(stream, shape: tuple, dtype: np.dtype, fortran: bool, path: Path, what: str) -> np.ndarray:
    size = _declared_bytes(shape, dtype)
    data = stream.read(size)
    if len(data) != size:
        raise HarnessError(f"{what}: {path} holds {len(data)} bytes of data, its header declares {size} "
                           f"({shape_str(shape)} {dtype}): truncated")
    array = np.frombuffer(data, dtype=dtype)
    return (array.reshape(shape[::-1]).T if fortran else array.reshape(shape)).copy()


def load_npy(path: Path, what: str, spec: dict | None = None) -> np.ndarray:
    """One .npy: header read and checked (against the file's size and `spec`) before any data."""
    try:
        with open(path, "rb") as stream:
            shape, dtype, fortran, offset = _read_header(stream, path, what)
            if dtype.hasobject:
                raise HarnessError(f"{what}: {path} is not a plain .npy array (pickled objects are refused)")
            declared = _declared_bytes(shape, dtype)
            actual = os.fstat(stream.fileno()).st_size - offset
            if declared != actual:
                raise HarnessError(f"{what}: {path} header declares {shape_str(shape)} {dtype} ({declared} bytes) "
                                   f"but the file holds {actual} bytes of data; refused before reading")
            check_declared(shape, dtype, spec, path, what)
            return _read_data(stream, shape, dtype, fortran, path, what)
    except OSError as exc:
        raise HarnessError(f"{what}: {path} is not a readable .npy ({exc.strerror or exc})") from None


def load_npz(path: Path, what: str, specs: dict[str, dict | None] | None = None) -> dict[str, np.ndarray]:
    """All arrays of an .npz (specs: member key -> expected spec). Each member's header is read and
    checked against the zip directory's uncompressed size and its spec before its data is inflated."""
    if not zipfile.is_zipfile(path):
        raise HarnessError(f"{what}: {path} is not an .npz (zip) archive")
    specs = specs or {}
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise HarnessError(f"{what}: {path} member {info.filename!r} is not a .npy array")
                key = info.filename[:-4]
                where = f"{path} key {key!r}"
                with archive.open(info) as stream:
                    shape, dtype, fortran, offset = _read_header(stream, path, what)
                    if dtype.hasobject:
                        raise HarnessError(f"{what}: {where} holds pickled Python objects; refused "
                                           "(.npz files are loaded with allow_pickle=False)")
                    declared = offset + _declared_bytes(shape, dtype)
                    if declared != info.file_size:
                        raise HarnessError(f"{what}: {where}: its header declares {shape_str(shape)} {dtype} "
                                           f"({declared} bytes with its {offset}-byte header) but the archive lists "
                                           f"{info.file_size} bytes "
                                           "uncompressed; refused before inflating it")
                    check_declared(shape, dtype, specs.get(key), path, f"{what} {key}")
                    out[key] = _read_data(stream, shape, dtype, fortran, path, what)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise HarnessError(f"{what}: {path} is not a readable .npz ({first_line(exc)})") from None
    return out


def _check_spec(shape: tuple, dtype: np.dtype, spec: dict, path: Path, what: str) -> None:
    expected_dtype = np.dtype(spec["dtype"])
    if dtype != expected_dtype:
        raise HarnessError(f"{what}: {path} holds dtype {dtype}, expected {expected_dtype} "
                           f"(output {spec.get('name')!r} as recorded in prep.json/--model)")
    expected = tuple(spec["shape"])
    if not (_shape_matches(shape, expected) or (shape[:1] == (1,) and _shape_matches(shape[1:], expected))
            or (expected[:1] == (1,) and _shape_matches(shape, expected[1:]))):
        raise HarnessError(f"{what}: {path} has shape {shape_str(shape)}, expected {shape_str(expected)} "
                           f"(output {spec.get('name')!r})")


def check_array(array: np.ndarray, spec: dict | None, path: Path, what: str) -> np.ndarray:
    """Compare an array read from a self-describing file with the recorded output spec.

    The only tolerance is a leading batch dim of 1 present on one side and not the other (lossless).
    """
    if spec is None:
        return array
    _check_spec(tuple(array.shape), array.dtype, spec, path, what)
    expected, got = tuple(spec["shape"]), tuple(array.shape)
    if _shape_matches(got, expected):
        return array
    if got[:1] == (1,) and _shape_matches(got[1:], expected):
        return array[0]
    return array[None]


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
