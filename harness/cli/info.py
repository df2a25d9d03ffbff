"""`harness profiles [show NAME]` and `harness targets`: what the harness knows and what runs here."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from harness.cli.common import out


@click.group("profiles", invoke_without_command=True)
@click.option("--model", "-m", default=None, help="Check every built-in profile against this model (.onnx or .xml): "
                                                  "which fit, their scores, and what `--profile auto` picks.")
@click.pass_context
def profiles_cmd(ctx, model):
    """List the built-in model profiles (`harness profiles show NAME` prints one)."""
    if ctx.invoked_subcommand is not None:
        return
    if model is not None:
        _profiles_for_model(model)
        return
    from harness.profiles import builtin_profiles

    table = Table(title="built-in profiles (or pass --profile FILE.toml; `harness profiles show NAME` to copy one)")
    table.add_column("name")
    table.add_column("description")
    for name, description in builtin_profiles().items():
        table.add_row(name, escape(description))
    out.print(table)


def _profiles_for_model(model: str) -> None:
    from harness.core.errors import HarnessError
    from harness.profiles.match import candidates, choose

    found = candidates(model)
    table = Table(title=f"built-in profiles for {model} (score: 1 + file-name match when the graph fits, else 0)")
    for column in ("profile", "fits", "score", "why"):
        table.add_column(column)
    for candidate in found:
        table.add_row(candidate.name, "yes" if candidate.fits else "no", f"{candidate.score:g}", escape(candidate.why))
    out.print(table)
    try:
        name, why = choose(model)
        out.print(f"--profile auto picks {name}: {escape(why)}", highlight=False)
    except HarnessError as exc:
        out.print(escape(str(exc)), highlight=False)


@profiles_cmd.command("show")
@click.argument("name")
def show_profile(name):
    """Print a profile as TOML (built-in name or a .toml file), with where it came from: copy and edit it."""
    from harness.profiles import profile_text

    source, text = profile_text(name)
    click.echo(f"# profile {name} from {source}\n{text.rstrip()}")


@click.command("targets")
@click.option("--options", "show_options", is_flag=True, help="Also list each target's options (-o KEY=VALUE).")
def targets_cmd(show_options):
    """List targets and whether each can run on this machine, and why not."""
    from harness.core.config import describe, known_keys
    from harness.npu import FILE_TOOLS
    from harness.targets import get_target, target_names

    table = Table(title="targets")
    for column in ("target", "available", "runs on / why not"):
        table.add_column(column)
    if show_options:
        table.add_column("options")
    for name in target_names():
        cls = get_target(name)
        ok, why = cls.availability()
        cells = [name, "yes" if ok else "no", escape(why or cls.description)]
        if show_options:
            import typing

            hints = typing.get_type_hints(cls.Options)
            cells.append(escape("; ".join(f"{k}: {describe(hints[k])}" for k in known_keys(cls.Options)) or "-"))
        table.add_row(*cells)
        details = getattr(cls, "status_line", None)  # a target that says more (trt: release, CUDA binding, modes)
        if details is not None:
            table.add_row(f"{name} details", "-", escape(details()), *([""] if show_options else []))
    # File-based NPU targets run on the device host; the harness writes their input and reads their output.
    for _, tool in FILE_TOOLS.items():
        table.add_row(tool.device, "files", escape(tool.summary), *([""] if show_options else []))
    out.print(table)
