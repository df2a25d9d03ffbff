"""What a row was measured on, so that rows are compared or resumed only when they are the same
measurement: model bytes, profile content, dataset (annotation bytes + image list), --limit, target
options, harness and runtime versions, and the machine.

`--resume` refuses a folder whose rows differ from the new run in any of these (saying which), and
`harness report` treats rows as repeats only when their identities agree (machine aside: the report
labels machines itself).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.core.fileio import sha256_file

MACHINE_FIELDS = ("host", "cpu", "cores", "gpu", "os")
#: identity fields that make two rows different measurements, in the order a mismatch is reported
FIELDS = ("model_sha256", "profile_sha256", "dataset", "limit", "options", "harness", "runtime", "machine")
#: what a report's repeats must share (the machine is a column of its own there)
SETUP_FIELDS = ("model_sha256", "profile_sha256", "dataset", "limit", "options", "runtime")
WORDS = {"model_sha256": "model file contents", "profile_sha256": "profile contents", "dataset": "dataset",
         "limit": "--limit", "options": "target options", "harness": "harness version", "runtime": "runtime version",
         "machine": "machine"}


def resolve_model(path: str | Path, what: str = "model file") -> Path:
    """The model file a --model names: a file, or a folder holding one model (an OpenVINO IR .xml
    with its .bin, or one .onnx), whatever the folder's name (`x.onnx/` too). One line otherwise
    (missing, a FIFO, a folder without exactly one model)."""
    from harness.core.errors import HarnessError
    from harness.core.fileio import input_file

    path = Path(path)
    if path.is_dir():
        irs = sorted(p for p in path.glob("*.xml") if p.with_suffix(".bin").is_file())
        onnx = sorted(path.glob("*.onnx"))
        found = irs or onnx
        if len(found) != 1:
            held = f"{len(found)} models ({', '.join(p.name for p in found[:3])})" if found else "no model"
            raise HarnessError(f"{what} {path}: a folder holding {held}; give one .onnx file, an OpenVINO .xml "
                               "(its .bin beside it), or a folder holding exactly one of them")
        return found[0]
    return input_file(path, what)


def model_files(path: str | Path) -> list[Path]:
    """The files a model is (a folder: the model it holds, see resolve_model): an OpenVINO IR is its
    .xml and its .bin together."""
    path = resolve_model(path)
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        return [path, path.with_suffix(".bin")]
    return [path]


def model_sha256(path: str | Path) -> str:
    """sha256 of the model's bytes (of its files together, harness.measure.identity.model_files)."""
    files = model_files(path)
    if len(files) > 1:
        return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()
    return sha256_file(files[0])


def model_bytes(path: str | Path) -> int | None:
    from harness.core.errors import HarnessError

    try:
        return sum(f.stat().st_size for f in model_files(path))
    except (OSError, HarnessError):
        return None


def dataset_identity(ann_path: str | Path, images, content: list[str] | None = None) -> dict:
    """Annotation file bytes, the images the run was asked to use (id + file name, in order) and,
    given their sha256s (Dataset.content), the images' bytes: same names, other pixels differ."""
    listed = "\n".join(f"{int(image_id)}:{Path(path).name}" for image_id, path in images)
    identity = {"annotations_sha256": sha256_file(ann_path), "images": len(images),
                "image_list_sha256": hashlib.sha256(listed.encode()).hexdigest()}
    if content is not None:
        identity["image_bytes_sha256"] = hashlib.sha256("\n".join(content).encode()).hexdigest()
    return identity


def machine(env: dict) -> dict:
    return {k: env.get(k) for k in MACHINE_FIELDS}


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def mismatch(old: dict, new: dict, fields=FIELDS) -> str | None:
    """The first identity field that differs between two rows, in words with both values; None when
    they agree. A field one side lacks (older results) does not count as a difference."""
    for key in fields:
        if key not in old or key not in new:
            continue
        a, b = old[key], new[key]
        if _canonical(a) != _canonical(b):
            if isinstance(a, dict) and isinstance(b, dict):  # name only the parts that differ
                keys = sorted(k for k in set(a) | set(b) if _canonical(a.get(k)) != _canonical(b.get(k)))
                a, b = ({k: side.get(k) for k in keys} for side in (a, b))
            return f"{WORDS.get(key, key)} differs: {_short(a)} in the results vs {_short(b)} now"
    return None


def _short(value) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in sorted(value.items())) or "{}"
    return str(value)


def setup_signature(identity: dict) -> str:
    """What repeats of one measurement must share, as one comparable string ('' when unknown)."""
    return _canonical({k: identity.get(k) for k in SETUP_FIELDS if k in identity}) if identity else ""


def describe_difference(identities: list[dict]) -> list[str]:
    """For rows that look alike but are different measurements: a short label per row naming what
    sets it apart (e.g. 'options threads=1'), in the given order."""
    keys = [k for k in SETUP_FIELDS if len({_canonical(i.get(k)) for i in identities}) > 1]
    labels = []
    for identity in identities:
        parts = []
        for key in keys:
            value = identity.get(key)
            if key == "options" and isinstance(value, dict):
                others = [i.get(key) or {} for i in identities]
                varying = sorted(k for k in value if len({_canonical(o.get(k)) for o in others}) > 1)
                parts.append(", ".join(f"{k}={value.get(k)}" for k in varying))
            elif key == "dataset" and isinstance(value, dict):
                parts.append(f"{value.get('images')} images {str(value.get('image_list_sha256', ''))[:8]}")
            else:
                parts.append(f"{WORDS.get(key, key)} {_short(value)}")
        labels.append("; ".join(p for p in parts if p))
    return labels
