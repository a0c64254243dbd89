"""LoRAs in /generate-advanced and /preset save, as members use them: the `loras` autocomplete (the Horde's
curated list, then CivitAI's search; NSFW LoRAs only where NSFW is allowed; a slow CivitAI never holds it)
and the checks before sending (not a LoRA, too large, NSFW here, unknown), against a fake CivitAI."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_runtime, build_services
from bot.config import Settings
from bot.errors import InvalidInputError
from bot.services import Services
from bot.services.generation_extras import ExtraOptions
from bot.services.generation_options import GenerateOptions
from tests.conftest import make_settings
from tests.fakes.civitai import FakeCivitai
from tests.fakes.horde import FakeHorde
from tests.harness import Harness
from tests.support.clock import TestClock
from tests.support.genopts import reference

GUILD = 1456074443980800009

DETAIL, MORE_DETAILS, GONE = 58390, 82098, 99999  # on the curated list (GONE: CivitAI doesn't know it)
LINEART, NUDES, CHECKPOINT, HUGE, HUGE_CURATED, PICKLE = 123, 124, 125, 126, 127, 128


@pytest.fixture(autouse=True)
def _world(horde: FakeHorde, civitai: FakeCivitai) -> None:
    horde.enforce_rate_limits = False
    horde.model_reference = reference()
    horde.add_worker("sd-1", models=["stable_diffusion"])
    horde.lora_reference = [DETAIL, MORE_DETAILS, GONE, HUGE_CURATED]
    civitai.add("Detail Tweaker", id=DETAIL, base_model="SD 1.5", size_mb=144)
    civitai.add("Add More Details", id=MORE_DETAILS, base_model="SDXL 1.0", size_mb=218)
    civitai.add("Anime Lineart", id=LINEART, base_model="SD 1.5", size_mb=36)
    civitai.add("Anime Nudes", id=NUDES, nsfw=True, size_mb=72)
    civitai.add("Anime Checkpoint", id=CHECKPOINT, type="Checkpoint", size_mb=2100)
    civitai.add("Huge Style", id=HUGE, size_mb=812)
    civitai.add("Huge Curated", id=HUGE_CURATED, size_mb=600)
    civitai.add("Pickled Style", id=PICKLE, safetensors=False)


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde, civitai: FakeCivitai) -> Settings:
    built = make_settings(
        tmp_path,
        horde.base_url,
        civitai_url=civitai.origin,
        lora_reference_url=horde.lora_reference_url,
        civitai={"search_timeout_seconds": 0.5, "check_timeout_seconds": 2.0},
    )
    return dataclasses.replace(
        built, horde=dataclasses.replace(built.horde, model_reference_url=horde.model_reference_url)
    )


def shown(choices: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["name"], c["value"]) for c in choices]


async def test_autocomplete_offers_the_curated_list_then_civitai_search_without_nsfw_here(
    harness: Harness, civitai: FakeCivitai
) -> None:
    alice = harness.member("alice")
    empty = await alice.autocomplete("generate-advanced", "loras", "")
    assert shown(empty) == [
        ("Detail Tweaker · SD 1.5 · 144 MB · Horde list", str(DETAIL)),
        ("Add More Details · SDXL 1.0 · 218 MB · Horde list", str(MORE_DETAILS)),
        (f"CivitAI model {GONE} · Horde list", str(GONE)),
        ("Huge Curated · SD 1.5 · 600 MB · Horde list", str(HUGE_CURATED)),
    ]
    # Typing searches CivitAI as the Horde's workers do (types=LORA), SFW only in this channel.
    anime = await alice.autocomplete("generate-advanced", "loras", "anime")
    assert shown(anime) == [("Anime Lineart · SD 1.5 · 36 MB", str(LINEART))]
    [search] = [q for path, q in civitai.calls if path == "/api/v1/models" and ("query", "anime") in q]
    assert ("types", "LORA") in search and ("nsfw", "false") in search
    # The entries already typed are kept; picking adds the LoRA's CivitAI id after them.
    more = await alice.autocomplete("generate-advanced", "loras", f"{DETAIL}=0.8, anim")
    assert shown(more) == [("Anime Lineart · SD 1.5 · 36 MB", f"{DETAIL}=0.8, {LINEART}")]
    # /preset save's `loras` offers the same.
    preset = await alice.autocomplete("preset save", "loras", "detail", name="mine")
    assert shown(preset)[0] == ("Detail Tweaker · SD 1.5 · 144 MB · Horde list", str(DETAIL))


@asynccontextmanager
async def lora_services(
    tmp_path: Path, horde: FakeHorde, civitai: FakeCivitai, **section: Any
) -> AsyncIterator[Services]:
    """The bot's services on a plain event loop (real time, unlike the simulator's virtual clock): what a
    time-box does is only seen in real seconds. (The simulator has no NSFW channels either.)"""
    settings = make_settings(
        tmp_path,
        horde.base_url,
        civitai_url=civitai.origin,
        lora_reference_url=horde.lora_reference_url,
        civitai={"search_timeout_seconds": 0.5, "check_timeout_seconds": 2.0, **section},
    )
    settings = dataclasses.replace(
        settings, horde=dataclasses.replace(settings.horde, model_reference_url=horde.model_reference_url)
    )
    services = build_services(build_runtime(settings, clock=TestClock()))
    await services.start()
    try:
        yield services
    finally:
        await services.close()


async def test_nsfw_loras_are_offered_and_accepted_only_where_nsfw_is_allowed(
    tmp_path: Path, horde: FakeHorde, civitai: FakeCivitai
) -> None:
    async with lora_services(tmp_path, horde, civitai) as services:
        sfw = await services.loras.choices("anime", nsfw_allowed=False)
        assert [value for _label, value in sfw] == [str(LINEART)]
        nsfw = await services.loras.choices("anime", nsfw_allowed=True)
        assert ("Anime Nudes · SD 1.5 · 72 MB · NSFW", str(NUDES)) in nsfw
        options = GenerateOptions(prompt="a castle", nsfw=True, extras=ExtraOptions(loras="Anime Nudes"))
        request = await services.request_builder.build(options, guild_id=GUILD, nsfw_allowed=True)
        assert [lora.name for lora in request.params.loras or []] == ["Anime Nudes"]
        sfw_options = dataclasses.replace(options, nsfw=False)
        with pytest.raises(InvalidInputError, match="is an NSFW LoRA"):
            await services.request_builder.build(sfw_options, guild_id=GUILD, nsfw_allowed=False)


async def test_a_slow_civitai_never_holds_autocomplete(
    tmp_path: Path, horde: FakeHorde, civitai: FakeCivitai
) -> None:
    async with lora_services(tmp_path, horde, civitai) as services:
        await services.loras.choices("", nsfw_allowed=False)  # the curated list is loaded
        civitai.delay = 2.0  # longer than civitai.search_timeout_seconds (0.5)
        started = time.monotonic()
        choices = await services.loras.choices("detail", nsfw_allowed=False)
        assert time.monotonic() - started < 1.5  # well within Discord's 3 s
        # The curated list alone; the search goes on in the background and serves the next keystroke.
        assert choices == [
            ("Detail Tweaker · SD 1.5 · 144 MB · Horde list", str(DETAIL)),
            ("Add More Details · SDXL 1.0 · 218 MB · Horde list", str(MORE_DETAILS)),
        ]
        civitai.delay = 0.0
        await asyncio.sleep(2.2)
        assert civitai.count("/api/v1/models") == 2  # the curated names, the slow search: nothing twice
        again = await services.loras.choices("detail", nsfw_allowed=False)  # served from the cache
        assert (again, civitai.count("/api/v1/models")) == (choices, 2)
        later = await services.loras.choices("anime", nsfw_allowed=False)
        assert later == [("Anime Lineart · SD 1.5 · 36 MB", str(LINEART))]


@pytest.mark.parametrize(
    ("loras", "expected"),
    [
        (
            str(CHECKPOINT),
            "`Anime Checkpoint` is a Checkpoint on CivitAI, not a LoRA: the AI Horde's workers only load "
            "LoRAs here (a textual inversion goes in `tis`, a checkpoint in `model`).",
        ),
        (
            f"{DETAIL}=0.5, {HUGE}",
            "`Huge Style` is 812 MB: the AI Horde's workers don't download LoRAs over 400 MB (except those "
            "on the Horde's curated list). Pick a smaller one.",
        ),
        (
            "Anime Nudes",
            "`Anime Nudes` is an NSFW LoRA: it can only be used in NSFW (age-restricted) channels of a "
            "server that allows NSFW. Try again in one, or pick another LoRA.",
        ),
        (
            str(PICKLE),
            "`Pickled Style` has no `.safetensors` file on CivitAI, which the AI Horde's workers need: pick "
            "another LoRA.",
        ),
        (
            "version:4242",
            "CivitAI has no LoRA `version 4242`. Pick one from the list that appears as you type, or give "
            "its CivitAI model id (or `version:ID`).",
        ),
        (
            "No Such Lora",
            "CivitAI has no LoRA `No Such Lora`. Pick one from the list that appears as you type, or give "
            "its CivitAI model id (or `version:ID`).",
        ),
    ],
)
async def test_a_lora_the_workers_would_skip_is_refused_before_sending(
    harness: Harness, horde: FakeHorde, loras: str, expected: str
) -> None:
    reply = await harness.member("alice").slash("generate-advanced", prompt="a castle", loras=loras)
    assert reply.private and reply.text == expected
    assert horde.jobs == []  # nothing reached the AI Horde


async def test_good_loras_go_out_and_large_curated_ones_are_allowed(
    harness: Harness, horde: FakeHorde, civitai: FakeCivitai
) -> None:
    version = civitai.models[LINEART].version_id
    reply = await harness.member("alice").slash(
        "generate-advanced",
        prompt="a castle",
        loras=f"Detail Tweaker=0.7, {HUGE_CURATED}, version:{version}",
    )
    assert not reply.private, reply.text
    loras = horde.last_request("image").params["loras"]
    assert [(lora["name"], lora.get("is_version")) for lora in loras] == [
        ("Detail Tweaker", None),
        (str(HUGE_CURATED), None),
        (str(version), True),
    ]


async def test_when_civitai_is_down_loras_go_out_unchecked(
    harness: Harness, horde: FakeHorde, civitai: FakeCivitai
) -> None:
    civitai.down = True
    reply = await harness.member("alice").slash("generate-advanced", prompt="a castle", loras=str(HUGE))
    assert not reply.private, reply.text  # the Horde's workers decide
    assert [lora["name"] for lora in horde.last_request("image").params["loras"]] == [str(HUGE)]
    # And the autocomplete still answers (nothing from CivitAI to offer).
    assert await harness.member("bob").autocomplete("generate-advanced", "loras", "anime") == []
