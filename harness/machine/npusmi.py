"""Ascend NPUs through `npu-smi info`: its table parsed into one dict per chip (name, health,
power, temperature, AI Core use, memory / HBM in use and total). Only where the tool is on PATH."""

from __future__ import annotations

import re
import shutil
import subprocess

_CELL = re.compile(r"\d+\s*/\s*\d+|\S+")
_HEADS = {"NPU": "npu", "Name": "name", "Health": "health", "Power(W)": "power_w", "Temp(C)": "temp_c",
          "Hugepages-Usage(page)": "hugepages", "Chip": "chip", "Phy-ID": "phy_id", "Bus-Id": "bus_id",
          "AICore(%)": "aicore_pct", "Memory-Usage(MB)": "memory_mb", "HBM-Usage(MB)": "hbm_mb"}


def _cells(line: str) -> list[list[str]]:
    return [_CELL.findall(part) for part in line.strip().strip("|").split("|")]


def _value(key: str, token: str):
    if "/" in token:
        used, total = (int(x) for x in token.split("/"))
        return {"used": used, "total": total}
    if key in ("health", "name", "bus_id"):
        return token
    if not re.fullmatch(r"\d+(\.\d+)?", token):
        return None  # "-", "NA": not shown for this chip
    return float(token) if "." in token else int(token)


def parse_info(text: str) -> list[dict]:
    """One dict per chip of an `npu-smi info` table (the two header lines name the columns; each
    chip is the pair of lines under them). Process tables below are ignored."""
    lines = [line for line in text.splitlines() if line.strip().startswith("|")]
    heads: list[list[str]] = []
    chips, pending = [], None
    for line in lines:
        cells = _cells(line)
        flat = [tok for cell in cells for tok in cell]
        if flat[:2] == ["NPU", "Name"] or (flat[:1] == ["Chip"] and "Bus-Id" in flat):
            heads.append(flat)
            continue
        if flat[:2] == ["NPU", "Chip"] or (flat and flat[0] == "No"):  # the process table begins
            break
        if len(heads) < 2 or not flat:
            continue
        first = pending is None
        names = heads[0] if first else heads[1]
        if len(flat) != len(names):
            continue
        keys = [_HEADS.get(n, n.lower()) for n in names]
        record = {key: _value(key, tok) for key, tok in zip(keys, flat)}
        if first:
            pending = record
        else:
            chips.append({**pending, **record})
            pending = None
    return chips


def query(timeout: float = 10.0) -> tuple[list[dict] | None, str]:
    """(chips, '') from `npu-smi info`, or (None, why not)."""
    program = shutil.which("npu-smi")
    if program is None:
        return None, "npu-smi is not on PATH (no Ascend driver on this machine)"
    try:
        out = subprocess.run([program, "info"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"npu-smi info failed: {exc}"
    if out.returncode != 0:
        return None, f"npu-smi info exited {out.returncode}: {out.stderr.strip()[:200]}"
    chips = parse_info(out.stdout)
    return (chips, "") if chips else (None, "npu-smi info printed no chip table this parser knows")
