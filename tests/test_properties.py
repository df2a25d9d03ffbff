"""Property-based layer (issue 30): every command driven with generated bad arguments and files.

For each generated case, in-process through click's CliRunner:
- the exit status is in the documented set (0, 2; 3 is the fidelity gate's, 130 an interrupt's);
- a failure is one `error:` line, the last on stderr, and no traceback anywhere;
- nothing outside --out changed (the inputs, their folder, a planted neighbour);
- no partially written file is left (no temp file, results.json is strict JSON).

A few dozen examples per command keep it within CI's time; the cases that reach real inference are
the `slow` ones.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.core.folders import OWN_FILES
from tests.tinymodel import write_tiny_convnet, write_tiny_dataset, write_tiny_model, write_tiny_profile

DOCUMENTED_EXITS = {0, 2}
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The inputs every case reads (never written by any case): model, profile, dataset, calibration."""
    root = tmp_path_factory.mktemp("inputs")
    write_tiny_model(root / "tiny.onnx")
    write_tiny_convnet(root / "conv.onnx")
    write_tiny_profile(root / "tiny.toml")
    write_tiny_dataset(root / "ds")
    from harness.data.synthetic import generate_dataset

    generate_dataset(root / "calib", num_images=4, seed=9, split="calib")
    return root


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under folder with what it is and, for files, its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_file():
            found[rel] = ("file", path.read_bytes())
        else:
            found[rel] = ("dir",)
    return found


class Case:
    """One command in a fresh work folder beside a copy-free view of the inputs."""

    def __init__(self, base: Path, work: Path):
        self.base, self.work, self.out = base, work, work / "out"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / "neighbour.txt").write_text("not the harness's")

    def run(self, args: list) -> tuple[int, str]:
        before_inputs, before_work = snapshot(self.base), snapshot(self.work)
        result = CliRunner().invoke(main, [str(a) for a in args])
        stderr = result.stderr
        assert result.exit_code in DOCUMENTED_EXITS, (args, result.exit_code, stderr, result.exception)
        assert "Traceback" not in stderr + result.stdout, (args, stderr)
        if result.exit_code == 2:
            lines = stderr.strip().splitlines()
            assert [line for line in lines if line.startswith("error:")] == lines[-1:], (args, lines)
        assert snapshot(self.base) == before_inputs, args  # the inputs are never touched
        after = snapshot(self.work)
        outside = {k: v for k, v in after.items() if not k.startswith("out")}
        assert outside == {k: v for k, v in before_work.items() if not k.startswith("out")}, args
        if self.out.is_dir():
            temps = [p.name for p in self.out.rglob(".*") if p.name not in OWN_FILES]
            assert temps == [], (args, temps)  # no temp file, no staging folder left behind
            results = self.out / "results.json"
            if results.exists() and result.exit_code == 0:  # written by the harness: whole and strict
                json.loads(results.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
        return result.exit_code, stderr


# -------------------------------------------------------------------------------- generated values

junk_numbers = st.one_of(
    st.sampled_from(["0", "-1", "1.5", "1e9", "nan", "inf", "", " ", ",", "1,,2", "1_0", "１", "0x10", "+1",
                     "100000", "4097", "9" * 30, "1,1", "-0", "2 3", "-+1", "+-2"]),
    st.text(alphabet="0123456789,.-+_e x", max_size=8),
)
junk_words = st.one_of(st.sampled_from(["", ",", " ", "ort,", ",ov", "tpu", "ORT", "ort,ort", "..", "../x", "\x00"]),
                       st.text(alphabet="abcdefghijklmnopqrstuvwxyz,-_./ ", max_size=10))


def _no_nul(values):
    return [v for v in values if "\x00" not in str(v)]  # a NUL cannot be passed on a real command line


# -------------------------------------------------------------------------------- run

RUN_FLAGS = ["--bs", "--threads", "--streams", "--limit", "--workers", "--seconds", "--max-seconds", "--warmup",
             "--target-ci", "--max-pixels"]


def _legal_but_long(flag: str, value: str) -> bool:
    """Values a user may legally ask for that take long on purpose (a 1000 s timing loop, 1024 threads
    on two cores): refused nowhere, so left out of a CI-sized sample."""
    try:
        number = float(value.strip())
    except ValueError:
        return False
    limits = {"--seconds": 1, "--max-seconds": 1, "--warmup": 1, "--threads": 16, "--streams": 16, "--workers": 16}
    return flag in limits and number > limits[flag]


def run_args(base: Path, out: Path, **over) -> list:
    args = {"-t": "ort", "-m": base / "tiny.onnx", "-p": base / "tiny.toml", "--data": base / "ds" / "images",
            "--ann": base / "ds" / "instances.json", "--bs": "1", "--limit": "2", "--seconds": "0.05",
            "--max-seconds": "0.05", "--warmup": "0", "--out": out}
    args.update(over)
    return ["run", *[x for kv in args.items() for x in kv]]


@FAST
@given(flag=st.sampled_from(RUN_FLAGS), value=junk_numbers)
def test_run_with_bad_numbers(base, tmp_path_factory, flag, value):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-run-num")
    if "\x00" in value or _legal_but_long(flag, value):
        return
    code, err = case.run(run_args(base, case.out, **{flag: value}))
    if code == 0:  # accepted: it must have been a legal value, and the run wrote a complete folder
        assert (case.out / "results.json").is_file()


@FAST
@given(flag=st.sampled_from(["-t", "-m", "-p", "--data", "--ann"]), value=junk_words)
def test_run_with_bad_names_and_paths(base, tmp_path_factory, flag, value):
    if "\x00" in value:
        return
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-run-names")
    case.run(run_args(base, case.out, **{flag: value}))


@pytest.mark.slow
@SLOW
@given(name=st.sampled_from(["results.json", "report.md", ".harness-manifest.jsonl", "artifacts"]),
       content=st.one_of(st.binary(max_size=64), st.sampled_from([b'{"rows": [{"bs": "x"}]}', b"{}", b"[]",
                                                                    b'{"rows": [{"target": "ort", "bs": 1, "map": NaN}]}'])),
       flags=st.sampled_from([[], ["--resume"], ["--overwrite"], ["--save-detections"]]))
def test_run_into_a_folder_holding_junk(base, tmp_path_factory, name, content, flags):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-run-junk")
    case.out.mkdir()
    (case.out / name).write_bytes(content)
    code, _ = case.run([*run_args(base, case.out), *flags])
    if code == 2 and name != "results.json":  # refused: the planted file is untouched
        assert (case.out / name).read_bytes() == content


# -------------------------------------------------------------------------------- report

row_values = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                       st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                                st.floats(), max_size=2))
ROW_FIELDS = ["target", "bs", "map", "map50", "fps", "e2e_fps", "latency_ms_p50", "latency_samples", "notes", "flags",
              "per_class_ap", "identity", "artifacts", "stage_ms", "bench", "status", "precision", "images", "mode",
              "skipped_images", "fps_ci95", "requests"]


@FAST
@given(field=st.sampled_from(ROW_FIELDS), value=row_values, fmt=st.sampled_from(["md", "csv", "json"]))
@example(field="fps_ci95", value=-1.0, fmt="md")  # once drew a negative error bar: matplotlib raised
def test_report_over_rows_with_bad_fields(base, tmp_path_factory, field, value, fmt):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-report")
    runs = case.work / "runs"
    runs.mkdir()
    row = {"target": "ort", "bs": 1, "map": 0.25, "map50": 0.4, "fps": 100.0, "images": 6, "schema": 3,
           "status": "ok", "latency_samples": 50, "latency_ms_p50": 3.0}
    row[field] = value
    (runs / "results.json").write_text(json.dumps({"rows": [row], "env": {}}))
    case.out.mkdir()
    case.run(["report", runs, "--format", fmt, "--out", case.out / f"page.{fmt}"])


@FAST
@given(expr=st.one_of(st.sampled_from(["", " ", "(", ")", "dmap<", "dmap<-0.01 or", "(" * 200 + "dmap<0" + ")" * 200,
                                       "dmap<inf", "dmap<1e999", "agreement<0.95 and and", "x<1"]),
                      st.text(alphabet="dmapgreent<>=!()0.1- ", max_size=20)))
def test_report_fail_if_expressions(base, tmp_path_factory, expr):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-failif")
    case.run(["report", case.work / "none", "--fidelity", "--fail-if", expr, "--out", case.out / "f.md"])


# -------------------------------------------------------------------------------- npu commands

@FAST
@given(flag=st.sampled_from(["--workers", "--limit", "--max-pixels"]), value=junk_numbers,
       fmt=st.sampled_from(["bin", "npz", "", "png", "../bin"]))
def test_preprocess_with_bad_arguments(base, tmp_path_factory, flag, value, fmt):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-prep")
    case.run(["preprocess", "-p", base / "tiny.toml", "--data", base / "ds" / "images", "--ann",
              base / "ds" / "instances.json", "--format", fmt, "--out", case.out, "--model", base / "tiny.onnx",
              flag, value, "--limit", "2"] if flag != "--limit" else
             ["preprocess", "-p", base / "tiny.toml", "--data", base / "ds" / "images", "--ann",
              base / "ds" / "instances.json", "--format", fmt, "--out", case.out, "--model", base / "tiny.onnx",
              flag, value])


@FAST
@given(flag=st.sampled_from(["--batchsize", "--threads"]), value=junk_numbers,
       runner=st.sampled_from(["ais", "vamp", "tpu"]))
def test_emulate_with_bad_arguments(base, tmp_path_factory, flag, value, runner):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-emulate")
    case.run(["emulate", "--runner", runner, "-m", base / "tiny.onnx", "--prep", case.work / "noprep", "--out",
              case.out, flag, value])


@FAST
@given(value=junk_numbers, kind=st.sampled_from(["--bin", "--npz"]))
def test_decode_with_bad_arguments(base, tmp_path_factory, value, kind):
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-decode")
    case.run(["decode", kind, case.work / "nothing", "--ann", base / "ds" / "instances.json", "--out", case.out,
              "--bs", value])


# -------------------------------------------------------------------------------- quantize, sensitivity

@FAST
@given(flag=st.sampled_from(["--calib-images", "--method", "--backend", "--exclude", "--exclude-types"]),
       value=st.one_of(junk_numbers, junk_words, st.sampled_from(["[", "(?", "*"])))
def test_quantize_with_bad_arguments(base, tmp_path_factory, flag, value):
    if "\x00" in value:
        return
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-quant")
    case.run(["quantize", "-m", base / "conv.onnx", "-p", base / "tiny.toml", "--calib", base / "calib" / "images",
              "--calib-images", "2", "--out", case.out, flag, value] if flag != "--calib-images" else
             ["quantize", "-m", base / "conv.onnx", "-p", base / "tiny.toml", "--calib", base / "calib" / "images",
              "--out", case.out, flag, value])


@pytest.mark.slow
@SLOW
@given(flag=st.sampled_from(["--subset", "--top-k", "--max-drop", "--calib-images", "--sqnr-images", "--resamples",
                             "--bench-seconds", "--target", "--mode", "--method"]),
       value=st.one_of(junk_numbers, junk_words))
def test_sensitivity_with_bad_arguments(base, tmp_path_factory, flag, value):
    if "\x00" in value:
        return
    case = Case(base, tmp_path_factory.getbasetemp() / "prop-sens")
    args = ["sensitivity", "-m", base / "conv.onnx", "-p", base / "tiny.toml", "--calib", base / "calib" / "images",
            "--data", base / "ds" / "images", "--ann", base / "ds" / "instances.json", "--out", case.out,
            "--resamples", "100", "--bench-seconds", "0.05", "--subset", "2", "--calib-images", "2",
            "--sqnr-images", "1", "--top-k", "1", "--mode", "exclude", "--no-type-groups"]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    case.run(args)
