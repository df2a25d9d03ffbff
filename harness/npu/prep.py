"""prep.json: the sidecar `harness preprocess` writes beside the input files and `harness decode` and
`harness emulate` read back, as a typed dataclass loaded by the strict loader (harness.core.config).

Also what every tool's reading side shares: output specs per image, the model-input check, and the
ONNX Runtime stand-in the emulators run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core import config
from harness.core.config import setting
from harness.core.errors import HarnessError
from harness.core.fileio import sha256_file
from harness.core.folders import plain_name
from harness.core.jsonfile import read_json_object
from harness.images.preprocess import ImageMeta
from harness.model.onnx_model import inspect_onnx
from harness.profiles import InputSpec, Profile, profile_from_dict, translate_stored

PREP_FILE = "prep.json"
PREP_VERSION = 1


@dataclass(frozen=True)
class OutputSpec:
    """One model output for ONE image, as the tools write it (batch axis kept as 1)."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str


@dataclass(frozen=True)
class PrepImage:
    stem: str
    input_file: str
    image_id: int
    file: str
    width: int = setting(gt=0)
    height: int = setting(gt=0)
    scale_x: float = setting(gt=0)
    scale_y: float = setting(gt=0)
    pad_x: float = setting(ge=0)
    pad_y: float = setting(ge=0)
    #: sha256 of the original image's bytes (harness.data.coco.Dataset.content): a decode row's dataset
    #: identity covers the pixels, as a run row's does
    sha256: str | None = None

    def meta(self) -> ImageMeta:
        return ImageMeta(self.image_id, self.file, self.width, self.height, self.scale_x, self.scale_y,
                         self.pad_x, self.pad_y)


@dataclass(frozen=True)
class PrepFile:
    """Everything in prep.json."""

    harness_prep_version: int
    format: str
    tool: str
    profile: dict
    images: tuple[PrepImage, ...] = setting(nonempty=True)
    model: str | None = None
    dataset: str = ""
    annotations: str = ""
    input: dict | None = None
    model_input: dict | None = None
    outputs: tuple[OutputSpec, ...] | None = None
    skipped: tuple[str, ...] = ()
    device_preprocess: dict | None = None
    #: sha256 of the datalist written beside the inputs (npz): its order maps outputs to images, so a
    #: re-sorted list is refused instead of scoring every output against another image
    datalist_sha256: str | None = None
    model_sha256: str | None = None  # of --model (the ONNX the device model is made from)
    limit: int | None = None  # preprocess --limit


@dataclass
class Prep:
    folder: Path
    sidecar: PrepFile
    profile: Profile
    #: the preparation's identity: what the device is given (format, profile, every image's input file and
    #: geometry), not the model or output specs recorded beside them; "" for inputs made outside the harness
    sha256: str = ""

    @property
    def fmt(self) -> str:
        return self.sidecar.format

    @property
    def model(self) -> str | None:
        return self.sidecar.model

    @property
    def images(self) -> list[tuple[str, ImageMeta]]:
        """(stem, meta) in dataset (= datalist) order."""
        return [(image.stem, image.meta()) for image in self.sidecar.images]

    @property
    def content(self) -> list[str] | None:
        """Each image's bytes sha256 in `images` order, or None where prep.json does not record every one."""
        digests = [image.sha256 for image in self.sidecar.images]
        return None if None in digests else digests

    @property
    def outputs(self) -> list[dict] | None:
        """Per-image output specs recorded at preprocess, None when no model was given."""
        if self.sidecar.outputs is None:
            return None
        return [{"name": o.name, "shape": None if o.shape is None else list(o.shape), "dtype": o.dtype}
                for o in self.sidecar.outputs]


def load_prep(path: str | Path) -> Prep:
    """prep.json (or the folder holding it), validated; errors name the file and the key."""
    path = Path(path)
    file = path / PREP_FILE if path.is_dir() or not path.suffix else path
    if not file.is_file():
        raise HarnessError(f"{file} not found: point --prep at the --out folder of `harness preprocess`")
    data = read_json_object(file)
    if data.get("harness_prep_version") != PREP_VERSION:
        raise HarnessError(f"{file}: not a harness prep.json (version {PREP_VERSION}); rerun `harness preprocess`")
    sidecar = config.load(PrepFile, data, str(file))
    for index, image in enumerate(sidecar.images):  # names from the file never lead out of --prep
        plain_name(image.stem, f"{file}: images[{index}].stem")
        plain_name(image.input_file, f"{file}: images[{index}].input_file")
    profile_data = translate_stored(sidecar.profile)  # identity below stays the file's own
    profile = profile_from_dict(profile_data, name=str(profile_data.get("name") or file.parent.name), source=str(file))
    return Prep(file.parent, sidecar, profile, prep_identity(data))


def prep_identity(data: dict) -> str:
    """sha256 of what a prepared folder gives the device (see Prep.sha256), from prep.json's content."""
    given = {key: data.get(key) for key in ("format", "profile", "images", "device_preprocess")}
    for key in ("input", "model_input"):  # the tensor's name comes from --model, the bytes do not
        given[key] = {k: v for k, v in (data.get(key) or {}).items() if k != "name"}
    return hashlib.sha256(json.dumps(given, sort_keys=True, default=str).encode()).hexdigest()


def emulation_record(model: str | Path, prep: Prep) -> dict:
    """What `harness emulate` writes beside its outputs about what made them (read back into DeviceTiming)."""
    import onnxruntime

    from harness.measure.identity import model_sha256

    return {"model_sha256": model_sha256(model), "prep_sha256": prep.sha256,
            "tool_version": f"onnxruntime {onnxruntime.__version__}"}


def recorded_origin(raw: dict) -> dict:
    """The DeviceTiming fields of an emulation_record found in a tool's file (absent keys stay None)."""
    return {key: (str(raw[key]) if raw.get(key) else None) for key in ("model_sha256", "prep_sha256", "tool_version")}


#: the list `harness preprocess --format npz` writes into the prep folder, which the device runs
PREP_DATALIST = "datalist.txt"


def check_prep_datalist(prep: Prep) -> None:
    """The datalist inside the prep folder is the one preprocess wrote (prep.json records its sha256):
    its order is what maps output N to image N, so a list re-sorted after preprocessing (before the
    device or the emulator ran it, or after) would score every output against another image."""
    recorded = prep.sidecar.datalist_sha256
    path = prep.folder / PREP_DATALIST
    if recorded is None or not path.is_file():
        return
    if sha256_file(path) != recorded:
        raise HarnessError(f"{path} differs from the list `harness preprocess` wrote (its sha256 is in "
                           f"{PREP_FILE}); its order maps outputs to images: restore it, or pass the list the device "
                           "really ran as --datalist")


# ---------------------------------------------------------------- model I/O, read without running

def onnx_io(model_path: str | Path) -> tuple[dict, list[dict]]:
    """(first real input, outputs) of an ONNX model as {name, shape, dtype}; None for symbolic dims."""
    info = inspect_onnx(model_path)

    def plain(tensor) -> dict:
        return {"name": tensor.name, "shape": None if tensor.shape is None else list(tensor.dims()),
                "dtype": tensor.dtype}

    return plain(info.image_input), [plain(o) for o in info.outputs]


def per_image_outputs(first_input: dict, outputs: list[dict]) -> list[dict]:
    """Output specs for ONE image, as the vendor tools write them (batch axis 0 kept as 1).

    A symbolic batch dim, or a fixed one equal to the model's input batch > 1, becomes 1; outputs
    of batch-1 graphs with no batch dim (e.g. nanodet-m-320's [1600, 80]) stay as they are.
    """
    in_batch = (first_input.get("shape") or [None])[0]
    specs = []
    for out in outputs:
        shape = None if out["shape"] is None else list(out["shape"])
        if shape:
            if shape[0] is None or (in_batch and in_batch > 1 and shape[0] == in_batch):
                shape[0] = 1
        specs.append({"name": out["name"], "shape": shape, "dtype": out["dtype"]})
    return specs


def check_model_input(model_path, first_input: dict, spec: InputSpec, profile_name: str) -> None:
    """The model must take what the files hold, or the device run would be silently wrong."""
    expected = spec.shape(1)
    shape = first_input.get("shape")
    if shape is not None and (len(shape) != 4 or any(d is not None and d != e for d, e in zip(shape[1:], expected[1:]))):
        raise HarnessError(f"model {Path(model_path).name} input {first_input['name']!r} shape {shape} does not fit "
                           f"profile {profile_name} ({spec.layout} {list(expected[1:])}); check --profile")
    if first_input["dtype"] != spec.numpy_dtype:
        raise HarnessError(f"model {Path(model_path).name} input dtype {first_input['dtype']} does not fit profile "
                           f"{profile_name} (dtype = {spec.dtype!r}); check --profile")


def output_specs(prep: Prep, model: str | Path | None) -> list[dict] | None:
    """Per-image output specs: from --model when given (it wins), else as recorded at preprocess."""
    if model is None:
        return prep.outputs
    first_input, outputs = onnx_io(model)
    return per_image_outputs(first_input, outputs)


def emulator_target(model: str | Path, prep: Prep, batchsize: int, threads: int | None):
    """(ort target standing in for the device, batch it runs, the model's fixed batch or None).

    The batch is the model's own fixed batch where it has one (a device packs input files by the
    model's input size), else batchsize. The target is created, not loaded."""
    from harness.core.bounds import check_batch_memory
    from harness.targets import get_target

    fixed = inspect_onnx(model).image_input.fixed_batch
    if fixed is None and batchsize > len(prep.images):
        raise HarnessError(f"--batchsize {batchsize}: larger than the {len(prep.images)} image(s) in {prep.folder}; "
                           f"use at most {len(prep.images)}")
    batch = fixed if fixed is not None else batchsize
    spec = prep.profile.input  # the batch, its copy for the runtime, and one batch of outputs
    check_batch_memory(spec.shape(batch), np.dtype(spec.numpy_dtype).itemsize, 2, f"--batchsize {batch}",
                       output_bytes_per_image=inspect_onnx(model).output_bytes_per_image()[0], outputs_in_flight=1)
    target = get_target("ort")(model, prep.profile, {"threads": threads} if threads else {})
    return target, batch, fixed
