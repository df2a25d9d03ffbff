"""The `harness` command: parses flags and wires the pieces; no logic of its own.

One module per command group; each command is registered here with one line, by name, and its module
is imported only when the command is used (HarnessGroup's lazy commands), so `harness --help`,
`harness targets` and `harness profiles` start without loading runtimes, numba or OpenCV. Every user
mistake surfaces as a HarnessError and is printed as one line (exit 2), no traceback.
"""

from __future__ import annotations

from harness.cli.common import main

main.add_lazy_commands({
    "run": "harness.cli.run:run_cmd",
    "bench": "harness.cli.bench:bench_cmd",
    "demo": "harness.cli.run:demo_cmd",
    "profiles": "harness.cli.info:profiles_cmd",
    "targets": "harness.cli.info:targets_cmd",
    "report": "harness.cli.report:report_cmd",
    "preprocess": "harness.cli.npu:preprocess_cmd",
    "decode": "harness.cli.npu:decode_cmd",
    "emulate": "harness.cli.npu:emulate_cmd",
    "roundtrip": "harness.cli.npu:roundtrip_cmd",
    "quantize": "harness.cli.quantize:quantize_cmd",
    "sensitivity": "harness.cli.sensitivity:sensitivity_cmd",
})

__all__ = ["main"]
