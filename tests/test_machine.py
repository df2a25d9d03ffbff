"""The machine state of a row: /proc parsers against hand-worked numbers, the pure summaries against
plain re-computations, npu-smi's table from published outputs, NVML through a fake built from
pynvml's own names, and the busy-machine flag on a real run with two CPU-bound processes beside it."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.machine import npusmi, procfs
from harness.machine.nvml import reason_names, summarise
from harness.machine.state import (
    BUSY_SHARE,
    MachineState,
    Window,
    busy_windows,
    counter_delta,
    cpu_shares,
    e2e_above_infer_note,
    energy_figures,
    spread,
)
from harness.machine.watch import RowWatch
from harness.measure.row import ResultRow

STAT = """cpu  5793 10 2171 331337 285 3 29 8 100 0
cpu0 708 0 541 168564 25 0 3 3 0 0
cpu1 5084 10 1629 162772 259 3 25 4 100 0
intr 12345 0 0
ctxt 999
"""


def test_proc_stat_counts_busy_idle_and_steal_ticks():
    times = procfs.parse_proc_stat(STAT)
    # busy = user + nice + system + irq + softirq (guest is inside user already, so not added again)
    assert times.busy == 5793 + 10 + 2171 + 3 + 29
    assert times.idle == 331337 + 285 and times.steal == 8 and times.cpus == 2
    assert times.total == times.busy + times.idle + times.steal


def test_status_cpuinfo_and_pid_stat_parsers():
    status = "Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\n"
    assert procfs.parse_status_kib(status, "VmHWM") == 123456 and procfs.parse_status_kib(status, "VmSwap") is None
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2596.150\n\nprocessor\t: 1\ncpu MHz\t\t: 3100.000\n"
    assert procfs.parse_cpuinfo_mhz(cpuinfo) == [2596.15, 3100.0]
    # a command name with spaces and parentheses: utime and stime are fields 14 and 15
    line = "4242 (my (odd) prog) R 1 4242 4242 0 -1 4194304 100 0 0 0 1500 250 0 0 20 0 3 0 100 1000 50"
    assert procfs.parse_pid_cpu_ticks(line) == 1750


def test_cpu_shares_split_the_machine_between_this_process_and_the_others():
    # 2 CPUs for 2 s at 100 ticks/s: 400 ticks of capacity; the machine was busy 300 of them, 1.2 s of which
    # were this process: the others took 1.8 s of 4 s
    self_share, other_share, steal = cpu_shares(300, 20, 400, 1.2, 100)
    assert (self_share, other_share, steal) == pytest.approx((0.3, 0.45, 0.05))
    assert cpu_shares(0, 0, 0, 0.0, 100) is None
    # this process's time is measured exactly, the ticks are rounded: never a negative share for the others
    assert cpu_shares(100, 0, 400, 1.05, 100)[1] == 0.0


def test_summaries_against_plain_recomputation():
    values = [2400.0, 3100.0, 2800.0, 2900.0]
    assert spread(values) == {"min": 2400.0, "median": statistics.median(values), "max": 3100.0, "samples": 4}
    assert spread([]) is None
    # RAPL wraps at max_energy_range_uj: the increase across the wrap is what was left to the top plus what came after
    assert counter_delta(100, 350, 1000) == 250 and counter_delta(900, 50, 1000) == 150
    watts, joules_per_image, per_watt = energy_figures(30.0, 2.0, 60.0)
    assert watts == 15.0 and joules_per_image == pytest.approx(0.25) and per_watt == pytest.approx(4.0)
    assert energy_figures(None, 2.0, 60.0) == (None, None, None)  # never estimated


def test_busy_windows_and_the_e2e_note_say_which_window():
    quiet, busy = (Window(seconds=3.0, other_cpu_share=0.02, steal_share=0.0),
                   Window(seconds=1.0, other_cpu_share=0.3, steal_share=0.05))
    assert busy_windows({"timing": quiet, "accuracy": busy}) == {"accuracy": pytest.approx(0.35)}
    assert busy_windows({"timing": Window(seconds=3.0, other_cpu_share=BUSY_SHARE)}) == {}  # "more than" the share
    # a window of a few clock ticks is not judged: its shares are mostly rounding
    assert busy_windows({"accuracy": Window(seconds=0.05, other_cpu_share=0.5)}) == {}
    note = e2e_above_infer_note(50.0, 80.0, busy, quiet)
    assert "above infer img/s" in note and "30% of the CPU during the timing loop and 2% during the accuracy" in note
    assert e2e_above_infer_note(80.0, 50.0, busy, quiet) is None


def test_machine_state_round_trips_through_the_row():
    state = MachineState(busy=True, timing=Window(seconds=3.0, other_cpu_share=0.4, cpu_mhz=spread([2000.0])),
                         rss_peak_mib=300.0, energy_na="no RAPL")
    row = ResultRow(target="ort", bs=1, machine_state=state)
    back = ResultRow.from_dict(json.loads(json.dumps(row.to_dict())))
    assert back.machine_state == state and isinstance(back.machine_state.timing, Window)
    assert ResultRow.from_dict({"target": "ort", "bs": 1}).machine_state is None  # rows written before it


# ----------------------------------------------------------------------------------------------- npu-smi

# published `npu-smi info` outputs (Ascend 910B4, npu-smi 26.0.rc1; Ascend 910, 25.3.rc1 with Phy-ID and a chip
# that shows no power reading), cut to the chip and process tables
NPU_SMI_910B4 = """\
+------------------------------------------------------------------------------------------------------------------+
| npu-smi 26.0.rc1                            Version: 26.0.rc1                                                    |
+---------------------------+---------------+----------------------------------------------------------------------+
| NPU   Name                | Health        | Power(W)             Temp(C)                 Hugepages-Usage(page)   |
| Chip                      | Bus-Id        | AICore(%)            Memory-Usage(MB)        HBM-Usage(MB)           |
+===========================+===============+======================================================================+
| 0     910B4               | OK            | 82.6                 32                      0    / 0                |
| 0                         | 0000:C1:00.0  | 0                    0    / 0                2871 / 32768            |
+===========================+===============+======================================================================+
+---------------------------+---------------+----------------------------------------------------------------------+
| NPU     Chip              | Process id    | Process name       | Process memory(MB)    | Process id in container |
+===========================+===============+======================================================================+
| No running processes found in NPU 0                                                                              |
+===========================+===============+======================================================================+
"""

NPU_SMI_910_PHY = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 25.3.rc1                 Version: 25.3.rc1                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     Ascend910           | OK            | 166.6       37                0    / 0             |
| 0     0                   | 0000:9D:00.0  | 0           0    / 0          3150 / 65536         |
+------------------------------------------------------------------------------------------------+
| 0     Ascend910           | OK            | -           36                0    / 0             |
| 1     1                   | 0000:9F:00.0  | 0           0    / 0          2886 / 65536         |
+===========================+===============+====================================================+
"""


def test_npu_smi_table_is_read_per_chip():
    (chip,) = npusmi.parse_info(NPU_SMI_910B4)
    assert chip == {"npu": 0, "name": "910B4", "health": "OK", "power_w": 82.6, "temp_c": 32,
                    "hugepages": {"used": 0, "total": 0}, "chip": 0, "bus_id": "0000:C1:00.0", "aicore_pct": 0,
                    "memory_mb": {"used": 0, "total": 0}, "hbm_mb": {"used": 2871, "total": 32768}}
    first, second = npusmi.parse_info(NPU_SMI_910_PHY)
    assert (first["power_w"], first["phy_id"], first["hbm_mb"]) == (166.6, 0, {"used": 3150, "total": 65536})
    assert (second["chip"], second["power_w"], second["temp_c"], second["bus_id"]) == (1, None, 36, "0000:9F:00.0")
    assert npusmi.parse_info("npu-smi: command not found") == []


# ----------------------------------------------------------------------------------------------- NVML

def fake_pynvml(energy_mj=(1_000_000, 1_012_500), reasons=0x1 | 0x20):
    """The pynvml calls harness.machine.nvml makes, by their real names, returning fixed readings."""
    class NVMLError(Exception):
        pass

    energy = iter(list(energy_mj) + [energy_mj[-1]] * 100)
    return SimpleNamespace(
        NVMLError=NVMLError, NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2, NVML_TEMPERATURE_GPU=0,
        nvmlClocksEventReasonGpuIdle=0x1, nvmlClocksEventReasonSwPowerCap=0x4,
        nvmlClocksEventReasonSwThermalSlowdown=0x20, nvmlClocksEventReasonAll=0x1FF, nvmlClocksEventReasonNone=0,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}", nvmlDeviceGetHandleByUUID=lambda u: u,
        nvmlDeviceGetName=lambda h: b"NVIDIA Fake 100",
        nvmlDeviceGetClockInfo=lambda h, kind: 1980 if kind == 1 else 2619,
        nvmlDeviceGetTemperature=lambda h, kind: 61, nvmlDeviceGetPowerUsage=lambda h: 250_500,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * 1024 ** 3, total=80 * 1024 ** 3),
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: reasons,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: next(energy))


def test_the_fake_uses_pynvml_names():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (the gpu and test extras)")
    fake = fake_pynvml()
    missing = [name for name in vars(fake) if not hasattr(pynvml, name)]
    assert not missing, f"not in pynvml: {missing}"
    # the real module's reason constants are the same bits
    assert reason_names(pynvml.nvmlClocksEventReasonSwThermalSlowdown | pynvml.nvmlClocksEventReasonGpuIdle,
                        pynvml) == ["GpuIdle", "SwThermalSlowdown"]


def test_gpu_row_reads_nvml_energy_clocks_and_memory():
    fake = fake_pynvml()
    with RowWatch(energy="gpu", gpu_module=fake, interval=0.05) as watch:
        with watch.window("timing"):
            time.sleep(0.12)
    state = watch.finish()
    timing = state.timing
    assert timing.energy_j == pytest.approx(12.5)  # (1_012_500 - 1_000_000) mJ
    assert timing.watts == pytest.approx(12.5 / timing.seconds, rel=0.01)
    assert timing.gpu["sm_mhz"]["median"] == 1980 and timing.gpu["temp_c_max"] == 61
    assert timing.gpu["power_w_median"] == 250.5 and timing.gpu["throttle_reasons"] == ["GpuIdle", "SwThermalSlowdown"]
    assert state.gpu_memory_mib == 3072.0 and state.energy_source == "NVML total energy (GPU 0)" and not state.energy_na
    assert summarise([], fake) is None
    from harness.machine.state import flat_fields
    from harness.report.markdown import machine_head, machine_line

    fields = flat_fields(state)
    assert machine_head([fields])[-1].startswith("GPU SM MHz")
    assert machine_line("trt fp16 bs 1", fields, gpu=True).endswith("| 1980 / 61 / GpuIdle SwThermalSlowdown |")


def test_the_gpu_read_is_the_one_cuda_targets_use():
    from harness.machine.nvml import visible_gpu

    assert visible_gpu({}) == 0 and visible_gpu({"CUDA_VISIBLE_DEVICES": "2,0"}) == 2
    assert visible_gpu({"CUDA_VISIBLE_DEVICES": "GPU-8f6c1a2b-0000"}) == "GPU-8f6c1a2b-0000"


def test_gpu_row_without_nvml_says_why():
    with RowWatch(energy="gpu", gpu_module=SimpleNamespace()) as watch:  # no nvmlInit: not a usable NVML
        with watch.window("timing"):
            pass
    state = watch.finish()
    assert state.timing.energy_j is None and state.energy_na.startswith("NVML:")


# ----------------------------------------------------------------------------------------------- real runs

def _run(tiny, out, seconds="1.5"):
    args = ["run", "--target", "ort", "--model", tiny["model"], "--profile", tiny["profile"], "--data", tiny["images"],
            "--ann", tiny["ann"], "--seconds", seconds, "--max-seconds", seconds, "--warmup", "0.1", "--out", out]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())["rows"][0]


def test_row_carries_real_machine_figures(tiny):
    row = _run(tiny, tiny["root"] / "state", seconds="0.3")
    state = row["machine_state"]
    assert state["rss_peak_mib"] > 0 and state["rss_source"]
    assert state["model_file_mib"] == pytest.approx(tiny["model"].stat().st_size / 2 ** 20, abs=0.01)
    timing = state["timing"]
    assert timing["seconds"] > 0 and timing["self_cpu_share"] > 0 and timing["load_before"] is not None
    if procfs.cpu_freq_files() or procfs.cpuinfo_mhz_now():  # where the kernel shows a clock
        assert timing["cpu_mhz"]["min"] > 0 and state["cpu_mhz_source"]
    else:
        assert timing["cpu_mhz"] is None and state["cpu_mhz_na"]
    report = (tiny["root"] / "state" / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("| ort fp32"))
    assert "Machine state per row" in report and f"| {state['rss_peak_mib']:.0f}" in line
    domains, why = procfs.rapl_packages()
    if domains:
        assert timing["energy_j"] > 0 and state["joules_per_image"] > 0
    else:  # never estimated: n/a with the reason
        assert timing["energy_j"] is None and state["energy_na"] == why and state["joules_per_image"] is None


def _other_share_while_idle(seconds: float = 0.5) -> float:
    with RowWatch(energy=None) as watch:
        with watch.window("idle"):
            time.sleep(seconds)
    return watch.windows["idle"].other_cpu_share + (watch.windows["idle"].steal_share or 0.0)


@pytest.mark.slow
def test_two_cpu_bound_processes_beside_a_run_flag_it_busy(tiny):
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.2)
        ticks0, t0 = [procfs.pid_cpu_ticks(p.pid) for p in spinners], time.perf_counter()
        row = _run(tiny, tiny["root"] / "busy")
        ticks1, t1 = [procfs.pid_cpu_ticks(p.pid) for p in spinners], time.perf_counter()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    # the spinners' own CPU time over the run (from their /proc/<pid>/stat), as a share of all CPUs' time
    spun = (sum(ticks1) - sum(ticks0)) / procfs.clock_ticks() / ((t1 - t0) * procfs.cpu_times().cpus)
    timing = row["machine_state"]["timing"]
    # they ran (on a quiet machine about half of it; where other work saturates the CPUs, less, and the others'
    # share is high anyway)
    assert spun > 0.02, f"the spinners took only {spun:.0%} of the CPU"
    assert timing["other_cpu_share"] >= 0.7 * spun, (timing, spun)  # the others' share holds at least the spinners'
    assert "busy-machine" in row["flags"] and row["machine_state"]["busy"] is True
    assert any(n.startswith("busy machine: other processes took") for n in row["notes"])


@pytest.mark.slow
def test_a_run_on_a_quiet_machine_is_not_flagged(tiny):
    """Only a quiet machine can show it: the background is measured before and after the run (this process
    idle), and a machine that other work keeps busy skips with the share it measured. What can fail here is
    the harness counting its own threads as other processes: the run keeps the CPUs busy itself."""
    before = _other_share_while_idle()
    row = _run(tiny, tiny["root"] / "quiet")
    after = _other_share_while_idle()
    if max(before, after) > BUSY_SHARE / 2:
        pytest.skip(f"machine not quiet: other processes took {before:.0%} / {after:.0%} of the CPU around the run")
    timing = row["machine_state"]["timing"]
    assert timing["self_cpu_share"] > 2 * BUSY_SHARE  # the run's own work is counted as its own
    assert timing["other_cpu_share"] <= BUSY_SHARE
    assert "busy-machine" not in row["flags"] and row["machine_state"]["busy"] is False


def _ticks_by_pid() -> dict[int, int]:
    out = {}
    for entry in procfs.PROC.iterdir():
        if entry.name.isdigit():
            ticks = procfs.pid_cpu_ticks(int(entry.name))
            if ticks is not None:
                out[int(entry.name)] = ticks
    return out


def test_shares_agree_with_every_process_own_counters():
    """Independent of how busy the machine is: this process's share against its own /proc/<pid>/stat,
    the others' share against the sum over every other process's counters (which misses processes that
    start and end inside the window, so it can only be lower)."""
    import os

    import numpy as np

    a = np.random.default_rng(0).random((400, 400))
    before = _ticks_by_pid()
    with RowWatch(energy=None) as watch:
        with watch.window("work"):
            end = time.perf_counter() + 1.0
            while time.perf_counter() < end:
                a = a @ a
                a /= np.abs(a).max()
    after = _ticks_by_pid()
    window = watch.windows["work"]
    capacity = window.seconds * procfs.cpu_times().cpus * procfs.clock_ticks()
    own = (after[os.getpid()] - before[os.getpid()]) / capacity
    others = sum(after[p] - before[p] for p in after if p in before and p != os.getpid()) / capacity
    assert window.self_cpu_share == pytest.approx(own, abs=0.05)
    assert window.other_cpu_share >= others - 0.05
    assert window.self_cpu_share + window.other_cpu_share + window.steal_share <= 1.0 + 0.02


def test_comparison_page_says_when_rows_ran_under_different_conditions():
    from harness.report.markdown import timing_conditions

    quiet = {"busy": False, "cpu_mhz_median": 2600.0, "governor": "performance", "throttle": "",
             "gpu_throttle_reasons": ""}
    assert timing_conditions([quiet, dict(quiet)]) == []
    busy = {**quiet, "busy": True}
    said = timing_conditions([quiet, busy])
    assert len(said) == 1 and said[0].startswith("rows were timed under different conditions: 1 of 2")
    slow = {**quiet, "cpu_mhz_median": 2400.0, "governor": "powersave", "gpu_throttle_reasons": "SwThermalSlowdown"}
    said = " | ".join(timing_conditions([quiet, slow]))
    assert "2400 to 2600 MHz" in said and "performance, powersave" in said and "1 row(s) saw thermal" in said
    assert timing_conditions([quiet, {**quiet, "gpu_throttle_reasons": "GpuIdle"}]) == []  # idle is no throttle
