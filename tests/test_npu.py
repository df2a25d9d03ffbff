"""File-based NPU flow: preprocess -> (emulated or hand-written) vendor outputs -> decode -> same mAP as `run`.

A tiny dynamic-batch ONNX model built here with onnx.helper, plus a few cv2-drawn images and a COCO
json, cover the whole trip without ../shared; nanodet-m-320 on coco-tiny and the bundled demo model
repeat it where present. Vendor outputs are also written here with plain numpy (tofile / np.save /
np.savez), independently of harness.npu's writers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.core.errors import HarnessError
from harness.images.preprocess import place_geometry, preprocess_image
from harness.measure import runner
from harness.measure.results import ResultsStore
from harness.npu import ais, vamp
from harness.npu.decode_outputs import decode_run
from harness.npu.prep import load_prep, onnx_io
from harness.npu.prepare import prepare
from harness.profiles import load_profile

TOL = 0.0005
ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "harness" / "assets" / "demo" / "demo-nanodet.onnx"

TINY_PROFILE = """
description = "test-only tiny GFL model"
[input]
width = 64
height = 64
resize = "letterbox"
pad_value = 0
color = "bgr"
mean = [103.53, 116.28, 123.675]
std = [57.375, 57.12, 58.395]
[decoder]
kind = "gfl"
strides = [8, 16, 32]
reg_max = 7
prior_offset = 0.5
scores = "sigmoid"
[postprocess]
score_threshold = 0.05
iou_threshold = 0.6
max_detections = 100
[classes]
names = ["red", "blue"]
category_ids = [1, 2]
"""


# ---------------------------------------------------------------- tiny model and data, built here

def build_tiny_model(path: Path) -> Path:
    """[B,3,64,64] -> [B,84,2+32]: per-prior colour scores and box bins from pooled pixels (dynamic batch)."""
    rng = np.random.default_rng(0)
    nodes, inits, levels = [], [], []
    k = 3.0
    w_cls = np.array([[-k, k], [0, 0], [k, -k]], np.float32)  # BGR: red = R - B, blue = B - R
    b_cls = np.array([-1.5 * k, -1.5 * k], np.float32)
    inits += [numpy_helper.from_array(w_cls, "w_cls"), numpy_helper.from_array(b_cls, "b_cls"),
              numpy_helper.from_array(np.array([0, 3, -1], np.int64), "shape3")]
    for stride, hot in ((8, (1,)), (16, (0, 1)), (32, (0,))):
        bias = np.zeros((4, 8), np.float32)
        bias[:, list(hot)] = 4.0
        inits += [numpy_helper.from_array((0.1 * rng.standard_normal((3, 32))).astype(np.float32), f"w_box{stride}"),
                  numpy_helper.from_array(bias.reshape(32), f"b_box{stride}")]
        s = str(stride)
        nodes += [
            helper.make_node("AveragePool", ["image"], ["pool" + s], kernel_shape=[stride, stride], strides=[stride, stride]),
            helper.make_node("Reshape", ["pool" + s, "shape3"], ["flat" + s]),
            helper.make_node("Transpose", ["flat" + s], ["rows" + s], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["rows" + s, "w_cls"], ["cls_mm" + s]),
            helper.make_node("Add", ["cls_mm" + s, "b_cls"], ["cls_logit" + s]),
            helper.make_node("Sigmoid", ["cls_logit" + s], ["cls" + s]),
            helper.make_node("MatMul", ["rows" + s, f"w_box{stride}"], ["box_mm" + s]),
            helper.make_node("Add", ["box_mm" + s, f"b_box{stride}"], ["box" + s]),
            helper.make_node("Concat", ["cls" + s, "box" + s], ["level" + s], axis=2),
        ]
        levels.append("level" + s)
    nodes.append(helper.make_node("Concat", levels, ["output"], axis=1))
    graph = helper.make_graph(
        nodes, "tiny_gfl",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 84, 34])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def build_tiny_dataset(root: Path, count: int = 10) -> tuple[Path, Path]:
    """Non-square grey images with red/blue squares, and their COCO json."""
    rng = np.random.default_rng(1)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    for i in range(count):
        w, h = (128, 96) if i % 2 else (96, 120)
        img = np.full((h, w, 3), 128, np.uint8)
        for j in range(2):
            side = int(rng.integers(30, 44))
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            if j == 1 and anns and anns[-1]["image_id"] == i + 1:
                px, py, ps, _ = anns[-1]["bbox"]
                if x < px + ps and px < x + side and y < py + ps and py < y + side:
                    continue
            cls = int(rng.integers(0, 2))
            img[y:y + side, x:x + side] = (0, 0, 255) if cls == 0 else (255, 0, 0)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
        name = f"img_{i}.png"
        cv2.imwrite(str(images_dir / name), img)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    ann_path = root / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}))
    return images_dir, ann_path


# ---------------------------------------------------------------- the round trip, shared by every model

def dynamic_batch(model: Path) -> bool:
    first, _ = onnx_io(model)
    return first["shape"][0] is None


def round_trip(model: Path, profile, images_dir: Path, ann: Path, work: Path, limit: int | None = None) -> dict:
    """mAP of `run --target ort` and of preprocess -> emulate -> decode for ais and vamp, at bs 1 and 4."""
    from harness.data.coco import load_dataset

    dataset = load_dataset(images_dir, ann, limit)
    ort_sizes = [1, 4] if dynamic_batch(model) else [1]
    config = runner.RunConfig(target="ort", model=str(model), profile=profile, images_dir=images_dir, ann_path=ann,
                              batch_sizes=ort_sizes, bench_seconds=0.05, max_seconds=0.05, warmup_seconds=0.0, min_iterations=1,
                              limit=limit)
    rows = runner.run(config, ResultsStore(work / "ort", env={}))
    maps = {("ort", r["bs"]): r["map"] for r in rows}
    if 4 not in ort_sizes:  # fixed batch-1 graph: the vendor tools run it at batch 1 too
        maps[("ort", 4)] = maps[("ort", 1)]
    for fmt in ("bin", "npz"):
        prepare(dataset.images, profile, work / f"prep_{fmt}", fmt, model=model)
    for bs in (1, 4):
        info = ais.emulate(model, work / "prep_bin", work / f"ais_out_bs{bs}", batchsize=bs)
        assert info["batch"] == (bs if dynamic_batch(model) else 1)
        row = decode_run("ais", work / f"ais_out_bs{bs}", work / "prep_bin", ann)
        assert row["bs"] == info["batch"] and row["fps"] is not None and row["images"] == len(dataset.images)
        maps[("ais", bs)] = row["map"]
        vamp.emulate(model, work / "prep_npz", work / f"vamp_out_bs{bs}", batchsize=bs)
        row = decode_run("vamp", work / f"vamp_out_bs{bs}", work / "prep_npz", ann, bs=bs)
        assert row["fps"] is None and row["latency_ms_p50"] is None and row["images"] == len(dataset.images)
        maps[("vamp", bs)] = row["map"]
    print(f"\n{model.name}: " + ", ".join(f"{k[0]} bs{k[1]}={v:.5f}" for k, v in sorted(maps.items())))
    return maps


def assert_same_map(maps: dict) -> None:
    for bs in (1, 4):
        for kind in ("ais", "vamp"):
            assert abs(maps[(kind, bs)] - maps[("ort", bs)]) <= TOL, (kind, bs, maps)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    images_dir, ann = build_tiny_dataset(root)
    model = build_tiny_model(root / "tiny.onnx")
    (root / "tiny.toml").write_text(TINY_PROFILE)
    profile = load_profile(root / "tiny.toml")
    maps = round_trip(model, profile, images_dir, ann, root / "work")
    return {"root": root, "images": images_dir, "ann": ann, "model": model, "profile": profile,
            "work": root / "work", "maps": maps}


# ---------------------------------------------------------------- round trips

def test_tiny_round_trip_matches_in_process_run(tiny):
    assert tiny["maps"][("ort", 1)] > 0.05, "the tiny model must detect something, or equality proves nothing"
    assert_same_map(tiny["maps"])


@pytest.mark.slow
def test_nanodet_round_trip_matches_in_process_run(tmp_path, coco_tiny, nanodet_m_320):
    images_dir, ann = coco_tiny
    maps = round_trip(nanodet_m_320, load_profile("nanodet-m-320"), images_dir, ann, tmp_path)
    assert maps[("ort", 1)] > 0.2
    assert_same_map(maps)
    summary = json.loads(next(tmp_path.glob("ais_out_bs4/*_summary.json")).read_text())
    assert summary["args"][summary["args"].index("--batchsize") + 1] == "1"  # fixed batch-1 graph ran batch 1


def test_demo_model_round_trip_matches_in_process_run(tmp_path):
    if not DEMO_MODEL.is_file():
        pytest.skip(f"demo model {DEMO_MODEL} not built yet")
    from harness.data.synthetic import generate_dataset

    images_dir, ann = generate_dataset(tmp_path / "data", 12, seed=0, split="val")
    maps = round_trip(DEMO_MODEL, load_profile("demo"), images_dir, ann, tmp_path / "work")
    assert_same_map(maps)


# ---------------------------------------------------------------- input files

def test_inputs_are_the_in_process_tensors_and_image2npz_arrays(tiny):
    prep_bin, prep_npz = load_prep(tiny["work"] / "prep_bin"), load_prep(tiny["work"] / "prep_npz")
    spec = tiny["profile"].input
    for (stem, meta), (_, meta_npz) in zip(prep_bin.images, prep_npz.images):
        tensor, expected_meta = preprocess_image(meta.file, meta.image_id, spec)
        assert (prep_bin.folder / f"{stem}.bin").read_bytes() == tensor[None].astype(np.float32).tobytes()
        assert meta == expected_meta and meta_npz == expected_meta  # device geometry == resize_image's
        with np.load(prep_npz.folder / f"{stem}.npz", allow_pickle=False) as data:
            assert data.files == ["input_0"]
            assert np.array_equal(data["input_0"], cv2.imread(meta.file)[:, :, ::-1].transpose(2, 0, 1))
        _, _, sx, sy, px, py = place_geometry(meta.width, meta.height, spec)
        assert (meta_npz.scale_x, meta_npz.scale_y, meta_npz.pad_x, meta_npz.pad_y) == (sx, sy, px, py)
    lines = (prep_npz.folder / "datalist.txt").read_text().splitlines()
    assert lines == [str((prep_npz.folder / f"{s}.npz").resolve()) for s, _ in prep_npz.images]
    vdsp = json.loads((prep_npz.folder / "vdsp_params.json").read_text())
    assert vdsp["OpType"] == "FUSION_OP_RGB_LETTERBOX_CVTCOLOR_NORM_TENSOR"
    assert vdsp["OpConfig"]["Mean"] == list(spec.mean) and vdsp["OpConfig"]["ColorCvtCode"] == "RGB2BGR"
    assert prep_bin.outputs == [{"name": "output", "shape": [1, 84, 34], "dtype": "float32"}]


def test_preprocess_output_is_identical_for_any_worker_count(tiny, tmp_path):
    from harness.data.coco import load_dataset

    images = load_dataset(tiny["images"], tiny["ann"]).images
    for fmt in ("bin", "npz"):
        sidecars = [prepare(images, tiny["profile"], tmp_path / f"{fmt}{w}", fmt, workers=w)["images"] for w in (1, 3)]
        assert sidecars[0] == sidecars[1]
        names = sorted(p.name for p in (tmp_path / f"{fmt}1").glob(f"*.{fmt}"))
        assert len(names) == len(images)
        for name in names:
            assert (tmp_path / f"{fmt}1" / name).read_bytes() == (tmp_path / f"{fmt}3" / name).read_bytes()


# ---------------------------------------------------------------- outputs written independently (plain numpy)

def _ort_outputs(model: Path, tensors: list[np.ndarray]) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: t[None]}) for t in tensors]


def write_ais_by_hand(tiny, folder: Path, fmt: str = "bin") -> list[float]:
    prep = load_prep(tiny["work"] / "prep_bin")
    tensors = [np.fromfile(prep.folder / f"{s}.bin", np.float32).reshape(3, 64, 64) for s, _ in prep.images]
    folder.mkdir(parents=True)
    for (stem, _), outputs in zip(prep.images, _ort_outputs(tiny["model"], tensors)):
        for i, out in enumerate(outputs):
            if fmt == "bin":
                out.tofile(folder / f"{stem}_{i}.bin")
            else:
                np.save(folder / f"{stem}_{i}.npy", out)
    return [2.0, 2.5, 3.0, 10.0]


def test_hand_written_ais_outputs_old_tool_layout(tiny, tmp_path):
    folder = tmp_path / "out" / "2024_01_02-03_04_05"
    write_ais_by_hand(tiny, folder)
    summary = {"filesinfo": {}, "args": ["ais_infer.py", "--model", "m_bs4.om", "--batchsize", "4"],
               "NPU_compute_time": {"min": 2.0, "max": 9.0, "mean": 4.0, "median": 3.5, "percentile(99%)": 8.8},
               "H2D_latency": {"min": 0.1, "max": 0.2, "mean": 0.15, "median": 0.15, "percentile(99%)": 0.2},
               "D2H_latency": {"min": 0.1, "max": 0.2, "mean": 0.15, "median": 0.15, "percentile(99%)": 0.2},
               "throughput": 1000.0}
    (folder / "sumary.json").write_text(json.dumps(summary))
    row = decode_run("ais", tmp_path / "out", tiny["work"] / "prep_bin", tiny["ann"])  # the parent --output dir
    assert abs(row["map"] - tiny["maps"][("ort", 1)]) <= TOL
    assert (row["target"], row["bs"], row["model"], row["fps"]) == ("ascend", 4, "m_bs4.om", 1000.0)
    assert (row["latency_ms_p50"], row["latency_ms_p90"], row["latency_ms_p99"]) == (3.5, None, 8.8)
    assert row["time_covers"] == "device compute only (NPU_compute_time from the ais summary)"


def test_hand_written_ais_npy_outputs_new_tool_layout(tiny, tmp_path):
    folder = tmp_path / "out" / "named_run"
    times = write_ais_by_hand(tiny, folder, fmt="npy")
    summary = {"args": ["ais_bench", "--batchsize=2"], "NPU_compute_time": {"mean": 4.375, "median": 2.75, "P99": 9.8},
               "throughput": 457.1, "npu_compute_time_list": times, "count": 4}
    (tmp_path / "out" / "named_run_summary.json").write_text(json.dumps(summary))
    row = decode_run("ais", folder, tiny["work"] / "prep_bin", tiny["ann"], bs=8)
    assert abs(row["map"] - tiny["maps"][("ort", 1)]) <= TOL
    assert row["bs"] == 2 and row["latency_ms_p99"] == 9.8
    assert row["latency_ms_p90"] == round(float(np.percentile(times, 90)), 3)


def test_hand_written_vamp_outputs(tiny, tmp_path):
    """Inputs made from the original images on the in-process path, outputs saved with np.savez."""
    prep = load_prep(tiny["work"] / "prep_npz")
    tensors = [preprocess_image(m.file, m.image_id, tiny["profile"].input)[0] for _, m in prep.images]
    for index, outputs in enumerate(_ort_outputs(tiny["model"], tensors)):
        np.savez(tmp_path / f"output_{index:06d}.npz", **{f"output_{k}": o for k, o in enumerate(outputs)})
    row = decode_run("vamp", tmp_path, prep.folder, tiny["ann"], bs=4)
    assert abs(row["map"] - tiny["maps"][("ort", 1)]) <= TOL
    assert row["target"] == "vacc" and row["bs"] == 4 and row["fps"] is None
    assert any("no timing file" in n for n in row["notes"])


def test_decode_row_has_machine_state_and_saves_its_compact_detections_as_dicts(tiny, tmp_path):
    """A decode row is built like a run row: machine_state from its RowWatch, and its detections (kept as one
    compact array until the evaluation) saved as COCO dicts that score the row's mAP again when evaluated
    on their own through the dict path."""
    from harness.data.annotations import load_annotations
    from harness.measure.artifacts import read_detections
    from harness.measure.evaluate import CocoEvaluator

    row = decode_run("ais", tiny["work"] / "ais_out_bs1", tiny["work"] / "prep_bin", tiny["ann"],
                     out_dir=tmp_path, save_detections=True)
    state = row.machine_state
    assert state is not None and state.rss_peak_mib > 0
    assert "device's own tool" in state.energy_na
    saved = read_detections(tmp_path / row.artifacts["detections"])
    assert len(saved.detections) == row["detections"] > 0
    assert all(isinstance(d["bbox"], list) and isinstance(d["image_id"], int) for d in saved.detections)
    metrics = CocoEvaluator(load_annotations(tiny["ann"])).evaluate(saved.detections, list(saved.images))
    assert round(metrics["map"], 5) == row["map"]  # the row keeps 5 places (row.metric_fields)


# ---------------------------------------------------------------- errors name the image and the file

@pytest.fixture()
def ais_copy(tiny, tmp_path):
    src = next(p for p in (tiny["work"] / "ais_out_bs1").iterdir() if p.is_dir())
    dst = tmp_path / "out" / src.name
    shutil.copytree(src, dst)
    shutil.copy(src.parent / f"{src.name}_summary.json", dst.parent)
    return dst


def _decode_ais(tiny, folder, **kw):
    return decode_run("ais", folder, tiny["work"] / "prep_bin", tiny["ann"], **kw)


def test_ais_missing_output_file(tiny, ais_copy):
    (ais_copy / "img_3_0.bin").unlink()
    with pytest.raises(HarnessError, match=r"missing output file img_3_0\.bin for image img_3\.png"):
        _decode_ais(tiny, ais_copy)


def test_ais_unexpected_output_file(tiny, ais_copy):
    (ais_copy / "img_3_1.bin").write_bytes(b"\0" * 16)
    with pytest.raises(HarnessError, match=r"unexpected file img_3_1\.bin"):
        _decode_ais(tiny, ais_copy)


def test_ais_truncated_bin(tiny, ais_copy):
    path = ais_copy / "img_5_0.bin"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(HarnessError, match=r"image img_5\.png.*img_5_0\.bin has \d+ bytes, expected 11424.*truncated"):
        _decode_ais(tiny, ais_copy)


def test_ais_npy_with_wrong_dtype(tiny, ais_copy):
    (ais_copy / "img_2_0.bin").unlink()
    np.save(ais_copy / "img_2_0.npy", np.zeros((1, 84, 34), np.float64))
    with pytest.raises(HarnessError, match=r"image img_2\.png.*img_2_0\.npy holds dtype float64, expected float32"):
        _decode_ais(tiny, ais_copy)


def test_ais_summary_malformed_or_absent(tiny, ais_copy):
    summary = ais_copy.parent / f"{ais_copy.name}_summary.json"
    summary.write_text("{not json")
    with pytest.raises(HarnessError, match=r"ais summary .*_summary\.json: not valid JSON"):
        _decode_ais(tiny, ais_copy)
    summary.write_text(json.dumps({"NPU_compute_time": {"median": 1.0}, "throughput": 5}))
    with pytest.raises(HarnessError, match=r"NPU_compute_time\.mean is None, expected a number"):
        _decode_ais(tiny, ais_copy)
    summary.unlink()
    row = _decode_ais(tiny, ais_copy, bs=3)
    assert row["fps"] is None and row["latency_ms_p50"] is None and row["bs"] == 3
    assert any("no ais summary json" in n for n in row["notes"])


def test_ais_parent_with_two_output_folders(tiny, ais_copy):
    shutil.copytree(ais_copy, ais_copy.parent / "2030_01_01-00_00_00")
    with pytest.raises(HarnessError, match=r"holds 2 ais output folders"):
        _decode_ais(tiny, ais_copy.parent)


def test_raw_bin_without_known_shapes_needs_model(tiny, tmp_path, ais_copy):
    from harness.data.coco import load_dataset

    images = load_dataset(tiny["images"], tiny["ann"]).images
    prepare(images, tiny["profile"], tmp_path / "prep_nomodel", "bin")
    no_shapes = r"img_0_0\.bin \(image img_0\.png \(id 1\)\): no output shapes are known.*pass --model"
    with pytest.raises(HarnessError, match=no_shapes):
        decode_run("ais", ais_copy, tmp_path / "prep_nomodel", tiny["ann"])
    row = decode_run("ais", ais_copy, tmp_path / "prep_nomodel", tiny["ann"], model=tiny["model"])
    assert abs(row["map"] - tiny["maps"][("ort", 1)]) <= TOL


@pytest.fixture()
def vamp_copy(tiny, tmp_path):
    dst = tmp_path / "npz_output"
    shutil.copytree(tiny["work"] / "vamp_out_bs1", dst)
    return dst


def _decode_vamp(tiny, folder):
    return decode_run("vamp", folder, tiny["work"] / "prep_npz", tiny["ann"])


def test_vamp_missing_and_extra_files(tiny, vamp_copy):
    (vamp_copy / "output_000004.npz").rename(vamp_copy / "output_000010.npz")
    with pytest.raises(HarnessError, match=r"missing output_000004\.npz for image img_4\.png"):
        _decode_vamp(tiny, vamp_copy)
    shutil.copy(vamp_copy / "output_000010.npz", vamp_copy / "output_000004.npz")
    with pytest.raises(HarnessError, match=r"unexpected file output_000010\.npz"):
        _decode_vamp(tiny, vamp_copy)


def test_vamp_wrong_shape_and_pickled_objects(tiny, vamp_copy):
    np.savez(vamp_copy / "output_000001.npz", output_0=np.zeros((1, 80, 34), np.float32))
    with pytest.raises(HarnessError, match=r"image img_1\.png.*output_000001\.npz has shape 1x80x34, expected 1x84x34"):
        _decode_vamp(tiny, vamp_copy)
    np.savez(vamp_copy / "output_000001.npz", output_0=np.array([{"boxes": 1}], dtype=object))
    with pytest.raises(HarnessError, match=r"image img_1\.png.*output_000001\.npz key 'output_0' holds pickled"):
        _decode_vamp(tiny, vamp_copy)


def test_prep_json_missing_or_invalid(tiny, tmp_path, vamp_copy):
    with pytest.raises(HarnessError, match=r"prep\.json not found"):
        decode_run("vamp", vamp_copy, tmp_path / "nowhere", tiny["ann"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "prep.json").write_text("[1, 2")
    with pytest.raises(HarnessError, match=r"bad/prep\.json: not valid JSON"):
        decode_run("vamp", vamp_copy, bad, tiny["ann"])
    data = json.loads((tiny["work"] / "prep_npz" / "prep.json").read_text())
    del data["images"][0]["scale_x"]
    (bad / "prep.json").write_text(json.dumps(data))
    with pytest.raises(HarnessError, match=r"images\[0\] is missing 'scale_x'"):
        decode_run("vamp", vamp_copy, bad, tiny["ann"])
    with pytest.raises(HarnessError, match=r"was prepared as npz"):
        decode_run("ais", vamp_copy, tiny["work"] / "prep_npz", tiny["ann"])


# ---------------------------------------------------------------- the CLI wiring

def test_cli_preprocess_emulate_decode(tiny, tmp_path):
    cli = CliRunner()
    common = ["--ann", str(tiny["ann"])]
    steps = [
        ["preprocess", "--profile", str(tiny["root"] / "tiny.toml"), "--data", str(tiny["images"]), *common,
         "--format", "bin", "--out", str(tmp_path / "prep"), "--model", str(tiny["model"]), "--workers", "2"],
        ["emulate", "--runner", "ais", "--model", str(tiny["model"]), "--prep", str(tmp_path / "prep"),
         "--out", str(tmp_path / "out"), "--batchsize", "4", "--summary-style", "old"],
        ["decode", "--bin", str(tmp_path / "out"), "--prep", str(tmp_path / "prep"), *common,
         "--out", str(tmp_path / "results")],
    ]
    for args in steps:
        result = cli.invoke(main, args)
        assert result.exit_code == 0, (args[0], result.output)
    assert list(tmp_path.glob("out/*/sumary.json"))
    rows = json.loads((tmp_path / "results" / "results.json").read_text())["rows"]
    assert rows[0]["target"] == "ascend" and rows[0]["bs"] == 4
    assert abs(rows[0]["map"] - tiny["maps"][("ort", 4)]) <= TOL
    assert "ascend" in (tmp_path / "results" / "report.md").read_text()
    result = cli.invoke(main, ["decode", "--npz", str(tmp_path / "out"), "--prep", str(tmp_path / "missing"),
                               *common, "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "error:" in result.output and "prep.json not found" in result.output
