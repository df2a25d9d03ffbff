"""The `harness` command: parses flags and wires the pieces; no logic of its own.

One module per command group; each command is registered here with one line. Every user mistake
surfaces as a HarnessError and is printed as one line (exit 2), no traceback.
"""

from __future__ import annotations

from harness.cli.bench import bench_cmd
from harness.cli.common import main
from harness.cli.info import profiles_cmd, targets_cmd
from harness.cli.npu import decode_cmd, emulate_cmd, preprocess_cmd
from harness.cli.quantize import quantize_cmd
from harness.cli.report import report_cmd
from harness.cli.run import demo_cmd, run_cmd
from harness.cli.sensitivity import sensitivity_cmd

main.add_command(run_cmd)
main.add_command(bench_cmd)
main.add_command(demo_cmd)
main.add_command(profiles_cmd)
main.add_command(targets_cmd)
main.add_command(report_cmd)
main.add_command(preprocess_cmd)
main.add_command(decode_cmd)
main.add_command(emulate_cmd)
main.add_command(quantize_cmd)
main.add_command(sensitivity_cmd)

__all__ = ["main"]
