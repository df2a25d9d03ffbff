"""`harness preprocess | decode | emulate`: the file-based NPU flow (Ascend ais_bench, VastAI vamp).

Flags in, calls into harness.npu out; the tools themselves come from harness.npu.FILE_TOOLS.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
from rich.markup import escape

from harness.cli.common import (
    MAX_PIXELS_HELP,
    BatchSizes,
    Count,
    LazyChoice,
    RichProgress,
    Seconds,
    console,
    fail_if_rows_failed,
    out,
    print_rows,
)
from harness.core.errors import HarnessError
from harness.npu import FILE_TOOLS, formats, tool_for_format
from harness.targets.modes import MAX_BATCH, MAX_PARALLEL

TOOL_NAMES = FILE_TOOLS.names()


@click.command("preprocess")
@click.option("--profile", "-p", "profile_name", required=True,
              help="Built-in profile name, a .toml file, or auto (found from the model).")
@click.option("--data", "images_dir", required=True, type=click.Path(path_type=Path), help="Image folder.")
@click.option("--ann", "ann_path", required=True, type=click.Path(path_type=Path), help="COCO instances json.")
@click.option("--format", "fmt", required=True, type=LazyChoice(formats),
              help="bin: Ascend ais_bench input; npz: VastAI vamp input (+ datalist.txt, vdsp_params.json).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@click.option("--model", "-m", default=None, type=click.Path(path_type=Path),
              help="ONNX model: checks its input against the profile and records output shapes/dtypes.")
@click.option("--workers", type=Count(), default=2, show_default=True, help="Threads (output is identical for any value).")
@click.option("--limit", type=Count(), default=None, help="Use only the first N images.")
@click.option("--max-pixels", type=Count(), default=None, help=MAX_PIXELS_HELP)
@click.option("--skip-bad-images", is_flag=True, help="Skip unreadable images and record them in prep.json.")
@click.option("--datalist-root", default=None, help="npz: folder prefix written in datalist.txt (the device host's path).")
@click.option("--overwrite", is_flag=True, help="Replace input files already in --out.")
def preprocess_cmd(profile_name, images_dir, ann_path, fmt, out_dir, model, workers, limit, max_pixels,
                   skip_bad_images, datalist_root, overwrite):
    """Write the dataset as vendor-tool input files plus a prep.json sidecar for `harness decode`."""
    from harness.images.imagefile import pixel_limit
    from harness.profiles import load_profile
    from harness.profiles.match import resolve as resolve_profile

    if profile_name == "auto" and not model:
        raise HarnessError("--profile auto needs --model (the profile is found from the model)")
    profile = resolve_profile(profile_name, model, console.print) if model else load_profile(profile_name)
    with pixel_limit(max_pixels):
        sidecar = _preprocess(profile, images_dir, ann_path, fmt, out_dir, model, workers, limit, skip_bad_images,
                              datalist_root, overwrite)
    for warning in (sidecar.get("device_preprocess") or {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if sidecar["outputs"] is None:
        console.print("[yellow]note:[/] no --model: raw .bin outputs will need `harness decode --model`", highlight=False)
    side = tool_for_format(fmt).side_files
    extra = f"  also: {', '.join(side)}" if side else ""
    out.print(f"{len(sidecar['images'])} {fmt} files in {out_dir}  sidecar: {Path(out_dir) / 'prep.json'}{extra}")


def _preprocess(profile, images_dir, ann_path, fmt, out_dir, model, workers, limit, skip_bad_images, datalist_root,
                overwrite, progress=None) -> dict:
    from harness.data.coco import load_dataset
    from harness.npu.prepare import prepare

    dataset = load_dataset(images_dir, ann_path, limit, skip_bad_images, workers=workers)
    with contextlib.nullcontext(progress) if progress is not None else RichProgress() as progress:
        sidecar = prepare(dataset.images, profile, out_dir, fmt, model=model, workers=workers, progress=progress,
                          dataset=str(images_dir), annotations=str(ann_path), skip_bad=skip_bad_images,
                          datalist_root=datalist_root, overwrite=overwrite, limit=limit, content=dataset.content)
    return sidecar


def tool_output_options(fn):
    """One output-folder flag per file tool (--bin for ais_bench, --npz for vamp, ...)."""
    for name, tool in reversed(FILE_TOOLS.items()):
        fn = click.option(tool.decode_flag, name, default=None, type=click.Path(path_type=Path),
                          help=f"{tool.program} output folder ({tool.output_help}).")(fn)
    return fn


@click.command("decode")
@tool_output_options
@click.option("--prep", "prep_dir", default=None, type=click.Path(path_type=Path),
              help="The preprocess --out folder (without it: --datalist, --data and --profile, for npz inputs made "
                   "by the vendor's image2npz.py).")
@click.option("--ann", "ann_path", required=True, type=click.Path(path_type=Path), help="COCO instances json.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Results folder.")
@click.option("--model", "-m", default=None, type=click.Path(path_type=Path),
              help="ONNX model giving output shapes/dtypes (overrides those recorded at preprocess).")
@click.option("--datalist", default=None, type=click.Path(path_type=Path),
              help="npz: the list vamp was run with (one .npz path per line); maps output_NNNNNN.npz to images by "
                   "file stem. Default: the prep folder's own order.")
@click.option("--profile", "-p", "profile_name", default=None,
              help="Without --prep: the profile whose resize the device applied.")
@click.option("--data", "images_dir", default=None, type=click.Path(path_type=Path),
              help="Without --prep: the original image folder (sizes read from the headers).")
@click.option("--device", default=None,
              help="What ran the outputs, recorded in the row, e.g. \"Ascend 310P3\" (default: what the tool's "
                   "summary says).")
@click.option("--skip-bad-images", is_flag=True, help="Leave out images whose outputs hold NaN/Inf, and record them.")
@click.option("--bs", type=Count(maximum=MAX_BATCH), default=None,
              help="Batch size for the row when no ais summary records one (default 1).")
@click.option("--precision", default=None, help="Precision the device ran (recorded in the row), e.g. fp16, int8.")
@click.option("--evaluator", default="auto", show_default=True, help="auto, faster-coco-eval or pycocotools.")
@click.option("--resume", is_flag=True, help="Add the row to the results already in --out.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
@click.option("--save-detections", is_flag=True,
              help="Save the row's COCO detections next to results.json (for report --fidelity).")
@click.option("--save-outputs", type=click.IntRange(min=0), default=0, metavar="N",
              help="Save the raw outputs of the first N images next to results.json (tensor errors in report --fidelity).")
def decode_cmd(prep_dir, ann_path, out_dir, model, datalist, profile_name, images_dir, device, skip_bad_images, bs,
               precision, evaluator, resume, overwrite, save_detections, save_outputs, **tool_paths):
    """Decode a vendor tool's output folder with the common decoder and evaluator; write a results row."""
    from harness.measure.envinfo import environment
    from harness.measure.results import ResultsStore
    from harness.npu.decode_outputs import decode_run
    from harness.report import write_run_report

    given = {name: path for name, path in tool_paths.items() if path is not None}
    if len(given) != 1:
        raise HarnessError("pass exactly one of " + " or ".join(
            f"{tool.decode_flag} ({tool.program} output)" for _, tool in FILE_TOOLS.items()))
    (tool_name, outputs_path), = given.items()
    store = ResultsStore(out_dir, environment(), resume=resume, overwrite=overwrite, on_save=write_run_report)
    with store, RichProgress() as progress:
        row = decode_run(tool_name, outputs_path, prep_dir, ann_path, model=model, bs=bs, precision=precision,
                         evaluator=evaluator, progress=progress, datalist=datalist, profile=profile_name,
                         images_dir=images_dir, device=device, skip_bad=skip_bad_images, out_dir=store.out_dir,
                         save_detections=save_detections, save_outputs=save_outputs)
        store.check_same_measurement(row.identity, row.target, row.model)
        store.add(row)
    print_rows(store.rows, f"{row.profile} from {outputs_path}")
    for note in row.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    out.print(f"results: {store.path}  report: {store.out_dir / 'report.md'}")


@click.command("emulate")
@click.option("--runner", required=True, type=click.Choice(TOOL_NAMES), help="Which vendor tool to emulate.")
@click.option("--model", "-m", required=True, type=click.Path(path_type=Path), help="ONNX model (run with ONNX Runtime CPU).")
@click.option("--prep", "prep_dir", required=True, type=click.Path(path_type=Path), help="The preprocess --out folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="ais: the --output parent (a timestamped folder is made); vamp: the --path_output folder.")
@click.option("--batchsize", type=Count(maximum=MAX_BATCH), default=1, show_default=True,
              help="Files per batch (a fixed-batch model runs its own batch, as the tools do).")
@click.option("--summary-style", type=click.Choice(["new", "old"]), default="new", show_default=True,
              help="ais: new = {folder}_summary.json beside the folder (ais_bench); old = sumary.json inside (ais_infer).")
@click.option("--output-dirname", default=None, help="ais: a named output folder instead of a timestamp.")
@click.option("--threads", type=Count(maximum=MAX_PARALLEL), default=None, help="ONNX Runtime CPU threads.")
def emulate_cmd(runner, model, prep_dir, out_dir, batchsize, summary_style, output_dirname, threads):
    """Write what ais_bench or vamp would, using ONNX Runtime on this machine (no device needed)."""
    tool = FILE_TOOLS.get(runner)
    given = {"summary_style": summary_style, "output_dirname": output_dirname}
    extra = {k: v for k, v in given.items() if k in tool.emulate_options}
    with RichProgress() as progress:
        info = tool.emulate(model, prep_dir, out_dir, batchsize, threads=threads, progress=progress, **extra)
    for note in info["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    summary = f"  summary: {info['summary']}" if info.get("summary") else ""
    out.print(f"{runner}: {info['files']} images at batch {info['batch']} -> {info['folder']}{summary}")


@click.command("roundtrip")
@click.option("--runner", required=True, type=click.Choice(TOOL_NAMES), help="Which vendor tool runs the files.")
@click.option("--model", "-m", required=True, type=click.Path(path_type=Path),
              help="ONNX model on this host: output shapes for decode, and the row's model identity.")
@click.option("--device-model", default=None,
              help="The file the tool loads on the device host (an .om, a vacc model; {bs} for one per batch size). "
                   "Default: --model.")
@click.option("--profile", "-p", "profile_name", required=True,
              help="Built-in profile name, a .toml file, or auto (found from the model).")
@click.option("--data", "images_dir", required=True, type=click.Path(path_type=Path), help="Image folder.")
@click.option("--ann", "ann_path", required=True, type=click.Path(path_type=Path), help="COCO instances json.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Results folder (results.json, report.md; prep/ and device-bsN/ unless --shared-dir).")
@click.option("--bs", "batch_sizes", type=BatchSizes(), default="1", show_default=True,
              help="Batch sizes: one tool run and one row each (the inputs are prepared once).")
@click.option("--tool-config", type=click.Path(path_type=Path), default=None,
              help="TOML with the tool's command (its [ais]/[vamp] table or top level: command, timeout_s, env).")
@click.option("--tool-command", default=None,
              help="The tool's command line with placeholders, e.g. 'ais_bench --model {model} --input {input} "
                   "--output {output} --batchsize {batchsize}' (overrides --tool-config; docs/cluster.md).")
@click.option("--tool-timeout", type=Seconds(), default=None, help="Kill the tool after this many seconds (default 1800).")
@click.option("--cluster", "cluster_address", default=None, metavar="ADDRESS",
              help="Run the tool as a Ray task on the host holding the device resource device:<runner> (auto, "
                   "host:6379 or ray://host:10001; -o device_resource=NAME, -o device_cpus=N). Without it the tool "
                   "runs on this host.")
@click.option("--cluster-timeout", type=Seconds(), default=3600.0, show_default=True,
              help="With --cluster: a run (files there, the tool, files back) not done after this many seconds is "
                   "cancelled and failed.")
@click.option("--shared-dir", type=click.Path(path_type=Path), default=None,
              help="With --cluster: a folder mounted at the same path on this host and the device host; the files "
                   "go through it instead of Ray's object store.")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="With --cluster: device_resource=NAME, device_cpus=N.")
@click.option("--workers", type=Count(), default=2, show_default=True, help="Preprocessing threads.")
@click.option("--limit", type=Count(), default=None, help="Use only the first N images.")
@click.option("--max-pixels", type=Count(), default=None, help=MAX_PIXELS_HELP)
@click.option("--skip-bad-images", is_flag=True,
              help="Skip unreadable images (preprocess) and images whose outputs hold NaN/Inf (decode); recorded.")
@click.option("--device", default=None, help="What ran the outputs, recorded in the row (default: what the tool's files say).")
@click.option("--precision", default=None, help="Precision the device ran (recorded in the row), e.g. fp16, int8.")
@click.option("--evaluator", default="auto", show_default=True, help="auto, faster-coco-eval or pycocotools.")
@click.option("--resume", is_flag=True, help="Add rows to the results already in --out; finished batch sizes are skipped.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
@click.option("--save-detections", is_flag=True,
              help="Save each row's COCO detections next to results.json (for report --fidelity).")
@click.option("--save-outputs", type=click.IntRange(min=0), default=0, metavar="N",
              help="Save the raw outputs of the first N images next to results.json.")
def roundtrip_cmd(runner, model, device_model, profile_name, images_dir, ann_path, out_dir, batch_sizes, tool_config,
                  tool_command, tool_timeout, cluster_address, cluster_timeout, shared_dir, option_pairs, workers,
                  limit, max_pixels, skip_bad_images, device, precision, evaluator, resume, overwrite,
                  save_detections, save_outputs):
    """preprocess, the vendor tool (on a device host with --cluster), decode: one command, one row per --bs."""
    from harness.cluster.devicetool import load_tool_command
    from harness.cluster.filerun import Roundtrip, run_local
    from harness.core import config
    from harness.core.folders import OutputFolder
    from harness.images.imagefile import pixel_limit
    from harness.measure.envinfo import environment
    from harness.measure.results import ResultsStore
    from harness.npu.decode_outputs import check_bs_fits
    from harness.profiles.match import resolve as resolve_profile
    from harness.report import write_run_report

    tool = FILE_TOOLS.get(runner)
    command = load_tool_command(tool, tool_config, tool_command, tool_timeout)
    pairs = config.parse_assignments(option_pairs)
    if cluster_address is None:
        for flag, given in (("--shared-dir", shared_dir), ("--option", pairs)):
            if given:
                raise HarnessError(f"{flag}: only with --cluster (without it the tool runs on this host, on the files "
                                   "in place)")
    else:
        from harness.cluster.filerun import RoundtripClusterOptions

        cluster_options = config.load(RoundtripClusterOptions, pairs, "--option", from_text=True)
    profile = resolve_profile(profile_name, model, console.print)
    work = Path(shared_dir) if shared_dir is not None else Path(out_dir)
    device_model = device_model or str(model)
    store = ResultsStore(out_dir, environment(), resume=resume, overwrite=overwrite, on_save=write_run_report)
    # the shared folder is this command's alone while it runs (the lock and manifest of any --out)
    shared = OutputFolder(shared_dir, "--shared-dir") if shared_dir is not None else contextlib.nullcontext()
    with store, shared, pixel_limit(max_pixels), RichProgress() as progress:
        job = Roundtrip(runner, command, work / "prep", work, Path(model), device_model, Path(ann_path), batch_sizes,
                        dict(precision=precision, evaluator=evaluator, device=device, skip_bad=skip_bad_images,
                             save_detections=save_detections, save_outputs=save_outputs),
                        shared if shared_dir is not None else store.folder)
        todo = []
        for bs in batch_sizes:
            keys = [(tool.device, name, profile.name, precision or "unspecified", bs) for name in job.row_models(bs)]
            if any(store.done(key) for key in keys):
                progress.message(f"{tool.device} bs={bs}: already in {store.path}, skipped (--resume)")
            else:
                todo.append(bs)

        def prepared() -> Roundtrip:
            sidecar = _preprocess(profile, images_dir, ann_path, tool.input_format, job.prep_dir, model, workers,
                                  limit, skip_bad_images, None, resume or overwrite, progress)
            for warning in (sidecar.get("device_preprocess") or {}).get("warnings", []):
                progress.message(f"warning: {warning}")
            for bs in todo:  # before the tool runs, not after it in decode
                check_bs_fits(bs, len(sidecar["images"]), job.prep_dir / "prep.json")
            return job

        rows = []
        if todo and cluster_address is None:
            rows = run_local(prepared(), todo, store, progress.message, progress)
        elif todo:
            from harness.cluster.filerun import run_on_cluster

            rows = run_on_cluster(runner, prepared, todo, store, cluster_address, cluster_options,
                                  shared_dir is not None, cluster_timeout, progress.message, progress)
    print_rows(store.rows, f"{profile.name} through {tool.program}")
    out.print(f"results: {store.path}  report: {store.out_dir / 'report.md'}")
    fail_if_rows_failed(rows)
