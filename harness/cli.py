"""The `harness` command: parses flags and wires the pieces; no logic of its own.

Every user mistake surfaces as a HarnessError and is printed as one line (exit 2), no traceback.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.errors import HarnessError

# Wide enough for the results table when output goes to a file or pipe (rich assumes 80 there).
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=_WIDTH)


class HarnessGroup(click.Group):
    """Turns HarnessError into `error: ...` and SIGTERM into the same path as Ctrl-C."""

    def invoke(self, ctx):
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished rows are saved; rerun with --resume to continue")
            sys.exit(130)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@click.group(cls=HarnessGroup)
@click.version_option(package_name="harness")
def main():
    """Benchmark object detectors across accelerators: COCO mAP, throughput and latency per batch size."""


class RichProgress:
    """Progress bars for long work, on stderr so stdout stays clean."""

    def __init__(self):
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()

    @contextmanager
    def task(self, description: str, total: int):
        task_id = self._progress.add_task(description, total=total)
        yield lambda n=1: self._progress.advance(task_id, n)

    def message(self, text: str) -> None:
        self._progress.console.print(text)


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HarnessError(f"--bs {text!r}: expected comma-separated positive integers, e.g. 1,4,8") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise HarnessError(f"--bs {text!r}: expected comma-separated positive integers, e.g. 1,4,8")
    return list(dict.fromkeys(sizes))


def print_rows(rows: list[dict], title: str = "results") -> None:
    table = Table(title=title)
    columns = [("target", "target"), ("precision", "prec"), ("bs", "bs"), ("images", "images"), ("map", "mAP"),
               ("map50", "AP50"), ("fps", "infer img/s"), ("latency_ms_p50", "p50 ms"),
               ("latency_ms_p99", "p99 ms"), ("e2e_fps", "e2e img/s")]
    for _, title_ in columns:
        table.add_column(title_, justify="right")
    from harness.report import fmt

    for row in rows:
        table.add_row(*[fmt(row.get(key), key) for key, _ in columns])
    out.print(table)


def run_options(fn):
    """Flags shared by `run` and `demo`."""
    options = [
        click.option("--bs", "batch_sizes", default="1", show_default=True, help="Batch sizes, e.g. 1,4,8."),
        click.option("--seconds", "bench_seconds", default=3.0, show_default=True,
                     help="Length of the steady-state timing loop per batch size."),
        click.option("--warmup", "warmup_seconds", default=1.0, show_default=True, help="Warm-up seconds."),
        click.option("--hint", default=None, help="OpenVINO performance hint: THROUGHPUT (default), LATENCY."),
        click.option("--threads", type=int, default=None, help="Runtime CPU threads (default: runtime's choice)."),
        click.option("--precision", default=None, help="fp32 (default), fp16, bf16, int8 where the target supports it."),
        click.option("--allow-fallback", is_flag=True, help="Let a GPU target fall back to CPU (recorded in the row)."),
        click.option("--calib", default=None, help="Folder of int8 calibration images (target trt, --precision int8)."),
        click.option("--ep", type=click.Choice(["cuda", "trt"]), default=None,
                     help="ort-cuda execution provider: cuda (default) or trt (ONNX Runtime's TensorRT EP)."),
        click.option("--engine-cache", default=None,
                     help="TensorRT engine cache folder (default ~/.cache/harness/trt; ort-cuda --ep trt: ~/.cache/harness/ort-trt)."),
        click.option("--limit", type=int, default=None, help="Use only the first N images."),
        click.option("--workers", type=int, default=2, show_default=True, help="Preprocessing threads."),
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


def target_options(kw: dict) -> dict:
    return {k: kw[k] for k in ("hint", "threads", "precision", "allow_fallback", "calib", "ep", "engine_cache") if kw.get(k) is not None}


@main.command()
@click.option("--target", "-t", "target_names", required=True, help="Target(s), comma-separated: ov, ort, ort-cuda, ...")
@click.option("--model", "-m", required=True, help="Model file; use {bs} for one model per batch size.")
@click.option("--profile", "-p", required=True, help="Built-in profile name or a .toml file.")
@click.option("--data", "images_dir", required=True, type=click.Path(path_type=Path), help="Image folder.")
@click.option("--ann", "ann_path", required=True, type=click.Path(path_type=Path), help="COCO instances json.")
@click.option("--out", "out_dir", default="results/run", show_default=True, type=click.Path(path_type=Path))
@run_options
def run(target_names, model, profile, images_dir, ann_path, out_dir, **kw):
    """Run targets over a dataset at each batch size; write results.json and report.md."""
    from harness import runner
    from harness.canvases import CanvasCache
    from harness.envinfo import environment
    from harness.profiles import load_profile
    from harness.results import ResultsStore
    from harness.targets import get_target

    names = [t.strip() for t in target_names.split(",") if t.strip()]
    for name in names:
        get_target(name)
    config_profile = load_profile(profile)
    batch_sizes = parse_batch_sizes(kw["batch_sizes"])
    store = ResultsStore(out_dir, environment(), resume=kw["resume"], overwrite=kw["overwrite"])
    canvases = None if kw["no_image_cache"] else CanvasCache()
    rows = []
    with RichProgress() as progress:
        for name in names:
            config = runner.RunConfig(
                target=name, model=model, profile=config_profile, images_dir=images_dir, ann_path=ann_path,
                batch_sizes=batch_sizes, options=target_options(kw), bench_seconds=kw["bench_seconds"],
                warmup_seconds=kw["warmup_seconds"], limit=kw["limit"], skip_bad_images=kw["skip_bad_images"],
                workers=kw["workers"], canvases=canvases,
            )
            rows += runner.run(config, store, progress)
    print_rows(store.rows, f"{config_profile.name} on {images_dir}")
    out.print(f"results: {store.path}  report: {store.out_dir / 'report.md'}")


@main.command()
def profiles():
    """List the built-in model profiles."""
    from harness.profiles import builtin_profiles

    table = Table(title="built-in profiles (or pass --profile FILE.toml)")
    table.add_column("name")
    table.add_column("description")
    for name, description in builtin_profiles().items():
        table.add_row(name, escape(description))
    out.print(table)


@main.command()
def targets():
    """List targets and whether each can run on this machine, and why not."""
    from harness.targets import get_target, target_names

    table = Table(title="targets")
    for column in ("target", "available", "runs on / why not"):
        table.add_column(column)
    for name in target_names():
        cls = get_target(name)
        ok, why = cls.availability()
        table.add_row(name, "yes" if ok else "no", escape(why or cls.description))
    # File-based NPU targets run on the device host; the harness writes their input and reads their output.
    table.add_row("ascend", "files", "Huawei Ascend ais_bench/ais_infer: harness preprocess --format bin, then harness decode --bin")
    table.add_row("vacc", "files", "VastAI VACC vamp: harness preprocess --format npz, then harness decode --npz")
    out.print(table)

@main.command()
@click.option("--out", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Output folder (default: results/demo, or results/demo-N if that holds results).")
@click.option("--seconds", "bench_seconds", default=2.0, show_default=True, help="Timing loop per batch size.")
@click.option("--cache", "cache_dir", default=None, type=click.Path(path_type=Path),
              help="Where the generated demo dataset is cached (default ~/.cache/harness).")
def demo(out_dir, bench_seconds, cache_dir):
    """Run the whole line on the bundled demo model and a generated dataset (no downloads)."""
    from harness import demo as demo_mod
    from harness import runner
    from harness.canvases import CanvasCache
    from harness.envinfo import environment
    from harness.profiles import load_profile
    from harness.results import ResultsStore

    with console.status("preparing the demo dataset (generated once, then cached)..."):
        images_dir, ann_path, reused = demo_mod.demo_dataset(cache_dir)
    console.print(f"demo dataset: {ann_path.parent} ({demo_mod.DEMO_IMAGES} images, {'cached' if reused else 'generated'})")
    out_dir = out_dir or demo_mod.free_out_dir(Path("results") / "demo")
    store = ResultsStore(out_dir, environment())
    profile = load_profile(demo_mod.DEMO_PROFILE)
    canvases = CanvasCache()
    with RichProgress() as progress:
        for name in demo_mod.DEMO_TARGETS:
            config = runner.RunConfig(target=name, model=str(demo_mod.demo_model_path()), profile=profile,
                                      images_dir=images_dir, ann_path=ann_path,
                                      batch_sizes=list(demo_mod.DEMO_BATCH_SIZES), bench_seconds=bench_seconds,
                                      warmup_seconds=0.5, canvases=canvases)
            runner.run(config, store, progress)
    print_rows(store.rows, "harness demo: bundled demo model on the synthetic validation split")
    out.print(f"report: {store.out_dir / 'report.md'}  results: {store.path}")


# -- more commands are registered below (one add_command line per module) --
from harness.cli_report import report_cmd  # noqa: E402
main.add_command(report_cmd)
from harness.cli_npu import decode_cmd, emulate_cmd, preprocess_cmd  # noqa: E402
main.add_command(preprocess_cmd); main.add_command(decode_cmd); main.add_command(emulate_cmd)
from harness.cli_quantize import quantize_cmd  # noqa: E402
main.add_command(quantize_cmd)
