"""CPU cost per image of the harness's own stages, alone in one thread: preprocess, decode + NMS,
COCO dicts. Point --checkout at another clone (e.g. an older commit in a git worktree) to compare
two versions side by side on the same machine state.

Usage: python bench/stage_costs.py [--checkout PATH] [--passes 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CASES = [  # (profile, target, model)
    ("nanodet-plus-m-320-int8-ov", "ov", SHARED / "models/nanodet-plus-m-320-int8-ov/model.xml"),
    ("nanodet-m-320", "ort", SHARED / "models/nanodet-m-320.onnx"),
]


def _use_checkout(path: Path) -> None:
    """Import harness from `path`, not from the installed (editable) package."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, str(path.resolve()))


def _best(fn, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def preprocess_cost(dataset, profile, passes: int = 3) -> float:
    """CPU seconds per image of preprocess_image alone, in this thread (best pass)."""
    from harness.images.preprocess import preprocess_image

    return _best(lambda: [preprocess_image(p, i, profile.input) for i, p in dataset.images], passes) / len(dataset.images)


def decode_costs(target, dataset, profile, passes: int = 3) -> tuple[float, float]:
    """CPU seconds per image of decode+NMS, and of building the COCO dicts, on this (loaded)
    target's real outputs, in this thread (thread_time: the runtime's own threads may still spin
    after inference); best pass of each."""
    from harness.decode import decode
    from harness.decode.types import to_coco_results
    from harness.images.preprocess import preprocess_image

    outputs = []
    for image_id, path in dataset.images:
        tensor, meta = preprocess_image(path, image_id, profile.input)
        outputs.append((target.infer(tensor[None]), meta))
    n = len(outputs)
    dec = _best(lambda: [decode(o, [m], profile) for o, m in outputs], passes)
    dets = [(decode(o, [m], profile)[0], m) for o, m in outputs]
    dicts = _best(lambda: [to_coco_results(d, m.image_id, profile.category_ids) for d, m in dets], passes)
    return dec / n, dicts / n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--passes", type=int, default=4, help="passes over the 80 images; the best counts")
    args = parser.parse_args(argv)
    _use_checkout(args.checkout)

    import harness
    from harness.data.coco import load_dataset
    from harness.profiles import load_profile
    from harness.targets import get_target

    data = SHARED / "data/coco-tiny"
    dataset = load_dataset(data / "val2017", data / "annotations/instances_val2017.json")
    print(f"# harness from {Path(harness.__file__).parent}; {len(dataset.images)} images; best of {args.passes} passes, "
          "thread CPU time")
    for name, target_name, model in CASES:
        profile = load_profile(name)
        pre = preprocess_cost(dataset, profile, args.passes)
        target = get_target(target_name)(model, profile, {})
        target.load(1)
        dec, dicts = decode_costs(target, dataset, profile, args.passes)
        target.close()
        print(f"{name:28s} preprocess {pre * 1e3:6.3f} ms | decode+NMS {dec * 1e3:6.3f} ms | "
              f"COCO dicts {dicts * 1e3:6.3f} ms  (per image)")


if __name__ == "__main__":
    main()
