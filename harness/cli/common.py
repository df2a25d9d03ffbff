"""What every command shares: the group (one-line errors, Ctrl-C/SIGTERM), consoles, progress bars,
the results table and the shared flag parsers."""

from __future__ import annotations

import errno
import importlib
import io
import math
import os
import re
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.core.errors import HarnessError

# Wide enough for the results table when output goes to a file or pipe (rich assumes 80 there); the
# table of a run with trt rows has two more columns (the GPU stage split), hence 200 on stdout.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=None if sys.stdout.isatty() else 200)


class HarnessGroup(click.Group):
    """Turns HarnessError into `error: ...` (exit 2), the first Ctrl-C or SIGTERM into a clean stop
    (harness.core.interrupts; exit 130), and an OSError nobody caught (a full disk, a closed or full
    stdout) into one line: never a traceback. Commands are registered lazily (click's LazyGroup
    pattern): a command's module is imported only when that command is looked up, so `harness
    targets` never loads what `harness run` needs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, str] = {}  # name -> "module:attribute"

    def add_lazy_commands(self, commands: dict[str, str]) -> None:
        self.lazy_commands.update(commands)

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx, name):
        if name in self.lazy_commands and name not in self.commands:
            module, _, attribute = self.lazy_commands[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        from harness.core import interrupts

        previous = interrupts.install()
        owns = _owns_process()
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]  # the command's name, before click consumes it
        command = self.get_command(ctx, words[0]) if words else None  # a lazy one is loaded here, as click would
        _tolerate_any_file_name()
        try:
            result = super().invoke(ctx)
            _flush_stdout()
            return result
        except HarnessError as exc:
            _fail(str(exc))
        except click.UsageError as exc:  # a flag click itself refused: the same one line, not the usage block
            _fail(exc.format_message())
        except KeyboardInterrupt:
            resumable = command is not None and any(p.name == "resume" for p in command.params)
            console.print("[yellow]interrupted[/]: " + (
                "finished rows are saved; rerun with --resume to continue" if resumable else
                "nothing was left half-written; run the command again"), highlight=False)
            sys.exit(interrupts.EXIT_STATUS)
        except OSError as exc:  # a writer without its own message: say which file and why, in one line
            if exc.errno == errno.EPIPE:  # the reader went away (`harness targets | head`): nothing to say
                _quiet_stdout()
                sys.exit(0)
            on_stdout = _is_stdout_error(exc) or (exc.filename is None and not _stdout_flushes())
            where = f" {exc.filename}" if exc.filename else (" to standard output" if on_stdout else "")
            if on_stdout:
                _quiet_stdout()
            _fail(f"cannot write{where} ({exc.strerror or exc}); files written before it are complete")
        finally:
            interrupts.restore(previous, finished=owns)


def _fail(message: str):
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _tolerate_any_file_name() -> None:
    """A file name that is not UTF-8 (a surrogate escape from the file system) is shown escaped,
    never a UnicodeEncodeError half-way through a table."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, io.UnsupportedOperation):
            pass


def _owns_process() -> bool:
    """True when this process is the `harness` command itself (not a test calling it in-process)."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    return (spec is not None and spec.name == "harness.__main__") or Path(sys.argv[0]).name == "harness"


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        exc.harness_stdout = True
        raise


def _stdout_flushes() -> bool:
    try:
        sys.stdout.flush()
        return True
    except (OSError, ValueError):
        return False


def _is_stdout_error(exc: OSError) -> bool:
    """Raised while printing (the terminal table, a printer command) rather than writing a file."""
    if getattr(exc, "harness_stdout", False):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and exc.filename is None and any("/rich/" in f.filename or "/click/" in f.filename
                                                          for f in frames[-4:])


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


@click.group(cls=HarnessGroup)
@click.version_option(package_name="harness")
def main():
    """Benchmark object detectors across accelerators: COCO mAP, throughput and latency per batch size."""


class RichProgress:
    """Progress bars for long work, on stderr so stdout stays clean (harness.core.progress's interface)."""

    def __init__(self):
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()

    @contextmanager
    def task(self, description: str, total: int):
        task_id = self._progress.add_task(description, total=total)
        yield lambda n=1: self._progress.advance(task_id, n)

    def message(self, text: str) -> None:
        self._progress.console.print(escape(text), highlight=False)


_PLAIN_INTEGER = re.compile(r"[+]?[0-9]+")  # ASCII digits only: int() would also take '1_0' and '１'
_SIGNED_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_batch_sizes(text: str, flag: str = "--bs") -> list[int]:
    """'1,4,8' -> [1, 4, 8]; empty items, zero, negatives, non-integers ('1.5'), sizes above
    MAX_BATCH and repeats are one clear line (a repeat would silently merge two rows into one)."""
    from harness.targets.modes import MAX_BATCH

    parts = [part.strip() for part in str(text).split(",")]
    sizes = [int(part) for part in parts if _PLAIN_INTEGER.fullmatch(part)]
    if len(sizes) != len(parts) or not sizes or any(s <= 0 for s in sizes):
        raise HarnessError(f"{flag} {text!r}: expected comma-separated positive integers, e.g. 1,4,8")
    if max(sizes) > MAX_BATCH:
        raise HarnessError(f"{flag} {text!r}: batch sizes above {MAX_BATCH} are refused")
    if len(set(sizes)) != len(sizes):
        raise HarnessError(f"{flag} {text!r}: a batch size is given twice")
    return sizes


def parse_names(text: str, flag: str) -> list[str]:
    """'ort,ov' -> ['ort', 'ov']; an empty list (`-t ,`) or an empty item is one clear line."""
    parts = [part.strip() for part in str(text).split(",")]
    if not parts or any(not part for part in parts):
        raise HarnessError(f"{flag} {text!r}: expected comma-separated names, e.g. ort,ov")
    return list(dict.fromkeys(parts))


class _Checked(click.ParamType):
    """A click type whose bad values are one `error:` line (a HarnessError), like every other user
    mistake, instead of click's usage block."""

    def flag(self, param) -> str:
        return param.opts[0] if param is not None and param.opts else self.name

    def convert(self, value, param, ctx):
        if value is None or not isinstance(value, str):
            return value if value is None else self.check(value, self.flag(param))
        return self.check(value.strip(), self.flag(param))


class Count(_Checked):
    """An integer >= minimum (1 unless said) and <= maximum where one is given: image counts,
    threads, workers, batch sizes, pixels."""

    name = "integer"

    def __init__(self, minimum: int = 1, maximum: int | None = None):
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value, flag: str) -> int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _SIGNED_INTEGER.fullmatch(value.strip()):
            number = int(value.strip())
        if number is None or number < self.minimum:
            wanted = "a positive integer" if self.minimum == 1 else f"an integer >= {self.minimum}"
            raise HarnessError(f"{flag} {value!r}: expected {wanted}")
        if self.maximum is not None and number > self.maximum:
            raise HarnessError(f"{flag} {value!r}: at most {self.maximum}")
        return number


class Seconds(_Checked):
    """A finite number of seconds > 0 (or >= 0 with allow_zero), at most a day: NaN or inf would loop
    forever, and so, for any practical purpose, would 1e9."""

    name = "seconds"
    maximum = 86400.0

    def __init__(self, allow_zero: bool = False):
        self.allow_zero = allow_zero

    def check(self, value, flag: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < 0 or (number == 0 and not self.allow_zero):
            raise HarnessError(f"{flag} {value!r}: expected a finite number of seconds "
                               f"{'>= 0' if self.allow_zero else '> 0'}")
        if number > self.maximum:
            raise HarnessError(f"{flag} {value!r}: at most {self.maximum:g} seconds (a day)")
        return number


class LazyChoice(click.Choice):
    """click.Choice whose choices come from `choices_of()` on first use: a registry's names that need
    its modules imported (file formats) cost nothing until the command runs or shows its --help."""

    def __init__(self, choices_of, case_sensitive: bool = True):
        self._choices_of = choices_of
        self._choices = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self):
        if self._choices is None:
            self._choices = tuple(self._choices_of())
        return self._choices


class BatchSizes(_Checked):
    """'1,4,8' -> [1, 4, 8] (parse_batch_sizes)."""

    name = "sizes"

    def check(self, value, flag: str) -> list[int]:
        return value if isinstance(value, list) else parse_batch_sizes(value, flag)


MAX_PIXELS_HELP = ("Refuse images with more pixels than this, read from the header before decoding "
                   "(default 50000000: a decompression bomb never reaches the decoder).")


ROW_COLUMNS = [("target", "target"), ("precision", "prec"), ("mode", "mode"), ("bs", "bs"), ("images", "images"),
               ("map", "mAP"), ("map50", "AP50"), ("fps", "infer img/s"), ("fps_ci95", "±"),
               ("latency_ms_p50", "p50 ms"), ("latency_ms_p99", "p99 ms"), ("e2e_fps", "e2e img/s")]


def results_table(rows, title: str = "results") -> Table:
    """The terminal table: one line per row; a failed row shows ✗, flagged rows their flags.
    Percentiles only where the row's latency count supports them. The GPU stage split (trt) and the
    enqueue time get a column only when some row has them, so CPU-only tables stay as they were."""
    from harness.measure.row import flag_label, target_label
    from harness.report.gpu_split import ENQUEUE, ENQUEUE_HEADING, SPLIT_HEADING, figure_cell, has_enqueue, has_split, split_cell
    from harness.report.markdown import cell

    datas = [row.to_dict() for row in rows]
    extra = []  # (heading, cell of a row dict)
    if any(has_split(d) for d in datas):
        extra.append((SPLIT_HEADING, split_cell))
    if any(has_enqueue(d) for d in datas):
        extra.append((ENQUEUE_HEADING, lambda d: figure_cell(d, ENQUEUE)))
    table = Table(title=title)
    for _, heading in ROW_COLUMNS:
        table.add_column(heading, justify="right")
    for heading, _ in extra:  # a narrow terminal wraps the split at its " / ", never inside a number
        table.add_column(heading, justify="right")
    table.add_column("flags")
    for row, data in zip(rows, datas):
        data["target"] = target_label(row.target, row.source, row.device)
        if row.status == "failed":
            known = {"target": data["target"], "precision": row.precision, "bs": str(row.bs), "images": "✗"}
            table.add_row(*[known.get(key, "-") for key, _ in ROW_COLUMNS], *("-" for _ in extra), "failed")
            continue
        table.add_row(*[cell(data, key) for key, _ in ROW_COLUMNS], *(show(data) for _, show in extra),
                      ", ".join(map(flag_label, row.flags)))
    return table


def print_rows(rows, title: str = "results") -> None:
    """The terminal table (results_table); a failed row's reason and a suspect row's note below it."""
    out.print(results_table(rows, title))
    for row in rows:
        if row.status != "ok":
            console.print(f"[red]✗[/] {escape(row.target)} bs={row.bs}: {escape(row.error or '')}", highlight=False)
        elif "suspect" in row.flags:
            note = next((n for n in row.notes if n.startswith("suspect")), "")
            console.print(f"[yellow]suspect[/] {escape(row.target)} bs={row.bs}: {escape(note)}", highlight=False)


def fail_if_rows_failed(rows) -> None:
    """After a sweep: any row that could not run makes the command fail (exit 2), after every other
    row has run and been saved."""
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        first = failed[0]
        raise HarnessError(f"{len(failed)} of {len(rows)} row(s) failed; first: {first.target} bs={first.bs}: "
                           f"{first.error}")
