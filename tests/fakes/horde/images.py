"""Small, deterministic WebP images made with Pillow, and source-image checks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from functools import lru_cache

from PIL import Image, UnidentifiedImageError

MAX_GENERATED_SIDE = 512


@lru_cache(maxsize=256)
def _webp(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), rgb).save(buffer, format="WEBP", quality=60)
    return buffer.getvalue()


def make_webp(seed: str, width: int = 512, height: int = 512, *, black: bool = False) -> bytes:
    """A solid-colour WebP whose colour derives from ``seed`` (black for censored placeholders).

    Sides are scaled down to at most 512 px (keeping the aspect ratio) so large requests stay cheap.
    """
    scale = min(1.0, MAX_GENERATED_SIDE / max(width, height, 1))
    size = (max(8, int(width * scale)), max(8, int(height * scale)))
    if black:
        rgb = (0, 0, 0)
    else:
        digest = hashlib.sha256(seed.encode()).digest()
        rgb = (digest[0], digest[1], digest[2])
    return _webp(size[0], size[1], rgb)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an encoded image, or None if Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def decode_source_image(value: str) -> bytes | None:
    """Decode a base64 source image (None if it is not valid base64)."""
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
