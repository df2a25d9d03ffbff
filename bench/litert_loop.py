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
printed. The machine may be shared: only these ratios mean something, not the absolute images/s.

Usage (repo root, ../shared present):
  python bench/litert_loop.py                                 # 3 rounds, 5 s, the three shared TFLite models
  python bench/litert_loop.py --models yolo11n_int8_640 --ort-model yolov5n-640 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
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
    from harness.preprocess import preprocess_image

    image = json.loads(ANN.read_text())["images"][0]
    x, _ = preprocess_image(DATA / image["file_name"], image["id"], profile.input)
    return x[None]


def plain_loop(model, feed: np.ndarray, seconds: float, interpreters: int, threads: int) -> float:
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
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    barrier.wait()
    for w in workers:
        w.join()
    return sum(counts) * feed.shape[0] / (time.perf_counter() - t0)


def harness_fps(target_name, model, profile, x, seconds: float, options: dict) -> tuple[float, str]:
    from harness.targets import get_target
    from harness.timing import LoopRule, warm_up

    with get_target(target_name)(model, profile, options) as target:
        target.load(1)
        warm_up(lambda: target.infer(x), 1.0)
        stats = target.benchmark(x, LoopRule(seconds, 10, seconds, 0.0001))
        return stats.fps, target.run_mode.summary()


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
                                               {"mode": "latency", "num_threads": cores})[0],
        "plain throughput": lambda: plain_loop(model, feed, args.seconds, requests, each),
        "harness throughput": lambda: harness_fps("litert", model, profile, x, args.seconds, {"mode": "throughput"})[0],
    }
    ort_profile = load_profile(args.ort_model) if args.ort_model else None
    same_size = ort_profile is not None and ort_profile.input.width == profile.input.width
    if same_size:  # the fp32 model beside the int8 one at the same input size only
        onnx = SHARED / "models" / f"{args.ort_model}.onnx"
        ox = first_image(ort_profile)
        contenders["ort fp32 latency"] = lambda: harness_fps("ort", onnx, ort_profile, ox, args.seconds,
                                                             {"mode": "latency", "threads": cores})[0]
        contenders["ort fp32 throughput"] = lambda: harness_fps("ort", onnx, ort_profile, ox, args.seconds,
                                                                {"mode": "throughput"})[0]
    names = list(contenders)
    fps = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fps[name].append(contenders[name]())
        out(f"  round {r + 1}: " + ", ".join(f"{n} {fps[n][-1]:.1f}" for n in names)
            + f"  (load {os.getloadavg()[0]:.1f})")
    out(f"## {stem} ({profile.name}), batch 1: latency = 1 interpreter x {cores} threads, "
        f"throughput = {requests} interpreters x {each} thread(s)")
    for mode in ("latency", "throughput"):
        ratios = [h / p for h, p in zip(fps[f"harness {mode}"], fps[f"plain {mode}"])]
        out(f"  harness / plain invoke loop, {mode}: {med(ratios)}")
    if same_size:
        for mode in ("latency", "throughput"):
            ratios = [h / o for h, o in zip(fps[f"harness {mode}"], fps[f"ort fp32 {mode}"])]
            out(f"  litert int8 {stem} / ort fp32 {args.ort_model}, {mode}: {med(ratios)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ort-model", default=None, help="an fp32 ONNX under ../shared/models (stem) with a built-in profile")
    args = parser.parse_args()

    from harness.modes import split_cores, usable_cores

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
