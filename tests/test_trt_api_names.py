"""Static check: every `trt.`-rooted attribute chain the code uses exists in the releases it runs on.

The modules are parsed (ast), not imported. targets/trt/calib.py is TensorRT 10's legacy implicit-int8 path
(reached only after targets/trt/api.describe_api found the names), so it is checked against 10.0 and 10.16;
every other module against 10.0, 10.16 and 11.4. Names the lists cannot show (tails of longer
strings, Python-level names) are accepted only if that explanation is verified on the lists.
The CUDA binding's `self.rt.<name>` calls are checked against the real cuda-python where installed.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from tests.fake_trt import HAND_CHECKED, TRT_API, names

ROOT = Path(__file__).resolve().parent.parent
TRT = ROOT / "harness" / "targets" / "trt"
LEGACY = {"calib.py": ("10.0", "10.16")}
ALL = ("10.0", "10.16", "11.4")

pytestmark = pytest.mark.skipif(not TRT_API.is_dir(), reason="needs ../shared/trt-api (TensorRT name lists)")


def _chains(source: str, root: str) -> set[tuple[str, ...]]:
    """Attribute chains rooted at the name `root`, e.g. ("BuilderFlag", "TF32") for trt.BuilderFlag.TF32."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            parts, current = [], node
            while isinstance(current, ast.Attribute):
                parts.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id == root:
                found.add(tuple(reversed(parts)))
    # keep only maximal chains (trt.BuilderFlag is a prefix of trt.BuilderFlag.TF32)
    return {c for c in found if not any(len(o) > len(c) and o[: len(c)] == c for o in found)}


def _trt_modules() -> list[Path]:
    return sorted(TRT.glob("*.py"))


def test_hand_checked_names_are_tails_of_listed_names():
    for release in ALL:
        listed = names(release)
        for name, longer in HAND_CHECKED.items():
            if longer is None:  # defined in tensorrt/__init__.py, not in the bindings
                continue
            assert longer in listed and longer.endswith(name) and longer != name, (release, name, longer)


def test_the_scan_finds_chains():
    chains = _chains("import tensorrt as trt\nx = trt.BuilderFlag.TF32\ny = trt.Logger(trt.Logger.WARNING)\n", "trt")
    assert chains == {("BuilderFlag", "TF32"), ("Logger", "WARNING")}


@pytest.mark.parametrize("module", _trt_modules(), ids=lambda p: p.name)
def test_every_trt_attribute_exists_in_the_releases_it_runs_on(module):
    chains = _chains(module.read_text(), "trt")
    releases = LEGACY.get(module.name, ALL)
    problems = []
    for release in releases:
        allowed = names(release) | set(HAND_CHECKED)
        for chain in sorted(chains):
            missing = [part for part in chain if part not in allowed]
            if missing:
                problems.append(f"{release}: trt.{'.'.join(chain)} ({', '.join(missing)} not bound)")
    assert not problems, "\n".join(problems)
    if module.name == "build.py":  # the common build path really uses the strongly typed API
        assert ("ProfilingVerbosity", "DETAILED") in chains and ("BuilderFlag", "TF32") in chains


def _attribute_names(module: Path) -> set[str]:
    """Every attribute name used in a module, on any object (config.int8_calibrator counts too)."""
    return {node.attr for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.Attribute)}


def test_removed_names_are_used_only_in_the_legacy_module():
    gone = set((TRT_API / "gone-10.16-to-11.4.names").read_text().split())
    for module in _trt_modules():
        if module.name not in LEGACY:
            assert not _attribute_names(module) & gone, (module.name, _attribute_names(module) & gone)
    legacy = _attribute_names(TRT / "calib.py")
    assert {"IInt8EntropyCalibrator2", "FP16", "int8_calibrator", "set_calibration_profile"} <= legacy


def test_cuda_python_calls_exist_in_the_installed_binding():
    from tests.fake_cuda import FakeCudaRuntime

    used = {chain[0] for chain in _chains((TRT / "cuda_rt.py").read_text().replace("self.rt.", "rt."), "rt")}
    assert {"cudaMallocHost", "cudaMemcpyAsync", "cudaEventElapsedTime", "cudaGraphLaunch"} <= used
    fake = FakeCudaRuntime()
    assert all(hasattr(fake, name) for name in used), sorted(n for n in used if not hasattr(fake, n))
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("cuda-python is not installed here (the fake covers the names above)")
    from harness.targets.trt.cuda_rt import import_cudart

    real = import_cudart()
    assert all(hasattr(real, name) for name in used), sorted(n for n in used if not hasattr(real, n))
