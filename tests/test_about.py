"""/terms, /about, and the short terms /login shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import __version__
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, start_harness, stop_harness


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False


async def test_terms_say_what_is_stored_how_long_who_sees_it_and_the_rules(harness: Harness) -> None:
    reply = await harness.member("alice").slash("terms")
    assert reply.private
    shown = reply.text
    for part in ("What is stored", "For how long", "Who can see it", "The AI Horde's rules"):
        assert part in shown
    assert "API key" in shown and "until `/logout`" in shown
    assert "NSFW only in NSFW" in shown and "minors" in shown
    assert "/terms" in shown  # the Horde's own terms, on its site
    assert "at most 30 days after they finish" in shown  # the default [retention] periods
    assert "365 days on this bot" in shown


async def test_login_shows_the_short_terms_and_points_to_terms(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=10)
    alice = harness.member("alice")
    shown = await alice.slash("login")
    assert shown.modal is not None
    linked = await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
    assert linked.private
    assert "keeps your API key encrypted until `/logout`" in linked.text
    assert "Everything: `/terms`." in linked.text


async def test_about_shows_version_servers_members_jobs_uptime_and_horde(
    harness: Harness, horde: FakeHorde
) -> None:
    user = horde.add_user("alice", kudos=10)
    alice = harness.member("alice")
    shown = await alice.slash("login")
    await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
    await alice.slash("generate", prompt="a lighthouse")  # one job in flight
    await harness.advance(65)
    reply = await harness.member("bob").slash("about")
    assert reply.private
    fields = {f.name: f.value for e in reply.latest().embeds for f in e.fields}
    assert fields["Version"] == __version__
    assert fields["Servers"] == "1"
    assert fields["Linked members"] == "1"
    assert fields["Jobs in flight"] == "1"
    assert (fields["Uptime"] or "").endswith(("min", "s"))
    assert fields["AI Horde"] == harness.runtime.settings.horde.api_url


async def test_terms_say_the_retention_this_bot_is_configured_with(
    tmp_path: Path, horde: FakeHorde, db_url: str
) -> None:
    """/terms states the operator's `[retention]` periods, not the defaults."""
    settings = make_settings(
        tmp_path,
        horde.base_url,
        database_url=db_url,
        retention={"finished_jobs": 7, "chat": 7, "ratings": 7, "kudos_ledger": 0, "img2img_sources": 1},
    )
    h = await start_harness(settings)
    try:
        shown = (await h.member("alice").slash("terms")).text
    finally:
        await stop_harness(h)
    assert "at most 7 days after they finish" in shown
    assert "an img2img source image 1 day after its last use" in shown
    assert "safety incidents 90 days" in shown
    assert "for good on this bot" in shown  # kudos_ledger = 0 keeps the ledger
    assert "30 days" not in shown


async def test_terms_name_each_period_when_they_differ(tmp_path: Path, horde: FakeHorde, db_url: str) -> None:
    settings = make_settings(
        tmp_path, horde.base_url, database_url=db_url, retention={"finished_jobs": 14, "chat": 0}
    )
    h = await start_harness(settings)
    try:
        shown = (await h.member("alice").slash("terms")).text
    finally:
        await stop_harness(h)
    assert "requests 14 days, conversations with no time limit, ratings 30 days" in shown
    assert "365 days on this bot" in shown  # the ledger's default
