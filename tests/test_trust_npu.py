"""Device files and outputs are trusted only after checks (issue 15): .npy/.npz headers checked before
any data is read or inflated (a real 3.6 TiB-claiming .npy, real zip bombs), NaN/Inf outputs of a
real ONNX model and of device files, the row's device/host provenance, and vamp outputs mapped to
images by the datalist vamp ran (the vendor's image2npz.py order), with or without a prep.json."""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from harness.core.errors import HarnessError
from harness.images.preprocess import resize_image, to_model_layout
from harness.npu.files import load_npy, load_npz
from harness.profiles import load_profile
from tests.test_cli_errors import assert_one_line_error, cli, run_args
from tests.test_npu import TINY_PROFILE, build_tiny_dataset, build_tiny_model
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

SPEC = {"name": "output", "shape": [1, 84, 34], "dtype": "float32"}


# ---------------------------------------------------------------- .npy / .npz headers before data

def npy_claiming(path: Path, shape: tuple, payload: int = 512) -> Path:
    """A small .npy whose header declares `shape` float32 (the data is `payload` zero bytes)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
        handle.write(b"\0" * payload)
    return path


def test_npy_header_claiming_terabytes_is_refused_before_reading(tmp_path):
    path = npy_claiming(tmp_path / "img_0_0.npy", (1_000_000, 1_000_000))
    assert path.stat().st_size < 1024
    with pytest.raises(HarnessError, match=r"header declares 1000000x1000000 float32 \(4000000000000 bytes\) but the "
                                           r"file holds 512 bytes of data; refused before reading"):
        load_npy(path, "image img_0.png (id 1)")
    with pytest.raises((MemoryError, ValueError)):  # numpy itself tries to allocate the 3.6 TiB it declares
        np.load(path, allow_pickle=False)


def test_npy_with_the_right_size_but_the_wrong_shape_is_refused_from_its_header(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((1, 80, 34), np.float32))
    with pytest.raises(HarnessError, match=r"has shape 1x80x34, expected 1x84x34"):
        load_npy(path, "image x", SPEC)
    np.save(path, np.arange(84 * 34, dtype=np.float32).reshape(1, 84, 34))
    assert np.array_equal(load_npy(path, "image x", SPEC), np.arange(84 * 34, dtype=np.float32).reshape(1, 84, 34))
    np.save(path, np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)))
    assert np.array_equal(load_npy(path, "image x"), np.arange(12, dtype=np.float32).reshape(3, 4))


def zip_bomb_npz(path: Path, declared_shape: tuple, data_bytes: int, key: str = "output_0") -> int:
    """A real .npz (zip, deflate) whose member `<key>.npy` has a header declaring `declared_shape`
    float32 followed by `data_bytes` zero bytes, built from repeated full-flushed deflate blocks (so
    the test never compresses gigabytes). The zip directory lists the true uncompressed size.
    Returns the archive's size."""
    header = io_header(declared_shape)
    chunk = 1 << 20
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    parts = [deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)]
    block = deflate.compress(b"\0" * chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    parts += [block] * (data_bytes // chunk)
    parts.append(deflate.compress(b"\0" * (data_bytes % chunk)) + deflate.flush(zlib.Z_FINISH))
    crc = zlib.crc32(header)
    zero_crc_chunk = None
    for _ in range(data_bytes // chunk):
        zero_crc_chunk = zero_crc_chunk or b"\0" * chunk
        crc = zlib.crc32(zero_crc_chunk, crc)
    crc = zlib.crc32(b"\0" * (data_bytes % chunk), crc) & 0xFFFFFFFF
    body = b"".join(parts)
    name = f"{key}.npy".encode()
    size = len(header) + data_bytes
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(body), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(body), size, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(body), 0)
    path.write_bytes(local + body + central + end)
    return path.stat().st_size


def io_header(shape: tuple) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_zip_bomb_builder_makes_a_real_npz(tmp_path):
    zip_bomb_npz(tmp_path / "ok.npz", (1, 84, 34), 84 * 34 * 4)
    with np.load(tmp_path / "ok.npz", allow_pickle=False) as data:
        assert data["output_0"].shape == (1, 84, 34)


def test_npz_member_inflating_far_beyond_its_header_is_refused_without_inflating(tmp_path):
    size = zip_bomb_npz(tmp_path / "output_000000.npz", (1, 84, 34), 2_000_000_000)  # 2 GB of zeros inside
    assert size < 3_000_000
    with pytest.raises(HarnessError, match=r"key 'output_0': its header declares 1x84x34 float32 \(11552 bytes with its "
                                           r"128-byte header\) but the archive lists 2000000128 bytes uncompressed; "
                                           r"refused before inflating"):
        load_npz(tmp_path / "output_000000.npz", "image img_0.png", {"output_0": SPEC})


def test_npz_member_declaring_an_absurd_shape_is_refused_before_inflating(tmp_path):
    zip_bomb_npz(tmp_path / "output_000000.npz", (1, 40000, 10000), 1_600_000_000)  # consistent, 1.6 GB
    with pytest.raises(HarnessError, match=r"output_0: .* has shape 1x40000x10000, expected 1x84x34"):
        load_npz(tmp_path / "output_000000.npz", "image img_0.png", {"output_0": SPEC})
    with pytest.raises(HarnessError, match=r"declares 1x40000x10000 float32 \(1600000000 bytes\), more than "
                                           r"1073741824 bytes for one image; refused before reading"):
        load_npz(tmp_path / "output_000000.npz", "image img_0.png")


# ---------------------------------------------------------------- NaN/Inf: a real ONNX model, real device files

def write_nan_model(path: Path, base: Path) -> Path:
    """The tiny GFL model, with its output multiplied by 1 + 0 * log(max pixel - 0.5) per image: exactly
    the images whose brightest normalised pixel is below 0.5 (dark images) get NaN outputs."""
    model = onnx.load(str(base))
    graph = model.graph
    graph.node[-1].output[0] = "raw"
    graph.initializer.extend([numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                              numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                              numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "per_image")])
    graph.node.extend([
        helper.make_node("ReduceMax", ["image"], ["peak"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Sub", ["peak", "half"], ["shifted"]),
        helper.make_node("Log", ["shifted"], ["logged"]),
        helper.make_node("Mul", ["logged", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["nan_or_zero", "one"], ["factor4"]),
        helper.make_node("Reshape", ["factor4", "per_image"], ["factor"]),
        helper.make_node("Mul", ["raw", "factor"], ["output"]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def nan_tiny(tmp_path):
    base = write_tiny_model(tmp_path / "base.onnx")
    model = write_nan_model(tmp_path / "nan.onnx", base)
    profile = write_tiny_profile(tmp_path / "tiny.toml")
    images, ann = write_tiny_dataset(tmp_path / "ds")
    cv2.imwrite(str(images / "img_003.jpg"), np.full((50, 60, 3), 90, np.uint8))  # the dark one
    return {"model": model, "profile": profile, "images": images, "ann": ann, "root": tmp_path}


def test_nan_model_is_real(nan_tiny):
    session = ort.InferenceSession(str(nan_tiny["model"]), providers=["CPUExecutionProvider"])
    dark = np.full((1, 3, 32, 32), (90 - 127.5) / 64, np.float32)
    bright = np.full((1, 3, 32, 32), (220 - 127.5) / 64, np.float32)
    (out,) = session.run(None, {"image": np.concatenate([bright, dark])})
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_nan_outputs_fail_the_row_with_one_line(nan_tiny):
    result = cli(*run_args(nan_tiny, **{"--bs": "2"}))
    assert_one_line_error(result, "ort bs=2: model output 0 'output' holds", "NaN/Inf value(s) for image(s) img_003.jpg "
                          "(id 103)", "--skip-bad-images")
    (row,) = json.loads((nan_tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert row["status"] == "failed" and row["map"] is None


@pytest.mark.parametrize("bs", ["1", "2"])
def test_nan_outputs_skipped_and_recorded(nan_tiny, bs):
    result = cli(*run_args(nan_tiny, **{"--bs": bs, "--skip-bad-images": True, "--target": "ort,ov"}))
    assert result.exit_code == 0, result.output
    rows = json.loads((nan_tiny["root"] / "out" / "results.json").read_text())["rows"]
    for row in rows:
        assert row["images"] == 5  # at bs 2 the dark image's batch mate is still scored
        assert row["skipped_images"] == ["img_003.jpg: NaN/Inf in model output 0 'output'"], row["target"]
        assert "skipped-images" in row["flags"]


@pytest.fixture
def npu(tmp_path):
    images, ann = build_tiny_dataset(tmp_path / "data", count=6)
    model = build_tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.toml").write_text(TINY_PROFILE)
    t = {"root": tmp_path, "images": images, "ann": ann, "model": model, "profile": tmp_path / "tiny.toml"}
    for fmt in ("bin", "npz"):
        result = cli("preprocess", "-p", t["profile"], "--data", images, "--ann", ann, "--format", fmt,
                     "--out", tmp_path / f"prep_{fmt}", "--model", model)
        assert result.exit_code == 0, result.output
    run = cli("run", "--target", "ort", "--model", model, "--profile", t["profile"], "--data", images, "--ann", ann,
              "--seconds", "0.05", "--max-seconds", "0.05", "--warmup", "0", "--out", tmp_path / "inproc")
    assert run.exit_code == 0, run.output
    t["map"] = json.loads((tmp_path / "inproc" / "results.json").read_text())["rows"][0]["map"]
    assert t["map"] > 0.05
    return t


def test_nan_in_device_output_files(npu):
    root = npu["root"]
    assert cli("emulate", "--runner", "ais", "-m", npu["model"], "--prep", root / "prep_bin", "--out", root / "ais",
               "--output-dirname", "run1").exit_code == 0
    values = np.fromfile(root / "ais" / "run1" / "img_2_0.bin", np.float32)
    values[7] = np.nan
    values.tofile(root / "ais" / "run1" / "img_2_0.bin")
    decode = ["decode", "--bin", root / "ais" / "run1", "--prep", root / "prep_bin", "--ann", npu["ann"]]
    assert_one_line_error(cli(*decode, "--out", root / "r1"),
                          "image img_2.png (id 3): device output 0 'output' holds 1 NaN/Inf value(s)", "--skip-bad-images")
    result = cli(*decode, "--out", root / "r2", "--skip-bad-images")
    assert result.exit_code == 0, result.output
    (row,) = json.loads((root / "r2" / "results.json").read_text())["rows"]
    assert row["images"] == 5 and row["skipped_images"] == ["img_2.png: NaN/Inf in device output 0 'output'"]
    # the same in a vamp .npz written with plain numpy
    assert cli("emulate", "--runner", "vamp", "-m", npu["model"], "--prep", root / "prep_npz",
               "--out", root / "vamp").exit_code == 0
    path = root / "vamp" / "output_000004.npz"
    with np.load(path) as data:
        out = data["output_0"].copy()
    out[0, 3, 5] = np.inf
    np.savez(path, output_0=out)
    assert_one_line_error(cli("decode", "--npz", root / "vamp", "--prep", root / "prep_npz", "--ann", npu["ann"],
                              "--out", root / "r3"), "image img_4.png (id 5): device output 0 'output' holds 1 NaN/Inf")


# ---------------------------------------------------------------- provenance: who measured the row

def test_emulated_rows_are_marked_in_every_table(npu):
    root = npu["root"]
    assert cli("emulate", "--runner", "ais", "-m", npu["model"], "--prep", root / "prep_bin", "--out", root / "ais",
               "--output-dirname", "e").exit_code == 0
    result = cli("decode", "--bin", root / "ais" / "e", "--prep", root / "prep_bin", "--ann", npu["ann"],
                 "--out", root / "dev", "--device", "Ascend 310P3")
    assert result.exit_code == 0, result.output
    (row,) = json.loads((root / "dev" / "results.json").read_text())["rows"]
    assert row["source"] == "emulated" and row["device"].startswith("ONNX Runtime CPU on ")
    assert row["time_covers"].startswith("host inference only") and "device compute" not in row["time_covers"]
    assert "ascend (emulated)" in result.output  # the terminal table
    assert "| ascend (emulated) |" in (root / "dev" / "report.md").read_text()
    page = root / "cmp.md"
    assert cli("report", root / "inproc", root / "dev", "--out", page).exit_code == 0
    assert "| ascend (emulated) | unspecified |" in page.read_text()
    for fmt in ("csv", "json"):
        assert cli("report", root / "inproc", root / "dev", "--format", fmt, "--out", root / f"cmp.{fmt}").exit_code == 0
    records = json.loads((root / "cmp.json").read_text())
    ascend = next(r for r in records if r["target"] == "ascend")
    assert ascend["origin"] == "emulated" and ascend["emulated"] is True
    assert "device compute" not in page.read_text().split("ascend (emulated)", 1)[1].splitlines()[0]
    assert "emulated" in (root / "cmp.csv").read_text().splitlines()[0]


def test_device_rows_name_the_device_not_the_decode_host(npu):
    from harness.measure.envinfo import cpu_model

    root = npu["root"]
    assert cli("emulate", "--runner", "ais", "-m", npu["model"], "--prep", root / "prep_bin", "--out", root / "ais",
               "--output-dirname", "d").exit_code == 0
    summary_path = root / "ais" / "d_summary.json"
    summary = json.loads(summary_path.read_text())
    for key in ("emulated_by", "emulated_on"):  # as a real ais_bench run writes it
        summary.pop(key)
    summary["args"] += ["--device", "1"]
    summary_path.write_text(json.dumps(summary))
    decode = ["decode", "--bin", root / "ais" / "d", "--prep", root / "prep_bin", "--ann", npu["ann"]]
    assert cli(*decode, "--out", root / "a").exit_code == 0
    (row,) = json.loads((root / "a" / "results.json").read_text())["rows"]
    assert row["source"] == "device"
    assert row["device"] == "device id 1 (ais_bench --device 1, from d_summary.json)"
    assert cpu_model() not in row["device"]
    result = cli(*decode, "--out", root / "b", "--device", "Ascend 310P3")
    assert result.exit_code == 0
    (row,) = json.loads((root / "b" / "results.json").read_text())["rows"]
    assert row["device"] == "Ascend 310P3" and "ascend @ Ascend 310P3" in result.output
    assert "| ascend @ Ascend 310P3 |" in (root / "b" / "report.md").read_text()


# ---------------------------------------------------------------- vamp outputs mapped by the datalist

def vendor_image2npz(images_dir: Path, target: Path, seed: int = 5) -> Path:
    """What VastModelZOO's image2npz.py does (cv2.imread, BGR->RGB, CHW, np.savez, one absolute path per
    line), in an unsorted order as its glob gives it; returns the datalist."""
    target.mkdir(parents=True)
    files = sorted(images_dir.glob("*.png"))
    random.Random(seed).shuffle(files)
    lines = []
    for path in files:
        data = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
        save = target / f"{path.stem}.npz"
        np.savez(save, input_0=data)
        lines.append(str(save.resolve()))
    datalist = target / "datalist_npz.txt"
    datalist.write_text("\n".join(lines) + "\n")
    return datalist


def device_run(model: Path, datalist: Path, out: Path, profile) -> None:
    """A stand-in for vamp (ONNX Runtime; the VDSP's resize and normalisation done with the profile's
    geometry): output_NNNNNN.npz in datalist order, written with plain numpy."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out.mkdir(parents=True)
    for index, line in enumerate(datalist.read_text().split()):
        with np.load(line) as data:
            image = np.ascontiguousarray(data["input_0"].transpose(1, 2, 0)[:, :, ::-1])
        canvas, _ = resize_image(image, profile.input)
        outputs = session.run(None, {session.get_inputs()[0].name: to_model_layout(canvas, profile.input)[None]})
        np.savez(out / f"output_{index:06d}.npz", **{f"output_{k}": o for k, o in enumerate(outputs)})


@pytest.fixture
def vendor(npu):
    root = npu["root"]
    datalist = vendor_image2npz(npu["images"], root / "vendor_npz")
    assert [Path(p).stem for p in datalist.read_text().split()] != sorted(Path(p).stem for p in datalist.read_text().split())
    device_run(npu["model"], datalist, root / "vamp_out", load_profile(npu["profile"]))
    return {**npu, "datalist": datalist, "outputs": root / "vamp_out"}


def _map(root: Path, out: str) -> float:
    return json.loads((root / out / "results.json").read_text())["rows"][0]["map"]


def test_vendor_datalist_without_prep_json_maps_by_stem(vendor):
    root = vendor["root"]
    result = cli("decode", "--npz", vendor["outputs"], "--datalist", vendor["datalist"], "--profile", vendor["profile"],
                 "--data", vendor["images"], "--ann", vendor["ann"], "--out", root / "r")
    assert result.exit_code == 0, result.output
    assert abs(_map(root, "r") - vendor["map"]) <= 0.0005


def test_vendor_datalist_with_the_harness_prep_json(vendor):
    root = vendor["root"]
    decode = ["decode", "--npz", vendor["outputs"], "--prep", root / "prep_npz", "--ann", vendor["ann"]]
    result = cli(*decode, "--datalist", vendor["datalist"], "--out", root / "mapped")
    assert result.exit_code == 0, result.output
    assert abs(_map(root, "mapped") - vendor["map"]) <= 0.0005
    # the failure: the same outputs read in the prep folder's order score near zero; the row
    # says which order it assumed
    assert cli(*decode, "--out", root / "assumed").exit_code == 0
    (row,) = json.loads((root / "assumed" / "results.json").read_text())["rows"]
    assert row["map"] < vendor["map"] - 0.05
    assert any("prep.json order" in n and "--datalist" in n for n in row["notes"])


def test_datalist_that_does_not_map_is_refused(vendor):
    root = vendor["root"]
    lines = vendor["datalist"].read_text().split()
    no_prep = ["decode", "--npz", vendor["outputs"], "--profile", vendor["profile"], "--data", vendor["images"],
               "--ann", vendor["ann"], "--out", root / "r"]
    assert_one_line_error(cli(*no_prep), "without --prep, --npz outputs need --datalist")
    bad = root / "bad.txt"
    bad.write_text("\n".join([*lines[:2], "/data/stranger.npz", *lines[3:]]))
    assert_one_line_error(cli(*no_prep, "--datalist", bad), "line 3: 'stranger' matches no image in")
    bad.write_text("\n".join([*lines, lines[0]]))
    assert_one_line_error(cli(*no_prep, "--datalist", bad), "line 7", "names the image", "again (line 1)")
    bad.write_text("\n".join(lines[:-1]))  # one output more than the list
    assert_one_line_error(cli(*no_prep, "--datalist", bad), "unexpected file output_000005.npz")
    (vendor["outputs"] / "output_000005.npz").unlink()  # one output fewer than the list
    assert_one_line_error(cli(*no_prep, "--datalist", vendor["datalist"]), "missing output_000005.npz")
    assert_one_line_error(cli("decode", "--bin", root, "--prep", root / "prep_bin", "--ann", vendor["ann"],
                              "--out", root / "x", "--datalist", vendor["datalist"]), "--datalist applies to")
    assert_one_line_error(cli(*no_prep[:1], "--bin", root, *no_prep[3:]), "--bin outputs need --prep")


def test_vendor_inputs_of_an_exif_rotated_image_are_refused(vendor):
    from PIL import Image

    path = vendor["images"] / "img_1.png"
    jpeg = path.with_suffix(".jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(path).convert("RGB").save(jpeg, exif=exif.tobytes())
    path.unlink()
    data = json.loads(vendor["ann"].read_text())
    next(i for i in data["images"] if i["file_name"] == "img_1.png")["file_name"] = "img_1.jpg"
    vendor["ann"].write_text(json.dumps(data))
    assert_one_line_error(cli("decode", "--npz", vendor["outputs"], "--datalist", vendor["datalist"], "--profile",
                              vendor["profile"], "--data", vendor["images"], "--ann", vendor["ann"],
                              "--out", vendor["root"] / "r"), "img_1.jpg has EXIF orientation 6")
