"""ONNX Runtime throughput mode (issue #19): the harness's `ort --mode throughput` against the best
hand-written ONNX Runtime loop, side by side, as ratios.

Each round times every contender once, for the same number of seconds on the same input, in an
order that rotates from round to round (so slow drift in machine load favours nobody); the harness's
figure is divided by the best hand-written loop *of that round*, and the median and range of those
ratios is printed with the load average beside each round.

Contenders (N = the usable cores; the harness resolves its own split, printed in the header):
  harness           OrtCpu with {"mode": "throughput"} and nothing else: its benchmark() as `harness run`
                    calls it (after the runner's one-thread warm-up), timed for exactly --seconds
  1s x N, intra 1   one session, N Python threads each calling run() back to back (ORT's thread-safe pattern)
  Ns x N, intra 1   N sessions, one thread each
  1s x N+1, intra 1 one session, one thread more than cores
  1s x N, intra N   one session, N threads, N intra-op threads each, spinning off (the pools share the cores)
  Ns x N, intra N   N sessions, one thread each, N intra-op threads each, spinning off
  1s x 1, default   one session, one thread, ONNX Runtime's default intra-op threads (latency mode)
Every hand-written loop warms up for 1 s on all its threads before its clock starts (the harness
warms up on one thread, as `harness run` does), and counts every call that finished, the last ones
included, over the wall time until its threads have joined.

Besides img/s, each contender's images per CPU-second of this process (getrusage over its timed part)
is printed. On a machine shared with other work, img/s rewards a contender for running more threads
than there are cores (it takes a larger share of the CPU from the neighbours); images per CPU-second
does not, and times the cores a contender keeps busy it estimates img/s on a quiet machine.

Usage (repo root, ../shared present):
  python bench/ort_throughput.py                       # 5 rounds, 10 s each, both models, batch 1
  python bench/ort_throughput.py --rounds 3 --seconds 5 --models nanodet-m-320
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np
from run_bench import SHARED, _sample, med, out  # bench/ is this script's folder

MODELS = {  # profile name -> model file under ../shared/models
    "nanodet-m-320": "nanodet-m-320.onnx",
    "nanodet-plus-m-416": "nanodet-plus-m-416.onnx",
}


def session(model: Path, intra: int | None, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if intra:
        opts.intra_op_num_threads = intra
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def hand_loop(sessions: list, threads: int, x: np.ndarray, seconds: float, warmup: float = 1.0) -> tuple[float, float]:
    """`threads` threads, thread k running sessions[k % len(sessions)].run() back to back: warm-up
    on all threads, then the clock starts for everyone at once; (images / wall time to the join,
    images per CPU-second)."""
    feeds = {sessions[0].get_inputs()[0].name: x}
    counts = [0] * threads
    clock = {}

    def start_clock():  # runs once, in the last thread to reach the barrier, before any is released
        clock["cpu"] = cpu_seconds()
        clock["t0"] = time.perf_counter()
        clock["stop"] = clock["t0"] + seconds

    barrier = threading.Barrier(threads, action=start_clock)
    warm_end = time.perf_counter() + warmup

    def work(k: int) -> None:
        sess = sessions[k % len(sessions)]
        while time.perf_counter() < warm_end:
            sess.run(None, feeds)
        barrier.wait()
        stop, n = clock["stop"], 0
        while time.perf_counter() < stop:
            sess.run(None, feeds)
            n += 1
        counts[k] = n

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    images = sum(counts) * x.shape[0]
    return images / (time.perf_counter() - clock["t0"]), images / (cpu_seconds() - clock["cpu"])


def harness_fps(target, x: np.ndarray, seconds: float) -> tuple[float, float]:
    from harness.targets.timing import LoopRule, warm_up

    warm_up(lambda: target.infer(x), 1.0)  # the runner's warm-up
    cpu = cpu_seconds()
    stats = target.benchmark(x, LoopRule.fixed(seconds))
    return stats.fps, stats.images / (cpu_seconds() - cpu)


def contenders(model: Path, profile, cores: int):
    """name -> fps function; sessions are built once, outside the rounds."""
    from harness.targets import get_target

    target = get_target("ort")(model, profile, {"mode": "throughput"})
    target.load(1)
    one = session(model, 1)
    many = [session(model, 1) for _ in range(cores)]
    wide = session(model, cores, spinning=False)
    wides = [wide] + [session(model, cores, spinning=False) for _ in range(cores - 1)]
    default = session(model, None)
    return target, {
        "harness": lambda x, s: harness_fps(target, x, s),
        f"1s x {cores}, intra 1": lambda x, s: hand_loop([one], cores, x, s),
        f"{cores}s x {cores}, intra 1": lambda x, s: hand_loop(many, cores, x, s),
        f"1s x {cores + 1}, intra 1": lambda x, s: hand_loop([one], cores + 1, x, s),
        f"1s x {cores}, intra {cores} no-spin": lambda x, s: hand_loop([wide], cores, x, s),
        f"{cores}s x {cores}, intra {cores} no-spin": lambda x, s: hand_loop(wides, cores, x, s),
        "1s x 1, default intra": lambda x, s: hand_loop([default], 1, x, s),
    }


def compare_model(name: str, args, cores: int) -> None:
    from harness.profiles import load_profile

    profile = load_profile(name)
    model = SHARED / "models" / MODELS[name]
    x = _sample(profile)
    target, runs = contenders(model, profile, cores)
    out(f"## {name} bs 1: harness `ort --mode throughput` ({target.run_mode.summary()}, intra-op "
        f"{target.describe()['intra_op_threads']}) vs hand-written ONNX Runtime loops, {args.seconds:g} s each")
    names = list(runs)
    fps: dict[str, list[float]] = {n: [] for n in names}
    per_cpu: dict[str, list[float]] = {n: [] for n in names}
    ratios, cpu_ratios, best_names = [], [], []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        load_before = os.getloadavg()[0]
        for n in order:
            speed, efficiency = runs[n](x, args.seconds)
            fps[n].append(speed)
            per_cpu[n].append(efficiency)
        hand = {n: fps[n][-1] for n in names if n != "harness"}
        best = max(hand, key=hand.get)
        ratios.append(fps["harness"][-1] / hand[best])
        cpu_ratios.append(per_cpu["harness"][-1] / max(per_cpu[n][-1] for n in hand))
        best_names.append(best)
        cells = " | ".join(f"{n} {fps[n][-1]:.1f} ({per_cpu[n][-1]:.1f})" for n in names)
        out(f"   round {r + 1} (load {load_before:.1f} -> {os.getloadavg()[0]:.1f}), img/s (img per CPU-s): {cells} | "
            f"harness/best ({best}) {ratios[-1]:.3f}")
    for n in names:
        out(f"   {n:28s} median {np.median(fps[n]):7.1f} img/s, {np.median(per_cpu[n]):6.1f} img per CPU-s")
    out(f"   {name}: harness / best hand-written loop of the round, img/s:          {med(ratios)}; best: "
        f"{', '.join(sorted(set(best_names)))}")
    out(f"   {name}: harness / best hand-written loop of the round, img per CPU-s: {med(cpu_ratios)}")
    target.close()
    out()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per contender per round")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    args = parser.parse_args(argv)

    import onnxruntime

    from harness.targets.modes import usable_cores

    cores = usable_cores()
    out(f"# ort_throughput.py  ({time.strftime('%Y-%m-%d %H:%M')}, {cores} usable cpus, load "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}, onnxruntime {onnxruntime.__version__})")
    out(f"# rounds {args.rounds}; ratios print median (min, max); input: benchmark_app's random fill, batch 1")
    out()
    for name in args.models.split(","):
        compare_model(name.strip(), args, cores)
    out(f"# done, load {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
