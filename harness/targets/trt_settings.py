"""TensorRT target settings: one validated dataclass, read from targets/trt.toml and CLI overrides.

Self-contained on purpose: the generic strict loader (harness/config.py) is being written beside
this; `TrtSettings` + `validate_settings` are the integration point it replaces. Every check here
says the file, the key and what is allowed, with a "did you mean" for near misses, because a typo
that silently fell back to a default would change the engine that gets timed.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from pathlib import Path

import tomllib

from harness.errors import HarnessError

SETTINGS_FILE = Path("targets") / "trt.toml"
DEFAULT_CACHE_DIR = "~/.cache/harness/trt"

PRECISIONS = ("fp32", "fp16", "int8")
OPT_MODES = ("current", "max")
INT8_MODES = ("qdq", "implicit")
TIMING_MODES = ("serial", "pipelined")
FP16_CONVERTERS = ("auto", "onnxconverter-common", "modelopt")
CUDA_BINDINGS = ("auto", "cuda-python", "pycuda")
CALIBRATORS = ("entropy", "minmax")
PARTIAL_MODES = ("drop", "pad")


@dataclass(frozen=True)
class TrtSettings:
    precision: str = "fp32"
    workspace_mib: int = 4096
    opt_batch: str = "current"
    #: TF32 tensor-core math for fp32 layers; off by default so fp32 rows are a reference
    tf32: bool = False
    #: int8 source: "qdq" = a Q/DQ ONNX (harness quantize, or your own); "implicit" = TensorRT 10's calibrator
    int8_mode: str = "qdq"
    fp16_converter: str = "auto"
    #: the converted model must keep this close to the model before conversion (ONNX Runtime CPU)
    check_min_sqnr_db: float = 25.0
    #: int8: the fp16 rest of a Q/DQ model flips some int8 bins, so SQNR to the Q/DQ model is lower
    #: (16-27 dB measured on NanoDet/demo, where two runtimes on the same Q/DQ model differ by 19-31 dB)
    check_min_sqnr_db_int8: float = 12.0
    check_min_box_agreement: float = 0.9
    check_images: int = 8
    timing: str = "serial"
    cuda_graph: bool = False
    cuda_binding: str = "auto"
    # implicit (legacy, TensorRT 10 only) calibration
    calibrator: str = "entropy"
    calib: str = ""
    calib_images: int = 500
    calib_batch_size: int = 16
    calib_partial: str = "drop"
    engine_cache: str = DEFAULT_CACHE_DIR

    @property
    def cache_dir(self) -> Path:
        return Path(self.engine_cache).expanduser()


_CHOICES = {"precision": PRECISIONS, "opt_batch": OPT_MODES, "int8_mode": INT8_MODES, "timing": TIMING_MODES,
            "fp16_converter": FP16_CONVERTERS, "cuda_binding": CUDA_BINDINGS, "calibrator": CALIBRATORS,
            "calib_partial": PARTIAL_MODES}
_POSITIVE_INTS = ("workspace_mib", "calib_images", "calib_batch_size", "check_images")
_BOOLS = ("tf32", "cuda_graph")
#: key -> (low, high) inclusive
_FLOATS = {"check_min_sqnr_db": (0.0, 200.0), "check_min_sqnr_db_int8": (0.0, 200.0),
           "check_min_box_agreement": (0.0, 1.0)}
_STRINGS = ("calib", "engine_cache")
#: target options (CLI flags and programmatic callers) that override the settings file
OPTION_KEYS = ("precision", "calib", "engine_cache", "calibrator", "workspace_mib", "calib_images",
               "calib_batch_size", "opt_batch", "int8_mode", "tf32", "timing", "cuda_graph", "cuda_binding",
               "fp16_converter")


def _unknown_key_error(where: str, key: str, known: list[str]) -> HarnessError:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return HarnessError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(known)}")


def _check_value(where: str, key: str, value):
    """The value, normalised, or HarnessError naming the file, the key and what is allowed."""
    if key in _CHOICES:
        value = value.lower() if isinstance(value, str) else value
        if value not in _CHOICES[key]:
            raise HarnessError(f"{where}: {key} = {value!r}, expected one of {', '.join(_CHOICES[key])}")
    elif key in _POSITIVE_INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise HarnessError(f"{where}: {key} = {value!r}, expected a positive integer")
    elif key in _BOOLS:
        if not isinstance(value, bool):
            raise HarnessError(f"{where}: {key} = {value!r}, expected true or false")
    elif key in _FLOATS:
        low, high = _FLOATS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise HarnessError(f"{where}: {key} = {value!r}, expected a number from {low} to {high}")
        value = float(value)
    elif key in _STRINGS:
        if not isinstance(value, (str, Path)):
            raise HarnessError(f"{where}: {key} = {value!r}, expected a path string")
        value = str(value)
    return value


def validate_settings(data: dict, where: str) -> TrtSettings:
    """Check a settings mapping (file contents and/or overrides) and build TrtSettings."""
    known = sorted(f.name for f in fields(TrtSettings))
    for key in sorted(data):
        if key not in known:
            raise _unknown_key_error(where, key, known)
    return TrtSettings(**{key: _check_value(where, key, value) for key, value in data.items()})


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise HarnessError(f"TensorRT settings file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not a text TOML file") from None
    return data["trt"] if isinstance(data.get("trt"), dict) else data


def load_trt_settings(path: str | Path | None = None, overrides: dict | None = None) -> TrtSettings:
    """Defaults <- settings file (if any) <- overrides (CLI options; None values ignored)."""
    where = str(path) if path is not None else "targets/trt.toml"
    data = _read_toml(Path(path)) if path is not None else {}
    settings = validate_settings(data, where)
    extra = {k: v for k, v in (overrides or {}).items() if v is not None and v != ""}
    if extra:
        merged = {f.name: getattr(settings, f.name) for f in fields(TrtSettings)}
        merged.update(extra)
        settings = validate_settings(merged, f"{where} with command-line options")
    return settings


def settings_from_options(options: dict) -> TrtSettings:
    """The run's settings: options["trt_settings"] or ./targets/trt.toml if present, then CLI overrides."""
    path = options.get("trt_settings")
    if path is None and SETTINGS_FILE.is_file():
        path = SETTINGS_FILE
    overrides = {key: options.get(key) for key in OPTION_KEYS if options.get(key) is not None}
    return load_trt_settings(path, overrides)
