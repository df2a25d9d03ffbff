"""`harness sensitivity`: flags in, harness.sensitivity.run out; no logic of its own."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from harness.cli.common import Count, RichProgress, out


@click.command("sensitivity")
@click.option("--model", "-m", required=True, type=click.Path(path_type=Path), help="fp32 ONNX model.")
@click.option("--profile", "-p", "profile_name", required=True,
              help="Built-in profile name, a .toml file, or auto (found from the model).")
@click.option("--calib", required=True, type=click.Path(path_type=Path),
              help="Folder of calibration images (not the images the final rows are evaluated on).")
@click.option("--calib-images", default=None, help="Use the first N calibration images (sorted by name). [300]")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Images of the search subset.")
@click.option("--ann", "ann_path", required=True, type=click.Path(path_type=Path), help="Their COCO annotations.")
@click.option("--subset", default=None, help="Score variants on the first N images of --data. [200]")
@click.option("--target", "-t", default=None,
              help="Runtime the variants are scored on: a target that runs Q/DQ ONNX (ort, ov). [ort]")
@click.option("--mode", default=None, help="exclude, include or both (see docs/sensitivity.md). [both]")
@click.option("--max-drop", default=None, help="Restore nodes to float until fp32 - int8 mAP <= this. [0.01]")
@click.option("--top-k", default=None, help="Nodes on the shortlist scored by ΔmAP. [40]")
@click.option("--method", default=None, help="Calibration ranges: percentile, minmax or entropy. [percentile]")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Conv weight scales.")
@click.option("--type-groups/--no-type-groups", default=True, show_default=True,
              help="Also score one group per non-compute op type (every Mul, every Add, ...).")
@click.option("--sqnr-images", default=None, help="Calibration images the tensor-error probe runs. [8]")
@click.option("--resamples", default=None, help="Bootstrap resamples per interval. [1000]")
@click.option("--bench-seconds", default=None, help="Benchmark loop per greedy step, seconds. [1.0]")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder, e.g. sens/NAME.")
@click.option("--cluster", "cluster_address", default=None, metavar="ADDRESS",
              help="Score the variants on a Ray cluster's CPU workers (auto, host:6379; docs/cluster.md); "
                   "the model, images and --out must be at the same paths there.")
@click.option("--shards", type=Count(), default=1, show_default=True, metavar="N",
              help="With --cluster: score each variant in N shards of the subset on N workers (merged, scored once); "
                   "for searches with fewer variants than workers.")
@click.option("--variant-cache", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Keep the Q/DQ variants here between searches (default: the harness cache's variants/ folder; "
                   "with --cluster a folder every node sees at the same path).")
@click.option("--no-variant-cache", is_flag=True, help="Write every variant afresh and keep none.")
@click.option("--resume", is_flag=True, help="Continue the search in --out (its finished variants are reused).")
@click.option("--overwrite", is_flag=True, help="Start again in a non-empty --out.")
def sensitivity_cmd(model, profile_name, calib, data, ann_path, per_channel, type_groups, out_dir, resume, overwrite,
                    cluster_address, shards, variant_cache, no_variant_cache, **flags):
    """Rank nodes by the mAP their int8 quantization costs; write the exclude list that holds --max-drop."""
    from harness.core import config
    from harness.core.errors import HarnessError
    from harness.profiles.match import resolve as resolve_profile
    from harness.quant.variant_cache import default_folder
    from harness.sensitivity.run import SensitivityRequest, run_sensitivity
    from harness.sensitivity.search import SearchSettings

    given = {key: value for key, value in flags.items() if value is not None}
    settings = config.load(SearchSettings, {**given, "per_channel": per_channel, "type_groups": type_groups},
                           "harness sensitivity", config.FLAGS, from_text=True)
    if shards != 1 and cluster_address is None:
        raise HarnessError(f"--shards {shards}: only with --cluster (the shards run on a Ray cluster's CPU workers)")
    if no_variant_cache and variant_cache is not None:
        raise HarnessError("--variant-cache and --no-variant-cache: choose one")
    profile = resolve_profile(profile_name, model, out.print)
    request = SensitivityRequest(model=model, profile=profile, calib=calib, data=data, ann=ann_path,
                                 out=out_dir, settings=settings, resume=resume, overwrite=overwrite,
                                 cluster=cluster_address, shards=shards,
                                 variant_cache=None if no_variant_cache else (variant_cache or default_folder()))
    with RichProgress() as progress:
        result = run_sensitivity(request, progress)
    fp32, final = (f"{v:.4f}" if v is not None else "-" for v in (result.references["fp32"]["map"], result.final_map))
    verdict = "within" if result.goal_met else "NOT within"
    out.print(f"{len(result.floated)} node(s) in float: subset mAP {final} vs fp32 {fp32} "
              f"({verdict} --max-drop {settings.max_drop}), int8 Convs {result.convs_int8_final}/{result.conv_total}, "
              f"{result.seconds / 60:.1f} min", highlight=False, soft_wrap=True)
    if result.variants_cached:
        out.print(f"Q/DQ variants: {result.variants_written} written, {result.variants_cached} from the variant cache "
                  f"{escape(str(request.variant_cache))}", highlight=False, soft_wrap=True)
    out.print(f"wrote {escape(', '.join(str(p) for p in result.files.values()))}", highlight=False, soft_wrap=True)
