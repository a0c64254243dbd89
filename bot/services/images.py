"""Checking and converting images members upload (img2img sources, alchemy inputs).

Pillow is run with a hard pixel limit so a decompression bomb is refused before it is decoded, and every
image is re-encoded as WebP: the Horde's preferred source format, and no original metadata travels on.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from PIL import Image, UnidentifiedImageError

from bot.config import DEFAULT_UPLOAD_BYTES
from bot.errors import InvalidInputError

MAX_UPLOAD_BYTES = DEFAULT_UPLOAD_BYTES  # the settings' default ([generation_jobs], [alchemy]): one number
MAX_SIDE = 3072  # the Horde's SourceImageResolutionExceeded limit (API_NOTES §6)
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
# libwebp's effort (0-6). From 3 up it keeps whole-image analysis buffers: a 3072² source then needs
# ~135 MB in the encoder instead of ~63 MB, and ~1.7 s of CPU instead of ~1 s, for a file ~4% smaller.
WEBP_METHOD = 2
T = TypeVar("T")


@dataclass(frozen=True)
class PreparedImage:
    webp: bytes
    width: int
    height: int
    # Any (partly) transparent pixel: the area inpainting repaints without a mask. Found while the image
    # is decoded anyway, so nobody decodes the WebP again to ask.
    transparent: bool = False

    def as_base64(self) -> str:
        return base64.b64encode(self.webp).decode()


def prepare_image(
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_SIDE,
    quality: int = 95,
) -> PreparedImage:
    """Validate an uploaded image and return it as WebP. Raises InvalidInputError saying what is wrong.

    CPU-bound and tens of MB at its peak for a 3072² image: run it through `ImageWorker`. The upload is
    opened once, its decoded pixels are the only full copy unless the mode must change, and each buffer
    is let go as soon as the next step has what it needs."""
    if len(data) > max_bytes:
        size_mb, limit_mb = len(data) / 1024 / 1024, max_bytes // 1024 // 1024
        raise InvalidInputError(f"That file is {size_mb:.1f} MB; images may be at most {limit_mb} MB.")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InvalidInputError(
            f"That image is too large; at most {max_side}×{max_side} pixels are allowed."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidInputError("That file is not an image I can read (use PNG, JPEG or WebP).") from None
    with image:
        fmt = image.format or "?"
        width, height = image.size
        try:
            frames = getattr(image, "n_frames", 1)
        except (OSError, ValueError):
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
        mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
        try:
            image.load()
            # `convert` copies even when the mode is already right: an RGB JPEG is encoded as decoded.
            pixels = image if image.mode == mode else image.convert(mode)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise InvalidInputError("That image is damaged or too large to decode.") from None
        try:
            transparent = mode == "RGBA" and _lowest_alpha(pixels) < 255
            out = io.BytesIO()
            pixels.save(out, format="WEBP", quality=quality, method=WEBP_METHOD)
        finally:
            if pixels is not image:
                pixels.close()
    return PreparedImage(webp=out.getvalue(), width=width, height=height, transparent=transparent)


def _lowest_alpha(image: Image.Image) -> int:
    low, _high = cast(tuple[int, int], image.getchannel("A").getextrema())
    return low


class ImageWorker:
    """The one place Pillow work runs: a small pool of threads of its own (`[images] workers`), built by
    the factory and shut down with the runtime. asyncio's default executor would run up to cores + 4
    conversions at once, each holding tens of MB for a 3072² upload; here the rest wait their turn, and
    the event loop stays free (Pillow releases the GIL while it decodes, converts and encodes)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pillow")

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in the pool. A caller cancelled meanwhile stops waiting; a conversion
        already running finishes (Pillow can't be interrupted) and its result is dropped."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def prepare(
        self,
        data: bytes,
        *,
        max_bytes: int = MAX_UPLOAD_BYTES,
        max_side: int = MAX_SIDE,
        quality: int = 95,
    ) -> PreparedImage:
        """`prepare_image` in the pool."""
        return await self.run(prepare_image, data, max_bytes=max_bytes, max_side=max_side, quality=quality)

    async def grid(self, images: list[bytes]) -> bytes | None:
        """`grid_preview` in the pool."""
        return await self.run(grid_preview, images)

    def close(self) -> None:
        """Conversions not started are dropped; one running finishes in its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)


GRID_TILE = 384  # each image is shrunk to fit a tile this many pixels a side


def grid_preview(images: list[bytes], *, tile: int = GRID_TILE, max_side: int = MAX_SIDE) -> bytes | None:
    """A WebP contact sheet of several result images (columns ≈ √n), or None if one can't be read.

    CPU-bound: run it through `ImageWorker`. Each image is checked for size before it is decoded."""
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
