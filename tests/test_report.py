"""ComparisonPage reports (`harness report`): merged table, baseline deltas, plots, exports, determinism.

Real-run inputs come from harness.measure.runner on a tiny dynamic-batch ONNX detector built here (always
runs) and on ../shared nanodet-m-320 + coco-tiny (skipped where absent). Hand-made rows check the
arithmetic (ΔmAP, speedup, repeats, spread warnings) where exact expected values are needed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.core.errors import HarnessError
from harness.measure import runner
from harness.measure.envinfo import environment
from harness.measure.results import ResultsStore
from harness.profiles import load_profile
from harness.report import write_report, write_run_report
from harness.report.compare import compare
from harness.report.markdown import run_report_markdown
from tests.tinymodel import write_tiny_model, write_tiny_profile

SIZE = 64
STRIDES = (8, 16, 32)
CLASSES = 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------ tiny real model

def build_tiny_model(path: Path) -> Path:
    """A real 3-stride ONNX detector with a dynamic batch axis (tests/tinymodel.py)."""
    return write_tiny_model(path, size=SIZE, classes=CLASSES, strides=STRIDES, weight_std=0.5, seed=3)


def write_dataset(root: Path, count: int = 5) -> tuple[Path, Path]:
    """count JPEGs, each mostly one large coloured rectangle, and their COCO json."""
    rng = np.random.default_rng(5)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    for i in range(count):
        h, w = int(rng.integers(48, 96)), int(rng.integers(48, 96))
        img = np.full((h, w, 3), 20, np.uint8)
        x, y = int(rng.integers(0, 6)), int(rng.integers(0, 6))
        bw, bh = w - x - int(rng.integers(0, 6)), h - y - int(rng.integers(0, 6))
        cls = i % CLASSES
        img[y:y + bh, x:x + bw] = (230, 60, 30) if cls else (30, 200, 90)
        name = f"im{i:02d}.jpg"
        cv2.imwrite(str(images_dir / name), img)
        images.append({"id": 10 + i, "file_name": name, "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": 10 + i, "category_id": 1 + 2 * cls, "bbox": [x, y, bw, bh],
                     "area": bw * bh, "iscrowd": 0})
    cats = [{"id": 1, "name": "box_a"}, {"id": 3, "name": "box_b"}]
    ann = root / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return images_dir, ann


def run_targets(out_dir: Path, model, profile, images_dir, ann, targets, batch_sizes, seconds=0.2, limit=None):
    store = ResultsStore(out_dir, environment(), overwrite=True, on_save=write_run_report)
    for target in targets:
        config = runner.RunConfig(target=target, model=str(model), profile=profile, images_dir=images_dir,
                                  ann_path=ann, batch_sizes=list(batch_sizes), bench_seconds=seconds, max_seconds=seconds,
                                  warmup_seconds=0.05, min_iterations=3, limit=limit, workers=1)
        runner.run(config, store)
    return out_dir


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two real runs of the tiny model (ort + ov at bs 1,2), so every real row has a repeat."""
    root = tmp_path_factory.mktemp("tiny")
    model = build_tiny_model(root / "tiny.onnx")
    profile = load_profile(write_tiny_profile(root / "tiny.toml", size=SIZE, classes=CLASSES, strides=list(STRIDES)))
    images_dir, ann = write_dataset(root / "data")
    first = run_targets(root / "runs" / "a", model, profile, images_dir, ann, ["ort", "ov"], [1, 2])
    second = run_targets(root / "runs" / "b", model, profile, images_dir, ann, ["ort"], [1, 2])
    return first, second


# ------------------------------------------------------------------------------------ helpers

def parse_table(markdown: str) -> list[dict]:
    """The '## Results' table as a list of {column title: cell text}."""
    block = markdown.split("## Results", 1)[1].split("\n## ", 1)[0].strip().splitlines()
    lines = [ln for ln in block if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def fmt_fps(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


ENV_A = {"host": "box-a", "cpu": "Xeon A", "cores": 8, "gpu": None, "os": "Linux 6.1", "python": "3.11.7",
         "harness": "0.1.0", "git_commit": "abc1234", "packages": {"onnxruntime": "1.20.0", "openvino": "2025.0"},
         "onednn_max_cpu_isa": None}
ENV_B = {**ENV_A, "host": "box-b", "cpu": "EPYC B", "cores": 32, "gpu": "NVIDIA H100, 550.54",
         "packages": {"onnxruntime-gpu": "1.20.0", "tensorrt": "10.3"}}


def hand_row(target, precision="fp32", bs=1, map_=0.30, fps=100.0, p50=10.0, p90=10.5, per_class=None, **extra):
    row = {"target": target, "model": "m.onnx", "profile": "p", "precision": precision, "bs": bs, "images": 50,
           "map": map_, "map50": map_ + 0.2, "map75": map_, "fps": fps, "e2e_fps": fps / 2,
           "latency_ms_p50": p50, "latency_ms_p90": p90, "latency_ms_p99": p90 * 1.1,
           "bench": {"iterations": 100, "seconds": 1.0, "concurrency": 1, "warmup_seconds": 1.0},
           "time_covers": "inference call (host tensors in, host tensors out)", "batch_mode": "dynamic",
           "runtime": {"runtime": f"{target}-rt 1.0"}, "dataset": "d", "annotations": "d/ann.json",
           "evaluator": "pycocotools", "detections": 10, "skipped_images": [],
           "per_class_ap": per_class or {}, "notes": [], "finished": "2026-01-01T00:00:00"}
    row.update(extra)
    return row


def write_results(folder: Path, rows, env=ENV_A) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"rows": rows, "env": env}))
    return folder


# ------------------------------------------------------------------------------------ real runs

def test_table_numbers_equal_source_results(tiny_runs, tmp_path):
    first, second = tiny_runs
    out = tmp_path / "rep" / "report.md"
    write_report([str(first), str(second)], out)
    text = out.read_text(encoding="utf-8")
    table = parse_table(text)
    rows_a = json.loads((first / "results.json").read_text())["rows"]
    rows_b = json.loads((second / "results.json").read_text())["rows"]
    assert len(table) == 4  # ort bs 1,2 (repeated in both files), ov bs 1,2
    for cell in table:
        src = next(r for r in rows_a if r["target"] == cell["target"] and r["bs"] == int(cell["bs"]))
        assert cell["mAP"] == f"{src['map']:.4f}"
        assert cell["AP50"] == f"{src['map50']:.4f}"
        assert cell["p50 ms"] == f"{src['latency_ms_p50']:.2f}" or cell["target"] == "ort"
        if cell["target"] == "ov":  # single measurement: the figure is the source's, only rounded
            assert cell["img/s"] == fmt_fps(src["fps"])
            # p99 only from 100 latencies or more, else "-" with the count
            assert cell["p99 ms"] == (f"{src['latency_ms_p99']:.2f}" if src["latency_samples"] >= 100
                                      else f"- (n={src['latency_samples']})")
            assert cell["spread"] == f"±{src['fps_ci95'] * 100:.1f}% CI" + ("" if src["fps_converged"] else " (cap) ⚠")
        else:  # repeated in both files: mean ± sd over the two, n=2
            other = next(r for r in rows_b if r["bs"] == src["bs"])
            values = [src["fps"], other["fps"]]
            mean = sum(values) / 2
            assert cell["img/s"].startswith(fmt_fps(mean) + " ± ")
            assert "n=2" in cell["spread"]
            assert cell["flags"].split(", ")[0] == "baseline"
    # the exports keep full values: identical to the source for the single-measurement rows
    frame = compare([str(first), str(second)]).table
    for src in rows_a:
        row = frame[(frame.target == src["target"]) & (frame.bs == src["bs"])].iloc[0]
        for key in ("map", "map50", "map75", "map_small", "latency_ms_p90"):
            if src["target"] == "ov":  # an undefined metric (null in the file) is NaN in the table
                assert row[key] == src[key] or (src[key] is None and math.isnan(row[key]))
        assert row["map"] == src["map"]  # accuracy is identical across the repeats of a deterministic pass
    assert text.count("### Machine `") == 1


def test_real_run_speedup_and_delta_against_ort(tiny_runs, tmp_path):
    first, _ = tiny_runs
    table = compare([str(first)]).table
    rows = json.loads((first / "results.json").read_text())["rows"]
    for bs in (1, 2):
        ort = next(r for r in rows if r["target"] == "ort" and r["bs"] == bs)
        ov = next(r for r in rows if r["target"] == "ov" and r["bs"] == bs)
        got = table[(table.target == "ov") & (table.bs == bs)].iloc[0]
        assert got["speedup"] == pytest.approx(ov["fps"] / ort["fps"], rel=1e-12)
        assert got["delta_map"] == pytest.approx(ov["map"] - ort["map"], abs=1e-12)
        assert got["baseline"].startswith(f"ort fp32 throughput bs {bs}")


def test_markdown_and_pngs_are_deterministic_and_referenced(tiny_runs, tmp_path):
    first, second = tiny_runs
    a = write_report([str(first), str(second)], tmp_path / "a" / "report.md")
    b = write_report([str(second), str(first)], tmp_path / "b" / "report.md")  # input order must not matter
    assert [p.name for p in a] == ["report.md", "report-throughput.png", "report-map-vs-throughput.png",
                                   "report-latency.png"]
    text = a[0].read_text(encoding="utf-8")
    assert a[0].read_bytes() == b[0].read_bytes()
    for pa, pb in zip(a[1:], b[1:]):
        assert pa.read_bytes() == pb.read_bytes(), f"{pa.name} differs between two identical reports"
        width, height = png_size(pa)
        assert width > 300 and height > 200
        assert f"]({pa.name})" in text  # embedded with a relative path
        assert b"tIME" not in pa.read_bytes()  # no timestamp chunk
    assert "2026-" not in text and "finished" not in text


def test_csv_and_json_exports_round_trip(tiny_runs, tmp_path):
    first, second = tiny_runs
    inputs = [str(first), str(second)]
    table = compare(inputs).table
    csv_path, = write_report(inputs, tmp_path / "t.csv", fmt="csv")
    json_path, = write_report(inputs, tmp_path / "t.json", fmt="json")
    from_csv = pd.read_csv(csv_path)
    from_json = pd.DataFrame(json.loads(json_path.read_text()))
    assert len(from_csv) == len(from_json) == len(table) == 4
    for frame in (from_csv, from_json):
        for col in ("bs", "map", "map50", "fps", "fps_std", "latency_ms_p50", "latency_ms_p99", "speedup",
                    "delta_map", "e2e_fps", "repeats"):
            expected = table[col].astype(float).tolist()
            got = frame[col].astype(float).tolist()
            assert all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(expected, got)), col
        assert frame["target"].tolist() == table["target"].tolist()
    assert not (tmp_path / "t-throughput.png").exists()  # csv/json write the table only


def test_run_report_markdown_still_renders_a_run(tiny_runs):
    first, _ = tiny_runs
    data = json.loads((first / "results.json").read_text())
    text = run_report_markdown(data["rows"], data["env"])
    assert text.startswith("# Benchmark results")
    assert (first / "report.md").read_text(encoding="utf-8") == text


def test_shared_nanodet_ort_ov_report(tmp_path, nanodet_m_320, coco_tiny):
    images_dir, ann = coco_tiny
    profile = load_profile("nanodet-m-320")
    run = run_targets(tmp_path / "run", nanodet_m_320, profile, images_dir, ann, ["ort", "ov"], [1], limit=8)
    out = tmp_path / "report.md"
    write_report([str(run)], out)
    rows = {r["target"]: r for r in json.loads((run / "results.json").read_text())["rows"]}
    table = {c["target"]: c for c in parse_table(out.read_text(encoding="utf-8"))}
    assert table["ort"]["mAP"] == f"{rows['ort']['map']:.4f}" and table["ort"]["flags"].split(", ")[0] == "baseline"
    assert table["ov"]["ΔmAP"] == f"{rows['ov']['map'] - rows['ort']['map']:+.4f}"
    assert table["ov"]["speedup"] == f"{rows['ov']['fps'] / rows['ort']['fps']:.2f}×"


# ------------------------------------------------------------------------------------ hand-made rows

def test_delta_map_and_speedup_on_hand_made_rows(tmp_path):
    pcs_base = {"cat": 0.5, "dog": 0.4, "car": 0.3}
    write_results(tmp_path / "r", [
        hand_row("ort", bs=1, map_=0.30, fps=50.0, per_class=pcs_base),
        hand_row("ort", bs=4, map_=0.30, fps=80.0, per_class=pcs_base),
        hand_row("ov", bs=1, map_=0.30, fps=100.0, per_class=pcs_base),
        hand_row("ov", "int8", bs=1, map_=0.27, fps=200.0, p90=10.2,
                 per_class={"cat": 0.45, "dog": 0.1, "car": 0.35}),
        hand_row("ov", "int8", bs=4, map_=0.27, fps=400.0, p90=10.2),
        hand_row("ort-cuda", bs=8, fps=1000.0, notes=["FALLBACK: ran on CPU"]),
    ])
    comp = compare([str(tmp_path / "r")])
    assert comp.baseline == ("ort", "fp32")
    t = comp.table.set_index(["target", "precision", "bs"])
    assert t.loc[("ov", "int8", 1), "delta_map"] == pytest.approx(-0.03)
    assert t.loc[("ov", "int8", 1), "speedup"] == pytest.approx(4.0)
    assert t.loc[("ov", "int8", 4), "speedup"] == pytest.approx(5.0)
    assert t.loc[("ov", "fp32", 1), "speedup"] == pytest.approx(2.0)
    assert t.loc[("ort", "fp32", 1), "speedup"] == pytest.approx(1.0)
    assert math.isnan(t.loc[("ort-cuda", "fp32", 8), "speedup"])  # no baseline at bs 8: no speedup
    assert t.loc[("ort-cuda", "fp32", 8), "fallback"]
    int8 = next(e for e in comp.per_class if e["row"]["precision"] == "int8")
    assert [d["class"] for d in int8["worst"]] == ["dog", "cat", "car"]  # largest loss first
    assert int8["worst"][0]["delta"] == pytest.approx(-0.3)
    out = tmp_path / "rep.md"
    write_report([str(tmp_path / "r")], out)
    text = out.read_text(encoding="utf-8")
    cells = {(c["target"], c["precision"], c["bs"]): c for c in parse_table(text)}
    assert cells[("ov", "int8", "1")]["ΔmAP"] == "-0.0300"
    assert cells[("ov", "int8", "4")]["speedup"] == "5.00×"
    assert "FALLBACK" in cells[("ort-cuda", "fp32", "8")]["flags"]
    assert "| dog | 0.4000 | 0.1000 | -0.3000 |" in text
    # --baseline picks another target
    comp_ov = compare([str(tmp_path / "r")], baseline="ov")
    t = comp_ov.table.set_index(["target", "precision", "bs"])
    assert comp_ov.baseline == ("ov", "fp32")
    assert t.loc[("ort", "fp32", 1), "speedup"] == pytest.approx(0.5)
    with pytest.raises(HarnessError, match="--baseline trt"):
        compare([str(tmp_path / "r")], baseline="trt")


def test_flags_for_per_batch_model_padding_and_skipped(tmp_path):
    write_results(tmp_path / "r", [
        hand_row("ort"),
        hand_row("ov", bs=4, batch_mode="padded", images=50, notes=["last batch padded from 2 to 4 images"]),
        hand_row("trt", bs=2, batch_mode="per-batch model", skipped_images=["x.jpg: unreadable"]),
    ])
    out = tmp_path / "rep.md"
    write_report([str(tmp_path / "r")], out)
    cells = {c["target"]: c for c in parse_table(out.read_text(encoding="utf-8"))}
    assert cells["ov"]["flags"] == "padded"
    assert cells["trt"]["flags"] == "per-batch model, skipped 1"


def test_two_machines_get_two_environment_sections(tmp_path):
    write_results(tmp_path / "a", [hand_row("ort"), hand_row("ov", fps=150.0)], ENV_A)
    write_results(tmp_path / "b", [hand_row("trt", "fp16", fps=900.0)], ENV_B)
    out = tmp_path / "rep.md"
    write_report([str(tmp_path / "a"), str(tmp_path / "b" / "results.json")], out)
    text = out.read_text(encoding="utf-8")
    assert "### Machine `box-a`" in text and "### Machine `box-b`" in text
    assert "Xeon A (8 cores)" in text and "EPYC B (32 cores)" in text and "NVIDIA H100, 550.54" in text
    assert "tensorrt 10.3" in text and "onnxruntime 1.20.0" in text
    cells = parse_table(text)
    assert {c["machine"] for c in cells} == {"box-a", "box-b"}
    trt = next(c for c in cells if c["target"] == "trt")
    assert trt["speedup"] == "9.00× †"  # against ort on the other machine, and says so
    assert "other machine" in text


def test_a_cluster_rows_machine_is_its_workers_not_the_results_files(tmp_path):
    """run --cluster writes the head's env at the top of results.json and each row's worker env in its
    cluster field: the table, the machine sections and fidelity pairing use the row's own."""
    from harness.report.compare import load_sources

    node = {"node_id": "ab" * 20, "host": "box-b", "ip": "10.0.0.2", "pid": 1, "started": 1.0, "finished": 2.0,
            "env": ENV_B}
    write_results(tmp_path / "run", [hand_row("ort"), hand_row("trt", "fp16", fps=900.0, cluster=node)], ENV_A)
    out = tmp_path / "rep.md"
    write_report([str(tmp_path / "run")], out)
    text = out.read_text(encoding="utf-8")
    cells = {c["target"]: c for c in parse_table(text)}
    assert (cells["ort"]["machine"], cells["trt"]["machine"]) == ("box-a", "box-b")
    assert "### Machine `box-a`" in text and "### Machine `box-b`" in text and "EPYC B (32 cores)" in text
    assert "tensorrt 10.3" in text.split("### Machine `box-b`", 1)[1]
    assert "tensorrt" not in text.split("### Machine `box-a`", 1)[1].split("### Machine `box-b`", 1)[0]
    [source] = load_sources([str(tmp_path / "run")])
    assert [source.machine_of(r) for r in source.rows] == ["box-a", "box-b"]


def test_repeats_give_mean_std_and_overlap_warning(tmp_path):
    # ort and ov each measured 3 times; their spreads overlap -> warning
    for i, (a, b) in enumerate([(100.0, 104.0), (110.0, 98.0), (90.0, 108.0)]):
        write_results(tmp_path / f"run{i}", [hand_row("ort", fps=a), hand_row("ov", fps=b)])
    inputs = [str(tmp_path / f"run{i}") for i in range(3)]
    comp = compare(inputs)
    ort = comp.table[comp.table.target == "ort"].iloc[0]
    assert ort["repeats"] == 3 and ort["fps"] == pytest.approx(100.0)
    assert ort["fps_std"] == pytest.approx(10.0)
    assert len(comp.overlaps) == 1
    out = tmp_path / "rep.md"
    write_report(inputs, out)
    text = out.read_text(encoding="utf-8")
    assert "cannot be told apart" in text
    assert "100.0 ± 10.0" in text and "±10.0% sd, n=3" in text


def test_no_overlap_warning_when_spreads_are_apart(tmp_path):
    # single runs: spread = the loop's 95% CI half-width, 5%; 100 vs 200 img/s are clearly apart
    write_results(tmp_path / "r", [hand_row("ort", fps=100.0, fps_ci95=0.05, fps_converged=True),
                                   hand_row("ov", fps=200.0, fps_ci95=0.05, fps_converged=True)])
    comp = compare([str(tmp_path / "r")])
    assert comp.overlaps == []
    out = tmp_path / "rep.md"
    write_report([str(tmp_path / "r")], out)
    text = out.read_text(encoding="utf-8")
    assert "cannot be told apart" not in text
    assert parse_table(text)[0]["spread"] == "±5.0% CI"
    # ...while a loop that stopped at its cap with ±20% overlaps the other, and is marked
    write_results(tmp_path / "s", [hand_row("ort", fps=100.0, fps_ci95=0.2, fps_converged=False),
                                   hand_row("ov", fps=115.0, fps_ci95=0.01, fps_converged=True)])
    assert len(compare([str(tmp_path / "s")]).overlaps) == 1
    write_report([str(tmp_path / "s")], tmp_path / "s.md")
    assert parse_table((tmp_path / "s.md").read_text(encoding="utf-8"))[0]["spread"] == "±20.0% CI (cap) ⚠"
    # the p90/p50 latency jitter is no spread: rows without a CI have none, and never "overlap"
    write_results(tmp_path / "t", [hand_row("ort", fps=100.0, p90=16.0), hand_row("ov", fps=140.0)])
    assert compare([str(tmp_path / "t")]).overlaps == []


@pytest.mark.parametrize("case", ["missing", "not-json", "no-rows", "not-object"])
def test_bad_inputs_name_the_file(tmp_path, case):
    good = write_results(tmp_path / "good", [hand_row("ort")])
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    if case == "not-json":
        bad.write_text("{ nope")
    elif case == "no-rows":
        bad.write_text(json.dumps({"rows": [], "env": {}}))
    elif case == "not-object":
        bad.write_text("[1, 2]")
    with pytest.raises(HarnessError, match=re.escape(str(bad))):
        compare([str(good), str(bad)])
    result = CliRunner().invoke(main, ["report", str(good), str(bad), "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 2
    assert str(bad) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.md").exists()


def test_cli_report_formats(tmp_path):
    write_results(tmp_path / "r", [hand_row("ort"), hand_row("ov", fps=150.0)])
    runner_ = CliRunner()
    res = runner_.invoke(main, ["report", str(tmp_path / "r"), "--out", str(tmp_path / "o" / "cmp.md")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "cmp-throughput.png").is_file() and (tmp_path / "o" / "cmp-map-vs-throughput.png").is_file()
    res = runner_.invoke(main, ["report", str(tmp_path / "r"), "--format", "json", "--out", str(tmp_path / "t.json"),
                                "--baseline", "ov"])
    assert res.exit_code == 0, res.output
    records = json.loads((tmp_path / "t.json").read_text())
    assert [r["target"] for r in records] == ["ov", "ort"]  # baseline first
    assert records[1]["speedup"] == pytest.approx(100.0 / 150.0)


# ------------------------------------------------------------------------------------ modes and percentiles

def mode_row(target, mode, fps, bs=1, requests=None, **extra):
    return hand_row(target, bs=bs, fps=fps, schema=3, mode=mode, requests=requests or (2 if mode == "throughput" else 1),
                    fps_ci95=0.005, fps_converged=True, latency_samples=500, **extra)


def test_speedups_compare_rows_of_the_same_mode_only(tmp_path):
    write_results(tmp_path / "r", [
        mode_row("ort", "throughput", 100.0),
        mode_row("ort", "latency", 60.0, bs=4),     # the baseline's only bs 4 row is in latency mode
        mode_row("ov", "throughput", 150.0),
        mode_row("ov", "latency", 90.0),            # no ort latency row at bs 1: no speedup, and the page says why
        mode_row("ov", "latency", 120.0, bs=4),
        mode_row("ov", "throughput", 240.0, bs=4),  # the baseline has no bs 4 throughput row: no speedup either
    ])
    t = compare([str(tmp_path / "r")]).table.set_index(["target", "mode", "bs"])
    assert len(t) == 6  # a latency and a throughput row of one target are two rows, not repeats
    assert t.loc[("ov", "throughput", 1), "speedup"] == pytest.approx(1.5)
    assert t.loc[("ov", "latency", 4), "speedup"] == pytest.approx(2.0)
    assert math.isnan(t.loc[("ov", "latency", 1), "speedup"])
    assert math.isnan(t.loc[("ov", "throughput", 4), "speedup"])
    assert "baseline's bs 1 rows are in throughput mode" in t.loc[("ov", "latency", 1), "speedup_missing"]
    assert t.loc[("ov", "latency", 1), "delta_map"] == pytest.approx(0.0)  # accuracy still compares across modes
    write_report([str(tmp_path / "r")], tmp_path / "rep.md")
    text = (tmp_path / "rep.md").read_text(encoding="utf-8")
    cells = {(c["target"], c["mode"], c["bs"]): c for c in parse_table(text)}
    assert cells[("ov", "throughput ×2", "1")]["speedup"] == "1.50×"
    assert cells[("ov", "latency", "1")]["speedup"] == "- ‡" and cells[("ov", "throughput ×2", "4")]["speedup"] == "- ‡"
    assert "speedup only against a row of the same mode" in text
    assert ("- ‡ ov fp32 latency bs 1: no speedup: the baseline's bs 1 rows are in throughput mode, this row in "
            "latency mode (speedups compare rows of one mode)") in text


def test_percentiles_need_their_sample_counts_also_in_old_results(tmp_path):
    """A schema 2 row printed a p99 from 26 latencies; it is read with its count and shown as '-'."""
    old = hand_row("ort", p50=10.0, p90=12.0, schema=2)
    old["bench"]["iterations"] = 26
    few = mode_row("ov", "throughput", 150.0, latency_ms_p90=None, latency_ms_p99=None)
    few["latency_samples"] = 9
    write_results(tmp_path / "r", [old, few])
    write_report([str(tmp_path / "r")], tmp_path / "rep.md")
    cells = {c["target"]: c for c in parse_table((tmp_path / "rep.md").read_text(encoding="utf-8"))}
    assert (cells["ort"]["p50 ms"], cells["ort"]["p90 ms"], cells["ort"]["p99 ms"]) == ("10.00", "12.00", "- (n=26)")
    assert (cells["ov"]["p90 ms"], cells["ov"]["p99 ms"]) == ("- (n=9)", "- (n=9)")
    text = run_report_markdown([old, few], {})
    run_rows = [line for line in text.splitlines() if line.startswith("| ort") or line.startswith("| ov")]
    assert "- (n=26)" in run_rows[0] and run_rows[1].count("- (n=9)") == 2
    assert "±0.5%" in run_rows[1] and "throughput ×2" in run_rows[1]


def test_every_plotted_figure_is_in_the_csv(tiny_runs, tmp_path):
    """Read the drawn artists back (error bars, Pareto points, latency marks) and find each value in the
    exported CSV row it belongs to; the error bar is the row's own 95% interval (fps x fps_ci95)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from harness.report import plots

    inputs = [str(p) for p in tiny_runs]
    csv_path, = write_report(inputs, tmp_path / "t.csv", fmt="csv")
    csv = pd.read_csv(csv_path)
    table = compare(inputs).table
    assert (csv["fps_err95"] - csv["fps"] * csv["fps_ci95"]).abs().max() < 1e-9

    fig, ax = plt.subplots()
    plots.draw_throughput(table, ax)
    for container in ax.containers:  # one errorbar per series
        series = container.get_label()
        line = container.lines[0]
        part = csv[csv["series"] == series].sort_values("bs")
        xs = np.asarray(line.get_xdata(), dtype=float)
        assert np.round(np.log2(xs)).tolist() == np.log2(part["bs"].to_numpy(float)).tolist()  # dodged sideways
        assert list(line.get_ydata()) == pytest.approx(part["fps"].tolist())
        (bars,) = [c for c in container.lines[2] if isinstance(c, LineCollection)]
        halves = [abs(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
        assert halves == pytest.approx(part["fps_err95"].fillna(0.0).tolist())
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == \
        [str(b) for b in sorted(csv["bs"].unique())]
    plt.close(fig)

    fig, ax = plt.subplots()
    plots.draw_pareto(table, ax)
    drawn = {(round(x, 9), round(y, 9)) for c in ax.collections for x, y in c.get_offsets()}
    assert drawn == {(round(f, 9), round(m, 9)) for f, m in zip(csv["fps"], csv["map"])}
    points = list(zip(csv["fps"], csv["map"]))
    for (f, m), on_front in zip(points, csv["pareto"]):  # the front, recomputed by brute force
        beaten = any(a >= f and b >= m and (a > f or b > m) for a, b in points)
        assert bool(on_front) is (not beaten)
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in ax.texts]
    assert len(boxes) == len(csv) and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)

    fig, ax = plt.subplots()
    plots.draw_latency(table, ax)
    at = {round(y): t.get_text() for y, t in zip(ax.get_yticks(), ax.get_yticklabels())}
    assert [at[y] for y in sorted(at, reverse=True)] == csv["point_label"].tolist()  # top-down in table order
    for collection, key in zip(ax.collections, ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99")):
        got = {at[round(y)]: x for x, y in collection.get_offsets()}
        expected = {lab: v for lab, v in zip(csv["point_label"], csv[key]) if not math.isnan(v)}
        assert got == pytest.approx(expected), key
    plt.close(fig)
