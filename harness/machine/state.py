"""The row's `machine_state` group and the pure summaries over the numbers harness.machine.watch
samples. Nothing here reads a clock or a file: every function takes the sampled numbers.

A field the machine does not show is None with its `*_na` reason beside it ("n/a" in tables);
nothing is estimated.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, fields

#: other processes (and the hypervisor's steal) above this share of all CPUs' time, during a row's
#: timing loop or accuracy pass, mark the row `busy-machine`
BUSY_SHARE = 0.10
#: shorter windows are recorded but not judged: /proc/stat counts in clock ticks (10 ms), so a window of
#: a few ticks per CPU cannot tell 10% apart from rounding
BUSY_MIN_SECONDS = 0.5
MIB = 1024 * 1024


@dataclass
class Window:
    """One timed part of a row (the timing loop behind fps/latency, or the accuracy pass behind
    e2e_fps): what this process and everything else did on the CPUs meanwhile."""

    seconds: float = 0.0
    self_cpu_share: float | None = None  # this process's CPU time / all CPUs' time in the window
    other_cpu_share: float | None = None  # other processes' CPU time / all CPUs' time
    steal_share: float | None = None  # the hypervisor's steal / all CPUs' time (a VM's neighbours)
    load_before: list | None = None  # 1, 5, 15 min load average
    load_after: list | None = None
    cpu_mhz: dict | None = None  # {min, median, max, samples} over the window's samples
    energy_j: float | None = None
    watts: float | None = None  # energy_j / seconds
    gpu: dict | None = None  # NVML over the window (harness.machine.nvml.summarise)

    @classmethod
    def from_dict(cls, data) -> Window | None:
        return _from_dict(cls, data)


@dataclass
class MachineState:
    busy: bool | None = None  # other_cpu_share + steal_share above busy_share in a window
    busy_share: float = BUSY_SHARE
    timing: Window | None = None
    accuracy: Window | None = None
    cpu_mhz_source: str = ""  # "scaling_cur_freq", or "/proc/cpuinfo (...)"
    cpu_mhz_na: str = ""
    governor: str | None = None
    throttle: dict | None = None  # thermal throttle counter increases over the row
    throttle_na: str = ""
    rss_peak_mib: float | None = None
    rss_source: str = ""
    image_cache_mib: float | None = None  # resized images held for later rows (part of the RSS)
    image_cache_share: float | None = None  # image_cache_mib / rss_peak_mib
    model_file_mib: float | None = None
    gpu_memory_mib: float | None = None  # NVML: the GPU's memory in use at its peak over the row
    energy_source: str = ""
    energy_na: str = ""
    joules_per_image: float | None = None  # timing loop: mean power / img/s
    fps_per_watt: float | None = None  # timing loop: img/s / mean power
    npu: dict | None = None  # `npu-smi info`, parsed (harness.machine.npusmi)
    npu_na: str = ""

    @classmethod
    def from_dict(cls, data) -> MachineState | None:
        state = _from_dict(cls, data)
        if state is not None:
            state.timing = Window.from_dict(state.timing)
            state.accuracy = Window.from_dict(state.accuracy)
        return state

    def to_dict(self) -> dict:
        return asdict(self)


def _from_dict(cls, data):
    if data is None or isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        return None
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def cpu_shares(busy_ticks: int, steal_ticks: int, total_ticks: int, self_seconds: float, ticks_per_s: float,
               ) -> tuple[float, float, float] | None:
    """(self, others, steal) as shares of all CPUs' time over a window, from the machine's busy,
    steal and total tick increases (/proc/stat) and this process's CPU seconds (its user + system
    time, every thread). Others = the machine's busy time not spent by this process."""
    if total_ticks <= 0:
        return None
    capacity = total_ticks / ticks_per_s
    machine_busy = busy_ticks / ticks_per_s
    others = max(0.0, machine_busy - self_seconds)
    return (min(1.0, self_seconds / capacity), min(1.0, others / capacity), steal_ticks / total_ticks)


def spread(values) -> dict | None:
    """{min, median, max, samples} of sampled values (None without any)."""
    values = [float(v) for v in values]
    if not values:
        return None
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1),
            "max": round(max(values), 1), "samples": len(values)}


def counter_delta(before: int, after: int, max_range: int) -> int:
    """Increase of an energy counter that wraps to 0 after max_range (RAPL's energy_uj)."""
    return after - before if after >= before else max_range - before + after


def energy_figures(energy_j: float | None, seconds: float, fps: float | None) -> tuple[float | None, float | None,
                                                                                     float | None]:
    """(mean watts, joules per image, img/s per watt) of a timing loop from its measured energy."""
    if energy_j is None or seconds <= 0 or energy_j <= 0:
        return None, None, None
    watts = energy_j / seconds
    if not fps:
        return watts, None, None
    return watts, watts / fps, fps / watts


def busy_windows(windows: dict[str, Window | None], threshold: float = BUSY_SHARE) -> dict[str, float]:
    """{window name: others + steal share} for the windows (of BUSY_MIN_SECONDS or more) where that
    share exceeded threshold."""
    out = {}
    for name, window in windows.items():
        if window is None or window.other_cpu_share is None or window.seconds < BUSY_MIN_SECONDS:
            continue
        taken = window.other_cpu_share + (window.steal_share or 0.0)
        if taken > threshold:
            out[name] = taken
    return out


WINDOW_WORDS = {"timing": "timing loop (img/s, latency)", "accuracy": "accuracy pass (e2e img/s)"}


def busy_note(busy: dict[str, float], threshold: float = BUSY_SHARE) -> str:
    parts = ", ".join(f"{share:.0%} of the CPU during the {WINDOW_WORDS.get(name, name)}" for name, share in busy.items())
    return (f"busy machine: other processes took {parts} (more than {threshold:.0%}); its figures are lower and "
            "noisier than on a quiet machine")


def e2e_above_infer_note(fps: float | None, e2e_fps: float | None, timing: Window | None,
                         accuracy: Window | None) -> str | None:
    """Why e2e img/s can exceed infer img/s: they are two measurements at two times. Says which
    window had more of the CPU taken by others where that is known."""
    if not fps or not e2e_fps or e2e_fps <= fps:
        return None
    text = (f"e2e img/s {e2e_fps:.1f} is above infer img/s {fps:.1f}: the two are separate measurements (infer: the "
            "timing loop on one batch; e2e: the accuracy pass over every image, later)")
    if timing and accuracy and timing.other_cpu_share is not None and accuracy.other_cpu_share is not None:
        text += (f"; other processes took {timing.other_cpu_share:.0%} of the CPU during the timing loop and "
                 f"{accuracy.other_cpu_share:.0%} during the accuracy pass")
    return text


def share_of(part_bytes: int | None, whole_mib: float | None) -> float | None:
    if part_bytes is None or not whole_mib:
        return None
    return round(part_bytes / MIB / whole_mib, 4)


def mib(nbytes: int | float | None) -> float | None:
    return None if nbytes is None else round(nbytes / MIB, 2)


#: the flat columns of a row's machine state in tables and CSV/JSON exports (harness.report)
NUMERIC_COLUMNS = ("other_cpu_share", "e2e_other_cpu_share", "steal_share", "load_before", "load_after",
                   "cpu_mhz_min", "cpu_mhz_median", "cpu_mhz_max", "rss_peak_mib", "image_cache_mib",
                   "image_cache_share", "model_file_mib", "gpu_memory_mib", "gpu_sm_mhz_median", "gpu_temp_c_max",
                   "energy_j", "watts", "joules_per_image", "fps_per_watt")
TEXT_COLUMNS = ("governor", "throttle", "gpu_throttle_reasons", "energy_na", "cpu_mhz_na")
COLUMNS = ("busy", *NUMERIC_COLUMNS, *TEXT_COLUMNS)


def flat_fields(state: MachineState | dict | None) -> dict:
    """A row's machine state as flat columns (COLUMNS): the timing loop's window, e2e's other share,
    memory, energy; None / '' where the row has none."""
    state = MachineState.from_dict(state) if not isinstance(state, MachineState) else state
    out: dict = {k: None for k in (*NUMERIC_COLUMNS, "busy")} | {k: "" for k in TEXT_COLUMNS}
    if state is None:
        return out
    timing, accuracy = state.timing, state.accuracy
    gpu = (timing.gpu if timing else None) or {}
    out.update({
        "busy": state.busy,
        "other_cpu_share": timing.other_cpu_share if timing else None,
        "e2e_other_cpu_share": accuracy.other_cpu_share if accuracy else None,
        "steal_share": timing.steal_share if timing else None,
        "load_before": (timing.load_before or [None])[0] if timing else None,
        "load_after": (timing.load_after or [None])[0] if timing else None,
        **{f"cpu_mhz_{k}": ((timing.cpu_mhz or {}).get(k) if timing else None) for k in ("min", "median", "max")},
        "rss_peak_mib": state.rss_peak_mib, "image_cache_mib": state.image_cache_mib,
        "image_cache_share": state.image_cache_share, "model_file_mib": state.model_file_mib,
        "gpu_memory_mib": state.gpu_memory_mib,
        "gpu_sm_mhz_median": (gpu.get("sm_mhz") or {}).get("median"), "gpu_temp_c_max": gpu.get("temp_c_max"),
        "energy_j": timing.energy_j if timing else None, "watts": timing.watts if timing else None,
        "joules_per_image": state.joules_per_image, "fps_per_watt": state.fps_per_watt,
        "governor": state.governor or "",
        "throttle": " ".join(f"{k}+{v}" for k, v in sorted((state.throttle or {}).items()) if v) or "",
        "gpu_throttle_reasons": " ".join(gpu.get("throttle_reasons") or []),
        "energy_na": state.energy_na, "cpu_mhz_na": state.cpu_mhz_na,
    })
    return out
