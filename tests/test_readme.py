"""The README works as written: every `sh` block runs, in order, in a fresh folder (issue 15).

Blocks fenced `sh` are commands a user can paste after installing; the other fenced blocks are
install/test commands (run by CI itself), program output, or templates whose CAPITALS the user
replaces. A block that calls `harness` without a placeholder must therefore be an `sh` block, so a
runnable example cannot slip out of this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b")
NEEDS_DEVICE = ("ais_bench", "vamp ", "--target trt", "-t trt", "ort-cuda")


def blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in FENCE.findall(README.read_text(encoding="utf-8"))]


def test_every_runnable_harness_block_is_an_sh_block():
    for lang, body in blocks():
        if lang == "sh":
            continue
        commands = [line for line in body.splitlines() if line.startswith("harness ")]
        if not commands:
            continue
        assert PLACEHOLDER.search(body) or any(word in body for word in NEEDS_DEVICE), (
            f"README block runs harness without a CAPITALS placeholder; fence it as sh so it is tested:\n{body}")


#: the demo's timing loops, shortened for the test (the README's `harness demo` times each of its six
#: rows for 2-10 s); everything else in the blocks runs as written
DEMO_TIMING = "--seconds 0.2 --max-seconds 0.5"


@pytest.mark.slow
def test_sh_blocks_run_verbatim_in_order(tmp_path, demo_oracle_map):
    """The demo, then the NPU round trip with emulate, then the report over results/*. The mAPs are
    checked against the demo model's mAP computed without the harness (conftest demo_oracle_map)."""
    runnable = [body for lang, body in blocks() if lang == "sh"]
    assert len(runnable) >= 3, "README lost its runnable examples"
    work = tmp_path / "work"
    work.mkdir()
    # the README's paths are relative to a clone's root: harness/assets/... resolves through this link
    (work / "harness").symlink_to(ROOT / "harness", target_is_directory=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "harness"
    launcher.write_text(f'#!/bin/sh\nif [ "$1" = demo ]; then shift; set -- demo {DEMO_TIMING} "$@"; fi\n'
                        f'exec "{sys.executable}" -m harness "$@"\n')
    launcher.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "HOME": str(tmp_path / "home"), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    for name in ("HARNESS_CACHE", "XDG_CACHE_HOME"):
        env.pop(name, None)
    for body in runnable:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"README block failed:\n{body}\n--- stderr ---\n{done.stderr[-3000:]}"
    # what the blocks promise: the demo's rows, the emulated Ascend row, and one page over all of them
    demo_rows = json.loads((work / "results" / "demo" / "results.json").read_text())["rows"]
    assert {(r["target"], r["bs"]) for r in demo_rows} == {(t, b) for t in ("ort", "ov") for b in (1, 4, 8)}
    assert all(r["map"] == pytest.approx(demo_oracle_map, abs=0.003) for r in demo_rows), demo_rows
    ascend = json.loads((work / "results" / "ascend-emulated" / "results.json").read_text())["rows"]
    assert [(r["target"], r["source"]) for r in ascend] == [("ascend", "emulated")]
    assert ascend[0]["map"] == pytest.approx(demo_oracle_map, abs=0.003)
    page = (work / "report.md").read_text()
    assert "ascend (emulated)" in page
    assert re.search(r"\|\s*ov\s*\|", page) and re.search(r"\|\s*ort\s*\|", page)
