"""Starting the CLI loads only what the command needs (issue 24): `import harness.cli`, `harness --help`,
`harness targets` and `harness profiles` import no runtime, numba or OpenCV; each command's module is
imported when that command is looked up (click's lazy group). Speed itself is measured by
bench/startup.py, not asserted here; what is asserted is which modules a fresh interpreter loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what must not load before a command needs it
HEAVY = ("numba", "cv2", "openvino", "onnxruntime", "pandas", "matplotlib", "pycocotools", "scipy", "onnx", "tensorrt")

LOADED = """
import json, sys
from harness.cli import main
try:
    main(sys.argv[1:], prog_name="harness", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded_after(*argv: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_harness_cli_loads_no_command_module():
    proc = subprocess.run([sys.executable, "-c", "import json, sys, harness.cli; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set(json.loads(proc.stdout))
    assert heavy_in(modules) == [] and "numpy" not in modules
    assert sorted(m for m in modules if m.startswith("harness.cli.")) == ["harness.cli.common"]


@pytest.mark.parametrize("argv", [("--help",), ("targets",), ("profiles",), ("profiles", "show", "demo")])
def test_listing_commands_load_no_runtime(argv):
    modules = loaded_after(*argv)
    assert heavy_in(modules) == [], f"harness {' '.join(argv)} loaded {heavy_in(modules)}"


def test_a_command_module_loads_when_the_command_is_used():
    """The lazy group really registers every command: `harness run --help` loads cli.run and no other command."""
    modules = loaded_after("run", "--help")
    commands = sorted(m for m in modules if m.startswith("harness.cli.") and m != "harness.cli.common")
    assert commands == ["harness.cli.run"]


def test_every_lazy_command_resolves_to_its_name():
    import click

    from harness.cli import main

    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name


def test_interpolation_codes_are_opencvs():
    """preprocess keeps cv2's INTER_* values as numbers so that importing it does not load OpenCV."""
    import cv2

    from harness.images.preprocess import _INTERPOLATION

    assert _INTERPOLATION == {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                              "area": cv2.INTER_AREA}
