"""The `harness quantize` flow: check every input, calibrate, write the model and quant.json.

--out is an OutputFolder (harness.core.folders: the lock inside it, the manifest of what the harness
wrote). Everything is written into a staging folder inside --out and moved into place at the end,
quant.json last, so an interrupted or failed run never leaves a half-written model where a finished
one is expected; --overwrite removes only what an earlier command listed in the manifest (never the
source model or anything else of the user's, even with --out the model's own folder).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.fileio import announce, atomic_write_text, input_file, sha256_file
from harness.core.folders import OutputFolder
from harness.core.progress import NullProgress
from harness.model.onnx_model import load_graph
from harness.profiles import Profile
from harness.quant.calib_data import CountingBatches, calibration_batches, calibration_images
from harness.quant.exclusions import ExclusionRules, resolve
from harness.quant.manifest import QUANT_FILE, manifest, to_json
from harness.quant.ort_backend import (
    DEFAULT_METHOD,
    METHODS,
    PERCENTILE,
    Calibration,
    QdqModel,
    calibrate,
    calibration_from_trt_cache,
    write_qdq,
)
from harness.quant.prepare import check_loads_in_ort, image_input
from harness.quant.trt_cache import parse_trt_cache

BACKENDS = ("ort", "nncf")
QDQ_FILE = "model.qdq.onnx"
IR_FILE = "model.xml"


@dataclass(frozen=True)
class QuantizeRequest:
    model: Path
    profile: Profile | None  # its input spec builds the calibration batches; None only with trt_cache
    out: Path
    calib: Path | None = None
    calib_images: int = 300
    method: str | None = None  # None: percentile for ort, NNCF's defaults for nncf
    per_channel: bool = True
    rules: ExclusionRules = ExclusionRules()
    backend: str = "ort"
    trt_cache: Path | None = None
    overwrite: bool = False
    concat_convs: bool = False  # also quantize Convs reading a Concat (TensorRT-only files; see placement.py)


@dataclass(frozen=True)
class QuantizeOutcome:
    out: Path
    model_file: Path
    record: dict  # what quant.json holds


def check_request(req: QuantizeRequest) -> None:
    """Every cheap check before any slow work; one clear line each."""
    if req.backend not in BACKENDS:
        raise HarnessError(f"--backend {req.backend!r}: use one of {', '.join(BACKENDS)}")
    if req.method is not None and req.backend == "ort" and req.method not in METHODS:
        raise HarnessError(f"--method {req.method!r}: use one of {', '.join(METHODS)}")
    if req.trt_cache is not None:
        if req.backend != "ort":
            raise HarnessError("--from-trt-cache writes a Q/DQ ONNX: it works with --backend ort only")
        if req.calib is not None:
            raise HarnessError("--calib and --from-trt-cache are alternatives: the cache already holds the ranges")
        if req.method is not None:
            raise HarnessError("--method does not apply with --from-trt-cache (the cache's calibrator made the ranges)")
    elif req.calib is None:
        raise HarnessError("no calibration: pass --calib DIR (images) or --from-trt-cache FILE")
    elif req.profile is None:
        raise HarnessError("--calib needs --profile (its preprocessing builds the calibration batches)")
    if req.concat_convs and req.backend != "ort":
        raise HarnessError("--quantize-concat-convs places Q/DQ for TensorRT: it works with --backend ort only")
    if not isinstance(req.calib_images, int) or req.calib_images <= 0:
        raise HarnessError(f"--calib-images must be a positive integer, got {req.calib_images}")
    input_file(req.model, "model")
    if req.model.suffix.lower() != ".onnx":
        raise HarnessError(f"model {req.model}: harness quantize takes an .onnx file")
    if req.out.exists() and not req.out.is_dir():
        raise HarnessError(f"--out {req.out}: exists and is not a folder")


def quantize(req: QuantizeRequest, progress=None) -> QuantizeOutcome:
    check_request(req)
    if req.profile is not None:  # the calibration batches must fit the model's input, before any work
        from harness.npu.prep import check_model_input, onnx_io

        check_model_input(req.model, onnx_io(req.model)[0], req.profile.input, req.profile.name)
    with OutputFolder(req.out, "--out") as folder:  # the lock every writer takes, inside --out
        if folder.entries():
            if not req.overwrite:
                raise HarnessError(f"--out {req.out} is not empty (pass --overwrite to replace it)")
            folder.clear()  # only what the harness wrote there before
        return _quantize(req, progress or NullProgress())


def _quantize(req: QuantizeRequest, progress) -> QuantizeOutcome:
    if req.backend == "nncf":
        from harness.quant.nncf_backend import import_nncf

        import_nncf()
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=req.out))
    announce(staging, "dir")  # listed, so --overwrite clears one left by a killed run
    try:
        if req.backend == "nncf":
            model_file, record = _nncf(req, staging, progress)
        else:
            model_file, record = _ort(req, staging, progress)
        atomic_write_text(staging / QUANT_FILE, to_json(record))
        _publish(staging, req.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return QuantizeOutcome(req.out, req.out / model_file, record)


def _ort(req: QuantizeRequest, staging: Path, progress) -> tuple[str, dict]:
    if req.trt_cache is not None:
        cache = parse_trt_cache(req.trt_cache)
        cal = calibration_from_trt_cache(req.model, cache)
    else:
        images = calibration_images(req.calib, req.calib_images)
        for warning in images.warnings:
            progress.message(f"warning: {warning}")
        with progress.task(f"calibrating on {len(images.files)} images", len(images.files)) as advance:
            cal = calibrate(req.model, images, req.profile.input, req.method or DEFAULT_METHOD, advance=advance)
    with cal:
        exclusions = resolve(req.rules, cal.node_types())
        written = write_qdq(cal, staging / QDQ_FILE, exclusions.nodes, req.per_channel, req.concat_convs)
        check_loads_in_ort(written.path, f"model {req.model}: the Q/DQ model ONNX Runtime wrote does not load")
        record = qdq_record(cal, written, {**exclusions.to_dict(), "rules": _rules_dict(req.rules)},
                            req.profile.name if req.profile else None, req.per_channel, req.concat_convs)
    return QDQ_FILE, record


def qdq_record(cal: Calibration, written: QdqModel, exclusions: dict, profile: str | None, per_channel: bool,
               concat_convs: bool = False) -> dict:
    """quant.json of a Q/DQ model written from `cal` (harness quantize, and harness sensitivity's final model)."""
    prepared = cal.prepared
    placement = {
        "rules": "NVIDIA ModelOpt int8 (TensorRT-friendly), see harness/quant/placement.py",
        "quantized_nodes": len(written.quantized_nodes),
        "concat_convs": "int8 (--quantize-concat-convs: for TensorRT only)" if concat_convs
        else "float (portable: OpenVINO CPU miscomputes them from Q/DQ)",
        "left_float": {name: why for name, why in sorted(cal.placement.left_float.items())
                       if name not in written.quantized_nodes},
    }
    calibration = ({"images": cal.images, "batches_run": cal.batches_run, "batch_size": prepared.batch,
                    **({"percentile": PERCENTILE} if cal.method == "percentile" else {})}
                   if cal.images is not None else {"trt_cache": cal.source})
    return manifest(
        backend="ort", model_file=written.path.name, source=prepared.source, source_sha256=prepared.source_sha256,
        profile=profile, method=cal.method, per_channel=per_channel, calibration=calibration, exclusions=exclusions,
        opset={"before": prepared.opset_before, "after": prepared.opset_after},
        details={"qdq_nodes": written.qdq_nodes, "ranges": {"tensors_calibrated": len(cal.ranges.data),
                                                            "written_scales": written.scales},
                 "placement": placement, "named_unnamed_nodes": prepared.named_nodes})


def _nncf(req: QuantizeRequest, staging: Path, progress) -> tuple[str, dict]:
    from harness.quant.nncf_backend import ov_node_types, quantize_nncf

    _, batch = image_input(load_graph(req.model), req.model)
    exclusions = resolve(req.rules, ov_node_types(req.model))
    images = calibration_images(req.calib, req.calib_images, batch)
    for warning in images.warnings:
        progress.message(f"warning: {warning}")
    with progress.task(f"NNCF calibration on {len(images.files)} images", len(images.files)) as advance:
        batches = CountingBatches(calibration_batches(images, req.profile.input, batch), advance)
        result = quantize_nncf(req.model, batches, staging, exclusions.nodes, req.method, req.per_channel)
    record = manifest(
        backend="nncf", model_file=IR_FILE, source=req.model, source_sha256=sha256_file(req.model),
        profile=req.profile.name, method=req.method or "nncf-default", per_channel=req.per_channel,
        calibration={"images": images.identity(), "batches_run": batches.served, "batch_size": batch},
        exclusions={**exclusions.to_dict(), "rules": _rules_dict(req.rules), "matched_against": "OpenVINO op names"},
        opset=None,
        details={"fake_quantize_ops": result.fake_quantize,
                 "note": "OpenVINO int8 IR from NNCF (preset PERFORMANCE); for OpenVINO only, never for TensorRT"})
    return IR_FILE, record


def _rules_dict(rules: ExclusionRules) -> dict:
    return {"patterns": list(rules.patterns), "op_types": list(rules.op_types),
            "from_file": rules.names_source or None}


def _publish(staging: Path, out: Path) -> None:
    """Move the staged files into --out, quant.json last (its presence marks a finished model). Each is
    announced first, so the manifest lists it and a user's file of the same name is never replaced."""
    files = sorted((p for p in staging.iterdir() if p.is_file()), key=lambda p: p.name == QUANT_FILE)
    for path in files:
        announce(out / path.name)
    for path in files:
        path.replace(out / path.name)
