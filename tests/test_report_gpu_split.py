"""The trt target's GPU stage split (h2d / compute / d2h, enqueue) in the terminal table, report.md,
the comparison page and the CSV/JSON exports; rows without it (ort) get no such column or section.

Hand-made rows carry the figures exactly as the trt target writes them (harness.targets.trt.timing's
timing_summary, copied into the row by the runner); the end-to-end test runs `harness run -t trt,ort`
with the TensorRT / cuda-python fakes of tests/test_trt_fakes.py, whose GPU clock gives known times.
"""

from __future__ import annotations

import io
import json
import sys

import pandas as pd
import pytest
from click.testing import CliRunner
from rich.console import Console

from harness.cli import common as cli_common
from harness.cli import main
from harness.measure.row import ResultRow
from harness.report import write_report
from harness.report.markdown import run_report_markdown
from harness.targets.trt.timing import timing_summary

SPLIT_HEAD = "h2d / compute / d2h ms p50"


def trt_row(bs=4, **extra) -> ResultRow:
    """A trt row whose stage figures come from the target's own summary of 120 batches."""
    n = 120
    figures = timing_summary(h2d_ms=[0.15] * (n - 1) + [0.9], compute_ms=[2.0] * (n - 10) + [3.5] * 10,
                             d2h_ms=[0.046] * n, batch=bs, enqueue_ms=[0.031] * n)
    return ResultRow(target="trt", bs=bs, model="m.onnx", profile="p", precision="fp16", images=50, map=0.3,
                     map50=0.5, fps=1500.0, latency_ms_p50=2.2, latency_samples=n, mode="throughput", requests=2,
                     time_covers="per batch, CUDA events", target_figures=figures, finished="2026-01-01T00:00:00",
                     **extra)


def ort_row(bs=4) -> ResultRow:
    return ResultRow(target="ort", bs=bs, model="m.onnx", profile="p", images=50, map=0.3, map50=0.5, fps=100.0,
                     latency_ms_p50=40.0, latency_samples=50, mode="throughput", requests=2,
                     time_covers="inference call", finished="2026-01-01T00:00:00")


def render(rows) -> list[str]:
    """The terminal table as plain text lines, wide enough that no cell wraps."""
    buffer = io.StringIO()
    Console(file=buffer, width=400, color_system=None).print(cli_common.results_table(rows))
    return buffer.getvalue().splitlines()


def cells_of(lines: list[str], heading: str) -> dict[str, str]:
    """{target: cell under `heading`} from a rendered rich table (box-drawn columns)."""
    head = next(ln for ln in lines if heading in ln)
    columns = [c.strip() for c in head.split("┃")]
    index = columns.index(heading)
    out = {}
    for ln in lines:
        parts = [c.strip() for c in ln.split("│")]
        if len(parts) == len(columns) and parts[1] and parts[1] != "target":
            out[parts[1]] = parts[index]
    return out


def test_the_summary_gives_the_figures_the_tables_show():
    """The premise: the p50s of the hand-made trt row are the numbers the tests below look for."""
    figures = trt_row().target_figures
    assert (figures["h2d_ms_p50"], figures["gpu_compute_ms_p50"], figures["d2h_ms_p50"]) == (0.15, 2.0, 0.046)
    assert figures["gpu_compute_ms_p99"] == 3.5 and figures["enqueue_ms_p50"] == 0.031
    assert figures["gpu_compute_fps"] == pytest.approx(4 * 1e3 / ((110 * 2.0 + 10 * 3.5) / 120), abs=0.01)


def test_terminal_table_shows_the_split_for_trt_rows_only():
    lines = render([ort_row(), trt_row()])
    split = cells_of(lines, SPLIT_HEAD)
    assert split == {"ort": "-", "trt": "0.150 / 2.00 / 0.046"}
    assert cells_of(lines, "enqueue ms p50") == {"ort": "-", "trt": "0.031"}
    # a table of CPU rows only gets neither column
    text = "\n".join(render([ort_row(), ort_row(bs=1)]))
    assert "h2d" not in text and "compute" not in text and "enqueue" not in text
    assert "infer img/s" in text  # the rest of the table is still there


def test_failed_trt_row_gets_dashes_in_the_split_columns():
    failed = ResultRow(target="trt", bs=8, status="failed", error="no GPU")
    lines = render([failed, trt_row()])
    assert cells_of(lines, SPLIT_HEAD) == {"trt": "0.150 / 2.00 / 0.046"}  # the last trt line: the ok row
    assert cells_of(render([failed]), "images") == {"trt": "✗"}
    assert SPLIT_HEAD not in "\n".join(render([failed]))  # a failed row alone has no split to show
    head = [c.strip() for c in next(ln for ln in lines if SPLIT_HEAD in ln).split("┃")]
    failed_line = [c.strip() for c in next(ln for ln in lines if "failed" in ln).split("│")]
    assert failed_line[head.index(SPLIT_HEAD)] == "-" and failed_line[head.index("enqueue ms p50")] == "-"


def test_run_report_has_the_split_section_with_its_explanation():
    text = run_report_markdown([ort_row(), trt_row()], {})
    assert "GPU time per batch by stage (timing loop, ms):" in text
    assert ("| row | h2d ms p50 | compute ms p50 | d2h ms p50 | compute ms p99 | enqueue ms p50 | compute img/s |"
            in text)
    assert "| trt fp16 throughput ×2 bs 4 | 0.150 | 2.00 | 0.046 | 3.50 | 0.031 | 1882.3 |" in text  # 4e3 / 2.125
    assert "CUDA events recorded on each batch's stream between the stages" in text and "perf_counter, not an event" in text
    assert "| ort " not in text.split("GPU time per batch by stage")[1]  # only rows that have it
    assert "GPU time per batch" not in run_report_markdown([ort_row()], {})


def _results(tmp_path, rows):
    folder = tmp_path / "r"
    folder.mkdir(exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"rows": [r.to_dict() for r in rows], "env": {"host": "h"}}))
    return str(folder)


def test_comparison_page_and_exports_carry_the_split(tmp_path):
    src = _results(tmp_path, [ort_row(), trt_row()])
    write_report([src], tmp_path / "cmp.md")
    page = (tmp_path / "cmp.md").read_text(encoding="utf-8")
    section = page.split("## GPU time per stage", 1)[1].split("\n## ", 1)[0]
    assert "| trt fp16 bs 4 | 0.150 | 2.00 | 0.046 | 3.50 | 0.031 | 1882.3 |" in section
    assert "ort" not in section.split("GPU time per batch by stage")[0]
    write_report([src], tmp_path / "cmp.csv", "csv")
    frame = pd.read_csv(tmp_path / "cmp.csv").set_index("target")
    assert frame.loc["trt", "h2d_ms_p50"] == 0.15 and frame.loc["trt", "gpu_compute_ms_p50"] == 2.0
    assert frame.loc["trt", "d2h_ms_p50"] == 0.046 and frame.loc["trt", "enqueue_ms_p50"] == 0.031
    assert frame.loc["trt", "gpu_compute_ms_p99"] == 3.5 and frame.loc["trt", "gpu_compute_fps"] == 1882.35
    assert pd.isna(frame.loc["ort", "h2d_ms_p50"])
    write_report([src], tmp_path / "cmp.json", "json")
    records = {r["target"]: r for r in json.loads((tmp_path / "cmp.json").read_text())}
    assert records["trt"]["d2h_ms_p50"] == 0.046 and records["ort"]["d2h_ms_p50"] is None


def test_cpu_only_comparison_has_no_split_section_or_columns(tmp_path):
    src = _results(tmp_path, [ort_row(), ort_row(bs=1)])
    write_report([src], tmp_path / "cmp.md")
    assert "GPU time" not in (tmp_path / "cmp.md").read_text(encoding="utf-8")
    write_report([src], tmp_path / "cmp.csv", "csv")
    columns = set(pd.read_csv(tmp_path / "cmp.csv").columns)
    assert not columns & {"h2d_ms_p50", "gpu_compute_ms_p50", "d2h_ms_p50", "enqueue_ms_p50", "gpu_compute_fps"}
    assert "latency_ms_p50" in columns


# -- end to end: `harness run -t trt,ort` on the fakes ---------------------------------------------


def test_harness_run_on_the_trt_fakes_prints_and_reports_the_split(tmp_path, monkeypatch):
    from tests.fake_cuda import BYTES_PER_MS, KERNEL_MS, FakeCudaRuntime
    from tests.fake_trt import TRT_API, make_fake_tensorrt

    if not TRT_API.is_dir():
        pytest.skip("needs ../shared/trt-api (TensorRT name lists) for the TensorRT fakes")
    from harness.data.demo import demo_dataset, demo_model_path
    from harness.targets.trt import cuda_rt

    cuda = FakeCudaRuntime()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11.4", cuda))
    monkeypatch.setattr(cuda_rt, "import_cudart", lambda: cuda)
    buffer = io.StringIO()
    monkeypatch.setattr(cli_common, "out", Console(file=buffer, width=400, color_system=None))
    settings = tmp_path / "trt.toml"
    settings.write_text(f'engine_cache = "{tmp_path / "engines"}"\ncheck_images = 3\n')
    images, ann, _ = demo_dataset()
    out_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", "-t", "trt,ort", "-m", str(demo_model_path()), "-p", "demo", "--data", str(images), "--ann", str(ann),
        "--out", str(out_dir), "--bs", "2", "--limit", "8", "--seconds", "0.05", "--max-seconds", "0.05",
        "--warmup", "0", "--mode", "latency", "-o", f"trt_settings={settings}"])
    assert result.exit_code == 0, result.output
    # the fake GPU clock: compute = one kernel, copies = bytes / rate (demo model: 3x192x192 in, 756x38 out)
    h2d, d2h = 2 * 3 * 192 * 192 * 4 / BYTES_PER_MS, 2 * 756 * 38 * 4 / BYTES_PER_MS
    expected = f"{h2d:.3f} / {KERNEL_MS:.2f} / {d2h:.3f}"
    assert expected == "0.885 / 2.00 / 0.230"
    split = cells_of(buffer.getvalue().splitlines(), SPLIT_HEAD)
    assert split == {"trt": expected, "ort": "-"}
    report = (out_dir / "report.md").read_text(encoding="utf-8")
    assert "| trt fp32 latency bs 2 | 0.885 | 2.00 | 0.230 | - |" in report  # p99: fewer than 100 batches
    write_report([str(out_dir)], tmp_path / "cmp.csv", "csv")
    frame = pd.read_csv(tmp_path / "cmp.csv").set_index("target")
    assert frame.loc["trt", "h2d_ms_p50"] == pytest.approx(h2d, abs=1e-4)
    assert frame.loc["trt", "gpu_compute_ms_p50"] == pytest.approx(KERNEL_MS)
    assert pd.isna(frame.loc["ort", "gpu_compute_ms_p50"])
