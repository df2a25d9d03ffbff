"""Independent decodes ("oracles") of each family's raw outputs, ported to numpy from the upstream's
own post-processing code, line for line where it matters, so they run in CI without torch or paddle.

Each function takes one image's raw outputs (batch row 0 already taken, or the whole batch where
the upstream works per batch) plus the original image size, and returns (boxes xyxy in original
pixels, scores, class indices) as the upstream's evaluation would hand them to COCO. They share
nothing with harness.decode: not the priors, not the NMS, not the mapping back to the image.

Sources (read from these commits):
- YOLOX, Megvii-BaseDetection/YOLOX @ 6ddff4824372906469a7fae2dc3206c7aa4bbaee:
  yolox/models/yolo_head.py YOLOXHead.decode_outputs, yolox/utils/boxes.py postprocess,
  yolox/evaluators/coco_evaluator.py convert_to_coco_format, yolox/exp/yolox_base.py (test_conf 0.01,
  nmsthre 0.65). https://github.com/Megvii-BaseDetection/YOLOX/blob/6ddff4824372906469a7fae2dc3206c7aa4bbaee/yolox/utils/boxes.py
- YOLOv5, ultralytics/yolov5 @ 5081342f04fb287fc2e5f2b5a4e06752b7937b1c: utils/general.py
  non_max_suppression, scale_boxes, clip_boxes; val.py settings (conf 0.001, IoU 0.6, max_det 300,
  multi-label). https://github.com/ultralytics/yolov5/blob/5081342f04fb287fc2e5f2b5a4e06752b7937b1c/utils/general.py
- NanoDet-Plus, RangiLyu/nanodet @ be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0:
  nanodet/model/head/nanodet_plus_head.py get_bboxes / get_single_level_center_priors,
  nanodet/model/head/gfl_head.py Integral, nanodet/util/box_transform.py distance2bbox,
  nanodet/model/module/nms.py multiclass_nms / batched_nms, nanodet/data/transform/warp.py warp_boxes.
  https://github.com/RangiLyu/nanodet/blob/be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0/nanodet/model/head/nanodet_plus_head.py
- PicoDet, PaddlePaddle/PaddleDetection @ 666f597fd00d3157e84dd9fb2dd3f40bf9918ebc:
  ppdet/modeling/heads/pico_head.py PicoHead.forward_eval / _generate_anchors / post_process,
  ppdet/modeling/bbox_utils.py batch_distance2bbox, ppdet/metrics/json_results.py get_det_res,
  configs/picodet/legacy_model/_base_/picodet_esnet.yml (MultiClassNMS 0.025 / 1000 / 100 / 0.6);
  MultiClassNMS itself is Paddle's multiclass_nms3 CPU kernel, PaddlePaddle/Paddle @
  06dc365f6add7e54f6cc70769db8e8400103fda4 paddle/phi/kernels/cpu/multiclass_nms3_kernel.cc
  (NMSFast, JaccardOverlap with normalized=True, keep_top_k by stable sort).
  https://github.com/PaddlePaddle/PaddleDetection/blob/666f597fd00d3157e84dd9fb2dd3f40bf9918ebc/ppdet/modeling/heads/pico_head.py

Preprocessing ports (the model-input image each upstream's evaluation builds, before normalisation):
- YOLOX yolox/data/data_augment.py preproc (int() of size x ratio, pasted top-left on 114) @ 6ddff48.
- YOLOv5 utils/dataloaders.py LoadImagesAndLabels.load_image (ceil, INTER_AREA when shrinking) and
  utils/augmentations.py letterbox (auto=False, scaleup=False as val.py calls it) @ 5081342.
- NanoDet nanodet/data/transform/warp.py get_resize_matrix + cv2.warpPerspective (ShapeTransform) @ be9b4a9.
"""

from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------------------------------- preprocessing

def yolox_preproc(img: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """YOLOX's preproc without its transpose/float cast: (padded HWC uint8 image, r)."""
    import cv2

    padded_img = np.ones((input_size[0], input_size[1], 3), dtype=np.uint8) * 114
    r = min(input_size[0] / img.shape[0], input_size[1] / img.shape[1])
    resized_img = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)),
                             interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    padded_img[: int(img.shape[0] * r), : int(img.shape[1] * r)] = resized_img
    return padded_img, r


def yolov5_val_image(im: np.ndarray, img_size: int = 640, color=(114, 114, 114)) -> np.ndarray:
    """YOLOv5 val.py's model-input image of a square img_size ONNX (rect=False): load_image then letterbox."""
    import cv2

    h0, w0 = im.shape[:2]
    r = img_size / max(h0, w0)
    if r != 1:
        interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
        im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
    shape = im.shape[:2]
    r = min(img_size / shape[0], img_size / shape[1], 1.0)  # scaleup=False
    new_unpad = round(shape[1] * r), round(shape[0] * r)
    dw, dh = (img_size - new_unpad[0]) / 2, (img_size - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)


def nanodet_warp(raw_img: np.ndarray, dst_shape: tuple[int, int], keep_ratio: bool) -> np.ndarray:
    """NanoDet's ShapeTransform at evaluation: get_resize_matrix, then cv2.warpPerspective."""
    import cv2

    height, width = raw_img.shape[:2]
    r_w, r_h = width, height
    d_w, d_h = dst_shape
    Rs = np.eye(3)
    if keep_ratio:
        C = np.eye(3)
        C[0, 2] = -r_w / 2
        C[1, 2] = -r_h / 2
        ratio = d_h / r_h if r_w / r_h < d_w / d_h else d_w / r_w
        Rs[0, 0] *= ratio
        Rs[1, 1] *= ratio
        T = np.eye(3)
        T[0, 2] = 0.5 * d_w
        T[1, 2] = 0.5 * d_h
        M = T @ Rs @ C
    else:
        Rs[0, 0] *= d_w / r_w
        Rs[1, 1] *= d_h / r_h
        M = Rs
    return cv2.warpPerspective(raw_img, M @ np.eye(3), dsize=tuple(dst_shape))


# ---------------------------------------------------------------------------------------- NMS ports

def torchvision_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """torchvision.ops.nms: greedy, best score first, drop boxes with IoU > threshold with a kept
    one; IoU = inter / (area1 + area2 - inter), no +1; kept indices in score order. Written as the
    classic shrinking loop (one pass per kept box over the boxes still standing)."""
    boxes = boxes.astype(np.float32)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]
    return np.asarray(keep, np.int64)


def batched_nms_offsets(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float,
                        offset: float | None = None) -> np.ndarray:
    """Class-aware NMS by the coordinate trick (torchvision _batched_nms_coordinate_trick, nanodet
    batched_nms, yolov5's `x[:, :4] + c * max_wh`): boxes of each class shifted apart by offset
    (default max coordinate + 1), then one NMS."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if offset is None:
        offset = float(boxes.max()) + 1
    shifted = boxes + (idxs.astype(boxes.dtype) * offset)[:, None]
    return torchvision_nms(shifted, scores, iou_threshold)


def _jaccard_matrix(boxes: np.ndarray) -> np.ndarray:
    """JaccardOverlap (normalized) of every pair of boxes, in float32 as the kernel's T = float: 0 for
    boxes apart (b.x1 > a.x2 or b.x2 < a.x1 or b.y1 > a.y2 or b.y2 < a.y1), BBoxArea 0 for an
    inverted box, else inter / (area a + area b - inter). Symmetric, so one matrix serves NMSFast."""
    boxes = boxes.astype(np.float32)
    x1, y1, x2, y2 = boxes.T
    apart = ((x1[None, :] > x2[:, None]) | (x2[None, :] < x1[:, None]) | (y1[None, :] > y2[:, None])
             | (y2[None, :] < y1[:, None]))
    inter = ((np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]))
             * (np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])))
    area = np.where((x2 < x1) | (y2 < y1), np.float32(0), (x2 - x1) * (y2 - y1))
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / (area[:, None] + area[None, :] - inter)
    return np.where(apart, np.float32(0), overlap)


def paddle_multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_top_k: int,
                          keep_top_k: int, nms_threshold: float) -> list[tuple[int, int, float]]:
    """Paddle's MultiClassNMS (multiclass_nms3 CPU kernel) for one image, boxes [N, 4] shared by
    classes, scores [C, N], normalized=True, eta 1, no background label: [(label, box index, score)]."""
    selected: dict[int, list[int]] = {}
    for c in range(scores.shape[0]):
        column = scores[c]
        candidates = np.flatnonzero(column > score_threshold)  # GetMaxScoreIndex
        candidates = candidates[np.argsort(-column[candidates], kind="stable")]
        if nms_top_k > -1:
            candidates = candidates[:nms_top_k]
        # NMSFast: a candidate is kept when its overlap with every kept box is <= the threshold
        overlap = _jaccard_matrix(boxes[candidates])
        standing = np.ones(len(candidates), bool)
        kept: list[int] = []
        for position, idx in enumerate(candidates):
            if standing[position]:
                kept.append(int(idx))
                standing &= overlap[position] <= nms_threshold  # NaN overlaps suppress, as `<=` is False
        selected[c] = kept
    triples = [(c, idx, float(scores[c, idx])) for c in sorted(selected) for idx in selected[c]]
    if keep_top_k > -1 and len(triples) > keep_top_k:
        triples = sorted(triples, key=lambda t: -t[2])[:keep_top_k]  # stable sort, score descending
    return triples


# ---------------------------------------------------------------------------------------- YOLOX

def yolox_eval(output: np.ndarray, input_hw: tuple[int, int], original_hw: tuple[int, int],
               strides=(8, 16, 32), conf_thre: float = 0.01, nms_thre: float = 0.65):
    """One image's raw [N, 5 + C] YOLOX head output -> (boxes, scores, labels) as YOLOX's COCO
    evaluator writes them."""
    prediction = output.astype(np.float32).copy()
    # YOLOXHead.decode_outputs: hw = the head's feature map sizes
    grids, grid_strides = [], []
    for stride in strides:
        hsize, wsize = input_hw[0] // stride, input_hw[1] // stride
        yv, xv = np.meshgrid(np.arange(hsize), np.arange(wsize), indexing="ij")
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        grid_strides.append(np.full((hsize * wsize, 1), stride))
    grids = np.concatenate(grids).astype(np.float32)
    grid_strides = np.concatenate(grid_strides).astype(np.float32)
    prediction[:, 0:2] = (prediction[:, 0:2] + grids) * grid_strides
    prediction[:, 2:4] = np.exp(prediction[:, 2:4]) * grid_strides
    # postprocess: cxcywh -> corners, best class, obj * class >= conf, batched NMS
    box = np.empty_like(prediction[:, :4])
    box[:, 0] = prediction[:, 0] - prediction[:, 2] / 2
    box[:, 1] = prediction[:, 1] - prediction[:, 3] / 2
    box[:, 2] = prediction[:, 0] + prediction[:, 2] / 2
    box[:, 3] = prediction[:, 1] + prediction[:, 3] / 2
    class_conf = prediction[:, 5:].max(axis=1)
    class_pred = prediction[:, 5:].argmax(axis=1)
    mask = prediction[:, 4] * class_conf >= conf_thre
    box, obj, class_conf, class_pred = box[mask], prediction[mask, 4], class_conf[mask], class_pred[mask]
    score = obj * class_conf
    keep = batched_nms_offsets(box, score, class_pred, nms_thre)
    # convert_to_coco_format: bboxes /= min(test_h / img_h, test_w / img_w); score = obj * cls
    scale = min(input_hw[0] / float(original_hw[0]), input_hw[1] / float(original_hw[1]))
    return box[keep] / scale, score[keep], class_pred[keep]


# ---------------------------------------------------------------------------------------- YOLOv5

def yolov5_val(prediction: np.ndarray, input_hw: tuple[int, int], original_hw: tuple[int, int],
               conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300):
    """One image's [N, 5 + C] output -> non_max_suppression(multi_label=True) -> scale_boxes."""
    max_wh, max_nms = 7680, 30000
    x = prediction.astype(np.float32)
    x = x[x[:, 4] > conf_thres].copy()
    if not len(x):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    x[:, 5:] *= x[:, 4:5]
    box = np.concatenate([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], axis=1)  # xywh2xyxy
    i, j = np.nonzero(x[:, 5:] > conf_thres)
    det = np.concatenate([box[i], x[i, 5 + j, None], j[:, None].astype(np.float32)], axis=1)
    if not len(det):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    det = det[np.argsort(-det[:, 4], kind="stable")[:max_nms]]
    keep = torchvision_nms(det[:, :4] + det[:, 5:6] * max_wh, det[:, 4], iou_thres)[:max_det]
    det = det[keep]
    # scale_boxes (ratio_pad None) + clip_boxes
    gain = min(input_hw[0] / original_hw[0], input_hw[1] / original_hw[1])
    pad = (input_hw[1] - original_hw[1] * gain) / 2, (input_hw[0] - original_hw[0] * gain) / 2
    boxes = det[:, :4].copy()
    boxes[:, [0, 2]] -= pad[0]
    boxes[:, [1, 3]] -= pad[1]
    boxes /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, original_hw[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, original_hw[0])
    return boxes, det[:, 4], det[:, 5].astype(np.int64)


# ---------------------------------------------------------------------------------------- Ultralytics / TFLite

def ultralytics_letterbox(image: np.ndarray, size: int):
    """ultralytics/data/augment.py LetterBox (predict: auto=False, scaleup=True, center=True, pad 114):
    (padded image, r, (left, top))."""
    import cv2

    shape = image.shape[:2]
    r = min(size / shape[0], size / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (size - new_unpad[0]) / 2, (size - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return image, r, (left, top)


def ultralytics_val(prediction: np.ndarray, size: int, r: float, left_top: tuple[int, int],
                    original_hw: tuple[int, int], conf_thres: float = 0.001, iou_thres: float = 0.7,
                    max_det: int = 300):
    """One image's [84, N] TFLite output (boxes normalized to the input) -> ultralytics/utils/ops.py
    non_max_suppression(multi_label=True, max_nms=30000, max_wh=7680) -> boxes back to the image by
    subtracting (left, top) and dividing by r, clipped."""
    max_wh, max_nms = 7680, 30000
    x = prediction.T.astype(np.float32)
    box = x[:, :4] * size
    box = np.concatenate([box[:, :2] - box[:, 2:4] / 2, box[:, :2] + box[:, 2:4] / 2], axis=1)  # xywh2xyxy
    i, j = np.nonzero(x[:, 4:] > conf_thres)
    det = np.concatenate([box[i], x[i, 4 + j, None], j[:, None].astype(np.float32)], axis=1)
    if not len(det):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    det = det[np.argsort(-det[:, 4], kind="stable")[:max_nms]]
    keep = torchvision_nms(det[:, :4] + det[:, 5:6] * max_wh, det[:, 4], iou_thres)[:max_det]
    det = det[keep]
    boxes = det[:, :4].copy()
    boxes[:, [0, 2]] -= left_top[0]
    boxes[:, [1, 3]] -= left_top[1]
    boxes /= r
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, original_hw[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, original_hw[0])
    return boxes, det[:, 4], det[:, 5].astype(np.int64)


def tflite_ssd(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, count: float,
               original_hw: tuple[int, int], clip: bool = False):
    """One image's TFLite_Detection_PostProcess rows (boxes ymin, xmin, ymax, xmax normalized; 0-based
    classes) on a stretched input -> boxes in original pixels (y times height, x times width). The op
    does not clip (its boxes may reach past 0..1); clip=True clips to the image, as TF OD API's eval does."""
    n = int(count)
    h, w = original_hw
    b = boxes[:n].astype(np.float64)
    if clip:
        b = b.clip(0, 1)
    xyxy = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1)
    return xyxy, scores[:n].astype(np.float32), classes[:n].astype(np.int64)


# ---------------------------------------------------------------------------------------- GFL heads

def _integral(bins: np.ndarray, reg_max: int) -> np.ndarray:
    """GFL Integral / Paddle distribution_project: softmax over reg_max + 1 bins per side, expectation."""
    x = bins.astype(np.float64).reshape(len(bins), 4, reg_max + 1)
    x = np.exp(x - x.max(axis=2, keepdims=True))
    x /= x.sum(axis=2, keepdims=True)
    return (x * np.arange(reg_max + 1)).sum(axis=2)


def nanodet_plus_eval(output: np.ndarray, input_hw: tuple[int, int], original_hw: tuple[int, int],
                      num_classes: int = 80, reg_max: int = 7, strides=(8, 16, 32, 64)):
    """One image's [N, C + 4 (reg_max + 1)] NanoDet-Plus ONNX output (scores already sigmoid-ed by
    _forward_onnx) -> get_bboxes (score 0.05, IoU 0.6, 100) -> warp_boxes back to the image
    (keep_ratio False: a plain scale), clipped."""
    height, width = input_hw
    priors = []
    for stride in strides:  # get_single_level_center_priors: (col * stride, row * stride, stride)
        h, w = math.ceil(height / stride), math.ceil(width / stride)
        y, x = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
        priors.append(np.stack([x.ravel(), y.ravel(), np.full(h * w, stride)], axis=1))
    priors = np.concatenate(priors).astype(np.float64)
    scores = output[:, :num_classes].astype(np.float32)
    distances = _integral(output[:, num_classes:], reg_max) * priors[:, 2:3]
    boxes = np.stack([priors[:, 0] - distances[:, 0], priors[:, 1] - distances[:, 1],
                      priors[:, 0] + distances[:, 2], priors[:, 1] + distances[:, 3]], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)  # distance2bbox(max_shape=input_shape)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    boxes = boxes.astype(np.float32)
    rows, labels = np.nonzero(scores > 0.05)  # multiclass_nms: valid_mask = scores > score_thr
    cand_boxes, cand_scores = boxes[rows], scores[rows, labels]
    keep = batched_nms_offsets(cand_boxes, cand_scores, labels, 0.6)[:100]
    out = cand_boxes[keep].astype(np.float64)
    out[:, [0, 2]] = (out[:, [0, 2]] * original_hw[1] / width).clip(0, original_hw[1])  # warp_boxes(inv(M))
    out[:, [1, 3]] = (out[:, [1, 3]] * original_hw[0] / height).clip(0, original_hw[0])
    return out, cand_scores[keep], labels[keep]


def picodet_eval(level_scores: list[np.ndarray], level_bins: list[np.ndarray], input_hw: tuple[int, int],
                 original_hw: tuple[int, int], strides=(8, 16, 32, 64), reg_max: int = 7, cell_offset: float = 0.5,
                 score_threshold: float = 0.025, nms_top_k: int = 1000, keep_top_k: int = 100,
                 nms_threshold: float = 0.6):
    """One image's legacy PicoDet outputs (per level: sigmoid-ed scores [n, C] and box bins [n, 32],
    level order) -> what PaddleDetection's eval computes from the same head: PicoHead.forward_eval
    with export_post_process (anchor points (col + 0.5, row + 0.5), distribution_project,
    batch_distance2bbox, x stride), post_process (divide by scale_factor), MultiClassNMS, get_det_res."""
    points, stride_of = [], []
    for stride in strides:  # _generate_anchors with eval_size
        h, w = math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride)
        sy, sx = np.meshgrid(np.arange(h) + cell_offset, np.arange(w) + cell_offset, indexing="ij")
        points.append(np.stack([sx.ravel(), sy.ravel()], axis=1))
        stride_of.append(np.full((h * w, 1), stride))
    points, stride_of = np.concatenate(points), np.concatenate(stride_of)
    distance = _integral(np.concatenate(level_bins), reg_max)
    boxes = np.concatenate([points - distance[:, :2], points + distance[:, 2:]], axis=1) * stride_of
    scale_y, scale_x = input_hw[0] / original_hw[0], input_hw[1] / original_hw[1]  # stretch resize
    boxes = (boxes / np.array([scale_x, scale_y, scale_x, scale_y])).astype(np.float32)
    scores = np.concatenate(level_scores).astype(np.float32).T  # [C, N]
    triples = paddle_multiclass_nms(boxes, scores, score_threshold, nms_top_k, keep_top_k, nms_threshold)
    index = np.array([t[1] for t in triples], np.int64)
    return (boxes[index] if len(index) else np.zeros((0, 4), np.float32),
            np.array([t[2] for t in triples], np.float32), np.array([t[0] for t in triples], np.int64))


# ---------------------------------------------------------------------------------------- Paddle NMS rows

def paddle_nms_rows(bbox: np.ndarray, bbox_num: np.ndarray):
    """get_det_res for one image: the first bbox_num rows (class, score, x1, y1, x2, y2) in original
    pixels; rows with class < 0 skipped; no clipping (Paddle writes boxes as they are)."""
    rows = bbox[: int(np.asarray(bbox_num).reshape(-1)[0])]
    rows = rows[rows[:, 0].astype(np.int64) >= 0]
    return rows[:, 2:6].astype(np.float64), rows[:, 1].astype(np.float32), rows[:, 0].astype(np.int64)


# ---------------------------------------------------------------------------------------- whole pipeline

def letterbox(image: np.ndarray, input_hw: tuple[int, int], pad_value: int = 0):
    """Centred letterbox (NanoDet/YOLOX demos): one scale keeping the aspect ratio, the resized size
    rounded, the padding split with the floor on the left/top. Returns (canvas, (sx, sy, pad_x, pad_y))."""
    import cv2

    height, width = image.shape[:2]
    ratio = min(input_hw[1] / width, input_hw[0] / height)
    new_w, new_h = int(round(width * ratio)), int(round(height * ratio))
    pad_x, pad_y = (input_hw[1] - new_w) // 2, (input_hw[0] - new_h) // 2
    canvas = np.full((*input_hw, 3), pad_value, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, (new_w / width, new_h / height, pad_x, pad_y)


def unletterbox(boxes: np.ndarray, geometry, original_hw: tuple[int, int]) -> np.ndarray:
    """Input-pixel boxes back to the original image: minus the padding, over the scale, clipped."""
    scale_x, scale_y, pad_x, pad_y = geometry
    out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / scale_x).clip(0, original_hw[1])
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / scale_y).clip(0, original_hw[0])
    return out


def nanodet_letterbox_map(model_path, images_dir, ann_path, input_hw: tuple[int, int], mean, std, strides,
                          category_ids) -> float:
    """COCO mAP of a NanoDet-Plus-style ONNX model (one [1, N, C + 32] output, sigmoid-ed scores) with
    nothing of the harness: OpenCV reads and letterboxes each image, numpy normalises it (BGR, NCHW),
    plain ONNX Runtime runs it, nanodet_plus_eval decodes, unletterbox maps back, pycocotools scores."""
    import json
    from pathlib import Path

    import cv2
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = json.loads(Path(ann_path).read_text())["images"]
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    results = []
    for info in images:
        image = cv2.imread(str(Path(images_dir) / info["file_name"]), cv2.IMREAD_COLOR)
        canvas, geometry = letterbox(image, input_hw)
        tensor = ((canvas.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
        (output,) = session.run(None, {name: np.ascontiguousarray(tensor)})
        boxes, scores, labels = nanodet_plus_eval(output[0], input_hw, input_hw, num_classes=len(category_ids),
                                                  strides=tuple(strides))
        results += coco_dicts(info["id"], unletterbox(boxes, geometry, image.shape[:2]), scores, labels, category_ids)
    return coco_map(ann_path, results, [info["id"] for info in images])


# ---------------------------------------------------------------------------------------- COCO

def coco_dicts(image_id: int, boxes, scores, labels, category_ids) -> list[dict]:
    """COCO result dicts as the upstreams write them: xywh, no rounding."""
    return [{"image_id": int(image_id), "category_id": int(category_ids[int(c)]),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)}
            for b, s, c in zip(boxes, scores, labels)]


def coco_map(ann_path, results: list[dict], image_ids) -> float:
    """AP@[.5:.95] by plain pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        if not results:
            return 0.0
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])
