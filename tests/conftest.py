"""Shared fixtures: paths to ../shared (skipped with a reason where absent) and the demo assets.

Tests that need ../shared (real COCO images, published models, the TensorRT name lists the fakes are
built from) skip with a reason saying so where it is absent, and one line at the end of the run says
how many did and what they need. Under HARNESS_REQUIRE_SHARED=1 (set by .ci/run) a missing ../shared
stops the run before any test, and any skip whose reason names ../shared is a failure: CI cannot pass
while the real-data and TensorRT-fake tests quietly did not run.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
COCO_TINY = SHARED / "data" / "coco-tiny"
MODELS = SHARED / "models"
#: set by .ci/run: a skip for missing shared data is a failure
REQUIRE_SHARED = os.environ.get("HARNESS_REQUIRE_SHARED", "") not in ("", "0")
#: every skip for missing shared data says this (need_shared, and the skipif reasons of the TensorRT fakes)
SHARED_SKIP = "needs ../shared"


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{SHARED_SKIP}/{'/'.join(parts)} (project's shared data/models; absent on this machine)")
    return path


def pytest_sessionstart(session):
    if REQUIRE_SHARED and not SHARED.is_dir():
        raise pytest.UsageError(f"HARNESS_REQUIRE_SHARED is set but {SHARED} does not exist: place the project's "
                                "shared data beside the checkout (or unset it to skip those tests)")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under HARNESS_REQUIRE_SHARED, a skip for missing ../shared data becomes a failure."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SHARED and report.skipped and SHARED_SKIP in _skip_reason(report):
        report.outcome = "failed"
        report.longrepr = f"HARNESS_REQUIRE_SHARED is set and this test skipped: {_skip_reason(report)}"


def pytest_terminal_summary(terminalreporter):
    """One line: how many tests skipped and what they need (the reasons counted, most common first)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    shared = sum(SHARED_SKIP in _skip_reason(r) for r in skipped)
    others = collections.Counter(_skip_reason(r).removeprefix("Skipped: ") for r in skipped
                                 if SHARED_SKIP not in _skip_reason(r))
    parts = [f"{shared} need ../shared (real COCO images, published models, TensorRT name lists)"] if shared else []
    parts += [f"{count} {reason}" for reason, count in others.most_common()]
    terminalreporter.write_line(f"skipped {len(skipped)}: " + "; ".join(parts))


def with_decoder_params(profile, **changes):
    """The profile with some of its typed [decoder] parameters changed."""
    params = dataclasses.replace(profile.decoder.params, **changes)
    return dataclasses.replace(profile, decoder=dataclasses.replace(profile.decoder, params=params))


@pytest.fixture(scope="session")
def coco_tiny() -> tuple[Path, Path]:
    """(images dir, annotations json) of ../shared/data/coco-tiny."""
    images = need_shared("data", "coco-tiny", "val2017")
    return images, need_shared("data", "coco-tiny", "annotations", "instances_val2017.json")


@pytest.fixture(scope="session")
def nanodet_m_320() -> Path:
    return need_shared("models", "nanodet-m-320.onnx")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> tuple[Path, Path]:
    """(images, annotations) of the demo's generated validation split, generated once per session."""
    from harness.data.demo import demo_dataset

    images, ann, _ = demo_dataset(tmp_path_factory.mktemp("demo-cache"))
    return images, ann


@pytest.fixture(scope="session")
def demo_oracle_map(demo_data) -> float:
    """The bundled demo model's mAP on the demo split computed without the harness (tests/oracles.py:
    OpenCV letterbox, plain ONNX Runtime, the NanoDet-Plus decode port, pycocotools)."""
    from harness.data.demo import DEMO_PROFILE, demo_model_path
    from harness.profiles import load_profile
    from tests.oracles import nanodet_letterbox_map

    profile = load_profile(DEMO_PROFILE)
    return nanodet_letterbox_map(demo_model_path(), *demo_data, (profile.input.height, profile.input.width),
                                 profile.input.mean, profile.input.std, profile.decoder.params.strides,
                                 profile.category_ids)


@pytest.fixture
def tiny(tmp_path):
    """The tiny real ONNX detector, its profile and a 6-image COCO dataset in tmp_path (tests/tinymodel.py)."""
    from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

    model = write_tiny_model(tmp_path / "tiny.onnx")
    profile = write_tiny_profile(tmp_path / "tiny.toml")
    images, ann = write_tiny_dataset(tmp_path / "ds")
    return {"model": model, "profile": profile, "images": images, "ann": ann, "root": tmp_path}


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a tmpfs of that size to fill: a real full disk for the writers' tests."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()

    def mount(size: str) -> Path:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill a disk ({made.stderr.strip() or 'mount failed'})")
        return mount_point

    yield mount
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def alive_nodes(address) -> list[dict]:
    """The live nodes of the Ray cluster at `address` (ray.nodes() records), from a short-lived driver."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster(request):
    """A real two-node Ray cluster (ray.cluster_utils.Cluster) for the module using it, started once: the
    module's RAY_NODES gives the two nodes' custom resources (the head's first), e.g.
    ({"device:ov": 1}, {"device:ort": 1}). 2 CPUs a node (so only the device resource can keep two rows
    of one device apart when a row reserves 1 CPU), ~100 MiB object store, no dashboard, a short temp
    dir; ~11 s and ~0.7 GB."""
    import shutil
    import tempfile

    from ray.cluster_utils import Cluster

    head, other = request.module.RAY_NODES
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    Path("/tmp/ray").mkdir(exist_ok=True)  # Ray writes the cluster's address there
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)  # a stale one makes a bare ray.init() hang
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    node = {"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024, "include_dashboard": False}
    made = Cluster(initialize_head=True, head_node_args={**node, "resources": dict(head), "temp_dir": temp_dir})
    made.add_node(**node, resources=dict(other))
    made.wait_for_nodes()
    yield made
    made.shutdown()
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
    shutil.rmtree(temp_dir, ignore_errors=True)
