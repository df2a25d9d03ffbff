"""Shared fixtures: paths to ../shared (skipped with a reason where absent) and the demo assets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
COCO_TINY = SHARED / "data" / "coco-tiny"
MODELS = SHARED / "models"


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (project's shared data/models; absent on this machine)")
    return path


def with_decoder_params(profile, **changes):
    """The profile with some of its typed [decoder] parameters changed."""
    params = dataclasses.replace(profile.decoder.params, **changes)
    return dataclasses.replace(profile, decoder=dataclasses.replace(profile.decoder, params=params))


@pytest.fixture(scope="session")
def coco_tiny() -> tuple[Path, Path]:
    """(images dir, annotations json) of ../shared/data/coco-tiny."""
    images = need_shared("data", "coco-tiny", "val2017")
    return images, need_shared("data", "coco-tiny", "annotations", "instances_val2017.json")


@pytest.fixture(scope="session")
def nanodet_m_320() -> Path:
    return need_shared("models", "nanodet-m-320.onnx")


@pytest.fixture
def tiny(tmp_path):
    """The tiny real ONNX detector, its profile and a 6-image COCO dataset in tmp_path (tests/tinymodel.py)."""
    from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

    model = write_tiny_model(tmp_path / "tiny.onnx")
    profile = write_tiny_profile(tmp_path / "tiny.toml")
    images, ann = write_tiny_dataset(tmp_path / "ds")
    return {"model": model, "profile": profile, "images": images, "ann": ann, "root": tmp_path}
