"""NVIDIA GPU state through NVML (nvidia-ml-py, the `gpu` extras): clocks, throttle reasons,
temperature, power, memory in use and the energy counter. pynvml is imported only when a GPU row
asks, so the base install never needs it. `module` is for tests (a fake built from pynvml's names)."""

from __future__ import annotations

import importlib

#: throttle (clock event) reason bits worth naming; the others (All, None) are masks
_REASON_PREFIXES = ("nvmlClocksEventReason", "nvmlClocksThrottleReason")
_NOT_REASONS = ("All", "None")


def reason_names(mask: int, module) -> list[str]:
    """The reasons set in a clock-event mask, by pynvml's own constant names (GpuIdle, SwPowerCap...)."""
    table: dict[int, str] = {}
    for prefix in _REASON_PREFIXES:
        for name in dir(module):
            short = name[len(prefix):]
            if name.startswith(prefix) and short not in _NOT_REASONS:
                value = getattr(module, name)
                if isinstance(value, int) and value and value & (value - 1) == 0:
                    table.setdefault(value, short)
    return [table[bit] for bit in sorted(table) if mask & bit]


def visible_gpu(environ: dict) -> int | str:
    """The GPU the CUDA targets use (their device 0) as NVML can find it: the first entry of
    CUDA_VISIBLE_DEVICES (an index, or a GPU-... UUID), else index 0. (CUDA orders unlisted GPUs
    fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by bus: with several GPUs and no list, set
    CUDA_VISIBLE_DEVICES to be sure which one is read.)"""
    first = (environ.get("CUDA_VISIBLE_DEVICES") or "").split(",")[0].strip()
    if first.isdigit():
        return int(first)
    return first if first.startswith(("GPU-", "MIG-")) else 0


class Gpu:
    """One GPU's NVML handle; every reading returns None where the driver does not support it."""

    def __init__(self, index: int | str = 0, module=None):
        self.nvml = module or importlib.import_module("pynvml")
        self.nvml.nvmlInit()
        self.handle = (self.nvml.nvmlDeviceGetHandleByUUID(index) if isinstance(index, str)
                       else self.nvml.nvmlDeviceGetHandleByIndex(index))
        self.index = index
        name = self.nvml.nvmlDeviceGetName(self.handle)
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def _try(self, fn, *args):
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def sample(self) -> dict:
        """One reading: sm/mem clock MHz, temperature C, power W, memory in use MiB, reason mask."""
        nv = self.nvml
        power = self._try(nv.nvmlDeviceGetPowerUsage)
        memory = self._try(nv.nvmlDeviceGetMemoryInfo)
        reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return {"sm_mhz": self._try(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
                "mem_mhz": self._try(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
                "temp_c": self._try(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
                "power_w": None if power is None else power / 1000.0,
                "memory_mib": None if memory is None else memory.used / (1024 * 1024),
                "reasons": self._try(reasons)}

    def energy_mj(self) -> int | None:
        """Total energy since the driver loaded, in mJ (Volta and later); None where unsupported."""
        return self._try(self.nvml.nvmlDeviceGetTotalEnergyConsumption)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def open_gpu(index: int | str = 0, module=None) -> tuple[Gpu | None, str]:
    """(Gpu, '') or (None, why not): nvidia-ml-py missing, no driver, no such GPU."""
    try:
        return Gpu(index, module), ""
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install 'harness[gpu]')"
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, _InvalidArgument...
        return None, f"NVML: {exc}"


def summarise(samples: list[dict], module) -> dict | None:
    """The GPU over a window: sm/mem clock spread, hottest temperature, median power, peak memory,
    and every throttle reason seen in any sample."""
    from harness.machine.state import spread

    if not samples:
        return None

    def values(key):
        return [s[key] for s in samples if s.get(key) is not None]

    mask = 0
    for s in samples:
        mask |= s.get("reasons") or 0
    temps, power, memory = values("temp_c"), values("power_w"), values("memory_mib")
    return {"sm_mhz": spread(values("sm_mhz")), "mem_mhz": spread(values("mem_mhz")),
            "temp_c_max": max(temps) if temps else None,
            "power_w_median": round(sorted(power)[len(power) // 2], 1) if power else None,
            "memory_mib_max": round(max(memory), 1) if memory else None,
            "throttle_reasons": reason_names(mask, module)}
