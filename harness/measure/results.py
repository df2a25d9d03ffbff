"""results.json as the single record of a run: rows appended as they finish, written atomically.

An interrupted run leaves a valid file holding every finished row; --resume picks up from it. The
store stores: whoever owns the folder renders reports from its rows (the `on_save` hook), so this
module depends on nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.core import interrupts
from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_text, strict_json
from harness.core.folders import OutputFolder, safe_target
from harness.core.jsonfile import read_json_object
from harness.measure import identity as ident
from harness.measure.row import ResultRow

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


def load_results(path: str | Path) -> dict:
    """Read a results.json (or the one inside a folder) with a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise HarnessError(f"results file not found: {path}")
    data = read_json_object(path, "results file", "an object with a 'rows' list")
    if not isinstance(data.get("rows"), list):
        raise HarnessError(f"results file {path}: expected an object with a 'rows' list")
    return data


def load_rows(path: str | Path) -> list[ResultRow]:
    """The rows of a results file, each checked as it is read: one line names the row and the field."""
    path = Path(path)
    rows = []
    for number, data in enumerate(load_results(path)["rows"]):
        if not isinstance(data, dict):
            raise HarnessError(f"results file {path}: row {number + 1} is not an object")
        try:
            rows.append(ResultRow.from_dict(data))
        except HarnessError as exc:
            raise HarnessError(f"results file {path}: row {number + 1}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
            raise HarnessError(f"results file {path}: row {number + 1}: {exc}") from None
    return rows


def row_key(row: ResultRow) -> tuple:
    """What makes two rows the same measurement, for --resume."""
    return (row.target, row.model, row.profile, row.precision, int(row.bs))


def row_env(row: ResultRow, file_env: dict) -> dict:
    """The environment of the host a row ran on: a cluster row's worker's (`cluster.env`, run --cluster),
    else the results file's `env` (the host that ran the command)."""
    node = row.extra.get("cluster") if isinstance(row.extra, dict) else None
    env = node.get("env") if isinstance(node, dict) else None
    return env if isinstance(env, dict) else file_env


class ResultsStore:
    """The --out folder: checks it up front and locks it (one command at a time; a context manager,
    or close()), then rewrites results.json after every row and calls on_save(rows, env) (e.g. to
    render report.md)."""

    def __init__(self, out_dir: str | Path, env: dict, resume: bool = False, overwrite: bool = False,
                 on_save: Callable[[list[ResultRow], dict, Path], None] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.env = env
        self.on_save = on_save
        self.rows: list[ResultRow] = []
        self.folder = OutputFolder(self.out_dir)  # a second command on this --out fails here, at once
        try:
            self._load(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _load(self, resume: bool, overwrite: bool) -> None:
        for name in (RESULTS_FILE, REPORT_FILE):
            safe_target(self.out_dir, name)
        if self.path.exists():
            existing = load_rows(self.path)
            if resume:
                self.rows = existing
            elif not overwrite and any(r.status != "failed" for r in existing):
                # a file of failed rows only holds no measurement: a new run may replace it
                raise HarnessError(
                    f"{self.path} already holds results; pass --resume to continue that run, "
                    "--overwrite to replace it, or choose another --out"
                )
            for name in (RESULTS_FILE, REPORT_FILE):  # recognised as a results folder: its two files are ours
                if (self.out_dir / name).is_file() and name not in self.folder.listed:
                    self.folder.adopt(name)
        if overwrite and not resume:
            self.folder.clear()  # what an earlier harness command wrote here, nothing else

    def check_same_measurement(self, identity: dict, target: str, model: str) -> None:
        """A resumed folder takes rows of the same measurement only: same dataset, profile, --limit,
        machine and harness version as every row there, the same model bytes as rows of that model file,
        and the same options and runtime version as rows of that target. One line names what differs."""
        per_target = ("options", "runtime")
        fields = [f for f in ident.FIELDS if f != "model_sha256" and f not in per_target]
        for row in self.rows:
            if not row.identity:
                raise HarnessError(f"--resume: {self.path} holds rows written without an identity (an older harness); "
                                   "their dataset, model and settings cannot be checked: choose another --out")
            checked = fields + (["model_sha256"] if row.model == model else []) + \
                (list(per_target) if row.target == target else [])
            problem = ident.mismatch(row.identity, identity, [f for f in ident.FIELDS if f in checked])
            if problem:
                raise HarnessError(f"--resume: {self.path} holds another measurement ({row.target} bs={row.bs}: "
                                   f"{problem}); choose another --out, or --overwrite")

    def close(self) -> None:
        """Release the folder's lock (also on exit or crash: the kernel drops it)."""
        self.folder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def done(self, key: tuple) -> bool:
        """Is this measurement already here (and did it run)? A None precision in key matches any
        precision (the target may take it from its settings file rather than the command line)."""
        target, model, profile, precision, bs = key
        return any(r.ok and row_key(r)[:3] == (target, model, profile) and row_key(r)[4] == bs
                   and (precision is None or row_key(r)[3] == precision) for r in self.rows)

    def add(self, row: ResultRow | dict) -> None:
        if isinstance(row, dict):
            row = ResultRow.from_dict(row)
        if row.status != "ok":
            interrupts.check()  # a failure recorded after Ctrl-C would be the interrupt's, not the row's
        self.rows = [r for r in self.rows if row_key(r) != row_key(row)] + [row]
        self.save()

    def save(self) -> None:
        text = strict_json({"rows": [r.to_dict() for r in self.rows], "env": self.env}, indent=2, sort_keys=False)
        try:
            atomic_write_text(safe_target(self.out_dir, RESULTS_FILE), text + "\n")
            if self.on_save is not None:
                self.on_save(self.rows, self.env, self.out_dir)
        except OSError as exc:
            # The previous results.json is intact (atomic writes): say so rather than show a traceback.
            raise HarnessError(f"cannot write {self.path} ({exc.strerror or exc}); the file still holds the "
                               f"rows finished before this one") from None
