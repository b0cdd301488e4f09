"""Decoding: orientation, colour modes, animations, and every failure reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.errors import MediaError
from workers.images import decode_image

LIMIT = 100_000_000


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _reason(data: bytes, max_pixels: int = LIMIT) -> str:
    with pytest.raises(MediaError) as info:
        decode_image(data, max_pixels=max_pixels)
    return info.value.reason


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    decoded = decode_image(_encode(image, "JPEG", exif=exif.tobytes()), max_pixels=LIMIT)
    assert decoded.size == (20, 40) and decoded.mode == "RGB"


def test_cmyk_becomes_rgb() -> None:
    decoded = decode_image(_encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    r, g, b = decoded.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # cyan-free, magenta + yellow = red


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    pixels = np.full((6, 6), 40_000, dtype=np.uint16)
    decoded = decode_image(_encode(Image.fromarray(pixels), "PNG"), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 257, not 255


def test_palette_transparency_and_alpha_composite_on_white() -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    decoded = decode_image(_encode(palette, "PNG", transparency=0), max_pixels=LIMIT)
    assert decoded.getpixel((0, 0)) == (255, 255, 255) and decoded.getpixel((1, 1)) == (255, 0, 0)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    assert decode_image(_encode(rgba, "PNG"), max_pixels=LIMIT).getpixel((2, 2)) == (255, 255, 255)


def test_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    r, g, b = decode_image(data, max_pixels=LIMIT).getpixel((3, 3))
    assert r > 200 and b < 50


def test_failures_have_reasons() -> None:
    jpeg = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    assert _reason(jpeg[: len(jpeg) // 2]) == "corrupt"
    assert _reason(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == "corrupt"
    assert _reason(b"") == "corrupt"
    assert _reason(b"<html><body>login required</body></html>") == "unsupported_format"
    assert _reason(b"%PDF-1.7 ...") == "unsupported_format"
    assert _reason(_encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=9_999) == "too_large"


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 100,000 x 100,000 pixels announced in a 45-byte file: Pillow's own check and ours both refuse it.
    assert _reason(_png_header(100_000, 100_000)) == "too_large"
    assert _reason(_png_header(12_000, 10_000)) == "too_large"  # 120 MP: over our 100 MP, under Pillow's error


def test_real_photos_decode(shared_datasets: Path) -> None:
    photos = sorted((shared_datasets / "coco128" / "images").rglob("*.jpg"))[:16]
    assert photos, "coco128 has no JPEGs"
    for path in photos:
        decoded = decode_image(path.read_bytes(), max_pixels=LIMIT)
        assert decoded.mode == "RGB" and min(decoded.size) > 32
