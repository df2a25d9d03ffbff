"""Is a converted model still the model? SQNR per output and box agreement of decoded detections.

Run before a GPU build, so a conversion that breaks the model is refused before TensorRT spends
minutes on it. (`harness report --fidelity` compares finished rows; this compares two graphs.)

Runners and comparators are kept apart, as in Polygraphy's Comparator: run_source runs one model over the
check batches and turns its outputs into detections with the pipeline's own sink
(harness.decode.sink.decode_batch); compare_outputs (SQNR) and box_agreement (harness.decode.agreement,
the one agreement of `report --fidelity` too) compare two such runs; check_conversion is the verdict.

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
from harness.decode.agreement import agreement_by_image
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


def box_agreement(reference: dict[int, list[dict]], converted: dict[int, list[dict]]) -> tuple[float | None, int]:
    """(share of the reference's detections scored >= AGREEMENT_SCORE that the converted model finds at any
    score, their count): detections as COCO result dicts per image id, paired as `report --fidelity` pairs two
    rows' (harness.decode.agreement: same class, IoU >= AGREEMENT_IOU, highest IoU first, each box once).
    Any converted score counts: a conversion may shift scores a little, the mAP-relevant question is whether
    the box is still there. The share is None when the reference has no confident detection."""
    found = agreement_by_image(reference, converted, score_threshold=AGREEMENT_SCORE, iou_threshold=AGREEMENT_IOU,
                               candidate_threshold=0.0)
    return (found.matched_fraction if found.reference else None), found.reference


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


@dataclass
class SourceRun:
    """What one model gave over the check batches (Polygraphy's RunResults of one runner)."""

    output_names: list[str]
    outputs: list[list[np.ndarray]]  # per batch, in the model's output order
    detections: dict[int, list[dict]]  # image id -> COCO result dicts (the pipeline's decode sink)
    nonfinite: list  # SkippedImage of the images whose outputs hold NaN/Inf (not decoded)


def run_source(model: onnx.ModelProto, batches, profile) -> SourceRun:
    """Run one model on ONNX Runtime CPU (cpu_session) over `batches` [(tensor, metas)]; its outputs and
    their detections through harness.decode.sink.decode_batch, as every accuracy pass decodes."""
    from harness.decode.sink import decode_batch
    from harness.model.extra_inputs import extra_inputs

    session = cpu_session(model)
    names = [o.name for o in session.get_outputs()]
    run = SourceRun(names, [], {}, [])
    for tensor, metas in batches:
        feeds = {session.get_inputs()[0].name: tensor, **(extra_inputs(profile, metas, tensor.shape[0]) or {})}
        outputs = session.run(None, feeds)
        run.outputs.append(outputs)
        done, _, skipped = decode_batch(outputs, metas, profile, tensor.shape[0], skip_bad=True, names=names)
        run.detections.update(done)
        run.nonfinite += skipped
    return run


def compare_outputs(reference: SourceRun, converted: SourceRun, unsized=frozenset()) -> tuple[list, list[str]]:
    """(SQNR dB per output, the outputs whose size the data decides): an output whose shape differs between
    batches or models, or whose size shape inference cannot tell (`unsized`), gets None (its rows are not
    aligned between the models: the decoded boxes judge it)."""
    sqnr: list[float | None] = []
    sized_by_data: list[str] = []
    for i, name in enumerate(reference.output_names):
        shapes = {np.shape(o[i]) for o in (*reference.outputs, *converted.outputs)}
        if len(shapes) > 1 or name in unsized:
            sqnr.append(None)
            sized_by_data.append(name)
            continue
        sqnr.append(sqnr_db(np.concatenate([o[i].ravel() for o in reference.outputs]),
                            np.concatenate([o[i].ravel() for o in converted.outputs])))
    return sqnr, sized_by_data


def check_conversion(reference: onnx.ModelProto, converted: onnx.ModelProto, batches, profile,
                     min_sqnr_db: float, min_box_agreement: float, data: str) -> ConversionCheck:
    """Run both models on `batches` [(tensor, metas)], compare raw outputs and decoded boxes."""
    ref_run, new_run = run_source(reference, batches, profile), run_source(converted, batches, profile)
    unsized = {name for name, (_, inferred) in unconfirmed_output_dims(reference).items() if inferred is None}
    sqnr, sized_by_data = compare_outputs(ref_run, new_run, unsized)
    agreement, total = box_agreement(ref_run.detections, new_run.detections)
    images = sum(len(metas) for _, metas in batches)
    result = ConversionCheck(sqnr, agreement, total, images, data, min_sqnr_db, min_box_agreement,
                             sized_by_data=sized_by_data)
    for name, value in zip(ref_run.output_names, sqnr):
        if value is not None and not value >= min_sqnr_db:  # NaN fails too
            result.failures.append(f"output {name} SQNR {value:.1f} dB < {min_sqnr_db:g} dB")
    for side, run in (("reference", ref_run), ("converted", new_run)):
        if run.nonfinite:
            result.failures.append(f"the {side} model gives NaN/Inf outputs on {len(run.nonfinite)} of {images} "
                                   f"check image(s) ({run.nonfinite[0].reason})")
    if agreement is not None and agreement < min_box_agreement:
        result.failures.append(f"box agreement {agreement:.3f} < {min_box_agreement:g} "
                               f"({total} reference boxes with score >= {AGREEMENT_SCORE})")
    if agreement is None and all(value is None for value in sqnr):
        result.failures.append("nothing to compare: every output's size differs between the models and the "
                               f"reference has no detection with score >= {AGREEMENT_SCORE} on the check images")
    return result
