"""Which TensorRT release is installed, and what its Python bindings still offer.

TensorRT 11 removed weak typing: `BuilderFlag.FP16`/`INT8`, `IBuilderConfig.int8_calibrator`,
`set_calibration_profile` and the `IInt8*Calibrator` classes are gone (NVIDIA's "Migrating from
TensorRT 10.x to 11.x"; ../shared/trt-api/ lists each release's bound names). The harness builds
every engine strongly typed, which both 10.x and 11.x accept, and asks the bindings themselves
(not the version string) whether the legacy calibrator path exists. All release-specific
TensorRT names are read in harness/targets/trt_legacy.py, and only after `legacy_int8` said yes;
tests/test_trt_api_names.py checks every `trt.` name the code uses against each release's list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from harness.core.errors import TargetUnavailable, first_line

INSTALL_HINT = "pip install 'harness[gpu]' (TensorRT, cuda-python, onnxruntime-gpu; see docs/gpu.md)"
#: tests/test_trt_fakes.py runs the two `harness quantize` command lines as written (placeholders filled in)
QUANTIZE_HINT = ("TensorRT {version} has no implicit int8 calibration (removed in 11.x); make a Q/DQ model with "
                 "`harness quantize -m MODEL --from-trt-cache CACHE --out DIR` (keeps the scales of a TensorRT "
                 "calibration cache, e.g. a calib-*.cache TensorRT 10 wrote in the engine cache) or "
                 "`harness quantize -m MODEL -p PROFILE --calib IMAGES --out DIR`, then run DIR/model.qdq.onnx "
                 "with --precision int8 and int8_mode = \"qdq\" (the default)")


@dataclass(frozen=True)
class TrtApi:
    version: str
    major: int
    #: BuilderFlag.FP16/INT8, IBuilderConfig.int8_calibrator and the calibrator classes (10.x only)
    legacy_int8: bool

    @property
    def modes(self) -> list[str]:
        """Build modes this release offers (for `harness targets`)."""
        modes = ["fp32 (strongly typed, tf32 setting)", "fp16 (fp16 ONNX)", "int8 (Q/DQ ONNX)"]
        if self.legacy_int8:
            modes.append("int8 implicit calibration (legacy, int8_mode = \"implicit\")")
        return modes


def describe_api(trt) -> TrtApi:
    """Capabilities of an imported `tensorrt` module, read from its bindings."""
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    legacy = hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "FP16") \
        and hasattr(trt.IBuilderConfig, "int8_calibrator")
    return TrtApi(version, major, legacy)


def import_tensorrt():
    """(tensorrt module, TrtApi) or TargetUnavailable naming what is missing."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
        detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({first_line(exc, 120)})"
        raise TargetUnavailable(f"tensorrt is not installed{detail}: {INSTALL_HINT}") from None
    api = describe_api(trt)
    if api.major < 10:
        raise TargetUnavailable(f"target trt needs TensorRT 10 or newer (found {api.version}): {INSTALL_HINT}")
    return trt, api


def strongly_typed_flags(trt) -> int:
    """create_network() flags: strongly typed (bound in 10.0, 10.16 and 11.4)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
