"""Is a converted model still the model? SQNR per output and box agreement of decoded detections.

Run before a GPU build, so a conversion that breaks the model is refused before TensorRT spends
minutes on it. (`harness report --fidelity` compares finished rows; this compares two graphs.)

Both models run on ONNX Runtime CPU with basic graph optimisations only: the extended level
fuses DequantizeLinear -> Concat -> QuantizeLinear into QLinearConcat, which takes no fp16
scales, and the point is to run the graph as written, which is what TensorRT will build.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from harness.core.errors import HarnessError
from harness.model.declared_shapes import open_session, unconfirmed_output_dims

#: detections below this score are not compared (the decoder keeps down to ~0.05 for mAP)
AGREEMENT_SCORE = 0.3
AGREEMENT_IOU = 0.5


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB, 10 log10(Σ ref² / Σ (ref - test)²) in float64: inf when
    identical, -inf for a zero reference with noise, NaN (undefined) when either side holds NaN/Inf.
    The one SQNR of the project (harness.fidelity.tensors uses it too)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(test, dtype=np.float64).ravel()
    if ref.shape != out.shape:
        raise HarnessError(f"cannot compare outputs of shapes {np.shape(reference)} and {np.shape(test)}")
    if not (np.isfinite(ref).all() and np.isfinite(out).all()):
        return math.nan
    noise = float(np.sum(np.square(ref - out)))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(np.square(ref)))
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def box_agreement(reference, test, score: float = AGREEMENT_SCORE, iou: float = AGREEMENT_IOU):
    """(share of reference detections matched, reference count): a match is a same-class test
    detection with IoU >= iou, each used once (greedy, highest reference score first).
    reference/test: per-image Detections. The share is None when the reference has no detection."""
    matched = total = 0
    for ref, out in zip(reference, test):
        keep = ref.scores >= score
        boxes, labels, scores = ref.boxes[keep], ref.labels[keep], ref.scores[keep]
        taken = np.zeros(len(out), dtype=bool)
        for i in np.argsort(-scores):
            total += 1
            candidates = (out.labels == labels[i]) & ~taken
            if not candidates.any():
                continue
            overlaps = np.where(candidates, _iou(boxes[i], out.boxes) if len(out) else 0.0, -1.0)
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou:
                taken[best] = True
                matched += 1
    return (matched / total if total else None), total


def cpu_session(model: onnx.ModelProto | bytes | str):
    """An ONNX Runtime CPU session running the graph as written (basic optimisations only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return open_session(model, options)[0]


@dataclass
class ConversionCheck:
    """What the check measured, for the results row (runtime.conversion_check)."""

    sqnr_db: list[float | None]
    box_agreement: float | None
    reference_boxes: int
    images: int
    data: str
    min_sqnr_db: float
    min_box_agreement: float
    failures: list[str] = field(default_factory=list)
    #: outputs whose size the data decides (NMS inside the graph: the size varies over the check images
    #: or ONNX shape inference cannot tell it): their rows are not aligned between the two models, so no
    #: element-wise SQNR (their sqnr_db is None); the box agreement judges them
    sized_by_data: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sqnr_db"] = [None if v is None or np.isnan(v) else round(v, 2) if np.isfinite(v) else str(v)
                          for v in self.sqnr_db]
        out["box_agreement"] = None if self.box_agreement is None else round(self.box_agreement, 4)
        out["passed"] = self.passed
        return out


def _run(session, tensor, extras):
    feeds = {session.get_inputs()[0].name: tensor, **(extras or {})}
    return session.run(None, feeds)


def check_conversion(reference: onnx.ModelProto, converted: onnx.ModelProto, batches, profile,
                     min_sqnr_db: float, min_box_agreement: float, data: str) -> ConversionCheck:
    """Run both models on `batches` [(tensor, metas)], compare raw outputs and decoded boxes."""
    from harness.decode import decode
    from harness.model.extra_inputs import extra_inputs

    ref_session, new_session = cpu_session(reference), cpu_session(converted)
    ref_outputs: list[list[np.ndarray]] = []
    new_outputs: list[list[np.ndarray]] = []
    ref_dets, new_dets, images = [], [], 0
    for tensor, metas in batches:
        extras = extra_inputs(profile, metas, tensor.shape[0]) or None
        a, b = _run(ref_session, tensor, extras), _run(new_session, tensor, extras)
        ref_outputs.append(a)
        new_outputs.append(b)
        ref_dets += decode(a, metas, profile)
        new_dets += decode(b, metas, profile)
        images += len(metas)
    names = [o.name for o in ref_session.get_outputs()]
    sqnr: list[float | None] = []
    sized_by_data: list[str] = []
    unsized = {name for name, (_, inferred) in unconfirmed_output_dims(reference).items() if inferred is None}
    for i, name in enumerate(names):
        shapes = {np.shape(o[i]) for o in (*ref_outputs, *new_outputs)}
        if len(shapes) > 1 or name in unsized:
            sqnr.append(None)  # a size the data decides (NMS rows): the decoded boxes judge it
            sized_by_data.append(name)
            continue
        sqnr.append(sqnr_db(np.concatenate([o[i].ravel() for o in ref_outputs]),
                            np.concatenate([o[i].ravel() for o in new_outputs])))
    agreement, total = box_agreement(ref_dets, new_dets)
    result = ConversionCheck(sqnr, agreement, total, images, data, min_sqnr_db, min_box_agreement,
                             sized_by_data=sized_by_data)
    for name, value in zip(names, sqnr):
        if value is not None and not value >= min_sqnr_db:  # NaN fails too
            result.failures.append(f"output {name} SQNR {value:.1f} dB < {min_sqnr_db:g} dB")
    if agreement is not None and agreement < min_box_agreement:
        result.failures.append(f"box agreement {agreement:.3f} < {min_box_agreement:g} "
                               f"({total} reference boxes with score >= {AGREEMENT_SCORE})")
    if agreement is None and all(value is None for value in sqnr):
        result.failures.append("nothing to compare: every output's size differs between the models and the "
                               f"reference has no detection with score >= {AGREEMENT_SCORE} on the check images")
    return result
