"""Linux /proc and /sys, read for the machine state of a row: pure parsers over each file's text,
and thin readers that return None (with a reason) where the kernel does not show the file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SYS_CPU = Path("/sys/devices/system/cpu")
POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in clock ticks (USER_HZ), all CPUs together."""

    busy: int  # user + nice + system + irq + softirq (guest time is already inside user/nice)
    idle: int  # idle + iowait
    steal: int  # time the hypervisor ran something else on this VM's CPUs
    cpus: int  # cpuN lines: the CPUs the kernel counts

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_proc_stat(text: str) -> CpuTimes:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal [guest guest_nice]."""
    lines = text.splitlines()
    head = lines[0].split()
    if head[0] != "cpu":
        raise ValueError("/proc/stat does not start with the aggregate cpu line")
    v = [int(x) for x in head[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    cpus = sum(1 for line in lines[1:] if re.match(r"cpu\d+ ", line))
    return CpuTimes(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal, cpus=max(cpus, 1))


def parse_loadavg(text: str) -> tuple[float, float, float]:
    one, five, fifteen = text.split()[:3]
    return float(one), float(five), float(fifteen)


def parse_status_kib(text: str, key: str) -> int | None:
    """A `Key:   1234 kB` field of /proc/<pid>/status, in KiB."""
    match = re.search(rf"^{re.escape(key)}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def parse_cpuinfo_mhz(text: str) -> list[float]:
    """Every `cpu MHz` of /proc/cpuinfo (x86: the kernel's estimate of each CPU's current clock)."""
    return [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)]


def parse_pid_cpu_ticks(text: str) -> int:
    """utime + stime of a /proc/<pid>/stat line (fields 14 and 15; the command may hold spaces)."""
    rest = text.rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_times() -> CpuTimes | None:
    text = _read(PROC / "stat")
    return parse_proc_stat(text) if text else None


def loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def status_kib(key: str) -> int | None:
    text = _read(PROC / "self" / "status")
    return parse_status_kib(text, key) if text else None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs); False
    where the kernel refuses it, so the caller samples VmRSS instead."""
    try:
        (PROC / "self" / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_freq_files() -> list[Path]:
    return sorted(SYS_CPU.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))


def cpu_mhz_now(files: list[Path]) -> list[float]:
    """scaling_cur_freq of every CPU, in MHz (the files hold kHz); unreadable ones are left out."""
    out = []
    for path in files:
        text = _read(path)
        if text and text.strip().isdigit():
            out.append(int(text) / 1000.0)
    return out


def cpuinfo_mhz_now() -> list[float]:
    text = _read(PROC / "cpuinfo")
    return parse_cpuinfo_mhz(text) if text else []


def hypervisor() -> bool:
    """Does the CPU say it runs under a hypervisor (the `hypervisor` flag of /proc/cpuinfo)?"""
    text = _read(PROC / "cpuinfo") or ""
    return bool(re.search(r"^flags\s*:.*\bhypervisor\b", text, re.MULTILINE))


def governors() -> list[str]:
    """The cpufreq governor of each CPU that shows one (distinct, sorted)."""
    found = {(_read(p) or "").strip() for p in SYS_CPU.glob("cpu[0-9]*/cpufreq/scaling_governor")}
    return sorted(g for g in found if g)


def throttle_counts() -> dict[str, int] | None:
    """Thermal throttle events so far (x86 `thermal_throttle` of each CPU), summed over CPUs:
    {core_throttle_count, package_throttle_count}; None where the kernel shows none."""
    totals: dict[str, int] = {}
    for path in SYS_CPU.glob("cpu[0-9]*/thermal_throttle/*_throttle_count"):
        text = _read(path)
        if text and text.strip().isdigit():
            totals[path.name] = totals.get(path.name, 0) + int(text)
    return totals or None


def pid_cpu_ticks(pid: int) -> int | None:
    text = _read(PROC / str(pid) / "stat")
    return parse_pid_cpu_ticks(text) if text else None


@dataclass(frozen=True)
class RaplDomain:
    name: str  # package-0, ...
    energy_file: Path
    max_range_uj: int


def rapl_packages() -> tuple[list[RaplDomain], str | None]:
    """The RAPL package domains (intel-rapl:N, top level; AMD exposes them under the same name),
    or ([], why not)."""
    if not POWERCAP.is_dir():
        return [], "no /sys/class/powercap (the kernel shows no RAPL counters here, e.g. in a VM)"
    domains, why = [], None
    for zone in sorted(POWERCAP.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:  # intel-rapl:0:0 (core, uncore, dram) are parts of a package
            continue
        name = (_read(zone / "name") or zone.name).strip()
        try:
            (zone / "energy_uj").read_text()
            max_range = int((zone / "max_energy_range_uj").read_text())
        except PermissionError:
            why = f"{zone / 'energy_uj'} is not readable by this user (root only since Linux 5.10)"
            continue
        except (OSError, ValueError) as exc:
            why = f"{zone / 'energy_uj'}: {exc}"
            continue
        domains.append(RaplDomain(name, zone / "energy_uj", max_range))
    if not domains and why is None:
        why = "no intel-rapl package domain under /sys/class/powercap"
    return domains, (None if domains else why)


def rapl_read(domains: list[RaplDomain]) -> list[int] | None:
    values = []
    for domain in domains:
        text = _read(domain.energy_file)
        if not text or not text.strip().isdigit():
            return None
        values.append(int(text))
    return values
