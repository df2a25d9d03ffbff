"""The harness against the vendors' own tools, side by side, as ratios (issue #8).

Every comparison runs its contenders back to back inside one round (sections 1-2 swap who goes
first every other round), rounds repeat (interleaved, not one contender's repeats in a row), and
the median and spread of the per-round ratio is printed:
on a shared, noisy machine only ratios measured together mean anything.

  1. pure inference, OpenVINO: OpenVinoCpu.benchmark vs benchmark_app (same model, CPU, hint, batch;
     once with f32 pinned on both, once with bf16 on both: benchmark_app's default on bf16 CPUs)
  2. pure inference, ONNX Runtime: the ort target's benchmark in latency mode vs an
     onnxruntime_perf_test-style loop (plain sess.run on one preallocated input; the perf_test binary
     does not ship in the wheel); throughput mode against hand-written loops: bench/ort_throughput.py
  3. full accuracy pass (read, preprocess, infer, decode + evaluate) vs pure inference of as many images,
     pipelined and serial, against the floor that the machine's cores allow; once with inference on
     every core, once on one thread (the other core free, as an accelerator target would leave it)
  4. decode + NMS per image vs inference per image
  5. faster-coco-eval vs pycocotools: same numbers, time
  6. `harness preprocess`: 1 vs 2 workers (whole command and per image), identical bytes, peak RSS on N vs 8N images

Usage: python bench/run_bench.py [--rounds 3] [--seconds 5] [--only 1,2,3,4,5,6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from stage_costs import decode_costs, preprocess_cost  # bench/ is this script's folder

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))  # time the harness of this checkout, not whichever one is installed
IR = SHARED / "models/nanodet-plus-m-320-int8-ov/model.xml"  # the default models and data of bench/
IR_PROFILE = "nanodet-plus-m-320-int8-ov"
DATA = SHARED / "data/coco-tiny/val2017"
ANN = SHARED / "data/coco-tiny/annotations/instances_val2017.json"


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return f"{statistics.median(values):.3f} (min {lo:.3f}, max {hi:.3f}, n={len(values)})"


def out(text=""):
    print(text, flush=True)


# ------------------------------------------------------------------ contenders

def harness_ov_fps(model, profile, seconds, precision="fp32", hint="THROUGHPUT"):
    from harness.targets import get_target
    from harness.targets.timing import LoopRule, warm_up

    # fp32 is the target's default pin (INFERENCE_PRECISION_HINT f32); given explicitly it would be
    # refused for an int8 graph, which runs as it is
    options = {"hint": hint} if precision == "fp32" else {"precision": precision, "hint": hint}
    target = get_target("ov")(model, profile, options)
    target.load(1)
    x = _sample(profile)
    warm_up(lambda: target.infer(x), 1.0)
    stats = target.benchmark(x, LoopRule.fixed(seconds))  # benchmark_app's -t: the same fixed length
    nireq = stats.concurrency
    target.close()
    return stats.fps, float(np.median(stats.latencies_ms)), nireq


def benchmark_app_fps(model, seconds, precision=None, hint="throughput"):
    # The `benchmark_app` console script of the openvino wheel, run with this interpreter.
    launcher = "import sys; from openvino.tools.benchmark.main import main; sys.argv[0] = 'benchmark_app'; main()"
    cmd = [sys.executable, "-c", launcher, "-m", str(model), "-d", "CPU",
           "-hint", hint, "-t", str(int(seconds))]
    if precision:
        cmd += ["-infer_precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    text = proc.stdout + proc.stderr
    fps = re.search(r"Throughput:\s+([\d.]+) FPS", text)
    median = re.search(r"Median:\s+([\d.]+) ms", text)
    nireq = re.search(r"(\d+) inference requests", text)
    prec = re.search(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>", text)
    streams = re.search(r"NUM_STREAMS: (\d+)", text)
    if not fps:
        raise RuntimeError(f"benchmark_app failed: {text[-800:]}")
    return (float(fps.group(1)), float(median.group(1)) if median else None,
            int(nireq.group(1)) if nireq else None, prec.group(1) if prec else "?", streams.group(1) if streams else "?")


def harness_ort_fps(model, profile, seconds):
    """Latency mode (one call at a time), as the loop it is compared with; throughput mode is
    bench/ort_throughput.py's comparison."""
    from harness.targets import get_target
    from harness.targets.timing import LoopRule, warm_up

    target = get_target("ort")(model, profile, {"mode": "latency"})
    target.load(1)
    x = _sample(profile)
    warm_up(lambda: target.infer(x), 1.0)
    stats = target.benchmark(x, LoopRule.fixed(seconds))
    target.close()
    return stats.fps


def ort_perf_test_loop(model, profile, seconds):
    """onnxruntime_perf_test's method in Python: one session, one preallocated input, run() in a loop."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: _sample(profile)}
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        sess.run(None, feed)
    n, start = 0, time.perf_counter()
    while True:
        sess.run(None, feed)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 10:
            return n / elapsed


def _sample(profile):
    """The input benchmark_app makes when given no files, value for value (its fill_tensors_with_random:
    uniform 0..255 from MT19937 seeded with SeedSequence(0)); inference speed depends on the values
    (about 8% here between this and standard-normal data), so both sides get the same ones."""
    rs = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(0)))
    shape = list(profile.input.shape(1))
    if profile.input.numpy_dtype == "uint8":
        return rs.uniform(0, 256, shape).astype(np.uint8)
    return rs.uniform(0, 255, shape).astype(np.float32)


def _real_sample(dataset, profile):
    """The first dataset image, preprocessed: what `harness run` times inference on."""
    from harness.images.preprocess import preprocess_image

    image_id, path = dataset.images[0]
    return preprocess_image(path, image_id, profile.input)[0][None]


# ------------------------------------------------------------------ sections

def section_ov(args, models):
    out("## 1. Pure inference, OpenVINO CPU: harness OpenVinoCpu.benchmark vs benchmark_app")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset)")
    out(f"   hint THROUGHPUT, batch 1, {args.seconds:.0f}s per run, ONEDNN_MAX_CPU_ISA={isa} for both,"
        " the same input values for both (benchmark_app's own random fill)")
    from harness.core.errors import HarnessError

    for label, model, profile in models:
        ratios = {"f32": [], "bf16": []}
        bf16 = True
        for r in range(args.rounds):
            # Odd rounds run benchmark_app first, so slow drift in machine load favours neither side.
            h32, b32 = _pair(r, partial(harness_ov_fps, model, profile, args.seconds, "fp32"),
                             partial(benchmark_app_fps, model, args.seconds, "f32"))
            ratios["f32"].append(h32[0] / b32[0])
            out(f"   {label} round {r + 1}: f32  harness {h32[0]:7.1f} fps (nireq {h32[2]}, p50 {h32[1]:.1f} ms) | "
                f"benchmark_app -infer_precision f32 {b32[0]:7.1f} fps (nireq {b32[2]}, streams {b32[4]}, "
                f"precision {b32[3]}, p50 {b32[1]} ms)")
            if not bf16:
                continue
            try:
                hbf, bdf = _pair(r, partial(harness_ov_fps, model, profile, args.seconds, "bf16"),
                                 partial(benchmark_app_fps, model, args.seconds, None))
            except HarnessError as exc:  # e.g. an int8 graph: --precision bf16 is refused
                out(f"   {label}: bf16 comparison skipped ({exc})")
                bf16 = False
                continue
            ratios["bf16"].append(hbf[0] / bdf[0])
            out(f"   {label} round {r + 1}: bf16 harness {hbf[0]:7.1f} fps (p50 {hbf[1]:.1f} ms) | "
                f"benchmark_app default {bdf[0]:7.1f} fps (precision {bdf[3]}, p50 {bdf[1]} ms)")
        out(f"   {label}: harness/benchmark_app, f32 both:  {med(ratios['f32'])}")
        out(f"   {label}: harness/benchmark_app, bf16 both: {med(ratios['bf16'])}")
    out()


def _pair(r: int, harness, anchor):
    """(harness(), anchor()) with the anchor first in odd rounds."""
    if r % 2 == 0:
        first = harness()
        return first, anchor()
    second = anchor()
    return harness(), second


def section_ort(args, onnx_model, profile):
    out("## 2. Pure inference, ONNX Runtime CPU: harness ort --mode latency benchmark vs onnxruntime_perf_test-style "
        "loop (throughput mode: bench/ort_throughput.py)")
    ratios = []
    for r in range(args.rounds):
        if r % 2 == 0:  # alternate who goes first
            h = harness_ort_fps(onnx_model, profile, args.seconds)
            a = ort_perf_test_loop(onnx_model, profile, args.seconds)
        else:
            a = ort_perf_test_loop(onnx_model, profile, args.seconds)
            h = harness_ort_fps(onnx_model, profile, args.seconds)
        ratios.append(h / a)
        out(f"   round {r + 1}: harness {h:7.1f} fps | plain sess.run loop {a:7.1f} fps")
    out(f"   harness/anchor: {med(ratios)}")
    out()


def section_pass(args, cases, dataset):
    from harness.measure.canvases import CanvasCache
    from harness.measure.evaluate import CocoEvaluator
    from harness.measure.pipeline import accuracy_pass
    from harness.targets import get_target
    from harness.targets.timing import LoopRule, warm_up

    cores = os.cpu_count() or 1
    out("## 3. Full accuracy pass (read+preprocess+infer+decode, then evaluate) vs pure inference of the same images")
    out(f"   {len(dataset.images)} images; pure-inference time = images / the target's benchmark fps on the first"
        " preprocessed image (as `harness run` times it), same round, same options")
    out(f"   floor = what {cores} cores allow with perfect overlap: max(pure, (pure x inference cores + preprocess CPU"
        " + decode CPU) / cores) + evaluate, CPU costs measured alone in one thread")
    out("## 4. Decode + NMS per image vs inference per image (decode of the pass's real outputs, one thread)")
    evaluator = CocoEvaluator(dataset.ann, "auto")
    preprocess_cpu = {}
    for label, tname, model, profile, options in cases:
        if profile.name not in preprocess_cpu:
            preprocess_cpu[profile.name] = preprocess_cost(dataset, profile)
            out(f"   preprocess {profile.name}: {preprocess_cpu[profile.name] * 1e3:.2f} ms CPU per image "
                "(read, decode, resize, layout)")
        inference_cores = min(cores, int(options.get("threads") or cores))
        ratio_pipe, ratio_reused, ratio_serial, ratio_floor, dec_ratio, dec_coco_ratio = [], [], [], [], [], []
        for r in range(args.rounds):
            target = get_target(tname)(model, profile, dict(options))
            target.load(1)
            x = _real_sample(dataset, profile)
            warm_up(lambda target=target, x=x: target.infer(x), 1.0)
            stats = target.benchmark(x, LoopRule.fixed(args.seconds))
            pure = len(dataset.images) / stats.fps
            serial = accuracy_pass(target, dataset.images, 1, profile, pipelined=False)
            store = CanvasCache().store_for(profile.input, len(dataset.images))
            piped = accuracy_pass(target, dataset.images, 1, profile, canvases=store)  # decodes, fills store
            reused = accuracy_pass(target, dataset.images, 1, profile, canvases=store)  # a later row's pass
            t0 = time.perf_counter()
            metrics = evaluator.evaluate(piped.detections, piped.counted)
            eval_s = time.perf_counter() - t0
            assert piped.detections == serial.detections == reused.detections, "passes differ"
            dec, dicts = decode_costs(target, dataset, profile)
            dec_coco = dec + dicts
            target.close()
            per_image_infer = 1.0 / stats.fps
            n = len(dataset.images)
            floor = max(pure, (pure * inference_cores + n * (preprocess_cpu[profile.name] + dec_coco)) / cores) + eval_s
            ratio_pipe.append((piped.wall_seconds + eval_s) / pure)
            ratio_reused.append((reused.wall_seconds + eval_s) / pure)
            ratio_serial.append((serial.wall_seconds + eval_s) / pure)
            ratio_floor.append(floor / pure)
            dec_ratio.append(dec / per_image_infer)
            dec_coco_ratio.append(dec_coco / per_image_infer)
            secs = {k: round(v, 2) for k, v in piped.clock.seconds.items()}
            out(f"   {label} round {r + 1}: pure {pure:.2f}s ({stats.fps:.1f} fps) | pipelined pass {piped.wall_seconds:.2f}s "
                f"+ evaluate {eval_s:.2f}s ({evaluator.backend}) | serial pass {serial.wall_seconds:.2f}s | "
                f"pass reusing resized images {reused.wall_seconds:.2f}s | "
                f"floor {floor:.2f}s | mAP {metrics['map']:.4f} | pipelined stage sums {secs}")
            out(f"   {label} round {r + 1}: decode+NMS {dec * 1e3:.3f} ms/img, +COCO dicts {dec_coco * 1e3:.3f} ms/img, "
                f"inference {per_image_infer * 1e3:.3f} ms/img")
        out(f"   {label}: (pipelined pass + evaluate) / pure inference: {med(ratio_pipe)}")
        out(f"   {label}: (serial pass + evaluate) / pure inference:    {med(ratio_serial)}")
        out(f"   {label}: (later row's pass + evaluate) / pure inference: {med(ratio_reused)}  (resized images reused)")
        out(f"   {label}: floor / pure inference:                       {med(ratio_floor)}")
        out(f"   {label}: decode+NMS / inference per image:             {med(dec_ratio)}")
        out(f"   {label}: decode+NMS+COCO dicts / inference per image:  {med(dec_coco_ratio)}")
    out()


def section_eval(args, dataset, detections, counted):
    from harness.measure.evaluate import METRIC_NAMES, CocoEvaluator, available_backends

    out("## 5. COCO evaluation: faster-coco-eval vs pycocotools (nanodet-m-320 detections)")
    if set(available_backends()) < {"faster-coco-eval", "pycocotools"}:
        out(f"   skipped: backends installed {available_backends()}")
        return
    times = {"faster-coco-eval": [], "pycocotools": []}
    res = {}
    for _ in range(args.rounds):
        for backend in times:
            ev = CocoEvaluator(dataset.ann, backend)
            t0 = time.perf_counter()
            res[backend] = ev.evaluate(detections, counted)
            times[backend].append(time.perf_counter() - t0)
    diff = max(abs(res["faster-coco-eval"][k] - res["pycocotools"][k]) for k in METRIC_NAMES)
    out(f"   {len(detections)} detections: max |metric difference| {diff:.2e}; mAP {res['pycocotools']['map']:.4f}")
    out(f"   evaluate seconds: faster-coco-eval {med(times['faster-coco-eval'])}, pycocotools {med(times['pycocotools'])}")
    out()


def section_preprocess(args, images_dir, ann_path, times=8):
    out(f"## 6. `harness preprocess --format bin`: 1 vs 2 workers, identical bytes, peak RSS N vs {times}N images")
    out(f"   whole command (startup included) on {times}N images, and per image: (T({times}N) - T(N)) / ({times - 1}N),"
        " which cancels the fixed startup cost (imports, loading compiled kernels)")
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        tmp = Path(tmp)
        big_dir, big_ann = _repeat_dataset(images_dir, ann_path, tmp / "data-big", times)
        n = len(json.loads(Path(ann_path).read_text())["images"])
        whole, marginal, rss = [], [], {}
        for r in range(args.rounds):
            runs = {}
            for workers in (1, 2):
                small = _run_preprocess(images_dir, ann_path, tmp / f"small-{r}-{workers}", workers)
                big = _run_preprocess(big_dir, big_ann, tmp / f"out-{r}-{workers}", workers)
                runs[workers] = (big[0], (big[0] - small[0]) / ((times - 1) * n))
                rss[workers] = (small[1], big[1])
            whole.append(runs[1][0] / runs[2][0])
            marginal.append(runs[1][1] / runs[2][1])
            same = _digest(tmp / f"out-{r}-1") == _digest(tmp / f"out-{r}-2")
            out(f"   round {r + 1}: {times * n} images, 1 worker {runs[1][0]:.2f}s ({runs[1][1] * 1e3:.2f} ms/image), "
                f"2 workers {runs[2][0]:.2f}s ({runs[2][1] * 1e3:.2f} ms/image), files byte-identical: {same}")
        out(f"   speed-up 2 vs 1 worker, whole command: {med(whole)}")
        out(f"   speed-up 2 vs 1 worker, per image:     {med(marginal)}")
        small_rss, big_rss = rss[2]
        out(f"   peak RSS (2 workers): N={n} images {small_rss / 1024:.0f} MiB, {times}N={times * n} images "
            f"{big_rss / 1024:.0f} MiB (ratio {big_rss / small_rss:.2f})")
    out()


def _run_preprocess(images_dir, ann_path, dest, workers):
    code = ("import resource, sys, time\nfrom harness.cli import main\nt0 = time.perf_counter()\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\nfinally:\n"
            "    print('BENCH', time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    cmd = [sys.executable, "-c", code, "preprocess", "--profile", "nanodet-m-320", "--data", str(images_dir),
           "--ann", str(ann_path), "--format", "bin", "--out", str(dest), "--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    match = re.search(r"BENCH ([\d.]+) (\d+)", proc.stdout)
    if proc.returncode or not match:
        raise RuntimeError(f"harness preprocess failed: {(proc.stdout + proc.stderr)[-800:]}")
    return float(match.group(1)), int(match.group(2))


def _repeat_dataset(images_dir, ann_path, dest, times):
    """A k-times larger COCO dataset made of symlinks to the same images under new names and ids."""
    ann = json.loads(Path(ann_path).read_text())
    (dest / "images").mkdir(parents=True)
    images, anns = [], []
    for k in range(times):
        for img in ann["images"]:
            name = f"r{k}_{img['file_name']}"
            (dest / "images" / name).symlink_to(Path(images_dir).resolve() / img["file_name"])
            images.append({**img, "id": img["id"] + k * 10_000_000, "file_name": name})
        for a in ann["annotations"]:
            anns.append({**a, "id": a["id"] + k * 10_000_000, "image_id": a["image_id"] + k * 10_000_000})
    new_ann = dest / "instances.json"
    new_ann.write_text(json.dumps({**ann, "images": images, "annotations": anns}))
    return dest / "images", new_ann


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "prep.json"}


# ------------------------------------------------------------------ main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ir", type=Path, default=IR)
    parser.add_argument("--ir-profile", default=IR_PROFILE)
    parser.add_argument("--onnx", type=Path, default=SHARED / "models/nanodet-m-320.onnx")
    parser.add_argument("--onnx-profile", default="nanodet-m-320")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--ann", type=Path, default=ANN)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each pure-inference run")
    parser.add_argument("--only", default="1,2,3,4,5,6", help="sections to run (3 and 4 run together)")
    args = parser.parse_args(argv)
    only = {int(s) for s in args.only.split(",") if s}

    from harness.data.coco import load_dataset
    from harness.profiles import load_profile
    from harness.targets.cpu_isa import guard_amx

    note = guard_amx()  # sets ONEDNN_MAX_CPU_ISA where AMX faults; benchmark_app inherits it
    import onnxruntime
    import openvino

    out(f"# run_bench.py  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
        f"openvino {openvino.__version__}, onnxruntime {onnxruntime.__version__})")
    out(f"# {note or 'no AMX guard needed'}; rounds {args.rounds}, ratios print median (min, max)")
    out()
    ir_profile, onnx_profile = load_profile(args.ir_profile), load_profile(args.onnx_profile)
    dataset = load_dataset(args.data, args.ann)
    if only & {1}:
        section_ov(args, [(args.ir.parent.name if args.ir.name == "model.xml" else args.ir.name, args.ir, ir_profile),
                          (args.onnx.name, args.onnx, onnx_profile)])
    if only & {2}:
        section_ort(args, args.onnx, onnx_profile)
    if only & {3, 4}:
        one_thread = {"threads": 1}  # inference on one core, the other left free (as an accelerator would)
        section_pass(args, [(f"ov {args.ir_profile}", "ov", args.ir, ir_profile, {}),
                            (f"ov {args.onnx.name}", "ov", args.onnx, onnx_profile, {}),
                            (f"ort {args.onnx.name}", "ort", args.onnx, onnx_profile, {}),
                            (f"ov {args.ir_profile} threads=1", "ov", args.ir, ir_profile, one_thread),
                            # latency mode: ort's throughput mode would run one request per core
                            (f"ort {args.onnx.name} threads=1", "ort", args.onnx, onnx_profile,
                             {**one_thread, "mode": "latency"})], dataset)
    if only & {5}:
        from harness.measure.pipeline import accuracy_pass
        from harness.targets import get_target

        target = get_target("ort")(args.onnx, onnx_profile, {})
        target.load(1)
        passed = accuracy_pass(target, dataset.images, 1, onnx_profile)
        target.close()
        section_eval(args, dataset, passed.detections, passed.counted)
    if only & {6}:
        section_preprocess(args, args.data, args.ann)
    out(f"# done, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
