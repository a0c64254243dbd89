"""Building the services behind /generate's options against the fake Horde, on a manual clock."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import build_runtime, build_services
from bot.services import Services
from bot.services.images import Upload, inspect_image
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "data" / "image_model_reference.json"


def reference() -> dict[str, Any]:
    """A trimmed copy of the Horde's image model reference (9 models: SD 1.5, SD 2, SDXL, Flux, NSFW...)."""
    data: dict[str, Any] = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    return data


@asynccontextmanager
async def generation_services(
    tmp_path: Path, horde: FakeHorde, clock: TestClock, **generation: Any
) -> AsyncIterator[Services]:
    """Services whose model reference URL is the fake Horde's; `generation` is the `[generation]` table."""
    settings = make_settings(tmp_path, horde.base_url, generation=generation)
    settings = dataclasses.replace(
        settings, horde=dataclasses.replace(settings.horde, model_reference_url=horde.model_reference_url)
    )
    services = build_services(build_runtime(settings, clock=clock))
    await services.start()
    try:
        yield services
    finally:
        await services.close()


def picture(width: int, height: int, fmt: str = "PNG") -> Upload:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format=fmt)
    return inspect_image(buffer.getvalue())
