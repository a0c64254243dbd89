from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import InvalidInputError
from bot.services.images import ImageWorker, PreparedImage, inspect_image, prepare_image


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_png_becomes_webp() -> None:
    prepared = prepare_image(png(64, 32))
    assert (prepared.width, prepared.height) == (64, 32)
    with Image.open(io.BytesIO(prepared.webp)) as image:
        assert image.format == "WEBP"
    assert prepared.as_base64()


def test_not_an_image() -> None:
    with pytest.raises(InvalidInputError, match="not an image"):
        prepare_image(b"%PDF-1.4 definitely not a picture")


def test_too_many_bytes() -> None:
    with pytest.raises(InvalidInputError, match=r"20\.0 MB"):
        prepare_image(b"\0" * (20 * 1024 * 1024))


def test_too_many_pixels_is_refused_without_decoding() -> None:
    with pytest.raises(InvalidInputError, match="4000×100"):
        prepare_image(png(4000, 100))


def test_animated_image() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 0), (255, 255, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidInputError, match="Animated"):
        prepare_image(out.getvalue())


def test_decompression_bomb_header() -> None:
    # A tiny PNG whose header claims 20000×20000 pixels: refused from the header alone.
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG")
    data = out.getvalue()
    assert len(data) < 2 * 1024 * 1024
    with pytest.raises(InvalidInputError, match=r"too large"):
        prepare_image(data)


def test_transparency_is_found_while_converting() -> None:
    # Inpainting without a mask repaints the transparent area: whether there is one is read from the
    # decoded pixels, so nothing decodes the WebP a second time to ask.
    out = io.BytesIO()
    hole = Image.new("RGBA", (16, 16), (10, 20, 30, 255))
    hole.putpixel((3, 3), (0, 0, 0, 0))
    hole.save(out, format="PNG")
    assert prepare_image(out.getvalue()).transparent
    out = io.BytesIO()
    Image.new("RGBA", (16, 16), (10, 20, 30, 255)).save(out, format="PNG")
    assert not prepare_image(out.getvalue()).transparent
    assert not prepare_image(png(16, 16)).transparent


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_an_upload_is_shrunk_to_the_size_it_will_be_used_at() -> None:
    # For a request of 512×512 the worker resizes its source to 512×512: a 2048×1536 photo goes as the
    # smallest copy of its shape covering that, and says the size the member sent (masks are checked
    # against it).
    prepared = prepare_image(jpeg(2048, 1536), fit=(512, 512))
    assert (prepared.width, prepared.height) == (2048, 1536)
    with Image.open(io.BytesIO(prepared.webp)) as sent:
        assert sent.format == "WEBP"
        assert sent.size == (683, 512)
        # The same picture: the gradient still runs from dark (left of the rotated gradient: top) to light.
        pixels = sent.convert("L")
        top, bottom = pixels.getpixel((300, 5)), pixels.getpixel((300, 506))
        assert isinstance(top, int) and isinstance(bottom, int)
        assert top < 40 and bottom > 215
    # Never enlarged, and a PNG (no reduced decoding) is shrunk too.
    assert Image.open(io.BytesIO(prepare_image(jpeg(300, 200), fit=(512, 512)).webp)).size == (300, 200)
    assert Image.open(io.BytesIO(prepare_image(png(1024, 256), fit=(512, 512)).webp)).size == (1024, 256)
    assert Image.open(io.BytesIO(prepare_image(png(1024, 1024), fit=(512, 768)).webp)).size == (768, 768)


def test_one_transparent_pixel_counts_however_much_the_image_shrinks() -> None:
    out = io.BytesIO()
    hole = Image.new("RGBA", (1024, 1024), (10, 20, 30, 255))
    hole.putpixel((500, 500), (0, 0, 0, 0))
    hole.save(out, format="PNG")
    prepared = prepare_image(out.getvalue(), fit=(128, 128))
    assert prepared.transparent
    with Image.open(io.BytesIO(prepared.webp)) as sent:
        assert sent.size == (128, 128) and sent.mode == "RGBA"


def test_an_upload_is_checked_from_its_header_without_decoding() -> None:
    upload = inspect_image(jpeg(640, 480))
    assert (upload.width, upload.height) == (640, 480)
    with pytest.raises(InvalidInputError, match="4000×100"):
        inspect_image(png(4000, 100))
    with pytest.raises(InvalidInputError, match="not an image"):
        inspect_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(InvalidInputError, match=r"20\.0 MB"):
        inspect_image(b"\0" * (20 * 1024 * 1024))


def test_jpeg_metadata_does_not_travel_on() -> None:
    exif = Image.Exif()
    exif[0x010F] = "a camera maker"
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out, format="JPEG", exif=exif)
    prepared = prepare_image(out.getvalue())
    with Image.open(io.BytesIO(prepared.webp)) as image:
        assert image.format == "WEBP"
        assert not image.info.get("exif")
    assert b"a camera maker" not in prepared.webp


async def test_image_worker_runs_one_conversion_at_a_time() -> None:
    # `[images] workers = 1`: uploads arriving together are converted one after another in the worker's
    # own thread (never on the event loop, never in asyncio's default executor), each still answered.
    worker = ImageWorker(1)
    threads: set[str] = set()
    running = 0
    most = 0

    def convert(data: bytes) -> PreparedImage:
        nonlocal running, most
        running += 1
        most = max(most, running)
        threads.add(threading.current_thread().name)
        try:
            return prepare_image(data)
        finally:
            running -= 1

    try:
        results = await asyncio.gather(*(worker.run(convert, png(256, 128)) for _ in range(4)))
    finally:
        worker.close()
    assert [(r.width, r.height) for r in results] == [(256, 128)] * 4
    assert most == 1
    assert len(threads) == 1
    assert threads.pop().startswith("pillow")
    assert threading.current_thread().name not in threads


def test_pillow_work_has_one_way_off_the_loop() -> None:
    # Every call site goes through ImageWorker: a `to_thread` or `run_in_executor` elsewhere would run
    # Pillow in asyncio's default executor again (up to cores + 4 conversions at once, unbounded memory).
    root = Path(__file__).resolve().parent.parent
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("bot", "cogs")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ("to_thread(" in line or "run_in_executor(" in line) and path.name != "images.py"
    ]
    assert found == []
