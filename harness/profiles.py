"""Model profiles: how to feed a model and how to read what it returns, as small TOML files.

Built-in profiles live in harness/profiles/*.toml; users pass their own with `--profile FILE.toml`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from harness.errors import HarnessError

RESIZE_MODES = ("stretch", "letterbox", "letterbox-topleft")
INTERPOLATIONS = ("nearest", "linear", "cubic", "area")
COLORS = ("bgr", "rgb")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("f32", "u8")


@dataclass(frozen=True)
class InputSpec:
    width: int
    height: int
    resize: str = "letterbox"
    interpolation: str = "linear"
    pad_value: float | tuple[float, float, float] = 0.0  # one value, or 3 in the model's colour order
    color: str = "bgr"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    dtype: str = "f32"
    extras: tuple[str, ...] = ()  # extra model inputs built from the metas (harness.extra_inputs)

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        if self.layout == "NCHW":
            return (batch, 3, self.height, self.width)
        return (batch, self.height, self.width, 3)

    @property
    def numpy_dtype(self) -> str:
        return "float32" if self.dtype == "f32" else "uint8"


@dataclass(frozen=True)
class PostprocessSpec:
    score_threshold: float = 0.05
    iou_threshold: float = 0.6
    max_detections: int = 100
    pre_nms_top_k: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    input: InputSpec
    decoder: dict
    postprocess: PostprocessSpec
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        """Plain-data form, for sidecars and results (enough to rebuild the profile)."""
        return {
            "name": self.name,
            "description": self.description,
            "input": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.input.__dict__.items()},
            "decoder": dict(self.decoder),
            "postprocess": dict(self.postprocess.__dict__),
            "classes": {"names": list(self.class_names), "category_ids": list(self.category_ids)},
        }


def _builtin_dir():
    return resources.files("harness") / "profiles"


def builtin_profiles() -> dict[str, str]:
    """Name -> description of every built-in profile."""
    out = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            name = entry.name[: -len(".toml")]
            out[name] = _read_toml(entry, name).get("description", "")
    return out


def _read_toml(entry, label: str) -> dict:
    try:
        return tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"profile {label}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise HarnessError(f"profile {label}: not a text TOML file") from None


def _class_preset(name: str) -> dict:
    entry = _builtin_dir() / "classes" / f"{name}.toml"
    if not entry.is_file():
        raise HarnessError(f"unknown class preset {name!r}; built-in presets: coco80")
    return tomllib.loads(entry.read_text(encoding="utf-8"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a built-in profile by name, or a user's profile from a .toml path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise HarnessError(f"profile file not found: {path}")
        return profile_from_dict(_read_toml(path, str(path)), name=path.stem, source=str(path))
    entry = _builtin_dir() / f"{text}.toml"
    if not entry.is_file():
        known = ", ".join(builtin_profiles())
        raise HarnessError(f"unknown profile {text!r}; built-in profiles: {known} (or pass a .toml file)")
    return profile_from_dict(_read_toml(entry, text), name=text, source=f"builtin:{text}")


def _choice(section: dict, key: str, allowed: tuple, default, where: str):
    value = section.get(key, default)
    if value not in allowed:
        raise HarnessError(f"{where}: {key} = {value!r}, expected one of {', '.join(map(str, allowed))}")
    return value


def _extras(section: dict, where: str) -> tuple[str, ...]:
    value = section.get("extras", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{where}: [input] extras must be a list of model input names")
    return tuple(value)


def _pad_value(value, where: str):
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    raise HarnessError(f"{where}: [input] pad_value must be a number or 3 numbers (model colour order)")


def profile_from_dict(data: dict, name: str, source: str = "") -> Profile:
    """Validate a profile's plain data and build a Profile; errors name the profile and the key."""
    where = f"profile {source or name}"
    try:
        inp = data["input"]
        dec = data["decoder"]
    except KeyError as exc:
        raise HarnessError(f"{where}: missing section [{exc.args[0]}]") from None
    for key in ("width", "height"):
        if not isinstance(inp.get(key), int) or inp[key] <= 0:
            raise HarnessError(f"{where}: [input] {key} must be a positive integer")
    mean = tuple(float(v) for v in inp.get("mean", (0.0, 0.0, 0.0)))
    std = tuple(float(v) for v in inp.get("std", (1.0, 1.0, 1.0)))
    if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
        raise HarnessError(f"{where}: [input] mean and std need 3 values each, std non-zero")
    input_spec = InputSpec(
        width=inp["width"],
        height=inp["height"],
        resize=_choice(inp, "resize", RESIZE_MODES, "letterbox", where),
        interpolation=_choice(inp, "interpolation", INTERPOLATIONS, "linear", where),
        pad_value=_pad_value(inp.get("pad_value", 0), where),
        color=_choice(inp, "color", COLORS, "bgr", where),
        mean=mean,
        std=std,
        layout=_choice(inp, "layout", LAYOUTS, "NCHW", where),
        dtype=_choice(inp, "dtype", DTYPES, "f32", where),
        extras=_extras(inp, where),
    )
    if "kind" not in dec:
        raise HarnessError(f"{where}: [decoder] needs a kind")
    post = data.get("postprocess", {})
    post_spec = PostprocessSpec(
        score_threshold=float(post.get("score_threshold", 0.05)),
        iou_threshold=float(post.get("iou_threshold", 0.6)),
        max_detections=int(post.get("max_detections", 100)),
        pre_nms_top_k=int(post.get("pre_nms_top_k", 0)),
    )
    classes = data.get("classes", {})
    if "preset" in classes:
        classes = {**_class_preset(classes["preset"]), **{k: v for k, v in classes.items() if k != "preset"}}
    names = tuple(classes.get("names", ()))
    ids = tuple(int(i) for i in classes.get("category_ids", range(1, len(names) + 1)))
    if not names:
        raise HarnessError(f"{where}: [classes] needs names (or preset = \"coco80\")")
    if len(ids) != len(names):
        raise HarnessError(f"{where}: [classes] has {len(names)} names but {len(ids)} category_ids")
    extra = {k: v for k, v in data.items() if k not in ("input", "decoder", "postprocess", "classes", "description")}
    return Profile(
        name=name,
        description=data.get("description", ""),
        input=input_spec,
        decoder=dict(dec),
        postprocess=post_spec,
        class_names=names,
        category_ids=ids,
        source=source,
        extra=extra,
    )
