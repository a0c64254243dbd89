"""Building /generate requests: defaults and their precedence, every bad option's message, styles, NSFW,
img2img. Requests that pass are also sent to the fake Horde, which checks them against the real schema."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.errors import InvalidInputError
from bot.horde.generation import ImageRequest
from bot.horde.models import ApiKey
from bot.services import Services
from bot.services.generation_options import GenerateOptions
from bot.services.images import Upload
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock
from tests.support.genopts import generation_services, picture, reference
from tests.support.runtime import runtime_of

GUILD = 1456074443980800009


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def served(horde: FakeHorde) -> FakeHorde:
    """Workers for SD 1.5, SDXL, Flux and NSFW models; the trimmed model reference served."""
    # The fake's limiter runs on real time while these tests run on a manual clock, so the client's
    # Retry-After waits would take no time: limits are not what is tested here.
    horde.enforce_rate_limits = False
    horde.model_reference = reference()
    horde.add_worker("sd-1", models=["stable_diffusion"], threads=2)
    horde.add_worker("xl-1", models=["AlbedoBase XL (SDXL)", "Pony Diffusion XL"])
    horde.add_worker("flux-1", models=["Flux.1-Schnell fp8 (Compact)"])
    horde.add_worker("deli-1", models=["Deliberate", "Anything v5"])
    return horde


@pytest.fixture
async def services(tmp_path: Path, served: FakeHorde, clock: TestClock) -> AsyncIterator[Services]:
    async with generation_services(tmp_path, served, clock) as built:
        await built.model_catalog.refresh()  # as the scheduled job does at start-up
        yield built


async def build(
    services: Services,
    *,
    guild_id: int | None = GUILD,
    nsfw_allowed: bool = False,
    source: Upload | None = None,
    **options: Any,
) -> ImageRequest:
    options.setdefault("prompt", "a lighthouse at dusk")
    return await services.request_builder.build(
        GenerateOptions(**options), guild_id=guild_id, nsfw_allowed=nsfw_allowed, source_image=source
    )


async def refused(services: Services, **kwargs: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        await build(services, **kwargs)
    return caught.value.message


async def accepted_by_horde(services: Services, horde: FakeHorde, request: ImageRequest) -> Any:
    user = horde.add_user("painter", kudos=10_000)
    accepted = await runtime_of(services).horde.generate_image(request, ApiKey(user.apikey or ""))
    return horde.image_request(accepted.id)


# --- defaults and precedence ---------------------------------------------------------------------------


async def test_prompt_only_uses_config_defaults_and_safe_nsfw_flags(
    services: Services, served: FakeHorde
) -> None:
    request = await build(services, prompt="  a lighthouse at dusk  ")
    assert request.prompt == "a lighthouse at dusk"
    assert request.models == []
    p = request.params
    assert (p.width, p.height, p.steps, p.n, p.cfg_scale, p.sampler_name, p.karras) == (
        512,
        512,
        30,
        1,
        7.5,
        "k_euler_a",
        True,
    )
    assert request.nsfw is False and request.censor_nsfw is True and request.replacement_filter is True
    assert request.source_image is None and request.source_processing is None and request.style is None
    stored = await accepted_by_horde(services, served, request)
    assert stored.params["width"] == 512


async def test_negative_prompt_joins_with_three_hashes(services: Services) -> None:
    request = await build(services, prompt="a cat", negative="blurry, extra paws")
    assert request.prompt == "a cat###blurry, extra paws"


async def test_model_is_matched_case_insensitively_and_sets_native_size(services: Services) -> None:
    request = await build(services, model="albedobase xl (sdxl)")
    assert request.models == ["AlbedoBase XL (SDXL)"]
    assert (request.params.width, request.params.height) == (1024, 1024)


async def test_reference_clip_skip_requirement_is_applied(services: Services) -> None:
    request = await build(services, model="Pony Diffusion XL", nsfw_allowed=True)
    assert request.params.clip_skip == 2
    sd = await build(services, model="stable_diffusion")
    assert sd.params.clip_skip is None


async def test_default_steps_cfg_and_sampler_follow_the_model_requirements(services: Services) -> None:
    """Flux Schnell works with 3-8 steps, CFG 1-4 and k_euler: the server's defaults (30 steps, CFG 7.5,
    k_euler_a) would render it badly, so its defaults move within them; its family is 1024²."""
    flux = await build(services, model="Flux.1-Schnell fp8 (Compact)")
    p = flux.params
    assert (p.steps, p.cfg_scale, p.sampler_name, p.width, p.height) == (8, 4.0, "k_euler", 1024, 1024)
    typed = await build(services, model="Flux.1-Schnell fp8 (Compact)", steps=6, cfg=2.0, sampler="k_euler")
    assert (typed.params.steps, typed.params.cfg_scale) == (6, 2.0)
    sd = await build(services, model="stable_diffusion")
    assert (sd.params.steps, sd.params.width, sd.params.sampler_name) == (30, 512, "k_euler_a")


async def test_sdxl_default_size_is_capped_by_the_server_pixel_limit(services: Services) -> None:
    await services.guild_config.update(GUILD, max_pixels=768 * 768)
    request = await build(services, model="AlbedoBase XL (SDXL)")
    assert (request.params.width, request.params.height) == (768, 768)


async def test_with_no_model_anywhere_defaults_fit_the_most_served_model(
    services: Services, served: FakeHorde
) -> None:
    """No model option, no server default: any worker may take the request, most likely one serving the
    model most workers serve. Here that is SDXL, so 1024² (not 512²), still as "any model"."""
    served.add_worker("xl-2", models=["AlbedoBase XL (SDXL)"], threads=3)
    await services.model_catalog.refresh()
    request = await build(services)
    assert request.models == []
    assert (request.params.width, request.params.height, request.params.steps) == (1024, 1024, 30)
    stored = await accepted_by_horde(services, served, request)
    assert (stored.params["width"], stored.params["height"]) == (1024, 1024)
    # Still within the server's limits, and a server default model wins over the estimate.
    await services.guild_config.update(GUILD, max_pixels=640 * 640)
    assert (await build(services)).params.width == 640
    await services.guild_config.update(GUILD, max_pixels=1024 * 1024, default_model="stable_diffusion")
    sd = await build(services)
    assert (sd.models, sd.params.width) == (["stable_diffusion"], 512)


async def test_with_no_model_anywhere_steps_fit_the_most_served_models_requirements(
    services: Services, served: FakeHorde
) -> None:
    served.add_worker("flux-2", models=["Flux.1-Schnell fp8 (Compact)"], threads=4)
    await services.model_catalog.refresh()
    p = (await build(services)).params
    assert (p.steps, p.cfg_scale, p.sampler_name, p.width) == (8, 4.0, "k_euler", 1024)
    assert (await build(services, steps=20)).params.steps == 20  # typed values are kept


async def test_a_typed_nsfw_model_is_refused_outside_nsfw_channels(services: Services) -> None:
    shown = await refused(services, model="deliberate")
    assert shown == (
        "`Deliberate` is an NSFW model: it can only be used in NSFW (age-restricted) channels. "
        "Try again in one, or pick another model from the list that appears as you type."
    )
    assert (await build(services, model="Deliberate", nsfw_allowed=True)).models == ["Deliberate"]
    await services.guild_config.update(GUILD, nsfw_policy="off")
    off = await refused(services, model="Deliberate", nsfw_allowed=True)
    assert off.startswith("`Deliberate` is an NSFW model and NSFW generation is turned off on this server")


async def test_guild_defaults_override_config_and_options_override_both(
    tmp_path: Path, served: FakeHorde, clock: TestClock
) -> None:
    async with generation_services(
        tmp_path,
        served,
        clock,
        default_steps=20,
        default_width=768,
        default_height=768,
        default_cfg=5.0,
        default_sampler="k_euler",
        default_n=2,
        default_model="stable_diffusion",
        max_pixels=2048 * 2048,
    ) as services:
        await services.model_catalog.refresh()
        config_only = await build(services, guild_id=None)
        assert config_only.models == ["stable_diffusion"]
        p = config_only.params
        assert (p.steps, p.width, p.height, p.cfg_scale, p.sampler_name, p.n) == (
            20,
            768,
            768,
            5.0,
            "k_euler",
            2,
        )

        await services.guild_config.update(
            GUILD,
            default_steps=25,
            default_width=640,
            default_height=832,
            default_model="AlbedoBase XL (SDXL)",
        )
        guild = await build(services)
        assert guild.models == ["AlbedoBase XL (SDXL)"]
        assert (guild.params.steps, guild.params.width, guild.params.height) == (25, 640, 832)

        mine = await build(services, model="Anything v5", steps=12, width=512, height=704, cfg=9.25, n=1)
        assert mine.models == ["Anything v5"]
        p = mine.params
        assert (p.steps, p.width, p.height, p.cfg_scale, p.n) == (12, 512, 704, 9.25, 1)


async def test_defaults_above_the_limits_are_brought_within_them(services: Services) -> None:
    await services.guild_config.update(
        GUILD, default_steps=80, max_steps=40, default_width=1024, default_height=1024, max_pixels=512 * 512
    )
    request = await build(services)
    assert request.params.steps == 40
    assert (request.params.width, request.params.height) == (512, 512)


async def test_guild_limits_replace_config_limits(services: Services) -> None:
    await services.guild_config.update(GUILD, max_steps=100, max_n=8, max_pixels=2048 * 2048)
    request = await build(services, steps=90, n=8, width=2048, height=2048)
    assert (request.params.steps, request.params.n, request.params.width) == (90, 8, 2048)
    # Elsewhere (another guild, a DM) the config's limits apply.
    assert "at most 50" in await refused(services, guild_id=None, steps=90)


async def test_all_simple_options_reach_the_request(services: Services, served: FakeHorde) -> None:
    request = await build(
        services,
        model="stable_diffusion",
        sampler="K_DPMPP_2M",
        seed="lighthouse-42",
        karras=False,
        hires_fix=True,
        tiling=True,
        post_processing="GFPGAN, realesrgan_x4plus , GFPGAN",
    )
    p = request.params
    assert p.sampler_name == "k_dpmpp_2m"
    assert p.seed == "lighthouse-42"
    assert (p.karras, p.hires_fix, p.tiling) == (False, True, True)
    assert p.post_processing == ["GFPGAN", "RealESRGAN_x4plus"]
    stored = await accepted_by_horde(services, served, request)
    assert stored.params["post_processing"] == ["GFPGAN", "RealESRGAN_x4plus"]


# --- every bad option ----------------------------------------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "   "}, "The prompt is empty: describe the picture you want."),
    (
        {"prompt": "a cat ### dogs", "negative": "blurry"},
        "Put the negative prompt either after `###` in the prompt or in `negative`, not both.",
    ),
    (
        {"prompt": "a" * 6000, "negative": "b" * 1000},
        "The prompt and negative prompt are 7,003 characters long; the AI Horde takes fewer than 7,000.",
    ),
    ({"width": 500}, "Width must be a multiple of 64 (got 500)."),
    ({"height": 4096}, "Height must be between 64 and 3072 pixels (got 4096)."),
    ({"width": 0}, "Width must be between 64 and 3072 pixels (got 0)."),
    (
        {"width": 2048, "height": 2048},
        "That is 2048×2048 = 4,194,304 pixels; the limit here is 1,048,576 (for example 1024×1024).",
    ),
    ({"steps": 0}, "Steps must be between 1 and 500 (got 0)."),
    ({"steps": 501}, "Steps must be between 1 and 500 (got 501)."),
    ({"steps": 60}, "Steps can be at most 50 on this server (got 60)."),
    ({"cfg": 7.555}, "CFG can have at most 2 decimals (got 7.555)."),
    ({"cfg": 100.5}, "CFG must be between 0 and 100 (got 100.5)."),
    ({"cfg": -1.0}, "CFG must be between 0 and 100 (got -1)."),
    ({"n": 0}, "n must be between 1 and 20 images (got 0)."),
    ({"n": 21}, "n must be between 1 and 20 images (got 21)."),
    ({"n": 5}, "You can ask for at most 4 images at once here (got 5)."),
    (
        {"sampler": "k_fancy"},
        "Unknown sampler `k_fancy`. Choose one of: k_euler_a, k_euler, k_dpmpp_2m, k_dpmpp_sde, "
        "k_dpmpp_2s_a, k_dpm_2_a, k_dpm_2, k_dpm_fast, k_dpm_adaptive, k_lms, k_heun, dpmsolver, lcm, DDIM.",
    ),
    (
        {"post_processing": "GFPGAN, Sharpen"},
        "Unknown post-processing: `Sharpen`. Choose from: GFPGAN, CodeFormers",
    ),
    (
        {"post_processing": "RealESRGAN_x4plus,4x_AnimeSharp"},
        "Use at most 1 upscaler at a time (got RealESRGAN_x4plus, 4x_AnimeSharp).",
    ),
    ({"strength": 0.5}, "`strength` only applies with an `image` (it is the img2img denoising)."),
    ({"control_type": "canny"}, "`control_type` needs an `image` for ControlNet to follow."),
    ({"seed": "7" * 257}, "The seed can be at most 256 characters (got 257)."),
    (
        {"model": "Imaginary Model 9"},
        "Unknown model `Imaginary Model 9`. Pick one from the list that appears as you type.",
    ),
    (
        {"model": "Dreamshaper"},
        "No worker serves `Dreamshaper` right now. Pick a model from the list that appears as you type.",
    ),
    (
        {"style": "no such style"},
        "Unknown style `no such style`. Pick one from the list that appears as you type.",
    ),
    (
        {"nsfw": True},
        "NSFW generation is only allowed in NSFW channels (age-restricted); try again in one.",
    ),
    (
        {"model": "AlbedoBase XL (SDXL)", "hires_fix": True},
        "`hires_fix` does not work with `AlbedoBase XL (SDXL)`; leave it out.",
    ),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[m[:40] for _, m in BAD_OPTIONS])
async def test_bad_option_is_refused_with_a_precise_message(
    services: Services, served: FakeHorde, options: dict[str, Any], message: str
) -> None:
    shown = await refused(services, **options)
    assert shown.startswith(message) if message.endswith("CodeFormers") else shown == message
    assert served.count("POST", r"/generate/async") == 0


IMAGE_BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"strength": 0.0}, "Strength must be between 0.01 and 1 (got 0)."),
    ({"strength": 1.5}, "Strength must be between 0.01 and 1 (got 1.5)."),
    ({"control_type": "sketchy"}, "Unknown control type `sketchy`. Choose one of: canny, hed, depth, normal"),
    (
        {"control_type": "canny", "model": "AlbedoBase XL (SDXL)"},
        "ControlNet (`control_type`) does not work with SDXL models like `AlbedoBase XL (SDXL)`.",
    ),
    (
        {"control_type": "depth", "model": "Flux.1-Schnell fp8 (Compact)"},
        "ControlNet (`control_type`) does not work with Flux models like `Flux.1-Schnell fp8 (Compact)`.",
    ),
]


@pytest.mark.parametrize(
    ("options", "message"), IMAGE_BAD_OPTIONS, ids=[m[:40] for _, m in IMAGE_BAD_OPTIONS]
)
async def test_bad_image_option_is_refused(services: Services, options: dict[str, Any], message: str) -> None:
    shown = await refused(services, source=picture(512, 512), **options)
    assert shown.startswith(message)


async def test_nsfw_turned_off_by_the_guild_is_refused_even_in_nsfw_channels(services: Services) -> None:
    await services.guild_config.update(GUILD, nsfw_policy="off")
    shown = await refused(services, nsfw=True, nsfw_allowed=True)
    assert shown == "NSFW generation is turned off on this server."


async def test_nsfw_in_an_nsfw_channel_turns_censorship_off(services: Services, served: FakeHorde) -> None:
    request = await build(services, nsfw=True, nsfw_allowed=True, model="Deliberate")
    assert request.nsfw is True and request.censor_nsfw is False and request.replacement_filter is True
    stored = await accepted_by_horde(services, served, request)
    assert stored.payload["nsfw"] is True


async def test_guild_default_model_without_workers_asks_for_another(services: Services) -> None:
    await services.guild_config.update(GUILD, default_model="Dreamshaper")
    shown = await refused(services)
    assert (
        shown
        == "No worker serves this server's default model `Dreamshaper` right now: pick one with `model`."
    )
    request = await build(services, model="stable_diffusion")
    assert request.models == ["stable_diffusion"]


async def test_bad_config_values_are_rejected_at_start_up(
    tmp_path: Path, served: FakeHorde, clock: TestClock
) -> None:
    from bot.config import ConfigError
    from bot.services.generation_options import GenerationDefaults

    cases: list[tuple[dict[str, Any], str]] = [
        ({"default_width": 500}, "generation.default_width"),
        ({"max_n": 30}, "generation.max_n"),
        ({"default_sampler": "k_fancy"}, "generation.default_sampler"),
        ({"default_cfg": 7.555}, "generation.default_cfg"),
        ({"autocomplete_timeout_seconds": 5}, "generation.autocomplete_timeout_seconds"),
        ({"max_steps": "fifty"}, "generation.max_steps"),
    ]
    for section, key in cases:
        with pytest.raises(ConfigError) as caught:
            GenerationDefaults.from_section(section)
        assert caught.value.key == key


# --- the catalog unavailable ---------------------------------------------------------------------------


async def test_unknown_model_and_style_go_through_when_the_catalog_is_unavailable(
    tmp_path: Path, horde: FakeHorde, clock: TestClock
) -> None:
    horde.set_down(True)
    async with generation_services(tmp_path, horde, clock) as services:
        request = await build(services, model="Some Model", style="some style")
        assert request.models == ["Some Model"]
        assert request.style == "some style"
        # The checks that need no catalog still apply.
        assert (
            await refused(services, model="Some Model", width=500)
            == "Width must be a multiple of 64 (got 500)."
        )


# --- img2img and ControlNet ----------------------------------------------------------------------------


async def test_image_becomes_an_img2img_source_keeping_its_shape(
    services: Services, served: FakeHorde
) -> None:
    source = picture(640, 480, fmt="JPEG")
    request = await build(services, source=source, model="stable_diffusion")
    assert request.source_processing == "img2img"
    assert request.params.denoising_strength == 0.6  # the config default
    w, h = request.params.width or 0, request.params.height or 0
    assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512
    assert abs(w / h - 640 / 480) < 0.2
    # Sent as WebP, shrunk to what the worker uses (it resizes its source to the request's size), in the
    # image's own shape.
    sent_w, sent_h = sent_size(request)
    assert sent_w >= w and sent_h >= h and (sent_w, sent_h) < (640, 480)
    assert abs(sent_w / sent_h - 640 / 480) < 0.01
    stored = await accepted_by_horde(services, served, request)
    assert stored.payload["source_processing"] == "img2img"


async def test_a_larger_image_is_sent_at_the_size_the_request_uses(
    services: Services, served: FakeHorde
) -> None:
    # A 2048×1536 photo for a 512×768 request: the worker would resize it to 512×768 anyway, so the bot
    # sends the smallest copy of the photo's shape that still covers that (1024×768), not all of it.
    source = picture(2048, 1536, fmt="JPEG")
    request = await build(services, source=source, model="stable_diffusion", width=512, height=768)
    assert (request.params.width, request.params.height) == (512, 768)
    assert sent_size(request) == (1024, 768)
    stored = await accepted_by_horde(services, served, request)
    assert stored.payload["source_image"] == request.source_image


def sent_size(request: ImageRequest) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(request.source_image or ""))) as sent:
        assert sent.format == "WEBP"
        return sent.size


async def test_image_with_strength_and_control_type(services: Services, served: FakeHorde) -> None:
    request = await build(
        services,
        source=picture(512, 512),
        model="stable_diffusion",
        strength=0.35,
        control_type="Canny",
        width=512,
        height=768,
    )
    assert request.params.denoising_strength == 0.35
    assert request.params.control_type == "canny"
    assert (request.params.width, request.params.height) == (512, 768)
    await accepted_by_horde(services, served, request)


# --- styles ----------------------------------------------------------------------------------------------


async def test_style_is_sent_by_id_with_its_models_and_params(services: Services, served: FakeHorde) -> None:
    style = served.add_style(
        "Cinematic",
        prompt="{p}, cinematic lighting###{np}",
        params={"steps": 20, "cfg_scale": 6, "sampler_name": "k_dpmpp_2m"},
        models=["stable_diffusion"],
    )
    await services.model_catalog.refresh()
    request = await build(services, style="cinematic", prompt="a fox", negative="blur", n=2)
    assert request.style == style["id"]
    assert request.models == ["stable_diffusion"]
    p = request.params
    assert (p.steps, p.cfg_scale, p.sampler_name, p.n, p.width, p.height) == (
        20,
        6,
        "k_dpmpp_2m",
        2,
        512,
        512,
    )
    assert request.prompt == "a fox###blur"
    stored = await accepted_by_horde(services, served, request)
    # The Horde filled the template and used the style's settings.
    assert stored.prompt.startswith("a fox, cinematic lighting")
    assert stored.params["steps"] == 20
    # By id (the autocomplete's value) as well as by name.
    by_id = await build(services, style=style["id"], prompt="a fox")
    assert by_id.style == style["id"]


async def test_options_a_style_would_override_are_refused(services: Services, served: FakeHorde) -> None:
    served.add_style("Cinematic", params={"steps": 20}, models=["stable_diffusion"])
    await services.model_catalog.refresh()
    shown = await refused(services, style="Cinematic", steps=10, cfg=5.0, model="Deliberate")
    assert shown == (
        "The style `Cinematic` sets its own model and settings, so `model`, `steps`, `cfg` would be ignored: "
        "leave them out (with a style you choose the prompt, `n` and the size if the style has none)."
    )
    # The size is the member's when the style has none...
    request = await build(services, style="Cinematic", width=768, height=512)
    assert (request.params.width, request.params.height) == (768, 512)
    # ...and the style's when it has one.
    served.add_style("Wide", params={"width": 1024, "height": 576}, models=["AlbedoBase XL (SDXL)"])
    await services.model_catalog.refresh()
    assert "`width`" in await refused(services, style="Wide", width=512)
    wide = await build(services, style="Wide")
    assert (wide.params.width, wide.params.height) == (1024, 576)


async def test_style_over_this_servers_limits_is_refused(services: Services, served: FakeHorde) -> None:
    served.add_style("Heavy", params={"steps": 80}, models=["stable_diffusion"])
    served.add_style("Huge", params={"width": 2048, "height": 2048}, models=["stable_diffusion"])
    served.add_style("Spicy", nsfw=True, models=["Deliberate"])
    await services.model_catalog.refresh()
    assert (
        await refused(services, style="Heavy")
        == "The style `Heavy` uses 80 steps; the limit on this server is 50."
    )
    assert await refused(services, style="Huge") == (
        "The style `Huge` makes 2048×2048 = 4,194,304 pixels; the limit here is 1,048,576 "
        "(for example 1024×1024)."
    )
    assert await refused(services, style="Spicy") == "The style `Spicy` is NSFW: use it in an NSFW channel."
    assert (await build(services, style="Spicy", nsfw_allowed=True)).style is not None


async def test_style_template_counts_toward_the_prompt_length(services: Services, served: FakeHorde) -> None:
    served.add_style("Verbose", prompt="{p} " + "ornate " * 300 + "###{np}", models=["stable_diffusion"])
    await services.model_catalog.refresh()
    shown = await refused(services, style="Verbose", prompt="x" * 5000)
    assert shown.startswith("With the style, the prompt is 7,10")
    assert shown.endswith("characters long; the AI Horde takes fewer than 7,000.")


def test_example_config_documents_the_generation_defaults() -> None:
    import tomllib

    from bot.services.generation_options import GenerationDefaults

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    with example.open("rb") as fh:
        section = tomllib.load(fh)["generation"]
    assert GenerationDefaults.from_section(section) == GenerationDefaults()
