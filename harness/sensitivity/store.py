"""The search's results file: every finished measurement, one JSON line each, so Ctrl-C loses only
the variant in progress and `--resume` reuses the rest.

    sens/NAME/variants.jsonl   line 1: {"format", "identity"}; then one record per line:
                               {"kind": "reference" | "shortlist" | "variant" | "step", "key": ..., ...}
    sens/NAME/references/      the fp32 and all-int8 detections (harness.measure.artifacts format),
                               so variants measured after a resume pair with the same references

A line is appended and fsync'ed as soon as its measurement ends; a torn last line (the process was
killed while writing it) is dropped on reading. The identity says what the measurements depend on
(model bytes, profile, calibration images and method, subset, target and its options, harness and
runtime versions); a resume whose identity differs is refused with one line naming what differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.fileio import announce
from harness.core.folders import OutputFolder
from harness.measure.artifacts import read_detections, write_detections
from harness.measure.identity import mismatch

FORMAT = "harness-sensitivity/1"
RESULTS_FILE = "variants.jsonl"
REFERENCES_DIR = "references"
#: what makes two searches different measurements, in the order a mismatch is reported
FIELDS = ("model_sha256", "profile_sha256", "calibration", "dataset", "target", "options", "harness", "runtime")


class ResultsFile:
    def __init__(self, out: Path, identity: dict, records: list[dict]):
        self.out = out
        self.path = out / RESULTS_FILE
        self.identity = identity
        self.records: dict[str, dict] = {r["key"]: r for r in records}

    @classmethod
    def open(cls, folder: OutputFolder, identity: dict, resume: bool, overwrite: bool) -> ResultsFile:
        """A new file in an empty --out, or the existing one (--resume) when its identity matches.
        --overwrite removes what the harness wrote there (the manifest's files), nothing else."""
        out = folder.path
        existing = out / RESULTS_FILE
        if folder.entries():
            if overwrite:
                folder.clear()
            elif not resume:
                raise HarnessError(f"--out {out} is not empty: pass --resume to continue the search it holds, "
                                   "or --overwrite to start again")
            elif not existing.is_file():
                raise HarnessError(f"--resume: {out} holds no {RESULTS_FILE} (not a sensitivity search folder)")
            else:
                header, records = read_results(existing)
                differs = mismatch(header.get("identity", {}), identity, FIELDS)
                if differs:
                    raise HarnessError(f"--resume: {existing} is another search ({differs}); "
                                       "use another --out, or --overwrite to start again")
                folder.adopt(RESULTS_FILE)
                return cls(out, identity, records)
        store = cls(out, identity, [])
        store._append({"format": FORMAT, "identity": identity})
        return store

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def add(self, record: dict) -> dict:
        if "key" not in record or "kind" not in record:
            raise ValueError("a results record needs a kind and a key")
        self._append(record)
        self.records[record["key"]] = record
        return record

    def _append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        announce(self.path)  # listed in --out's manifest (once)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    # reference detections -------------------------------------------------------------------------

    def reference_path(self, name: str) -> Path:
        return self.out / REFERENCES_DIR / f"{name}.json.gz"

    def save_reference(self, name: str, images, detections: list[dict]) -> None:
        write_detections(self.reference_path(name), {int(i): Path(p).name for i, p in images}, detections)

    def load_reference(self, name: str) -> list[dict] | None:
        path = self.reference_path(name)
        return read_detections(path).detections if path.is_file() else None


def read_results(path: Path) -> tuple[dict, list[dict]]:
    """(header, records); a torn last line is dropped, any other unreadable line is one clear error."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # killed while writing its last line: that measurement is simply redone
            raise HarnessError(f"{path}: line {number} is not JSON (edited by hand?); "
                               "use --overwrite to start the search again") from None
    if not parsed or parsed[0].get("format") != FORMAT:
        raise HarnessError(f"{path}: not a harness sensitivity results file (expected {FORMAT} on line 1)")
    return parsed[0], parsed[1:]
