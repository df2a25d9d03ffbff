"""The `litert` target against LiteRT's own benchmark_model-style loop, side by side, as ratios (issue #28).

benchmark_model (the TFLite tool) sets the input once and calls Invoke() in a loop; its binary is not
in the wheel, so the plain loop here is that loop in Python: one Interpreter(num_threads=T),
allocate_tensors(), set_tensor() once, interpreter.invoke() back to back for --seconds. The harness
contender is LiteRtTarget.benchmark() as `harness run` calls it, with the same threads: each call is
set_tensor + invoke + get_tensor with the output dequantized, timed one by one (its overhead is what the
ratio shows). Throughput: N interpreters with one thread each, invoke() on N Python threads, against
the target's throughput mode (N interpreters on N threads, the same split).

Optionally (--ort-model) an fp32 ONNX model on the `ort` target at the same threads, to put the int8
figure beside an fp32 one. ../shared has no fp32 YOLO11n; the nearest fp32 640 model there is YOLOv5n
(another network: read that ratio as context, not as int8's speedup).

Each round times every contender once for the same seconds on the same input (the first coco-tiny image,
preprocessed by the harness and quantized with the model's own parameters), in an order that rotates
from round to round; the ratio harness / plain loop is taken within each round and the median and range
printed, of img/s and of images per CPU-second of this process (getrusage over the timed part: on a
shared machine img/s swings with the neighbours' load, the CPU cost per image much less). Only these
ratios mean something, not the absolute figures.

Usage (repo root, ../shared present):
  python bench/litert_loop.py                                 # 3 rounds, 5 s, the three shared TFLite models
  python bench/litert_loop.py --models yolo11n_int8_640 --ort-model yolov5n-640 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time

import numpy as np
from run_bench import ANN, DATA, SHARED, med, out  # bench/ is this script's folder

MODELS = {  # file stem under ../shared/models/tflite -> built-in profile
    "ssd_mobilenet_v1_quant_300": "ssd-mobilenet-v1-300-tflite",
    "yolo11n_int8_416": "yolo11n-416-tflite",
    "yolo11n_int8_640": "yolo11n-640-tflite",
}


def first_image(profile):
    from harness.images.preprocess import preprocess_image

    image = json.loads(ANN.read_text())["images"][0]
    x, _ = preprocess_image(DATA / image["file_name"], image["id"], profile.input)
    return x[None]


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plain_loop(model, feed: np.ndarray, seconds: float, interpreters: int, threads: int) -> tuple[float, float]:
    """benchmark_model's loop: set the input once, invoke() back to back; N interpreters on N threads."""
    from ai_edge_litert.interpreter import Interpreter

    pool = []
    for _ in range(interpreters):
        it = Interpreter(model_path=str(model), num_threads=threads)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], feed)
        it.invoke()  # warm-up
        pool.append(it)
    counts = [0] * interpreters
    barrier = threading.Barrier(interpreters + 1)
    stop = [0.0]

    def work(k):
        barrier.wait()
        it, n = pool[k], 0
        while time.perf_counter() < stop[0]:
            it.invoke()
            n += 1
        counts[k] = n

    workers = [threading.Thread(target=work, args=(k,)) for k in range(interpreters)]
    for w in workers:
        w.start()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    stop[0] = t0 + seconds
    barrier.wait()
    for w in workers:
        w.join()
    images = sum(counts) * feed.shape[0]
    return images / (time.perf_counter() - t0), images / (cpu_seconds() - cpu0)


def harness_fps(target_name, model, profile, x, seconds: float, options: dict) -> tuple[float, float]:
    """(img/s, images per CPU-second) of the target's benchmark() as `harness run` calls it."""
    from harness.targets import get_target
    from harness.targets.timing import LoopRule, warm_up

    with get_target(target_name)(model, profile, options) as target:
        target.load(1)
        warm_up(lambda: target.infer(x), 1.0)
        cpu0 = cpu_seconds()
        stats = target.benchmark(x, LoopRule(seconds, 10, seconds, 0.0001))
        return stats.fps, stats.images / (cpu_seconds() - cpu0)


def bench_model(stem: str, args, cores: int, requests: int, each: int) -> None:
    """Every contender on one model, args.rounds rounds, and the ratios."""
    from ai_edge_litert.interpreter import Interpreter

    from harness.profiles import load_profile
    from harness.targets.litert.tensors import quantize_input

    model = SHARED / "models" / "tflite" / f"{stem}.tflite"
    profile = load_profile(MODELS[stem])
    x = first_image(profile)

    detail = Interpreter(model_path=str(model)).get_input_details()[0]
    feed = quantize_input(x, detail) if x.dtype == np.float32 and detail["dtype"] != np.float32 else x
    contenders = {
        "plain latency": lambda: plain_loop(model, feed, args.seconds, 1, cores),
        "harness latency": lambda: harness_fps("litert", model, profile, x, args.seconds,
                                               {"mode": "latency", "num_threads": cores}),
        "plain throughput": lambda: plain_loop(model, feed, args.seconds, requests, each),
        "harness throughput": lambda: harness_fps("litert", model, profile, x, args.seconds, {"mode": "throughput"}),
    }
    ort_profile = load_profile(args.ort_model) if args.ort_model else None
    same_size = ort_profile is not None and ort_profile.input.width == profile.input.width
    if same_size:  # the fp32 model beside the int8 one at the same input size only
        onnx = SHARED / "models" / f"{args.ort_model}.onnx"
        ox = first_image(ort_profile)
        contenders["ort fp32 latency"] = lambda: harness_fps("ort", onnx, ort_profile, ox, args.seconds,
                                                             {"mode": "latency", "threads": cores})
        contenders["ort fp32 throughput"] = lambda: harness_fps("ort", onnx, ort_profile, ox, args.seconds,
                                                                {"mode": "throughput"})
    names = list(contenders)
    fps, per_cpu = {name: [] for name in names}, {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            rate, cpu_rate = contenders[name]()
            fps[name].append(rate)
            per_cpu[name].append(cpu_rate)
        out(f"  round {r + 1}: " + ", ".join(f"{n} {fps[n][-1]:.1f} ({per_cpu[n][-1]:.1f}/cpu-s)" for n in names)
            + f"  (load {os.getloadavg()[0]:.1f})")
    out(f"## {stem} ({profile.name}), batch 1: latency = 1 interpreter x {cores} threads, "
        f"throughput = {requests} interpreters x {each} thread(s)")
    pairs = [(f"harness {m}", f"plain {m}", f"harness / plain invoke loop, {m}") for m in ("latency", "throughput")]
    if same_size:
        pairs += [(f"harness {m}", f"ort fp32 {m}", f"litert int8 {stem} / ort fp32 {args.ort_model}, {m}")
                  for m in ("latency", "throughput")]
    for a, b, label in pairs:
        out(f"  {label}: img/s {med([x / y for x, y in zip(fps[a], fps[b])])}; "
            f"images per CPU-second {med([x / y for x, y in zip(per_cpu[a], per_cpu[b])])}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ort-model", default=None, help="an fp32 ONNX under ../shared/models (stem) with a built-in profile")
    args = parser.parse_args()

    from harness.targets.modes import split_cores, usable_cores

    cores = usable_cores()
    requests, each = split_cores(cores, None, None)
    out(f"# litert_loop.py  ({time.strftime('%Y-%m-%d %H:%M')}, {cores} usable cpus, load "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    out(f"# rounds {args.rounds}, {args.seconds:g} s per contender; ratios print median (min, max)")
    for stem in args.models.split(","):
        bench_model(stem, args, cores, requests, each)
    out(f"# done, load {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
