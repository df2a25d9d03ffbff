"""Which ONNX the TensorRT build parses: precision is put into the ONNX before parsing.

    fp32   the model as it is (TF32 is a builder setting, recorded in the recipe)
    fp16   the model converted to fp16 (harness/precision/fp16.py), checked against the fp32
           model on ONNX Runtime CPU first; refused with one line when the conversion breaks it
    int8   a Q/DQ model (harness quantize, or the user's own), its non-quantized regions made
           fp16 the same way and checked against the Q/DQ model as given
A model that already holds Q/DQ or fp16 tensors is built as it is and labelled from its graph.
TensorRT 10's implicit calibration (int8_mode = "implicit") parses the fp32 model as it is.

The check runs on the run's first images when the runner gives them (Target.sample_images), else on
deterministic synthetic ones. Nodes named in the profile's [precision] keep_fp32_nodes stay fp32.
Converted models are cached beside the engines (<stem>-<kind>-<key16>.onnx + .json with the recipe
and the check), keyed by the source model's sha256 and everything the conversion depends on.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from harness.core.errors import HarnessError, first_line
from harness.core.fileio import atomic_write_bytes, sha256_bytes, sha256_file
from harness.model.onnx_model import inspect_onnx
from harness.targets.trt.engine import PRIVATE_FILE_MODE, key_from_fields

CHECK_SPLIT = "trt-check"


@dataclass(frozen=True)
class EngineOnnx:
    path: Path  # the ONNX TensorRT parses
    sha256: str  # of that file
    label: str  # fp32 / fp16 / int8: what the graph holds (the row's precision)
    recipe: dict  # JSON-able: how it was made (row + cache key)
    check: dict | None  # conversion check (ONNX Runtime CPU), None when nothing was converted
    notes: tuple[str, ...] = ()


class ConversionRefused(HarnessError):
    """The converted model is too far from the model it came from (one line, names the numbers)."""


def build_plan(requested: str, graph_label: str, has_fp16: bool, int8_mode: str, model_name: str) -> str:
    """What to do with the model: "as-is", "fp16" (convert fp32 -> fp16) or "qdq-fp16" (Q/DQ rest -> fp16)."""
    if graph_label == "int8":
        return "qdq-fp16" if requested == "int8" and not has_fp16 else "as-is"
    if graph_label == "fp16" or requested == "fp32":
        return "as-is"
    if requested == "fp16":
        return "fp16"
    if int8_mode == "implicit":
        return "as-is"
    raise HarnessError(f"model {model_name} holds no Q/DQ nodes: int8 on TensorRT comes from a Q/DQ model "
                       "(make one with `harness quantize -m MODEL -p PROFILE --calib IMAGES --out DIR`, or "
                       "`harness quantize -m MODEL --from-trt-cache CACHE --out DIR` from a TensorRT calibration "
                       "cache, or bring your own), or set int8_mode = \"implicit\" in targets/trt.toml for "
                       "TensorRT 10's legacy calibration")


def synthetic_check_images(folder: Path, count: int) -> list[tuple[int, Path]]:
    """(image id, path) of deterministic synthetic photo-like images (harness.data.synthetic), for
    when the run gives no images of its own."""
    import cv2

    from harness.data.synthetic import generate_image

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(count):
        image, _ = generate_image(0, CHECK_SPLIT, index)
        path = folder / f"{CHECK_SPLIT}_{index:03d}.png"
        cv2.imwrite(str(path), image)
        images.append((index, path))
    return images


def check_batches(images, spec) -> list[tuple]:
    """(tensor, metas), one image per batch (fits fixed-batch-1 and dynamic models alike); an
    unreadable image is left out (the accuracy pass reports it)."""
    from harness.images.preprocess import prepare_batch

    batches = [prepare_batch([image], spec, None, skip_bad=True) for image in images]
    return [(batch.tensor, batch.metas) for batch in batches if batch.metas]


def _identity(images) -> list:
    out = []
    for _, path in images:
        path = Path(path)
        stat = path.stat()
        out.append([path.name, stat.st_size])
    return out


def _convert_and_check(model, plan, settings, keep_fp32_nodes, profile, images, data_desc):
    from harness.precision.check import check_conversion
    from harness.precision.fp16 import convert_to_fp16

    conversion = convert_to_fp16(model, keep_fp32_nodes, settings.fp16_converter)
    min_sqnr = settings.check_min_sqnr_db if plan == "fp16" else settings.check_min_sqnr_db_int8
    batches = check_batches(images, profile.input)
    if not batches:
        raise HarnessError(f"{plan} conversion check: none of its {len(images)} images could be read ({data_desc})")
    try:
        result = check_conversion(model, conversion.model, batches, profile, min_sqnr,
                                  settings.check_min_box_agreement, data_desc)
    except HarnessError:
        raise
    except Exception as exc:  # ONNX Runtime refusing the converted graph is a conversion failure
        raise ConversionRefused(f"{plan} conversion ({conversion.recipe['converter']}) gives a model ONNX Runtime "
                                f"cannot run: {first_line(exc)}") from None
    return conversion, result


def prepare_model(model_path: Path, onnx_sha: str, settings, profile, cache_dir: Path,
                  sample_images=(), sample_desc: str = "") -> EngineOnnx:
    """The ONNX to build for `settings.precision` (converted and checked when needed, cached).
    sample_images: (image id, path) pairs to check the conversion on (else synthetic images)."""
    model_path = Path(model_path)
    graph = inspect_onnx(model_path)
    plan = build_plan(settings.precision, graph.precision, graph.float16_tensors > 0, settings.int8_mode,
                      model_path.name)
    base = {"plan": plan, "strongly_typed": not (plan == "as-is" and settings.precision == "int8"
                                                   and graph.precision == "fp32"),
            "tf32": settings.tf32, "int8_mode": settings.int8_mode if settings.precision == "int8" else None}
    if plan == "as-is":
        notes = ()
        if graph.precision != settings.precision and not (settings.precision == "int8" and graph.precision == "fp32"):
            notes = (f"model {model_path.name} already holds {graph.precision} ({graph.qdq_nodes} Q/DQ nodes, "
                     f"{graph.float16_tensors} fp16 tensors): built as it is and labelled {graph.precision} "
                     f"(precision setting: {settings.precision})",)
        label = graph.precision if graph.precision != "fp32" else settings.precision
        return EngineOnnx(model_path, onnx_sha, label, {**base, "built_onnx_sha256": onnx_sha}, None, notes)

    from harness.precision.fp16 import pick_converter

    keep_fp32_nodes = profile.precision.keep_fp32_nodes
    converter = pick_converter(settings.fp16_converter, graph.qdq_nodes > 0)
    with tempfile.TemporaryDirectory(prefix="harness-trt-check-") as scratch:
        if sample_images:
            images = list(sample_images)[: settings.check_images]
            data_desc = sample_desc or f"{len(images)} given images"
        else:
            images = synthetic_check_images(Path(scratch), settings.check_images)
            data_desc = f"synthetic ({settings.check_images} images of harness.data.synthetic, split {CHECK_SPLIT})"
        wanted = {"source": onnx_sha, "plan": plan, "converter": converter, "keep_fp32_nodes": list(keep_fp32_nodes),
                  "check": [settings.check_min_sqnr_db, settings.check_min_sqnr_db_int8,
                            settings.check_min_box_agreement],
                  "images": _identity(images), "profile": profile.content_hash}
        key = key_from_fields(wanted)
        onnx_path = Path(cache_dir).expanduser() / f"{model_path.stem}-{plan}-{key[:16]}.onnx"
        sidecar_path = onnx_path.with_suffix(".json")
        cached = _cached(onnx_path, sidecar_path, key)
        if cached is None:
            model = onnx.load(str(model_path))  # with its weights (inspect_onnx read the graph only)
            conversion, result = _convert_and_check(model, plan, settings, keep_fp32_nodes, profile, images, data_desc)
            cached = {"key": key, "recipe": conversion.recipe, "check": result.to_dict()}
            data = conversion.model.SerializeToString()
            cached["sha256"] = sha256_bytes(data)
            _store(onnx_path, sidecar_path, data if result.passed else None, cached)
    check = cached["check"]
    if not check["passed"]:
        raise ConversionRefused(f"{plan} conversion of {model_path.name} ({cached['recipe']['converter']}) breaks the "
                                f"model on ONNX Runtime CPU: {'; '.join(check['failures'])}; keep the sensitive "
                                "nodes in fp32 ([precision] keep_fp32_nodes in the profile) or run fp32")
    recipe = {**base, "built_onnx_sha256": cached["sha256"], "conversion": cached["recipe"]}
    label = "int8" if plan == "qdq-fp16" else "fp16"
    return EngineOnnx(onnx_path, cached["sha256"], label, recipe, check)


def _store(onnx_path: Path, sidecar_path: Path, data: bytes | None, sidecar: dict) -> None:
    """The converted model (None: refused, only its verdict is kept) and its sidecar, atomically."""
    try:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            atomic_write_bytes(onnx_path, data, mode=PRIVATE_FILE_MODE)
        atomic_write_bytes(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True).encode())
    except OSError as exc:
        raise HarnessError(f"cannot write the converted model to {onnx_path.parent} ({first_line(exc)}); "
                           "pass --engine-cache DIR") from None


def _cached(onnx_path: Path, sidecar_path: Path, key: str) -> dict | None:
    """The sidecar of a valid cached conversion (a refused one has no .onnx but keeps its verdict)."""
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(sidecar, dict) or sidecar.get("key") != key or not isinstance(sidecar.get("check"), dict):
        return None
    if sidecar["check"].get("passed") and (not onnx_path.is_file() or sha256_file(onnx_path) != sidecar.get("sha256")):
        return None
    return sidecar
