"""A TensorRT calibration cache -> per-tensor int8 ranges, so a trusted calibration is kept as Q/DQ.

The format (TensorRT's calibrators write it; ModelOpt's `import_scales_from_calib_cache` reads it
the same way): a header line such as `TRT-8601-EntropyCalibration2` (TensorRT version digits and
the calibrator), then one `tensor_name: <8 hex digits>` line per tensor, the hex being the bits of
the float32 scale in big-endian order. A symmetric int8 scale maps +-127 to +-amax, so
amax = scale x 127. Written by hand: no maintained library parses this format.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError

_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")
#: Tensors TensorRT's ONNX parser makes itself; they cannot exist in the ONNX file.
_TRT_INTERNAL = re.compile(r"^\(Unnamed Layer\* \d+\)")


@dataclass(frozen=True)
class TrtCache:
    path: Path
    header: str
    trt_version: str  # the digits of the header, e.g. "8601"
    calibrator: str  # e.g. "EntropyCalibration2"
    scales: dict[str, float]  # tensor name -> float32 scale
    internal: tuple[str, ...]  # TensorRT-made tensor names (skipped)

    def amax(self, name: str) -> float:
        return self.scales[name] * 127.0


def decode_scale(hex_text: str) -> float:
    """`3c010a14` -> the float32 whose big-endian bits those are."""
    return struct.unpack("!f", bytes.fromhex(hex_text))[0]


def parse_trt_cache(path: str | Path) -> TrtCache:
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise HarnessError(f"--from-trt-cache {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"--from-trt-cache {path}: not a text TensorRT calibration cache ({exc})") from None
    if not lines or not _HEADER.match(lines[0].strip()):
        first = lines[0][:60] if lines else "(empty file)"
        raise HarnessError(f"--from-trt-cache {path}: line 1 {first!r} is not a TensorRT cache header "
                           "like 'TRT-8601-EntropyCalibration2'")
    header = lines[0].strip()
    version, calibrator = _HEADER.match(header).groups()
    scales: dict[str, float] = {}
    internal: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not _HEX.match(value):
            raise HarnessError(f"--from-trt-cache {path}: line {number} {line[:80]!r} is not "
                               "'tensor_name: <8 hex digits>'")
        scale = decode_scale(value)
        if not math.isfinite(scale) or scale < 0:
            raise HarnessError(f"--from-trt-cache {path}: line {number}: scale {value} decodes to {scale}, "
                               "expected a finite non-negative float32")
        if name in scales:
            raise HarnessError(f"--from-trt-cache {path}: line {number}: tensor {name!r} appears twice")
        if _TRT_INTERNAL.match(name):
            internal.append(name)
            continue
        scales[name] = scale
    if not scales:
        raise HarnessError(f"--from-trt-cache {path}: no tensor scales after the header")
    return TrtCache(path, header, version, calibrator, scales, tuple(internal))


def check_cache_matches(cache: TrtCache, tensor_names: set[str]) -> None:
    """Every cached tensor must be a tensor of the model: a cache from another export is refused."""
    unknown = [name for name in cache.scales if name not in tensor_names]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise HarnessError(f"--from-trt-cache {cache.path}: {len(unknown)} of {len(cache.scales)} tensor name(s) "
                           f"match nothing in the model: {shown} (a cache from another export?)")
