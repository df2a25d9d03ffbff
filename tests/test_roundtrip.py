"""`harness roundtrip` without a cluster, and its parts: the tool command as validated configuration, the
tool run with real subprocesses (a failure, a timeout, nothing written), the chunked file transfer.
The cluster itself: tests/test_cluster_roundtrip.py."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.cluster.devicetool import ToolCommand, load_tool_command, run_tool
from harness.core.errors import HarnessError
from harness.data.demo import DEMO_PROFILE, demo_model_path
from harness.npu import FILE_TOOLS

ROOT = Path(__file__).resolve().parent.parent
TOOLS = f"{shlex.quote(sys.executable)} {ROOT / 'tests' / 'vendor_tools.py'}"
AIS = f"{TOOLS} ais --model {{model}} --input {{input}} --output {{output}} --batchsize {{batchsize}}"


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_ray_is_not_imported_without_cluster():
    """roundtrip's modules load Ray only when --cluster connects."""
    import subprocess

    code = ("import sys, harness.cli.npu, harness.cluster.filerun, harness.cluster.devicetool; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}).returncode == 0


@pytest.mark.parametrize("name", FILE_TOOLS.names())
def test_each_tools_default_command_is_valid_configuration(name):
    tool = FILE_TOOLS.get(name)
    command = load_tool_command(tool)
    assert command.command == tool.command and command.timeout_s == 1800.0 and command.env == {}
    argv = command.argv({"model": "m.om", "input": "/in", "output": "/out", "batchsize": "4", "datalist": "/l.txt",
                         "height": "320", "width": "416"})
    assert "/out" in argv and ("/in" in argv or "/l.txt" in argv) and "4" in argv


def test_the_tool_command_comes_from_a_toml_table_and_flags_and_every_mistake_is_one_line(tmp_path):
    ais = FILE_TOOLS.get("ais")
    file = tmp_path / "tools.toml"
    file.write_text('[ais]\ncommand = ["ais_bench", "--model", "{model}", "--output", "{output}"]\ntimeout_s = 60\n'
                    '[ais.env]\nASCEND_HOME = "/usr/local/Ascend"\n[vamp]\ncommand = ["vamp", "{output}"]\n')
    loaded = load_tool_command(ais, file)
    assert loaded == ToolCommand(("ais_bench", "--model", "{model}", "--output", "{output}"), 60.0,
                                 {"ASCEND_HOME": "/usr/local/Ascend"})
    assert load_tool_command(FILE_TOOLS.get("vamp"), file).command == ("vamp", "{output}")
    flags = load_tool_command(ais, file, "my_ais -o '{output}/x y'", 5)  # flags over the file
    assert flags.command == ("my_ais", "-o", "{output}/x y") and flags.timeout_s == 5.0 and flags.env == loaded.env
    top = tmp_path / "top.toml"
    top.write_text('command = ["t", "{output}"]\n')
    assert load_tool_command(ais, top).command == ("t", "{output}")
    bad = {
        'command = ["t", "{output}"]\ntimeout = 5\n': "unknown key 'timeout' (did you mean 'timeout_s'?)",
        'command = ["t", "{outptu}"]\n': "unknown placeholder {outptu} (did you mean 'output'?)",
        'command = ["t", "{model}"]\n': "no {output} placeholder",
        'command = ["t", "{output"]\n': "expected '}' before end of string",
        'command = []\n': "command",
        'command = ["t", "{output}"]\ntimeout_s = -1\n': "timeout_s = -1",
        'command = "t {output}"\n': "expected a list of command-line words",
    }
    for text, says in bad.items():
        top.write_text(text)
        with pytest.raises(HarnessError) as err:
            load_tool_command(ais, top)
        assert str(err.value).startswith(f"{top}: ") and says in str(err.value) and "\n" not in str(err.value), text
    with pytest.raises(HarnessError, match=r"^--tool-command: command: '\{x\}': unknown placeholder \{x\}"):
        load_tool_command(ais, None, "t {x} {output}")


def _command(text: str, timeout: float = 30.0) -> ToolCommand:
    return ToolCommand(tuple(shlex.split(text)), timeout)


def test_a_tool_that_fails_times_out_or_writes_nothing_is_one_line_naming_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    values = {"output": str(out)}
    with pytest.raises(HarnessError, match=r"^ais_bench on .+ exited with status 3 after [0-9.]+ s: the last line$"):
        run_tool("ais_bench", _command("sh -c 'echo first; echo the last line; exit 3' {output}"), values, out)
    with pytest.raises(HarnessError, match=r"^ais_bench on .+ exited 0 but wrote nothing into "):
        run_tool("ais_bench", _command("sh -c 'echo done' {output}"), values, out)
    with pytest.raises(HarnessError, match=r"^vamp on .+: cannot start 'no-such-vamp' \(No such file or directory\)"):
        run_tool("vamp", _command("no-such-vamp {output}"), values, out)
    # a timeout kills the tool and what it started (its process group), at once
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(HarnessError, match=r"^ais_bench on .+ did not finish within 0.5 s and was killed"):
        run_tool("ais_bench", _command(f"sh -c 'sleep 60 & echo $! > {pid_file}; wait' {{output}}", 0.5), values, out)
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    ran = run_tool("ais_bench", _command("sh -c 'echo made > $0/a.bin; echo ok' {output}"), values, out)
    assert ran["returncode"] == 0 and ran["log_tail"] == ["ok"] and ran["argv"][-1] == str(out)


def test_files_travel_in_bounded_chunks_and_a_name_cannot_leave_its_folder(tmp_path, monkeypatch):
    from harness.cluster import filerun

    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    files = {"a.bin": b"a" * 700, "b.bin": b"b" * 700, "sub/c.bin": b"c" * 1500, "d.json": b"{}"}
    for name, data in files.items():
        (source / name).write_bytes(data)
    (source / ".harness.lock").write_text("pid")  # a folder's own bookkeeping stays behind
    monkeypatch.setattr(filerun, "CHUNK_BYTES", 1000)
    chunks = list(filerun.pack(source))
    assert [sorted(n for n, _ in c["files"]) for c in chunks] == [["a.bin"], ["b.bin", "d.json"], ["sub/c.bin"]]
    target = tmp_path / "dst"
    for chunk in chunks:
        for name, data in chunk["files"]:
            filerun._write_file(target, name, data)
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()} == files
    for evil in ("../x.bin", "sub/../../x.bin", "/etc/x", ""):
        with pytest.raises(HarnessError, match="expected a plain file or folder name"):
            filerun._write_file(target, evil, b"")
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.slow
def test_roundtrip_on_this_host_equals_preprocess_emulate_decode(demo_data, tmp_path):
    """Without --cluster the tool runs here on the files in place: the row is the manual flow's."""
    from harness.measure.artifacts import read_detections

    images, ann = demo_data
    data = ["-p", DEMO_PROFILE, "--data", images, "--ann", ann, "--limit", 4]
    model = demo_model_path()
    cli("preprocess", *data, "--format", "bin", "--model", model, "--out", tmp_path / "prep")
    cli("emulate", "--runner", "ais", "-m", model, "--prep", tmp_path / "prep", "--out", tmp_path / "device")
    cli("decode", "--bin", tmp_path / "device", "--prep", tmp_path / "prep", "--ann", ann, "--out", tmp_path / "manual",
        "--save-detections")
    said = cli("roundtrip", "--runner", "ais", "-m", model, *data, "--tool-command", AIS, "--save-detections",
               "--out", tmp_path / "one").output
    assert "✓ ascend bs=1" in said
    manual, row = (json.loads((tmp_path / out / "results.json").read_text())["rows"][0] for out in ("manual", "one"))
    for key in ("status", "map", "map50", "per_class_ap", "detections", "images", "source", "identity", "latency_samples"):
        assert row[key] == manual[key], key
    mine, theirs = (read_detections(tmp_path / out / r["artifacts"]["detections"])
                    for out, r in (("one", row), ("manual", manual)))
    assert mine.detections == theirs.detections and mine.detections
    assert "cluster" not in row and row["device_tool"]["argv"][-1] == "1"


def test_a_resumed_roundtrip_replaces_its_own_failed_attempt_and_never_a_users_folder(demo_data, tmp_path):
    """A failed tool run is a failed row; --resume runs that batch size again in a fresh device-bs1 (the
    earlier attempt's files gone); outputs decode refuses are a failed `decode:` row; a device-bs1 the
    harness did not make is refused, untouched."""
    images, ann = demo_data
    base = ["roundtrip", "--runner", "ais", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--data", images, "--ann",
            ann, "--limit", 2, "--out", tmp_path / "out"]
    said = cli(*base, "--tool-command", "sh -c 'echo one > $0/first.bin; echo broke >&2; exit 3' {output}", code=2).output
    row = json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    assert row["status"] == "failed" and row["error"].endswith("exited with status 3 after " + row["error"].split(
        "after ")[1].split(" s")[0] + " s: broke"), row["error"]
    assert said.strip().splitlines()[-1] == f"error: 1 of 1 row(s) failed; first: ascend bs=1: {row['error']}"
    config = tmp_path / "tools.toml"  # the second attempt's tool writes what its env says, not an ais folder
    config.write_text('[ais]\ncommand = ["sh", "-c", "echo $MARK > $0/second.txt", "{output}"]\n'
                      '[ais.env]\nMARK = "from the config"\n')
    cli(*base, "--tool-config", config, "--resume", code=2)
    device = tmp_path / "out" / "device-bs1"
    assert sorted(p.name for p in device.iterdir()) == ["second.txt"]
    assert (device / "second.txt").read_text() == "from the config\n"
    row = json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    assert row["status"] == "failed" and row["error"].startswith(f"decode: {device} holds no ais output files"), row
    (tmp_path / "mine" / "device-bs1").mkdir(parents=True)
    (tmp_path / "mine" / "device-bs1" / "notes.txt").write_text("keep")
    said = cli(*base[:-1], tmp_path / "mine", "--tool-command", "true {output}", code=2).output
    assert said.strip().splitlines()[-1] == (f"error: {tmp_path / 'mine' / 'device-bs1'} exists and was not made by "
                                             "the harness; move it away or choose another output folder")
    assert (tmp_path / "mine" / "device-bs1" / "notes.txt").read_text() == "keep"


def test_cluster_options_are_checked_before_anything_runs(tmp_path):
    base = ["roundtrip", "--runner", "ais", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--data", tmp_path, "--ann",
            tmp_path / "a.json", "--out", tmp_path / "out"]
    for extra, line in (
            (["--cluster", "auto", "-o", "device_resourse=x"], "error: --option: unknown key 'device_resourse' (did you "
             "mean 'device_resource'?); known keys: device_resource, device_cpus"),
            (["--cluster", "auto", "-o", "device_cpus=0"], "error: --option: device_cpus = '0': expected a number (> 0)"),
            (["-o", "device_cpus=1"], "error: --option: only with --cluster (without it the tool runs on this host, on "
             "the files in place)"),
            (["--shared-dir", tmp_path / "s"], "error: --shared-dir: only with --cluster (without it the tool runs on "
             "this host, on the files in place)")):
        said = cli(*base, *extra, code=2).output
        assert said.strip().splitlines()[-1] == line, said
    assert not (tmp_path / "out").exists() and not (tmp_path / "s").exists()


def test_a_batch_larger_than_the_images_is_refused_before_the_tool_runs(demo_data, tmp_path):
    """As decode's --bs (and run's, emulate's): one line, and the vendor tool never started."""
    images, ann = demo_data
    marker = tmp_path / "tool-ran"
    said = cli("roundtrip", "--runner", "ais", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--data", images, "--ann",
               ann, "--limit", 2, "--bs", "1,4", "--out", tmp_path / "out",
               "--tool-command", f"sh -c 'touch {marker}' {{output}}", code=2).output
    assert said.strip().splitlines()[-1] == (f"error: --bs 4: larger than the 2 image(s) in {tmp_path / 'out' / 'prep'}"
                                             "/prep.json; a batch would be mostly padding or repeats: use at most 2")
    assert not marker.exists()
