"""CI runs what the README says (issue 24): .ci/run reads the install and test commands from the
README's Install and Tests sections, and the shared-data switch turns a skip for missing ../shared
into a failure (checked on a throwaway test tree with this conftest, in a subprocess)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def section_blocks(heading: str) -> list[str]:
    """Fenced blocks of the README section whose heading starts with `heading`."""
    text = README.read_text(encoding="utf-8")
    start = re.search(rf"^## {re.escape(heading)}.*$", text, re.M)
    assert start, f"README has no '## {heading}' section"
    end = re.search(r"^## ", text[start.end():], re.M)
    body = text[start.end(): start.end() + end.start() if end else len(text)]
    return [b.strip() for b in re.findall(r"^```\w*\n(.*?)^```", body, re.S | re.M)]


def test_ci_runs_the_readmes_install_and_test_commands():
    printed = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print"], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip().split("\n")
    assert printed == [section_blocks("Install")[0], section_blocks("Tests")[0]]
    install, tests = printed
    assert install.startswith("pip install") and "python -m pytest" in tests and "ruff check" in tests


def test_ci_uses_a_fresh_venv_and_requires_shared_data():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"-m venv ", script) and "system-site-packages" not in script.replace(
        "no --system-site-packages", "")
    assert "HARNESS_REQUIRE_SHARED=1" in script


PROBE_TESTS = '''
import pytest
from tests.conftest import need_shared

def test_needs_missing_shared_file():
    need_shared("no-such-file-here")

@pytest.mark.skipif(True, reason="needs ../shared/trt-api (TensorRT name lists)")
def test_skipif_for_shared():
    pass

@pytest.mark.skipif(True, reason="no GPU here")
def test_gpu_skip_stays_a_skip():
    pass

def test_plain():
    assert True
'''


def _probe_tree(tmp_path: Path, with_shared: bool) -> Path:
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", repo / "tests" / "conftest.py")
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_probe.py").write_text(PROBE_TESTS)
    if with_shared:
        (tmp_path / "shared").mkdir()
    return repo


def _pytest(repo: Path, require: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_REQUIRE_SHARED", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(repo)
    if require:
        env["HARNESS_REQUIRE_SHARED"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "tests"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)


def test_without_the_switch_shared_skips_are_skips_with_one_summary_line(tmp_path):
    done = _pytest(_probe_tree(tmp_path, with_shared=True), require=False)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = [line for line in done.stdout.splitlines() if line.startswith("skipped 3:")]
    assert summary == ["skipped 3: 2 need ../shared (real COCO images, published models, TensorRT name lists); "
                       "1 no GPU here"], done.stdout[-3000:]


def test_with_the_switch_shared_skips_fail_and_other_skips_stay(tmp_path):
    done = _pytest(_probe_tree(tmp_path, with_shared=True), require=True)
    assert done.returncode == 1, done.stdout[-3000:]
    assert re.search(r"FAILED tests/test_probe.py::test_needs_missing_shared_file", done.stdout)
    assert re.search(r"(FAILED|ERROR) tests/test_probe.py::test_skipif_for_shared", done.stdout)
    assert "SKIPPED" in done.stdout and "no GPU here" in done.stdout
    assert "1 passed" in done.stdout


def test_with_the_switch_a_missing_shared_folder_stops_the_run(tmp_path):
    done = _pytest(_probe_tree(tmp_path, with_shared=False), require=True)
    assert done.returncode not in (0, 5), done.stdout[-3000:]
    assert "HARNESS_REQUIRE_SHARED is set but" in done.stderr + done.stdout
