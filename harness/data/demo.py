"""The embedded default: the project's own tiny detector on its own synthetic validation split.

`harness demo` needs no download: the ONNX model ships in the package and the dataset is
generated deterministically on first use, then cached.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from harness.core.folders import cache_root

DEMO_PROFILE = "demo"
DEMO_IMAGES = 200
DEMO_SEED = 2026
DEMO_TARGETS = ("ort", "ov")
DEMO_BATCH_SIZES = (1, 4, 8)


def demo_model_path() -> Path:
    return Path(str(resources.files("harness") / "assets" / "demo" / "demo-nanodet.onnx"))


def demo_dataset(cache_dir: Path | None = None) -> tuple[Path, Path, bool]:
    """(images dir, annotations json, reused) of the demo validation split, generated once.

    A marker file is written last, so an interrupted generation is redone, never half-used.
    """
    from harness.data.synthetic import generate_dataset

    root = (cache_dir or cache_root()) / f"demo-val-{DEMO_IMAGES}-seed{DEMO_SEED}"
    marker = root / ".complete"
    images_dir, ann_path = root / "images", root / "instances_val.json"
    if marker.is_file() and ann_path.is_file() and images_dir.is_dir():
        return images_dir, ann_path, True
    if root.exists():
        shutil.rmtree(root)
    images_dir, ann_path = generate_dataset(root, num_images=DEMO_IMAGES, seed=DEMO_SEED, split="val")
    marker.write_text("ok\n")
    return images_dir, ann_path, False


def free_out_dir(base: Path) -> Path:
    """base if it holds no results yet, else base-2, base-3...: a demo never overwrites results."""
    candidate, n = base, 1
    while (candidate / "results.json").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
