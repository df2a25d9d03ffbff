"""Shared fixtures: paths to ../shared (skipped with a reason where absent) and the demo assets."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def coco_tiny() -> tuple[Path, Path]:
    """(images dir, annotations json) of ../shared/data/coco-tiny."""
    images = need_shared("data", "coco-tiny", "val2017")
    return images, need_shared("data", "coco-tiny", "annotations", "instances_val2017.json")


@pytest.fixture(scope="session")
def nanodet_m_320() -> Path:
    return need_shared("models", "nanodet-m-320.onnx")
