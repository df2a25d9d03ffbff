"""The real published detectors in ../shared/models, decoded by the harness and by each upstream's own
post-processing (tests/oracles.py, numpy ports) from the same raw outputs, on ort and on ov.

For every image of coco-tiny the model runs once; its outputs go to harness.decode and to the oracle,
and both result lists are scored by plain pycocotools: the mAPs must agree within 0.002. Skipped with
the reason where ../shared or a runtime is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.coco import load_dataset
from harness.decode import decode
from harness.decode.types import to_coco_results
from harness.images.preprocess import preprocess_image
from harness.model.extra_inputs import extra_inputs
from harness.profiles import load_profile
from harness.targets import get_target
from tests import oracles
from tests.conftest import need_shared

pytestmark = [pytest.mark.shared, pytest.mark.slow]  # 12 real models x 80 images, each decoded twice
TOLERANCE = 0.002


def _input_hw(profile):
    return profile.input.height, profile.input.width


def _original_hw(meta):
    return meta.height, meta.width


def oracle_yolox(outputs, meta, profile):
    (out,) = outputs
    return oracles.yolox_eval(out[0], _input_hw(profile), _original_hw(meta))


def oracle_yolov5(outputs, meta, profile):
    (out,) = outputs
    return oracles.yolov5_val(out[0], _input_hw(profile), _original_hw(meta))


def oracle_nanodet_plus(outputs, meta, profile):
    (out,) = outputs
    return oracles.nanodet_plus_eval(out[0], _input_hw(profile), _original_hw(meta))


def oracle_picodet_legacy(outputs, meta, profile):
    """The export's outputs are per-level scores [1, n, 80] and bins [1, n, 32]: sorted into level order."""
    by_rows = sorted((o[0] for o in outputs), key=lambda a: -a.shape[0])
    scores = [a for a in by_rows if a.shape[1] == 80]
    bins = [a for a in by_rows if a.shape[1] == 32]
    return oracles.picodet_eval(scores, bins, _input_hw(profile), _original_hw(meta))


def oracle_paddle_nms(outputs, meta, profile):
    bbox = next(o for o in outputs if np.ndim(o) == 2)
    count = next(o for o in outputs if np.ndim(o) == 1)
    return oracles.paddle_nms_rows(bbox, count)


CASES = {
    "nanodet-plus-m-416": ("nanodet-plus-m-416.onnx", oracle_nanodet_plus),
    "picodet-s-320-legacy": ("picodet-s-320-legacy.onnx", oracle_picodet_legacy),
    "picodet-xs-320-lcnet": ("picodet-xs-320-lcnet-nms.onnx", oracle_paddle_nms),
    "yolov5n-640": ("yolov5n-640.onnx", oracle_yolov5),
    "yolov5n-640-dynamic": ("yolov5n-640-dynamic.onnx", oracle_yolov5),
    "yolox-nano-416": ("yolox-nano-416.onnx", oracle_yolox),
}


def harness_and_oracle_map(target_name: str, model, profile, oracle, coco_tiny) -> tuple[float, float, int]:
    """(harness mAP, oracle mAP, harness detections) over coco-tiny, from one inference per image."""
    ok, why = get_target(target_name).availability()
    if not ok:
        pytest.skip(why)
    images_dir, ann_path = coco_tiny
    dataset = load_dataset(images_dir, ann_path)
    target = get_target(target_name)(model, profile, {})
    target.load(1)
    mine, theirs = [], []
    try:
        for image_id, path in dataset.images:
            tensor, meta = preprocess_image(path, image_id, profile.input)
            outputs = target.infer(tensor[None], extra_inputs(profile, [meta], 1) or None)
            (dets,) = decode(outputs, [meta], profile)
            mine += to_coco_results(dets, image_id, profile.category_ids)
            theirs += oracles.coco_dicts(image_id, *oracle(outputs, meta, profile), profile.category_ids)
    finally:
        target.close()
    ids = [i for i, _ in dataset.images]
    return oracles.coco_map(ann_path, mine, ids), oracles.coco_map(ann_path, theirs, ids), len(mine)


@pytest.mark.parametrize("target", ["ort", "ov"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_harness_matches_upstream_decode_on_real_model(coco_tiny, case, target):
    file, oracle = CASES[case]
    model = need_shared("models", file)
    profile = load_profile(case.replace("-dynamic", ""))
    ours, upstream, detections = harness_and_oracle_map(target, model, profile, oracle, coco_tiny)
    print(f"{case} on {target}: harness {ours:.4f}, upstream decode {upstream:.4f} ({detections} detections)")
    assert detections > 80
    assert ours > 0.2  # every one of these models scores 0.27-0.36 here; 0 would be a silent failure
    assert abs(ours - upstream) <= TOLERANCE


@pytest.mark.slow
def test_yolox_matches_the_upstream_end_to_end_with_its_own_preprocessing(coco_tiny):
    """YOLOX's whole evaluation (its preproc: int() sizes, top-left paste; its decode; boxes / r)
    against the harness's (the profile's rounding = "floor"): within 0.003 on coco-tiny. With the
    harness rounding the size instead, it scored 0.3019 against 0.3052."""
    import onnxruntime as ort

    from harness.images.preprocess import read_image

    model = need_shared("models", "yolox-nano-416.onnx")
    profile = load_profile("yolox-nano-416")
    images_dir, ann_path = coco_tiny
    dataset = load_dataset(images_dir, ann_path)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    mine, theirs = [], []
    for image_id, path in dataset.images:
        image = read_image(path)
        padded, _ = oracles.yolox_preproc(image, (416, 416))
        (raw,) = session.run(None, {"images": padded.transpose(2, 0, 1)[None].astype(np.float32)})
        theirs += oracles.coco_dicts(image_id, *oracles.yolox_eval(raw[0], (416, 416), image.shape[:2]),
                                     profile.category_ids)
        tensor, meta = preprocess_image(path, image_id, profile.input)
        (dets,) = decode(session.run(None, {"images": tensor[None]}), [meta], profile)
        mine += to_coco_results(dets, image_id, profile.category_ids)
    ids = [i for i, _ in dataset.images]
    ours, upstream = oracles.coco_map(ann_path, mine, ids), oracles.coco_map(ann_path, theirs, ids)
    print(f"yolox-nano-416: harness {ours:.4f}, upstream end to end {upstream:.4f}")
    assert abs(ours - upstream) <= 0.003
