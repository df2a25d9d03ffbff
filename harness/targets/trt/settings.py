"""TensorRT target settings: targets/trt.toml merged with the command line, both read by harness.core.config.

`TrtSettings` is the one list of settings (types, ranges, `Literal` choices). The settings file is
loaded into it (its `[trt]` table or its top level); `TrtOptions`, the target's Options, is the
same list with every field optional, so each setting can also be given on the command line
(`--precision`, `--calib`, `--engine-cache`, else `-o KEY=VALUE`) and wins over the file; so does
`--mode` (latency: serial timing, throughput: pipelined), which is an option, not a setting. Errors are
one line naming the file or the `--flag`, with "did you mean" for near misses, because a typo that
silently fell back to a default would change the engine that gets timed.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from harness.core import config
from harness.core.config import setting
from harness.core.errors import HarnessError
from harness.core.tomlfile import read_toml
from harness.targets.modes import Mode, check_mode

SETTINGS_FILE = Path("targets") / "trt.toml"
DEFAULT_CACHE_DIR = "~/.cache/harness/trt"

Precision = Literal["fp32", "fp16", "int8"]
OptBatch = Literal["current", "max"]
Calibrator = Literal["entropy", "minmax"]
PartialBatch = Literal["drop", "pad"]

PRECISIONS = typing.get_args(Precision)
OPT_MODES = typing.get_args(OptBatch)
CALIBRATORS = typing.get_args(Calibrator)
PARTIAL_MODES = typing.get_args(PartialBatch)
#: --mode -> the timing that realises it, and back
MODE_TIMING = {"latency": "serial", "throughput": "pipelined"}
TIMING_MODE = {timing: mode for mode, timing in MODE_TIMING.items()}


@dataclass(frozen=True)
class TrtSettings:
    precision: Precision = "fp32"
    #: builder workspace limit (MiB): the scratch memory TensorRT may use for tactics
    workspace_mib: int = setting(4096, gt=0)
    #: "current": kernels tuned for the batch being measured; "max": one engine serves the whole run
    opt_batch: OptBatch = "current"
    #: TF32 tensor-core math for fp32 layers; off by default so fp32 rows are a reference
    tf32: bool = False
    #: int8 source: "qdq" = a Q/DQ ONNX (harness quantize, or your own); "implicit" = TensorRT 10's calibrator
    int8_mode: Literal["qdq", "implicit"] = "qdq"
    fp16_converter: Literal["auto", "onnxconverter-common", "modelopt"] = "auto"
    #: the converted model must keep this close to the model before conversion (ONNX Runtime CPU)
    check_min_sqnr_db: float = setting(25.0, ge=0, le=200)
    #: int8: the fp16 rest of a Q/DQ model flips some int8 bins, so SQNR to the Q/DQ model is lower
    #: (16-27 dB measured on NanoDet/demo, where two runtimes on the same Q/DQ model differ by 19-31 dB)
    check_min_sqnr_db_int8: float = setting(12.0, ge=0, le=200)
    check_min_box_agreement: float = setting(0.9, ge=0, le=1)
    #: images for the conversion check (the run's first images when the runner gives them, else synthetic)
    check_images: int = setting(8, gt=0)
    #: serial: one batch in flight (latency mode); pipelined: two on two streams (throughput mode, the default)
    timing: Literal["serial", "pipelined"] = "pipelined"
    cuda_graph: bool = False
    cuda_binding: Literal["auto", "cuda-python", "pycuda"] = "auto"
    # implicit (legacy, TensorRT 10 only) calibration
    calibrator: Calibrator = "entropy"
    calib: str = ""
    calib_images: int = setting(500, gt=0)
    calib_batch_size: int = setting(16, gt=0)
    calib_partial: PartialBatch = "drop"
    engine_cache: str = DEFAULT_CACHE_DIR

    @property
    def cache_dir(self) -> Path:
        return Path(self.engine_cache).expanduser()


def _refuse_mode_contradiction(options) -> None:
    """--mode against a timing given on the command line too (the settings file's timing yields to --mode)."""
    check_mode(options.mode, "-o timing=", options.timing, TIMING_MODE.get(options.timing or ""))


def _options_class(settings_cls) -> type:
    """Every setting as an optional command-line option (None: the file's value, else the default),
    plus trt_settings (a settings file other than ./targets/trt.toml) and mode (latency | throughput).
    Made from TrtSettings, so a flag and a file key cannot disagree on a name, a type or a range."""
    hints = typing.get_type_hints(settings_cls)
    specs = [(f.name, hints[f.name] | None, dataclasses.field(default=None, metadata=f.metadata))
             for f in fields(settings_cls)]
    specs.append(("trt_settings", str | None, dataclasses.field(default=None)))
    specs.append(("mode", Mode | None, dataclasses.field(default=None)))
    cls = dataclasses.make_dataclass("TrtOptions", specs, frozen=True,
                                     namespace={"__post_init__": _refuse_mode_contradiction})
    cls.__module__ = __name__
    cls.__doc__ = "Options of the `trt` target: any TrtSettings key, overriding targets/trt.toml."
    return cls


TrtOptions = _options_class(TrtSettings)


def load_trt_settings(path: str | Path | None = None) -> TrtSettings:
    """The settings of a file (its [trt] table, or its top level); defaults without one."""
    if path is None:
        return TrtSettings()
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"TensorRT settings file not found: {path}")
    data = read_toml(path, str(path))
    if isinstance(data.get("trt"), dict):
        return config.load(TrtSettings, data["trt"], str(path), "trt")
    return config.load(TrtSettings, data, str(path))


def settings_from_options(options) -> TrtSettings:
    """The run's settings: defaults <- options.trt_settings or ./targets/trt.toml (when present) <-
    the command-line options that were given (both already validated), --mode as the timing it means."""
    path = options.trt_settings
    if path is None and SETTINGS_FILE.is_file():
        path = SETTINGS_FILE
    given = {f.name: getattr(options, f.name) for f in fields(TrtSettings) if getattr(options, f.name) is not None}
    if options.mode is not None and "timing" not in given:
        given["timing"] = MODE_TIMING[options.mode]
    return dataclasses.replace(load_trt_settings(path), **given)
