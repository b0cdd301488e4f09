"""Decoding downloaded image bytes into RGB pictures the model can read, safely.

- Decompression bombs: the pixel count is checked from the header, before any pixel is decoded.
- EXIF orientation is applied (phone photos are stored sideways with a rotate tag).
- Every mode becomes 8-bit RGB: CMYK, 16-bit and float greyscale (scaled, not clipped), palette,
  and transparency (composited on white, as a viewer shows it). Animations give their first frame.
- Failures are :class:`~workers.errors.MediaError` with reason ``corrupt`` (an image format whose
  data is broken), ``unsupported_format`` (not an image Pillow reads: HTML, SVG, PDF ...), or
  ``too_large``.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from workers.errors import MediaError

__all__ = ["decode_image", "to_rgb"]

logger = logging.getLogger(__name__)

# Leading bytes of formats Pillow reads: bytes that start like an image but do not open are
# corrupt; anything else is a format we do not support.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"RIFF",  # WebP
)


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode image bytes to an 8-bit RGB picture, upright.

    Args:
        data: The file's bytes.
        max_pixels: The largest width x height accepted.

    Returns:
        A loaded ``RGB`` image.

    Raises:
        MediaError: ``corrupt``, ``unsupported_format`` or ``too_large``.
    """
    if not data:
        raise MediaError("the image is empty (0 bytes)", reason="corrupt")
    with warnings.catch_warnings():
        # Pillow warns above its own pixel limit; ours (checked below) is the one that applies.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise MediaError("the image has too many pixels", reason="too_large", why=str(exc)) from exc
        except UnidentifiedImageError as exc:
            # (Pillow's message names a memory address: it would make results differ run to run.)
            if data.startswith(_IMAGE_MAGIC):
                raise MediaError(
                    "the image data is corrupt", reason="corrupt", why="its header is not a readable image header"
                ) from exc
            raise MediaError(
                "the file is not an image format that can be decoded",
                reason="unsupported_format",
                why=f"it starts with {data[:16]!r}",
                fix="use JPEG, PNG, WebP, GIF, BMP or TIFF",
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            # A recognised format whose header is cut short or malformed.
            raise MediaError("the image data is corrupt or truncated", reason="corrupt", why=str(exc)) from exc
        width, height = image.size
        if width * height > max_pixels:
            raise MediaError(
                f"the image is {width}x{height} pixels",
                reason="too_large",
                why=f"the limit is {max_pixels} pixels (ASSISTANT_MEDIA_MAX_PIXELS)",
            )
        try:
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
        except Image.DecompressionBombError as exc:
            raise MediaError("the image has too many pixels", reason="too_large", why=str(exc)) from exc
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
            raise MediaError("the image data is corrupt or truncated", reason="corrupt", why=str(exc)) from exc
    return to_rgb(_upright(image))


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, struct.error, KeyError, TypeError) as exc:
        # A broken EXIF block must not cost the whole image: keep it as stored.
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "P":
        return image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(pixels: NDArray[Any], mode: str) -> NDArray[np.uint8]:
    # 16-bit and 32-bit greyscale: convert("RGB") would clip everything above 255 to white.
    values = pixels.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = values / 257.0
    else:
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if mode == "F" and low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        elif low >= 0.0 and high <= 65535.0:
            scaled = values / 257.0
        else:
            scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return np.nan_to_num(np.clip(np.rint(scaled), 0, 255)).astype(np.uint8)
