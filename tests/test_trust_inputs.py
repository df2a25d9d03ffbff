"""Inputs validated before any work (issue 15): annotation structure, image files (pixel limit from the
header, regular files only, mid-file JPEG corruption, EXIF orientation ignored) and numeric flags.

Every case feeds the real bad input: a real decompression-bomb PNG, a real FIFO, a real corrupted
JPEG, a real EXIF-rotated JPEG written by Pillow, a real malformed annotation file.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from harness.images.imagefile import check_image_file, read_image
from tests.test_cli_errors import assert_one_line_error, cli, run_args

ROOT = Path(__file__).resolve().parent.parent


def edit_annotations(t, change) -> None:
    data = json.loads(t["ann"].read_text())
    change(data)
    t["ann"].write_text(json.dumps(data))


# ---------------------------------------------------------------- annotations

ANNOTATION_CASES = {
    "bbox is a string": (lambda d: d["annotations"][2].__setitem__("bbox", "10 10 5 5"),
                         ["annotations[2] (id 3): bbox '10 10 5 5' is not 4 finite numbers"]),
    "bbox holds NaN": (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, float("nan"), 4]),
                       ["annotations[0] (id 1): bbox [1, 2, nan, 4] is not 4 finite numbers"]),
    "bbox of 3 numbers": (lambda d: d["annotations"][1].__setitem__("bbox", [1, 2, 3]),
                          ["annotations[1] (id 2): bbox [1, 2, 3]"]),
    "negative width": (lambda d: d["annotations"][1].__setitem__("bbox", [1, 2, -3, 4]),
                       ["annotations[1] (id 2): bbox [1, 2, -3, 4] has a negative width or height"]),
    "duplicate image id": (lambda d: d["images"][3].__setitem__("id", d["images"][1]["id"]),
                           ["images[3] (id 101): id 101 repeats images[1]"]),
    "duplicate file name": (lambda d: d["images"][4].__setitem__("file_name", d["images"][0]["file_name"]),
                            ["images[4] (id 104): file_name 'img_000.jpg' repeats images[0]"]),
    "category not listed": (lambda d: d["categories"].pop(), ["category_id 3 is not in 'categories'"]),
    "image_id not listed": (lambda d: d["annotations"][5].__setitem__("image_id", 999),
                            ["annotations[5] (id 6): image_id 999 is not in 'images'"]),
    "duplicate annotation id": (lambda d: d["annotations"][4].__setitem__("id", 1),
                                ["annotations[4] (id 1): id 1 repeats annotations[0]"]),
    "area missing": (lambda d: d["annotations"][0].pop("area"), ["annotations[0] (id 1) lacks area"]),
}


@pytest.mark.parametrize("case", list(ANNOTATION_CASES))
def test_malformed_annotations_are_one_line_before_any_work(tiny, case):
    change, fragments = ANNOTATION_CASES[case]
    edit_annotations(tiny, change)
    result = cli(*run_args(tiny))
    assert_one_line_error(result, "annotation file", "instances.json", *fragments)
    assert "timing" not in result.output  # refused before the model was loaded or timed
    assert not (tiny["root"] / "out" / "results.json").exists()


def test_annotation_problems_are_counted(tiny):
    def change(d):
        d["annotations"][0]["bbox"] = "x"
        d["annotations"][1]["bbox"] = None
    edit_annotations(tiny, change)
    assert_one_line_error(cli(*run_args(tiny)), "annotations[0] (id 1): bbox 'x'", "(and 1 more problem(s))")


def test_decode_checks_annotations_too(tiny):
    from harness.core.errors import HarnessError
    from harness.data.annotations import load_annotations

    edit_annotations(tiny, lambda d: d["annotations"][2].__setitem__("bbox", "oops"))
    with pytest.raises(HarnessError, match=r"instances\.json: annotations\[2\] \(id 3\): bbox 'oops'"):
        load_annotations(tiny["ann"])


# ---------------------------------------------------------------- image files

def png_bomb(path: Path, side: int) -> int:
    """A real PNG of side x side 8-bit grey zeros whose IDAT inflates to side * (side + 1) bytes, built
    from one compressed chunk repeated (full-flushed deflate blocks concatenate), so the test does not
    compress gigabytes. Returns the file size."""
    raw_len = side * (side + 1)  # a filter byte per row
    chunk = 1 << 20
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(b"\0" * chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    rest_deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    rest = rest_deflate.compress(b"\0" * (raw_len % chunk)) + rest_deflate.flush(zlib.Z_FINISH)
    # adler32 of n zero bytes: s1 stays 1, s2 = n mod 65521
    adler = ((raw_len % 65521) << 16) | 1
    stream = b"\x78\xda" + block * (raw_len // chunk) + rest + struct.pack(">I", adler)

    def png_chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return len(data)


def test_png_bomb_is_a_real_png(tmp_path):
    """The bomb builder makes a PNG that decoders accept (checked small, so the check is cheap)."""
    png_bomb(tmp_path / "small.png", 300)
    image = cv2.imread(str(tmp_path / "small.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (300, 300) and not image.any()


def test_decompression_bomb_is_refused_from_its_header(tiny):
    bomb = tiny["images"] / "img_003.jpg"  # the listed name; the content is a PNG (OpenCV sniffs)
    bomb = bomb.with_suffix(".png")
    size = png_bomb(bomb, 30000)  # 900 MP: 2.7 GB once decoded to BGR
    assert size < 1_000_000
    edit_annotations(tiny, lambda d: d["images"][3].__setitem__("file_name", bomb.name))
    (tiny["images"] / "img_003.jpg").unlink()
    assert_one_line_error(cli(*run_args(tiny)), "img_003.png: 30000x30000 = 900000000 pixels exceeds the pixel limit of 50000000",
                          "refused before decoding")
    # the same check in a fresh process, whose peak memory shows nothing was decoded (VmHWM belongs to the
    # new process image; getrusage's ru_maxrss would carry over the large pytest parent's peak across exec)
    code = ("import re; from harness.images.imagefile import check_image_file; "
            f"print(check_image_file({str(bomb)!r})); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    reason, peak_kib = done.stdout.strip().splitlines()
    assert "exceeds the pixel limit" in reason
    assert int(peak_kib) < 1_000_000, f"peak RSS {peak_kib} KiB: the bomb was decoded"


def test_max_pixels_flag(tiny):
    assert_one_line_error(cli(*run_args(tiny, **{"--max-pixels": "1000"})), "img_000.jpg",
                          "exceeds the pixel limit of 1000 (--max-pixels)")
    result = cli(*run_args(tiny, **{"--max-pixels": "1000", "--skip-bad-images": True}))
    assert result.exit_code == 2 and "no images to run" in result.output  # every image is over the limit
    assert cli(*run_args(tiny, **{"--max-pixels": "100000000"})).exit_code == 0


def test_fifo_in_the_image_folder_does_not_block(tiny):
    victim = tiny["images"] / "img_002.jpg"
    victim.unlink()
    os.mkfifo(victim)
    assert check_image_file(victim) == "not a regular file (a FIFO)"
    cmd = [sys.executable, "-m", "harness", *map(str, run_args(tiny))]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)  # a block would time out
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: 1 bad image file(s)")
    assert "img_002.jpg: not a regular file (a FIFO)" in done.stderr
    result = cli(*run_args(tiny, **{"--skip-bad-images": True}))
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert row["images"] == 5 and row["skipped_images"] == ["img_002.jpg: not a regular file (a FIFO)"]


def test_symlink_to_a_regular_image_is_fine(tiny):
    victim = tiny["images"] / "img_001.jpg"
    elsewhere = tiny["root"] / "elsewhere.jpg"
    victim.rename(elsewhere)
    victim.symlink_to(elsewhere)
    result = cli(*run_args(tiny))
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert row["images"] == 6 and not row["skipped_images"]


def textured_jpeg(path: Path, seed: int = 3, size=(240, 320)) -> bytes:
    """A JPEG with natural-ish texture (smooth gradients plus noise), so its entropy-coded data is
    long and dense like a photo's."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    image = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    path.write_bytes(data.tobytes())
    return data.tobytes()


def corrupt_middle(data: bytes) -> bytes:
    """1 KiB of zeros over the middle of the entropy-coded data; the end marker stays."""
    mid = len(data) // 2
    return data[:mid] + bytes(1024) + data[mid + 1024:]


def test_jpeg_corrupted_in_the_middle_is_refused_not_scored(tiny):
    victim = tiny["images"] / "img_004.jpg"
    bad = corrupt_middle(textured_jpeg(victim))
    victim.write_bytes(bad)
    assert bad[-2:] == b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV scores it silently
    assert_one_line_error(cli(*run_args(tiny)), "img_004.jpg: corrupt JPEG data (Corrupt JPEG data:",
                          "--skip-bad-images")
    result = cli(*run_args(tiny, **{"--skip-bad-images": True}))
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tiny["root"] / "out" / "results.json").read_text())["rows"]
    assert row["images"] == 5
    assert len(row["skipped_images"]) == 1 and row["skipped_images"][0].startswith("img_004.jpg: corrupt JPEG data")


def test_strict_decoder_gives_opencvs_pixels(tmp_path):
    """simplejpeg (strict) replaces cv2.imdecode for JPEGs: the pixels must be OpenCV's, colour and grey."""
    colour = textured_jpeg(tmp_path / "c.jpg")
    ok, grey = cv2.imencode(".jpg", cv2.cvtColor(cv2.imdecode(np.frombuffer(colour, np.uint8), 1), cv2.COLOR_BGR2GRAY))
    (tmp_path / "g.jpg").write_bytes(grey.tobytes())
    ok, cmyk_free = cv2.imencode(".png", cv2.imdecode(np.frombuffer(colour, np.uint8), 1))
    (tmp_path / "p.png").write_bytes(cmyk_free.tobytes())
    for name in ("c.jpg", "g.jpg", "p.png"):
        want = cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert np.array_equal(read_image(tmp_path / name), want), name


def test_strict_decoder_gives_opencvs_pixels_on_coco(coco_tiny):
    images_dir, _ = coco_tiny
    for path in sorted(images_dir.glob("*.jpg"))[:20]:
        want = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert np.array_equal(read_image(path), want), path.name


def exif_rotated_copy(src: Path, dst: Path, orientation: int | None) -> None:
    """Re-encode src with Pillow (same stored pixels for both variants), with an EXIF orientation tag."""
    image = Image.open(src)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    dst.write_bytes(buffer.getvalue())


def test_exif_orientation_is_ignored(tiny):
    """COCO boxes are in stored pixels: an EXIF 'rotate 90' tag must not rotate the image (OpenCV's
    default would, and the boxes would no longer fit)."""
    for i in range(6):
        path = tiny["images"] / f"img_{i:03d}.jpg"
        exif_rotated_copy(path, path, None)
    assert cli(*run_args(tiny, **{"--out": tiny["root"] / "plain"})).exit_code == 0
    victim = tiny["images"] / "img_001.jpg"
    exif_rotated_copy(victim, victim, 6)
    h, w = read_image(victim).shape[:2]
    assert cv2.imread(str(victim)).shape[:2] == (w, h) != (h, w)  # OpenCV's default rotates it: a real tag
    assert cli(*run_args(tiny, **{"--out": tiny["root"] / "tagged"})).exit_code == 0
    plain, tagged = (json.loads((tiny["root"] / d / "results.json").read_text())["rows"][0] for d in ("plain", "tagged"))
    assert tagged["map"] == plain["map"] and tagged["detections"] == plain["detections"]


def test_exif_orientation_is_ignored_in_npz_inputs(tiny):
    """vamp's image2npz path (harness preprocess --format npz) stores the unrotated pixels too."""
    from harness.data.coco import load_dataset
    from harness.npu.prepare import prepare
    from harness.profiles import load_profile

    victim = tiny["images"] / "img_001.jpg"
    exif_rotated_copy(victim, victim, 6)
    images = load_dataset(tiny["images"], tiny["ann"]).images
    prepare(images, load_profile(tiny["profile"]), tiny["root"] / "npz", "npz")
    with np.load(tiny["root"] / "npz" / "img_001.npz", allow_pickle=False) as data:
        stored = cv2.imread(str(victim), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert np.array_equal(data["input_0"], stored[:, :, ::-1].transpose(2, 0, 1))


def test_exif_orientation_is_ignored_in_calibration(tiny):
    from harness.precision.calib_images import CalibrationBatches
    from harness.profiles import load_profile

    victim = tiny["images"] / "img_001.jpg"
    exif_rotated_copy(victim, victim, 8)
    spec = load_profile(tiny["profile"]).input
    (batch,) = list(CalibrationBatches([victim], spec, 1))
    from harness.images.preprocess import resize_image, to_model_layout

    canvas, _ = resize_image(cv2.imread(str(victim), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), spec)
    assert np.array_equal(batch[0], to_model_layout(canvas, spec))


# ---------------------------------------------------------------- numeric flags

POSITIVE = "expected a positive integer"
SECONDS = "expected a finite number of seconds > 0"
NUMERIC_RUN_CASES = [
    *[("--seconds", v, SECONDS) for v in ("nan", "inf", "0", "-1")],
    ("--warmup", "nan", "expected a finite number of seconds >= 0"),
    *[("--limit", v, POSITIVE) for v in ("0", "-1", "ten")],
    *[("--bs", v, "expected comma-separated positive integers") for v in ("0", "1,,4")],
    *[(flag, "0", POSITIVE) for flag in ("--workers", "--threads", "--max-pixels")],
]


@pytest.mark.parametrize("flag,value,expected", NUMERIC_RUN_CASES, ids=[f"{f}={v}" for f, v, _ in NUMERIC_RUN_CASES])
def test_numeric_run_flags_out_of_range(tiny, flag, value, expected):
    assert_one_line_error(cli(*run_args(tiny, **{flag: value})), f"{flag} {value!r}: {expected}")
    assert not (tiny["root"] / "out").exists()


def test_numeric_flags_of_the_other_commands(tiny):
    t = tiny
    cases = [
        (["demo", "--seconds", "nan"], "--seconds 'nan'"),
        (["preprocess", "-p", t["profile"], "--data", t["images"], "--ann", t["ann"], "--format", "bin", "--out",
          t["root"] / "p", "--workers", "0"], "--workers '0': expected a positive integer"),
        (["preprocess", "-p", t["profile"], "--data", t["images"], "--ann", t["ann"], "--format", "bin", "--out",
          t["root"] / "p", "--limit", "-1"], "--limit '-1': expected a positive integer"),
        (["preprocess", "-p", t["profile"], "--data", t["images"], "--ann", t["ann"], "--format", "bin", "--out",
          t["root"] / "p", "--max-pixels", "0"], "--max-pixels '0'"),
        (["decode", "--bin", t["root"], "--prep", t["root"], "--ann", t["ann"], "--out", t["root"] / "r",
          "--bs", "0"], "--bs '0': expected a positive integer"),
        (["emulate", "--runner", "ais", "-m", t["model"], "--prep", t["root"], "--out", t["root"] / "e",
          "--batchsize", "0"], "--batchsize '0': expected a positive integer"),
        (["emulate", "--runner", "ais", "-m", t["model"], "--prep", t["root"], "--out", t["root"] / "e",
          "--threads", "0"], "--threads '0': expected a positive integer"),
        (["report", t["root"], "--top-classes", "-1"], "--top-classes '-1': expected an integer >= 0"),
    ]
    for args, message in cases:
        assert_one_line_error(cli(*args), message)
