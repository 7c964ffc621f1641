"""Decompression bombs: images are checked for pixel count before decoding, dataset zips for inflated size (#20)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from zoo.runtime.datasets import DatasetError, load_dataset
from zoo.runtime.images import ImageError, decode_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a truncated IDAT: no decoder needs more to refuse."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def pil_image(fmt: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_20000_squared_png_is_refused_before_decoding():
    with pytest.raises(ImageError, match=r"20000x20000 = 400,000,000 pixels.*ZOO_MAX_IMAGE_PIXELS"):
        decode_image(png_header_only(20000, 20000), name="bomb.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_pixel_limit_applies_to_every_format_and_is_overridable(monkeypatch, fmt):
    data = pil_image(fmt, (300, 200))
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(ImageError, match="300x200 = 60,000 pixels"):
        decode_image(data, name=f"a.{fmt.lower()}")
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", "60000")
    assert tuple(decode_image(data, name=f"a.{fmt.lower()}").shape) == (3, 200, 300)


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_bomb_member_is_refused_before_inflating(tmp_path):
    ok = pil_image("PNG", (8, 8))
    bomb = zip_with(tmp_path / "bomb.zip", {"data/cat/a.png": ok, "data/dog/b.png": b"\0" * (64 << 20)})
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DatasetError, match=r"data/dog/b.png.*inflates.*ZOO_MAX_ZIP_RATIO"):
        load_dataset(bomb)


def test_zip_limits_are_overridable(tmp_path, monkeypatch):
    ok = pil_image("PNG", (8, 8))
    archive = zip_with(tmp_path / "z.zip", {"data/cat/a.png": ok, "data/dog/b.png": b"\0" * (2 << 20)})
    with pytest.raises(DatasetError, match="ZOO_MAX_ZIP_RATIO"):
        load_dataset(archive)
    monkeypatch.setenv("ZOO_MAX_ZIP_RATIO", "0")  # 0: no ratio limit
    with pytest.raises(ImageError, match="b.png"):  # now it is read, and is simply not an image
        load_dataset(archive)


def test_zip_member_size_limit(tmp_path, monkeypatch):
    ok = pil_image("PNG", (8, 8))
    archive = zip_with(tmp_path / "z.zip", {"data/cat/a.png": ok, "data/dog/b.png": ok + b"\0" * 5000})
    monkeypatch.setenv("ZOO_MAX_IMAGE_BYTES", "4096")
    with pytest.raises(DatasetError, match=r"b.png.*ZOO_MAX_IMAGE_BYTES"):
        load_dataset(archive)


def test_ordinary_zip_still_loads(tmp_path):
    ok = pil_image("PNG", (8, 8))
    archive = zip_with(tmp_path / "z.zip", {"data/cat/a.png": ok, "data/dog/b.png": ok})
    dataset = load_dataset(archive)
    assert len(dataset) == 2 and dataset.classes == ("cat", "dog")


def test_detection_annotation_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    """A COCO json that inflates 1000x inside a detection zip: refused from its directory entry, one line."""
    from zoo_detector.annotations import AnnotationError, read_detection_dataset

    ok = pil_image("PNG", (8, 8))
    padding = b" " * (32 << 20)  # valid JSON whitespace: a parser would happily read all of it
    coco = (
        b'{"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}], "annotations": [], '
        b'"categories": [{"id": 1, "name": "cat"}]' + padding + b"}"
    )
    archive = zip_with(tmp_path / "det.zip", {"images/a.png": ok, "annotations/instances.json": coco})
    assert archive.stat().st_size < 200_000
    with pytest.raises(AnnotationError, match=r"instances.json: inflates .*zip bomb.*ZOO_MAX_ZIP_RATIO"):
        read_detection_dataset(archive)
    monkeypatch.setenv("ZOO_MAX_ZIP_RATIO", "0")
    assert len(read_detection_dataset(archive).samples) == 1
