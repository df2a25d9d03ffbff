"""`harness quantize`: flags in, harness.quant.run out; no logic of its own."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from harness.cli.common import RichProgress, out


@click.command("quantize")
@click.option("--model", "-m", required=True, type=click.Path(path_type=Path), help="fp32 ONNX model to quantize.")
@click.option("--profile", "-p", "profile_name", default=None,
              help="Built-in profile name or a .toml file (its preprocessing builds the calibration batches); "
                   "not needed with --from-trt-cache.")
@click.option("--calib", default=None, type=click.Path(path_type=Path),
              help="Folder of calibration images (not the evaluation images).")
@click.option("--calib-images", type=int, default=300, show_default=True,
              help="Use the first N images of --calib (sorted by name).")
@click.option("--method", default=None,
              help="Activation ranges: percentile (default, 99.999th), minmax, entropy; nncf: minmax or NNCF's default.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Conv weight scales.")
@click.option("--exclude", "patterns", multiple=True,
              help="Keep nodes whose name matches this regular expression in float (repeatable).")
@click.option("--exclude-types", default=None, help="Keep these op types in float, e.g. Sigmoid,Softmax.")
@click.option("--exclude-from", default=None, type=click.Path(path_type=Path),
              help="File of node names to keep in float, one per line (# comments), e.g. from harness sensitivity.")
@click.option("--quantize-concat-convs", is_flag=True,
              help="Also quantize Convs that read a Concat directly (TensorRT-only files: OpenVINO CPU "
                   "miscomputes them; see docs/quantize.md).")
@click.option("--backend", default="ort", show_default=True,
              help="ort: portable symmetric int8 Q/DQ ONNX (ORT, OpenVINO, TensorRT); nncf: OpenVINO int8 IR.")
@click.option("--from-trt-cache", "trt_cache", default=None, type=click.Path(path_type=Path),
              help="Take the ranges from a TensorRT calibration cache instead of calibrating.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder, e.g. quant/NAME.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def quantize_cmd(model, profile_name, calib, calib_images, method, per_channel, patterns, exclude_types, exclude_from,
                 quantize_concat_convs, backend, trt_cache, out_dir, overwrite):
    """Post-training int8 quantization with the harness's own preprocessing; writes the model and quant.json."""
    from harness.profiles.match import resolve as resolve_profile
    from harness.quant.exclusions import ExclusionRules, parse_op_types, read_exclude_file
    from harness.quant.run import QuantizeRequest, quantize

    rules = ExclusionRules(tuple(patterns), parse_op_types(exclude_types),
                           read_exclude_file(exclude_from) if exclude_from else (),
                           str(exclude_from) if exclude_from else "")
    profile = resolve_profile(profile_name, model, out.print) if profile_name else None
    request = QuantizeRequest(model=model, profile=profile, out=out_dir,
                              calib=calib, calib_images=calib_images, method=method, per_channel=per_channel,
                              rules=rules, backend=backend, trt_cache=trt_cache, overwrite=overwrite,
                              concat_convs=quantize_concat_convs)
    with RichProgress() as progress:
        outcome = quantize(request, progress)
    record = outcome.record
    excluded = len(record["excluded"]["nodes"])
    if record["backend"] == "ort":
        summary = (f"{record['qdq_nodes']} Q/DQ nodes on {record['placement']['quantized_nodes']} nodes, "
                   f"{excluded} excluded, opset {record['opset']['before']}->{record['opset']['after']}")
    else:
        summary = f"{record['fake_quantize_ops']} FakeQuantize ops, {excluded} excluded (OpenVINO IR, not for TensorRT)"
    out.print(f"{escape(str(outcome.model_file))}  ({summary})  record: {escape(str(outcome.out / 'quant.json'))}",
              highlight=False, soft_wrap=True)
