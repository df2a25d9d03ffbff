"""`--profile auto`: the built-in profile that fits a model, found from the model itself.

Why: users of the vendors' tools expect the tool to say which profile fits. A candidate must pass
the checks a run would make, in order: the image input's size, layout and type (Target.check_input),
the other inputs the profile feeds (extra_inputs.check_model_inputs), and its decoder's own output
checks on the model's real outputs (one inference per distinct input size, on a mid-grey image).
Where several fit (yolov5n and yolov5s decode the same head), the file name decides only when it
names one of them clearly better than the others; otherwise the choice is refused with the list.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, first_line
from harness.images.preprocess import ImageMeta
from harness.model.extra_inputs import check_model_inputs, extra_inputs

AUTO = "auto"
#: the file name decides between fitting candidates only when the best name matches this well and
#: clearly better than the next one
NAME_MIN, NAME_MARGIN = 0.75, 0.05


@dataclass
class Candidate:
    name: str
    fits: bool
    why: str  # what fitted, or the first check that failed
    name_score: float  # how closely the model's file name matches the profile's name (0..1)

    @property
    def score(self) -> float:
        """1 + name score when the graph fits, else 0 (what `harness profiles --model` prints)."""
        return round(1.0 + self.name_score, 3) if self.fits else 0.0


def _name_score(model: Path, profile: str) -> float:
    """1 when the file name holds the profile's whole name (yolov5n-640-dynamic.onnx: yolov5n-640), else
    difflib's similarity of the two (an IR's model.xml is named by its folder)."""
    stem = model.stem if model.suffix.lower() != ".xml" else (model.parent.name if model.stem == "model" else model.stem)
    if profile.lower() in stem.lower():
        return 1.0
    return round(difflib.SequenceMatcher(None, stem.lower(), profile.lower()).ratio(), 3)


def _target_for(model: Path):
    from harness.targets import get_target

    return get_target("ov" if model.suffix.lower() == ".xml" else "ort")


def _probe_outputs(model: Path, profile, batch: int, cache: dict):
    """The model's outputs on mid-grey images fed as `profile` feeds them, at the model's own batch
    (1 where it is dynamic), and their metas (cached per input spec)."""
    spec = profile.input
    key = (spec.width, spec.height, spec.layout, spec.dtype, spec.extras)
    if key not in cache:
        target = _target_for(model)(model, profile, {"mode": "latency"})
        metas = [ImageMeta(i, "", spec.width, spec.height, 1.0, 1.0, 0.0, 0.0) for i in range(batch)]
        with target:
            target.load(batch)
            grey = np.full(spec.shape(batch), 114 if spec.dtype == "u8" else 0.5, spec.numpy_dtype)
            outputs = target.infer(grey, extra_inputs(profile, metas, batch) or None)
            cache[key] = ([np.asarray(o) for o in outputs], metas)
    return cache[key]


def candidates(model: str | Path) -> list[Candidate]:
    """Every built-in profile checked against the model, best first."""
    from harness.decode import decode
    from harness.profiles import NO_DECODER, builtin_profiles, load_profile
    from harness.targets.base import check_image_input

    model = Path(model)
    if not model.is_file():
        raise HarnessError(f"model file not found: {model}")
    if model.suffix.lower() not in (".onnx", ".xml"):
        raise HarnessError(f"model {model.name}: --profile auto reads .onnx and OpenVINO .xml models")
    dims, dtype, inputs = _signature(model)
    batch = dims[0] if dims and isinstance(dims[0], int) else 1
    outputs_cache: dict = {}
    found = []
    for name in builtin_profiles():
        profile = load_profile(name)
        if profile.decoder.kind == NO_DECODER:
            continue
        try:
            check_image_input(model.name, profile, dims, dtype, batch)
            check_model_inputs(inputs, profile, model.name, batch)
            outputs, metas = _probe_outputs(model, profile, batch, outputs_cache)
            decode(outputs, metas, profile)
        except HarnessError as exc:
            found.append(Candidate(name, False, first_line(exc, 200), _name_score(model, name)))
            continue
        spec = profile.input
        found.append(Candidate(name, True, f"input {spec.layout} {spec.height}x{spec.width} {spec.dtype} fits; outputs "
                                           f"decode as {profile.decoder.kind}", _name_score(model, name)))
    return sorted(found, key=lambda c: (-c.score, c.name))


def _signature(model: Path) -> tuple[tuple, str, list]:
    """(image input dims, its dtype, every input as TensorInfo) of an ONNX or OpenVINO IR model."""
    if model.suffix.lower() == ".xml":
        from harness.targets.ov import _import_ov, _tensor

        ports = _import_ov().Core().read_model(str(model)).inputs
        infos = [_tensor(p) for p in ports]
        return infos[0].dims(), infos[0].dtype, infos
    from harness.model.onnx_model import inspect_onnx

    info = inspect_onnx(model)
    return info.image_input.dims(), info.image_input.dtype, list(info.inputs)


def choose(model: str | Path) -> tuple[str, str]:
    """(the built-in profile that fits `model`, why), or one line listing the candidates."""
    found = candidates(model)
    fitting = [c for c in found if c.fits]
    name = Path(model).name
    if not fitting:
        raise HarnessError(f"--profile auto: no built-in profile fits model {name}; pass --profile FILE.toml "
                           f"('harness profiles --model {name}' says why each does not fit)")
    if len(fitting) == 1:
        return fitting[0].name, f"{fitting[0].why}; the only one of {len(found)} built-in profiles that fits"
    best, runner_up = fitting[0], fitting[1]
    if best.name_score >= NAME_MIN and best.name_score - runner_up.name_score >= NAME_MARGIN:
        return best.name, (f"{best.why}; {len(fitting)} profiles fit the graph "
                           f"({', '.join(c.name for c in fitting)}), the file name matches {best.name} best")
    listed = ", ".join(f"{c.name} ({c.score:g})" for c in fitting)
    raise HarnessError(f"--profile auto: {len(fitting)} built-in profiles fit model {name} and its file name does "
                       f"not tell them apart: {listed}; pass one with --profile")


def resolve(profile: str, model: str, say=None):
    """The Profile for --profile (a name, a .toml file, or `auto` for `model`); `say` prints the choice."""
    from harness.profiles import load_profile

    if profile != AUTO:
        return load_profile(profile)
    if "{bs}" in model:  # one model per batch size: any of them shows the family
        model = next((str(p) for p in sorted(Path(model).parent.glob(Path(model).name.replace("{bs}", "*")))),
                     model.replace("{bs}", "1"))
    name, why = choose(model)
    if say is not None:
        say(f"profile auto: {name} ({why})")
    return load_profile(name)
