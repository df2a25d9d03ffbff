"""`harness bench`: targets x batch sizes timed without a dataset (harness.measure.bench), one row each."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.common import BatchSizes, RichProgress, fail_if_rows_failed, out, print_rows
from harness.cli.run import TARGET_FLAGS, check_loop_flags, check_option_pairs, run_options, target_options
from harness.core.config import parse_assignments
from harness.core.errors import HarnessError
from harness.report import write_run_report

#: the flags of `run` that `bench` takes too (the dataset ones are left out)
SHARED_FLAGS = ("mode", "bench_seconds", "max_seconds", "target_ci", "warmup_seconds", "hint", "streams", "threads",
                "precision", "allow_fallback", "calib", "ep", "engine_cache", "option_pairs", "overwrite")


def _shared_flags(fn):
    """`run`'s own click options for SHARED_FLAGS, so both commands parse and document them alike."""
    holder = run_options(lambda: None)
    params = [p for p in holder.__click_params__ if p.name in SHARED_FLAGS]  # in click's reversed order
    fn.__click_params__ = [*getattr(fn, "__click_params__", []), *params]
    return fn


def parse_shape(text: str | None) -> tuple[int, int] | None:
    """--shape HxW (e.g. 416x416) -> (height, width)."""
    if text is None:
        return None
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise HarnessError(f"--shape {text}: expected HEIGHTxWIDTH, e.g. 416x416") from None
    if height <= 0 or width <= 0:
        raise HarnessError(f"--shape {text}: expected positive sizes, e.g. 416x416")
    return height, width


def model_input(path: str) -> tuple[tuple, str]:
    """(dims with None for dynamic ones, numpy dtype name) of a model's image input (ONNX or OpenVINO IR)."""
    if Path(path).suffix.lower() == ".xml":
        from harness.targets.ov import _import_ov

        ov = _import_ov()
        port = ov.Core().read_model(path).inputs[0]
        dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return dims, str(port.get_element_type().to_dtype())
    from harness.model.onnx_model import inspect_onnx

    first = inspect_onnx(path).image_input
    return first.dims(), first.dtype


def bench_profile(profile: str | None, model: str, shape: tuple[int, int] | None):
    """The profile given, or one made from the model's input (--shape for its dynamic height/width)."""
    from harness.profiles import input_profile
    from harness.profiles.match import resolve

    if profile:
        if shape:
            raise HarnessError("--shape is for models without --profile (the profile gives the input size)")
        return resolve(profile, model, out.print)
    first = model.replace("{bs}", "1")
    if not Path(first).is_file():
        raise HarnessError(f"model file not found: {first}")
    dims, dtype = model_input(first)
    if len(dims) == 4 and shape:
        dims = (dims[0], dims[1], *shape) if dims[1] == 3 else (dims[0], *shape, dims[3])
    if len(dims) == 4 and any(d is None for d in dims[1:]):
        raise HarnessError(f"model {Path(first).name} input {['?' if d is None else d for d in dims]} has dynamic "
                           "sizes: pass --shape HEIGHTxWIDTH (or --profile)")
    return input_profile(tuple(1 if d is None else d for d in dims), dtype)


@click.command("bench")
@click.option("--target", "-t", "target_names", required=True, help="Target(s), comma-separated: ov, ort, ort-cuda, ...")
@click.option("--model", "-m", required=True, help="Model file; use {bs} for one model per batch size.")
@click.option("--bs", "batch_sizes", type=BatchSizes(), default="1", show_default=True, help="Batch sizes, e.g. 1,4,8.")
@click.option("--shape", default=None, metavar="HxW",
              help="Input height x width for a model whose input size is dynamic (without --profile).")
@click.option("--profile", "-p", default=None,
              help="Profile (built-in name, .toml or auto): feeds --images as `run` would; without it the input is "
                   "random.")
@click.option("--images", "images_dir", default=None, type=click.Path(path_type=Path),
              help="Folder of images to time on (needs --profile); default: seeded random input.")
@click.option("--out", "out_dir", default="results/bench", show_default=True, type=click.Path(path_type=Path))
@_shared_flags
def bench_cmd(target_names, model, batch_sizes, shape, profile, images_dir, out_dir, **kw):
    """Time targets at each batch size without a dataset (random input, or --images with --profile)."""
    from harness.measure.bench import BenchConfig, bench, image_files
    from harness.measure.envinfo import environment
    from harness.measure.results import ResultsStore

    if images_dir is not None and not profile:
        raise HarnessError("--images needs --profile (it says how an image becomes the model's input)")
    names = list(dict.fromkeys(t.strip() for t in target_names.split(",") if t.strip()))
    pairs = parse_assignments(kw["option_pairs"])
    check_option_pairs(names, pairs)
    flags = {k: kw[k] for k in TARGET_FLAGS}
    configured = [(name, *target_options(name, flags, pairs)) for name in names]
    check_loop_flags(kw["bench_seconds"], kw["max_seconds"], kw["target_ci"])
    chosen = bench_profile(profile, model, parse_shape(shape))
    images = image_files(images_dir) if images_dir is not None else []
    store = ResultsStore(out_dir, environment(), overwrite=kw["overwrite"], on_save=write_run_report)
    rows = []
    with store, RichProgress() as progress:
        for name, options, notes in configured:
            config = BenchConfig(target=name, model=model, profile=chosen, batch_sizes=batch_sizes, images=images,
                                 options=options, bench_seconds=kw["bench_seconds"], max_seconds=kw["max_seconds"],
                                 target_ci=kw["target_ci"], warmup_seconds=kw["warmup_seconds"], notes=notes)
            rows += bench(config, store, progress)
    print_rows(store.rows, f"{Path(model).name}: timing only ({chosen.name})")
    for row in rows:
        summary = (row.bench or {}).get("latency_ms")
        if row.ok and summary and row.mode == "latency":
            out.print(f"{row.target} bs={row.bs} latency per request (ms): min {summary['min']:g}  median "
                      f"{summary['median']:g}  mean {summary['mean']:g}  max {summary['max']:g}"
                      + "".join(f"  {p} {summary[p]:g}" for p in ("p90", "p99") if summary.get(p) is not None),
                      highlight=False)
    out.print(f"results: {store.path}  report: {store.out_dir / 'report.md'}")
    fail_if_rows_failed(rows)
