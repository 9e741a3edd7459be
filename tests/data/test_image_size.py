"""Header-only image sizes for every format we read, EXIF rotation, broken files."""

import io

import pytest
from PIL import Image

from library.data.errors import DatasetError
from library.data.image_size import read_image_size
from library.data.images import load_image

from .helpers import make_image, write


@pytest.mark.parametrize(
    "fmt, kw",
    [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("WEBP", {"lossless": False}), ("WEBP", {"lossless": True}), ("BMP", {}), ("GIF", {}), ("TIFF", {})],
)
@pytest.mark.parametrize("size", [(37, 53), (300, 17)])
def test_sizes_match_pillow(tmp_path, fmt, kw, size):
    path = make_image(tmp_path / f"x.{fmt.lower()}", size, fmt=fmt, **kw)
    assert read_image_size(path) == size
    with open(path, "rb") as f:
        assert read_image_size(f.read()) == size


def test_webp_extended_with_alpha(tmp_path):
    path = str(tmp_path / "a.webp")
    Image.new("RGBA", (40, 24), (1, 2, 3, 100)).save(path, format="WEBP", exif=Image.Exif().tobytes())
    assert read_image_size(path) == (40, 24)


@pytest.mark.parametrize("orientation, expected", [(1, (60, 20)), (3, (60, 20)), (6, (20, 60)), (8, (20, 60))])
def test_jpeg_exif_orientation(tmp_path, orientation, expected):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = make_image(tmp_path / "r.jpg", (60, 20), fmt="JPEG", exif=exif.tobytes())
    assert read_image_size(path) == expected
    assert load_image(path).size == expected  # the decoder applies the same rotation


def test_header_never_decodes_pixels(tmp_path):
    # a PNG whose pixel data is garbage: the header is fine, decoding fails
    path = make_image(tmp_path / "bad.png", (30, 20))
    data = bytearray(open(path, "rb").read())
    data[60:] = b"\x00" * (len(data) - 60)
    write(path, bytes(data))
    assert read_image_size(path) == (30, 20)
    with pytest.raises(DatasetError, match=r"cannot decode image .*bad.png"):
        load_image(path)


@pytest.mark.parametrize("content", [b"", b"not an image at all, just text", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_broken_files_name_the_path(tmp_path, content):
    path = write(tmp_path / "broken.png", content)
    with pytest.raises(DatasetError) as e:
        read_image_size(path)
    assert str(path) in str(e.value)


def test_truncated_jpeg_header(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="JPEG")
    path = write(tmp_path / "t.jpg", buf.getvalue()[:20])
    with pytest.raises(DatasetError, match="t.jpg"):
        read_image_size(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_image_size(tmp_path / "nope.png")
