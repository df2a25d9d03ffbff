"""The vendor tool's command line on a device host (ais_bench, vamp, or an emulator in their shape), as
typed configuration, and running it there with a timeout.

A device host's tool is whatever program the vendor installed, so the harness never guesses its command
line: it is a template (argv, one word per item) with placeholders the harness fills in per run, read
from a TOML file (`--tool-config`: the file's `[ais]`/`[vamp]` table, or its top level) and the
`--tool-command` / `--tool-timeout` flags, validated by harness.core.config like every other setting.
The default is the tool's own (`FileTool.command`). The program runs in its own process group, so a
timeout kills it and whatever it started, and it is killed when the process that started it dies (a Ray
worker killed mid-task); a non-zero exit, a timeout, or an output folder left empty is
one line naming the program, the host and what happened.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import string
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness.core import config
from harness.core.config import Invalid, setting
from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_text
from harness.core.tomlfile import read_toml

#: what the harness fills into a tool command, per run (all paths are the device host's)
PLACEHOLDERS = {
    "model": "the model file the tool loads (--device-model, {bs} replaced; default --model)",
    "input": "the folder holding the prepared inputs and prep.json (`harness preprocess`'s --out)",
    "output": "the folder the tool writes its outputs into (made empty before the tool runs)",
    "batchsize": "the row's batch size (--bs)",
    "datalist": "a file listing the input files, one device-host path per line, in prep.json's order",
    "height": "the model input's height (the profile's)",
    "width": "the model input's width (the profile's)",
}
DEFAULT_TIMEOUT_S = 1800.0
LOG_LINES = 20  # the tool's last output lines kept with the row
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def placeholders_in(word: str) -> list[str]:
    """The {names} one command word uses; a stray brace is a ValueError (str.format's own parser)."""
    return [name for _, name, _, _ in string.Formatter().parse(word) if name is not None]


@dataclass(frozen=True)
class ToolCommand:
    """How to run one vendor tool on its device host."""

    #: the argv template: one word per item, placeholders `{model}`, `{input}`, `{output}`, ...
    command: tuple[str, ...] = setting(nonempty=True, expects="a list of command-line words")
    #: the tool is killed after this many seconds (it and what it started)
    timeout_s: float = setting(DEFAULT_TIMEOUT_S, gt=0, le=7 * 24 * 3600)
    #: environment variables set for the tool (e.g. what Ascend's set_env.sh exports)
    env: dict[str, str] = setting(default_factory=dict)

    def __post_init__(self):
        for word in self.command:
            try:
                names = placeholders_in(word)
            except ValueError as exc:
                raise Invalid("command", f"{word!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
            for name in names:
                if name not in PLACEHOLDERS:
                    hint = config.did_you_mean(name, PLACEHOLDERS)
                    raise Invalid("command", f"{word!r}: unknown placeholder {{{name}}}{hint}; "
                                  f"known: {', '.join('{' + k + '}' for k in PLACEHOLDERS)}")
        if not any("output" in placeholders_in(word) for word in self.command):
            raise Invalid("command", "no {output} placeholder: the tool must be told where to write what the "
                          "harness decodes")

    def argv(self, values: dict) -> list[str]:
        """The command line with this run's values filled in."""
        return [word.format(**values) for word in self.command]


def load_tool_command(tool, path: str | Path | None = None, command: str | None = None,
                      timeout_s: float | None = None) -> ToolCommand:
    """The tool's command: its default <- the file (`[<tool>]` table or top level) <- the flags;
    every value checked by the strict loader (a typo'd key or placeholder is one line)."""
    data: dict = {"command": list(tool.command)} if tool.command else {}
    where = "the default tool command"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise HarnessError(f"--tool-config {path}: file not found")
        raw = read_toml(path, f"--tool-config {path}")
        section = tool.name if isinstance(raw.get(tool.name), dict) else None
        table = raw[tool.name] if section else raw
        loaded = config.load(ToolCommand, {**data, **table}, str(path), section)
        data, where = {"command": list(loaded.command), "timeout_s": loaded.timeout_s, "env": loaded.env}, str(path)
    if command is not None:
        try:
            data["command"] = shlex.split(command)
        except ValueError as exc:
            raise HarnessError(f"--tool-command {command!r}: {exc}") from None
        where = "--tool-command"
    if "command" not in data:
        raise HarnessError(f"{tool.program}: no default command line; give --tool-command or --tool-config")
    loaded = config.load(ToolCommand, data, where)
    return loaded if timeout_s is None else replace(loaded, timeout_s=float(timeout_s))


def write_datalist(path: Path, input_folder: Path, input_files: list[str]) -> Path:
    """The {datalist} file: the inputs' paths on this host, in prep.json's order."""
    atomic_write_text(path, "".join(f"{input_folder / name}\n" for name in input_files))
    return path


def _tail(text: str, lines: int = LOG_LINES) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def run_tool(program: str, tool_command: ToolCommand, values: dict, output: Path) -> dict:
    """Run the tool once (values fill the placeholders); its outcome as a dict (argv, seconds, exit
    status, its last output lines). A failure is one HarnessError line naming the program and this host."""
    host = socket.gethostname()
    argv = tool_command.argv(values)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                env={**os.environ, **tool_command.env}, start_new_session=True,
                                preexec_fn=_die_with_parent)
    except OSError as exc:
        raise HarnessError(f"{program} on {host}: cannot start {argv[0]!r} ({exc.strerror or exc}); set the tool "
                           "command with --tool-command or --tool-config (docs/cluster.md)") from None
    try:
        log, _ = proc.communicate(timeout=tool_command.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise HarnessError(f"{program} on {host} did not finish within {tool_command.timeout_s:g} s and was killed "
                           "(raise timeout_s in the tool config, or --tool-timeout)") from None
    except BaseException:  # Ctrl-C, or the task cancelled: leave nothing running
        _kill_group(proc)
        raise
    seconds = round(time.monotonic() - started, 3)
    lines = _tail(log or "")
    if proc.returncode != 0:
        said = f": {lines[-1]}" if lines else " (it printed nothing)"
        raise HarnessError(f"{program} on {host} exited with status {proc.returncode} after {seconds:g} s{said}")
    if not any(p.is_file() for p in Path(output).rglob("*")):
        raise HarnessError(f"{program} on {host} exited 0 but wrote nothing into {output} (does the tool command "
                           "pass {output} where the tool writes its outputs?)")
    return {"argv": argv, "seconds": seconds, "returncode": proc.returncode, "log_tail": lines}


def _die_with_parent() -> None:
    """In the tool's process, before it starts (Linux): SIGKILL it when the process that started it dies.
    A Ray worker killed mid-task (out of memory, `ray.cancel(force=True)` on Ctrl-C, a crash) cannot kill
    the tool itself, and a tool left running would share the device with the next task."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=10)


__all__ = ["PLACEHOLDERS", "ToolCommand", "load_tool_command", "run_tool", "write_datalist"]
