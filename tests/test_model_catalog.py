"""The model and style catalog behind /generate's autocomplete: enrichment from the model reference, caching,
scheduled refresh, a down or slow Horde, and the order and limits of autocomplete choices."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.horde.errors import HordeError
from bot.services import Services
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock
from tests.support.genopts import generation_services, reference
from tests.support.runtime import runtime_of


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def served(horde: FakeHorde) -> FakeHorde:
    # The fake's limiter runs on real time while these tests run on a manual clock, so the client's
    # Retry-After waits would take no time: limits are not what is tested here.
    horde.enforce_rate_limits = False
    horde.model_reference = reference()
    horde.add_worker("sd-1", models=["stable_diffusion"], threads=3)
    horde.add_worker("xl-1", models=["AlbedoBase XL (SDXL)", "Pony Diffusion XL"])
    horde.add_worker("deli-1", models=["Deliberate"], threads=2)
    horde.add_worker("custom-1", models=["My Custom Merge"])
    return horde


@pytest.fixture
async def services(tmp_path: Path, served: FakeHorde, clock: TestClock) -> AsyncIterator[Services]:
    async with generation_services(tmp_path, served, clock, autocomplete_timeout_seconds=0.5) as built:
        yield built


async def eventually(check: Callable[[], object], what: str) -> None:
    """Wait (real time, bounded) for background work on the test's loop to get somewhere."""
    for _ in range(500):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# --- enrichment ------------------------------------------------------------------------------------------


async def test_models_are_enriched_from_the_reference_busiest_first(services: Services) -> None:
    await services.model_catalog.refresh()  # what the scheduled job does first: loads all three sources
    models = await services.model_catalog.models()
    assert [m.name for m in models] == [
        "stable_diffusion",
        "Deliberate",
        "AlbedoBase XL (SDXL)",
        "My Custom Merge",
        "Pony Diffusion XL",
    ]
    by_name = {m.name: m for m in models}
    sd = by_name["stable_diffusion"]
    assert (sd.workers, sd.baseline, sd.nsfw, sd.native_size, sd.in_reference) == (
        3,
        "SD 1.5",
        False,
        512,
        True,
    )
    assert sd.description and sd.description.startswith("Generalist AI image generating model")
    assert by_name["Deliberate"].nsfw is True
    xl = by_name["AlbedoBase XL (SDXL)"]
    assert (xl.baseline, xl.native_size, xl.supports_controlnet, xl.supports_hires_fix) == (
        "SDXL",
        1024,
        False,
        False,
    )
    assert by_name["Pony Diffusion XL"].clip_skip == 2
    custom = by_name["My Custom Merge"]
    assert (custom.in_reference, custom.baseline, custom.description, custom.nsfw) == (
        False,
        None,
        None,
        False,
    )


async def test_queue_and_eta_come_from_the_horde(services: Services, served: FakeHorde) -> None:
    user = served.add_user("queuer", kudos=1000)
    from bot.horde.generation import ImageParams, ImageRequest
    from bot.horde.models import ApiKey

    await runtime_of(services).horde.generate_image(
        ImageRequest(prompt="x", models=["Deliberate"], params=ImageParams(n=6)), ApiKey(user.apikey or "")
    )
    deliberate = await services.model_catalog.find_model("deliberate")
    assert deliberate is not None
    assert deliberate.queued == 6
    assert deliberate.eta > 0


# --- caching and refresh ---------------------------------------------------------------------------------


async def test_answers_are_cached_until_the_refresh_interval(
    services: Services, served: FakeHorde, clock: TestClock
) -> None:
    catalog = services.model_catalog
    await catalog.refresh()
    await catalog.models()
    await catalog.model_choices("", nsfw_allowed=True)
    await catalog.find_model("stable_diffusion")
    await catalog.styles()
    await catalog.style_choices("")
    assert served.count("GET", r"/status/models") == 1
    assert served.count("GET", r"/styles/image") == 1
    assert served.count("GET", r"/model-reference\.json") == 1
    clock.t += catalog.settings.catalog_refresh_seconds + 1
    await catalog.models()
    assert served.count("GET", r"/status/models") == 2
    # The reference changes rarely: it has its own, longer interval.
    assert served.count("GET", r"/model-reference\.json") == 1
    # When it is due, the stale copy is served at once and the new one fetched in the background.
    clock.t += catalog.settings.reference_refresh_seconds
    await catalog.models()
    await eventually(lambda: served.count("GET", r"/model-reference\.json") == 2, "reference refetched")


async def test_the_scheduler_refreshes_the_catalog(
    services: Services, served: FakeHorde, clock: TestClock
) -> None:
    catalog = services.model_catalog
    catalog.start()
    catalog.start()  # idempotent
    await services.scheduler.tick()
    await eventually(lambda: served.count("GET", r"/status/models") == 1, "first refresh")
    await eventually(lambda: served.count("GET", r"/styles/image") == 1, "styles loaded")
    served.add_worker("new-1", models=["Brand New Model"])
    assert await catalog.find_model("Brand New Model") is None  # cached
    clock.t += catalog.settings.catalog_refresh_seconds

    async def refreshed_again() -> bool:
        await services.scheduler.tick()  # starts the job once the previous run has finished
        return served.count("GET", r"/status/models") == 2

    await eventually(refreshed_again, "second refresh")
    await eventually(lambda: catalog.find_model("Brand New Model"), "new model visible")


async def test_concurrent_first_requests_cost_one_call(services: Services, served: FakeHorde) -> None:
    catalog = services.model_catalog
    await asyncio.gather(
        *(catalog.model_choices("", nsfw_allowed=False) for _ in range(10)), catalog.models()
    )
    assert served.count("GET", r"/status/models") == 1


# --- the Horde down or slow ------------------------------------------------------------------------------


async def test_horde_down_before_any_answer(tmp_path: Path, served: FakeHorde, clock: TestClock) -> None:
    served.set_down(True)
    async with generation_services(tmp_path, served, clock) as services:
        catalog = services.model_catalog
        with pytest.raises(HordeError):
            await catalog.models()
        with pytest.raises(HordeError):
            await catalog.find_style("anything")
        assert await catalog.model_choices("delib", nsfw_allowed=True) == [
            ("delib (model list unavailable)", "delib")
        ]
        assert await catalog.model_choices("  ", nsfw_allowed=True) == []
        assert await catalog.style_choices("") == []
        # Failures are remembered: a down Horde is not asked on every keystroke.
        calls = served.count("GET", r"/status/models")
        for text in ("d", "de", "del"):
            await catalog.model_choices(text, nsfw_allowed=True)
        assert served.count("GET", r"/status/models") == calls
        # Back up: after the retry interval the list comes back.
        served.set_down(False)
        clock.t += catalog.settings.catalog_retry_seconds + 1
        assert await catalog.find_model("Deliberate") is not None


async def test_a_failed_refresh_keeps_the_last_good_copy(
    services: Services, served: FakeHorde, clock: TestClock
) -> None:
    catalog = services.model_catalog
    served.add_style("Cinematic", models=["stable_diffusion"])
    before = await catalog.models()
    assert await catalog.find_style("Cinematic") is not None
    served.inject(r"/status/models", status=500, times=None)
    served.inject(r"/styles/image", status=503, times=None)
    clock.t += catalog.settings.catalog_refresh_seconds + 1
    await catalog.refresh()
    assert [m.name for m in await catalog.models()] == [m.name for m in before]
    assert await catalog.find_style("Cinematic") is not None
    choices = await catalog.model_choices("stable", nsfw_allowed=False)
    assert [value for _, value in choices] == ["stable_diffusion"]


async def test_reference_unavailable_or_malformed_lists_models_without_enrichment(
    services: Services, served: FakeHorde, clock: TestClock
) -> None:
    served.inject(r"/model-reference\.json", malformed=True)
    catalog = services.model_catalog
    models = await catalog.models()
    assert {m.name for m in models} >= {"stable_diffusion", "Deliberate"}
    assert all(m.baseline is None and not m.in_reference for m in models)
    # Without the reference nothing is known to be NSFW, so nothing is hidden.
    names = [value for _, value in await catalog.model_choices("", nsfw_allowed=False)]
    assert "Deliberate" in names
    # Once the retry interval has passed the reference is fetched again and used.
    clock.t += catalog.settings.catalog_retry_seconds + 1
    await catalog.refresh()
    enriched = {m.name: m for m in await catalog.models()}
    assert enriched["Deliberate"].nsfw is True


async def test_reference_404_is_only_a_missing_enrichment(
    tmp_path: Path, horde: FakeHorde, clock: TestClock
) -> None:
    horde.add_worker("sd-1", models=["stable_diffusion"])
    assert horde.model_reference is None  # served as 404
    async with generation_services(tmp_path, horde, clock) as services:
        models = await services.model_catalog.models()
        assert [(m.name, m.baseline) for m in models] == [("stable_diffusion", None)]


async def test_slow_horde_never_holds_autocomplete(services: Services, served: FakeHorde) -> None:
    served.inject(r"/status/models", delay=math.inf)
    catalog = services.model_catalog
    # Nothing cached and the Horde hanging: the typed text comes back after the short wait.
    assert await catalog.model_choices("Deli", nsfw_allowed=True) == [
        ("Deli (model list unavailable)", "Deli")
    ]
    # The load went on in the background; once it answers, the choices are real.
    served.release_delays()

    async def loaded() -> bool:
        choices = await catalog.model_choices("Deli", nsfw_allowed=True)
        return [value for _, value in choices] == ["Deliberate"]

    await eventually(loaded, "background load finished")
    assert served.count("GET", r"/status/models") == 1


# --- autocomplete order and limits -------------------------------------------------------------------------


async def test_model_choices_rank_matches_then_workers_then_queue(
    tmp_path: Path, horde: FakeHorde, clock: TestClock
) -> None:
    horde.model_reference = reference()
    horde.add_worker("a", models=["Anything v5", "Dreamshaper"])
    horde.add_worker("b", models=["Hentai Diffusion"], threads=4)
    horde.add_worker("c", models=["AlbedoBase XL (SDXL)"], threads=2)
    horde.add_worker("d", models=["NotAnything Mix"], threads=9)
    horde.add_worker("e", models=["anything"], threads=1)
    async with generation_services(tmp_path, horde, clock) as services:
        catalog = services.model_catalog
        await catalog.refresh()
        values = [value for _, value in await catalog.model_choices("anything", nsfw_allowed=True)]
        # Exact, then prefix, then inside a word ("NotAnything"), whatever their worker counts.
        assert values == ["anything", "Anything v5", "NotAnything Mix"]
        # Empty text: everything, most workers first; NSFW models hidden where NSFW is not allowed.
        everything = [value for _, value in await catalog.model_choices("", nsfw_allowed=True)]
        assert everything[:3] == ["NotAnything Mix", "Hentai Diffusion", "AlbedoBase XL (SDXL)"]
        safe = [value for _, value in await catalog.model_choices("", nsfw_allowed=False)]
        assert "Hentai Diffusion" not in safe and "AlbedoBase XL (SDXL)" in safe


async def test_model_choice_labels_show_workers_and_queue_within_discord_limits(
    tmp_path: Path, horde: FakeHorde, clock: TestClock
) -> None:
    horde.model_reference = reference()
    for i in range(30):
        horde.add_worker(f"w{i}", models=[f"Model {i:02d}"], threads=1 + i % 3)
    horde.add_worker("long", models=["L" * 95])
    horde.add_worker("too-long", models=["X" * 101])
    horde.add_worker("xl", models=["AlbedoBase XL (SDXL)"], threads=2)
    async with generation_services(tmp_path, horde, clock) as services:
        catalog = services.model_catalog
        await catalog.refresh()
        choices = await catalog.model_choices("", nsfw_allowed=True)
        assert len(choices) == 25
        assert all(len(label) <= 100 and len(value) <= 100 for label, value in choices)
        assert all(value != "X" * 101 for _, value in choices)
        xl = dict((value, label) for label, value in choices)["AlbedoBase XL (SDXL)"]
        assert xl == "AlbedoBase XL (SDXL) · SDXL · 2 workers · 0 queued"
        (label, value), *_ = await catalog.model_choices("LLLL", nsfw_allowed=True)
        assert value == "L" * 95 and len(label) <= 100 and label.endswith("· 1 worker · 0 queued")


async def test_style_choices_best_match_then_most_used(services: Services, served: FakeHorde) -> None:
    served.add_style("Fantasy Art", use_count=5, info="Epic\nfantasy   scenes")
    served.add_style("Dark Fantasy", use_count=50, nsfw=True)
    served.add_style("fantasy", use_count=1)
    served.add_style("Photo", use_count=99)
    catalog = services.model_catalog
    await catalog.refresh()
    choices = await catalog.style_choices("fantasy")
    names = [label.split(" (NSFW)")[0].split(" — ")[0] for label, _ in choices]
    assert names == ["fantasy", "Fantasy Art", "Dark Fantasy"]
    labels = dict((value, label) for label, value in choices)
    art = await catalog.find_style("fantasy art")
    assert art is not None and labels[art.id] == "Fantasy Art — Epic fantasy scenes"
    dark = await catalog.find_style("Dark Fantasy")
    assert dark is not None and labels[dark.id].startswith("Dark Fantasy (NSFW)")
    everything = [label for label, _ in await catalog.style_choices("")]
    assert everything[0].startswith("Photo")


async def test_find_style_by_id_name_or_full_name(services: Services, served: FakeHorde) -> None:
    style = served.add_style("Watercolour", creator="ada#7")
    catalog = services.model_catalog
    for wanted in (style["id"], "watercolour", "ADA#7::style::Watercolour"):
        found = await catalog.find_style(wanted)
        assert found is not None and found.id == style["id"]
    assert await catalog.find_style("oil") is None


async def test_more_style_pages_when_configured(tmp_path: Path, served: FakeHorde, clock: TestClock) -> None:
    for i in range(30):
        served.add_style(f"Style {i:02d}", use_count=i)
    async with generation_services(tmp_path, served, clock, style_pages=3) as services:
        styles = await services.model_catalog.styles()
        assert len(styles) == 30
        assert served.count("GET", r"/styles/image") == 2  # the second page was short: no third call
    async with generation_services(tmp_path, served, clock) as services:
        assert len(await services.model_catalog.styles()) == 25
