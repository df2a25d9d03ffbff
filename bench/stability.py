"""Run-to-run stability (issue #19): the coefficient of variation of the throughput of 5 repeated
`harness run` against 5 repeated `benchmark_app`, both with their default timing settings, on the
same model, performance hint, precision and input, interleaved (harness, benchmark_app, then
benchmark_app, harness, ...).

  harness        `python -m harness run --target ov` (default: --mode throughput, at least 3 s and 10
                 iterations, until the throughput's 95% CI is within ±1%, at most 60 s; 1 s warm-up),
                 --limit 8 images for a short accuracy pass (it does not touch the timing loop); fps
                 read from its results.json
  benchmark_app  the openvino wheel's own (same interpreter, same ONEDNN_MAX_CPU_ISA), default
                 duration (60 s on CPU), -hint throughput, -infer_precision f32 (what the harness
                 pins), -i the harness's own timing input (the first image, preprocessed, as .npy)

Prints each run's img/s and seconds with the load average, both CVs (sample sd / mean) and their
ratio; the goal is harness CV <= 2x benchmark_app's CV.

Usage (repo root, ../shared present):
  python bench/stability.py                                  # int8 IR NanoDet-Plus 320, 5 + 5 runs
  python bench/stability.py --runs 5 --model ../shared/models/nanodet-m-320.onnx --profile nanodet-m-320
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from run_bench import ANN, DATA, IR, IR_PROFILE, ROOT, _real_sample, out  # bench/ is this script's folder


def harness_run(model: Path, profile: str, data: Path, ann: Path, dest: Path, limit: int) -> tuple[float, float, dict]:
    """(fps, wall seconds of the command, the row) of one default `harness run --target ov`."""
    cmd = [sys.executable, "-m", "harness", "run", "--target", "ov", "--model", str(model), "--profile", profile,
           "--data", str(data), "--ann", str(ann), "--limit", str(limit), "--out", str(dest), "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"harness run failed: {(proc.stdout + proc.stderr)[-800:]}")
    (row,) = json.loads((dest / "results.json").read_text())["rows"]
    return float(row["fps"]), wall, row


def benchmark_app(model: Path, sample: Path) -> tuple[float, float]:
    """(fps, wall seconds) of one default-length benchmark_app run."""
    launcher = "import sys; from openvino.tools.benchmark.main import main; sys.argv[0] = 'benchmark_app'; main()"
    cmd = [sys.executable, "-c", launcher, "-m", str(model), "-d", "CPU", "-hint", "throughput",
           "-infer_precision", "f32", "-i", str(sample)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - t0
    match = re.search(r"Throughput:\s+([\d.]+) FPS", proc.stdout + proc.stderr)
    if proc.returncode or not match:
        raise RuntimeError(f"benchmark_app failed: {(proc.stdout + proc.stderr)[-800:]}")
    return float(match.group(1)), wall


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=IR)
    parser.add_argument("--profile", default=IR_PROFILE)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--ann", type=Path, default=ANN)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=8, help="images of harness run's accuracy pass")
    args = parser.parse_args(argv)

    from harness.data.coco import load_dataset
    from harness.profiles import load_profile
    from harness.targets.cpu_isa import guard_amx

    note = guard_amx()  # sets ONEDNN_MAX_CPU_ISA where AMX faults; both subprocesses inherit it
    import openvino

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    out(f"# stability.py  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpus, load {load}, "
        f"openvino {openvino.__version__})")
    out(f"# {note or 'no AMX guard needed'}; {args.runs} runs each, interleaved; model {args.model}")
    profile = load_profile(args.profile)
    dataset = load_dataset(args.data, args.ann, args.limit)
    with tempfile.TemporaryDirectory(prefix="bench-stability-") as tmp:
        tmp = Path(tmp)
        sample = tmp / "input.npy"
        np.save(sample, np.ascontiguousarray(_real_sample(dataset, profile)))
        harness_fps, app_fps = [], []
        for k in range(args.runs):
            # every other run benchmark_app goes first, so slow drift in machine load favours neither side
            order = ("harness", "benchmark_app") if k % 2 == 0 else ("benchmark_app", "harness")
            for who in order:
                before = os.getloadavg()[0]
                if who == "harness":
                    fps, wall, row = harness_run(args.model, args.profile, args.data, args.ann, tmp / f"run{k}",
                                                 args.limit)
                    harness_fps.append(fps)
                    ci = "-" if row.get("fps_ci95") is None else f"±{row['fps_ci95'] * 100:.2f}%"
                    out(f"   run {k + 1} (load {before:.1f}): harness {fps:7.1f} img/s (loop {row['bench']['seconds']:.1f} "
                        f"s, {ci}{'' if row.get('fps_converged') else ' not converged'}, {row['mode']} "
                        f"x{row['requests']}; command {wall:.0f} s)")
                else:
                    fps, wall = benchmark_app(args.model, sample)
                    app_fps.append(fps)
                    out(f"   run {k + 1} (load {before:.1f}): benchmark_app {fps:7.1f} img/s (command {wall:.0f} s)")
    h, b = cv(harness_fps), cv(app_fps)
    out(f"   harness:       mean {statistics.mean(harness_fps):.1f} img/s, CV {h * 100:.2f}%")
    out(f"   benchmark_app: mean {statistics.mean(app_fps):.1f} img/s, CV {b * 100:.2f}%")
    out(f"   CV ratio harness / benchmark_app: {h / b:.2f} (goal <= 2); mean fps ratio "
        f"{statistics.mean(harness_fps) / statistics.mean(app_fps):.3f}")
    out(f"# done, load {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
