"""`harness run` and `harness demo`: targets x batch sizes over a dataset, one row each."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.common import (
    MAX_PIXELS_HELP,
    BatchSizes,
    Count,
    RichProgress,
    Seconds,
    fail_if_rows_failed,
    out,
    parse_names,
    print_rows,
)
from harness.core.config import parse_assignments
from harness.core.errors import HarnessError
from harness.report import write_report, write_run_report
from harness.targets.modes import MAX_PARALLEL

#: flags of `run` that map onto target options of the same name (a target that lacks one ignores it,
#: and the row says so); anything else a target takes is given as --option KEY=VALUE
TARGET_FLAGS = ("mode", "streams", "hint", "threads", "precision", "allow_fallback", "calib", "ep", "engine_cache")

MODE_HELP = ("latency (one batch in flight) or throughput (several, each runtime's way: ov THROUGHPUT hint, ort N "
             "requests on N threads, trt two CUDA streams). Default: throughput. Speedups compare rows of one mode.")


def run_options(fn):
    """Flags shared by `run` and `demo`."""
    options = [
        click.option("--bs", "batch_sizes", type=BatchSizes(), default="1", show_default=True, help="Batch sizes, e.g. 1,4,8."),
        click.option("--mode", default=None, metavar="latency|throughput", help=MODE_HELP),
        click.option("--seconds", "bench_seconds", type=Seconds(), default=3.0, show_default=True,
                     help="Minimum length of the steady-state timing loop per batch size (also at least 10 iterations)."),
        click.option("--max-seconds", type=Seconds(), default=60.0, show_default=True,
                     help="Cap of the timing loop: it stops earlier once its throughput's 95% confidence half-width "
                          "is under --target-ci."),
        click.option("--target-ci", type=float, default=0.01, show_default=True,
                     help="Relative 95% confidence half-width of the throughput that ends the timing loop (0.01 = ±1%)."),
        click.option("--warmup", "warmup_seconds", type=Seconds(allow_zero=True), default=1.0, show_default=True,
                     help="Warm-up seconds."),
        click.option("--hint", default=None,
                     help="OpenVINO performance hint THROUGHPUT, LATENCY, CUMULATIVE_THROUGHPUT (default: --mode's)."),
        click.option("--streams", type=Count(maximum=MAX_PARALLEL), default=None,
                     help="Parallel streams: ort requests in flight (throughput mode; default cores / threads), "
                          "ov NUM_STREAMS (default: the hint's)."),
        click.option("--threads", type=Count(maximum=MAX_PARALLEL), default=None,
                     help="Runtime CPU threads: ort intra-op threads per request, ov INFERENCE_NUM_THREADS "
                          "(default: the runtime's choice; ort throughput mode: cores / streams)."),
        click.option("--precision", default=None,
                     help="fp32, fp16, bf16, int8 where the target supports it; checked against what really runs."),
        click.option("--allow-fallback", is_flag=True, default=None,
                     help="Let a GPU target fall back to CPU (recorded in the row)."),
        click.option("--calib", default=None,
                     help="Folder of int8 calibration images (target trt, --precision int8 -o int8_mode=implicit: "
                          "TensorRT 10's legacy calibration; by default int8 comes from a Q/DQ model)."),
        click.option("--ep", default=None,
                     help="ort-cuda execution provider: cuda (default) or trt (ONNX Runtime's TensorRT EP)."),
        click.option("--engine-cache", default=None,
                     help="TensorRT engine cache folder (default ~/.cache/harness/trt; "
                          "ort-cuda --ep trt: ~/.cache/harness/ort-trt)."),
        click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
                     help="Any other target option (see `harness targets --options`), e.g. -o nireq=4."),
        click.option("--limit", type=Count(), default=None, help="Use only the first N images."),
        click.option("--workers", type=Count(), default=2, show_default=True, help="Preprocessing threads."),
        click.option("--max-pixels", type=Count(), default=None, help=MAX_PIXELS_HELP),
        click.option("--resume", is_flag=True, help="Continue a run in --out, skipping finished (target, bs) rows."),
        click.option("--overwrite", is_flag=True, help="Replace results already in --out."),
        click.option("--skip-bad-images", is_flag=True, help="Skip unreadable/missing images and record them."),
        click.option("--no-image-cache", is_flag=True,
                     help="Decode every image again for every row (by default later rows reuse the first row's "
                          "resized images when they all fit in memory)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def target_options(name: str, flags: dict, pairs: dict):
    """(the target's validated Options, notes on flags it does not take) from the command line."""
    from harness.targets import get_target

    cls = get_target(name)
    keys = cls.option_names()
    # a target may take a run flag under its runtime's own option name (Target.run_flags)
    given = {cls.run_flags.get(k, k): v for k, v in flags.items() if v is not None}
    if isinstance(given.get("hint"), str):
        given["hint"] = given["hint"].upper()
    data = {k: v for k, v in {**given, **pairs}.items() if k in keys}
    notes = [f"--{k.replace('_', '-')} does not apply to target {name} (ignored)" for k in given if k not in keys]
    return cls.parse_options(data, where=f"target {name}", from_text=True), notes


def check_option_pairs(names: list[str], pairs: dict) -> None:
    """Every --option KEY must be taken by at least one of the targets."""
    from harness.core.config import did_you_mean
    from harness.targets import get_target

    known = {k for name in names for k in get_target(name).option_names()}
    for key in pairs:
        if key not in known:
            raise HarnessError(f"--option {key}: no target of this run takes it{did_you_mean(key, known)}; "
                               f"their options: {', '.join(sorted(known)) or 'none'}")


def cluster_pairs(pairs: dict) -> tuple[dict, dict]:
    """--cluster: (target options, the cluster's own -o keys checked)."""
    from harness.cluster import split_options

    pairs, cluster_options = split_options(pairs)
    if "device_cpus" in cluster_options:
        try:
            cpus = float(cluster_options["device_cpus"])
        except (TypeError, ValueError):
            cpus = -1.0
        if not cpus > 0:
            raise HarnessError(f"-o device_cpus={cluster_options['device_cpus']}: expected a positive number of CPUs")
        cluster_options["device_cpus"] = cpus
    return pairs, cluster_options


def refuse_cluster_options(pairs: dict) -> None:
    """-o device_resource / device_cpus belong to --cluster."""
    from harness.cluster import CLUSTER_OPTIONS

    for key in CLUSTER_OPTIONS:
        if key in pairs:
            raise HarnessError(f"--option {key}: only with --cluster (it names what a row needs on a Ray cluster)")


def check_loop_flags(seconds: float, max_seconds: float, target_ci: float) -> None:
    """--seconds, --max-seconds and --target-ci together, in one line before anything runs (each alone
    is checked by its click type)."""
    if max_seconds < seconds:
        raise HarnessError(f"--max-seconds {max_seconds:g} is below --seconds {seconds:g}: the cap must be at least "
                           "the minimum")
    if target_ci is None or not 0 < target_ci < 1:
        raise HarnessError(f"--target-ci {target_ci}: expected a fraction between 0 and 1, e.g. 0.01 for ±1%")


@click.command("run")
@click.option("--target", "-t", "target_names", required=True, help="Target(s), comma-separated: ov, ort, ort-cuda, ...")
@click.option("--model", "-m", required=True, help="Model file; use {bs} for one model per batch size.")
@click.option("--profile", "-p", required=True,
              help="Built-in profile name, a .toml file, or auto (the built-in profile that fits the model).")
@click.option("--data", "images_dir", required=True, type=click.Path(path_type=Path), help="Image folder.")
@click.option("--ann", "ann_path", required=True, type=click.Path(path_type=Path), help="COCO instances json.")
@click.option("--out", "out_dir", default="results/run", show_default=True, type=click.Path(path_type=Path))
@click.option("--save-detections", is_flag=True,
              help="Save each row's detections (gzip COCO results) next to results.json, for report --fidelity.")
@click.option("--save-outputs", type=click.IntRange(min=0), default=0, metavar="N",
              help="Save each row's raw outputs of the first N images (npz) next to results.json, for report --fidelity.")
@click.option("--cluster", "cluster_address", default=None, metavar="ADDRESS",
              help="Run each (target, bs) row as a Ray task on the host holding its device resource device:<target> "
                   "(auto, host:6379 or ray://host:10001; docs/cluster.md). -o device_resource=NAME, "
                   "-o device_cpus=N override the resource and the CPUs a row reserves.")
@click.option("--cluster-timeout", type=Seconds(), default=3600.0, show_default=True,
              help="With --cluster: a row not back after this many seconds is cancelled and failed.")
@click.option("--accuracy-shards", type=Count(), default=1, show_default=True, metavar="N",
              help="With --cluster: run each CPU target row's accuracy pass in N shards on the cluster's CPU workers "
                   "(merged, scored once; the timing stays on the device host). 1: the device host runs it.")
@run_options
def run_cmd(target_names, model, profile, images_dir, ann_path, out_dir, save_detections, save_outputs,
            cluster_address, cluster_timeout, accuracy_shards, **kw):
    """Run targets over a dataset at each batch size; write results.json and report.md."""
    from harness.data.coco import DatasetCache
    from harness.images.imagefile import pixel_limit
    from harness.measure import runner
    from harness.measure.canvases import CanvasCache
    from harness.measure.envinfo import environment
    from harness.measure.results import ResultsStore
    from harness.profiles.match import resolve as resolve_profile

    names = parse_names(target_names, "--target")
    pairs = parse_assignments(kw["option_pairs"])
    cluster_options = {}
    if cluster_address is not None:
        pairs, cluster_options = cluster_pairs(pairs)
    else:
        refuse_cluster_options(pairs)
        if accuracy_shards != 1:
            raise HarnessError(f"--accuracy-shards {accuracy_shards}: only with --cluster (the shards run on a Ray "
                               "cluster's CPU workers)")
    check_option_pairs(names, pairs)
    flags = {k: kw[k] for k in TARGET_FLAGS}
    configured = [(name, *target_options(name, flags, pairs)) for name in names]  # every option checked first
    config_profile = resolve_profile(profile, model, out.print)
    batch_sizes = kw["batch_sizes"]
    check_loop_flags(kw["bench_seconds"], kw["max_seconds"], kw["target_ci"])
    store = ResultsStore(out_dir, environment(), resume=kw["resume"], overwrite=kw["overwrite"],
                         on_save=write_run_report)
    # a single row has no later row to reuse the resized images: holding them would only grow its memory
    one_row = len(configured) * len(batch_sizes) == 1
    canvases = None if kw["no_image_cache"] or one_row or cluster_address else CanvasCache()
    datasets = DatasetCache()
    rows, configs = [], []
    with store, pixel_limit(kw["max_pixels"]), RichProgress() as progress:
        for name, options, notes in configured:
            configs.append(runner.RunConfig(
                target=name, model=model, profile=config_profile, images_dir=images_dir, ann_path=ann_path,
                batch_sizes=batch_sizes, options=options, bench_seconds=kw["bench_seconds"],
                max_seconds=kw["max_seconds"], target_ci=kw["target_ci"], warmup_seconds=kw["warmup_seconds"],
                limit=kw["limit"], skip_bad_images=kw["skip_bad_images"],
                workers=kw["workers"], canvases=canvases, datasets=datasets, notes=notes, keep_going=True,
                save_detections=save_detections, save_outputs=save_outputs,
            ))
        if cluster_address is not None:
            from harness import cluster

            runner.check_inputs(configs)
            rows = cluster.run_rows(cluster_address, configs, store, cluster_options, cluster_timeout,
                                    say=progress.message, accuracy_shards=accuracy_shards)
        else:
            for config in configs:
                rows += runner.run(config, store, progress)
    print_rows(store.rows, f"{config_profile.name} on {images_dir}")
    out.print(f"results: {store.path}  report: {store.out_dir / 'report.md'}")
    fail_if_rows_failed(rows)


@click.command("demo")
@click.option("--out", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Output folder (default: results/demo, or results/demo-N if that holds results).")
@click.option("--mode", default=None, metavar="latency|throughput", help=MODE_HELP)
@click.option("--seconds", "bench_seconds", type=Seconds(), default=2.0, show_default=True,
              help="Minimum length of the timing loop per batch size.")
@click.option("--max-seconds", type=Seconds(), default=10.0, show_default=True,
              help="Cap of the timing loop (shorter than run's 60 s: a demo), when it does not reach ±1% sooner.")
@click.option("--cache", "cache_dir", default=None, type=click.Path(path_type=Path),
              help="Where the generated demo dataset is cached (default ~/.cache/harness).")
@click.option("--save-detections", is_flag=True,
              help="Save each row's detections next to results.json, for report --fidelity.")
def demo_cmd(out_dir, mode, bench_seconds, max_seconds, cache_dir, save_detections):
    """Run the whole line on the bundled demo model and a generated dataset (no downloads)."""
    from harness.cli.common import console
    from harness.data import demo as demo_mod
    from harness.data.coco import DatasetCache
    from harness.images.imagefile import pixel_limit
    from harness.measure import runner
    from harness.measure.canvases import CanvasCache
    from harness.measure.envinfo import environment
    from harness.measure.results import ResultsStore
    from harness.profiles import load_profile

    check_loop_flags(bench_seconds, max_seconds, 0.01)
    configured = [(name, *target_options(name, {"mode": mode}, {})) for name in demo_mod.DEMO_TARGETS]
    with console.status("preparing the demo dataset (generated once, then cached)..."):
        images_dir, ann_path, reused = demo_mod.demo_dataset(cache_dir)
    console.print(f"demo dataset: {ann_path.parent} ({demo_mod.DEMO_IMAGES} images, {'cached' if reused else 'generated'})")
    out_dir = out_dir or demo_mod.free_out_dir(Path("results") / "demo")
    store = ResultsStore(out_dir, environment(), on_save=write_run_report)
    profile = load_profile(demo_mod.DEMO_PROFILE)
    canvases, datasets = CanvasCache(), DatasetCache()
    rows = []
    with store, pixel_limit(None), RichProgress() as progress:
        for name, options, notes in configured:
            config = runner.RunConfig(target=name, model=str(demo_mod.demo_model_path()), profile=profile,
                                      images_dir=images_dir, ann_path=ann_path, options=options, notes=notes,
                                      batch_sizes=list(demo_mod.DEMO_BATCH_SIZES), bench_seconds=bench_seconds,
                                      max_seconds=max_seconds, warmup_seconds=0.5, canvases=canvases, datasets=datasets,
                                      keep_going=True, save_detections=save_detections)
            rows += runner.run(config, store, progress)
    print_rows(store.rows, "harness demo: bundled demo model on the synthetic validation split")
    extra = []
    if any(r.ok for r in rows):  # the comparison page with its plots, and the table as CSV, as `harness report` writes
        extra = write_report([str(store.path)], store.out_dir / "comparison.md")
        extra += write_report([str(store.path)], store.out_dir / "results.csv", "csv")
    out.print(f"report: {store.out_dir / 'report.md'}  results: {store.path}", highlight=False, soft_wrap=True)
    if extra:
        out.print(f"comparison, plots and CSV: {', '.join(str(p) for p in extra)}", highlight=False, soft_wrap=True)
    fail_if_rows_failed(rows)
