"""What machine and software produced a result: CPU, cores, OS, Python, runtime versions, git."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import harness

#: the harness's own dependencies; each target adds the runtimes it declares (Target.packages)
_PACKAGES = ("numpy", "opencv-python-headless", "pycocotools", "faster-coco-eval")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    root = Path(harness.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def gpu_info() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().replace("\n", "; ") or None if out.returncode == 0 else None


def environment() -> dict:
    from harness.targets import declared_packages

    versions = {}
    for name in dict.fromkeys((*_PACKAGES, *declared_packages())):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "harness": harness.__version__,
        "git_commit": _git_commit(),
        "packages": versions,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
