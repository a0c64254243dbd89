from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.errors import InvalidInputError
from bot.services.images import prepare_image


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
