"""TensorRT engines: optimisation-profile shapes and the engine cache (pure Python, no GPU).

Which shapes an engine is built for, what its cache key is, and whether a cached engine may be
reused. The build itself is harness/targets/trt/build.py.

Cache layout (default ~/.cache/harness/trt, or --engine-cache DIR / engine_cache in targets/trt.toml):
    <model stem>-<precision>-<key[:16]>.engine   the serialized engine (plan), raw bytes
    <model stem>-<precision>-<key[:16]>.json     sidecar: every key field + the engine's sha256
The key covers the ONNX file bytes, precision, profile shapes, TensorRT version, GPU name, (implicit
int8) the calibration cache, and the build recipe: the sha256 of the ONNX actually parsed (after fp16
conversion), the converter and its version, strong typing, TF32. Any change gives a new file; a sidecar
that disagrees with the wanted fields, or an engine whose bytes no longer match the sidecar, is stale
and is rebuilt, never reused.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_bytes, sha256_bytes, sha256_file, sha256_json
from harness.targets.trt.settings import OPT_MODES, PRECISIONS

#: bump when the cache layout or the build recipe changes, so old engines are not reused
#: 2: strongly typed builds from a converted ONNX; recipe (converted sha256, converter, TF32) in the key
CACHE_FORMAT = 2
#: engines, converted ONNX files and calibration caches carry the model's weights (or are made from
#: them): written readable by their owner only, as a private model file would be; sidecars are plain
PRIVATE_FILE_MODE = 0o600


def profile_batches(batch_sizes, batch: int, fixed: int | None = None, opt: str = "current") -> tuple[int, int, int]:
    """(min, opt, max) batch of the optimisation profile for running `batch` in a run of `batch_sizes`.

    min is 1 (the accuracy pass's short last batch must fit), max the largest batch size of the run,
    opt the batch being measured ("current": kernels tuned for it, one engine per batch size) or the
    largest ("max": one engine serves the whole run). A fixed-batch model builds for its batch only.
    """
    if opt not in OPT_MODES:
        raise HarnessError(f"opt_batch = {opt!r}: use one of {', '.join(OPT_MODES)}")
    sizes = sorted({int(b) for b in (batch_sizes or [])} | {int(batch)})
    if any(b <= 0 for b in sizes):
        raise HarnessError(f"batch sizes must be positive integers, got {sizes}")
    if fixed is not None:
        if fixed != batch:
            raise HarnessError(f"internal: fixed batch {fixed} asked to build for batch {batch}")
        return fixed, fixed, fixed
    high = max(sizes)
    return 1, (batch if opt == "current" else high), high


def profile_shapes(input_shape: tuple, batches: tuple[int, int, int]) -> tuple[tuple, tuple, tuple]:
    """min/opt/max full shapes from an input shape (dim 0 replaced) and (min, opt, max) batches."""
    rest = tuple(int(d) if isinstance(d, int) else -1 for d in input_shape[1:])
    if any(d <= 0 for d in rest):
        raise HarnessError(f"input shape {tuple(input_shape)}: only the batch dimension may be dynamic for target trt")
    return tuple((b, *rest) for b in batches)


def engine_key_fields(onnx_sha256: str, precision: str, shapes: dict, trt_version: str, gpu_name: str,
                      calib_sha256: str | None = None, extra: dict | None = None, recipe: dict | None = None) -> dict:
    """The values an engine depends on, in plain JSON-able form (shapes: {input: (min, opt, max)}).

    recipe: how the network was made (prepare.build_recipe); without one, int8 means the
    implicit calibration of TensorRT 10, which needs the calibration cache's hash."""
    if precision not in PRECISIONS:
        raise HarnessError(f"precision {precision!r}: target trt supports {', '.join(PRECISIONS)}")
    implicit = precision == "int8" and (recipe is None or recipe.get("int8_mode") == "implicit")
    if implicit and not calib_sha256:
        raise HarnessError("internal: an int8 engine key needs the calibration cache's hash")
    return {
        "format": CACHE_FORMAT,
        "onnx_sha256": str(onnx_sha256),
        "precision": precision,
        "shapes": {name: [list(map(int, s)) for s in triple] for name, triple in sorted(shapes.items())},
        "tensorrt": str(trt_version),
        "gpu": str(gpu_name),
        "calib_sha256": calib_sha256 if implicit else None,
        **({"recipe": json.loads(json.dumps(recipe, sort_keys=True))} if recipe else {}),
        **({"extra": extra} if extra else {}),
    }


def engine_cache_key(onnx_sha256: str, precision: str, shapes: dict, trt_version: str, gpu_name: str,
                     calib_sha256: str | None = None, extra: dict | None = None, recipe: dict | None = None) -> str:
    """sha256 over the canonical JSON of engine_key_fields: same inputs, same key; any change, new key."""
    return key_from_fields(engine_key_fields(onnx_sha256, precision, shapes, trt_version, gpu_name, calib_sha256,
                                             extra, recipe))


def key_from_fields(fields: dict) -> str:
    return sha256_json(fields)


def engine_paths(cache_dir: str | Path, model_stem: str, precision: str, key: str) -> tuple[Path, Path]:
    base = Path(cache_dir).expanduser() / f"{model_stem}-{precision}-{key[:16]}"
    return base.with_suffix(".engine"), base.with_suffix(".json")


def stale_reason(engine_path: Path, sidecar_path: Path, fields: dict) -> str | None:
    """Why a cached engine must not be used (None: it is valid for `fields`)."""
    if not engine_path.is_file():
        return "no cached engine"
    if not sidecar_path.is_file():
        return "cached engine has no sidecar"
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return "sidecar unreadable"
    if not isinstance(sidecar, dict) or sidecar.get("fields") != json.loads(json.dumps(fields)):
        changed = sorted(k for k in fields if not isinstance(sidecar, dict)
                         or (sidecar.get("fields") or {}).get(k) != json.loads(json.dumps(fields[k])))
        return f"built for different {', '.join(changed) or 'settings'}"
    if sidecar.get("engine_sha256") != sha256_file(engine_path):
        return "engine bytes changed since it was cached"
    return None


def lookup_engine(cache_dir, model_stem: str, fields: dict) -> tuple[bytes | None, Path, str | None]:
    """(engine bytes or None, engine path, why not reused) for the wanted key fields."""
    key = key_from_fields(fields)
    engine_path, sidecar_path = engine_paths(cache_dir, model_stem, fields["precision"], key)
    why = stale_reason(engine_path, sidecar_path, fields)
    if why is not None:
        return None, engine_path, why
    return engine_path.read_bytes(), engine_path, None


def store_engine(cache_dir, model_stem: str, fields: dict, engine_bytes: bytes, info: dict | None = None) -> Path:
    """Write the engine and its sidecar atomically (engine first: a sidecar never points at half a file)."""
    key = key_from_fields(fields)
    engine_path, sidecar_path = engine_paths(cache_dir, model_stem, fields["precision"], key)
    try:
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(engine_path, bytes(engine_bytes), mode=PRIVATE_FILE_MODE)
        sidecar = {"key": key, "fields": fields, "engine_sha256": sha256_bytes(bytes(engine_bytes)), **(info or {})}
        atomic_write_bytes(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True).encode())
    except OSError as exc:
        raise HarnessError(f"cannot write the TensorRT engine cache {engine_path.parent} ({exc}); "
                           "pass --engine-cache DIR") from None
    return engine_path
