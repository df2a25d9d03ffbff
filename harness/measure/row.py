"""The one results row: every source (an in-process run, a device's output folder, an emulated
device run) builds a ResultRow, and results.json, terminal tables and reports read it back.

What a row *is* lives in typed fields: `status` and `error` (a row that could not run is kept, with
its one-line reason), `source` (who measured it), `flags` (a fixed vocabulary, below) and structured
`skipped_images`, instead of being recovered from note text. `notes` stay free text for people.
A metric that is undefined (pycocotools' -1: no ground truth of that size) is None, shown as "-".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from harness.machine.state import BUSY_SHARE, MachineState
from harness.targets.figures import TARGET_FIGURES, reserve
from harness.targets.modes import MODES

SCHEMA_VERSION = 3  # 3: mode, requests, streams, threads, latency_samples, fps_ci95, fps_converged
STATUSES = ("ok", "partial", "failed")  # partial: timing kept, accuracy could not be computed
SOURCES = ("run", "device", "emulated")
METRIC_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
SUSPECT_MAP = 0.01

#: flag -> what it means (reports print this legend)
FLAGS = {
    "fallback": "the target fell back to another device (see notes)",
    "per-batch-model": "a different model file per batch size",
    "padded": "a short last batch was padded to the fixed batch size (padding not counted in mAP)",
    "skipped-images": "unreadable images were left out of mAP",
    "reused-images": "the accuracy pass reused an earlier row's resized images (its e2e time excludes JPEG decoding)",
    "suspect": f"mAP below {SUSPECT_MAP} (with detections, or none at all): the profile likely does not fit the model",
    "emulated": "an NPU tool emulated on this machine's CPU (ONNX Runtime), not a device measurement",
    "loop-mismatch": "outputs computed inside the timing loop differ from a plain inference of the same batch",
    "no-accuracy": "timing only (harness bench): no dataset, so no accuracy was measured",
    "busy-machine": f"other processes took more than {BUSY_SHARE:.0%} of the CPU while the row was timed "
                    "(its machine state and notes say how much, in which window)",
    "unconverged": "the timing loop reached its time cap before the throughput's 95% confidence interval got under "
                   "its target (fps_ci95 says how wide it was)",
}

#: how tables print a flag where its name differs from the key
FLAG_LABELS = {"fallback": "FALLBACK", "per-batch-model": "per-batch model"}


def flag_label(flag: str) -> str:
    return FLAG_LABELS.get(flag, flag)


def target_label(target: str, source: str, device: str = "") -> str:
    """The target as tables print it: an emulated NPU row never reads like a device row, and a device
    row names the device that measured it."""
    if source == "emulated":
        return f"{target} (emulated)"
    if source == "device" and device:
        return f"{target} @ {device}"
    return str(target)


@dataclass
class ResultRow:
    target: str
    bs: int
    model: str = ""
    profile: str = ""
    precision: str = "fp32"
    source: str = "run"
    #: what measured a device/emulated row (e.g. "Ascend 310P3", from `decode --device` or the tool's
    #: summary; "emulated: ONNX Runtime CPU on <cpu>"), never the host that ran `harness decode`
    device: str = ""
    status: str = "ok"
    error: str | None = None
    images: int = 0
    map: float | None = None
    map50: float | None = None
    map75: float | None = None
    map_small: float | None = None
    map_medium: float | None = None
    map_large: float | None = None
    fps: float | None = None
    e2e_fps: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    #: how many latencies the percentiles come from; a percentile the count does not support is None
    #: (harness.targets.timing.PERCENTILE_MIN_SAMPLES: p90 needs 10, p99 100)
    latency_samples: int | None = None
    #: relative 95% confidence half-width of fps (0.01 = ±1%) over the timing loop's windows
    fps_ci95: float | None = None
    fps_converged: bool | None = None  # the loop reached its confidence target before its time cap
    #: "latency" or "throughput" (harness.targets.modes); "" where not recorded (device rows, schema 2 rows)
    mode: str = ""
    requests: int | None = None  # batches in flight in the timing loop
    streams: int | None = None  # the runtime's parallel streams (ov NUM_STREAMS, trt CUDA streams, ort requests)
    threads: int | None = None  # CPU inference threads in all (None: the runtime's default, or a GPU target)
    stage_ms: dict = field(default_factory=dict)
    bench: dict | None = None
    time_covers: str = ""
    batch_mode: str = ""
    #: a fixed-batch-1 ONNX rewritten to batch N (harness.model.batch_rewrite.BatchModel.row_field): the
    #: largest abs difference of its outputs from N batch-1 runs, what it was checked on, the file
    batch_rewrite: dict | None = None
    runtime: dict = field(default_factory=dict)
    dataset: str = ""
    annotations: str = ""
    evaluator: str = ""
    detections: int = 0
    skipped_images: list = field(default_factory=list)  # "file: reason"
    flags: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    per_class_ap: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    finished: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    schema: int = SCHEMA_VERSION
    target_figures: dict = field(default_factory=dict)  # TARGET_FIGURES, flattened into the row's JSON
    #: files the row saved next to its results.json, paths relative to it: {"detections": ..., "outputs": ...}
    #: (run --save-detections / --save-outputs N; read by report --fidelity)
    artifacts: dict = field(default_factory=dict)
    #: what the machine did while the row ran: other load, clocks, memory, energy (harness.machine)
    machine_state: MachineState | None = None
    extra: dict = field(default_factory=dict)  # keys of a row this version does not know, kept as they were

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"row status {self.status!r} not in {STATUSES}")
        if self.source not in SOURCES:
            raise ValueError(f"row source {self.source!r} not in {SOURCES}")
        if self.mode not in ("", *MODES):
            raise ValueError(f"row mode {self.mode!r} not in {MODES}")
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"row flags {sorted(unknown)} not in the vocabulary")
        clash = sorted(set(self.target_figures) & ROW_FIELDS)
        if clash:
            raise ValueError(f"target figures {clash} would overwrite row fields")
        if self.skipped_images:
            self.add_flag("skipped-images")
        if self.source == "emulated":
            self.add_flag("emulated")
        if (self.status == "ok" and self.map is not None and self.map < SUSPECT_MAP and "suspect" not in self.flags
                and (self.detections > 0 or self.images > 0)):
            self.add_flag("suspect")
            found = (f"with {self.detections} detections" if self.detections else
                     f"and no detection at all on {self.images} images")
            self.notes.append(f"suspect: mAP {self.map:.4f} {found}; the profile likely does not fit the model "
                              "(check colour order, normalisation, resize, decoder)")

    def add_flag(self, flag: str) -> None:
        if flag not in FLAGS:
            raise ValueError(f"unknown row flag {flag!r}")
        if flag not in self.flags:
            self.flags.append(flag)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def __getitem__(self, key: str):
        """Read access by the JSON key (row["map"]), as results.json holds the row."""
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("target_figures", "extra")}
        out.update(self.target_figures)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ResultRow:
        """A row as results.json holds it, also rows of schema 1 (before typed rows), whose flags were
        only in the note text: they are read here, once, so nothing downstream parses notes."""
        names = {f.name for f in fields(cls)} - {"target_figures", "extra"}
        values = {k: v for k, v in data.items() if k in names}
        values["target_figures"] = {k: data[k] for k in TARGET_FIGURES if data.get(k) is not None}
        values["extra"] = {k: v for k, v in data.items() if k not in names and k not in TARGET_FIGURES}
        values.setdefault("bs", 0)
        for key in ("notes", "skipped_images", "flags"):  # one string is one entry, never one per character
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        check_row_values(values)
        values["notes"] = list(values.get("notes") or [])
        values["machine_state"] = MachineState.from_dict(values.get("machine_state"))
        values["skipped_images"] = list(values.get("skipped_images") or [])
        values["flags"] = [f for f in (values.get("flags") or []) if f in FLAGS]
        if data.get("schema") is None:
            values["schema"] = 1
            values["flags"] = _flags_from_schema1(data)
        bench = data.get("bench") if isinstance(data.get("bench"), dict) else {}
        if values["schema"] < 3:  # the loop's figures lived in `bench` only
            values.setdefault("latency_samples", bench.get("iterations"))
            values.setdefault("requests", bench.get("concurrency"))
        if values.get("mode") not in MODES:
            values["mode"] = ""
        if values.get("source") not in SOURCES:
            values["source"] = "run"
        if values.get("status") not in STATUSES:
            values["status"] = "ok"
        return cls(**values)


ROW_FIELDS = frozenset(f.name for f in fields(ResultRow))
reserve(ROW_FIELDS)


#: the largest magnitude a row number may have: beyond it a table or plot would only mislead
ROW_NUMBER_LIMIT = 1e12
_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,), "list": (list,),
          "MachineState": (dict,)}  # a nested group is a mapping in the file (MachineState.from_dict reads it)


def check_row_values(values: dict) -> None:
    """Every known field of a row read from a file has its declared type, and every number is finite
    and of a sane size (results files are user input: a NaN, Infinity, a string or 1e308 would reach
    tables and plots). Raises ValueError naming the field."""
    declared = {f.name: str(f.type) for f in fields(ResultRow)}
    for name, value in values.items():
        if name in ("target_figures", "extra") or name not in declared:
            continue
        kinds = [k.strip() for k in declared[name].split("|")]
        if value is None:
            if "None" in kinds:
                continue
            raise ValueError(f"field {name!r} is null, expected {declared[name]}")
        allowed = tuple(t for k in kinds for t in _KINDS.get(k, ()))
        if not isinstance(value, allowed) or (isinstance(value, bool) and "bool" not in kinds):
            raise ValueError(f"field {name!r} = {_short(value)}: expected {declared[name]}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_number(name, value)
        if name == "per_class_ap":
            for cls_name, ap in value.items():
                if ap is not None:
                    if not isinstance(ap, (int, float)) or isinstance(ap, bool):
                        raise ValueError(f"field 'per_class_ap' [{_short(cls_name)}] = {_short(ap)}: expected a number")
                    _check_number(f"per_class_ap[{cls_name!r}]", ap)
    for name, value in (values.get("target_figures") or {}).items():
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            raise ValueError(f"field {name!r} = {_short(value)}: expected a number")
        if not isinstance(value, str):
            _check_number(name, value)


def _check_number(name: str, value) -> None:
    import math

    if not math.isfinite(value) or abs(value) > ROW_NUMBER_LIMIT:
        raise ValueError(f"field {name!r} = {_short(value)}: expected a finite number of magnitude <= {ROW_NUMBER_LIMIT:g}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _flags_from_schema1(data: dict) -> list[str]:
    notes = " ".join(str(n) for n in data.get("notes") or [])
    flags = []
    if "FALLBACK" in notes:
        flags.append("fallback")
    if "padded" in notes.lower():
        flags.append("padded")
    if data.get("batch_mode") == "per-batch model":
        flags.append("per-batch-model")
    if "reused the resized images" in notes:
        flags.append("reused-images")
    if "emulate" in notes:
        flags.append("emulated")
    return flags


def metric_fields(metrics: dict) -> dict:
    """The evaluator's metrics as row fields (rounded to 5 places; undefined stays None)."""
    out = {k: (None if metrics.get(k) is None else round(float(metrics[k]), 5)) for k in METRIC_NAMES}
    out["per_class_ap"] = {k: round(v, 5) for k, v in (metrics.get("per_class_ap") or {}).items()}
    return out


def failed_row(target: str, bs: int, error: str, **context) -> ResultRow:
    """A row for a (target, bs) that could not run: kept in results.json with its one-line reason."""
    return ResultRow(target=target, bs=bs, status="failed", error=error, **context)
