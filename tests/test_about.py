"""/terms, /about, and the short terms /login shows."""

from __future__ import annotations

import pytest

from bot import __version__
from tests.fakes.horde import FakeHorde
from tests.harness import Harness


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
