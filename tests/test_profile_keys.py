"""[input]'s letterbox pair: `rounding` (the resized size) and `box_scale` (what boxes are divided by on
the way back), the old `letterbox_rounding` key refused in a user's file and read in a stored prep.json,
and the identity of profiles that do not set box_scale left as it was."""

from __future__ import annotations

import hashlib
import json
import tomllib

import numpy as np
import pytest

from harness.core import config
from harness.core.errors import HarnessError
from harness.profiles import builtin_profiles, load_profile, profile_text
from tests.tinymodel import write_tiny_dataset, write_tiny_profile


def _variant(tmp_path, name: str, old: str, new: str):
    text = profile_text(name)[1]
    assert old in text
    path = tmp_path / f"{name}-variant.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def _hash_without_box_scale(name: str) -> str:
    """The content hash as the loader computed it before box_scale existed: the file's own [input] keys
    filled with the defaults of every other key, box_scale never among them."""
    profile = load_profile(name)
    body = {k: v for k, v in profile.to_dict().items() if k not in ("name", "description")}
    source = tomllib.loads(profile_text(name)[1])
    assert "box_scale" not in source["input"]
    body["input"] = {k: v for k, v in body["input"].items() if k != "box_scale"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", [n for n in builtin_profiles() if "box_scale" not in profile_text(n)[1]])
def test_profiles_without_box_scale_keep_their_identity(name, tmp_path):
    profile = load_profile(name)
    assert "box_scale" not in profile.to_dict()["input"]
    assert profile.content_hash == _hash_without_box_scale(name)
    if profile.input.resize in ("letterbox", "letterbox-topleft"):  # writing the default changes nothing
        spelled = load_profile(_variant(tmp_path, name, "[input]\n", '[input]\nbox_scale = "resized"\n'))
        assert spelled.content_hash == profile.content_hash


def test_box_scale_ratio_is_part_of_the_identity(tmp_path):
    plain = load_profile(_variant(tmp_path, "yolo11n-640-tflite", 'box_scale = "ratio"', 'box_scale = "resized"'))
    assert plain.content_hash != load_profile("yolo11n-640-tflite").content_hash
    assert load_profile("yolo11n-640-tflite").to_dict()["input"]["box_scale"] == "ratio"


def test_old_key_is_refused_in_a_users_file_with_the_new_one(tmp_path):
    path = _variant(tmp_path, "yolo11n-640-tflite", 'box_scale = "ratio"', 'letterbox_rounding = "ultralytics"')
    with pytest.raises(HarnessError) as info:
        load_profile(path)
    line = str(info.value)
    assert "\n" not in line and str(path) in line
    assert '[input] letterbox_rounding was renamed: write box_scale = "ratio"' in line


def test_box_scale_applies_to_letterboxes_only(tmp_path):
    path = _variant(tmp_path, "ssd-mobilenet-v1-300-tflite", 'resize = "stretch"',
                    'resize = "stretch"\nbox_scale = "ratio"')
    with pytest.raises(HarnessError, match=r'\[input\] box_scale: applies to resize = "letterbox" or '
                                           r'"letterbox-topleft" only, not \'stretch\''):
        load_profile(path)
    with pytest.raises(HarnessError, match=r"\[input\] box_scale = 'r': expected one of resized, ratio"):
        load_profile(_variant(tmp_path, "yolo11n-640-tflite", 'box_scale = "ratio"', 'box_scale = "r"'))


def test_omit_default_is_read_back_by_the_loader():
    """dump() leaves a default box_scale out; load() of that dump gives the same spec (what sidecars rely on)."""
    from harness.profiles import InputSpec

    for name in ("yolov5n-640", "yolo11n-416-tflite"):
        spec = load_profile(name).input
        assert config.load(InputSpec, config.dump(spec), "dump", "input") == spec


def test_a_stored_prep_json_with_the_old_key_still_loads_as_box_scale_ratio(tmp_path):
    """prep.json is written by the harness (its profile section and image metas are what the device's
    files were made from): the old key is translated there, and the folder's identity stays the file's."""
    from harness.data.coco import load_dataset
    from harness.npu.prep import load_prep, prep_identity
    from harness.npu.prepare import prepare

    images_dir, ann = write_tiny_dataset(tmp_path / "ds", count=2)
    profile_path = write_tiny_profile(tmp_path / "tiny.toml")
    profile_path.write_text(profile_path.read_text().replace('resize = "letterbox"',
                                                             'resize = "letterbox"\nbox_scale = "ratio"'))
    profile = load_profile(profile_path)
    prepare(load_dataset(images_dir, ann).images, profile, tmp_path / "prep", "npz")
    file = tmp_path / "prep" / "prep.json"
    data = json.loads(file.read_text())
    assert data["profile"]["input"].pop("box_scale") == "ratio"
    data["profile"]["input"]["letterbox_rounding"] = "ultralytics"  # as the previous version wrote it
    file.write_text(json.dumps(data))
    prep = load_prep(tmp_path / "prep")
    assert prep.profile.input == profile.input
    assert prep.sha256 == prep_identity(data)
    metas = [meta for _, meta in prep.images]
    assert metas and all(np.isclose(m.scale_x, min(32 / m.width, 32 / m.height)) for m in metas)
    data["profile"]["input"]["letterbox_rounding"] = "other"
    file.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="letterbox_rounding was renamed"):
        load_prep(tmp_path / "prep")
