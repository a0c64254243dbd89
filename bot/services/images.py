"""Checking and converting images members upload (img2img sources, alchemy inputs).

Pillow is run with a hard pixel limit so a decompression bomb is refused before it is decoded, and every
image is re-encoded as WebP: the Horde's preferred source format, and no original metadata travels on.
"""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from bot.config import DEFAULT_UPLOAD_BYTES
from bot.errors import InvalidInputError

MAX_UPLOAD_BYTES = DEFAULT_UPLOAD_BYTES  # the settings' default ([generation_jobs], [alchemy]): one number
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


async def prepare_image_off_loop(
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_SIDE,
    quality: int = 95,
) -> PreparedImage:
    """`prepare_image` in a worker thread: decoding and re-encoding a 3072² upload takes ~2 s of CPU, which
    on the event loop would stall every other member (and the gateway heartbeat) meanwhile. Pillow releases
    the GIL while it decodes, converts and encodes."""
    return await asyncio.to_thread(
        prepare_image, data, max_bytes=max_bytes, max_side=max_side, quality=quality
    )


GRID_TILE = 384  # each image is shrunk to fit a tile this many pixels a side


def grid_preview(images: list[bytes], *, tile: int = GRID_TILE, max_side: int = MAX_SIDE) -> bytes | None:
    """A WebP contact sheet of several result images (columns ≈ √n), or None if one can't be read.

    CPU-bound: call it in a thread. Each image is checked for size before it is decoded."""
    if len(images) < 2:
        return None
    thumbs: list[Image.Image] = []
    try:
        for data in images:
            with Image.open(io.BytesIO(data)) as opened:
                if opened.width > max_side or opened.height > max_side:
                    return None
                opened.draft("RGB", (tile, tile))
                thumb = opened.convert("RGB")
            thumb.thumbnail((tile, tile))
            thumbs.append(thumb)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    columns = 1
    while columns * columns < len(thumbs):
        columns += 1
    rows = -(-len(thumbs) // columns)
    width = max(t.width for t in thumbs)
    height = max(t.height for t in thumbs)
    gap = 4
    sheet = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap))
    for index, thumb in enumerate(thumbs):
        x = (index % columns) * (width + gap) + (width - thumb.width) // 2
        y = (index // columns) * (height + gap) + (height - thumb.height) // 2
        sheet.paste(thumb, (x, y))
    out = io.BytesIO()
    sheet.save(out, format="WEBP", quality=80)
    return out.getvalue()
