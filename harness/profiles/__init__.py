"""Model profiles: how to feed a model and how to read what it returns, as small TOML files.

Built-in profiles live in harness/profiles/*.toml; users pass their own with `--profile FILE.toml`.
Every section is a typed dataclass read by the strict loader (harness.core.config): a misspelt key, a
wrong type or an out-of-range value is one error line naming the file and the key, never a silent
fallback to a default that changes the mAP. The [decoder] table holds `kind` plus that family's
parameters (each decoder module declares its own `Params`).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar, Literal

from harness.core import config
from harness.core.config import Invalid, did_you_mean, setting
from harness.core.errors import HarnessError
from harness.core.tomlfile import read_toml

EXTRA_INPUT_NAMES = ("scale_factor", "im_shape")  # model inputs built from the metas (harness.model.extra_inputs)
#: the resize modes that place a resized image on a padded canvas (rounding and box_scale apply)
LETTERBOXES = ("letterbox", "letterbox-topleft")
SECTIONS = ("description", "input", "decoder", "postprocess", "classes", "precision")


@dataclass(frozen=True)
class InputSpec:
    """[input]: the tensor the model takes and how an image becomes it."""

    width: int = setting(gt=0, le=16384)
    height: int = setting(gt=0, le=16384)
    #: stretch | letterbox (centred: the top/left pad is the smaller half, (W - w) // 2, which is also
    #: YOLOv5/8 and Ultralytics' round(d/2 - 0.1)) | letterbox-topleft (YOLOX) | warp (NanoDet's keep-ratio
    #: warp: scaled by the ratio and centred with the exact, fractional offset, cv2.warpPerspective) |
    #: warp-stretch (NanoDet-Plus's keep_ratio false)
    resize: Literal["stretch", "letterbox", "letterbox-topleft", "warp", "warp-stretch"] = "letterbox"
    #: a letterbox's two choices, one key each. rounding: how the resized size is rounded from size x r
    #: (r = min(W / w, H / h)): round (YOLOv5/8 detect, Ultralytics LetterBox), floor (YOLOX's int()),
    #: ceil (YOLOv5 val.py's load_image)
    rounding: Literal["round", "floor", "ceil"] = "round"
    #: box_scale: what boxes are divided by on the way back to the original image. resized: each axis's
    #: resized size over its original size (new_w / w, new_h / h), the exact inverse of the pixels placed;
    #: ratio: r on both axes, as Ultralytics' scale_boxes does (and YOLOX's `bboxes /= ratio`). Left out of
    #: the profile's identity while "resized", so profiles that do not set it keep theirs
    box_scale: Literal["resized", "ratio"] = setting("resized", omit_default=True)
    #: area-linear: INTER_AREA when the image shrinks, INTER_LINEAR when it grows (YOLOv5 val.py)
    interpolation: Literal["nearest", "linear", "cubic", "area", "area-linear"] = "linear"
    pad_value: float | tuple[float, float, float] = setting(0.0, ge=0, le=255)  # one value, or 3 in the model's colour order
    color: Literal["bgr", "rgb"] = "bgr"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = setting((1.0, 1.0, 1.0), gt=0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    #: f32 | f16 (a model whose image input is float16) | u8 (raw pixels, normalisation inside the model)
    dtype: Literal["f32", "f16", "u8"] = "f32"
    extras: tuple[str, ...] = setting((), expects="a list of model input names")  # built by harness.model.extra_inputs

    #: keys of earlier versions -> what to write now (the strict loader refuses them with this line)
    RENAMED: ClassVar[dict[str, str]] = {
        "letterbox_rounding": 'write box_scale = "ratio" in place of letterbox_rounding = "ultralytics" (the same '
                              'pixels; boxes map back by the letterbox ratio r, as Ultralytics does)'}

    def __post_init__(self):
        unknown = [name for name in self.extras if name not in EXTRA_INPUT_NAMES]
        if unknown:
            raise Invalid("extras", f"{unknown} unknown; known: {', '.join(sorted(EXTRA_INPUT_NAMES))}")
        if self.box_scale != "resized" and self.resize not in LETTERBOXES:
            why = "a warp maps boxes back by its own ratio" if "warp" in self.resize else "a stretch scales each axis"
            raise Invalid("box_scale", f"applies to resize = \"letterbox\" or \"letterbox-topleft\" only, not "
                                       f"{self.resize!r} ({why})")

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        if self.layout == "NCHW":
            return (batch, 3, self.height, self.width)
        return (batch, self.height, self.width, 3)

    @property
    def numpy_dtype(self) -> str:
        return {"f32": "float32", "f16": "float16", "u8": "uint8"}[self.dtype]


@dataclass(frozen=True)
class PostprocessSpec:
    """[postprocess]: thresholds of the shared NMS."""

    score_threshold: float = setting(0.05, ge=0, lt=1)
    iou_threshold: float = setting(0.6, gt=0, le=1)
    max_detections: int = setting(100, ge=0)  # per image, best first; 0 = keep every box NMS keeps (YOLOX)
    pre_nms_top_k: int = setting(0, ge=0)  # 0 = keep all


@dataclass(frozen=True)
class ClassesSpec:
    """[classes]: class names in the model's output order and the COCO category id of each."""

    names: tuple[str, ...] = setting(nonempty=True)
    category_ids: tuple[int, ...] | None = setting(None, gt=0)  # default 1..N
    preset: Literal["coco80"] | None = None

    def __post_init__(self):
        ids = self.category_ids
        if ids is not None and len(ids) != len(self.names):
            raise Invalid("category_ids", f"{len(ids)} ids for {len(self.names)} names (one id per name)")
        if ids is not None and len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise Invalid("category_ids", f"id {dup} appears twice (each class needs its own category id)")

    @property
    def ids(self) -> tuple[int, ...]:
        return self.category_ids if self.category_ids is not None else tuple(range(1, len(self.names) + 1))


@dataclass(frozen=True)
class PrecisionSpec:
    """[precision]: how the model may be converted to a lower precision (TensorRT fp16 builds)."""

    #: node names or regular expressions (full match) kept in fp32 by the fp16 conversion, e.g.
    #: decoder-side ops whose range fp16 cannot hold; each must match a node of the model
    keep_fp32_nodes: tuple[str, ...] = setting((), expects="a list of node names or regular expressions")


@dataclass(frozen=True)
class DecoderSpec:
    """[decoder]: the family (`kind`) and its typed parameters (the family's Params dataclass)."""

    kind: str
    params: object

    def to_dict(self) -> dict:
        return {"kind": self.kind, **(config.dump(self.params) if self.params is not None else {})}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    input: InputSpec
    decoder: DecoderSpec
    postprocess: PostprocessSpec
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    source: str = ""
    precision: PrecisionSpec = PrecisionSpec()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        """Plain-data form, for sidecars, results and `profiles show` (load_profile reads it back)."""
        return {
            "name": self.name,
            "description": self.description,
            "input": config.dump(self.input),
            "decoder": self.decoder.to_dict(),
            "postprocess": config.dump(self.postprocess),
            "classes": {"names": list(self.class_names), "category_ids": list(self.category_ids)},
            "precision": config.dump(self.precision),
        }

    @property
    def content_hash(self) -> str:
        """sha256 of everything that changes what the profile does (its name and source left out)."""
        body = {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def builtin_alternatives(self, kind: str, strides: tuple[int, ...] = ()) -> list[str]:
        """Built-in profiles other than this one that feed the same input tensor (size, layout, dtype:
        the model took this one's) and decode with `kind`, at these strides when given: what a decoder's
        refusal suggests when the outputs fit another family (the decoders sit a layer below the
        built-in profiles, so they ask the profile). An error path: loads every built-in profile."""
        spec = self.input
        names = []
        for name in builtin_profiles():
            other = load_profile(name)
            same_input = (other.input.width, other.input.height, other.input.layout, other.input.dtype) == (
                spec.width, spec.height, spec.layout, spec.dtype)
            if name == self.name or other.decoder.kind != kind or not same_input:
                continue
            if strides and tuple(getattr(other.decoder.params, "strides", strides)) != tuple(strides):
                continue
            names.append(name)
        return names


#: the decoder kind of a profile that only describes the input (harness bench without --profile)
NO_DECODER = "none"


def input_profile(shape: tuple, dtype: str, name: str = "") -> Profile:
    """A profile that only says what the model takes: [B, 3, H, W] (NCHW) or [B, H, W, 3] (NHWC) of
    float32/float16/uint8; for timing without a dataset (nothing is decoded)."""
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise HarnessError(f"input {list(shape)}: expected [batch, 3, height, width] or [batch, height, width, 3]; "
                           "pass --profile")
    layout = "NCHW" if shape[1] == 3 else "NHWC"
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    codes = {"float32": "f32", "float16": "f16", "uint8": "u8"}
    if dtype not in codes:
        raise HarnessError(f"input type {dtype}: random input is made for float32, float16 and uint8; pass --profile")
    spec = config.load(InputSpec, {"width": width, "height": height, "layout": layout, "dtype": codes[dtype]},
                       "model input", "input")
    return Profile(name=name or f"input {layout} {height}x{width} {codes[dtype]}", description="model input only",
                   input=spec, decoder=DecoderSpec(NO_DECODER, None), postprocess=PostprocessSpec(),
                   class_names=(), category_ids=())


def _builtin_dir():
    return resources.files("harness") / "profiles"


def builtin_profiles() -> dict[str, str]:
    """Name -> description of every built-in profile."""
    out = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            name = entry.name[: -len(".toml")]
            out[name] = read_toml(entry, f"profile {name}").get("description", "")
    return out


def _class_preset(name: str) -> dict:
    return tomllib.loads((_builtin_dir() / "classes" / f"{name}.toml").read_text(encoding="utf-8"))


def resolve_profile_source(name_or_path: str | Path) -> tuple[str, str, object]:
    """(name, source label, readable entry) of a built-in name or a .toml path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise HarnessError(f"profile file not found: {path}")
        return path.stem, str(path), path
    entry = _builtin_dir() / f"{text}.toml"
    if not entry.is_file():
        known = list(builtin_profiles())
        raise HarnessError(f"unknown profile {text!r}{did_you_mean(text, known)}; built-in profiles: "
                           f"{', '.join(known)} (or pass a .toml file)")
    return text, f"builtin:{text}", entry


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a built-in profile by name, or a user's profile from a .toml path."""
    name, source, entry = resolve_profile_source(name_or_path)
    return profile_from_dict(read_toml(entry, f"profile {source if source.startswith('builtin:') else entry}"),
                             name=name, source=source)


def profile_text(name_or_path: str | Path) -> tuple[str, str]:
    """(source label, the profile's TOML text as written) for `harness profiles show`."""
    _, source, entry = resolve_profile_source(name_or_path)
    load_profile(name_or_path)  # refuse to show a profile that does not load
    return source, entry.read_text(encoding="utf-8")


def translate_stored(data: dict) -> dict:
    """A profile as an earlier version stored it (prep.json, written by the harness, not by hand) with
    renamed keys in their current form: `[input] letterbox_rounding = "ultralytics"` is exactly
    `box_scale = "ratio"` (the same pixels, boxes divided by r), so a prepared folder still decodes.
    A user's TOML file is not translated: the loader refuses the old key with the line to write."""
    section = data.get("input") if isinstance(data, dict) else None
    if not isinstance(section, dict) or section.get("letterbox_rounding") != "ultralytics":
        return data  # anything else of the old key is refused by the loader, with the line to write
    section = {**{k: v for k, v in section.items() if k != "letterbox_rounding"}, "box_scale": "ratio"}
    return {**data, "input": section}


def profile_from_dict(data: dict, name: str, source: str = "") -> Profile:
    """Validate a profile's plain data and build a Profile; errors name the profile and the key."""
    from harness.decode import DECODERS  # the decoder families own their parameters

    where = f"profile {source or name}"
    if not isinstance(data, dict):
        raise HarnessError(f"{where}: expected a table of sections")
    unknown = [k for k in data if k not in SECTIONS and k != "name"]
    if unknown:
        raise HarnessError(f"{where}: unknown section or key {unknown[0]!r}{did_you_mean(unknown[0], SECTIONS)}; "
                           f"a profile has: description, [input], [decoder], [postprocess], [classes], [precision]")
    for section in ("input", "decoder"):
        if section not in data:
            raise HarnessError(f"{where}: missing section [{section}]")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise HarnessError(f"{where}: description must be a string")
    input_spec = config.load(InputSpec, data["input"], where, "input")
    decoder = _decoder(data["decoder"], where, DECODERS)
    postprocess = config.load(PostprocessSpec, data.get("postprocess", {}), where, "postprocess")
    classes_data = data.get("classes", {})
    if isinstance(classes_data, dict) and "preset" in classes_data:
        preset = config.coerce_choice(classes_data["preset"], ("coco80",), where, "[classes] preset")
        classes_data = {**_class_preset(preset), **{k: v for k, v in classes_data.items() if k != "preset"}}
    if isinstance(classes_data, dict) and "names" not in classes_data:
        raise HarnessError(f"{where}: [classes] needs names (or preset = \"coco80\")")
    classes = config.load(ClassesSpec, classes_data, where, "classes")
    precision = config.load(PrecisionSpec, data.get("precision", {}), where, "precision")
    return Profile(name=name, description=description, input=input_spec, decoder=decoder, postprocess=postprocess,
                   class_names=classes.names, category_ids=classes.ids, source=source, precision=precision)


def _decoder(section, where: str, registry) -> DecoderSpec:
    if not isinstance(section, dict):
        raise HarnessError(f"{where}: [decoder] must be a table")
    if "kind" not in section:
        raise HarnessError(f"{where}: [decoder] needs a kind (one of {', '.join(registry.names())})")
    kind = config.coerce_choice(section["kind"], tuple(registry.names()), where, "[decoder] kind")
    family = registry.get(kind)
    params = config.load(family.Params, {k: v for k, v in section.items() if k != "kind"}, where, "decoder")
    return DecoderSpec(kind, params)
