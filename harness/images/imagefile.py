"""Image files read safely: regular files only, the pixel count checked from the header before
anything is decoded, JPEG corruption refused rather than decoded into grey or shifted blocks, and
the stored pixel orientation kept (EXIF orientation ignored, as COCO's boxes are in stored pixels).

- Header sizes come from `imagesize` (reads JPEG/PNG/BMP/WebP/TIFF headers, decodes nothing), so a
  decompression bomb (a tiny PNG declaring 100k x 100k pixels) never reaches a decoder.
- JPEGs are decoded with libjpeg-turbo through `simplejpeg` in strict mode: libjpeg's recoverable
  warnings ("Corrupt JPEG data: premature end of data segment", "N extraneous bytes before marker")
  become errors. OpenCV's decoder prints the same warnings to stderr and returns the damaged
  pixels; its output is otherwise identical (tests/test_trust_inputs.py compares them).
- Everything else (PNG, BMP, WebP, CMYK JPEGs) is decoded by OpenCV with
  IMREAD_IGNORE_ORIENTATION.

The pixel limit is one process-wide value, as Pillow's Image.MAX_IMAGE_PIXELS and OpenCV's
OPENCV_IO_MAX_IMAGE_PIXELS are: the commands set it from --max-pixels once, and every reader
(dataset check, preprocessing threads, calibration, NPU input writers) applies the same value.
"""

from __future__ import annotations

import io
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, ImageError
from harness.core.fileio import file_kind as _kind
from harness.core.fileio import regular_file_problem

#: the image files the harness reads (imagesize reads their headers, simplejpeg/OpenCV decode them): the
#: one list the dataset check, calibration folders and NPU datalists use
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SUFFIXES_TEXT = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)


def image_files_in(folder: Path) -> list[Path]:
    """The image files directly in a folder (by suffix), sorted by name: what a folder of images means to
    every command that takes one (bench --images, calibration folders)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

DEFAULT_MAX_PIXELS = 50_000_000
_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_max_pixels = DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> None:
    """Set the process's pixel limit (None: the default, 50 MP)."""
    global _max_pixels
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise HarnessError(f"--max-pixels {limit!r}: expected a positive integer")
    _max_pixels = DEFAULT_MAX_PIXELS if limit is None else limit


@contextmanager
def pixel_limit(limit: int | None):
    """The pixel limit for one command, restored afterwards (commands run in-process in tests)."""
    before = _max_pixels
    set_max_pixels(limit)
    try:
        yield
    finally:
        set_max_pixels(before)


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of a regular file (a symlink to one is fine). A FIFO, device or folder is refused
    without blocking: opened non-blocking and checked with fstat before any read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"unreadable ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(path, f"not a regular file ({_kind(mode)})")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise ImageError(path, f"unreadable ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def marker_problem(head: bytes, tail: bytes) -> str | None:
    """Cheap checks of the first and last bytes: OpenCV decodes a truncated JPEG/PNG without
    complaint (grey fill), which would silently lower mAP."""
    if not head:
        return "empty file"
    if head[:2] == _JPEG_MAGIC and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if head[:8] == _PNG_MAGIC and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, stored orientation; None when no header is recognised."""
    import imagesize

    try:
        width, height = imagesize.get(io.BytesIO(data[:1 << 20]), exif_rotation=False)
    except (ValueError, OSError, IndexError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def size_problem(size: tuple[int, int] | None, limit: int | None = None) -> str | None:
    limit = limit or _max_pixels
    if size is None:
        return "cannot be decoded (corrupt or not an image: no size in its header)"
    width, height = size
    if width * height > limit:
        return (f"{width}x{height} = {width * height} pixels exceeds the pixel limit of {limit} (--max-pixels); "
                "refused before decoding")
    return None


def decode(data: bytes, path: Path) -> np.ndarray:
    """Decode image bytes to BGR uint8 HxWx3 in stored orientation; corrupt JPEG data is an ImageError."""
    if data[:2] == _JPEG_MAGIC:
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
        except ValueError as strict:
            try:  # decodable without strict: the strict error was libjpeg's corruption warning
                simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False)
            except ValueError:
                pass  # not for libjpeg-turbo's simple API (e.g. CMYK): OpenCV below
            else:
                raise ImageError(path, f"corrupt JPEG data ({str(strict).strip()})") from None
    import cv2  # on first use: commands that read no image do not load OpenCV

    # colour, pixels in their stored orientation (EXIF ignored: COCO boxes are in stored pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageError(path, "cannot be decoded (corrupt or not an image)")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as BGR uint8 HxWx3 in its stored orientation, with every check above."""
    path = Path(path)
    data = read_regular_file(path)
    problem = marker_problem(data[:16], data[-1024:]) or size_problem(header_size(data))
    if problem:
        raise ImageError(path, problem)
    return decode(data, path)


def check_image_file(path: str | Path, verify: bool = True) -> str | None:
    """Why an image file cannot be used, or None, before any work starts: regular file, end markers,
    header size within the pixel limit and, with verify, a strict decode (mid-file JPEG corruption
    shows only there). The decoded pixels are dropped."""
    problem = regular_file_problem(path)
    if problem:
        return problem
    try:
        if verify:
            read_image(path)
        else:
            return header_problem(read_regular_file(path))
    except ImageError as exc:
        return exc.reason
    return None


def header_problem(data: bytes) -> str | None:
    """Why an image's bytes cannot be used, judged without decoding (end markers, header size within the
    pixel limit), or None."""
    return marker_problem(data[:16], data[-1024:]) or size_problem(header_size(data))


def exif_orientation(source: str | Path | bytes) -> int:
    """The EXIF orientation tag (1 = as stored) of an image (a path, or its bytes already read), read
    from its header with Pillow."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return int(image.getexif().get(0x0112, 1) or 1)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 1
