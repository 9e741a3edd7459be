"""Image sizes from file headers, without decoding pixels.

Why: bucketing needs every image's size before training starts, and a 100,000-image folder must scan in
seconds. PNG, JPEG, WebP, BMP and GIF headers are parsed here directly (a few dozen bytes each); any
other format falls back to ``PIL.Image.open(...).size``, which also reads the header only.

EXIF orientation 5-8 (a phone photo held upright) swaps width and height, because
``images.load_image`` applies the EXIF rotation when it decodes: read from JPEG APP1 and PNG eXIf
chunks here, and through PIL for WebP files that carry EXIF. kohya ignores EXIF and trains such photos
sideways; we do not.

Sizes a training image can never have are refused here, naming the file, so the scan (and the
preflight) skips them instead of training crashing later: more than ``MAX_PIXELS`` pixels, or an aspect
ratio beyond ``MAX_ASPECT`` (a 65000x1 strip resized to cover a 512 bucket would need 33 million x 512
pixels, gigabytes).
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO, Tuple, Union

from .errors import DatasetError
from .files import NotARegularFile, read_regular

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]

# JPEG start-of-frame markers carrying the frame size (not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}
MAX_PIXELS = 178_956_970  # where PIL itself refuses to decode (a decompression bomb)
MAX_ASPECT = 20  # long side / short side


def check_trainable_size(w: int, h: int, name: str) -> Tuple[int, int]:
    """(w, h) unchanged, or DatasetError naming the file when no bucket can hold it sanely."""
    if w * h > MAX_PIXELS:
        raise DatasetError(f"image {name} is {w}x{h} = {w * h:,} pixels, more than the {MAX_PIXELS:,} that can be "
                           "decoded safely; downscale it or remove it")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise DatasetError(f"image {name} is {w}x{h}, an aspect ratio over {MAX_ASPECT}:1: resizing it to cover a "
                           "bucket would need gigabytes; crop it to a sane shape or remove it")
    return w, h


class _HeaderError(Exception):
    pass


def read_image_size(source: Source) -> Tuple[int, int]:
    """Return (width, height) as displayed (EXIF rotation applied); DatasetError if unreadable."""
    name = "<in-memory image>" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            w, h = _read(io.BytesIO(bytes(source)))
        else:
            w, h = _read_path(source)
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {name}") from None
    except NotARegularFile as e:
        raise DatasetError(f"image {e}; it is skipped (remove it from the dataset)") from None
    except (OSError, _HeaderError, struct.error, ValueError) as e:
        raise DatasetError(f"cannot read the image header of {name} ({e}); the file is damaged or not an image") from None
    return check_trainable_size(w, h, name)


_HEAD = 4096


def _read_path(path) -> Tuple[int, int]:
    """Read the first 4 KiB with raw os calls (a third of the cost of open()); most headers fit.

    Opened without blocking and refused unless a regular file: a FIFO named like an image would hang.
    """
    head = read_regular(path, _HEAD, head=True)
    try:
        return _read(io.BytesIO(head))
    except (_HeaderError, struct.error):
        if len(head) < _HEAD:  # that was the whole file: it is broken
            raise
    # the header continues past 4 KiB (a JPEG with large EXIF/ICC blocks, some TIFFs): read the file
    with open(path, "rb") as f:
        return _read(f)


def _read(f: BinaryIO) -> Tuple[int, int]:
    head = f.read(32)
    if len(head) < 10:
        raise _HeaderError("file is empty or truncated")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[12:16] != b"IHDR":
            raise _HeaderError("PNG without IHDR chunk")
        w, h = struct.unpack(">II", head[16:24])
        if _png_orientation(f) in _ROTATED_ORIENTATIONS:
            w, h = h, w
        return _checked(w, h)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(f)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        if head[12:16] == b"VP8X" and head[20] & 0x08:  # carries EXIF, usually after the image data
            return _pil_size(f)
        return _webp_size(head + f.read(32))
    if head.startswith(b"BM"):
        return _bmp_size(head)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", head[6:10])
        return _checked(w, h)
    return _pil_size(f)


def _checked(w: int, h: int) -> Tuple[int, int]:
    if w <= 0 or h <= 0:
        raise _HeaderError(f"invalid size {w}x{h}")
    return int(w), int(h)


def _jpeg_size(f: BinaryIO) -> Tuple[int, int]:
    f.seek(2)
    orientation = 1
    while True:
        byte = f.read(1)
        if not byte:
            raise _HeaderError("JPEG ended before its frame header")
        if byte != b"\xff":
            continue
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            raise _HeaderError("JPEG ended before its frame header")
        m = marker[0]
        if m == 0xD8 or m == 0x01 or 0xD0 <= m <= 0xD7:
            continue
        if m in (0xD9, 0xDA):
            raise _HeaderError("JPEG has no frame header before its image data")
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            raise _HeaderError("JPEG segment truncated")
        length = struct.unpack(">H", length_bytes)[0]
        if length < 2:
            raise _HeaderError("JPEG segment with invalid length")
        if m in _JPEG_SOF:
            data = f.read(5)
            if len(data) < 5:
                raise _HeaderError("JPEG frame header truncated")
            h, w = struct.unpack(">HH", data[1:5])
            if orientation in _ROTATED_ORIENTATIONS:
                w, h = h, w
            return _checked(w, h)
        if m == 0xE1 and orientation == 1:
            data = f.read(length - 2)
            if data.startswith(b"Exif\x00\x00"):
                orientation = _exif_orientation(data[6:])
        else:
            f.seek(length - 2, os.SEEK_CUR)


def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag (0x0112) of IFD0 in a TIFF/EXIF block; 1 when absent or malformed."""
    try:
        if tiff[:2] == b"II":
            e = "<"
        elif tiff[:2] == b"MM":
            e = ">"
        else:
            return 1
        (ifd,) = struct.unpack(e + "I", tiff[4:8])
        (count,) = struct.unpack(e + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, typ = struct.unpack(e + "HH", entry[:4])
            if tag == 0x0112 and typ == 3:
                return struct.unpack(e + "H", entry[8:10])[0]
    except struct.error:
        pass
    return 1


def _png_orientation(f: BinaryIO) -> int:
    """EXIF orientation of a PNG's eXIf chunk before the image data (1 when none); reads chunk by chunk."""
    if isinstance(f, io.BytesIO):  # the usual case, the first 4 KiB in memory: one search instead of a walk
        data = f.getvalue()
        idat = data.find(b"IDAT", 8)
        if idat >= 0 and data.find(b"eXIf", 8, idat) < 0:
            return 1
    f.seek(8)
    while True:
        header = f.read(8)
        if len(header) < 8:
            raise _HeaderError("PNG ended before its image data")
        length, kind = struct.unpack(">I4s", header)
        if kind in (b"IDAT", b"IEND"):
            return 1
        if kind == b"eXIf":
            data = f.read(length)
            if len(data) < length:
                raise _HeaderError("PNG eXIf chunk truncated")
            return _exif_orientation(data[6:] if data.startswith(b"Exif\x00\x00") else data)
        f.seek(length + 4, os.SEEK_CUR)  # data and CRC


def _webp_size(head: bytes) -> Tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise _HeaderError("WebP VP8 frame without start code")
        w, h = struct.unpack("<HH", head[26:30])
        return _checked(w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":
        if head[20] != 0x2F:
            raise _HeaderError("WebP VP8L without signature")
        bits = int.from_bytes(head[21:25], "little")
        return _checked((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return _checked(w, h)
    raise _HeaderError(f"unknown WebP chunk {chunk!r}")


def _bmp_size(head: bytes) -> Tuple[int, int]:
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:
        w, h = struct.unpack("<HH", head[18:22])
    else:
        w, h = struct.unpack("<ii", head[18:26])
    return _checked(abs(w), abs(h))


def _pil_size(f: BinaryIO) -> Tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    f.seek(0)
    try:
        with Image.open(f) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:
                orientation = 1
    except UnidentifiedImageError:
        raise _HeaderError("not a recognised image format") from None
    if orientation in _ROTATED_ORIENTATIONS:
        w, h = h, w
    return _checked(w, h)
