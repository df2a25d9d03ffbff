"""Guard against CPUs that advertise AMX but fault on it (some VMs and sandboxes).

OpenVINO's CPU plugin (oneDNN) picks AMX kernels when /proc/cpuinfo lists amx_tile; where the
kernel does not really enable AMX the process dies with SIGILL. We probe once in a child process
and, if it dies, cap oneDNN at AVX512_CORE_BF16 via ONEDNN_MAX_CPU_ISA before OpenVINO loads.
A user who sets ONEDNN_MAX_CPU_ISA themselves is never overridden.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAFE_ISA = "AVX512_CORE_BF16"
_PROBE = """
import numpy as np, openvino as ov, openvino.opset13 as ops
x = ops.parameter([1, 32, 16, 16], np.float32)
w = ops.constant(np.ones((32, 32, 3, 3), np.float32))
y = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
c = ov.Core().compile_model(ov.Model([y], [x]), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
c.create_infer_request().infer({0: np.ones((1, 32, 16, 16), np.float32)})
"""
_note: str | None = None
_checked = False


def _cpu_has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def guard_amx() -> str | None:
    """Cap oneDNN's ISA if AMX faults here; returns a note describing what was done, or None."""
    global _note, _checked
    if _checked:
        return _note
    _checked = True
    if "ONEDNN_MAX_CPU_ISA" in os.environ or not _cpu_has_amx():
        return None
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120)
    if probe.returncode != 0:
        os.environ["ONEDNN_MAX_CPU_ISA"] = SAFE_ISA
        _note = f"AMX faults on this machine (probe exit {probe.returncode}); oneDNN capped at {SAFE_ISA}"
    return _note
