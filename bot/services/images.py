"""Checking and converting images members upload (img2img sources, alchemy inputs).

Pillow is run with a hard pixel limit so a decompression bomb is refused before it is decoded, and every
image is re-encoded as WebP: the Horde's preferred source format, and no original metadata travels on.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from bot.errors import InvalidInputError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIDE = 3072  # the Horde's SourceImageResolutionExceeded limit (API_NOTES §6)
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}


@dataclass(frozen=True)
class PreparedImage:
    webp: bytes
    width: int
    height: int

    def as_base64(self) -> str:
        return base64.b64encode(self.webp).decode()


def prepare_image(
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_SIDE,
    quality: int = 95,
) -> PreparedImage:
    """Validate an uploaded image and return it as WebP. Raises InvalidInputError saying what is wrong."""
    if len(data) > max_bytes:
        size_mb, limit_mb = len(data) / 1024 / 1024, max_bytes // 1024 // 1024
        raise InvalidInputError(f"That file is {size_mb:.1f} MB; images may be at most {limit_mb} MB.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or "?"
            width, height = probe.size
            frames = getattr(probe, "n_frames", 1)
    except Image.DecompressionBombError:
        raise InvalidInputError(
            f"That image is too large; at most {max_side}×{max_side} pixels are allowed."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidInputError("That file is not an image I can read (use PNG, JPEG or WebP).") from None
    if fmt not in ALLOWED_FORMATS:
        raise InvalidInputError(f"{fmt} images are not supported; use PNG, JPEG or WebP.")
    if frames > 1:
        raise InvalidInputError("Animated images are not supported; use a still image.")
    if width > max_side or height > max_side:
        raise InvalidInputError(
            f"That image is {width}×{height}; at most {max_side}×{max_side} pixels are allowed."
        )
    if width < 1 or height < 1:
        raise InvalidInputError("That image is empty.")
    # The size header was checked above, so decoding is bounded: a bomb would have claimed a huge size.
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            converted = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise InvalidInputError("That image is damaged or too large to decode.") from None
    out = io.BytesIO()
    converted.save(out, format="WEBP", quality=quality)
    return PreparedImage(webp=out.getvalue(), width=width, height=height)
