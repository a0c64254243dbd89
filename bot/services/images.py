"""Checking and converting images members upload (img2img sources, alchemy inputs).

Pillow is run with a hard pixel limit so a decompression bomb is refused before it is decoded, and every
image is re-encoded as WebP: the Horde's preferred source format, and no original metadata travels on.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import math
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
    # The upload's size, as the member sent it (masks are checked against it, a request keeps its shape).
    # `webp` has this size unless it was converted for a smaller request (`fit`).
    width: int
    height: int
    # Any (partly) transparent pixel: the area inpainting repaints without a mask. Found while the image
    # is decoded anyway, so nobody decodes the WebP again to ask.
    transparent: bool = False

    def as_base64(self) -> str:
        return base64.b64encode(self.webp).decode()


@dataclass(frozen=True)
class Upload:
    """An upload whose header passed every check (bytes, format, one frame, size): not decoded yet. What
    a request is built from, before it is known what size the Horde's worker will use."""

    data: bytes
    width: int
    height: int


def inspect_image(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_side: int = MAX_SIDE) -> Upload:
    """Check an upload from its header alone (nothing is decoded). Raises InvalidInputError saying what is
    wrong."""
    with _open_checked(data, max_bytes, max_side) as image:
        width, height = image.size
    return Upload(data=data, width=width, height=height)


def prepare_image(
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_SIDE,
    quality: int = 95,
    fit: tuple[int, int] | None = None,
) -> PreparedImage:
    """Validate an uploaded image and return it as WebP. Raises InvalidInputError saying what is wrong.

    `fit`: the size the image will be used at (an img2img request's width and height: the Horde's worker
    resizes its source to that size). A larger upload is shrunk, keeping its shape, to the smallest size
    that still covers it, so the worker gets the same pixels, and nobody holds a 3072² image to send
    what becomes 1024² (a 3072² JPEG for 1024²: ~23 MiB at the peak instead of ~99, 0.2 s of CPU instead
    of 1). A JPEG is even decoded at a fraction of its size (libjpeg's DCT scaling, `draft`).

    CPU-bound and tens of MB at its peak for a 3072² image: run it through `ImageWorker`. The upload is
    opened once, its decoded pixels are the only full copy unless the mode must change, and each buffer
    is let go as soon as the next step has what it needs."""
    with _open_checked(data, max_bytes, max_side) as image:
        width, height = image.size
        target = _cover(width, height, fit) if fit is not None else None
        # The size header was checked, so decoding is bounded: a bomb would have claimed a huge size.
        mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
        try:
            if target is not None:
                image.draft(None, target)  # JPEG only: decoded at 1/2, 1/4 or 1/8 when still >= target
            image.load()
            # `convert` copies even when the mode is already right: an RGB JPEG is encoded as decoded.
            pixels = image if image.mode == mode else image.convert(mode)
        except (OSError, ValueError, Image.DecompressionBombError):
            raise InvalidInputError("That image is damaged or too large to decode.") from None
        try:
            # Read before shrinking: one transparent pixel of the upload counts, however small it becomes.
            transparent = mode == "RGBA" and _lowest_alpha(pixels) < 255
            if target is not None and pixels.size != target:
                shrunk = pixels.resize(target, Image.Resampling.LANCZOS)
                if pixels is not image:
                    pixels.close()
                pixels = shrunk
            out = io.BytesIO()
            pixels.save(out, format="WEBP", quality=quality, method=WEBP_METHOD)
        finally:
            if pixels is not image:
                pixels.close()
    return PreparedImage(webp=out.getvalue(), width=width, height=height, transparent=transparent)


def _open_checked(data: bytes, max_bytes: int, max_side: int) -> Image.Image:
    """The upload opened (header only) once every check a header allows has passed; the caller closes it."""
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
    try:
        _check_header(image, max_side)
    except BaseException:
        image.close()
        raise
    return image


def _check_header(image: Image.Image, max_side: int) -> None:
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


def _cover(width: int, height: int, fit: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest size of the image's shape that covers `fit` on both sides; None when that is no
    smaller than the image (never enlarged)."""
    scale = max(fit[0] / width, fit[1] / height)
    if scale >= 1:
        return None
    return min(width, max(fit[0], math.ceil(width * scale))), min(
        height, max(fit[1], math.ceil(height * scale))
    )


def _lowest_alpha(image: Image.Image) -> int:
    low, _high = cast(tuple[int, int], image.getchannel("A").getextrema())
    return low


class ImageWorker:
    """The one place Pillow work runs: a small pool of threads of its own (`[images] workers`), built by
    the factory and shut down with the runtime. asyncio's default executor would run up to cores + 4
    conversions at once, each holding tens of MB for a 3072² upload; here the rest wait their turn, and
    the event loop stays free: Pillow releases the GIL while it decodes, converts and encodes, but not
    while it copies the pixels into libwebp's picture before encoding, nor while it allocates or resizes.
    Measured at load ~10 (py-spy --gil): a 3072² JPEG fitted to 1024² holds it ~10 ms at a time, ~50 ms
    in all; encoded at full size (alchemy) it is held through the whole copy: the loop waited 90-130 ms."""

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
        fit: tuple[int, int] | None = None,
    ) -> PreparedImage:
        """`prepare_image` in the pool."""
        return await self.run(
            prepare_image, data, max_bytes=max_bytes, max_side=max_side, quality=quality, fit=fit
        )

    async def inspect(
        self, data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_side: int = MAX_SIDE
    ) -> Upload:
        """`inspect_image` in the pool (it parses the header only, but Pillow stays off the loop)."""
        return await self.run(inspect_image, data, max_bytes=max_bytes, max_side=max_side)

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
