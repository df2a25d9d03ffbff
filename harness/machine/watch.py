"""The machine state of one row, watched while it runs.

`RowWatch` starts with the row (before the model loads): it resets this process's peak RSS and
starts a light sampler thread (CPU clocks, RSS, the GPU through NVML, every `interval` seconds).
`with watch.window("timing"):` brackets a timed part: CPU time of this process and of the whole
machine, load average, energy counters and throttle counters are read at both ends. `finish()`
turns it all into the row's MachineState (harness.machine.state), whose summaries are pure.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from harness.machine import procfs
from harness.machine.state import (
    BUSY_MIN_SECONDS,
    BUSY_SHARE,
    MachineState,
    Window,
    busy_windows,
    counter_delta,
    cpu_shares,
    mib,
    spread,
)

INTERVAL = 0.25  # seconds between samples: a few reads of /proc and /sys, well under 1% of one core


@dataclass
class _Mark:
    """Counters read at one end of a window."""

    t: float
    self_cpu: float
    cpu: procfs.CpuTimes | None
    load: tuple | None
    rapl: list[int] | None
    gpu_energy_mj: int | None


class RowWatch:
    """Watches one row: windows for its timed parts, memory and clocks over the whole row.

    energy: "cpu" reads RAPL, "gpu" NVML's energy counter of GPU `gpu_index` (also its clocks and
    memory), None reads neither (the row's figures come from elsewhere)."""

    def __init__(self, energy: str | None = "cpu", gpu_index: int | str | None = None, interval: float = INTERVAL,
                 gpu_module=None):
        self.energy = energy
        self.interval = interval
        self.windows: dict[str, Window] = {}
        self._samples: list[tuple[float, list[float], int | None, dict | None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._freq_files = procfs.cpu_freq_files()
        self._ticks = procfs.clock_ticks()
        self.gpu, self.gpu_na = (None, "not a GPU row")
        if energy == "gpu":
            from harness.machine.nvml import open_gpu, visible_gpu

            self.gpu, self.gpu_na = open_gpu(visible_gpu(os.environ) if gpu_index is None else gpu_index, gpu_module)
        self.rapl, self.rapl_na = ([], "not a CPU row")
        if energy == "cpu":
            self.rapl, self.rapl_na = procfs.rapl_packages()
        self._peak_reset = False
        self._throttle_start = None
        self._closed = False

    # - lifecycle ----------------------------------------------------------------------------------

    def start(self) -> RowWatch:
        self._peak_reset = procfs.reset_peak_rss()
        self._throttle_start = procfs.throttle_counts()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="machine-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.gpu is not None and not self._closed:
            self.gpu.close()
            self._closed = True

    def __enter__(self) -> RowWatch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        if self._closed:
            return
        mhz = procfs.cpu_mhz_now(self._freq_files) if self._freq_files else procfs.cpuinfo_mhz_now()
        gpu = self.gpu.sample() if self.gpu is not None else None
        with self._lock:
            self._samples.append((time.perf_counter(), mhz, procfs.status_kib("VmRSS"), gpu))

    # - windows ------------------------------------------------------------------------------------

    def _mark(self) -> _Mark:
        usage = resource.getrusage(resource.RUSAGE_SELF)  # microseconds (os.times counts clock ticks)
        return _Mark(time.perf_counter(), usage.ru_utime + usage.ru_stime, procfs.cpu_times(), procfs.loadavg(),
                     procfs.rapl_read(self.rapl) if self.rapl else None,
                     self.gpu.energy_mj() if self.gpu is not None else None)

    @contextmanager
    def window(self, name: str):
        """Bracket a timed part of the row; its Window lands in self.windows[name]."""
        self._sample()
        before = self._mark()
        try:
            yield
        finally:
            after = self._mark()
            self._sample()
            self.windows[name] = self._window(before, after)

    def _window(self, before: _Mark, after: _Mark) -> Window:
        seconds = after.t - before.t
        window = Window(seconds=round(seconds, 3),
                        load_before=None if before.load is None else [round(x, 2) for x in before.load],
                        load_after=None if after.load is None else [round(x, 2) for x in after.load])
        if before.cpu and after.cpu:
            shares = cpu_shares(after.cpu.busy - before.cpu.busy, after.cpu.steal - before.cpu.steal,
                                after.cpu.total - before.cpu.total, after.self_cpu - before.self_cpu, self._ticks)
            if shares:
                window.self_cpu_share, window.other_cpu_share, window.steal_share = (round(s, 4) for s in shares)
        with self._lock:
            inside = [s for s in self._samples if before.t <= s[0] <= after.t]
        window.cpu_mhz = spread(v for s in inside for v in s[1])
        if before.rapl is not None and after.rapl is not None:
            uj = sum(counter_delta(b, a, d.max_range_uj) for b, a, d in zip(before.rapl, after.rapl, self.rapl))
            window.energy_j = round(uj / 1e6, 3)
        elif before.gpu_energy_mj is not None and after.gpu_energy_mj is not None:
            window.energy_j = round((after.gpu_energy_mj - before.gpu_energy_mj) / 1e3, 3)
        if window.energy_j is not None and seconds > 0:
            window.watts = round(window.energy_j / seconds, 2)
        if self.gpu is not None:
            from harness.machine.nvml import summarise

            window.gpu = summarise([s[3] for s in inside if s[3]], self.gpu.nvml)
        return window

    # - the row's state ----------------------------------------------------------------------------

    def finish(self, model_bytes: int | None = None, cache_bytes: int | None = None) -> MachineState:
        """The row's MachineState (call after the row's last window; stops the sampler)."""
        if self._thread is not None:
            self._sample()
        self.stop()
        state = MachineState(busy_share=BUSY_SHARE, timing=self.windows.get("timing"),
                             accuracy=self.windows.get("accuracy"))
        busy = busy_windows(self.windows)
        judged = [w for w in self.windows.values() if w.other_cpu_share is not None and w.seconds >= BUSY_MIN_SECONDS]
        state.busy = bool(busy) if judged else None
        if self._freq_files:
            state.cpu_mhz_source = "scaling_cur_freq"
        elif any(s[1] for s in self._samples):
            state.cpu_mhz_source = ("/proc/cpuinfo cpu MHz" + (" (under a hypervisor: the clock the VM is told, "
                                                                 "not measured)" if procfs.hypervisor() else ""))
        else:
            state.cpu_mhz_na = "the kernel shows no CPU clock (no cpufreq scaling_cur_freq, no cpu MHz in /proc/cpuinfo)"
        governors = procfs.governors()
        state.governor = ", ".join(governors) if governors else None
        end = procfs.throttle_counts()
        if self._throttle_start is not None and end is not None:
            state.throttle = {k: end[k] - self._throttle_start.get(k, 0) for k in end}
        else:
            state.throttle_na = "the kernel shows no thermal_throttle counters (x86 bare metal only)"
        hwm = procfs.status_kib("VmHWM") if self._peak_reset else None
        if hwm is not None:
            state.rss_peak_mib, state.rss_source = mib(hwm * 1024), "VmHWM (peak reset at the row's start)"
        else:
            sampled = [s[2] for s in self._samples if s[2] is not None]
            if sampled:
                state.rss_peak_mib = mib(max(sampled) * 1024)
                state.rss_source = f"VmRSS sampled every {self.interval:g} s (peak reset refused)"
        state.model_file_mib = mib(model_bytes)
        state.image_cache_mib = mib(cache_bytes)
        if cache_bytes is not None and state.rss_peak_mib:
            state.image_cache_share = round(cache_bytes / 1024 / 1024 / state.rss_peak_mib, 4)
        if self.energy == "cpu":
            state.energy_source, state.energy_na = ("RAPL " + "+".join(d.name for d in self.rapl), "") if self.rapl \
                else ("", self.rapl_na)
        elif self.energy == "gpu":
            state.energy_source, state.energy_na = ("NVML total energy (GPU " + str(self.gpu.index) + ")", "") \
                if self.gpu is not None else ("", self.gpu_na)
            memory = [s[3]["memory_mib"] for s in self._samples if s[3] and s[3].get("memory_mib") is not None]
            state.gpu_memory_mib = round(max(memory), 1) if memory else None
        if state.energy_source and state.timing is not None and state.timing.energy_j is None:
            state.energy_na = "the energy counter gave no reading over the timing loop"
        return state
