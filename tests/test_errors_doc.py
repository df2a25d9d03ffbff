"""docs/errors.md is what the user really sees: each table row marked `test_errors_doc[ID]` is run here
on its real bad input and the line it documents must be the last line on stderr (exit 2).

The cases run in a fresh folder that is also the current folder, with the paths a user would type
(`tiny.onnx`, `ds/images`, `out`), so the documented lines hold those paths as printed. In the doc `…`
stands for a part that varies between machines (a pid, a version, a long list); everything else must
match exactly. `python -m tests.test_errors_doc [ID...]` prints the lines the harness gives now (to
update the doc after a deliberate change of wording).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.data.synthetic import generate_dataset
from tests.tinymodel import write_tiny_convnet, write_tiny_dataset, write_tiny_model, write_tiny_profile

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"

RUN = ["run", "-t", "ort", "-m", "tiny.onnx", "-p", "tiny.toml", "--data", "ds/images", "--ann", "ds/instances.json",
       "--seconds", "0.1", "--max-seconds", "0.1", "--warmup", "0.05", "--out", "out"]
PREP = ["preprocess", "-p", "tiny.toml", "--data", "ds/images", "--ann", "ds/instances.json", "--format", "bin",
        "--out", "prep", "--model", "tiny.onnx"]
QUANT = ["quantize", "-m", "conv.onnx", "-p", "tiny.toml", "--calib", "calib/images", "--out", "quant"]
SENS = ["sensitivity", "-m", "conv.onnx", "-p", "tiny.toml", "--calib", "calib/images", "--data", "ds/images",
        "--ann", "ds/instances.json", "--out", "sens"]


def with_flags(base: list[str], **flags: str) -> list[str]:
    """base with --flag values replaced (or appended); keys use _ for -."""
    args = list(base)
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-") if len(key) > 1 else "-" + key
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def edit_ann(change: Callable[[dict], None]) -> None:
    path = Path("ds/instances.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def finished_run() -> None:
    """A real, finished tiny run in out/ (a few seconds)."""
    result = CliRunner().invoke(main, RUN)
    assert result.exit_code == 0, result.output


def prepared() -> None:
    result = CliRunner().invoke(main, PREP)
    assert result.exit_code == 0, result.output


def calib_images() -> None:
    generate_dataset(Path("calib"), num_images=4, seed=9, split="calib")
    write_tiny_convnet(Path("conv.onnx"))


# ------------------------------------------------------------------ the cases: set up in cwd, return the args

def _corrupt_model():
    Path("corrupt.onnx").write_bytes(b"\x08\x07garbage that is not protobuf \xff\xfe")
    return with_flags(RUN, m="corrupt.onnx")


def _renamed_profile_key():
    """A user's profile written for an earlier version: [input] letterbox_rounding (now box_scale)."""
    Path("old.toml").write_text(Path("tiny.toml").read_text().replace(
        'resize = "letterbox"', 'resize = "letterbox"\nletterbox_rounding = "ultralytics"'))
    return with_flags(RUN, p="old.toml")


def _empty_model():
    Path("empty.onnx").write_bytes(b"")
    return with_flags(RUN, m="empty.onnx")


def _not_json():
    Path("ds/instances.json").write_text("{nope")
    return RUN


def _not_coco():
    Path("ds/instances.json").write_text(json.dumps({"images": []}))
    return RUN


def _bbox_string():
    edit_ann(lambda d: d["annotations"][2].__setitem__("bbox", "10 10 5 5"))
    return RUN


def _duplicate_image_id():
    edit_ann(lambda d: d["images"][3].__setitem__("id", d["images"][1]["id"]))
    return RUN


def _duplicate_file_name():
    edit_ann(lambda d: d["images"][4].__setitem__("file_name", d["images"][0]["file_name"]))
    return RUN


def _category_not_listed():
    edit_ann(lambda d: d["categories"].pop())  # category 3 has boxes
    return RUN


def _truncated_jpeg():
    path = Path("ds/images/img_002.jpg")
    path.write_bytes(path.read_bytes()[:-200])
    return RUN


def _missing_and_stray_image():
    Path("ds/images/img_004.jpg").rename("ds/images/stray.jpg")
    return RUN


def _fifo():
    Path("ds/images/img_002.jpg").unlink()
    os.mkfifo("ds/images/img_002.jpg")
    return RUN


def _corrupt_middle():
    path = Path("ds/images/img_004.jpg")
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = bytearray(path.read_bytes())
    start = data.index(b"\xff\xda")  # start of scan
    data[start + 300:start + 900] = bytes(600)
    path.write_bytes(bytes(data))
    return RUN


def _max_pixels():
    return with_flags(RUN, max_pixels="1000")


def _results_exist():
    finished_run()
    return RUN


def _out_is_a_file():
    Path("blk").write_text("a file, not a folder")
    return with_flags(RUN, out="blk/x")


def _results_symlink():
    Path("victim").write_text("precious")
    Path("out").mkdir()
    Path("out/results.json").symlink_to(Path("victim").resolve())
    return RUN


def _resume_other_limit():
    finished_run()
    return [*with_flags(RUN, limit="4"), "--resume"]


def _resume_other_profile():
    finished_run()
    Path("tiny.toml").write_text(Path("tiny.toml").read_text().replace("score_threshold = 0.05",
                                                                       "score_threshold = 0.1"))
    return [*RUN, "--resume"]


def _precision_fp16_on_ort():
    return with_flags(RUN, precision="fp16")


def _precision_banana():
    return with_flags(RUN, precision="banana")


def _report_not_json():
    Path("bad").mkdir()
    Path("bad/results.json").write_text("{ nope")
    return ["report", "bad", "--out", "r.md"]


def _decode_bad_bs():
    return ["decode", "--bin", "o", "--prep", "prep", "--ann", "ds/instances.json", "--out", "r", "--bs", "0"]


def _prep_name_escapes():
    prepared()
    sidecar = Path("prep/prep.json")
    data = json.loads(sidecar.read_text())
    data["images"][0]["stem"] = "../evil"
    sidecar.write_text(json.dumps(data))
    return ["emulate", "--runner", "ais", "-m", "tiny.onnx", "--prep", "prep", "--out", "o"]


def _output_dirname_escapes():
    prepared()
    return ["emulate", "--runner", "ais", "-m", "tiny.onnx", "--prep", "prep", "--out", "o", "--output-dirname", "../x"]


def _quant_exclude_matches_nothing():
    calib_images()
    return [*QUANT, "--exclude", "^head\\."]


def _quant_bad_method():
    calib_images()
    return [*QUANT, "--method", "kl"]


def _quant_not_onnx():
    calib_images()
    Path("broken.onnx").write_bytes(b"not a protobuf at all")
    return with_flags(QUANT, m="broken.onnx")


def _sens_bad_target():
    calib_images()
    return [*SENS, "--target", "trt"]


def _sens_negative_drop():
    calib_images()
    return [*SENS, "--max-drop", "-0.1"]


def _emulated(runner: str) -> str:
    """preprocess + emulate on the tiny model: the output folder a device run would leave."""
    fmt = "bin" if runner == "ais" else "npz"
    prep = CliRunner().invoke(main, with_flags(PREP, format=fmt))
    assert prep.exit_code == 0, prep.output
    extra = ["--output-dirname", "run1"] if runner == "ais" else []
    done = CliRunner().invoke(main, ["emulate", "--runner", runner, "-m", "tiny.onnx", "--prep", "prep", "--out",
                                     runner, *extra])
    assert done.exit_code == 0, done.output
    return "ais/run1" if runner == "ais" else "vamp"


DECODE_AIS = ["decode", "--bin", "ais/run1", "--prep", "prep", "--ann", "ds/instances.json", "--out", "r"]
DECODE_VAMP = ["decode", "--npz", "vamp", "--prep", "prep", "--ann", "ds/instances.json", "--out", "r"]


def _ais_missing_output():
    _emulated("ais")
    Path("ais/run1/img_003_0.bin").unlink()
    return DECODE_AIS


def _ais_truncated_output():
    _emulated("ais")
    path = Path("ais/run1/img_003_0.bin")
    path.write_bytes(path.read_bytes()[:-100])
    return DECODE_AIS


def _ais_nan_output():
    _emulated("ais")
    path = Path("ais/run1/img_002_0.bin")
    values = np.fromfile(path, np.float32)
    values[7] = np.nan
    values.tofile(path)
    return DECODE_AIS


def _ais_npy_claiming_terabytes():
    _emulated("ais")
    for path in Path("ais/run1").glob("*.bin"):  # ais_bench --outfmt NPY
        np.save(path.with_suffix(".npy"), np.fromfile(path, np.float32).reshape(1, 16, 34))
        path.unlink()
    with open("ais/run1/img_001_0.npy", "wb") as handle:  # 1 kB on disk, 3.6 TiB declared
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (1_000_000, 1_000_000)})
        handle.write(bytes(512))
    return DECODE_AIS


def _vamp_zip_bomb():
    from tests.test_trust_npu import zip_bomb_npz

    _emulated("vamp")
    zip_bomb_npz(Path("vamp/output_000000.npz"), (1, 16, 34), 200_000_000)  # 200 MB of zeros in 200 kB
    return DECODE_VAMP


def _vamp_pickled():
    _emulated("vamp")
    np.savez("vamp/output_000001.npz", output_0=np.array([{"a": 1}], dtype=object))
    return DECODE_VAMP


def _vamp_without_prep_or_datalist():
    _emulated("vamp")
    return ["decode", "--npz", "vamp", "-p", "tiny.toml", "--data", "ds/images", "--ann", "ds/instances.json",
            "--out", "r"]


def _vamp_datalist_stranger():
    _emulated("vamp")
    Path("list.txt").write_text("".join(f"/data/npz/img_{i:03d}.npz\n" for i in (0, 1, 99, 3, 4, 5)))
    return ["decode", "--npz", "vamp", "-p", "tiny.toml", "--data", "ds/images", "--ann", "ds/instances.json",
            "--datalist", "list.txt", "--out", "r"]


def _input_mismatch():
    write_tiny_profile(Path("w64.toml"), size=64)
    return with_flags(RUN, p="w64.toml")


def _output_mismatch():
    write_tiny_profile(Path("w2.toml"), strides=[8, 16])
    return with_flags(RUN, p="w2.toml")


def _fixed_batch():
    from tests.test_rows_and_sweep import fixed_batch_model

    fixed_batch_model(Path("fixed.onnx"))
    return with_flags(RUN, m="fixed.onnx", bs="4")


def _bench_dynamic_size():
    import onnx

    model = onnx.load("tiny.onnx")
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "size"
    onnx.save(model, "dyn.onnx")
    return ["bench", "-t", "ort", "-m", "dyn.onnx", "--out", "b"]


def _gpu_target():
    from harness.targets import get_target

    if get_target("ort-cuda").availability()[0]:
        pytest.skip("ort-cuda runs here: no refusal to show")
    return with_flags(RUN, t="ort-cuda")


def _png_bomb():
    from tests.test_trust_inputs import png_bomb

    Path("ds/images/img_003.jpg").unlink()
    png_bomb(Path("ds/images/img_003.png"), 30000)  # 874 kB; 2.7 GB once decoded
    edit_ann(lambda d: d["images"][3].__setitem__("file_name", "img_003.png"))
    return RUN


def _nan_model():
    from tests.test_trust_npu import write_nan_model

    write_nan_model(Path("nan.onnx"), Path("tiny.onnx"))
    cv2.imwrite("ds/images/img_003.jpg", np.full((50, 60, 3), 90, np.uint8))  # dark: its outputs are NaN
    return with_flags(RUN, m="nan.onnx", bs="2")


def _unknown_option():
    return [*with_flags(RUN, t="ov"), "-o", "nirek=2"]


def _quant_calib_missing():
    calib_images()
    return with_flags(QUANT, calib="nowhere")


def _quant_calib_empty():
    calib_images()
    Path("empty").mkdir()
    return with_flags(QUANT, calib="empty")


def _quant_calib_truncated():
    calib_images()
    Path("calib/images/calib_000001.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return QUANT


def _quant_out_not_empty():
    calib_images()
    Path("quant").mkdir()
    Path("quant/keep.txt").write_text("mine")
    return QUANT


def _quant_nothing():
    calib_images()
    return with_flags(QUANT, m="tiny.onnx")


def _quant_trt_cache_and_calib():
    calib_images()
    Path("c.cache").write_text("TRT-8601-EntropyCalibration2\nimage: 3c000000\n")
    return [*QUANT, "--from-trt-cache", "c.cache"]


def _quant_trt_cache_unknown_tensor():
    calib_images()
    Path("c.cache").write_text("TRT-8601-EntropyCalibration2\nimage: 3c000000\nneck.out: 3c000000\n")
    args = [*QUANT, "--from-trt-cache", "c.cache"]
    index = args.index("--calib")
    return args[:index] + args[index + 2:]


def _sens_empty_calib():
    calib_images()
    Path("empty").mkdir()
    return with_flags(SENS, calib="empty")


def _sens_mode_typo():
    calib_images()
    return [*SENS, "--mode", "exlude"]


def _sens_out_not_empty():
    calib_images()
    Path("sens").mkdir()
    Path("sens/notes.txt").write_text("mine")
    return SENS


def _report_symlink_out():
    finished_run()
    Path("victim").write_text("precious")
    Path("page.md").symlink_to(Path("victim").resolve())
    return ["report", "out", "--out", "page.md"]


def _report_nothing():
    Path("empty").mkdir()
    return ["report", "empty"]


def _undecodable_image():
    Path("ds/images/img_001.jpg").write_bytes(b"\xff\xd8this is not a jpeg\xff\xd9")
    return RUN


def _ais_summary_not_json():
    _emulated("ais")
    Path("ais/run1_summary.json").write_text("{not json")
    return DECODE_AIS


def _ais_two_folders():
    import shutil

    _emulated("ais")
    shutil.copytree("ais/run1", "ais/run2")
    return with_flags(DECODE_AIS, bin="ais")


def _ais_wrong_dtype():
    _emulated("ais")
    Path("ais/run1/img_002_0.bin").unlink()
    np.save("ais/run1/img_002_0.npy", np.zeros((1, 16, 34), np.float64))
    return DECODE_AIS


def _vamp_extra_file():
    import shutil

    _emulated("vamp")
    shutil.copy("vamp/output_000004.npz", "vamp/output_000010.npz")
    return DECODE_VAMP


def _vamp_prep_of_other_format():
    _emulated("vamp")
    return ["decode", "--bin", "vamp", "--prep", "prep", "--ann", "ds/instances.json", "--out", "r"]


# ------------------------------------------------------------------ issue 30 (trust, round 3)

def _quant_users_file():
    calib_images()
    Path("quant").mkdir()
    Path("quant/model.qdq.onnx").write_bytes(b"the user's own model")
    return [*QUANT, "--overwrite"]


def _model_fifo():
    os.mkfifo("pipe.onnx")
    return with_flags(RUN, m="pipe.onnx")


def _model_empty_folder():
    Path("x.onnx").mkdir()
    return with_flags(RUN, m="x.onnx")


def _scores_out_of_range():
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load("tiny.onnx")
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [o + "_raw" if o == out else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(140, np.float32), "k140"))
    model.graph.node.append(helper.make_node("Mul", [out + "_raw", "k140"], [out]))
    onnx.save(model, "x140.onnx")
    return with_flags(RUN, m="x140.onnx")


def _report_row_nan():
    Path("bad").mkdir()
    row = {"target": "ort", "bs": 1, "map": "@"}
    Path("bad/results.json").write_text(json.dumps({"rows": [row]}).replace('"@"', "NaN"))
    return ["report", "bad", "--out", "r.md"]


def _report_artifact_outside():
    result = CliRunner().invoke(main, [*with_flags(RUN, t="ort,ov"), "--save-detections"])
    assert result.exit_code == 0, result.output
    data = json.loads(Path("out/results.json").read_text())
    data["rows"][1]["artifacts"]["detections"] = "../../x.json.gz"
    Path("out/results.json").write_text(json.dumps(data))
    return ["report", "out", "--fidelity", "--out", "r.md"]


def _calib_identical():
    write_tiny_convnet(Path("conv.onnx"))
    Path("calib/images").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(f"calib/images/c{i}.png", np.zeros((40, 40, 3), np.uint8))
    return QUANT


def _vamp_datalist_resorted():
    _emulated("vamp")
    lines = Path("prep/datalist.txt").read_text().splitlines()
    Path("prep/datalist.txt").write_text("\n".join(sorted(lines, reverse=True)) + "\n")
    return DECODE_VAMP


def _lock_held():
    return RUN  # the holder is started by the test (see HOLDS_LOCK)


CASES: dict[str, Callable[[], list[str]]] = {
    "model-missing": lambda: with_flags(RUN, m="nope.onnx"),
    "model-corrupt": _corrupt_model,
    "model-empty": _empty_model,
    "profile-unknown": lambda: with_flags(RUN, p="yolo-v99"),
    "profile-renamed-key": _renamed_profile_key,
    "target-unknown": lambda: with_flags(RUN, t="tpu"),
    "bs-zero": lambda: with_flags(RUN, bs="0"),
    "bs-empty-item": lambda: with_flags(RUN, bs="1,,4"),
    "seconds-nan": lambda: with_flags(RUN, seconds="nan"),
    "warmup-inf": lambda: with_flags(RUN, warmup="inf"),
    "limit-zero": lambda: with_flags(RUN, limit="0"),
    "limit-negative": lambda: with_flags(RUN, limit="-1"),
    "data-missing": lambda: with_flags(RUN, data="nodir"),
    "ann-missing": lambda: with_flags(RUN, ann="none.json"),
    "ann-not-json": _not_json,
    "ann-not-coco": _not_coco,
    "ann-bbox-string": _bbox_string,
    "ann-duplicate-image-id": _duplicate_image_id,
    "ann-duplicate-file-name": _duplicate_file_name,
    "ann-category-not-listed": _category_not_listed,
    "image-truncated": _truncated_jpeg,
    "image-missing-and-stray": _missing_and_stray_image,
    "image-fifo": _fifo,
    "image-corrupt-middle": _corrupt_middle,
    "image-max-pixels": _max_pixels,
    "model-input-mismatch": _input_mismatch,
    "model-output-mismatch": _output_mismatch,
    "model-fixed-batch": _fixed_batch,
    "target-gpu-unavailable": _gpu_target,
    "option-unknown": _unknown_option,
    "mode-contradicts-hint": lambda: with_flags(RUN, t="ov", mode="latency", hint="THROUGHPUT"),
    "mode-contradicts-streams": lambda: with_flags(RUN, mode="latency", streams="2"),
    "mode-unknown": lambda: with_flags(RUN, mode="fast"),
    "max-seconds-below-seconds": lambda: with_flags(RUN, seconds="5", max_seconds="2"),
    "target-ci-zero": lambda: with_flags(RUN, target_ci="0"),
    "image-png-bomb": _png_bomb,
    "image-undecodable": _undecodable_image,
    "output-nan": _nan_model,
    "out-holds-results": _results_exist,
    "out-not-writable": _out_is_a_file,
    "out-locked": _lock_held,
    "out-symlink": _results_symlink,
    "resume-other-limit": _resume_other_limit,
    "resume-other-profile": _resume_other_profile,
    "precision-fp16-ort": _precision_fp16_on_ort,
    "precision-banana": _precision_banana,
    "report-not-json": _report_not_json,
    "report-top-classes": lambda: ["report", ".", "--top-classes", "-1"],
    "decode-bs-zero": _decode_bad_bs,
    "prep-name-escapes": _prep_name_escapes,
    "decode-missing-output": _ais_missing_output,
    "decode-summary-not-json": _ais_summary_not_json,
    "decode-two-output-folders": _ais_two_folders,
    "decode-wrong-dtype": _ais_wrong_dtype,
    "decode-extra-output": _vamp_extra_file,
    "decode-prep-of-other-format": _vamp_prep_of_other_format,
    "decode-prep-missing": lambda: ["decode", "--npz", "vamp", "--prep", "nowhere", "--ann", "ds/instances.json",
                                    "--out", "r"],
    "decode-bin-without-prep": lambda: ["decode", "--bin", "ais", "--ann", "ds/instances.json", "--out", "r"],
    "decode-truncated-output": _ais_truncated_output,
    "decode-nan-output": _ais_nan_output,
    "decode-npy-terabytes": _ais_npy_claiming_terabytes,
    "decode-npz-zip-bomb": _vamp_zip_bomb,
    "decode-npz-pickled": _vamp_pickled,
    "decode-npz-no-mapping": _vamp_without_prep_or_datalist,
    "decode-datalist-stranger": _vamp_datalist_stranger,
    "output-dirname-escapes": _output_dirname_escapes,
    "bench-images-without-profile": lambda: ["bench", "-t", "ort", "-m", "tiny.onnx", "--images", "ds/images"],
    "bench-shape-with-profile": lambda: ["bench", "-t", "ort", "-m", "tiny.onnx", "-p", "tiny.toml", "--shape", "32x32"],
    "bench-shape-bad": lambda: ["bench", "-t", "ort", "-m", "tiny.onnx", "--shape", "32"],
    "bench-dynamic-size": _bench_dynamic_size,
    "profile-auto-nothing-fits": lambda: with_flags(RUN, p="auto"),
    "preprocess-auto-without-model": lambda: [a for a in with_flags(PREP, p="auto") if a not in ("--model", "tiny.onnx")],
    "quantize-exclude-nothing": _quant_exclude_matches_nothing,
    "quantize-exclude-type-absent": lambda: (calib_images(), [*QUANT, "--exclude-types", "Softmax"])[1],
    "quantize-exclude-from-missing": lambda: (calib_images(), [*QUANT, "--exclude-from", "none.txt"])[1],
    "quantize-bad-backend": lambda: (calib_images(), [*QUANT, "--backend", "tensorrt"])[1],
    "quantize-calib-images-zero": lambda: (calib_images(), [*QUANT, "--calib-images", "0"])[1],
    "quantize-no-profile": lambda: (calib_images(), [a for a in QUANT if a not in ("-p", "tiny.toml")])[1],
    "quantize-calib-missing": _quant_calib_missing,
    "quantize-calib-empty": _quant_calib_empty,
    "quantize-calib-truncated": _quant_calib_truncated,
    "quantize-out-not-empty": _quant_out_not_empty,
    "quantize-out-locked": lambda: (calib_images(), QUANT)[1],
    "quantize-nothing-to-quantize": _quant_nothing,
    "quantize-cache-and-calib": _quant_trt_cache_and_calib,
    "quantize-cache-unknown-tensor": _quant_trt_cache_unknown_tensor,
    "sensitivity-calib-empty": _sens_empty_calib,
    "sensitivity-mode-typo": _sens_mode_typo,
    "sensitivity-model-missing": lambda: (calib_images(), with_flags(SENS, m="nope.onnx"))[1],
    "sensitivity-out-not-empty": _sens_out_not_empty,
    "report-symlink-out": _report_symlink_out,
    "report-nothing": _report_nothing,
    "demo-seconds-nan": lambda: ["demo", "--seconds", "nan", "--out", "d"],
    "preprocess-workers-zero": lambda: with_flags(PREP, workers="0"),
    "emulate-batchsize-zero": lambda: ["emulate", "--runner", "ais", "-m", "tiny.onnx", "--prep", "prep", "--out", "o",
                                       "--batchsize", "0"],
    "quantize-bad-method": _quant_bad_method,
    "quantize-not-onnx": _quant_not_onnx,
    "sensitivity-target-trt": _sens_bad_target,
    "sensitivity-negative-drop": _sens_negative_drop,
    "quantize-users-file": _quant_users_file,
    "model-fifo": _model_fifo,
    "model-folder-without-model": _model_empty_folder,
    "scores-out-of-range": _scores_out_of_range,
    "bs-fraction": lambda: with_flags(RUN, bs="1.5"),
    "bs-above-dataset": lambda: with_flags(RUN, bs="512"),
    "threads-too-many": lambda: with_flags(RUN, threads="100000"),
    "target-empty": lambda: with_flags(RUN, t=","),
    "target-ci-empty": lambda: with_flags(RUN, target_ci=""),
    "accuracy-shards-without-cluster": lambda: with_flags(RUN, accuracy_shards="2"),
    "sensitivity-shards-without-cluster": lambda: with_flags(SENS, shards="2"),
    "report-fail-if-empty": lambda: ["report", ".", "--fidelity", "--fail-if", ""],
    "report-row-nan": _report_row_nan,
    "report-artifact-outside": _report_artifact_outside,
    "quantize-calib-identical": _calib_identical,
    "decode-datalist-resorted": _vamp_datalist_resorted,
    "quantize-input-mismatch": lambda: (calib_images(), write_tiny_profile(Path("w64.toml"), size=64),
                                        with_flags(QUANT, p="w64.toml"))[2],
}
# another process holding the lock, as a second command on the same --out would
HOLDS_LOCK = {
    "out-locked": "from harness.measure.results import ResultsStore; s = ResultsStore('out', env={})",
    "quantize-out-locked": ("from harness.core.folders import FolderLock; import os; os.makedirs('quant'); "
                            "s = FolderLock('quant')"),
}
# A late failure (evaluation after the whole timing and accuracy pass) has no bad input left that
# reaches it: annotations are checked up front. The one fault injected here stands for what remains
# (memory, a bug in the evaluator): the row must still be written with its timing.
EVALUATION_FAILS = {"evaluation-fails"}
CASES["evaluation-fails"] = lambda: RUN


def _failing_evaluate(self, *args, **kwargs):
    raise MemoryError("Unable to allocate 11.2 GiB for an array with shape (10, 101, 80, 4, 3)")


def make_base(folder: Path) -> None:
    write_tiny_model(folder / "tiny.onnx")
    write_tiny_profile(folder / "tiny.toml")
    write_tiny_dataset(folder / "ds")


def _hold_lock(holder: str, folder: Path) -> subprocess.Popen:
    code = f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); {holder}; print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=folder, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def run_case(case: str, folder: Path) -> tuple[int, str, str]:
    """Set up `case` in folder (the current folder meanwhile); (exit code, stderr, stdout)."""
    here = Path.cwd()
    os.chdir(folder)
    holder = None
    try:
        make_base(folder)
        args = CASES[case]()
        if case in HOLDS_LOCK:
            holder = _hold_lock(HOLDS_LOCK[case], folder)
        with pytest.MonkeyPatch.context() as patch:
            if case in EVALUATION_FAILS:
                from harness.measure.evaluate import CocoEvaluator

                patch.setattr(CocoEvaluator, "evaluate", _failing_evaluate)
            result = CliRunner().invoke(main, args)
        return result.exit_code, result.stderr, result.stdout
    finally:
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        os.chdir(here)


# ------------------------------------------------------------------ the doc's rows

ROW_TEST = re.compile(r"test_errors_doc\[([a-z0-9-]+)\]")


def documented_lines() -> dict[str, str]:
    """{case id: the `error: ...` line of its table row} for every row marked test_errors_doc[ID]."""
    found = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        for case in ROW_TEST.findall(line):
            shown = re.findall(r"`` (error: .*?) ``|(?<!`)`(error: [^`]*)`", line)
            shown = [double or single for double, single in shown]
            assert len(shown) == 1, f"docs/errors.md row for {case} should show exactly one `error: ...` line: {line}"
            assert case not in found, f"docs/errors.md marks {case} twice"
            found[case] = shown[0]
    return found


def as_pattern(documented: str) -> re.Pattern:
    """The documented line as a full-match pattern: `…` matches any text, the rest literally."""
    return re.compile(".*?".join(re.escape(part) for part in documented.split("…")))


DOCUMENTED = documented_lines()


def test_every_case_is_documented_and_every_documented_case_exists():
    assert set(DOCUMENTED) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_documented_line_is_what_the_user_sees(case, tmp_path):
    code, stderr, stdout = run_case(case, tmp_path)
    assert code == 2, (code, stderr, stdout)
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert lines, stdout
    assert as_pattern(DOCUMENTED[case]).fullmatch(lines[-1]), f"\ndoc: {DOCUMENTED[case]}\nnow: {lines[-1]}"


def test_a_late_evaluation_failure_keeps_the_measured_row(tmp_path):
    code, stderr, _ = run_case("evaluation-fails", tmp_path)
    assert code == 2, stderr
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert row["status"] == "partial" and row["map"] is None
    assert row["error"].startswith("evaluation failed: Unable to allocate 11.2 GiB")
    assert row["fps"] > 0 and row["images"] == 6  # the timing and the accuracy pass are kept
    assert "evaluation failed" in (tmp_path / "out" / "report.md").read_text()


if __name__ == "__main__":
    import tempfile

    for name in sys.argv[1:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            code, stderr, _ = run_case(name, Path(tmp).resolve())
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        print(f"{name}\t{code}\t{last}")
