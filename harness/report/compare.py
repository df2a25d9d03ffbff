"""Merge result rows from several results.json files into one comparison table (a pandas DataFrame).

Rows in, derived figures out: machine labels, repeats (mean, std, count), the baseline each row is
compared with, ΔmAP, speedup, a throughput spread and per-class AP differences. Nothing here
recomputes a metric from detections; every figure comes from the rows or is arithmetic on them.

Terms used throughout:
- *machine*: the (host, cpu, cores, gpu, os) a row ran on, labelled by host name: its input's `env`, or for a
  run --cluster row its worker's (`cluster.env`; harness.measure.results.row_env).
- *key*: (machine, profile, model, target, precision, mode, bs). Rows sharing a key, from different
  input files, are repeats of one measurement; the table shows their mean, and std / count of throughput.
- *mode*: latency or throughput (harness.targets.modes); "" for rows that did not record one (device rows,
  results files before schema 3), which count as a mode of their own.
- *baseline*: one target (default: the fp32 rows of the first target by declared reference_rank
  present, else none), matched per row at the
  same batch size, preferring the same dataset, machine, profile and model in that order. Speedups
  compare rows of the same mode only: a row whose mode the baseline lacks at its batch size gets no
  speedup, and says why.
- *spread*: how far apart two throughputs must be to differ: sd/mean over repeats, else the row's own
  95% confidence half-width (fps_ci95, from the timing loop's windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.core.errors import HarnessError
from harness.machine.state import NUMERIC_COLUMNS as MACHINE_NUMERIC
from harness.machine.state import TEXT_COLUMNS as MACHINE_TEXT
from harness.machine.state import flat_fields as machine_fields
from harness.measure import identity as ident
from harness.measure.results import RESULTS_FILE, load_results, load_rows, row_env
from harness.measure.row import METRIC_NAMES as METRICS
from harness.measure.row import ResultRow
from harness.report.gpu_split import split_figures

NUMERIC = (*METRICS, "fps", "e2e_fps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "images",
           "detections", "iterations", "bench_seconds", *MACHINE_NUMERIC)  # and the targets' split_figures()
COUNTS = ("images", "detections", "iterations")
KEY = ("machine", "profile", "model", "target", "precision", "mode", "bs")
SPREAD_LARGE = 0.10  # relative spread above which a row's throughput is called noisy


@dataclass
class Source:
    """One input file: where it came from, its rows and its environment (the host that ran the command;
    a cluster row ran on another, row_env)."""

    path: str
    rows: list[ResultRow]
    env: dict
    machines: dict[int, str] = field(default_factory=dict)  # id(row) -> the label of the machine it ran on

    def env_of(self, row: ResultRow) -> dict:
        return row_env(row, self.env)

    def machine_of(self, row: ResultRow) -> str:
        return self.machines[id(row)]


@dataclass
class ComparisonPage:
    """Everything the comparison page shows, already computed and in display order."""

    table: pd.DataFrame                      # one row per key, sorted; full-precision values
    machines: dict[str, dict] = field(default_factory=dict)   # label -> merged env (values: sorted lists)
    baseline: tuple[str, str] | None = None  # (target, precision)
    per_class: list[dict] = field(default_factory=list)       # one entry per non-baseline series
    overlaps: list[dict] = field(default_factory=list)        # pairs whose throughput cannot be told apart
    sources: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)          # rows that did not run: where, what, why
    duplicates: int = 0                                        # rows met twice (a copied file), counted once
    ignored: list[str] = field(default_factory=list)          # inputs that were not results, one line each

    @property
    def multi_machine(self) -> bool:
        return len(self.machines) > 1


# --------------------------------------------------------------------------------------------- inputs

def resolve_input(path: str | Path) -> Path:
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def results_inputs(paths) -> tuple[list[Path], list[str]]:
    """(results.json files to read, one-line notes on inputs ignored). A shell glob such as
    `results/*` also matches READMEs and folders of other things: those are ignored and said so; a
    .json file or a folder holding results.json is read (and must be valid). One file given twice,
    under two spellings or through a link, is read once."""
    if not paths:
        raise HarnessError("no results given: pass folders holding results.json or results.json files")
    found, ignored, seen = [], [], set()
    for raw in paths:
        path = resolve_input(raw)
        if not path.exists() and Path(raw).suffix != ".json":
            raise HarnessError(f"results file not found: {path}")
        if path.suffix != ".json" or (Path(raw).is_dir() and not path.is_file()):
            ignored.append(f"ignored {raw}: not a results folder (no {RESULTS_FILE}) or a .json file")
            continue
        real = path.resolve()
        if real in seen:
            ignored.append(f"ignored {raw}: the same file as an earlier input")
            continue
        seen.add(real)
        found.append(path)
    if not found:
        raise HarnessError(f"no results among the inputs ({'; '.join(ignored)})")
    return found, ignored


def load_sources(paths, ignored: list[str] | None = None) -> list[Source]:
    """Load every results input (see results_inputs); a bad one is a HarnessError naming the file.
    Notes on ignored inputs are appended to `ignored` when given."""
    files, skipped = results_inputs(paths)
    if ignored is not None:
        ignored.extend(skipped)
    sources = []
    for path in files:
        data = load_results(path)
        raw = data["rows"]
        if not raw:
            raise HarnessError(f"results file {path}: holds no rows (did the run finish any batch size?)")
        for i, row in enumerate(raw):
            missing = [k for k in ("target", "bs") if not isinstance(row, dict) or row.get(k) is None]
            if missing:
                raise HarnessError(f"results file {path}: row {i + 1} lacks {', '.join(missing)}")
        rows = load_rows(path)
        env = data.get("env") if isinstance(data.get("env"), dict) else {}
        sources.append(Source(path=str(path), rows=rows, env=env))
    sources.sort(key=lambda s: s.path)
    _label_machines(sources)
    return sources


def machine_identity(env: dict) -> tuple:
    return tuple(str(env.get(k)) for k in ident.MACHINE_FIELDS)


def _label_machines(sources: list[Source]) -> None:
    """Label each distinct machine the rows ran on by its host name (host#2, ... when different machines
    share one)."""
    identities = sorted({machine_identity(s.env_of(r)) for s in sources for r in s.rows})
    labels: dict[tuple, str] = {}
    used: dict[str, int] = {}
    for machine in identities:
        host = machine[0] if machine[0] not in ("None", "") else "unknown"
        used[host] = used.get(host, 0) + 1
        labels[machine] = host if used[host] == 1 else f"{host}#{used[host]}"
    for source in sources:
        source.machines = {id(r): labels[machine_identity(source.env_of(r))] for r in source.rows}


# --------------------------------------------------------------------------------------------- rows

def _covers_short(text: str | None) -> str:
    """A short name for a row's `time_covers` text (the full text goes in the page's legend)."""
    t = (text or "").lower()
    if not t:
        return "-"
    if "end to end" in t or "end-to-end" in t or "e2e" in t:
        return "end to end"
    if "emulate" in t:
        return "host (emulated)"
    if "device" in t and ("only" in t or "compute" in t):
        return "device compute"
    return "inference call"


def _flat(source: Source, row: ResultRow) -> dict:
    bench = row.bench or {}
    runtime = row.runtime
    flags = set(row.flags)
    return {
        "machine": source.machine_of(row),
        "host": source.env_of(row).get("host"),
        "profile": str(row.profile or "-"),
        "model": str(row.model or "-"),
        "target": str(row.target),
        "origin": row.source,
        "device": row.device or "",
        "precision": str(row.precision or "fp32"),
        "bs": int(row.bs),
        **{k: _num(getattr(row, k)) for k in (*METRICS, "fps", "e2e_fps", "latency_ms_p50", "latency_ms_p90",
                                              "latency_ms_p99", "images", "detections")},
        # the targets' declared stage splits (read back as extra where the target was not imported)
        **{k: _num(row.target_figures.get(k, row.extra.get(k))) for k in split_figures()},
        "iterations": _num(bench.get("iterations")),
        "bench_seconds": _num(bench.get("seconds")),
        **{k: (_num(v) if k in MACHINE_NUMERIC else v) for k, v in machine_fields(row.machine_state).items()},
        "concurrency": bench.get("concurrency"),
        "mode": row.mode,
        "requests": row.requests,
        "streams": row.streams,
        "threads": row.threads,
        "latency_samples": _num(row.latency_samples),
        "fps_ci95": _num(row.fps_ci95),
        "fps_converged": row.fps_converged,
        "time_covers": row.time_covers or "-",
        "covers": _covers_short(row.time_covers),
        "batch_mode": row.batch_mode or "-",
        "flags": sorted(flags),
        "fallback": "fallback" in flags,
        "per_batch_model": "per-batch-model" in flags,
        "padded": "padded" in flags,
        "emulated": "emulated" in flags,
        "suspect": "suspect" in flags,
        "skipped": len(row.skipped_images),
        "runtime": str(runtime.get("runtime") or "-") if isinstance(runtime, dict) else str(runtime),
        "dataset": str(row.dataset or "-"),
        "annotations": str(row.annotations or "-"),
        "evaluator": str(row.evaluator or "-"),
        "notes": [str(n) for n in row.notes],
        "per_class_ap": dict(row.per_class_ap),
        "source": source.path,
        "identity": row.identity,
        "setup": ident.setup_signature(row.identity) or _legacy_setup(row),
        "dataset_id": (row.identity.get("dataset") or {}).get("image_list_sha256") or str(row.annotations or "-"),
        "fingerprint": (ident.setup_signature(row.identity), row.target, row.precision, row.bs, row.finished,
                        row.fps, row.map),
    }


def _legacy_setup(row: ResultRow) -> str:
    """Rows written before identities: what they do record of their setup (dataset, image count,
    the runtime settings), so rows of different subsets or settings are still not averaged."""
    runtime = row.runtime if isinstance(row.runtime, dict) else {}
    return repr((row.dataset, row.annotations, row.images, runtime.get("hint"), runtime.get("threads"),
                 runtime.get("nireq")))


def _num(value):
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _join_unique(values) -> str:
    out = []
    for v in values:
        for item in (v if isinstance(v, list) else [v]):
            if item not in out:
                out.append(item)
    return "; ".join(str(x) for x in out)


def _aggregate(group: list[dict]) -> dict:
    """One table row from the repeats of one key (a single row passes through unchanged)."""
    group = sorted(group, key=lambda r: r["source"])
    first = group[0]
    out = {k: first[k] for k in (*KEY, "host")}
    n = len(group)
    for k in (*NUMERIC, *split_figures()):
        values = [r[k] for r in group if not math.isnan(r[k])]
        out[k] = (values[0] if len(values) == 1 else sum(values) / len(values)) if values else math.nan
        if k in COUNTS and not math.isnan(out[k]) and float(out[k]).is_integer():
            out[k] = int(out[k])
    fps_values = [r["fps"] for r in group if not math.isnan(r["fps"])]
    out["repeats"] = n
    out["fps_values"] = fps_values
    if len(fps_values) > 1:
        mean = out["fps"]
        out["fps_std"] = math.sqrt(sum((v - mean) ** 2 for v in fps_values) / (len(fps_values) - 1))
    else:
        out["fps_std"] = math.nan
    p50, p90 = out["latency_ms_p50"], out["latency_ms_p90"]
    out["latency_p90_p50"] = p90 / p50 if p50 and not math.isnan(p50) and not math.isnan(p90) else math.nan
    samples = [r["latency_samples"] for r in group if not math.isnan(r["latency_samples"])]
    out["latency_samples"] = int(min(samples)) if samples else math.nan  # the fewest: what every repeat supports
    cis = [r["fps_ci95"] for r in group if not math.isnan(r["fps_ci95"])]
    out["fps_ci95"] = max(cis) if cis else math.nan  # the widest of the repeats
    converged = [r["fps_converged"] for r in group if r["fps_converged"] is not None]
    out["fps_converged"] = all(converged) if converged else None
    if len(fps_values) > 1 and out["fps"]:
        out["spread"], out["spread_kind"] = out["fps_std"] / out["fps"], "repeats"
    elif not math.isnan(out["fps_ci95"]):
        out["spread"], out["spread_kind"] = out["fps_ci95"], "ci95"
    else:
        out["spread"], out["spread_kind"] = math.nan, "-"
    for k in ("time_covers", "covers", "batch_mode", "runtime", "dataset", "annotations", "evaluator", "origin",
              "device"):
        out[k] = _join_unique([r[k] for r in group])
    for k in ("concurrency", "requests", "streams", "threads"):
        out[k] = first[k]
    for k in MACHINE_TEXT:
        out[k] = _join_unique([r[k] for r in group if r[k]])
    known = [r["busy"] for r in group if r["busy"] is not None]
    out["busy"] = any(known) if known else None
    for k in ("fallback", "per_batch_model", "padded", "emulated", "suspect"):
        out[k] = any(r[k] for r in group)
    out["setup"] = first["setup"]
    out["identity"] = first["identity"]
    out["dataset_id"] = first["dataset_id"]
    out["flags"] = sorted({f for r in group for f in r["flags"]})
    out["skipped"] = max(r["skipped"] for r in group)
    out["notes"] = list(dict.fromkeys(n for r in group for n in r["notes"]))
    out["sources"] = _join_unique([r["source"] for r in group])
    pcs = [r["per_class_ap"] for r in group if r["per_class_ap"]]
    classes = sorted({c for pc in pcs for c in pc})
    out["per_class_ap"] = {c: sum(pc[c] for pc in pcs if c in pc) / sum(1 for pc in pcs if c in pc)
                           for c in classes} if pcs else {}
    return out


# --------------------------------------------------------------------------------------------- baseline

def pick_baseline(table: pd.DataFrame, name: str | None = None) -> tuple[str, str] | None:
    """(target, precision) of the baseline: --baseline NAME (its fp32 rows if any), else the fp32 rows of the
    targets that declare a reference_rank, lowest first."""
    present = set(zip(table["target"], table["precision"]))
    if name:
        precisions = sorted(p for t, p in present if t == name)
        if not precisions:
            targets = ", ".join(sorted({t for t, _ in present}))
            raise HarnessError(f"--baseline {name}: no rows for that target in the inputs (targets: {targets})")
        return (name, "fp32" if "fp32" in precisions else precisions[0])
    from harness.targets import reference_order

    for pair in ((name, "fp32") for name in reference_order()):  # the targets' declared reference_rank
        if pair in present:
            return pair
    return None


def _match_score(row: dict, cand: dict) -> tuple:
    return (cand["dataset_id"] == row["dataset_id"], cand["machine"] == row["machine"],
            cand["profile"] == row["profile"], cand["model"] == row["model"])


def _find_baseline(row: dict, candidates: list[dict], same_bs: bool) -> dict | None:
    pool = [c for c in candidates if c["bs"] == row["bs"]] if same_bs else candidates
    if not pool:
        return None
    # best match first; ties: smallest bs, then the sorted key, so the choice never depends on input order
    return min(pool, key=lambda c: (tuple(not s for s in _match_score(row, c)), c["bs"],
                                     tuple(str(c[k]) for k in KEY)))


def _match_label(row: dict, base: dict) -> str:
    """'' for a like-for-like baseline, else what differs (shown as a marker + footnote)."""
    diffs = []
    if base["dataset_id"] != row["dataset_id"]:
        diffs.append("other dataset")
    if base["machine"] != row["machine"]:
        diffs.append("other machine")
    if base["profile"] != row["profile"] or base["model"] != row["model"]:
        diffs.append("other model")
    if base["bs"] != row["bs"]:
        diffs.append(f"bs {base['bs']}")
    return ", ".join(diffs)


def baseline_label(base: dict, multi_machine: bool) -> str:
    text = f"{base['target']} {base['precision']}{' ' + base['mode'] if base['mode'] else ''} bs {base['bs']}"
    if multi_machine:
        text += f" @ {base['machine']}"
    return f"{text} ({base['profile']})"


# --------------------------------------------------------------------------------------------- build

def compare(paths, baseline: str | None = None, top_classes: int = 10,
            loaded: tuple[list[Source], list[str]] | None = None) -> ComparisonPage:
    """Load inputs and compute the comparison (table, machines, per-class deltas, overlaps). loaded:
    (sources, notes on ignored inputs) the caller already read with load_sources (each file is read once)."""
    if loaded is not None:
        sources, ignored = loaded[0], list(loaded[1])
    else:
        ignored = []
        sources = load_sources(paths, ignored)
    failed = [{"machine": s.machine_of(r), "target": r.target, "precision": r.precision, "bs": r.bs, "model": r.model,
               "profile": r.profile, "error": r.error or "", "source": s.path}
              for s in sources for r in s.rows if r.status == "failed"]
    flat, seen, duplicates = [], set(), 0
    for s in sources:
        for r in s.rows:
            if r.status == "failed":
                continue
            row = _flat(s, r)
            if row["fingerprint"] in seen:  # the same row in a copied file: one measurement, counted once
                duplicates += 1
                continue
            seen.add(row["fingerprint"])
            flat.append(row)
    if not flat:
        raise HarnessError(f"no row of {', '.join(s.path for s in sources)} ran ({len(failed)} failed): nothing to compare")
    groups: dict[tuple, list[dict]] = {}
    for r in flat:
        groups.setdefault((*(r[k] for k in KEY), r["setup"]), []).append(r)
    rows = [_aggregate(g) for g in groups.values()]
    _label_variants(rows)
    table = pd.DataFrame(rows)
    base_pair = pick_baseline(table, baseline)
    machines = _machines(sources, rows)
    multi = len(machines) > 1
    candidates = [r for r in rows if base_pair and (r["target"], r["precision"]) == base_pair]
    for r in rows:
        r["is_baseline"] = bool(base_pair) and (r["target"], r["precision"]) == base_pair
        # speed: only against the baseline's row of the same mode and batch size
        fast = _find_baseline(r, [c for c in candidates if c["mode"] == r["mode"]], same_bs=True)
        # accuracy depends on neither mode nor batch size: the closest baseline row there is
        acc = fast or _find_baseline(r, candidates, same_bs=True) or _find_baseline(r, candidates, same_bs=False)
        r["baseline"] = baseline_label(acc, multi) if acc else ""
        r["baseline_match"] = _match_label(r, acc) if acc else ""
        for k in ("map", "map50"):
            r[f"delta_{k}"] = r[k] - acc[k] if acc else math.nan
        r["speedup"] = r["fps"] / fast["fps"] if fast and fast["fps"] else math.nan
        r["speedup_match"] = _match_label(r, fast) if fast else ""
        r["speedup_missing"] = _missing_speedup(r, candidates) if not fast else ""
    rows.sort(key=lambda r: _sort_key(r))
    _plot_columns(rows)
    per_class = _per_class(rows, candidates, top_classes) if base_pair else []
    overlaps = _overlaps(rows)
    table = pd.DataFrame(rows).reset_index(drop=True)
    return ComparisonPage(table=table, machines=machines, baseline=base_pair, per_class=per_class,
                      overlaps=overlaps, sources=[s.path for s in sources], failed=failed,
                      duplicates=duplicates, ignored=ignored)


def _label_variants(rows: list[dict]) -> None:
    """Rows that share machine, model, target, precision and bs but not their setup (another image
    subset, other threads...) are different measurements: each gets a label saying what differs."""
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        r["variant"] = ""
        by_key.setdefault(tuple(r[k] for k in KEY), []).append(r)
    for group in by_key.values():
        if len(group) > 1:
            labels = ident.describe_difference([r["identity"] or {} for r in group])
            for i, (r, label) in enumerate(zip(group, labels)):
                r["variant"] = label or f"setup {i + 1}"


def series_label(row, multi_machine: bool, multi_model: bool) -> str:
    """A plotted line: target and precision (and setup variant, model, machine where they vary)."""
    label = f"{row['target']} {row['precision']}"
    if row.get("variant"):
        label += f" ({row['variant']})"
    if multi_model:
        label += f" [{row['profile']}]"
    if multi_machine:
        label += f" @ {row['machine']}"
    return label


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (speed, accuracy) points: True where no other point is at least as good in both and better in
    one (NaN points are never on the front)."""
    out = []
    for i, (x, y) in enumerate(points):
        if math.isnan(x) or math.isnan(y):
            out.append(False)
            continue
        out.append(not any(j != i and not (math.isnan(a) or math.isnan(b)) and a >= x and b >= y and (a > x or b > y)
                           for j, (a, b) in enumerate(points)))
    return out


def _plot_columns(rows: list[dict]) -> None:
    """What the plots draw, as columns (so every plotted figure is also in the CSV): the series and
    point labels, the throughput's 95% error bar in img/s (fps x the row's fps_ci95), the Pareto front."""
    multi_machine = len({r["machine"] for r in rows}) > 1
    multi_model = len({(r["profile"], r["model"]) for r in rows}) > 1
    front = pareto_front([(r["fps"], r["map"]) for r in rows])
    for r, on_front in zip(rows, front):
        r["series"] = series_label(r, multi_machine, multi_model)
        r["point_label"] = f"{r['series']} bs {r['bs']}" + (f" {r['mode']}" if len({x['mode'] for x in rows}) > 1 else "")
        # a half-width is never negative: one read from a damaged file draws no bar (matplotlib refuses it)
        r["fps_err95"] = (r["fps"] * r["fps_ci95"] if not (math.isnan(r["fps"]) or math.isnan(r["fps_ci95"]))
                          and r["fps"] >= 0 and r["fps_ci95"] >= 0 else math.nan)
        r["pareto"] = on_front


def mode_label(mode: str) -> str:
    return f"{mode} mode" if mode else "no recorded mode"


def _missing_speedup(r: dict, candidates: list[dict]) -> str:
    """Why a row has no speedup: '' when the baseline has no row at its batch size at all (nothing to
    say), else that the baseline's rows there are of another mode."""
    others = sorted({c["mode"] for c in candidates if c["bs"] == r["bs"] and c["mode"] != r["mode"]})
    if not others:
        return ""
    return (f"no speedup: the baseline's bs {r['bs']} rows are in {', '.join(map(mode_label, others))}, this row in "
            f"{mode_label(r['mode'])} (speedups compare rows of one mode)")


def _sort_key(r: dict) -> tuple:
    return (r["machine"], r["profile"], r["model"], not r.get("is_baseline", False), r["target"],
            r["precision"], r["mode"], r["bs"], r["variant"])


def _machines(sources: list[Source], rows: list[dict]) -> dict[str, dict]:
    """Per machine label: every env value seen (sorted, distinct), the runtimes its rows used, its files."""
    out: dict[str, dict] = {}
    for s in sources:
        for row in s.rows:
            info = out.setdefault(s.machine_of(row), {"sources": set(), "packages": {}, "runtimes": set()})
            info["sources"].add(s.path)
            for k, v in s.env_of(row).items():
                if k == "packages":
                    for name, version in (v or {}).items():
                        info["packages"].setdefault(name, set()).add(str(version))
                elif v not in (None, ""):
                    info.setdefault(k, set()).add(str(v))
    for r in rows:
        for rt in r["runtime"].split("; "):
            if rt and rt != "-":
                out[r["machine"]]["runtimes"].add(f"{rt} ({r['target']})")
    return {label: {k: (sorted(v) if isinstance(v, set) else
                        {n: sorted(vs) for n, vs in sorted(v.items())} if isinstance(v, dict) else sorted(v))
                    for k, v in info.items()}
            for label, info in sorted(out.items())}


def _per_class(rows: list[dict], candidates: list[dict], top: int) -> list[dict]:
    """Per non-baseline series (machine, profile, model, target, precision): top-N AP losses vs baseline."""
    series: dict[tuple, dict] = {}
    for r in rows:  # rows are sorted, so the first row of a series has its smallest bs
        if r["is_baseline"] or not r["per_class_ap"]:
            continue
        series.setdefault(tuple(r[k] for k in KEY[:-1]), r)
    out = []
    for r in series.values():
        base = _find_baseline(r, [c for c in candidates if c["per_class_ap"]], same_bs=False)
        base = _find_baseline(r, [c for c in candidates if c["per_class_ap"]], same_bs=True) or base
        if not base:
            continue
        common = sorted(set(r["per_class_ap"]) & set(base["per_class_ap"]))
        deltas = [{"class": c, "baseline_ap": base["per_class_ap"][c], "ap": r["per_class_ap"][c],
                   "delta": r["per_class_ap"][c] - base["per_class_ap"][c]} for c in common]
        deltas.sort(key=lambda d: (d["delta"], d["class"]))
        changed = [d for d in deltas if d["delta"] != 0]
        out.append({"row": r, "baseline": base, "classes": len(common), "worst": changed[:top],
                    "mean_delta": sum(d["delta"] for d in deltas) / len(deltas) if deltas else math.nan,
                    "losses": sum(1 for d in deltas if d["delta"] < 0)})
    return out


def throughput_interval(r: dict) -> tuple[float, float]:
    """fps ± its spread (relative): std/mean over repeats, else the loop's 95% confidence half-width."""
    s = r["spread"]
    if math.isnan(r["fps"]) or math.isnan(s):
        return (math.nan, math.nan)
    return (r["fps"] * (1 - s), r["fps"] * (1 + s))


def _overlaps(rows: list[dict]) -> list[dict]:
    """Pairs at the same batch size and mode (and on the same model) whose throughput intervals overlap."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["bs"] != b["bs"] or a["mode"] != b["mode"] or a["profile"] != b["profile"] or a["model"] != b["model"]:
                continue
            lo_a, hi_a = throughput_interval(a)
            lo_b, hi_b = throughput_interval(b)
            if any(math.isnan(v) for v in (lo_a, hi_a, lo_b, hi_b)):
                continue
            if lo_a <= hi_b and lo_b <= hi_a:
                out.append({"a": a, "b": b})
    return out


# --------------------------------------------------------------------------------------------- export

EXPORT_COLUMNS = (
    "machine", "host", "profile", "model", "target", "origin", "device", "precision", "bs", "images", *METRICS,
    "delta_map", "delta_map50", "fps", "fps_std", "repeats", "spread", "spread_kind", "latency_p90_p50",
    "speedup", "speedup_missing", "e2e_fps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
    "latency_samples", "fps_ci95", "fps_converged", "iterations", "bench_seconds", "mode", "requests", "streams",
    "threads", "concurrency", "covers", "time_covers", "batch_mode", "flags", "fallback", "per_batch_model", "padded",
    "emulated", "suspect", "skipped",
    "is_baseline", "baseline", "baseline_match", "speedup_match", "variant", "runtime", "dataset", "annotations",
    "evaluator", "detections", "notes", "sources",
    # what the plots draw (harness.report.plots) and the machine state of each row (harness.machine.state)
    "series", "point_label", "fps_err95", "pareto", "busy", *MACHINE_NUMERIC, *MACHINE_TEXT,
)


def export_frame(comparison: ComparisonPage) -> pd.DataFrame:
    """The merged table for CSV/JSON: flat columns, full-precision values (no rounding)."""
    table = comparison.table
    # the targets' stage figures only where some row has them (a CPU-only table gets no empty GPU columns)
    present = [c for c in split_figures() if c in table.columns and table[c].notna().any()]
    frame = table[[c for c in (*EXPORT_COLUMNS, *present) if c in table.columns]].copy()
    frame["fps_values"] = table["fps_values"].map(lambda v: " ".join(repr(x) for x in v))
    frame["notes"] = table["notes"].map(lambda v: " | ".join(v))
    frame["flags"] = table["flags"].map(lambda v: " ".join(v))
    return frame
