"""NNCF post-training quantization -> an OpenVINO int8 IR (model.xml/.bin), labelled backend nncf.

The seed workflow (NanoDet-Plus + NNCF for OpenVINO): `nncf.quantize` on the OpenVINO model read
from the ONNX, calibrated on the same harness batches as the ORT backend. The IR is for OpenVINO
only and is never fed to TensorRT: NNCF places FakeQuantize for OpenVINO's kernels, and its ONNX
backend writes uint8 activations with non-zero zero points, which TensorRT rejects.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError, first_line
from harness.quant.calib_data import CountingBatches, nncf_dataset

INSTALL_HINT = "pip install 'harness[quant]' (or: pip install nncf)"
NNCF_METHODS = ("minmax",)  # None = NNCF's own default range estimators


@dataclass(frozen=True)
class NncfResult:
    xml: Path
    bin: Path
    fake_quantize: int  # FakeQuantize ops in the written IR
    ignored: tuple[str, ...]


def import_nncf():
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise HarnessError(f"--backend nncf needs NNCF, which is not installed: {INSTALL_HINT}") from None
    return nncf


def ov_node_types(model_path: str | Path) -> list[tuple[str, str]]:
    """(friendly name, type) of the OpenVINO model read from the ONNX: what --exclude matches for nncf."""
    import openvino as ov

    model = ov.Core().read_model(str(model_path))
    return [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ops()
            if op.get_type_name() not in ("Constant", "Parameter", "Result")]


def quantize_nncf(model_path: str | Path, batches: CountingBatches, out_dir: Path, ignored: frozenset[str],
                  method: str | None, per_channel: bool) -> NncfResult:
    nncf = import_nncf()
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method is not None and method not in NNCF_METHODS:
        raise HarnessError(f"--method {method} is not available with --backend nncf "
                           f"(use {', '.join(NNCF_METHODS)} or leave it out for NNCF's defaults)")
    model = ov.Core().read_model(str(model_path))
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=None if per_channel else QuantizationParameters(per_channel=False))
    if method == "minmax":
        advanced.activations_range_estimator_params = RangeEstimatorParametersSet.MINMAX
    scope = nncf.IgnoredScope(names=sorted(ignored)) if ignored else None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's own progress bars; ours is on stderr
            quantized = nncf.quantize(model, nncf_dataset(batches), preset=nncf.QuantizationPreset.PERFORMANCE,
                                      subset_size=len(batches),
                                      ignored_scope=scope, advanced_parameters=advanced)
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"model {model_path}: NNCF quantization failed ({first_line(exc)})") from None
    xml = out_dir / "model.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    count = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    return NncfResult(xml, xml.with_suffix(".bin"), count, tuple(sorted(ignored)))
